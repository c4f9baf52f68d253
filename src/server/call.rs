//! One task per call: it binds the call's RTP port, answers, hands the socket to the media
//! thread, and follows the call: keys from the media thread (RFC 4733 events, in-band tones)
//! and from SIP INFO, prompts played through the media thread.
//!
//! The call flow proper comes with the IVR; for now an answered call plays the welcome and
//! mailbox prompts, collects keys until `#` (`*` starts over), says in the log which mailbox
//! was keyed, and asks again.

use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::Instrument;

use super::Shared;
use super::media::{MediaCommand, MediaEvent, PortLease};
use super::sip_task::Command;
use crate::media::digit::Digit;
use crate::media::dtmf_info;
use crate::media::player::{Item, Playback};
use crate::media::prompts::PromptSet;
use crate::sip::endpoint::{CallHandle, EndReason, IncomingCall};
use crate::sip::sdp::Negotiated;
use crate::store::Extension;

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
    /// The call is over.
    Ended(EndReason),
}

/// A call's RTP socket, bound (non-blocking) on a leased even port.
pub(crate) struct RtpPort {
    pub(crate) socket: StdUdpSocket,
    pub(crate) lease: PortLease,
}

/// Binds an even port from the range, skipping ports another program holds.
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
        let socket = StdUdpSocket::bind(SocketAddr::new(bind_ip, port))
            .and_then(|s| s.set_nonblocking(true).map(|()| s));
        match socket {
            Ok(socket) => return Some(RtpPort { socket, lease }),
            // Another program holds it: the lease gives it back, round-robin moves on.
            Err(e) => tracing::debug!(port, error = %e, "RTP port busy; trying the next"),
        }
    }
    None
}

/// Starts the task for a new call in `tasks`; returns the channel the SIP task feeds it
/// through.
pub(crate) fn spawn(
    incoming: IncomingCall,
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> (CallHandle, mpsc::UnboundedSender<CallEvent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = incoming.call;
    let span = tracing::info_span!("call", call_id = %incoming.call_id);
    tasks.spawn(run(incoming, shared, commands, rx).instrument(span));
    (handle, tx)
}

/// The interim flow: prompts for a mailbox number until the call ends.
struct MailboxPrompt {
    prompts: Arc<PromptSet>,
    entry: String,
    next_token: u64,
}

impl MailboxPrompt {
    fn playback(&mut self, ids: &[&str]) -> Playback {
        self.next_token += 1;
        Playback {
            items: ids
                .iter()
                .filter_map(|id| self.prompts.get(id).cloned())
                .map(Item::Prompt)
                .collect(),
            barge_in: true,
            token: self.next_token,
        }
    }

    /// A key: `Some(entry)` when `#` ends one.
    fn key(&mut self, digit: Digit) -> Option<String> {
        match digit {
            Digit::POUND => Some(std::mem::take(&mut self.entry)),
            Digit::STAR => {
                self.entry.clear();
                None
            }
            d if self.entry.len() < 32 => {
                self.entry.push(d.reveal());
                None
            }
            _ => None,
        }
    }
}

async fn run(
    incoming: IncomingCall,
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    mut events: mpsc::UnboundedReceiver<CallEvent>,
) {
    let call = incoming.call;
    let Some(rtp) = bind_rtp(&shared) else {
        tracing::warn!("no free RTP port; refusing the call");
        let _ = commands.send(Command::Reject(call, 503)).await;
        return;
    };
    let local = SocketAddr::new(shared.rtp_ip, rtp.lease.port);
    tracing::info!(
        from = incoming.from_user.as_deref().unwrap_or("-"),
        to = %incoming.request_user,
        source = %incoming.source,
        rtp = %local,
        "incoming call"
    );
    let language = shared
        .dialplan
        .routes()
        .get(incoming.route)
        .map_or("en", |r| r.settings.language.as_str());
    let Some(prompts) = shared.prompts.get(language).cloned() else {
        tracing::error!(
            language,
            "no prompts for this route's language; refusing the call"
        );
        let _ = commands.send(Command::Reject(call, 503)).await;
        return;
    };
    if commands.send(Command::Accept(call, local)).await.is_err() {
        return;
    }
    let (media_tx, mut media_rx) = mpsc::unbounded_channel();
    let mut flow = MailboxPrompt {
        prompts,
        entry: String::new(),
        next_token: 0,
    };
    // The socket goes to the media thread once the session is agreed.
    let mut rtp = Some(rtp);
    let mut keys = Vec::new();
    let end = loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(CallEvent::Media(media)) => {
                    tracing::debug!(codec = ?media.codec, remote = ?media.remote_rtp, dtmf_pt = ?media.telephone_event, direction = ?media.direction, ptime = media.ptime_ms, "media agreed");
                    match rtp.take() {
                        Some(RtpPort { socket, lease }) => {
                            shared.media(MediaCommand::Start {
                                call,
                                call_id: incoming.call_id.clone(),
                                socket,
                                lease,
                                media,
                                events: media_tx.clone(),
                            });
                            let welcome = flow.playback(&["welcome", "enter_mailbox"]);
                            shared.media(MediaCommand::Play(call, welcome));
                        }
                        None => shared.media(MediaCommand::Update(call, media)),
                    }
                }
                Some(CallEvent::Established) => tracing::debug!("call established"),
                Some(CallEvent::Info { content_type, body }) => {
                    keys.extend(dtmf_info::parse(&content_type, &body));
                }
                Some(CallEvent::Ended(reason)) => break reason,
                // The SIP task is gone: the server is stopping.
                None => break EndReason::Shutdown,
            },
            Some(event) = media_rx.recv() => match event {
                MediaEvent::Key(key) => keys.push(key),
                MediaEvent::PlaybackDone(token) => tracing::trace!(token, "playback ended"),
            },
        }
        for key in keys.drain(..) {
            tracing::debug!(digit = %key.digit, method = key.method.as_str(), "key pressed");
            shared.media(MediaCommand::BargeIn(call));
            if let Some(entry) = flow.key(key.digit) {
                report_mailbox(&shared, entry).await;
                let again = flow.playback(&["enter_mailbox"]);
                shared.media(MediaCommand::Play(call, again));
            }
        }
    };
    shared.media(MediaCommand::End(call));
    tracing::info!(reason = ?end, "call ended");
}

/// Logs which mailbox was keyed. Mailbox numbers are not secrets, but a caller sometimes
/// keys a passcode at the mailbox prompt: only numbers of existing mailboxes are logged.
async fn report_mailbox(shared: &Arc<Shared>, entry: String) {
    let Ok(extension) = Extension::parse(&entry) else {
        tracing::info!(keys = entry.len(), "entry is not a mailbox number");
        return;
    };
    let store = Arc::clone(&shared.store);
    let lookup = tokio::task::spawn_blocking(move || {
        let exists = store.user(&extension, crate::time::Timestamp::now());
        (extension, exists)
    })
    .await;
    match lookup {
        Ok((extension, Ok(Some(_)))) => tracing::info!(mailbox = %extension, "mailbox keyed"),
        Ok((_, Ok(None))) => tracing::info!(keys = entry.len(), "unknown mailbox keyed"),
        Ok((_, Err(e))) => tracing::warn!(error = %e, "mailbox lookup failed"),
        Err(e) => tracing::warn!(error = %e, "mailbox lookup task failed"),
    }
}
