//! Media, sans-IO: RTP, G.711, DTMF and prompt playout.

pub mod digit;
pub mod ports;
