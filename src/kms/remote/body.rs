//! The JSON bodies of the cryptographic operations (`encrypt`, `decrypt`, `generate-data-key`,
//! `re-encrypt`), with the spec's field names and base64 bytes. Plaintext fields are wiped when
//! dropped.

use crate::kms::KmsError;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zeroize::Zeroize;

/// Optional bytes as base64.
pub(super) fn b64_opt(bytes: Option<&[u8]>) -> Option<String> {
    bytes.map(|b| B64.encode(b))
}

fn decode(field: &str, text: &str) -> Result<Vec<u8>, KmsError> {
    B64.decode(text).map_err(|e| KmsError::Other {
        status: 200,
        title: "Unreadable Answer".into(),
        detail: format!("{field} is not base64: {e}"),
    })
}

/// The request body of encrypt, decrypt and generate-data-key.
#[derive(Serialize)]
pub(super) struct CryptoBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) plaintext: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ciphertext: Option<String>,
    #[serde(rename = "key-spec", skip_serializing_if = "Option::is_none")]
    pub(super) key_spec: Option<&'a str>,
    #[serde(rename = "bytes-count", skip_serializing_if = "Option::is_none")]
    pub(super) bytes_count: Option<u32>,
    #[serde(rename = "encryption-context", skip_serializing_if = "Option::is_none")]
    pub(super) encryption_context: Option<String>,
}

impl CryptoBody<'_> {
    /// A body carrying `context` and nothing else yet.
    pub(super) fn new(context: Option<&[u8]>) -> Self {
        CryptoBody {
            plaintext: None,
            ciphertext: None,
            key_spec: None,
            bytes_count: None,
            encryption_context: b64_opt(context),
        }
    }
}

impl Drop for CryptoBody<'_> {
    fn drop(&mut self) {
        self.plaintext.zeroize();
    }
}

/// The answer of encrypt, decrypt, generate-data-key and re-encrypt.
#[derive(Deserialize)]
pub(super) struct CryptoAnswer {
    #[serde(default)]
    pub(super) plaintext: Option<String>,
    #[serde(default)]
    pub(super) ciphertext: Option<String>,
}

impl Drop for CryptoAnswer {
    fn drop(&mut self) {
        self.plaintext.zeroize();
    }
}

impl CryptoAnswer {
    /// The bytes of field `name` (`plaintext` or `ciphertext`).
    pub(super) fn field(&self, name: &str) -> Result<Vec<u8>, KmsError> {
        let text = match name {
            "plaintext" => self.plaintext.as_deref(),
            _ => self.ciphertext.as_deref(),
        };
        let text = text.ok_or_else(|| KmsError::Other {
            status: 200,
            title: "Unreadable Answer".into(),
            detail: format!("the answer has no {name}"),
        })?;
        decode(name, text)
    }
}

/// One side of a re-encrypt request.
#[derive(Serialize)]
pub(super) struct ReEncryptSide {
    pub(super) key: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ciphertext: Option<String>,
    #[serde(rename = "encryption-context", skip_serializing_if = "Option::is_none")]
    pub(super) encryption_context: Option<String>,
}

/// The request body of re-encrypt.
#[derive(Serialize)]
pub(super) struct ReEncryptBody {
    pub(super) source: ReEncryptSide,
    pub(super) destination: ReEncryptSide,
}
