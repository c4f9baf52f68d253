//! SIP messages: one owned buffer and an index of its lines.
//!
//! Parsing splits the start line and the header fields and frames the body; it does not
//! interpret header values. Headers the UAS needs are read on demand through the typed views
//! in [`super::header`]; everything else stays untouched bytes. Line folding is undone in
//! place (the CRLF before a continuation line becomes two spaces), so every header value is
//! a contiguous slice of the buffer.
//!
//! A message with a recoverable defect (a header line without a colon, a bad Content-Length,
//! a malformed request line) still parses, carrying the [`Defect`]: the UAS answers it with
//! a 400 naming the problem, which needs the message's Via, Call-ID and CSeq.

use std::fmt;
use std::ops::Range;

use super::header::{HeaderError, HeaderName, parse_number};
use super::syntax::{self, is_token};

/// Most header fields one message may have.
pub const MAX_HEADERS: usize = 256;

/// Largest body accepted (Content-Length). Voice-portal signalling carries small SDP and
/// DTMF bodies; anything near this is an attack or a mistake.
pub const MAX_BODY: usize = 64 * 1024;

/// A SIP method. Method names are case-sensitive (RFC 3261 §7.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Info,
    Update,
    Prack,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    /// An extension method, kept as written.
    Other(Box<str>),
}

impl Method {
    /// The method named `name`.
    pub fn parse(name: &str) -> Self {
        match name {
            "INVITE" => Self::Invite,
            "ACK" => Self::Ack,
            "BYE" => Self::Bye,
            "CANCEL" => Self::Cancel,
            "OPTIONS" => Self::Options,
            "REGISTER" => Self::Register,
            "INFO" => Self::Info,
            "UPDATE" => Self::Update,
            "PRACK" => Self::Prack,
            "SUBSCRIBE" => Self::Subscribe,
            "NOTIFY" => Self::Notify,
            "REFER" => Self::Refer,
            "MESSAGE" => Self::Message,
            "PUBLISH" => Self::Publish,
            other => Self::Other(other.into()),
        }
    }

    /// The method's name.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Invite => "INVITE",
            Self::Ack => "ACK",
            Self::Bye => "BYE",
            Self::Cancel => "CANCEL",
            Self::Options => "OPTIONS",
            Self::Register => "REGISTER",
            Self::Info => "INFO",
            Self::Update => "UPDATE",
            Self::Prack => "PRACK",
            Self::Subscribe => "SUBSCRIBE",
            Self::Notify => "NOTIFY",
            Self::Refer => "REFER",
            Self::Message => "MESSAGE",
            Self::Publish => "PUBLISH",
            Self::Other(name) => name,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A recoverable problem found while parsing; its `Display` is a 400 reason phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Defect {
    /// The request line does not have exactly method, URI and version.
    #[error("Malformed Request-Line")]
    RequestLine,
    /// A header line without a colon or with a bad name.
    #[error("Malformed header line")]
    HeaderLine,
    /// More than [`MAX_HEADERS`] header fields.
    #[error("Too many header fields")]
    TooManyHeaders,
    /// Content-Length is not a number (negative, for one).
    #[error("Malformed Content-Length header")]
    ContentLength,
    /// Several Content-Length headers that disagree.
    #[error("Multiple Content-Length headers")]
    MultipleContentLength,
    /// Content-Length promises more octets than the datagram holds.
    #[error("Content-Length larger than message")]
    Truncated,
    /// Content-Length above [`MAX_BODY`].
    #[error("Message body too large")]
    BodyTooLarge,
    /// No Content-Length on a stream, where it is the only way to find the body's end
    /// (RFC 3261 §20.14: "MUST be used" over TCP).
    #[error("Missing Content-Length header")]
    MissingContentLength,
}

/// Why bytes are not a SIP message at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Nothing but line breaks (a keepalive).
    #[error("empty message")]
    Empty,
    /// The first line is neither a request line nor a status line.
    #[error("not a SIP start line")]
    StartLine,
    /// A status code outside 100-699.
    #[error("invalid status code")]
    StatusCode,
}

/// The first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// `METHOD Request-URI SIP/2.0`.
    Request {
        /// The method.
        method: Method,
        /// The Request-URI's text.
        uri: Range<usize>,
        /// The version text, e.g. `SIP/2.0` (empty when missing).
        version: Range<usize>,
    },
    /// `SIP/2.0 200 OK`.
    Response {
        /// The version text.
        version: Range<usize>,
        /// The status code, 100-699.
        code: u16,
        /// The reason phrase (any octets).
        reason: Range<usize>,
    },
}

#[derive(Debug, Clone)]
struct Field {
    name: HeaderName,
    name_span: Range<usize>,
    value: Range<usize>,
}

/// A parsed SIP request or response.
#[derive(Debug, Clone)]
pub struct Message {
    buf: Vec<u8>,
    start: StartLine,
    fields: Vec<Field>,
    body: Range<usize>,
    defect: Option<Defect>,
}

/// How the body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// UDP: one datagram is one message; Content-Length decides the body and extra octets are
    /// discarded; without Content-Length the body is the rest (RFC 3261 §18.3).
    Datagram,
    /// TCP: the caller has already cut exactly head + Content-Length octets, or the head
    /// alone when Content-Length is missing or unusable (a defect).
    Stream,
}

/// The header section: where it ends and what Content-Length says.
pub(crate) struct Head {
    start: StartLine,
    fields: Vec<Field>,
    /// Offset of the first body octet (after the blank line).
    pub(crate) body_start: usize,
    defect: Option<Defect>,
    /// Content-Length: `None` when absent.
    pub(crate) content_length: Option<Result<usize, Defect>>,
}

impl Message {
    /// Parses one UDP datagram.
    ///
    /// # Errors
    /// [`ParseError`] when the datagram is not a SIP message at all; recoverable problems
    /// are reported by [`Message::defect`] instead.
    pub fn parse_datagram(buf: Vec<u8>) -> Result<Self, ParseError> {
        Self::parse_framed(buf, Framing::Datagram)
    }

    pub(crate) fn parse_framed(mut buf: Vec<u8>, framing: Framing) -> Result<Self, ParseError> {
        let head = parse_head(&mut buf)?;
        let mut defect = head.defect;
        let available = buf.len().saturating_sub(head.body_start);
        let body_len = match (head.content_length, framing) {
            (Some(Ok(n)), _) if n > available => {
                defect = defect.or(Some(Defect::Truncated));
                available
            }
            (Some(Ok(n)), _) => n,
            (Some(Err(d)), _) => {
                defect = defect.or(Some(d));
                available
            }
            (None, Framing::Datagram) => available,
            (None, Framing::Stream) => {
                defect = defect.or(Some(Defect::MissingContentLength));
                available
            }
        };
        let body = head.body_start.min(buf.len())..head.body_start.min(buf.len()) + body_len;
        Ok(Self {
            buf,
            start: head.start,
            fields: head.fields,
            body,
            defect,
        })
    }

    /// The first line.
    pub fn start_line(&self) -> &StartLine {
        &self.start
    }

    /// The method, for a request.
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The status code, for a response.
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    /// The Request-URI text, for a request (empty if it is not UTF-8).
    pub fn request_uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(self.text(uri.clone()).unwrap_or("")),
            StartLine::Response { .. } => None,
        }
    }

    /// The SIP version text of the start line (`SIP/2.0`).
    pub fn version(&self) -> &str {
        let span = match &self.start {
            StartLine::Request { version, .. } | StartLine::Response { version, .. } => version,
        };
        self.text(span.clone()).unwrap_or("")
    }

    /// Whether the version is SIP/2.0 (case-insensitive, RFC 3261 §7.1).
    pub fn is_sip_2_0(&self) -> bool {
        self.version().eq_ignore_ascii_case("SIP/2.0")
    }

    /// The first recoverable problem found while parsing.
    pub fn defect(&self) -> Option<Defect> {
        self.defect
    }

    /// The body octets.
    pub fn body(&self) -> &[u8] {
        &self.buf[self.body.clone()]
    }

    /// The whole message as received.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The memory the message holds (tests check a framed message holds only its own).
    #[cfg(test)]
    pub(crate) fn allocated(&self) -> usize {
        self.buf.capacity()
    }

    fn text(&self, span: Range<usize>) -> Option<&str> {
        std::str::from_utf8(self.buf.get(span)?).ok()
    }

    /// Every header field in order: its name kind, the name as written and the value text
    /// (`None` when the value is not UTF-8).
    pub fn fields(&self) -> impl Iterator<Item = (HeaderName, &str, Option<&str>)> {
        self.fields.iter().map(|f| {
            (
                f.name,
                self.text(f.name_span.clone()).unwrap_or(""),
                self.text(f.value.clone()),
            )
        })
    }

    /// The first of `names` with a field whose value is not UTF-8 (which [`Self::values`]
    /// and [`Self::list`] skip).
    pub fn first_not_text(&self, names: &[HeaderName]) -> Option<HeaderName> {
        self.fields
            .iter()
            .find(|f| names.contains(&f.name) && self.text(f.value.clone()).is_none())
            .map(|f| f.name)
    }

    /// Whether the first `name` field's value is UTF-8 (true when there is none).
    pub fn first_is_text(&self, name: HeaderName) -> bool {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .is_none_or(|f| self.text(f.value.clone()).is_some())
    }

    /// The values of every `name` field, in order, trimmed (a value that is not UTF-8 is
    /// skipped).
    pub fn values(&self, name: HeaderName) -> impl Iterator<Item = &str> {
        self.fields
            .iter()
            .filter(move |f| f.name == name)
            .filter_map(|f| self.text(f.value.clone()))
            .map(syntax::trim)
    }

    /// The elements of a list header across all its fields (`Via: a, b` + `Via: c`).
    pub fn list(&self, name: HeaderName) -> impl Iterator<Item = &str> {
        self.values(name).flat_map(syntax::split_list)
    }

    /// The value of a header that may appear once.
    ///
    /// # Errors
    /// [`HeaderError::Multiple`] when it appears more than once; [`HeaderError::Malformed`]
    /// when its value is not UTF-8.
    pub fn single(&self, name: HeaderName) -> Result<Option<&str>, HeaderError> {
        let mut found = self.fields.iter().filter(|f| f.name == name);
        let Some(first) = found.next() else {
            return Ok(None);
        };
        if found.next().is_some() {
            return Err(HeaderError::Multiple(name));
        }
        self.text(first.value.clone())
            .map(|v| Some(syntax::trim(v)))
            .ok_or(HeaderError::Malformed(name))
    }

    /// The value of a header that must appear exactly once.
    ///
    /// # Errors
    /// As [`Message::single`], plus [`HeaderError::Missing`].
    pub fn required(&self, name: HeaderName) -> Result<&str, HeaderError> {
        self.single(name)?.ok_or(HeaderError::Missing(name))
    }
}

/// Parses the start line and header fields, undoing folding in place.
pub(crate) fn parse_head(buf: &mut [u8]) -> Result<Head, ParseError> {
    // RFC 3261 §7.5: ignore line breaks before the start line (keepalives, RFC 5626).
    let mut pos = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .ok_or(ParseError::Empty)?;
    let (line, next) = line_at(buf, pos);
    let (start, mut defect) = parse_start_line(buf, line)?;
    pos = next;
    let mut fields: Vec<Field> = Vec::with_capacity(16);
    while pos < buf.len() {
        let (line, next) = line_at(buf, pos);
        if line.is_empty() {
            pos = next;
            break;
        }
        let first = buf[line.start];
        if first == b' ' || first == b'\t' {
            // A continuation line (folding): joins the previous field's value. The line end
            // before it becomes spaces, so the value stays one slice.
            match fields.last_mut() {
                Some(f) => {
                    for b in &mut buf[f.value.end..line.start] {
                        *b = b' ';
                    }
                    f.value.end = trim_end(buf, line.clone()).end.max(f.value.end);
                }
                None => defect = defect.or(Some(Defect::HeaderLine)),
            }
            pos = next;
            continue;
        }
        match parse_field(buf, line) {
            Some(field) if fields.len() < MAX_HEADERS => fields.push(field),
            Some(_) => defect = defect.or(Some(Defect::TooManyHeaders)),
            None => defect = defect.or(Some(Defect::HeaderLine)),
        }
        pos = next;
    }
    let content_length = content_length(buf, &fields);
    Ok(Head {
        start,
        fields,
        body_start: pos.min(buf.len()),
        defect,
        content_length,
    })
}

/// The line starting at `pos`: its span without the line end, and where the next begins.
/// Accepts CRLF and bare LF.
fn line_at(buf: &[u8], pos: usize) -> (Range<usize>, usize) {
    match buf[pos..].iter().position(|&b| b == b'\n') {
        Some(i) => {
            let lf = pos + i;
            let end = if lf > pos && buf[lf - 1] == b'\r' {
                lf - 1
            } else {
                lf
            };
            (pos..end, lf + 1)
        }
        None => {
            let end = if buf.last() == Some(&b'\r') {
                buf.len() - 1
            } else {
                buf.len()
            };
            (pos..end.max(pos), buf.len())
        }
    }
}

fn trim_end(buf: &[u8], mut span: Range<usize>) -> Range<usize> {
    while span.end > span.start && syntax::is_ws(buf[span.end - 1]) {
        span.end -= 1;
    }
    span
}

fn trim_start(buf: &[u8], mut span: Range<usize>) -> Range<usize> {
    while span.start < span.end && syntax::is_ws(buf[span.start]) {
        span.start += 1;
    }
    span
}

fn parse_field(buf: &[u8], line: Range<usize>) -> Option<Field> {
    let colon = line.start + buf[line.clone()].iter().position(|&b| b == b':')?;
    // HCOLON allows white space before the colon.
    let name_span = trim_end(buf, line.start..colon);
    let name = std::str::from_utf8(&buf[name_span.clone()]).ok()?;
    if !is_token(name) {
        return None;
    }
    let value = trim_end(buf, trim_start(buf, colon + 1..line.end));
    Some(Field {
        name: HeaderName::parse(name),
        name_span,
        value,
    })
}

fn parse_start_line(
    buf: &[u8],
    line: Range<usize>,
) -> Result<(StartLine, Option<Defect>), ParseError> {
    let bytes = &buf[line.clone()];
    // Words separated by runs of SP (extra SP between elements is tolerated, RFC 4475
    // §3.1.2.9-10), remembered as spans.
    let mut words: Vec<Range<usize>> = Vec::with_capacity(3);
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b' ' || bytes[i] == b'\t' {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b' ' && bytes[i] != b'\t' {
            i += 1;
        }
        words.push(line.start + start..line.start + i);
        if words.len() > 3 {
            break;
        }
    }
    let word = |r: &Range<usize>| &buf[r.clone()];
    let first = words.first().ok_or(ParseError::StartLine)?;
    if word(first).len() > 4 && word(first)[..4].eq_ignore_ascii_case(b"SIP/") {
        let code_span = words.get(1).ok_or(ParseError::StartLine)?;
        let code = std::str::from_utf8(word(code_span))
            .ok()
            .filter(|c| c.len() == 3)
            .and_then(|c| parse_number(c, 700))
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| *c >= 100)
            .ok_or(ParseError::StatusCode)?;
        // The reason phrase is everything after the code's single SP, any octets.
        let reason_start = (code_span.end + 1).min(line.end);
        return Ok((
            StartLine::Response {
                version: first.clone(),
                code,
                reason: reason_start..line.end,
            },
            None,
        ));
    }
    let method = std::str::from_utf8(word(first)).map_err(|_| ParseError::StartLine)?;
    let looks_like_version =
        |r: &Range<usize>| word(r).len() > 4 && word(r)[..4].eq_ignore_ascii_case(b"SIP/");
    if !is_token(method) {
        // `INV@TE sip:… SIP/2.0` is a request with a malformed method, answered 400 (§25.1
        // `Method = token`); a line without the version is not taken for a request at all.
        // The name is kept escaped, as it may reach a log line.
        return match words.as_slice() {
            [_, uri, version] if looks_like_version(version) => Ok((
                StartLine::Request {
                    method: Method::Other(method.escape_default().to_string().into()),
                    uri: uri.clone(),
                    version: version.clone(),
                },
                Some(Defect::RequestLine),
            )),
            _ => Err(ParseError::StartLine),
        };
    }
    let (uri, version, defect) = match words.as_slice() {
        [_, uri, version] if looks_like_version(version) => (uri.clone(), version.clone(), None),
        // The URI and what follows it, whatever the spacing; answered with 400.
        [_, uri, ..] => {
            let version = words
                .iter()
                .skip(2)
                .rev()
                .find(|w| looks_like_version(w))
                .cloned()
                .unwrap_or(line.end..line.end);
            (uri.clone(), version, Some(Defect::RequestLine))
        }
        _ => return Err(ParseError::StartLine),
    };
    Ok((
        StartLine::Request {
            method: Method::parse(method),
            uri,
            version,
        },
        defect,
    ))
}

/// What the Content-Length fields say: `None` when absent, a [`Defect`] when malformed or
/// contradictory (RFC 4475 §3.1.2.3, §3.3.9).
fn content_length(buf: &[u8], fields: &[Field]) -> Option<Result<usize, Defect>> {
    let mut result: Option<Result<usize, Defect>> = None;
    for f in fields
        .iter()
        .filter(|f| f.name == HeaderName::ContentLength)
    {
        let parsed = std::str::from_utf8(&buf[f.value.clone()])
            .ok()
            .and_then(|v| parse_number(v, u64::from(u32::MAX)))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or(Defect::ContentLength)
            .and_then(|n| {
                if n > MAX_BODY {
                    Err(Defect::BodyTooLarge)
                } else {
                    Ok(n)
                }
            });
        result = Some(match (result, parsed) {
            (None, p) => p,
            (Some(Err(e)), _) | (Some(Ok(_)), Err(e)) => Err(e),
            (Some(Ok(a)), Ok(b)) if a == b => Ok(a),
            (Some(Ok(_)), Ok(_)) => Err(Defect::MultipleContentLength),
        });
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Message {
        Message::parse_datagram(text.as_bytes().to_vec()).unwrap()
    }

    const INVITE: &str = "INVITE sip:8500@127.0.0.1:5060 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1;rport\r\n\
        From: \"Alice\" <sip:1001@127.0.0.1>;tag=a1\r\n\
        To: <sip:8500@127.0.0.1>\r\n\
        Call-ID: c1@127.0.0.1\r\n\
        CSeq: 1 INVITE\r\n\
        Max-Forwards: 70\r\n\
        Content-Type: application/sdp\r\n\
        Content-Length: 4\r\n\
        \r\n\
        v=0\r\nEXTRA";

    #[test]
    fn request_fields_and_body() {
        let m = parse(INVITE);
        assert_eq!(m.method(), Some(&Method::Invite));
        assert_eq!(m.request_uri(), Some("sip:8500@127.0.0.1:5060"));
        assert!(m.is_sip_2_0());
        assert_eq!(m.required(HeaderName::CallId), Ok("c1@127.0.0.1"));
        assert_eq!(m.single(HeaderName::Route), Ok(None));
        assert_eq!(m.body(), b"v=0\r");
        assert_eq!(m.defect(), None);
        assert_eq!(m.fields().count(), 8);
    }

    #[test]
    fn folding_is_undone_in_place() {
        let m = parse(
            "OPTIONS sip:a@b SIP/2.0\r\ncseq: 0009\r\n  INVITE\r\nSubject: one\r\n two\r\n\tthree\r\nl: 0\r\n\r\n",
        );
        assert_eq!(m.required(HeaderName::CSeq), Ok("0009    INVITE"));
        assert_eq!(m.required(HeaderName::Subject), Ok("one   two  \tthree"));
    }

    #[test]
    fn bare_lf_and_leading_crlf() {
        let m = parse("\r\n\r\nOPTIONS sip:a@b SIP/2.0\nVia: SIP/2.0/UDP h\nl: 0\n\nbody");
        assert_eq!(m.required(HeaderName::Via), Ok("SIP/2.0/UDP h"));
        assert_eq!(m.body(), b"");
        assert_eq!(
            Message::parse_datagram(b"\r\n\r\n".to_vec()).unwrap_err(),
            ParseError::Empty
        );
    }

    #[test]
    fn content_length_rules_for_datagrams() {
        assert_eq!(
            parse("OPTIONS sip:a@b SIP/2.0\r\n\r\nrest of datagram").body(),
            b"rest of datagram"
        );
        let m = parse("OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 9999\r\n\r\nshort");
        assert_eq!(
            (m.defect(), m.body()),
            (Some(Defect::Truncated), &b"short"[..])
        );
        let m = parse("OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -999\r\n\r\nx");
        assert_eq!(m.defect(), Some(Defect::ContentLength));
        let m =
            parse("OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 13\r\nContent-Length: 5\r\n\r\nx");
        assert_eq!(m.defect(), Some(Defect::MultipleContentLength));
        let m = parse("OPTIONS sip:a@b SIP/2.0\r\nl: 2\r\nContent-Length: 2\r\n\r\nxyz");
        assert_eq!((m.defect(), m.body()), (None, &b"xy"[..]));
        let m = parse("OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 99999999\r\n\r\n");
        assert_eq!(m.defect(), Some(Defect::BodyTooLarge));
    }

    #[test]
    fn request_line_leniency() {
        let m = parse("INVITE  sip:user@example.com  SIP/2.0\r\n\r\n");
        assert_eq!(
            (m.request_uri(), m.defect()),
            (Some("sip:user@example.com"), None)
        );
        let m = parse("OPTIONS sip:t@example.com SIP/2.0  \r\n\r\n");
        assert_eq!(m.defect(), None);
        let m = parse("INVITE sip:user@example.com; lr SIP/2.0\r\n\r\n");
        assert_eq!(m.defect(), Some(Defect::RequestLine));
        let m = parse("INVITE sip:alan@jasomi.com\r\nFoobar roobar\r\n\r\n");
        assert_eq!(m.defect(), Some(Defect::RequestLine));
        let m = parse("INV@TE sip:a@b SIP/2.0\r\n\r\n");
        assert_eq!(
            (m.request_uri(), m.defect()),
            (Some("sip:a@b"), Some(Defect::RequestLine))
        );
        let m = parse("IN\u{1b}VITE sip:a@b SIP/2.0\r\n\r\n");
        assert_eq!(m.method().map(Method::as_str), Some("IN\\u{1b}VITE"));
        for bad in [
            "INV@TE sip:a@b\r\n\r\n",
            "IN\"VITE sip:a@b SIP/2.0 x\r\n\r\n",
        ] {
            assert_eq!(
                Message::parse_datagram(bad.as_bytes().to_vec()).unwrap_err(),
                ParseError::StartLine,
                "{bad}"
            );
        }
        let m = parse("OPTIONS sip:a@b SIP/7.0\r\n\r\n");
        assert!(!m.is_sip_2_0());
        assert_eq!(m.version(), "SIP/7.0");
        assert_eq!(
            Message::parse_datagram(b"hello\r\n\r\n".to_vec()).unwrap_err(),
            ParseError::StartLine
        );
    }

    #[test]
    fn responses() {
        let m = parse("SIP/2.0 100 \r\nVia: SIP/2.0/UDP h\r\n\r\n");
        assert_eq!(m.status(), Some(100));
        let m = parse("SIP/2.0 200 = 2**3 * 5**2 \u{43d}\u{43e}\r\n\r\n");
        assert_eq!(m.status(), Some(200));
        for bad in [
            "SIP/2.0 4294967301 better not break\r\n\r\n",
            "SIP/2.0 99 x\r\n\r\n",
            "SIP/2.0 700 x\r\n\r\n",
            "SIP/2.0\r\n\r\n",
        ] {
            assert!(
                Message::parse_datagram(bad.as_bytes().to_vec()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn header_line_defects_and_duplicates() {
        let m = parse("INVITE sip:a@b SIP/2.0\r\nFoobar roobar\r\nCall-ID: x\r\n\r\n");
        assert_eq!(m.defect(), Some(Defect::HeaderLine));
        assert_eq!(m.required(HeaderName::CallId), Ok("x"));
        let m = parse("INVITE sip:a@b SIP/2.0\r\nCall-ID: x\r\ni: y\r\n\r\n");
        assert_eq!(
            m.required(HeaderName::CallId),
            Err(HeaderError::Multiple(HeaderName::CallId))
        );
        assert_eq!(
            m.required(HeaderName::From),
            Err(HeaderError::Missing(HeaderName::From))
        );
        let m = parse("INVITE sip:a@b SIP/2.0\r\nVia: a, b\r\nv: c\r\n\r\n");
        assert_eq!(m.list(HeaderName::Via).collect::<Vec<_>>(), ["a", "b", "c"]);
    }

    #[test]
    fn binary_bodies_are_bytes() {
        let mut raw = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 4\r\n\r\n".to_vec();
        raw.extend_from_slice(&[0, 0xff, b'\n', 0]);
        let m = Message::parse_datagram(raw).unwrap();
        assert_eq!(m.body(), [0, 0xff, b'\n', 0]);
    }
}
