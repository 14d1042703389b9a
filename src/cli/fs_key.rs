//! The filesystem key of a directory with encrypted names: made and wrapped at `init`,
//! unwrapped once per mount (and by `fsck`), re-wrapped by `rewrap`. It never reaches disk
//! unwrapped. Its encryption context names the KMS key that wraps it, so a `key-id` changed in
//! `kmsfs.conf` does not unwrap it.

use super::{CliError, CliResult};
use crate::config::{CipherConfig, WrappedFsKey};
use crate::format::{FsId, fs_key_context};
use crate::format::{FsKey, NameCipher};
use crate::kms::{KeyService, KmsError};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use uuid::Uuid;

/// A new random filesystem key for filesystem `fs_id`, wrapped by KMS key `key_id`.
pub fn make(kms: &dyn KeyService, key_id: Uuid, fs_id: &FsId) -> CliResult<WrappedFsKey> {
    let key = FsKey::random();
    let context = fs_key_context(fs_id, &key_id);
    let wrapped = kms.encrypt(key_id, key.expose_secret(), Some(&context))?;
    Ok(WrappedFsKey {
        key_id,
        wrapped: STANDARD.encode(wrapped),
    })
}

/// The name cipher of the directory `config` describes, or `None` when its names are
/// plaintext. One KMS call.
///
/// # Errors
///
/// One sentence when the fs-key is not base64, when the KMS does not unwrap it (a `key-id` or
/// `wrapped` changed in `kmsfs.conf` says so), or when it unwraps to a key of the wrong length.
pub fn name_cipher(kms: &dyn KeyService, config: &CipherConfig) -> CliResult<Option<NameCipher>> {
    let Some(fs_key) = &config.fs_key else {
        return Ok(None);
    };
    let fs_id = config.fs_id().map_err(CliError::config)?;
    let wrapped = decode_wrapped(fs_key)?;
    let context = fs_key_context(&fs_id, &fs_key.key_id);
    let plain = kms
        .decrypt(fs_key.key_id, &wrapped, Some(&context))
        .map_err(|e| {
            let hint = match e {
                KmsError::InvalidCiphertext => {
                    "; the fs-key in kmsfs.conf (its key-id or its wrapped key) may have been changed"
                }
                _ => "",
            };
            let message = format!(
                "cannot unwrap the directory's name key with KMS key {}: {e}{hint}",
                fs_key.key_id
            );
            CliError::kms(&e, message)
        })?;
    let key = FsKey::from_bytes(plain.expose_secret()).map_err(|_| {
        CliError::config("the directory's name key has the wrong length; kmsfs.conf may be damaged")
    })?;
    Ok(Some(NameCipher::new(&key)))
}

/// Re-wraps the filesystem key of `config` under the newest material of `to_key` (or of its
/// own key): `re-encrypt`, so the key itself never leaves the KMS. The destination context
/// names the destination key. Returns the new record; `config` is not written.
pub fn rewrap(
    kms: &dyn KeyService,
    config: &CipherConfig,
    to_key: Option<Uuid>,
) -> CliResult<Option<WrappedFsKey>> {
    let Some(fs_key) = &config.fs_key else {
        return Ok(None);
    };
    let fs_id = config.fs_id().map_err(CliError::config)?;
    let wrapped = decode_wrapped(fs_key)?;
    let destination = to_key.unwrap_or(fs_key.key_id);
    let rewrapped = kms.re_encrypt(
        fs_key.key_id,
        &wrapped,
        Some(&fs_key_context(&fs_id, &fs_key.key_id)),
        destination,
        Some(&fs_key_context(&fs_id, &destination)),
    )?;
    Ok(Some(WrappedFsKey {
        key_id: destination,
        wrapped: STANDARD.encode(rewrapped),
    }))
}

/// The KMS ciphertext of `fs_key`.
fn decode_wrapped(fs_key: &WrappedFsKey) -> CliResult<Vec<u8>> {
    STANDARD
        .decode(&fs_key.wrapped)
        .map_err(|_| CliError::config("kmsfs.conf is damaged: its fs-key is not base64"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KmsConfig;

    use crate::kms::embedded::{self, EmbeddedKms};

    /// An embedded KMS with a cheap KDF and two keys.
    fn kms_with_two_keys() -> (tempfile::TempDir, EmbeddedKms, Uuid, Uuid) {
        let dir = tempfile::tempdir().expect("tempdir");
        let kms = embedded::for_tests(dir.path());
        let (a, b) = (embedded::test_key(&kms, "a"), embedded::test_key(&kms, "b"));
        (dir, kms, a, b)
    }

    fn config_with_fs_key(kms: &dyn KeyService, key: Uuid) -> CipherConfig {
        let mut config = CipherConfig::new(
            KmsConfig::Embedded {
                keystore: "/unused".into(),
            },
            key,
        );
        let fs_id = config.fs_id().expect("fs id");
        config.fs_key = Some(make(kms, key, &fs_id).expect("make"));
        config
    }

    fn wrapped(config: &CipherConfig) -> Vec<u8> {
        decode_wrapped(config.fs_key.as_ref().expect("fs-key")).expect("base64")
    }

    #[test]
    fn the_fs_key_is_wrapped_under_a_context_that_names_its_key() {
        let (_dir, kms, a, b) = kms_with_two_keys();
        let config = config_with_fs_key(&kms, a);
        let fs_id = config.fs_id().expect("fs id");
        assert!(name_cipher(&kms, &config).expect("unwraps").is_some());
        let blob = wrapped(&config);
        assert!(
            kms.decrypt(a, &blob, Some(&fs_key_context(&fs_id, &a)))
                .is_ok()
        );
        for other in [b, Uuid::nil()] {
            assert!(
                matches!(
                    kms.decrypt(a, &blob, Some(&fs_key_context(&fs_id, &other))),
                    Err(KmsError::InvalidCiphertext)
                ),
                "a context naming {other} unwraps it"
            );
        }
    }

    #[test]
    fn a_changed_key_id_does_not_unwrap_and_says_so_in_one_sentence() {
        let (_dir, kms, a, b) = kms_with_two_keys();
        let mut config = config_with_fs_key(&kms, a);
        for changed in [b, Uuid::from_bytes([0x5a; 16])] {
            if let Some(fs_key) = config.fs_key.as_mut() {
                fs_key.key_id = changed;
            }
            let err = name_cipher(&kms, &config)
                .expect_err("a changed key id")
                .message;
            assert!(
                err.starts_with(&format!(
                    "cannot unwrap the directory's name key with KMS key {changed}: "
                )),
                "{err}"
            );
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn a_rewrap_to_another_key_names_the_new_key_in_its_context() {
        let (_dir, kms, a, b) = kms_with_two_keys();
        let mut config = config_with_fs_key(&kms, a);
        let fs_id = config.fs_id().expect("fs id");
        let before = name_cipher(&kms, &config)
            .expect("unwraps")
            .expect("encrypted names")
            .encrypt_name(&[1; 16], b"name");
        let moved = rewrap(&kms, &config, Some(b))
            .expect("rewrap")
            .expect("an fs-key");
        assert_eq!(moved.key_id, b);
        config.fs_key = Some(moved);
        let blob = wrapped(&config);
        assert!(
            matches!(
                kms.decrypt(b, &blob, Some(&fs_key_context(&fs_id, &a))),
                Err(KmsError::InvalidCiphertext)
            ),
            "the old key id's context still unwraps the moved key"
        );
        let after = name_cipher(&kms, &config)
            .expect("unwraps under the new key")
            .expect("encrypted names")
            .encrypt_name(&[1; 16], b"name");
        assert_eq!(before, after, "the same filesystem key");
        // Moved back to the old key id by hand: refused.
        if let Some(fs_key) = config.fs_key.as_mut() {
            fs_key.key_id = a;
        }
        assert!(name_cipher(&kms, &config).is_err());
        // A rewrap in place keeps the key id.
        if let Some(fs_key) = config.fs_key.as_mut() {
            fs_key.key_id = b;
        }
        let same = rewrap(&kms, &config, None)
            .expect("rewrap")
            .expect("an fs-key");
        assert_eq!(same.key_id, b);
    }

    #[test]
    fn plaintext_names_have_no_fs_key_to_unwrap_or_rewrap() {
        let (_dir, kms, a, _) = kms_with_two_keys();
        let config = CipherConfig::new(
            KmsConfig::Embedded {
                keystore: "/unused".into(),
            },
            a,
        );
        assert!(name_cipher(&kms, &config).expect("no call").is_none());
        assert!(rewrap(&kms, &config, Some(a)).expect("no call").is_none());
    }
}
