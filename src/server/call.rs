//! One task per call: it binds the call's RTP port, answers, hands the socket to the media
//! thread, and drives the call's [`Flow`]: keys from the media thread (RFC 4733 events,
//! in-band tones) and from SIP INFO go in, prompts go out to the media thread, store work
//! (checking a passcode, storing a new one) runs off the async runtime and its result goes
//! back in, and the flow's hang-up becomes a BYE.

use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::{Arc, PoisonError};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::Shared;
use super::calls::ActiveCall;
use super::media::{MediaCommand, MediaEvent, PortLease, StartMedia};
use super::sip_task::Command;
use crate::ivr::dialplan::{MailboxSource, Route, SessionRule};
use crate::ivr::flow::{Action, Flow, FlowConfig};
use crate::ivr::session::Decision;
use crate::media::digit::{DigitEvent, KeyMerge};
use crate::media::dtmf_info;
use crate::media::prompts::PromptSet;
use crate::sip::endpoint::{CallHandle, EndReason, IncomingCall};
use crate::sip::sdp::Negotiated;
use crate::store::{
    Actor, ChangeOutcome, Extension, Login, Store, StoreError, Unavailable, VerifyOutcome,
};
use crate::time::Timestamp;

/// Tries of a passcode change while the database stays busy (each waits up to 10 s).
const CHANGE_TRIES: u32 = 6;

/// What the SIP task tells a call.
#[derive(Debug)]
pub(crate) enum CallEvent {
    /// Media parameters agreed or changed.
    Media(Negotiated),
    /// The ACK arrived.
    Established,
    /// An INFO body.
    Info {
        /// Its content type.
        content_type: String,
        /// Its body.
        body: Vec<u8>,
    },
    /// A newer call logged in to this call's mailbox and takes it over.
    Replaced,
    /// The call is over.
    Ended(EndReason),
}

/// A call's RTP socket, bound (non-blocking) on a leased even port, and its RTCP socket on
/// the odd port above.
pub(crate) struct RtpPort {
    pub(crate) socket: StdUdpSocket,
    pub(crate) rtcp: StdUdpSocket,
    pub(crate) lease: PortLease,
}

/// Binds an even port from the range and the odd port above it (RFC 3550 §11), skipping
/// pairs another program holds either port of.
pub(crate) fn bind_rtp(shared: &Arc<Shared>) -> Option<RtpPort> {
    // The advertised address itself when it is loopback (tests, local use), else all
    // interfaces of its family.
    let bind_ip = match shared.rtp_ip {
        ip if ip.is_loopback() => ip,
        IpAddr::V4(_) => IpAddr::from([0, 0, 0, 0]),
        IpAddr::V6(_) => IpAddr::from([0_u16; 8]),
    };
    for _ in 0..64 {
        let port = shared.ports.lock().ok()?.allocate()?;
        let lease = PortLease::new(port, Arc::clone(&shared.ports));
        let bind = |port| {
            StdUdpSocket::bind(SocketAddr::new(bind_ip, port))
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
        };
        // Even ports only: the one above is at most 65535.
        match bind(port).and_then(|socket| Ok((socket, bind(port + 1)?))) {
            Ok((socket, rtcp)) => {
                return Some(RtpPort {
                    socket,
                    rtcp,
                    lease,
                });
            }
            // Out of file descriptors (EMFILE, ENFILE): no other port would do better.
            Err(e) if matches!(e.raw_os_error(), Some(23 | 24)) => {
                tracing::warn!(error = %e, "cannot open an RTP socket: raise the open files limit (LimitNOFILE=); refusing the call");
                return None;
            }
            // Another program holds it: the lease gives it back, round-robin moves on.
            Err(e) => tracing::debug!(port, error = %e, "RTP port busy; trying the next"),
        }
    }
    None
}

/// Starts the task for a new call in `tasks`; returns the channel the SIP task feeds it
/// through and the task's id.
pub(crate) fn spawn(
    incoming: IncomingCall,
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> (
    CallHandle,
    mpsc::UnboundedSender<CallEvent>,
    tokio::task::Id,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = incoming.call;
    let span = tracing::info_span!("call", call_id = %incoming.call_id);
    let task = tasks.spawn(run(incoming, shared, commands, rx).instrument(span));
    (handle, tx, task.id())
}

/// The result of store work, fed back into the flow.
#[derive(Debug)]
enum StoreReply {
    Exists(bool),
    Verified(Result<(VerifyOutcome, Option<Login>), ()>),
    /// With the login, which proves the new passcode after a change.
    Changed(Result<(ChangeOutcome, Login), ()>),
    /// The work itself failed (a panic in the blocking pool).
    Failed,
    /// A check given up before it began, its caller gone: nothing was checked, audited or
    /// counted.
    Unheard,
}

/// Store work in flight (the flow asks for one thing at a time).
type StoreJob = JoinHandle<StoreReply>;

/// What becomes of hashing work whose call ends before the work's turn to hash comes.
#[derive(Debug, Clone, Copy)]
enum Unheard {
    /// Done all the same: a new PIN keyed twice is stored.
    Done,
    /// Given up: a passcode check nobody would hear.
    GivenUp,
}

/// The flow's mailbox from the caller's identity, when the route takes it from there and
/// trusts the source: P-Asserted-Identity, else the From user.
fn caller_mailbox(route: &Route, incoming: &IncomingCall) -> Option<Extension> {
    match route.settings.mailbox_for(incoming.source.ip()) {
        MailboxSource::CallerId => incoming
            .asserted_user
            .as_deref()
            .or(incoming.from_user.as_deref())
            .and_then(|user| Extension::parse(user).ok()),
        MailboxSource::Ask => None,
    }
}

/// A call's task: admitted (or refused), answered, driven until it ends, then accounted
/// for.
async fn run(
    incoming: IncomingCall,
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    mut events: mpsc::UnboundedReceiver<CallEvent>,
) {
    let call = incoming.call;
    let (route, prompts, rtp) = match admit(&incoming, &shared) {
        Ok(admitted) => admitted,
        Err((code, reason)) => {
            let _ = commands.send(Command::Reject(call, code, reason)).await;
            return;
        }
    };
    let local = SocketAddr::new(shared.rtp_ip, rtp.lease.port);
    tracing::info!(
        from = incoming.from_user.as_deref().unwrap_or("-"),
        // As text, quoted and escaped: a `.` route can take any dialled string, and its
        // line breaks must not forge log lines.
        to = incoming.request_user.as_str(),
        source = %incoming.source,
        application = %route.application.as_str(),
        rtp = %local,
        "incoming call"
    );
    if commands.send(Command::Accept(call, local)).await.is_err() {
        return;
    }
    let registered = Registered::new(
        call,
        &shared,
        ActiveCall {
            call_id: incoming.call_id.clone(),
            caller: incoming.from_user.clone(),
            source: incoming.source,
            dialled: incoming.request_user.clone(),
            mailbox: None,
            state: "starting",
            started_at: Timestamp::now(),
        },
    );
    let (media_tx, mut media_rx) = mpsc::unbounded_channel();
    let mut task = CallTask {
        call,
        shared,
        commands,
        flow: Flow::new(
            FlowConfig {
                application: route.application,
                settings: route.settings.clone(),
                caller_mailbox: caller_mailbox(&route, &incoming),
            },
            prompts,
        ),
        keys: KeyMerge::default(),
        events_agreed: None,
        session_rule: route.settings.session,
        actor: Actor::Caller {
            source: incoming.source,
            call_id: incoming.call_id.clone(),
        },
        source: incoming.source,
        call_id: incoming.call_id,
        rtp: Some(rtp),
        agreed: None,
        established: false,
        media_tx,
        hanging_up: false,
        login: None,
        audit: None,
        published: ("starting", false),
        gone: watch::channel(false).0,
    };
    let mut job: Option<StoreJob> = None;
    let end = task.drive(&mut events, &mut media_rx, &mut job).await;
    // The call is over: its media, its place in the active calls and its mailbox go now.
    drop(registered);
    task.finish(end, &mut job).await;
}

/// What a new call needs before it is answered: its route, the prompts in the route's
/// language and an RTP port; else the response that refuses it.
fn admit(
    incoming: &IncomingCall,
    shared: &Arc<Shared>,
) -> Result<(Route, Arc<PromptSet>, RtpPort), (u16, &'static str)> {
    let refused = |reason: &'static str| {
        metrics::counter!("vportal_calls_refused_total", "reason" => reason).increment(1);
    };
    let Some(route) = shared.dialplan.routes().get(incoming.route).cloned() else {
        tracing::error!(route = incoming.route, "no such route; refusing the call");
        refused("error");
        return Err((500, "Server Internal Error"));
    };
    let Some(prompts) = shared.prompts.get(&route.settings.language).cloned() else {
        tracing::error!(language = %route.settings.language, "no prompts for this route's language; refusing the call");
        refused("no_prompts");
        return Err((503, "Service Unavailable"));
    };
    let Some(rtp) = bind_rtp(shared) else {
        refused("no_rtp_port");
        let (in_use, capacity) = shared
            .ports
            .lock()
            .map(|p| (p.in_use(), p.capacity()))
            .unwrap_or_default();
        if in_use >= capacity {
            tracing::warn!(
                calls = in_use,
                "every port of rtp.ports is in use; refusing the call (widen the range)"
            );
        } else {
            tracing::warn!("no RTP port could be opened; refusing the call");
        }
        return Err((503, "Service Unavailable"));
    };
    Ok((route, prompts, rtp))
}

/// What a call holds outside its task: its entry in the active calls, its media stream
/// (and RTP port), its mailbox's session and its count in `vportal_calls_active`. Released
/// when dropped, so also when the task fails (a bug: it panicked) rather than ends.
struct Registered {
    call: CallHandle,
    shared: Arc<Shared>,
    active: metrics::Gauge,
}

impl Registered {
    /// Lists the call as `entry` in the active calls and counts it.
    fn new(call: CallHandle, shared: &Arc<Shared>, entry: ActiveCall) -> Self {
        shared.calls.insert(call, entry);
        let active = metrics::gauge!("vportal_calls_active");
        active.increment(1.0);
        Self {
            call,
            shared: Arc::clone(shared),
            active,
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.shared.calls.remove(self.call);
        self.shared.media(MediaCommand::End(self.call));
        self.shared
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .logout(self.call);
        self.active.decrement(1.0);
    }
}

/// One call's state in the shell.
struct CallTask {
    call: CallHandle,
    call_id: String,
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    flow: Flow,
    /// The caller's keys by every method, each press counted once.
    keys: KeyMerge,
    /// Whether the media agreed last carries RFC 4733 events (once media is agreed).
    events_agreed: Option<bool>,
    session_rule: SessionRule,
    /// Who the store's audit rows name: the caller's source address and Call-ID.
    actor: Actor,
    /// Where the INVITE came from.
    source: SocketAddr,
    /// The RTP socket until media starts; then it belongs to the media thread.
    rtp: Option<RtpPort>,
    /// The media agreed in the answer, waiting for the caller's ACK.
    agreed: Option<Negotiated>,
    /// The caller's ACK arrived.
    established: bool,
    media_tx: mpsc::UnboundedSender<MediaEvent>,
    /// BYE has been asked for.
    hanging_up: bool,
    /// The caller's login, which a passcode change must present.
    login: Option<Login>,
    /// The audit write last started without waiting for it (see [`Self::record`]).
    audit: Option<JoinHandle<()>>,
    /// The flow state and whether a mailbox was known, as last shown in the active calls.
    published: (&'static str, bool),
    /// Set when the call has ended: a passcode check still waiting for its turn to hash is
    /// then given up (see [`Self::hashing`]).
    gone: watch::Sender<bool>,
}

impl CallTask {
    /// Runs the call until it ends: SIP events, media events, store replies and the flow's
    /// timers, each acted on as it comes.
    async fn drive(
        &mut self,
        events: &mut mpsc::UnboundedReceiver<CallEvent>,
        media: &mut mpsc::UnboundedReceiver<MediaEvent>,
        job: &mut Option<StoreJob>,
    ) -> EndReason {
        loop {
            let deadline = self.flow.poll_timeout().map(Instant::from_std);
            tokio::select! {
                // The SIP events first: a hang-up that came with the check's answer ends the
                // call before the answer is acted on (a login taking the mailbox from another
                // call for a caller already gone).
                biased;
                event = events.recv() => match event {
                    Some(CallEvent::Ended(reason)) => return reason,
                    Some(event) => self.on_sip(event),
                    // The SIP task is gone: the server is stopping.
                    None => return EndReason::Shutdown,
                },
                Some(event) = media.recv() => self.on_media(event),
                reply = wait(job) => self.on_store(reply),
                () = sleep_until(deadline) => self.flow.handle_timeout(now()),
            }
            self.perform(job).await;
            self.publish_state();
        }
    }

    /// Accounts for a call that ended for `end`: its outcome counted and logged.
    async fn finish(&mut self, end: EndReason, job: &mut Option<StoreJob>) {
        // A passcode check not yet hashing is given up: nobody would hear its answer, and
        // callers who key a passcode and hang up at once must not queue hashing work past
        // every limit on calls, ahead of the logins and changes of those still on the line.
        self.gone.send_replace(true);
        // Other store work in flight completes without the caller (a new PIN keyed twice
        // is stored; a check already hashing counts): its answer tells the flow what
        // happened, so that the outcome says so too. It always answers: the hashing permits
        // are handed out in turn, to checks and changes of calls still up (at most
        // `sip.max_calls`), and a check takes milliseconds.
        if job.is_some() {
            let reply = wait(job).await;
            self.on_store(reply);
        }
        match end {
            // The server-wide limit (`sip.max_call_duration`), shorter than the route's.
            EndReason::MaxDuration => self.flow.handle_time_limit(),
            EndReason::Shutdown => self.flow.handle_shutdown(),
            // The ACK carried no answer to our offer that media could start on: the server
            // ended the call, the caller did not abandon it.
            EndReason::MediaFailed => self.flow.handle_media_failed(),
            _ => {}
        }
        self.flow.handle_hangup();
        let outcome = self.flow.outcome();
        metrics::counter!("vportal_calls_total", "outcome" => outcome.as_str()).increment(1);
        match self.flow.logged_in() {
            Some(mailbox) => tracing::info!(reason = ?end, %outcome, %mailbox, "call ended"),
            None => tracing::info!(reason = ?end, %outcome, "call ended"),
        }
    }

    fn on_sip(&mut self, event: CallEvent) {
        match event {
            CallEvent::Media(media) => {
                tracing::debug!(codec = ?media.codec, remote = ?media.remote_rtp, dtmf_pt = ?media.telephone_event, direction = ?media.direction, ptime = media.ptime_ms, disabled = media.disabled, "media agreed");
                // A re-INVITE or UPDATE that adds or drops telephone-event changes how keys
                // come (with `inband_dtmf = "auto"`, tones are listened for only without
                // it): the next key by the new method is no copy of the last by the old.
                let events = Some(media.telephone_event.is_some());
                if self.events_agreed.is_some() && self.events_agreed != events {
                    self.keys = KeyMerge::default();
                }
                self.events_agreed = events;
                // We may not send: the caller holds the call, and hears no prompt. A disabled
                // audio stream is no hold: the flow goes on, its silences counted, and ends
                // the call as a silent caller's if no audio (or key by INFO) comes back.
                self.flow
                    .handle_hold(now(), !media.disabled && !media.direction.sends());
                if self.rtp.is_some() {
                    self.agreed = Some(media);
                    self.start_media();
                } else {
                    self.shared.media(MediaCommand::Update(self.call, media));
                }
            }
            CallEvent::Established => {
                tracing::debug!("call established");
                self.established = true;
                self.start_media();
            }
            CallEvent::Info { content_type, body } => {
                if let Some(key) = dtmf_info::parse(&content_type, &body) {
                    self.key(key);
                }
            }
            CallEvent::Replaced => {
                tracing::info!("another call logged in to this mailbox; ending this one");
                self.flow.handle_replaced();
            }
            // Handled by the run loop.
            CallEvent::Ended(_) => {}
        }
    }

    /// Starts the call's media and its flow once both the media is agreed and the caller has
    /// ACKed the answer: the welcome is not clipped while the ACK is on its way, and an
    /// INVITE from a forged source (which never ACKs) gets no RTP sent anywhere.
    fn start_media(&mut self) {
        if !self.established || self.agreed.is_none() || self.rtp.is_none() {
            return;
        }
        let (
            Some(media),
            Some(RtpPort {
                socket,
                rtcp,
                lease,
            }),
        ) = (self.agreed.take(), self.rtp.take())
        else {
            return;
        };
        self.shared.media(MediaCommand::Start(StartMedia {
            call: self.call,
            call_id: self.call_id.clone(),
            socket,
            rtcp,
            lease,
            media,
            source: self.source,
            events: self.media_tx.clone(),
        }));
        self.flow.start(now());
    }

    /// Shows the flow's state in the list of active calls, when it changed.
    fn publish_state(&mut self) {
        let now = (self.flow.state(), self.flow.logged_in().is_some());
        if now != self.published {
            self.published = now;
            self.shared
                .calls
                .update(self.call, now.0, self.flow.logged_in());
        }
    }

    fn on_media(&mut self, event: MediaEvent) {
        match event {
            MediaEvent::Key(key) => self.key(key),
            MediaEvent::PlaybackDone(token) => self.flow.handle_playback_done(now(), token),
            MediaEvent::Failed => self.flow.handle_media_failed(),
        }
    }

    fn key(&mut self, key: DigitEvent) {
        let now = now();
        let method = key.method.as_str();
        // The digit prints as `*`: keys may be a passcode.
        if !self.keys.accept(now, &key) {
            tracing::debug!(digit = %key.digit, method, "key heard again by another method");
            metrics::counter!("vportal_dtmf_copies_total", "method" => method).increment(1);
            return;
        }
        tracing::debug!(digit = %key.digit, method, "key pressed");
        metrics::counter!("vportal_dtmf_digits_total", "method" => method).increment(1);
        self.flow.handle_key(now, key.digit);
    }

    fn on_store(&mut self, reply: StoreReply) {
        let now = now();
        match reply {
            StoreReply::Exists(exists) => self.flow.handle_mailbox_exists(now, exists),
            StoreReply::Verified(result) => {
                let outcome = result.map(|(outcome, login)| {
                    if let Some(login) = &login {
                        self.flow.set_lengths(login.lengths());
                    }
                    self.login = login;
                    outcome
                });
                self.flow.handle_verified(now, outcome);
            }
            StoreReply::Changed(result) => {
                let outcome = result.map(|(outcome, login)| {
                    self.login = Some(login);
                    outcome
                });
                self.flow.handle_changed(now, outcome);
            }
            StoreReply::Failed => self.flow.handle_store_failed(now),
            StoreReply::Unheard => {}
        }
    }

    /// Does what the flow asks, until it asks nothing more. The flow asks the store for one
    /// thing at a time, and nothing more until it has the answer.
    async fn perform(&mut self, job: &mut Option<StoreJob>) {
        while let Some(action) = self.flow.poll_action() {
            match action {
                Action::Play(playback) => {
                    self.shared.media(MediaCommand::Play(self.call, playback))
                }
                Action::BargeIn => self.shared.media(MediaCommand::BargeIn(self.call)),
                Action::LookUpMailbox(mailbox) => {
                    let store = Arc::clone(&self.shared.store);
                    start(
                        job,
                        blocking_in_call(move || {
                            // A database error asks the caller for the mailbox, as an
                            // unknown one does; it is logged and counted as any other. So
                            // does a mailbox without a passcode, which no login can open.
                            let found = store.user(&mailbox, Timestamp::now()).map_err(|e| {
                                tracing::error!(error = %e, "mailbox lookup failed");
                                metrics::counter!("vportal_store_errors_total").increment(1);
                            });
                            StoreReply::Exists(matches!(found, Ok(Some(u)) if u.has_passcode))
                        }),
                    );
                }
                Action::Verify { mailbox, passcode } => {
                    let actor = self.actor.clone();
                    start(
                        job,
                        self.hashing(Unheard::GivenUp, move |store| {
                            let result =
                                store.verify_login(&mailbox, &passcode, &actor, Timestamp::now());
                            StoreReply::Verified(result.map_err(|e| {
                                tracing::error!(error = %e, "passcode check failed");
                                metrics::counter!("vportal_store_errors_total").increment(1);
                            }))
                        }),
                    );
                }
                Action::ChangePasscode { mailbox, passcode } => {
                    let actor = self.actor.clone();
                    // The flow asks only after a login to this very mailbox.
                    let login = self.login.clone().filter(|l| *l.extension() == mailbox);
                    let in_flight = self.shared.writes_in_flight.subscribe();
                    start(
                        job,
                        self.hashing(Unheard::Done, move |store| {
                            let _in_flight = in_flight;
                            let Some(mut login) = login else {
                                tracing::error!("a passcode change without a login");
                                return StoreReply::Changed(Err(()));
                            };
                            // A new PIN keyed twice is stored however long another
                            // process holds the database (each try waits 10 s), up to
                            // a minute: its owner may have hung up believing it done.
                            let mut tries = 0;
                            let result = loop {
                                tries += 1;
                                match store.change_passcode(
                                    &mut login,
                                    &passcode,
                                    &actor,
                                    Timestamp::now(),
                                ) {
                                    Err(StoreError::Unavailable(Unavailable::Busy))
                                        if tries < CHANGE_TRIES =>
                                    {
                                        tracing::warn!(
                                            tries,
                                            "database busy; trying the passcode change again"
                                        );
                                    }
                                    result => break result,
                                }
                            };
                            StoreReply::Changed(result.map(|outcome| (outcome, login)).map_err(
                                |e| {
                                    tracing::error!(error = %e, "passcode change failed");
                                    metrics::counter!("vportal_store_errors_total").increment(1);
                                },
                            ))
                        }),
                    );
                }
                Action::LoggedIn(mailbox) => self.logged_in(&mailbox).await,
                Action::Mismatched(mailbox) => {
                    let actor = self.actor.clone();
                    let now = Timestamp::now();
                    self.record("a mismatched passcode change", move |store| {
                        store.record_mismatch(&mailbox, &actor, now)
                    });
                }
                Action::LoggedOut(mailbox) => {
                    tracing::debug!(%mailbox, "saying goodbye; the mailbox is free");
                    self.shared
                        .sessions
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .logout(self.call);
                }
                Action::Quiet => self.shared.media(MediaCommand::Quiet(self.call)),
                Action::Hangup => {
                    if !self.hanging_up {
                        self.hanging_up = true;
                        let _ = self.commands.send(Command::Hangup(self.call)).await;
                    }
                }
            }
        }
    }

    /// Runs store work that hashes (argon2) on the blocking pool, at most two per hashing
    /// core at once, so a burst of logins queues here instead of starving the runtime.
    /// `unheard` says what becomes of it when the call ends before its turn comes.
    fn hashing(
        &mut self,
        unheard: Unheard,
        work: impl FnOnce(&Store) -> StoreReply + Send + 'static,
    ) -> StoreJob {
        let store = Arc::clone(&self.shared.store);
        let permits = Arc::clone(&self.shared.hash_permits);
        let before = self.audit.take();
        let mut gone = self.gone.subscribe();
        // Carried across the spawn: `blocking_in_call` takes the span current there.
        let span = tracing::Span::current();
        tokio::spawn(
            async move {
                let turn = async {
                    after(before).await;
                    // The semaphore is never closed; without a permit the work runs anyway.
                    permits.acquire_owned().await.ok()
                };
                let _permit = match unheard {
                    Unheard::Done => turn.await,
                    // The sender dropped is the call's task gone: gone too.
                    Unheard::GivenUp => tokio::select! {
                        biased;
                        _ = gone.wait_for(|gone| *gone) => {
                            tracing::debug!("caller gone before the passcode check began; not checked");
                            return StoreReply::Unheard;
                        }
                        permit = turn => permit,
                    },
                };
                blocking_in_call(move || work(&store))
                    .await
                    .unwrap_or_else(|e| {
                        tracing::error!(error = %e, "store task failed");
                        StoreReply::Failed
                    })
            }
            .instrument(span),
        )
    }

    /// Applies the one-session-per-mailbox rule to a login.
    async fn logged_in(&mut self, mailbox: &Extension) {
        tracing::info!(%mailbox, "logged in");
        let decision = self
            .shared
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .login(mailbox, self.call, self.session_rule);
        match decision {
            Decision::Proceed => {}
            Decision::ReplaceOlder(older) => {
                for call in older {
                    let _ = self.commands.send(Command::Replaced(call)).await;
                }
            }
            Decision::RejectNewer => {
                tracing::info!(%mailbox, "mailbox in use by another call; login refused");
                self.flow.handle_in_use();
                let (mailbox, actor) = (mailbox.clone(), self.actor.clone());
                let now = Timestamp::now();
                self.record("a login refused as in use", move |store| {
                    store.record_in_use(&mailbox, &actor, now)
                });
            }
        }
    }

    /// Writes an audit record on the blocking pool without waiting for it: the call goes on
    /// at once even while another process holds the database (the write then waits up to
    /// the store's busy timeout). The call's next audit write and hashing job start after
    /// it, so its rows stay in the order of what happened. A failure is logged and counted.
    fn record(
        &mut self,
        what: &'static str,
        write: impl FnOnce(&Store) -> crate::store::Result<()> + Send + 'static,
    ) {
        let store = Arc::clone(&self.shared.store);
        let before = self.audit.take();
        let span = tracing::Span::current();
        // Held until written: a server stopping waits for it as for a passcode change.
        let in_flight = self.shared.writes_in_flight.subscribe();
        self.audit = Some(tokio::spawn(
            async move {
                let _in_flight = in_flight;
                after(before).await;
                if !matches!(blocking_in_call(move || write(&store)).await, Ok(Ok(()))) {
                    tracing::error!("could not audit {what}");
                    metrics::counter!("vportal_store_errors_total").increment(1);
                }
            }
            .instrument(span),
        ));
    }
}

/// Waits for the audit write `before`, if any (its failure is its own to report).
async fn after(before: Option<JoinHandle<()>>) {
    if let Some(before) = before {
        let _ = before.await;
    }
}

/// Runs `work` on the blocking pool in the current call's span: its log lines carry the
/// call's Call-ID, as the task's do.
fn blocking_in_call<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work))
}

/// Holds `work` as the call's store job: the only one, since the flow waits for each answer
/// before it asks for more (were one replaced, its answer would never reach the flow).
fn start(job: &mut Option<StoreJob>, work: StoreJob) {
    debug_assert!(job.is_none(), "the flow asked the store twice at once");
    *job = Some(work);
}

/// The result of the store work in flight; never resolves when there is none.
async fn wait(job: &mut Option<StoreJob>) -> StoreReply {
    let Some(handle) = job.as_mut() else {
        return std::future::pending().await;
    };
    let reply = handle.await;
    *job = None;
    reply.unwrap_or_else(|e| {
        tracing::error!(error = %e, "store task failed");
        StoreReply::Failed
    })
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server's shared state (its media thread running), on loopback ports of its own.
    async fn shared() -> Arc<Shared> {
        let server = crate::server::tests::server("33500-33598").await;
        Arc::clone(&server.shared)
    }

    #[tokio::test]
    async fn what_a_call_holds_is_released_when_its_task_panics() {
        let shared = shared().await;
        let (call, mailbox) = (CallHandle(7), Extension::parse("1001").unwrap());
        let task = {
            let (shared, mailbox) = (Arc::clone(&shared), mailbox.clone());
            tokio::spawn(async move {
                let _registered = Registered::new(
                    call,
                    &shared,
                    ActiveCall {
                        call_id: "a@127.0.0.1".to_owned(),
                        caller: None,
                        source: "127.0.0.1:5062".parse().unwrap(),
                        dialled: "8500".to_owned(),
                        mailbox: None,
                        state: "menu",
                        started_at: Timestamp::now(),
                    },
                );
                let logged_in =
                    shared
                        .sessions
                        .lock()
                        .unwrap()
                        .login(&mailbox, call, SessionRule::Reject);
                assert_eq!(logged_in, Decision::Proceed);
                assert_eq!(shared.calls.list().len(), 1);
                panic!("a bug in a call task");
            })
        };
        assert!(task.await.unwrap_err().is_panic());
        assert!(shared.calls.list().is_empty(), "still listed as active");
        let sessions = shared.sessions.lock().unwrap();
        assert!(
            sessions.holders(&mailbox).is_empty(),
            "the mailbox still in a call"
        );
    }
}
