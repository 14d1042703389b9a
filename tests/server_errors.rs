//! `kmsfs kms serve` over real HTTP: each error case the spec lists per operation, malformed
//! requests (400 naming the field), refused signatures (403), unknown paths and methods.

mod common;

use common::kms_server::{
    NO_SUCH_KEY, ServerGuard, assert_problem, b64, default_key, now, ok, post,
};
use serde_json::{Value, json};

const ZONE: &str = "ch-gva-2";

#[test]
fn every_listed_refusal_has_its_title() {
    let server = ServerGuard::start(ZONE);
    let c = server.new_client();
    let def = default_key(&c);
    let (key, other) = (c.create_key("k"), c.create_key("other"));
    let blob = ok(post(&c, &key, "encrypt", json!({"plaintext": b64(b"x")})))["ciphertext"].clone();
    // Key Not Found, for every operation on a key.
    for (method, op, body) in [
        ("GET", "", Value::Null),
        ("GET", "/list-key-rotations", Value::Null),
        ("POST", "/rotate", json!({})),
        ("POST", "/enable", json!({})),
        ("POST", "/disable", json!({})),
        ("POST", "/enable-key-rotation", json!({})),
        ("POST", "/disable-key-rotation", json!({})),
        ("POST", "/schedule-deletion", json!({})),
        ("POST", "/cancel-deletion", json!({})),
        ("POST", "/replicate", json!({"zone": "ch-dk-2"})),
        ("POST", "/encrypt", json!({"plaintext": b64(b"x")})),
        ("POST", "/decrypt", json!({"ciphertext": blob})),
        ("POST", "/generate-data-key", json!({})),
    ] {
        let body = (!body.is_null()).then_some(&body);
        let answer = c.call(method, &format!("/kms-key/{NO_SUCH_KEY}{op}"), body);
        assert_problem(answer, 400, "Key Not Found");
    }
    let re = |src: &str, dst: &str| json!({"source": {"key": src, "ciphertext": blob}, "destination": {"key": dst}});
    assert_problem(
        post(&c, NO_SUCH_KEY, "re-encrypt", re(NO_SUCH_KEY, &key)),
        400,
        "Key Not Found",
    );
    assert_problem(
        post(&c, &key, "re-encrypt", re(&key, NO_SUCH_KEY)),
        400,
        "Key Not Found",
    );
    // Name Conflict, also with the Default Organization Key's name.
    for name in ["k", "Default Organization Key"] {
        assert_problem(
            c.call("POST", "/kms-key", Some(&json!({"name": name}))),
            400,
            "Name Conflict",
        );
    }
    // Not on Default.
    for (op, body) in [
        ("disable", json!({})),
        ("schedule-deletion", json!({})),
        ("enable-key-rotation", json!({})),
        ("disable-key-rotation", json!({})),
        ("replicate", json!({"zone": "ch-dk-2"})),
    ] {
        assert_problem(post(&c, &def, op, body), 400, "Not on Default");
    }
    // Conflict: a new period while automatic rotation is on.
    assert_problem(
        post(
            &c,
            &key,
            "enable-key-rotation",
            json!({"rotation-period": 100}),
        ),
        400,
        "Conflict",
    );
    // Not Multizone / Invalid Argument.
    assert_problem(
        post(&c, &key, "replicate", json!({"zone": "ch-dk-2"})),
        400,
        "Not Multizone",
    );
    let mz = &c.create_multi_zone_key("mz");
    assert_problem(
        post(&c, mz, "replicate", json!({"zone": "ch-dk-2"})),
        400,
        "Invalid Argument",
    );
    assert_problem(
        post(&c, mz, "replicate", json!({"zone": ZONE})),
        400,
        "Invalid Argument",
    );
    // Not Pending Deletion.
    assert_problem(
        post(&c, &key, "cancel-deletion", json!({})),
        400,
        "Not Pending Deletion",
    );
    // Manual Rotation Limit.
    for _ in 0..10 {
        ok(post(&c, &other, "rotate", json!({})));
    }
    assert_problem(
        post(&c, &other, "rotate", json!({})),
        400,
        "Manual Rotation Limit",
    );
    // Key is Disabled.
    ok(post(&c, &key, "disable", json!({})));
    for (op, body) in [
        ("rotate", json!({})),
        ("enable-key-rotation", json!({})),
        ("disable-key-rotation", json!({})),
        ("encrypt", json!({"plaintext": b64(b"x")})),
        ("decrypt", json!({"ciphertext": blob})),
        ("generate-data-key", json!({})),
        ("re-encrypt", re(&key, &other)),
    ] {
        assert_problem(post(&c, &key, op, body), 400, "Key is Disabled");
    }
    // Key is Pending Deletion.
    ok(post(&c, &key, "schedule-deletion", json!({})));
    for (op, body) in [
        ("enable", json!({})),
        ("disable", json!({})),
        ("enable-key-rotation", json!({})),
        ("disable-key-rotation", json!({})),
    ] {
        assert_problem(post(&c, &key, op, body), 400, "Key is Pending Deletion");
    }
    let mz_pending = &c.create_multi_zone_key("mz2");
    ok(post(
        &c,
        mz_pending,
        "schedule-deletion",
        json!({"delay-days": 30}),
    ));
    assert_problem(
        post(&c, mz_pending, "replicate", json!({"zone": "ch-dk-2"})),
        400,
        "Key is Pending Deletion",
    );
    // The default key still works for cryptography, from the first request on.
    ok(post(&c, &def, "encrypt", json!({"plaintext": b64(b"x")})));
}

#[test]
fn malformed_requests_name_the_field() {
    let server = ServerGuard::start(ZONE);
    let c = server.new_client();
    let key = c.create_key("k");
    let raw = |op: &str, body: &str| {
        let path = format!("/kms-key/{key}/{op}");
        let auth = c.authorization(
            &c.creds.api_secret,
            "POST",
            &path,
            body.as_bytes(),
            now() + 60,
        );
        let (status, content_type, json) = c.send_raw("POST", &path, body.as_bytes(), Some(&auth));
        assert_eq!(content_type, "application/problem+json");
        (status, json)
    };
    let cases: &[(&str, &str, &str)] = &[
        ("encrypt", "{not json", "JSON"),
        ("encrypt", r#"{"plaintext": 5}"#, "plaintext"),
        ("encrypt", r#"{"plaintext": "!!!"}"#, "plaintext"),
        ("encrypt", r#"{"plaintext": "eA==", "extra": 1}"#, "extra"),
        ("encrypt", r#"{}"#, "plaintext"),
        (
            "encrypt",
            r#"{"plaintext": "eA==", "encryption-context": "%%"}"#,
            "encryption-context",
        ),
        ("decrypt", r#"{"ciphertext": ["a"]}"#, "ciphertext"),
        (
            "enable-key-rotation",
            r#"{"rotation-period": 89}"#,
            "rotation-period",
        ),
        (
            "enable-key-rotation",
            r#"{"rotation-period": 2561}"#,
            "rotation-period",
        ),
        (
            "enable-key-rotation",
            r#"{"rotation-period": "90"}"#,
            "rotation-period",
        ),
        ("schedule-deletion", r#"{"delay-days": 6}"#, "delay-days"),
        ("schedule-deletion", r#"{"delay-days": 31}"#, "delay-days"),
        ("generate-data-key", r#"{"bytes-count": 0}"#, "bytes-count"),
        (
            "generate-data-key",
            r#"{"bytes-count": 1025}"#,
            "bytes-count",
        ),
        (
            "generate-data-key",
            r#"{"bytes-count": 99999999999999999999}"#,
            "bytes-count",
        ),
        (
            "generate-data-key",
            r#"{"key-spec": "AES-128"}"#,
            "key-spec",
        ),
        (
            "generate-data-key",
            r#"{"key-spec": "AES-256", "bytes-count": 32}"#,
            "bytes-count",
        ),
        (
            "re-encrypt",
            r#"{"source": {"key": "nope", "ciphertext": "eA=="}, "destination": {"key": "nope"}}"#,
            "source.key",
        ),
        ("replicate", r#"{}"#, "zone"),
        ("rotate", r#"{"now": true}"#, "now"),
    ];
    for (op, body, field) in cases {
        let detail = assert_problem(raw(op, body), 400, "Bad Request");
        assert!(
            detail.contains(field),
            "{op} {body}: detail {detail:?} names no {field}"
        );
    }
    let big = b64(&vec![0u8; 4097]);
    let detail = assert_problem(
        post(&c, &key, "encrypt", json!({"plaintext": big})),
        400,
        "Bad Request",
    );
    assert!(detail.contains("plaintext"), "{detail}");
    let detail = assert_problem(
        c.call("GET", "/kms-key/not-a-uuid", None),
        400,
        "Bad Request",
    );
    assert!(detail.contains("id"), "{detail}");
    let detail = assert_problem(
        c.call("POST", "/kms-key", Some(&json!({"description": "x"}))),
        400,
        "Bad Request",
    );
    assert!(detail.contains("name"), "{detail}");
    assert_problem(
        c.call("POST", "/kms-key", Some(&json!({"name": ""}))),
        400,
        "Bad Request",
    );
    assert_problem(
        c.call(
            "POST",
            "/kms-key",
            Some(&json!({"name": "u", "usage": "sign"})),
        ),
        400,
        "Bad Request",
    );
}

#[test]
fn signatures_are_checked_and_paths_are_known() {
    let server = ServerGuard::start(ZONE);
    let c = server.new_client();
    let path = "/kms-key";
    let body = br#"{"name": "k"}"#;
    let secret = c.creds.api_secret.clone();
    let good = c.authorization(&secret, "POST", path, body, now() + 60);
    let forbidden = |auth: Option<&str>, body: &[u8]| {
        let (status, content_type, json) = c.send_raw("POST", path, body, auth);
        assert_eq!(content_type, "application/problem+json");
        assert_problem((status, json), 403, "Forbidden");
    };
    forbidden(None, body);
    forbidden(Some("Bearer abc"), body);
    let bad_sig = format!("{}AAAA", &good[..good.len() - 4]);
    forbidden(Some(&bad_sig), body);
    let wrong_secret = c.authorization(
        "not-the-secret-at-all-0123456789abcdef",
        "POST",
        path,
        body,
        now() + 60,
    );
    forbidden(Some(&wrong_secret), body);
    forbidden(
        Some(&c.authorization(&secret, "POST", path, body, now() - 5)),
        body,
    );
    forbidden(
        Some(&c.authorization(&secret, "POST", path, body, now() + 7200)),
        body,
    );
    forbidden(Some(&good), br#"{"name": "K"}"#);
    forbidden(
        Some(&c.authorization(&secret, "GET", path, body, now() + 60)),
        body,
    );
    let unknown = good.replace(&c.creds.api_key, "EXO000000000000000000000000");
    forbidden(Some(&unknown), body);
    // The untampered request still works: nothing above changed any state.
    assert_eq!(c.send_raw("POST", path, body, Some(&good)).0, 200);
    assert_problem(c.call("GET", "/nothing", None), 404, "Not Found");
    assert_problem(
        c.call(
            "POST",
            &format!("/kms-key/{NO_SUCH_KEY}/explode"),
            Some(&json!({})),
        ),
        404,
        "Not Found",
    );
    assert_problem(
        c.call("DELETE", "/kms-key", None),
        405,
        "Method Not Allowed",
    );
    assert_problem(
        c.call("GET", &format!("/kms-key/{NO_SUCH_KEY}/encrypt"), None),
        405,
        "Method Not Allowed",
    );
}
