//! The HTTP routes of the KMS part of the Exoscale API v2, and [`Call`], the one path every
//! route takes: authenticated caller in, span, keyring read or change, audit line, JSON or
//! problem document out. Each family of routes lives in its own file and only parses, calls the
//! keyring and maps errors.

mod crypto;
mod keys;
mod lifecycle;
mod peer;
mod rotation;

use super::App;
use super::audit::AuditRecord;
use super::auth::Signed;
use super::body;
use super::problem::ApiError;
use crate::kms::KmsError;
use crate::kms::keyring::Keyring;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use std::sync::Arc;
use time::OffsetDateTime;
use tracing::Span;
use uuid::Uuid;

/// The router of every `/v2/kms-key...` operation; anything else is a 404 or 405 problem.
pub(crate) fn router(app: Arc<App>) -> Router {
    let mut router = Router::new();
    if app.replication.is_some() {
        let path = format!("/v2{}", crate::server::peer::REPLICA_PATH);
        router = router.route(&path, post(peer::replica));
    }
    router
        .route("/v2/kms-key", get(keys::list).post(keys::create))
        .route("/v2/kms-key/{id}", get(keys::get))
        .route("/v2/kms-key/{id}/rotate", post(rotation::rotate))
        .route(
            "/v2/kms-key/{id}/enable-key-rotation",
            post(rotation::enable),
        )
        .route(
            "/v2/kms-key/{id}/disable-key-rotation",
            post(rotation::disable),
        )
        .route("/v2/kms-key/{id}/list-key-rotations", get(rotation::list))
        .route("/v2/kms-key/{id}/enable", post(lifecycle::enable))
        .route("/v2/kms-key/{id}/disable", post(lifecycle::disable))
        .route(
            "/v2/kms-key/{id}/schedule-deletion",
            post(lifecycle::schedule_deletion),
        )
        .route(
            "/v2/kms-key/{id}/cancel-deletion",
            post(lifecycle::cancel_deletion),
        )
        .route("/v2/kms-key/{id}/replicate", post(lifecycle::replicate))
        .route("/v2/kms-key/{id}/encrypt", post(crypto::encrypt))
        .route("/v2/kms-key/{id}/decrypt", post(crypto::decrypt))
        .route(
            "/v2/kms-key/{id}/generate-data-key",
            post(crypto::generate_data_key),
        )
        .route("/v2/kms-key/{id}/re-encrypt", post(crypto::re_encrypt))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(app)
}

/// One authenticated API call on its way through a route.
pub(crate) struct Call {
    app: Arc<App>,
    signed: Signed,
    operation: &'static str,
    key: Option<Uuid>,
    span: Span,
}

impl Call {
    /// Starts the call of `operation` (the spec's operation id) and its span. The span is at
    /// debug level (`KMSFS_LOG=debug`), so the hot path pays nothing for it by default; a
    /// failure's error event carries the same fields itself.
    fn new(app: Arc<App>, signed: Signed, operation: &'static str) -> Self {
        let span = tracing::debug_span!(
            "request",
            operation,
            org = %signed.caller.org.id,
            key = tracing::field::Empty
        );
        Call {
            app,
            signed,
            operation,
            key: None,
            span,
        }
    }

    /// The raw request body.
    fn body(&self) -> &Bytes {
        &self.signed.body
    }

    /// Parses the key id of the path and remembers it for the span and the audit line.
    fn key_id(&mut self, raw: &str) -> Result<Uuid, ApiError> {
        let id = body::key_id(raw)?;
        self.key = Some(id);
        self.span.record("key", tracing::field::display(id));
        Ok(id)
    }

    /// Runs a read or a cryptographic operation on the caller's keyring (read lock, memory).
    fn read<T>(
        &self,
        op: impl FnOnce(&Keyring, OffsetDateTime) -> Result<T, KmsError>,
    ) -> Result<T, ApiError> {
        self.app.store.confirm_current()?;
        let keyring = self.signed.caller.org.keyring();
        op(&keyring, self.app.now()).map_err(ApiError::from)
    }

    /// Runs a change of the caller's keyring on a blocking thread; it is durable on return.
    /// `change` says whether it changed anything (nothing to write otherwise).
    async fn change<T: Send + 'static>(
        &self,
        change: impl FnMut(&mut Keyring, OffsetDateTime) -> Result<(T, bool), KmsError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = Arc::clone(&self.app.store);
        let org = Arc::clone(&self.signed.caller.org);
        let span = self.span.clone();
        let result =
            tokio::task::spawn_blocking(move || span.in_scope(|| store.mutate(&org, change)))
                .await
                .map_err(|e| ApiError::Internal(format!("the change did not finish: {e}")))?
                .map_err(ApiError::from);
        if result.is_ok() {
            self.app.changed();
        }
        result
    }

    /// Logs, audits and answers.
    fn finish<T: Serialize>(self, result: Result<T, ApiError>) -> Response {
        let outcome = match &result {
            Ok(_) => "success".to_string(),
            Err(e) => e.title().to_string(),
        };
        self.span.in_scope(|| match &result {
            Ok(_) => tracing::debug!("success"),
            Err(ApiError::Internal(why)) => tracing::error!(
                operation = self.operation,
                org = %self.signed.caller.org.id,
                key = ?self.key,
                "failed: {why}"
            ),
            Err(e) => tracing::debug!("refused: {}: {}", e.title(), e.detail()),
        });
        self.app.audit.record(AuditRecord {
            time: self.app.now(),
            org: self.signed.caller.org.id,
            api_key: self.signed.caller.api_key,
            operation: self.operation,
            key_id: self.key,
            result: outcome,
        });
        match result {
            Ok(value) => Json(value).into_response(),
            Err(e) => e.into_response(),
        }
    }
}
