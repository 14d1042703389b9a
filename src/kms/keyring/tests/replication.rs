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
