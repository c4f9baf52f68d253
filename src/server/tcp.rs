//! SIP over TCP: a task per connection frames the byte stream into messages for the SIP
//! task and writes what the SIP task sends back.
//!
//! A connection stops reading when its framing breaks (a bad Content-Length, an oversized
//! header section) or the peer ends its stream; the answers still due for what it sent go
//! out first, then it closes. It is closed when it sits idle too long (unless a call's
//! dialog runs on it), when half a message waits too long (RFC 4475 §3.1.2.2: a
//! Content-Length larger than what comes, or bytes trickling in), and when the peer stops
//! reading what is written to it.
//!
//! A connection reads no more until the SIP task has handled what it last read
//! ([`Command::TcpSync`]), and writes what is queued before it reads: a peer that pipelines
//! a burst is slowed by TCP's own flow control rather than have its answers overflow the
//! connection's queue, which the SIP task, serving every connection, cannot wait on.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::Shared;
use super::sip_task::Command;
use crate::sip::StreamFramer;
use crate::sip::endpoint::ConnId;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Outgoing messages queued per connection before the connection counts as stuck. What
/// one read brings in, at most [`READ_BUFFER`] bytes (some 160 requests of a hundred bytes,
/// about the smallest one can be), is answered before the next read: only a peer that does
/// not read its answers fills it.
const OUTBOX: usize = 256;

/// Bytes taken from the socket at once.
const READ_BUFFER: usize = 16 * 1024;

/// Queued messages written out in one go, up to this many bytes.
const WRITE_BATCH: usize = 64 * 1024;

/// How long one write may wait for a peer that does not read before the connection closes.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// After the peer stops sending (end of stream, or framing that broke) within this long of
/// its last message, the connection stays open for the answers still to come, and closes
/// after this long with nothing to write. A peer quiet for longer is closed at once.
const LINGER: Duration = Duration::from_secs(2);

/// Counts a recurring condition and says when to log it: at its first occurrence, then at
/// most once per [`Self::EVERY`], with how many occurred since. A flood of refused
/// connections or dropped messages must not become a flood of log lines.
#[derive(Debug, Default)]
pub(crate) struct LogThrottle {
    count: u64,
    logged_at: Option<Instant>,
}

impl LogThrottle {
    pub(crate) const EVERY: Duration = Duration::from_secs(10);

    /// One more occurrence at `now`: the count to log (this one included) if a line is due.
    pub(crate) fn occurred(&mut self, now: Instant) -> Option<u64> {
        self.count += 1;
        if self
            .logged_at
            .is_some_and(|t| now.saturating_duration_since(t) < Self::EVERY)
        {
            return None;
        }
        self.logged_at = Some(now);
        Some(std::mem::take(&mut self.count))
    }
}

/// What the SIP task holds of an open connection.
#[derive(Debug)]
pub struct Connection {
    /// Messages to write on it.
    pub(crate) outbox: mpsc::Sender<Vec<u8>>,
    /// How many calls' dialogs run on it (kept by the SIP task): while any do, it is not
    /// closed for being idle.
    pub(crate) calls: Arc<AtomicUsize>,
}

/// One server's TCP connections, accepted and opened, counted against its limits.
#[derive(Debug)]
pub(crate) struct TcpSlots {
    /// `max_tcp_connections`.
    max: usize,
    /// `max_tcp_connections_per_source`; 0: no limit.
    per_source: usize,
    open: AtomicUsize,
    /// Open connections by client (an IPv4 address or an IPv6 /64,
    /// [`crate::net::client_key`]), when sources are limited.
    by_source: Mutex<HashMap<crate::net::Client, usize>>,
}

impl TcpSlots {
    pub(crate) fn new(max: usize, per_source: usize) -> Self {
        Self {
            max,
            per_source,
            open: AtomicUsize::new(0),
            by_source: Mutex::default(),
        }
    }
}

/// One of the `max_tcp_connections` slots (and, when limited, of its source's), given back
/// when dropped.
struct Slot {
    slots: Arc<TcpSlots>,
    /// The source whose count this slot holds, when sources are limited.
    source: Option<crate::net::Client>,
}

impl Slot {
    fn take(slots: &Arc<TcpSlots>, peer: IpAddr) -> Option<Self> {
        let peer = crate::net::client_key(peer);
        slots
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < slots.max).then_some(open + 1)
            })
            .ok()?;
        let mut slot = Self {
            slots: Arc::clone(slots),
            source: None,
        };
        if slots.per_source > 0 {
            let mut counts = slots
                .by_source
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let count = counts.entry(peer).or_insert(0);
            if *count >= slots.per_source {
                return None; // dropping `slot` gives the overall one back
            }
            *count += 1;
            slot.source = Some(peer);
        }
        Some(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(source) = self.source {
            let mut counts = self
                .slots
                .by_source
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = counts.get_mut(&source) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&source);
                }
            }
        }
    }
}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
) {
    let mut refusals = LogThrottle::default();
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Some(slot) = Slot::take(&shared.tcp_slots, peer.ip()) else {
                    drop(stream);
                    metrics::counter!("vportal_sip_dropped_total", "reason" => "tcp_connection")
                        .increment(1);
                    if let Some(refused) = refusals.occurred(Instant::now()) {
                        tracing::warn!(%peer, refused, "too many TCP connections; refusing new ones");
                    }
                    continue;
                };
                let (flow, connection) = Flow::open();
                let commands = commands.clone();
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let conn = flow.conn;
                    if commands
                        .send(Command::TcpOpened(conn, connection))
                        .await
                        .is_ok()
                    {
                        serve(stream, peer, slot, flow, commands, shared, Opened::ByPeer).await;
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One connection's end, as its task holds it.
struct Flow {
    conn: ConnId,
    /// What the SIP task sends on it.
    outbox: mpsc::Receiver<Vec<u8>>,
    /// How many calls' dialogs run on it.
    calls: Arc<AtomicUsize>,
}

impl Flow {
    /// A new connection's end, and the SIP task's handle for it.
    fn open() -> (Self, Connection) {
        let conn = ConnId(NEXT_CONN.fetch_add(1, Ordering::Relaxed));
        let (tx, outbox) = mpsc::channel::<Vec<u8>>(OUTBOX);
        let calls = Arc::new(AtomicUsize::new(0));
        let connection = Connection {
            outbox: tx,
            calls: Arc::clone(&calls),
        };
        (
            Self {
                conn,
                outbox,
                calls,
            },
            connection,
        )
    }
}

/// Opens a connection to `peer` to deliver `payload` (the peer's earlier connection closed),
/// then serves it like any other; returns its handle at once, so that what the SIP task
/// sends to the peer next queues on it while it connects, rather than opening another.
/// Counts against `max_tcp_connections` like the others; `None` when no slot is free. If
/// the connection cannot be made, `TcpClosed` says so.
pub(crate) fn connect_and_send(
    peer: SocketAddr,
    payload: Vec<u8>,
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
) -> Option<(ConnId, Connection)> {
    let Some(slot) = Slot::take(&shared.tcp_slots, peer.ip()) else {
        tracing::debug!(%peer, "too many TCP connections to reconnect for a SIP message");
        return None;
    };
    let (flow, connection) = Flow::open();
    let conn = flow.conn;
    // The outbox is new and holds more than one: this cannot fail.
    let _ = connection.outbox.try_send(payload);
    tokio::spawn(async move {
        // An IPv4 caller on a dual-stack listener is an IPv4-mapped address there; a new
        // socket reaches it as IPv4, which works whatever `net.ipv6.bindv6only` says.
        let to = crate::net::canonical(peer);
        let connect = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(to)).await;
        match connect {
            Ok(Ok(stream)) => serve(stream, peer, slot, flow, commands, shared, Opened::ByUs).await,
            _ => {
                tracing::debug!(%peer, "could not reconnect to deliver a SIP message");
                let _ = commands.send(Command::TcpClosed(conn)).await;
            }
        }
    });
    Some((conn, connection))
}

/// Who opened a connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Opened {
    /// The peer: it has something to send, and `tcp_message_timeout` to send it whole.
    ByPeer,
    /// vportal, to send something: the peer owes it nothing.
    ByUs,
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    _slot: Slot,
    flow: Flow,
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    opened: Opened,
) {
    let Flow {
        conn,
        mut outbox,
        calls,
    } = flow;
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let mut framer = StreamFramer::new();
    let mut buf = vec![0_u8; READ_BUFFER];
    let idle = shared.tcp_idle_timeout;
    let whole = shared.tcp_message_timeout;
    // Whether the peer may still send; once not, only answers still due go out.
    let mut reading = true;
    let mut last_activity = Instant::now();
    // Until the peer's first whole message, a connection it opened has `whole` to bring it
    // (a keepalive ping is no message: it would let a host hold the slot with nothing).
    let mut first_by = (opened == Opened::ByPeer).then(|| last_activity + whole);
    // When the message now partly received began: it must be complete within `whole` of
    // that, however slowly its bytes trickle in (RFC 4475 §3.1.2.2).
    let mut partial_since: Option<Instant> = None;
    // When the last message went to the SIP task: only then can answers still be due.
    let mut last_request: Option<Instant> = None;
    // Set once what was last read went to the SIP task: fires when it has been handled and
    // its answers queued. No more is read until then.
    let mut handled: Option<oneshot::Receiver<()>> = None;
    loop {
        let deadline = if reading {
            let idle_end = last_activity + idle;
            let idle_end = first_by.map_or(idle_end, |first| idle_end.min(first));
            partial_since.map_or(idle_end, |p| idle_end.min(p + whole))
        } else {
            last_activity + LINGER
        };
        tokio::select! {
            // Answers first: a peer reading them makes room for the next read's.
            biased;
            Some(bytes) = outbox.recv() => {
                let mut batch = bytes;
                while batch.len() < WRITE_BATCH {
                    match outbox.try_recv() {
                        Ok(more) => batch.extend_from_slice(&more),
                        Err(_) => break,
                    }
                }
                match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&batch)).await {
                    Ok(Ok(())) => last_activity = Instant::now(),
                    Ok(Err(_)) => break,
                    Err(_) => {
                        tracing::debug!(%peer, "TCP peer not reading; closing");
                        break;
                    }
                }
            }
            // The SIP task has handled the last read (or is gone: reading finds out).
            _ = async {
                match handled.as_mut() {
                    Some(wait) => {
                        let _ = wait.await;
                    }
                    None => std::future::pending().await,
                }
            }, if handled.is_some() => {
                handled = None;
            }
            read = reader.read(&mut buf), if reading && handled.is_none() => {
                let n = match read {
                    Ok(0) | Err(_) => {
                        if last_request.is_none_or(|t| t.elapsed() >= LINGER) {
                            break;
                        }
                        reading = false;
                        last_activity = Instant::now();
                        continue;
                    }
                    Ok(n) => n,
                };
                last_activity = Instant::now();
                framer.push(&buf[..n]);
                let mut forwarded = false;
                loop {
                    match framer.next_message() {
                        Ok(Some(msg)) => {
                            partial_since = None;
                            first_by = None;
                            last_request = Some(Instant::now());
                            if commands.send(Command::TcpMessage(conn, peer, Box::new(msg))).await.is_err() {
                                reading = false;
                                break;
                            }
                            forwarded = true;
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "unframeable SIP over TCP; closing");
                            reading = false;
                            break;
                        }
                    }
                }
                if forwarded {
                    let (done, wait) = oneshot::channel();
                    if commands.send(Command::TcpSync(done)).await.is_ok() {
                        handled = Some(wait);
                    }
                }
                // RFC 5626 §4.4.1: a double-CRLF ping is answered with one CRLF, the pong.
                if framer.take_pings() > 0 {
                    match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(b"\r\n")).await {
                        Ok(Ok(())) => {}
                        _ => break,
                    }
                }
                if framer.buffered() == 0 {
                    partial_since = None;
                } else if partial_since.is_none() {
                    partial_since = Some(last_activity);
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                // Quiet, but a call's dialog runs on it: the caller's BYE or ours will come
                // on it, and a caller behind NAT could not take a new connection from us.
                // Half a message is still timed out.
                if reading && partial_since.is_none() && calls.load(Ordering::Relaxed) > 0 {
                    last_activity = Instant::now();
                    first_by = None;
                    continue;
                }
                if reading {
                    tracing::debug!(%peer, partial = framer.buffered(), "TCP connection idle; closing");
                }
                break;
            }
        }
    }
    let _ = commands.send(Command::TcpClosed(conn)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_logged_once_per_period_with_its_count() {
        let t0 = Instant::now();
        let mut t = LogThrottle::default();
        assert_eq!(t.occurred(t0), Some(1), "the first is logged at once");
        for i in 1..1_000 {
            assert_eq!(t.occurred(t0 + Duration::from_millis(i)), None);
        }
        // The next after the period carries the count since the last line, itself included.
        assert_eq!(t.occurred(t0 + LogThrottle::EVERY), Some(1_000));
        assert_eq!(t.occurred(t0 + LogThrottle::EVERY), None);
        assert_eq!(t.occurred(t0 + LogThrottle::EVERY * 3), Some(2));
    }

    #[test]
    fn each_server_counts_only_its_own_connections() {
        let one: IpAddr = "127.0.0.1".parse().unwrap();
        let two: IpAddr = "127.0.0.2".parse().unwrap();
        // Two servers in one process, one connection each at most.
        let (a, b) = (Arc::new(TcpSlots::new(1, 0)), Arc::new(TcpSlots::new(1, 0)));
        let held = Slot::take(&a, one).unwrap();
        assert!(Slot::take(&a, two).is_none());
        assert!(Slot::take(&b, one).is_some(), "a's connection is not b's");
        drop(held);
        assert!(Slot::take(&a, one).is_some());
        // One per source: a second from the same source is refused and gives back the
        // overall slot it took on the way.
        let c = Arc::new(TcpSlots::new(3, 1));
        let first = Slot::take(&c, one).unwrap();
        assert!(Slot::take(&c, one).is_none());
        assert_eq!(c.open.load(Ordering::Acquire), 1);
        let other = Slot::take(&c, two).unwrap();
        drop((first, other));
        assert_eq!(c.open.load(Ordering::Acquire), 0);
        assert!(c.by_source.lock().unwrap().is_empty());
    }
}
