//! The keyring's rules: one table row per refusal here, the happy paths in [`lifecycle`] and
//! [`replication`]. Times are fake: everything starts at `T0`.

mod lifecycle;
mod replication;

use super::*;
use crate::kms::wire::{KeyStatus, ReplicaFailure, RotationEntry};
use crate::kms::{DataKeySpec, blob};
use time::macros::datetime;

const T0: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);
const ZONE: &str = "ch-gva-2";
const OTHER_ZONE: &str = "ch-dk-2";

fn day(n: i64) -> OffsetDateTime {
    T0 + time::Duration::days(n)
}

fn request(name: &str, multi_zone: bool) -> CreateKeyRequest {
    CreateKeyRequest {
        name: name.to_string(),
        description: None,
        usage: None,
        multi_zone,
    }
}

fn refusal<T: std::fmt::Debug>(result: Result<T, KmsError>) -> Refusal {
    match result {
        Err(KmsError::Refused { refusal, .. }) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn detail<T: std::fmt::Debug>(result: Result<T, KmsError>) -> String {
    match result {
        Err(KmsError::Refused { detail, .. }) => detail,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn create(ring: &mut Keyring, name: &str, multi_zone: bool) -> Uuid {
    ring.create_key(&request(name, multi_zone), T0)
        .expect("creates")
        .id
}

/// A keyring holding one key in every state the rules distinguish, each named by its state:
/// `default`, `enabled`, `disabled`, `pending` (deletion in 7 days), `primary` (multi-zone),
/// `exhausted` (10 manual rotations), `no-rotation`, and `replica` (of a key of another zone).
struct Fixture {
    ring: Keyring,
    ids: BTreeMap<&'static str, Uuid>,
}

impl Fixture {
    /// The key in state `label`; `missing` is an id no key has.
    fn id(&self, label: &str) -> Uuid {
        self.ids.get(label).copied().unwrap_or(Uuid::nil())
    }
}

fn fixture() -> Fixture {
    let mut ring = Keyring::new(ZONE);
    let mut ids = BTreeMap::new();
    ids.insert("default", ring.ensure_default_key(T0));
    for (label, multi_zone) in [
        ("enabled", false),
        ("disabled", false),
        ("pending", false),
        ("primary", true),
        ("exhausted", false),
        ("no-rotation", false),
    ] {
        ids.insert(label, create(&mut ring, label, multi_zone));
    }
    ring.disable_key(ids["disabled"], T0).expect("disables");
    ring.schedule_deletion(ids["pending"], Some(7), T0)
        .expect("schedules");
    for _ in 0..MANUAL_ROTATION_LIMIT {
        ring.rotate_key(ids["exhausted"], T0).expect("rotates");
    }
    ring.disable_rotation(ids["no-rotation"], T0)
        .expect("turns rotation off");
    let mut elsewhere = Keyring::new(OTHER_ZONE);
    let remote = create(&mut elsewhere, "remote", true);
    let record = elsewhere.replica_record(remote, T0).expect("copies");
    ring.install_replica(record, T0).expect("installs");
    ids.insert("replica", remote);
    Fixture { ring, ids }
}

/// One operation of the API, applied to one key of the fixture.
#[derive(Debug, Clone, Copy)]
enum Op {
    Get,
    Rotate,
    Enable,
    Disable,
    RotationOn(Option<i64>),
    RotationOff,
    Schedule(Option<i64>),
    Cancel,
    Rotations,
    Encrypt(usize),
    Decrypt,
    DataKey(DataKeySpec),
    /// Re-encrypt from this key to the `enabled` one.
    ReEncryptFrom,
    /// Re-encrypt from the `enabled` key to this one.
    ReEncryptTo,
    Replicate(&'static str),
}

fn apply(f: &mut Fixture, op: Op, id: Uuid) -> Result<(), KmsError> {
    let zones = [
        ZONE.to_string(),
        OTHER_ZONE.to_string(),
        "de-fra-1".to_string(),
    ];
    let enabled = f.id("enabled");
    let ring = &mut f.ring;
    match op {
        Op::Get => ring.get_key(id, T0).map(drop),
        Op::Rotate => ring.rotate_key(id, T0).map(drop),
        Op::Enable => ring.enable_key(id, T0).map(drop),
        Op::Disable => ring.disable_key(id, T0).map(drop),
        Op::RotationOn(p) => ring.enable_rotation(id, p, T0).map(drop),
        Op::RotationOff => ring.disable_rotation(id, T0).map(drop),
        Op::Schedule(d) => ring.schedule_deletion(id, d, T0).map(drop),
        Op::Cancel => ring.cancel_deletion(id, T0).map(drop),
        Op::Rotations => ring.list_rotations(id, T0).map(drop),
        Op::Encrypt(n) => ring.encrypt(id, &vec![7; n], None, T0).map(drop),
        Op::Decrypt => ring.decrypt(id, &[0; 64], None, T0).map(drop),
        Op::DataKey(spec) => ring.generate_data_key(id, spec, None, T0).map(drop),
        Op::ReEncryptFrom => ring
            .re_encrypt(id, &[0; 64], None, enabled, None, T0)
            .map(drop),
        Op::ReEncryptTo => {
            let blob = ring.encrypt(enabled, b"x", None, T0)?;
            ring.re_encrypt(enabled, &blob, None, id, None, T0)
                .map(drop)
        }
        Op::Replicate(zone) => ring.register_replica(id, zone, &zones, T0).map(drop),
    }
}

#[test]
fn every_refusal_has_its_title_and_changes_nothing() {
    use Refusal::*;
    let rows = [
        (Op::Get, "missing", KeyNotFound),
        (Op::Rotations, "missing", KeyNotFound),
        (Op::Rotate, "missing", KeyNotFound),
        (Op::Rotate, "pending", KeyPendingDeletion),
        (Op::Rotate, "replica", NotOnAReplica),
        (Op::Rotate, "disabled", KeyDisabled),
        (Op::Rotate, "default", NotOnDefault),
        (Op::Rotate, "exhausted", ManualRotationLimit),
        (Op::Enable, "missing", KeyNotFound),
        (Op::Enable, "pending", KeyPendingDeletion),
        (Op::Disable, "missing", KeyNotFound),
        (Op::Disable, "pending", KeyPendingDeletion),
        (Op::Disable, "default", NotOnDefault),
        (Op::RotationOn(None), "missing", KeyNotFound),
        (Op::RotationOn(Some(89)), "no-rotation", BadRequest),
        (Op::RotationOn(Some(2561)), "no-rotation", BadRequest),
        (Op::RotationOn(Some(-365)), "no-rotation", BadRequest),
        (Op::RotationOn(None), "default", NotOnDefault),
        (Op::RotationOn(None), "replica", NotOnReplica),
        (Op::RotationOn(None), "pending", KeyPendingDeletion),
        (Op::RotationOn(None), "disabled", KeyDisabled),
        (Op::RotationOn(Some(90)), "enabled", Conflict),
        (Op::RotationOff, "missing", KeyNotFound),
        (Op::RotationOff, "default", NotOnDefault),
        (Op::RotationOff, "replica", NotOnReplica),
        (Op::RotationOff, "pending", KeyPendingDeletion),
        (Op::RotationOff, "disabled", KeyDisabled),
        (Op::Schedule(None), "missing", KeyNotFound),
        (Op::Schedule(Some(6)), "enabled", BadRequest),
        (Op::Schedule(Some(31)), "enabled", BadRequest),
        (Op::Schedule(None), "default", NotOnDefault),
        (Op::Schedule(None), "replica", NotOnReplica),
        (Op::Cancel, "missing", KeyNotFound),
        (Op::Cancel, "replica", NotOnReplica),
        (Op::Cancel, "enabled", NotPendingDeletion),
        (Op::Cancel, "disabled", NotPendingDeletion),
        (Op::Encrypt(1), "missing", KeyNotFound),
        (Op::Encrypt(MAX_PLAINTEXT_LEN + 1), "enabled", BadRequest),
        (Op::Encrypt(1), "disabled", KeyDisabled),
        (Op::Encrypt(1), "pending", KeyDisabled),
        (Op::Decrypt, "missing", KeyNotFound),
        (Op::Decrypt, "disabled", KeyDisabled),
        (Op::Decrypt, "pending", KeyDisabled),
        (Op::DataKey(DataKeySpec::Aes256), "missing", KeyNotFound),
        (Op::DataKey(DataKeySpec::Bytes(0)), "enabled", BadRequest),
        (Op::DataKey(DataKeySpec::Bytes(1025)), "enabled", BadRequest),
        (Op::DataKey(DataKeySpec::Aes256), "disabled", KeyDisabled),
        (Op::DataKey(DataKeySpec::Aes256), "pending", KeyDisabled),
        (Op::ReEncryptFrom, "missing", KeyNotFound),
        (Op::ReEncryptTo, "missing", KeyNotFound),
        (Op::ReEncryptFrom, "disabled", KeyDisabled),
        (Op::ReEncryptTo, "disabled", KeyDisabled),
        (Op::ReEncryptTo, "pending", KeyDisabled),
        (Op::Replicate(OTHER_ZONE), "missing", KeyNotFound),
        (Op::Replicate(OTHER_ZONE), "pending", KeyPendingDeletion),
        (Op::Replicate(OTHER_ZONE), "default", NotOnDefault),
        (Op::Replicate("de-fra-1"), "replica", NotOnReplica),
        (Op::Replicate(OTHER_ZONE), "enabled", NotMultizone),
        (Op::Replicate(ZONE), "primary", InvalidArgument),
        (Op::Replicate("xx-nowhere-1"), "primary", InvalidArgument),
    ];
    let f = fixture();
    for (op, label, expected) in rows {
        let mut f = Fixture {
            ring: f.ring.clone(),
            ids: f.ids.clone(),
        };
        let before = f.ring.list_keys(T0);
        let id = f.id(label);
        assert_eq!(
            refusal(apply(&mut f, op, id)),
            expected,
            "{op:?} on {label}"
        );
        assert_eq!(
            f.ring.list_keys(T0),
            before,
            "{op:?} on {label} changed the keyring"
        );
    }
}

#[test]
fn refusal_details_name_the_field() {
    let f = fixture();
    let mut ring = f.ring.clone();
    let rotation = ring.enable_rotation(f.id("no-rotation"), Some(1), T0);
    assert!(detail(rotation).contains("rotation-period"));
    let deletion = ring.schedule_deletion(f.id("enabled"), Some(1), T0);
    assert!(detail(deletion).contains("delay-days"));
    let conflict = ring.enable_rotation(f.id("enabled"), Some(100), T0);
    assert!(detail(conflict).contains("disable it first"));
    let pending = ring.encrypt(f.id("pending"), b"x", None, T0);
    assert!(detail(pending).contains("pending deletion"));
}
