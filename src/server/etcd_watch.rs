//! How a server on etcd follows the other servers' changes: a watch on the zone's org records
//! installs every newer record in memory (new organizations too), and progress requests every
//! [`PROGRESS_INTERVAL`] confirm that nothing is missing. The store's readers refuse to serve
//! keys once no confirmation came for [`super::etcd::STALE_AFTER`] (see
//! [`super::Store::confirm_current`]). A lost watch is made again, after a full read of the
//! records, until the server stops.

use super::etcd::{EtcdStore, OP_TIMEOUT, describe};
use super::store::{Record, Store};
use etcd_client::{EventType, GetOptions, WatchOptions};
use std::sync::Arc;
use std::time::Duration;

/// How often the watch asks etcd to confirm that it is current.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(400);
/// The pause before a lost watch is made again.
pub const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Follows the store's changes until aborted.
pub(crate) async fn follow(store: Arc<Store>, etcd: Arc<EtcdStore>) {
    let mut failing = false;
    loop {
        match follow_once(&store, &etcd, &mut failing).await {
            Ok(()) => tracing::warn!("etcd: the watch ended; making it again"),
            Err(e) if !failing => {
                tracing::warn!("etcd: the watch is lost ({e}); retrying");
                failing = true;
            }
            Err(e) => tracing::debug!("etcd: still no watch: {e}"),
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Installs `records` in the store (on a blocking thread: loading may write).
async fn apply(store: &Arc<Store>, records: Vec<Record>) {
    if records.is_empty() {
        return;
    }
    let store = Arc::clone(store);
    let done = tokio::task::spawn_blocking(move || {
        for record in records {
            let id = record.id;
            if let Err(e) = store.apply(record) {
                tracing::error!(org = %id, "etcd: a stored organization cannot be taken: {e}");
            }
        }
    })
    .await;
    if let Err(e) = done {
        tracing::error!("etcd: applying changes failed: {e}");
    }
}

/// Reads every record, then watches from the revision after that read; returns when the watch
/// ends, or with why it failed.
async fn follow_once(
    store: &Arc<Store>,
    etcd: &Arc<EtcdStore>,
    failing: &mut bool,
) -> Result<(), String> {
    let mut client = etcd.client();
    let prefix = etcd.orgs_prefix();
    let listed = tokio::time::timeout(
        OP_TIMEOUT,
        client.get(prefix.as_str(), Some(GetOptions::new().with_prefix())),
    )
    .await
    .map_err(|_| "no answer in time".to_string())?
    .map_err(|e| describe(&e))?;
    let revision = listed.header().map_or(0, |h| h.revision());
    let records = listed
        .kvs()
        .iter()
        .filter_map(|kv| {
            Some(Record {
                id: etcd.org_of_key(kv.key())?,
                bytes: kv.value().to_vec(),
                revision: kv.mod_revision(),
            })
        })
        .collect();
    apply(store, records).await;
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1)
        .with_progress_notify();
    let (mut watcher, mut stream) =
        tokio::time::timeout(OP_TIMEOUT, client.watch(prefix.as_str(), Some(options)))
            .await
            .map_err(|_| "no answer in time".to_string())?
            .map_err(|e| describe(&e))?;
    etcd.confirm();
    if *failing {
        tracing::info!("etcd: following the store again");
        *failing = false;
    }
    let mut progress = tokio::time::interval(PROGRESS_INTERVAL);
    loop {
        tokio::select! {
            _ = progress.tick() => {
                tokio::time::timeout(OP_TIMEOUT, watcher.request_progress())
                    .await
                    .map_err(|_| "no answer in time".to_string())?
                    .map_err(|e| describe(&e))?;
            }
            message = stream.message() => {
                let Some(response) = message.map_err(|e| describe(&e))? else {
                    return Ok(());
                };
                if response.canceled() {
                    return Err(format!("etcd cancelled the watch: {}", response.cancel_reason()));
                }
                if response.created() {
                    continue;
                }
                let records: Vec<Record> = response
                    .events()
                    .iter()
                    .filter(|event| event.event_type() == EventType::Put)
                    .filter_map(|event| {
                        let kv = event.kv()?;
                        Some(Record {
                            id: etcd.org_of_key(kv.key())?,
                            bytes: kv.value().to_vec(),
                            revision: kv.mod_revision(),
                        })
                    })
                    .collect();
                let progress_only = response.events().is_empty();
                apply(store, records).await;
                if progress_only {
                    etcd.confirm();
                }
            }
        }
    }
}
