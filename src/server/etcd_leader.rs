//! The election of the one server of a zone on etcd that runs the once-per-zone work (the
//! scheduler's rotations and deletions, the replication push): an etcd election on the key
//! `PREFIX/leader`, held by a lease of [`LEASE_TTL_SECS`] that the leader renews every
//! [`RENEW_INTERVAL`]. A leader that cannot renew in time steps down at once (before its lease
//! can expire and another be elected); a leader that dies is replaced within the lease's time
//! to live. Doing that work twice would still lose nothing (every change is a compare-and-swap
//! against the newest state), it would only be wasted.

use super::etcd::{EtcdStore, OP_TIMEOUT, describe};
use super::store::Store;
use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper};
use std::sync::Arc;
use std::time::Duration;

/// The time to live of the leader's lease, seconds.
pub const LEASE_TTL_SECS: i64 = 3;
/// How often the lease is renewed.
pub const RENEW_INTERVAL: Duration = Duration::from_millis(700);

/// Campaigns, leads, and campaigns again, until aborted. `me` names this server in the election
/// (its URL).
pub(crate) async fn run(store: Arc<Store>, etcd: Arc<EtcdStore>, me: String) {
    loop {
        let result = lead_once(&store, &etcd, &me).await;
        if store.leads() {
            tracing::warn!("etcd: no longer the zone's leader");
        }
        store.set_leader(false);
        if let Err(e) = result {
            tracing::debug!("etcd: election: {e}");
        }
        tokio::time::sleep(RENEW_INTERVAL).await;
    }
}

/// Renews `lease` once; an error when etcd did not confirm it in time.
async fn renew(keeper: &mut LeaseKeeper, stream: &mut LeaseKeepAliveStream) -> Result<(), String> {
    let renewed = async {
        keeper.keep_alive().await.map_err(|e| describe(&e))?;
        match stream.message().await.map_err(|e| describe(&e))? {
            Some(answer) if answer.ttl() > 0 => Ok(()),
            _ => Err("the lease expired".to_string()),
        }
    };
    tokio::time::timeout(OP_TIMEOUT.min(Duration::from_secs(1)), renewed)
        .await
        .map_err(|_| "the lease was not renewed in time".to_string())?
}

/// One term: a lease, the campaign (renewing the lease while it waits), then leadership until
/// a renewal fails.
async fn lead_once(store: &Store, etcd: &EtcdStore, me: &str) -> Result<(), String> {
    let mut client: Client = etcd.client();
    let lease = tokio::time::timeout(OP_TIMEOUT, client.lease_grant(LEASE_TTL_SECS, None))
        .await
        .map_err(|_| "no answer in time".to_string())?
        .map_err(|e| describe(&e))?
        .id();
    let (mut keeper, mut stream) = tokio::time::timeout(OP_TIMEOUT, client.lease_keep_alive(lease))
        .await
        .map_err(|_| "no answer in time".to_string())?
        .map_err(|e| describe(&e))?;
    let mut campaigner = client.clone();
    let name = etcd.key("leader");
    let campaign = campaigner.campaign(name, me, lease);
    tokio::pin!(campaign);
    let mut ticks = tokio::time::interval(RENEW_INTERVAL);
    loop {
        tokio::select! {
            won = &mut campaign => {
                won.map_err(|e| describe(&e))?;
                break;
            }
            _ = ticks.tick() => renew(&mut keeper, &mut stream).await?,
        }
    }
    store.set_leader(true);
    tracing::info!("etcd: this server leads the zone (scheduler, replication)");
    loop {
        ticks.tick().await;
        if let Err(e) = renew(&mut keeper, &mut stream).await {
            store.set_leader(false);
            // Best effort: frees the election at once when etcd is there to hear it.
            let _ = tokio::time::timeout(OP_TIMEOUT, client.lease_revoke(lease)).await;
            return Err(e);
        }
    }
}
