//! The HTTP KMS service (`kmsfs kms serve`): the KMS part of the Exoscale API v2 over HTTP(S),
//! with EXO2-HMAC-SHA256 authentication, one keyring per organization, sealed per-organization
//! state files, the rotation scheduler and an audit log.
//!
//! - [`routes`]: one file per family of operations; each parses, calls the keyring, maps errors;
//! - [`auth`]: signature checks; [`body`]: strict request parsing; [`problem`]: error answers;
//! - [`store`]: organizations in memory and on disk; [`org`]: the org file and credentials;
//!   [`root`]: the root key that seals them; [`audit`]: the audit log; [`tls`]: HTTPS;
//! - [`peer`]: the other zones and the keys derived from their shared secret;
//!   [`replication`]: the tasks that push multi-zone keys to their replicas.
//!
//! The keyring ([`crate::kms::keyring`]) holds every rule and knows nothing of HTTP.

mod audit;
mod auth;
pub(crate) mod body;
mod org;
pub(crate) mod peer;
mod problem;
mod replication;
mod root;
pub(crate) mod routes;
mod store;
mod tls;

pub use org::OrgCredentials;
pub use peer::PeerSecret;
pub use problem::{ApiError, PROBLEM_JSON};
pub use store::{Store, create_org, import_org};

use crate::crypto::SecretBytes;
use audit::AuditLog;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How often the rotation scheduler runs.
pub const SCHEDULER_INTERVAL: Duration = Duration::from_secs(60);

/// Why the server could not start or keep its state.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The state directory or a file in it is unusable (names the file and the reason).
    #[error("{0}")]
    State(String),
    /// A setting or input is wrong.
    #[error("{0}")]
    Config(String),
    /// The network side failed (bind, TLS files).
    #[error("{0}")]
    Net(String),
}

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
    /// HTTPS instead of HTTP.
    pub tls: Option<TlsFiles>,
    /// Seal the state under this passphrase instead of `DIR/root.key`.
    pub passphrase: Option<SecretBytes>,
    /// The other zones' servers: (zone, base URL ending in `/v2`).
    pub peers: Vec<(String, String)>,
    /// The secret every zone server shares (needed with `peers`).
    pub peer_secret: Option<PeerSecret>,
}

/// What the replication side shares: the peers, an HTTP client, and a bell rung after every
/// change of a key.
pub(crate) struct Replication {
    /// The other zones and the shared secret.
    pub(crate) peers: peer::Peers,
    /// The client of the peer requests.
    pub(crate) client: reqwest::Client,
    /// Wakes the replication tasks.
    pub(crate) wake: tokio::sync::Notify,
}

/// What every route shares.
pub(crate) struct App {
    /// Organizations and their keys.
    pub(crate) store: Arc<Store>,
    /// The audit log.
    pub(crate) audit: AuditLog,
    /// Peers and replication, when the server has peers.
    pub(crate) replication: Option<Replication>,
}

impl App {
    /// Tells the replication tasks that a key changed.
    pub(crate) fn changed(&self) {
        if let Some(replication) = &self.replication {
            replication.wake.notify_waiters();
        }
    }
}

/// Checks the peer list and builds the replication side.
fn replication_of(
    zone: &str,
    peers: Vec<(String, String)>,
    secret: Option<Arc<PeerSecret>>,
) -> Result<Option<Replication>, ServerError> {
    if peers.is_empty() {
        return Ok(None);
    }
    let secret =
        secret.ok_or_else(|| ServerError::Config("--peer needs --peer-secret-file".into()))?;
    let mut urls = std::collections::BTreeMap::new();
    for (peer_zone, url) in peers {
        if peer_zone.trim().is_empty() || peer_zone == zone {
            return Err(ServerError::Config(format!(
                "peer zone {peer_zone:?} must be another zone than {zone}"
            )));
        }
        let parsed = reqwest::Url::parse(&url)
            .map_err(|e| ServerError::Config(format!("peer URL {url} is invalid: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || !parsed.path().ends_with("/v2") {
            return Err(ServerError::Config(format!(
                "peer URL {url} must be http(s)://HOST:PORT/v2"
            )));
        }
        if urls.insert(peer_zone.clone(), url).is_some() {
            return Err(ServerError::Config(format!(
                "zone {peer_zone} is named twice"
            )));
        }
    }
    // HTTPS peers need rustls' provider; a provider installed already is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .connect_timeout(replication::CONNECT_TIMEOUT)
        .timeout(replication::PUSH_TIMEOUT)
        .build()
        .map_err(|e| ServerError::Net(format!("cannot build the peer HTTP client: {e}")))?;
    Ok(Some(Replication {
        peers: peer::Peers {
            own_zone: zone.to_string(),
            urls,
            secret,
        },
        client,
        wake: tokio::sync::Notify::new(),
    }))
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
        return Err(ServerError::Config("the zone is empty".into()));
    }
    let data = options.data.clone();
    let zone = options.zone.clone();
    let passphrase = options.passphrase.clone();
    let secret = options.peer_secret.map(Arc::new);
    let store_secret = secret.clone();
    let store = tokio::task::spawn_blocking(move || {
        Store::open_with(&data, &zone, passphrase.as_ref(), store_secret)
    })
    .await
    .map_err(|e| ServerError::State(format!("loading the state failed: {e}")))??;
    let audit = AuditLog::open(&options.data.join("audit.log")).map_err(|e| {
        ServerError::State(format!(
            "cannot open {}/audit.log: {e}",
            options.data.display()
        ))
    })?;
    let app = Arc::new(App {
        store: Arc::new(store),
        audit,
        replication: replication_of(&options.zone, options.peers, secret)?,
    });
    let tls = match &options.tls {
        Some(files) => Some(tls::acceptor(files)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(&options.listen)
        .await
        .map_err(|e| ServerError::Net(format!("cannot listen on {}: {e}", options.listen)))?;
    let addr: SocketAddr = listener
        .local_addr()
        .map_err(|e| ServerError::Net(format!("cannot read the bound address: {e}")))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    on_listening(&format!("{scheme}://{addr}/v2"));
    let scheduler = tokio::spawn(run_scheduler(Arc::clone(&app)));
    let replicators = replication::spawn_tasks(&app);
    let router = routes::router(Arc::clone(&app));
    let served = match tls {
        None => {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(acceptor) => {
            axum::serve(tls::TlsListener::new(listener, acceptor), router)
                .with_graceful_shutdown(shutdown)
                .await
        }
    };
    scheduler.abort();
    for task in replicators {
        task.abort();
    }
    app.audit.flush();
    served.map_err(|e| ServerError::Net(format!("the server failed: {e}")))
}

/// Runs every organization's rotation scheduler every [`SCHEDULER_INTERVAL`]; a run that
/// changed something is written before the next.
async fn run_scheduler(app: Arc<App>) {
    let mut ticks = tokio::time::interval(SCHEDULER_INTERVAL);
    loop {
        ticks.tick().await;
        let store = Arc::clone(&app.store);
        let ran = tokio::task::spawn_blocking(move || {
            for org in store.orgs() {
                let result = store.mutate(&org, |ring, now| {
                    let report = ring.run_scheduler(now);
                    let changed = !report.is_empty();
                    Ok((report, changed))
                });
                match result {
                    Ok(report) if !report.is_empty() => tracing::info!(
                        org = %org.id,
                        rotated = ?report.rotated,
                        destroyed = ?report.destroyed,
                        "scheduler"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::error!(org = %org.id, "scheduler: {e}"),
                }
            }
        })
        .await;
        if let Err(e) = ran {
            tracing::error!("the scheduler failed: {e}");
        }
    }
}
