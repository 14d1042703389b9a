//! The remote backend: a [`KeyService`] over the KMS part of the Exoscale API v2, every request
//! signed with EXO2-HMAC-SHA256. Works against `kmsfs kms serve` and any server of that API.
//!
//! Several endpoints ([`endpoints`]): `URL1,URL2,...` are servers of one zone, and a host name
//! that resolves to several addresses is one server per address (the name is kept for TLS and
//! the `Host` header). A call goes to the server that answered last; when it fails, the call
//! moves on to the next one at once, as [`KmsError::is_server_trouble`] and
//! [`KmsError::retry`] both allow: a failed connection always moves on (nothing was sent), a 5xx
//! or a failure after sending only for an operation that may be repeated; an answer that judged
//! the request (4xx) never moves on. A server that failed is tried only after the others for
//! [`endpoints::COOL_DOWN`]. Host names are looked up again every [`endpoints::RESOLVE_EVERY`]
//! and after a call on which every server failed. One log line (warn) per move.
//!
//! Time limits (see [`http`]): a connection gets [`http::CONNECT_TIMEOUT`] (2 s), an attempt
//! [`http::ATTEMPT_TIMEOUT`] (5 s). When every server failed with trouble that may pass, the
//! call goes round again: at most three rounds, after 100 ms and 300 ms ([`http::BACKOFF`]); a
//! 429 is tried again on the same server after the same pauses. No call blocks longer than
//! [`http::MAX_CALL_TIME`] (15 s): attempts are cut short to fit. Operations that must not
//! happen twice (create, rotate) are sent again only when the connection itself failed, so the
//! request cannot have reached a server. The final error names how many servers were tried,
//! the attempts, the requests sent, and the last cause.
//!
//! The HTTP clients (one per server, each with its I/O thread) are made on first use and can be
//! dropped again with [`KeyService::release_connections`], so that `kmsfs mount` can check the
//! key and then fork a single-threaded process.

pub mod endpoints;
pub mod http;

use crate::crypto::SecretBytes;
use crate::kms::sign::Credentials;
use crate::kms::wire::{
    self, Applied, Base64, CiphertextResponse, DataKeyRequest, DataKeyResponse, DecryptRequest,
    EncryptRequest, KmsKey, PlaintextResponse, ReEncryptDestination, ReEncryptRequest,
    ReEncryptSource, RotationConfig, RotationEntry, SecretBase64,
};
use crate::kms::{DataKey, DataKeySpec, KeyService, KmsError};
use endpoints::{EndpointList, Rotation, Target};
pub use http::RemoteError;
use reqwest::blocking::Client;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A KMS reached over HTTP(S), at one or more endpoints of one zone.
pub struct RemoteKms {
    endpoints: EndpointList,
    credentials: Credentials,
    state: Mutex<Servers>,
}

/// What the client knows of the zone's servers: the targets (resolved when), the order to try
/// them in, and a client per target, made on first use.
#[derive(Default)]
struct Servers {
    targets: Vec<Target>,
    resolved_at: Option<Instant>,
    rotation: Rotation,
    clients: HashMap<String, Client>,
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

/// What a call did so far, for its final error: the attempts, the requests that reached (or may
/// have reached) a server, and the targets tried.
#[derive(Default)]
struct Tries {
    attempts: u32,
    sent: u32,
    targets: Vec<String>,
}

impl Tries {
    fn record(&mut self, target: &Target, failure: &KmsError) {
        self.attempts += 1;
        if !matches!(failure, KmsError::Unreachable { sent: false, .. }) {
            self.sent += 1;
        }
        let label = target.label();
        if !self.targets.contains(&label) {
            self.targets.push(label);
        }
    }

    fn describe(&self, elapsed: Duration) -> String {
        format!(
            "{} tried, {} in {:.1} s, {} sent",
            counted(self.targets.len(), "endpoint"),
            counted(self.attempts as usize, "attempt"),
            elapsed.as_secs_f64(),
            counted(self.sent as usize, "request"),
        )
    }
}

fn counted(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

impl RemoteKms {
    /// A client of the KMS at `endpoints` (`URL` or `URL1,URL2,...`, e.g.
    /// `http://127.0.0.1:8400/v2`). Nothing is sent, looked up, and no thread starts until the
    /// first call.
    pub fn new(endpoints: &str, credentials: Credentials) -> Result<Self, RemoteError> {
        Ok(RemoteKms::with_list(
            EndpointList::parse(endpoints)?,
            credentials,
        ))
    }

    /// A client of the KMS at the checked `endpoints`.
    pub fn with_list(endpoints: EndpointList, credentials: Credentials) -> Self {
        RemoteKms {
            endpoints,
            credentials,
            state: Mutex::new(Servers::default()),
        }
    }

    /// A client with the credentials of `EXOSCALE_API_KEY` and `EXOSCALE_API_SECRET`.
    pub fn from_env(endpoints: &str) -> Result<Self, RemoteError> {
        let endpoints = EndpointList::parse(endpoints)?;
        let credentials = http::credentials_from_env()?;
        Ok(RemoteKms::with_list(endpoints, credentials))
    }

    /// The normalized endpoints, as `--kms` takes them (`URL1,URL2`).
    pub fn endpoint(&self) -> String {
        self.endpoints.to_string()
    }

    fn servers(&self) -> MutexGuard<'_, Servers> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The targets in the order to try them now, each with its client (made when missing);
    /// host names are looked up first when that is due.
    fn plan(&self) -> Result<Vec<(Target, Client)>, KmsError> {
        let due = {
            let mut servers = self.servers();
            let due = servers
                .resolved_at
                .is_none_or(|at| at.elapsed() >= endpoints::RESOLVE_EVERY);
            if due && !servers.targets.is_empty() {
                // Other calls go on with the old addresses meanwhile, and do not look up too.
                servers.resolved_at = Some(Instant::now());
            }
            due
        };
        // Looked up without the lock: a slow resolver holds up this call only.
        let resolved = due.then(|| endpoints::resolve(&self.endpoints));
        let mut servers = self.servers();
        if let Some(targets) = resolved {
            let labels: Vec<String> = targets.iter().map(Target::label).collect();
            servers.clients.retain(|label, _| labels.contains(label));
            servers.targets = targets;
            servers.resolved_at = Some(Instant::now());
        }
        let order = servers.rotation.order(&servers.targets, Instant::now());
        let mut plan = Vec::with_capacity(order.len());
        for i in order {
            let target = servers.targets[i].clone();
            let label = target.label();
            let client = match servers.clients.get(&label) {
                Some(client) => client.clone(),
                None => {
                    let client = new_client(&target)?;
                    servers.clients.insert(label, client.clone());
                    client
                }
            };
            plan.push((target, client));
        }
        Ok(plan)
    }

    /// Sends `op` with `body` (JSON) as the module says, and decodes the answer.
    fn call<T: DeserializeOwned>(&self, op: Op<'_>, body: Option<Vec<u8>>) -> Result<T, KmsError> {
        let span = tracing::debug_span!("kms_request", op = op.name, key = ?op.key);
        let _entered = span.enter();
        let body = body.unwrap_or_default();
        let repeatable = op.repeat == Repeat::Safe;
        let started = Instant::now();
        let mut tries = Tries::default();
        // The last failure and where it happened.
        let mut last: Option<(KmsError, String)> = None;
        let mut round = 0u32;
        'rounds: loop {
            let plan = self.plan()?;
            let mut every_target_failed = true;
            for (target, client) in &plan {
                let remaining = http::MAX_CALL_TIME.saturating_sub(started.elapsed());
                if remaining < http::BACKOFF.first {
                    every_target_failed = false;
                    break;
                }
                let label = target.label();
                if let Some((failure, from)) = &last
                    && from != &label
                {
                    tracing::warn!("KMS endpoint {from} failed ({failure}); trying {label}");
                }
                let failure = match self.send(client, target, &op, &body, remaining) {
                    Ok(answer) => {
                        self.servers().rotation.succeeded(target);
                        return Ok(answer);
                    }
                    Err(failure) => failure,
                };
                tries.record(target, &failure);
                let moves_on = failure.is_server_trouble();
                if moves_on {
                    // Whether or not this call may move on, the next ones try others first.
                    self.servers().rotation.failed(target, Instant::now());
                }
                if !failure.retry().allows(repeatable) {
                    return Err(failure.after_tries(&tries.describe(started.elapsed()), &label));
                }
                last = Some((failure, label));
                if !moves_on {
                    // Limited (429): the same server again after a pause.
                    every_target_failed = false;
                    break;
                }
            }
            if every_target_failed {
                // Perhaps the names now point elsewhere.
                self.servers().resolved_at = None;
            }
            let (failure, label) = last
                .take()
                .expect("BUG: a round ends after a failure (the first always has time)");
            let pause = http::BACKOFF.pause(round);
            let fits = pause.is_some_and(|pause| {
                started.elapsed() + pause + http::BACKOFF.first < http::MAX_CALL_TIME
            });
            let (Some(pause), true) = (pause, fits) else {
                let tries = tries.describe(started.elapsed());
                break 'rounds Err(failure.after_tries(&tries, &label));
            };
            tracing::debug!(round = round + 1, "KMS request failed, retrying: {failure}");
            last = Some((failure, label));
            std::thread::sleep(pause);
            round += 1;
        }
    }

    /// One attempt of `op` on `target` within `remaining`: the decoded answer on a 2xx, else the
    /// failure (an answer that does not decode is [`KmsError::Malformed`], never tried again).
    fn send<T: DeserializeOwned>(
        &self,
        client: &Client,
        target: &Target,
        op: &Op<'_>,
        body: &[u8],
        remaining: Duration,
    ) -> Result<T, KmsError> {
        let url = target.endpoint.url(&op.route);
        let mut request = client
            .request(op.method.clone(), url.clone())
            .timeout(http::ATTEMPT_TIMEOUT.min(remaining))
            .header(
                reqwest::header::AUTHORIZATION,
                http::authorization(&self.credentials, op.method.as_str(), &url, body),
            );
        if op.method == reqwest::Method::POST && !body.is_empty() {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_vec());
        }
        match request.send().and_then(|r| {
            let status = r.status().as_u16();
            r.bytes().map(|b| (status, b))
        }) {
            Ok((status, bytes)) if (200..300).contains(&status) => serde_json::from_slice(&bytes)
                .map_err(|e| KmsError::Malformed {
                    operation: op.name,
                    what: format!("JSON this client cannot read: {e}"),
                    source: Some(e),
                }),
            Ok((status, bytes)) => Err(http::error_from_answer(status, &bytes)),
            Err(e) => Err(KmsError::Unreachable {
                what: format!("{} {url}: {}", op.method, http::transport_cause(&e)),
                sent: !e.is_connect(),
                source: Box::new(e),
            }),
        }
    }
}

/// A client for `target`: pooled connections, the time limits, and the target's address pinned
/// for its host name (so TLS and the `Host` header keep the name).
fn new_client(target: &Target) -> Result<Client, KmsError> {
    http::install_crypto_provider();
    let mut builder = Client::builder()
        .connect_timeout(http::CONNECT_TIMEOUT)
        .timeout(http::ATTEMPT_TIMEOUT)
        .user_agent(concat!("kmsfs/", env!("CARGO_PKG_VERSION")));
    if let Some((host, addr)) = &target.pinned {
        builder = builder.resolve(host, *addr);
    }
    builder.build().map_err(|e| KmsError::Client(Box::new(e)))
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
        let clients = std::mem::take(&mut self.servers().clients);
        // Dropping the last handle of each joins its I/O thread.
        drop(clients);
    }
}

#[cfg(test)]
mod tests;
