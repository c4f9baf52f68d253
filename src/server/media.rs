//! The media thread: all RTP of all calls, sent and received on one thread.
//!
//! One `mio` poll holds every call's RTP socket, registered for readability only, and one
//! timing wheel ([`Schedule`]) orders every stream by its next packet. The thread sleeps
//! until the earliest packet is due or a datagram or a command arrives, then sends every
//! packet due and reads every datagram waiting: a thousand calls cost one wake-up per
//! millisecond, not a thousand timers. Each socket is connected to the call's media source
//! once that is settled (see `Stream::follow_source`). Sockets are not registered for
//! writability: nothing waits for it, and with write interest every packet sent would raise
//! a readiness event (measured: a sixth of the server's time at 3,000 streams).
//!
//! What arrives is handed to the call's sans-IO [`MediaSession`], which decides whose
//! datagrams count, hears the keys in them and says where RTP and RTCP go; this thread only
//! reads, sends and keeps time. Call tasks hear only key presses and the ends of playbacks.
//!
//! Each call's RTCP (`media::rtcp`) is here too: its socket on the odd port above RTP's is
//! in the same poll (or RTCP shares the RTP socket, `a=rtcp-mux`), and its reports go out
//! with the packet whose slot finds one due.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::mpsc;

use crate::config::InbandDtmf;
use crate::media::digit::DigitEvent;
use crate::media::g711::Law;
use crate::media::player::Playback;
use crate::media::ports::PortAllocator;
use crate::media::rtcp::{Rtcp, SenderInfo};
use crate::media::rtp::{Latching, Pt};
use crate::media::schedule::Schedule;
use crate::media::session::{Heard, MediaSession, Port, RemoteMedia, RtcpRoute, SessionConfig};
use crate::media::stream::Outbound;
use crate::sip::endpoint::CallHandle;
use crate::sip::sdp::{Codec, Negotiated};

/// RTP packets sent by all calls (for the metrics endpoint).
pub(crate) static RTP_PACKETS_SENT: AtomicU64 = AtomicU64::new(0);
/// RTCP compound packets sent and received by all calls.
pub(crate) static RTCP_PACKETS_SENT: AtomicU64 = AtomicU64::new(0);
pub(crate) static RTCP_PACKETS_RECEIVED: AtomicU64 = AtomicU64::new(0);

const WAKER: Token = Token(0);

/// A stream's poll tokens: its RTP socket's even, its RTCP socket's the odd one above
/// (token 0, the waker, belongs to no stream).
fn rtp_token(slot: usize) -> Token {
    Token((slot + 1) * 2)
}

fn rtcp_token(slot: usize) -> Token {
    Token(rtp_token(slot).0 + 1)
}

/// The stream slot a token is of, and whether it is the RTCP socket's.
fn slot_of(token: Token) -> Option<(usize, bool)> {
    Some(((token.0 / 2).checked_sub(1)?, token.0 % 2 == 1))
}

/// An even RTP port from the range (with the RTCP port above it), given back when dropped.
pub(crate) struct PortLease {
    pub(crate) port: u16,
    ports: Arc<Mutex<PortAllocator>>,
}

impl PortLease {
    pub(crate) fn new(port: u16, ports: Arc<Mutex<PortAllocator>>) -> Self {
        Self { port, ports }
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        if let Ok(mut ports) = self.ports.lock() {
            ports.release(self.port);
        }
    }
}

/// What the media thread tells a call.
#[derive(Debug)]
pub(crate) enum MediaEvent {
    /// A key was pressed (RFC 4733 or in-band).
    Key(DigitEvent),
    /// A playback ended (finished or stopped).
    PlaybackDone(u64),
    /// The call's media could not start: no prompt will play, no key will be heard.
    Failed,
}

/// What a call asks of the media thread.
pub(crate) enum MediaCommand {
    /// Start the call's media.
    Start(StartMedia),
    /// The media parameters changed (re-INVITE, UPDATE).
    Update(CallHandle, Negotiated),
    /// Play something (replacing what is playing).
    Play(CallHandle, Playback),
    /// A key was pressed: stop the playback if it allows barge-in.
    BargeIn(CallHandle),
    /// The call's last words are heard: send no more RTP (the call's BYE follows shortly;
    /// its sockets stay open until [`MediaCommand::End`]).
    Quiet(CallHandle),
    /// The call is over.
    End(CallHandle),
    /// Stands for a bug that ends the media thread (tests of what the server does then).
    #[cfg(test)]
    Fail,
}

/// A call's media, ready to start: its sockets, what the SDP agreed, and where to report.
pub(crate) struct StartMedia {
    pub(crate) call: CallHandle,
    pub(crate) call_id: String,
    pub(crate) socket: StdUdpSocket,
    pub(crate) rtcp: StdUdpSocket,
    pub(crate) lease: PortLease,
    pub(crate) media: Negotiated,
    /// Where the call's INVITE came from.
    pub(crate) source: SocketAddr,
    pub(crate) events: mpsc::UnboundedSender<MediaEvent>,
}

/// How incoming media is treated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MediaConfig {
    pub(crate) symmetric: bool,
    pub(crate) inband: InbandDtmf,
    /// SCHED_FIFO priority for the media thread; 0 leaves it at normal priority.
    pub(crate) realtime_priority: u8,
}

/// Commands waiting for the media thread.
///
/// A mutex, not std's `mpsc`: the media thread may run SCHED_FIFO on the core its senders
/// run on, and `mpsc`'s receiver waits for a sender it interrupted mid-write by yielding in
/// a loop. A realtime thread's yield gives the core to no thread of normal priority, so the
/// two stayed stuck until the kernel's realtime throttling stepped in, up to a second later
/// (measured: logins' p99 latency of 0.5–0.9 s). Waiting for a mutex puts the media thread
/// to sleep instead, which lets the holder finish.
#[derive(Default)]
struct Inbox {
    commands: Mutex<Vec<MediaCommand>>,
    /// Set when the server lets go of the media thread, or the thread stops: commands
    /// sent after that are dropped.
    closed: AtomicBool,
}

impl Inbox {
    fn push(&self, command: MediaCommand) {
        let mut commands = self.commands.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.closed.load(Ordering::Acquire) {
            commands.push(command);
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Moves every waiting command into `into` (empty); false once the server is gone.
    fn take(&self, into: &mut Vec<MediaCommand>) -> bool {
        // Read before taking: commands sent before the close are still applied.
        let open = !self.closed.load(Ordering::Acquire);
        std::mem::swap(
            &mut *self.commands.lock().unwrap_or_else(PoisonError::into_inner),
            into,
        );
        open
    }
}

/// The way to the media thread.
pub(crate) struct MediaHandle {
    inbox: Arc<Inbox>,
    waker: Arc<Waker>,
    /// Closed when the media thread ends, however it ends.
    alive: tokio::sync::watch::Receiver<()>,
}

impl MediaHandle {
    pub(crate) fn send(&self, command: MediaCommand) {
        self.inbox.push(command);
        let _ = self.waker.wake();
    }

    /// Completes when the media thread has ended: while the server runs, only if it failed
    /// (its poll broke, or a bug made it panic), after which no call can hear or send.
    pub(crate) fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut alive = self.alive.clone();
        async move { while alive.changed().await.is_ok() {} }
    }
}

impl Drop for MediaHandle {
    /// The server is stopping: the media thread ends.
    fn drop(&mut self) {
        self.inbox.close();
        let _ = self.waker.wake();
    }
}

/// Starts the media thread.
///
/// # Errors
/// When the poll cannot be created.
pub(crate) fn start(config: MediaConfig) -> io::Result<MediaHandle> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let inbox = Arc::new(Inbox::default());
    let commands = Arc::clone(&inbox);
    let (alive_tx, alive) = tokio::sync::watch::channel(());
    std::thread::Builder::new()
        .name("vportal-media".into())
        .spawn(move || {
            // Dropped as the thread ends, also when it unwinds.
            let _alive = alive_tx;
            if config.realtime_priority > 0 {
                run_realtime(config.realtime_priority);
            }
            Thread::new(poll, commands, config).run();
        })?;
    Ok(MediaHandle {
        inbox,
        waker,
        alive,
    })
}

/// Moves the calling thread (the media thread) to SCHED_FIFO at `priority`, so that other
/// threads on its core cannot hold a packet back; on failure it warns and the thread stays
/// at normal priority.
fn run_realtime(priority: u8) {
    use thread_priority::{
        Error, RealtimeThreadSchedulePolicy, ThreadPriority, ThreadPriorityValue,
        ThreadSchedulePolicy, set_thread_priority_and_policy, thread_native_id,
    };
    let fifo = ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo);
    let result = ThreadPriorityValue::try_from(priority)
        .map_err(|_| Error::Priority("out of range"))
        .and_then(|value| {
            set_thread_priority_and_policy(
                thread_native_id(),
                ThreadPriority::Crossplatform(value),
                fifo,
            )
        });
    match result {
        Ok(()) => tracing::info!(priority, "media thread runs SCHED_FIFO"),
        Err(e) => {
            let why = match e {
                Error::OS(code) => io::Error::from_raw_os_error(code).to_string(),
                other => other.to_string(),
            };
            tracing::warn!(
                priority,
                error = %why,
                "media thread stays at normal priority: SCHED_FIFO needs CAP_SYS_NICE or \
                 an RLIMIT_RTPRIO this high (systemd: LimitRTPRIO=)"
            );
        }
    }
}

/// The G.711 law of an SDP codec: how the session and the player code its audio.
pub(crate) fn law(codec: Codec) -> Law {
    match codec {
        Codec::Pcmu => Law::Ulaw,
        Codec::Pcma => Law::Alaw,
    }
}

/// What the call's media session needs of the negotiated SDP (media/ knows no SIP).
fn remote_media(media: &Negotiated) -> RemoteMedia {
    RemoteMedia {
        rtp: media.remote_rtp,
        rtcp: media.remote_rtcp,
        rtcp_mux: media.rtcp_mux,
        law: law(media.codec),
        audio_pt: media.payload_type,
        telephone_event: media.telephone_event,
        telephone_event_ours: media.telephone_event_ours,
        disabled: media.disabled,
    }
}

impl MediaConfig {
    /// The settings the media session of a call whose INVITE came from `source` applies.
    fn session(&self, source: SocketAddr) -> SessionConfig {
        SessionConfig {
            latching: if self.symmetric {
                Latching::Once
            } else {
                Latching::Off
            },
            inband: self.inband,
            signalling: Some(source.ip()),
        }
    }
}

struct Stream {
    call_id: String,
    socket: UdpSocket,
    /// The socket on the port above RTP's (unconnected: sends are rare, and its peer may
    /// move).
    rtcp_socket: UdpSocket,
    /// The address the socket is connected to: the call's settled media source.
    peer: Option<SocketAddr>,
    /// Where media goes: the session's RTP destination, kept here because every packet
    /// needs it and the session is only needed when something arrives.
    remote: Option<SocketAddr>,
    out: Outbound,
    /// What the call hears, and where its RTP and RTCP go.
    session: Box<MediaSession>,
    events: mpsc::UnboundedSender<MediaEvent>,
    /// The call has said its last words: nothing more is sent, whatever an SDP says.
    quiet: bool,
    /// Last: fields drop in order, so the port pair goes back to the range only once both
    /// sockets are closed.
    _lease: PortLease,
}

impl Stream {
    /// Sends an RTCP compound packet where the caller takes RTCP.
    fn send_rtcp(&self, bytes: &[u8]) {
        let sent = match self.session.rtcp_route() {
            Some(RtcpRoute::Muxed(to)) => send_media(&self.socket, Some(to), self.peer, bytes),
            Some(RtcpRoute::Separate(to)) => self.rtcp_socket.send_to(bytes, to).is_ok(),
            None => false,
        };
        if sent {
            RTCP_PACKETS_SENT.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// What a sender report says of our stream at `now`.
    fn sender_info(&self, now: Instant) -> SenderInfo {
        SenderInfo {
            packets: self.out.sender().sent(),
            octets: self.out.sender().octets(),
            timestamp: self.out.timestamp_at(now),
        }
    }

    /// Follows the session's RTP destination, and connects the socket to the media source
    /// once that is settled (the SDP's address; a latched source never is). The kernel then
    /// drops anyone else's datagrams before they reach us, and sends take the socket's
    /// cached route instead of a lookup per packet (measured: 13 % less CPU per packet on
    /// loopback).
    fn follow_source(&mut self) {
        self.remote = self.session.rtp_destination();
        let settled = self.session.settled_source();
        if let Some(peer) = settled.filter(|_| settled != self.peer) {
            match self.socket.connect(peer) {
                Ok(()) => self.peer = settled,
                Err(e) => {
                    tracing::debug!(call_id = %self.call_id, error = %e, "RTP socket not connected")
                }
            }
        }
    }
}

struct Thread {
    poll: Poll,
    commands: Arc<Inbox>,
    /// The commands being applied (kept to reuse its allocation).
    taken: Vec<MediaCommand>,
    config: MediaConfig,
    /// The streams, by slot; see [`rtp_token`] for their poll tokens.
    streams: Vec<Option<Stream>>,
    free: Vec<usize>,
    tokens: HashMap<CallHandle, Token>,
    schedule: Schedule<Token>,
    /// The streams due, taken from the schedule (kept to reuse its allocation).
    due: Vec<(Instant, Token)>,
    rng: rand::rngs::StdRng,
    keys: Vec<DigitEvent>,
    datagram: Vec<u8>,
    /// The RTCP report being sent (kept to reuse its allocation).
    report: Vec<u8>,
    /// Sockets left readable after a batch of [`READ_BATCH`]: read again next turn, after
    /// the packets due have gone, so that a flood on one port cannot hold up every call.
    unread: Vec<Token>,
}

/// Datagrams read from one socket per turn of the media thread.
const READ_BATCH: usize = 64;

impl Thread {
    fn new(poll: Poll, commands: Arc<Inbox>, config: MediaConfig) -> Self {
        Self {
            poll,
            commands,
            taken: Vec::new(),
            config,
            streams: Vec::new(),
            free: Vec::new(),
            tokens: HashMap::new(),
            schedule: Schedule::new(Instant::now()),
            due: Vec::new(),
            rng: rand::make_rng(),
            keys: Vec::new(),
            datagram: vec![0; 2_048],
            report: Vec::with_capacity(256),
            unread: Vec::new(),
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(1_024);
        loop {
            // Sockets with datagrams still waiting are not signalled again (readiness is
            // edge-triggered): no sleeping while there are any.
            let timeout = if self.unread.is_empty() {
                self.schedule
                    .next_wake()
                    .map(|at| at.saturating_duration_since(Instant::now()))
            } else {
                Some(std::time::Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                tracing::error!(error = %e, "media poll failed; media stops");
                self.commands.close();
                return;
            }
            // What the last turn left (usually nothing), and what became readable.
            let again = std::mem::take(&mut self.unread);
            for event in &events {
                let token = event.token();
                if token != WAKER && !again.contains(&token) {
                    self.receive(token);
                }
            }
            for token in again {
                self.receive(token);
            }
            if !self.take_commands() {
                return;
            }
            self.send_due(Instant::now());
        }
    }

    /// Applies every queued command; false once the server is gone.
    fn take_commands(&mut self) -> bool {
        let mut taken = std::mem::take(&mut self.taken);
        let open = self.commands.take(&mut taken);
        for command in taken.drain(..) {
            self.apply(command);
        }
        self.taken = taken;
        open
    }

    fn apply(&mut self, command: MediaCommand) {
        match command {
            MediaCommand::Start(start) => self.start(start),
            MediaCommand::Update(call, media) => self.update(call, &media),
            MediaCommand::Play(call, playback) => self.play(call, playback),
            MediaCommand::BargeIn(call) => self.barge_in(call),
            MediaCommand::Quiet(call) => {
                if let Some(s) = self.stream(call) {
                    s.quiet = true;
                    s.out.set_sending(false);
                }
            }
            MediaCommand::End(call) => self.end(call),
            #[cfg(test)]
            MediaCommand::Fail => panic!("the media thread was told to fail"),
        }
    }

    /// Starts a call's media: its sockets join the poll, its first packet the schedule.
    /// When that cannot be done the call is told ([`MediaEvent::Failed`]).
    fn start(&mut self, start: StartMedia) {
        let StartMedia {
            call,
            call_id,
            socket,
            rtcp,
            lease,
            media,
            source,
            events,
        } = start;
        let Some(pt) = Pt::new(media.payload_type) else {
            tracing::error!(%call_id, pt = media.payload_type, "no RTP payload type");
            let _ = events.send(MediaEvent::Failed);
            return;
        };
        let slot = self.free.pop().unwrap_or_else(|| {
            self.streams.push(None);
            self.streams.len() - 1
        });
        let token = rtp_token(slot);
        let mut socket = UdpSocket::from_std(socket);
        let mut rtcp_socket = UdpSocket::from_std(rtcp);
        let registry = self.poll.registry();
        let registered = registry
            .register(&mut socket, token, Interest::READABLE)
            .and_then(|()| {
                registry
                    .register(&mut rtcp_socket, rtcp_token(slot), Interest::READABLE)
                    .inspect_err(|_| {
                        let _ = registry.deregister(&mut socket);
                    })
            });
        if let Err(e) = registered {
            tracing::error!(%call_id, error = %e, "cannot watch the RTP socket");
            self.free.push(slot);
            let _ = events.send(MediaEvent::Failed);
            return;
        }
        let remote = remote_media(&media);
        let mut out = Outbound::new(
            Instant::now(),
            pt,
            remote.law,
            media.ptime_ms,
            &mut self.rng,
        );
        out.set_sending(media.direction.sends());
        self.schedule.insert(out.poll_timeout(), token);
        self.tokens.insert(call, token);
        let rtcp = Rtcp::new(Instant::now(), out.sender().ssrc(), &mut self.rng);
        let session = MediaSession::new(&remote, self.config.session(source), rtcp);
        let mut stream = Stream {
            call_id,
            socket,
            rtcp_socket,
            peer: None,
            remote: None,
            out,
            session: Box::new(session),
            events,
            quiet: false,
            _lease: lease,
        };
        stream.follow_source();
        self.streams[slot] = Some(stream);
    }

    /// The media parameters changed (re-INVITE, UPDATE): what is heard, where it goes and
    /// how it is sent follow.
    fn update(&mut self, call: CallHandle, media: &Negotiated) {
        let Some(s) = self.stream(call) else {
            return;
        };
        let remote = remote_media(media);
        s.session.configure(&remote);
        s.follow_source();
        s.out.set_sending(media.direction.sends() && !s.quiet);
        s.out.set_ptime(media.ptime_ms);
        if let Some(pt) = Pt::new(media.payload_type) {
            s.out.set_codec(pt, remote.law);
        }
    }

    /// Plays `playback` on the call, replacing what was playing.
    fn play(&mut self, call: CallHandle, playback: Playback) {
        let Some(&token) = self.tokens.get(&call) else {
            return;
        };
        let now = Instant::now();
        if let Some(s) = self.slot(token) {
            // The prompt starts now rather than at the next packet slot: its first
            // packet goes out at once, not at the schedule's next millisecond.
            if let Some(replaced) = s.out.play_now(now, playback) {
                let _ = s.events.send(MediaEvent::PlaybackDone(replaced));
            }
            let sent = self.send_stream(token, None, now);
            RTP_PACKETS_SENT.fetch_add(sent, Ordering::Relaxed);
        }
    }

    /// A key was pressed: the playback stops if it allows barge-in.
    fn barge_in(&mut self, call: CallHandle) {
        if let Some(s) = self.stream(call)
            && let Some(stopped) = s.out.player().barge_in()
        {
            let _ = s.events.send(MediaEvent::PlaybackDone(stopped));
        }
    }

    /// The call is over: its last report goes out, and its sockets leave the poll.
    fn end(&mut self, call: CallHandle) {
        let Some((slot, _)) = self.tokens.remove(&call).and_then(slot_of) else {
            return;
        };
        if let Some(mut s) = self.streams.get_mut(slot).and_then(Option::take) {
            self.free.push(slot);
            // RFC 3550 §6.6: the last report, with a BYE.
            let now = Instant::now();
            let sender = s.sender_info(now);
            s.session
                .rtcp_mut()
                .write_bye(now, SystemTime::now(), sender, &mut self.report);
            s.send_rtcp(&self.report);
            let _ = self.poll.registry().deregister(&mut s.socket);
            let _ = self.poll.registry().deregister(&mut s.rtcp_socket);
            log_end(&s, self.config.symmetric);
        }
    }

    fn stream(&mut self, call: CallHandle) -> Option<&mut Stream> {
        let token = *self.tokens.get(&call)?;
        self.slot(token)
    }

    fn slot(&mut self, token: Token) -> Option<&mut Stream> {
        let (slot, _) = slot_of(token)?;
        self.streams.get_mut(slot)?.as_mut()
    }

    /// Reads every datagram waiting on a stream's RTP or RTCP socket, and hands each to the
    /// call's session.
    fn receive(&mut self, token: Token) {
        let Some((slot, is_rtcp)) = slot_of(token) else {
            return;
        };
        let Some(s) = self.streams.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let (socket, port) = if is_rtcp {
            (&s.rtcp_socket, Port::Rtcp)
        } else {
            (&s.socket, Port::Rtp)
        };
        // At most a batch; a socket not emptied by it is read again next turn.
        let mut errors = 0;
        let mut emptied = false;
        for _ in 0..READ_BATCH {
            let Some((n, from)) = read_one(socket, &mut self.datagram, &mut errors) else {
                emptied = true;
                break;
            };
            let datagram = &self.datagram[..n];
            let heard =
                s.session
                    .handle_datagram(port, from, datagram, Instant::now(), &mut self.keys);
            if heard == Heard::Rtcp {
                RTCP_PACKETS_RECEIVED.fetch_add(1, Ordering::Relaxed);
            }
            for key in self.keys.drain(..) {
                let _ = s.events.send(MediaEvent::Key(key));
            }
        }
        if !emptied {
            self.unread.push(token);
        }
        // Symmetric RTP may just have latched onto the caller's source.
        s.follow_source();
    }

    /// Sends every packet due at `now`.
    fn send_due(&mut self, now: Instant) {
        let mut due = std::mem::take(&mut self.due);
        self.schedule.pop_due(now, &mut due);
        let mut sent = 0;
        for (at, token) in due.drain(..) {
            sent += self.send_stream(token, Some(at), now);
        }
        self.due = due;
        RTP_PACKETS_SENT.fetch_add(sent, Ordering::Relaxed);
    }

    /// Sends what the stream `token` has due at `now` and schedules its next packet;
    /// returns the packets sent. `scheduled` is the time the schedule had for it: an entry
    /// the stream has since moved from (a prompt started at once), or one left by a stream
    /// that ended in the same slot, sends nothing.
    fn send_stream(&mut self, token: Token, scheduled: Option<Instant>, now: Instant) -> u64 {
        let Some(s) = slot_of(token)
            .and_then(|(slot, _)| self.streams.get_mut(slot))
            .and_then(Option::as_mut)
        else {
            return 0;
        };
        if scheduled.is_some_and(|at| at != s.out.poll_timeout()) {
            return 0;
        }
        let mut sent = 0;
        while let Some(packet) = s.out.poll_packet(now) {
            if let Some(bytes) = packet.bytes {
                // A full socket buffer drops this one packet; the next is on time.
                sent += u64::from(send_media(&s.socket, s.remote, s.peer, bytes));
            }
            if let Some(token) = packet.frame.finished {
                let _ = s.events.send(MediaEvent::PlaybackDone(token));
            }
        }
        // The stream's slots come every ptime, held or not: a report due goes with one.
        if now >= s.session.rtcp().poll_timeout() {
            let sender = s.sender_info(now);
            s.session.rtcp_mut().write_report(
                now,
                SystemTime::now(),
                sender,
                &mut self.rng,
                &mut self.report,
            );
            s.send_rtcp(&self.report);
        }
        self.schedule.insert(s.out.poll_timeout(), token);
        sent
    }
}

/// Sends `bytes` on a call's RTP socket to `remote`, where its media goes (symmetric RTP
/// may have latched onto the caller's real source): through the connection when the
/// socket is connected there (`peer`). False when it could not be sent.
fn send_media(
    socket: &UdpSocket,
    remote: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    bytes: &[u8],
) -> bool {
    match remote {
        Some(remote) if Some(remote) == peer => socket.send(bytes).is_ok(),
        Some(remote) => socket.send_to(bytes, remote).is_ok(),
        None => false,
    }
}

/// The next datagram waiting on `socket`, or `None` once it is empty. Readiness is
/// edge-triggered, so a stream reads until then (over several turns, a batch each). An
/// error (a connected socket reports the caller's ICMP "port unreachable" once) is consumed
/// by the read that returns it; a few in a row mean something else is wrong, and reading
/// stops.
fn read_one(
    socket: &UdpSocket,
    buffer: &mut [u8],
    errors: &mut u32,
) -> Option<(usize, SocketAddr)> {
    loop {
        match socket.recv_from(buffer) {
            Ok(read) => return Some(read),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(_) if *errors < 4 => *errors += 1,
            Err(_) => return None,
        }
    }
}

/// The debug line that sums up a call's media: what was sent and received, and the quality
/// both ends measured; and a warning when all the RTP the call's port received came from
/// elsewhere than the caller's media address, so that any keys in it were lost.
fn log_end(s: &Stream, symmetric: bool) {
    let stats = s.session.receive_stats();
    let rtcp = s.session.rtcp().stats();
    let ms = |units: u32| f64::from(units) / 8.0;
    let ours = s.session.rtcp().reception();
    let theirs = s.session.rtcp().peer();
    tracing::debug!(
        call_id = %s.call_id,
        rtp_sent = s.out.sender().sent(),
        rtp_received = stats.accepted,
        rtp_foreign = stats.foreign,
        rtp_followed = stats.followed,
        rtcp_sent = rtcp.sent,
        rtcp_received = rtcp.received,
        rtcp_malformed = rtcp.malformed,
        rtcp_without_report = rtcp.no_report,
        lost = ours.map(|r| r.lost),
        jitter_ms = ours.map(|r| ms(r.jitter)),
        peer_lost = theirs.map(|p| p.cumulative_lost),
        peer_jitter_ms = theirs.map(|p| ms(p.jitter)),
        round_trip_ms = theirs.and_then(|p| p.round_trip).map(|d| d.as_secs_f64() * 1e3),
        "media ended"
    );
    if stats.accepted == 0 && stats.foreign > 0 {
        let why = if symmetric {
            "none came from the IP of the call's signalling or SDP"
        } else {
            "a phone behind a NAT sends from another address than its SDP names: see rtp.symmetric"
        };
        tracing::warn!(
            call_id = %s.call_id,
            rtp_foreign = stats.foreign,
            rtp_to = ?s.remote,
            "the call heard no RTP from the caller, only from other addresses ({why})"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(commands: &[MediaCommand]) -> Vec<u64> {
        commands
            .iter()
            .map(|c| match c {
                MediaCommand::End(call) => call.0,
                _ => u64::MAX,
            })
            .collect()
    }

    #[test]
    fn the_inbox_hands_over_commands_in_order_until_it_is_closed() {
        let inbox = Inbox::default();
        let mut taken = Vec::new();
        assert!(inbox.take(&mut taken));
        assert!(taken.is_empty());
        inbox.push(MediaCommand::End(CallHandle(1)));
        inbox.push(MediaCommand::End(CallHandle(2)));
        assert!(inbox.take(&mut taken));
        assert_eq!(ends(&taken), [1, 2]);
        taken.clear();
        // Sent before the close: still applied, and the thread learns it is over.
        inbox.push(MediaCommand::End(CallHandle(3)));
        inbox.close();
        assert!(!inbox.take(&mut taken));
        assert_eq!(ends(&taken), [3]);
        taken.clear();
        // After it: dropped.
        inbox.push(MediaCommand::End(CallHandle(4)));
        assert!(!inbox.take(&mut taken));
        assert!(taken.is_empty());
    }
}
