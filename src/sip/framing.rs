//! Framing SIP messages out of a TCP byte stream (RFC 3261 §18.3).
//!
//! "Is a whole message here?" is separate from "parse it": [`StreamFramer::next_message`]
//! answers `Ok(None)` (incomplete: read more) as normal flow. A header section is capped, and
//! a missing, malformed or oversized Content-Length makes the stream unusable: the framer
//! hands over that message's head (carrying the [`Defect`], so that it can be answered 400,
//! or 513) and then fails; the caller closes the connection, since there is no way to find
//! where the next message starts.

use super::message::{Defect, Framing, Message, ParseError, parse_head};

/// Largest header section accepted on a stream.
pub const MAX_HEAD: usize = 16 * 1024;

/// Why a stream cannot be framed any further. The connection should be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// No blank line within [`MAX_HEAD`] octets.
    #[error("header section larger than {MAX_HEAD} octets")]
    HeadTooLarge,
    /// Content-Length malformed, contradictory or too large.
    #[error("unusable Content-Length: {0}")]
    ContentLength(Defect),
    /// The bytes are not SIP.
    #[error("not SIP: {0}")]
    NotSip(ParseError),
}

/// Accumulates stream bytes and cuts them into messages.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buf: Vec<u8>,
    /// Length of the message at the front, once its head has been read.
    pending: Option<usize>,
    /// How far the search for the blank line ending the head has got: a head trickling in
    /// a few bytes at a time is scanned once, not once per read.
    scanned: usize,
    /// Set once framing is lost: every later call fails with it.
    broken: Option<FrameError>,
    /// Line feeds skipped between messages since the last ping was counted.
    line_feeds: usize,
    /// Keepalive pings (a double CRLF between messages, RFC 5626 §3.5.1) not yet taken.
    pings: usize,
}

impl StreamFramer {
    /// An empty framer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The keepalive pings (a double CRLF between messages, RFC 5626 §3.5.1) seen since the
    /// last call: each is to be answered with a single CRLF, the pong (§4.4.1).
    pub fn take_pings(&mut self) -> usize {
        std::mem::take(&mut self.pings)
    }

    /// Octets held that are not yet part of a returned message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message, `Ok(None)` if more bytes are needed.
    ///
    /// # Errors
    /// [`FrameError`]: the stream cannot be framed; close the connection.
    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        if let Some(e) = self.broken {
            return Err(e);
        }
        // Keepalive line breaks between messages (RFC 5626 §4.4.1 CRLF pings) are skipped.
        let skip = self
            .buf
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(self.buf.len());
        if self.pending.is_none() {
            if skip > 0 {
                self.line_feeds += self.buf[..skip].iter().filter(|&&b| b == b'\n').count();
                self.buf.drain(..skip);
                self.scanned = 0;
            }
            // A double CRLF is a ping (two line feeds); one alone before a message is not.
            self.pings += self.line_feeds / 2;
            self.line_feeds = if self.buf.is_empty() {
                self.line_feeds % 2
            } else {
                0
            };
        }
        let total = match self.pending {
            Some(total) => total,
            None => {
                let Some(head_end) = head_end(&self.buf, self.scanned) else {
                    if self.buf.len() > MAX_HEAD {
                        return Err(FrameError::HeadTooLarge);
                    }
                    // The blank line (at most 3 octets: LF CR LF) may straddle what comes.
                    self.scanned = self.buf.len().saturating_sub(3);
                    return Ok(None);
                };
                if head_end > MAX_HEAD {
                    return Err(FrameError::HeadTooLarge);
                }
                let head = parse_head(&mut self.buf[..head_end]).map_err(FrameError::NotSip)?;
                let body = match head.content_length {
                    Some(Ok(n)) => n,
                    // A stream needs a usable Content-Length (RFC 3261 §18.3, §20.14). The
                    // head alone goes out, to be answered; nothing after it can be framed.
                    unusable => {
                        let defect = match unusable {
                            Some(Err(defect)) => defect,
                            _ => Defect::MissingContentLength,
                        };
                        self.broken = Some(FrameError::ContentLength(defect));
                        let head = self.take_front(head_end);
                        self.buf.clear();
                        return Message::parse_framed(head, Framing::Stream)
                            .map(Some)
                            .map_err(FrameError::NotSip);
                    }
                };
                let total = head_end + body;
                self.pending = Some(total);
                total
            }
        };
        if self.buf.len() < total {
            return Ok(None);
        }
        let message = self.take_front(total);
        self.pending = None;
        self.scanned = 0;
        Message::parse_framed(message, Framing::Stream)
            .map(Some)
            .map_err(FrameError::NotSip)
    }

    /// Takes the first `n` buffered octets out, in an allocation of their own: a message
    /// kept for later (queued for the SIP task) holds its own size, not the whole read
    /// buffer, which a peer sending fast can make large.
    fn take_front(&mut self, n: usize) -> Vec<u8> {
        let front = self.buf[..n].to_vec();
        self.buf.drain(..n);
        front
    }
}

/// The offset just after the blank line ending the header section (CRLF CRLF or LF LF, or a
/// mix), if present, looking from `from` on.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from.min(buf.len());
    while let Some(lf) = buf[i..].iter().position(|&b| b == b'\n') {
        let next = i + lf + 1;
        match buf.get(next) {
            Some(b'\n') => return Some(next + 1),
            Some(b'\r') if buf.get(next + 1) == Some(&b'\n') => return Some(next + 2),
            _ => i = next,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::header::HeaderName;

    const OPTIONS: &[u8] =
        b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: 1\r\nContent-Length: 5\r\n\r\nhello";

    #[test]
    fn incomplete_is_normal_flow_byte_by_byte() {
        // The blank line ending the head in each of its forms, arriving an octet at a time
        // (the search resumes where it stopped), twice in a row on one stream.
        let lf_crlf = b"OPTIONS sip:a@b SIP/2.0\nCall-ID: 1\nContent-Length: 5\n\r\nhello";
        let lf_lf = b"OPTIONS sip:a@b SIP/2.0\nCall-ID: 1\nContent-Length: 5\n\nhello";
        let mut f = StreamFramer::new();
        for message in [OPTIONS, lf_crlf, lf_lf, OPTIONS] {
            for (i, b) in message.iter().enumerate() {
                assert!(
                    f.next_message().unwrap().is_none(),
                    "complete too early at {i}"
                );
                f.push(&[*b]);
            }
            let m = f.next_message().unwrap().unwrap();
            assert_eq!(m.body(), b"hello");
            assert!(f.next_message().unwrap().is_none());
            assert_eq!(f.buffered(), 0);
        }
    }

    #[test]
    fn a_message_framed_from_a_large_buffer_holds_only_its_own_octets() {
        // 2,000 messages pushed at once, as from a peer sending faster than they are taken.
        let mut f = StreamFramer::new();
        f.push(&OPTIONS.repeat(2_000));
        for i in 0..2_000 {
            let m = f.next_message().unwrap().unwrap();
            assert_eq!(m.body(), b"hello");
            assert!(m.allocated() < 2 * OPTIONS.len(), "{i}: {}", m.allocated());
        }
        assert_eq!(f.buffered(), 0);
        // So does the head handed on before a stream whose framing broke is closed.
        let mut f = StreamFramer::new();
        let broken = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: 1\r\n\r\n";
        f.push(&[&broken[..], &[b'x'; 10_000]].concat());
        let m = f.next_message().unwrap().unwrap();
        assert!(m.allocated() < 2 * broken.len(), "{}", m.allocated());
    }

    #[test]
    fn pipelined_messages_and_keepalives() {
        let mut f = StreamFramer::new();
        let mut data = b"\r\n\r\n".to_vec();
        data.extend_from_slice(OPTIONS);
        data.extend_from_slice(b"\r\n");
        data.extend_from_slice(
            &OPTIONS
                .to_vec()
                .into_iter()
                .map(|b| if b == b'1' { b'2' } else { b })
                .collect::<Vec<_>>(),
        );
        data.extend_from_slice(b"BYE sip:a@b SIP/2.0\nl: 0\n\nINVITE");
        f.push(&data);
        let ids: Vec<String> = std::iter::from_fn(|| f.next_message().unwrap())
            .map(|m| {
                m.single(HeaderName::CallId)
                    .unwrap()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        assert_eq!(ids, ["1", "2", ""]);
        assert_eq!(f.buffered(), b"INVITE".len());
        // The double CRLF first was a ping; the single one between messages was not.
        assert_eq!(f.take_pings(), 1);
        assert_eq!(f.take_pings(), 0);
    }

    /// RFC 5626 §4.4.1 pings: a double CRLF between messages, however it is split across
    /// reads; a single CRLF is none.
    #[test]
    fn keepalive_pings_are_counted() {
        let mut f = StreamFramer::new();
        let mut pings = 0;
        for part in [&b"\r\n"[..], b"\r", b"\n", b"\r\n\r\n\r\n", b"\r\n"] {
            f.push(part);
            assert!(f.next_message().unwrap().is_none());
            pings += f.take_pings();
        }
        assert_eq!(pings, 3, "six CRLFs: three pings");
        f.push(b"\r\n");
        f.push(OPTIONS);
        assert!(f.next_message().unwrap().is_some());
        assert_eq!(f.take_pings(), 0, "a lone CRLF before a message is no ping");
        f.push(b"\r\n");
        assert!(f.next_message().unwrap().is_none());
        f.push(OPTIONS);
        assert!(f.next_message().unwrap().is_some());
        assert_eq!(f.take_pings(), 0, "nor one split from it");
    }

    #[test]
    fn unusable_streams() {
        // Content-Length missing, malformed, contradictory or too large: the head is handed
        // over with its defect (to be answered), then the stream fails for good.
        for (bytes, defect) in [
            (
                &b"INVITE sip:a@b SIP/2.0\r\nContent-Length: -999\r\n\r\nv=0\r\n"[..],
                Defect::ContentLength,
            ),
            (
                b"OPTIONS sip:a@b SIP/2.0\r\nl: 13\r\nl: 5\r\n\r\n",
                Defect::MultipleContentLength,
            ),
            (
                b"OPTIONS sip:a@b SIP/2.0\r\nl: 99999999\r\n\r\n",
                Defect::BodyTooLarge,
            ),
            (
                b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: 1\r\n\r\nOPTIONS sip:a@b SIP/2.0\r\n",
                Defect::MissingContentLength,
            ),
        ] {
            let mut f = StreamFramer::new();
            f.push(bytes);
            let head = f.next_message().unwrap().unwrap();
            assert_eq!((head.defect(), head.body()), (Some(defect), &b""[..]));
            for _ in 0..2 {
                assert_eq!(
                    f.next_message().unwrap_err(),
                    FrameError::ContentLength(defect)
                );
            }
            f.push(OPTIONS);
            assert!(f.next_message().is_err(), "nothing more is framed");
        }
        let mut f = StreamFramer::new();
        f.push(&vec![b'a'; MAX_HEAD + 1]);
        assert_eq!(f.next_message().unwrap_err(), FrameError::HeadTooLarge);
        // Content-Length larger than what arrived: wait (and the caller times the wait out).
        let mut f = StreamFramer::new();
        f.push(b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 9999\r\n\r\nv=0\r\n");
        assert!(f.next_message().unwrap().is_none());
    }
}
