//! One task per call: it owns the call's RTP socket and follows the call's events.
//!
//! Until media and the call flow exist, an answered call simply stays up until BYE or the
//! duration cap (the endpoint enforces both).

use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::Shared;
use super::sip_task::Command;
use crate::sip::endpoint::{CallHandle, EndReason, IncomingCall};
use crate::sip::sdp::Negotiated;

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

/// An RTP port, given back to the range when dropped.
pub(crate) struct RtpPort {
    pub(crate) socket: UdpSocket,
    port: u16,
    shared: Arc<Shared>,
}

impl Drop for RtpPort {
    fn drop(&mut self) {
        if let Ok(mut ports) = self.shared.ports.lock() {
            ports.release(self.port);
        }
    }
}

/// Binds an even port from the range, skipping ports another program holds.
pub(crate) fn bind_rtp(shared: &Arc<Shared>) -> Option<RtpPort> {
    let bind_ip = match shared.rtp_ip {
        IpAddr::V4(_) => IpAddr::from([0, 0, 0, 0]),
        IpAddr::V6(_) => IpAddr::from([0_u16; 8]),
    };
    // The advertised address itself when it is loopback (tests, local use), else all
    // interfaces of its family.
    let bind_ip = if shared.rtp_ip.is_loopback() {
        shared.rtp_ip
    } else {
        bind_ip
    };
    for _ in 0..64 {
        let port = shared.ports.lock().ok()?.allocate()?;
        match StdUdpSocket::bind(SocketAddr::new(bind_ip, port)) {
            Ok(std_socket) => {
                let socket = std_socket
                    .set_nonblocking(true)
                    .ok()
                    .and_then(|()| UdpSocket::from_std(std_socket).ok());
                match socket {
                    Some(socket) => {
                        return Some(RtpPort {
                            socket,
                            port,
                            shared: Arc::clone(shared),
                        });
                    }
                    None => {
                        if let Ok(mut p) = shared.ports.lock() {
                            p.release(port);
                        }
                    }
                }
            }
            Err(e) => {
                // Another program holds it; round-robin moves on, so give it back.
                tracing::debug!(port, error = %e, "RTP port busy; trying the next");
                if let Ok(mut p) = shared.ports.lock() {
                    p.release(port);
                }
            }
        }
    }
    None
}

/// Starts the task for a new call; returns the channel the SIP task feeds it through.
pub(crate) fn spawn(
    incoming: IncomingCall,
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
) -> (CallHandle, mpsc::UnboundedSender<CallEvent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = incoming.call;
    let span = tracing::info_span!("call", call_id = %incoming.call_id);
    tokio::spawn(run(incoming, shared, commands, rx).instrument(span));
    (handle, tx)
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
    let local = SocketAddr::new(shared.rtp_ip, rtp.port);
    tracing::info!(
        from = incoming.from_user.as_deref().unwrap_or("-"),
        to = %incoming.request_user,
        source = %incoming.source,
        rtp = %local,
        "incoming call"
    );
    if commands.send(Command::Accept(call, local)).await.is_err() {
        return;
    }
    let mut packet = [0_u8; 2_048];
    let mut received = 0_u64;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(CallEvent::Media(media)) => {
                    tracing::debug!(codec = ?media.codec, remote = ?media.remote_rtp, direction = ?media.direction, "media agreed");
                }
                Some(CallEvent::Established) => tracing::debug!("call established"),
                Some(CallEvent::Info { content_type, body }) => {
                    tracing::debug!(%content_type, len = body.len(), "INFO received");
                }
                Some(CallEvent::Ended(reason)) => {
                    tracing::info!(?reason, rtp_packets = received, "call ended");
                    break;
                }
                None => break,
            },
            // Until media is handled, incoming RTP is read and discarded so the socket
            // buffer never fills.
            Ok(_) = rtp.socket.recv_from(&mut packet) => received += 1,
        }
    }
    drop(rtp);
}
