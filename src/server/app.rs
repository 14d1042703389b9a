//! What every route shares ([`App`]): the organizations' store, the audit log, and the
//! replication side ([`Replication`]) built from the peer list.

use super::audit::AuditLog;
use super::{PeerSecret, ServerError, Store, peer, replication};
use std::sync::Arc;

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
    /// The current time of the server's clock (see [`Store::now`]).
    pub(crate) fn now(&self) -> time::OffsetDateTime {
        self.store.now()
    }

    /// Tells the replication tasks that a key changed.
    pub(crate) fn changed(&self) {
        if let Some(replication) = &self.replication {
            replication.wake.notify_waiters();
        }
    }
}

/// Checks the peer list and builds the replication side.
pub(super) fn replication_of(
    zone: &str,
    peers: Vec<(String, String)>,
    secret: Option<Arc<PeerSecret>>,
) -> Result<Option<Replication>, ServerError> {
    if peers.is_empty() {
        return Ok(None);
    }
    let secret =
        secret.ok_or_else(|| ServerError::Invalid("--peer needs --peer-secret-file".into()))?;
    let mut urls = std::collections::BTreeMap::new();
    for (peer_zone, url) in peers {
        if peer_zone.trim().is_empty() || peer_zone == zone {
            return Err(ServerError::Invalid(format!(
                "peer zone {peer_zone:?} must be another zone than {zone}"
            )));
        }
        let parsed = reqwest::Url::parse(&url)
            .map_err(|e| ServerError::Invalid(format!("peer URL {url} is invalid: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || !parsed.path().ends_with("/v2") {
            return Err(ServerError::Invalid(format!(
                "peer URL {url} must be http(s)://HOST:PORT/v2"
            )));
        }
        if urls.insert(peer_zone.clone(), url).is_some() {
            return Err(ServerError::Invalid(format!(
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
        .map_err(ServerError::PeerClient)?;
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
