//! The refusals of multi-zone keys over real zone servers: lifecycle operations on a replica,
//! `replicate` with a wrong target or key, peer routes called by strangers, a zone with another
//! peer secret, an organization not imported in the target zone, and bad server flags.

mod common;

use common::kms_server::zones::{
    PEER_SECRET, Zones, import_org, mz_key, replica_state, wait_until,
};
use common::kms_server::{
    ServerGuard, assert_problem, create_org, default_key, get_key, now, ok, post,
};
use kmsfs::crypto::{SecretBytes, hkdf_sha256};
use kmsfs::kms::sign::{self, Credentials};
use serde_json::json;
use std::time::Duration;

const A: &str = "ch-gva-2";
const B: &str = "de-fra-1";
const WAIT: Duration = Duration::from_secs(20);

#[test]
fn lifecycle_operations_are_refused_on_a_replica() {
    let zones = Zones::start(&[A, B]);
    let c = zones.org();
    let (a, b) = (&c[0], &c[1]);
    let key = mz_key(a, "primary-only");
    ok(post(a, &key, "replicate", json!({"zone": B})));
    assert_problem(post(b, &key, "rotate", json!({})), 400, "Not on a Replica");
    for (op, body) in [
        ("enable-key-rotation", json!({"rotation-period": 90})),
        ("disable-key-rotation", json!({})),
        ("schedule-deletion", json!({"delay-days": 7})),
        ("replicate", json!({"zone": A})),
    ] {
        let detail = assert_problem(post(b, &key, op, body), 400, "Not on Replica");
        assert!(
            detail.contains(A),
            "{op}: the detail names the primary's zone: {detail}"
        );
    }
    // Cancel-deletion too, once the primary's deletion has reached the replica.
    ok(post(a, &key, "schedule-deletion", json!({"delay-days": 7})));
    wait_until("the deletion to reach B", WAIT, || {
        get_key(b, &key)["status"] == "pending-deletion"
    });
    assert_problem(
        post(b, &key, "cancel-deletion", json!({})),
        400,
        "Not on Replica",
    );
    assert_eq!(get_key(b, &key)["rotation"]["manual-count"], 0);
}

#[test]
fn replicate_refuses_wrong_targets_and_wrong_keys() {
    let zones = Zones::start(&[A, B]);
    let c = zones.org();
    let a = &c[0];
    let key = mz_key(a, "target");
    for zone in ["nowhere-1", A, ""] {
        let title = if zone.is_empty() {
            "Bad Request"
        } else {
            "Invalid Argument"
        };
        assert_problem(
            post(a, &key, "replicate", json!({"zone": zone})),
            400,
            title,
        );
    }
    assert_problem(post(a, &key, "replicate", json!({})), 400, "Bad Request");
    ok(post(a, &key, "replicate", json!({"zone": B})));
    assert_problem(
        post(a, &key, "replicate", json!({"zone": B})),
        400,
        "Conflict",
    );
    let single = a.create_key("single-zone");
    assert_problem(
        post(a, &single, "replicate", json!({"zone": B})),
        400,
        "Not Multizone",
    );
    let default = default_key(a);
    assert_problem(
        post(a, &default, "replicate", json!({"zone": B})),
        400,
        "Not on Default",
    );
    let pending = mz_key(a, "pending");
    ok(post(a, &pending, "schedule-deletion", json!({})));
    assert_problem(
        post(a, &pending, "replicate", json!({"zone": B})),
        400,
        "Key is Pending Deletion",
    );
    assert_problem(
        post(
            a,
            common::kms_server::NO_SUCH_KEY,
            "replicate",
            json!({"zone": B}),
        ),
        400,
        "Key Not Found",
    );
    // A server without peers knows no other zone.
    let alone = ServerGuard::start(A);
    let c = alone.new_client();
    let key = mz_key(&c, "alone");
    assert_problem(
        post(&c, &key, "replicate", json!({"zone": B})),
        400,
        "Invalid Argument",
    );
}

/// `Authorization` of a peer request to `path` signed as `peer:ZONE` with the key derived from
/// `secret` (the derivation docs/KMS.md describes).
fn peer_authorization(secret: &str, zone: &str, path: &str, body: &[u8]) -> String {
    let mut info = b"kmsfs-peer-auth-v1".to_vec();
    info.extend_from_slice(&(zone.len() as u32).to_be_bytes());
    info.extend_from_slice(zone.as_bytes());
    let key = hkdf_sha256(secret.as_bytes(), b"kmsfs-peer-v1", &info);
    let credentials = Credentials {
        key: format!("peer:{zone}"),
        secret: SecretBytes::new(key.expose_secret().to_vec()),
    };
    sign::authorization(&credentials, "POST", path, body, &[], now() + 60)
}

#[test]
fn the_peer_route_refuses_everyone_but_peers() {
    let zones = Zones::start(&[A, B]);
    let c = zones.org();
    let b = &c[1];
    let path = "/_peer/replica";
    let full = b.full_path(path);
    let body = br#"{"org":"00000000-0000-4000-8000-000000000000"}"#;
    let status = |auth: Option<&str>| b.send_raw("POST", path, body, auth).0;
    assert_eq!(status(None), 403, "unsigned");
    let api = b.authorization(&b.creds.api_secret, "POST", path, body, now() + 60);
    assert_eq!(status(Some(&api)), 403, "an organization's API key");
    let wrong = peer_authorization("another secret, long enough", A, &full, body);
    assert_eq!(status(Some(&wrong)), 403, "a wrong peer secret");
    let stranger = peer_authorization(PEER_SECRET, "xx-unknown-1", &full, body);
    assert_eq!(status(Some(&stranger)), 403, "a zone that is no peer");
    let own = peer_authorization(PEER_SECRET, B, &full, body);
    assert_eq!(status(Some(&own)), 403, "the zone itself is no peer");
    let other_body = peer_authorization(PEER_SECRET, A, &full, b"{}");
    assert_eq!(
        status(Some(&other_body)),
        403,
        "a signature over another body"
    );
    // The right signature passes authentication; the body is then checked.
    let right = peer_authorization(PEER_SECRET, A, &full, body);
    assert_eq!(status(Some(&right)), 400, "a peer with a bad body");
    // A server without peers has no such route.
    let alone = ServerGuard::start(A);
    let c = alone.new_client();
    assert_eq!(c.send_raw("POST", path, body, Some(&right)).0, 404);
    assert!(!zones.servers[1].log_text().contains(PEER_SECRET));
}

#[test]
fn a_zone_with_another_peer_secret_gets_no_replica() {
    let zones = Zones::start_with_secrets(&[A, B], &[PEER_SECRET, "a different secret entirely"]);
    let creds = create_org(&zones.servers[0].data);
    import_org(&zones.servers[1].data, &creds);
    let c = zones.clients(&creds);
    let key = mz_key(&c[0], "never-there");
    let answer = ok(post(&c[0], &key, "replicate", json!({"zone": B})));
    assert_eq!(answer["status"], "target-registered");
    let failure = replica_state(&c[0], &key, B)["last-failure"].clone();
    assert!(
        failure["error"].as_str().unwrap_or("").contains("403"),
        "{failure}"
    );
    assert_problem(
        c[1].call("GET", &format!("/kms-key/{key}"), None),
        400,
        "Key Not Found",
    );
    assert_ne!(
        default_key(&c[0]),
        default_key(&c[1]),
        "other secrets, other keys"
    );
}

#[test]
fn an_organization_not_imported_in_the_target_fails_until_it_is() {
    let zones = Zones::start(&[A, B]);
    let creds = create_org(&zones.servers[0].data);
    let c = zones.clients(&creds);
    let key = mz_key(&c[0], "early");
    let answer = ok(post(&c[0], &key, "replicate", json!({"zone": B})));
    assert_eq!(answer["status"], "target-registered");
    let state = replica_state(&c[0], &key, B);
    let error = state["last-failure"]["error"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(error.contains("import"), "{state}");
    assert_eq!(state["last-applied-watermark"], 0);
    import_org(&zones.servers[1].data, &creds);
    wait_until("B to get the replica", WAIT, || {
        c[1].call("GET", &format!("/kms-key/{key}"), None).0 == 200
    });
    let seq = get_key(&c[0], &key)["revision"]["seq"].clone();
    wait_until("the watermark", WAIT, || {
        replica_state(&c[0], &key, B)["last-applied-watermark"] == seq
    });
}

#[test]
fn bad_peer_flags_stop_the_server_with_a_sentence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, PEER_SECRET).expect("write");
    let short = dir.path().join("short");
    std::fs::write(&short, "too short\n").expect("write");
    let secret = secret.display().to_string();
    let short = short.display().to_string();
    let url = format!("{B}=http://127.0.0.1:9/v2");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--peer", &url], "--peer-secret-file"),
        (
            vec![
                "--peer",
                "de-fra-1=http://127.0.0.1:9/",
                "--peer-secret-file",
                &secret,
            ],
            "/v2",
        ),
        (
            vec![
                "--peer",
                "http://127.0.0.1:9/v2",
                "--peer-secret-file",
                &secret,
            ],
            "ZONE=URL",
        ),
        (
            vec!["--peer", &url, "--peer-secret-file", &short],
            "16 bytes",
        ),
        (
            vec![
                "--peer",
                &url,
                "--peer",
                &url,
                "--peer-secret-file",
                &secret,
            ],
            "twice",
        ),
        (
            vec![
                "--peer",
                "ch-gva-2=http://127.0.0.1:9/v2",
                "--peer-secret-file",
                &secret,
            ],
            "another zone",
        ),
        (
            vec!["--peer", &url, "--peer-secret-file", "/nonexistent/secret"],
            "peer secret file",
        ),
    ];
    for (args, expected) in cases {
        let out = std::process::Command::new(common::kmsfs_bin())
            .args([
                "kms",
                "serve",
                "--zone",
                A,
                "--listen",
                "127.0.0.1:0",
                "--data",
            ])
            .arg(dir.path().join("data"))
            .args(&args)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
