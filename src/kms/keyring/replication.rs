//! Replication rules of a keyring: registering a replica target on a multi-zone primary, what
//! a primary still has to send (its replicas' watermarks and failures), and how a copy pushed
//! by the primary merges into the replica a zone holds. Moving the records between zones is the
//! caller's job (the server's replication).
//!
//! The merge rule: the primary dictates everything but the replica's own enabled/disabled
//! status. A pushed copy replaces name, description, rotation settings and every material
//! version; the local status stays, except that a primary pending deletion makes the replica
//! pending deletion (same `delete-at`), and a cancelled deletion brings back the primary's
//! status. A copy whose watermark (the primary's revision seq) is not newer than the one
//! applied is "already applied", so pushes may repeat and arrive out of order.

use super::{KeyRecord, Keyring, refused};
use crate::kms::wire::{Applied, KeyStatus, ReplicaFailure, ReplicaState};
use crate::kms::{KmsError, Refusal};
use time::OffsetDateTime;
use uuid::Uuid;

impl Keyring {
    /// `replicate-kms-key`, the rules only: registers `zone` as a replica target of a multi-zone
    /// primary. Copying the key there is the caller's job (see [`Keyring::replica_record`]).
    ///
    /// # Errors
    /// "Key Not Found", "Key is Pending Deletion", "Not on Default", "Not on Replica" (a replica
    /// cannot be replicated), "Not Multizone", "Invalid Argument" (own zone or unknown zone),
    /// "Conflict" (already replicated there).
    pub fn register_replica(
        &mut self,
        id: Uuid,
        zone: &str,
        known_zones: &[String],
        now: OffsetDateTime,
    ) -> Result<Applied, KmsError> {
        let own_zone = self.zone.clone();
        let key = self.record_mut(id, now)?;
        key.refuse_pending()?;
        key.refuse_default("replicated by hand; it is present in every zone")?;
        key.refuse_replica(Refusal::NotOnReplica, "replicate it")?;
        if !key.multi_zone {
            return Err(refused(
                Refusal::NotMultizone,
                format!("key {id} is not a multi-zone key"),
            ));
        }
        if zone == own_zone || !known_zones.iter().any(|z| z == zone) {
            return Err(refused(
                Refusal::InvalidArgument,
                format!("`zone` {zone:?} is not another known zone than {own_zone}"),
            ));
        }
        if key.replicas.iter().any(|z| z == zone) {
            return Err(refused(
                Refusal::Conflict,
                format!("key {id} is already replicated in zone {zone}"),
            ));
        }
        key.replicas.push(zone.to_string());
        key.replicas_status.push(ReplicaState {
            zone: zone.to_string(),
            last_applied_watermark: 0,
            last_failure: None,
        });
        key.touch(now);
        Ok(Applied::TargetRegistered)
    }

    /// A copy of primary key `id` to install as a replica in another zone's keyring: every
    /// material version, marked as a replica, without the primary's replica list.
    ///
    /// # Errors
    /// "Key Not Found", "Not on Replica", "Not Multizone".
    pub fn replica_record(&self, id: Uuid, now: OffsetDateTime) -> Result<KeyRecord, KmsError> {
        let key = self.record(id, now)?;
        key.refuse_replica(Refusal::NotOnReplica, "replicate it")?;
        if !key.multi_zone {
            return Err(refused(
                Refusal::NotMultizone,
                format!("key {id} is not a multi-zone key"),
            ));
        }
        let mut copy = key.clone();
        copy.replica = true;
        copy.replicas.clear();
        copy.replicas_status.clear();
        copy.primary_seq = key.revision.seq;
        Ok(copy)
    }

    /// Installs a replica made by [`Keyring::replica_record`] in another zone, or merges it into
    /// the replica with the same id (see the module's merge rule). Returns "already-applied"
    /// when the copy is not newer than what this replica holds.
    ///
    /// # Errors
    /// "Invalid Argument" for a record that is not a replica or whose origin is this zone;
    /// "Conflict" when a key that is not a replica has its id; "Name Conflict" when another key
    /// has its name.
    pub fn install_replica(
        &mut self,
        mut record: KeyRecord,
        now: OffsetDateTime,
    ) -> Result<Applied, KmsError> {
        if !record.replica || record.default_key || record.origin_zone == self.zone {
            return Err(refused(
                Refusal::InvalidArgument,
                format!("key {} is not a replica from another zone", record.id),
            ));
        }
        if let Some(existing) = self.keys.get(&record.id) {
            if !existing.replica {
                return Err(refused(
                    Refusal::Conflict,
                    format!("key {} exists here as a primary", record.id),
                ));
            }
            if record.primary_seq <= existing.primary_seq {
                return Ok(Applied::AlreadyApplied);
            }
            merge_status(&mut record, existing, now);
            record.revision.seq = record
                .revision
                .seq
                .max(existing.revision.seq.saturating_add(1));
            record.revision.at = now;
        }
        if self.name_taken(&record.name, Some(record.id)) {
            return Err(refused(
                Refusal::NameConflict,
                format!(
                    "a key named \"{}\" already exists in zone {}",
                    record.name, self.zone
                ),
            ));
        }
        self.keys.insert(record.id, record);
        Ok(Applied::Success)
    }

    /// The primary's revision seq that replica `id` reflects (0 when absent or a primary).
    pub fn replica_watermark(&self, id: Uuid) -> u64 {
        self.keys
            .get(&id)
            .filter(|k| k.replica)
            .map_or(0, |k| k.primary_seq)
    }

    /// Every (primary, replica zone) whose replica has not applied the primary's newest
    /// revision yet, at `now`.
    pub fn lagging_replicas(&self, now: OffsetDateTime) -> Vec<ReplicaLag> {
        self.keys
            .values()
            .filter(|k| !k.replica && !k.is_destroyed(now))
            .flat_map(|k| {
                k.replicas_status
                    .iter()
                    .filter(|r| r.last_applied_watermark < k.revision.seq)
                    .map(|r| ReplicaLag {
                        key: k.id,
                        zone: r.zone.clone(),
                        watermark: k.revision.seq,
                    })
            })
            .collect()
    }

    /// Records that the replica of primary `id` in `zone` applied `watermark`. Not a change of
    /// the key (its revision stays). Returns true when something changed.
    pub fn record_replica_applied(&mut self, id: Uuid, zone: &str, watermark: u64) -> bool {
        match self.replica_state_mut(id, zone) {
            Some(state) if state.last_applied_watermark < watermark => {
                state.last_applied_watermark = watermark;
                true
            }
            _ => false,
        }
    }

    /// Records a failed push to the replica of primary `id` in `zone` (kept after later
    /// successes: it is the *last* failure). Not a change of the key. Returns true when found.
    pub fn record_replica_failure(
        &mut self,
        id: Uuid,
        zone: &str,
        failure: ReplicaFailure,
    ) -> bool {
        match self.replica_state_mut(id, zone) {
            Some(state) => {
                state.last_failure = Some(failure);
                true
            }
            None => false,
        }
    }

    fn replica_state_mut(&mut self, id: Uuid, zone: &str) -> Option<&mut ReplicaState> {
        let key = self.keys.get_mut(&id).filter(|k| !k.replica)?;
        key.replicas_status.iter_mut().find(|r| r.zone == zone)
    }
}

/// A replica that lags behind its primary: what to push, where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaLag {
    /// The primary key.
    pub key: Uuid,
    /// The replica's zone.
    pub zone: String,
    /// The primary's revision seq, to be applied.
    pub watermark: u64,
}

/// The merge rule for the status of a pushed copy over the replica held (`record` is the copy).
fn merge_status(record: &mut KeyRecord, existing: &KeyRecord, now: OffsetDateTime) {
    match (record.status, existing.status) {
        (KeyStatus::PendingDeletion, KeyStatus::PendingDeletion) => {
            record.status_since = existing.status_since;
        }
        (KeyStatus::PendingDeletion, _) | (_, KeyStatus::PendingDeletion) => {
            record.status_since = now;
        }
        (_, local) => {
            record.status = local;
            record.status_since = existing.status_since;
            record.delete_at = None;
        }
    }
}
