//! Media, sans-IO: RTP, G.711, DTMF and prompt playout.

pub mod digit;
pub mod dtmf_info;
pub mod g711;
pub mod inband;
pub mod player;
pub mod ports;
pub mod prompts;
pub mod resample;
pub mod rfc4733;
pub mod rtcp;
pub mod rtp;
pub mod schedule;
pub mod session;
pub mod stream;
pub mod timeline;
