//! SIP signalling, sans-IO: message codec, framing, transactions, dialogs and SDP.
//!
//! Bytes and the current time go in; datagrams to send, events and the next deadline come
//! out. Nothing here touches a socket or reads a clock.

pub mod build;
pub(crate) mod dialog;
pub mod endpoint;
pub mod framing;
pub mod header;
pub mod message;
pub mod multipart;
pub mod sdp;
pub(crate) mod syntax;
pub mod transaction;
pub mod uri;

pub use framing::{FrameError, StreamFramer};
pub use header::{CSeq, HeaderError, HeaderName, NameAddr, Via};
pub use message::{Defect, Message, Method, ParseError, StartLine};
pub use syntax::Params;
pub use uri::{Host, SipUri, Uri, UriError};
