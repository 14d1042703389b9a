//! Multi-zone keys across real `kmsfs kms serve` processes on 127.0.0.1, one per zone, that
//! know each other (`--peer`, `--peer-secret-file`): replication, propagation from the primary,
//! replicas serving while the primary is down, catching up after a replica was down, and the
//! Default Organization Key shared by every zone. The refusals are in `multizone_errors.rs`.

mod common;

use common::kms_server::zones::{Zones, import_org, mz_key, replica_state, wait_until};
use common::kms_server::{KmsClient, b64, create_org, default_key, get_key, ok, post};
use serde_json::{Value, json};
use std::time::Duration;

const A: &str = "ch-gva-2";
const B: &str = "de-fra-1";
const C: &str = "at-vie-1";
const WAIT: Duration = Duration::from_secs(20);

fn encrypt(c: &KmsClient, key: &str, plain: &[u8]) -> Value {
    ok(post(c, key, "encrypt", json!({"plaintext": b64(plain)})))["ciphertext"].clone()
}

fn decrypts(c: &KmsClient, key: &str, blob: &Value, plain: &[u8]) {
    let opened = ok(post(c, key, "decrypt", json!({"ciphertext": blob})));
    assert_eq!(opened["plaintext"], b64(plain), "in {}", c.base);
}

/// The key's material version in the zone of `c` (0 when it is not there).
fn version(c: &KmsClient, key: &str) -> u64 {
    let (status, k) = c.call("GET", &format!("/kms-key/{key}"), None);
    if status != 200 {
        return 0;
    }
    k["material"]["version"].as_u64().unwrap_or(0)
}

/// Waits until the replica in `zone` has applied the primary's current revision.
fn wait_caught_up(primary: &KmsClient, key: &str, zone: &str) {
    wait_until(&format!("{zone} to catch up"), WAIT, || {
        let seq = get_key(primary, key)["revision"]["seq"].as_u64();
        let applied = replica_state(primary, key, zone)["last-applied-watermark"].as_u64();
        seq.is_some() && seq == applied
    });
}

#[test]
fn replicate_and_rotate_across_three_zones() {
    let zones = Zones::start(&[A, B, C]);
    let c = zones.org();
    let (a, b, z) = (&c[0], &c[1], &c[2]);
    let key = mz_key(a, "shared");
    let before = encrypt(a, &key, b"version one");
    for zone in [B, C] {
        let answer = ok(post(a, &key, "replicate", json!({"zone": zone})));
        assert_eq!(answer["status"], "success", "the replica exists on return");
    }
    let primary = get_key(a, &key);
    assert_eq!(primary["replicas"], json!([B, C]));
    for (client, zone) in [(b, B), (z, C)] {
        let replica = get_key(client, &key);
        assert_eq!(replica["id"], key.as_str());
        assert_eq!(replica["name"], "shared");
        assert_eq!(replica["origin-zone"], A);
        assert_eq!(replica["multi-zone"], true);
        assert_eq!(replica["rotation"], primary["rotation"]);
        decrypts(client, &key, &before, b"version one");
        wait_caught_up(a, &key, zone);
    }

    ok(post(a, &key, "rotate", json!({})));
    for client in [b, z] {
        wait_until("the rotation to propagate", WAIT, || {
            version(client, &key) == 2
        });
    }
    let after = encrypt(a, &key, b"version two");
    decrypts(b, &key, &after, b"version two");
    decrypts(z, &key, &after, b"version two");
    // A ciphertext made in a replica zone decrypts at the primary and in the other replica.
    let from_b = encrypt(b, &key, b"made in B");
    decrypts(a, &key, &from_b, b"made in B");
    decrypts(z, &key, &from_b, b"made in B");
    let dk = ok(post(z, &key, "generate-data-key", json!({})));
    let opened = ok(post(
        a,
        &key,
        "decrypt",
        json!({"ciphertext": dk["ciphertext"]}),
    ));
    assert_eq!(opened["plaintext"], dk["plaintext"]);
    let rotations = ok(b.call("GET", &format!("/kms-key/{key}/list-key-rotations"), None));
    assert_eq!(rotations["rotations"].as_array().map(Vec::len), Some(1));
    for zone in [B, C] {
        wait_caught_up(a, &key, zone);
    }
}

#[test]
fn a_replica_keeps_its_own_status_but_follows_rotation_settings_and_deletion() {
    let zones = Zones::start(&[A, B]);
    let c = zones.org();
    let (a, b) = (&c[0], &c[1]);
    let key = mz_key(a, "own-status");
    ok(post(a, &key, "replicate", json!({"zone": B})));
    assert_eq!(ok(post(b, &key, "disable", json!({})))["status"], "success");
    ok(post(a, &key, "rotate", json!({})));
    wait_until("the rotation to reach B", WAIT, || version(b, &key) == 2);
    assert_eq!(
        get_key(b, &key)["status"],
        "disabled",
        "the push kept B's status"
    );
    let refused = post(b, &key, "encrypt", json!({"plaintext": b64(b"x")}));
    common::kms_server::assert_problem(refused, 400, "Key is Disabled");
    assert_eq!(get_key(a, &key)["status"], "enabled");
    ok(post(b, &key, "enable", json!({})));

    ok(post(a, &key, "disable-key-rotation", json!({})));
    wait_until("rotation settings to reach B", WAIT, || {
        get_key(b, &key)["rotation"]["automatic"] == false
    });
    ok(post(
        a,
        &key,
        "enable-key-rotation",
        json!({"rotation-period": 90}),
    ));
    wait_until("the new period to reach B", WAIT, || {
        get_key(b, &key)["rotation"]["rotation-period"] == 90
    });

    let scheduled = ok(post(a, &key, "schedule-deletion", json!({"delay-days": 7})));
    wait_until("the deletion to reach B", WAIT, || {
        get_key(b, &key)["status"] == "pending-deletion"
    });
    assert_eq!(get_key(b, &key)["delete-at"], scheduled["delete-at"]);
    ok(post(a, &key, "cancel-deletion", json!({})));
    wait_until("the cancellation to reach B", WAIT, || {
        get_key(b, &key)["status"] == "disabled"
    });
    wait_caught_up(a, &key, B);
}

#[test]
fn the_replica_zone_serves_while_the_primary_is_down() {
    let mut zones = Zones::start(&[A, B]);
    let c = zones.org();
    let (a, b) = (&c[0], &c[1]);
    let key = mz_key(a, "survivor");
    ok(post(a, &key, "replicate", json!({"zone": B})));
    ok(post(a, &key, "rotate", json!({})));
    wait_until("the rotation to reach B", WAIT, || version(b, &key) == 2);
    let from_a = encrypt(a, &key, b"before the outage");
    zones.servers[0].kill_9();

    decrypts(b, &key, &from_a, b"before the outage");
    let from_b = encrypt(b, &key, b"during the outage");
    decrypts(b, &key, &from_b, b"during the outage");
    let dk = ok(post(
        b,
        &key,
        "generate-data-key",
        json!({"bytes-count": 24}),
    ));
    let opened = ok(post(
        b,
        &key,
        "decrypt",
        json!({"ciphertext": dk["ciphertext"]}),
    ));
    assert_eq!(opened["plaintext"], dk["plaintext"]);

    zones.servers[0].restart();
    decrypts(a, &key, &from_b, b"during the outage");
}

#[test]
fn a_replica_down_during_rotations_catches_up_even_across_a_primary_restart() {
    let mut zones = Zones::start(&[A, B]);
    let c = zones.org();
    let (a, b) = (&c[0], &c[1]);
    let key = mz_key(a, "catch-up");
    ok(post(a, &key, "replicate", json!({"zone": B})));
    wait_caught_up(a, &key, B);
    zones.servers[1].kill_9();
    ok(post(a, &key, "rotate", json!({})));
    ok(post(a, &key, "rotate", json!({})));
    let seq = get_key(a, &key)["revision"]["seq"].as_u64().expect("seq");
    wait_until("a failure to be recorded", WAIT, || {
        replica_state(a, &key, B)["last-failure"]["attempted-watermark"].as_u64() == Some(seq)
    });
    let state = replica_state(a, &key, B);
    assert!(
        state["last-applied-watermark"].as_u64() < Some(seq),
        "{state}"
    );
    assert!(state["last-failure"]["failed-at"].is_string(), "{state}");
    let error = state["last-failure"]["error"].as_str().unwrap_or("");
    assert!(error.contains(B), "the failure names the zone: {error}");

    // The primary restarts while the replica is still down: the lag is persisted.
    zones.servers[0].kill_9();
    zones.servers[0].restart();
    zones.servers[1].restart();
    wait_caught_up(a, &key, B);
    assert_eq!(version(b, &key), 3);
    let blob = encrypt(a, &key, b"v3");
    decrypts(b, &key, &blob, b"v3");
    let state = replica_state(a, &key, B);
    assert_eq!(state["last-applied-watermark"].as_u64(), Some(seq));
    assert!(
        state["last-failure"].is_object(),
        "the last failure stays: {state}"
    );
}

#[test]
fn the_default_organization_key_is_the_same_in_every_zone() {
    let zones = Zones::start(&[A, B, C]);
    let c = zones.org();
    let ids: Vec<String> = c.iter().map(default_key).collect();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[0], ids[2]);
    let key = &ids[0];
    let blob = encrypt(&c[0], key, b"default key");
    decrypts(&c[1], key, &blob, b"default key");
    decrypts(&c[2], key, &blob, b"default key");
    let dk = ok(post(&c[2], key, "generate-data-key", json!({})));
    let opened = ok(post(
        &c[0],
        key,
        "decrypt",
        json!({"ciphertext": dk["ciphertext"]}),
    ));
    assert_eq!(opened["plaintext"], dk["plaintext"]);
    for client in &c {
        let k = get_key(client, key);
        assert_eq!(k["origin-zone"], client_zone(&zones, client));
        assert_eq!(k["material"], get_key(&c[0], key)["material"]);
    }
    // Another organization gets another default key.
    let other = create_org(&zones.servers[0].data);
    import_org(&zones.servers[1].data, &other);
    let others = zones.clients(&other);
    assert_eq!(default_key(&others[0]), default_key(&others[1]));
    assert_ne!(default_key(&others[0]), *key);
}

fn client_zone<'a>(zones: &'a Zones, client: &KmsClient) -> &'a str {
    zones
        .servers
        .iter()
        .find(|s| s.url == client.base)
        .map_or("", |s| s.zone.as_str())
}
