//! The remote backend: a [`KeyService`] over the KMS part of the Exoscale API v2, every request
//! signed with EXO2-HMAC-SHA256. Works against `kmsfs kms serve` and any server of that API.
//!
//! Time limits (see [`http`]): a connection gets [`http::CONNECT_TIMEOUT`] (2 s), an attempt
//! [`http::ATTEMPT_TIMEOUT`] (5 s). Whether a failure is tried again is [`KmsError::retry`]'s
//! rule: transport failures, 500/502/503/504 and 429 answers are, at most three attempts in all,
//! after 100 ms and 300 ms ([`http::BACKOFF`]); an answer that judged the request never is. No
//! call blocks longer than [`http::MAX_CALL_TIME`] (15 s): attempts are cut short to fit.
//! Operations that must not happen twice (create, rotate) are retried only when the connection
//! itself failed, so the request cannot have reached the server.
//!
//! The HTTP client (and its I/O thread) is made on first use and can be dropped again with
//! [`KeyService::release_connections`], so that `kmsfs mount` can check the key and then fork
//! a single-threaded process.

pub mod http;

use crate::crypto::SecretBytes;
use crate::kms::sign::Credentials;
use crate::kms::wire::{
    self, Applied, Base64, CiphertextResponse, DataKeyRequest, DataKeyResponse, DecryptRequest,
    EncryptRequest, KmsKey, PlaintextResponse, ReEncryptDestination, ReEncryptRequest,
    ReEncryptSource, RotationConfig, RotationEntry, SecretBase64,
};
use crate::kms::{DataKey, DataKeySpec, KeyService, KmsError};
use http::Endpoint;
pub use http::RemoteError;
use reqwest::blocking::Client;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::{PoisonError, RwLock};
use std::time::Instant;
use uuid::Uuid;

/// A KMS reached over HTTP(S).
pub struct RemoteKms {
    endpoint: Endpoint,
    credentials: Credentials,
    client: RwLock<Option<Client>>,
}

/// Whether a request may be sent again after it may have reached the server.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Repeat {
    /// Doing it twice is harmless (reads, cryptography, set-to-state changes).
    Safe,
    /// Doing it twice is not (create, rotate): retry only failed connections.
    ConnectOnly,
}

/// One API operation: its name (for logs), method, route under the endpoint, and repeat rule.
struct Op<'a> {
    name: &'static str,
    method: reqwest::Method,
    route: String,
    repeat: Repeat,
    key: Option<&'a Uuid>,
}

impl<'a> Op<'a> {
    fn get(name: &'static str, route: String, key: Option<&'a Uuid>) -> Self {
        let (method, repeat) = (reqwest::Method::GET, Repeat::Safe);
        Op {
            name,
            method,
            route,
            repeat,
            key,
        }
    }

    fn post(name: &'static str, key: &'a Uuid, action: &str, repeat: Repeat) -> Self {
        Op {
            name,
            method: reqwest::Method::POST,
            route: format!("/kms-key/{key}/{action}"),
            repeat,
            key: Some(key),
        }
    }
}

impl RemoteKms {
    /// A client of the KMS at `endpoint` (e.g. `http://127.0.0.1:8400/v2`). Nothing is sent
    /// and no thread starts until the first call.
    pub fn new(endpoint: &str, credentials: Credentials) -> Result<Self, RemoteError> {
        Ok(RemoteKms {
            endpoint: Endpoint::parse(endpoint)?,
            credentials,
            client: RwLock::new(None),
        })
    }

    /// A client with the credentials of `EXOSCALE_API_KEY` and `EXOSCALE_API_SECRET`.
    pub fn from_env(endpoint: &str) -> Result<Self, RemoteError> {
        let endpoint = Endpoint::parse(endpoint)?;
        let credentials = http::credentials_from_env()?;
        Ok(RemoteKms {
            endpoint,
            credentials,
            client: RwLock::new(None),
        })
    }

    /// The normalized endpoint.
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_str()
    }

    /// The shared client (connections are pooled in it), made on first use.
    fn client(&self) -> Result<Client, KmsError> {
        if let Some(client) = &*self.client.read().unwrap_or_else(PoisonError::into_inner) {
            return Ok(client.clone());
        }
        let mut slot = self.client.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = &*slot {
            return Ok(client.clone());
        }
        http::install_crypto_provider();
        let client = Client::builder()
            .connect_timeout(http::CONNECT_TIMEOUT)
            .timeout(http::ATTEMPT_TIMEOUT)
            .user_agent(concat!("kmsfs/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| KmsError::Client(Box::new(e)))?;
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Sends `op` with `body` (JSON), retrying as the module says, and decodes the answer.
    fn call<T: DeserializeOwned>(&self, op: Op<'_>, body: Option<Vec<u8>>) -> Result<T, KmsError> {
        let span = tracing::debug_span!("kms_request", op = op.name, key = ?op.key);
        let _entered = span.enter();
        let client = self.client()?;
        let url = self.endpoint.url(&op.route);
        let body = body.unwrap_or_default();
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            let remaining = http::MAX_CALL_TIME.saturating_sub(started.elapsed());
            let mut request = client
                .request(op.method.clone(), url.clone())
                .timeout(http::ATTEMPT_TIMEOUT.min(remaining))
                .header(
                    reqwest::header::AUTHORIZATION,
                    http::authorization(&self.credentials, op.method.as_str(), &url, &body),
                );
            if op.method == reqwest::Method::POST && !body.is_empty() {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let failure = match request.send().and_then(|r| {
                let status = r.status().as_u16();
                r.bytes().map(|b| (status, b))
            }) {
                Ok((status, bytes)) if (200..300).contains(&status) => {
                    return serde_json::from_slice(&bytes).map_err(|e| KmsError::Malformed {
                        operation: op.name,
                        what: format!("JSON this client cannot read: {e}"),
                        source: Some(e),
                    });
                }
                Ok((status, bytes)) => http::error_from_answer(status, &bytes),
                Err(e) => KmsError::Unreachable {
                    what: format!(
                        "{} {url} failed after {} attempt(s) in {:.1} s: {}",
                        op.method,
                        attempt + 1,
                        started.elapsed().as_secs_f64(),
                        http::transport_cause(&e)
                    ),
                    sent: !e.is_connect(),
                    source: Box::new(e),
                },
            };
            let again = failure.retry().allows(op.repeat == Repeat::Safe);
            let Some(pause) = http::BACKOFF.pause(attempt).filter(|_| again) else {
                return Err(failure);
            };
            // Too little time left for a useful attempt after the pause: give up now.
            if started.elapsed() + pause + http::BACKOFF.first >= http::MAX_CALL_TIME {
                return Err(failure);
            }
            tracing::debug!(
                attempt = attempt + 1,
                "KMS request failed, retrying: {failure}"
            );
            std::thread::sleep(pause);
            attempt += 1;
        }
    }
}

fn json(value: &impl Serialize) -> Option<Vec<u8>> {
    Some(serde_json::to_vec(value).expect("BUG: request bodies always serialize"))
}

impl KeyService for RemoteKms {
    fn create_key(&self, request: &wire::CreateKeyRequest) -> Result<KmsKey, KmsError> {
        let op = Op {
            name: "create-kms-key",
            method: reqwest::Method::POST,
            route: "/kms-key".into(),
            repeat: Repeat::ConnectOnly,
            key: None,
        };
        self.call(op, json(request))
    }

    fn list_keys(&self) -> Result<Vec<KmsKey>, KmsError> {
        let list: wire::KeyList =
            self.call(Op::get("list-kms-keys", "/kms-key".into(), None), None)?;
        Ok(list.kms_keys)
    }

    fn get_key(&self, id: Uuid) -> Result<KmsKey, KmsError> {
        self.call(
            Op::get("get-kms-key", format!("/kms-key/{id}"), Some(&id)),
            None,
        )
    }

    fn rotate_key(&self, id: Uuid) -> Result<RotationConfig, KmsError> {
        let op = Op::post("rotate-kms-key", &id, "rotate", Repeat::ConnectOnly);
        Ok(self.call::<wire::RotationResponse>(op, None)?.rotation)
    }

    fn enable_key(&self, id: Uuid) -> Result<Applied, KmsError> {
        let op = Op::post("enable-kms-key", &id, "enable", Repeat::Safe);
        Ok(self.call::<wire::SuccessResponse>(op, None)?.status)
    }

    fn disable_key(&self, id: Uuid) -> Result<Applied, KmsError> {
        let op = Op::post("disable-kms-key", &id, "disable", Repeat::Safe);
        Ok(self.call::<wire::SuccessResponse>(op, None)?.status)
    }

    fn enable_rotation(&self, id: Uuid, period: Option<i64>) -> Result<RotationConfig, KmsError> {
        let op = Op::post(
            "enable-kms-key-rotation",
            &id,
            "enable-key-rotation",
            Repeat::Safe,
        );
        let body = wire::EnableRotationRequest {
            rotation_period: period,
        };
        Ok(self
            .call::<wire::RotationResponse>(op, json(&body))?
            .rotation)
    }

    fn disable_rotation(&self, id: Uuid) -> Result<RotationConfig, KmsError> {
        let op = Op::post(
            "disable-kms-key-rotation",
            &id,
            "disable-key-rotation",
            Repeat::Safe,
        );
        Ok(self.call::<wire::RotationResponse>(op, None)?.rotation)
    }

    fn schedule_deletion(
        &self,
        id: Uuid,
        delay_days: Option<i64>,
    ) -> Result<time::OffsetDateTime, KmsError> {
        let op = Op::post(
            "schedule-kms-key-deletion",
            &id,
            "schedule-deletion",
            Repeat::Safe,
        );
        let body = wire::ScheduleDeletionRequest { delay_days };
        Ok(self
            .call::<wire::ScheduleDeletionResponse>(op, json(&body))?
            .delete_at)
    }

    fn cancel_deletion(&self, id: Uuid) -> Result<Applied, KmsError> {
        let op = Op::post(
            "cancel-kms-key-deletion",
            &id,
            "cancel-deletion",
            Repeat::Safe,
        );
        Ok(self.call::<wire::SuccessResponse>(op, None)?.status)
    }

    fn list_rotations(&self, id: Uuid) -> Result<Vec<RotationEntry>, KmsError> {
        let route = format!("/kms-key/{id}/list-key-rotations");
        let op = Op::get("list-kms-key-rotations", route, Some(&id));
        Ok(self.call::<wire::RotationList>(op, None)?.rotations)
    }

    fn encrypt(&self, id: Uuid, plain: &[u8], context: Option<&[u8]>) -> Result<Vec<u8>, KmsError> {
        let body = EncryptRequest {
            plaintext: SecretBase64(SecretBytes::new(plain.to_vec())),
            encryption_context: Base64::of(context),
        };
        let op = Op::post("encrypt", &id, "encrypt", Repeat::Safe);
        Ok(self
            .call::<CiphertextResponse>(op, json(&body))?
            .ciphertext
            .0)
    }

    fn decrypt(
        &self,
        id: Uuid,
        ciphertext: &[u8],
        context: Option<&[u8]>,
    ) -> Result<SecretBytes, KmsError> {
        let body = DecryptRequest {
            ciphertext: Base64(ciphertext.to_vec()),
            encryption_context: Base64::of(context),
        };
        let op = Op::post("decrypt", &id, "decrypt", Repeat::Safe);
        Ok(self.call::<PlaintextResponse>(op, json(&body))?.plaintext.0)
    }

    fn generate_data_key(
        &self,
        id: Uuid,
        spec: DataKeySpec,
        context: Option<&[u8]>,
    ) -> Result<DataKey, KmsError> {
        let mut body = DataKeyRequest {
            encryption_context: Base64::of(context),
            ..DataKeyRequest::default()
        };
        match spec {
            DataKeySpec::Aes256 => body.key_spec = Some("AES-256".into()),
            DataKeySpec::Bytes(n) => body.bytes_count = Some(i64::from(n)),
        }
        let op = Op::post("generate-data-key", &id, "generate-data-key", Repeat::Safe);
        let answer: DataKeyResponse = self.call(op, json(&body))?;
        Ok(DataKey {
            plaintext: answer.plaintext.0,
            ciphertext: answer.ciphertext.0,
        })
    }

    fn re_encrypt(
        &self,
        source: Uuid,
        ciphertext: &[u8],
        source_context: Option<&[u8]>,
        destination: Uuid,
        destination_context: Option<&[u8]>,
    ) -> Result<Vec<u8>, KmsError> {
        let body = ReEncryptRequest {
            source: ReEncryptSource {
                key: source,
                ciphertext: Base64(ciphertext.to_vec()),
                encryption_context: Base64::of(source_context),
            },
            destination: ReEncryptDestination {
                key: destination,
                encryption_context: Base64::of(destination_context),
            },
        };
        let op = Op::post("re-encrypt", &source, "re-encrypt", Repeat::Safe);
        Ok(self
            .call::<CiphertextResponse>(op, json(&body))?
            .ciphertext
            .0)
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn release_connections(&self) {
        let client = self
            .client
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // Dropping the last handle joins the client's I/O thread.
        drop(client);
    }
}

#[cfg(test)]
mod tests;
