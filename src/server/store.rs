//! The server's state: every organization with its credentials and keyring, in memory, each
//! organization persisted in its own sealed file (see [`super::org`]).
//!
//! Concurrency: cryptography reads an organization's keyring under a read lock and never waits
//! for a disk write. A change takes the organization's writer mutex, applies the operation to a
//! copy of the keyring, writes the copy durably, and only then swaps it in (a short write lock)
//! and answers; so concurrent changes of one organization never lose an update, and an
//! acknowledged change is on disk.

use super::ServerError;
use super::org::{self, OrgCredentials, OrgState};
use super::peer::{PeerSecret, ensure_default_key};
use super::root::RootKey;
use crate::crypto::SecretBytes;
use crate::kms::clock::{Clock, SystemClock};
use crate::kms::keyring::Keyring;
use crate::kms::seal;
use crate::kms::sign::Credentials;
use crate::kms::{KeystoreError, KmsError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use uuid::Uuid;

/// The least time between two rescans of the org directory for an unknown credential.
const RESCAN_INTERVAL: Duration = Duration::from_millis(100);

/// One organization in memory.
pub(crate) struct Org {
    /// The organization id.
    pub(crate) id: Uuid,
    name: String,
    credentials: Vec<Credentials>,
    created_at: Option<OffsetDateTime>,
    keyring: RwLock<Keyring>,
    writer: Mutex<()>,
}

impl Org {
    /// The keyring, for reads and cryptography (a read lock; hold it only briefly).
    pub(crate) fn keyring(&self) -> RwLockReadGuard<'_, Keyring> {
        self.keyring.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The organizations of a data directory and their keys.
pub struct Store {
    dir: PathBuf,
    zone: String,
    root: RootKey,
    peer_secret: Option<Arc<PeerSecret>>,
    orgs: RwLock<HashMap<Uuid, Arc<Org>>>,
    by_api_key: RwLock<HashMap<String, (Arc<Org>, SecretBytes)>>,
    /// Monotonic, for the rescan rate limit only; key lifecycles take `clock`.
    last_scan: tokio::sync::Mutex<Option<Instant>>,
    clock: Arc<dyn Clock>,
}

/// Creates the data directory (0700) and its `orgs/` directory.
fn create_dirs(dir: &Path) -> Result<(), ServerError> {
    use std::os::unix::fs::DirBuilderExt;
    let orgs = org::orgs_dir(dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&orgs)
        .map_err(|e| ServerError::io("create", &orgs, e))
}

/// Every org file in `dir`, by id.
fn org_files(dir: &Path) -> Result<Vec<(Uuid, PathBuf)>, ServerError> {
    let orgs = org::orgs_dir(dir);
    let entries = std::fs::read_dir(&orgs).map_err(|e| ServerError::io("list", &orgs, e))?;
    Ok(entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let id = org::org_of_file_name(&e.file_name().to_string_lossy())?;
            Some((id, e.path()))
        })
        .collect())
}

/// Creates a new organization with one credential in data directory `dir` (safe while a
/// server runs there: it only adds a file). Returns what to hand to the organization.
///
/// # Errors
/// [`ServerError`] when the directory or its root key cannot be used.
pub fn create_org(
    dir: &Path,
    name: &str,
    passphrase: Option<&SecretBytes>,
) -> Result<OrgCredentials, ServerError> {
    if name.trim().is_empty() {
        return Err(ServerError::Invalid(
            "the organization name is empty".into(),
        ));
    }
    // An offline command (no server, no store): the system's clock.
    let made = OrgCredentials::generate(name, SystemClock.now());
    import_org(dir, &made, passphrase)?;
    Ok(made)
}

/// Installs an organization and credential made by [`create_org`] (in another zone's data
/// directory, say). Installing the same one twice is fine.
///
/// # Errors
/// [`ServerError::Invalid`] when the organization exists with other credentials or the API key
/// belongs to another organization; [`ServerError::Io`] for disk trouble.
pub fn import_org(
    dir: &Path,
    org: &OrgCredentials,
    passphrase: Option<&SecretBytes>,
) -> Result<(), ServerError> {
    create_dirs(dir)?;
    let root = RootKey::open_or_create(dir, passphrase)?;
    for (id, path) in org_files(dir)? {
        let existing = OrgState::read(&path, &root)?;
        let same_key = existing
            .credentials
            .iter()
            .find(|c| c.key == org.credentials.key);
        match (id == org.org, same_key) {
            (true, Some(c))
                if c.secret.expose_secret() == org.credentials.secret.expose_secret() =>
            {
                return Ok(());
            }
            (true, _) => {
                return Err(ServerError::Invalid(format!(
                    "organization {id} exists already with other credentials"
                )));
            }
            (false, Some(_)) => {
                return Err(ServerError::Invalid(format!(
                    "API key {} belongs to organization {id}",
                    org.credentials.key
                )));
            }
            (false, None) => {}
        }
    }
    let path = org::org_path(dir, org.org);
    let bytes = org::seal_org_file(
        &root,
        org.org,
        &org.name,
        std::slice::from_ref(&org.credentials),
        org.created_at,
        None,
    )?;
    match seal::write_new(&path, &bytes) {
        Ok(true) => Ok(()),
        Ok(false) => Err(ServerError::Invalid(format!(
            "organization {} was created at the same moment",
            org.org
        ))),
        Err(e) => Err(ServerError::io("write", &path, e)),
    }
}

impl Store {
    /// Opens (creating when needed) the data directory `dir` for `zone` and loads every
    /// organization, giving each its Default Organization Key.
    ///
    /// # Errors
    /// [`ServerError::Damaged`] or [`ServerError::Io`] for a damaged or unreadable file,
    /// [`ServerError::WrongPassphrase`], [`ServerError::Inconsistent`] for an organization that
    /// belongs to another zone.
    pub fn open(
        dir: &Path,
        zone: &str,
        passphrase: Option<&SecretBytes>,
    ) -> Result<Self, ServerError> {
        Self::open_with(dir, zone, passphrase, None, Arc::new(SystemClock))
    }

    /// [`Store::open`] with the clock every key lifecycle takes `now` from, and for a zone of a
    /// multi-zone deployment: Default Organization Keys are derived from `peer_secret`.
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_with(
        dir: &Path,
        zone: &str,
        passphrase: Option<&SecretBytes>,
        peer_secret: Option<Arc<PeerSecret>>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ServerError> {
        create_dirs(dir)?;
        let root = RootKey::open_or_create(dir, passphrase)?;
        let store = Store {
            dir: dir.to_path_buf(),
            zone: zone.to_string(),
            root,
            peer_secret,
            orgs: RwLock::new(HashMap::new()),
            by_api_key: RwLock::new(HashMap::new()),
            last_scan: tokio::sync::Mutex::new(None),
            clock,
        };
        for (id, path) in org_files(dir)? {
            store.load(id, &path)?;
        }
        Ok(store)
    }

    /// The zone this server serves.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// The current time of the store's clock: the `now` of every key lifecycle rule, signature
    /// expiry check and audit line.
    pub(crate) fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// Every organization loaded.
    pub(crate) fn orgs(&self) -> Vec<Arc<Org>> {
        let orgs = self.orgs.read().unwrap_or_else(PoisonError::into_inner);
        orgs.values().cloned().collect()
    }

    fn load(&self, id: Uuid, path: &Path) -> Result<(), ServerError> {
        let state = OrgState::read(path, &self.root)?;
        if state.id != id {
            return Err(ServerError::Inconsistent(format!(
                "the org file {} holds organization {}",
                path.display(),
                state.id
            )));
        }
        let mut keyring = match state.keyring {
            Some(k) if k.zone() != self.zone => {
                return Err(ServerError::Inconsistent(format!(
                    "organization {id} belongs to zone {}, not {}",
                    k.zone(),
                    self.zone
                )));
            }
            Some(k) => k,
            None => Keyring::new(&self.zone),
        };
        let created = ensure_default_key(
            &mut keyring,
            id,
            state.created_at,
            self.peer_secret.as_deref(),
            self.now(),
        );
        let org = Arc::new(Org {
            id,
            name: state.name,
            credentials: state.credentials,
            created_at: state.created_at,
            keyring: RwLock::new(keyring),
            writer: Mutex::new(()),
        });
        if created {
            let ring = org.keyring();
            self.persist(&org, &ring)?;
        }
        let mut by_key = self
            .by_api_key
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for c in &org.credentials {
            by_key.insert(c.key.clone(), (Arc::clone(&org), c.secret.clone()));
        }
        drop(by_key);
        self.orgs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, org);
        Ok(())
    }

    /// The organization and secret of `api_key`, from memory.
    pub(crate) fn credential(&self, api_key: &str) -> Option<(Arc<Org>, SecretBytes)> {
        let by_key = self
            .by_api_key
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        by_key.get(api_key).cloned()
    }

    /// The organization `id`, from memory.
    pub(crate) fn org(&self, id: Uuid) -> Option<Arc<Org>> {
        let orgs = self.orgs.read().unwrap_or_else(PoisonError::into_inner);
        orgs.get(&id).cloned()
    }

    /// [`Store::org`], after loading organizations created or imported since the last look.
    pub(crate) async fn org_reloading(self: &Arc<Self>, id: Uuid) -> Option<Arc<Org>> {
        self.find_reloading(|store| store.org(id)).await
    }

    /// [`Store::credential`], after loading organizations created since the last look (by
    /// `kmsfs kms org create` while the server runs).
    pub(crate) async fn credential_reloading(
        self: &Arc<Self>,
        api_key: &str,
    ) -> Option<(Arc<Org>, SecretBytes)> {
        self.find_reloading(|store| store.credential(api_key)).await
    }

    /// `find`, and when it finds nothing, `find` again after a rescan of the org directory.
    /// Rescans at most once per 100 ms; callers that arrive while one runs share its result.
    async fn find_reloading<T>(self: &Arc<Self>, find: impl Fn(&Self) -> Option<T>) -> Option<T> {
        if let Some(found) = find(self) {
            return Some(found);
        }
        let arrived = Instant::now();
        let mut last = self.last_scan.lock().await;
        if last.is_some_and(|at| at >= arrived) {
            return find(self);
        }
        if let Some(at) = *last {
            tokio::time::sleep_until((at + RESCAN_INTERVAL).into()).await;
        }
        *last = Some(Instant::now());
        let store = Arc::clone(self);
        let _ = tokio::task::spawn_blocking(move || store.rescan()).await;
        drop(last);
        find(self)
    }

    /// Loads org files that appeared since startup; a bad file is logged and skipped.
    fn rescan(&self) {
        let files = match org_files(&self.dir) {
            Ok(files) => files,
            Err(e) => {
                tracing::error!("{e}");
                return;
            }
        };
        for (id, path) in files {
            let known = self
                .orgs
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .contains_key(&id);
            if !known {
                match self.load(id, &path) {
                    Ok(()) => tracing::info!(org = %id, "loaded a new organization"),
                    Err(e) => tracing::error!("{e}"),
                }
            }
        }
    }

    fn persist(&self, org: &Org, keyring: &Keyring) -> Result<(), KmsError> {
        let path = org::org_path(&self.dir, org.id);
        let bytes = org::seal_org_file(
            &self.root,
            org.id,
            &org.name,
            &org.credentials,
            org.created_at,
            Some(keyring),
        )?;
        seal::write_atomic(&path, &bytes).map_err(|e| KeystoreError::io("write", path, e).into())
    }

    /// Applies a change to `org`'s keyring: `change` gets a copy and says whether it changed
    /// anything; a changed copy is written durably, then installed. Blocking (disk I/O).
    ///
    /// # Errors
    /// The operation's own error, or [`KmsError::Keystore`] when the write failed (then
    /// nothing changed).
    pub(crate) fn mutate<T>(
        &self,
        org: &Org,
        change: impl FnOnce(&mut Keyring, OffsetDateTime) -> Result<(T, bool), KmsError>,
    ) -> Result<T, KmsError> {
        let _writer = org.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = org.keyring().clone();
        let (value, changed) = change(&mut next, self.now())?;
        if changed {
            self.persist(org, &next)?;
            *org.keyring.write().unwrap_or_else(PoisonError::into_inner) = next;
        }
        Ok(value)
    }
}
