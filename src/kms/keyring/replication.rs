//! Replication rules of a keyring: registering a replica target on a multi-zone primary, and
//! holding replicas of other zones' primaries. Moving the records between zones is the caller's
//! job (the server's replication).

use super::{KeyRecord, Keyring, refused};
use crate::kms::wire::{Applied, ReplicaState};
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
        Ok(copy)
    }

    /// Installs a replica made by [`Keyring::replica_record`], or replaces the replica with the
    /// same id wholesale (its revision seq keeps increasing).
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
}
