//! Key management: the [`KeyService`] trait every backend implements, its error type, and the
//! backends.
//!
//! - [`keyring`]: the key lifecycle rules as a pure state machine with an injected clock;
//! - [`embedded`]: the keyring over a sealed keystore file (the default backend);
//! - [`blob`]: the self-describing ciphertext blob of `encrypt` and `generate-data-key`;
//! - [`remote`]: an HTTP client of any Exoscale-v2-compatible KMS, requests signed by [`sign`];
//! - [`seal`]: Argon2id and atomic, durable file writes, for secrets at rest;
//! - [`wire`]: the JSON types of the Exoscale API v2 KMS operations.

pub mod blob;
pub mod embedded;
pub mod keyring;
pub mod remote;
pub mod seal;
pub mod sign;
#[cfg(test)]
pub mod testing;
pub mod wire;

use crate::crypto::SecretBytes;
use uuid::Uuid;
pub use wire::{Applied, KmsKey, RotationConfig, RotationEntry};

/// What a data key request asks for (`key-spec: AES-256` or `bytes-count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKeySpec {
    /// 32 bytes.
    Aes256,
    /// 1 to 1024 bytes.
    Bytes(u32),
}

/// A generated data key: the plaintext for local use and its wrapped form to store.
#[derive(Debug)]
pub struct DataKey {
    /// The key in the clear.
    pub plaintext: SecretBytes,
    /// The key wrapped by the KMS key (an opaque, self-describing blob).
    pub ciphertext: Vec<u8>,
}

/// An error title of the API, exactly as the spec spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// "Key Not Found"
    KeyNotFound,
    /// "Key is Disabled"
    KeyDisabled,
    /// "Key is Pending Deletion"
    KeyPendingDeletion,
    /// "Not on Default"
    NotOnDefault,
    /// "Not on Replica"
    NotOnReplica,
    /// "Not on a Replica" (the spelling the spec uses for `rotate`)
    NotOnAReplica,
    /// "Manual Rotation Limit"
    ManualRotationLimit,
    /// "Conflict"
    Conflict,
    /// "Name Conflict"
    NameConflict,
    /// "Bad Request"
    BadRequest,
    /// "Invalid Usage"
    InvalidUsage,
    /// "Invalid Origin"
    InvalidOrigin,
    /// "Not Multizone"
    NotMultizone,
    /// "Not Pending Deletion"
    NotPendingDeletion,
    /// "Invalid Argument"
    InvalidArgument,
}

impl Refusal {
    /// The problem document title.
    pub fn title(self) -> &'static str {
        match self {
            Refusal::KeyNotFound => "Key Not Found",
            Refusal::KeyDisabled => "Key is Disabled",
            Refusal::KeyPendingDeletion => "Key is Pending Deletion",
            Refusal::NotOnDefault => "Not on Default",
            Refusal::NotOnReplica => "Not on Replica",
            Refusal::NotOnAReplica => "Not on a Replica",
            Refusal::ManualRotationLimit => "Manual Rotation Limit",
            Refusal::Conflict => "Conflict",
            Refusal::NameConflict => "Name Conflict",
            Refusal::BadRequest => "Bad Request",
            Refusal::InvalidUsage => "Invalid Usage",
            Refusal::InvalidOrigin => "Invalid Origin",
            Refusal::NotMultizone => "Not Multizone",
            Refusal::NotPendingDeletion => "Not Pending Deletion",
            Refusal::InvalidArgument => "Invalid Argument",
        }
    }

    /// The refusal with this title, if it is one of ours.
    pub fn from_title(title: &str) -> Option<Self> {
        ALL_REFUSALS.iter().copied().find(|r| r.title() == title)
    }
}

const ALL_REFUSALS: [Refusal; 15] = [
    Refusal::KeyNotFound,
    Refusal::KeyDisabled,
    Refusal::KeyPendingDeletion,
    Refusal::NotOnDefault,
    Refusal::NotOnReplica,
    Refusal::NotOnAReplica,
    Refusal::ManualRotationLimit,
    Refusal::Conflict,
    Refusal::NameConflict,
    Refusal::BadRequest,
    Refusal::InvalidUsage,
    Refusal::InvalidOrigin,
    Refusal::NotMultizone,
    Refusal::NotPendingDeletion,
    Refusal::InvalidArgument,
];

/// Why a KMS operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// The KMS refused by one of its rules (a 400 problem document on the wire).
    #[error("{}: {detail}", refusal.title())]
    Refused {
        /// The rule's title.
        refusal: Refusal,
        /// What exactly was refused.
        detail: String,
    },
    /// Decryption failed: wrong key, wrong context, or a damaged ciphertext. Deliberately opaque.
    #[error("the ciphertext is invalid for this key and encryption context")]
    InvalidCiphertext,
    /// The request's credentials were refused (403).
    #[error("the KMS refused the credentials: {0}")]
    Forbidden(String),
    /// The KMS could not be reached or did not answer in time; a retry may succeed.
    #[error("the KMS is unreachable: {0}")]
    Unavailable(String),
    /// The KMS answered with an error this client does not know.
    #[error("the KMS answered {status} {title}: {detail}")]
    Other {
        /// HTTP status.
        status: u16,
        /// Problem title.
        title: String,
        /// Problem detail.
        detail: String,
    },
    /// The embedded keystore could not be opened, read or written.
    #[error("{0}")]
    Keystore(String),
}

impl KmsError {
    /// A refusal with a detail sentence.
    pub fn refused(refusal: Refusal, detail: impl Into<String>) -> Self {
        KmsError::Refused {
            refusal,
            detail: detail.into(),
        }
    }

    /// True when the same request may succeed later (transport trouble), false for answers.
    pub fn is_retryable(&self) -> bool {
        matches!(self, KmsError::Unavailable(_))
    }

    /// The refusal, if this is one.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            KmsError::Refused { refusal, .. } => Some(*refusal),
            _ => None,
        }
    }
}

/// A KMS: the operations of the Exoscale API v2 KMS, by any backend.
///
/// Every method is blocking; the filesystem calls it from its request threads.
pub trait KeyService: Send + Sync {
    /// `create-kms-key`.
    fn create_key(&self, request: &wire::CreateKeyRequest) -> Result<KmsKey, KmsError>;
    /// `list-kms-keys`.
    fn list_keys(&self) -> Result<Vec<KmsKey>, KmsError>;
    /// `get-kms-key`.
    fn get_key(&self, id: Uuid) -> Result<KmsKey, KmsError>;
    /// `rotate-kms-key` (manual rotation).
    fn rotate_key(&self, id: Uuid) -> Result<RotationConfig, KmsError>;
    /// `enable-kms-key`.
    fn enable_key(&self, id: Uuid) -> Result<Applied, KmsError>;
    /// `disable-kms-key`.
    fn disable_key(&self, id: Uuid) -> Result<Applied, KmsError>;
    /// `enable-kms-key-rotation`; `period_days` defaults to 365.
    fn enable_rotation(
        &self,
        id: Uuid,
        period_days: Option<i64>,
    ) -> Result<RotationConfig, KmsError>;
    /// `disable-kms-key-rotation`.
    fn disable_rotation(&self, id: Uuid) -> Result<RotationConfig, KmsError>;
    /// `schedule-kms-key-deletion`; `delay_days` defaults to 30. Returns `delete-at`.
    fn schedule_deletion(
        &self,
        id: Uuid,
        delay_days: Option<i64>,
    ) -> Result<time::OffsetDateTime, KmsError>;
    /// `cancel-kms-key-deletion`.
    fn cancel_deletion(&self, id: Uuid) -> Result<Applied, KmsError>;
    /// `list-kms-key-rotations`.
    fn list_rotations(&self, id: Uuid) -> Result<Vec<RotationEntry>, KmsError>;
    /// `encrypt`: at most 4096 bytes of plaintext under the newest material.
    fn encrypt(
        &self,
        id: Uuid,
        plaintext: &[u8],
        context: Option<&[u8]>,
    ) -> Result<Vec<u8>, KmsError>;
    /// `decrypt`: any material version of the key.
    fn decrypt(
        &self,
        id: Uuid,
        ciphertext: &[u8],
        context: Option<&[u8]>,
    ) -> Result<SecretBytes, KmsError>;
    /// `generate-data-key`.
    fn generate_data_key(
        &self,
        id: Uuid,
        spec: DataKeySpec,
        context: Option<&[u8]>,
    ) -> Result<DataKey, KmsError>;
    /// `re-encrypt`: unwrap under `source` and its context, wrap under `destination`'s newest
    /// material and the new context; the plaintext never leaves the KMS.
    fn re_encrypt(
        &self,
        source: Uuid,
        ciphertext: &[u8],
        source_context: Option<&[u8]>,
        destination: Uuid,
        destination_context: Option<&[u8]>,
    ) -> Result<Vec<u8>, KmsError>;

    /// Periodic work of an in-process backend (automatic rotations, due deletions); a remote
    /// KMS does its own. Returns a line to log when something changed.
    fn housekeeping(&self) -> Result<Option<String>, KmsError> {
        Ok(None)
    }

    /// Drops pooled connections and any I/O thread the backend runs, so that the process is
    /// single-threaded again (before `fork`); the next call reconnects.
    fn release_connections(&self) {}

    /// True when each call is a network round trip, so that making data keys ahead pays. An
    /// in-process backend makes one in microseconds, and its new files take a rotated key's
    /// new version at once.
    fn is_remote(&self) -> bool {
        false
    }
}
