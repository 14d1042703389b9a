//! The KMS key lifecycle rules, as a pure state machine: a [`Keyring`] holds one zone's keys
//! with every material version, and each method applies one operation of the API at the instant
//! `now` it is given. No I/O, no clock, no HTTP: the embedded backend and the server wrap it.
//!
//! Order of checks in every operation: the key exists (a pending-deletion key whose `delete-at`
//! has passed counts as destroyed already), then the request's own values ("Bad Request"), then
//! the key's state, in the order the spec lists the titles.

mod crypto;
mod derived;
mod persist;
/// The format version of a keyring as stored (`kmsfs --version` shows it).
pub use persist::VERSION as KEYRING_VERSION;
mod replication;
mod rotation;
#[cfg(test)]
mod tests;

pub use replication::ReplicaLag;

use super::wire::{
    Applied, CreateKeyRequest, KeyStatus, KmsKey, Material, ReplicaState, Revision, RotationConfig,
};
use super::{KmsError, Refusal};
use crate::crypto::Key256;
use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use time::OffsetDateTime;
use uuid::Uuid;

/// The name of the Default Organization Key (reserved: no other key may take it).
pub const DEFAULT_KEY_NAME: &str = "Default Organization Key";
/// Days between automatic rotations unless `enable-rotation` says otherwise.
pub const DEFAULT_ROTATION_DAYS: u32 = 365;
/// The rotation periods `enable-rotation` accepts, in days.
pub const ROTATION_DAYS: RangeInclusive<i64> = 90..=2560;
/// The deletion delays `schedule-deletion` accepts, in days.
pub const DELETION_DAYS: RangeInclusive<i64> = 7..=30;
/// The deletion delay when the request names none, in days.
pub const DEFAULT_DELETION_DAYS: i64 = 30;
/// Manual rotations allowed per key.
pub const MANUAL_ROTATION_LIMIT: u32 = 10;
/// The largest plaintext `encrypt` accepts, in bytes.
pub const MAX_PLAINTEXT_LEN: usize = 4096;
/// The data key sizes `generate-data-key` accepts, in bytes.
pub const DATA_KEY_BYTES: RangeInclusive<u32> = 1..=1024;
/// The longest key name, in characters.
pub const MAX_NAME_CHARS: usize = 255;
/// The only key usage.
pub const USAGE: &str = "encrypt-decrypt";
/// The only key source.
pub const SOURCE: &str = "exoscale-kms";

/// One version of a key's material: 32 random bytes, kept until the key is destroyed.
#[derive(Clone, Debug)]
struct MaterialVersion {
    version: u32,
    created_at: OffsetDateTime,
    automatic: bool,
    key: Key256,
}

/// One KMS key as a keyring holds it: its metadata and every material version. Opaque outside
/// this module; it travels between keyrings only to install a replica.
#[derive(Clone, Debug)]
pub struct KeyRecord {
    id: Uuid,
    name: String,
    description: Option<String>,
    multi_zone: bool,
    origin_zone: String,
    status: KeyStatus,
    status_since: OffsetDateTime,
    created_at: OffsetDateTime,
    revision: Revision,
    rotation: RotationConfig,
    replicas: Vec<String>,
    replicas_status: Vec<ReplicaState>,
    delete_at: Option<OffsetDateTime>,
    replica: bool,
    default_key: bool,
    versions: Vec<MaterialVersion>,
    /// On a replica: the primary's revision seq this copy reflects (its applied watermark);
    /// 0 on a primary.
    primary_seq: u64,
    /// Of a derived Default Organization Key: the seed every material version comes from
    /// (see [`derived`]); `None` for random material.
    seed: Option<Key256>,
}

/// What one scheduler run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedulerReport {
    /// Keys that got a new material version.
    pub rotated: Vec<Uuid>,
    /// Keys destroyed for good (their `delete-at` had passed).
    pub destroyed: Vec<Uuid>,
}

impl SchedulerReport {
    /// True when the run changed nothing.
    pub fn is_empty(&self) -> bool {
        self.rotated.is_empty() && self.destroyed.is_empty()
    }
}

/// The keys of one zone and the rules of their lifecycle. `Debug` never prints material.
#[derive(Clone, Debug)]
pub struct Keyring {
    zone: String,
    keys: BTreeMap<Uuid, KeyRecord>,
}

fn refused(refusal: Refusal, detail: impl Into<String>) -> KmsError {
    KmsError::refused(refusal, detail)
}

fn bad_request(detail: impl Into<String>) -> KmsError {
    refused(Refusal::BadRequest, detail)
}

/// `now` plus `days`, saturating at the largest representable date.
fn days_after(now: OffsetDateTime, days: i64) -> OffsetDateTime {
    now.checked_add(time::Duration::days(days))
        .unwrap_or(time::PrimitiveDateTime::MAX.assume_utc())
}

impl KeyRecord {
    /// The key id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// True for a replica of a key whose primary lives in another zone.
    pub fn is_replica(&self) -> bool {
        self.replica
    }

    /// The zone of the key's primary.
    pub fn origin_zone(&self) -> &str {
        &self.origin_zone
    }

    fn newest(&self) -> &MaterialVersion {
        self.versions
            .last()
            .expect("BUG: every key has at least one material version")
    }

    fn view(&self) -> KmsKey {
        let newest = self.newest();
        KmsKey {
            id: self.id,
            name: self.name.clone(),
            description: self.description.clone(),
            usage: USAGE.to_string(),
            source: SOURCE.to_string(),
            status: self.status,
            status_since: self.status_since,
            material: Material {
                version: newest.version,
                created_at: newest.created_at,
                automatic: newest.automatic,
            },
            rotation: self.rotation.clone(),
            multi_zone: self.multi_zone,
            origin_zone: self.origin_zone.clone(),
            created_at: self.created_at,
            revision: self.revision.clone(),
            replicas: self.replicas.clone(),
            replicas_status: self.replicas_status.clone(),
            delete_at: self.delete_at,
        }
    }

    /// Records a change: every change bumps the revision.
    fn touch(&mut self, now: OffsetDateTime) {
        self.revision = Revision {
            seq: self.revision.seq.saturating_add(1),
            at: now,
        };
    }

    fn set_status(&mut self, status: KeyStatus, now: OffsetDateTime) {
        self.status = status;
        self.status_since = now;
        self.touch(now);
    }

    fn add_version(&mut self, now: OffsetDateTime, automatic: bool) {
        let version = self.newest().version + 1;
        let key = match &self.seed {
            Some(seed) => derived::material(seed, version),
            None => Key256::random(),
        };
        self.versions.push(MaterialVersion {
            version,
            created_at: now,
            automatic,
            key,
        });
        self.touch(now);
    }

    fn is_destroyed(&self, now: OffsetDateTime) -> bool {
        self.status == KeyStatus::PendingDeletion && self.delete_at.is_some_and(|at| at <= now)
    }

    fn refuse_pending(&self) -> Result<(), KmsError> {
        if self.status == KeyStatus::PendingDeletion {
            return Err(refused(
                Refusal::KeyPendingDeletion,
                format!(
                    "key {} is pending deletion; cancel the deletion first",
                    self.id
                ),
            ));
        }
        Ok(())
    }

    fn refuse_disabled(&self) -> Result<(), KmsError> {
        if self.status == KeyStatus::Disabled {
            return Err(refused(
                Refusal::KeyDisabled,
                format!("key {} is disabled; enable it first", self.id),
            ));
        }
        Ok(())
    }

    fn refuse_default(&self, what: &str) -> Result<(), KmsError> {
        if self.default_key {
            return Err(refused(
                Refusal::NotOnDefault,
                format!("the Default Organization Key cannot be {what}"),
            ));
        }
        Ok(())
    }

    fn refuse_replica(&self, refusal: Refusal, what: &str) -> Result<(), KmsError> {
        if self.replica {
            return Err(refused(
                refusal,
                format!(
                    "key {} is a replica; {what} on its primary in zone {}",
                    self.id, self.origin_zone
                ),
            ));
        }
        Ok(())
    }
}

impl Keyring {
    /// An empty keyring for `zone`.
    pub fn new(zone: &str) -> Self {
        Keyring {
            zone: zone.to_string(),
            keys: BTreeMap::new(),
        }
    }

    /// The zone this keyring serves.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// The Default Organization Key's id, if it was created.
    pub fn default_key_id(&self) -> Option<Uuid> {
        self.keys.values().find(|k| k.default_key).map(|k| k.id)
    }

    /// The Default Organization Key's id, created now if it does not exist yet.
    pub fn ensure_default_key(&mut self, now: OffsetDateTime) -> Uuid {
        if let Some(id) = self.default_key_id() {
            return id;
        }
        let record = self.new_record(DEFAULT_KEY_NAME, None, false, true, now);
        let id = record.id;
        self.keys.insert(id, record);
        id
    }

    fn new_record(
        &self,
        name: &str,
        description: Option<String>,
        multi_zone: bool,
        default_key: bool,
        now: OffsetDateTime,
    ) -> KeyRecord {
        KeyRecord {
            id: Uuid::new_v4(),
            name: name.to_string(),
            description,
            multi_zone,
            origin_zone: self.zone.clone(),
            status: KeyStatus::Enabled,
            status_since: now,
            created_at: now,
            revision: Revision { seq: 1, at: now },
            rotation: RotationConfig {
                manual_count: 0,
                automatic: true,
                rotation_period: DEFAULT_ROTATION_DAYS,
                next_at: days_after(now, i64::from(DEFAULT_ROTATION_DAYS)),
            },
            replicas: Vec::new(),
            replicas_status: Vec::new(),
            delete_at: None,
            replica: false,
            default_key,
            versions: vec![MaterialVersion {
                version: 1,
                created_at: now,
                automatic: false,
                key: Key256::random(),
            }],
            primary_seq: 0,
            seed: None,
        }
    }

    fn record(&self, id: Uuid, now: OffsetDateTime) -> Result<&KeyRecord, KmsError> {
        self.keys
            .get(&id)
            .filter(|k| !k.is_destroyed(now))
            .ok_or_else(|| refused(Refusal::KeyNotFound, format!("there is no key {id}")))
    }

    fn record_mut(&mut self, id: Uuid, now: OffsetDateTime) -> Result<&mut KeyRecord, KmsError> {
        self.record(id, now)?;
        Ok(self
            .keys
            .get_mut(&id)
            .expect("BUG: the key was found just above"))
    }

    fn name_taken(&self, name: &str, except: Option<Uuid>) -> bool {
        name == DEFAULT_KEY_NAME
            || self
                .keys
                .values()
                .any(|k| k.name == name && Some(k.id) != except)
    }

    /// `create-kms-key`: a new enabled key with material version 1 and automatic rotation every
    /// 365 days.
    ///
    /// # Errors
    /// "Bad Request" for an empty or too long name or a usage other than `encrypt-decrypt`;
    /// "Name Conflict" when the name is taken (the Default Organization Key's name included).
    pub fn create_key(
        &mut self,
        request: &CreateKeyRequest,
        now: OffsetDateTime,
    ) -> Result<KmsKey, KmsError> {
        let name = request.name.as_str();
        if name.trim().is_empty() {
            return Err(bad_request("the key name `name` is empty"));
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(bad_request(format!(
                "the key name `name` is longer than {MAX_NAME_CHARS} characters"
            )));
        }
        if let Some(usage) = request.usage.as_deref().filter(|u| *u != USAGE) {
            return Err(bad_request(format!(
                "`usage` must be `{USAGE}`, not `{usage}`"
            )));
        }
        if self.name_taken(name, None) {
            return Err(refused(
                Refusal::NameConflict,
                format!(
                    "a key named \"{name}\" already exists in zone {}",
                    self.zone
                ),
            ));
        }
        let record = self.new_record(
            name,
            request.description.clone(),
            request.multi_zone,
            false,
            now,
        );
        let view = record.view();
        self.keys.insert(record.id, record);
        Ok(view)
    }

    /// `list-kms-keys`: every key, oldest first.
    pub fn list_keys(&self, now: OffsetDateTime) -> Vec<KmsKey> {
        let mut keys: Vec<&KeyRecord> = self
            .keys
            .values()
            .filter(|k| !k.is_destroyed(now))
            .collect();
        keys.sort_by_key(|k| (k.created_at, k.id));
        keys.into_iter().map(KeyRecord::view).collect()
    }

    /// `get-kms-key`.
    ///
    /// # Errors
    /// "Key Not Found".
    pub fn get_key(&self, id: Uuid, now: OffsetDateTime) -> Result<KmsKey, KmsError> {
        self.record(id, now).map(KeyRecord::view)
    }

    /// `enable-kms-key`. A replica may be enabled on its own.
    ///
    /// # Errors
    /// "Key Not Found", "Key is Pending Deletion".
    pub fn enable_key(&mut self, id: Uuid, now: OffsetDateTime) -> Result<Applied, KmsError> {
        let key = self.record_mut(id, now)?;
        key.refuse_pending()?;
        if key.status == KeyStatus::Enabled {
            return Ok(Applied::AlreadyApplied);
        }
        key.set_status(KeyStatus::Enabled, now);
        Ok(Applied::Success)
    }

    /// `disable-kms-key`. A replica may be disabled on its own.
    ///
    /// # Errors
    /// "Key Not Found", "Key is Pending Deletion", "Not on Default".
    pub fn disable_key(&mut self, id: Uuid, now: OffsetDateTime) -> Result<Applied, KmsError> {
        let key = self.record_mut(id, now)?;
        key.refuse_pending()?;
        key.refuse_default("disabled")?;
        if key.status == KeyStatus::Disabled {
            return Ok(Applied::AlreadyApplied);
        }
        key.set_status(KeyStatus::Disabled, now);
        Ok(Applied::Success)
    }

    /// `schedule-kms-key-deletion`: the key becomes `pending-deletion` until `delete-at`, `days`
    /// (default 30) from now. Already pending: the existing `delete-at`, unchanged. A disabled
    /// key may be scheduled (the spec lists no "Key is Disabled" here).
    ///
    /// # Errors
    /// "Key Not Found", "Bad Request" (delay outside 7–30), "Not on Default", "Not on Replica".
    pub fn schedule_deletion(
        &mut self,
        id: Uuid,
        days: Option<i64>,
        now: OffsetDateTime,
    ) -> Result<OffsetDateTime, KmsError> {
        let key = self.record_mut(id, now)?;
        let days = days.unwrap_or(DEFAULT_DELETION_DAYS);
        if !DELETION_DAYS.contains(&days) {
            return Err(bad_request(format!(
                "`delay-days` must be {} to {} days, not {days}",
                DELETION_DAYS.start(),
                DELETION_DAYS.end()
            )));
        }
        key.refuse_default("deleted")?;
        key.refuse_replica(Refusal::NotOnReplica, "schedule its deletion")?;
        if let (KeyStatus::PendingDeletion, Some(at)) = (key.status, key.delete_at) {
            return Ok(at);
        }
        let at = days_after(now, days);
        key.delete_at = Some(at);
        key.set_status(KeyStatus::PendingDeletion, now);
        Ok(at)
    }

    /// `cancel-kms-key-deletion`: the key returns to `disabled`.
    ///
    /// # Errors
    /// "Key Not Found", "Not on Replica", "Not Pending Deletion".
    pub fn cancel_deletion(&mut self, id: Uuid, now: OffsetDateTime) -> Result<Applied, KmsError> {
        let key = self.record_mut(id, now)?;
        key.refuse_replica(Refusal::NotOnReplica, "cancel its deletion")?;
        if key.status != KeyStatus::PendingDeletion {
            return Err(refused(
                Refusal::NotPendingDeletion,
                format!("key {id} is {}, not pending deletion", key.status.as_str()),
            ));
        }
        key.delete_at = None;
        key.set_status(KeyStatus::Disabled, now);
        Ok(Applied::Success)
    }

    /// The raw material of `version` of key `id`, for tests that look for it where it must not be.
    #[cfg(test)]
    pub(crate) fn material_for_test(&self, id: Uuid, version: u32) -> Option<Key256> {
        let key = self.keys.get(&id)?;
        key.versions
            .iter()
            .find(|v| v.version == version)
            .map(|v| v.key.clone())
    }
}
