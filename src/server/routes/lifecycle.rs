//! `enable-kms-key`, `disable-kms-key`, `schedule-kms-key-deletion`,
//! `cancel-kms-key-deletion`, `replicate-kms-key`.

use super::Call;
use crate::kms::wire::{
    Applied, ReplicateRequest, ScheduleDeletionRequest, ScheduleDeletionResponse, SuccessResponse,
};
use crate::server::auth::Signed;
use crate::server::body;
use crate::server::problem::ApiError;
use crate::server::{App, replication};
use axum::extract::{Path, State};
use axum::response::Response;
use std::sync::Arc;

fn applied(status: Applied) -> (SuccessResponse, bool) {
    (
        SuccessResponse { status },
        status != Applied::AlreadyApplied,
    )
}

/// `POST /v2/kms-key/{id}/enable`.
pub(super) async fn enable(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    signed: Signed,
) -> Response {
    let mut call = Call::new(app, signed, "enable-kms-key");
    let result = async {
        let id = call.key_id(&id)?;
        body::no_body(call.body())?;
        call.change(move |ring, now| ring.enable_key(id, now).map(applied))
            .await
    }
    .await;
    call.finish(result)
}

/// `POST /v2/kms-key/{id}/disable`.
pub(super) async fn disable(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    signed: Signed,
) -> Response {
    let mut call = Call::new(app, signed, "disable-kms-key");
    let result = async {
        let id = call.key_id(&id)?;
        body::no_body(call.body())?;
        call.change(move |ring, now| ring.disable_key(id, now).map(applied))
            .await
    }
    .await;
    call.finish(result)
}

/// `POST /v2/kms-key/{id}/schedule-deletion`; `delay-days` 7–30, default 30.
pub(super) async fn schedule_deletion(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    signed: Signed,
) -> Response {
    let mut call = Call::new(app, signed, "schedule-kms-key-deletion");
    let result = async {
        let id = call.key_id(&id)?;
        let request: ScheduleDeletionRequest = body::json_or_default(call.body())?;
        call.change(move |ring, now| {
            ring.schedule_deletion(id, request.delay_days, now)
                .map(|delete_at| (ScheduleDeletionResponse { delete_at }, true))
        })
        .await
    }
    .await;
    call.finish(result)
}

/// `POST /v2/kms-key/{id}/cancel-deletion`.
pub(super) async fn cancel_deletion(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    signed: Signed,
) -> Response {
    let mut call = Call::new(app, signed, "cancel-kms-key-deletion");
    let result = async {
        let id = call.key_id(&id)?;
        body::no_body(call.body())?;
        call.change(move |ring, now| ring.cancel_deletion(id, now).map(applied))
            .await
    }
    .await;
    call.finish(result)
}

/// `POST /v2/kms-key/{id}/replicate`: registers the target zone (one of the configured peers)
/// on the multi-zone primary, then makes one push to it at once. Answers `success` when the
/// replica exists in the target zone on return, `target-registered` when that push failed (the
/// zone is down, or does not know the organization yet): the replication task keeps trying,
/// and `replicas-status` shows the failure until it succeeds.
pub(super) async fn replicate(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    signed: Signed,
) -> Response {
    let mut call = Call::new(app, signed, "replicate-kms-key");
    let result = async {
        let id = call.key_id(&id)?;
        let request: ReplicateRequest = body::json(call.body())?;
        if request.zone.trim().is_empty() {
            return Err(ApiError::bad_request("the field `zone` is empty"));
        }
        let peers = call
            .app
            .replication
            .as_ref()
            .map(|r| r.peers.zones())
            .unwrap_or_default();
        let zone = request.zone.clone();
        call.change(move |ring, now| {
            ring.register_replica(id, &request.zone, &peers, now)
                .map(|status| (status, true))
        })
        .await?;
        let org = Arc::clone(&call.signed.caller.org);
        let status = match replication::push(&call.app, &org, id, &zone).await {
            Ok(_) => Applied::Success,
            Err(_) => Applied::TargetRegistered,
        };
        Ok(SuccessResponse { status })
    }
    .await;
    call.finish(result)
}
