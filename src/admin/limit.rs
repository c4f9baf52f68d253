//! A bound on the side-port's open connections, so that no client can take every file
//! descriptor of the process that also runs SIP and RTP, nor every one of the side-port's
//! slots.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

use super::CLIENT_TIMEOUT;
use crate::net::{Client, client_key};

/// An acceptor that lets at most as many connections as `slots` has permits be open at once
/// (a TLS handshake in progress included), at most `per_client` of them from one client
/// ([`client_key`]), and closes any further one at once.
#[derive(Clone)]
pub(super) struct Limited<A> {
    pub(super) inner: A,
    pub(super) slots: Arc<Semaphore>,
    pub(super) per_client: Arc<PerClient>,
}

/// Connections open per client, and how many one may have.
#[derive(Debug)]
pub(super) struct PerClient {
    open: Mutex<HashMap<Client, usize>>,
    max: usize,
}

impl PerClient {
    pub(super) fn new(max: usize) -> Self {
        Self {
            open: Mutex::new(HashMap::new()),
            max,
        }
    }

    /// A slot for a connection from `ip`, unless its client has `max` open.
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let client = client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(client).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            client,
            table: Arc::clone(self),
        })
    }
}

/// One connection's place in its client's count, given back when dropped.
#[derive(Debug)]
pub(super) struct ClientSlot {
    client: Client,
    table: Arc<PerClient>,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self
            .table
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

/// A connection whose peer's address may be known.
pub(super) trait Peer {
    fn peer_ip(&self) -> Option<IpAddr>;
}

impl Peer for tokio::net::TcpStream {
    fn peer_ip(&self) -> Option<IpAddr> {
        self.peer_addr().ok().map(|a| a.ip())
    }
}

impl<I, S, A> Accept<I, S> for Limited<A>
where
    I: Peer,
    A: Accept<I, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = Held<A::Stream>;
    type Service = A::Service;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let client = stream.peer_ip().map(|ip| self.per_client.take(ip));
        let permit = Arc::clone(&self.slots).try_acquire_owned();
        let accepting = self.inner.accept(stream, service);
        Box::pin(async move {
            let (Ok(permit), Some(Some(client))) = (permit, client) else {
                // `accepting` holds the connection: dropped here, it is closed.
                drop(accepting);
                return Err(io::Error::other("too many admin API connections"));
            };
            let (stream, service) = accepting.await?;
            Ok((
                Held {
                    stream,
                    _permit: permit,
                    _client: client,
                    stalled: None,
                },
                service,
            ))
        })
    }
}

/// A connection holding one of the side-port's slots, and one of its client's, until it is
/// closed; closed when a write has made no progress for [`CLIENT_TIMEOUT`]: a client that
/// sends requests and never reads the answers would otherwise keep it for ever (the
/// header-read timeout runs only while a request head is awaited).
pub(super) struct Held<T> {
    stream: T,
    _permit: OwnedSemaphorePermit,
    _client: ClientSlot,
    /// Since when a write has waited for the client to read.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> Held<T> {
    /// `result` of a write-side poll: a write waiting longer than [`CLIENT_TIMEOUT`] fails.
    fn unless_stalled<R>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if result.is_ready() {
            self.stalled = None;
            return result;
        }
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(CLIENT_TIMEOUT)));
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the admin client read nothing for too long",
            )));
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Held<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Held<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.unless_stalled(cx, result)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.stream).poll_flush(cx);
        self.unless_stalled(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.stream).poll_shutdown(cx);
        self.unless_stalled(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.unless_stalled(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
