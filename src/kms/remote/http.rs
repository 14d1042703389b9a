//! The HTTP side of the remote KMS, shared by the blocking [`super::RemoteKms`] and the async
//! `kmsfs kms bench`: the endpoint and its URLs, credentials from the environment, request
//! signing, the time limits, and turning an answer (or its absence) into a [`KmsError`]. An
//! error answer is known by its status and its problem document's `title` or `type`, never by
//! the words of its `detail`.

use crate::crypto::SecretBytes;
use crate::kms::backoff::Backoff;
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
/// Pauses before the second and third attempts (100 ms, 300 ms); there is no fourth.
pub const BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(100),
    factor: 3,
    max: Duration::from_millis(300),
    retries: Some(2),
};
/// Longest time any one call may block, retries and pauses included: attempts are cut short
/// so that the sum never exceeds it.
pub const MAX_CALL_TIME: Duration = Duration::from_secs(15);

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
    /// A list of endpoints with nothing between two commas, or after the last.
    #[error(
        "the KMS endpoints {0:?} have an empty entry; separate URLs by single commas, such as http://10.0.0.1:8400/v2,http://10.0.0.2:8400/v2"
    )]
    EmptyInList(String),
    /// The same endpoint twice in one list.
    #[error("{0} is listed twice in the KMS endpoints; name each server once")]
    Repeated(String),
    /// An endpoint of a list of several that is not a zone's `/v2` API base.
    #[error(
        "{0} is not a zone's API base: with several KMS endpoints, each must end in /v2 (e.g. http://10.0.0.1:8400/v2)"
    )]
    NotApiBase(String),
    /// Endpoints of one list with different paths, so not one zone's API.
    #[error(
        "{other} does not serve the same API as {first}: every KMS endpoint of a list must be a server of the same zone, with the same path"
    )]
    OtherApi {
        /// The first endpoint of the list.
        first: String,
        /// The endpoint whose path differs.
        other: String,
    },
}

/// The systemd credentials (`LoadCredential=NAME:FILE`) the API key and secret are read from
/// when the environment has none.
pub const API_KEY_CREDENTIAL: &str = "exoscale-api-key";
/// See [`API_KEY_CREDENTIAL`].
pub const API_SECRET_CREDENTIAL: &str = "exoscale-api-secret";

/// Reads the API key and secret from `EXOSCALE_API_KEY` and `EXOSCALE_API_SECRET`, else from
/// the systemd credentials [`API_KEY_CREDENTIAL`] and [`API_SECRET_CREDENTIAL`].
pub fn credentials_from_env() -> Result<Credentials, RemoteError> {
    let credential = |name| SecretBytes::read_file(&crate::sys::systemd::credential(name)?).ok();
    let key = std::env::var(API_KEY_ENV)
        .ok()
        .filter(|k| !k.trim().is_empty())
        .or_else(|| {
            let key = credential(API_KEY_CREDENTIAL)?;
            String::from_utf8(key.expose_secret().to_vec()).ok()
        })
        .unwrap_or_default();
    let secret = std::env::var_os(API_SECRET_ENV)
        .filter(|s| !s.is_empty())
        .map(|s| SecretBytes::new(s.into_encoded_bytes()))
        .or_else(|| credential(API_SECRET_CREDENTIAL))
        .unwrap_or_default();
    if key.trim().is_empty() || secret.is_empty() {
        return Err(RemoteError::MissingCredentials);
    }
    Ok(Credentials {
        key: key.trim().to_string(),
        secret,
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

    fn parsed(&self) -> Url {
        Url::parse(&self.base).expect("BUG: a checked endpoint is a URL")
    }

    /// The URL's path, e.g. `/v2`.
    pub fn path(&self) -> String {
        self.parsed().path().to_string()
    }

    /// The host when it is a name (not an IP address), e.g. `kms.example`.
    pub fn host_name(&self) -> Option<String> {
        self.parsed().domain().map(str::to_string)
    }

    /// The port, given or the scheme's.
    pub fn port(&self) -> u16 {
        self.parsed().port_or_known_default().unwrap_or(80)
    }

    /// The URL of `route` (which starts with `/kms-key` and holds only ids and action names).
    pub fn url(&self, route: &str) -> Url {
        Url::parse(&format!("{}{route}", self.base))
            .expect("BUG: a checked endpoint followed by an ASCII path is a URL")
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
/// [`sign::SIGNATURE_LIFETIME_SECS`]. No query argument is signed: the KMS routes take none.
pub fn authorization(credentials: &Credentials, method: &str, url: &Url, body: &[u8]) -> String {
    let expires = time::OffsetDateTime::now_utc().unix_timestamp() + sign::SIGNATURE_LIFETIME_SECS;
    sign::authorization(credentials, method, url.path(), body, &[], expires)
}

/// The problem `type` of an invalid ciphertext, as `kmsfs kms serve` writes it.
pub const INVALID_CIPHERTEXT_TYPE: &str = "urn:kmsfs:problem:invalid-ciphertext";
/// The title other servers may give an invalid ciphertext.
const INVALID_CIPHERTEXT_TITLE: &str = "Invalid Ciphertext";

/// The error an error answer stands for, by its status and its problem's title or type.
pub fn error_from_answer(status: u16, body: &[u8]) -> KmsError {
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
    let invalid_ciphertext =
        problem.kind == INVALID_CIPHERTEXT_TYPE || problem.title == INVALID_CIPHERTEXT_TITLE;
    match (status, Refusal::from_title(&problem.title)) {
        (401 | 403, _) => KmsError::Unauthorized {
            detail: join(&title, &problem.detail),
        },
        (429, _) => KmsError::Limited {
            detail: join(&title, &problem.detail),
        },
        (400..=499, _) if invalid_ciphertext => KmsError::InvalidCiphertext,
        (400..=499, Some(refusal)) => KmsError::Refused {
            refusal,
            detail: problem.detail,
        },
        (500 | 502 | 503 | 504, _) => KmsError::Unavailable {
            status,
            title,
            detail: problem.detail,
        },
        _ => KmsError::Unexpected {
            status,
            title,
            detail: problem.detail,
        },
    }
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
        let url = e.url("/kms-key/abc/decrypt");
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
        assert!(auth.expires > now && auth.expires <= now + sign::SIGNATURE_LIFETIME_SECS);
        let ok = sign::verify(&creds.secret, &auth, "POST", "/v2/kms-key", b"{}", &[], now);
        assert_eq!(ok, Ok(()));
    }

    fn problem(status: u16, kind: &str, title: &str, detail: &str) -> Vec<u8> {
        serde_json::to_vec(&Problem {
            kind: kind.into(),
            title: title.into(),
            status,
            detail: detail.into(),
        })
        .expect("serializes")
    }

    fn answer(status: u16, title: &str, detail: &str) -> KmsError {
        error_from_answer(status, &problem(status, "about:blank", title, detail))
    }

    #[test]
    fn refusals_keep_the_spec_s_titles() {
        let e = answer(400, "Key is Disabled", "key x");
        assert_eq!(e.refusal(), Some(Refusal::KeyDisabled));
        assert_eq!(e.to_string(), "Key is Disabled: key x");
        let e = answer(400, "Key is Pending Deletion", "key x");
        assert_eq!(e.refusal(), Some(Refusal::KeyPendingDeletion));
        assert_eq!(
            answer(400, "Key Not Found", "").refusal(),
            Some(Refusal::KeyNotFound)
        );
        // A spec title in a 5xx answer is not a refusal: the request was not judged.
        let e = answer(503, "Key Not Found", "x");
        assert!(
            matches!(e, KmsError::Unavailable { status: 503, .. }),
            "{e}"
        );
    }

    #[test]
    fn credentials_limits_and_trouble_are_told_apart() {
        let e = answer(403, "Forbidden", "bad signature");
        assert!(matches!(e, KmsError::Unauthorized { .. }), "{e}");
        assert!(e.to_string().contains("Forbidden: bad signature"), "{e}");
        assert!(matches!(
            answer(401, "Unauthorized", ""),
            KmsError::Unauthorized { .. }
        ));
        let e = answer(429, "Too Many Requests", "slow down");
        assert!(matches!(e, KmsError::Limited { .. }), "{e}");
        let e = error_from_answer(502, b"<html>bad gateway</html>");
        assert!(
            matches!(e, KmsError::Unavailable { status: 502, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("502"), "{e}");
        let e = answer(400, "Weird", "w");
        assert_eq!(e.to_string(), "the KMS answered 400 Weird: w");
        let e = answer(501, "Not Implemented", "");
        assert!(matches!(e, KmsError::Unexpected { status: 501, .. }), "{e}");
        let e = error_from_answer(404, b"");
        assert!(matches!(e, KmsError::Unexpected { status: 404, .. }), "{e}");
    }

    #[test]
    fn invalid_ciphertexts_are_known_by_type_or_title_not_by_detail() {
        let ours = problem(400, INVALID_CIPHERTEXT_TYPE, "Bad Request", "whatever");
        assert!(matches!(
            error_from_answer(400, &ours),
            KmsError::InvalidCiphertext
        ));
        let theirs = answer(400, "Invalid Ciphertext", "");
        assert!(matches!(theirs, KmsError::InvalidCiphertext), "{theirs}");
        // The words of a detail prove nothing.
        let worded = answer(400, "Bad Request", "the ciphertext is invalid");
        assert_eq!(worded.refusal(), Some(Refusal::BadRequest));
        let worded = answer(500, "Internal Server Error", "invalid ciphertext");
        assert!(matches!(worded, KmsError::Unavailable { .. }), "{worded}");
    }
}
