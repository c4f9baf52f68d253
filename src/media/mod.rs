//! Media, sans-IO: RTP, G.711, DTMF and prompt playout.

pub mod digit;
pub mod g711;
pub mod inband;
pub mod ports;
pub mod prompts;
pub mod resample;
