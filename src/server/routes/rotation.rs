//! `rotate-kms-key`, `enable-kms-key-rotation`, `disable-kms-key-rotation`,
//! `list-kms-key-rotations`.

use super::Call;
use crate::kms::wire::{EnableRotationRequest, RotationList, RotationResponse};
use crate::server::App;
use crate::server::auth::Signed;
use crate::server::body;
use axum::extract::{Path, State};
use axum::response::Response;
use std::sync::Arc;

/// `POST /v2/kms-key/{id}/rotate`.
pub(super) async fn rotate(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    signed: Signed,
) -> Response {
    let mut call = Call::new(app, signed, "rotate-kms-key");
    let result = async {
        let id = call.key_id(&id)?;
        body::no_body(call.body())?;
        call.change(move |ring, now| {
            ring.rotate_key(id, now)
                .map(|rotation| (RotationResponse { rotation }, true))
        })
        .await
    }
    .await;
    call.finish(result)
}

/// `POST /v2/kms-key/{id}/enable-key-rotation`; `rotation-period` 90–2560, default 365.
pub(super) async fn enable(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    signed: Signed,
) -> Response {
    let mut call = Call::new(app, signed, "enable-kms-key-rotation");
    let result = async {
        let id = call.key_id(&id)?;
        let request: EnableRotationRequest = body::json_or_default(call.body())?;
        call.change(move |ring, now| {
            ring.enable_rotation(id, request.rotation_period, now)
                .map(|rotation| (RotationResponse { rotation }, true))
        })
        .await
    }
    .await;
    call.finish(result)
}

/// `POST /v2/kms-key/{id}/disable-key-rotation`.
pub(super) async fn disable(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    signed: Signed,
) -> Response {
    let mut call = Call::new(app, signed, "disable-kms-key-rotation");
    let result = async {
        let id = call.key_id(&id)?;
        body::no_body(call.body())?;
        call.change(move |ring, now| {
            ring.disable_rotation(id, now)
                .map(|rotation| (RotationResponse { rotation }, true))
        })
        .await
    }
    .await;
    call.finish(result)
}

/// `GET /v2/kms-key/{id}/list-key-rotations`.
pub(super) async fn list(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    signed: Signed,
) -> Response {
    let mut call = Call::new(app, signed, "list-kms-key-rotations");
    let result = call.key_id(&id).and_then(|id| {
        call.read(|ring, now| {
            ring.list_rotations(id, now)
                .map(|rotations| RotationList { rotations })
        })
    });
    call.finish(result)
}
