//! Replica targets on a primary, and replicas held for other zones.

use super::*;

#[test]
fn replication_registers_targets_and_replicas_serve_cryptography() {
    let f = fixture();
    let mut ring = f.ring.clone();
    let zones = [ZONE.to_string(), OTHER_ZONE.to_string()];
    let applied = ring
        .register_replica(f.id("primary"), OTHER_ZONE, &zones, T0)
        .expect("registers");
    assert_eq!(applied, Applied::TargetRegistered);
    let key = ring.get_key(f.id("primary"), T0).expect("found");
    assert_eq!(key.replicas, vec![OTHER_ZONE.to_string()]);
    assert_eq!(key.replicas_status[0].last_applied_watermark, 0);
    assert_eq!(
        refusal(ring.register_replica(f.id("primary"), OTHER_ZONE, &zones, T0)),
        Refusal::Conflict
    );

    // The replica in this keyring: cryptography, enable and disable work on their own.
    let blob = ring
        .encrypt(f.id("replica"), b"local", None, T0)
        .expect("encrypts");
    assert_eq!(
        ring.decrypt(f.id("replica"), &blob, None, T0)
            .expect("decrypts")
            .expose_secret(),
        b"local"
    );
    assert_eq!(
        ring.disable_key(f.id("replica"), T0).expect("disables"),
        Applied::Success
    );
    assert_eq!(
        ring.enable_key(f.id("replica"), T0).expect("enables"),
        Applied::Success
    );
    assert_eq!(
        ring.get_key(f.id("replica"), T0)
            .expect("found")
            .origin_zone,
        OTHER_ZONE
    );
}

#[test]
fn replicas_carry_every_version_of_their_primary() {
    let mut primary = Keyring::new(OTHER_ZONE);
    let id = create(&mut primary, "mz", true);
    let v1 = primary.encrypt(id, b"one", None, T0).expect("encrypts");
    primary.rotate_key(id, day(1)).expect("rotates");
    let v2 = primary.encrypt(id, b"two", None, day(1)).expect("encrypts");
    let mut here = Keyring::new(ZONE);
    assert_eq!(
        here.install_replica(primary.replica_record(id, T0).expect("copies"), day(1))
            .ok(),
        Some(Applied::Success)
    );
    for (blob, plain) in [(&v1, b"one"), (&v2, b"two")] {
        assert_eq!(
            here.decrypt(id, blob, None, day(1))
                .expect("decrypts")
                .expose_secret(),
            plain
        );
    }
    let local = here.encrypt(id, b"back", None, day(1)).expect("encrypts");
    assert_eq!(
        primary
            .decrypt(id, &local, None, day(1))
            .expect("decrypts")
            .expose_secret(),
        b"back"
    );
    // A newer copy replaces it; the revision keeps growing.
    primary.rotate_key(id, day(2)).expect("rotates");
    let seq = here.get_key(id, day(2)).expect("found").revision.seq;
    here.install_replica(primary.replica_record(id, day(2)).expect("copies"), day(2))
        .expect("installs");
    let key = here.get_key(id, day(2)).expect("found");
    assert_eq!(key.material.version, 3);
    assert!(key.revision.seq > seq);
    assert!(
        here.run_scheduler(day(5000)).rotated.is_empty(),
        "replicas follow their primary"
    );
}

#[test]
fn replica_records_and_installs_are_refused_when_they_do_not_fit() {
    let f = fixture();
    let mut ring = f.ring.clone();
    let single = create(&mut ring, "single", false);
    assert_eq!(
        refusal(ring.replica_record(single, T0)),
        Refusal::NotMultizone
    );
    assert_eq!(
        refusal(ring.replica_record(f.id("replica"), T0)),
        Refusal::NotOnReplica
    );
    assert_eq!(
        refusal(ring.replica_record(Uuid::new_v4(), T0)),
        Refusal::KeyNotFound
    );
    // A record from this very zone is no replica here.
    let own = ring.replica_record(f.id("primary"), T0).expect("copies");
    assert_eq!(
        refusal(ring.install_replica(own, T0)),
        Refusal::InvalidArgument
    );
    // Another zone's copy of a key whose id is a primary here.
    let mut elsewhere = Keyring::new(OTHER_ZONE);
    let copy = ring.replica_record(f.id("primary"), T0).expect("copies");
    elsewhere.install_replica(copy, T0).expect("installs");
    let back = elsewhere.replica_record(f.id("primary"), T0);
    assert_eq!(refusal(back), Refusal::NotOnReplica);
    let mut third = Keyring::new("de-fra-1");
    let named = create(&mut third, "enabled", true);
    let record = third.replica_record(named, T0).expect("copies");
    assert_eq!(
        refusal(ring.install_replica(record, T0)),
        Refusal::NameConflict
    );
}

/// A primary in `OTHER_ZONE` with one multi-zone key replicated to `ZONE`, and that replica.
fn replicated() -> (Keyring, Keyring, Uuid) {
    let mut primary = Keyring::new(OTHER_ZONE);
    let id = create(&mut primary, "mz", true);
    let zones = [ZONE.to_string()];
    primary
        .register_replica(id, ZONE, &zones, T0)
        .expect("registers");
    let mut here = Keyring::new(ZONE);
    here.install_replica(primary.replica_record(id, T0).expect("copies"), T0)
        .expect("installs");
    (primary, here, id)
}

fn push(primary: &Keyring, here: &mut Keyring, id: Uuid, now: OffsetDateTime) -> Applied {
    here.install_replica(primary.replica_record(id, now).expect("copies"), now)
        .expect("installs")
}

#[test]
fn a_local_status_survives_pushes_but_deletion_comes_from_the_primary() {
    let (mut primary, mut here, id) = replicated();
    here.disable_key(id, day(1)).expect("disables locally");
    primary.rotate_key(id, day(2)).expect("rotates");
    assert_eq!(push(&primary, &mut here, id, day(2)), Applied::Success);
    let key = here.get_key(id, day(2)).expect("found");
    assert_eq!(key.status, KeyStatus::Disabled, "the local status stays");
    assert_eq!(key.material.version, 2);

    // The primary's own disable does not disable the replica.
    primary.disable_key(id, day(3)).expect("disables");
    here.enable_key(id, day(3)).expect("enables locally");
    push(&primary, &mut here, id, day(3));
    assert_eq!(
        here.get_key(id, day(3)).expect("found").status,
        KeyStatus::Enabled
    );

    primary
        .schedule_deletion(id, Some(7), day(4))
        .expect("schedules");
    push(&primary, &mut here, id, day(4));
    let key = here.get_key(id, day(4)).expect("found");
    assert_eq!(key.status, KeyStatus::PendingDeletion);
    assert_eq!(key.delete_at, Some(day(11)));
    primary.cancel_deletion(id, day(5)).expect("cancels");
    push(&primary, &mut here, id, day(5));
    assert_eq!(
        here.get_key(id, day(5)).expect("found").status,
        KeyStatus::Disabled
    );
}

#[test]
fn old_or_repeated_pushes_are_already_applied() {
    let (mut primary, mut here, id) = replicated();
    let old = primary.replica_record(id, T0).expect("copies");
    assert_eq!(push(&primary, &mut here, id, T0), Applied::AlreadyApplied);
    primary.rotate_key(id, day(1)).expect("rotates");
    let seq = primary.get_key(id, day(1)).expect("found").revision.seq;
    assert_eq!(push(&primary, &mut here, id, day(1)), Applied::Success);
    assert_eq!(here.replica_watermark(id), seq);
    assert_eq!(
        here.install_replica(old, day(1)).expect("answers"),
        Applied::AlreadyApplied
    );
    assert_eq!(here.get_key(id, day(1)).expect("found").material.version, 2);
}

#[test]
fn the_primary_tracks_lag_watermarks_and_failures() {
    let (mut primary, _here, id) = replicated();
    let lag = primary.lagging_replicas(T0);
    assert_eq!(lag.len(), 1);
    assert_eq!(lag[0].zone, ZONE);
    let seq = lag[0].watermark;
    let before = primary.get_key(id, T0).expect("found").revision;
    let failure = ReplicaFailure {
        attempted_watermark: seq,
        error: "connection refused".into(),
        failed_at: T0,
    };
    assert!(primary.record_replica_failure(id, ZONE, failure));
    assert!(primary.record_replica_applied(id, ZONE, seq));
    assert!(
        !primary.record_replica_applied(id, ZONE, seq),
        "no going back"
    );
    assert!(!primary.record_replica_applied(id, "nowhere", seq));
    assert!(!primary.record_replica_applied(Uuid::new_v4(), ZONE, seq));
    let key = primary.get_key(id, T0).expect("found");
    assert_eq!(
        key.revision, before,
        "bookkeeping is not a change of the key"
    );
    assert_eq!(key.replicas_status[0].last_applied_watermark, seq);
    assert_eq!(
        key.replicas_status[0]
            .last_failure
            .as_ref()
            .map(|f| f.attempted_watermark),
        Some(seq)
    );
    assert!(primary.lagging_replicas(T0).is_empty());
    primary.rotate_key(id, day(1)).expect("rotates");
    assert_eq!(primary.lagging_replicas(day(1))[0].watermark, seq + 1);
}

#[test]
fn a_copy_travels_as_bytes_with_every_version() {
    let (mut primary, _here, id) = replicated();
    primary.rotate_key(id, day(1)).expect("rotates");
    let blob = primary.encrypt(id, b"old", None, day(1)).expect("encrypts");
    let bytes = primary
        .replica_record(id, day(1))
        .expect("copies")
        .to_bytes()
        .expect("bytes");
    let record = KeyRecord::from_bytes(bytes.expose_secret()).expect("reads");
    let mut third = Keyring::new("de-fra-1");
    third.install_replica(record, day(1)).expect("installs");
    let plain = third.decrypt(id, &blob, None, day(1)).expect("decrypts");
    assert_eq!(plain.expose_secret(), b"old");
    assert!(KeyRecord::from_bytes(b"{}").is_err());
    assert!(KeyRecord::from_bytes(&bytes.expose_secret()[..40]).is_err());
}
