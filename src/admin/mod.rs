//! The admin HTTP side-port (axum): provisioning, resets, unlocks, audit, metrics and the
//! calls in progress, on the same store as the calls.
//!
//! Every `/api/v1` route needs a bearer token (an admin token from the store, or the one
//! configured with `VPORTAL_ADMIN_TOKEN`); `/healthz` never does and `/metrics` only when
//! configured. Store work runs on the blocking pool, never on the runtime threads that pace
//! SIP; hashing takes a permit from the same pool as the calls' logins. Errors have one shape
//! ([`error::ApiError`]). The API is described in `openapi.json`, served at
//! `/api/v1/openapi.json` and checked against the router by a test.

mod api;
mod auth;
pub mod error;
mod limit;
pub mod metrics;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::MethodRouter;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Semaphore;

use crate::server::ActiveCalls;
use crate::store::Store;
pub use auth::Throttle;

pub use crate::store::CONFIGURED_TOKEN_NAME;

/// The shortest configured token (`VPORTAL_ADMIN_TOKEN`, `admin.token`) taken for a
/// side-port off loopback, where it must be about as hard to guess as a generated one. A
/// shorter one (a test harness's known token) is taken only on loopback, with a warning.
pub const MIN_CONFIGURED_TOKEN: usize = 32;

/// Largest JSON request body.
pub const MAX_JSON_BODY: usize = 64 * 1024;
/// Largest CSV import body.
pub const MAX_CSV_BODY: usize = 4 * 1024 * 1024;
/// How long a JSON body may take to arrive whole once its head has (64 KiB at most).
pub const JSON_BODY_TIME: Duration = CLIENT_TIMEOUT;
/// How long a CSV import's body may take to arrive whole once its head has: 4 MiB at
/// 70 KB/s.
pub const CSV_BODY_TIME: Duration = Duration::from_secs(60);
/// How long a client may take to send a request head, and how long a connection may sit
/// idle between requests, before it is closed: otherwise anybody who can reach the port holds
/// connections (a task and a file descriptor each, shared with SIP and RTP) for ever.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections open at once at most (a TLS handshake in progress included); any further one
/// is closed as soon as it is accepted, so that no client can take every file descriptor of
/// the process that also runs SIP and RTP.
pub const MAX_CONNECTIONS: usize = 128;
/// Connections one client (an IPv4 address, an IPv6 /64) may have open at once: one client
/// holding every slot would take the API, `/healthz` included, away from everyone.
pub const MAX_CONNECTIONS_PER_CLIENT: usize = 16;

/// What the handlers share.
pub struct AdminState {
    /// The credential store.
    pub store: Arc<Store>,
    /// The calls in progress (empty when no SIP server runs in this process).
    pub calls: Arc<ActiveCalls>,
    /// The Prometheus recorder's handle, when metrics are recorded.
    pub metrics: Option<PrometheusHandle>,
    /// Whether `/metrics` needs a token.
    pub metrics_auth: bool,
    /// A token accepted besides the store's (from `VPORTAL_ADMIN_TOKEN`).
    pub configured_token: Option<crate::config::ConfiguredToken>,
    /// Bad-token counts per client address.
    pub throttle: Throttle,
    /// argon2 permits, shared with the calls: a request that hashes one passcode takes one.
    pub hash_permits: Arc<Semaphore>,
    /// Bulk resets and imports, which hash a passcode per mailbox, take this one permit (see
    /// [`bulk_permits`]) instead of the calls'.
    pub bulk_permits: Arc<Semaphore>,
}

/// The permits for [`AdminState::bulk_permits`]: one, so bulk jobs run one at a time.
pub fn bulk_permits() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(1))
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("metrics_auth", &self.metrics_auth)
            .field(
                "configured_token",
                &self.configured_token.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

/// Every route: path and handlers. The router is built from this list, and the OpenAPI test
/// walks it.
pub fn routes() -> Vec<(&'static str, MethodRouter<Arc<AdminState>>)> {
    api::routes()
}

/// The router, with authentication, body limits and JSON errors for unknown routes.
pub fn router(state: Arc<AdminState>) -> Router {
    api::router(state)
}

/// The admin side-port could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The address cannot be bound.
    #[error("cannot listen on {addr} for the admin API: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A non-loopback address without TLS and without `--admin-insecure`.
    #[error(
        "the admin API would listen on {0}, which is not a loopback address, without TLS: \
         set admin.tls_cert and admin.tls_key, or pass --admin-insecure (passcodes and \
         tokens would then cross the network in clear)"
    )]
    NeedsTls(SocketAddr),
    /// Only one of the certificate and the key is configured.
    #[error("admin.tls_cert and admin.tls_key must be set together")]
    HalfTls,
    /// The certificate or key cannot be used.
    #[error("admin TLS certificate {} or key {}: {source}", .cert.display(), .key.display())]
    Tls {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// Where and how the side-port listens.
#[derive(Debug, Clone)]
pub struct Listen {
    /// The address.
    pub addr: SocketAddr,
    /// PEM certificate chain and private key, for HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Plain HTTP on a non-loopback address, knowingly.
    pub insecure: bool,
}

/// A bound side-port, ready to serve.
pub struct AdminServer {
    listener: TcpListener,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    local: SocketAddr,
}

impl AdminServer {
    /// Binds the side-port, refusing plain HTTP off loopback unless `insecure`.
    ///
    /// # Errors
    /// [`AdminError`].
    pub async fn bind(listen: &Listen) -> Result<Self, AdminError> {
        let tls = match &listen.tls {
            Some((cert, key)) => {
                let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                    .await
                    .map_err(|source| AdminError::Tls {
                        cert: cert.clone(),
                        key: key.clone(),
                        source,
                    })?;
                // HTTP/1.1 only (see `limited`): h2 is not offered.
                let mut config = (*tls.get_inner()).clone();
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                tls.reload_from_config(Arc::new(config));
                Some(tls)
            }
            None => None,
        };
        // `[::ffff:127.0.0.1]` is loopback too: an IPv6 socket that takes only IPv4 loopback.
        if tls.is_none() && !crate::net::is_loopback(listen.addr.ip()) {
            if !listen.insecure {
                return Err(AdminError::NeedsTls(listen.addr));
            }
            tracing::warn!(admin = %listen.addr, "the admin API listens without TLS on a non-loopback address (--admin-insecure): passcodes and tokens cross the network in clear");
        }
        let bind_err = |source| AdminError::Bind {
            addr: listen.addr,
            source,
        };
        let listener = crate::net::bind_tcp(listen.addr).map_err(bind_err)?;
        let local = listener.local_addr().map_err(bind_err)?;
        Ok(Self {
            listener,
            tls,
            local,
        })
    }

    /// The address bound (with the system's port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves `state` until `shutdown` completes; requests in flight get a few seconds.
    pub async fn run(
        self,
        state: Arc<AdminState>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        tracing::info!(admin = %self.local, %scheme, "admin API is listening");
        let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
        let handle = axum_server::Handle::new();
        let stopper = handle.clone();
        tokio::spawn(async move {
            shutdown.await;
            stopper.graceful_shutdown(Some(Duration::from_secs(5)));
        });
        let result = match self.tls {
            Some(tls) => match axum_server::tls_rustls::from_tcp_rustls(self.listener, tls) {
                Ok(server) => limited(server).handle(handle).serve(app).await,
                Err(e) => Err(e),
            },
            None => match axum_server::from_tcp(self.listener) {
                Ok(server) => limited(server).handle(handle).serve(app).await,
                Err(e) => Err(e),
            },
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "the admin API stopped");
        }
    }
}

/// `server` speaking HTTP/1.1 only, with [`CLIENT_TIMEOUT`] on the first request and on
/// every request head, idle keep-alive waits included, and at most [`MAX_CONNECTIONS`]
/// connections at once, [`MAX_CONNECTIONS_PER_CLIENT`] from one client. HTTP/2 is left out: hyper has no timeout for an HTTP/2 connection
/// idle after its first request, so a client could keep every slot for ever, and a small
/// admin API gains nothing from it.
fn limited<A: axum_server::Address, Acc>(
    server: axum_server::Server<A, Acc>,
) -> axum_server::Server<A, limit::Limited<Acc>> {
    let mut server = server.http1_only();
    server
        .http_builder()
        .http1()
        .header_read_timeout(Some(CLIENT_TIMEOUT));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_client = Arc::new(limit::PerClient::new(MAX_CONNECTIONS_PER_CLIENT));
    server
        .first_request_timeout(CLIENT_TIMEOUT)
        .map(|inner| limit::Limited {
            inner,
            slots,
            per_client,
        })
}
