//! The tokio shell: sockets, tasks and timers around the sans-IO layers.
//!
//! One task owns the SIP [`Endpoint`] and does one thing at a time: wait for a datagram, a
//! TCP message, a command from a call or the next deadline; feed it in; send what comes
//! out. TCP connections each have a small task that frames bytes into messages. Each call
//! has a task of its own, fed by a channel, holding its RTP socket.

mod call;
mod calls;
mod media;
mod sip_task;
mod tcp;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener as StdTcpListener, UdpSocket as StdUdpSocket};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{Semaphore, mpsc};

use crate::config::{Config, SipConfig};
use crate::ivr::dialplan::{Dialplan, DialplanError};
use crate::ivr::session::Sessions;
use crate::media::ports::PortAllocator;
use crate::media::prompts::{PromptError, PromptSet};
use crate::sip::endpoint::{CallHandle, Endpoint, EndpointConfig, dialplan_router};
use crate::store::Store;
use media::{MediaCommand, MediaConfig, MediaHandle};

pub use calls::{ActiveCall, ActiveCalls};
pub use sip_task::Command;

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A socket could not be bound.
    #[error("cannot listen on {transport} {addr}: {source}")]
    Bind {
        /// `udp` or `tcp`.
        transport: &'static str,
        /// The address.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The configuration cannot work.
    #[error("{0}")]
    Config(String),
    /// The media thread ended while the server ran (a failed poll, or a bug); the server
    /// stopped, since no call could hear or send anything.
    #[error("the media thread stopped; the server stopped with it")]
    MediaStopped,
}

/// Socket buffer asked for on the SIP UDP socket. Senders such as SIPp send in bursts per
/// timer tick, and the kernel charges each small datagram its full buffer overhead (about
/// 1 KiB): the default 208 KiB holds only some 160 requests. The kernel caps the request at
/// `net.core.rmem_max` / `wmem_max`.
const UDP_BUFFER: usize = 8 << 20;

fn size_buffers(socket: &UdpSocket) {
    let s = socket2::SockRef::from(socket);
    let _ = s.set_recv_buffer_size(UDP_BUFFER);
    let _ = s.set_send_buffer_size(UDP_BUFFER);
    tracing::debug!(
        recv = s.recv_buffer_size().unwrap_or(0),
        send = s.send_buffer_size().unwrap_or(0),
        "SIP UDP socket buffers"
    );
}

/// Ports the system picks for UDP before one is also free for TCP (`sip.listen` port 0).
const PICK_ATTEMPTS: usize = 16;

/// Binds UDP (first: with port 0 its port is then taken for TCP too) and TCP as `sip`
/// says; returns them and the address they listen on.
fn bind_both(
    sip: &SipConfig,
) -> Result<(Option<StdUdpSocket>, Option<StdTcpListener>, SocketAddr), ServerError> {
    let bind_err = |transport, addr, source| ServerError::Bind {
        transport,
        addr,
        source,
    };
    let udp = sip
        .udp
        .then(|| crate::net::bind_udp(sip.listen))
        .transpose()
        .map_err(|e| bind_err("udp", sip.listen, e))?;
    let mut local = sip.listen;
    if let Some(u) = &udp {
        local.set_port(
            u.local_addr()
                .map_err(|e| bind_err("udp", sip.listen, e))?
                .port(),
        );
    }
    let tcp = sip
        .tcp
        .then(|| crate::net::bind_tcp(local))
        .transpose()
        .map_err(|e| bind_err("tcp", local, e))?;
    if let Some(t) = &tcp {
        local.set_port(
            t.local_addr()
                .map_err(|e| bind_err("tcp", local, e))?
                .port(),
        );
    }
    Ok((udp, tcp, local))
}

/// Everything the running server shares between its tasks.
pub(crate) struct Shared {
    pub(crate) ports: Arc<Mutex<PortAllocator>>,
    pub(crate) rtp_ip: std::net::IpAddr,
    pub(crate) tcp_idle_timeout: Duration,
    pub(crate) tcp_message_timeout: Duration,
    /// The TCP connections open, against `max_tcp_connections` and, when set,
    /// `max_tcp_connections_per_source`.
    pub(crate) tcp_slots: Arc<tcp::TcpSlots>,
    pub(crate) store: Arc<Store>,
    pub(crate) dialplan: Arc<Dialplan>,
    /// Prompt sets by language (the dialplan routes' `language`).
    pub(crate) prompts: HashMap<String, Arc<PromptSet>>,
    /// Which call holds each logged-in mailbox.
    pub(crate) sessions: Mutex<Sessions<CallHandle>>,
    /// Store work that hashes (argon2) waits here for a permit: two per hash allowed at once,
    /// so that while one login commits its result (an fsync) the next one already hashes.
    /// The store's hasher still runs no more hashes at once than allowed.
    pub(crate) hash_permits: Arc<Semaphore>,
    /// The calls in progress, for the admin API.
    pub(crate) calls: Arc<ActiveCalls>,
    /// Each passcode change under way, and each audit write a call did not wait for, holds
    /// a receiver until it is stored: shutdown waits for them all, so a new PIN a caller
    /// keyed twice, or its audit row, is never lost to a stop.
    pub(crate) writes_in_flight: tokio::sync::watch::Sender<()>,
    media: MediaHandle,
}

impl Shared {
    /// Sends a command to the media thread (which runs as long as the server does).
    pub(crate) fn media(&self, command: MediaCommand) {
        self.media.send(command);
    }

    /// Completes if the media thread ends while the server runs (see [`ServerError::MediaStopped`]).
    pub(crate) fn media_stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        self.media.stopped()
    }
}

/// Reads and checks the dialplan file at `path`.
///
/// # Errors
/// [`DialplanError::Io`] when the file cannot be read; otherwise as [`Dialplan::parse`],
/// with the path as the origin.
pub fn load_dialplan(path: &Path) -> Result<Dialplan, DialplanError> {
    let bytes = std::fs::read(path).map_err(|source| DialplanError::Io {
        path: path.to_owned(),
        source,
    })?;
    let text = crate::config::utf8_text(bytes).map_err(|line| DialplanError::Invalid {
        origin: path.display().to_string(),
        line: Some(line),
        key: None,
        message: crate::config::NOT_UTF8.to_owned(),
    })?;
    Dialplan::parse(&text, &path.display().to_string())
}

/// The prompt set in `dir` (a language folder holding `prompts.toml`), read from disk.
///
/// # Errors
/// [`PromptError`] naming the manifest or the audio file at fault.
pub fn load_prompts(dir: &Path) -> Result<PromptSet, PromptError> {
    use crate::media::prompts::MAX_FILE_BYTES;
    PromptSet::from_files(dir, |path| {
        crate::config::read_at_most(std::fs::File::open(path)?, MAX_FILE_BYTES)?.ok_or_else(|| {
            std::io::Error::other(format!(
                "larger than {} MiB: a prompt lasts 10 minutes at most",
                MAX_FILE_BYTES >> 20
            ))
        })
    })
}

/// What the media thread has sent and received since the process started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaCounts {
    /// RTP packets sent.
    pub rtp_sent: u64,
    /// RTCP compound packets sent.
    pub rtcp_sent: u64,
    /// Valid RTCP compound packets received from calls' peers.
    pub rtcp_received: u64,
}

/// The media counters now.
pub fn media_counts() -> MediaCounts {
    use std::sync::atomic::Ordering::Relaxed;
    MediaCounts {
        rtp_sent: media::RTP_PACKETS_SENT.load(Relaxed),
        rtcp_sent: media::RTCP_PACKETS_SENT.load(Relaxed),
        rtcp_received: media::RTCP_PACKETS_RECEIVED.load(Relaxed),
    }
}

/// The SIP sockets, bound: the first part of a server, made before the store is opened so
/// that an address in use or a listen address that cannot work stops a first run before
/// it creates the database and hands out its token.
pub struct SipSockets {
    udp: Option<UdpSocket>,
    tcp: Option<TcpListener>,
    /// The address bound (the system's port when 0 was asked).
    local: SocketAddr,
    /// The address put in Via, Contact and SDP.
    advertised: IpAddr,
}

impl SipSockets {
    /// Binds UDP and TCP as `sip` says. With port 0 in `sip.listen` the system picks a port,
    /// the same one for both.
    ///
    /// # Errors
    /// [`ServerError`] when a socket cannot be bound or the configuration cannot work.
    pub async fn bind(sip: &SipConfig) -> Result<Self, ServerError> {
        let advertised = sip.usable().map_err(ServerError::Config)?;
        let bind_err = |transport, addr, source| ServerError::Bind {
            transport,
            addr,
            source,
        };
        // With port 0 the system picks UDP's port, and TCP takes the same one; another
        // program's TCP connection may hold that port, so then another is picked.
        let mut attempts = 0;
        let (udp, tcp, local) = loop {
            attempts += 1;
            match bind_both(sip) {
                Err(ServerError::Bind {
                    transport: "tcp",
                    source,
                    ..
                }) if sip.udp
                    && sip.listen.port() == 0
                    && source.kind() == std::io::ErrorKind::AddrInUse
                    && attempts < PICK_ATTEMPTS => {}
                bound => break bound?,
            }
        };
        let udp = udp
            .map(UdpSocket::from_std)
            .transpose()
            .map_err(|e| bind_err("udp", local, e))?;
        if let Some(socket) = &udp {
            size_buffers(socket);
        }
        let tcp = tcp
            .map(TcpListener::from_std)
            .transpose()
            .map_err(|e| bind_err("tcp", local, e))?;
        Ok(Self {
            udp,
            tcp,
            local,
            advertised,
        })
    }
}

/// A bound, not yet running server.
pub struct Server {
    udp: Option<UdpSocket>,
    tcp: Option<TcpListener>,
    endpoint: Endpoint,
    shared: Arc<Shared>,
    shutdown_grace: Duration,
    local_sip: SocketAddr,
}

impl Server {
    /// The server on `sockets`, with its media thread started.
    ///
    /// # Errors
    /// [`ServerError::Config`] when a route's language has no prompts or the media thread
    /// cannot start.
    pub fn new(
        sockets: SipSockets,
        config: &Config,
        dialplan: Arc<Dialplan>,
        store: Arc<Store>,
        prompts: HashMap<String, Arc<PromptSet>>,
    ) -> Result<Self, ServerError> {
        for route in dialplan.routes() {
            if !prompts.contains_key(&route.settings.language) {
                return Err(ServerError::Config(format!(
                    "route {} uses language {:?}, but no prompts were loaded for it",
                    route.pattern, route.settings.language
                )));
            }
        }
        let sip = &config.sip;
        let SipSockets {
            udp,
            tcp,
            local,
            advertised,
        } = sockets;
        let mut ep_config = EndpointConfig::new(SocketAddr::new(advertised, local.port()));
        ep_config.max_calls = sip.max_calls;
        ep_config.max_pending_per_source = sip.max_pending_calls_per_source;
        ep_config.max_call_duration = sip.max_call_duration;
        let mut languages: Vec<&str> = Vec::new();
        for route in dialplan.routes() {
            if !languages.contains(&route.settings.language.as_str()) {
                languages.push(&route.settings.language);
            }
        }
        ep_config.languages = languages.join(", ");
        let endpoint = Endpoint::new(ep_config, dialplan_router(Arc::clone(&dialplan)));
        let media = media::start(MediaConfig {
            symmetric: config.rtp.symmetric,
            inband: config.rtp.inband_dtmf,
            realtime_priority: config.rtp.realtime_priority,
        })
        .map_err(|e| ServerError::Config(format!("cannot start the media thread: {e}")))?;
        let ports = PortAllocator::new(config.rtp.ports);
        // Each call takes an even port for RTP and the one above for RTCP.
        if ports.capacity() < sip.max_calls {
            tracing::warn!(
                calls = ports.capacity(),
                max_calls = sip.max_calls,
                "rtp.ports holds fewer calls than sip.max_calls: calls beyond it get 503; widen \
                 the range (two ports a call) or lower max_calls"
            );
        }
        let shared = Arc::new(Shared {
            ports: Arc::new(Mutex::new(ports)),
            rtp_ip: advertised,
            store,
            dialplan,
            prompts,
            sessions: Mutex::new(Sessions::default()),
            hash_permits: Arc::new(Semaphore::new(2 * config.store.hashes_at_once())),
            calls: Arc::default(),
            writes_in_flight: tokio::sync::watch::Sender::new(()),
            media,
            tcp_idle_timeout: sip.tcp_idle_timeout,
            tcp_message_timeout: sip.tcp_message_timeout.min(sip.tcp_idle_timeout),
            tcp_slots: Arc::new(tcp::TcpSlots::new(
                sip.max_tcp_connections,
                sip.max_tcp_connections_per_source,
            )),
        });
        Ok(Self {
            udp,
            tcp,
            endpoint,
            shared,
            shutdown_grace: sip.shutdown_grace,
            local_sip: local,
        })
    }

    /// The calls in progress, for the admin API to list.
    pub fn active_calls(&self) -> Arc<ActiveCalls> {
        Arc::clone(&self.shared.calls)
    }

    /// The permits that bound how much argon2 store work is under way, shared with the
    /// admin API so a burst of resets queues with the logins instead of beside them.
    pub fn hash_permits(&self) -> Arc<Semaphore> {
        Arc::clone(&self.shared.hash_permits)
    }

    /// The address SIP listens on (UDP and TCP).
    pub fn sip_addr(&self) -> SocketAddr {
        self.local_sip
    }

    /// Runs until `shutdown` completes, then stops taking calls, hangs up the active ones
    /// and returns once they are gone (or the grace period passes).
    ///
    /// # Errors
    /// [`ServerError::MediaStopped`] when the media thread ended while the server ran: it
    /// then stopped the same way, so that a supervisor can start it afresh.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), ServerError> {
        let (commands, command_rx) = mpsc::channel(4_096);
        if let Some(listener) = self.tcp {
            tokio::spawn(tcp::accept_loop(
                listener,
                commands.clone(),
                Arc::clone(&self.shared),
            ));
        }
        // The database file looked at every second, so that one replaced or removed under
        // the server is noticed (and its old WAL moved aside) before the next process opens
        // the file now there, not only at the next login.
        let store = Arc::clone(&self.shared.store);
        let watching = tokio::spawn(async move {
            let mut every = tokio::time::interval(FILE_CHECK_INTERVAL);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let store = Arc::clone(&store);
                let _ = tokio::task::spawn_blocking(move || store.check_file()).await;
            }
        });
        tracing::info!(sip = %self.local_sip, "vportal is listening");
        let task = sip_task::SipTask::new(
            self.endpoint,
            self.udp,
            command_rx,
            commands,
            self.shared,
            self.shutdown_grace,
        );
        let ran = task.run(shutdown).await;
        watching.abort();
        ran
    }
}

/// How often a running server looks whether its database file is still at its path.
const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ivr::dialplan::DEFAULT_DIALPLAN;
    use crate::store::Pepper;

    /// A prompt file larger than any prompt can be (a disk image named by mistake) is
    /// refused, naming it, without its bytes being read whole.
    #[test]
    fn a_prompt_file_too_large_for_a_prompt_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let en = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts/en");
        for file in std::fs::read_dir(&en).unwrap() {
            let file = file.unwrap().path();
            std::fs::copy(&file, dir.path().join(file.file_name().unwrap())).unwrap();
        }
        // Sparse: no disk taken.
        let huge = dir.path().join("welcome.wav");
        std::fs::File::create(&huge)
            .unwrap()
            .set_len(crate::media::prompts::MAX_FILE_BYTES + 1)
            .unwrap();
        let e = load_prompts(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("welcome.wav") && e.contains("larger than 272 MiB"),
            "{e}"
        );
    }

    /// A server on loopback (its media thread running) with the built-in dialplan and
    /// prompts and an in-memory store, RTP on `rtp_ports`.
    pub(crate) async fn server(rtp_ports: &str) -> Server {
        let config = Config::parse(&format!(
            "[sip]\nlisten = \"127.0.0.1:0\"\n[rtp]\nports = \"{rtp_ports}\"\n"
        ))
        .unwrap();
        let sockets = SipSockets::bind(&config.sip).await.unwrap();
        let dialplan = Dialplan::parse(DEFAULT_DIALPLAN, "built-in").unwrap();
        let store = Store::open_in_memory(Pepper::from_bytes(vec![4; 32]).unwrap(), 1).unwrap();
        let prompts = HashMap::from([("en".to_owned(), Arc::new(PromptSet::built_in().unwrap()))]);
        Server::new(sockets, &config, dialplan.into(), store.into(), prompts).unwrap()
    }

    /// With port 0, a UDP port the system picks whose TCP twin another program holds is
    /// given back and another picked. 300 TCP listeners hold ports of the ephemeral range
    /// (about 1 % of Linux's default 28,232): without picking again, some of 300 binds
    /// would fail (96 % of runs; few enough descriptors for a 1,024 limit).
    #[tokio::test]
    async fn a_picked_port_whose_tcp_twin_is_taken_is_picked_again() {
        let held: Vec<_> = (0..300)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let sip = SipConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..SipConfig::default()
        };
        for _ in 0..300 {
            let sockets = SipSockets::bind(&sip).await.unwrap();
            let port = sockets.local.port();
            assert_eq!(sockets.udp.unwrap().local_addr().unwrap().port(), port);
            assert_eq!(sockets.tcp.unwrap().local_addr().unwrap().port(), port);
        }
        drop(held);
    }

    #[tokio::test]
    async fn the_server_stops_with_an_error_when_its_media_thread_dies() {
        let server = server("34000-34098").await;
        let shared = Arc::clone(&server.shared);
        let running = tokio::spawn(server.run(std::future::pending()));
        shared.media(MediaCommand::Fail);
        let ran = tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .expect("the server still runs without media")
            .unwrap();
        assert!(matches!(ran, Err(ServerError::MediaStopped)), "{ran:?}");
    }
}
