//! The server's root key, which seals every state file (key material and API secrets) of a
//! data directory.
//!
//! Two sources, chosen by whether a passphrase is given:
//!
//! - `DIR/root.key`: 32 random bytes, mode 0600, created on first use;
//! - `DIR/root.kdf`: with `--passphrase-file`, root = Argon2id(passphrase, salt); the file holds
//!   the costs, the salt and a check value that tells a wrong passphrase from a damaged file:
//!   `{"format":"kmsfs-server-root","version":1,"m-cost-kib":..,"t-cost":..,"p-cost":..,
//!   "salt":"..","check":".."}` (base64).
//!
//! seal key = HKDF-SHA256(root, "kmsfs-server", "kmsfs-server-seal-v1"); each sealed value is
//! AES-256-GCM `nonce || ciphertext || tag` with an AAD naming what it is.

use super::ServerError;
use crate::crypto::{
    AeadKey, Key256, SecretBytes, constant_time_eq, hkdf_sha256, hmac_sha256, random_array,
};
use crate::kms::seal::{self, KdfParams};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use std::path::Path;

const KEY_FILE: &str = "root.key";
const KDF_FILE: &str = "root.kdf";
const KDF_FORMAT: &str = "kmsfs-server-root";
const CHECK_MESSAGE: &[u8] = b"kmsfs-server-check";
const SALT_LEN: usize = 16;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct KdfFile {
    format: String,
    version: u32,
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    salt: String,
    check: String,
}

/// The key that seals a data directory's state files. Never printed, never written in the clear
/// except as `root.key` itself.
pub struct RootKey {
    seal: AeadKey,
}

impl std::fmt::Debug for RootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RootKey([redacted])")
    }
}

impl RootKey {
    /// Opens the root key of the data directory `dir`, creating it on first use: from
    /// `root.key`, or with a passphrase from `root.kdf`.
    ///
    /// # Errors
    /// [`ServerError::WrongPassphrase`], [`ServerError::Damaged`] for a damaged key file,
    /// [`ServerError::Inconsistent`] for a directory sealed the other way (passphrase vs key
    /// file), [`ServerError::Io`].
    pub fn open_or_create(
        dir: &Path,
        passphrase: Option<&SecretBytes>,
    ) -> Result<Self, ServerError> {
        let (key_path, kdf_path) = (dir.join(KEY_FILE), dir.join(KDF_FILE));
        let root = match passphrase {
            None => {
                if kdf_path.exists() {
                    return Err(ServerError::Inconsistent(format!(
                        "the data directory {} is sealed with a passphrase; give --passphrase-file",
                        dir.display()
                    )));
                }
                key_file(&key_path)?
            }
            Some(passphrase) => {
                if key_path.exists() {
                    return Err(ServerError::Inconsistent(format!(
                        "the data directory {} is sealed with {}; do not give --passphrase-file",
                        dir.display(),
                        key_path.display()
                    )));
                }
                kdf_file(&kdf_path, passphrase)?
            }
        };
        Ok(Self::from_root(&root))
    }

    /// The root key of a zone whose state is in etcd: from `--passphrase-file` with the KDF
    /// record `kdf` read from etcd (the same passphrase gives every server of the zone the same
    /// root), or else from `DIR/root.key` (the same file copied to every server), which is
    /// created only when `may_create` (the zone holds nothing yet): a server never makes a root
    /// of its own for a zone with state. `place` names the record in errors.
    ///
    /// # Errors
    /// As [`RootKey::open_or_create`]; [`ServerError::Inconsistent`] when the zone is sealed
    /// the other way or `DIR/root.key` is missing.
    pub(crate) fn for_etcd(
        dir: &Path,
        passphrase: Option<&SecretBytes>,
        kdf: Option<&[u8]>,
        place: &Path,
        may_create: bool,
    ) -> Result<Self, ServerError> {
        let root = match (passphrase, kdf) {
            (Some(passphrase), Some(kdf)) => open_kdf_record(kdf, passphrase, place)?,
            (Some(_), None) => {
                return Err(ServerError::Inconsistent(format!(
                    "{} holds no root key record",
                    place.display()
                )));
            }
            (None, Some(_)) => {
                return Err(ServerError::Inconsistent(format!(
                    "the zone at {} is sealed with a passphrase; give --passphrase-file",
                    place.display()
                )));
            }
            (None, None) => {
                let path = dir.join(KEY_FILE);
                if !may_create && !path.exists() {
                    return Err(ServerError::Inconsistent(format!(
                        "{} is missing: with the etcd store, copy the zone's root key there \
                         (the same file on every server), or use --passphrase-file",
                        path.display()
                    )));
                }
                key_file(&path)?
            }
        };
        Ok(Self::from_root(&root))
    }

    /// The sealing key derived from `root`.
    pub(crate) fn from_root(root: &Key256) -> Self {
        let seal = hkdf_sha256(
            root.expose_secret(),
            b"kmsfs-server",
            b"kmsfs-server-seal-v1",
        );
        RootKey {
            seal: AeadKey::new(&seal),
        }
    }

    /// Seals `plaintext`, bound to `aad` (what the value is and whose).
    pub(crate) fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        self.seal.seal_to_vec(aad, plaintext)
    }

    /// Opens a value made by [`RootKey::seal`] with the same `aad`; `None` when it does not
    /// authenticate.
    pub(crate) fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<SecretBytes> {
        self.seal.open_to_vec(aad, sealed).ok()
    }
}

/// Reads `root.key`, creating it (atomically, never replacing one) when absent.
fn key_file(path: &Path) -> Result<Key256, ServerError> {
    if !path.exists() {
        let fresh = Key256::random();
        seal::write_new(path, fresh.expose_secret())
            .map_err(|e| ServerError::io("create the root key", path, e))?;
    }
    let bytes = zeroize::Zeroizing::new(
        std::fs::read(path).map_err(|e| ServerError::io("read the root key", path, e))?,
    );
    Key256::from_slice(&bytes).ok_or_else(|| ServerError::Damaged {
        what: "the root key",
        path: path.to_path_buf(),
        why: "not 32 bytes".into(),
    })
}

fn check_value(root: &Key256, salt: &[u8]) -> [u8; 32] {
    let check_key = hkdf_sha256(root.expose_secret(), salt, b"kmsfs-server-check-v1");
    hmac_sha256(check_key.expose_secret(), &[CHECK_MESSAGE])
}

/// Derives the root from the passphrase with `root.kdf`, creating the file when absent.
fn kdf_file(path: &Path, passphrase: &SecretBytes) -> Result<Key256, ServerError> {
    if !path.exists() {
        let (root, text) = new_kdf_record(passphrase)?;
        if seal::write_new(path, &text).map_err(|e| ServerError::io("create", path, e))? {
            return Ok(root);
        }
    }
    let text = std::fs::read(path).map_err(|e| ServerError::io("read", path, e))?;
    open_kdf_record(&text, passphrase, path)
}

/// A new KDF record (`root.kdf`'s bytes) for `passphrase` with a fresh salt, and the root it
/// derives.
///
/// # Errors
/// [`ServerError::Invalid`] for an empty passphrase.
pub(crate) fn new_kdf_record(passphrase: &SecretBytes) -> Result<(Key256, Vec<u8>), ServerError> {
    if passphrase.is_empty() {
        return Err(ServerError::Invalid("the passphrase is empty".into()));
    }
    let params = KdfParams::default();
    let salt: [u8; SALT_LEN] = random_array();
    let root = seal::argon2id(passphrase, params, &salt)
        .ok_or_else(|| ServerError::Inconsistent("the key derivation failed".into()))?;
    let file = KdfFile {
        format: KDF_FORMAT.into(),
        version: 1,
        m_cost_kib: params.m_cost_kib,
        t_cost: params.t_cost,
        p_cost: params.p_cost,
        salt: BASE64.encode(salt),
        check: BASE64.encode(check_value(&root, &salt)),
    };
    let text = serde_json::to_vec(&file).expect("BUG: the root key file always serializes");
    Ok((root, text))
}

/// Derives the root from `passphrase` and a KDF record (`root.kdf`'s bytes, read from `path`:
/// a file, or the record's place in etcd), checking the passphrase against its check value.
///
/// # Errors
/// [`ServerError::WrongPassphrase`], [`ServerError::Damaged`], [`ServerError::Invalid`] for an
/// empty passphrase.
pub(crate) fn open_kdf_record(
    text: &[u8],
    passphrase: &SecretBytes,
    path: &Path,
) -> Result<Key256, ServerError> {
    if passphrase.is_empty() {
        return Err(ServerError::Invalid("the passphrase is empty".into()));
    }
    let damaged = |why: &str| ServerError::Damaged {
        what: "the root key file",
        path: path.to_path_buf(),
        why: why.into(),
    };
    let file: KdfFile =
        serde_json::from_slice(text).map_err(|_| damaged("not JSON of this shape"))?;
    if file.format != KDF_FORMAT || file.version != 1 {
        return Err(damaged("unknown format or version"));
    }
    let salt = BASE64.decode(&file.salt).map_err(|_| damaged("salt"))?;
    let check = BASE64.decode(&file.check).map_err(|_| damaged("check"))?;
    let params = KdfParams {
        m_cost_kib: file.m_cost_kib,
        t_cost: file.t_cost,
        p_cost: file.p_cost,
    };
    let root = seal::argon2id(passphrase, params, &salt)
        .ok_or_else(|| damaged("key derivation parameters out of range"))?;
    if !constant_time_eq(&check, &check_value(&root, &salt)) {
        return Err(ServerError::WrongPassphrase {
            dir: super::parent_of(path),
        });
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::FileError;

    #[test]
    fn key_file_is_created_once_and_reopens_the_same() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = RootKey::open_or_create(dir.path(), None).expect("creates");
        let sealed = a.seal(b"what", b"secret");
        let b = RootKey::open_or_create(dir.path(), None).expect("reopens");
        let plain = b.open(b"what", &sealed).expect("opens");
        assert_eq!(plain.expose_secret(), b"secret");
        assert!(
            b.open(b"other", &sealed).is_none(),
            "the AAD binds the value"
        );
        let pass = SecretBytes::new(b"pw".to_vec());
        let other_way = RootKey::open_or_create(dir.path(), Some(&pass));
        assert!(
            matches!(other_way, Err(ServerError::Inconsistent(_))),
            "{other_way:?}"
        );
    }

    #[test]
    fn damaged_key_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(KEY_FILE), b"short").expect("writes");
        let damaged = RootKey::open_or_create(dir.path(), None);
        assert!(
            matches!(
                &damaged,
                Err(ServerError::Damaged {
                    what: "the root key",
                    ..
                })
            ),
            "{damaged:?}"
        );
        std::fs::remove_file(dir.path().join(KEY_FILE)).expect("rm");
        std::fs::create_dir(dir.path().join(KEY_FILE)).expect("a directory in its place");
        let unreadable = RootKey::open_or_create(dir.path(), None);
        assert!(
            matches!(&unreadable, Err(ServerError::Io(FileError { source, .. })) if source.raw_os_error() == Some(libc::EISDIR)),
            "{unreadable:?}"
        );
    }
}
