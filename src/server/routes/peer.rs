//! The internal route of zone peers, `POST /v2/_peer/replica`: a primary zone pushes a sealed
//! key record, this zone installs or merges the replica and answers the watermark it holds.
//!
//! Only a server started with `--peer` has the route (others answer 404). A request must be
//! signed with EXO2-HMAC-SHA256 under the credential `peer:ZONE` of a configured peer zone and
//! the key derived for that zone from the peer secret; anything else (no signature, an API
//! key of an organization, another secret) is 403.

use crate::kms::keyring::KeyRecord;
use crate::kms::sign;
use crate::kms::{KmsError, Refusal};
use crate::server::App;
use crate::server::audit::AuditRecord;
use crate::server::auth::MAX_BODY_BYTES;
use crate::server::body;
use crate::server::peer::{PEER_CREDENTIAL_PREFIX, PushRequest, PushResponse, RecordRoute};
use crate::server::problem::ApiError;
use axum::Json;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use std::sync::Arc;

/// Checks a peer's signature; returns the caller's zone and the raw body.
async fn authenticate(
    app: &App,
    request: Request,
) -> Result<(String, axum::body::Bytes), ApiError> {
    let peers = &app.replication.as_ref().ok_or(ApiError::NotFound)?.peers;
    let path = request.uri().path().to_string();
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| ApiError::Forbidden("peer request without Authorization".into()))?;
    let auth =
        sign::parse_authorization(&header).map_err(|e| ApiError::Forbidden(e.to_string()))?;
    let zone = auth
        .credential
        .strip_prefix(PEER_CREDENTIAL_PREFIX)
        .filter(|z| peers.urls.contains_key(*z))
        .ok_or_else(|| ApiError::Forbidden(format!("{} is no peer zone", auth.credential)))?
        .to_string();
    let body = axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::TooLarge)?;
    let credentials = peers.secret.credentials(&zone);
    let now = app.now().unix_timestamp();
    sign::verify(&credentials.secret, &auth, "POST", &path, &body, &[], now)
        .map_err(|e| ApiError::Forbidden(format!("peer {zone}: {e}")))?;
    Ok((zone, body))
}

fn invalid(detail: String) -> ApiError {
    ApiError::Refused(Refusal::InvalidArgument, detail)
}

/// `POST /v2/_peer/replica`.
pub(super) async fn replica(State(app): State<Arc<App>>, request: Request) -> Response {
    let (zone, body) = match authenticate(&app, request).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(
                "peer request refused: {}",
                match &e {
                    ApiError::Forbidden(why) => why.as_str(),
                    _ => e.title(),
                }
            );
            return e.into_response();
        }
    };
    let mut org_id = None;
    let mut key_id = None;
    let result = async {
        let request: PushRequest = body::json(&body)?;
        org_id = Some(request.org);
        key_id = Some(request.key);
        install(&app, &zone, request).await
    }
    .await;
    let outcome = match &result {
        Ok(_) => "success".to_string(),
        Err(e) => e.title().to_string(),
    };
    match &result {
        Err(ApiError::Internal(why)) => {
            tracing::error!(zone, key = ?key_id, "replica push failed: {why}")
        }
        Err(e) => {
            tracing::warn!(zone, key = ?key_id, "replica push refused: {}: {}", e.title(), e.detail())
        }
        Ok(_) => {}
    }
    if let Some(org) = org_id {
        app.audit.record(AuditRecord {
            time: app.now(),
            org,
            api_key: format!("{PEER_CREDENTIAL_PREFIX}{zone}"),
            operation: "replica-push",
            key_id,
            result: outcome,
        });
    }
    match result {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Opens the record of `request` from peer `zone` and installs it.
async fn install(
    app: &Arc<App>,
    zone: &str,
    request: PushRequest,
) -> Result<PushResponse, ApiError> {
    let peers = &app.replication.as_ref().ok_or(ApiError::NotFound)?.peers;
    if request.source_zone != zone {
        return Err(ApiError::Forbidden(format!(
            "peer {zone} sent a record of zone {}",
            request.source_zone
        )));
    }
    if request.target_zone != peers.own_zone {
        return Err(invalid(format!(
            "the record is for zone {}, this is {}",
            request.target_zone, peers.own_zone
        )));
    }
    let sealed = BASE64
        .decode(request.sealed.as_bytes())
        .map_err(|_| ApiError::bad_request("`sealed` is not base64"))?;
    let route = RecordRoute {
        source: zone,
        target: &peers.own_zone,
        org: request.org,
        key: request.key,
        watermark: request.watermark,
    };
    let plain = peers
        .secret
        .open_record(&route, &sealed)
        .map_err(|_| ApiError::Forbidden(format!("a record from {zone} did not open")))?;
    let record = KeyRecord::from_bytes(plain.expose_secret()).map_err(ApiError::from)?;
    drop(plain);
    if record.id() != request.key || record.origin_zone() != zone {
        return Err(invalid(format!(
            "the record is not key {} of zone {zone}",
            request.key
        )));
    }
    let org = app.store.org_reloading(request.org).await.ok_or_else(|| {
        invalid(format!(
            "organization {} is not known in zone {}; import it with `kmsfs kms org import`",
            request.org, peers.own_zone
        ))
    })?;
    let store = Arc::clone(&app.store);
    let key = request.key;
    tokio::task::spawn_blocking(move || {
        store.mutate(&org, |ring, now| {
            let status = ring.install_replica(record.clone(), now)?;
            let applied = ring.replica_watermark(key);
            Ok::<_, KmsError>((
                PushResponse {
                    status,
                    applied_watermark: applied,
                },
                status != crate::kms::wire::Applied::AlreadyApplied,
            ))
        })
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the install did not finish: {e}")))?
    .map_err(ApiError::from)
}
