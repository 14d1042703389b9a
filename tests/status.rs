//! `kmsfs status` against real mounts: the counters move with reads, every mount is listed
//! and an unmounted one is gone, the control socket is owner-only, a stopped daemon does not
//! hang the command and a killed one's socket is reported then replaced, an EIO is counted and
//! named; and `--log-format json` gives the daemon's log as JSON lines naming the mount.

mod common;

use common::Env;
use common::kms_server::{ServerGuard, create_org};
use serde_json::Value;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// `kmsfs status --json [MOUNTPOINT]` of `env`, and its exit code.
fn status_json(env: &Env, mountpoint: Option<&Path>, extra: &[&str]) -> (Value, i32) {
    let mut args = vec!["status", "--json"];
    args.extend_from_slice(extra);
    if let Some(m) = mountpoint {
        args.push(Env::s(m));
    }
    let out = env.run(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    let value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "status --json is not JSON ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (value, out.status.code().unwrap_or(-1))
}

/// The status of `env`'s own mount, as its daemon told it.
fn own_status(env: &Env) -> Value {
    let (all, code) = status_json(env, Some(&env.plain), &[]);
    assert_eq!(code, 0, "{all:#}");
    let mounts = all["mounts"].as_array().expect("mounts");
    assert_eq!(mounts.len(), 1, "{all:#}");
    assert_eq!(mounts[0]["answering"], true, "{all:#}");
    mounts[0]["status"].clone()
}

/// The mount points `kmsfs status --json` lists (other tests' mounts included).
fn listed(env: &Env) -> Vec<String> {
    let (all, _) = status_json(env, None, &[]);
    all["mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .map(|m| m["mountpoint"].as_str().expect("mountpoint").to_string())
        .collect()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

fn canonical(p: &Path) -> String {
    std::fs::canonicalize(p)
        .expect("canonical")
        .display()
        .to_string()
}

/// The status of `env`'s mount once the daemon knows the key's version (asked in the
/// background at start).
fn status_with_key_version(env: &Env) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = own_status(env);
        if !status["key-version"].is_null() || Instant::now() > deadline {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn status_shows_the_mount_and_its_counters_moving_with_reads() {
    let env = Env::new();
    env.init();
    let files = ["a", "b", "c"];
    {
        let _mount = env.mount();
        for name in files {
            std::fs::write(env.plain.join(name), vec![7u8; 10_000]).expect("write");
        }
    }
    // A fresh mount: a cold DEK cache.
    let _mount = env.mount();
    let before = status_with_key_version(&env);
    assert_eq!(before["mountpoint"], canonical(&env.plain));
    assert_eq!(before["cipherdir"], canonical(&env.cipher));
    assert_eq!(before["kms"]["kind"], "embedded");
    assert_eq!(before["kms"]["keystore"], canonical(&env.keystore));
    assert_eq!(before["key-id"], env.key_id());
    assert_eq!(before["key-version"], 1);
    assert_eq!(before["key-status"], "enabled");
    assert!(before["uptime-seconds"].is_u64());
    assert!(before["pid"].as_u64().is_some_and(|p| p > 0));
    assert_eq!(u(&before["dek-cache"]["hits"]), 0, "{before:#}");
    assert_eq!(u(&before["dek-cache"]["misses"]), 0, "{before:#}");
    assert_eq!(u(&before["errors"]["eio"]), 0);
    assert!(before["errors"]["last"].is_null());

    for name in files {
        assert_eq!(
            std::fs::read(env.plain.join(name)).expect("read").len(),
            10_000
        );
    }
    let first = own_status(&env);
    // Every file's DEK came from the KMS once.
    assert_eq!(u(&first["dek-cache"]["misses"]), 3, "{first:#}");
    let decrypts: Vec<&Value> = first["kms-calls"]
        .as_array()
        .expect("kms-calls")
        .iter()
        .filter(|c| c["operation"] == "decrypt")
        .collect();
    assert_eq!(decrypts.len(), 1, "{first:#}");
    assert_eq!(u(&decrypts[0]["calls"]), 3, "{first:#}");
    assert_eq!(u(&decrypts[0]["errors"]), 0);
    assert_eq!(u(&decrypts[0]["latency"]["count"]), 3);
    assert!(
        u(&first["requests"]["by-operation"]["read"]) >= 3,
        "{first:#}"
    );
    assert!(
        u(&first["requests"]["by-operation"]["open"]) >= 3,
        "{first:#}"
    );
    assert!(u(&first["requests"]["total"]) > u(&before["requests"]["total"]));

    // Opened again: the DEKs come from the cache; a file held open is counted. (The kernel
    // releases a closed file after close(2) returns; until then a new open shares the
    // handle's key and never asks the cache: wait for every release first.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while u(&own_status(&env)["open-files"]) != 0 {
        assert!(std::time::Instant::now() < deadline, "files stay open");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let held = std::fs::File::open(env.plain.join("a")).expect("open");
    for name in files {
        std::fs::read(env.plain.join(name)).expect("read");
    }
    let second = own_status(&env);
    assert!(u(&second["dek-cache"]["hits"]) >= 3, "{second:#}");
    assert_eq!(u(&second["dek-cache"]["misses"]), 3, "{second:#}");
    assert_eq!(u(&second["dek-cache"]["entries"]), 3, "{second:#}");
    assert_eq!(u(&second["open-files"]), 1, "{second:#}");
    assert!(
        u(&second["requests"]["by-operation"]["open"]) >= 7,
        "{second:#}"
    );
    drop(held);

    // The text form says the same, in sentences.
    let text = env.ok(&["status", Env::s(&env.plain)]);
    assert!(
        text.contains(&format!("{}, version 1 (enabled)", env.key_id())),
        "{text}"
    );
    assert!(text.contains("embedded, keystore"), "{text}");
    assert!(text.contains("3 misses"), "{text}");
}

#[test]
fn every_mount_is_listed_and_an_unmounted_one_is_gone_with_its_socket() {
    let one = Env::new();
    let two = Env::new();
    one.init();
    two.init();
    let first = one.mount();
    let _second = two.mount();
    let (a, b) = (canonical(&one.plain), canonical(&two.plain));
    let mounts = listed(&one);
    assert!(mounts.contains(&a) && mounts.contains(&b), "{mounts:?}");
    let socket = own_status(&one)["control-socket"]
        .as_str()
        .expect("socket")
        .to_string();
    assert!(Path::new(&socket).exists());
    first.unmount();
    let mounts = listed(&one);
    assert!(!mounts.contains(&a) && mounts.contains(&b), "{mounts:?}");
    assert!(
        !Path::new(&socket).exists(),
        "{socket} is left after unmount"
    );
    // Asked about a path where nothing is mounted: one sentence, a failure.
    let out = one.run(&["status", Env::s(&one.plain)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no kmsfs mount is at"), "{err}");
}

#[test]
fn the_control_socket_is_the_owners_alone() {
    let env = Env::new();
    env.init();
    let _mount = env.mount();
    let socket = own_status(&env)["control-socket"]
        .as_str()
        .expect("socket")
        .to_string();
    let meta = std::fs::symlink_metadata(&socket).expect("stat socket");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o777, 0o600, "socket mode {:o}", meta.mode());
    assert_eq!(meta.uid(), euid());
    let dir = Path::new(&socket).parent().expect("dir");
    let dir_meta = std::fs::metadata(dir).expect("stat dir");
    assert_eq!(
        dir_meta.mode() & 0o777,
        0o700,
        "directory mode {:o}",
        dir_meta.mode()
    );
}

/// This process's effective user id (the owner of /proc/self).
fn euid() -> u32 {
    std::fs::metadata("/proc/self")
        .expect("stat /proc/self")
        .uid()
}

/// Sends `signal` to `pid` (a daemon this test started).
fn signal(pid: u64, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid}");
}

/// Resumes a stopped daemon on drop, so that a failing test leaves none stopped.
struct Resume(u64);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

#[test]
fn a_stopped_daemon_times_out_and_a_killed_ones_socket_is_reported_then_replaced() {
    let env = Env::new();
    env.init();
    let mount = env.mount();
    let status = own_status(&env);
    let pid = u(&status["pid"]);
    let socket = status["control-socket"]
        .as_str()
        .expect("socket")
        .to_string();

    // A daemon that cannot answer (stopped): status waits --timeout, then says so.
    signal(pid, "-STOP");
    let resume = Resume(pid);
    let (all, code) = status_json(&env, Some(&env.plain), &["--timeout", "1"]);
    assert_eq!(code, 1, "{all:#}");
    assert_eq!(all["mounts"][0]["answering"], false, "{all:#}");
    let problem = all["mounts"][0]["problem"].as_str().expect("problem");
    assert!(problem.contains("did not answer within 1 s"), "{problem}");
    drop(resume);
    assert_eq!(own_status(&env)["pid"], pid);

    // A killed daemon leaves its socket and a dead mount: reported, not waited for.
    signal(pid, "-KILL");
    common::process_gone_within(pid, Duration::from_secs(10));
    assert!(Path::new(&socket).exists(), "the killed daemon's socket");
    let (all, code) = status_json(&env, Some(&env.plain), &[]);
    assert_eq!(code, 1, "{all:#}");
    let problem = all["mounts"][0]["problem"].as_str().expect("problem");
    assert!(
        problem.contains("left by a daemon that is gone"),
        "{problem}"
    );
    let text =
        String::from_utf8_lossy(&env.run(&["status", Env::s(&env.plain)]).stdout).into_owned();
    assert!(text.contains("does not answer"), "{text}");

    // The next daemon of that mount point replaces the stale socket.
    let out = Command::new("umount")
        .arg("-l")
        .arg(&env.plain)
        .output()
        .expect("umount");
    assert!(out.status.success(), "umount -l of the dead mount");
    drop(mount);
    let _again = env.mount();
    let status = own_status(&env);
    assert_eq!(status["control-socket"], socket.as_str());
    assert_ne!(u(&status["pid"]), pid);
    assert!(
        env.log_text()
            .contains("replacing a control socket no daemon answers on"),
        "{}",
        env.log_text()
    );
}

#[test]
fn an_eio_is_counted_and_the_last_error_names_the_file_and_block() {
    let env = Env::new();
    env.init();
    let cipher_file = {
        let _mount = env.mount();
        std::fs::write(env.plain.join("damaged"), vec![1u8; 9000]).expect("write");
        env.cipher_path("damaged")
    };
    // One flipped ciphertext byte in block 1 (after the 512-byte header and block 0).
    let at = 512 + 4124 + 12 + 40;
    let mut bytes = std::fs::read(&cipher_file).expect("read cipher");
    bytes[at] ^= 0x01;
    std::fs::write(&cipher_file, &bytes).expect("write cipher");
    let _mount = env.mount();
    let err = std::fs::read(env.plain.join("damaged")).expect_err("a damaged block reads EIO");
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    let status = own_status(&env);
    assert!(u(&status["errors"]["eio"]) >= 1, "{status:#}");
    assert!(u(&status["errors"]["logged"]) >= 1, "{status:#}");
    let last = &status["errors"]["last"];
    assert_eq!(
        last["path"],
        cipher_file.display().to_string(),
        "{status:#}"
    );
    assert_eq!(last["block"], "1", "{status:#}");
    assert!(
        last["message"]
            .as_str()
            .is_some_and(|m| m.contains("authentication failed")),
        "{status:#}"
    );
}

#[test]
fn json_logs_are_one_object_a_line_each_naming_the_mount() {
    let env = Env::new();
    env.init();
    let mount = env.mount_with(&["--log-format", "json"]);
    std::fs::write(env.plain.join("f"), b"hello").expect("write");
    assert_eq!(std::fs::read(env.plain.join("f")).expect("read"), b"hello");
    mount.unmount();
    // The daemon's last lines are written as it exits: wait for them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !env.log_text().contains("daemon exits") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = env.log_text();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 3, "{log}");
    let mountpoint = canonical(&env.plain);
    for line in &lines {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert_eq!(value["mount"], mountpoint.as_str(), "{line}");
        assert!(
            value["level"].is_string() && value["timestamp"].is_string(),
            "{line}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains("\"message\":\"mounted\"")),
        "{log}"
    );
    assert!(
        lines.iter().any(|l| l.contains("DEK cache counters")),
        "{log}"
    );
    // Text stays the default.
    let env = Env::new();
    env.init();
    env.mount().unmount();
    let text = env.log_text();
    assert!(!text.trim().is_empty() && !text.starts_with('{'), "{text}");
}

#[test]
fn a_remote_mount_names_its_kms_and_status_answers_while_the_kms_is_down() {
    let mut env = Env::new();
    let data = env.dir.path().join("kms-data");
    let mut server = ServerGuard::start_in(&data, "ch-gva-2", "127.0.0.1:0", &[]);
    let org = create_org(&data);
    env.vars.push(("EXOSCALE_API_KEY".into(), org.api_key));
    env.vars
        .push(("EXOSCALE_API_SECRET".into(), org.api_secret));
    env.ok(&["init", Env::s(&env.cipher), "--kms", &server.url]);
    {
        let _mount = env.mount();
        std::fs::write(env.plain.join("a"), b"first").expect("write");
        std::fs::write(env.plain.join("b"), b"second").expect("write");
    }
    let _mount = env.mount();
    let status = status_with_key_version(&env);
    assert_eq!(status["kms"]["kind"], "remote", "{status:#}");
    assert_eq!(status["kms"]["url"], server.url.as_str(), "{status:#}");
    assert_eq!(status["key-version"], 1, "{status:#}");
    assert_eq!(std::fs::read(env.plain.join("a")).expect("read"), b"first");
    let calls = |status: &Value, op: &str, field: &str| {
        status["kms-calls"]
            .as_array()
            .expect("kms-calls")
            .iter()
            .find(|c| c["operation"] == op)
            .map_or(0, |c| u(&c[field]))
    };
    let up = own_status(&env);
    assert_eq!(calls(&up, "decrypt", "calls"), 1, "{up:#}");
    assert_eq!(calls(&up, "decrypt", "errors"), 0, "{up:#}");

    // The KMS goes away: a file whose key is not cached reads EIO, and the daemon still
    // answers at once, with the failed call and the EIO counted.
    server.kill_9();
    let err = std::fs::read(env.plain.join("b")).expect_err("no KMS, no key");
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    // (own_status insists on an answer within status's default 3 s timeout.)
    let down = own_status(&env);
    assert!(calls(&down, "decrypt", "errors") >= 1, "{down:#}");
    assert!(u(&down["errors"]["eio"]) >= 1, "{down:#}");
    assert!(down["errors"]["last"]["path"].is_string(), "{down:#}");
    // The cached file still reads.
    assert_eq!(std::fs::read(env.plain.join("a")).expect("read"), b"first");
}
