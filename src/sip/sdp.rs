//! SDP (RFC 4566) for one audio stream, and the RFC 3264 offer/answer around it.
//!
//! Sans-IO and pure: bytes in, a [`SessionDescription`] out; a description and our
//! [`LocalMedia`] in, the agreed [`Negotiated`] parameters and the answer bytes out. Nothing here
//! opens a socket, resolves a name or reads a clock.
//!
//! The parser is lenient where RFC 4566 implementations differ (CRLF or bare LF, trailing
//! whitespace, unknown lines and attributes, non-UTF-8 text in lines we do not read) and strict
//! where it matters: every number read off the wire is range-checked, the body, the number of
//! `m=` lines and the number of formats are bounded, and the lines we act on (`v=`, `c=`, `m=`,
//! `a=rtpmap`) must be well formed UTF-8. No input makes it panic.
//!
//! Only G.711 (PCMU, PCMA) at 8 kHz is spoken, plus RFC 4733 `telephone-event/8000` for DTMF.
//! [`answer`] answers an offer (INVITE, re-INVITE, UPDATE); [`offer`] makes the offer for an
//! INVITE that came without a body, and [`accept_answer`] reads the answer to it from the ACK.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr};

/// Largest body [`parse`] accepts, in bytes. A WebRTC offer with every codec runs to ~10 KiB;
/// a SIP phone's is a few hundred bytes.
pub const MAX_SDP_LEN: usize = 64 * 1024;

/// Most `m=` lines [`parse`] accepts.
pub const MAX_MEDIA: usize = 16;

/// Most formats [`parse`] accepts on one `m=` line.
pub const MAX_FORMATS: usize = 64;

/// Longest host name kept from a `c=` line (RFC 1035 §2.3.4: 255 octets).
const MAX_HOST_NAME_LEN: usize = 255;

/// Largest RTP payload type (RFC 3550 §5.1: the PT field is 7 bits).
const MAX_PAYLOAD_TYPE: u8 = 127;

/// The clock rate of G.711 and of the telephone-events we accept (RFC 3551 §4.5.14, RFC 4733 §7).
const G711_CLOCK_RATE: u32 = 8000;

/// Packetisation interval used when the peer names none (RFC 3551 §4.2: 20 ms).
const DEFAULT_PTIME_MS: u32 = 20;

/// Shortest packetisation interval we agree to.
const MIN_PTIME_MS: u32 = 10;

/// Longest packetisation interval we agree to.
const MAX_PTIME_MS: u32 = 60;

/// The payload type [`offer`] gives telephone-event (the de facto default of most UAs).
const OFFER_TELEPHONE_EVENT_PT: u8 = 101;

/// The events we receive (RFC 4733 §3.2: 0-9, `*`, `#`, A-D, and 16 = flash).
const TELEPHONE_EVENTS: &str = "0-16";

/// The `o=` user name we write (RFC 4566 §5.2).
const ORIGIN_USER: &str = "vportal";

/// A parsed session description: what vportal needs of it. Unknown lines are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionDescription {
    origin: Option<Origin>,
    connection: Option<ConnectionAddress>,
    direction: Option<Direction>,
    ptime: Option<u32>,
    maxptime: Option<u32>,
    media: Vec<MediaDescription>,
}

impl SessionDescription {
    /// The `o=` line, when it was present and well formed.
    ///
    /// RFC 3264 §8: a re-offer whose session version equals the previous one's describes the
    /// same session, so the SIP layer may answer it with its previous answer.
    pub fn origin(&self) -> Option<&Origin> {
        self.origin.as_ref()
    }

    /// The session-level `c=` address, if any.
    pub fn connection(&self) -> Option<&ConnectionAddress> {
        self.connection.as_ref()
    }

    /// The session-level direction attribute, if any.
    pub fn direction(&self) -> Option<Direction> {
        self.direction
    }

    /// The session-level `a=ptime`, in milliseconds, if any (unclamped).
    pub fn ptime(&self) -> Option<u32> {
        self.ptime
    }

    /// The media descriptions, in `m=` line order.
    pub fn media(&self) -> &[MediaDescription] {
        &self.media
    }
}

/// The numbers of an `o=` line (RFC 4566 §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The user name (`-` when the peer has none).
    pub username: String,
    /// Identifies the session; constant for its life.
    pub session_id: u64,
    /// Increases each time the peer's description changes (RFC 3264 §8).
    pub session_version: u64,
}

/// A connection address from a `c=` line (RFC 4566 §5.7), without any TTL or count suffix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionAddress {
    /// An IPv4 or IPv6 literal (may be unspecified: `0.0.0.0` is RFC 2543 hold).
    Ip(IpAddr),
    /// A host name. Kept as text: vportal never resolves names from SDP.
    Name(String),
}

/// One `m=` section (RFC 4566 §5.14) with the attributes vportal reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    kind: String,
    port: u16,
    proto: String,
    formats: Vec<String>,
    payload_types: Vec<u8>,
    connection: Option<ConnectionAddress>,
    direction: Option<Direction>,
    ptime: Option<u32>,
    /// `a=maxptime` (RFC 4566 §6): the most media per packet the peer takes.
    maxptime: Option<u32>,
    rtpmaps: Vec<(u8, RtpMap)>,
    /// `a=fmtp` (RFC 4566 §6): each payload type's format parameters, as written.
    fmtps: Vec<(u8, String)>,
    /// `a=rtcp` (RFC 3605): the RTCP port, and its address when one is given.
    rtcp: Option<(u16, Option<IpAddr>)>,
    /// `a=rtcp-mux` (RFC 5761): RTCP on the RTP port.
    rtcp_mux: bool,
}

impl MediaDescription {
    /// The media type as written (`audio`, `video`, …).
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The transport port; 0 means the stream is disabled (RFC 3264 §5.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The transport protocol as written (`RTP/AVP`, `RTP/SAVP`, `udptl`, …).
    pub fn proto(&self) -> &str {
        &self.proto
    }

    /// The format list as written.
    pub fn formats(&self) -> &[String] {
        &self.formats
    }

    /// The format list as RTP payload types; empty unless the transport is RTP.
    pub fn payload_types(&self) -> &[u8] {
        &self.payload_types
    }

    /// The media-level `c=` address, if any.
    pub fn connection(&self) -> Option<&ConnectionAddress> {
        self.connection.as_ref()
    }

    /// The media-level direction attribute, if any.
    pub fn direction(&self) -> Option<Direction> {
        self.direction
    }

    /// The media-level `a=ptime`, in milliseconds, if any (unclamped).
    pub fn ptime(&self) -> Option<u32> {
        self.ptime
    }

    /// The `a=rtpmap` for `payload_type`, if the section has one.
    pub fn rtpmap(&self, payload_type: u8) -> Option<&RtpMap> {
        self.rtpmaps
            .iter()
            .find(|(pt, _)| *pt == payload_type)
            .map(|(_, map)| map)
    }

    /// The `a=fmtp` parameters for `payload_type`, if the section has them.
    pub fn fmtp(&self, payload_type: u8) -> Option<&str> {
        self.fmtps
            .iter()
            .find(|(pt, _)| *pt == payload_type)
            .map(|(_, params)| params.as_str())
    }

    /// Whether telephone-event on `payload_type` carries DTMF: RFC 4733 §2.4.1 has no
    /// `a=fmtp` mean events 0-15, and a list name the events; one with none of 0-15 (fax
    /// tones only, say) is not a keypad's. A list we cannot read is given the benefit of
    /// the doubt.
    fn carries_dtmf(&self, payload_type: u8) -> bool {
        self.fmtp(payload_type)
            .and_then(event_list)
            .is_none_or(|ranges| ranges.iter().any(|&(first, _)| first <= 15))
    }

    fn is_audio(&self) -> bool {
        self.kind.eq_ignore_ascii_case("audio")
    }

    /// The RTP profile we can speak on this stream, if any: plain RTP/AVP or RTP/AVPF (RFC 4585:
    /// AVP with optional feedback). SRTP and RTP over TCP are not spoken.
    fn avp_profile(&self) -> Option<&'static str> {
        if self.proto.eq_ignore_ascii_case("RTP/AVP") {
            Some("RTP/AVP")
        } else if self.proto.eq_ignore_ascii_case("RTP/AVPF") {
            Some("RTP/AVPF")
        } else {
            None
        }
    }
}

/// An `a=rtpmap` value (RFC 4566 §6): `<encoding>/<clock rate>[/<channels>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// The encoding name as written (compare case-insensitively, RFC 4855).
    pub encoding: String,
    /// The RTP clock rate in Hz.
    pub clock_rate: u32,
    /// The encoding parameters; for audio, the number of channels.
    pub channels: Option<u16>,
}

impl RtpMap {
    /// Whether this maps to `encoding`/8000 in mono.
    fn is(&self, encoding: &str) -> bool {
        self.encoding.eq_ignore_ascii_case(encoding)
            && self.clock_rate == G711_CLOCK_RATE
            && matches!(self.channels, None | Some(1))
    }
}

/// The audio codecs vportal speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// G.711 μ-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
}

impl Codec {
    /// The RTP encoding name (RFC 3551 §6), e.g. `PCMU`.
    pub const fn encoding_name(self) -> &'static str {
        match self {
            Self::Pcmu => "PCMU",
            Self::Pcma => "PCMA",
        }
    }

    /// The static payload type RFC 3551 §6 assigns.
    pub const fn static_payload_type(self) -> u8 {
        match self {
            Self::Pcmu => 0,
            Self::Pcma => 8,
        }
    }
}

/// A media direction attribute (RFC 4566 §6, RFC 3264 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Sends and receives.
    SendRecv,
    /// Sends only.
    SendOnly,
    /// Receives only.
    RecvOnly,
    /// Neither sends nor receives.
    Inactive,
}

impl Direction {
    /// Whether the side this direction describes sends media.
    pub const fn sends(self) -> bool {
        matches!(self, Self::SendRecv | Self::SendOnly)
    }

    /// Whether the side this direction describes receives media.
    pub const fn receives(self) -> bool {
        matches!(self, Self::SendRecv | Self::RecvOnly)
    }

    /// The attribute name, e.g. `sendrecv`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }

    /// The direction with these capabilities.
    pub const fn from_flags(sends: bool, receives: bool) -> Self {
        match (sends, receives) {
            (true, true) => Self::SendRecv,
            (true, false) => Self::SendOnly,
            (false, true) => Self::RecvOnly,
            (false, false) => Self::Inactive,
        }
    }

    /// The other side's view: what one side sends, the other receives (RFC 3264 §6.1).
    pub const fn reversed(self) -> Self {
        Self::from_flags(self.receives(), self.sends())
    }

    /// The attribute with this name, case-insensitively.
    fn from_attribute(name: &[u8]) -> Option<Self> {
        [
            Self::SendRecv,
            Self::SendOnly,
            Self::RecvOnly,
            Self::Inactive,
        ]
        .into_iter()
        .find(|d| name.eq_ignore_ascii_case(d.as_str().as_bytes()))
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What was agreed for the one audio stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Where to send RTP. `None` when the peer gave an unspecified address (`0.0.0.0`, `::`:
    /// RFC 2543 hold); port 0 streams are never chosen.
    pub remote_rtp: Option<SocketAddr>,
    /// The codec.
    pub codec: Codec,
    /// The payload type the peer's description gave the codec: the offerer's in [`answer`]
    /// (RFC 3264 §6.1: the answer reuses it), the answerer's in [`accept_answer`]. Send with
    /// it; expect it on receive.
    pub payload_type: u8,
    /// The peer's payload type for `telephone-event/8000` (RFC 4733), if it has one.
    pub telephone_event: Option<u8>,
    /// Ours, when we offered (101) and the answer numbered telephone-event otherwise: RFC
    /// 3264 §5.1 has the peer send events with our number, and many send with their own,
    /// so events are taken on both.
    pub telephone_event_ours: Option<u8>,
    /// Packetisation interval from the peer's `a=ptime` (media level wins over session level),
    /// clamped to 10..=60 ms; 20 when absent.
    pub ptime_ms: u32,
    /// OUR direction: as written in our answer, or the reverse of the peer's answer.
    pub direction: Direction,
    /// Where to send RTCP: the RTP address with `a=rtcp-mux`, else the `a=rtcp` port (and
    /// address) or the port above RTP's (RFC 3550 §11). `None` when RTP has none, or is on
    /// port 65535 without `a=rtcp`.
    pub remote_rtcp: Option<SocketAddr>,
    /// RTCP shares the RTP port both ways (RFC 5761): the offer asked for it and our answer
    /// agreed. vportal never offers it, so an answer to our offer never has it.
    pub rtcp_mux: bool,
    /// The audio stream is disabled (port 0, RFC 3264 §8.2), by a re-INVITE's or UPDATE's
    /// offer or the answer to ours: the rest is what was agreed before, with no address and
    /// direction inactive. No RTP or RTCP goes either way, and none is heard, until an offer
    /// enables audio again. Never so in what [`answer`] and [`accept_answer`] return.
    pub disabled: bool,
}

/// Our side of the session: where we receive RTP, and the `o=` line's numbers.
///
/// `addr` must be the concrete address the peer can reach (not `0.0.0.0`, which a peer reads
/// as hold). Keep `session_id` for the dialog's life; bump `session_version` each time the
/// description we send changes (RFC 3264 §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMedia {
    /// Where we receive RTP.
    pub addr: SocketAddr,
    /// The `o=` session id.
    pub session_id: u64,
    /// The `o=` session version.
    pub session_version: u64,
}

/// Why a body is not a session description vportal can read. Line numbers count from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The body is longer than [`MAX_SDP_LEN`].
    #[error("SDP body of {len} bytes exceeds the limit of {MAX_SDP_LEN}")]
    TooLarge {
        /// The body's length in bytes.
        len: usize,
    },
    /// The body is empty or does not start with a `v=` line (RFC 4566 §5).
    #[error("SDP does not start with a v= line")]
    MissingVersion,
    /// `v=` names a version other than 0 (RFC 4566 §5.1).
    #[error("line {line}: unsupported SDP version")]
    UnsupportedVersion {
        /// The line.
        line: usize,
    },
    /// A line is not `<type>=<value>` (RFC 4566 §5).
    #[error("line {line}: not an SDP line")]
    MalformedLine {
        /// The line.
        line: usize,
    },
    /// A line vportal must read is not UTF-8.
    #[error("line {line}: not UTF-8")]
    NotUtf8 {
        /// The line.
        line: usize,
    },
    /// An `m=` line lacks a field or holds something other than tokens (RFC 4566 §5.14).
    #[error("line {line}: malformed m= line")]
    MalformedMedia {
        /// The line.
        line: usize,
    },
    /// An `m=` port (or port count) is not a number up to 65535.
    #[error("line {line}: invalid port")]
    InvalidPort {
        /// The line.
        line: usize,
    },
    /// An RTP format or `a=rtpmap` payload type is not a number up to 127.
    #[error("line {line}: invalid RTP payload type")]
    InvalidPayloadType {
        /// The line.
        line: usize,
    },
    /// More than [`MAX_MEDIA`] `m=` lines.
    #[error("more than {MAX_MEDIA} m= lines")]
    TooManyMedia,
    /// More than [`MAX_FORMATS`] formats on one `m=` line.
    #[error("line {line}: more than {MAX_FORMATS} formats")]
    TooManyFormats {
        /// The line.
        line: usize,
    },
    /// A `c=` line is not `<nettype> <addrtype> <address>` with a usable address.
    #[error("line {line}: malformed c= line")]
    MalformedConnection {
        /// The line.
        line: usize,
    },
    /// A `c=` line names a network other than `IN` or an address type other than `IP4`/`IP6`.
    #[error("line {line}: unsupported network or address type")]
    UnsupportedAddressType {
        /// The line.
        line: usize,
    },
    /// A `c=` literal of one family under the other's address type (`IN IP4 ::1`).
    #[error("line {line}: address does not match its address type")]
    AddressTypeMismatch {
        /// The line.
        line: usize,
    },
    /// An `a=rtpmap` is not `<pt> <encoding>/<clock rate>[/<channels>]` (RFC 4566 §6).
    #[error("line {line}: malformed a=rtpmap")]
    MalformedRtpmap {
        /// The line.
        line: usize,
    },
    /// The chosen stream has no `c=` line, neither its own nor at session level (RFC 4566
    /// §5.7 requires one or the other).
    #[error("no connection address for the audio stream")]
    MissingConnection,
}

/// Why no audio stream could be agreed. [`answer`]'s errors map to SIP responses as each
/// variant says; [`accept_answer`]'s arrive in an ACK, which cannot be refused, so the call is
/// ended with a BYE instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferAnswerError {
    /// No audio stream with a non-zero port. SIP: 488 Not Acceptable Here.
    #[error("no active audio stream")]
    NoAudio,
    /// The audio stream offers neither PCMU nor PCMA. SIP: 488 Not Acceptable Here.
    #[error("no common codec: vportal speaks PCMU or PCMA over RTP/AVP")]
    NoCommonCodec,
    /// The audio stream is not plain RTP (`RTP/SAVP`, `UDP/TLS/RTP/SAVPF`: SRTP only). SIP:
    /// 488 Not Acceptable Here.
    #[error("no common transport: vportal speaks plain RTP (RTP/AVP), not SRTP")]
    NotPlainRtp,
    /// The answer to our offer rejected the audio stream (port 0, RFC 3264 §6).
    #[error("the peer rejected the audio stream")]
    AudioRejected,
    /// The offer's media address is IPv6 and ours IPv4, or the other way round: one RTP
    /// socket cannot reach it. SIP: 488 Not Acceptable Here.
    #[error("the offer's media address is of the other IP version than vportal's")]
    AddressFamily,
    /// The media address is one vportal does not stream to: multicast, broadcast,
    /// link-local, or loopback when neither vportal's own address nor the caller's is. A
    /// caller could otherwise point a call's 50 packets a second at the server's own
    /// services or a LAN's multicast group. SIP: 488 Not Acceptable Here.
    #[error("the media address is multicast, broadcast, link-local or another host's loopback")]
    Destination,
    /// The media address is a host name, which vportal never resolves. SIP: 488 Not
    /// Acceptable Here.
    #[error("the media address is a host name, which vportal does not resolve")]
    HostName,
    /// The description is malformed. SIP: 400 Bad Request.
    #[error("malformed SDP: {0}")]
    Malformed(#[from] SdpError),
}

impl OfferAnswerError {
    /// The warn-code a 488 refusing the offer for this reason carries in its `Warning`
    /// (RFC 3261 §20.43: it SHOULD say why); `None` for a reason that is no 488.
    pub const fn warn_code(&self) -> Option<u16> {
        match self {
            Self::AddressFamily | Self::HostName => Some(301),
            Self::NotPlainRtp => Some(302),
            Self::NoAudio => Some(304),
            Self::NoCommonCodec => Some(305),
            Self::Destination => Some(399),
            Self::AudioRejected | Self::Malformed(_) => None,
        }
    }
}

/// Parses a session description.
///
/// Accepts CRLF or bare LF line ends and surrounding whitespace; skips blank lines, unknown
/// line types and unknown attributes, even when they are not UTF-8. Where a line appears twice
/// at one level (`c=`, a direction, `a=ptime`, one payload type's `a=rtpmap`) the first wins.
///
/// # Errors
/// An [`SdpError`] when the body is too large, does not start with `v=0`, or a line vportal
/// reads (`c=`, `m=`, `a=rtpmap`) is malformed, out of range or not UTF-8, or when there are
/// more than [`MAX_MEDIA`] streams or [`MAX_FORMATS`] formats on one.
pub fn parse(body: &[u8]) -> Result<SessionDescription, SdpError> {
    if body.len() > MAX_SDP_LEN {
        return Err(SdpError::TooLarge { len: body.len() });
    }
    let mut sdp = SessionDescription::default();
    let mut seen_version = false;
    for (index, raw) in body.split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        // Trimming both ends takes the CR of CRLF and any trailing blanks with it.
        let text = raw.trim_ascii();
        if text.is_empty() {
            continue;
        }
        let [kind, b'=', value @ ..] = text else {
            return Err(SdpError::MalformedLine { line });
        };
        if !seen_version {
            // RFC 4566 §5: "v=" comes first. Checking it keeps non-SDP bodies out.
            if *kind != b'v' {
                return Err(SdpError::MissingVersion);
            }
            if value != b"0" {
                return Err(SdpError::UnsupportedVersion { line });
            }
            seen_version = true;
            continue;
        }
        match kind {
            b'o' if sdp.media.is_empty() && sdp.origin.is_none() => {
                // We never need the peer's origin to answer, so a broken one is ignored.
                sdp.origin = parse_origin(value);
            }
            b'c' => {
                let address = parse_connection(utf8(value, line)?, line)?;
                let slot = match sdp.media.last_mut() {
                    Some(media) => &mut media.connection,
                    None => &mut sdp.connection,
                };
                slot.get_or_insert(address);
            }
            b'm' => {
                if sdp.media.len() >= MAX_MEDIA {
                    return Err(SdpError::TooManyMedia);
                }
                let media = parse_media(utf8(value, line)?, line)?;
                sdp.media.push(media);
            }
            b'a' => parse_attribute(&mut sdp, value, line)?,
            _ => {}
        }
    }
    if !seen_version {
        return Err(SdpError::MissingVersion);
    }
    Ok(sdp)
}

/// Answers an offer (RFC 3264 §6) from an INVITE, re-INVITE or UPDATE.
///
/// Takes the first audio stream we can speak: one with a non-zero port, an `RTP/AVP` or
/// `RTP/AVPF` transport, PCMU or PCMA, and a connection address that is an IP address. On it,
/// the first PCMU or PCMA format in the offerer's order, plus `telephone-event/8000` when
/// offered, both with the offerer's payload types. Every other stream is rejected with port 0
/// (RFC 3264 §6: a stream that cannot be used is rejected, not the offer, so G.722 offered
/// before G.711 in a stream of its own leaves the G.711 one to be taken). The answer has as
/// many `m=` lines as the offer, CRLF line ends, and is the same bytes for the same inputs.
///
/// # Errors
/// When no stream can be taken, why the first active audio stream could not:
/// [`OfferAnswerError::NoAudio`] without one; [`OfferAnswerError::NotPlainRtp`] when it is
/// not plain RTP, [`OfferAnswerError::NoCommonCodec`] when it carries no G.711,
/// [`OfferAnswerError::HostName`] when its address is a name,
/// [`OfferAnswerError::Malformed`] when it has no connection address.
pub fn answer(
    offer: &SessionDescription,
    local: &LocalMedia,
) -> Result<(Negotiated, Vec<u8>), OfferAnswerError> {
    let (negotiated, body, _) = answer_to(offer, local, None)?;
    Ok((negotiated, body))
}

/// [`answer`], taking only a stream `reach` lets us stream to (our address and the
/// signalling peer's, for [`Negotiated::check_reachable`]), with the layout of the answer.
fn answer_to(
    offer: &SessionDescription,
    local: &LocalMedia,
    reach: Option<(IpAddr, IpAddr)>,
) -> Result<(Negotiated, Vec<u8>, Layout), OfferAnswerError> {
    let chosen = choose_audio(offer, reach)?;
    let mut out = String::new();
    write_session(&mut out, local);
    for (index, media) in offer.media.iter().enumerate() {
        if index == chosen.index {
            write_audio(
                &mut out,
                local.addr.port(),
                chosen.profile,
                &chosen.negotiated,
            );
        } else {
            push_line(&mut out, format_args!("{}", rejected_line(media)));
        }
    }
    let layout = Layout::of_choice(offer, &chosen);
    Ok((chosen.negotiated, out.into_bytes(), layout))
}

/// Answers an offer in a dialog that disables the audio: it has audio streams, and every
/// stream has port 0 (RFC 3264 §8.2). That is no offer to refuse: "a stream that is offered with a
/// port of zero MUST be marked with port zero in the answer", so every stream is answered
/// rejected, in its place, and the session goes on without media until an offer enables
/// audio again. (In a call's first INVITE there is no session to keep: [`answer`]'s
/// [`OfferAnswerError::NoAudio`] stands.) Same session lines, line ends and determinism as
/// [`answer`].
///
/// # Errors
/// [`OfferAnswerError::NoAudio`] when the offer has no audio stream, or an active one
/// (which [`answer`] answers), or another active stream (a switch to T.38 fax: refused).
pub fn answer_disabled(
    offer: &SessionDescription,
    local: &LocalMedia,
) -> Result<Vec<u8>, OfferAnswerError> {
    if !disables_audio(offer) {
        return Err(OfferAnswerError::NoAudio);
    }
    let mut out = String::new();
    write_session(&mut out, local);
    for media in &offer.media {
        push_line(&mut out, format_args!("{}", rejected_line(media)));
    }
    Ok(out.into_bytes())
}

/// Whether `offer` has audio streams and every stream, audio or not, is disabled (port 0).
/// An offer that disables the audio for another stream (T.38 fax's `m=image`, video) is no
/// offer to go on without media: it is refused as before (488), which keeps the session as
/// it was (RFC 3261 §14.2), audio included, rather than leaving the call with none.
fn disables_audio(offer: &SessionDescription) -> bool {
    offer.media.iter().any(MediaDescription::is_audio) && offer.media.iter().all(|m| m.port == 0)
}

/// RFC 3264 §6: a rejected stream keeps its place, with port 0 and (as the grammar needs at
/// least one) the offer's first format; `0` for a disabled stream offered without any,
/// which [`parse`] tolerates (any token will do: no format of a port-0 stream is read).
fn rejected_line(media: &MediaDescription) -> String {
    let format = media.formats.first().map_or("0", String::as_str);
    format!("m={} 0 {} {format}", media.kind, media.proto)
}

/// The streams of the last description we sent, for a later offer of ours (a re-INVITE
/// without SDP): RFC 3264 §8 has it list every stream of the last one, each in its place,
/// and keep each payload type's meaning (§8.3.2), so the telephone-event number in use
/// stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The m= lines in order: `None` is our audio stream, the others rejected ones, as
    /// written (port 0).
    lines: Vec<Option<String>>,
    /// The payload type to offer telephone-event with.
    telephone_event: u8,
    /// The codec agreed, offered first again, and the packet time agreed: a re-offer
    /// keeps what the call runs on (an answerer taking the offer's first codec would
    /// otherwise switch a PCMA call to PCMU, and the caller's ptime would be lost).
    codec: Codec,
    ptime_ms: u32,
}

impl Default for Layout {
    /// That of our first offer: one audio stream, telephone-event as 101.
    fn default() -> Self {
        Self {
            lines: vec![None],
            telephone_event: OFFER_TELEPHONE_EVENT_PT,
            codec: Codec::Pcmu,
            ptime_ms: DEFAULT_PTIME_MS,
        }
    }
}

impl Layout {
    /// The layout of [`answer`]'s answer to `offer` ([`answer_reachable`] gives its own).
    pub fn of_answer(offer: &SessionDescription) -> Self {
        choose_audio(offer, None).map_or_else(|_| Self::default(), |c| Self::of_choice(offer, &c))
    }

    /// The layout of the answer taking `chosen` from `offer`. Without telephone-event in
    /// the offer (or with it on a static number), a later offer of ours puts it on the first
    /// dynamic number (from 101) the offer's audio stream leaves free.
    fn of_choice(offer: &SessionDescription, chosen: &Choice<'_>) -> Self {
        let telephone_event = chosen
            .negotiated
            .telephone_event
            // A static number (an offer mapping 0 or 8 to events) could not go next to the
            // codecs our offer lists.
            .filter(|pt| (96..=127).contains(pt))
            .or_else(|| {
                (OFFER_TELEPHONE_EVENT_PT..=127).find(|pt| !chosen.media.payload_types.contains(pt))
            })
            .unwrap_or(OFFER_TELEPHONE_EVENT_PT);
        let lines = offer
            .media
            .iter()
            .enumerate()
            .map(|(index, media)| (index != chosen.index).then(|| rejected_line(media)))
            .collect();
        Self {
            lines,
            telephone_event,
            codec: chosen.negotiated.codec,
            ptime_ms: chosen.negotiated.ptime_ms,
        }
    }

    /// Takes the codec and packet time an answer to our offer agreed (read with
    /// [`accept_answer_to`]), for our next offer to keep.
    pub fn agreed(&mut self, answer: &Negotiated) {
        self.codec = answer.codec;
        self.ptime_ms = answer.ptime_ms;
    }

    /// The layout once [`answer_disabled`] answered `offer`, `self` being the one before:
    /// the offer's streams, rejected, in their places, except that a later offer of ours
    /// enables our audio stream again in the place it had (or, should the offer have put
    /// another kind of stream there, in the first audio place; RFC 3264 §8.1 lets an offer
    /// reuse a disabled stream's place), with the telephone-event number in use (§8.3.2).
    pub fn of_disabled(&self, offer: &SessionDescription) -> Self {
        let audio_at = |index: usize| offer.media.get(index).is_some_and(|m| m.is_audio());
        let ours = self
            .lines
            .iter()
            .position(Option::is_none)
            .filter(|&index| audio_at(index))
            .or_else(|| offer.media.iter().position(MediaDescription::is_audio));
        let lines = offer
            .media
            .iter()
            .enumerate()
            .map(|(index, media)| (Some(index) != ours).then(|| rejected_line(media)))
            .collect();
        Self {
            lines,
            ..self.clone()
        }
    }
}

/// [`answer`], passing over a stream whose media address is of the other IP version than
/// `local`'s (one RTP socket could not reach it; an IPv4-mapped IPv6 address counts as
/// IPv4), or one vportal does not stream to for a peer signalling from `peer`
/// ([`Negotiated::check_reachable`]): a dual-stack phone's IPv6 stream before its IPv4 one
/// leaves the IPv4 one to be taken. With the answer's [`Layout`], for a later offer of ours.
///
/// # Errors
/// As [`answer`], and [`OfferAnswerError::AddressFamily`] or
/// [`OfferAnswerError::Destination`] when that is why the first active audio stream could
/// not be taken.
pub fn answer_reachable(
    offer: &SessionDescription,
    local: &LocalMedia,
    peer: IpAddr,
) -> Result<(Negotiated, Vec<u8>, Layout), OfferAnswerError> {
    answer_to(offer, local, Some((local.addr.ip(), peer)))
}

impl Negotiated {
    /// Whether one RTP socket bound to `local` can reach the peer, and should: refuses a
    /// media address of the other IP version (an IPv4-mapped IPv6 address counts as IPv4),
    /// and one vportal does not stream to for a peer whose SIP comes from `peer`: loopback
    /// only when vportal's address or the peer's is loopback (a phone or PBX on the same
    /// host), link-local only when vportal's is.
    ///
    /// # Errors
    /// [`OfferAnswerError::AddressFamily`], [`OfferAnswerError::Destination`].
    pub fn check_reachable(&self, local: IpAddr, peer: IpAddr) -> Result<(), OfferAnswerError> {
        let Some(remote) = self.remote_rtp.map(|r| r.ip().to_canonical()) else {
            return Ok(());
        };
        let local = local.to_canonical();
        if remote.is_ipv4() != local.is_ipv4() {
            return Err(OfferAnswerError::AddressFamily);
        }
        let link_local = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => v6.is_unicast_link_local(),
        };
        let broadcast = matches!(remote, IpAddr::V4(v4) if v4.is_broadcast());
        if remote.is_multicast()
            || broadcast
            || (link_local(remote) && !link_local(local))
            || (remote.is_loopback() && !local.is_loopback() && !crate::net::is_loopback(peer))
        {
            return Err(OfferAnswerError::Destination);
        }
        Ok(())
    }
}

/// Our offer, for an INVITE that came without SDP (RFC 3261 §13.2.1 late offer): PCMU 0,
/// PCMA 8, `telephone-event/8000` as 101 (events 0-16), ptime 20, sendrecv. Its answer comes
/// in the ACK; read it with [`accept_answer`].
pub fn offer(local: &LocalMedia) -> Vec<u8> {
    reoffer(local, &Layout::default())
}

/// Our offer in a dialog (a re-INVITE without SDP): [`offer`]'s audio stream, with the
/// codec agreed listed first, the packet time agreed and the telephone-event number in
/// use, in the place the last description gave it, and every other stream of that
/// description again, rejected (RFC 3264 §8).
pub fn reoffer(local: &LocalMedia, layout: &Layout) -> Vec<u8> {
    let mut out = String::new();
    write_session(&mut out, local);
    let te = layout.telephone_event;
    let codecs = match layout.codec {
        Codec::Pcmu => [Codec::Pcmu, Codec::Pcma],
        Codec::Pcma => [Codec::Pcma, Codec::Pcmu],
    };
    let [first, second] = codecs.map(Codec::static_payload_type);
    for line in &layout.lines {
        let Some(rejected) = line else {
            push_line(
                &mut out,
                format_args!(
                    "m=audio {} RTP/AVP {first} {second} {te}",
                    local.addr.port()
                ),
            );
            for codec in codecs {
                push_rtpmap(&mut out, codec.static_payload_type(), codec.encoding_name());
            }
            push_rtpmap(&mut out, te, "telephone-event");
            push_line(&mut out, format_args!("a=fmtp:{te} {TELEPHONE_EVENTS}"));
            push_line(&mut out, format_args!("a=ptime:{}", layout.ptime_ms));
            push_line(&mut out, format_args!("a={}", Direction::SendRecv));
            continue;
        };
        push_line(&mut out, format_args!("{rejected}"));
    }
    out.into_bytes()
}

/// Reads the peer's answer (from the ACK) to our [`offer`].
///
/// Takes the answer's first audio stream with a non-zero port, its first PCMU or PCMA format
/// and its telephone-event payload type; a payload type without `a=rtpmap` means what our
/// offer gave it (0, 8, 101). Our direction is the reverse of the answer's.
///
/// # Errors
/// [`OfferAnswerError::NoAudio`] without an audio stream, [`OfferAnswerError::AudioRejected`]
/// when its port is 0, [`OfferAnswerError::NotPlainRtp`] when it is not plain RTP,
/// [`OfferAnswerError::NoCommonCodec`] when it carries no G.711,
/// [`OfferAnswerError::Malformed`] when it has no connection address.
pub fn accept_answer(answer: &SessionDescription) -> Result<Negotiated, OfferAnswerError> {
    accept_answer_to(answer, &Layout::default())
}

/// [`accept_answer`] for the answer to our [`reoffer`] made from `layout`: its
/// telephone-event number is the one that offer gave.
///
/// # Errors
/// As [`accept_answer`].
pub fn accept_answer_to(
    answer: &SessionDescription,
    layout: &Layout,
) -> Result<Negotiated, OfferAnswerError> {
    let ours = layout.telephone_event;
    let audio = answer.media.iter().filter(|m| m.is_audio());
    let Some(chosen) = audio.clone().find(|m| m.port != 0) else {
        return Err(match audio.count() {
            0 => OfferAnswerError::NoAudio,
            _ => OfferAnswerError::AudioRejected,
        });
    };
    if chosen.avp_profile().is_none() {
        return Err(OfferAnswerError::NotPlainRtp);
    }
    let mut negotiated = negotiate(answer, chosen, Some(ours))?;
    // We offered no `a=rtcp-mux`, so the answer cannot agree to it (RFC 5761 §5.1.1).
    negotiated.rtcp_mux = false;
    negotiated.remote_rtcp = rtcp_address(negotiated.remote_rtp, chosen, false);
    // Events may still come with our number, unless the answer gave it to something else
    // (its audio would be read as keys). An answer that lists it as telephone-event too,
    // after one of its own, has the peer send with it (RFC 3264 §5.1).
    let ours_free = !chosen.payload_types.contains(&ours)
        || classify(chosen, ours, Some(ours)) == Format::TelephoneEvent;
    negotiated.telephone_event_ours = negotiated
        .telephone_event
        .filter(|&pt| pt != ours && ours_free)
        .map(|_| ours);
    Ok(negotiated)
}

/// Our direction, given the peer's (`theirs`) and whether it gave an unspecified address
/// (`hold`). RFC 3264 §6.1: the reverse of the peer's. RFC 3264 §8.4: RFC 2543 signalled hold
/// with `c=0.0.0.0`, so such a peer cannot receive and we do not send.
fn our_direction(theirs: Direction, hold: bool) -> Direction {
    let ours = theirs.reversed();
    Direction::from_flags(ours.sends() && !hold, ours.receives())
}

/// The audio stream an answer takes, and what is agreed on it.
struct Choice<'a> {
    /// Its place among the offer's streams.
    index: usize,
    media: &'a MediaDescription,
    profile: &'static str,
    negotiated: Negotiated,
}

/// The first audio stream we can speak: active, plain RTP, with G.711 and an IP address,
/// and, given `reach` (our address and the signalling peer's), one we stream to. Without
/// one, why the first active audio stream could not be taken.
fn choose_audio(
    offer: &SessionDescription,
    reach: Option<(IpAddr, IpAddr)>,
) -> Result<Choice<'_>, OfferAnswerError> {
    let mut first_refusal = None;
    for (index, media) in offer.media.iter().enumerate() {
        if !media.is_audio() || media.port == 0 {
            continue;
        }
        let taken = media
            .avp_profile()
            .ok_or(OfferAnswerError::NotPlainRtp)
            .and_then(|profile| {
                let negotiated = negotiate(offer, media, None)?;
                if let Some((local, peer)) = reach {
                    negotiated.check_reachable(local, peer)?;
                }
                Ok(Choice {
                    index,
                    media,
                    profile,
                    negotiated,
                })
            });
        match taken {
            Ok(choice) => return Ok(choice),
            Err(refusal) => {
                first_refusal.get_or_insert(refusal);
            }
        }
    }
    Err(first_refusal.unwrap_or(OfferAnswerError::NoAudio))
}

/// What a payload type on the chosen stream is to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    G711(Codec),
    TelephoneEvent,
    Other,
}

/// Classifies `pt` on `media`. An `a=rtpmap` wins; without one, the static types 0 and 8 are
/// G.711 (RFC 3551 §6), and in an answer to our offer, `offered_te` is the telephone-event
/// our offer declared: an answer may omit rtpmaps for our payload types. Telephone-event
/// whose `a=fmtp` lists no DTMF event is [`Format::Other`].
fn classify(media: &MediaDescription, pt: u8, offered_te: Option<u8>) -> Format {
    match media.rtpmap(pt) {
        Some(map) if map.is(Codec::Pcmu.encoding_name()) => Format::G711(Codec::Pcmu),
        Some(map) if map.is(Codec::Pcma.encoding_name()) => Format::G711(Codec::Pcma),
        Some(map) if map.is("telephone-event") && media.carries_dtmf(pt) => Format::TelephoneEvent,
        Some(_) => Format::Other,
        None => match pt {
            0 => Format::G711(Codec::Pcmu),
            8 => Format::G711(Codec::Pcma),
            pt if Some(pt) == offered_te && media.carries_dtmf(pt) => Format::TelephoneEvent,
            _ => Format::Other,
        },
    }
}

/// The parameters the peer's description `sdp` sets for its stream `media`.
fn negotiate(
    sdp: &SessionDescription,
    media: &MediaDescription,
    offered_te: Option<u8>,
) -> Result<Negotiated, OfferAnswerError> {
    let mut codec = None;
    let mut telephone_event = None;
    for &pt in &media.payload_types {
        match classify(media, pt, offered_te) {
            Format::G711(c) if codec.is_none() => codec = Some((c, pt)),
            Format::TelephoneEvent if telephone_event.is_none() => telephone_event = Some(pt),
            _ => {}
        }
    }
    let (codec, payload_type) = codec.ok_or(OfferAnswerError::NoCommonCodec)?;

    // RFC 4566 §5.7: a media-level c= overrides the session-level one.
    let connection = media
        .connection
        .as_ref()
        .or(sdp.connection.as_ref())
        .ok_or(SdpError::MissingConnection)?;
    let (remote_rtp, hold) = match connection {
        // RFC 5118 §4.9: an IPv4-mapped address (`c=IN IP6 ::ffff:192.0.2.2`) is the IPv4
        // address it stands for. Taken as such: an IPv4 RTP socket can neither send to an
        // IPv6 socket address nor match one against the IPv4 source its packets come from.
        ConnectionAddress::Ip(ip) => match ip.to_canonical() {
            ip if ip.is_unspecified() => (None, true),
            ip => (Some(SocketAddr::new(ip, media.port)), false),
        },
        // Never resolved (a name from a message is not looked up), so nothing could be sent.
        ConnectionAddress::Name(_) => return Err(OfferAnswerError::HostName),
    };
    // RFC 3264 §5.1: a media-level direction overrides the session level; sendrecv by default.
    let theirs = media
        .direction
        .or(sdp.direction)
        .unwrap_or(Direction::SendRecv);
    // The peer's packet time, never beyond the most it takes (`a=maxptime`).
    let ptime_ms = media
        .ptime
        .or(sdp.ptime)
        .unwrap_or(DEFAULT_PTIME_MS)
        .min(media.maxptime.or(sdp.maxptime).unwrap_or(u32::MAX))
        .clamp(MIN_PTIME_MS, MAX_PTIME_MS);

    Ok(Negotiated {
        remote_rtp,
        codec,
        payload_type,
        telephone_event,
        telephone_event_ours: None,
        ptime_ms,
        direction: our_direction(theirs, hold),
        remote_rtcp: rtcp_address(remote_rtp, media, media.rtcp_mux),
        rtcp_mux: media.rtcp_mux,
        disabled: false,
    })
}

/// Where the peer takes RTCP for the stream `media` whose RTP goes to `rtp`: there with
/// `mux`, else at `a=rtcp`'s port, else the port above RTP's; always at RTP's address.
/// (RFC 3605 lets `a=rtcp` name another address, but that would let a caller aim the
/// reports at a third host, one [`Negotiated::check_reachable`] never saw; symmetric RTCP
/// still follows where the peer's reports really come from.)
fn rtcp_address(
    rtp: Option<SocketAddr>,
    media: &MediaDescription,
    mux: bool,
) -> Option<SocketAddr> {
    let rtp = rtp?;
    if mux {
        return Some(rtp);
    }
    match media.rtcp {
        Some((port, _)) => Some(SocketAddr::new(rtp.ip(), port)),
        None => rtp
            .port()
            .checked_add(1)
            .map(|port| SocketAddr::new(rtp.ip(), port)),
    }
}

/// Appends `args` and CRLF (RFC 4566 §5: lines end in CRLF).
fn push_line(out: &mut String, args: fmt::Arguments<'_>) {
    // Formatting into a String cannot fail.
    let _ = out.write_fmt(args);
    out.push_str("\r\n");
}

fn push_rtpmap(out: &mut String, pt: u8, encoding: &str) {
    push_line(
        out,
        format_args!("a=rtpmap:{pt} {encoding}/{G711_CLOCK_RATE}"),
    );
}

/// The session-level lines: `v=`, `o=`, `s=`, `c=`, `t=`.
fn write_session(out: &mut String, local: &LocalMedia) {
    // A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; write them as IPv4.
    let ip = local.addr.ip().to_canonical();
    let addrtype = if ip.is_ipv4() { "IP4" } else { "IP6" };
    push_line(out, format_args!("v=0"));
    push_line(
        out,
        format_args!(
            "o={ORIGIN_USER} {} {} IN {addrtype} {ip}",
            local.session_id, local.session_version
        ),
    );
    push_line(out, format_args!("s=-"));
    push_line(out, format_args!("c=IN {addrtype} {ip}"));
    push_line(out, format_args!("t=0 0"));
}

/// Our accepted audio stream, with the offerer's payload types (RFC 3264 §6.1).
fn write_audio(out: &mut String, port: u16, profile: &str, n: &Negotiated) {
    let pt = n.payload_type;
    match n.telephone_event {
        Some(te) => push_line(out, format_args!("m=audio {port} {profile} {pt} {te}")),
        None => push_line(out, format_args!("m=audio {port} {profile} {pt}")),
    }
    push_rtpmap(out, pt, n.codec.encoding_name());
    if let Some(te) = n.telephone_event {
        push_rtpmap(out, te, "telephone-event");
        // RFC 4733: the fmtp lists the events the sender of the SDP can receive, so ours,
        // whatever the offerer listed.
        push_line(out, format_args!("a=fmtp:{te} {TELEPHONE_EVENTS}"));
    }
    push_line(out, format_args!("a=ptime:{}", n.ptime_ms));
    push_line(out, format_args!("a={}", n.direction));
    if n.rtcp_mux {
        push_line(out, format_args!("a=rtcp-mux"));
    }
}

/// `value` as text, or the error for a line we must read.
fn utf8(value: &[u8], line: usize) -> Result<&str, SdpError> {
    std::str::from_utf8(value).map_err(|_| SdpError::NotUtf8 { line })
}

/// Digits only: `str::parse` would also take a leading `+`.
fn parse_number<T: std::str::FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn parse_payload_type(text: &str) -> Option<u8> {
    parse_number::<u8>(text).filter(|&pt| pt <= MAX_PAYLOAD_TYPE)
}

/// `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>` (RFC 4566 §5.2).
fn parse_origin(value: &[u8]) -> Option<Origin> {
    let text = std::str::from_utf8(value).ok()?;
    let mut fields = text.split_ascii_whitespace();
    let username = fields.next()?.to_owned();
    let session_id = parse_number(fields.next()?)?;
    let session_version = parse_number(fields.next()?)?;
    Some(Origin {
        username,
        session_id,
        session_version,
    })
}

/// `c=<nettype> <addrtype> <connection-address>` (RFC 4566 §5.7).
fn parse_connection(text: &str, line: usize) -> Result<ConnectionAddress, SdpError> {
    let fields: Vec<&str> = text.split_ascii_whitespace().take(4).collect();
    let [nettype, addrtype, address] = fields[..] else {
        return Err(SdpError::MalformedConnection { line });
    };
    if !nettype.eq_ignore_ascii_case("IN") {
        return Err(SdpError::UnsupportedAddressType { line });
    }
    let want_v4 = if addrtype.eq_ignore_ascii_case("IP4") {
        true
    } else if addrtype.eq_ignore_ascii_case("IP6") {
        false
    } else {
        return Err(SdpError::UnsupportedAddressType { line });
    };
    // Multicast addresses carry "/ttl" or "/count" suffixes; the address is what precedes.
    let address = address.split('/').next().unwrap_or_default();
    if let Ok(ip) = address.parse::<IpAddr>() {
        return if ip.is_ipv4() == want_v4 {
            Ok(ConnectionAddress::Ip(ip))
        } else {
            Err(SdpError::AddressTypeMismatch { line })
        };
    }
    let is_host_name = !address.is_empty()
        && address.len() <= MAX_HOST_NAME_LEN
        && address
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if is_host_name {
        Ok(ConnectionAddress::Name(address.to_owned()))
    } else {
        Err(SdpError::MalformedConnection { line })
    }
}

/// `m=<media> <port>[/<count>] <proto> <fmt> ...` (RFC 4566 §5.14).
fn parse_media(text: &str, line: usize) -> Result<MediaDescription, SdpError> {
    let mut fields = text.split_ascii_whitespace();
    let (Some(kind), Some(port), Some(proto)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err(SdpError::MalformedMedia { line });
    };
    let (port, count) = match port.split_once('/') {
        Some((port, count)) => (port, Some(count)),
        None => (port, None),
    };
    let port = parse_number::<u16>(port).ok_or(SdpError::InvalidPort { line })?;
    if count.is_some_and(|c| parse_number::<u16>(c).is_none()) {
        return Err(SdpError::InvalidPort { line });
    }

    let mut formats = Vec::new();
    for format in fields {
        if formats.len() >= MAX_FORMATS {
            return Err(SdpError::TooManyFormats { line });
        }
        formats.push(format);
    }
    // Rejected streams are echoed into our answer: only printable tokens may travel back.
    let is_token = |t: &str| t.bytes().all(|b| b.is_ascii_graphic());
    if !is_token(kind) || !is_token(proto) || !formats.iter().all(|f| is_token(f)) {
        return Err(SdpError::MalformedMedia { line });
    }
    // RFC 4566 §5.14 wants a format; tolerate none only on a disabled stream.
    if formats.is_empty() && port != 0 {
        return Err(SdpError::MalformedMedia { line });
    }
    // RFC 4566 §5.14: on RTP transports the formats are payload types.
    let is_rtp = proto
        .split('/')
        .any(|part| part.eq_ignore_ascii_case("RTP"));
    let payload_types = if is_rtp {
        formats
            .iter()
            .map(|f| parse_payload_type(f).ok_or(SdpError::InvalidPayloadType { line }))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        Vec::new()
    };

    Ok(MediaDescription {
        kind: kind.to_owned(),
        port,
        proto: proto.to_owned(),
        formats: formats.into_iter().map(str::to_owned).collect(),
        payload_types,
        connection: None,
        direction: None,
        ptime: None,
        maxptime: None,
        rtpmaps: Vec::new(),
        fmtps: Vec::new(),
        rtcp: None,
        rtcp_mux: false,
    })
}

/// `a=<name>[:<value>]` (RFC 4566 §5.13): the direction attributes, `ptime`, `maxptime`,
/// `rtcp`, `rtcp-mux`, `rtpmap` and `fmtp`.
fn parse_attribute(
    sdp: &mut SessionDescription,
    value: &[u8],
    line: usize,
) -> Result<(), SdpError> {
    let (name, attr_value) = match value.iter().position(|&b| b == b':') {
        Some(colon) => (&value[..colon], &value[colon + 1..]),
        None => (value, &[][..]),
    };
    if let Some(direction) = Direction::from_attribute(name) {
        let slot = match sdp.media.last_mut() {
            Some(media) => &mut media.direction,
            None => &mut sdp.direction,
        };
        slot.get_or_insert(direction);
    } else if name.eq_ignore_ascii_case(b"ptime") || name.eq_ignore_ascii_case(b"maxptime") {
        // Advisory (RFC 4566 §6): an unreadable value is ignored, not fatal.
        if let Some(ms) = parse_ptime(attr_value) {
            let max = name.eq_ignore_ascii_case(b"maxptime");
            let slot = match (sdp.media.last_mut(), max) {
                (Some(media), false) => &mut media.ptime,
                (Some(media), true) => &mut media.maxptime,
                (None, false) => &mut sdp.ptime,
                (None, true) => &mut sdp.maxptime,
            };
            slot.get_or_insert(ms);
        }
    } else if name.eq_ignore_ascii_case(b"rtcp") {
        // Advisory like ptime: an unreadable value leaves RTCP on the port above RTP.
        if let Some(media) = sdp.media.last_mut() {
            media.rtcp = media.rtcp.or_else(|| parse_rtcp(attr_value));
        }
    } else if name.eq_ignore_ascii_case(b"rtcp-mux") {
        if let Some(media) = sdp.media.last_mut() {
            media.rtcp_mux = true;
        }
    } else if name.eq_ignore_ascii_case(b"rtpmap") {
        // An rtpmap only means something inside a media section.
        if let Some(media) = sdp.media.last_mut() {
            let (pt, map) = parse_rtpmap(utf8(attr_value, line)?, line)?;
            if media.rtpmap(pt).is_none() {
                media.rtpmaps.push((pt, map));
            }
        }
    } else if name.eq_ignore_ascii_case(b"fmtp") {
        // Advisory for us: one we cannot read is ignored.
        if let Some(media) = sdp.media.last_mut()
            && let Some((pt, params)) = parse_fmtp(attr_value)
            && media.fmtp(pt).is_none()
        {
            media.fmtps.push((pt, params.to_owned()));
        }
    }
    Ok(())
}

/// `a=fmtp:<format> <parameters>` (RFC 4566 §6), for an RTP payload type.
fn parse_fmtp(value: &[u8]) -> Option<(u8, &str)> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (pt, params) = text.split_once([' ', '\t']).unwrap_or((text, ""));
    Some((parse_payload_type(pt)?, params.trim()))
}

/// A telephone-event `a=fmtp` event list (RFC 4733 §7.1.1: `0-15,66,70`) as inclusive
/// ranges; `None` when it is not one.
fn event_list(params: &str) -> Option<Vec<(u8, u8)>> {
    params
        .split(',')
        .map(|item| {
            let (first, last) = item
                .trim()
                .split_once('-')
                .unwrap_or((item.trim(), item.trim()));
            let (first, last) = (parse_number::<u8>(first)?, parse_number::<u8>(last)?);
            (first <= last).then_some((first, last))
        })
        .collect()
}

/// `a=rtcp:<port> [IN IP4|IP6 <address>]` (RFC 3605 §2.1). An address that is not an IP
/// address (a host name is never resolved) is left out: the stream's `c=` address is used.
fn parse_rtcp(value: &[u8]) -> Option<(u16, Option<IpAddr>)> {
    let text = std::str::from_utf8(value).ok()?;
    let mut fields = text.split_ascii_whitespace();
    let port = parse_number::<u16>(fields.next()?).filter(|&p| p != 0)?;
    let address = match (fields.next(), fields.next(), fields.next()) {
        (Some(net), Some(_), Some(address)) if net.eq_ignore_ascii_case("IN") => {
            address.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
        }
        _ => None,
    };
    Some((port, address))
}

/// `a=ptime:<ms>`. Some UAs write a fraction (`20.0`); its integer part is taken. A number too
/// large for `u32` reads as `u32::MAX`, to be clamped like any other large value.
fn parse_ptime(value: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let whole = text.split('.').next().unwrap_or_default();
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(whole.parse().unwrap_or(u32::MAX))
}

/// `a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]` (RFC 4566 §6).
fn parse_rtpmap(text: &str, line: usize) -> Result<(u8, RtpMap), SdpError> {
    let malformed = SdpError::MalformedRtpmap { line };
    let mut fields = text.split_ascii_whitespace();
    let (Some(pt), Some(spec), None) = (fields.next(), fields.next(), fields.next()) else {
        return Err(malformed);
    };
    let pt = parse_payload_type(pt).ok_or(SdpError::InvalidPayloadType { line })?;
    let mut parts = spec.split('/');
    let (Some(encoding), Some(clock_rate), channels, None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed);
    };
    let clock_rate = parse_number(clock_rate).ok_or(malformed.clone())?;
    let channels = match channels {
        Some(c) => Some(parse_number(c).ok_or(malformed.clone())?),
        None => None,
    };
    if encoding.is_empty() {
        return Err(malformed);
    }
    Ok((
        pt,
        RtpMap {
            encoding: encoding.to_owned(),
            clock_rate,
            channels,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// A caller's address off this host. Not loopback on purpose: it is the subject of the
    /// reachability tests that use it, and no socket is involved.
    fn away() -> IpAddr {
        "192.0.2.200".parse().unwrap()
    }

    /// [`local4`] on another address.
    fn local_at(ip: &str) -> LocalMedia {
        LocalMedia {
            addr: SocketAddr::new(ip.parse().unwrap(), 40000),
            ..local4()
        }
    }

    fn local4() -> LocalMedia {
        LocalMedia {
            addr: "127.0.0.1:40000".parse().unwrap(),
            session_id: 1000,
            session_version: 1,
        }
    }

    fn local6() -> LocalMedia {
        LocalMedia {
            addr: "[::1]:40002".parse().unwrap(),
            session_id: 7,
            session_version: 3,
        }
    }

    /// The session-level lines vportal writes for [`local4`], before its media sections.
    const LOCAL4_SESSION: &str = "v=0\r\n\
                                  o=vportal 1000 1 IN IP4 127.0.0.1\r\n\
                                  s=-\r\n\
                                  c=IN IP4 127.0.0.1\r\n\
                                  t=0 0\r\n";

    /// Joins lines with CRLF, as a UA would send them.
    fn sdp(lines: &[&str]) -> Vec<u8> {
        let mut body = lines.join("\r\n");
        body.push_str("\r\n");
        body.into_bytes()
    }

    fn negotiate_offer(body: &[u8]) -> Result<Negotiated, OfferAnswerError> {
        let offer = parse(body)?;
        answer(&offer, &local4()).map(|(n, _)| n)
    }

    fn answer_text(body: &[u8], local: &LocalMedia) -> String {
        let offer = parse(body).unwrap();
        let (_, bytes) = answer(&offer, local).unwrap();
        String::from_utf8(bytes).unwrap()
    }

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    const SIPP_OFFER: &[&str] = &[
        "v=0",
        "o=user1 53655765 2353687637 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        "m=audio 6000 RTP/AVP 0",
        "a=rtpmap:0 PCMU/8000",
    ];

    const BARESIP_OFFER: &[&str] = &[
        "v=0",
        "o=- 3911214376 3911214376 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        "a=tool:baresip 3.10.1",
        "m=audio 10010 RTP/AVP 111 9 0 8 101",
        "b=AS:128",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 stereo=1;sprop-stereo=1",
        "a=rtpmap:9 G722/8000",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        "a=rtcp-rsize",
        "a=ptime:20",
        "a=sendrecv",
        "a=label:1",
        "m=video 10012 RTP/AVP 96",
        "a=rtpmap:96 H264/90000",
        "a=sendrecv",
    ];

    /// (name, offer lines, expected negotiation).
    type Case = (
        &'static str,
        &'static [&'static str],
        Result<Negotiated, OfferAnswerError>,
    );

    /// The RTCP address by default: the port above RTP's (none above 65535).
    fn above(rtp: SocketAddr) -> Option<SocketAddr> {
        Some(SocketAddr::new(rtp.ip(), rtp.port().checked_add(1)?))
    }

    fn ok(
        remote: Option<SocketAddr>,
        codec: Codec,
        payload_type: u8,
        telephone_event: Option<u8>,
        ptime_ms: u32,
        direction: Direction,
    ) -> Result<Negotiated, OfferAnswerError> {
        Ok(Negotiated {
            remote_rtp: remote,
            codec,
            payload_type,
            telephone_event,
            telephone_event_ours: None,
            ptime_ms,
            direction,
            remote_rtcp: remote.and_then(above),
            rtcp_mux: false,
            disabled: false,
        })
    }

    #[test]
    fn offers_table() {
        use Codec::{Pcma, Pcmu};
        use Direction::{Inactive, RecvOnly, SendOnly, SendRecv};
        let cases: Vec<Case> = vec![
            (
                "sipp",
                SIPP_OFFER,
                ok(addr("127.0.0.1:6000"), Pcmu, 0, None, 20, SendRecv),
            ),
            (
                "baresip, PCMU after opus and G722",
                BARESIP_OFFER,
                ok(addr("127.0.0.1:10010"), Pcmu, 0, Some(101), 20, SendRecv),
            ),
            (
                "PCMA first",
                &[
                    "v=0",
                    "c=IN IP4 127.0.0.1",
                    "m=audio 4000 RTP/AVP 8 0 101",
                    "a=rtpmap:101 telephone-event/8000",
                ],
                ok(addr("127.0.0.1:4000"), Pcma, 8, Some(101), 20, SendRecv),
            ),
            (
                "static types without rtpmap",
                &["v=0", "c=IN IP4 127.0.0.1", "m=audio 4000 RTP/AVP 18 8 0"],
                ok(addr("127.0.0.1:4000"), Pcma, 8, None, 20, SendRecv),
            ),
            (
                "dynamic PCMU, lower case",
                &[
                    "v=0",
                    "c=IN IP4 127.0.0.1",
                    "m=audio 4000 RTP/AVP 97 98",
                    "a=rtpmap:97 pcmu/8000/1",
                    "a=rtpmap:98 Telephone-Event/8000",
                ],
                ok(addr("127.0.0.1:4000"), Pcmu, 97, Some(98), 20, SendRecv),
            ),
            (
                "telephone-event 96 (SIPp play_dtmf)",
                &[
                    "v=0",
                    "c=IN IP4 127.0.0.1",
                    "m=audio 6000 RTP/AVP 0 96",
                    "a=rtpmap:0 PCMU/8000",
                    "a=rtpmap:96 telephone-event/8000",
                    "a=fmtp:96 0-15",
                ],
                ok(addr("127.0.0.1:6000"), Pcmu, 0, Some(96), 20, SendRecv),
            ),
            (
                "fax tones first, then DTMF: the keypad's number",
                &[
                    "v=0",
                    "c=IN IP4 127.0.0.1",
                    "m=audio 6000 RTP/AVP 0 100 101",
                    "a=rtpmap:100 telephone-event/8000",
                    "a=fmtp:100 32-49",
                    "a=rtpmap:101 telephone-event/8000",
                    "a=fmtp:101 0-11, 12-15,16",
                ],
                ok(addr("127.0.0.1:6000"), Pcmu, 0, Some(101), 20, SendRecv),
            ),
            (
                "telephone-event with fax tones only carries no keys",
                &[
                    "v=0",
                    "c=IN IP4 127.0.0.1",
                    "m=audio 6000 RTP/AVP 0 100",
                    "a=rtpmap:100 telephone-event/8000",
                    "a=fmtp:100 32-36,40",
                ],
                ok(addr("127.0.0.1:6000"), Pcmu, 0, None, 20, SendRecv),
            ),
            (
                "an event list we cannot read is taken for DTMF",
                &[
                    "v=0",
                    "c=IN IP4 127.0.0.1",
                    "m=audio 6000 RTP/AVP 0 100",
                    "a=rtpmap:100 telephone-event/8000",
                    "a=fmtp:100 events=all",
                ],
                ok(addr("127.0.0.1:6000"), Pcmu, 0, Some(100), 20, SendRecv),
            ),
            (
                "telephone-event at 48 kHz only is not ours",
                &[
                    "v=0",
                    "c=IN IP4 127.0.0.1",
                    "m=audio 6000 RTP/AVP 0 110",
                    "a=rtpmap:110 telephone-event/48000",
                ],
                ok(addr("127.0.0.1:6000"), Pcmu, 0, None, 20, SendRecv),
            ),
            (
                "stereo PCMU is not G.711 mono",
                &[
                    "v=0",
                    "c=IN IP4 127.0.0.1",
                    "m=audio 6000 RTP/AVP 100 8",
                    "a=rtpmap:100 PCMU/8000/2",
                ],
                ok(addr("127.0.0.1:6000"), Pcma, 8, None, 20, SendRecv),
            ),
            (
                "media-level c= wins",
                &[
                    "v=0",
                    "c=IN IP4 127.0.0.1",
                    "t=0 0",
                    "m=audio 4000 RTP/AVP 0",
                    "c=IN IP4 127.0.0.2",
                ],
                ok(addr("127.0.0.2:4000"), Pcmu, 0, None, 20, SendRecv),
            ),
            (
                "media-level c= only",
                &["v=0", "m=audio 4000 RTP/AVP 0", "c=IN IP4 127.0.0.1/127"],
                ok(addr("127.0.0.1:4000"), Pcmu, 0, None, 20, SendRecv),
            ),
            (
                "session-level sendonly (hold)",
                &[
                    "v=0",
                    "c=IN IP4 127.0.0.1",
                    "a=sendonly",
                    "m=audio 4000 RTP/AVP 0",
                ],
                ok(addr("127.0.0.1:4000"), Pcmu, 0, None, 20, RecvOnly),
            ),
            (
                "media-level direction wins over session level",
                &[
                    "v=0",
                    "c=IN IP4 127.0.0.1",
                    "a=sendonly",
                    "m=audio 4000 RTP/AVP 0",
                    "a=sendrecv",
                ],
                ok(addr("127.0.0.1:4000"), Pcmu, 0, None, 20, SendRecv),
            ),
            (
                "RFC 2543 hold: c=0.0.0.0",
                &["v=0", "c=IN IP4 0.0.0.0", "m=audio 4000 RTP/AVP 0"],
                ok(None, Pcmu, 0, None, 20, RecvOnly),
            ),
            (
                "c=0.0.0.0 and sendonly",
                &[
                    "v=0",
                    "c=IN IP4 0.0.0.0",
                    "m=audio 4000 RTP/AVP 0",
                    "a=sendonly",
                ],
                ok(None, Pcmu, 0, None, 20, RecvOnly),
            ),
            (
                "c=0.0.0.0 and recvonly",
                &[
                    "v=0",
                    "c=IN IP4 0.0.0.0",
                    "m=audio 4000 RTP/AVP 0",
                    "a=recvonly",
                ],
                ok(None, Pcmu, 0, None, 20, Inactive),
            ),
            (
                "IPv6 unspecified is hold too",
                &["v=0", "c=IN IP6 ::", "m=audio 4000 RTP/AVP 0"],
                ok(None, Pcmu, 0, None, 20, RecvOnly),
            ),
            (
                "IPv6",
                &["v=0", "c=IN IP6 ::1", "m=audio 4000 RTP/AVP 8"],
                ok(addr("[::1]:4000"), Pcma, 8, None, 20, SendRecv),
            ),
            (
                // The name is the subject: nothing resolves it, and no socket is involved.
                "host name is not resolved: nothing could be sent",
                &[
                    "v=0",
                    "c=IN IP4 pbx.example.invalid",
                    "m=audio 4000 RTP/AVP 0",
                ],
                Err(OfferAnswerError::HostName),
            ),
            (
                "AVPF is spoken",
                &["v=0", "c=IN IP4 127.0.0.1", "m=audio 4000 RTP/AVPF 0"],
                ok(addr("127.0.0.1:4000"), Pcmu, 0, None, 20, SendRecv),
            ),
            (
                "SRTP stream skipped for a later plain one",
                &[
                    "v=0",
                    "c=IN IP4 127.0.0.1",
                    "m=audio 4000 RTP/SAVP 0",
                    "m=audio 4002 RTP/AVP 8",
                ],
                ok(addr("127.0.0.1:4002"), Pcma, 8, None, 20, SendRecv),
            ),
            (
                "disabled audio skipped",
                &[
                    "v=0",
                    "c=IN IP4 127.0.0.1",
                    "m=audio 0 RTP/AVP 8",
                    "m=audio 4002 RTP/AVP 0",
                ],
                ok(addr("127.0.0.1:4002"), Pcmu, 0, None, 20, SendRecv),
            ),
            (
                "media ptime wins over session ptime",
                &[
                    "v=0",
                    "c=IN IP4 127.0.0.1",
                    "a=ptime:40",
                    "m=audio 4000 RTP/AVP 0",
                    "a=ptime:30",
                ],
                ok(addr("127.0.0.1:4000"), Pcmu, 0, None, 30, SendRecv),
            ),
            (
                "session ptime",
                &[
                    "v=0",
                    "c=IN IP4 127.0.0.1",
                    "a=ptime:40",
                    "m=audio 4000 RTP/AVP 0",
                ],
                ok(addr("127.0.0.1:4000"), Pcmu, 0, None, 40, SendRecv),
            ),
            (
                "rtpmap overrides a static assignment",
                &[
                    "v=0",
                    "c=IN IP4 127.0.0.1",
                    "m=audio 4000 RTP/AVP 0 8",
                    "a=rtpmap:0 G729/8000",
                ],
                ok(addr("127.0.0.1:4000"), Pcma, 8, None, 20, SendRecv),
            ),
            (
                "no G.711",
                &[
                    "v=0",
                    "c=IN IP4 127.0.0.1",
                    "m=audio 4000 RTP/AVP 111 9 101",
                    "a=rtpmap:111 opus/48000/2",
                    "a=rtpmap:101 telephone-event/8000",
                ],
                Err(OfferAnswerError::NoCommonCodec),
            ),
            (
                "SRTP only",
                &[
                    "v=0",
                    "c=IN IP4 127.0.0.1",
                    "m=audio 4000 RTP/SAVP 0 8",
                    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
                ],
                Err(OfferAnswerError::NotPlainRtp),
            ),
            (
                "WebRTC SAVPF only",
                &[
                    "v=0",
                    "c=IN IP4 127.0.0.1",
                    "m=audio 9 UDP/TLS/RTP/SAVPF 111 0",
                ],
                Err(OfferAnswerError::NotPlainRtp),
            ),
            (
                // RFC 3264 §6: the stream without G.711 is rejected, not the offer.
                "first plain audio has no G.711",
                &[
                    "v=0",
                    "c=IN IP4 127.0.0.1",
                    "m=audio 4000 RTP/AVP 9",
                    "m=audio 4002 RTP/AVP 0",
                ],
                ok(addr("127.0.0.1:4002"), Pcmu, 0, None, 20, SendRecv),
            ),
            (
                "first audio's address a name",
                &[
                    "v=0",
                    "m=audio 4000 RTP/AVP 0",
                    "c=IN IP4 media.example.com",
                    "m=audio 4002 RTP/AVP 8",
                    "c=IN IP4 127.0.0.1",
                ],
                ok(addr("127.0.0.1:4002"), Pcma, 8, None, 20, SendRecv),
            ),
            (
                "no audio stream usable: the first one's reason",
                &[
                    "v=0",
                    "c=IN IP4 127.0.0.1",
                    "m=audio 4000 RTP/SAVP 0",
                    "m=audio 4002 RTP/AVP 9",
                ],
                Err(OfferAnswerError::NotPlainRtp),
            ),
            (
                "video only",
                &["v=0", "c=IN IP4 127.0.0.1", "m=video 4000 RTP/AVP 31"],
                Err(OfferAnswerError::NoAudio),
            ),
            (
                "no media",
                &[
                    "v=0",
                    "o=- 1 1 IN IP4 127.0.0.1",
                    "s=-",
                    "c=IN IP4 127.0.0.1",
                    "t=0 0",
                ],
                Err(OfferAnswerError::NoAudio),
            ),
            (
                "audio disabled",
                &["v=0", "c=IN IP4 127.0.0.1", "m=audio 0 RTP/AVP 0"],
                Err(OfferAnswerError::NoAudio),
            ),
            (
                "no connection address",
                &["v=0", "m=audio 4000 RTP/AVP 0"],
                Err(OfferAnswerError::Malformed(SdpError::MissingConnection)),
            ),
        ];
        for (name, lines, expected) in cases {
            assert_eq!(negotiate_offer(&sdp(lines)), expected, "{name}");
        }
        // PCMU alone from 127.0.0.1:4000 with one media-level attribute:
        // (name, attribute, expected ptime, expected direction).
        let attribute_cases: [(&str, &str, u32, Direction); 12] = [
            ("recvonly", "a=recvonly", 20, SendOnly),
            ("inactive", "a=inactive", 20, Inactive),
            ("ptime 10", "a=ptime:10", 10, SendRecv),
            ("ptime 30", "a=ptime:30", 30, SendRecv),
            ("ptime 60", "a=ptime:60", 60, SendRecv),
            ("ptime 100 clamped", "a=ptime:100", 60, SendRecv),
            ("ptime 5 clamped", "a=ptime:5", 10, SendRecv),
            (
                "ptime beyond u32 clamped",
                "a=ptime:99999999999999999999",
                60,
                SendRecv,
            ),
            ("fractional ptime", "a=ptime:30.0", 30, SendRecv),
            ("unreadable ptime ignored", "a=ptime:soon", 20, SendRecv),
            ("maxptime below the default", "a=maxptime:10", 10, SendRecv),
            ("maxptime above the default", "a=maxptime:40", 20, SendRecv),
        ];
        for (name, attribute, ptime_ms, direction) in attribute_cases {
            let lines = [
                "v=0",
                "c=IN IP4 127.0.0.1",
                "m=audio 4000 RTP/AVP 0",
                attribute,
            ];
            assert_eq!(
                negotiate_offer(&sdp(&lines)),
                ok(addr("127.0.0.1:4000"), Pcmu, 0, None, ptime_ms, direction),
                "{name}"
            );
        }
        // A packet time beyond the most the peer takes is cut to that.
        let lines = [
            "v=0",
            "c=IN IP4 127.0.0.1",
            "m=audio 4000 RTP/AVP 0",
            "a=ptime:40",
            "a=maxptime:30",
        ];
        assert_eq!(
            negotiate_offer(&sdp(&lines)),
            ok(addr("127.0.0.1:4000"), Pcmu, 0, None, 30, SendRecv)
        );
    }

    #[test]
    fn sipp_answer_bytes() {
        let expected = format!(
            "{LOCAL4_SESSION}\
             m=audio 40000 RTP/AVP 0\r\n\
             a=rtpmap:0 PCMU/8000\r\n\
             a=ptime:20\r\n\
             a=sendrecv\r\n"
        );
        assert_eq!(answer_text(&sdp(SIPP_OFFER), &local4()), expected);
    }

    #[test]
    fn baresip_answer_bytes_reject_video() {
        let expected = format!(
            "{LOCAL4_SESSION}\
             m=audio 40000 RTP/AVP 0 101\r\n\
             a=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-16\r\n\
             a=ptime:20\r\n\
             a=sendrecv\r\n\
             m=video 0 RTP/AVP 96\r\n"
        );
        assert_eq!(answer_text(&sdp(BARESIP_OFFER), &local4()), expected);
    }

    #[test]
    fn answer_keeps_every_stream_in_place() {
        let offer = sdp(&[
            "v=0",
            "c=IN IP4 127.0.0.1",
            "m=video 5000 RTP/AVP 31",
            "m=audio 4000 RTP/SAVP 0",
            "m=audio 4002 RTP/AVPF 96 8",
            "a=rtpmap:96 PCMA/8000",
            "a=ptime:30",
            "a=sendonly",
            "m=image 0 udptl t38",
            "m=application 6000 UDP/BFCP *",
        ]);
        let expected = "v=0\r\n\
                        o=vportal 7 3 IN IP6 ::1\r\n\
                        s=-\r\n\
                        c=IN IP6 ::1\r\n\
                        t=0 0\r\n\
                        m=video 0 RTP/AVP 31\r\n\
                        m=audio 0 RTP/SAVP 0\r\n\
                        m=audio 40002 RTP/AVPF 96\r\n\
                        a=rtpmap:96 PCMA/8000\r\n\
                        a=ptime:30\r\n\
                        a=recvonly\r\n\
                        m=image 0 udptl t38\r\n\
                        m=application 0 UDP/BFCP *\r\n";
        assert_eq!(answer_text(&offer, &local6()), expected);
    }

    /// RFC 3264 §8.2: a re-offer that disables the only audio stream gets it back with port
    /// 0, every stream in its place with a format (the grammar wants one), rather than an
    /// error; [`answer`] still finds no audio in it (a first INVITE's 488).
    #[test]
    fn a_reoffer_disabling_the_audio_is_answered_with_port_zero_in_place() {
        let disabled = parse(&sdp(&[
            "v=0",
            "o=x 1 2 IN IP4 127.0.0.1",
            "s=-",
            "c=IN IP4 127.0.0.1",
            "t=0 0",
            "m=audio 0 RTP/AVP 0",
            "a=rtpmap:0 PCMU/8000",
            "a=sendrecv",
            "m=video 0 RTP/AVP 96",
            "a=rtpmap:96 H264/90000",
        ]))
        .unwrap();
        assert_eq!(
            answer(&disabled, &local4()).unwrap_err(),
            OfferAnswerError::NoAudio
        );
        let expected = format!(
            "{LOCAL4_SESSION}\
             m=audio 0 RTP/AVP 0\r\n\
             m=video 0 RTP/AVP 96\r\n"
        );
        let ours = answer_disabled(&disabled, &local4()).unwrap();
        assert_eq!(String::from_utf8(ours.clone()).unwrap(), expected);
        assert_eq!(ours, answer_disabled(&disabled, &local4()).unwrap());
        // Read back, it is a description with the same streams, all disabled.
        let read = parse(&ours).unwrap();
        let streams = |d: &SessionDescription| -> Vec<(String, u16, Vec<String>)> {
            d.media()
                .iter()
                .map(|m| (m.kind().to_owned(), m.port(), m.formats().to_vec()))
                .collect()
        };
        assert_eq!(
            streams(&read),
            [
                ("audio".to_owned(), 0, vec!["0".to_owned()]),
                ("video".to_owned(), 0, vec!["96".to_owned()])
            ]
        );

        // A disabled stream offered without a format still gets one in the answer.
        let bare = parse(&sdp(&["v=0", "c=IN IP4 127.0.0.1", "m=audio 0 RTP/AVP"])).unwrap();
        let ours = String::from_utf8(answer_disabled(&bare, &local4()).unwrap()).unwrap();
        assert!(ours.ends_with("t=0 0\r\nm=audio 0 RTP/AVP 0\r\n"), "{ours}");

        // Not for an offer with audio to answer, nor one without audio, nor one that
        // switches the audio for another stream (T.38 fax: refused, the audio kept).
        for lines in [
            &["v=0", "c=IN IP4 127.0.0.1", "m=audio 4000 RTP/AVP 0"][..],
            &["v=0", "c=IN IP4 127.0.0.1", "m=video 0 RTP/AVP 31"],
            &["v=0", "c=IN IP4 127.0.0.1"],
            &[
                "v=0",
                "c=IN IP4 127.0.0.1",
                "m=audio 0 RTP/AVP 0",
                "m=image 4010 udptl t38",
            ],
        ] {
            let offer = parse(&sdp(lines)).unwrap();
            assert_eq!(
                answer_disabled(&offer, &local4()),
                Err(OfferAnswerError::NoAudio),
                "{lines:?}"
            );
        }
    }

    /// A disabled audio stream next to an enabled one: the enabled one is answered, the
    /// disabled one keeps port 0 in its place.
    #[test]
    fn a_disabled_audio_stream_next_to_an_enabled_one() {
        let offer = sdp(&[
            "v=0",
            "c=IN IP4 127.0.0.1",
            "m=audio 0 RTP/AVP 8",
            "m=audio 4002 RTP/AVP 0",
        ]);
        let expected = format!(
            "{LOCAL4_SESSION}\
             m=audio 0 RTP/AVP 8\r\n\
             m=audio 40000 RTP/AVP 0\r\n\
             a=rtpmap:0 PCMU/8000\r\n\
             a=ptime:20\r\n\
             a=sendrecv\r\n"
        );
        assert_eq!(answer_text(&offer, &local4()), expected);
        assert_eq!(
            answer_disabled(&parse(&offer).unwrap(), &local4()),
            Err(OfferAnswerError::NoAudio)
        );
    }

    /// After the audio was disabled, an offer of ours (a re-INVITE without SDP) lists the
    /// same streams and enables the audio again in its place, on the telephone-event number
    /// in use.
    #[test]
    fn a_reoffer_after_the_audio_was_disabled_enables_it_in_its_place() {
        let first = parse(&sdp(&[
            "v=0",
            "c=IN IP4 127.0.0.1",
            "m=video 5002 RTP/AVP 96",
            "m=audio 5000 RTP/AVP 0 100",
            "a=rtpmap:100 telephone-event/8000",
        ]))
        .unwrap();
        let disabled = parse(&sdp(&[
            "v=0",
            "c=IN IP4 127.0.0.1",
            "m=video 0 RTP/AVP 96",
            "m=audio 0 RTP/AVP 0",
        ]))
        .unwrap();
        let layout = Layout::of_answer(&first).of_disabled(&disabled);
        let ours = String::from_utf8(reoffer(&local4(), &layout)).unwrap();
        let m: Vec<&str> = ours.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(m, ["m=video 0 RTP/AVP 96", "m=audio 40000 RTP/AVP 0 8 100"]);
        // The audio's place taken by another kind of stream: the first audio place.
        let moved = parse(&sdp(&[
            "v=0",
            "c=IN IP4 127.0.0.1",
            "m=audio 0 RTP/AVP 8",
            "m=image 0 udptl t38",
        ]))
        .unwrap();
        let layout = Layout::of_answer(&first).of_disabled(&moved);
        let ours = String::from_utf8(reoffer(&local4(), &layout)).unwrap();
        let m: Vec<&str> = ours.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(m, ["m=audio 40000 RTP/AVP 0 8 100", "m=image 0 udptl t38"]);
    }

    #[test]
    fn answer_is_deterministic_and_writes_mapped_ipv4_as_ip4() {
        let local = LocalMedia {
            addr: SocketAddr::new(
                IpAddr::V6(Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped()),
                40000,
            ),
            ..local4()
        };
        let body = sdp(SIPP_OFFER);
        let first = answer_text(&body, &local);
        assert_eq!(first, answer_text(&body, &local));
        assert_eq!(first, answer_text(&body, &local4()));
    }

    /// RFC 3264 §6: a stream we cannot stream to is rejected, not the offer. A dual-stack
    /// phone offering its IPv6 stream before its IPv4 one (RFC 4091's ANAT) gets the IPv4
    /// one answered, in its place, and a later offer of ours keeps it there; with no
    /// stream usable, the first one's reason stands.
    #[test]
    fn an_unreachable_stream_leaves_the_next_to_be_taken() {
        let anat = parse(&sdp(&[
            "v=0",
            "a=group:ANAT 1 2",
            "m=audio 4000 RTP/AVP 0",
            "c=IN IP6 2001:db8::2",
            "a=mid:1",
            "m=audio 4002 RTP/AVP 8 101",
            "c=IN IP4 192.0.2.2",
            "a=rtpmap:101 telephone-event/8000",
            "a=ptime:30",
            "a=mid:2",
        ]))
        .unwrap();
        let (n, body, layout) = answer_reachable(&anat, &local_at("192.0.2.10"), away()).unwrap();
        assert_eq!(n.remote_rtp, addr("192.0.2.2:4002"));
        assert_eq!(n.telephone_event, Some(101));
        let body = String::from_utf8(body).unwrap();
        let streams: Vec<_> = body.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(
            streams,
            ["m=audio 0 RTP/AVP 0", "m=audio 40000 RTP/AVP 8 101"],
            "{body}"
        );
        // Our re-offer keeps it there, with the codec agreed first (an answerer taking the
        // first would switch the call to PCMU) and the packet time agreed.
        let reoffer = String::from_utf8(reoffer(&local_at("192.0.2.10"), &layout)).unwrap();
        let streams: Vec<_> = reoffer.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(
            streams,
            ["m=audio 0 RTP/AVP 0", "m=audio 40000 RTP/AVP 8 0 101"],
            "{reoffer}"
        );
        assert!(reoffer.contains("\r\na=ptime:30\r\n"), "{reoffer}");
        assert_eq!(n.ptime_ms, 30);
        // Neither reachable (the IPv4 one a multicast group): the IPv6 stream's reason.
        let text = String::from_utf8(sdp(&[
            "v=0",
            "m=audio 4000 RTP/AVP 0",
            "c=IN IP6 2001:db8::2",
            "m=audio 4002 RTP/AVP 8",
            "c=IN IP4 224.0.1.2/127",
        ]))
        .unwrap();
        assert_eq!(
            answer_reachable(
                &parse(text.as_bytes()).unwrap(),
                &local_at("192.0.2.10"),
                away()
            )
            .unwrap_err(),
            OfferAnswerError::AddressFamily
        );
        // The other way round: the multicast one first.
        let swapped = text
            .replace("m=audio 4000 RTP/AVP 0\r\nc=IN IP6 2001:db8::2", "X")
            .replace(
                "m=audio 4002 RTP/AVP 8\r\nc=IN IP4 224.0.1.2/127",
                "m=audio 4000 RTP/AVP 0\r\nc=IN IP6 2001:db8::2",
            )
            .replace("X", "m=audio 4002 RTP/AVP 8\r\nc=IN IP4 224.0.1.2/127");
        assert_eq!(
            answer_reachable(
                &parse(swapped.as_bytes()).unwrap(),
                &local_at("192.0.2.10"),
                away()
            )
            .unwrap_err(),
            OfferAnswerError::Destination
        );
    }

    /// RFC 5118 §4.9: media at an IPv4-mapped address is media at that IPv4 address, so an
    /// IPv4 socket can send to it and recognise what comes from it.
    #[test]
    fn an_ipv4_mapped_media_address_is_the_ipv4_address() {
        let mapped = parse(&sdp(&[
            "v=0",
            "c=IN IP6 ::ffff:127.0.0.1",
            "m=audio 4000 RTP/AVP 0",
        ]))
        .unwrap();
        let (n, _, _) = answer_reachable(&mapped, &local4(), away()).unwrap();
        assert_eq!(n.remote_rtp, addr("127.0.0.1:4000"));
        assert!(n.remote_rtp.unwrap().is_ipv4());
        let local6 = LocalMedia {
            addr: "[::1]:40000".parse().unwrap(),
            ..local4()
        };
        assert_eq!(
            answer_reachable(&mapped, &local6, away()).unwrap_err(),
            OfferAnswerError::AddressFamily
        );
        // The mapped unspecified address is hold, as 0.0.0.0 is.
        let hold = parse(&sdp(&[
            "v=0",
            "c=IN IP6 ::ffff:0.0.0.0",
            "m=audio 4000 RTP/AVP 0",
        ]))
        .unwrap();
        let (n, _, _) = answer_reachable(&hold, &local4(), away()).unwrap();
        assert_eq!(n.remote_rtp, None);
        assert_eq!(n.direction, Direction::RecvOnly);
    }

    /// Media only goes where a phone can be: not to multicast, broadcast or link-local
    /// addresses, nor to loopback unless vportal is on loopback itself.
    #[test]
    fn media_is_not_aimed_at_multicast_broadcast_link_local_or_anothers_loopback() {
        let offer = |c: &str| parse(&sdp(&["v=0", c, "m=audio 4000 RTP/AVP 0"])).unwrap();
        // The addresses, not loopback on purpose, are the subject here; no socket is involved.
        for (c, local) in [
            ("c=IN IP4 239.255.255.250", "127.0.0.1"),
            ("c=IN IP4 224.0.0.1", "192.0.2.10"),
            ("c=IN IP4 255.255.255.255", "192.0.2.10"),
            ("c=IN IP4 169.254.1.1", "192.0.2.10"),
            ("c=IN IP4 127.0.0.1", "192.0.2.10"),
            ("c=IN IP4 127.0.0.53", "192.0.2.10"),
            ("c=IN IP6 ::ffff:127.0.0.1", "192.0.2.10"),
            ("c=IN IP6 ff02::1", "2001:db8::10"),
            ("c=IN IP6 fe80::1", "2001:db8::10"),
            ("c=IN IP6 ::1", "2001:db8::10"),
        ] {
            assert_eq!(
                answer_reachable(&offer(c), &local_at(local), away()).unwrap_err(),
                OfferAnswerError::Destination,
                "{c} from {local}"
            );
        }
        for (c, local) in [
            ("c=IN IP4 127.0.0.1", "127.0.0.1"),
            ("c=IN IP4 10.0.0.5", "192.0.2.10"),
            ("c=IN IP4 192.0.2.7", "192.0.2.10"),
            ("c=IN IP4 169.254.1.1", "169.254.9.9"),
            ("c=IN IP6 ::1", "::1"),
            ("c=IN IP6 fd00::5", "2001:db8::10"),
            ("c=IN IP4 0.0.0.0", "192.0.2.10"),
        ] {
            assert!(
                answer_reachable(&offer(c), &local_at(local), away()).is_ok(),
                "{c} from {local}"
            );
        }
        // Loopback media from a caller on this host (a PBX, a softphone), whatever address
        // vportal advertises.
        let here: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(
            answer_reachable(&offer("c=IN IP4 127.0.0.1"), &local_at("192.0.2.10"), here).is_ok()
        );
    }

    #[test]
    fn an_offer_of_the_other_ip_version_is_not_answered() {
        let v6_offer = sdp(&["v=0", "c=IN IP6 ::1", "m=audio 4000 RTP/AVP 0"]);
        let offer = parse(&v6_offer).unwrap();
        assert_eq!(
            answer_reachable(&offer, &local4(), away()).unwrap_err(),
            OfferAnswerError::AddressFamily
        );
        // The plain answer does not look at the address.
        assert!(answer(&offer, &local4()).is_ok());
        let local6 = LocalMedia {
            addr: "[::1]:40000".parse().unwrap(),
            ..local4()
        };
        assert_eq!(
            answer_reachable(&offer, &local6, away())
                .unwrap()
                .0
                .remote_rtp,
            Some("[::1]:4000".parse().unwrap())
        );
        // An IPv4 offer to an IPv4-mapped local address is the same version.
        let mapped = LocalMedia {
            addr: "[::ffff:127.0.0.1]:40000".parse().unwrap(),
            ..local4()
        };
        assert!(answer_reachable(&parse(&sdp(SIPP_OFFER)).unwrap(), &mapped, away()).is_ok());
    }

    #[test]
    fn offer_bytes() {
        let expected = format!(
            "{LOCAL4_SESSION}\
             m=audio 40000 RTP/AVP 0 8 101\r\n\
             a=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-16\r\n\
             a=ptime:20\r\n\
             a=sendrecv\r\n"
        );
        assert_eq!(String::from_utf8(offer(&local4())).unwrap(), expected);
    }

    #[test]
    fn an_answer_that_renumbers_telephone_event_keeps_ours_too() {
        let answer = |te: &str| {
            parse(&sdp(&[
                "v=0",
                "o=x 1 1 IN IP4 127.0.0.1",
                "s=-",
                "c=IN IP4 127.0.0.1",
                "t=0 0",
                &format!("m=audio 5000 RTP/AVP 0 {te}"),
                &format!("a=rtpmap:{te} telephone-event/8000"),
            ]))
            .unwrap()
        };
        let renumbered = accept_answer(&answer("96")).unwrap();
        assert_eq!(
            (renumbered.telephone_event, renumbered.telephone_event_ours),
            (Some(96), Some(101))
        );
        // After a reoffer that numbered events 102 (101 taken by another codec).
        let opus = parse(&sdp(&[
            "v=0",
            "o=x 1 1 IN IP4 127.0.0.1",
            "s=-",
            "c=IN IP4 127.0.0.1",
            "t=0 0",
            "m=audio 5000 RTP/AVP 101 0",
            "a=rtpmap:101 opus/48000/2",
        ]))
        .unwrap();
        let layout = Layout::of_answer(&opus);
        let to_reoffer = accept_answer_to(&answer("102"), &layout).unwrap();
        assert_eq!(
            (to_reoffer.telephone_event, to_reoffer.telephone_event_ours),
            (Some(102), None)
        );
        let same = accept_answer(&answer("101")).unwrap();
        assert_eq!(
            (same.telephone_event, same.telephone_event_ours),
            (Some(101), None)
        );
        // An answer that gives our number to its audio: that number carries no events.
        let taken = parse(&sdp(&[
            "v=0",
            "o=x 1 1 IN IP4 127.0.0.1",
            "s=-",
            "c=IN IP4 127.0.0.1",
            "t=0 0",
            "m=audio 5000 RTP/AVP 101 100",
            "a=rtpmap:101 PCMU/8000",
            "a=rtpmap:100 telephone-event/8000",
        ]))
        .unwrap();
        let taken = accept_answer(&taken).unwrap();
        assert_eq!(
            (
                taken.payload_type,
                taken.telephone_event,
                taken.telephone_event_ours
            ),
            (101, Some(100), None)
        );
        // One that lists telephone-event twice, one of its own first and then ours: events
        // come with ours (RFC 3264 §5.1), or with its own; both are heard.
        let twice = parse(&sdp(&[
            "v=0",
            "o=x 1 1 IN IP4 127.0.0.1",
            "s=-",
            "c=IN IP4 127.0.0.1",
            "t=0 0",
            "m=audio 5000 RTP/AVP 0 96 101",
            "a=rtpmap:96 telephone-event/8000",
            "a=rtpmap:101 telephone-event/8000",
        ]))
        .unwrap();
        let twice = accept_answer(&twice).unwrap();
        assert_eq!(
            (twice.telephone_event, twice.telephone_event_ours),
            (Some(96), Some(101))
        );
    }

    #[test]
    fn a_reoffer_keeps_the_last_descriptions_streams_and_numbers() {
        const SESSION: [&str; 5] = [
            "v=0",
            "o=x 1 1 IN IP4 127.0.0.1",
            "s=-",
            "c=IN IP4 127.0.0.1",
            "t=0 0",
        ];
        // Audio second, after a video stream; 101 taken by another codec, no telephone-event.
        let mut lines = SESSION.to_vec();
        lines.extend([
            "m=video 5002 RTP/AVP 96",
            "m=audio 5000 RTP/AVP 101 0",
            "a=rtpmap:101 opus/48000/2",
        ]);
        let layout = Layout::of_answer(&parse(&sdp(&lines)).unwrap());
        let ours = String::from_utf8(reoffer(&local4(), &layout)).unwrap();
        let m: Vec<&str> = ours.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(m, ["m=video 0 RTP/AVP 96", "m=audio 40000 RTP/AVP 0 8 102"]);
        assert!(ours.contains("a=rtpmap:102 telephone-event/8000"), "{ours}");
        // With no stream we could speak, the first offer's layout.
        let mut video = SESSION.to_vec();
        video.push("m=video 5002 RTP/AVP 96");
        assert_eq!(
            Layout::of_answer(&parse(&sdp(&video)).unwrap()),
            Layout::default()
        );
        assert_eq!(reoffer(&local4(), &Layout::default()), offer(&local4()));
        // Events on a static number are not offered on it again.
        let mut odd = SESSION.to_vec();
        odd.extend([
            "m=audio 5000 RTP/AVP 0 8",
            "a=rtpmap:8 telephone-event/8000",
        ]);
        let ours = String::from_utf8(reoffer(
            &local4(),
            &Layout::of_answer(&parse(&sdp(&odd)).unwrap()),
        ))
        .unwrap();
        assert!(ours.contains("m=audio 40000 RTP/AVP 0 8 101\r\n"), "{ours}");
    }

    #[test]
    fn rtcp_goes_above_rtp_to_a_rtcp_or_on_the_rtp_port_with_rtcp_mux() {
        let offer = |extra: &[&str]| {
            let mut lines = vec![
                "v=0",
                "o=- 1 1 IN IP4 127.0.0.1",
                "s=-",
                "c=IN IP4 127.0.0.1",
                "t=0 0",
                "m=audio 4000 RTP/AVP 0",
            ];
            lines.extend_from_slice(extra);
            parse(&sdp(&lines)).unwrap()
        };
        let rtcp = |extra: &[&str]| {
            let (n, body) = answer(&offer(extra), &local4()).unwrap();
            let muxed = String::from_utf8(body)
                .unwrap()
                .contains("\r\na=rtcp-mux\r\n");
            assert_eq!(muxed, n.rtcp_mux, "the answer says what was agreed");
            (n.remote_rtcp, n.rtcp_mux)
        };
        assert_eq!(rtcp(&[]), (addr("127.0.0.1:4001"), false));
        assert_eq!(rtcp(&["a=rtcp:5003"]), (addr("127.0.0.1:5003"), false));
        // RFC 3605's address is not taken, whatever it is (another host, of the other IP
        // version, a name, malformed); a port that cannot be read leaves the default. The
        // name is the subject of its case: nothing resolves it, and no socket is involved.
        for other in [
            "a=rtcp:5003 IN IP4 127.0.0.2",
            "a=rtcp:5003 IN IP6 ::1",
            "a=rtcp:5003 IN IP4 rtcp.example.com",
            "a=rtcp:5003 IN IP4 0.0.0.0",
        ] {
            assert_eq!(rtcp(&[other]), (addr("127.0.0.1:5003"), false), "{other}");
        }
        for unreadable in ["a=rtcp:", "a=rtcp:x", "a=rtcp:0", "a=rtcp:70000"] {
            assert_eq!(
                rtcp(&[unreadable]),
                (addr("127.0.0.1:4001"), false),
                "{unreadable}"
            );
        }
        assert_eq!(rtcp(&["a=rtcp-mux"]), (addr("127.0.0.1:4000"), true));
        assert_eq!(
            rtcp(&["a=rtcp:4000", "a=rtcp-mux"]),
            (addr("127.0.0.1:4000"), true)
        );
        // Hold by c=0.0.0.0: nowhere to send RTP, nor RTCP.
        let held = parse(&sdp(&[
            "v=0",
            "o=- 1 1 IN IP4 0.0.0.0",
            "s=-",
            "c=IN IP4 0.0.0.0",
            "t=0 0",
            "m=audio 4000 RTP/AVP 0",
        ]))
        .unwrap();
        assert_eq!(answer(&held, &local4()).unwrap().0.remote_rtcp, None);
        // RTP on the last port: no port above it.
        let top = parse(&sdp(&[
            "v=0",
            "o=- 1 1 IN IP4 127.0.0.1",
            "s=-",
            "c=IN IP4 127.0.0.1",
            "t=0 0",
            "m=audio 65535 RTP/AVP 0",
        ]))
        .unwrap();
        let n = answer(&top, &local4()).unwrap().0;
        assert_eq!(
            (n.remote_rtp, n.remote_rtcp),
            (addr("127.0.0.1:65535"), None)
        );
        // An answer to our offer (which had no a=rtcp-mux) cannot agree to it.
        let mut answered = offer(&["a=rtcp-mux"]);
        answered.media[0].rtcp_mux = true;
        let n = accept_answer(&answered).unwrap();
        assert_eq!((n.remote_rtcp, n.rtcp_mux), (addr("127.0.0.1:4001"), false));
    }

    #[test]
    fn our_offer_answered_by_ourselves() {
        let ours = parse(&offer(&local4())).unwrap();
        let (theirs, body) = answer(&ours, &local6()).unwrap();
        assert_eq!(theirs.remote_rtp, addr("127.0.0.1:40000"));
        let accepted = accept_answer(&parse(&body).unwrap()).unwrap();
        assert_eq!(
            accepted,
            Negotiated {
                remote_rtp: addr("[::1]:40002"),
                codec: Codec::Pcmu,
                payload_type: 0,
                telephone_event: Some(101),
                telephone_event_ours: None,
                ptime_ms: 20,
                direction: Direction::SendRecv,
                remote_rtcp: addr("[::1]:40003"),
                rtcp_mux: false,
                disabled: false,
            }
        );
    }

    #[test]
    fn answers_to_our_offer_table() {
        use Direction::{Inactive, RecvOnly, SendOnly, SendRecv};
        let cases: Vec<Case> = vec![
            (
                "PCMA chosen, te without rtpmap means our 101",
                &["v=0", "c=IN IP4 127.0.0.1", "m=audio 7000 RTP/AVP 8 101"],
                ok(
                    addr("127.0.0.1:7000"),
                    Codec::Pcma,
                    8,
                    Some(101),
                    20,
                    SendRecv,
                ),
            ),
            (
                "answer says recvonly: we send only",
                &[
                    "v=0",
                    "c=IN IP4 127.0.0.1",
                    "m=audio 7000 RTP/AVP 0",
                    "a=recvonly",
                ],
                ok(addr("127.0.0.1:7000"), Codec::Pcmu, 0, None, 20, SendOnly),
            ),
            (
                "answer says sendonly: we receive only",
                &[
                    "v=0",
                    "c=IN IP4 127.0.0.1",
                    "m=audio 7000 RTP/AVP 0",
                    "a=sendonly",
                ],
                ok(addr("127.0.0.1:7000"), Codec::Pcmu, 0, None, 20, RecvOnly),
            ),
            (
                "inactive, ptime 30",
                &[
                    "v=0",
                    "c=IN IP4 127.0.0.1",
                    "m=audio 7000 RTP/AVP 0",
                    "a=inactive",
                    "a=ptime:30",
                ],
                ok(addr("127.0.0.1:7000"), Codec::Pcmu, 0, None, 30, Inactive),
            ),
            (
                "answer with c=0.0.0.0",
                &["v=0", "c=IN IP4 0.0.0.0", "m=audio 7000 RTP/AVP 0"],
                ok(None, Codec::Pcmu, 0, None, 20, RecvOnly),
            ),
            (
                "audio rejected",
                &["v=0", "c=IN IP4 127.0.0.1", "m=audio 0 RTP/AVP 0"],
                Err(OfferAnswerError::AudioRejected),
            ),
            (
                "no audio",
                &["v=0", "c=IN IP4 127.0.0.1"],
                Err(OfferAnswerError::NoAudio),
            ),
            (
                "no G.711",
                &[
                    "v=0",
                    "c=IN IP4 127.0.0.1",
                    "m=audio 7000 RTP/AVP 101",
                    "a=rtpmap:101 telephone-event/8000",
                ],
                Err(OfferAnswerError::NoCommonCodec),
            ),
            (
                "SRTP answer",
                &["v=0", "c=IN IP4 127.0.0.1", "m=audio 7000 RTP/SAVP 0"],
                Err(OfferAnswerError::NotPlainRtp),
            ),
        ];
        for (name, lines, expected) in cases {
            let result = parse(&sdp(lines))
                .map_err(OfferAnswerError::from)
                .and_then(|a| accept_answer(&a));
            assert_eq!(result, expected, "{name}");
        }
    }

    #[test]
    fn parse_reads_what_it_needs() {
        let parsed = parse(&sdp(BARESIP_OFFER)).unwrap();
        assert_eq!(
            parsed.origin(),
            Some(&Origin {
                username: "-".to_owned(),
                session_id: 3_911_214_376,
                session_version: 3_911_214_376,
            })
        );
        assert_eq!(
            parsed.connection(),
            Some(&ConnectionAddress::Ip(IpAddr::V4(Ipv4Addr::new(
                127, 0, 0, 1
            ))))
        );
        assert_eq!(parsed.direction(), None);
        let [audio, video] = parsed.media() else {
            panic!("two media sections expected");
        };
        assert_eq!(
            (audio.kind(), audio.port(), audio.proto()),
            ("audio", 10010, "RTP/AVP")
        );
        assert_eq!(audio.payload_types(), &[111, 9, 0, 8, 101]);
        assert_eq!(audio.formats(), &["111", "9", "0", "8", "101"]);
        assert_eq!(
            audio.rtpmap(111),
            Some(&RtpMap {
                encoding: "opus".to_owned(),
                clock_rate: 48000,
                channels: Some(2),
            })
        );
        assert_eq!(audio.ptime(), Some(20));
        assert_eq!(audio.direction(), Some(Direction::SendRecv));
        assert_eq!(audio.connection(), None);
        assert_eq!(video.rtpmap(96).map(|m| m.clock_rate), Some(90000));
    }

    #[test]
    fn parse_is_lenient_about_layout() {
        // Bare LF, trailing blanks, blank lines, unknown lines, a Latin-1 session name and
        // an unknown attribute with bytes that are not UTF-8.
        let mut body = b"\nv=0  \n\no=- 1 1 IN IP4 127.0.0.1\ns=Caf\xe9\t \n".to_vec();
        body.extend_from_slice(b"c=IN IP4 127.0.0.1\nt=0 0\nz=junk\nk=clear:x\n");
        body.extend_from_slice(b"m=audio 6000 RTP/AVP 0\na=x-note:\xff\xfe\na=SENDRECV\n");
        body.extend_from_slice(b"a=rtpmap:0 PCMU/8000  ");
        let n = negotiate_offer(&body).unwrap();
        assert_eq!(n.remote_rtp, addr("127.0.0.1:6000"));
        assert_eq!(n.direction, Direction::SendRecv);
    }

    #[test]
    fn first_occurrence_wins() {
        let n = negotiate_offer(&sdp(&[
            "v=0",
            "c=IN IP4 127.0.0.1",
            "c=IN IP4 127.0.0.2",
            "m=audio 4000 RTP/AVP 96",
            "a=rtpmap:96 PCMA/8000",
            "a=rtpmap:96 PCMU/8000",
            "a=recvonly",
            "a=sendrecv",
        ]))
        .unwrap();
        assert_eq!(n.remote_rtp, addr("127.0.0.1:4000"));
        assert_eq!((n.codec, n.direction), (Codec::Pcma, Direction::SendOnly));
    }

    #[test]
    fn malformed_table() {
        let cases: Vec<(&str, Vec<u8>, SdpError)> = vec![
            ("empty", Vec::new(), SdpError::MissingVersion),
            ("blank", b"\r\n \r\n".to_vec(), SdpError::MissingVersion),
            (
                "not SDP",
                b"hello world".to_vec(),
                SdpError::MalformedLine { line: 1 },
            ),
            (
                "no v= first",
                sdp(&["o=- 1 1 IN IP4 127.0.0.1", "v=0"]),
                SdpError::MissingVersion,
            ),
            (
                "v=1",
                sdp(&["v=1"]),
                SdpError::UnsupportedVersion { line: 1 },
            ),
            (
                "space before =",
                sdp(&["v=0", "c =IN IP4 127.0.0.1"]),
                SdpError::MalformedLine { line: 2 },
            ),
            (
                "line without =",
                sdp(&["v=0", "m"]),
                SdpError::MalformedLine { line: 2 },
            ),
            (
                "port too big",
                sdp(&["v=0", "m=audio 65536 RTP/AVP 0"]),
                SdpError::InvalidPort { line: 2 },
            ),
            (
                "port +1",
                sdp(&["v=0", "m=audio +1 RTP/AVP 0"]),
                SdpError::InvalidPort { line: 2 },
            ),
            (
                "port count",
                sdp(&["v=0", "m=audio 4000/x RTP/AVP 0"]),
                SdpError::InvalidPort { line: 2 },
            ),
            (
                "PT 128",
                sdp(&["v=0", "m=audio 4000 RTP/AVP 128"]),
                SdpError::InvalidPayloadType { line: 2 },
            ),
            (
                "PT not a number",
                sdp(&["v=0", "m=audio 4000 RTP/AVP pcmu"]),
                SdpError::InvalidPayloadType { line: 2 },
            ),
            (
                "m= too short",
                sdp(&["v=0", "m=audio 4000"]),
                SdpError::MalformedMedia { line: 2 },
            ),
            (
                "m= no formats",
                sdp(&["v=0", "m=audio 4000 RTP/AVP"]),
                SdpError::MalformedMedia { line: 2 },
            ),
            (
                "m= control char",
                b"v=0\nm=audio 4000 RTP/AVP 0 \x01\n".to_vec(),
                SdpError::MalformedMedia { line: 2 },
            ),
            (
                "m= not UTF-8",
                b"v=0\nm=audio 4000 RTP/AVP \xff\n".to_vec(),
                SdpError::NotUtf8 { line: 2 },
            ),
            (
                "c= not UTF-8",
                b"v=0\nc=IN IP4 127.0.0.\xc0\n".to_vec(),
                SdpError::NotUtf8 { line: 2 },
            ),
            (
                "rtpmap not UTF-8",
                b"v=0\nm=audio 1 RTP/AVP 0\na=rtpmap:0 PCM\xdc/8000\n".to_vec(),
                SdpError::NotUtf8 { line: 3 },
            ),
            (
                "c= short",
                sdp(&["v=0", "c=IN IP4"]),
                SdpError::MalformedConnection { line: 2 },
            ),
            (
                "c= long",
                sdp(&["v=0", "c=IN IP4 127.0.0.1 x"]),
                SdpError::MalformedConnection { line: 2 },
            ),
            (
                "c= bad name",
                sdp(&["v=0", "c=IN IP4 a:b@c"]),
                SdpError::MalformedConnection { line: 2 },
            ),
            (
                "c= ATM",
                sdp(&["v=0", "c=ATM NSAP 47.0005"]),
                SdpError::UnsupportedAddressType { line: 2 },
            ),
            (
                "c= IPX",
                sdp(&["v=0", "c=IN IPX 1"]),
                SdpError::UnsupportedAddressType { line: 2 },
            ),
            (
                "IP4 with v6",
                sdp(&["v=0", "c=IN IP4 ::1"]),
                SdpError::AddressTypeMismatch { line: 2 },
            ),
            (
                "IP6 with v4",
                sdp(&["v=0", "c=IN IP6 127.0.0.1"]),
                SdpError::AddressTypeMismatch { line: 2 },
            ),
            (
                "rtpmap no clock",
                sdp(&["v=0", "m=audio 1 RTP/AVP 0", "a=rtpmap:0 PCMU"]),
                SdpError::MalformedRtpmap { line: 3 },
            ),
            (
                "rtpmap bad clock",
                sdp(&["v=0", "m=audio 1 RTP/AVP 0", "a=rtpmap:0 PCMU/8k"]),
                SdpError::MalformedRtpmap { line: 3 },
            ),
            (
                "rtpmap bad channels",
                sdp(&["v=0", "m=audio 1 RTP/AVP 0", "a=rtpmap:0 PCMU/8000/x"]),
                SdpError::MalformedRtpmap { line: 3 },
            ),
            (
                "rtpmap PT 300",
                sdp(&["v=0", "m=audio 1 RTP/AVP 0", "a=rtpmap:300 PCMU/8000"]),
                SdpError::InvalidPayloadType { line: 3 },
            ),
            (
                "rtpmap empty",
                sdp(&["v=0", "m=audio 1 RTP/AVP 0", "a=rtpmap:"]),
                SdpError::MalformedRtpmap { line: 3 },
            ),
        ];
        for (name, body, expected) in cases {
            assert_eq!(parse(&body), Err(expected), "{name}");
        }
    }

    #[test]
    fn bounds() {
        let huge = vec![b'a'; MAX_SDP_LEN + 1];
        assert_eq!(
            parse(&huge),
            Err(SdpError::TooLarge {
                len: MAX_SDP_LEN + 1
            })
        );

        let mut many_media = String::from("v=0\r\nc=IN IP4 127.0.0.1\r\n");
        for _ in 0..MAX_MEDIA {
            many_media.push_str("m=video 0 RTP/AVP 31\r\n");
        }
        assert_eq!(
            parse(many_media.as_bytes()).map(|s| s.media().len()),
            Ok(MAX_MEDIA)
        );
        many_media.push_str("m=audio 4000 RTP/AVP 0\r\n");
        assert_eq!(parse(many_media.as_bytes()), Err(SdpError::TooManyMedia));

        let formats = |n: usize| {
            let list: Vec<String> = (0..n).map(|pt| (pt % 128).to_string()).collect();
            format!("v=0\r\nm=audio 4000 RTP/AVP {}\r\n", list.join(" "))
        };
        assert!(parse(formats(MAX_FORMATS).as_bytes()).is_ok());
        assert_eq!(
            parse(formats(MAX_FORMATS + 1).as_bytes()),
            Err(SdpError::TooManyFormats { line: 2 })
        );

        // A body of the largest size made of valid lines parses, quickly.
        let mut big = String::from("v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\n");
        while big.len() + 24 < MAX_SDP_LEN {
            big.push_str("a=rtpmap:96 PCMA/8000\r\n");
        }
        assert_eq!(
            negotiate_offer(big.as_bytes()).map(|n| n.codec),
            Ok(Codec::Pcmu)
        );
    }

    #[test]
    fn truncated_offers_never_panic() {
        let body = sdp(BARESIP_OFFER);
        for end in 0..=body.len() {
            if let Ok(offer) = parse(&body[..end]) {
                let _ = answer(&offer, &local4());
                let _ = accept_answer(&offer);
            }
        }
    }

    #[test]
    fn direction_helpers() {
        use Direction::{Inactive, RecvOnly, SendOnly, SendRecv};
        for d in [SendRecv, SendOnly, RecvOnly, Inactive] {
            assert_eq!(Direction::from_flags(d.sends(), d.receives()), d);
            assert_eq!(d.reversed().reversed(), d);
            assert_eq!(Direction::from_attribute(d.as_str().as_bytes()), Some(d));
        }
        assert_eq!(SendOnly.reversed(), RecvOnly);
        assert_eq!(SendRecv.reversed(), SendRecv);
        assert_eq!(Inactive.to_string(), "inactive");
        assert_eq!(
            (
                Codec::Pcma.encoding_name(),
                Codec::Pcma.static_payload_type()
            ),
            ("PCMA", 8)
        );
    }

    /// A format in a generated offer.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Item {
        StaticPcmu,
        StaticPcma,
        DynamicPcmu,
        DynamicPcma,
        TelephoneEvent,
        Opus,
        G722,
        G729,
    }

    fn item() -> impl Strategy<Value = Item> {
        prop_oneof![
            Just(Item::StaticPcmu),
            Just(Item::StaticPcma),
            Just(Item::DynamicPcmu),
            Just(Item::DynamicPcma),
            Just(Item::TelephoneEvent),
            Just(Item::Opus),
            Just(Item::G722),
            Just(Item::G729),
        ]
    }

    fn direction() -> impl Strategy<Value = Direction> {
        prop_oneof![
            Just(Direction::SendRecv),
            Just(Direction::SendOnly),
            Just(Direction::RecvOnly),
            Just(Direction::Inactive),
        ]
    }

    fn peer_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            Just(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            Just(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            // Anywhere in 127/8: all loopback.
            any::<[u8; 3]>().prop_map(|[a, b, c]| IpAddr::V4(Ipv4Addr::new(127, a, b, c))),
        ]
    }

    /// A generated offer and what answering it must agree.
    #[derive(Debug)]
    struct GeneratedOffer {
        body: Vec<u8>,
        codec: Codec,
        payload_type: u8,
        telephone_event: Option<u8>,
        remote: SocketAddr,
        ptime_ms: u32,
        direction: Direction,
        media_count: usize,
    }

    prop_compose! {
        fn generated_offer()(
            items in prop::collection::vec(item(), 1..10),
            dynamic in Just((96u8..=127).collect::<Vec<_>>()).prop_shuffle(),
            static_rtpmap in any::<bool>(),
            ip in peer_ip(),
            port in 1u16..=u16::MAX,
            session_c in any::<bool>(),
            session_dir in prop::option::of(direction()),
            media_dir in prop::option::of(direction()),
            ptime in prop::option::of(0u32..200),
            session_ptime in any::<bool>(),
            video in prop::option::of(any::<bool>()),
            lower_case in any::<bool>(),
            bare_lf in any::<bool>(),
        ) -> Option<GeneratedOffer> {
            let mut dynamic = dynamic.into_iter();
            let mut seen_static = Vec::new();
            let mut formats: Vec<(u8, Option<&str>)> = Vec::new();
            let mut codec = None;
            let mut telephone_event = None;
            for item in items {
                let (pt, map, g711) = match item {
                    Item::StaticPcmu => (0, "PCMU/8000", Some(Codec::Pcmu)),
                    Item::StaticPcma => (8, "PCMA/8000", Some(Codec::Pcma)),
                    Item::G722 => (9, "G722/8000", None),
                    Item::G729 => (18, "G729/8000", None),
                    Item::DynamicPcmu => (dynamic.next()?, "PCMU/8000", Some(Codec::Pcmu)),
                    Item::DynamicPcma => (dynamic.next()?, "PCMA/8000", Some(Codec::Pcma)),
                    Item::TelephoneEvent => (dynamic.next()?, "telephone-event/8000", None),
                    Item::Opus => (dynamic.next()?, "opus/48000/2", None),
                };
                if pt < 96 {
                    if seen_static.contains(&pt) {
                        continue;
                    }
                    seen_static.push(pt);
                }
                if let (Some(c), None) = (g711, codec) {
                    codec = Some((c, pt));
                }
                if item == Item::TelephoneEvent && telephone_event.is_none() {
                    telephone_event = Some(pt);
                }
                let with_map = pt >= 96 || !matches!(pt, 0 | 8) || static_rtpmap;
                formats.push((pt, with_map.then_some(map)));
            }
            let (codec, payload_type) = codec?;

            let addrtype = if ip.is_ipv4() { "IP4" } else { "IP6" };
            let c_line = format!("c=IN {addrtype} {ip}");
            let mut lines = vec!["v=0".to_owned(), format!("o=- 1 1 IN {addrtype} {ip}"), "s=-".to_owned()];
            if session_c {
                lines.push(c_line.clone());
            }
            lines.push("t=0 0".to_owned());
            if let Some(d) = session_dir {
                lines.push(format!("a={d}"));
            }
            if let (Some(p), true) = (ptime, session_ptime) {
                lines.push(format!("a=ptime:{p}"));
            }
            let video_lines = vec!["m=video 5004 RTP/AVP 99".to_owned(), "a=rtpmap:99 VP8/90000".to_owned()];
            if video == Some(true) {
                lines.extend(video_lines.clone());
            }
            let pts: Vec<String> = formats.iter().map(|(pt, _)| pt.to_string()).collect();
            lines.push(format!("m=audio {port} RTP/AVP {}", pts.join(" ")));
            if !session_c {
                lines.push(c_line);
            }
            for (pt, map) in &formats {
                if let Some(map) = map {
                    let map = if lower_case { map.to_ascii_lowercase() } else { (*map).to_owned() };
                    lines.push(format!("a=rtpmap:{pt} {map}"));
                }
            }
            if let (Some(p), false) = (ptime, session_ptime) {
                lines.push(format!("a=ptime:{p}"));
            }
            if let Some(d) = media_dir {
                lines.push(format!("a={d}"));
            }
            if video == Some(false) {
                lines.extend(video_lines);
            }
            let mut body = lines.join(if bare_lf { "\n" } else { "\r\n" });
            body.push('\n');

            let theirs = media_dir.or(session_dir).unwrap_or(Direction::SendRecv);
            Some(GeneratedOffer {
                body: body.into_bytes(),
                codec,
                payload_type,
                telephone_event,
                remote: SocketAddr::new(ip, port),
                ptime_ms: ptime.map_or(20, |p| p.clamp(10, 60)),
                direction: theirs.reversed(),
                media_count: if video.is_some() { 2 } else { 1 },
            })
        }
    }

    /// Lines that are mostly almost right: the parser's edges, not random noise. The odd
    /// random line and out-of-range number keep the error paths busy too.
    fn sdp_like_line() -> impl Strategy<Value = String> {
        let pt = "(0|8|9|18|9[6-9]|10[01]|12[0-7])";
        let regex = |pattern: &str| proptest::string::string_regex(pattern).unwrap();
        prop_oneof![
            1 => regex("[vocma]=[ -~]{0,40}"),
            4 => regex("[bstz]=[ -~]{0,40}"),
            1 => regex("(m=audio [0-9]{5,6} RTP/AVP [0-9]{1,3}|a=rtpmap:[0-9]{3} PCMU/8000)"),
            4 => regex(&format!(
                "m=(audio|audio|video|image) [0-9]{{1,4}}(/2)? \
                 (RTP/AVP|RTP/AVP|RTP/AVPF|RTP/SAVP|udptl)( {pt}){{1,5}}"
            )),
            // pbx.invalid: a host name is the subject there (never resolved, no socket).
            3 => regex(
                "c=IN IP[46] (127\\.0\\.0\\.1|::1|0\\.0\\.0\\.0|::|127\\.0\\.0\\.[0-9]{1,3}|pbx\\.invalid)(/[0-9]{1,3})?"
            ),
            3 => regex(&format!(
                "a=rtpmap:{pt} (PCMU|pcma|telephone-event|opus)/(8000|48000|[0-9]{{1,5}})(/[0-9])?"
            )),
            2 => regex("a=(sendrecv|sendonly|recvonly|inactive|ptime:[0-9]{1,4})"),
        ]
    }

    proptest! {
        #![proptest_config(crate::proptest_config(256))]
        #[test]
        fn parse_never_panics(body in prop::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse(&body);
        }

        #[test]
        fn sdp_like_input_never_panics(
            session_c in prop::option::of("c=IN IP(4 (127\\.0\\.0\\.1|0\\.0\\.0\\.0)|6 ::1)"),
            head in prop::collection::vec(sdp_like_line(), 0..6),
            audio in "m=audio [0-9]{1,5} RTP/(AVP|AVP|AVPF|SAVP)( (0|8|9|18|9[6-9]|10[01])){1,6}",
            tail in prop::collection::vec(sdp_like_line(), 0..10),
            crlf in any::<bool>(),
            local in prop_oneof![Just(local4()), Just(local6())],
        ) {
            let mut body = String::from("v=0\n");
            let lines = session_c.into_iter().chain(head).chain([audio]).chain(tail);
            for line in lines {
                body.push_str(&line);
                body.push_str(if crlf { "\r\n" } else { "\n" });
            }
            if let Ok(offer) = parse(body.as_bytes()) {
                if let Ok((n, answer_body)) = answer(&offer, &local) {
                    // Whatever we answer, we can read back: the offer's stream count, and
                    // the same agreement seen from the other side.
                    let reparsed = parse(&answer_body);
                    prop_assert!(reparsed.is_ok(), "{:?}", reparsed);
                    let reparsed = reparsed.unwrap();
                    prop_assert_eq!(reparsed.media().len(), offer.media().len());
                    prop_assert_eq!(
                        accept_answer(&reparsed),
                        Ok(Negotiated {
                            remote_rtp: Some(local.addr),
                            remote_rtcp: above(local.addr),
                            direction: n.direction.reversed(),
                            // Ours (101) too, unless our answer gave it to the audio.
                            telephone_event_ours: n
                                .telephone_event
                                .filter(|&pt| pt != 101 && n.payload_type != 101)
                                .map(|_| 101),
                            ..n
                        })
                    );
                }
                let _ = accept_answer(&offer);
            }
        }

        #[test]
        fn answer_agrees_and_round_trips(
            offer in generated_offer().prop_filter_map("needs a G.711 format", |o| o),
            local in prop_oneof![Just(local4()), Just(local6())],
        ) {
            let parsed = parse(&offer.body).unwrap();
            let (n, body) = answer(&parsed, &local).unwrap();
            prop_assert_eq!(n.codec, offer.codec);
            prop_assert_eq!(n.payload_type, offer.payload_type);
            prop_assert_eq!(n.telephone_event, offer.telephone_event);
            prop_assert_eq!(n.remote_rtp, Some(offer.remote));
            prop_assert_eq!(n.ptime_ms, offer.ptime_ms);
            prop_assert_eq!(n.direction, offer.direction);

            let reply = parse(&body).unwrap();
            prop_assert_eq!(reply.media().len(), offer.media_count);
            let back = accept_answer(&reply).unwrap();
            prop_assert_eq!(n.remote_rtcp, above(offer.remote));
            prop_assert_eq!(back, Negotiated {
                remote_rtp: Some(local.addr),
                remote_rtcp: above(local.addr),
                direction: n.direction.reversed(),
                // Read as an answer to our offer, whose number for events was 101 (unless
                // this one gave it to the audio).
                telephone_event_ours: n
                    .telephone_event
                    .filter(|&pt| pt != 101 && n.payload_type != 101)
                    .map(|_| 101),
                ..n
            });
        }
    }
}
