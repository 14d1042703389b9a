//! `kmsfs kms serve` over real HTTP on 127.0.0.1: every operation's success case, organization
//! isolation, credentials added while running, persistence across kill -9, concurrent changes,
//! and the audit log. The refusals are in `server_errors.rs`.

mod common;

use common::kms_server::NO_SUCH_KEY;
use common::kms_server::{
    KmsClient, ServerGuard, assert_problem, b64, create_org, default_key, get_key, ok, post,
};
use serde_json::{Value, json};

const ZONE: &str = "ch-gva-2";

#[test]
fn key_lifecycle_over_http() {
    let server = ServerGuard::start(ZONE);
    let c = server.new_client();
    let id = c.create_key("app");
    let key = get_key(&c, &id);
    for field in [
        "status-since",
        "origin-zone",
        "created-at",
        "multi-zone",
        "usage",
        "source",
    ] {
        assert!(key.get(field).is_some(), "{field} in {key}");
    }
    assert_eq!(key["status"], "enabled");
    assert_eq!(key["origin-zone"], ZONE);
    assert_eq!(key["revision"]["seq"], 1);
    let rotated = ok(post(&c, &id, "rotate", json!({})));
    assert_eq!(rotated["rotation"]["manual-count"], 1);
    let rotations = ok(c.call("GET", &format!("/kms-key/{id}/list-key-rotations"), None));
    assert_eq!(rotations["rotations"][0]["version"], 2);
    assert_eq!(ok(post(&c, &id, "disable", json!({})))["status"], "success");
    assert_eq!(
        ok(post(&c, &id, "disable", json!({})))["status"],
        "already-applied"
    );
    assert_eq!(ok(post(&c, &id, "enable", json!({})))["status"], "success");
    assert_eq!(
        ok(post(&c, &id, "enable", json!({})))["status"],
        "already-applied"
    );
    let off = ok(post(&c, &id, "disable-key-rotation", json!({})));
    assert_eq!(off["rotation"]["automatic"], false);
    let on = ok(post(
        &c,
        &id,
        "enable-key-rotation",
        json!({"rotation-period": 90}),
    ));
    assert_eq!(on["rotation"]["rotation-period"], 90);
    let scheduled = ok(post(&c, &id, "schedule-deletion", json!({"delay-days": 7})));
    assert!(scheduled["delete-at"].is_string());
    assert_eq!(get_key(&c, &id)["status"], "pending-deletion");
    assert_eq!(
        ok(post(&c, &id, "cancel-deletion", json!({})))["status"],
        "success"
    );
    let key = get_key(&c, &id);
    assert_eq!(key["status"], "disabled");
    assert_eq!(
        key["revision"]["seq"], 8,
        "every change bumps the revision: {key}"
    );
}

#[test]
fn cryptography_over_http() {
    let server = ServerGuard::start(ZONE);
    let c = server.new_client();
    let (a, b) = (c.create_key("a"), c.create_key("b"));
    let ctx = b64(b"file-17");
    let sealed = ok(post(
        &c,
        &a,
        "encrypt",
        json!({"plaintext": b64(b"hello"), "encryption-context": ctx}),
    ));
    let blob = sealed["ciphertext"]
        .as_str()
        .expect("ciphertext")
        .to_string();
    let opened = ok(post(
        &c,
        &a,
        "decrypt",
        json!({"ciphertext": blob, "encryption-context": ctx}),
    ));
    assert_eq!(opened["plaintext"], b64(b"hello"));
    ok(post(&c, &a, "rotate", json!({})));
    let again = ok(post(
        &c,
        &a,
        "decrypt",
        json!({"ciphertext": blob, "encryption-context": ctx}),
    ));
    assert_eq!(
        again["plaintext"],
        b64(b"hello"),
        "old versions still decrypt"
    );
    let answer = post(
        &c,
        &a,
        "decrypt",
        json!({"ciphertext": blob, "encryption-context": b64(b"other")}),
    );
    // Its type alone tells an invalid ciphertext from other "Bad Request" answers.
    assert_eq!(
        answer.1["type"], "urn:kmsfs:problem:invalid-ciphertext",
        "{}",
        answer.1
    );
    let detail = assert_problem(answer, 400, "Bad Request");
    assert!(detail.contains("ciphertext is invalid"), "{detail}");
    assert_problem(
        post(
            &c,
            &b,
            "decrypt",
            json!({"ciphertext": blob, "encryption-context": ctx}),
        ),
        400,
        "Bad Request",
    );
    for (body, len) in [
        (json!({}), 32),
        (json!({"key-spec": "AES-256"}), 32),
        (json!({"bytes-count": 7}), 7),
    ] {
        let dk = ok(post(&c, &a, "generate-data-key", body));
        let plain = dk["plaintext"].as_str().expect("plaintext").to_string();
        let back = ok(post(
            &c,
            &a,
            "decrypt",
            json!({"ciphertext": dk["ciphertext"]}),
        ));
        assert_eq!(back["plaintext"], plain);
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(plain)
            .expect("b64");
        assert_eq!(raw.len(), len);
    }
    let moved = ok(post(
        &c,
        &a,
        "re-encrypt",
        json!({
            "source": {"key": a, "ciphertext": blob, "encryption-context": ctx},
            "destination": {"key": b, "encryption-context": null}
        }),
    ));
    let there = ok(post(
        &c,
        &b,
        "decrypt",
        json!({"ciphertext": moved["ciphertext"]}),
    ));
    assert_eq!(there["plaintext"], b64(b"hello"));
}

#[test]
fn organizations_are_isolated_and_added_while_running() {
    let server = ServerGuard::start(ZONE);
    let a = server.new_client();
    let key = a.create_key("secret-of-a");
    let blob = ok(post(&a, &key, "encrypt", json!({"plaintext": b64(b"a")})))["ciphertext"].clone();
    // Org B is created while the server runs and works at once.
    let b = KmsClient::new(&server.url, create_org(&server.data));
    assert_problem(
        b.call("GET", &format!("/kms-key/{key}"), None),
        400,
        "Key Not Found",
    );
    assert_problem(
        post(&b, &key, "decrypt", json!({"ciphertext": blob})),
        400,
        "Key Not Found",
    );
    assert_problem(post(&b, &key, "disable", json!({})), 400, "Key Not Found");
    let listed = ok(b.call("GET", "/kms-key", None));
    let names: Vec<&str> = listed["kms-keys"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["Default Organization Key"],
        "B sees only its own keys"
    );
    assert_ne!(default_key(&a), default_key(&b));
    // Same names in two organizations do not conflict.
    b.create_key("secret-of-a");
}

#[test]
fn acknowledged_changes_survive_kill_9() {
    let mut server = ServerGuard::start(ZONE);
    let c = server.new_client();
    let (kept, off) = (c.create_key("kept"), c.create_key("off"));
    let blob = ok(post(
        &c,
        &kept,
        "encrypt",
        json!({"plaintext": b64(b"before")}),
    ))["ciphertext"]
        .clone();
    ok(post(&c, &kept, "rotate", json!({})));
    ok(post(&c, &off, "disable", json!({})));
    let before = ok(c.call("GET", "/kms-key", None));
    server.kill_9();
    server.restart();
    let after = ok(c.call("GET", "/kms-key", None));
    assert_eq!(before, after);
    assert_eq!(get_key(&c, &kept)["material"]["version"], 2);
    assert_eq!(get_key(&c, &off)["status"], "disabled");
    let opened = ok(post(&c, &kept, "decrypt", json!({"ciphertext": blob})));
    assert_eq!(opened["plaintext"], b64(b"before"));
    let state = std::fs::read_dir(server.data.join("orgs")).expect("orgs dir");
    for entry in state {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        assert!(
            !text.contains(&c.creds.api_secret),
            "API secrets are sealed"
        );
        assert!(!text.contains("kept"), "key names are sealed too");
    }
}

#[test]
fn concurrent_changes_lose_no_update() {
    let server = ServerGuard::start(ZONE);
    let c = std::sync::Arc::new(server.new_client());
    let key = c.create_key("busy");
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let (c, key) = (std::sync::Arc::clone(&c), key.clone());
            std::thread::spawn(move || {
                let (mut rotations, mut changes) = (0u64, 0u64);
                for i in 0..10 {
                    match t % 3 {
                        0 => rotations += u64::from(post(&c, &key, "rotate", json!({})).0 == 200),
                        1 => {
                            let op = if i % 2 == 0 { "disable" } else { "enable" };
                            let (status, body) = post(&c, &key, op, json!({}));
                            changes += u64::from(status == 200 && body["status"] == "success");
                        }
                        _ => {
                            let (status, body) =
                                post(&c, &key, "encrypt", json!({"plaintext": b64(b"x")}));
                            assert!(
                                status == 200 || body["title"] == "Key is Disabled",
                                "{body}"
                            );
                        }
                    }
                }
                (rotations, changes)
            })
        })
        .collect();
    let (rotations, changes) = threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .fold((0, 0), |(r, c), (r2, c2)| (r + r2, c + c2));
    let final_key = get_key(&c, &key);
    assert_eq!(final_key["rotation"]["manual-count"], rotations);
    assert_eq!(final_key["material"]["version"], rotations + 1);
    assert_eq!(
        final_key["revision"]["seq"],
        1 + rotations + changes,
        "{final_key}"
    );
}

#[test]
fn audit_log_records_calls_without_secrets() {
    let mut server = ServerGuard::start(ZONE);
    let c = server.new_client();
    let key = c.create_key("audited");
    let plain = b64(b"top secret plaintext");
    let blob = ok(post(&c, &key, "encrypt", json!({"plaintext": plain})))["ciphertext"].clone();
    let dk = ok(post(&c, &key, "generate-data-key", json!({})));
    assert_problem(
        post(&c, NO_SUCH_KEY, "decrypt", json!({"ciphertext": blob})),
        400,
        "Key Not Found",
    );
    assert!(server.stop(), "SIGTERM stops the server cleanly");
    let log = std::fs::read_to_string(server.data.join("audit.log")).expect("audit.log");
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(lines.len() >= 4, "{log}");
    for line in &lines {
        for field in ["time", "org", "api-key", "operation", "result"] {
            assert!(line.get(field).is_some(), "{field} in {line}");
        }
    }
    assert!(lines.iter().any(|l| l["operation"] == "encrypt"
        && l["key-id"] == key.as_str()
        && l["result"] == "success"));
    assert!(lines.iter().any(|l| l["result"] == "Key Not Found"));
    for secret in [
        plain.as_str(),
        blob.as_str().expect("b64"),
        dk["plaintext"].as_str().expect("b64"),
        c.creds.api_secret.as_str(),
    ] {
        assert!(
            !log.contains(secret),
            "the audit log holds a secret or ciphertext"
        );
    }
}
