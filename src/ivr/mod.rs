//! The voice-portal call flow, sans-IO, and the dialplan that routes calls to it.

pub mod dialplan;
pub mod flow;
pub mod session;
