//! Authentication: every request carries an EXO2-HMAC-SHA256 `Authorization` header
//! ([`crate::kms::sign`]); the signature is checked over the raw body bytes, in constant time,
//! and the expiry must be neither past nor more than an hour ahead. The API key names the
//! organization; a key the server does not know makes it look for organizations created since
//! it started.

use super::App;
use super::problem::ApiError;
use super::store::Org;
use crate::kms::sign;
use axum::body::Bytes;
use axum::extract::{FromRequest, Query, Request};
use axum::http::header;
use std::sync::Arc;

/// The largest request body the server reads (an encrypt request is under 6 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Who made a request.
pub(crate) struct Caller {
    /// The organization the API key belongs to.
    pub(crate) org: Arc<Org>,
    /// The API key.
    pub(crate) api_key: String,
}

/// A request whose signature checked out: its caller and raw body.
pub(crate) struct Signed {
    /// Who.
    pub(crate) caller: Caller,
    /// The raw body, exactly as signed.
    pub(crate) body: Bytes,
}

impl FromRequest<Arc<App>> for Signed {
    type Rejection = ApiError;

    async fn from_request(request: Request, app: &Arc<App>) -> Result<Self, Self::Rejection> {
        let method = request.method().as_str().to_string();
        let path = request.uri().path().to_string();
        let query: Vec<(String, String)> = Query::try_from_uri(request.uri())
            .map(|Query(q)| q)
            .map_err(|e| ApiError::bad_request(format!("the query string is invalid: {e}")))?;
        let header = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(|h| h.to_str().map(str::to_string))
            .transpose()
            .map_err(|_| ApiError::Forbidden("the Authorization header is not text".into()))?
            .ok_or_else(|| ApiError::Forbidden("no Authorization header".into()))?;
        let auth =
            sign::parse_authorization(&header).map_err(|e| ApiError::Forbidden(e.to_string()))?;
        let body = axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| ApiError::TooLarge)?;
        let now = app.now().unix_timestamp();
        // Check the clock before looking the key up, so stale requests cost no rescan.
        sign::check_expiry(auth.expires, now).map_err(|e| ApiError::Forbidden(e.to_string()))?;
        let (org, secret) = app
            .store
            .credential_reloading(&auth.credential)
            .await
            .ok_or_else(|| ApiError::Forbidden(format!("unknown API key {}", auth.credential)))?;
        sign::verify(&secret, &auth, &method, &path, &body, &query, now)
            .map_err(|e| ApiError::Forbidden(e.to_string()))?;
        Ok(Signed {
            caller: Caller {
                org,
                api_key: auth.credential,
            },
            body,
        })
    }
}
