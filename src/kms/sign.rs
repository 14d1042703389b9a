//! EXO2-HMAC-SHA256 request signing, as the Exoscale API v2 describes it (the spec's
//! `x-topics` "API Request Signature"). Used by the remote client to sign and by the server to
//! verify.
//!
//! The signed message is five lines joined by `\n`:
//!
//! ```text
//! METHOD /path            (path only, no query string)
//! raw request body        (empty line when there is none)
//! values of the signed query arguments, concatenated in the order they are listed
//! (signed header values: none, an empty line)
//! expiry as a UNIX timestamp
//! ```
//!
//! `signature = base64(HMAC-SHA256(api secret, message))`, sent as
//! `Authorization: EXO2-HMAC-SHA256 credential=KEY[,signed-query-args=p1;p2],expires=T,signature=SIG`.

use crate::crypto::{self, SecretBytes};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// The scheme name in the `Authorization` header.
pub const SCHEME: &str = "EXO2-HMAC-SHA256";

/// How far in the future a request's expiry may lie; beyond that it is refused.
pub const MAX_EXPIRY_AHEAD_SECS: i64 = 3600;
/// How long a client's request signature stays valid: its expiry is this far after signing.
pub const SIGNATURE_LIFETIME_SECS: i64 = 300;

/// An API key and its secret.
#[derive(Clone)]
pub struct Credentials {
    /// The API key (public, e.g. `EXO...`).
    pub key: String,
    /// The API secret.
    pub secret: SecretBytes,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("key", &self.key)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// The message to sign.
pub fn message(
    method: &str,
    path: &str,
    body: &[u8],
    query_values: &[&str],
    expires: i64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + path.len() + 64);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(body);
    out.push(b'\n');
    for value in query_values {
        out.extend_from_slice(value.as_bytes());
    }
    out.push(b'\n');
    out.push(b'\n');
    out.extend_from_slice(expires.to_string().as_bytes());
    out
}

/// `base64(HMAC-SHA256(secret, message))`.
pub fn signature(secret: &SecretBytes, message: &[u8]) -> String {
    B64.encode(crypto::hmac_sha256(secret.expose_secret(), &[message]))
}

/// The `Authorization` header value for a request. `query` lists the query arguments to sign,
/// in order (name, value).
pub fn authorization(
    credentials: &Credentials,
    method: &str,
    path: &str,
    body: &[u8],
    query: &[(&str, &str)],
    expires: i64,
) -> String {
    let values: Vec<&str> = query.iter().map(|(_, v)| *v).collect();
    let sig = signature(
        &credentials.secret,
        &message(method, path, body, &values, expires),
    );
    let mut header = format!("{SCHEME} credential={}", credentials.key);
    if !query.is_empty() {
        let names: Vec<&str> = query.iter().map(|(n, _)| *n).collect();
        header.push_str(&format!(",signed-query-args={}", names.join(";")));
    }
    header.push_str(&format!(",expires={expires},signature={sig}"));
    header
}

/// A parsed `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The API key.
    pub credential: String,
    /// Names of the signed query arguments, in order.
    pub signed_query_args: Vec<String>,
    /// Expiry, UNIX seconds.
    pub expires: i64,
    /// The base64 signature.
    pub signature: String,
}

/// Why a request's signature is refused. The server answers 403 for each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// No or malformed `Authorization` header.
    #[error("missing or malformed Authorization header: {0}")]
    Malformed(String),
    /// The expiry has passed.
    #[error("the request expired at {expires} (now {now})")]
    Expired {
        /// Expiry of the request.
        expires: i64,
        /// Server time.
        now: i64,
    },
    /// The expiry lies too far ahead.
    #[error("the request expiry {expires} is more than {MAX_EXPIRY_AHEAD_SECS} s ahead")]
    TooFarAhead {
        /// Expiry of the request.
        expires: i64,
    },
    /// The signature does not match.
    #[error("the signature does not match")]
    BadSignature,
}

/// Parses `EXO2-HMAC-SHA256 credential=..,[signed-query-args=..,]expires=..,signature=..`.
pub fn parse_authorization(header: &str) -> Result<Authorization, SignError> {
    let malformed = |why: &str| SignError::Malformed(why.to_string());
    let rest = header
        .strip_prefix(SCHEME)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or_else(|| malformed("scheme must be EXO2-HMAC-SHA256"))?;
    let (mut credential, mut args, mut expires, mut sig) = (None, Vec::new(), None, None);
    for part in rest.split(',') {
        let (name, value) = part
            .trim()
            .split_once('=')
            .ok_or_else(|| malformed("expected name=value pairs"))?;
        match name {
            "credential" => credential = Some(value.to_string()),
            "signed-query-args" => {
                args = value
                    .split(';')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            }
            "expires" => {
                expires = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| malformed("expires must be a UNIX timestamp"))?,
                )
            }
            // The signature is base64 and may itself end in '='.
            "signature" => sig = Some(part.trim()["signature=".len()..].to_string()),
            _ => return Err(malformed("unknown field")),
        }
    }
    Ok(Authorization {
        credential: credential
            .filter(|c| !c.is_empty())
            .ok_or_else(|| malformed("no credential"))?,
        signed_query_args: args,
        expires: expires.ok_or_else(|| malformed("no expires"))?,
        signature: sig.ok_or_else(|| malformed("no signature"))?,
    })
}

/// The accepted window of a request's expiry: not past at `now`, and at most
/// [`MAX_EXPIRY_AHEAD_SECS`] ahead.
pub fn check_expiry(expires: i64, now: i64) -> Result<(), SignError> {
    if expires < now {
        return Err(SignError::Expired { expires, now });
    }
    if expires > now + MAX_EXPIRY_AHEAD_SECS {
        return Err(SignError::TooFarAhead { expires });
    }
    Ok(())
}

/// Verifies a parsed header against the request, over the raw body bytes, in constant time.
/// `query` is the request's query string as (name, value) pairs.
pub fn verify(
    secret: &SecretBytes,
    auth: &Authorization,
    method: &str,
    path: &str,
    body: &[u8],
    query: &[(String, String)],
    now: i64,
) -> Result<(), SignError> {
    check_expiry(auth.expires, now)?;
    let mut values = Vec::with_capacity(auth.signed_query_args.len());
    for name in &auth.signed_query_args {
        let value = query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| {
                SignError::Malformed(format!("signed query argument {name} is absent"))
            })?;
        values.push(value);
    }
    let expected = signature(secret, &message(method, path, body, &values, auth.expires));
    if crypto::constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        Ok(())
    } else {
        Err(SignError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials {
            key: "EXOtest".into(),
            secret: SecretBytes::new(b"s3cret".to_vec()),
        }
    }

    #[test]
    fn message_matches_the_spec_examples() {
        assert_eq!(
            message(
                "GET",
                "/v2/resource/a02baf5a-a3e4-49a0-857b-8a08d276c1c0",
                b"",
                &["v1", "v2"],
                1599140767
            ),
            b"GET /v2/resource/a02baf5a-a3e4-49a0-857b-8a08d276c1c0\n\nv1v2\n\n1599140767".to_vec()
        );
        assert_eq!(
            message(
                "POST",
                "/v2/security-group",
                br#"{"name": "my-security-group"}"#,
                &[],
                1599140767
            ),
            b"POST /v2/security-group\n{\"name\": \"my-security-group\"}\n\n\n1599140767".to_vec()
        );
    }

    #[test]
    fn sign_parse_verify_round_trip() {
        let header = authorization(
            &creds(),
            "POST",
            "/v2/kms-key",
            b"{}",
            &[("p1", "v1")],
            1000,
        );
        assert!(header.starts_with(
            "EXO2-HMAC-SHA256 credential=EXOtest,signed-query-args=p1,expires=1000,signature="
        ));
        let auth = parse_authorization(&header).expect("parses");
        let query = vec![("p1".to_string(), "v1".to_string())];
        assert_eq!(
            verify(
                &creds().secret,
                &auth,
                "POST",
                "/v2/kms-key",
                b"{}",
                &query,
                900
            ),
            Ok(())
        );
    }

    #[test]
    fn the_expiry_window_has_both_edges() {
        assert_eq!(check_expiry(1000, 1000), Ok(()));
        assert_eq!(check_expiry(1000 + MAX_EXPIRY_AHEAD_SECS, 1000), Ok(()));
        assert_eq!(
            check_expiry(999, 1000),
            Err(SignError::Expired {
                expires: 999,
                now: 1000
            })
        );
        assert_eq!(
            check_expiry(1001 + MAX_EXPIRY_AHEAD_SECS, 1000),
            Err(SignError::TooFarAhead {
                expires: 1001 + MAX_EXPIRY_AHEAD_SECS
            })
        );
        const { assert!(SIGNATURE_LIFETIME_SECS < MAX_EXPIRY_AHEAD_SECS) };
    }

    #[test]
    fn refusals() {
        let header = authorization(&creds(), "POST", "/v2/kms-key", b"{}", &[], 1000);
        let auth = parse_authorization(&header).expect("parses");
        let secret = creds().secret;
        let check = |s: &SecretBytes, m: &str, p: &str, b: &[u8], now: i64| {
            verify(s, &auth, m, p, b, &[], now)
        };
        assert_eq!(
            check(&secret, "POST", "/v2/kms-key", b"{ }", 900),
            Err(SignError::BadSignature)
        );
        assert_eq!(
            check(&secret, "GET", "/v2/kms-key", b"{}", 900),
            Err(SignError::BadSignature)
        );
        assert_eq!(
            check(&secret, "POST", "/v2/kms-keys", b"{}", 900),
            Err(SignError::BadSignature)
        );
        let wrong = SecretBytes::new(b"other".to_vec());
        assert_eq!(
            check(&wrong, "POST", "/v2/kms-key", b"{}", 900),
            Err(SignError::BadSignature)
        );
        assert!(matches!(
            check(&secret, "POST", "/v2/kms-key", b"{}", 1001),
            Err(SignError::Expired { .. })
        ));
        assert!(matches!(
            check(&secret, "POST", "/v2/kms-key", b"{}", 1000 - 3601),
            Err(SignError::TooFarAhead { .. })
        ));
        for bad in [
            "",
            "Bearer x",
            "EXO2-HMAC-SHA256 credential=a",
            "EXO2-HMAC-SHA256 credential=a,expires=x,signature=y",
            "EXO2-HMAC-SHA256 expires=1,signature=y",
        ] {
            assert!(parse_authorization(bad).is_err(), "{bad}");
        }
    }
}
