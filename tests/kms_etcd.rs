//! Several `kmsfs kms serve` processes of one zone on one real etcd (`--store etcd://...`):
//! concurrent changes through different servers lose nothing, a change through one server is
//! seen by another within a second, the zone's leader is replaced when killed, an etcd outage
//! stops changes (503) and, past the bound, cryptography (503) until etcd returns, and
//! `kmsfs kms migrate` moves a file store into etcd.

mod common;

use common::etcd::EtcdGuard;
use common::kms_server::zones::{PEER_SECRET, import_org, mz_key, reserve_port};
use common::kms_server::{
    KmsClient, OrgCreds, ServerGuard, assert_problem, b64, create_org_with, get_key, ok, post,
};
use common::kmsfs_bin;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const ZONE: &str = "ch-gva-2";
const PREFIX: &str = "/kmsfs/ch-gva-2";

/// A zone of `n` servers on one etcd, each with its own data directory and the same
/// passphrase; dropped in order: servers, then etcd.
struct Zone {
    servers: Vec<ServerGuard>,
    etcd: EtcdGuard,
    dir: tempfile::TempDir,
}

impl Zone {
    fn start(n: usize) -> Zone {
        Zone::start_with(n, &[])
    }

    /// [`Zone::start`] with `extra` arguments for every server (all on ports of their own).
    fn start_with(n: usize, extra: &[String]) -> Zone {
        let etcd = EtcdGuard::start();
        let dir = tempfile::Builder::new()
            .prefix("kmsfs-zone-")
            .tempdir()
            .expect("tempdir");
        std::fs::write(dir.path().join("pass"), "zone passphrase\n").expect("passphrase");
        let mut zone = Zone {
            servers: Vec::new(),
            etcd,
            dir,
        };
        for i in 0..n {
            zone.add(i, extra);
        }
        zone
    }

    /// The arguments that put a command on the zone's etcd store.
    fn store_args(&self) -> Vec<String> {
        vec![
            "--store".into(),
            self.etcd.store_url(),
            "--etcd-prefix".into(),
            PREFIX.into(),
            "--passphrase-file".into(),
            self.dir.path().join("pass").display().to_string(),
        ]
    }

    fn data(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("server{i}"))
    }

    fn add(&mut self, i: usize, extra: &[String]) {
        let mut args = self.store_args();
        args.extend_from_slice(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = ServerGuard::start_in(&self.data(i), ZONE, "127.0.0.1:0", &args);
        self.servers.push(server);
    }

    /// A new organization, made with `kmsfs kms org create` on the etcd store.
    fn org(&self, name: &str) -> OrgCreds {
        let args = self.store_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        create_org_with(&self.data(99), name, &args)
    }

    /// A client of server `i`.
    fn client(&self, i: usize, creds: &OrgCreds) -> KmsClient {
        KmsClient::new(&self.servers[i].url, creds.clone())
    }
}

impl Drop for Zone {
    fn drop(&mut self) {
        self.servers.clear();
    }
}

/// Waits until `check` holds, at most `bound`; how long it took, or `None`.
fn within(bound: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if check() {
            return Some(started.elapsed());
        }
        if started.elapsed() > bound {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn encrypt(c: &KmsClient, key: &str, text: &[u8]) -> (u16, Value) {
    post(
        c,
        key,
        "encrypt",
        json!({"plaintext": b64(text), "encryption-context": b64(b"ctx")}),
    )
}

fn decrypt(c: &KmsClient, key: &str, blob: &str) -> (u16, Value) {
    post(
        c,
        key,
        "decrypt",
        json!({"ciphertext": blob, "encryption-context": b64(b"ctx")}),
    )
}

#[test]
fn a_key_disabled_through_one_server_is_refused_by_another_within_a_second() {
    let zone = Zone::start(2);
    let creds = zone.org("acme");
    let (a, b) = (zone.client(0, &creds), zone.client(1, &creds));
    let key = a.create_key("app");
    let blob = ok(encrypt(&a, &key, b"hello"))["ciphertext"]
        .as_str()
        .expect("ciphertext")
        .to_string();
    // B learns of the new key through its watch.
    within(Duration::from_secs(1), || decrypt(&b, &key, &blob).0 == 200)
        .expect("server B decrypts with a key created through A within a second");
    ok(post(&a, &key, "disable", json!({})));
    let took = within(Duration::from_secs(1), || decrypt(&b, &key, &blob).0 == 400)
        .expect("server B refuses the key disabled through A within a second");
    eprintln!("B refused the disabled key after {took:?}");
    assert_problem(decrypt(&b, &key, &blob), 400, "Key is Disabled");
    // And back: enabled through B, used through A.
    ok(post(&b, &key, "enable", json!({})));
    within(Duration::from_secs(1), || decrypt(&a, &key, &blob).0 == 200)
        .expect("server A serves the key enabled through B within a second");
    // A rotation through A is used by B: B encrypts under version 2.
    ok(post(&a, &key, "rotate", json!({})));
    within(Duration::from_secs(1), || {
        get_key(&b, &key)["material"]["version"] == 2
    })
    .expect("server B sees the rotation through A within a second");
}

/// What the workers of the concurrency test had acknowledged, per key.
#[derive(Default, Debug)]
struct Acked {
    /// Changes answered 200 that changed something (each bumps the key's revision once).
    changes: u64,
    /// Rotations answered 200.
    rotations: u64,
    /// Ciphertexts answered 200.
    blobs: Vec<String>,
    /// Changes answered 503 (not acknowledged).
    unavailable: u64,
}

#[test]
fn three_servers_changing_the_same_keys_at_once_lose_no_acknowledged_change() {
    let zone = Zone::start(3);
    let creds = zone.org("acme");
    let first = zone.client(0, &creds);
    let keys: Vec<String> = (0..3).map(|i| first.create_key(&format!("k{i}"))).collect();
    let start_seq: HashMap<String, u64> = keys
        .iter()
        .map(|k| {
            let seq = get_key(&first, k)["revision"]["seq"].as_u64().expect("seq");
            (k.clone(), seq)
        })
        .collect();
    let run_for = Duration::from_secs(10);
    let workers: Vec<_> = (0..3)
        .map(|i| {
            let c = zone.client(i, &creds);
            let keys = keys.clone();
            std::thread::spawn(move || {
                let mut acked: HashMap<String, Acked> = HashMap::new();
                let started = Instant::now();
                let mut n = i;
                while started.elapsed() < run_for {
                    n += 1;
                    let key = &keys[n % keys.len()];
                    let entry = acked.entry(key.clone()).or_default();
                    match (n / keys.len() + i) % 4 {
                        0 => {
                            let (status, body) = post(&c, key, "rotate", json!({}));
                            if status == 200 {
                                entry.rotations += 1;
                                entry.changes += 1;
                            } else {
                                // Disabled keys and the manual rotation limit refuse; a 503
                                // (too much contention) is not acknowledged.
                                assert!(status == 400 || status == 503, "rotate: {body}");
                                entry.unavailable += u64::from(status == 503);
                            }
                        }
                        1 | 2 => {
                            let op = if n % 2 == 0 { "disable" } else { "enable" };
                            let (status, body) = post(&c, key, op, json!({}));
                            assert!(status == 200 || status == 503, "{op}: {body}");
                            entry.unavailable += u64::from(status == 503);
                            if status == 200 && body["status"] == "success" {
                                entry.changes += 1;
                            }
                        }
                        _ => {
                            let (status, body) = encrypt(&c, key, key.as_bytes());
                            if status == 200 {
                                let blob = body["ciphertext"].as_str().expect("ciphertext");
                                entry.blobs.push(blob.to_string());
                            } else {
                                assert_eq!(status, 400, "encrypt: {body}");
                            }
                        }
                    }
                }
                acked
            })
        })
        .collect();
    let mut total: HashMap<String, Acked> = HashMap::new();
    for worker in workers {
        for (key, acked) in worker.join().expect("a worker") {
            let sum = total.entry(key).or_default();
            sum.changes += acked.changes;
            sum.rotations += acked.rotations;
            sum.blobs.extend(acked.blobs);
            sum.unavailable += acked.unavailable;
        }
    }
    let (mut count, mut unavailable) = (0, 0);
    for (i, key) in keys.iter().enumerate() {
        let acked = &total[key];
        // Read through every server once they have caught up: all agree, and every
        // acknowledged change is there.
        let expected_seq = start_seq[key] + acked.changes;
        for s in 0..3 {
            let c = zone.client(s, &creds);
            within(Duration::from_secs(2), || {
                get_key(&c, key)["revision"]["seq"].as_u64() == Some(expected_seq)
            })
            .unwrap_or_else(|| {
                panic!(
                    "key {i} on server {s}: {} acknowledged changes from seq {}, the key has {}",
                    acked.changes,
                    start_seq[key],
                    get_key(&c, key)["revision"]
                )
            });
            let material = get_key(&c, key)["material"]["version"].as_u64();
            assert_eq!(material, Some(1 + acked.rotations), "key {i} on server {s}");
        }
        count += acked.changes;
        unavailable += acked.unavailable;
        let c = zone.client(i % 3, &creds);
        let (status, body) = post(&c, key, "enable", json!({}));
        assert_eq!(status, 200, "{body}");
        for blob in &acked.blobs {
            let opened = ok(decrypt(&c, key, blob));
            assert_eq!(opened["plaintext"], b64(key.as_bytes()));
        }
    }
    eprintln!("{count} acknowledged changes, all present on every server; {unavailable} 503s");
    assert!(
        count > 10,
        "the test made too few changes to mean anything: {count}"
    );
}

/// The servers whose log says they lead the zone now (the last election line of each).
fn leaders(zone: &Zone) -> Vec<usize> {
    (0..zone.servers.len())
        .filter(|&i| {
            let log = zone.servers[i].log_text();
            let won = log.rfind("this server leads the zone");
            let lost = log.rfind("no longer the zone's leader");
            won.is_some() && won > lost
        })
        .collect()
}

#[test]
fn the_zone_leader_is_replaced_within_seconds_when_killed() {
    let mut zone = Zone::start(3);
    within(Duration::from_secs(10), || leaders(&zone).len() == 1)
        .unwrap_or_else(|| panic!("one leader is elected; leaders: {:?}", leaders(&zone)));
    let leader = leaders(&zone)[0];
    let in_etcd = zone
        .etcd
        .etcdctl(&["get", "--prefix", &format!("{PREFIX}/leader")])
        .expect("etcdctl get");
    assert!(
        in_etcd.contains(&zone.servers[leader].url),
        "the election names the leader's URL: {in_etcd}"
    );
    zone.servers[leader].kill_9();
    let took = within(Duration::from_secs(15), || {
        leaders(&zone).iter().any(|&i| i != leader)
    })
    .expect("another server leads within 15 s of the leader's death");
    eprintln!("a new leader after {took:?}");
    let others: Vec<usize> = leaders(&zone)
        .into_iter()
        .filter(|&i| i != leader)
        .collect();
    assert_eq!(others.len(), 1, "exactly one new leader: {others:?}");
}

#[test]
fn the_replication_push_resumes_on_the_new_leader_when_the_leader_is_killed() {
    const OTHER: &str = "at-vie-1";
    let other_port = reserve_port();
    let secrets = tempfile::tempdir().expect("tempdir");
    let secret_file = secrets.path().join("peer-secret");
    std::fs::write(&secret_file, PEER_SECRET).expect("write the peer secret");
    let secret_arg = secret_file.display().to_string();
    let peer_args = vec![
        "--peer-secret-file".to_string(),
        secret_arg.clone(),
        "--peer".to_string(),
        format!("{OTHER}=http://127.0.0.1:{other_port}/v2"),
    ];
    let mut zone = Zone::start_with(2, &peer_args);
    let back = format!("{ZONE}={}", zone.servers[0].url);
    let other = ServerGuard::start_in(
        &secrets.path().join("other"),
        OTHER,
        &format!("127.0.0.1:{other_port}"),
        &["--peer-secret-file", &secret_arg, "--peer", &back],
    );
    let creds = zone.org("acme");
    import_org(&other.data, &creds);
    let replica = KmsClient::new(&other.url, creds.clone());
    within(Duration::from_secs(10), || leaders(&zone).len() == 1).expect("a leader");
    let leader = leaders(&zone)[0];
    let survivor = 1 - leader;
    let primary = zone.client(survivor, &creds);
    let key = mz_key(&primary, "mz");
    ok(post(&primary, &key, "replicate", json!({"zone": OTHER})));
    within(Duration::from_secs(5), || {
        replica.call("GET", &format!("/kms-key/{key}"), None).0 == 200
    })
    .expect("the replica exists");
    zone.servers[leader].kill_9();
    // The survivor did not lead: the rotation reaches the replica once it is elected.
    ok(post(&primary, &key, "rotate", json!({})));
    let took = within(Duration::from_secs(15), || {
        get_key(&replica, &key)["material"]["version"] == 2
    })
    .expect("the rotation is pushed to the replica zone by the new leader");
    eprintln!("replica at version 2 {took:?} after the rotation");
    assert!(leaders(&zone).contains(&survivor), "the survivor leads");
}

#[test]
fn an_etcd_outage_stops_changes_then_cryptography_and_both_come_back_by_themselves() {
    let mut zone = Zone::start(2);
    let creds = zone.org("acme");
    let (a, b) = (zone.client(0, &creds), zone.client(1, &creds));
    let key = a.create_key("app");
    let blob = ok(encrypt(&a, &key, b"before"))["ciphertext"]
        .as_str()
        .expect("ciphertext")
        .to_string();
    within(Duration::from_secs(1), || decrypt(&b, &key, &blob).0 == 200).expect("B knows it");
    zone.etcd.kill();
    // Right after: cryptography on loaded keys goes on; changes cannot be stored.
    ok(decrypt(&b, &key, &blob));
    let detail = assert_problem(
        post(&a, &key, "rotate", json!({})),
        503,
        "Service Unavailable",
    );
    eprintln!("a change during the outage: {detail}");
    // Past the bound (3 s), a server that cannot confirm its keys stops serving them.
    for (name, c) in [("A", &a), ("B", &b)] {
        let took = within(Duration::from_secs(10), || decrypt(c, &key, &blob).0 == 503)
            .expect("cryptography answers 503 once the keys cannot be confirmed");
        eprintln!("{name} stopped serving {took:?} after the first check");
    }
    let detail = assert_problem(decrypt(&a, &key, &blob), 503, "Service Unavailable");
    assert!(detail.contains("cannot confirm"), "{detail}");
    zone.etcd.resume();
    within(Duration::from_secs(15), || {
        decrypt(&a, &key, &blob).0 == 200 && decrypt(&b, &key, &blob).0 == 200
    })
    .expect("both servers serve again once etcd is back, without a restart");
    within(Duration::from_secs(10), || {
        post(&b, &key, "rotate", json!({})).0 == 200
    })
    .expect("changes are stored again");
    within(Duration::from_secs(2), || {
        get_key(&a, &key)["material"]["version"] == 2
    })
    .expect("A sees the rotation made through B after the outage");
    let opened = ok(decrypt(&a, &key, &blob));
    assert_eq!(opened["plaintext"], b64(b"before"));
}

/// Runs `kmsfs kms migrate` with `args`.
fn migrate(data: &Path, args: &[String]) -> std::process::Output {
    Command::new(kmsfs_bin())
        .args(["kms", "migrate", "--data"])
        .arg(data)
        .args(args)
        .output()
        .expect("run kmsfs kms migrate")
}

#[test]
fn migrate_moves_a_file_store_into_etcd_and_refuses_a_used_prefix() {
    let etcd = EtcdGuard::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut file_server = ServerGuard::start_in(&data, ZONE, "127.0.0.1:0", &[]);
    let creds = create_org_with(&data, "acme", &[]);
    let c = KmsClient::new(&file_server.url, creds.clone());
    let key = c.create_key("app");
    ok(post(&c, &key, "rotate", json!({})));
    let blob = ok(encrypt(&c, &key, b"kept"))["ciphertext"]
        .as_str()
        .expect("ciphertext")
        .to_string();
    assert!(file_server.stop(), "the file server stops cleanly");
    let store: Vec<String> = ["--store", &etcd.store_url(), "--etcd-prefix", PREFIX]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let out = migrate(&data, &store);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 organizations copied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A server on etcd needs the zone's root key: without it, it refuses to start.
    let refused = common::kms_server::serve_command(ZONE, &dir.path().join("no-root"))
        .args(&store)
        .output()
        .expect("run kmsfs kms serve");
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("root.key is missing"), "{said}");
    // With the zone's root.key, it serves what the file store had.
    let etcd_data = dir.path().join("etcd-server");
    std::fs::create_dir(&etcd_data).expect("mkdir");
    std::fs::copy(data.join("root.key"), etcd_data.join("root.key")).expect("copy root.key");
    let server = ServerGuard::start_in(
        &etcd_data,
        ZONE,
        "127.0.0.1:0",
        &store.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let c = KmsClient::new(&server.url, creds);
    assert_eq!(get_key(&c, &key)["material"]["version"], 2);
    let opened = ok(decrypt(&c, &key, &blob));
    assert_eq!(opened["plaintext"], b64(b"kept"));
    // A second migration into the same prefix is refused, and changes nothing.
    let again = migrate(&data, &store);
    assert_eq!(again.status.code(), Some(2), "usage error");
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(said.contains("is not empty"), "{said}");
    assert_eq!(get_key(&c, &key)["material"]["version"], 2);
}

/// The existing check of the official Python client, against a server on the etcd store.
#[test]
fn the_official_python_client_works_unchanged_on_the_etcd_store() {
    let zone = Zone::start(1);
    let creds = zone.org("python");
    common::python_client::check(&zone.servers[0].url, &creds.json);
}

/// `call`, but `None` when the server does not answer (it was killed).
fn try_call(c: &KmsClient, method: &str, path: &str, body: &Value) -> Option<(u16, Value)> {
    let bytes = body.to_string().into_bytes();
    let expires = common::kms_server::now() + 300;
    let auth = c.authorization(&c.creds.api_secret, method, path, &bytes, expires);
    let response = reqwest::blocking::Client::new()
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).expect("a method"),
            format!("{}{path}", c.base),
        )
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(bytes)
        .timeout(Duration::from_secs(10))
        .send()
        .ok()?;
    let status = response.status().as_u16();
    let json = serde_json::from_slice(&response.bytes().ok()?).unwrap_or(Value::Null);
    Some((status, json))
}

#[test]
fn a_server_killed_under_load_loses_no_acknowledged_create() {
    let mut zone = Zone::start(3);
    let creds = zone.org("acme");
    let workers: Vec<_> = (0..3)
        .map(|i| {
            let c = zone.client(i, &creds);
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let started = Instant::now();
                let mut n = 0;
                while started.elapsed() < Duration::from_secs(3) {
                    n += 1;
                    let body = json!({ "name": format!("w{i}-{n}") });
                    match try_call(&c, "POST", "/kms-key", &body) {
                        Some((200, key)) => {
                            acked.push(key["id"].as_str().expect("an id").to_string())
                        }
                        Some((status, body)) => panic!("create answered {status}: {body}"),
                        None => break,
                    }
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    zone.servers[0].kill_9();
    let acked: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("a worker"))
        .collect();
    for s in 1..3 {
        let c = zone.client(s, &creds);
        let missing = || -> Vec<String> {
            let listed = ok(c.call("GET", "/kms-key", None));
            let ids: Vec<&str> = listed["kms-keys"]
                .as_array()
                .expect("kms-keys")
                .iter()
                .filter_map(|k| k["id"].as_str())
                .collect();
            acked
                .iter()
                .filter(|id| !ids.contains(&id.as_str()))
                .cloned()
                .collect()
        };
        // The survivors may need a moment to follow the last changes through their watch.
        within(Duration::from_secs(2), || missing().is_empty())
            .unwrap_or_else(|| panic!("server {s} lacks acknowledged keys {:?}", missing()));
    }
    eprintln!(
        "{} acknowledged creates, all on both survivors",
        acked.len()
    );
    assert!(acked.len() > 10, "too few creates to mean anything");
}

#[test]
fn a_mount_pointed_at_all_three_servers_keeps_working_when_one_is_killed() {
    let mut zone = Zone::start(3);
    let creds = zone.org("acme");
    let mut env = common::Env::new();
    env.vars
        .push(("EXOSCALE_API_KEY".into(), creds.api_key.clone()));
    env.vars
        .push(("EXOSCALE_API_SECRET".into(), creds.api_secret.clone()));
    let list = (0..3)
        .map(|i| zone.servers[i].url.clone())
        .collect::<Vec<_>>()
        .join(",");
    env.ok(&["init", common::Env::s(&env.cipher), "--kms", &list]);
    let mount = env.mount();
    for i in 0..10 {
        std::fs::write(env.plain.join(format!("before{i}")), format!("before {i}"))
            .expect("write before the kill");
    }
    // The first endpoint, which the mount has used so far, dies under it.
    zone.servers[0].kill_9();
    for i in 0..10 {
        std::fs::write(env.plain.join(format!("after{i}")), format!("after {i}"))
            .expect("a new file (a new data key) after the kill");
    }
    mount.unmount();
    // A fresh mount (cold data-key cache) unwraps every file through the survivors.
    let _mount = env.mount();
    for name in ["before", "after"] {
        for i in 0..10 {
            let text = std::fs::read_to_string(env.plain.join(format!("{name}{i}")))
                .expect("read after the kill");
            assert_eq!(text, format!("{name} {i}"));
        }
    }
}
