//! The embedded KMS: the [`Keyring`] rules over a sealed keystore file, inside the kmsfs process.
//!
//! Every change is lock (`PATH.lock`), reload if the file changed, apply, write atomically,
//! unlock; so `kmsfs key ...` in one process and a mount in another never lose an update.
//! Reads and cryptography use the keyring in memory, reloaded first when the file's stamp
//! (device, inode, size, times) changed: a mount sees a rotation made elsewhere at its next
//! call. Argon2 runs once per open (again only if the salt changes).

mod keystore;
/// The keystore file's format version (`kmsfs --version` shows it).
pub use keystore::VERSION as KEYSTORE_VERSION;
#[cfg(test)]
mod tests;

/// An embedded KMS for unit tests elsewhere in the crate: a keystore in `dir` with a cheap KDF
/// (argon2 at 64 KiB, one pass), passphrase `pass`.
#[cfg(test)]
pub(crate) fn for_tests(dir: &Path) -> EmbeddedKms {
    let params = KdfParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };
    EmbeddedKms::create_with_params(
        &dir.join("keystore"),
        &SecretBytes::new(b"pass".to_vec()),
        "test",
        params,
        Arc::new(SystemClock),
    )
    .expect("a test keystore")
}

/// Makes key `name` in a test KMS and returns its id.
#[cfg(test)]
pub(crate) fn test_key(kms: &EmbeddedKms, name: &str) -> Uuid {
    kms.create_key(&super::wire::CreateKeyRequest {
        name: name.into(),
        description: None,
        usage: None,
        multi_zone: false,
    })
    .expect("a test key")
    .id
}

/// The clock moved to [`super::clock`]; these names stay for callers of this module.
pub use super::clock::{Clock, SystemClock};
pub use keystore::KdfParams;

use super::keyring::{Keyring, SchedulerReport};
use super::{
    Applied, DataKey, DataKeySpec, KeyService, KeystoreError, KmsError, KmsKey, RotationConfig,
    RotationEntry, wire,
};
use crate::crypto::SecretBytes;
use keystore::{Loaded, SealingKeys, WriteLock};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use time::OffsetDateTime;
use uuid::Uuid;

/// The embedded KMS over the keystore file at [`EmbeddedKms::path`]. `Send + Sync`: share it
/// between threads (and open it again in other processes) freely.
pub struct EmbeddedKms {
    path: PathBuf,
    passphrase: SecretBytes,
    clock: Arc<dyn Clock>,
    state: RwLock<Loaded>,
}

impl std::fmt::Debug for EmbeddedKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedKms")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl EmbeddedKms {
    /// Creates a keystore at `path` for `zone`, with the Default Organization Key, sealed under
    /// `passphrase` with the default Argon2id costs.
    ///
    /// # Errors
    /// [`KmsError::Keystore`] when a file exists at `path` or it cannot be written.
    pub fn create(path: &Path, passphrase: &SecretBytes, zone: &str) -> Result<Self, KmsError> {
        Self::create_with_params(
            path,
            passphrase,
            zone,
            KdfParams::default(),
            Arc::new(SystemClock),
        )
    }

    /// [`EmbeddedKms::create`] with chosen Argon2id costs and clock (tests use small costs).
    ///
    /// # Errors
    /// As [`EmbeddedKms::create`], and for an empty passphrase or costs out of range.
    pub fn create_with_params(
        path: &Path,
        passphrase: &SecretBytes,
        zone: &str,
        params: KdfParams,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, KmsError> {
        let path_buf = || path.to_path_buf();
        if passphrase.is_empty() {
            return Err(KeystoreError::EmptyPassphrase { path: path_buf() }.into());
        }
        let keys = SealingKeys::generate(passphrase, params)
            .ok_or_else(|| KeystoreError::Costs { path: path_buf() })?;
        keystore::create_parent(path)?;
        let _lock = WriteLock::acquire(path)?;
        if path.symlink_metadata().is_ok() {
            return Err(KeystoreError::Exists { path: path_buf() }.into());
        }
        let mut keyring = Keyring::new(zone);
        keyring.ensure_default_key(clock.now());
        let stamp = keystore::write(path, &keys, &keyring)?;
        Ok(EmbeddedKms {
            path: path.to_path_buf(),
            passphrase: passphrase.clone(),
            clock,
            state: RwLock::new(Loaded {
                keyring,
                stamp,
                keys: Arc::new(keys),
            }),
        })
    }

    /// Opens the keystore at `path` with `passphrase`.
    ///
    /// # Errors
    /// [`KmsError::Keystore`] with one sentence naming the path: no keystore there, wrong
    /// passphrase, damaged file, or the operating system's error.
    pub fn open(path: &Path, passphrase: &SecretBytes) -> Result<Self, KmsError> {
        let loaded = keystore::read(path, passphrase, None)?;
        Ok(EmbeddedKms {
            path: path.to_path_buf(),
            passphrase: passphrase.clone(),
            clock: Arc::new(SystemClock),
            state: RwLock::new(loaded),
        })
    }

    /// This KMS with another clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The keystore file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The Default Organization Key's id (every keystore made by [`EmbeddedKms::create`] has one).
    pub fn default_key_id(&self) -> Option<Uuid> {
        self.state().keyring.default_key_id()
    }

    /// Runs the keyring's scheduler now (due automatic rotations, due destructions) and saves the
    /// keystore if it changed anything.
    ///
    /// # Errors
    /// [`KmsError::Keystore`] when the keystore cannot be read or written.
    pub fn run_scheduler(&self) -> Result<SchedulerReport, KmsError> {
        self.change(|keyring, now| {
            let report = keyring.run_scheduler(now);
            let changed = !report.is_empty();
            Ok((report, changed))
        })
    }

    /// Seals the keystore under `new` instead of its passphrase (a fresh salt, the default
    /// Argon2id costs), atomically; the keys inside stay as they are, so nothing they wrap is
    /// touched. Returns the KMS opened with the new passphrase.
    ///
    /// # Errors
    /// [`KmsError::Keystore`] for an empty passphrase, or when the keystore cannot be read or
    /// written (then it is unchanged).
    pub fn change_passphrase(mut self, new: &SecretBytes) -> Result<Self, KmsError> {
        if new.is_empty() {
            return Err(KeystoreError::EmptyPassphrase { path: self.path }.into());
        }
        let keys = SealingKeys::generate(new, KdfParams::default()).ok_or_else(|| {
            KeystoreError::Costs {
                path: self.path.clone(),
            }
        })?;
        let _lock = WriteLock::acquire(&self.path)?;
        self.refresh()?;
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        state.stamp = keystore::write(&self.path, &keys, &state.keyring)?;
        state.keys = Arc::new(keys);
        self.passphrase = new.clone();
        Ok(self)
    }

    fn state(&self) -> RwLockReadGuard<'_, Loaded> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reloads the keystore if the file changed since it was last read or written.
    fn refresh(&self) -> Result<(), KmsError> {
        let current = keystore::stamp(&self.path)?;
        let keys = {
            let state = self.state();
            if state.stamp == current {
                return Ok(());
            }
            Arc::clone(&state.keys)
        };
        let loaded = keystore::read(&self.path, &self.passphrase, Some(&keys))?;
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = loaded;
        Ok(())
    }

    /// A read or a cryptographic operation on the current keyring.
    fn read<T>(
        &self,
        op: impl FnOnce(&Keyring, OffsetDateTime) -> Result<T, KmsError>,
    ) -> Result<T, KmsError> {
        self.refresh()?;
        op(&self.state().keyring, self.clock.now())
    }

    /// A change: under the write lock, on the newest keyring; saved when `op` says it changed
    /// something. Readers keep the old keyring until the new one is on disk.
    fn change<T>(
        &self,
        op: impl FnOnce(&mut Keyring, OffsetDateTime) -> Result<(T, bool), KmsError>,
    ) -> Result<T, KmsError> {
        let _lock = WriteLock::acquire(&self.path)?;
        self.refresh()?;
        let (mut keyring, keys) = {
            let state = self.state();
            (state.keyring.clone(), Arc::clone(&state.keys))
        };
        let (value, changed) = op(&mut keyring, self.clock.now())?;
        if changed {
            let stamp = keystore::write(&self.path, &keys, &keyring)?;
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            *state = Loaded {
                keyring,
                stamp,
                keys,
            };
        }
        Ok(value)
    }

    /// A change to key `id`, saved only when its revision moved (an operation that found its
    /// change already in place writes nothing).
    fn mutate_key<T>(
        &self,
        id: Uuid,
        op: impl FnOnce(&mut Keyring, OffsetDateTime) -> Result<T, KmsError>,
    ) -> Result<T, KmsError> {
        self.change(|keyring, now| {
            let revision = |k: &Keyring| k.get_key(id, now).map(|key| key.revision.seq).ok();
            let before = revision(keyring);
            let value = op(keyring, now)?;
            Ok((value, revision(keyring) != before))
        })
    }
}

impl KeyService for EmbeddedKms {
    fn housekeeping(&self) -> Result<Option<String>, KmsError> {
        let report = self.run_scheduler()?;
        Ok((!report.is_empty()).then(|| {
            format!(
                "key scheduler: rotated {:?}, destroyed {:?}",
                report.rotated, report.destroyed
            )
        }))
    }

    fn create_key(&self, request: &wire::CreateKeyRequest) -> Result<KmsKey, KmsError> {
        self.change(|k, now| k.create_key(request, now).map(|key| (key, true)))
    }

    fn list_keys(&self) -> Result<Vec<KmsKey>, KmsError> {
        self.read(|k, now| Ok(k.list_keys(now)))
    }

    fn get_key(&self, id: Uuid) -> Result<KmsKey, KmsError> {
        self.read(|k, now| k.get_key(id, now))
    }

    fn rotate_key(&self, id: Uuid) -> Result<RotationConfig, KmsError> {
        self.mutate_key(id, |k, now| k.rotate_key(id, now))
    }

    fn enable_key(&self, id: Uuid) -> Result<Applied, KmsError> {
        self.mutate_key(id, |k, now| k.enable_key(id, now))
    }

    fn disable_key(&self, id: Uuid) -> Result<Applied, KmsError> {
        self.mutate_key(id, |k, now| k.disable_key(id, now))
    }

    fn enable_rotation(
        &self,
        id: Uuid,
        period_days: Option<i64>,
    ) -> Result<RotationConfig, KmsError> {
        self.mutate_key(id, |k, now| k.enable_rotation(id, period_days, now))
    }

    fn disable_rotation(&self, id: Uuid) -> Result<RotationConfig, KmsError> {
        self.mutate_key(id, |k, now| k.disable_rotation(id, now))
    }

    fn schedule_deletion(
        &self,
        id: Uuid,
        delay_days: Option<i64>,
    ) -> Result<OffsetDateTime, KmsError> {
        self.mutate_key(id, |k, now| k.schedule_deletion(id, delay_days, now))
    }

    fn cancel_deletion(&self, id: Uuid) -> Result<Applied, KmsError> {
        self.mutate_key(id, |k, now| k.cancel_deletion(id, now))
    }

    fn list_rotations(&self, id: Uuid) -> Result<Vec<RotationEntry>, KmsError> {
        self.read(|k, now| k.list_rotations(id, now))
    }

    fn encrypt(
        &self,
        id: Uuid,
        plaintext: &[u8],
        context: Option<&[u8]>,
    ) -> Result<Vec<u8>, KmsError> {
        self.read(|k, now| k.encrypt(id, plaintext, context, now))
    }

    fn decrypt(
        &self,
        id: Uuid,
        ciphertext: &[u8],
        context: Option<&[u8]>,
    ) -> Result<SecretBytes, KmsError> {
        self.read(|k, now| k.decrypt(id, ciphertext, context, now))
    }

    fn generate_data_key(
        &self,
        id: Uuid,
        spec: DataKeySpec,
        context: Option<&[u8]>,
    ) -> Result<DataKey, KmsError> {
        self.read(|k, now| k.generate_data_key(id, spec, context, now))
    }

    fn re_encrypt(
        &self,
        source: Uuid,
        ciphertext: &[u8],
        source_context: Option<&[u8]>,
        destination: Uuid,
        destination_context: Option<&[u8]>,
    ) -> Result<Vec<u8>, KmsError> {
        self.read(|k, now| {
            k.re_encrypt(
                source,
                ciphertext,
                source_context,
                destination,
                destination_context,
                now,
            )
        })
    }
}
