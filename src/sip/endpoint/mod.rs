//! The sans-IO SIP user agent server.
//!
//! Feed it what arrives with [`Endpoint::handle_datagram`] / [`Endpoint::handle_message`]
//! and the passing of time with [`Endpoint::handle_timeout`]; drain what it wants sent with
//! [`Endpoint::poll_transmit`], what happened with [`Endpoint::poll_event`], and when it next
//! needs waking with [`Endpoint::poll_timeout`]. The application answers incoming calls with
//! [`Endpoint::accept`] or [`Endpoint::reject`] and ends them with [`Endpoint::hangup`].
//!
//! Requests that create no call (OPTIONS, and every error response before a call exists) are
//! answered statelessly (RFC 3261 §8.2.7) with a To tag derived from the request, so a
//! retransmission gets the same answer and a flood of them leaves no state behind. Calls use
//! full INVITE transactions, dialogs and the 2xx retransmission of §13.3.1.4.
//!
//! Responses go to the packet's source address (RFC 3261 §18.2.2): over UDP with `rport` to
//! its source port (RFC 3581), otherwise to the Via's port; over TCP on the request's
//! connection, or a new one to the Via's port if it closed. In-dialog requests (BYE) go back
//! over the flow the call came in on: over UDP where the responses to the INVITE (or the
//! latest accepted target refresh) went; over TCP on its connection, or, should that have
//! closed, a new one to the Via's port. Host names in messages are never resolved.

mod types;
mod validate;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::time::Instant;

use crate::net::{Client, client_key};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::build::{MessageBuilder, response_to};
use super::dialog::{self, Dialog, dialog_key};
use super::header::{HeaderName, NameAddr, Via};
use super::message::{Message, Method};
use super::sdp::{self, Direction, LocalMedia, Negotiated, OfferAnswerError, SessionDescription};
use super::transaction::{
    InviteServerState, InviteServerTx, NonInviteClientTx, NonInviteServerTx, RetransmitTimer,
    TxAction,
};
use super::uri::{Host, Uri};

pub use types::{
    ACCEPT, ALLOW, CallError, CallHandle, ConnId, EndReason, EndpointConfig, Event, Flow,
    IncomingCall, RefusedCalls, Router, Stats, Transmit, Transport, dialplan_router,
};
use validate::{
    Body, Core, INFO_DISPOSITIONS, INFO_TYPES, NOT_ACCEPTABLE, Verdict, check_body,
    check_invite_content, media_type, response_destination, sdp_body, user_of, validate,
};

/// Where a call is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    /// IncomingCall was emitted; waiting for accept or reject.
    Ringing,
    /// A 2xx was sent; waiting for its ACK.
    Answered,
    /// Up.
    Confirmed,
    /// Our BYE is on its way.
    Terminating,
}

/// What a kept in-dialog server transaction counts against its dialog: which, and how many
/// bytes.
type Kept = (CallHandle, usize);

/// The media `last` agreed, once the audio stream is disabled (port 0): no address to send
/// RTP or RTCP to, and inactive. Codec, payload types and ptime stay as they were, so that
/// what listens for keys is kept, as through a hold.
fn without_audio(last: &Negotiated) -> Negotiated {
    Negotiated {
        remote_rtp: None,
        remote_rtcp: None,
        direction: Direction::Inactive,
        disabled: true,
        ..last.clone()
    }
}

/// What an INVITE server transaction is for.
#[derive(Debug, Clone, Copy)]
enum InviteOf {
    /// A call's first INVITE.
    Call(CallHandle),
    /// A re-INVITE, and what it counts against its dialog.
    ReInvite(Kept),
}

/// The most one dialog's server transactions may keep at a time, in bytes: their keys and
/// the responses kept to answer retransmissions, for up to 32 s each (Timers J, H). Whoever
/// holds a call can send in-dialog requests at any rate, each with a new branch: without a
/// bound, memory grows with what they send, and every re-INVITE refused over UDP is sent
/// again up to 10 times (Timer G), to whatever source the request claimed. Past it a
/// request is answered once and not kept. A normal INFO and its 200 keep about 600 bytes,
/// so the most keys a caller types within 32 s stay far below it.
const MAX_KEPT_PER_DIALOG: usize = 256 * 1024;

/// What an INVITE transaction counts for, in bytes, against [`MAX_KEPT_PER_DIALOG`]: an
/// eighth of it, so that at most 7 re-INVITE transactions of one dialog that may be sent
/// again live at a time (a refused one is sent again until its ACK, to whatever source it
/// claimed, and an accepted one's 200 until its ACK). Once its 200 is ACKed, an accepted
/// one counts only its key and itself.
const KEPT_PER_INVITE: usize = MAX_KEPT_PER_DIALOG / 8;

/// Seconds a 503 asks the caller (or a proxy) to wait before trying again (§21.5.4).
const RETRY_AFTER: &str = "5";

/// A 2xx the UAS core retransmits until its ACK comes (§13.3.1.4).
#[derive(Debug)]
struct Pending2xx {
    bytes: Vec<u8>,
    cseq: u32,
    /// The key of the INVITE transaction it answers, told when the ACK comes.
    tx_key: String,
    /// Sent again until the ACK comes (§13.3.1.4).
    retransmit: RetransmitTimer,
    give_up: Instant,
    /// Our offer is in this 2xx; the answer comes in the ACK.
    offered: bool,
}

#[derive(Debug)]
struct Call {
    state: CallState,
    dialog: Dialog,
    invite_key: String,
    invite: Option<Message>,
    source: SocketAddr,
    offer: Option<SessionDescription>,
    local_media: Option<LocalMedia>,
    /// The streams of the last description we sent, for an offer of ours in a re-INVITE.
    layout: sdp::Layout,
    /// The media last agreed with an audio stream: what an offer disabling it leaves in place.
    media: Option<Negotiated>,
    pending_2xx: Option<Pending2xx>,
    /// Hang up as soon as the pending 2xx is acknowledged (or times out).
    hangup_after_ack: Option<EndReason>,
    /// Why our BYE was sent.
    ending: Option<EndReason>,
    max_until: Option<Instant>,
    established: bool,
    /// Bytes its in-dialog server transactions keep (see [`MAX_KEPT_PER_DIALOG`]).
    kept: usize,
}

impl Call {
    fn next_deadline(&self) -> Option<Instant> {
        let pending = self
            .pending_2xx
            .as_ref()
            .map(|p| p.retransmit.due().min(p.give_up));
        [pending, self.max_until].into_iter().flatten().min()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum TimerRef {
    Invite(String),
    NonInvite(String),
    Client(String),
    Call(CallHandle),
}

/// A request being handled: when, what, from where, where answers go, and its checked core
/// headers.
struct Req<'a> {
    now: Instant,
    msg: &'a Message,
    source: SocketAddr,
    flow: Flow,
    core: Core<'a>,
}

/// The SIP user agent server.
pub struct Endpoint {
    cfg: EndpointConfig,
    router: Box<dyn Router>,
    rng: StdRng,
    /// Drawn from `rng` at start: mixed into every tag derived from a request, so that they
    /// differ from one run to the next (and repeat under a seed).
    tag_key: u128,
    next_call: u64,
    invites: HashMap<String, (InviteServerTx, InviteOf)>,
    /// Initial INVITE transactions by Call-ID, From tag and CSeq, to spot merged requests
    /// (§8.2.2.2): id → transaction key, and the reverse.
    invite_ids: HashMap<String, String>,
    invite_id_of: HashMap<String, String>,
    /// With the dialog and bytes the transaction counts against (see
    /// [`MAX_KEPT_PER_DIALOG`]), when it is in one.
    non_invites: HashMap<String, (NonInviteServerTx, Option<Kept>)>,
    /// Calls not yet confirmed by their ACK, by source (see
    /// [`EndpointConfig::max_pending_per_source`]). An INVITE with a forged source address
    /// gets a 200 sent ten times and then a BYE sent ten times, to that address, over a
    /// minute: without a bound per source, one host could aim all that at another, or take
    /// every call slot from one address.
    pending_from: HashMap<Client, usize>,
    clients: HashMap<String, (NonInviteClientTx, CallHandle)>,
    calls: HashMap<CallHandle, Call>,
    /// How many of `calls` are ending: our BYE is out, awaiting its answer (Terminating).
    /// Kept rather than counted, as admission reads it on every INVITE, floods included.
    ending: usize,
    dialogs: HashMap<String, CallHandle>,
    timers: BinaryHeap<Reverse<(Instant, TimerRef)>>,
    /// What `timers` holds, so a deadline armed again (a call's maximum duration, re-armed
    /// on every ACK) is queued once rather than once per arming.
    queued: HashSet<(Instant, TimerRef)>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    shutting_down: bool,
    stats: Stats,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("calls", &self.calls.len())
            .field("invites", &self.invites.len())
            .field("non_invites", &self.non_invites.len())
            .field("clients", &self.clients.len())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// A UAS with `config` that routes INVITEs with `router`.
    pub fn new(config: EndpointConfig, router: Box<dyn Router>) -> Self {
        let mut rng = match config.rng_seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => rand::make_rng(),
        };
        let tag_key = rng.random();
        Self {
            cfg: config,
            router,
            rng,
            tag_key,
            next_call: 1,
            invites: HashMap::new(),
            invite_ids: HashMap::new(),
            invite_id_of: HashMap::new(),
            non_invites: HashMap::new(),
            pending_from: HashMap::new(),
            clients: HashMap::new(),
            calls: HashMap::new(),
            ending: 0,
            dialogs: HashMap::new(),
            timers: BinaryHeap::new(),
            queued: HashSet::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            shutting_down: false,
            stats: Stats::default(),
        }
    }

    /// Calls in progress (ringing, answered or up). A call whose BYE we sent is over (its
    /// media stopped then) and no longer counts, though its BYE may be retransmitted until
    /// Timer F.
    pub fn active_calls(&self) -> usize {
        self.calls.len() - self.ending
    }

    /// Calls whose BYE from us is out and not yet answered.
    pub fn unanswered_byes(&self) -> usize {
        self.ending
    }

    /// Nothing left to do: no call, and no request of ours still waiting for its final
    /// response. (Transactions that only absorb retransmissions do not count.)
    pub fn is_idle(&self) -> bool {
        self.calls.is_empty()
            && self
                .clients
                .values()
                .all(|(tx, _)| tx.state == super::transaction::ClientState::Completed)
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The next datagram or stream write to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next thing that happened.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Endpoint::handle_timeout`] should next be called. May be early (a timer that
    /// was since cancelled); calling `handle_timeout` then is harmless.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Handles one UDP datagram from `source`.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, data: Vec<u8>) {
        // A keepalive some phones send over UDP too (blank lines, as RFC 5626 §3.5.1 has
        // over streams): no message, so nothing to answer, and nothing dropped either.
        if data
            .iter()
            .all(|b| matches!(b, b'\r' | b'\n' | b' ' | b'\t'))
        {
            return;
        }
        match Message::parse_datagram(data) {
            Ok(msg) => self.handle_message(now, Transport::Udp, source, msg),
            Err(_) => self.stats.dropped += 1,
        }
    }

    /// Handles one parsed message (a framed TCP message, or a datagram parsed elsewhere).
    pub fn handle_message(
        &mut self,
        now: Instant,
        transport: Transport,
        source: SocketAddr,
        msg: Message,
    ) {
        match msg.method() {
            None => self.handle_response(now, &msg),
            Some(_) => self.handle_request(now, transport, source, &msg),
        }
    }

    // ----- requests -----

    fn handle_request(
        &mut self,
        now: Instant,
        transport: Transport,
        source: SocketAddr,
        msg: &Message,
    ) {
        // Without a Via there is no way to answer: silence. Nor with a top Via that is not
        // UTF-8: the next one would be taken for it, and the 400 would carry a Via list the
        // sender does not recognise as its own.
        let top = msg
            .first_is_text(HeaderName::Via)
            .then(|| msg.list(HeaderName::Via).next());
        let Some(top) = top.flatten() else {
            self.stats.dropped += 1;
            return;
        };
        let is_ack = msg.method() == Some(&Method::Ack);
        let Ok(via) = Via::parse(top) else {
            // A Via that does not parse (RFC 4475 §3.1.2.1) still gets its 400, copied back
            // as written, to the packet's source address.
            if !is_ack {
                let flow = Flow::new(transport, source);
                self.respond_stateless(msg, source, flow, 400, "Malformed Via header", |_| {});
            }
            return;
        };
        let flow = Flow::new(transport, response_destination(&via, source, transport));
        let core = match validate(msg, via) {
            Ok(core) => core,
            // Never respond to an ACK (§17.1.1.3).
            Err(_) if is_ack => {
                self.stats.dropped += 1;
                return;
            }
            Err(verdict) => return self.respond_verdict(msg, source, flow, verdict),
        };
        let Some(method) = msg.method() else { return };
        let req = Req {
            now,
            msg,
            source,
            flow,
            core,
        };
        match method {
            Method::Ack => self.handle_ack(&req),
            Method::Cancel => self.handle_cancel(&req),
            Method::Invite => self.handle_invite(&req),
            _ => self.handle_non_invite(&req),
        }
    }

    /// The key of the transaction a request belongs to (§17.2.3). `method` is the
    /// transaction's method: INVITE for an ACK or CANCEL being matched to one.
    fn tx_key(msg: &Message, core: &Core<'_>, method: &str) -> String {
        if core.via.has_rfc3261_branch() {
            format!(
                "{}|{}:{}|{method}",
                core.via.branch().unwrap_or(""),
                core.via.host,
                core.via.port.unwrap_or(5060)
            )
        } else {
            // RFC 2543 matching: Request-URI, From tag, Call-ID, CSeq number and top Via.
            format!(
                "2543|{}|{}|{}|{}|{}|{method}",
                msg.request_uri().unwrap_or(""),
                core.from.tag().unwrap_or(""),
                core.call_id,
                core.cseq.seq,
                core.via.raw
            )
        }
    }

    fn handle_invite(&mut self, req: &Req<'_>) {
        let (now, msg, source, flow, core) = (req.now, req.msg, req.source, req.flow, &req.core);
        let key = Self::tx_key(msg, core, "INVITE");
        if let Some((tx, _)) = self.invites.get(&key) {
            // A retransmission: repeat the last response.
            if let Some(bytes) = tx.on_retransmission() {
                let bytes = bytes.to_vec();
                self.send(tx.flow, bytes);
            }
            return;
        }
        if let Some(verdict) = self.check_extensions(msg, core) {
            return self.respond_verdict(msg, source, flow, verdict);
        }
        if core.to.tag().is_some() {
            return self.handle_reinvite(req, key);
        }
        // Merged request: same Call-ID, From tag and CSeq arrived by another path.
        let id = format!(
            "{}|{}|{}",
            core.call_id,
            core.from.tag().unwrap_or(""),
            core.cseq.seq
        );
        if self.invite_ids.get(&id).is_some_and(|k| *k != key) {
            return self.reply(req, 482, "Loop Detected");
        }
        if let Err(verdict) = check_invite_content(msg) {
            return self.respond_verdict(msg, source, flow, verdict);
        }
        let uri = Uri::parse(msg.request_uri().unwrap_or("")).ok();
        // Routed on the number as written: the router expands escapes itself, once
        // (`%2538500` is the user `%38500`, not `8500`).
        let routed = uri.as_ref().and_then(Uri::written_number);
        let request_user = uri.and_then(|u| u.user().map(std::borrow::Cow::into_owned));
        let Some(route) = routed
            .filter(|_| request_user.is_some())
            .and_then(|u| self.router.route(&u))
        else {
            self.stats.refused.no_route += 1;
            return self.reply(req, 404, "Not Found");
        };
        if let Some(count) = self.over_capacity(source) {
            *count += 1;
            return self.respond_stateless(msg, source, flow, 503, "Service Unavailable", |_| {});
        }
        let offer = match self.read_offer(msg, source) {
            Ok(offer) => offer,
            Err(verdict) => return self.respond_verdict(msg, source, flow, verdict),
        };
        let dialog = match self.new_dialog(req) {
            Ok(dialog) => dialog,
            Err((code, reason)) => return self.reply(req, code, &reason),
        };
        let asserted_user = msg
            .list(HeaderName::PAssertedIdentity)
            .filter_map(|v| NameAddr::parse(v, HeaderName::PAssertedIdentity).ok())
            .find_map(|n| user_of(n.uri));
        let handle = CallHandle(self.next_call);
        self.next_call += 1;
        // 100 Trying at once (§17.2.1), then the application decides.
        let mut tx = InviteServerTx::new(flow, self.cfg.timers);
        let trying = self.response(msg, source, 100, "Trying", None).finish(None);
        tx.respond(100, trying.clone(), now);
        self.send(flow, trying);
        self.invites
            .insert(key.clone(), (tx, InviteOf::Call(handle)));
        self.invite_ids.insert(id.clone(), key.clone());
        self.invite_id_of.insert(key.clone(), id);
        self.arm(TimerRef::Invite(key.clone()));
        let has_offer = offer.is_some();
        *self
            .pending_from
            .entry(client_key(source.ip()))
            .or_default() += 1;
        self.calls.insert(
            handle,
            Call {
                state: CallState::Ringing,
                dialog,
                invite_key: key,
                invite: Some(msg.clone()),
                source,
                offer,
                local_media: None,
                layout: sdp::Layout::default(),
                media: None,
                pending_2xx: None,
                hangup_after_ack: None,
                ending: None,
                max_until: None,
                established: false,
                kept: 0,
            },
        );
        self.events.push_back(Event::IncomingCall(IncomingCall {
            call: handle,
            route,
            request_user: request_user.unwrap_or_default(),
            from_user: user_of(core.from.uri),
            asserted_user,
            call_id: core.call_id.to_owned(),
            // What the application shows and checks (audit rows, trusted sources): an IPv4
            // caller on a dual-stack socket, `[::ffff:a.b.c.d]:p`, is `a.b.c.d:p`.
            source: crate::net::canonical(source),
            transport: flow.transport,
            has_offer,
        }));
    }

    /// Whether a new call from `source` is to be refused, as the count of such refusals:
    /// the server is stopping, or holds as many calls as it may, or `source` has as many
    /// calls not yet answered as it may. `max_calls` counts calls in progress; calls still
    /// retransmitting their BYE are bounded too (they are SIP state only), at as many again.
    fn over_capacity(&mut self, source: SocketAddr) -> Option<&mut u64> {
        let limit = self.cfg.max_pending_per_source;
        let source_full = limit > 0
            && self
                .pending_from
                .get(&client_key(source.ip()))
                .is_some_and(|&n| n >= limit);
        let (stopping, full) = (self.shutting_down, self.is_full());
        let refused = &mut self.stats.refused;
        if stopping {
            Some(&mut refused.stopping)
        } else if full {
            Some(&mut refused.full)
        } else if source_full {
            Some(&mut refused.source_limit)
        } else {
            None
        }
    }

    /// Whether every new call is refused now (503): the server is stopping, or full.
    fn refusing_calls(&self) -> bool {
        self.shutting_down || self.is_full()
    }

    /// Whether the server holds `max_calls` calls in progress (or twice as many in all,
    /// those still retransmitting their BYE included).
    fn is_full(&self) -> bool {
        self.active_calls() >= self.cfg.max_calls
            || self.calls.len() >= self.cfg.max_calls.saturating_mul(2)
    }

    /// The dialog a new INVITE makes (§12.1.1), with a fresh local tag; or the response
    /// that refuses it: 400 when its Contact or Record-Route cannot be read, 416 when it
    /// asks for a secure dialog.
    fn new_dialog(&mut self, req: &Req<'_>) -> Result<Dialog, (u16, String)> {
        let (msg, source, flow, core) = (req.msg, req.source, req.flow, &req.core);
        let malformed = |e: crate::sip::HeaderError| (400, e.to_string());
        // The remote target: Contact, or From for an RFC 2543 caller without one.
        let contact = match msg.list(HeaderName::Contact).next() {
            Some(c) => Some(NameAddr::parse(c, HeaderName::Contact).map_err(malformed)?),
            None => None,
        };
        let remote_target =
            dialog::remote_target(contact.as_ref().map_or(core.from.uri, |c| c.uri));
        let route_set = msg
            .list(HeaderName::RecordRoute)
            .map(|value| NameAddr::parse(value, HeaderName::RecordRoute))
            .collect::<Result<Vec<_>, _>>()
            .map_err(malformed)?;
        // A SIPS top Record-Route, or without one a SIPS Contact, makes the dialog secure:
        // our answer's Contact would have to be SIPS (§12.1.1), which vportal, without TLS,
        // cannot honour (as for a SIPS Request-URI).
        let secure = route_set.first().or(contact.as_ref()).is_some_and(|n| {
            crate::sip::uri::scheme(n.uri).is_ok_and(|s| s.eq_ignore_ascii_case("sips"))
        });
        if secure {
            return Err((416, "SIPS Not Supported".into()));
        }
        let local_tag = self.random_token();
        let to_value = msg.values(HeaderName::To).next().unwrap_or("");
        Ok(Dialog {
            call_id: core.call_id.to_owned(),
            local_party: format!("{to_value};tag={local_tag}"),
            local_tag,
            remote_tag: core.from.tag().unwrap_or("").to_owned(),
            remote_party: msg.values(HeaderName::From).next().unwrap_or("").to_owned(),
            remote_target,
            route_set: dialog::uris(route_set.into_iter()),
            remote_cseq: core.cseq.seq,
            local_cseq: 0,
            // Over UDP our requests go where our responses go (§18.2.2, RFC 3581): the
            // source IP, at the source port with `rport` (symmetric, NAT friendly), else at
            // the Via's port, the one a caller without `rport` listens on. Over TCP they go
            // on the INVITE's connection; should it have closed, a new one is opened to the
            // source IP at the Via's port, as for responses, never the closed connection's
            // ephemeral source port.
            flow: udp_reply_flow(flow, &core.via, source),
        })
    }

    /// The INVITE's SDP offer, if it has a body; checks it can be answered at all.
    fn read_offer(
        &self,
        msg: &Message,
        source: SocketAddr,
    ) -> Result<Option<SessionDescription>, Verdict> {
        let body = sdp_body(msg)?;
        if body.is_empty() {
            return Ok(None);
        }
        let offer =
            sdp::parse(body).map_err(|_| Verdict::Respond(400, "Malformed SDP body".into()))?;
        // A dry run of the answer: no common codec, or a media address of the other IP
        // version (RTP goes from the address vportal advertises), means 488 now, not after
        // alerting.
        let probe = LocalMedia {
            addr: SocketAddr::new(self.cfg.local_addr.ip(), 9),
            session_id: 0,
            session_version: 0,
        };
        match sdp::answer_reachable(&offer, &probe, source.ip()) {
            Ok(_) => Ok(Some(offer)),
            Err(OfferAnswerError::Malformed(_)) => {
                Err(Verdict::Respond(400, "Malformed SDP body".into()))
            }
            Err(refusal) => Err(Verdict::NotAcceptable(refusal)),
        }
    }

    /// `Require` (§8.2.2.3: 420 listing what is unsupported) and Max-Forwards (483).
    fn check_extensions(&self, msg: &Message, core: &Core<'_>) -> Option<Verdict> {
        let required: Vec<&str> = msg
            .list(HeaderName::Require)
            .filter(|t| !t.is_empty())
            .collect();
        if !required.is_empty() {
            return Some(Verdict::BadExtension(required.join(", ")));
        }
        // A UAS is the request's last hop: Max-Forwards 0 on a request that would start
        // something is answered 483 as the product asks, except OPTIONS, which RFC 3261 §11
        // and RFC 4475 §3.3.11 use to probe the next hop. Inside a dialog (a To tag) it is
        // processed: refusing a BYE would leave the call up for a caller who has gone.
        if core.max_forwards == Some(0)
            && msg.method() != Some(&Method::Options)
            && core.to.tag().is_none()
        {
            return Some(Verdict::Respond(483, "Too Many Hops".into()));
        }
        None
    }

    fn respond_verdict(&mut self, msg: &Message, source: SocketAddr, flow: Flow, verdict: Verdict) {
        match verdict {
            Verdict::Drop => self.stats.dropped += 1,
            Verdict::BadExtension(tags) => {
                self.respond_stateless(msg, source, flow, 420, "Bad Extension", |b| {
                    b.header("Unsupported", &tags);
                });
            }
            Verdict::Respond(code @ (415 | 488), reason) => {
                self.respond_stateless(msg, source, flow, code, &reason, |b| {
                    what_is_understood(b, code, None);
                });
            }
            Verdict::NotAcceptable(refusal) => {
                let warning = self.offer_warning(&refusal);
                self.respond_stateless(msg, source, flow, 488, NOT_ACCEPTABLE, |b| {
                    what_is_understood(b, 488, warning.as_deref());
                });
            }
            Verdict::Respond(code, reason) => {
                self.respond_stateless(msg, source, flow, code, &reason, |_| {})
            }
        }
    }

    fn handle_cancel(&mut self, req: &Req<'_>) {
        let (now, msg, source, flow, core) = (req.now, req.msg, req.source, req.flow, &req.core);
        let cancel_key = Self::tx_key(msg, core, "CANCEL");
        if self.absorb_non_invite(&cancel_key) {
            return;
        }
        let invite_key = Self::tx_key(msg, core, "INVITE");
        let Some((tx, call)) = self.invites.get(&invite_key) else {
            return self.reply(req, 481, "Call/Transaction Does Not Exist");
        };
        let call = match *call {
            InviteOf::Call(handle) => Some(handle),
            InviteOf::ReInvite(_) => None,
        };
        let proceeding = tx.state == InviteServerState::Proceeding;
        // §9.2: 200 to the CANCEL whether or not it still has an effect.
        let to_tag = call
            .and_then(|c| self.calls.get(&c))
            .map(|c| c.dialog.local_tag.clone());
        let ok = self
            .response(msg, source, 200, "OK", to_tag.as_deref())
            .finish(None);
        self.complete_non_invite(cancel_key, flow, ok, now, None);
        if proceeding
            && let Some(handle) = call
            && self
                .calls
                .get(&handle)
                .is_some_and(|c| c.state == CallState::Ringing)
        {
            self.final_to_invite(handle, 487, "Request Terminated", now);
            self.end_call(handle, EndReason::Cancelled);
        }
    }

    fn handle_ack(&mut self, req: &Req<'_>) {
        let (now, msg, core) = (req.now, req.msg, &req.core);
        // An ACK for a non-2xx final response belongs to the INVITE transaction.
        let invite_key = Self::tx_key(msg, core, "INVITE");
        if let Some((tx, _)) = self.invites.get_mut(&invite_key)
            && tx.state == InviteServerState::Completed
        {
            tx.on_ack(now);
            self.arm(TimerRef::Invite(invite_key));
            return;
        }
        // An ACK for a 2xx is a request of its own within the dialog (§13.3.1.4, §17.1.1.3).
        let Some(handle) = self.find_dialog(core) else {
            return;
        };
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        let Some(pending) = &call.pending_2xx else {
            return;
        };
        if pending.cseq != core.cseq.seq {
            return;
        }
        let offered = pending.offered;
        if let Some((tx, of)) = self.invites.get_mut(&pending.tx_key) {
            tx.on_ack(now);
            // Accepted and ACKed, a re-INVITE's transaction only absorbs late copies until
            // Timer L (RFC 6026 §7.1): it keeps its key and no response, and is sent again
            // to nobody, so it no longer counts as one that may be.
            if let InviteOf::ReInvite((_, size)) = of {
                let settled = pending.tx_key.len() + size_of::<InviteServerTx>();
                call.kept = call.kept.saturating_sub(size.saturating_sub(settled));
                *size = settled.min(*size);
            }
        }
        call.pending_2xx = None;
        if call.state == CallState::Answered {
            call.state = CallState::Confirmed;
        }
        let first = !call.established;
        call.established = true;
        // With no route set, the caller sends its ACK straight to our Contact (§12.2.1.1):
        // one from another host than the INVITE came through a proxy that does not
        // Record-Route, and from the caller, the dialog's remote target. Over UDP our
        // requests (the BYE) then go where the ACK came from, as they follow a target
        // refresh, rather than to that proxy, which need not take them.
        if first
            && call.dialog.route_set.is_empty()
            && !call.dialog.flow.is_reliable()
            && !req.flow.is_reliable()
            && req.source.ip() != call.source.ip()
        {
            call.dialog.flow = udp_reply_flow(req.flow, &core.via, req.source);
        }
        let source_of = call.source;
        if offered {
            // Late offer: the answer is in this ACK.
            let local = call.local_media.as_ref().map(|m| m.addr.ip());
            // A body refused or ignored for its type or disposition is no answer.
            let answer = sdp::parse(sdp_body(msg).unwrap_or(&[])).ok();
            let media = answer.as_ref().map(|a| {
                let media = sdp::accept_answer_to(a, &call.layout)?;
                local.map_or(Ok(()), |ip| media.check_reachable(ip, source_of.ip()))?;
                // What the answer agreed is what a later offer of ours keeps.
                call.layout.agreed(&media);
                Ok::<_, OfferAnswerError>(media)
            });
            // An answer with port 0 refuses the audio our offer enabled (RFC 3264 §6). In a
            // call (media was agreed before) that leaves the audio disabled, as an offer
            // disabling it does; a call's first answer must give it audio.
            let media = match (media, &call.media) {
                (Some(Err(OfferAnswerError::AudioRejected)), Some(last)) => {
                    Some(Ok(without_audio(last)))
                }
                (media, _) => media,
            };
            match media {
                Some(Ok(media)) => self.media_agreed(handle, media),
                _ => {
                    // No longer pending: the call is confirmed, if only to be ended.
                    if first {
                        self.confirmed(source_of);
                    }
                    self.arm(TimerRef::Call(handle));
                    return self.hangup_with(handle, EndReason::MediaFailed, now);
                }
            }
        }
        if first {
            self.confirmed(source_of);
            self.events.push_back(Event::Established { call: handle });
        }
        self.arm(TimerRef::Call(handle));
        if let Some(reason) = self
            .calls
            .get_mut(&handle)
            .and_then(|c| c.hangup_after_ack.take())
        {
            self.hangup_with(handle, reason, now);
        }
    }

    fn find_dialog(&self, core: &Core<'_>) -> Option<CallHandle> {
        let local = core.to.tag()?;
        let remote = core.from.tag().unwrap_or("");
        self.dialogs
            .get(&dialog_key(core.call_id, local, remote))
            .copied()
    }

    /// A retransmitted non-INVITE request: repeat its response. Returns whether it was one.
    fn absorb_non_invite(&mut self, key: &str) -> bool {
        match self.non_invites.get(key) {
            Some((tx, _)) => {
                let (flow, bytes) = (tx.flow, tx.response.clone());
                self.send(flow, bytes);
                true
            }
            None => false,
        }
    }

    /// Sends a non-INVITE request's final response and keeps its transaction, to answer
    /// retransmissions; `kept` is what it counts against its dialog, if it is in one.
    fn complete_non_invite(
        &mut self,
        key: String,
        flow: Flow,
        response: Vec<u8>,
        now: Instant,
        kept: Option<Kept>,
    ) {
        self.send(flow, response.clone());
        let tx = NonInviteServerTx::completed(flow, response, now, self.cfg.timers);
        self.non_invites.insert(key.clone(), (tx, kept));
        self.arm(TimerRef::NonInvite(key));
    }

    /// [`Self::complete_non_invite`] for a request in `dialog`, within what the dialog may
    /// keep; past that, the response is sent once and not kept.
    fn complete_in_dialog(
        &mut self,
        dialog: CallHandle,
        key: String,
        flow: Flow,
        response: Vec<u8>,
        now: Instant,
    ) {
        match self.keep(dialog, key.len() + response.len()) {
            Some(kept) => self.complete_non_invite(key, flow, response, now, Some(kept)),
            None => self.send(flow, response),
        }
    }

    /// Counts `size` bytes against `dialog`'s budget, if they fit.
    fn keep(&mut self, dialog: CallHandle, size: usize) -> Option<Kept> {
        let call = self.calls.get_mut(&dialog)?;
        if call.kept + size > MAX_KEPT_PER_DIALOG {
            self.stats.unkept += 1;
            return None;
        }
        call.kept += size;
        Some((dialog, size))
    }

    /// A kept transaction has ended: what it kept no longer counts against its dialog.
    fn release(&mut self, kept: Option<Kept>) {
        if let Some((dialog, size)) = kept
            && let Some(call) = self.calls.get_mut(&dialog)
        {
            call.kept = call.kept.saturating_sub(size);
        }
    }

    /// Answers a non-INVITE request in `dialog` with `code` (and what `extra` adds),
    /// completing its transaction.
    fn answer_non_invite(
        &mut self,
        req: &Req<'_>,
        dialog: CallHandle,
        key: String,
        (code, reason): (u16, &str),
        extra: impl FnOnce(&mut MessageBuilder),
    ) {
        // The request is in the dialog: its To has our tag already.
        let mut b = self.response(req.msg, req.source, code, reason, None);
        extra(&mut b);
        let bytes = b.finish(None);
        self.complete_in_dialog(dialog, key, req.flow, bytes, req.now);
    }

    fn handle_non_invite(&mut self, req: &Req<'_>) {
        let (now, msg, source, flow, core) = (req.now, req.msg, req.source, req.flow, &req.core);
        let Some(method) = msg.method() else { return };
        let key = Self::tx_key(msg, core, method.as_str());
        if self.absorb_non_invite(&key) {
            return;
        }
        if let Some(verdict) = self.check_extensions(msg, core) {
            return self.respond_verdict(msg, source, flow, verdict);
        }
        if core.to.tag().is_none() {
            // Outside a dialog only OPTIONS makes sense; it is answered statelessly.
            if *method == Method::Options {
                return self.respond_options(msg, source, flow);
            }
            return self.reply(req, 481, "Call/Transaction Does Not Exist");
        }
        let Some(handle) = self.find_dialog(core) else {
            return self.reply(req, 481, "Call/Transaction Does Not Exist");
        };
        if !self.accept_cseq(handle, core.cseq.seq) {
            return self.answer_non_invite(req, handle, key, (500, "CSeq Out of Order"), |_| {});
        }
        let ended = self.calls.get(&handle).is_some_and(|c| c.ending.is_some());
        if ended && *method != Method::Bye {
            // RFC 5407 §3.2.1: once our BYE is out, requests about the session are refused
            // (as a re-INVITE is): an UPDATE's answer would name an RTP port already freed,
            // and keys no longer go anywhere. A crossing BYE is still answered 200.
            return self.answer_non_invite(
                req,
                handle,
                key,
                (481, "Call/Transaction Does Not Exist"),
                |_| {},
            );
        }
        // In the dialog, the To carries our tag already: the answers add none.
        match method {
            Method::Bye => {
                let ok = self.response(msg, source, 200, "OK", None).finish(None);
                self.complete_in_dialog(handle, key, flow, ok, now);
                self.end_call_as_recorded(handle, EndReason::RemoteBye);
            }
            Method::Options => {
                let mut b = self.response(msg, source, 200, "OK", None);
                capabilities(&mut b, &self.cfg.languages);
                let bytes = b.finish(None);
                self.complete_in_dialog(handle, key, flow, bytes, now);
            }
            Method::Info => {
                let content_type = msg
                    .single(HeaderName::ContentType)
                    .ok()
                    .flatten()
                    .map(media_type)
                    .unwrap_or_default();
                if msg.values(HeaderName::InfoPackage).next().is_some() {
                    // RFC 6086 §4.2.2: vportal takes INFO only in its legacy use, without
                    // Info Packages, so it names none it would receive.
                    return self.answer_non_invite(
                        req,
                        handle,
                        key,
                        (469, "Bad Info Package"),
                        |b| {
                            b.header("Recv-Info", "");
                        },
                    );
                }
                let body = match check_body(msg, INFO_TYPES, INFO_DISPOSITIONS) {
                    Ok(Body::Use) => msg.body(),
                    Ok(Body::Ignore) => &[],
                    Err(verdict) => {
                        let (code, reason) = verdict.status_or((400, "Bad Request"));
                        return self.answer_non_invite(req, handle, key, (code, &reason), |b| {
                            if code == 415 {
                                b.header("Accept", &INFO_TYPES.join(", "));
                                b.header("Accept-Encoding", "identity");
                            }
                        });
                    }
                };
                let ok = self.response(msg, source, 200, "OK", None).finish(None);
                self.complete_in_dialog(handle, key, flow, ok, now);
                if !body.is_empty() {
                    self.events.push_back(Event::Info {
                        call: handle,
                        content_type,
                        body: body.to_vec(),
                    });
                }
            }
            Method::Update => {
                // RFC 3311 §5.2: an offer while ours (in a 2xx) awaits its answer: 491.
                let our_offer_pending = self
                    .calls
                    .get(&handle)
                    .and_then(|c| c.pending_2xx.as_ref())
                    .is_some_and(|p| p.offered);
                if our_offer_pending && !matches!(sdp_body(msg), Ok(b) if b.is_empty()) {
                    return self.answer_non_invite(
                        req,
                        handle,
                        key,
                        (491, "Request Pending"),
                        |_| {},
                    );
                }
                // RFC 3311: an offer in UPDATE is answered in its 200; no body is a refresh.
                let (code, reason, body, media) = match self.answer_in_dialog(handle, msg) {
                    Ok(Some((media, body))) => (200, "OK", Some(body), Some(media)),
                    Ok(None) => (200, "OK", None, None),
                    Err(verdict) => {
                        let warning = verdict.refusal().and_then(|r| self.offer_warning(r));
                        let (code, reason) = verdict.status_or((488, NOT_ACCEPTABLE));
                        return self.answer_non_invite(req, handle, key, (code, &reason), |b| {
                            what_is_understood(b, code, warning.as_deref());
                        });
                    }
                };
                let mut b = self.response(msg, source, code, reason, None);
                self.contact(&mut b, flow);
                let bytes = b.finish(body.as_deref().map(|s| ("application/sdp", s)));
                self.complete_in_dialog(handle, key, flow, bytes, now);
                self.refresh_target(handle, req);
                if let Some(media) = media {
                    self.media_agreed(handle, media);
                }
            }
            _ => self.answer_non_invite(req, handle, key, (405, "Method Not Allowed"), |_| {}),
        }
    }

    /// §12.2.2: a request's CSeq must be above the last one; records it.
    fn accept_cseq(&mut self, handle: CallHandle, seq: u32) -> bool {
        let Some(call) = self.calls.get_mut(&handle) else {
            return false;
        };
        if seq <= call.dialog.remote_cseq {
            return false;
        }
        call.dialog.remote_cseq = seq;
        true
    }

    /// §12.2.2: a target refresh request (re-INVITE, UPDATE) that was accepted replaces the
    /// dialog's remote target with its Contact URI, if it has one. (The route set stays.)
    /// Over UDP our requests then go where the answer to it went: a caller (or its proxy)
    /// that moved to another address, failing over, is followed there.
    fn refresh_target(&mut self, handle: CallHandle, req: &Req<'_>) {
        let msg = req.msg;
        if let Some(call) = self.calls.get_mut(&handle)
            && !call.dialog.flow.is_reliable()
            && !req.flow.is_reliable()
        {
            call.dialog.flow = udp_reply_flow(req.flow, &req.core.via, req.source);
        }
        let Some(value) = msg.list(HeaderName::Contact).next() else {
            return;
        };
        let Ok(contact) = NameAddr::parse(value, HeaderName::Contact) else {
            return;
        };
        if super::uri::Uri::parse(contact.uri).is_err() {
            return;
        }
        if let Some(call) = self.calls.get_mut(&handle) {
            call.dialog.remote_target = dialog::remote_target(contact.uri);
        }
    }

    /// Answers an in-dialog offer (re-INVITE or UPDATE) with the call's media address: the
    /// media agreed and the answer. `Ok(None)` when the request has no body.
    ///
    /// An offer whose audio streams all have port 0 takes the audio away from a session
    /// that goes on (RFC 3264 §8.2): it is answered with port 0 for each, and the media is
    /// what it was, with no address to send to and direction inactive, until an offer
    /// enables audio again.
    fn answer_in_dialog(
        &mut self,
        handle: CallHandle,
        msg: &Message,
    ) -> Result<Option<(Negotiated, Vec<u8>)>, Verdict> {
        let body = sdp_body(msg)?;
        if body.is_empty() {
            return Ok(None);
        }
        let offer =
            sdp::parse(body).map_err(|_| Verdict::Respond(400, "Malformed SDP body".into()))?;
        let call = self.calls.get_mut(&handle).ok_or(Verdict::Drop)?;
        let local = call
            .local_media
            .as_mut()
            .ok_or(Verdict::Respond(488, NOT_ACCEPTABLE.into()))?;
        let mut next = local.clone();
        next.session_version += 1;
        match sdp::answer_reachable(&offer, &next, call.source.ip()) {
            Ok((media, body, layout)) => {
                *local = next;
                call.layout = layout;
                Ok(Some((media, body)))
            }
            Err(OfferAnswerError::NoAudio) => {
                let (Some(last), Ok(body)) = (&call.media, sdp::answer_disabled(&offer, &next))
                else {
                    return Err(Verdict::NotAcceptable(OfferAnswerError::NoAudio));
                };
                let media = without_audio(last);
                *local = next;
                call.layout = call.layout.of_disabled(&offer);
                Ok(Some((media, body)))
            }
            Err(refusal) => Err(Verdict::NotAcceptable(refusal)),
        }
    }

    /// Tells the application the media agreed for `handle`, and keeps it unless it is
    /// disabled (then it is the kept one, without its addresses).
    fn media_agreed(&mut self, handle: CallHandle, media: Negotiated) {
        if !media.disabled
            && let Some(call) = self.calls.get_mut(&handle)
        {
            call.media = Some(media.clone());
        }
        self.events.push_back(Event::Media {
            call: handle,
            media,
        });
    }

    fn handle_reinvite(&mut self, req: &Req<'_>, key: String) {
        let (now, msg, source, flow, core) = (req.now, req.msg, req.source, req.flow, &req.core);
        let Some(handle) = self.find_dialog(core) else {
            return self.reply(req, 481, "Call/Transaction Does Not Exist");
        };
        let tag = self.calls.get(&handle).map(|c| c.dialog.local_tag.clone());
        // An INVITE transaction outlives its answer (until the ACK, then Timers I and L):
        // past the dialog's budget a re-INVITE is refused, once and not kept, whatever it
        // asks, so that a loop of them cannot grow state (RFC 3261 §14.2's 500 with
        // Retry-After, as for an INVITE that overlaps another).
        let Some(kept) = self.keep(handle, key.len() + KEPT_PER_INVITE) else {
            let mut b = self.response(
                msg,
                source,
                500,
                "Too Many Requests In Dialog",
                tag.as_deref(),
            );
            b.header("Retry-After", RETRY_AFTER);
            let bytes = b.finish(None);
            return self.send(flow, bytes);
        };
        let mut tx = InviteServerTx::new(flow, self.cfg.timers);
        let (ended, busy) = self.calls.get(&handle).map_or((true, false), |c| {
            (
                c.ending.is_some(),
                c.pending_2xx.is_some() || c.state != CallState::Confirmed,
            )
        });
        // §12.2.2 first: an out-of-order request is refused whatever the dialog is doing, and
        // an in-order one is recorded even when refused for another reason.
        let mut warning = None;
        let (code, reason, body, media, offered) = if ended {
            // §15: once our BYE is out, the session and the dialog are over for us.
            (
                481,
                "Call/Transaction Does Not Exist".to_owned(),
                None,
                None,
                false,
            )
        } else if !self.accept_cseq(handle, core.cseq.seq) {
            (500, "CSeq Out of Order".to_owned(), None, None, false)
        } else if busy {
            // §14.2: an INVITE while ours is unanswered (or un-ACKed) is refused.
            (491, "Request Pending".to_owned(), None, None, false)
        } else if let Err(verdict) = check_invite_content(msg) {
            // What it accepts back and how its body is encoded, as for the first INVITE.
            let (code, reason) = verdict.status_or((400, "Bad Request"));
            (code, reason, None, None, false)
        } else if matches!(sdp_body(msg), Ok(b) if b.is_empty()) {
            // No offer: ours goes in the 200, the answer in the ACK.
            match self
                .calls
                .get_mut(&handle)
                .and_then(|c| Some((c.local_media.as_mut()?, &c.layout)))
            {
                Some((local, layout)) => {
                    local.session_version += 1;
                    let offer = sdp::reoffer(local, layout);
                    (200, "OK".to_owned(), Some(offer), None, true)
                }
                None => (488, NOT_ACCEPTABLE.to_owned(), None, None, false),
            }
        } else {
            match self.answer_in_dialog(handle, msg) {
                Ok(Some((media, body))) => (200, "OK".to_owned(), Some(body), Some(media), false),
                Ok(None) => (200, "OK".to_owned(), None, None, false),
                Err(verdict) => {
                    warning = verdict.refusal().and_then(|r| self.offer_warning(r));
                    let (code, reason) = verdict.status_or((488, NOT_ACCEPTABLE));
                    (code, reason, None, None, false)
                }
            }
        };
        let mut b = self.response(msg, source, code, &reason, tag.as_deref());
        if code == 200 {
            self.contact(&mut b, flow);
            b.header("Allow", ALLOW);
        }
        what_is_understood(&mut b, code, warning.as_deref());
        let bytes = b.finish(body.as_deref().map(|s| ("application/sdp", s)));
        self.send(flow, bytes.clone());
        tx.respond(code, bytes.clone(), now);
        self.invites
            .insert(key.clone(), (tx, InviteOf::ReInvite(kept)));
        self.arm(TimerRef::Invite(key.clone()));
        if code == 200 {
            self.refresh_target(handle, req);
            if let Some(call) = self.calls.get_mut(&handle) {
                call.pending_2xx = Some(Pending2xx {
                    bytes,
                    cseq: core.cseq.seq,
                    tx_key: key,
                    retransmit: RetransmitTimer::start(now, &self.cfg.timers),
                    give_up: now + self.cfg.timers.timeout(),
                    offered,
                });
            }
            self.arm(TimerRef::Call(handle));
            if let Some(media) = media {
                self.media_agreed(handle, media);
            }
        }
    }

    // ----- the application's side -----

    /// Answers a ringing call with 200 OK, receiving media at `local_media`: the SDP answer
    /// to the caller's offer, or an offer of ours when the INVITE had none.
    ///
    /// # Errors
    /// [`CallError`] when the call is gone or already answered, or when the offer cannot be
    /// answered from `local_media` (the call is then refused with 488 and ends).
    pub fn accept(
        &mut self,
        call: CallHandle,
        local_media: SocketAddr,
        now: Instant,
    ) -> Result<(), CallError> {
        let session_id = self.rng.random::<u32>().into();
        let c = self.calls.get_mut(&call).ok_or(CallError::NoSuchCall)?;
        if c.state != CallState::Ringing {
            return Err(CallError::NotRinging);
        }
        let local = LocalMedia {
            addr: local_media,
            session_id,
            session_version: 1,
        };
        let (body, media, offered) = match &c.offer {
            Some(offer) => match sdp::answer_reachable(offer, &local, c.source.ip()) {
                Ok((media, body, layout)) => {
                    c.layout = layout;
                    (body, Some(media), false)
                }
                Err(_) => {
                    // Checked when the INVITE arrived; only a changed codec set could fail.
                    self.final_to_invite(call, 488, NOT_ACCEPTABLE, now);
                    self.end_call(call, EndReason::Rejected(488));
                    return Err(CallError::NotAcceptable);
                }
            },
            None => (sdp::offer(&local), None, true),
        };
        // The flow first: the INVITE is taken only once the answer can go out.
        let flow = self.invites.get(&c.invite_key).map(|(tx, _)| tx.flow);
        let Some(flow) = flow else {
            return Err(CallError::NoSuchCall);
        };
        let Some(invite) = c.invite.take() else {
            return Err(CallError::NotRinging);
        };
        let source = c.source;
        let tag = c.dialog.local_tag.clone();
        let mut b = self.response(&invite, source, 200, "OK", Some(&tag));
        for rr in invite.values(HeaderName::RecordRoute) {
            // §12.1.1: the UAS copies Record-Route into its 2xx.
            b.header("Record-Route", rr);
        }
        self.contact(&mut b, flow);
        b.header("Allow", ALLOW);
        b.header("Supported", "");
        let bytes = b.finish(Some(("application/sdp", &body)));
        let Some(c) = self.calls.get_mut(&call) else {
            return Err(CallError::NoSuchCall);
        };
        c.local_media = Some(local);
        c.state = CallState::Answered;
        c.offer = None;
        c.max_until = Some(now + self.cfg.max_call_duration);
        let cseq = c.dialog.remote_cseq;
        c.pending_2xx = Some(Pending2xx {
            bytes: bytes.clone(),
            cseq,
            tx_key: c.invite_key.clone(),
            retransmit: RetransmitTimer::start(now, &self.cfg.timers),
            give_up: now + self.cfg.timers.timeout(),
            offered,
        });
        let key = c.invite_key.clone();
        let dkey = c.dialog.key();
        if let Some((tx, _)) = self.invites.get_mut(&key) {
            tx.respond(200, bytes.clone(), now);
        }
        self.send(flow, bytes);
        self.dialogs.insert(dkey, call);
        self.arm(TimerRef::Invite(key));
        self.arm(TimerRef::Call(call));
        if let Some(media) = media {
            self.media_agreed(call, media);
        }
        Ok(())
    }

    /// Refuses a ringing call with a final response (e.g. 480, 486, 503).
    ///
    /// # Errors
    /// [`CallError`] when the call is gone or already answered.
    pub fn reject(
        &mut self,
        call: CallHandle,
        code: u16,
        reason: &str,
        now: Instant,
    ) -> Result<(), CallError> {
        let c = self.calls.get(&call).ok_or(CallError::NoSuchCall)?;
        if c.state != CallState::Ringing || !(300..700).contains(&code) {
            return Err(CallError::NotRinging);
        }
        self.final_to_invite(call, code, reason, now);
        self.end_call(call, EndReason::Rejected(code));
        Ok(())
    }

    /// Ends a call from our side: BYE when it is up (after the ACK, if that is still
    /// awaited, §15), or 480 when it has not been answered.
    pub fn hangup(&mut self, call: CallHandle, now: Instant) {
        self.hangup_with(call, EndReason::Hangup, now);
    }

    fn hangup_with(&mut self, handle: CallHandle, reason: EndReason, now: Instant) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        match call.state {
            CallState::Ringing => {
                let (code, text) = if reason == EndReason::Shutdown {
                    (503, "Service Unavailable")
                } else {
                    (480, "Temporarily Unavailable")
                };
                self.final_to_invite(handle, code, text, now);
                self.end_call(handle, reason);
            }
            CallState::Answered if call.pending_2xx.is_some() => {
                // A BYE may not precede the ACK of the 2xx (§15).
                call.hangup_after_ack.get_or_insert(reason);
            }
            CallState::Answered | CallState::Confirmed => {
                call.state = CallState::Terminating;
                self.ending += 1;
                call.ending = Some(reason);
                call.pending_2xx = None;
                call.max_until = None;
                // §15.1.1: the session is over once the BYE is sent, so media stops now, not
                // when (or whether) the caller answers it.
                self.events.push_back(Event::Ended {
                    call: handle,
                    reason,
                });
                let branch = format!("z9hG4bK{}", self.random_token());
                let sent_by = self.cfg.local_addr.to_string();
                let Some(call) = self.calls.get_mut(&handle) else {
                    return;
                };
                let mut b = call.dialog.request(&Method::Bye, &sent_by, &branch);
                b.header("User-Agent", &self.cfg.server_name);
                let bytes = b.finish(None);
                let flow = call.dialog.flow;
                self.send(flow, bytes.clone());
                self.clients.insert(
                    branch.clone(),
                    (
                        NonInviteClientTx::start(flow, bytes, now, self.cfg.timers),
                        handle,
                    ),
                );
                self.arm(TimerRef::Client(branch));
            }
            CallState::Terminating => {}
        }
    }

    /// Stops taking calls (new INVITEs get 503) and hangs up every call. Keep driving the
    /// endpoint until [`Endpoint::is_idle`] (or a deadline) before exiting.
    pub fn shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        let mut handles: Vec<CallHandle> = self.calls.keys().copied().collect();
        handles.sort();
        for handle in handles {
            self.hangup_with(handle, EndReason::Shutdown, now);
        }
    }

    // ----- responses and timers -----

    fn handle_response(&mut self, now: Instant, msg: &Message) {
        let Some(code) = msg.status() else { return };
        // §8.1.3.3: more than one Via means the response was misrouted.
        let mut vias = msg.list(HeaderName::Via);
        let (Some(top), None) = (vias.next(), vias.next()) else {
            self.stats.dropped += 1;
            return;
        };
        let Some(branch) = Via::parse(top)
            .ok()
            .and_then(|v| v.branch().map(str::to_owned))
        else {
            self.stats.dropped += 1;
            return;
        };
        let Some((tx, handle)) = self.clients.get_mut(&branch) else {
            // Nothing of ours: a stray or forged response is dropped.
            self.stats.dropped += 1;
            return;
        };
        let handle = *handle;
        let done = tx.on_response(code, now);
        self.arm(TimerRef::Client(branch));
        if done {
            self.end_call_as_recorded(handle, EndReason::Hangup);
        }
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, target))) = self.timers.pop() else {
                break;
            };
            self.queued.remove(&(at, target.clone()));
            match target {
                TimerRef::Invite(key) => self.invite_timer(key, at, now),
                TimerRef::NonInvite(key) => {
                    let due = self
                        .non_invites
                        .get(&key)
                        .and_then(|(tx, _)| tx.next_deadline());
                    if due == Some(at)
                        && let Some((tx, _)) = self.non_invites.get_mut(&key)
                        && tx.on_timeout(now) == TxAction::Terminated
                        && let Some((_, kept)) = self.non_invites.remove(&key)
                    {
                        self.release(kept);
                    }
                }
                TimerRef::Client(branch) => self.client_timer(branch, at, now),
                TimerRef::Call(handle) => self.call_timer(handle, at, now),
            }
        }
        // Transactions may have ended just now, arming nothing.
        self.prune_timers();
    }

    fn invite_timer(&mut self, key: String, at: Instant, now: Instant) {
        let Some((tx, _)) = self.invites.get_mut(&key) else {
            return;
        };
        if tx.next_deadline() != Some(at) {
            return;
        }
        match tx.on_timeout(now) {
            TxAction::Retransmit(bytes) => {
                let flow = tx.flow;
                self.send(flow, bytes);
                self.arm(TimerRef::Invite(key));
            }
            TxAction::Terminated | TxAction::TimedOut => {
                if let Some((_, InviteOf::ReInvite(kept))) = self.invites.remove(&key) {
                    self.release(Some(kept));
                }
                if let Some(id) = self.invite_id_of.remove(&key) {
                    self.invite_ids.remove(&id);
                }
            }
            TxAction::None => self.arm(TimerRef::Invite(key)),
        }
    }

    fn client_timer(&mut self, branch: String, at: Instant, now: Instant) {
        let Some((tx, handle)) = self.clients.get_mut(&branch) else {
            return;
        };
        if tx.next_deadline() != Some(at) {
            return;
        }
        let handle = *handle;
        match tx.on_timeout(now) {
            TxAction::Retransmit(bytes) => {
                let flow = tx.flow;
                self.send(flow, bytes);
                self.arm(TimerRef::Client(branch));
            }
            TxAction::TimedOut => {
                // Timer F: the BYE was never answered; the call is over regardless.
                self.clients.remove(&branch);
                self.end_call_as_recorded(handle, EndReason::Hangup);
            }
            TxAction::Terminated => {
                self.clients.remove(&branch);
            }
            TxAction::None => self.arm(TimerRef::Client(branch)),
        }
    }

    fn call_timer(&mut self, handle: CallHandle, at: Instant, now: Instant) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        if call.next_deadline() != Some(at) {
            return;
        }
        if let Some(p) = &mut call.pending_2xx {
            if now >= p.give_up {
                // §13.3.1.4: no ACK within 64·T1: the session is over. A call whose
                // answer was never ACKed ended for that, whatever ended it meanwhile (its
                // time limit, waiting for the ACK), unless the server stopped: then it
                // ended as every other call did.
                call.pending_2xx = None;
                let never_acked = call.state == CallState::Answered;
                if never_acked {
                    call.state = CallState::Confirmed;
                }
                let reason = match call.hangup_after_ack.take() {
                    Some(reason) if !never_acked || reason == EndReason::Shutdown => reason,
                    _ => EndReason::NoAck,
                };
                self.hangup_with(handle, reason, now);
                self.arm(TimerRef::Call(handle));
                return;
            }
            if p.retransmit.fire(now, &self.cfg.timers) {
                let (flow, bytes) = (call.dialog.flow, p.bytes.clone());
                // The 2xx goes where responses go: the flow of the INVITE (or re-INVITE)
                // transaction it answers.
                let flow = self.invites.get(&p.tx_key).map_or(flow, |(tx, _)| tx.flow);
                self.send(flow, bytes);
            }
        }
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        if call.max_until.is_some_and(|t| now >= t) {
            call.max_until = None;
            self.hangup_with(handle, EndReason::MaxDuration, now);
        }
        self.arm(TimerRef::Call(handle));
    }

    /// `target`'s next deadline: `None` once it is gone or waits for nothing.
    fn deadline(&self, target: &TimerRef) -> Option<Instant> {
        match target {
            TimerRef::Invite(k) => self.invites.get(k).and_then(|(tx, _)| tx.next_deadline()),
            TimerRef::NonInvite(k) => self
                .non_invites
                .get(k)
                .and_then(|(tx, _)| tx.next_deadline()),
            TimerRef::Client(b) => self.clients.get(b).and_then(|(tx, _)| tx.next_deadline()),
            TimerRef::Call(h) => self.calls.get(h).and_then(Call::next_deadline),
        }
    }

    /// Queues `target`'s next deadline.
    fn arm(&mut self, target: TimerRef) {
        if let Some(at) = self.deadline(&target)
            && self.queued.insert((at, target.clone()))
        {
            self.timers.push(Reverse((at, target)));
        }
        self.prune_timers();
    }

    /// Drops queued deadlines that no longer match their target's (it is gone, or its
    /// deadline moved), once they outnumber the live ones. A deadline is only ever popped
    /// when due, and an answered call's is its maximum duration (an hour by default): without
    /// this, every call ended by a BYE would leave an entry behind for that long. Their
    /// handlers ignore such entries, so dropping them changes nothing else; rebuilding only
    /// past twice the live state keeps the cost per arming constant.
    fn prune_timers(&mut self) {
        let live =
            self.invites.len() + self.non_invites.len() + self.clients.len() + self.calls.len();
        if self.timers.len() <= 2 * live + 64 {
            return;
        }
        let mut timers = std::mem::take(&mut self.timers);
        timers.retain(|Reverse((at, target))| self.deadline(target) == Some(*at));
        self.timers = timers;
        let mut queued = std::mem::take(&mut self.queued);
        queued.retain(|(at, target)| self.deadline(target) == Some(*at));
        self.queued = queued;
    }

    // ----- helpers -----

    /// Sends a final response to a ringing call's INVITE through its transaction.
    fn final_to_invite(&mut self, handle: CallHandle, code: u16, reason: &str, now: Instant) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        let Some(invite) = call.invite.take() else {
            return;
        };
        let (source, tag, key) = (
            call.source,
            call.dialog.local_tag.clone(),
            call.invite_key.clone(),
        );
        let bytes = self
            .response(&invite, source, code, reason, Some(&tag))
            .finish(None);
        if let Some((tx, _)) = self.invites.get_mut(&key) {
            tx.respond(code, bytes.clone(), now);
            let flow = tx.flow;
            self.send(flow, bytes);
        }
        self.arm(TimerRef::Invite(key));
    }

    /// Ends a call with the reason recorded when our BYE went out, else `otherwise`.
    fn end_call_as_recorded(&mut self, handle: CallHandle, otherwise: EndReason) {
        let reason = self
            .calls
            .get(&handle)
            .and_then(|c| c.ending)
            .unwrap_or(otherwise);
        self.end_call(handle, reason);
    }

    /// A call from `source` is no longer pending: confirmed by its ACK, or over.
    fn confirmed(&mut self, source: SocketAddr) {
        let key = client_key(source.ip());
        if let Some(n) = self.pending_from.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.pending_from.remove(&key);
            }
        }
    }

    /// Forgets a call and tells the application, unless it was told when our BYE went out.
    fn end_call(&mut self, handle: CallHandle, reason: EndReason) {
        if let Some(call) = self.calls.remove(&handle) {
            if !call.established {
                self.confirmed(call.source);
            }
            self.dialogs.remove(&call.dialog.key());
            if call.state == CallState::Terminating {
                self.ending -= 1;
            } else {
                self.events.push_back(Event::Ended {
                    call: handle,
                    reason,
                });
            }
        }
    }

    fn response(
        &self,
        req: &Message,
        source: SocketAddr,
        code: u16,
        reason: &str,
        to_tag: Option<&str>,
    ) -> MessageBuilder {
        let mut b = response_to(req, source, code, reason, to_tag);
        b.header("Server", &self.cfg.server_name);
        match code {
            // §8.2.6.1: a request's Timestamp MUST be copied into the 100 (Trying), which is
            // sent at once, so with no delay to add.
            100 => {
                for (_, name, value) in req.fields() {
                    if let (true, Some(value)) = (name.eq_ignore_ascii_case("Timestamp"), value) {
                        b.header("Timestamp", value);
                    }
                }
            }
            // §21.4.6 (405 MUST name what is allowed; 501 helps the caller too).
            405 | 501 => {
                b.header("Allow", ALLOW);
            }
            // §21.5.4: out of capacity (calls, RTP ports, shutting down): when to try again.
            503 => {
                b.header("Retry-After", RETRY_AFTER);
            }
            _ => {}
        }
        b
    }

    fn contact(&self, b: &mut MessageBuilder, flow: Flow) {
        let transport = if flow.is_reliable() {
            ";transport=tcp"
        } else {
            ""
        };
        let host = Host::Ip(self.cfg.local_addr.ip());
        b.header_fmt(
            "Contact",
            format_args!(
                "<sip:vportal@{host}:{}{transport}>",
                self.cfg.local_addr.port()
            ),
        );
    }

    /// A stateless answer with nothing but the status line's reason.
    /// The `Warning` value of a 488 refusing an offer for `refusal` (RFC 3261 §20.43: it
    /// SHOULD say why), our address the warn-agent: `305 192.0.2.10:5060 "no common codec:
    /// …"`, so that a trunk's operator tells G.729 from SRTP from IPv6 in a trace.
    fn offer_warning(&self, refusal: &OfferAnswerError) -> Option<String> {
        refusal
            .warn_code()
            .map(|code| format!("{code} {} \"{refusal}\"", self.cfg.local_addr))
    }

    fn reply(&mut self, req: &Req<'_>, code: u16, reason: &str) {
        self.respond_stateless(req.msg, req.source, req.flow, code, reason, |_| {});
    }

    /// §11.2: an OPTIONS outside a dialog gets what an INVITE would, so that a proxy's or
    /// load balancer's OPTIONS pings take a stopping or full server out of rotation: 503
    /// with Retry-After then (the per-source bound on unanswered calls aside: it is about
    /// the pinging host's calls, not the server's state), else 200 with what is supported.
    fn respond_options(&mut self, msg: &Message, source: SocketAddr, flow: Flow) {
        let (code, reason) = if self.refusing_calls() {
            (503, "Service Unavailable")
        } else {
            (200, "OK")
        };
        let languages = self.cfg.languages.clone();
        self.respond_stateless(msg, source, flow, code, reason, |b| {
            capabilities(b, &languages);
        });
    }

    /// Answers without keeping state (§8.2.7). The To tag is derived from the request so a
    /// retransmission gets an identical response.
    fn respond_stateless(
        &mut self,
        msg: &Message,
        source: SocketAddr,
        flow: Flow,
        code: u16,
        reason: &str,
        extra: impl FnOnce(&mut MessageBuilder),
    ) {
        let tag = self.stateless_tag(msg);
        let mut b = self.response(msg, source, code, reason, Some(&tag));
        extra(&mut b);
        let bytes = b.finish(None);
        self.send(flow, bytes);
    }

    fn stateless_tag(&self, msg: &Message) -> String {
        let mut h = std::hash::DefaultHasher::new();
        self.tag_key.hash(&mut h);
        for name in [
            HeaderName::CallId,
            HeaderName::From,
            HeaderName::CSeq,
            HeaderName::Via,
        ] {
            msg.values(name).next().hash(&mut h);
        }
        format!("{:016x}", h.finish())
    }

    fn send(&mut self, flow: Flow, payload: Vec<u8>) {
        self.transmits.push_back(Transmit {
            transport: flow.transport,
            destination: flow.remote,
            payload,
        });
    }

    fn random_token(&mut self) -> String {
        format!("{:016x}", self.rng.random::<u64>())
    }
}

/// The flow our in-dialog requests take after a request that came on `flow` from `source`:
/// over UDP where a response to it goes (the source IP, at the source port with `rport`,
/// else at the Via's port); a TCP connection stays as it is.
fn udp_reply_flow(flow: Flow, via: &Via<'_>, source: SocketAddr) -> Flow {
    if flow.is_reliable() {
        flow
    } else {
        Flow::new(
            flow.transport,
            response_destination(via, source, flow.transport),
        )
    }
}

/// Allow, Accept, Accept-Encoding, Accept-Language and Supported: what OPTIONS asks about
/// (RFC 3261 §11.2).
fn capabilities(b: &mut MessageBuilder, languages: &str) {
    b.header("Allow", ALLOW);
    b.header("Accept", ACCEPT);
    b.header("Accept-Encoding", "identity");
    if !languages.is_empty() {
        b.header("Accept-Language", languages);
    }
    b.header("Supported", "");
}

/// The bodies and encodings understood, in a 415 or 488 to a request that may carry SDP
/// (RFC 3261 §8.2.3, §21.4.13: a 415 must list them), and in a 488 the `Warning` saying why
/// the offer was refused.
fn what_is_understood(b: &mut MessageBuilder, code: u16, warning: Option<&str>) {
    if matches!(code, 415 | 488) {
        b.header("Accept", "application/sdp, multipart/mixed");
        b.header("Accept-Encoding", "identity");
    }
    if let (488, Some(warning)) = (code, warning) {
        b.header("Warning", warning);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const CALLER: &str = "127.0.0.1:5062";

    fn request(method: &str, branch: &str, cseq: u32, to_tag: Option<&str>, sdp: &str) -> Vec<u8> {
        request_in("heap-test", method, branch, cseq, to_tag, sdp)
    }

    fn request_in(
        call_id: &str,
        method: &str,
        branch: &str,
        cseq: u32,
        to_tag: Option<&str>,
        sdp: &str,
    ) -> Vec<u8> {
        let to = match to_tag {
            Some(t) => format!("<sip:8500@127.0.0.1>;tag={t}"),
            None => "<sip:8500@127.0.0.1>".to_owned(),
        };
        let body_headers = if sdp.is_empty() {
            String::new()
        } else {
            "Content-Type: application/sdp\r\n".to_owned()
        };
        format!(
            "{method} sip:8500@127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP {CALLER};branch=z9hG4bK{branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:1001@127.0.0.1>;tag=ft\r\n\
             To: {to}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:1001@{CALLER}>\r\n\
             {body_headers}Content-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        )
        .into_bytes()
    }

    const OFFER: &str = "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
                         t=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

    fn endpoint() -> Endpoint {
        let mut cfg = EndpointConfig::new("127.0.0.1:5060".parse().unwrap());
        cfg.rng_seed = Some(1);
        Endpoint::new(cfg, Box::new(|_: &str| Some(0)))
    }

    /// Call `call_id` from [`CALLER`], answered and ACKed at `now` (branches `i{n}` and
    /// `a{n}`); returns our To tag.
    fn answered_call(ep: &mut Endpoint, now: Instant, call_id: &str, n: usize) -> String {
        let caller: SocketAddr = CALLER.parse().unwrap();
        let invite = request_in(call_id, "INVITE", &format!("i{n}"), 1, None, OFFER);
        ep.handle_datagram(now, caller, invite);
        let Some(Event::IncomingCall(incoming)) = ep.poll_event() else {
            panic!("a call")
        };
        ep.accept(incoming.call, "127.0.0.1:10000".parse().unwrap(), now)
            .unwrap();
        let tag = ep.calls[&incoming.call].dialog.local_tag.clone();
        let ack = request_in(call_id, "ACK", &format!("a{n}"), 1, Some(&tag), "");
        ep.handle_datagram(now, caller, ack);
        tag
    }

    /// Without `rport` an answer goes to the Via's port at the source IP, and a link-local
    /// source keeps its scope there: the interface it came in on, where it must go out.
    #[test]
    fn an_answer_keeps_a_link_local_callers_scope() {
        let mut ep = endpoint();
        let source: SocketAddr = "[fe80::1%3]:5070".parse().unwrap();
        let options = "OPTIONS sip:8500@127.0.0.1 SIP/2.0\r\n\
                       Via: SIP/2.0/UDP [fe80::1]:5080;branch=z9hG4bKscope\r\n\
                       Max-Forwards: 70\r\n\
                       From: <sip:1001@127.0.0.1>;tag=ft\r\n\
                       To: <sip:8500@127.0.0.1>\r\n\
                       Call-ID: scope\r\n\
                       CSeq: 1 OPTIONS\r\n\
                       Content-Length: 0\r\n\r\n";
        ep.handle_datagram(Instant::now(), source, options.as_bytes().to_vec());
        let answer = ep.poll_transmit().expect("an answer");
        let SocketAddr::V6(to) = answer.destination else {
            panic!("{:?}", answer.destination)
        };
        assert_eq!((to.port(), to.scope_id()), (5080, 3));
    }

    /// Time passes to `now`: the timers due fire, and what they send or report is dropped.
    fn run_until(ep: &mut Endpoint, now: Instant) {
        ep.handle_timeout(now);
        while ep.poll_transmit().is_some() {}
        while ep.poll_event().is_some() {}
    }

    /// An endpoint routing on the default dialplan.
    fn default_plan_endpoint() -> Endpoint {
        let plan = crate::ivr::dialplan::Dialplan::parse(
            crate::ivr::dialplan::DEFAULT_DIALPLAN,
            "default.toml",
        )
        .unwrap();
        let mut cfg = EndpointConfig::new("127.0.0.1:5060".parse().unwrap());
        cfg.rng_seed = Some(1);
        Endpoint::new(cfg, dialplan_router(std::sync::Arc::new(plan)))
    }

    /// Whether an INVITE to `uri` (its `n`th) is routed to a call; if not, asserts its
    /// answer is 404.
    fn routes_to_a_call(ep: &mut Endpoint, n: usize, uri: &str) -> bool {
        let invite = String::from_utf8(request_in(
            &format!("routed-{n}"),
            "INVITE",
            &format!("r{n}"),
            1,
            None,
            OFFER,
        ))
        .unwrap()
        .replacen("INVITE sip:8500@127.0.0.1 ", &format!("INVITE {uri} "), 1);
        ep.handle_datagram(Instant::now(), CALLER.parse().unwrap(), invite.into_bytes());
        let call =
            std::iter::from_fn(|| ep.poll_event()).any(|e| matches!(e, Event::IncomingCall(_)));
        let statuses: Vec<u16> = std::iter::from_fn(|| ep.poll_transmit())
            .filter_map(|t| Message::parse_datagram(t.payload).ok()?.status())
            .collect();
        if !call {
            assert_eq!(statuses, [404], "{uri}");
        }
        call
    }

    /// The Request-URI's user is decoded once (RFC 3261 §19.1.4): `%2A86` is `*86`, routed,
    /// while `%2538500` is the user `%38500`, which no route of the default dialplan takes.
    #[test]
    fn the_request_user_is_unescaped_once_for_routing() {
        let mut ep = default_plan_endpoint();
        for (n, (user, routed)) in [("%2A86", true), ("%2538500", false), ("%38500", true)]
            .into_iter()
            .enumerate()
        {
            let uri = format!("sip:{user}@127.0.0.1");
            assert_eq!(routes_to_a_call(&mut ep, n, &uri), routed, "{uri}");
        }
    }

    /// A number is routed without its telephone-subscriber parameters (an IMS core's
    /// `sip:8500;phone-context=…@host;user=phone`) or, as a telephone number, its visual
    /// separators; the same number as a `tel:` URI is routed alike.
    #[test]
    fn a_number_is_routed_without_its_parameters_and_separators() {
        let mut ep = default_plan_endpoint();
        for (n, (uri, routed)) in [
            (
                "sip:8500;phone-context=ims.example@127.0.0.1;user=phone",
                true,
            ),
            ("sip:8500;isub=1@127.0.0.1;user=phone", true),
            ("sip:*86;phone-context=ims.example@127.0.0.1", true),
            ("sip:85-00@127.0.0.1;user=phone", true),
            ("tel:85-00;phone-context=example.com", true),
            ("sip:85-00@127.0.0.1", false),
            (
                "sip:8599;phone-context=ims.example@127.0.0.1;user=phone",
                false,
            ),
        ]
        .into_iter()
        .enumerate()
        {
            assert_eq!(routes_to_a_call(&mut ep, n, uri), routed, "{uri}");
        }
    }

    /// A datagram that is no SIP counts as dropped; a keepalive's blank lines do not: some
    /// phones send them over UDP every few seconds.
    #[test]
    fn a_keepalive_datagram_is_not_counted_as_dropped() {
        let mut ep = default_plan_endpoint();
        let caller: SocketAddr = CALLER.parse().unwrap();
        for keepalive in [&b"\r\n\r\n"[..], b"\r\n", b"", b" \r\n"] {
            ep.handle_datagram(Instant::now(), caller, keepalive.to_vec());
        }
        assert_eq!(ep.stats().dropped, 0);
        assert!(ep.poll_transmit().is_none());
        ep.handle_datagram(Instant::now(), caller, b"hello".to_vec());
        assert_eq!(ep.stats().dropped, 1);
        assert!(ep.poll_transmit().is_none());
    }

    /// Tags derived from a request (stateless answers) repeat for the same request and, as
    /// every other tag, under the same seed; another seed gives others.
    #[test]
    fn stateless_tags_follow_the_seed() {
        let to_tag = |seed: u64| {
            let mut cfg = EndpointConfig::new("127.0.0.1:5060".parse().unwrap());
            cfg.rng_seed = Some(seed);
            let mut ep = Endpoint::new(cfg, Box::new(|_: &str| None));
            let tags: Vec<String> = (0..2)
                .map(|_| {
                    let invite = request_in("seeded", "INVITE", "i1", 1, None, OFFER);
                    ep.handle_datagram(Instant::now(), CALLER.parse().unwrap(), invite);
                    let answer = ep.poll_transmit().expect("a 404");
                    let answer = Message::parse_datagram(answer.payload).unwrap();
                    assert_eq!(answer.status(), Some(404));
                    let to = answer.values(HeaderName::To).next().unwrap().to_owned();
                    to.split_once(";tag=").expect("a To tag").1.to_owned()
                })
                .collect();
            assert_eq!(tags[0], tags[1], "a retransmission gets the same tag");
            tags[0].clone()
        };
        assert_eq!(to_tag(1), to_tag(1));
        assert_ne!(to_tag(1), to_tag(2));
    }

    /// An offer that cannot be answered from the media address the application gives (here
    /// of the other IP version) is refused with 488, and `accept` says so: the call is over.
    #[test]
    fn an_accept_that_cannot_answer_the_offer_refuses_the_call() {
        let mut ep = endpoint();
        let now = Instant::now();
        let invite = request_in("unanswerable", "INVITE", "i1", 1, None, OFFER);
        ep.handle_datagram(now, CALLER.parse().unwrap(), invite);
        let Some(Event::IncomingCall(incoming)) = ep.poll_event() else {
            panic!("a call")
        };
        while ep.poll_transmit().is_some() {}
        assert_eq!(
            ep.accept(incoming.call, "[::1]:10000".parse().unwrap(), now),
            Err(CallError::NotAcceptable)
        );
        let answer = ep.poll_transmit().expect("a final answer");
        let answer = Message::parse_datagram(answer.payload).unwrap();
        assert_eq!(answer.status(), Some(488));
        assert!(matches!(
            ep.poll_event(),
            Some(Event::Ended {
                reason: EndReason::Rejected(488),
                ..
            })
        ));
        assert_eq!(ep.active_calls(), 0);
        assert_eq!(
            ep.accept(incoming.call, "127.0.0.1:10000".parse().unwrap(), now),
            Err(CallError::NoSuchCall)
        );
    }

    /// Queued timer entries stay bounded by the state they serve: a caller cycling
    /// re-INVITE and ACK in one call must not leave an entry behind per cycle.
    #[test]
    fn timer_entries_do_not_pile_up_per_reinvite() {
        let mut ep = endpoint();
        let caller: SocketAddr = CALLER.parse().unwrap();
        let mut now = Instant::now();
        let tag = answered_call(&mut ep, now, "heap-test", 1);
        for n in 2..2_000 {
            ep.handle_datagram(
                now,
                caller,
                request("INVITE", &format!("i{n}"), n, Some(&tag), OFFER),
            );
            ep.handle_datagram(
                now,
                caller,
                request("ACK", &format!("a{n}"), n, Some(&tag), ""),
            );
            now += Duration::from_millis(1);
            run_until(&mut ep, now);
        }
        // Let every transaction end (Timer L); the call stays up.
        now += Duration::from_secs(40);
        ep.handle_timeout(now);
        assert_eq!(ep.active_calls(), 1);
        assert!(ep.invites.is_empty());
        assert!(
            ep.timers.len() < 10,
            "{} timer entries queued for one call",
            ep.timers.len()
        );
    }

    /// In-dialog requests at any rate, each with a branch of its own, keep no more than the
    /// dialog's budget: every one is answered, and what is kept is freed as transactions end.
    #[test]
    fn a_dialog_keeps_a_bounded_amount_of_transaction_state() {
        let mut ep = endpoint();
        let caller: SocketAddr = CALLER.parse().unwrap();
        let mut now = Instant::now();
        let tag = answered_call(&mut ep, now, "budget", 1);
        let handle = *ep.dialogs.values().next().unwrap();
        while ep.poll_transmit().is_some() {}
        // INFO padded to 8 KB (a long Via is copied into the kept 200).
        let pad = format!(
            "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKpad{}\r\n",
            "p".repeat(8_000)
        );
        let (mut sent, mut answered) = (0, 0);
        for n in 2..500 {
            let info = request_in("budget", "INFO", &format!("n{n}"), n, Some(&tag), "");
            let info = String::from_utf8(info).unwrap().replacen(
                "Max-Forwards",
                &format!("{pad}Max-Forwards"),
                1,
            );
            ep.handle_datagram(now, caller, info.into_bytes());
            sent += 1;
            while let Some(t) = ep.poll_transmit() {
                answered += usize::from(t.payload.starts_with(b"SIP/2.0 200 "));
            }
            assert!(ep.calls[&handle].kept <= MAX_KEPT_PER_DIALOG);
        }
        assert_eq!(answered, sent, "every INFO answered");
        assert!(
            ep.non_invites.len() <= MAX_KEPT_PER_DIALOG / 8_000,
            "{}",
            ep.non_invites.len()
        );
        assert!(ep.stats.unkept > 400, "{}", ep.stats.unkept);
        // Re-INVITEs with a stale CSeq (500), never ACKed: at most 7 retransmitting.
        for n in 0..100 {
            ep.handle_datagram(
                now,
                caller,
                request_in("budget", "INVITE", &format!("r{n}"), 1, Some(&tag), OFFER),
            );
        }
        let refused = std::iter::from_fn(|| ep.poll_transmit())
            .filter(|t| t.payload.starts_with(b"SIP/2.0 500 "))
            .count();
        assert_eq!(refused, 100, "each answered once");
        assert!(ep.invites.len() <= 1 + 7, "{}", ep.invites.len());
        // 32 s on, every transaction has ended and the budget is whole again.
        now += Duration::from_secs(40);
        run_until(&mut ep, now);
        assert_eq!(ep.calls[&handle].kept, 0);
        assert!(ep.invites.is_empty() && ep.non_invites.is_empty());
        let info = request_in("budget", "INFO", "after", 600, Some(&tag), "");
        ep.handle_datagram(now, caller, info);
        assert_eq!(ep.non_invites.len(), 1, "kept again");
    }

    /// INVITEs from one source whose 200s are never ACKed (a forged source address, say)
    /// hold at most `max_pending_per_source` calls; then 503, while another source is
    /// served, and an ACK frees a place.
    #[test]
    fn unconfirmed_calls_from_one_source_are_bounded() {
        let mut ep = endpoint();
        ep.cfg.max_pending_per_source = 3;
        let now = Instant::now();
        let caller: SocketAddr = CALLER.parse().unwrap();
        let status = |ep: &mut Endpoint| {
            let mut last = None;
            while let Some(t) = ep.poll_transmit() {
                last = Some(String::from_utf8_lossy(&t.payload[..12]).into_owned());
            }
            last
        };
        let mut tags = Vec::new();
        for n in 0..4 {
            let id = format!("pending-{n}");
            ep.handle_datagram(
                now,
                caller,
                request_in(&id, "INVITE", &format!("p{n}"), 1, None, OFFER),
            );
            let incoming = std::iter::from_fn(|| ep.poll_event())
                .find(|e| matches!(e, Event::IncomingCall(_)));
            match incoming {
                Some(Event::IncomingCall(incoming)) => {
                    assert!(n < 3, "a fourth pending call from one source was taken");
                    ep.accept(incoming.call, "127.0.0.1:10000".parse().unwrap(), now)
                        .unwrap();
                    tags.push((id, ep.calls[&incoming.call].dialog.local_tag.clone()));
                    assert_eq!(status(&mut ep).as_deref(), Some("SIP/2.0 200 "));
                }
                _ => {
                    assert_eq!(n, 3, "the first three are taken: {:?}", status(&mut ep));
                    assert_eq!(status(&mut ep).as_deref(), Some("SIP/2.0 503 "));
                }
            }
        }
        let rings = |ep: &mut Endpoint, from: SocketAddr, id: &str| {
            ep.handle_datagram(now, from, request_in(id, "INVITE", id, 1, None, OFFER));
            std::iter::from_fn(|| ep.poll_event()).any(|e| matches!(e, Event::IncomingCall(_)))
        };
        // Another host (another loopback address: sources are counted by address) is served
        // meanwhile.
        assert!(rings(&mut ep, "127.0.0.2:5060".parse().unwrap(), "other"));
        // One ACK: a place again for the first host.
        let (id, tag) = &tags[0];
        ep.handle_datagram(now, caller, request_in(id, "ACK", "pa0", 1, Some(tag), ""));
        while ep.poll_event().is_some() {}
        assert!(rings(&mut ep, caller, "pending-4"));
    }

    /// re-INVITEs answered 200 and ACKed, in a loop, are bounded too: their transactions
    /// outlive the ACK (Timer L), each counting its key and itself, and past the budget a
    /// re-INVITE gets 500, not kept. A phone's holds and resumes are far below it.
    #[test]
    fn a_loop_of_accepted_reinvites_is_bounded_too() {
        let mut ep = endpoint();
        let caller: SocketAddr = CALLER.parse().unwrap();
        let now = Instant::now();
        let tag = answered_call(&mut ep, now, "loop", 1);
        let handle = *ep.dialogs.values().next().unwrap();
        while ep.poll_transmit().is_some() {}
        let (mut ok, mut refused) = (0, 0);
        let most = MAX_KEPT_PER_DIALOG / size_of::<InviteServerTx>();
        for n in 2..5_000 {
            let invite = request_in("loop", "INVITE", &format!("r{n}"), n, Some(&tag), OFFER);
            ep.handle_datagram(now, caller, invite);
            let ack = request_in("loop", "ACK", &format!("ra{n}"), n, Some(&tag), "");
            ep.handle_datagram(now, caller, ack);
            while let Some(t) = ep.poll_transmit() {
                ok += usize::from(t.payload.starts_with(b"SIP/2.0 200 "));
                refused += usize::from(t.payload.starts_with(b"SIP/2.0 500 Too Many"));
            }
            assert!(ep.calls[&handle].kept <= MAX_KEPT_PER_DIALOG);
            assert!(ep.invites.len() <= 1 + most, "{}", ep.invites.len());
        }
        assert_eq!(ok + refused, 4_998, "each answered");
        assert!(ok >= 100, "{ok} accepted");
        assert!(refused > 0, "none refused");
    }

    /// RFC 3264 §8.2: a re-INVITE or UPDATE whose offer disables the audio stream (port 0)
    /// is answered 200 with port 0 in its place, and the media goes on without an address
    /// (inactive, the codec kept) rather than the offer being refused with 488; a later
    /// offer with a port, or an offer of ours, enables the audio again at our port. A first
    /// INVITE disabling its only stream still gets 488: there is no session to keep.
    #[test]
    fn an_offer_disabling_the_audio_in_a_call_is_answered_with_port_zero() {
        let mut ep = endpoint();
        let caller: SocketAddr = CALLER.parse().unwrap();
        let now = Instant::now();
        let disabled = OFFER.replace("m=audio 4000", "m=audio 0");
        let answer_to = |ep: &mut Endpoint, request: Vec<u8>| {
            ep.handle_datagram(now, caller, request);
            let sent: Vec<Message> = std::iter::from_fn(|| ep.poll_transmit())
                .map(|t| Message::parse_datagram(t.payload).unwrap())
                .collect();
            let answer = sent.last().expect("an answer").clone();
            let body = String::from_utf8(answer.body().to_vec()).unwrap();
            let media: Vec<Negotiated> = std::iter::from_fn(|| ep.poll_event())
                .filter_map(|e| match e {
                    Event::Media { media, .. } => Some(media),
                    _ => None,
                })
                .collect();
            (answer.status(), body, media)
        };
        let m_lines = |body: &str| -> Vec<String> {
            body.lines()
                .filter(|l| l.starts_with("m="))
                .map(str::to_owned)
                .collect()
        };
        let version = |body: &str| {
            body.lines()
                .find_map(|l| l.strip_prefix("o=vportal "))
                .and_then(|o| o.split(' ').nth(1))
                .map(str::to_owned)
        };

        let first = request_in("port0-first", "INVITE", "f1", 1, None, &disabled);
        let (status, _, _) = answer_to(&mut ep, first);
        assert_eq!(status, Some(488), "a first INVITE without usable audio");

        let tag = answered_call(&mut ep, now, "port0", 1);
        while ep.poll_transmit().is_some() {}
        let agreed = std::iter::from_fn(|| ep.poll_event())
            .find_map(|e| match e {
                Event::Media { media, .. } => Some(media),
                _ => None,
            })
            .expect("media agreed");

        let reinvite = request_in("port0", "INVITE", "r2", 2, Some(&tag), &disabled);
        let (status, body, media) = answer_to(&mut ep, reinvite);
        assert_eq!(status, Some(200), "not 488: {body}");
        assert_eq!(m_lines(&body), ["m=audio 0 RTP/AVP 0"], "{body}");
        assert_eq!(
            version(&body).as_deref(),
            Some("2"),
            "a changed SDP: {body}"
        );
        let off = Negotiated {
            remote_rtp: None,
            remote_rtcp: None,
            direction: Direction::Inactive,
            disabled: true,
            ..agreed.clone()
        };
        assert_eq!(media, std::slice::from_ref(&off));
        ep.handle_datagram(
            now,
            caller,
            request_in("port0", "ACK", "a2", 2, Some(&tag), ""),
        );

        // An UPDATE disabling it again: the same answer, one version on.
        let update = request_in("port0", "UPDATE", "u3", 3, Some(&tag), &disabled);
        let (status, body, media) = answer_to(&mut ep, update);
        assert_eq!(status, Some(200), "{body}");
        assert_eq!(m_lines(&body), ["m=audio 0 RTP/AVP 0"], "{body}");
        assert_eq!(version(&body).as_deref(), Some("3"), "{body}");
        assert_eq!(media, [off]);

        // Enabled again, at another port: our port again, media to the new address.
        let moved = OFFER.replace("m=audio 4000", "m=audio 4002");
        let reinvite = request_in("port0", "INVITE", "r4", 4, Some(&tag), &moved);
        let (status, body, media) = answer_to(&mut ep, reinvite);
        assert_eq!(status, Some(200), "{body}");
        assert_eq!(m_lines(&body), ["m=audio 10000 RTP/AVP 0"], "{body}");
        assert_eq!(version(&body).as_deref(), Some("4"), "{body}");
        let back = Negotiated {
            remote_rtp: Some("127.0.0.1:4002".parse().unwrap()),
            remote_rtcp: Some("127.0.0.1:4003".parse().unwrap()),
            ..agreed
        };
        assert_eq!(media, [back]);
        ep.handle_datagram(
            now,
            caller,
            request_in("port0", "ACK", "a4", 4, Some(&tag), ""),
        );

        // Disabled, then a re-INVITE without SDP: our offer enables the audio again.
        let reinvite = request_in("port0", "INVITE", "r5", 5, Some(&tag), &disabled);
        let (status, _, _) = answer_to(&mut ep, reinvite);
        assert_eq!(status, Some(200));
        ep.handle_datagram(
            now,
            caller,
            request_in("port0", "ACK", "a5", 5, Some(&tag), ""),
        );
        let reinvite = request_in("port0", "INVITE", "r6", 6, Some(&tag), "");
        let (status, body, _) = answer_to(&mut ep, reinvite);
        assert_eq!(status, Some(200));
        assert_eq!(m_lines(&body), ["m=audio 10000 RTP/AVP 0 8 101"], "{body}");
        assert_eq!(ep.active_calls(), 1);
    }

    /// An answer in the ACK that refuses, with port 0, the audio our offer in a re-INVITE
    /// enabled leaves the call up without audio, as an offer disabling it does; the answer
    /// to the offer in a call's first 200 must give it audio, or the call ends.
    #[test]
    fn an_answer_refusing_the_audio_of_our_reoffer_leaves_the_call_up_without_it() {
        let mut ep = endpoint();
        let caller: SocketAddr = CALLER.parse().unwrap();
        let now = Instant::now();
        let refused = OFFER.replace("m=audio 4000", "m=audio 0");
        let tag = answered_call(&mut ep, now, "refuse", 1);
        ep.handle_datagram(
            now,
            caller,
            request_in("refuse", "INVITE", "r2", 2, Some(&tag), ""),
        );
        ep.handle_datagram(
            now,
            caller,
            request_in("refuse", "ACK", "a2", 2, Some(&tag), &refused),
        );
        let sent: Vec<Vec<u8>> = std::iter::from_fn(|| ep.poll_transmit())
            .map(|t| t.payload)
            .collect();
        assert!(
            !sent.iter().any(|m| m.starts_with(b"BYE ")),
            "the call was ended"
        );
        assert_eq!(ep.active_calls(), 1);
        let last = std::iter::from_fn(|| ep.poll_event())
            .filter_map(|e| match e {
                Event::Media { media, .. } => Some(media),
                _ => None,
            })
            .last();
        assert!(
            matches!(&last, Some(m) if m.disabled && m.remote_rtp.is_none() && m.direction == Direction::Inactive),
            "{last:?}"
        );

        // A first INVITE without SDP, answered in its ACK with the audio refused: BYE.
        ep.handle_datagram(now, caller, request_in("late", "INVITE", "l1", 1, None, ""));
        let Some(Event::IncomingCall(incoming)) =
            std::iter::from_fn(|| ep.poll_event()).find(|e| matches!(e, Event::IncomingCall(_)))
        else {
            panic!("a call");
        };
        ep.accept(incoming.call, "127.0.0.1:10002".parse().unwrap(), now)
            .unwrap();
        let tag = ep.calls[&incoming.call].dialog.local_tag.clone();
        ep.handle_datagram(
            now,
            caller,
            request_in("late", "ACK", "la1", 1, Some(&tag), &refused),
        );
        assert!(
            std::iter::from_fn(|| ep.poll_transmit()).any(|t| t.payload.starts_with(b"BYE ")),
            "a first answer without audio ends the call"
        );
        assert_eq!(ep.active_calls(), 1);
    }

    /// A late offer whose answer, in the ACK, cannot be used ends the call; the call is no
    /// longer pending for its source.
    #[test]
    fn a_late_offer_refused_in_the_ack_frees_its_pending_place() {
        let mut ep = endpoint();
        let caller: SocketAddr = CALLER.parse().unwrap();
        let now = Instant::now();
        for n in 0..3 {
            let id = format!("late-{n}");
            ep.handle_datagram(now, caller, request_in(&id, "INVITE", &id, 1, None, ""));
            let Some(Event::IncomingCall(incoming)) = std::iter::from_fn(|| ep.poll_event())
                .find(|e| matches!(e, Event::IncomingCall(_)))
            else {
                panic!("a call");
            };
            ep.accept(incoming.call, "127.0.0.1:10000".parse().unwrap(), now)
                .unwrap();
            let tag = ep.calls[&incoming.call].dialog.local_tag.clone();
            // The multicast address is the subject (an answer it must refuse); no socket is
            // involved.
            let multicast = OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 224.0.0.1");
            let ack = request_in(&id, "ACK", &format!("a{id}"), 1, Some(&tag), &multicast);
            ep.handle_datagram(now, caller, ack);
            assert!(ep.pending_from.is_empty(), "call {n} still pending");
        }
    }

    /// A call the caller hangs up leaves no deadline queued behind it: its maximum duration
    /// (half an hour here) is not kept waiting in the timer heap once the call is gone.
    #[test]
    fn ended_calls_leave_no_timer_entries() {
        let mut ep = endpoint();
        let caller: SocketAddr = CALLER.parse().unwrap();
        let mut now = Instant::now();
        for n in 0..2_000 {
            let id = format!("call-{n}");
            let tag = answered_call(&mut ep, now, &id, n);
            ep.handle_datagram(
                now,
                caller,
                request_in(&id, "BYE", &format!("b{n}"), 2, Some(&tag), ""),
            );
            now += Duration::from_millis(10);
            run_until(&mut ep, now);
        }
        // Every transaction over (Timers J and L), well before the calls' maximum duration.
        now += Duration::from_secs(40);
        ep.handle_timeout(now);
        assert_eq!(ep.active_calls(), 0);
        assert!(ep.calls.is_empty() && ep.invites.is_empty() && ep.non_invites.is_empty());
        let ep_timers = ep.timers.len();
        assert!(
            ep_timers <= 64,
            "{ep_timers} timer entries queued for no call"
        );
        assert_eq!(ep.queued.len(), ep_timers);
    }
}
