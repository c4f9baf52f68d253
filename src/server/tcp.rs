//! SIP over TCP: a task per connection frames the byte stream into messages for the SIP
//! task and writes what the SIP task sends back.
//!
//! A connection is closed when its framing breaks (a bad Content-Length, an oversized
//! header section), when it sits idle too long, or when half a message waits too long
//! (RFC 4475 §3.1.2.2: a Content-Length larger than what comes).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::Shared;
use super::sip_task::Command;
use crate::sip::StreamFramer;
use crate::sip::endpoint::ConnId;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// Outgoing messages queued per connection before the connection counts as stuck.
const OUTBOX: usize = 256;

pub(crate) async fn accept_loop(
    listener: TcpListener,
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if OPEN.load(Ordering::Relaxed) >= shared.max_tcp_connections {
                    tracing::warn!(%peer, "too many TCP connections; refusing one");
                    drop(stream);
                    continue;
                }
                tokio::spawn(serve(stream, peer, commands.clone(), Arc::clone(&shared)));
            }
            Err(e) => {
                tracing::warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Opens a connection to `peer` to deliver `payload` (the peer's earlier connection closed),
/// then serves it like any other.
pub(crate) fn connect_and_send(
    peer: SocketAddr,
    payload: Vec<u8>,
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
) {
    tokio::spawn(async move {
        let connect =
            tokio::time::timeout(std::time::Duration::from_secs(5), TcpStream::connect(peer)).await;
        match connect {
            Ok(Ok(mut stream)) => {
                if stream.write_all(&payload).await.is_ok() {
                    serve(stream, peer, commands, shared).await;
                }
            }
            _ => tracing::debug!(%peer, "could not reconnect to deliver a SIP message"),
        }
    });
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
) {
    let conn = ConnId(NEXT_CONN.fetch_add(1, Ordering::Relaxed));
    OPEN.fetch_add(1, Ordering::Relaxed);
    let _ = stream.set_nodelay(true);
    let (tx, mut outbox) = mpsc::channel::<Vec<u8>>(OUTBOX);
    if commands.send(Command::TcpOpened(conn, tx)).await.is_err() {
        OPEN.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let (mut reader, mut writer) = stream.into_split();
    let mut framer = StreamFramer::new();
    let mut buf = vec![0_u8; 16 * 1024];
    let idle = shared.tcp_idle_timeout;
    loop {
        tokio::select! {
            read = tokio::time::timeout(idle, reader.read(&mut buf)) => {
                let n = match read {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => n,
                    Err(_) => {
                        tracing::debug!(%peer, partial = framer.buffered(), "TCP connection idle; closing");
                        break;
                    }
                };
                framer.push(&buf[..n]);
                let mut broken = false;
                loop {
                    match framer.next_message() {
                        Ok(Some(msg)) => {
                            if commands.send(Command::TcpMessage(conn, peer, Box::new(msg))).await.is_err() {
                                broken = true;
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "unframeable SIP over TCP; closing");
                            broken = true;
                            break;
                        }
                    }
                }
                if broken {
                    break;
                }
            }
            Some(bytes) = outbox.recv() => {
                if writer.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = commands.send(Command::TcpClosed(conn)).await;
    OPEN.fetch_sub(1, Ordering::Relaxed);
}
