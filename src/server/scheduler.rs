//! The server's scheduler: every [`SCHEDULER_INTERVAL`], each organization's keyring runs its
//! due automatic rotations and destroys the keys whose `delete-at` has passed, at the time of
//! the store's clock. A run that changed a keyring writes it before the next run, and wakes the
//! replication tasks. On etcd only the zone's elected server runs it (see
//! [`super::etcd_leader`]); the others skip their turns.

#[cfg(test)]
mod tests;

use super::App;
use crate::kms::KmsError;
use crate::kms::keyring::SchedulerReport;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// How often the rotation scheduler runs.
pub const SCHEDULER_INTERVAL: Duration = Duration::from_secs(60);

/// Runs [`run_once`] every [`SCHEDULER_INTERVAL`], the first time at once, until aborted.
pub(crate) async fn run(app: Arc<App>) {
    let mut ticks = tokio::time::interval(SCHEDULER_INTERVAL);
    loop {
        ticks.tick().await;
        if !app.store.leads() {
            continue;
        }
        let app = Arc::clone(&app);
        if let Err(e) = tokio::task::spawn_blocking(move || run_once(&app)).await {
            tracing::error!("the scheduler failed: {e}");
        }
    }
}

/// One run of every organization's scheduler, at the store's clock. Each outcome is logged: what
/// changed at info, a keyring that cannot be written at error (it then stays as it was, and the
/// next run tries again). Returns the outcome of each organization. Blocking (disk writes).
pub(crate) fn run_once(app: &App) -> Vec<(Uuid, Result<SchedulerReport, KmsError>)> {
    let outcomes: Vec<_> = app
        .store
        .orgs()
        .into_iter()
        .map(|org| {
            let result = app.store.mutate(&org, |ring, now| {
                let report = ring.run_scheduler(now);
                let changed = !report.is_empty();
                Ok((report, changed))
            });
            match &result {
                Ok(report) if !report.is_empty() => tracing::info!(
                    org = %org.id,
                    rotated = ?report.rotated,
                    destroyed = ?report.destroyed,
                    "scheduler"
                ),
                Ok(_) => {}
                Err(e) => tracing::error!(org = %org.id, "scheduler: {e}"),
            }
            (org.id, result)
        })
        .collect();
    if outcomes
        .iter()
        .any(|(_, result)| result.as_ref().is_ok_and(|report| !report.is_empty()))
    {
        app.changed();
    }
    outcomes
}
