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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::sign::{MAX_EXPIRY_AHEAD_SECS, SIGNATURE_LIFETIME_SECS, SignError};
    use crate::server::testing::{T0, TestServer};

    /// `GET /v2/kms-key` signed by the organization of `s`, expiring at `expires`, checked at
    /// the server clock's time: the caller's organization, or why it was refused.
    fn check(s: &TestServer, expires: i64) -> Result<uuid::Uuid, String> {
        let path = "/v2/kms-key";
        let header = sign::authorization(&s.made.credentials, "GET", path, b"", &[], expires);
        let request = axum::http::Request::builder()
            .method("GET")
            .uri(path)
            .header(header::AUTHORIZATION, header)
            .body(axum::body::Body::empty())
            .expect("a request");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        match runtime.block_on(Signed::from_request(request, &s.app)) {
            Ok(signed) => Ok(signed.caller.org.id),
            Err(ApiError::Forbidden(why)) => Err(why),
            Err(other) => panic!("refused otherwise: {}", other.title()),
        }
    }

    #[test]
    fn a_signature_is_checked_against_the_servers_clock() {
        let s = TestServer::new();
        let expires = T0.unix_timestamp() + SIGNATURE_LIFETIME_SECS;
        assert_eq!(
            check(&s, expires),
            Ok(s.org.id),
            "T0 is long past for the system"
        );
        s.clock
            .advance(time::Duration::seconds(SIGNATURE_LIFETIME_SECS));
        assert_eq!(check(&s, expires), Ok(s.org.id), "valid up to its expiry");
    }

    #[test]
    fn a_signature_past_its_expiry_on_the_servers_clock_is_refused() {
        let s = TestServer::new();
        let expires = T0.unix_timestamp() + SIGNATURE_LIFETIME_SECS;
        s.clock
            .advance(time::Duration::seconds(SIGNATURE_LIFETIME_SECS + 1));
        let now = s.app.now().unix_timestamp();
        let expired = SignError::Expired { expires, now }.to_string();
        assert_eq!(check(&s, expires), Err(expired));
    }

    #[test]
    fn a_signature_expiring_too_far_past_the_servers_clock_is_refused() {
        let s = TestServer::new();
        let expires = T0.unix_timestamp() + MAX_EXPIRY_AHEAD_SECS + 1;
        let ahead = SignError::TooFarAhead { expires }.to_string();
        assert_eq!(check(&s, expires), Err(ahead));
        s.clock.advance(time::Duration::seconds(1));
        assert_eq!(
            check(&s, expires),
            Ok(s.org.id),
            "a second later it is in range"
        );
    }
}
