//! The task that owns the SIP endpoint.
//!
//! The run loop is str0m's: wait for one input (a datagram, a command, the next deadline),
//! feed it to the endpoint, drain everything it wants sent and everything that happened,
//! and go back to waiting.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::call::{self, CallEvent};
use super::tcp::Connection;
use super::{ServerError, Shared};
use crate::admin::metrics::count_sip;
use crate::sip::Message;
use crate::sip::endpoint::{CallError, CallHandle, ConnId, Endpoint, Event, Transmit, Transport};

/// Largest datagram read (the largest UDP payload).
const MAX_DATAGRAM: usize = 65_535;

/// Datagrams read, or commands taken, in one go before the endpoint's output is drained.
const RECV_BATCH: usize = 64;

/// What other tasks ask of the SIP task.
#[derive(Debug)]
pub enum Command {
    /// A TCP connection opened: where its outgoing bytes go, and its count of calls.
    TcpOpened(ConnId, Connection),
    /// A framed message arrived on a TCP connection.
    TcpMessage(ConnId, SocketAddr, Box<Message>),
    /// A TCP connection closed.
    TcpClosed(ConnId),
    /// A TCP connection waits to read more: fire this once the messages it sent before
    /// were handled and their answers queued.
    TcpSync(oneshot::Sender<()>),
    /// A call's task wants the call ended.
    Hangup(CallHandle),
    /// A call's task could not set up media: refuse the call with this status and reason.
    Reject(CallHandle, u16, &'static str),
    /// A call's task has its RTP socket: answer the call.
    Accept(CallHandle, SocketAddr),
    /// A newer call logged in to this call's mailbox: tell it so (it then ends).
    Replaced(CallHandle),
}

pub(crate) struct SipTask {
    endpoint: Endpoint,
    udp: Option<UdpSocket>,
    commands: mpsc::Receiver<Command>,
    command_tx: mpsc::Sender<Command>,
    connections: HashMap<ConnId, Connection>,
    /// The connection each call's dialog came in on, for calls that came over TCP (the one
    /// it runs on is that, or the one opened in its place: see `reopened`).
    call_connections: HashMap<CallHandle, ConnId>,
    /// Connections that closed with messages still to go, and the one opened to the same
    /// peer for them (RFC 3261 §18.2.2): later messages for the closed one go there too,
    /// rather than each opening another. Forgotten when that one closes.
    reopened: HashMap<ConnId, ConnId>,
    /// TCP connections waiting for what they sent to be handled: told after the next drain.
    synced: Vec<oneshot::Sender<()>>,
    /// Messages dropped because their connection's queue was full, for the log.
    dropped: super::tcp::LogThrottle,
    /// The endpoint's counters as last exported to the metrics.
    exported: Exported,
    calls: HashMap<CallHandle, mpsc::UnboundedSender<CallEvent>>,
    /// The call tasks, so shutdown can wait for them to finish.
    call_tasks: tokio::task::JoinSet<()>,
    /// Which call each task serves, to end a call whose task failed.
    task_calls: HashMap<tokio::task::Id, CallHandle>,
    shared: Arc<Shared>,
    shutdown_grace: Duration,
}

impl SipTask {
    pub(crate) fn new(
        endpoint: Endpoint,
        udp: Option<UdpSocket>,
        commands: mpsc::Receiver<Command>,
        command_tx: mpsc::Sender<Command>,
        shared: Arc<Shared>,
        shutdown_grace: Duration,
    ) -> Self {
        Self {
            endpoint,
            udp,
            commands,
            command_tx,
            connections: HashMap::new(),
            call_connections: HashMap::new(),
            reopened: HashMap::new(),
            dropped: super::tcp::LogThrottle::default(),
            synced: Vec::new(),
            exported: Exported::default(),
            calls: HashMap::new(),
            call_tasks: tokio::task::JoinSet::new(),
            task_calls: HashMap::new(),
            shared,
            shutdown_grace,
        }
    }

    pub(crate) async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), ServerError> {
        let mut buf = vec![0_u8; MAX_DATAGRAM];
        let media_stopped = self.shared.media_stopped();
        tokio::pin!(shutdown, media_stopped);
        let mut stopping: Option<Instant> = None;
        let mut result = Ok(());
        loop {
            let deadline = self
                .endpoint
                .poll_timeout()
                .map(Instant::from_std)
                .or(stopping)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3_600));
            let deadline = match stopping {
                Some(stop) => deadline.min(stop),
                None => deadline,
            };
            tokio::select! {
                biased;
                () = &mut shutdown, if stopping.is_none() => {
                    tracing::info!(calls = self.endpoint.active_calls(), "shutting down: no new calls, hanging up");
                    stopping = Some(self.stop());
                }
                () = &mut media_stopped, if stopping.is_none() => {
                    tracing::error!(calls = self.endpoint.active_calls(), "the media thread stopped; shutting down: no new calls, hanging up");
                    result = Err(ServerError::MediaStopped);
                    stopping = Some(self.stop());
                }
                // Reaped as it ends (ahead of datagrams, so a flood cannot hold it back): a
                // failed task's call is ended at once, its 480 or BYE drained below.
                Some(result) = self.call_tasks.join_next_with_id(), if !self.call_tasks.is_empty() => {
                    self.task_ended(result);
                }
                received = recv(self.udp.as_ref(), &mut buf) => {
                    if let Ok((n, from)) = received {
                        let now = Instant::now().into_std();
                        count_sip("in", &buf[..n]);
                        self.endpoint.handle_datagram(now, from, buf[..n].to_vec());
                        // More may be waiting: take a batch before draining output.
                        if let Some(udp) = &self.udp {
                            for _ in 1..RECV_BATCH {
                                match udp.try_recv_from(&mut buf) {
                                    Ok((n, from)) => {
                                        count_sip("in", &buf[..n]);
                                        self.endpoint.handle_datagram(now, from, buf[..n].to_vec());
                                    }
                                    Err(_) => break,
                                }
                            }
                        }
                    }
                }
                Some(command) = self.commands.recv() => self.command(command),
                () = tokio::time::sleep_until(deadline) => {}
            }
            // Whichever branch woke the loop, timers that are due fire and a batch of the
            // commands waiting is taken: a flood of datagrams, always ready first, must not
            // hold back SIP over TCP, the call tasks' answers or the retransmission timers.
            if Instant::now() >= deadline {
                self.endpoint.handle_timeout(Instant::now().into_std());
            }
            for _ in 0..RECV_BATCH {
                match self.commands.try_recv() {
                    Ok(command) => self.command(command),
                    Err(_) => break,
                }
            }
            self.drain().await;
            for done in self.synced.drain(..) {
                let _ = done.send(());
            }
            self.exported.update(self.endpoint.stats());
            if let Some(stop) = stopping
                && (self.endpoint.is_idle() || Instant::now() >= stop)
            {
                let remaining = self.endpoint.active_calls();
                let unanswered = self.endpoint.unanswered_byes();
                if unanswered > 0 {
                    // The grace ran out: those callers may not know their call ended.
                    tracing::warn!(
                        remaining,
                        unanswered_byes = unanswered,
                        "SIP stopped with BYEs unanswered after sip.shutdown_grace"
                    );
                } else {
                    tracing::info!(remaining, "SIP stopped");
                }
                // Closing the call channels ends the calls still up; give their tasks a
                // moment to finish (and log) before the process exits.
                self.calls.clear();
                let wait = tokio::time::timeout(Duration::from_secs(2), async {
                    while self.call_tasks.join_next().await.is_some() {}
                });
                let _ = wait.await;
                // Changes still waiting for the hashing core (a long queue of logins),
                // and audit rows still being written, are stored before the process exits,
                // however long that takes.
                let writes = self.shared.writes_in_flight.receiver_count();
                if writes > 0 {
                    tracing::info!(
                        writes,
                        "storing the passcode changes callers confirmed and the audit rows still being written"
                    );
                    self.shared.writes_in_flight.closed().await;
                }
                return result;
            }
        }
    }

    /// Stops taking calls and hangs up the active ones; returns when to stop waiting for
    /// them.
    fn stop(&mut self) -> Instant {
        self.endpoint.shutdown(Instant::now().into_std());
        Instant::now() + self.shutdown_grace
    }

    fn command(&mut self, command: Command) {
        let now = Instant::now().into_std();
        match command {
            Command::TcpOpened(conn, connection) => {
                self.connections.insert(conn, connection);
            }
            Command::TcpMessage(conn, from, msg) => {
                count_sip("in", msg.as_bytes());
                self.endpoint
                    .handle_message(now, Transport::Tcp(conn), from, *msg);
            }
            Command::TcpClosed(conn) => {
                self.connections.remove(&conn);
                self.reopened.retain(|_, to| *to != conn);
            }
            Command::TcpSync(done) => self.synced.push(done),
            Command::Hangup(call) => self.endpoint.hangup(call, now),
            Command::Reject(call, code, reason) => {
                let _ = self.endpoint.reject(call, code, reason, now);
            }
            Command::Replaced(call) => self.to_call(call, CallEvent::Replaced),
            Command::Accept(call, media) => match self.endpoint.accept(call, media, now) {
                Ok(()) => {}
                Err(e @ CallError::NotAcceptable) => {
                    tracing::info!(?call, error = %e, "call not answered");
                }
                Err(e) => {
                    tracing::debug!(?call, error = %e, "call gone before it could be answered");
                }
            },
        }
    }

    /// A call task ended. One that failed (a bug: it panicked) leaves its call behind; that
    /// call is ended, BYE or 480, so neither the caller nor a `max_calls` slot waits for it.
    /// (What the call held besides, the task's own guard released as it unwound.)
    fn task_ended(&mut self, result: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        if let Some((call, true)) = started_for(result, &mut self.task_calls)
            && self.calls.remove(&call).is_some()
        {
            tracing::error!(?call, "a call's task failed; ending the call");
            self.endpoint.hangup(call, Instant::now().into_std());
        }
    }

    /// Sends what the endpoint produced and hands its events to the calls.
    async fn drain(&mut self) {
        while let Some(t) = self.endpoint.poll_transmit() {
            self.transmit(t).await;
        }
        while let Some(event) = self.endpoint.poll_event() {
            match event {
                Event::IncomingCall(incoming) => {
                    if let Transport::Tcp(conn) = incoming.transport
                        && let Some(connection) = self.connections.get(&conn)
                    {
                        connection.calls.fetch_add(1, Ordering::Relaxed);
                        self.call_connections.insert(incoming.call, conn);
                    }
                    let (call, events, task) = call::spawn(
                        incoming,
                        Arc::clone(&self.shared),
                        self.command_tx.clone(),
                        &mut self.call_tasks,
                    );
                    self.calls.insert(call, events);
                    self.task_calls.insert(task, call);
                }
                Event::Media { call, media } => self.to_call(call, CallEvent::Media(media)),
                Event::Established { call } => self.to_call(call, CallEvent::Established),
                Event::Info {
                    call,
                    content_type,
                    body,
                } => self.to_call(call, CallEvent::Info { content_type, body }),
                Event::Ended { call, reason } => {
                    if let Some(conn) = self.call_connections.remove(&call)
                        && let Some(connection) = self.connections.get(&self.live(conn))
                    {
                        connection.calls.fetch_sub(1, Ordering::Relaxed);
                    }
                    if let Some(tx) = self.calls.remove(&call) {
                        let _ = tx.send(CallEvent::Ended(reason));
                    }
                }
            }
        }
    }

    fn to_call(&self, call: CallHandle, event: CallEvent) {
        if let Some(tx) = self.calls.get(&call) {
            let _ = tx.send(event);
        }
    }

    async fn transmit(&mut self, t: Transmit) {
        count_sip("out", &t.payload);
        match t.transport {
            Transport::Udp => {
                let Some(udp) = &self.udp else { return };
                match udp.try_send_to(&t.payload, t.destination) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if let Err(e) = udp.send_to(&t.payload, t.destination).await {
                            tracing::warn!(to = %t.destination, error = %e, "SIP send failed");
                        }
                    }
                    Err(e) => tracing::debug!(to = %t.destination, error = %e, "SIP send failed"),
                }
            }
            Transport::Tcp(flow) => {
                let conn = self.live(flow);
                let payload = match self.connections.get(&conn) {
                    Some(connection) => match connection.outbox.try_send(t.payload) {
                        Ok(()) => return,
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            metrics::counter!("vportal_sip_dropped_total", "reason" => "tcp_backlog")
                                .increment(1);
                            if let Some(dropped) = self.dropped.occurred(Instant::now()) {
                                tracing::warn!(
                                    ?conn,
                                    dropped,
                                    "TCP connection not keeping up; messages dropped"
                                );
                            }
                            return;
                        }
                        // Closed, its `TcpClosed` not yet seen.
                        Err(mpsc::error::TrySendError::Closed(payload)) => {
                            self.connections.remove(&conn);
                            payload
                        }
                    },
                    None => t.payload,
                };
                // The connection is gone: open a new one to the destination, which is the
                // peer's own address (§18.2.2), never a name from a message.
                let Some((new, connection)) = super::tcp::connect_and_send(
                    t.destination,
                    payload,
                    self.command_tx.clone(),
                    Arc::clone(&self.shared),
                ) else {
                    return;
                };
                // What went to the closed one goes to the new one now.
                for to in self.reopened.values_mut().filter(|to| **to == conn) {
                    *to = new;
                }
                self.reopened.insert(flow, new);
                // The calls that ran on the closed one run on the new one: it stays open
                // while they last, as theirs did.
                let calls = self
                    .call_connections
                    .values()
                    .filter(|&&came_on| self.live(came_on) == new)
                    .count();
                connection.calls.fetch_add(calls, Ordering::Relaxed);
                self.connections.insert(new, connection);
            }
        }
    }

    /// The connection messages for the flow `conn` go on: itself, or the one opened in its
    /// place after it closed.
    fn live(&self, conn: ConnId) -> ConnId {
        self.reopened.get(&conn).copied().unwrap_or(conn)
    }
}

/// Waits for a datagram, or forever when UDP is off.
async fn recv(udp: Option<&UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match udp {
        Some(u) => u.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// What a finished task was started for (taken from `started_for`, by task id) and whether
/// it failed (panicked or was cancelled).
fn started_for<T>(
    result: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
    started_for: &mut HashMap<tokio::task::Id, T>,
) -> Option<(T, bool)> {
    let (id, failed) = match result {
        Ok((id, ())) => (id, false),
        Err(e) => (e.id(), true),
    };
    started_for.remove(&id).map(|what| (what, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_panicked_is_reported_as_failed_with_what_it_was_for() {
        let mut tasks = tokio::task::JoinSet::new();
        let mut started_for = HashMap::new();
        started_for.insert(tasks.spawn(async {}).id(), "ends");
        let bug = tasks.spawn(async { panic!("a bug in a call task") });
        started_for.insert(bug.id(), "panics");
        started_for.insert(tasks.spawn(std::future::pending()).id(), "runs on");
        let mut done = Vec::new();
        for _ in 0..100 {
            tokio::task::yield_now().await;
            while let Some(result) = tasks.try_join_next_with_id() {
                done.extend(super::started_for(result, &mut started_for));
            }
            if done.len() == 2 {
                break;
            }
        }
        done.sort_unstable();
        assert_eq!(done, [("ends", false), ("panics", true)]);
        assert_eq!(started_for.into_values().collect::<Vec<_>>(), ["runs on"]);
        assert_eq!(tasks.len(), 1);
    }
}

/// The endpoint's own counters, mirrored into the metrics when they change.
#[derive(Debug, Default)]
struct Exported {
    dropped: u64,
    unkept: u64,
    refused: crate::sip::endpoint::RefusedCalls,
}

impl Exported {
    fn update(&mut self, stats: &crate::sip::endpoint::Stats) {
        if stats.dropped != self.dropped {
            self.dropped = stats.dropped;
            metrics::counter!("vportal_sip_dropped_total", "reason" => "unanswerable")
                .absolute(stats.dropped);
        }
        if stats.unkept != self.unkept {
            self.unkept = stats.unkept;
            metrics::counter!("vportal_sip_unkept_total").absolute(stats.unkept);
        }
        if stats.refused != self.refused {
            self.refused = stats.refused.clone();
            for (reason, count) in self.refused.by_reason() {
                metrics::counter!("vportal_calls_refused_total", "reason" => reason)
                    .absolute(count);
            }
        }
    }
}
