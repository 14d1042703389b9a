//! Replication of multi-zone keys from their primaries here to the replica zones: one task per
//! peer zone pushes the newest state of every primary whose replica there lags behind.
//!
//! A task wakes every [`TICK`] (and at once after a change of a key), asks every keyring which
//! replicas in its zone have not applied the primary's newest revision, and pushes each: the
//! key record, sealed under the peer transport key (see [`super::peer`]), in a request signed
//! as `peer:OWN-ZONE`. The replica answers the watermark it applied; the primary records it as
//! the replica's `last-applied-watermark`, or records the failure as `last-failure` and retries
//! that replica after a pause that doubles from 250 ms to 2 s ([`PUSH_BACKOFF`]). The
//! watermarks are part of the persisted keyring, so after a restart the tasks carry on where they
//! were; a replica zone that was down catches up as soon as it answers again. On etcd only the
//! zone's elected server pushes (see [`super::etcd_leader`]).

use super::App;
use super::peer::{PushRequest, PushResponse, REPLICA_PATH, RecordRoute};
use super::store::Org;
use crate::kms::backoff::Backoff;
use crate::kms::keyring::ReplicaLag;
use crate::kms::sign;
use crate::kms::wire::ReplicaFailure;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// How often a replication task looks for lagging replicas.
pub const TICK: Duration = Duration::from_millis(250);
/// The waits after failed pushes to one replica: 250 ms, doubling up to 2 s, without end.
pub const PUSH_BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(250),
    factor: 2,
    max: Duration::from_secs(2),
    retries: None,
};
/// How long one push may take.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to a peer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Starts one replication task per peer zone; they run until aborted.
pub(crate) fn spawn_tasks(app: &Arc<App>) -> Vec<tokio::task::JoinHandle<()>> {
    let Some(replication) = &app.replication else {
        return Vec::new();
    };
    replication
        .peers
        .zones()
        .into_iter()
        .map(|zone| tokio::spawn(run_peer(Arc::clone(app), zone)))
        .collect()
}

/// When a replica that failed may be tried again, and how many retries it has had.
struct Waiting {
    next_try: Instant,
    retry: u32,
}

async fn run_peer(app: Arc<App>, zone: String) {
    let Some(replication) = &app.replication else {
        return;
    };
    let mut backoff: HashMap<(Uuid, Uuid), Waiting> = HashMap::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            () = replication.wake.notified() => {}
        }
        if !app.store.leads() {
            continue;
        }
        let now = app.now();
        let work: Vec<(Arc<Org>, ReplicaLag)> = app
            .store
            .orgs()
            .into_iter()
            .flat_map(|org| {
                let lag = org.keyring().lagging_replicas(now);
                lag.into_iter()
                    .filter(|l| l.zone == zone)
                    .map(move |l| (Arc::clone(&org), l))
                    .collect::<Vec<_>>()
            })
            .collect();
        backoff.retain(|(org, key), _| work.iter().any(|(o, l)| o.id == *org && l.key == *key));
        for (org, lag) in work {
            let slot = (org.id, lag.key);
            if backoff
                .get(&slot)
                .is_some_and(|b| b.next_try > Instant::now())
            {
                continue;
            }
            match push(&app, &org, lag.key, &zone).await {
                Ok(_) => {
                    backoff.remove(&slot);
                }
                Err(_) => {
                    let retry = backoff.get(&slot).map_or(0, |w| w.retry.saturating_add(1));
                    // The push backoff has no retry limit: it always has a next pause.
                    let pause = PUSH_BACKOFF.pause(retry).unwrap_or(PUSH_BACKOFF.max);
                    let next_try = Instant::now() + pause;
                    backoff.insert(slot, Waiting { next_try, retry });
                }
            }
        }
    }
}

/// Pushes the newest state of primary `key` of `org` to its replica in `zone` once, and records
/// the outcome in the primary's `replicas-status` (durably). Returns the applied watermark.
///
/// # Errors
/// A sentence saying why the push failed (also recorded as the replica's `last-failure`).
pub(crate) async fn push(
    app: &Arc<App>,
    org: &Arc<Org>,
    key: Uuid,
    zone: &str,
) -> Result<u64, String> {
    let watermark = org
        .keyring()
        .get_key(key, app.now())
        .map(|k| k.revision.seq)
        .unwrap_or(0);
    let result = send(app, org, key, zone).await;
    let store = Arc::clone(&app.store);
    let org2 = Arc::clone(org);
    let zone2 = zone.to_string();
    let outcome = result.clone();
    let recorded = tokio::task::spawn_blocking(move || {
        store.mutate(&org2, |ring, now| {
            let changed = match &outcome {
                Ok(applied) => ring.record_replica_applied(key, &zone2, *applied),
                Err(error) => ring.record_replica_failure(
                    key,
                    &zone2,
                    ReplicaFailure {
                        attempted_watermark: watermark,
                        error: error.clone(),
                        failed_at: now,
                    },
                ),
            };
            Ok(((), changed))
        })
    })
    .await;
    match recorded {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(org = %org.id, key = %key, zone, "cannot record replication: {e}")
        }
        Err(e) => {
            tracing::error!(org = %org.id, key = %key, zone, "cannot record replication: {e}")
        }
    }
    match &result {
        Ok(applied) => {
            tracing::info!(org = %org.id, key = %key, zone, watermark = applied, "replicated")
        }
        Err(e) => {
            tracing::warn!(org = %org.id, key = %key, zone, watermark, "replication failed: {e}")
        }
    }
    result
}

/// One push request; the replica's applied watermark, or why it failed.
async fn send(app: &Arc<App>, org: &Org, key: Uuid, zone: &str) -> Result<u64, String> {
    let replication = app
        .replication
        .as_ref()
        .ok_or_else(|| "this server has no peers".to_string())?;
    let peers = &replication.peers;
    let base = peers
        .urls
        .get(zone)
        .ok_or_else(|| format!("zone {zone} is not a configured peer"))?;
    let (record, watermark) = {
        let now = app.now();
        let ring = org.keyring();
        let record = ring
            .replica_record(key, now)
            .map_err(|e| format!("the primary cannot be copied: {e}"))?;
        let watermark = ring
            .get_key(key, now)
            .map_err(|e| e.to_string())?
            .revision
            .seq;
        (record, watermark)
    };
    let bytes = record.to_bytes().map_err(|e| e.to_string())?;
    drop(record);
    let route = RecordRoute {
        source: &peers.own_zone,
        target: zone,
        org: org.id,
        key,
        watermark,
    };
    let sealed = peers.secret.seal_record(&route, bytes.expose_secret());
    drop(bytes);
    let body = serde_json::to_vec(&PushRequest {
        org: org.id,
        source_zone: peers.own_zone.clone(),
        target_zone: zone.to_string(),
        key,
        watermark,
        sealed: BASE64.encode(sealed),
    })
    .map_err(|e| format!("cannot write the request: {e}"))?;
    let url = format!("{}{REPLICA_PATH}", base.trim_end_matches('/'));
    let path = reqwest::Url::parse(&url)
        .map_err(|e| format!("the peer URL {url} is invalid: {e}"))?
        .path()
        .to_string();
    let expires = app.now().unix_timestamp() + 60;
    let credentials = peers.secret.credentials(&peers.own_zone);
    let authorization = sign::authorization(&credentials, "POST", &path, &body, &[], expires);
    let response = replication
        .client
        .post(&url)
        .header("authorization", authorization)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("zone {zone} is unreachable: {e}"))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| format!("zone {zone} did not answer completely: {e}"))?;
    if !status.is_success() {
        let problem: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        return Err(format!(
            "zone {zone} refused ({status}): {}: {}",
            problem["title"].as_str().unwrap_or("?"),
            problem["detail"].as_str().unwrap_or("")
        ));
    }
    let answer: PushResponse = serde_json::from_slice(&bytes)
        .map_err(|e| format!("zone {zone} answered something else: {e}"))?;
    Ok(answer.applied_watermark)
}
