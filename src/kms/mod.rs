//! Key management: the [`KeyService`] trait every backend implements, its error type, and the
//! backends.
//!
//! - [`keyring`]: the key lifecycle rules as a pure state machine with an injected clock;
//! - [`clock`]: the wall clock every key lifecycle takes `now` from, injected;
//! - [`embedded`]: the keyring over a sealed keystore file (the default backend);
//! - [`blob`]: the self-describing ciphertext blob of `encrypt` and `generate-data-key`;
//! - [`remote`]: an HTTP client of any Exoscale-v2-compatible KMS, requests signed by [`sign`];
//! - [`seal`]: Argon2id and atomic, durable file writes, for secrets at rest;
//! - [`wire`]: the JSON types of the Exoscale API v2 KMS operations;
//! - [`backoff`]: the pauses between tries, for the remote client and the server's replication.
//!
//! Errors: [`KmsError`] says what happened and, through [`KmsError::retry`], whether trying
//! again makes sense.

pub mod backoff;
pub mod blob;
pub mod clock;
pub mod embedded;
mod error;
pub mod keyring;
pub mod remote;
pub mod seal;
pub mod sign;
#[cfg(test)]
pub mod testing;
pub mod wire;

use crate::crypto::SecretBytes;
pub use error::{FileError, KeystoreError, KmsError, Refusal, Retry};
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
