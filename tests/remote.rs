//! The remote backend against a real `kmsfs kms serve` on 127.0.0.1: a mount that survives a
//! KMS outage, the known-endpoint rule (a tampered kmsfs.conf gets no request), credentials,
//! `kmsfs key --kms`, and `kmsfs kms bench`.

mod common;

use common::kms_server::{NO_SUCH_KEY, ServerGuard, create_org};
use common::{Env, is_mounted};
use std::net::TcpListener;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Output;
use std::sync::mpsc;
use std::time::Duration;

/// A test environment with a server, an organization, and its credentials in every command.
struct World {
    env: Env,
    server: ServerGuard,
    endpoint: String,
}

impl World {
    fn new() -> World {
        let mut env = Env::new();
        let data = env.dir.path().join("kms-data");
        let server = ServerGuard::start_in(&data, "ch-gva-2", "127.0.0.1:0", &[]);
        let org = create_org(&data);
        env.vars.push(("EXOSCALE_API_KEY".into(), org.api_key));
        env.vars
            .push(("EXOSCALE_API_SECRET".into(), org.api_secret));
        World {
            endpoint: server.url.clone(),
            env,
            server,
        }
    }

    fn init(&self) {
        self.env
            .ok(&["init", Env::s(&self.env.cipher), "--kms", &self.endpoint]);
    }
}

fn one_sentence(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with("kmsfs: ") && !stderr.contains("panicked"),
        "{stderr}"
    );
    stderr
}

/// Opens `path` for reading on another thread; `None` if it did not return in 60 s.
fn read_bounded(path: &Path) -> Option<std::io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel();
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::read(&path));
    });
    rx.recv_timeout(Duration::from_secs(60)).ok()
}

#[test]
fn a_remote_mount_survives_a_kms_outage() {
    let mut world = World::new();
    world.init();
    let conf = std::fs::read_to_string(world.env.cipher.join("kmsfs.conf")).expect("conf");
    assert!(conf.contains(r#""backend": "remote""#), "{conf}");
    assert!(
        !conf.contains(&world.env.vars[1].1),
        "no secret in kmsfs.conf"
    );
    // A first mount writes two files; the next mount starts with an empty DEK cache.
    let mount = world.env.mount();
    std::fs::write(world.env.plain.join("cached"), b"hot file").expect("write");
    std::fs::write(world.env.plain.join("cold"), b"cold file").expect("write");
    mount.unmount();
    let _mount = world.env.mount();
    let cached = world.env.plain.join("cached");
    let cold = world.env.plain.join("cold");
    assert_eq!(std::fs::read(&cached).expect("read"), b"hot file");
    std::fs::write(world.env.plain.join("fresh"), b"new").expect("create");
    // That create had the daemon make DEKs ahead (64, from 4 threads, in a few milliseconds
    // here); give it ample time before the KMS goes.
    std::thread::sleep(Duration::from_secs(1));

    world.server.kill_9();
    // New files still get keys for a while: from the DEKs made ahead.
    std::fs::write(world.env.plain.join("during"), b"made during the outage")
        .expect("create during the outage");
    assert_eq!(
        std::fs::read(world.env.plain.join("during")).expect("read"),
        b"made during the outage"
    );
    // Cached keys keep working, reading and writing.
    assert_eq!(std::fs::read(&cached).expect("cached read"), b"hot file");
    // (Truncating to empty drops the DEK, and a new one needs the KMS: write in place.)
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&cached)
        .expect("cached open for writing");
    file.write_all_at(b"still writable", 0)
        .expect("cached write");
    drop(file);
    assert_eq!(
        std::fs::read(&cached).expect("read back"),
        b"still writable"
    );
    // An uncached file fails with EIO, in bounded time, and the daemon lives on.
    let err = read_bounded(&cold)
        .expect("the open returned")
        .expect_err("no KMS, no key");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(is_mounted(&world.env.plain));
    assert_eq!(std::fs::read(&cached).expect("alive"), b"still writable");
    let log = world.env.log_text();
    let lines = log
        .lines()
        .filter(|l| l.contains("cannot unwrap the file key"))
        .count();
    assert_eq!(lines, 1, "one log line for the failed open: {log}");

    // The KMS comes back on the same address: opens work again without a remount.
    world.server.restart();
    let back = read_bounded(&cold).expect("the open returned");
    assert_eq!(back.expect("KMS is back"), b"cold file");
    assert_eq!(
        std::fs::read(world.env.plain.join("fresh")).expect("fresh"),
        b"new"
    );
}

#[test]
fn a_tampered_endpoint_gets_no_request() {
    let world = World::new();
    world.init();
    let fake = TcpListener::bind("127.0.0.1:0").expect("bind");
    fake.set_nonblocking(true).expect("nonblocking");
    let fake_url = format!("http://{}/v2", fake.local_addr().expect("addr"));
    let conf_path = world.env.cipher.join("kmsfs.conf");
    let conf = std::fs::read_to_string(&conf_path).expect("conf");
    std::fs::write(&conf_path, conf.replace(&world.endpoint, &fake_url)).expect("tamper");
    let cipher = Env::s(&world.env.cipher);
    let plain = Env::s(&world.env.plain);

    let err = one_sentence(&world.env.run(&["mount", cipher, plain]));
    assert!(err.contains(&fake_url) && err.contains("tampered"), "{err}");
    let err = one_sentence(&world.env.run(&["fsck", cipher]));
    assert!(err.contains("--kms"), "{err}");
    one_sentence(&world.env.run(&["key", "list", "--cipherdir", cipher]));
    // Naming another endpoint than the conf's does not help either.
    let err = one_sentence(
        &world
            .env
            .run(&["mount", cipher, plain, "--kms", &world.endpoint]),
    );
    assert!(err.contains("is not the endpoint"), "{err}");
    // A user without a record (another config home) is refused too.
    let mut stranger = world.env.cmd();
    stranger.env("XDG_CONFIG_HOME", world.env.dir.path().join("elsewhere"));
    let out = stranger
        .args(["mount", cipher, plain])
        .output()
        .expect("run");
    let err = one_sentence(&out);
    assert!(err.contains("never used"), "{err}");
    assert!(!is_mounted(&world.env.plain));
    match fake.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the fake endpoint was contacted: {other:?}"),
    }

    // Restored, the directory mounts; --kms with the real endpoint also works and records it.
    std::fs::write(&conf_path, &conf).expect("restore");
    let mount = world.env.mount_with(&["--kms", &world.endpoint]);
    std::fs::write(world.env.plain.join("f"), b"ok").expect("write");
    mount.unmount();
}

#[test]
fn missing_credentials_are_one_sentence() {
    let mut world = World::new();
    world.init();
    let saved = std::mem::take(&mut world.env.vars);
    let other = world.env.dir.path().join("other");
    let err = one_sentence(
        &world
            .env
            .run(&["init", Env::s(&other), "--kms", &world.endpoint]),
    );
    assert!(
        err.contains("EXOSCALE_API_KEY") && err.contains("EXOSCALE_API_SECRET"),
        "{err}"
    );
    let cipher = Env::s(&world.env.cipher);
    let err = one_sentence(&world.env.run(&["mount", cipher, Env::s(&world.env.plain)]));
    assert!(err.contains("EXOSCALE_API_KEY"), "{err}");
    // A wrong secret is a plain refusal.
    world.env.vars = saved;
    world.env.vars[1].1 = "wrong".into();
    let out = world.env.run(&["key", "list", "--kms", &world.endpoint]);
    let err = one_sentence(&out);
    assert!(err.contains("refused the credentials"), "{err}");
    assert_eq!(out.status.code(), Some(4), "{err}");
    let err = one_sentence(&world.env.run(&["key", "list", "--kms", "nonsense"]));
    assert!(err.contains("not a KMS endpoint"), "{err}");
}

#[test]
fn key_commands_speak_to_a_remote_kms() {
    let world = World::new();
    let kms = world.endpoint.as_str();
    let created = world
        .env
        .ok(&["key", "create", "k1", "--kms", kms, "--json"]);
    let key: serde_json::Value = serde_json::from_str(&created).expect("key JSON");
    assert_eq!(key["status"], "enabled");
    assert!(key["rotation"]["rotation-period"].is_number(), "{key}");
    let id = key["id"].as_str().expect("id").to_string();
    let id = id.as_str();
    assert!(world.env.ok(&["key", "list", "--kms", kms]).contains("k1"));
    let list = world.env.ok(&["key", "list", "--kms", kms, "--json"]);
    assert!(list.contains("\"kms-keys\""), "{list}");
    assert!(
        world
            .env
            .ok(&["key", "show", id, "--kms", kms])
            .contains("k1")
    );
    world.env.ok(&["key", "rotate", id, "--kms", kms]);
    let rotations = world
        .env
        .ok(&["key", "rotations", id, "--kms", kms, "--json"]);
    assert!(rotations.contains("\"rotated-at\""), "{rotations}");
    world.env.ok(&["key", "disable-rotation", id, "--kms", kms]);
    world
        .env
        .ok(&["key", "enable-rotation", id, "--period", "90", "--kms", kms]);
    world.env.ok(&["key", "disable", id, "--kms", kms]);
    let err = one_sentence(&world.env.run(&["key", "rotate", id, "--kms", kms]));
    assert!(err.contains("Key is Disabled"), "{err}");
    world.env.ok(&["key", "enable", id, "--kms", kms]);
    let again = world.env.ok(&["key", "enable", id, "--kms", kms, "--json"]);
    assert!(again.contains("already-applied"), "{again}");
    let err = one_sentence(&world.env.run(&[
        "key",
        "enable-rotation",
        id,
        "--period",
        "120",
        "--kms",
        kms,
    ]));
    assert!(err.contains("Conflict"), "{err}");
    let deletion = world.env.ok(&[
        "key",
        "schedule-deletion",
        id,
        "--days",
        "7",
        "--kms",
        kms,
        "--json",
    ]);
    assert!(deletion.contains("\"delete-at\""), "{deletion}");
    world.env.ok(&["key", "cancel-deletion", id, "--kms", kms]);
    let err = one_sentence(&world.env.run(&["key", "create", "k1", "--kms", kms]));
    assert!(err.contains("Name Conflict"), "{err}");
    let err = one_sentence(&world.env.run(&["key", "show", NO_SUCH_KEY, "--kms", kms]));
    assert!(err.contains("Key Not Found"), "{err}");
    // init with an existing key, then the directory's KMS through --cipherdir.
    world.env.ok(&["key", "enable", id, "--kms", kms]);
    world
        .env
        .ok(&["init", Env::s(&world.env.cipher), "--kms", kms, "--key", id]);
    let shown = world
        .env
        .ok(&["key", "show", id, "--cipherdir", Env::s(&world.env.cipher)]);
    assert!(shown.contains("k1"), "{shown}");
}

#[test]
fn kms_bench_runs_without_errors() {
    let world = World::new();
    for op in ["decrypt", "generate-data-key", "encrypt"] {
        let args = [
            "kms",
            "bench",
            "--kms",
            &world.endpoint,
            "--concurrency",
            "4",
            "--seconds",
            "2",
            "--op",
            op,
            "--json",
        ];
        let report: serde_json::Value =
            serde_json::from_str(&world.env.ok(&args)).expect("bench JSON");
        assert_eq!(report["failed"], 0, "{report}");
        assert!(report["ok"].as_u64().expect("ok count") > 0, "{report}");
        assert!(
            report["latency_ms"]["p99"].as_f64().expect("p99") > 0.0,
            "{report}"
        );
    }
    let text = world
        .env
        .ok(&["kms", "bench", "--kms", &world.endpoint, "--seconds", "1"]);
    assert!(text.contains("ops/s") && text.contains("p99"), "{text}");
}

/// Lines of the server's audit log once it has stopped growing (it is written in the
/// background): one per API call.
fn settled_audit_lines(world: &World) -> usize {
    let path = world.server.data.join("audit.log");
    let count = || {
        std::fs::read_to_string(&path)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let mut last = count();
    loop {
        std::thread::sleep(Duration::from_millis(700));
        let now = count();
        if now == last {
            return now;
        }
        last = now;
    }
}

#[test]
fn listing_ten_thousand_encrypted_names_makes_no_kms_call() {
    let world = World::new();
    world.init();
    let mount = world.env.mount();
    let dir = world.env.plain.join("many");
    std::fs::create_dir(&dir).expect("mkdir");
    for i in 0..10_000 {
        std::fs::File::create(dir.join(format!("file-with-a-longer-name-{i:05}"))).expect("create");
    }
    mount.unmount();
    let _mount = world.env.mount();
    let before = settled_audit_lines(&world);
    // The log does count calls: the mount asked for its key and unwrapped the name key.
    assert!(before >= 2, "{before} audit lines after a mount");
    // ls -l: every name decrypted, every entry's attributes.
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("list") {
        let entry = entry.expect("entry");
        assert!(entry.file_name().to_string_lossy().starts_with("file-with"));
        entry.metadata().expect("stat");
        seen += 1;
    }
    assert_eq!(seen, 10_000);
    assert_eq!(
        settled_audit_lines(&world),
        before,
        "listing names asked the KMS nothing"
    );
}

#[test]
fn fsck_names_a_file_whose_key_id_the_kms_refuses_and_stops_when_the_kms_is_down() {
    let mut world = World::new();
    world.init();
    let mount = world.env.mount();
    for name in ["a", "b", "c"] {
        std::fs::write(world.env.plain.join(name), name.repeat(5000)).expect("write");
    }
    let changed = world.env.cipher_path("b");
    mount.unmount();
    // Key id of "b" → a key the server does not have: "Key Not Found", about this file only.
    let no_such_key = uuid::Uuid::parse_str(NO_SUCH_KEY).expect("uuid");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&changed)
        .expect("open");
    f.write_all_at(no_such_key.as_bytes(), 28)
        .expect("change the key id");
    drop(f);
    let out = world.env.fsck();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert_eq!(report.lines().count(), 1, "{report}");
    let expected = format!(
        "{} (plaintext /b): header: the KMS refuses key {no_such_key}, the key the header names: Key Not Found",
        changed.display()
    );
    assert!(report.starts_with(&expected), "{report}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("3 files checked, 1 damaged"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A KMS that cannot be reached is no damage of any file: one sentence, nothing checked.
    world.server.kill_9();
    let out = world.env.fsck();
    let err = one_sentence(&out);
    assert_eq!(out.status.code(), Some(3), "the KMS is unavailable: {err}");
    // With encrypted names the first call is the name key's unwrap; either way one sentence.
    assert!(
        (err.contains("cannot check") || err.contains("cannot unwrap the directory's name key"))
            && err.contains("unreachable"),
        "{err}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "no file is called damaged"
    );
}
