//! What a failed request answers: an RFC 9457 problem document (`application/problem+json`,
//! `{type, title, status, detail}`). Refusals of the key rules are 400 with the spec's titles;
//! authentication failures 403; unknown paths 404; wrong methods 405. An invalid ciphertext is a
//! 400 "Bad Request" whose `type` alone names it, so that clients need not read the detail.

use crate::kms::remote::http::INVALID_CIPHERTEXT_TYPE;
use crate::kms::{KmsError, Refusal};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The content type of problem documents.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Why a request failed, as the server answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// A rule of the API refused (400, the refusal's title).
    Refused(Refusal, String),
    /// The ciphertext did not open; says nothing more (400 "Bad Request").
    InvalidCiphertext,
    /// The request is not signed right (403 "Forbidden"); the detail is for the log only.
    Forbidden(String),
    /// No such path (404).
    NotFound,
    /// The path exists, the method does not (405).
    MethodNotAllowed,
    /// The body is larger than the server reads (413).
    TooLarge,
    /// The server failed (500); the detail is logged, not sent.
    Internal(String),
    /// The server cannot confirm or store its state now (503); a later try may pass.
    Unavailable(String),
}

impl ApiError {
    /// A 400 "Bad Request" with `detail`.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        ApiError::Refused(Refusal::BadRequest, detail.into())
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Refused(..) | ApiError::InvalidCiphertext => StatusCode::BAD_REQUEST,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The problem title: the spec's for refusals, the HTTP reason phrase otherwise.
    pub fn title(&self) -> &'static str {
        match self {
            ApiError::Refused(refusal, _) => refusal.title(),
            ApiError::InvalidCiphertext => Refusal::BadRequest.title(),
            _ => self.status().canonical_reason().unwrap_or("Error"),
        }
    }

    /// The detail sentence sent to the client.
    pub fn detail(&self) -> String {
        match self {
            ApiError::Refused(_, detail) => detail.clone(),
            ApiError::InvalidCiphertext => KmsError::InvalidCiphertext.to_string(),
            ApiError::Forbidden(_) => "the request signature was refused".into(),
            ApiError::NotFound => "no such path in this API".into(),
            ApiError::MethodNotAllowed => "this path does not take this method".into(),
            ApiError::TooLarge => "the request body is too large".into(),
            ApiError::Internal(_) => "the server failed; see its log".into(),
            ApiError::Unavailable(detail) => detail.clone(),
        }
    }

    /// The problem `type`: a URN naming the refusal, `about:blank` for plain HTTP errors.
    fn kind(&self) -> String {
        match self {
            ApiError::InvalidCiphertext => INVALID_CIPHERTEXT_TYPE.into(),
            ApiError::Refused(..) => format!(
                "urn:kmsfs:problem:{}",
                self.title().to_ascii_lowercase().replace(' ', "-")
            ),
            _ => "about:blank".into(),
        }
    }
}

impl From<KmsError> for ApiError {
    fn from(e: KmsError) -> Self {
        match e {
            KmsError::Refused { refusal, detail } => ApiError::Refused(refusal, detail),
            KmsError::InvalidCiphertext => ApiError::InvalidCiphertext,
            KmsError::Unavailable {
                status: 503,
                detail,
                ..
            } => ApiError::Unavailable(detail),
            // The keyring behind the server has no other answers: anything else is the
            // server's own failure (its state file, a peer), told in the log only.
            other @ (KmsError::Unauthorized { .. }
            | KmsError::Limited { .. }
            | KmsError::Unreachable { .. }
            | KmsError::Unavailable { .. }
            | KmsError::Unexpected { .. }
            | KmsError::Malformed { .. }
            | KmsError::Client(_)
            | KmsError::Keystore(_)) => ApiError::Internal(other.to_string()),
        }
    }
}

#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ProblemBody {
            kind: self.kind(),
            title: self.title(),
            status: status.as_u16(),
            detail: self.detail(),
        };
        let bytes = serde_json::to_vec(&body).expect("BUG: a problem always serializes");
        let mut response = (status, bytes).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::KeystoreError;

    #[test]
    fn titles_and_statuses() {
        let refused = ApiError::Refused(Refusal::NotOnAReplica, "x".into());
        assert_eq!(refused.title(), "Not on a Replica");
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        assert_eq!(refused.kind(), "urn:kmsfs:problem:not-on-a-replica");
        assert_eq!(ApiError::Forbidden("why".into()).title(), "Forbidden");
        assert!(!ApiError::Forbidden("why".into()).detail().contains("why"));
        assert_eq!(ApiError::NotFound.title(), "Not Found");
        assert_eq!(ApiError::MethodNotAllowed.title(), "Method Not Allowed");
        assert_eq!(ApiError::InvalidCiphertext.title(), "Bad Request");
        assert_eq!(
            ApiError::InvalidCiphertext.kind(),
            "urn:kmsfs:problem:invalid-ciphertext"
        );
        assert_eq!(
            ApiError::bad_request("x").kind(),
            "urn:kmsfs:problem:bad-request"
        );
    }

    #[test]
    fn kms_errors_become_http_statuses() {
        let io = std::io::Error::from(std::io::ErrorKind::StorageFull);
        let refused = |refusal| KmsError::refused(refusal, "k");
        let invalid = KeystoreError::Invalid {
            why: "gap".into(),
            source: None,
        };
        let internal = "Internal Server Error";
        let cases = [
            (refused(Refusal::KeyNotFound), 400, "Key Not Found"),
            (refused(Refusal::KeyDisabled), 400, "Key is Disabled"),
            (
                refused(Refusal::KeyPendingDeletion),
                400,
                "Key is Pending Deletion",
            ),
            (refused(Refusal::NameConflict), 400, "Name Conflict"),
            (
                refused(Refusal::ManualRotationLimit),
                400,
                "Manual Rotation Limit",
            ),
            (KmsError::InvalidCiphertext, 400, "Bad Request"),
            (
                KeystoreError::io("write", "/d/orgs/x", io).into(),
                500,
                internal,
            ),
            (invalid.into(), 500, internal),
        ];
        for (error, status, title) in cases {
            let text = error.to_string();
            let answer = ApiError::from(error);
            assert_eq!(answer.status().as_u16(), status, "{text}");
            assert_eq!(answer.title(), title, "{text}");
        }
        let internal = ApiError::from(KmsError::from(KeystoreError::TooLarge { what: "x" }));
        assert!(
            !internal.detail().contains("too large"),
            "no server detail is sent"
        );
    }
}
