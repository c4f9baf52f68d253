//! Request checks made before anything else (RFC 3261 §8.2, RFC 4475), and where responses go.

use std::net::SocketAddr;

use crate::sip::header::{CSeq, HeaderError, HeaderName, NameAddr, Via};
use crate::sip::message::{Defect, Message, Method};
use crate::sip::multipart::{self, MultipartError};
use crate::sip::sdp::OfferAnswerError;
use crate::sip::syntax;
use crate::sip::uri::Uri;

use super::types::Transport;

/// What validation decided about a request.
pub(super) enum Verdict {
    /// Send nothing.
    Drop,
    /// Answer statelessly with this status and reason.
    Respond(u16, String),
    /// 420 Bad Extension, listing these option tags in Unsupported.
    BadExtension(String),
    /// 488 Not Acceptable Here to an offer, saying why in a `Warning`.
    NotAcceptable(OfferAnswerError),
}

impl Verdict {
    /// The status to answer in a dialog, where only a status is sent: this verdict's, or
    /// `otherwise` for one that has none.
    pub(super) fn status_or(self, otherwise: (u16, &str)) -> (u16, String) {
        match self {
            Self::Respond(code, reason) => (code, reason),
            Self::NotAcceptable(_) => (488, NOT_ACCEPTABLE.to_owned()),
            _ => (otherwise.0, otherwise.1.to_owned()),
        }
    }

    /// Why an offer was refused, for a verdict refusing one.
    pub(super) const fn refusal(&self) -> Option<&OfferAnswerError> {
        match self {
            Self::NotAcceptable(refusal) => Some(refusal),
            _ => None,
        }
    }
}

/// The reason phrase of a 488.
pub(super) const NOT_ACCEPTABLE: &str = "Not Acceptable Here";

/// The validated core headers of a request.
pub(super) struct Core<'a> {
    pub(super) via: Via<'a>,
    pub(super) from: NameAddr<'a>,
    pub(super) to: NameAddr<'a>,
    pub(super) call_id: &'a str,
    pub(super) cseq: CSeq<'a>,
    pub(super) max_forwards: Option<u32>,
}

/// The longest Call-ID and Via branch taken, in bytes: twice what real stacks send (the
/// longest in RFC 4475's torture tests is 163).
pub(super) const MAX_ID_LEN: usize = 256;

/// Methods vportal knows but does not serve (405); anything else unknown gets 501.
fn known_unsupported(method: &Method) -> bool {
    matches!(
        method,
        Method::Register
            | Method::Subscribe
            | Method::Notify
            | Method::Refer
            | Method::Message
            | Method::Publish
    )
}

/// A content type's `type/subtype`, lower-case, parameters removed.
pub(super) fn media_type(value: &str) -> String {
    syntax::trim(value.split(';').next().unwrap_or("")).to_ascii_lowercase()
}

pub(super) fn user_of(uri: &str) -> Option<String> {
    Uri::parse(uri).ok().as_ref().and_then(Uri::number)
}

/// §18.2.2 and RFC 3581: the source IP always; over UDP the source port with `rport`, else
/// the Via port (5060 by default). Over TCP responses go over the request's connection;
/// this is where a new one is opened should it have closed, and there §18.2.2 names the
/// Via port, `rport` being a UDP matter (a TCP source port is the peer's ephemeral one).
/// `maddr` is ignored: vportal never sends to multicast groups or to names taken from a
/// message.
pub(super) fn response_destination(
    via: &Via<'_>,
    source: SocketAddr,
    transport: Transport,
) -> SocketAddr {
    let mut destination = source;
    if !(via.wants_rport() && transport == Transport::Udp) {
        // The source's other parts stay: a link-local caller's scope names the interface.
        destination.set_port(via.port.unwrap_or(5060));
    }
    destination
}

/// Checks what every request must have before it is processed. The order follows RFC 3261
/// §8.2 and RFC 4475: malformation (400), version (505), the Request-URI scheme (416),
/// the method (405/501), then CSeq consistency (400).
pub(super) fn validate<'a>(msg: &'a Message, via: Via<'a>) -> Result<Core<'a>, Verdict> {
    let bad = |e: HeaderError| Verdict::Respond(400, e.to_string());
    if let Some(defect) = msg.defect() {
        // Well formed but beyond what vportal takes: 513 (RFC 3261 §21.5.14), not 400.
        let code = match defect {
            Defect::TooManyHeaders | Defect::BodyTooLarge => 513,
            _ => 400,
        };
        return Err(Verdict::Respond(code, defect.to_string()));
    }
    if !msg.is_sip_2_0() {
        return Err(Verdict::Respond(505, "Version Not Supported".into()));
    }
    // The list and routing headers are read element by element, where a value that is not
    // UTF-8 would be skipped: a Require unread, a Via or Record-Route missing from the
    // response, an Accept or a caller's asserted identity passed over for the next one.
    // They are malformed (RFC 3261 §25.1: UTF-8 text).
    let structural = [
        HeaderName::Via,
        HeaderName::Route,
        HeaderName::RecordRoute,
        HeaderName::Require,
        HeaderName::ProxyRequire,
        HeaderName::Contact,
        HeaderName::ContentEncoding,
        HeaderName::InfoPackage,
        HeaderName::Accept,
        HeaderName::PAssertedIdentity,
    ];
    if let Some(name) = msg.first_not_text(&structural) {
        return Err(bad(HeaderError::Malformed(name)));
    }
    for value in msg.list(HeaderName::Via).skip(1) {
        Via::parse(value).map_err(bad)?;
    }
    let from = NameAddr::parse(
        msg.required(HeaderName::From).map_err(bad)?,
        HeaderName::From,
    )
    .map_err(bad)?;
    let to =
        NameAddr::parse(msg.required(HeaderName::To).map_err(bad)?, HeaderName::To).map_err(bad)?;
    let call_id = msg.required(HeaderName::CallId).map_err(bad)?;
    // RFC 3261 §25.1: `word ["@" word]`, visible ASCII only. Control characters in
    // particular are refused: the Call-ID names the call in every log line.
    if call_id.is_empty() || !call_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(HeaderError::Malformed(HeaderName::CallId)));
    }
    // RFC 3261 sets no length, but the Call-ID goes into every log line and audit row of
    // the call, and the branch into the key of every transaction kept: a 60 KB one would
    // make each of those 60 KB.
    if call_id.len() > MAX_ID_LEN {
        return Err(Verdict::Respond(400, "Call-ID Too Long".into()));
    }
    if via.branch().is_some_and(|b| b.len() > MAX_ID_LEN) {
        return Err(Verdict::Respond(400, "Via Branch Too Long".into()));
    }
    let cseq = CSeq::parse(msg.required(HeaderName::CSeq).map_err(bad)?).map_err(bad)?;
    let max_forwards = match msg.single(HeaderName::MaxForwards).map_err(bad)? {
        Some(v) => Some(
            crate::sip::header::parse_number(v, u64::from(u32::MAX))
                .ok_or(bad(HeaderError::Malformed(HeaderName::MaxForwards)))?,
        ),
        None => None,
    };
    let uri = msg.request_uri().unwrap_or("");
    let scheme = crate::sip::uri::scheme(uri)
        .map_err(|_| Verdict::Respond(400, "Malformed Request-URI".into()))?;
    let known_scheme = ["sip", "sips", "tel"]
        .iter()
        .any(|s| s.eq_ignore_ascii_case(scheme));
    if !known_scheme {
        return Err(Verdict::Respond(416, "Unsupported URI Scheme".into()));
    }
    // A SIPS URI asks for TLS on every hop, and a dialog made from it needs a SIPS Contact
    // in our answer (§12.1.1), which vportal, without TLS, cannot honour.
    if scheme.eq_ignore_ascii_case("sips") {
        return Err(Verdict::Respond(416, "SIPS Not Supported".into()));
    }
    Uri::parse(uri).map_err(|_| Verdict::Respond(400, "Malformed Request-URI".into()))?;
    let Some(method) = msg.method() else {
        return Err(Verdict::Drop);
    };
    if known_unsupported(method) {
        return Err(Verdict::Respond(405, "Method Not Allowed".into()));
    }
    if *method == Method::Prack {
        // RFC 3262 §3: a PRACK that matches no unacknowledged reliable provisional response
        // gets 481, and vportal sends none.
        return Err(Verdict::Respond(
            481,
            "Call/Transaction Does Not Exist".into(),
        ));
    }
    if matches!(method, Method::Other(_)) {
        return Err(Verdict::Respond(501, "Not Implemented".into()));
    }
    if cseq.method != method.as_str() {
        return Err(Verdict::Respond(400, "CSeq method mismatch".into()));
    }
    Ok(Core {
        via,
        from,
        to,
        call_id,
        cseq,
        max_forwards,
    })
}

/// An INVITE's body and Accept: SDP or nothing (415), and an Accept that allows SDP (406).
pub(super) fn check_invite_content(msg: &Message) -> Result<(), Verdict> {
    let mut accepts = msg.list(HeaderName::Accept).map(media_type).peekable();
    if accepts.peek().is_some()
        && !accepts.any(|t| matches!(t.as_str(), "application/sdp" | "application/*" | "*/*" | ""))
    {
        return Err(Verdict::Respond(406, "Not Acceptable".into()));
    }
    sdp_body(msg).map(drop)
}

/// The media types vportal reads in an INVITE, re-INVITE, UPDATE or ACK.
const SDP_TYPES: &[&str] = &["application/sdp"];

/// The dispositions vportal acts on for an SDP body (RFC 3261 §20.11: `session` is also the
/// default for `application/sdp`).
const SDP_DISPOSITIONS: &[&str] = &["session"];

/// The media types vportal reads in an INFO.
pub(super) const INFO_TYPES: &[&str] = &["application/dtmf-relay", "application/dtmf"];

/// The dispositions vportal acts on for an INFO's DTMF body: `render` (the default for it),
/// RFC 6086's `info-package`, and `signal`, which some phones send.
pub(super) const INFO_DISPOSITIONS: &[&str] = &["render", "info-package", "signal"];

/// What vportal does with a request's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Body {
    /// Read it (an empty body is no body).
    Use,
    /// Treat the request as one without a body.
    Ignore,
}

/// Whether a request's body is for vportal, by its Content-Encoding, Content-Type and
/// Content-Disposition (RFC 3261 §20.11, §20.12, §20.15, RFC 5621 §9): an encoding other
/// than `identity` gets 415. A body of one of `types`, with one of
/// `dispositions` or none, is used. One whose type or disposition vportal does not
/// understand is ignored when marked `handling=optional`, and refused with 415 when its
/// handling is `required`, which is also the default. A body without a Content-Type, or
/// with a malformed Content-Type or Content-Disposition, gets 400.
pub(super) fn check_body(
    msg: &Message,
    types: &[&str],
    dispositions: &[&str],
) -> Result<Body, Verdict> {
    if msg.body().is_empty() {
        return Ok(Body::Use);
    }
    // RFC 3261 §20.12: a body in an encoding vportal does not decode gets 415. Every value
    // counts: the header is a list, and may be repeated.
    if msg
        .list(HeaderName::ContentEncoding)
        .any(|e| !e.eq_ignore_ascii_case("identity"))
    {
        return Err(Verdict::Respond(415, "Unsupported Media Type".into()));
    }
    let content_type = match msg.single(HeaderName::ContentType) {
        Ok(Some(t)) => media_type(t),
        Ok(None) => return Err(Verdict::Respond(400, "Missing Content-Type header".into())),
        Err(e) => return Err(Verdict::Respond(400, e.to_string())),
    };
    let disposition = msg
        .single(HeaderName::ContentDisposition)
        .map_err(|e| Verdict::Respond(400, e.to_string()))?;
    judge(&content_type, disposition, types, dispositions)
}

/// [`check_body`]'s rule for one body or body part of `content_type` (a media type, lower
/// case) with `disposition`.
fn judge(
    content_type: &str,
    disposition: Option<&str>,
    types: &[&str],
    dispositions: &[&str],
) -> Result<Body, Verdict> {
    let mut parts = disposition.unwrap_or("").split(';').map(syntax::trim);
    let name = parts.next().unwrap_or("");
    // RFC 2046 §5.1.7: a multipart subtype not recognised is read as `multipart/mixed`.
    let type_known = types.contains(&content_type)
        || (content_type.starts_with("multipart/") && types.contains(&MULTIPART_MIXED));
    let disposition_known =
        name.is_empty() || dispositions.iter().any(|d| d.eq_ignore_ascii_case(name));
    if type_known && disposition_known {
        return Ok(Body::Use);
    }
    let optional = parts.any(|p| {
        p.split_once('=').is_some_and(|(name, v)| {
            syntax::trim(name).eq_ignore_ascii_case("handling")
                && syntax::trim(v).eq_ignore_ascii_case("optional")
        })
    });
    if optional {
        Ok(Body::Ignore)
    } else if disposition_known {
        Err(Verdict::Respond(415, "Unsupported Media Type".into()))
    } else {
        Err(Verdict::Respond(
            415,
            "Unsupported Content-Disposition".into(),
        ))
    }
}

/// The SDP in a request's body: empty for none, or for a body to ignore (see
/// [`check_body`]).
pub(super) fn sdp_body(msg: &Message) -> Result<&[u8], Verdict> {
    Ok(match check_body(msg, SDP_BODY_TYPES, SDP_DISPOSITIONS)? {
        Body::Ignore => &[],
        Body::Use => match msg.single(HeaderName::ContentType) {
            Ok(Some(t)) if media_type(t).starts_with("multipart/") => {
                sdp_part(msg.body(), t, media_type(t) == MULTIPART_ALTERNATIVE)?
            }
            _ => msg.body(),
        },
    })
}

/// The multipart type whose parts vportal reads: SIP-I and SIP-T trunks send the SDP in one
/// (RFC 3204, RFC 5621). Every other multipart subtype is read as it is (RFC 2046 §5.1.7),
/// but for [`MULTIPART_ALTERNATIVE`].
const MULTIPART_MIXED: &str = "multipart/mixed";

/// Parts that are each the same content in another form (RFC 2046 §5.1.4): the SDP one is
/// taken and the others, which it need not understand, are left alone.
const MULTIPART_ALTERNATIVE: &str = "multipart/alternative";

/// The body types that may hold SDP: itself, or a multipart body with an SDP part.
const SDP_BODY_TYPES: &[&str] = &["application/sdp", MULTIPART_MIXED];

/// The SDP part of a multipart body of `content_type` (RFC 5621 §9): its first
/// `application/sdp` part with disposition `session` (or none). Every part is judged as a
/// whole body would be, so one vportal does not understand must be marked
/// `handling=optional` (an ISUP part usually is), or the request gets 415; but of
/// `alternatives` only one need be understood. A body without an SDP part is none; a
/// malformed one gets 400. An SDP part in a transfer encoding other than 7bit, 8bit or
/// binary counts as not understood.
fn sdp_part<'a>(
    body: &'a [u8],
    content_type: &str,
    alternatives: bool,
) -> Result<&'a [u8], Verdict> {
    let malformed = |e: MultipartError| Verdict::Respond(400, format!("Malformed body: {e}"));
    let boundary = multipart::boundary(content_type).map_err(malformed)?;
    let mut sdp = None;
    let mut unused = None;
    for part in multipart::parts(body, boundary).map_err(malformed)? {
        let plain = part.transfer_encoding.is_none_or(|e| {
            ["7bit", "8bit", "binary"]
                .iter()
                .any(|p| syntax::trim(e).eq_ignore_ascii_case(p))
        });
        let types = if plain { SDP_TYPES } else { &[] };
        let verdict = judge(
            &media_type(part.content_type),
            part.disposition,
            types,
            SDP_DISPOSITIONS,
        );
        match verdict {
            Ok(Body::Use) if sdp.is_none() => sdp = Some(part.body),
            Ok(_) => {}
            Err(refused) if alternatives => {
                unused.get_or_insert(refused);
            }
            Err(refused) => return Err(refused),
        }
    }
    // Alternatives none of which is understood are refused as the first one is.
    match (sdp, unused) {
        (None, Some(refused)) => Err(refused),
        (sdp, _) => Ok(sdp.unwrap_or(&[])),
    }
}
