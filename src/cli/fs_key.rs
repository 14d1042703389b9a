//! The filesystem key of a directory with encrypted names: made and wrapped at `init`,
//! unwrapped once per mount (and by `fsck`), re-wrapped by `rewrap`. It never reaches disk
//! unwrapped.

use super::{CliError, CliResult};
use crate::config::{CipherConfig, WrappedFsKey};
use crate::format::{FsId, fs_key_context};
use crate::format::{FsKey, NameCipher};
use crate::kms::KeyService;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use uuid::Uuid;

/// A new random filesystem key for filesystem `fs_id`, wrapped by KMS key `key_id`.
pub fn make(kms: &dyn KeyService, key_id: Uuid, fs_id: &FsId) -> CliResult<WrappedFsKey> {
    let key = FsKey::random();
    let wrapped = kms.encrypt(key_id, key.expose_secret(), Some(&fs_key_context(fs_id)))?;
    Ok(WrappedFsKey {
        key_id,
        wrapped: STANDARD.encode(wrapped),
    })
}

/// The name cipher of the directory `config` describes, or `None` when its names are
/// plaintext. One KMS call.
pub fn name_cipher(kms: &dyn KeyService, config: &CipherConfig) -> CliResult<Option<NameCipher>> {
    let Some(fs_key) = &config.fs_key else {
        return Ok(None);
    };
    let fs_id = config.fs_id().map_err(CliError::new)?;
    let wrapped = STANDARD.decode(&fs_key.wrapped).map_err(|_| {
        CliError::new("kmsfs.conf is damaged: its fs-key is not base64".to_string())
    })?;
    let plain = kms
        .decrypt(fs_key.key_id, &wrapped, Some(&fs_key_context(&fs_id)))
        .map_err(|e| {
            CliError::new(format!(
                "cannot unwrap the directory's name key with KMS key {}: {e}",
                fs_key.key_id
            ))
        })?;
    let key = FsKey::from_bytes(plain.expose_secret()).map_err(|_| {
        CliError::new("the directory's name key has the wrong length; kmsfs.conf may be damaged")
    })?;
    Ok(Some(NameCipher::new(&key)))
}

/// Re-wraps the filesystem key of `config` under the newest material of `to_key` (or of its
/// own key): `re-encrypt`, so the key itself never leaves the KMS. Returns the new record.
pub fn rewrap(
    kms: &dyn KeyService,
    config: &CipherConfig,
    to_key: Option<Uuid>,
) -> CliResult<Option<WrappedFsKey>> {
    let Some(fs_key) = &config.fs_key else {
        return Ok(None);
    };
    let fs_id = config.fs_id().map_err(CliError::new)?;
    let context = fs_key_context(&fs_id);
    let wrapped = STANDARD.decode(&fs_key.wrapped).map_err(|_| {
        CliError::new("kmsfs.conf is damaged: its fs-key is not base64".to_string())
    })?;
    let destination = to_key.unwrap_or(fs_key.key_id);
    let rewrapped = kms.re_encrypt(
        fs_key.key_id,
        &wrapped,
        Some(&context),
        destination,
        Some(&context),
    )?;
    Ok(Some(WrappedFsKey {
        key_id: destination,
        wrapped: STANDARD.encode(rewrapped),
    }))
}
