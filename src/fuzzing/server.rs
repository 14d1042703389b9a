//! Target of every JSON body the KMS server parses (and, on the client's side, every answer it
//! parses from a server).

use super::split_selector;
use crate::kms::wire;
use crate::kms::wire::{DataKeyRequest, DecryptRequest, EncryptRequest, ReEncryptRequest};
use crate::server::body;
use crate::server::peer::PushRequest;
use serde::de::DeserializeOwned;

/// One request body parser: strict JSON of `T`; any failure is a 400.
fn strict<T: DeserializeOwned>(bytes: &[u8]) {
    if let Err(e) = body::json::<T>(bytes) {
        assert_eq!(e.status().as_u16(), 400, "a body refused with {e:?}");
    }
}

/// [`strict`] for the operations whose fields are all optional (an empty body is the defaults).
fn or_default<T: DeserializeOwned + Default>(bytes: &[u8]) {
    if let Err(e) = body::json_or_default::<T>(bytes) {
        assert_eq!(e.status().as_u16(), 400, "a body refused with {e:?}");
    }
}

/// What the client takes from a server's answer.
fn answer<T: DeserializeOwned>(bytes: &[u8]) {
    let _ = serde_json::from_slice::<T>(bytes);
}

/// The parsers byte 0 picks from, by the route (or answer) that uses them.
pub(super) const BODIES: &[(&str, super::Target)] = &[
    ("create-kms-key", strict::<wire::CreateKeyRequest>),
    ("encrypt", strict::<EncryptRequest>),
    ("decrypt", strict::<DecryptRequest>),
    ("generate-data-key", or_default::<DataKeyRequest>),
    ("re-encrypt", strict::<ReEncryptRequest>),
    (
        "schedule-deletion",
        or_default::<wire::ScheduleDeletionRequest>,
    ),
    ("enable-rotation", or_default::<wire::EnableRotationRequest>),
    ("replicate", strict::<wire::ReplicateRequest>),
    ("peer-replica", strict::<PushRequest>),
    ("no-body", |bytes| {
        let _ = body::no_body(bytes);
    }),
    ("path-key-id", |bytes| {
        if let Ok(text) = std::str::from_utf8(bytes) {
            let _ = body::key_id(text);
        }
    }),
    ("answer-key", answer::<wire::KmsKey>),
    ("answer-key-list", answer::<wire::KeyList>),
    ("answer-rotation", answer::<wire::RotationResponse>),
    ("answer-rotation-list", answer::<wire::RotationList>),
    ("answer-deletion", answer::<wire::ScheduleDeletionResponse>),
    ("answer-success", answer::<wire::SuccessResponse>),
    ("answer-problem", answer::<wire::Problem>),
    ("answer-ciphertext", answer::<wire::CiphertextResponse>),
    ("answer-plaintext", answer::<wire::PlaintextResponse>),
    ("answer-data-key", answer::<wire::DataKeyResponse>),
];

/// Every JSON body the server parses (and every answer the client parses): byte 0 picks the
/// parser ([`BODIES`]), the rest is the body. A body is parsed or refused as a 400, never a
/// panic.
pub fn server_body(data: &[u8]) {
    let (selector, rest) = split_selector(data);
    let (_, parse) = BODIES[usize::from(selector) % BODIES.len()];
    parse(rest);
}
