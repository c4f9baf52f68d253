//! The endpoint's vocabulary: transports and flows, what it sends, the calls and events the
//! application sees, and its settings.

use std::net::SocketAddr;
use std::time::Duration;

use crate::ivr::dialplan::Dialplan;
use crate::sip::sdp::Negotiated;
use crate::sip::transaction::TimerConfig;

/// The methods vportal answers, for Allow headers.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE";

/// The bodies vportal accepts, for Accept headers.
pub const ACCEPT: &str =
    "application/sdp, multipart/mixed, application/dtmf-relay, application/dtmf";

/// Where a TCP message came from: the shell's connection number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// The transport a message came in on or goes out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// The UDP socket.
    Udp,
    /// A TCP connection.
    Tcp(ConnId),
}

/// How to reach a peer: a transport and an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// UDP, or the TCP connection.
    pub transport: Transport,
    /// The address to send to (for TCP: where to reconnect if the connection is gone).
    pub remote: SocketAddr,
}

impl Flow {
    /// A flow over `transport` to `remote`.
    pub fn new(transport: Transport, remote: SocketAddr) -> Self {
        Self { transport, remote }
    }

    /// TCP: no retransmissions needed.
    pub fn is_reliable(&self) -> bool {
        matches!(self.transport, Transport::Tcp(_))
    }
}

/// Bytes to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// UDP, or the TCP connection to write to.
    pub transport: Transport,
    /// The destination address.
    pub destination: SocketAddr,
    /// The message.
    pub payload: Vec<u8>,
}

/// A call, as the application refers to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallHandle(pub u64);

/// Routes a Request-URI user to a dialplan route.
pub trait Router: Send {
    /// The index of the route for `request_user`, the Request-URI's user part as written
    /// (`%`-escapes not expanded: the router decodes them), or `None` (answered 404).
    fn route(&self, request_user: &str) -> Option<usize>;
}

impl<F: Fn(&str) -> Option<usize> + Send> Router for F {
    fn route(&self, request_user: &str) -> Option<usize> {
        self(request_user)
    }
}

/// Routes with a dialplan: the index of the matching route in [`Dialplan::routes`].
pub fn dialplan_router(dialplan: std::sync::Arc<Dialplan>) -> Box<dyn Router> {
    Box::new(move |user: &str| {
        let route = dialplan.route(user)?;
        dialplan
            .routes()
            .iter()
            .position(|r| std::ptr::eq(r, route))
    })
}

/// A new call, waiting for the application to [`super::Endpoint::accept`] or
/// [`super::Endpoint::reject`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingCall {
    /// The call.
    pub call: CallHandle,
    /// The dialplan route the Request-URI matched.
    pub route: usize,
    /// The Request-URI user (unescaped), e.g. `8500`.
    pub request_user: String,
    /// The From URI's user.
    pub from_user: Option<String>,
    /// The P-Asserted-Identity URI's user (a trusted network's caller identity).
    pub asserted_user: Option<String>,
    /// The Call-ID.
    pub call_id: String,
    /// Where the INVITE came from, IPv4-mapped addresses written as IPv4 (responses and
    /// requests still go to the packet's source IP in the form the socket reported it,
    /// mapped or not).
    pub source: SocketAddr,
    /// What the INVITE came on: over TCP, the connection the dialog uses.
    pub transport: Transport,
    /// Whether the INVITE carried an SDP offer (else vportal offers in the 200).
    pub has_offer: bool,
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The caller sent BYE.
    RemoteBye,
    /// The caller cancelled before the answer.
    Cancelled,
    /// The application rejected the call with this status.
    Rejected(u16),
    /// The application hung up (BYE sent).
    Hangup,
    /// The ACK for the 2xx never came (§13.3.1.4); BYE sent.
    NoAck,
    /// The maximum call duration passed; BYE sent.
    MaxDuration,
    /// The server is shutting down.
    Shutdown,
    /// The offer/answer exchange failed (no answer in the ACK to our offer).
    MediaFailed,
}

/// What happened, for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A routed INVITE: accept or reject it.
    IncomingCall(IncomingCall),
    /// The session parameters were agreed or changed (answer sent, answer received in ACK,
    /// re-INVITE or UPDATE). Media should follow them.
    Media {
        /// The call.
        call: CallHandle,
        /// What was agreed. With the audio disabled ([`Negotiated::disabled`]), that is no
        /// hold for the call flow (a caller who holds hears music and comes back): it goes
        /// on, and its silences count, so a call left without audio ends as a silent one
        /// would.
        media: Negotiated,
    },
    /// The ACK for the answer arrived: the call is up.
    Established {
        /// The call.
        call: CallHandle,
    },
    /// An INFO request's body (e.g. `application/dtmf-relay`).
    Info {
        /// The call.
        call: CallHandle,
        /// The Content-Type, lower-case, without parameters.
        content_type: String,
        /// The body.
        body: Vec<u8>,
    },
    /// The call is over: stop its media. Comes once, when our BYE is sent (RFC 3261
    /// §15.1.1: the session ends then; the endpoint still retransmits the BYE and answers a
    /// crossing one), or else when the call is forgotten.
    Ended {
        /// The call.
        call: CallHandle,
        /// Why.
        reason: EndReason,
    },
}

/// Errors from the application's calls into the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No such call (ended already, or never existed).
    #[error("no such call")]
    NoSuchCall,
    /// The call is not waiting for an answer.
    #[error("the call was already answered or rejected")]
    NotRinging,
    /// The caller's offer cannot be answered from the media address given: the call was
    /// refused with 488 and has ended.
    #[error("the offer cannot be answered from that media address; refused with 488")]
    NotAcceptable,
}

/// What the endpoint alone knows, for the metrics endpoint. (Messages in and out are
/// counted by the shell, from their bytes: those that do not parse too.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams or messages dropped as unparseable or unanswerable.
    pub dropped: u64,
    /// In-dialog requests answered once, their transaction not kept: their dialog kept as
    /// much as it may.
    pub unkept: u64,
    /// New calls refused before they were offered to the application, by why.
    pub refused: RefusedCalls,
}

/// New calls the endpoint refused, by why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefusedCalls {
    /// No route for the number called (404).
    pub no_route: u64,
    /// The server holds `max_calls` (503).
    pub full: u64,
    /// The caller's source has `max_pending_per_source` calls not yet answered (503).
    pub source_limit: u64,
    /// The server is stopping (503).
    pub stopping: u64,
}

impl RefusedCalls {
    /// Each count, by the reason `vportal_calls_refused_total` gives it.
    pub fn by_reason(&self) -> [(&'static str, u64); 4] {
        [
            ("no_route", self.no_route),
            ("full", self.full),
            ("source_limit", self.source_limit),
            ("stopping", self.stopping),
        ]
    }
}

/// Endpoint settings.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// The address vportal advertises in Via and Contact.
    pub local_addr: SocketAddr,
    /// The Server / User-Agent header value.
    pub server_name: String,
    /// The languages prompts are played in, for OPTIONS' Accept-Language (RFC 3261
    /// §11.2), e.g. `en` or `en, fr`; empty: the header is left out.
    pub languages: String,
    /// Calls allowed at once; further INVITEs get 503 with Retry-After.
    pub max_calls: usize,
    /// Calls from one source (an IPv4 address, an IPv6 /64) not yet confirmed by their ACK
    /// allowed at once; further INVITEs from it get 503. 0: no limit.
    pub max_pending_per_source: usize,
    /// The longest a call may last; BYE after that.
    pub max_call_duration: Duration,
    /// SIP timer base values.
    pub timers: TimerConfig,
    /// Seed for tags and branches (tests); `None` seeds from the OS.
    pub rng_seed: Option<u64>,
}

impl EndpointConfig {
    /// Default [`EndpointConfig::max_calls`] (and `sip.max_calls`).
    pub const DEFAULT_MAX_CALLS: usize = 5_000;
    /// Default [`EndpointConfig::max_pending_per_source`] (and
    /// `sip.max_pending_calls_per_source`).
    pub const DEFAULT_MAX_PENDING_PER_SOURCE: usize = 64;
    /// Default [`EndpointConfig::max_call_duration`] (and `sip.max_call_duration`): an hour.
    pub const DEFAULT_MAX_CALL_DURATION: Duration = Duration::from_secs(3_600);

    /// Defaults for a server advertising `local_addr`.
    pub fn new(local_addr: SocketAddr) -> Self {
        Self {
            local_addr,
            server_name: format!("vportal/{}", env!("CARGO_PKG_VERSION")),
            languages: "en".to_owned(),
            max_calls: Self::DEFAULT_MAX_CALLS,
            max_pending_per_source: Self::DEFAULT_MAX_PENDING_PER_SOURCE,
            max_call_duration: Self::DEFAULT_MAX_CALL_DURATION,
            timers: TimerConfig::default(),
            rng_seed: None,
        }
    }
}
