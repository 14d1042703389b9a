//! `encrypt`, `decrypt`, `generate-data-key`, `re-encrypt`: memory only, under the
//! organization's read lock. A ciphertext that does not open is one opaque "Bad Request".

use super::Call;
use crate::kms::DataKeySpec;
use crate::kms::keyring::DATA_KEY_BYTES;
use crate::server::App;
use crate::server::auth::Signed;
use crate::server::body::{self, Base64, SecretBase64, base64, context};
use crate::server::problem::ApiError;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EncryptRequest {
    plaintext: SecretBase64,
    #[serde(rename = "encryption-context", default)]
    context: Option<Base64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DecryptRequest {
    ciphertext: Base64,
    #[serde(rename = "encryption-context", default)]
    context: Option<Base64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct DataKeyRequest {
    #[serde(rename = "key-spec", default)]
    key_spec: Option<String>,
    #[serde(rename = "bytes-count", default)]
    bytes_count: Option<i64>,
    #[serde(rename = "encryption-context", default)]
    context: Option<Base64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReEncryptRequest {
    source: ReEncryptSource,
    destination: ReEncryptDestination,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReEncryptSource {
    key: Uuid,
    ciphertext: Base64,
    #[serde(rename = "encryption-context", default)]
    context: Option<Base64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReEncryptDestination {
    key: Uuid,
    #[serde(rename = "encryption-context", default)]
    context: Option<Base64>,
}

#[derive(Serialize)]
struct CiphertextResponse {
    ciphertext: String,
}

#[derive(Serialize)]
struct PlaintextResponse {
    plaintext: String,
}

#[derive(Serialize)]
struct DataKeyResponse {
    plaintext: String,
    ciphertext: String,
}

/// `POST /v2/kms-key/{id}/encrypt`.
pub(super) async fn encrypt(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    signed: Signed,
) -> Response {
    let mut call = Call::new(app, signed, "encrypt");
    let result = call.key_id(&id).and_then(|id| {
        let request: EncryptRequest = body::json(call.body())?;
        let plaintext = request.plaintext.0.expose_secret();
        call.read(|ring, now| ring.encrypt(id, plaintext, context(&request.context), now))
            .map(|blob| CiphertextResponse {
                ciphertext: base64(&blob),
            })
    });
    call.finish(result)
}

/// `POST /v2/kms-key/{id}/decrypt`.
pub(super) async fn decrypt(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    signed: Signed,
) -> Response {
    let mut call = Call::new(app, signed, "decrypt");
    let result = call.key_id(&id).and_then(|id| {
        let request: DecryptRequest = body::json(call.body())?;
        call.read(|ring, now| {
            ring.decrypt(id, &request.ciphertext.0, context(&request.context), now)
        })
        .map(|plain| PlaintextResponse {
            plaintext: base64(plain.expose_secret()),
        })
    });
    call.finish(result)
}

/// The data key size a request asks for: `key-spec: AES-256`, or `bytes-count` 1–1024, or
/// neither (32 bytes); both is a "Bad Request".
fn data_key_spec(request: &DataKeyRequest) -> Result<DataKeySpec, ApiError> {
    match (&request.key_spec, request.bytes_count) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "give `key-spec` or `bytes-count`, not both",
        )),
        (Some(spec), None) if spec == "AES-256" => Ok(DataKeySpec::Aes256),
        (Some(spec), None) => Err(ApiError::bad_request(format!(
            "invalid field `key-spec`: must be \"AES-256\", not {spec:?}"
        ))),
        (None, Some(n)) => u32::try_from(n)
            .ok()
            .filter(|n| DATA_KEY_BYTES.contains(n))
            .map(DataKeySpec::Bytes)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid field `bytes-count`: must be {} to {}, not {n}",
                    DATA_KEY_BYTES.start(),
                    DATA_KEY_BYTES.end()
                ))
            }),
        (None, None) => Ok(DataKeySpec::Aes256),
    }
}

/// `POST /v2/kms-key/{id}/generate-data-key`.
pub(super) async fn generate_data_key(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    signed: Signed,
) -> Response {
    let mut call = Call::new(app, signed, "generate-data-key");
    let result = call.key_id(&id).and_then(|id| {
        let request: DataKeyRequest = body::json_or_default(call.body())?;
        let spec = data_key_spec(&request)?;
        call.read(|ring, now| ring.generate_data_key(id, spec, context(&request.context), now))
            .map(|key| DataKeyResponse {
                plaintext: base64(key.plaintext.expose_secret()),
                ciphertext: base64(&key.ciphertext),
            })
    });
    call.finish(result)
}

/// `POST /v2/kms-key/{id}/re-encrypt`. The path's key must be the source or the destination
/// key of the body (the spec does not say which; both are accepted).
pub(super) async fn re_encrypt(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    signed: Signed,
) -> Response {
    let mut call = Call::new(app, signed, "re-encrypt");
    let result = call.key_id(&id).and_then(|id| {
        let request: ReEncryptRequest = body::json(call.body())?;
        let (source, destination) = (request.source, request.destination);
        if id != source.key && id != destination.key {
            return Err(ApiError::bad_request(
                "the path parameter `id` must be `source.key` or `destination.key`",
            ));
        }
        call.read(|ring, now| {
            ring.re_encrypt(
                source.key,
                &source.ciphertext.0,
                context(&source.context),
                destination.key,
                context(&destination.context),
                now,
            )
        })
        .map(|blob| CiphertextResponse {
            ciphertext: base64(&blob),
        })
    });
    call.finish(result)
}
