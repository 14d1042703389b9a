//! Lifecycle happy paths: creation, the default key, rotation, deletion, the scheduler and the
//! revision stamp.

use super::*;

#[test]
fn create_refuses_bad_names_and_usages() {
    let mut ring = Keyring::new(ZONE);
    ring.ensure_default_key(T0);
    create(&mut ring, "taken", false);
    let usage = |u: &str| CreateKeyRequest {
        usage: Some(u.to_string()),
        ..request("fresh", false)
    };
    let rows = [
        (request("", false), Refusal::BadRequest),
        (request("   ", false), Refusal::BadRequest),
        (request(&"n".repeat(256), false), Refusal::BadRequest),
        (usage("sign-verify"), Refusal::BadRequest),
        (usage(""), Refusal::BadRequest),
        (request("taken", false), Refusal::NameConflict),
        (request(DEFAULT_KEY_NAME, false), Refusal::NameConflict),
    ];
    for (req, expected) in rows {
        assert_eq!(refusal(ring.create_key(&req, T0)), expected, "{req:?}");
    }
    assert_eq!(ring.list_keys(T0).len(), 2);
}

#[test]
fn create_makes_an_enabled_key_with_defaults() {
    let mut ring = Keyring::new(ZONE);
    let req = CreateKeyRequest {
        description: Some("for tests".into()),
        usage: Some(USAGE.into()),
        ..request(&"é".repeat(255), true)
    };
    let key = ring.create_key(&req, T0).expect("creates");
    assert_eq!(key.id.get_version_num(), 4);
    assert_eq!((key.usage.as_str(), key.source.as_str()), (USAGE, SOURCE));
    assert_eq!(
        (key.status, key.status_since, key.created_at),
        (KeyStatus::Enabled, T0, T0)
    );
    assert_eq!(key.revision, Revision { seq: 1, at: T0 });
    assert_eq!((key.material.version, key.material.automatic), (1, false));
    let rotation = RotationConfig {
        manual_count: 0,
        automatic: true,
        rotation_period: 365,
        next_at: day(365),
    };
    assert_eq!(key.rotation, rotation);
    assert!(key.multi_zone && key.origin_zone == ZONE && key.delete_at.is_none());
    assert_eq!(ring.get_key(key.id, T0).expect("found"), key);
    assert!(ring.list_rotations(key.id, T0).expect("found").is_empty());
}

#[test]
fn default_key_is_made_once_and_stays_enabled() {
    let mut ring = Keyring::new(ZONE);
    assert_eq!(ring.default_key_id(), None);
    let id = ring.ensure_default_key(T0);
    assert_eq!(ring.ensure_default_key(day(1)), id);
    assert_eq!(ring.default_key_id(), Some(id));
    let key = ring.get_key(id, T0).expect("found");
    assert_eq!(
        (key.name.as_str(), key.status),
        (DEFAULT_KEY_NAME, KeyStatus::Enabled)
    );
    assert!(key.rotation.automatic);
    assert_eq!(ring.list_keys(T0).len(), 1);
    let blob = ring.encrypt(id, b"works", None, T0).expect("encrypts");
    assert_eq!(
        ring.decrypt(id, &blob, None, T0)
            .expect("decrypts")
            .expose_secret(),
        b"works"
    );
}

#[test]
fn manual_rotation_adds_a_version_and_keeps_next_at() {
    let mut ring = Keyring::new(ZONE);
    let id = create(&mut ring, "k", false);
    let old = ring
        .encrypt(id, b"old", Some(b"ctx"), T0)
        .expect("encrypts");
    let config = ring.rotate_key(id, day(10)).expect("rotates");
    assert_eq!((config.manual_count, config.next_at), (1, day(365)));
    let key = ring.get_key(id, day(10)).expect("found");
    assert_eq!((key.material.version, key.material.automatic), (2, false));
    assert_eq!(key.material.created_at, day(10));
    assert_eq!(
        key.revision,
        Revision {
            seq: 2,
            at: day(10)
        }
    );
    let new = ring
        .encrypt(id, b"new", Some(b"ctx"), day(10))
        .expect("encrypts");
    assert_eq!(blob::blob_key_version(&old), Some((id, 1)));
    assert_eq!(blob::blob_key_version(&new), Some((id, 2)));
    for (blob, plain) in [(&old, b"old"), (&new, b"new")] {
        let got = ring
            .decrypt(id, blob, Some(b"ctx"), day(10))
            .expect("decrypts");
        assert_eq!(got.expose_secret(), plain);
    }
    let rotations = ring.list_rotations(id, day(10)).expect("found");
    let entry = RotationEntry {
        version: 2,
        rotated_at: day(10),
        automatic: false,
    };
    assert_eq!(rotations, vec![entry]);
}

#[test]
fn enable_and_disable_report_already_applied_without_a_revision() {
    let mut ring = Keyring::new(ZONE);
    let id = create(&mut ring, "k", false);
    assert_eq!(
        ring.enable_key(id, day(1)).expect("enables"),
        Applied::AlreadyApplied
    );
    assert_eq!(ring.get_key(id, day(1)).expect("found").revision.seq, 1);
    assert_eq!(
        ring.disable_key(id, day(2)).expect("disables"),
        Applied::Success
    );
    let key = ring.get_key(id, day(2)).expect("found");
    assert_eq!(
        (key.status, key.status_since, key.revision.seq),
        (KeyStatus::Disabled, day(2), 2)
    );
    assert_eq!(
        ring.disable_key(id, day(3)).expect("disables"),
        Applied::AlreadyApplied
    );
    assert_eq!(ring.get_key(id, day(3)).expect("found").revision.seq, 2);
    assert_eq!(
        ring.enable_key(id, day(4)).expect("enables"),
        Applied::Success
    );
    let key = ring.get_key(id, day(4)).expect("found");
    assert_eq!(
        (key.status, key.status_since, key.revision.seq),
        (KeyStatus::Enabled, day(4), 3)
    );
}

#[test]
fn rotation_settings_change_only_through_off() {
    let mut ring = Keyring::new(ZONE);
    let id = create(&mut ring, "k", false);
    let on = ring.get_key(id, T0).expect("found").rotation;
    assert_eq!(ring.enable_rotation(id, None, day(1)).expect("no-op"), on);
    assert_eq!(
        ring.enable_rotation(id, Some(365), day(1)).expect("no-op"),
        on
    );
    assert_eq!(ring.get_key(id, T0).expect("found").revision.seq, 1);
    let off = ring.disable_rotation(id, day(2)).expect("turns off");
    assert!(!off.automatic);
    assert_eq!(ring.disable_rotation(id, day(3)).expect("no-op"), off);
    assert_eq!(ring.get_key(id, T0).expect("found").revision.seq, 2);
    let config = ring
        .enable_rotation(id, Some(90), day(4))
        .expect("turns on");
    assert_eq!(
        (config.automatic, config.rotation_period, config.next_at),
        (true, 90, day(94))
    );
    assert_eq!(
        refusal(ring.enable_rotation(id, Some(2560), day(5))),
        Refusal::Conflict
    );
    ring.disable_rotation(id, day(5)).expect("turns off");
    let config = ring
        .enable_rotation(id, Some(2560), day(6))
        .expect("turns on");
    assert_eq!((config.rotation_period, config.next_at), (2560, day(2566)));
    ring.disable_rotation(id, day(7)).expect("turns off");
    assert_eq!(
        ring.enable_rotation(id, None, day(8))
            .expect("on")
            .rotation_period,
        365
    );
    assert_eq!(ring.get_key(id, T0).expect("found").revision.seq, 7);
}

#[test]
fn deletion_is_scheduled_cancelled_and_final() {
    let mut ring = Keyring::new(ZONE);
    let id = create(&mut ring, "k", false);
    let blob = ring.encrypt(id, b"x", None, T0).expect("encrypts");
    assert_eq!(
        ring.schedule_deletion(id, None, day(1)).expect("schedules"),
        day(31)
    );
    let key = ring.get_key(id, day(1)).expect("found");
    assert_eq!(
        (key.status, key.delete_at, key.revision.seq),
        (KeyStatus::PendingDeletion, Some(day(31)), 2)
    );
    assert_eq!(
        ring.schedule_deletion(id, Some(7), day(2))
            .expect("already"),
        day(31)
    );
    assert_eq!(ring.get_key(id, day(2)).expect("found").revision.seq, 2);
    assert_eq!(
        ring.cancel_deletion(id, day(3)).expect("cancels"),
        Applied::Success
    );
    let key = ring.get_key(id, day(3)).expect("found");
    assert_eq!(
        (key.status, key.delete_at, key.status_since),
        (KeyStatus::Disabled, None, day(3))
    );
    // A disabled key may be scheduled again (the spec lists no "Key is Disabled" for it).
    assert_eq!(
        ring.schedule_deletion(id, Some(7), day(4))
            .expect("schedules"),
        day(11)
    );
    assert!(ring.get_key(id, day(11) - time::Duration::SECOND).is_ok());
    assert_eq!(refusal(ring.get_key(id, day(11))), Refusal::KeyNotFound);
    assert!(ring.list_keys(day(11)).is_empty());
    let report = ring.run_scheduler(day(11));
    assert_eq!(report.destroyed, vec![id]);
    assert_eq!(
        refusal(ring.decrypt(id, &blob, None, day(11))),
        Refusal::KeyNotFound
    );
    assert_eq!(refusal(ring.enable_key(id, day(12))), Refusal::KeyNotFound);
    assert!(ring.run_scheduler(day(12)).is_empty());
}

#[test]
fn scheduler_rotates_due_keys_and_nothing_else() {
    let f = fixture();
    let mut ring = f.ring.clone();
    let early = ring.run_scheduler(day(364));
    assert_eq!(early.destroyed, vec![f.id("pending")], "deleted at day 7");
    assert!(early.rotated.is_empty());
    let report = ring.run_scheduler(day(366));
    let mut expected = vec![
        f.id("default"),
        f.id("enabled"),
        f.id("primary"),
        f.id("exhausted"),
    ];
    expected.sort();
    let mut rotated = report.rotated.clone();
    rotated.sort();
    assert_eq!(
        rotated, expected,
        "not disabled, pending, replica or rotation-off keys"
    );
    for id in [f.id("default"), f.id("enabled")] {
        let key = ring.get_key(id, day(366)).expect("found");
        assert_eq!((key.material.version, key.material.automatic), (2, true));
        assert_eq!(
            (key.rotation.next_at, key.revision.at),
            (day(366 + 365), day(366))
        );
        let rotations = ring.list_rotations(id, day(366)).expect("found");
        assert_eq!(rotations.last().map(|r| r.automatic), Some(true));
    }
    assert_eq!(
        ring.get_key(f.id("exhausted"), day(366))
            .expect("found")
            .material
            .version,
        12
    );
    assert!(
        ring.run_scheduler(day(366)).is_empty(),
        "a second run at once changes nothing"
    );
    assert_eq!(ring.run_scheduler(day(366 + 365)).rotated.len(), 4);
    // A key disabled past its next-at rotates once, at the first run after it is enabled.
    ring.enable_key(f.id("disabled"), day(800))
        .expect("enables");
    assert_eq!(ring.run_scheduler(day(800)).rotated, vec![f.id("disabled")]);
}

#[test]
fn revision_seq_grows_by_one_on_every_change_only() {
    let mut ring = Keyring::new(ZONE);
    let id = create(&mut ring, "k", true);
    let zones = [ZONE.to_string(), OTHER_ZONE.to_string()];
    type Step<'a> = Box<dyn Fn(&mut Keyring, OffsetDateTime) + 'a>;
    let steps: Vec<(&str, bool, Step)> = vec![
        ("get", false, Box::new(|r, t| drop(r.get_key(id, t)))),
        (
            "encrypt",
            false,
            Box::new(|r, t| drop(r.encrypt(id, b"x", None, t))),
        ),
        (
            "data key",
            false,
            Box::new(|r, t| drop(r.generate_data_key(id, DataKeySpec::Aes256, None, t))),
        ),
        ("rotate", true, Box::new(|r, t| drop(r.rotate_key(id, t)))),
        ("disable", true, Box::new(|r, t| drop(r.disable_key(id, t)))),
        (
            "disable again",
            false,
            Box::new(|r, t| drop(r.disable_key(id, t))),
        ),
        ("enable", true, Box::new(|r, t| drop(r.enable_key(id, t)))),
        (
            "rotation off",
            true,
            Box::new(|r, t| drop(r.disable_rotation(id, t))),
        ),
        (
            "rotation on",
            true,
            Box::new(|r, t| drop(r.enable_rotation(id, Some(100), t))),
        ),
        (
            "replicate",
            true,
            Box::new(move |r, t| drop(r.register_replica(id, OTHER_ZONE, &zones, t))),
        ),
        (
            "scheduler",
            true,
            Box::new(|r, _| drop(r.run_scheduler(day(5000)))),
        ),
        (
            "schedule deletion",
            true,
            Box::new(|r, t| drop(r.schedule_deletion(id, None, t))),
        ),
        (
            "refused rotate",
            false,
            Box::new(|r, t| drop(r.rotate_key(id, t))),
        ),
        (
            "cancel deletion",
            true,
            Box::new(|r, t| drop(r.cancel_deletion(id, t))),
        ),
    ];
    let mut seq = 1;
    for (n, (name, changes, step)) in steps.iter().enumerate() {
        step(&mut ring, day(n as i64));
        seq += u64::from(*changes);
        assert_eq!(
            ring.get_key(id, day(n as i64)).expect("found").revision.seq,
            seq,
            "{name}"
        );
    }
}
