//! The HTTP side of the remote KMS, shared by the blocking [`super::RemoteKms`] and the async
//! `kmsfs kms bench`: the endpoint and its URLs, credentials from the environment, request
//! signing, the time limits, and turning an answer (or its absence) into a [`KmsError`].

use crate::crypto::SecretBytes;
use crate::kms::sign::{self, Credentials};
use crate::kms::wire::Problem;
use crate::kms::{KmsError, Refusal};
use reqwest::Url;
use std::sync::Once;
use std::time::Duration;

/// The environment variable holding the API key, as Exoscale's own tools read it.
pub const API_KEY_ENV: &str = "EXOSCALE_API_KEY";
/// The environment variable holding the API secret.
pub const API_SECRET_ENV: &str = "EXOSCALE_API_SECRET";

/// Longest wait for a TCP (and TLS) connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for one attempt: connect, send, and read the whole answer.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pauses before the second and third attempts; there is no fourth.
pub const BACKOFF: [Duration; 2] = [Duration::from_millis(100), Duration::from_millis(300)];
/// Longest time any one call may block, retries and pauses included: attempts are cut short
/// so that the sum never exceeds it.
pub const MAX_CALL_TIME: Duration = Duration::from_secs(15);
/// How long a request signature stays valid (the server refuses it afterwards).
pub const SIGNATURE_LIFETIME_SECS: i64 = 300;

/// Why a remote KMS cannot be set up; each a plain sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    /// `EXOSCALE_API_KEY` or `EXOSCALE_API_SECRET` is unset or empty.
    #[error(
        "no KMS credentials: set {API_KEY_ENV} and {API_SECRET_ENV} to your API key and secret"
    )]
    MissingCredentials,
    /// The endpoint is not an http(s) URL.
    #[error("{0:?} is not a KMS endpoint; give a URL such as http://127.0.0.1:8400/v2")]
    BadEndpoint(String),
}

/// Reads the API key and secret from `EXOSCALE_API_KEY` and `EXOSCALE_API_SECRET`.
pub fn credentials_from_env() -> Result<Credentials, RemoteError> {
    let key = std::env::var(API_KEY_ENV).unwrap_or_default();
    let secret = std::env::var_os(API_SECRET_ENV).unwrap_or_default();
    if key.trim().is_empty() || secret.is_empty() {
        return Err(RemoteError::MissingCredentials);
    }
    Ok(Credentials {
        key: key.trim().to_string(),
        secret: SecretBytes::new(secret.into_encoded_bytes()),
    })
}

/// A KMS API base URL such as `https://api-ch-gva-2.exoscale.com/v2`, without a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    base: String,
}

impl Endpoint {
    /// Checks and normalizes an endpoint: http or https, a host, no query or fragment, no
    /// credentials in the URL, trailing slashes dropped.
    pub fn parse(text: &str) -> Result<Self, RemoteError> {
        let bad = || RemoteError::BadEndpoint(text.to_string());
        let trimmed = text.trim().trim_end_matches('/');
        let url = Url::parse(trimmed).map_err(|_| bad())?;
        let plain = url.query().is_none()
            && url.fragment().is_none()
            && url.username().is_empty()
            && url.password().is_none();
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() || !plain {
            return Err(bad());
        }
        Ok(Endpoint {
            base: trimmed.to_string(),
        })
    }

    /// The normalized URL, as recorded and compared.
    pub fn as_str(&self) -> &str {
        &self.base
    }

    /// The URL of `route` (which starts with `/kms-key`).
    pub fn url(&self, route: &str) -> Result<Url, KmsError> {
        Url::parse(&format!("{}{route}", self.base)).map_err(|e| KmsError::Other {
            status: 0,
            title: "Bad URL".into(),
            detail: e.to_string(),
        })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.base)
    }
}

/// Installs rustls' ring provider as the process default, once (a provider someone else
/// installed first is kept).
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The `Authorization` header of a request to `url` with `body`, valid for
/// [`SIGNATURE_LIFETIME_SECS`]. No query argument is signed: the KMS routes take none.
pub fn authorization(credentials: &Credentials, method: &str, url: &Url, body: &[u8]) -> String {
    let expires = time::OffsetDateTime::now_utc().unix_timestamp() + SIGNATURE_LIFETIME_SECS;
    sign::authorization(credentials, method, url.path(), body, &[], expires)
}

/// True for the statuses worth another attempt: the server or a proxy in front of it is in
/// trouble, the request was not judged.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 500 | 502 | 503 | 504)
}

/// The error an error answer stands for. `decrypting` marks decrypt and re-encrypt, where an
/// invalid-ciphertext answer becomes the opaque [`KmsError::InvalidCiphertext`].
pub fn error_from_answer(status: u16, body: &[u8], decrypting: bool) -> KmsError {
    let problem: Problem = serde_json::from_slice(body).unwrap_or_else(|_| Problem {
        kind: String::new(),
        title: String::new(),
        status,
        detail: String::from_utf8_lossy(&body[..body.len().min(200)])
            .trim()
            .to_string(),
    });
    let title = if problem.title.is_empty() {
        format!("(HTTP {status})")
    } else {
        problem.title.clone()
    };
    if status == 403 {
        return KmsError::Forbidden(join(&title, &problem.detail));
    }
    if decrypting && names_invalid_ciphertext(&problem) {
        return KmsError::InvalidCiphertext;
    }
    match Refusal::from_title(&problem.title) {
        Some(refusal) if (400..500).contains(&status) => KmsError::Refused {
            refusal,
            detail: problem.detail,
        },
        _ => KmsError::Other {
            status,
            title,
            detail: problem.detail,
        },
    }
}

fn names_invalid_ciphertext(problem: &Problem) -> bool {
    let detail = problem.detail.to_ascii_lowercase();
    problem.title.eq_ignore_ascii_case("Invalid Ciphertext")
        || (detail.contains("ciphertext") && detail.contains("invalid"))
}

fn join(title: &str, detail: &str) -> String {
    if detail.is_empty() {
        title.to_string()
    } else {
        format!("{title}: {detail}")
    }
}

/// A transport failure in a few words: the innermost cause (e.g. "Connection refused (os error
/// 111)"), or "timed out".
pub fn transport_cause(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return "timed out".into();
    }
    let mut cause: &dyn std::error::Error = err;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked_and_normalized() {
        let e = Endpoint::parse("http://127.0.0.1:8400/v2/").expect("valid");
        assert_eq!(e.as_str(), "http://127.0.0.1:8400/v2");
        let url = e.url("/kms-key/abc/decrypt").expect("url");
        assert_eq!(url.path(), "/v2/kms-key/abc/decrypt");
        assert!(Endpoint::parse("https://api-ch-gva-2.exoscale.com/v2").is_ok());
        for bad in [
            "",
            "127.0.0.1:8400",
            "ftp://x/v2",
            "http://u:p@x/v2",
            "http://x/v2?a=b",
            "file:///etc",
        ] {
            assert!(
                matches!(Endpoint::parse(bad), Err(RemoteError::BadEndpoint(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn signatures_cover_the_url_path() {
        let creds = Credentials {
            key: "EXOkey".into(),
            secret: SecretBytes::new(b"secret".to_vec()),
        };
        let url = Url::parse("http://h:1/v2/kms-key").expect("url");
        let header = authorization(&creds, "POST", &url, b"{}");
        let auth = sign::parse_authorization(&header).expect("parses");
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        assert!(auth.expires > now && auth.expires <= now + SIGNATURE_LIFETIME_SECS);
        let ok = sign::verify(&creds.secret, &auth, "POST", "/v2/kms-key", b"{}", &[], now);
        assert_eq!(ok, Ok(()));
    }

    fn problem(status: u16, title: &str, detail: &str) -> Vec<u8> {
        serde_json::to_vec(&Problem {
            kind: "about:blank".into(),
            title: title.into(),
            status,
            detail: detail.into(),
        })
        .expect("serializes")
    }

    #[test]
    fn answers_become_errors() {
        let e = error_from_answer(400, &problem(400, "Key is Disabled", "key x"), false);
        assert_eq!(e.refusal(), Some(Refusal::KeyDisabled));
        assert_eq!(e.to_string(), "Key is Disabled: key x");
        let e = error_from_answer(403, &problem(403, "Forbidden", "bad signature"), false);
        assert!(matches!(e, KmsError::Forbidden(_)));
        assert!(e.to_string().contains("Forbidden: bad signature"), "{e}");
        let e = error_from_answer(400, &problem(400, "Weird", "w"), false);
        assert_eq!(e.to_string(), "the KMS answered 400 Weird: w");
        let e = error_from_answer(502, b"<html>bad gateway</html>", false);
        assert!(e.to_string().contains("502"), "{e}");
        assert!(!e.is_retryable());
        let invalid = problem(400, "Bad Request", "the ciphertext is invalid");
        assert!(matches!(
            error_from_answer(400, &invalid, true),
            KmsError::InvalidCiphertext
        ));
        assert!(error_from_answer(400, &invalid, false).refusal() == Some(Refusal::BadRequest));
        assert!(is_retryable_status(503) && !is_retryable_status(400));
    }
}
