//! The JSON types of the Exoscale API v2 KMS operations (`spec/exoscale-kms-v2.openapi.json`),
//! with the spec's exact field names. Shared by the remote client, the server and `--json` output:
//! the client writes the requests and reads the answers, the server the other way round.

use crate::crypto::SecretBytes;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use uuid::Uuid;
use zeroize::Zeroizing;

/// RFC 3339 timestamps, as the API writes them.
pub mod rfc3339 {
    pub use time::serde::rfc3339::*;
}

/// Key status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyStatus {
    /// Usable for every operation.
    Enabled,
    /// Only `enable` (and reads of metadata) work.
    Disabled,
    /// Scheduled for destruction at `delete-at`.
    PendingDeletion,
}

impl KeyStatus {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Enabled => "enabled",
            KeyStatus::Disabled => "disabled",
            KeyStatus::PendingDeletion => "pending-deletion",
        }
    }
}

/// `revision-stamp`: every change of a key bumps `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    /// Monotonically increasing sequence number.
    pub seq: u64,
    /// When the revision happened.
    #[serde(with = "rfc3339")]
    pub at: OffsetDateTime,
}

/// `key-material`: the current material version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Material {
    /// Version number, 1 for the material made at creation.
    pub version: u32,
    /// When this version was made.
    #[serde(rename = "created-at", with = "rfc3339")]
    pub created_at: OffsetDateTime,
    /// True when the scheduler made it, false for creation and manual rotations.
    pub automatic: bool,
}

/// `key-rotation-config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationConfig {
    /// Manual rotations done so far (at most 10).
    #[serde(rename = "manual-count")]
    pub manual_count: u32,
    /// Automatic rotation on or off.
    pub automatic: bool,
    /// Days between automatic rotations (90 to 2560).
    #[serde(rename = "rotation-period")]
    pub rotation_period: u32,
    /// When the scheduler rotates next.
    #[serde(rename = "next-at", with = "rfc3339")]
    pub next_at: OffsetDateTime,
}

/// `replica-failure`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaFailure {
    /// The watermark the failed attempt tried to apply.
    #[serde(rename = "attempted-watermark")]
    pub attempted_watermark: u64,
    /// What went wrong.
    pub error: String,
    /// When it failed.
    #[serde(rename = "failed-at", with = "rfc3339")]
    pub failed_at: OffsetDateTime,
}

/// `replica-state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaState {
    /// The replica's zone.
    pub zone: String,
    /// The newest revision seq the replica has applied.
    #[serde(rename = "last-applied-watermark")]
    pub last_applied_watermark: u64,
    /// The last failed replication, if any.
    #[serde(
        rename = "last-failure",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_failure: Option<ReplicaFailure>,
}

/// A KMS key as `get-kms-key` and `list-kms-keys` return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmsKey {
    /// The key id.
    pub id: Uuid,
    /// Display name, unique in its zone and organization.
    pub name: String,
    /// Optional description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Always `encrypt-decrypt`.
    pub usage: String,
    /// Always `exoscale-kms`.
    pub source: String,
    /// Current status.
    pub status: KeyStatus,
    /// When the status last changed.
    #[serde(rename = "status-since", with = "rfc3339")]
    pub status_since: OffsetDateTime,
    /// The newest material version.
    pub material: Material,
    /// Rotation settings.
    pub rotation: RotationConfig,
    /// True for a multi-zone key.
    #[serde(rename = "multi-zone")]
    pub multi_zone: bool,
    /// The zone the key was created in.
    #[serde(rename = "origin-zone")]
    pub origin_zone: String,
    /// Creation time.
    #[serde(rename = "created-at", with = "rfc3339")]
    pub created_at: OffsetDateTime,
    /// Change stamp.
    pub revision: Revision,
    /// Zones holding a replica (on a primary).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<String>,
    /// Replication progress per replica (on a primary).
    #[serde(
        rename = "replicas-status",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub replicas_status: Vec<ReplicaState>,
    /// When a pending deletion becomes final.
    #[serde(
        rename = "delete-at",
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub delete_at: Option<OffsetDateTime>,
}

/// `create-kms-key-request`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// Display name.
    pub name: String,
    /// Optional description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Only `encrypt-decrypt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<String>,
    /// Multi-zone key.
    #[serde(rename = "multi-zone", default)]
    pub multi_zone: bool,
}

/// `list-kms-keys-response`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyList {
    /// The keys.
    #[serde(rename = "kms-keys")]
    pub kms_keys: Vec<KmsKey>,
}

/// `success-response` status values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Applied {
    /// The change was made.
    Success,
    /// The change was already in place; nothing changed.
    AlreadyApplied,
    /// A replication target was registered.
    TargetRegistered,
}

/// `success-response`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuccessResponse {
    /// What happened.
    pub status: Applied,
}

/// Body of `rotate`, `enable-key-rotation` and `disable-key-rotation` responses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotationResponse {
    /// The rotation settings after the call.
    pub rotation: RotationConfig,
}

/// `enable-kms-key-rotation-request`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnableRotationRequest {
    /// Days between rotations (90 to 2560, default 365).
    #[serde(
        rename = "rotation-period",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub rotation_period: Option<i64>,
}

/// `schedule-kms-key-deletion-request`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleDeletionRequest {
    /// Days until deletion is final (7 to 30, default 30).
    #[serde(
        rename = "delay-days",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub delay_days: Option<i64>,
}

/// `schedule-kms-key-deletion-response`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduleDeletionResponse {
    /// When the deletion becomes final.
    #[serde(rename = "delete-at", with = "rfc3339")]
    pub delete_at: OffsetDateTime,
}

/// `list-kms-key-rotations-response-entry`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationEntry {
    /// Material version made by this rotation.
    pub version: u32,
    /// When.
    #[serde(rename = "rotated-at", with = "rfc3339")]
    pub rotated_at: OffsetDateTime,
    /// Made by the scheduler.
    pub automatic: bool,
}

/// `list-kms-key-rotations-response`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotationList {
    /// Oldest first.
    pub rotations: Vec<RotationEntry>,
}

/// `replicate-kms-key-request`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicateRequest {
    /// Target zone.
    pub zone: String,
}

/// RFC 9457 problem document (`error-response`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// A URI reference naming the problem type.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Short title, one of the spec's titles.
    #[serde(default)]
    pub title: String,
    /// HTTP status.
    #[serde(default)]
    pub status: u16,
    /// What exactly went wrong.
    #[serde(default)]
    pub detail: String,
}

fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    BASE64
        .decode(text)
        .map_err(|_| "not valid base64 (standard alphabet, padded)".to_string())
}

/// Bytes that travel as standard padded base64 and are not secret (ciphertexts, encryption
/// contexts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Base64(pub Vec<u8>);

impl Serialize for Base64 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&BASE64.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Base64 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        decode_base64(&text)
            .map(Base64)
            .map_err(serde::de::Error::custom)
    }
}

impl Base64 {
    /// Optional bytes as an optional field.
    pub fn of(bytes: Option<&[u8]>) -> Option<Self> {
        bytes.map(|b| Base64(b.to_vec()))
    }

    /// An optional field as the keyring takes it.
    pub fn bytes(field: &Option<Self>) -> Option<&[u8]> {
        field.as_ref().map(|b| b.0.as_slice())
    }
}

/// Secret bytes (plaintexts, data keys) as they travel: base64. The text is wiped after
/// writing and after reading; the bytes stay in a [`SecretBytes`]. This wire form is the one
/// place a secret is serialized, for the API that carries it.
#[derive(Debug, Default)]
pub struct SecretBase64(pub SecretBytes);

impl Serialize for SecretBase64 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = Zeroizing::new(BASE64.encode(self.0.expose_secret()));
        serializer.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for SecretBase64 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Zeroizing::new(String::deserialize(deserializer)?);
        decode_base64(&text)
            .map(|bytes| SecretBase64(SecretBytes::new(bytes)))
            .map_err(serde::de::Error::custom)
    }
}

/// `encrypt-request`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EncryptRequest {
    /// At most 4096 bytes.
    pub plaintext: SecretBase64,
    /// Additional authenticated data, to give again on decrypt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_context: Option<Base64>,
}

/// `decrypt-request`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DecryptRequest {
    /// A blob made by `encrypt` or `generate-data-key`.
    pub ciphertext: Base64,
    /// The context it was made with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_context: Option<Base64>,
}

/// `generate-data-key-request`: `key-spec` or `bytes-count`, or neither (32 bytes).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DataKeyRequest {
    /// Only `AES-256`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_spec: Option<String>,
    /// 1 to 1024.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_count: Option<i64>,
    /// Additional authenticated data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_context: Option<Base64>,
}

/// `re-encrypt-request`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReEncryptRequest {
    /// The key, blob and context to unwrap under.
    pub source: ReEncryptSource,
    /// The key and context to wrap under.
    pub destination: ReEncryptDestination,
}

/// The source side of a re-encrypt request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReEncryptSource {
    /// The key the blob was made under.
    pub key: Uuid,
    /// The blob.
    pub ciphertext: Base64,
    /// Its context.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_context: Option<Base64>,
}

/// The destination side of a re-encrypt request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReEncryptDestination {
    /// The key to wrap under (its newest material).
    pub key: Uuid,
    /// The new context.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_context: Option<Base64>,
}

/// The answer of `encrypt` and `re-encrypt`.
#[derive(Debug, Serialize, Deserialize)]
pub struct CiphertextResponse {
    /// The blob.
    pub ciphertext: Base64,
}

/// The answer of `decrypt`.
#[derive(Debug, Serialize, Deserialize)]
pub struct PlaintextResponse {
    /// The plaintext.
    pub plaintext: SecretBase64,
}

/// The answer of `generate-data-key`.
#[derive(Debug, Serialize, Deserialize)]
pub struct DataKeyResponse {
    /// The data key in the clear.
    pub plaintext: SecretBase64,
    /// The data key wrapped under the KMS key.
    pub ciphertext: Base64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crypto_bodies_have_the_spec_s_fields_in_order() {
        let request = DataKeyRequest {
            key_spec: Some("AES-256".into()),
            bytes_count: None,
            encryption_context: Base64::of(Some(b"ctx")),
        };
        assert_eq!(
            serde_json::to_string(&request).expect("json"),
            r#"{"key-spec":"AES-256","encryption-context":"Y3R4"}"#
        );
        let answer = DataKeyResponse {
            plaintext: SecretBase64(SecretBytes::new(vec![0, 1, 2])),
            ciphertext: Base64(vec![9]),
        };
        assert_eq!(
            serde_json::to_string(&answer).expect("json"),
            r#"{"plaintext":"AAEC","ciphertext":"CQ=="}"#
        );
        let back: DataKeyResponse =
            serde_json::from_str(r#"{"plaintext":"AAEC","ciphertext":"CQ==","extra":1}"#)
                .expect("answers may carry more");
        assert_eq!(back.plaintext.0.expose_secret(), &[0, 1, 2]);
    }

    #[test]
    fn bad_base64_and_unknown_request_fields_are_refused() {
        let err = serde_json::from_str::<DecryptRequest>(r#"{"ciphertext":"***"}"#)
            .expect_err("not base64");
        assert!(err.to_string().contains("not valid base64"), "{err}");
        assert!(serde_json::from_str::<DecryptRequest>(r#"{"ciphertext":"","x":1}"#).is_err());
        assert!(serde_json::from_str::<PlaintextResponse>(r#"{"ciphertext":"AA=="}"#).is_err());
        assert!(serde_json::from_str::<PlaintextResponse>(r#"{"plaintext":"A"}"#).is_err());
    }
}
