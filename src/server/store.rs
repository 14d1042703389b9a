//! The server's state: every organization with its credentials and keyring, in memory, each
//! organization persisted as one sealed record (see [`super::org`]) in a [`Backend`]: a file
//! per organization in the data directory, or a key per organization in etcd.
//!
//! Concurrency: cryptography reads an organization's keyring under a read lock and never waits
//! for the store. A change takes the organization's writer mutex, applies the operation to a
//! copy of the keyring, writes the copy durably, and only then swaps it in (a short write lock)
//! and answers; so an acknowledged change is stored. On etcd the write compares the revision
//! the copy was made from: when another server changed the organization meanwhile, the change
//! is applied again to the newer state ([`MAX_TRIES`] times at most), so no update is lost.
//! Servers on etcd follow the other servers' changes through a watch ([`super::etcd_watch`]).

mod admin;
mod backend;

pub use admin::{create_org, create_org_at, import_org, import_org_at, migrate};
pub(crate) use backend::Backend;
pub(crate) use backend::Record;
use backend::{PutError, unavailable};

use super::ServerError;
use super::etcd::{EtcdTarget, STALE_AFTER};
use super::org::{self, OrgState};
use super::peer::{PeerSecret, ensure_default_key};
use super::root::RootKey;
use crate::crypto::SecretBytes;
use crate::kms::KmsError;
use crate::kms::clock::{Clock, SystemClock};
use crate::kms::keyring::Keyring;
use crate::kms::sign::Credentials;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use uuid::Uuid;

/// How often a change is applied again after other servers changed the organization first.
pub const MAX_TRIES: usize = 16;

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
    /// The revision of the stored record the keyring is at (etcd; 0 in the file store).
    revision: AtomicI64,
    writer: Mutex<()>,
}

impl Org {
    /// The keyring, for reads and cryptography (a read lock; hold it only briefly).
    pub(crate) fn keyring(&self) -> RwLockReadGuard<'_, Keyring> {
        self.keyring.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The organizations of a zone and their keys.
pub struct Store {
    backend: Backend,
    zone: String,
    root: RootKey,
    peer_secret: Option<Arc<PeerSecret>>,
    orgs: RwLock<HashMap<Uuid, Arc<Org>>>,
    by_api_key: RwLock<HashMap<String, (Arc<Org>, SecretBytes)>>,
    /// Monotonic, for the rescan rate limit only; key lifecycles take `clock`.
    last_scan: tokio::sync::Mutex<Option<Instant>>,
    clock: Arc<dyn Clock>,
    /// Whether this server runs the zone's once-per-zone work (always, on the file store).
    leader: AtomicBool,
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
        let (backend, root) = Backend::open_dir(dir, passphrase)?;
        Self::open_backend(backend, root, zone, peer_secret, clock)
    }

    /// [`Store::open_with`] on the etcd store `target` (the data directory `dir` keeps the
    /// audit log, and `root.key` when there is no passphrase). Blocking; needs the server's
    /// tokio runtime. The store is confirmed current as of its load; the watch
    /// ([`super::etcd_watch::follow`]) keeps it so.
    ///
    /// # Errors
    /// As [`Store::open`]; [`ServerError::Store`] when etcd cannot be reached.
    pub fn open_etcd(
        dir: &Path,
        target: &EtcdTarget,
        zone: &str,
        passphrase: Option<&SecretBytes>,
        peer_secret: Option<Arc<PeerSecret>>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ServerError> {
        let (backend, root) = Backend::open_etcd(dir, target, passphrase)?;
        let store = Self::open_backend(backend, root, zone, peer_secret, clock)?;
        store.leader.store(false, Ordering::Relaxed);
        Ok(store)
    }

    fn open_backend(
        backend: Backend,
        root: RootKey,
        zone: &str,
        peer_secret: Option<Arc<PeerSecret>>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ServerError> {
        let records = backend.list()?;
        if let Some(etcd) = backend.etcd() {
            etcd.confirm();
        }
        let store = Store {
            backend,
            zone: zone.to_string(),
            root,
            peer_secret,
            orgs: RwLock::new(HashMap::new()),
            by_api_key: RwLock::new(HashMap::new()),
            last_scan: tokio::sync::Mutex::new(None),
            clock,
            leader: AtomicBool::new(true),
        };
        for record in records {
            store.load(record)?;
        }
        Ok(store)
    }

    /// The persistence behind the store.
    pub(crate) fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Whether this server runs the zone's once-per-zone work now (the scheduler and the
    /// replication push): always on the file store, the elected server's on etcd.
    pub(crate) fn leads(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// Records whether this server was elected ([`super::etcd_leader`]).
    pub(crate) fn set_leader(&self, leads: bool) {
        self.leader.store(leads, Ordering::Relaxed);
    }

    /// Whether the keyrings in memory may be served: on etcd, only while the watch confirmed
    /// them current within [`STALE_AFTER`].
    ///
    /// # Errors
    /// A 503 [`KmsError::Unavailable`] when they are not confirmed.
    pub(crate) fn confirm_current(&self) -> Result<(), KmsError> {
        match self.backend.etcd() {
            Some(etcd) if etcd.unconfirmed_for() > STALE_AFTER => Err(unavailable(format!(
                "this server cannot confirm its keys are current: no word from its store for \
                 {} s",
                etcd.unconfirmed_for().as_secs()
            ))),
            _ => Ok(()),
        }
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

    /// Opens a record and checks that it belongs here: its organization and keyring (a new
    /// keyring for an organization this zone has not served yet), before the Default
    /// Organization Key is ensured.
    fn open_record(&self, record: &Record) -> Result<(OrgState, Keyring), ServerError> {
        let place = self.backend.place(record.id);
        let mut state = OrgState::open(&record.bytes, &self.root, &place)?;
        if state.id != record.id {
            return Err(ServerError::Inconsistent(format!(
                "the org record {} holds organization {}",
                place.display(),
                state.id
            )));
        }
        let keyring = match state.keyring.take() {
            Some(k) if k.zone() != self.zone => {
                return Err(ServerError::Inconsistent(format!(
                    "organization {} belongs to zone {}, not {}",
                    record.id,
                    k.zone(),
                    self.zone
                )));
            }
            Some(k) => k,
            None => Keyring::new(&self.zone),
        };
        Ok((state, keyring))
    }

    /// Loads an organization not in memory yet, giving it its Default Organization Key (stored
    /// before it is served; on etcd another server may store it first: then its record is
    /// loaded instead).
    fn load(&self, mut record: Record) -> Result<(), ServerError> {
        let id = record.id;
        for _ in 0..MAX_TRIES {
            let (state, mut keyring) = self.open_record(&record)?;
            let created = ensure_default_key(
                &mut keyring,
                id,
                state.created_at,
                self.peer_secret.as_deref(),
                self.now(),
            );
            let org = Org {
                id,
                name: state.name,
                credentials: state.credentials,
                created_at: state.created_at,
                keyring: RwLock::new(keyring),
                revision: AtomicI64::new(record.revision),
                writer: Mutex::new(()),
            };
            if created {
                let bytes = self.seal(&org, &org.keyring())?;
                match self.backend.put(id, &bytes, record.revision) {
                    Ok(revision) => org.revision.store(revision, Ordering::Relaxed),
                    Err(PutError::Lost(Some(now))) => {
                        record = now;
                        continue;
                    }
                    Err(PutError::Lost(None)) => {
                        return Err(ServerError::Inconsistent(format!(
                            "organization {id} disappeared while loading"
                        )));
                    }
                    Err(PutError::Failed(e)) => return Err(e.into()),
                }
            }
            self.insert(Arc::new(org));
            return Ok(());
        }
        Err(ServerError::Store(format!(
            "organization {id} changed {MAX_TRIES} times while loading"
        )))
    }

    /// Puts a loaded organization in memory, unless a concurrent load (the watch and a rescan)
    /// put it there first: then the one in memory stays, its credentials untouched, and gets
    /// this record's keyring if it is newer.
    fn insert(&self, org: Arc<Org>) {
        let mut orgs = self.orgs.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = orgs.get(&org.id).cloned() {
            drop(orgs);
            let revision = org.revision.load(Ordering::Relaxed);
            if revision > existing.revision.load(Ordering::Relaxed) {
                let keyring = org.keyring().clone();
                install(&existing, keyring, revision);
            }
            return;
        }
        let mut by_key = self
            .by_api_key
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for c in &org.credentials {
            by_key.insert(c.key.clone(), (Arc::clone(&org), c.secret.clone()));
        }
        orgs.insert(org.id, org);
    }

    /// Takes a record another server stored (from the watch, or a lost compare-and-swap): a new
    /// organization is loaded; a known one gets the record's keyring if it is newer than the
    /// one in memory.
    ///
    /// # Errors
    /// When the record does not open or belongs elsewhere (the keyring in memory stays).
    pub(crate) fn apply(&self, record: Record) -> Result<(), ServerError> {
        let Some(org) = self.org(record.id) else {
            return self.load(record);
        };
        if record.revision <= org.revision.load(Ordering::Relaxed) {
            return Ok(());
        }
        let revision = record.revision;
        let (_, keyring) = self.open_record(&record)?;
        install(&org, keyring, revision);
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

    /// Loads organizations that appeared since startup; a bad record is logged and skipped.
    fn rescan(&self) {
        let records = match self.backend.list() {
            Ok(records) => records,
            Err(e) => {
                tracing::error!("{e}");
                return;
            }
        };
        for record in records {
            let id = record.id;
            let known = self
                .orgs
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .contains_key(&id);
            if !known {
                match self.load(record) {
                    Ok(()) => tracing::info!(org = %id, "loaded a new organization"),
                    Err(e) => tracing::error!("{e}"),
                }
            }
        }
    }

    /// `org`'s record with `keyring`, sealed under the root key.
    fn seal(&self, org: &Org, keyring: &Keyring) -> Result<Vec<u8>, KmsError> {
        org::seal_org_file(
            &self.root,
            org.id,
            &org.name,
            &org.credentials,
            org.created_at,
            Some(keyring),
        )
    }

    /// Applies a change to `org`'s keyring: `change` gets a copy and says whether it changed
    /// anything; a changed copy is stored durably, then installed. When another server stored
    /// a newer state first (etcd), that state is installed and `change` runs again on it; a
    /// refusal or a no-op is confirmed against the stored revision the same way (one etcd read),
    /// so no answer rests on a stale copy.
    /// Blocking (disk or etcd).
    ///
    /// # Errors
    /// The operation's own error; [`KmsError::Keystore`] when the disk write failed, a 503
    /// [`KmsError::Unavailable`] when etcd did not take it (then nothing changed).
    pub(crate) fn mutate<T>(
        &self,
        org: &Org,
        mut change: impl FnMut(&mut Keyring, OffsetDateTime) -> Result<(T, bool), KmsError>,
    ) -> Result<T, KmsError> {
        let _writer = org.writer.lock().unwrap_or_else(PoisonError::into_inner);
        for _ in 0..MAX_TRIES {
            let (mut next, revision) = {
                let ring = org.keyring();
                (ring.clone(), org.revision.load(Ordering::Relaxed))
            };
            let outcome = change(&mut next, self.now());
            let Ok((value, true)) = outcome else {
                // Nothing to write: a refusal or a no-op, judged on the state in memory. On
                // etcd, judge again when another server changed the organization meanwhile.
                if let Some(newer) = self.backend.newer(org.id, revision)? {
                    self.apply(newer)
                        .map_err(|e| unavailable(format!("the stored organization: {e}")))?;
                    continue;
                }
                return outcome.map(|(value, _)| value);
            };
            let bytes = self.seal(org, &next)?;
            match self.backend.put(org.id, &bytes, revision) {
                Ok(revision) => {
                    install(org, next, revision);
                    return Ok(value);
                }
                Err(PutError::Lost(Some(now))) => {
                    tracing::debug!(org = %org.id, "another server changed the organization first");
                    self.apply(now)
                        .map_err(|e| unavailable(format!("the stored organization: {e}")))?;
                }
                Err(PutError::Lost(None)) => {
                    return Err(unavailable(format!(
                        "organization {} is no longer stored",
                        org.id
                    )));
                }
                Err(PutError::Failed(e)) => return Err(e),
            }
        }
        Err(unavailable(format!(
            "organization {} changed {MAX_TRIES} times during this change; try again",
            org.id
        )))
    }
}

/// Starts what a server on etcd runs beside its routes: the watch that follows the other
/// servers' changes and the election of the zone's leader (`me` names this server). None on
/// the file store.
pub(crate) fn spawn_etcd_tasks(store: &Arc<Store>, me: &str) -> Vec<tokio::task::JoinHandle<()>> {
    let Some(etcd) = store.backend().etcd() else {
        return Vec::new();
    };
    vec![
        tokio::spawn(super::etcd_watch::follow(
            Arc::clone(store),
            Arc::clone(etcd),
        )),
        tokio::spawn(super::etcd_leader::run(
            Arc::clone(store),
            Arc::clone(etcd),
            me.to_string(),
        )),
    ]
}

/// Installs `keyring` at `revision` in `org`, unless a newer one is there already (the watch
/// may bring a server's own change before the change returns). The file store's revision is
/// always 0: every keyring it gets is installed.
fn install(org: &Org, keyring: Keyring, revision: i64) {
    let mut ring = org.keyring.write().unwrap_or_else(PoisonError::into_inner);
    let current = org.revision.load(Ordering::Relaxed);
    if revision == 0 || revision > current {
        *ring = keyring;
        org.revision.store(revision, Ordering::Relaxed);
    }
}
