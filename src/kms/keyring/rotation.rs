//! Rotation rules of a keyring: manual rotation, the automatic rotation settings, the rotation
//! history, and the scheduler that runs due rotations and destructions.

use super::{
    DEFAULT_ROTATION_DAYS, KeyRecord, Keyring, MANUAL_ROTATION_LIMIT, ROTATION_DAYS,
    SchedulerReport, bad_request, days_after, refused,
};
use crate::kms::wire::{KeyStatus, RotationConfig, RotationEntry};
use crate::kms::{KmsError, Refusal};
use time::OffsetDateTime;
use uuid::Uuid;

impl Keyring {
    /// `rotate-kms-key`: a new material version now; `next-at` of automatic rotation is kept.
    ///
    /// # Errors
    /// "Key Not Found", "Key is Pending Deletion", "Not on a Replica", "Key is Disabled",
    /// "Not on Default", "Manual Rotation Limit".
    pub fn rotate_key(
        &mut self,
        id: Uuid,
        now: OffsetDateTime,
    ) -> Result<RotationConfig, KmsError> {
        let key = self.record_mut(id, now)?;
        key.refuse_pending()?;
        key.refuse_replica(Refusal::NotOnAReplica, "rotate it")?;
        key.refuse_disabled()?;
        key.refuse_default("rotated by hand; it rotates on the platform's schedule")?;
        if key.rotation.manual_count >= MANUAL_ROTATION_LIMIT {
            return Err(refused(
                Refusal::ManualRotationLimit,
                format!("key {id} already had {MANUAL_ROTATION_LIMIT} manual rotations"),
            ));
        }
        key.rotation.manual_count += 1;
        key.add_version(now, false);
        Ok(key.rotation.clone())
    }

    /// `enable-kms-key-rotation`: automatic rotation every `period_days` (default 365), the first
    /// one `period_days` from now. Already on with the same (or no) period: nothing changes.
    ///
    /// # Errors
    /// "Key Not Found", "Bad Request" (period outside 90–2560), "Not on Default",
    /// "Not on Replica", "Key is Pending Deletion", "Key is Disabled", "Conflict" (already on
    /// with another period).
    pub fn enable_rotation(
        &mut self,
        id: Uuid,
        period_days: Option<i64>,
        now: OffsetDateTime,
    ) -> Result<RotationConfig, KmsError> {
        let key = self.record_mut(id, now)?;
        let period = match period_days {
            Some(p) if !ROTATION_DAYS.contains(&p) => {
                return Err(bad_request(format!(
                    "`rotation-period` must be {} to {} days, not {p}",
                    ROTATION_DAYS.start(),
                    ROTATION_DAYS.end()
                )));
            }
            Some(p) => u32::try_from(p).expect("BUG: the range check bounds the period"),
            None => DEFAULT_ROTATION_DAYS,
        };
        check_rotation_change(key)?;
        if key.rotation.automatic {
            if period_days.is_some() && period != key.rotation.rotation_period {
                return Err(refused(
                    Refusal::Conflict,
                    format!(
                        "automatic rotation of key {id} is already on every {} days; disable it first to change the period",
                        key.rotation.rotation_period
                    ),
                ));
            }
            return Ok(key.rotation.clone());
        }
        key.rotation.automatic = true;
        key.rotation.rotation_period = period;
        key.rotation.next_at = days_after(now, i64::from(period));
        key.touch(now);
        Ok(key.rotation.clone())
    }

    /// `disable-kms-key-rotation`. Already off: nothing changes.
    ///
    /// # Errors
    /// "Key Not Found", "Not on Default", "Not on Replica", "Key is Pending Deletion",
    /// "Key is Disabled".
    pub fn disable_rotation(
        &mut self,
        id: Uuid,
        now: OffsetDateTime,
    ) -> Result<RotationConfig, KmsError> {
        let key = self.record_mut(id, now)?;
        check_rotation_change(key)?;
        if key.rotation.automatic {
            key.rotation.automatic = false;
            key.touch(now);
        }
        Ok(key.rotation.clone())
    }

    /// `list-kms-key-rotations`: every rotation (material versions 2 and up), oldest first.
    ///
    /// # Errors
    /// "Key Not Found".
    pub fn list_rotations(
        &self,
        id: Uuid,
        now: OffsetDateTime,
    ) -> Result<Vec<RotationEntry>, KmsError> {
        let key = self.record(id, now)?;
        Ok(key
            .versions
            .iter()
            .skip(1)
            .map(|v| RotationEntry {
                version: v.version,
                rotated_at: v.created_at,
                automatic: v.automatic,
            })
            .collect())
    }

    /// Runs the scheduler at `now`: destroys every pending-deletion key whose `delete-at` has
    /// passed (its material is zeroized as it drops), and rotates every enabled primary (the
    /// Default Organization Key included) whose automatic rotation is due.
    pub fn run_scheduler(&mut self, now: OffsetDateTime) -> SchedulerReport {
        let mut report = SchedulerReport::default();
        self.keys.retain(|id, key| {
            let destroyed = key.is_destroyed(now);
            if destroyed {
                report.destroyed.push(*id);
            }
            !destroyed
        });
        for key in self.keys.values_mut() {
            if key.seed.is_some() {
                if key.catch_up_derived(now) {
                    report.rotated.push(key.id);
                }
                continue;
            }
            let due = key.status == KeyStatus::Enabled
                && !key.replica
                && key.rotation.automatic
                && key.rotation.next_at <= now;
            if due {
                key.rotation.next_at = days_after(now, i64::from(key.rotation.rotation_period));
                key.add_version(now, true);
                report.rotated.push(key.id);
            }
        }
        report
    }
}

/// The checks `enable-rotation` and `disable-rotation` share.
fn check_rotation_change(key: &KeyRecord) -> Result<(), KmsError> {
    key.refuse_default("given other rotation settings; it rotates on the platform's schedule")?;
    key.refuse_replica(Refusal::NotOnReplica, "change rotation settings")?;
    key.refuse_pending()?;
    key.refuse_disabled()
}
