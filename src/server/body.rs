//! Request parsing shared by the routes: the key id in the path, JSON bodies parsed strictly
//! (unknown fields refused) with errors that name the field (`serde_path_to_error`). The body
//! types are [`crate::kms::wire`]'s. Every failure is a 400 "Bad Request".

use super::problem::ApiError;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// The key id of the path, which must be a UUID.
pub(crate) fn key_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| {
        ApiError::bad_request(format!("the path parameter `id` is not a UUID: {raw:?}"))
    })
}

/// Parses a JSON body strictly; the error names the field at fault.
pub(crate) fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let parsed: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(format!("the request body is not valid JSON: {inner}"))
        } else if path == "." {
            ApiError::bad_request(format!("invalid request body: {inner}"))
        } else {
            ApiError::bad_request(format!("invalid field `{path}`: {inner}"))
        }
    })?;
    Ok(parsed)
}

/// [`json`], where an empty body means all defaults (operations whose fields are optional).
pub(crate) fn json_or_default<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        json(body)
    }
}

/// An operation without a request body takes nothing, or an empty JSON object.
pub(crate) fn no_body(body: &[u8]) -> Result<(), ApiError> {
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct Empty {}
    json_or_default::<Empty>(body).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::wire::Base64;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[allow(dead_code)]
        source: Inner,
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[allow(dead_code)]
        key: Uuid,
        #[allow(dead_code)]
        ciphertext: Base64,
    }

    fn detail(body: &str) -> String {
        match json::<Outer>(body.as_bytes()) {
            Err(ApiError::Refused(_, detail)) => detail,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert!(detail("{").contains("not valid JSON"));
        assert!(detail(r#"{"source":{"key":"x","ciphertext":""}}"#).contains("`source.key`"));
        assert!(
            detail(r#"{"source":{"key":"6f1d4b63-9d0c-4a59-9bd4-0b9e8d0e3c11","ciphertext":"!"}}"#)
                .contains("`source.ciphertext`")
        );
        assert!(detail(r#"{"source":{"key":1}}"#).contains("`source.key`"));
        assert!(detail(r#"{"other":1}"#).contains("other"));
        assert!(detail(r#"{}"#).contains("source"));
        assert!(key_id("nope").is_err());
        assert!(no_body(b"").is_ok() && no_body(b"{}").is_ok() && no_body(b"{\"a\":1}").is_err());
    }
}
