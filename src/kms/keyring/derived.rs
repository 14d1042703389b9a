//! The derived Default Organization Key: when the zones of a deployment share a secret, every
//! zone computes the same Default Organization Key on its own, with no message between them.
//!
//! The caller (the server) derives, from the shared secret and the organization id, a key id
//! and a 32-byte *seed*, and picks a start time every zone agrees on (the organization's
//! creation time). From these the keyring makes:
//!
//! - material version `n` = HKDF-SHA256(ikm = seed, salt = "", info =
//!   `"kmsfs-default-key-material-v1" || u32 big-endian n`);
//! - version 1 created at the start time; version `n + 1` created exactly one rotation period
//!   (365 days) after version `n`, whenever the scheduler of a zone notices it is due, so that
//!   `created-at` and `next-at` are the same in every zone too.

use super::{DEFAULT_KEY_NAME, KeyRecord, Keyring, MaterialVersion, days_after};
use crate::crypto::{Key256, hkdf_sha256};
use crate::kms::wire::KeyStatus;
use time::OffsetDateTime;
use uuid::Uuid;

/// The HKDF info prefix of a derived material version.
pub const MATERIAL_INFO: &[u8] = b"kmsfs-default-key-material-v1";

/// Rotations one scheduler run makes at most per derived key (a zone down for decades
/// catches up over several runs).
const MAX_CATCH_UP: usize = 64;

/// Material version `version` of a derived key with `seed`.
pub(super) fn material(seed: &Key256, version: u32) -> Key256 {
    let info = [MATERIAL_INFO, &version.to_be_bytes()].concat();
    hkdf_sha256(seed.expose_secret(), b"", &info)
}

impl KeyRecord {
    /// Makes every rotation of a derived key that is due at `now`, each at its scheduled time.
    /// Returns true when it added a version.
    pub(super) fn catch_up_derived(&mut self, now: OffsetDateTime) -> bool {
        let mut rotated = false;
        for _ in 0..MAX_CATCH_UP {
            let due = self.seed.is_some()
                && self.status == KeyStatus::Enabled
                && self.rotation.automatic
                && self.rotation.next_at <= now;
            if !due {
                break;
            }
            let at = self.rotation.next_at;
            self.rotation.next_at = days_after(at, i64::from(self.rotation.rotation_period));
            self.add_version(at, true);
            self.revision.at = now;
            rotated = true;
        }
        rotated
    }
}

impl Keyring {
    /// The Default Organization Key's id; when there is none yet, creates it derived from `id`
    /// and `seed` with its schedule starting at `start` (the same in every zone), with every
    /// rotation due at `now` already made. A default key that exists (random, made before the
    /// zones shared a secret) is kept as it is: its material protects data.
    pub fn ensure_derived_default_key(
        &mut self,
        id: Uuid,
        seed: Key256,
        start: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Uuid {
        if let Some(existing) = self.default_key_id() {
            return existing;
        }
        if self.keys.contains_key(&id) {
            return self.ensure_default_key(now);
        }
        let mut record = self.new_record(DEFAULT_KEY_NAME, None, false, true, start);
        record.id = id;
        record.versions = vec![MaterialVersion {
            version: 1,
            created_at: start,
            automatic: false,
            key: material(&seed, 1),
        }];
        record.seed = Some(seed);
        record.revision.at = now;
        record.status_since = start;
        record.catch_up_derived(now);
        self.keys.insert(id, record);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const START: OffsetDateTime = datetime!(2024-03-01 12:00 UTC);

    fn derived(zone: &str, now: OffsetDateTime) -> (Keyring, Uuid) {
        let mut ring = Keyring::new(zone);
        let id = Uuid::from_u128(7);
        let seed = Key256::from_slice(&[9u8; 32]).expect("32 bytes");
        assert_eq!(ring.ensure_derived_default_key(id, seed, START, now), id);
        (ring, id)
    }

    #[test]
    fn two_zones_derive_the_same_key_and_decrypt_each_other() {
        let now = START + time::Duration::days(800);
        let (a, id) = derived("ch-gva-2", now);
        let (b, _) = derived("de-fra-1", now - time::Duration::days(20));
        let key_a = a.get_key(id, now).expect("present");
        let key_b = b.get_key(id, now).expect("present");
        assert_eq!(key_a.material.version, 3, "two periods have passed");
        assert_eq!(key_a.material, key_b.material);
        assert_eq!(key_a.rotation.next_at, key_b.rotation.next_at);
        let blob = a.encrypt(id, b"same", None, now).expect("encrypts");
        let plain = b.decrypt(id, &blob, None, now).expect("decrypts");
        assert_eq!(plain.expose_secret(), b"same");
    }

    #[test]
    fn the_scheduler_rotates_at_the_scheduled_time_not_when_it_runs() {
        let (mut ring, id) = derived("ch-gva-2", START);
        assert_eq!(
            ring.get_key(id, START).expect("present").material.version,
            1
        );
        let late = START + time::Duration::days(400);
        assert_eq!(ring.run_scheduler(late).rotated, vec![id]);
        let key = ring.get_key(id, late).expect("present");
        assert_eq!(key.material.version, 2);
        assert_eq!(key.material.created_at, START + time::Duration::days(365));
        assert_eq!(key.rotation.next_at, START + time::Duration::days(730));
        let (other, _) = derived("de-fra-1", late);
        let blob = ring.encrypt(id, b"v2", None, late).expect("encrypts");
        assert!(other.decrypt(id, &blob, None, late).is_ok());
    }

    #[test]
    fn an_existing_default_key_is_kept_and_other_seeds_give_other_material() {
        let mut ring = Keyring::new("ch-gva-2");
        let random = ring.ensure_default_key(START);
        let seed = Key256::from_slice(&[9u8; 32]).expect("32 bytes");
        let got = ring.ensure_derived_default_key(Uuid::from_u128(7), seed, START, START);
        assert_eq!(got, random);
        let one = Key256::from_slice(&[1u8; 32]).expect("32 bytes");
        let two = Key256::from_slice(&[2u8; 32]).expect("32 bytes");
        assert_ne!(
            material(&one, 1).expose_secret(),
            material(&two, 1).expose_secret()
        );
        assert_ne!(
            material(&one, 1).expose_secret(),
            material(&one, 2).expose_secret()
        );
    }
}
