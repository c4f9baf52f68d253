//! SIP signalling, sans-IO: message codec, framing, transactions, dialogs and SDP.
//!
//! Bytes and the current time go in; datagrams to send, events and the next deadline come
//! out. Nothing here touches a socket or reads a clock.
