//! `create-kms-key`, `list-kms-keys`, `get-kms-key`.

use super::Call;
use crate::kms::wire::{CreateKeyRequest, KeyList};
use crate::server::App;
use crate::server::auth::Signed;
use crate::server::body;
use axum::extract::{Path, State};
use axum::response::Response;
use std::sync::Arc;

/// `POST /v2/kms-key`.
pub(super) async fn create(State(app): State<Arc<App>>, signed: Signed) -> Response {
    let call = Call::new(app, signed, "create-kms-key");
    let result = async {
        let request: CreateKeyRequest = body::json(call.body())?;
        call.change(move |ring, now| ring.create_key(&request, now).map(|key| (key, true)))
            .await
    }
    .await;
    call.finish(result)
}

/// `GET /v2/kms-key`.
pub(super) async fn list(State(app): State<Arc<App>>, signed: Signed) -> Response {
    let call = Call::new(app, signed, "list-kms-keys");
    let result = call.read(|ring, now| {
        Ok(KeyList {
            kms_keys: ring.list_keys(now),
        })
    });
    call.finish(result)
}

/// `GET /v2/kms-key/{id}`.
pub(super) async fn get(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    signed: Signed,
) -> Response {
    let mut call = Call::new(app, signed, "get-kms-key");
    let result = call
        .key_id(&id)
        .and_then(|id| call.read(|ring, now| ring.get_key(id, now)));
    call.finish(result)
}
