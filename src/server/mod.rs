//! The HTTP KMS service (`kmsfs kms serve`): the KMS part of the Exoscale API v2 over HTTP(S),
//! with EXO2-HMAC-SHA256 authentication, one keyring per organization, sealed per-organization
//! state files, the rotation scheduler and an audit log.
//!
//! - [`routes`]: one file per family of operations; each parses, calls the keyring, maps errors;
//! - [`auth`]: signature checks; [`body`]: strict request parsing; [`problem`]: error answers;
//! - [`store`]: organizations in memory and on disk; [`org`]: the org file and credentials;
//!   [`root`]: the root key that seals them; [`audit`]: the audit log; [`tls`]: HTTPS;
//! - [`front`]: the accept loop, connection caps, timeouts and load shedding; [`lock`]: one
//!   server per data directory;
//! - [`peer`]: the other zones and the keys derived from their shared secret;
//!   [`replication`]: the tasks that push multi-zone keys to their replicas;
//! - [`scheduler`]: automatic rotations and due deletions, every minute;
//! - [`app`]: what every route shares; [`error`]: why the server could not start or keep its
//!   state.
//!
//! Every wall-clock time (key lifecycles, signature expiry, audit lines) comes from the
//! [`Store`]'s injected clock ([`crate::kms::clock`]).
//!
//! The keyring ([`crate::kms::keyring`]) holds every rule and knows nothing of HTTP.

mod app;
mod audit;
mod auth;
pub(crate) mod body;
mod error;
mod etcd;
mod etcd_leader;
mod etcd_watch;
mod front;
mod lock;
pub(crate) mod metrics;
mod org;
pub(crate) mod peer;
mod problem;
mod replication;
mod root;
mod routes;
mod scheduler;
mod store;
#[cfg(test)]
#[path = "tests/fixture.rs"]
mod testing;
mod tls;

pub use etcd::{DEFAULT_PREFIX as DEFAULT_ETCD_PREFIX, EtcdTarget, STALE_AFTER};
pub use org::OrgCredentials;
pub use peer::PeerSecret;
pub use problem::{ApiError, PROBLEM_JSON};
pub use store::{Store, create_org, create_org_at, import_org, import_org_at, migrate};

use crate::crypto::SecretBytes;
use crate::kms::clock::SystemClock;

use audit::AuditLog;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) use app::App;
use app::replication_of;
pub use error::ServerError;
pub use front::{DEFAULT_MAX_PER_CLIENT, DEFAULT_REQUEST_TIMEOUT, FrontLimits};
pub use scheduler::SCHEDULER_INTERVAL;

/// The certificate chain and private key files of HTTPS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// What `kmsfs kms serve` was asked to do.
pub struct ServeOptions {
    /// The zone this server is (e.g. `ch-gva-2`).
    pub zone: String,
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub listen: String,
    /// The data directory.
    pub data: PathBuf,
    /// Keep the zone's state in etcd instead of the data directory (which then keeps the audit
    /// log, and `root.key` without a passphrase).
    pub etcd: Option<EtcdTarget>,
    /// HTTPS instead of HTTP.
    pub tls: Option<TlsFiles>,
    /// Seal the state under this passphrase instead of `DIR/root.key`.
    pub passphrase: Option<SecretBytes>,
    /// The other zones' servers: (zone, base URL ending in `/v2`).
    pub peers: Vec<(String, String)>,
    /// The secret every zone server shares (needed with `peers`).
    pub peer_secret: Option<PeerSecret>,
    /// Connection caps and timeouts.
    pub front: FrontLimits,
    /// Serve metrics at `http://ADDR/metrics` (unauthenticated; none by default).
    pub metrics_listen: Option<String>,
}

/// The directory holding `path`.
pub(crate) fn parent_of(path: &Path) -> PathBuf {
    crate::kms::seal::parent_dir(path)
}

/// Runs the server until `shutdown` completes, then stops gracefully (in-flight requests
/// finish; the audit log is flushed). `on_listening` gets the base URL (`http://HOST:PORT/v2`)
/// once the socket is bound.
///
/// # Errors
/// [`ServerError`] when the state cannot be opened, the address cannot be bound, or the TLS
/// files cannot be read.
pub async fn serve(
    options: ServeOptions,
    on_listening: impl FnOnce(&str),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    if options.zone.trim().is_empty() {
        return Err(ServerError::Invalid("the zone is empty".into()));
    }
    // What can fail without touching the data directory fails first: TLS files, the address.
    let tls = match &options.tls {
        Some(files) => Some(tls::acceptor(files)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(&options.listen)
        .await
        .map_err(|source| ServerError::Listen {
            addr: options.listen.clone(),
            source,
        })?;
    let addr: SocketAddr = listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            addr: options.listen.clone(),
            source,
        })?;
    let _lock = lock::DataLock::acquire(&options.data)?;
    let data = options.data.clone();
    let zone = options.zone.clone();
    let passphrase = options.passphrase.clone();
    let secret = options.peer_secret.map(Arc::new);
    let store_secret = secret.clone();
    let etcd = options.etcd.clone();
    let store = tokio::task::spawn_blocking(move || match etcd {
        None => Store::open_with(
            &data,
            &zone,
            passphrase.as_ref(),
            store_secret,
            Arc::new(SystemClock),
        ),
        Some(target) => Store::open_etcd(
            &data,
            &target,
            &zone,
            passphrase.as_ref(),
            store_secret,
            Arc::new(SystemClock),
        ),
    })
    .await
    .map_err(|source| ServerError::Task {
        doing: "loading the state",
        source,
    })??;
    let audit_path = options.data.join("audit.log");
    let audit = AuditLog::open(&audit_path).map_err(|e| ServerError::io("open", &audit_path, e))?;
    let app = Arc::new(App {
        store: Arc::new(store),
        audit,
        replication: replication_of(&options.zone, options.peers, secret)?,
    });
    // Metrics (`--metrics-listen`): a listener of their own, unauthenticated, off by default;
    // every route is counted by a middleware.
    let metrics = match &options.metrics_listen {
        None => None,
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Listen {
                    addr: addr.clone(),
                    source,
                })?;
            let metrics = metrics::ServerMetrics::new(&app);
            if let Ok(bound) = listener.local_addr() {
                tracing::info!("serving metrics at http://{bound}/metrics");
            }
            Some((metrics.clone(), metrics::spawn_listener(listener, metrics)))
        }
    };
    let caps = front::caps(&options.front);
    let scheme = if tls.is_some() { "https" } else { "http" };
    on_listening(&format!("{scheme}://{addr}/v2"));
    let mut followers = store::spawn_etcd_tasks(&app.store, &format!("{scheme}://{addr}/v2"));
    let scheduler = tokio::spawn(scheduler::run(Arc::clone(&app)));
    let replicators = replication::spawn_tasks(&app);
    let router = routes::router(Arc::clone(&app));
    let router = match &metrics {
        Some((metrics, _)) => router.layer(axum::middleware::from_fn_with_state(
            metrics.clone(),
            metrics::track,
        )),
        None => router,
    };
    front::serve(
        listener,
        tls,
        router,
        caps,
        options.front.request_timeout,
        shutdown,
    )
    .await;
    scheduler.abort();
    if let Some((_, listener)) = metrics {
        listener.abort();
    }
    for task in replicators.into_iter().chain(followers.drain(..)) {
        task.abort();
    }
    app.audit.flush();
    Ok(())
}
