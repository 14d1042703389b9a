//! The keystore file: a sealed keyring behind a passphrase, written atomically.
//!
//! The file is one JSON object (all binary values base64):
//!
//! ```text
//! {"format":"kmsfs-keystore","version":1,
//!  "kdf":{"algorithm":"argon2id","m-cost-kib":65536,"t-cost":3,"p-cost":1,"salt":"..."},
//!  "check":"...","nonce":"...","sealed":"..."}
//! ```
//!
//! - root = Argon2id(passphrase, salt, m, t, p) → 32 bytes;
//!   seal key = HKDF-SHA256(root, salt, "kmsfs-keystore-seal-v1");
//!   check key = HKDF-SHA256(root, salt, "kmsfs-keystore-check-v1");
//! - `check` = HMAC-SHA256(check key, "kmsfs-keystore-check"): tells a wrong passphrase from a
//!   damaged file;
//! - `sealed` = AES-256-GCM(seal key, `nonce`, keyring JSON) with ciphertext || tag, and
//!   AAD = "kmsfs-keystore" || u32 version || "argon2id" || u32 m || u32 t || u32 p ||
//!   u32 salt length || salt (big-endian), so the non-secret fields cannot be altered.

use crate::crypto::{AeadKey, NONCE_LEN, SecretBytes, constant_time_eq, hkdf_sha256, hmac_sha256};
use crate::crypto::{TAG_LEN, random_array};
use crate::kms::keyring::Keyring;
use crate::kms::{KeystoreError, KmsError, seal};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::{Zeroize, Zeroizing};

const FORMAT: &str = "kmsfs-keystore";
pub const VERSION: u32 = 1;
const ALGORITHM: &str = "argon2id";
const SALT_LEN: usize = 16;
const CHECK_MESSAGE: &[u8] = b"kmsfs-keystore-check";
/// A keystore larger than this is not one of ours (thousands of keys fit in far less).
const MAX_FILE_LEN: u64 = 64 << 20;

pub use crate::kms::seal::KdfParams;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    format: String,
    version: u32,
    kdf: Kdf,
    check: String,
    nonce: String,
    sealed: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Kdf {
    algorithm: String,
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    salt: String,
}

/// The keys a passphrase gives for one salt and parameter set; derived once, kept for reloads.
pub(super) struct SealingKeys {
    params: KdfParams,
    salt: Vec<u8>,
    seal: AeadKey,
    check: [u8; 32],
}

impl Drop for SealingKeys {
    fn drop(&mut self) {
        self.check.zeroize();
    }
}

impl SealingKeys {
    /// Runs Argon2id; `None` when the parameters are out of range.
    pub(super) fn derive(passphrase: &SecretBytes, params: KdfParams, salt: &[u8]) -> Option<Self> {
        if !(SALT_LEN..=64).contains(&salt.len()) {
            return None;
        }
        let root = seal::argon2id(passphrase, params, salt)?;
        let seal = hkdf_sha256(root.expose_secret(), salt, b"kmsfs-keystore-seal-v1");
        let check_key = hkdf_sha256(root.expose_secret(), salt, b"kmsfs-keystore-check-v1");
        Some(SealingKeys {
            params,
            salt: salt.to_vec(),
            seal: AeadKey::new(&seal),
            check: hmac_sha256(check_key.expose_secret(), &[CHECK_MESSAGE]),
        })
    }

    /// A fresh salt with `params`.
    pub(super) fn generate(passphrase: &SecretBytes, params: KdfParams) -> Option<Self> {
        Self::derive(passphrase, params, &random_array::<SALT_LEN>())
    }

    fn aad(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(64 + self.salt.len());
        aad.extend_from_slice(FORMAT.as_bytes());
        aad.extend_from_slice(&VERSION.to_be_bytes());
        aad.extend_from_slice(ALGORITHM.as_bytes());
        for n in [
            self.params.m_cost_kib,
            self.params.t_cost,
            self.params.p_cost,
        ] {
            aad.extend_from_slice(&n.to_be_bytes());
        }
        let salt_len = u32::try_from(self.salt.len()).expect("BUG: salts are at most 64 bytes");
        aad.extend_from_slice(&salt_len.to_be_bytes());
        aad.extend_from_slice(&self.salt);
        aad
    }
}

/// What identifies one version of the file on disk: a rename gives a new inode, a rewrite a new
/// size or time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileStamp([i64; 7]);

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        // Wrapping casts: the values are only compared for equality.
        FileStamp([
            meta.dev() as i64,
            meta.ino() as i64,
            meta.size() as i64,
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec(),
        ])
    }
}

/// A keystore as loaded: the keyring, which file version it came from, the keys that opened it.
pub(super) struct Loaded {
    pub(super) keyring: Keyring,
    pub(super) stamp: FileStamp,
    pub(super) keys: Arc<SealingKeys>,
}

fn damaged(path: &Path, why: impl std::fmt::Display) -> KmsError {
    KeystoreError::Damaged {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
    .into()
}

fn missing(path: &Path) -> KmsError {
    KeystoreError::Missing {
        path: path.to_path_buf(),
    }
    .into()
}

fn io_error(doing: &'static str, path: &Path, e: std::io::Error) -> KmsError {
    KeystoreError::io(doing, path, e).into()
}

/// The stamp of the file at `path` now.
pub(super) fn stamp(path: &Path) -> Result<FileStamp, KmsError> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(FileStamp::of(&meta)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(missing(path)),
        Err(e) => Err(io_error("read the keystore", path, e)),
    }
}

/// Reads and opens the keystore at `path`, reusing `cached` keys when its salt and parameters
/// are the same (so a reload does not run Argon2 again). All or nothing.
pub(super) fn read(
    path: &Path,
    passphrase: &SecretBytes,
    cached: Option<&Arc<SealingKeys>>,
) -> Result<Loaded, KmsError> {
    let mut file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => missing(path),
        _ => io_error("read the keystore", path, e),
    })?;
    let meta = file
        .metadata()
        .map_err(|e| io_error("read the keystore", path, e))?;
    if !meta.is_file() || meta.len() > MAX_FILE_LEN {
        return Err(damaged(path, "not a kmsfs keystore"));
    }
    let mut text = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    Read::by_ref(&mut file)
        .take(MAX_FILE_LEN)
        .read_to_end(&mut text)
        .map_err(|e| io_error("read the keystore", path, e))?;
    let envelope: Envelope =
        serde_json::from_slice(&text).map_err(|_| damaged(path, "not a kmsfs keystore"))?;
    if envelope.format != FORMAT || envelope.kdf.algorithm != ALGORITHM {
        return Err(damaged(path, "not a kmsfs keystore"));
    }
    if envelope.version != VERSION {
        return Err(damaged(
            path,
            format_args!("unsupported keystore version {}", envelope.version),
        ));
    }
    let decode = |field: &str| {
        BASE64
            .decode(field)
            .map_err(|_| damaged(path, "a field is not base64"))
    };
    let salt = decode(&envelope.kdf.salt)?;
    let check = decode(&envelope.check)?;
    let nonce: [u8; NONCE_LEN] = decode(&envelope.nonce)?
        .try_into()
        .map_err(|_| damaged(path, "the nonce has the wrong length"))?;
    let mut sealed = Zeroizing::new(decode(&envelope.sealed)?);
    let params = KdfParams {
        m_cost_kib: envelope.kdf.m_cost_kib,
        t_cost: envelope.kdf.t_cost,
        p_cost: envelope.kdf.p_cost,
    };
    let keys = match cached {
        Some(keys) if keys.params == params && keys.salt == salt => Arc::clone(keys),
        _ => Arc::new(
            SealingKeys::derive(passphrase, params, &salt)
                .ok_or_else(|| damaged(path, "key derivation parameters out of range"))?,
        ),
    };
    if !constant_time_eq(&check, &keys.check) {
        return Err(KeystoreError::WrongPassphrase {
            path: path.to_path_buf(),
        }
        .into());
    }
    let plain = keys
        .seal
        .open_in_place(nonce, &keys.aad(), &mut sealed)
        .map_err(|_| damaged(path, "authentication failed"))?;
    let keyring = Keyring::from_persisted(plain).map_err(|e| damaged(path, e))?;
    Ok(Loaded {
        keyring,
        stamp: FileStamp::of(&meta),
        keys,
    })
}

/// Seals `keyring` and replaces the keystore at `path` atomically and durably: a 0600 temporary
/// file in the same directory, fsync, rename, fsync of the directory. Returns the new stamp.
/// The caller holds the [`WriteLock`].
pub(super) fn write(
    path: &Path,
    keys: &SealingKeys,
    keyring: &Keyring,
) -> Result<FileStamp, KmsError> {
    let plain = keyring.to_persisted()?;
    let mut buf = Zeroizing::new(Vec::with_capacity(plain.len() + TAG_LEN));
    buf.extend_from_slice(plain.expose_secret());
    drop(plain);
    let nonce: [u8; NONCE_LEN] = random_array();
    let tag = keys.seal.seal_detached(nonce, &keys.aad(), &mut buf);
    buf.extend_from_slice(&tag);
    let envelope = Envelope {
        format: FORMAT.to_string(),
        version: VERSION,
        kdf: Kdf {
            algorithm: ALGORITHM.to_string(),
            m_cost_kib: keys.params.m_cost_kib,
            t_cost: keys.params.t_cost,
            p_cost: keys.params.p_cost,
            salt: BASE64.encode(&keys.salt),
        },
        check: BASE64.encode(keys.check),
        nonce: BASE64.encode(nonce),
        sealed: BASE64.encode(&*buf),
    };
    let mut text = serde_json::to_vec(&envelope).expect("BUG: the envelope always serializes");
    text.push(b'\n');
    seal::write_atomic(path, &text).map_err(|e| io_error("write the keystore", path, e))?;
    stamp(path)
}

/// Creates the directory that will hold `path` (mode 0700 for what it creates).
pub(super) fn create_parent(path: &Path) -> Result<(), KmsError> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = seal::parent_dir(path);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| io_error("create the directory", &dir, e))
}

/// An exclusive lock on `PATH.lock`, held by whoever rewrites the keystore; released on drop.
pub(super) struct WriteLock {
    _file: File,
}

impl WriteLock {
    /// Waits for the lock of the keystore at `path`.
    pub(super) fn acquire(path: &Path) -> Result<Self, KmsError> {
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock_path = PathBuf::from(lock_path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| io_error("open the lock file", &lock_path, e))?;
        file.lock().map_err(|e| io_error("lock", &lock_path, e))?;
        Ok(WriteLock { _file: file })
    }
}
