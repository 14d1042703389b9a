//! A server's shared state for unit tests: a real data directory in a temporary directory with
//! one organization, its clock a [`ManualClock`] showing [`T0`] until a test moves it.

use super::audit::AuditLog;
use super::store::{Org, Store};
use super::{App, OrgCredentials, create_org};
use crate::kms::clock::ManualClock;
use crate::kms::keyring::Keyring;
use crate::kms::wire::CreateKeyRequest;
use crate::kms::{KmsError, KmsKey};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

/// Where the clock of a [`TestServer`] starts.
pub(crate) const T0: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

/// The zone of a [`TestServer`].
pub(crate) const ZONE: &str = "ch-test-1";

/// The state a server shares between its routes and tasks, over a data directory of its own.
pub(crate) struct TestServer {
    /// The data directory.
    pub(crate) dir: tempfile::TempDir,
    /// The organization and its credential.
    pub(crate) made: OrgCredentials,
    /// The clock of the store.
    pub(crate) clock: Arc<ManualClock>,
    /// What the routes share.
    pub(crate) app: Arc<App>,
    /// The organization, as loaded.
    pub(crate) org: Arc<Org>,
}

impl TestServer {
    /// A data directory with organization "acme", loaded at [`T0`].
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let made = create_org(dir.path(), "acme", None).expect("an organization");
        let clock = Arc::new(ManualClock::new(T0));
        let (app, org) = open(dir.path(), made.org, &clock);
        TestServer {
            dir,
            made,
            clock,
            app,
            org,
        }
    }

    /// The state as a server starting now on the same directory and clock loads it.
    pub(crate) fn restart(&self) -> (Arc<App>, Arc<Org>) {
        open(self.dir.path(), self.made.org, &self.clock)
    }

    /// A change of the organization's keyring at the clock's time, as a route makes it.
    pub(crate) fn change<T>(
        &self,
        mut op: impl FnMut(&mut Keyring, OffsetDateTime) -> Result<T, KmsError>,
    ) -> Result<T, KmsError> {
        self.app.store.mutate(&self.org, |ring, now| {
            op(ring, now).map(|value| (value, true))
        })
    }

    /// Creates key `name` and returns its id.
    pub(crate) fn create(&self, name: &str) -> Uuid {
        let request = CreateKeyRequest {
            name: name.into(),
            description: None,
            usage: None,
            multi_zone: false,
        };
        self.change(|ring, now| ring.create_key(&request, now))
            .expect("creates")
            .id
    }

    /// A key rotating automatically every `days` days, the first time `days` from now.
    pub(crate) fn create_rotating(&self, name: &str, days: i64) -> Uuid {
        let id = self.create(name);
        self.change(|ring, now| ring.disable_rotation(id, now))
            .expect("the 365-day default goes off");
        self.change(|ring, now| ring.enable_rotation(id, Some(days), now))
            .expect("rotation goes on");
        id
    }

    /// `get-kms-key` at the clock's time.
    pub(crate) fn get(&self, id: Uuid) -> Result<KmsKey, KmsError> {
        self.org.keyring().get_key(id, self.app.now())
    }

    /// The newest material version of key `id`.
    pub(crate) fn version(&self, id: Uuid) -> u32 {
        self.get(id).expect("the key exists").material.version
    }

    /// The (version, time, automatic) of every rotation of key `id`.
    pub(crate) fn rotations(&self, id: Uuid) -> Vec<(u32, OffsetDateTime, bool)> {
        self.org
            .keyring()
            .list_rotations(id, self.app.now())
            .expect("the key exists")
            .into_iter()
            .map(|r| (r.version, r.rotated_at, r.automatic))
            .collect()
    }

    /// The organization's sealed file.
    pub(crate) fn org_file(&self) -> PathBuf {
        super::org::org_path(self.dir.path(), self.org.id)
    }
}

/// The state of data directory `dir` as a server starting with `clock` loads it, and its
/// organization `org`.
fn open(dir: &Path, org: Uuid, clock: &Arc<ManualClock>) -> (Arc<App>, Arc<Org>) {
    let store = Store::open_with(dir, ZONE, None, None, clock.clone()).expect("the store opens");
    let audit = AuditLog::open(&dir.join("audit.log")).expect("the audit log opens");
    let app = Arc::new(App {
        store: Arc::new(store),
        audit,
        replication: None,
    });
    let org = app.store.org(org).expect("the organization is loaded");
    (app, org)
}
