//! Prometheus metrics, scraped from real listeners and parsed by a real parser (the Python
//! `prometheus_client` package's text parser): `kmsfs kms serve --metrics-listen` (request
//! counts and latency moving with signed requests, keys by status, replication lag per peer
//! while a peer zone is down, the audit queue) and `kmsfs mount --metrics-listen`.

mod common;

use common::Env;
use common::kms_server::zones::{import_org, mz_key, reserve_port, wait_until};
use common::kms_server::{KmsClient, ServerGuard, b64, create_org, ok, post};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Parses the exposition text on stdin with prometheus_client's parser and prints every
/// sample as JSON: [{"family", "type", "name", "labels", "value"}].
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append({"family": family.name, "type": family.type, "name": s.name,
                    "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;

/// A Python interpreter with `prometheus_client`: the project's venv (target/python-venv) if it has
/// one, else the system's `python3` (scripts/test.sh installs the package).
fn python() -> String {
    let venv = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/python-venv/bin/python3"
    );
    for candidate in [venv, "python3"] {
        let works = Command::new(candidate)
            .args(["-c", "import prometheus_client.parser"])
            .output()
            .is_ok_and(|o| o.status.success());
        if works {
            return candidate.to_string();
        }
    }
    panic!(
        "no python3 with the prometheus_client package (scripts/test.sh installs it: pip install prometheus-client)"
    );
}

/// One parsed sample.
#[derive(Debug, Clone)]
struct Sample {
    family: String,
    kind: String,
    name: String,
    labels: Value,
    value: f64,
}

/// Parses `text` with the Python parser.
fn parse(text: &str) -> Vec<Sample> {
    let mut child = Command::new(python())
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write the exposition");
    let out = child.wait_with_output().expect("python3 finishes");
    assert!(
        out.status.success(),
        "the parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: Vec<Value> = serde_json::from_slice(&out.stdout).expect("the parser's JSON");
    samples
        .into_iter()
        .map(|s| Sample {
            family: s["family"].as_str().expect("family").to_string(),
            kind: s["type"].as_str().expect("type").to_string(),
            name: s["name"].as_str().expect("name").to_string(),
            labels: s["labels"].clone(),
            value: s["value"].as_f64().expect("value"),
        })
        .collect()
}

/// `GET /metrics` on `addr` (plain HTTP/1.1, one request); returns the content type and body.
fn scrape(addr: &str) -> (String, String) {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the metrics listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("headers and body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    (content_type, body.to_string())
}

/// The value of sample `name` whose labels include every pair of `labels` (0 when absent).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels[*k] == *v))
        .collect();
    assert!(found.len() <= 1, "{name} {labels:?} matches {found:?}");
    found.first().map_or(0.0, |s| s.value)
}

/// Starts a server of `zone` on `data` with metrics at a free port; returns it and the
/// metrics address.
fn server_with_metrics(
    data: &std::path::Path,
    zone: &str,
    extra: &[&str],
) -> (ServerGuard, String) {
    let metrics = format!("127.0.0.1:{}", reserve_port());
    let mut args = vec!["--metrics-listen", metrics.as_str()];
    args.extend_from_slice(extra);
    let listen = format!("127.0.0.1:{}", reserve_port());
    (ServerGuard::start_in(data, zone, &listen, &args), metrics)
}

#[test]
fn server_metrics_count_requests_by_operation_and_status_and_keys_by_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, metrics) = server_with_metrics(
        &dir.path().join("data"),
        "ch-gva-2",
        &["--log-format", "json"],
    );
    let client = KmsClient::new(&server.url, create_org(&server.data));
    let key = client.create_key("metrics-key");
    let (content_type, text) = scrape(&metrics);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let before = parse(&text);
    let encrypts = 5;
    for i in 0..encrypts {
        let answer = ok(post(
            &client,
            &key,
            "encrypt",
            json!({ "plaintext": b64(format!("secret {i}").as_bytes()) }),
        ));
        assert!(answer["ciphertext"].is_string());
    }
    // A refused call, an unauthenticated one and a path no route serves.
    let (refused, _) = post(
        &client,
        common::kms_server::NO_SUCH_KEY,
        "encrypt",
        json!({"plaintext": b64(b"x")}),
    );
    assert!((400..500).contains(&refused), "{refused}");
    let (status, _, _) = client.send_raw("GET", "/kms-key", b"", None);
    assert!(status == 401 || status == 403, "{status}");
    let (status, _, _) = client.send_raw("GET", "/no-such-thing", b"", None);
    assert_eq!(status, 404);
    ok(post(&client, &key, "disable", json!({})));

    let after = parse(&scrape(&metrics).1);
    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    let ok_encrypts = [("operation", "encrypt"), ("status", "200")];
    assert_eq!(
        moved("kmsfs_kms_requests_total", &ok_encrypts),
        encrypts as f64
    );
    assert_eq!(
        moved(
            "kmsfs_kms_requests_total",
            &[("operation", "encrypt"), ("status", &refused.to_string())]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "kmsfs_kms_requests_total",
            &[("operation", "disable-kms-key"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "kmsfs_kms_requests_total",
            &[("operation", "unknown"), ("status", "404")]
        ),
        1.0
    );
    let unauthenticated: f64 = ["401", "403"]
        .iter()
        .map(|s| {
            moved(
                "kmsfs_kms_requests_total",
                &[("operation", "list-kms-keys"), ("status", s)],
            )
        })
        .sum();
    assert_eq!(unauthenticated, 1.0);
    // The latency histogram: every encrypt observed, buckets cumulative up to +Inf.
    let count = moved(
        "kmsfs_kms_request_duration_seconds_count",
        &[("operation", "encrypt")],
    );
    assert_eq!(count, encrypts as f64 + 1.0);
    let inf = value(
        &after,
        "kmsfs_kms_request_duration_seconds_bucket",
        &[("operation", "encrypt"), ("le", "+Inf")],
    );
    assert_eq!(
        inf,
        value(
            &after,
            "kmsfs_kms_request_duration_seconds_count",
            &[("operation", "encrypt")]
        )
    );
    assert!(
        after
            .iter()
            .any(|s| s.family == "kmsfs_kms_request_duration_seconds" && s.kind == "histogram")
    );
    // Keys by status: the Default Organization Key and the disabled one.
    let zone = [("zone", "ch-gva-2")];
    let keys = |status: &str| value(&after, "kmsfs_kms_keys", &[zone[0], ("status", status)]);
    assert_eq!(
        (keys("enabled"), keys("disabled"), keys("pending-deletion")),
        (1.0, 1.0, 0.0)
    );
    assert!(
        after
            .iter()
            .any(|s| s.name == "kmsfs_kms_audit_queue" && s.kind == "gauge" && s.value >= 0.0)
    );
    // No peers: no replication lag series.
    assert!(
        !after
            .iter()
            .any(|s| s.name.starts_with("kmsfs_kms_replication"))
    );
    // The API port does not serve metrics.
    let (status, _, _) = client.send_raw("GET", "/metrics", b"", None);
    assert_ne!(status, 200);
    // --log-format json: every line of the server's log is a JSON object.
    let log = server.log_text();
    assert!(log.contains("serving metrics at"), "{log}");
    for line in log.lines() {
        let line: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(
            line["level"].is_string() && line["fields"]["message"].is_string(),
            "{line}"
        );
    }
}

#[test]
fn server_metrics_show_replication_lag_while_a_peer_zone_is_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("peer-secret");
    std::fs::write(&secret, "metrics test secret, shared by both zones\n").expect("secret");
    let secret = secret.display().to_string();
    let (port_a, port_b) = (reserve_port(), reserve_port());
    let peer_b = format!("zb=http://127.0.0.1:{port_b}/v2");
    let peer_a = format!("za=http://127.0.0.1:{port_a}/v2");
    let metrics = format!("127.0.0.1:{}", reserve_port());
    let a = ServerGuard::start_in(
        &dir.path().join("za"),
        "za",
        &format!("127.0.0.1:{port_a}"),
        &[
            "--peer-secret-file",
            &secret,
            "--peer",
            &peer_b,
            "--metrics-listen",
            &metrics,
        ],
    );
    let mut b = ServerGuard::start_in(
        &dir.path().join("zb"),
        "zb",
        &format!("127.0.0.1:{port_b}"),
        &["--peer-secret-file", &secret, "--peer", &peer_a],
    );
    let creds = create_org(&a.data);
    import_org(&b.data, &creds);
    let client = KmsClient::new(&a.url, creds);
    let key = mz_key(&client, "lagging");
    ok(post(&client, &key, "replicate", json!({"zone": "zb"})));
    let lagging = |samples: &[Sample]| {
        value(
            samples,
            "kmsfs_kms_replication_lagging_keys",
            &[("zone", "za"), ("peer", "zb")],
        )
    };
    wait_until("the replica to catch up", Duration::from_secs(20), || {
        lagging(&parse(&scrape(&metrics).1)) == 0.0
    });
    let caught_up = parse(&scrape(&metrics).1);
    assert!(
        caught_up
            .iter()
            .any(|s| s.name == "kmsfs_kms_replication_lag_revisions"),
        "the peer has a series even when nothing lags"
    );
    b.kill_9();
    ok(post(&client, &key, "rotate", json!({})));
    let down = parse(&scrape(&metrics).1);
    assert_eq!(lagging(&down), 1.0);
    assert!(
        value(
            &down,
            "kmsfs_kms_replication_lag_revisions",
            &[("peer", "zb")]
        ) >= 1.0
    );
    b.restart();
    wait_until(
        "the replica to catch up again",
        Duration::from_secs(30),
        || lagging(&parse(&scrape(&metrics).1)) == 0.0,
    );
}

#[test]
fn mount_metrics_show_requests_cache_and_kms_calls() {
    let env = Env::new();
    env.init();
    {
        let _mount = env.mount();
        std::fs::write(env.plain.join("one"), vec![3u8; 20_000]).expect("write");
        std::fs::write(env.plain.join("two"), vec![4u8; 20_000]).expect("write");
    }
    let addr = format!("127.0.0.1:{}", reserve_port());
    let _mount = env.mount_with(&["--metrics-listen", &addr]);
    let before = parse(&scrape(&addr).1);
    for round in 0..2 {
        if round == 1 {
            // The kernel releases a closed file after close(2) returns: until then a new open
            // shares the handle's key and never asks the cache. Wait for every release, so
            // the second round's opens are the cache's.
            let open_files = || {
                let samples = parse(&scrape(&addr).1);
                value(&samples, "kmsfs_mount_open_files", &[])
            };
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while open_files() != 0.0 {
                assert!(std::time::Instant::now() < deadline, "files stay open");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        for name in ["one", "two"] {
            assert_eq!(
                std::fs::read(env.plain.join(name)).expect("read").len(),
                20_000
            );
        }
    }
    let after = parse(&scrape(&addr).1);
    let mount = std::fs::canonicalize(&env.plain)
        .expect("canonical")
        .display()
        .to_string();
    let at = ("mount", mount.as_str());
    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    assert!(moved("kmsfs_fuse_requests_total", &[at, ("operation", "read")]) >= 2.0);
    assert!(moved("kmsfs_fuse_requests_total", &[at, ("operation", "open")]) >= 4.0);
    assert_eq!(moved("kmsfs_dek_cache_misses_total", &[at]), 2.0);
    assert!(moved("kmsfs_dek_cache_hits_total", &[at]) >= 2.0);
    assert_eq!(
        moved("kmsfs_kms_calls_total", &[at, ("operation", "decrypt")]),
        2.0
    );
    assert_eq!(
        value(
            &after,
            "kmsfs_kms_call_duration_seconds_count",
            &[at, ("operation", "decrypt")]
        ),
        2.0
    );
    assert_eq!(value(&after, "kmsfs_fuse_eio_total", &[at]), 0.0);
    assert_eq!(value(&after, "kmsfs_dek_cache_entries", &[at]), 2.0);
    assert!(
        after
            .iter()
            .any(|s| s.name == "kmsfs_mount_uptime_seconds" && s.kind == "gauge")
    );
}

#[test]
fn a_metrics_address_in_use_fails_the_mount_with_one_sentence() {
    let env = Env::new();
    env.init();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address").to_string();
    let mut args = env.mount_args();
    args.extend_from_slice(&["--metrics-listen", &addr]);
    let _guard = common::MountGuard::adopt(&env);
    let out = env.run(&args);
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot serve metrics on {addr}")),
        "{err}"
    );
    assert!(!common::is_mounted(&env.plain), "the mount is undone");
}
