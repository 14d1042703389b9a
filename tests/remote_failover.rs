//! A remote KMS at several endpoints (`--kms URL1,URL2`), against real `kmsfs kms serve`
//! processes on 127.0.0.1: a first endpoint that refuses connections, a server killed with
//! SIGKILL under a mount while a second one serves the same (replicated) key, a server whose
//! data directory turned read-only (it answers 500 to changes), and answers that judged the
//! request (4xx), which must never reach a second server. One stand-in that answers 503 to
//! everything plays a broken endpoint, next to the real servers.

mod common;

use common::kms_server::zones::{Zones, reserve_port, wait_until};
use common::kms_server::{KmsClient, NO_SUCH_KEY, ServerGuard, create_org, get_key, ok, post};
use common::{Env, MountGuard, is_mounted};
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A URL where nothing listens.
fn closed_url() -> String {
    format!("http://127.0.0.1:{}/v2", reserve_port())
}

/// `env` with the credentials of `client`'s organization in every command.
fn with_creds(env: &mut Env, client: &KmsClient) {
    env.vars
        .push(("EXOSCALE_API_KEY".into(), client.creds.api_key.clone()));
    env.vars.push((
        "EXOSCALE_API_SECRET".into(),
        client.creds.api_secret.clone(),
    ));
}

/// The lines of a server's audit log, once it stopped growing (it is written asynchronously).
fn settled_audit(data: &Path) -> Vec<String> {
    let read = || {
        std::fs::read_to_string(data.join("audit.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let mut last = read();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = read();
        if now == last {
            return now;
        }
        last = now;
    }
}

/// The failover lines of a log that name a move away from `from`.
fn moves_from(log: &str, from: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(&format!("KMS endpoint {from} failed")) && l.contains("; trying "))
        .map(str::to_string)
        .collect()
}

fn one_sentence(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let last = stderr.trim_end().lines().last().unwrap_or("").to_string();
    assert!(
        last.starts_with("kmsfs: ") && !stderr.contains("panicked"),
        "{stderr}"
    );
    last
}

/// Two zone servers with an organization in both and a multi-zone key replicated from the first
/// to the second: two servers that can unwrap the same data keys.
struct Pair {
    zones: Zones,
    clients: Vec<KmsClient>,
    key: String,
}

impl Pair {
    fn start() -> Pair {
        let zones = Zones::start(&["ch-gva-2", "de-fra-1"]);
        let clients = zones.org();
        let key = clients[0].create_multi_zone_key("volume");
        ok(post(
            &clients[0],
            &key,
            "replicate",
            json!({"zone": "de-fra-1"}),
        ));
        assert_eq!(get_key(&clients[1], &key)["origin-zone"], "ch-gva-2");
        Pair {
            zones,
            clients,
            key,
        }
    }

    fn url(&self, i: usize) -> String {
        self.zones.servers[i].url.clone()
    }

    fn both(&self) -> String {
        format!("{},{}", self.url(0), self.url(1))
    }
}

/// A `kmsfs mount --foreground` child (its log on stderr, in a file); the mount guard unmounts
/// and the child is killed on drop, even when the test fails.
struct Foreground {
    child: Child,
    _mount: MountGuard,
}

impl Drop for Foreground {
    fn drop(&mut self) {
        // The mount guard's drop comes after this one: unmount first, then the process ends.
        let _ = Command::new("umount").arg(&self._mount.mountpoint).output();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mount_foreground(env: &Env, stderr: &Path) -> Foreground {
    let log = std::fs::File::create(stderr).expect("create the stderr file");
    let mut cmd = env.cmd();
    cmd.args(env.mount_args())
        .arg("--foreground")
        .stdout(Stdio::null())
        .stderr(log);
    let child = cmd.spawn().expect("start kmsfs mount --foreground");
    let guard = Foreground {
        child,
        _mount: MountGuard::adopt(env),
    };
    wait_until("the foreground mount", Duration::from_secs(30), || {
        is_mounted(&env.plain)
    });
    guard
}

#[test]
fn a_closed_first_endpoint_costs_one_failover_and_the_mount_works() {
    let mut env = Env::new();
    let data = env.dir.path().join("kms-data");
    let server = ServerGuard::start_in(&data, "ch-gva-2", "127.0.0.1:0", &[]);
    let org = create_org(&data);
    let client = KmsClient::new(&server.url, org);
    with_creds(&mut env, &client);
    let closed = closed_url();
    let list = format!("{closed},{}", server.url);
    env.ok(&["init", Env::s(&env.cipher), "--kms", &list]);

    // kmsfs.conf: the first URL where one endpoint always was, and the whole list.
    let conf: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(env.cipher.join("kmsfs.conf")).expect("conf"),
    )
    .expect("json");
    assert_eq!(conf["kms"]["endpoint"], closed.as_str());
    assert_eq!(conf["kms"]["endpoints"], json!([closed, server.url]));

    let mount = env.mount();
    for i in 0..8 {
        std::fs::write(env.plain.join(format!("f{i}")), format!("file {i}")).expect("write");
    }
    mount.unmount();

    // The known-endpoint rule holds for the whole list: an endpoint added to kmsfs.conf by
    // whoever can write the directory gets no request, and naming the list trusts it again.
    let conf_path = env.cipher.join("kmsfs.conf");
    let original = std::fs::read_to_string(&conf_path).expect("conf");
    let stranger = closed_url();
    let mut tampered = conf.clone();
    tampered["kms"]["endpoints"] = json!([closed, server.url, stranger]);
    std::fs::write(&conf_path, tampered.to_string()).expect("tamper");
    let out = env.run(&env.mount_args());
    assert_eq!(out.status.code(), Some(8), "{}", one_sentence(&out));
    let sentence = one_sentence(&out);
    assert!(
        sentence.contains(&format!("now names the KMS endpoint {list},{stranger}")),
        "{sentence}"
    );
    std::fs::write(&conf_path, &original).expect("restore");
    std::fs::remove_file(
        env.dir
            .path()
            .join("config-home/kmsfs/known-endpoints.json"),
    )
    .expect("forget the record");
    let out = env.run(&env.mount_args());
    assert!(
        one_sentence(&out).contains(&format!("name it on the command line: --kms {list}")),
        "{}",
        one_sentence(&out)
    );
    let key = conf["key-id"].as_str().expect("key id");
    let cipher = Env::s(&env.cipher);
    env.ok(&["key", "show", key, "--cipherdir", cipher, "--kms", &list]);

    // A fresh mount (cold DEK cache) in the foreground, so its whole log is on its stderr.
    let stderr = env.dir.path().join("foreground.log");
    let foreground = mount_foreground(&env, &stderr);
    for i in 0..8 {
        let text = std::fs::read_to_string(env.plain.join(format!("f{i}"))).expect("read");
        assert_eq!(text, format!("file {i}"));
    }
    std::fs::write(env.plain.join("new"), b"after the failover").expect("create");
    assert_eq!(
        std::fs::read(env.plain.join("new")).expect("read back"),
        b"after the failover"
    );
    drop(foreground);
    let log = std::fs::read_to_string(&stderr).expect("the mount's log");
    let moves = moves_from(&log, &closed);
    assert_eq!(moves.len(), 1, "one failover, then sticky: {log}");
    assert!(
        moves[0].contains(&format!("; trying {}", server.url)),
        "{}",
        moves[0]
    );
    assert!(
        !log.contains(&client.creds.api_secret),
        "no secret in the log"
    );
    // Every request went to the server that answers.
    let audit = settled_audit(&data);
    assert!(
        audit.iter().filter(|l| l.contains("decrypt")).count() >= 8,
        "{audit:?}"
    );
}

#[test]
fn bad_lists_are_one_sentence_each_and_nothing_is_made() {
    let env = Env::new();
    let cases = [
        (
            "http://127.0.0.1:1/v2,ftp://x/v2",
            "\"ftp://x/v2\" is not a KMS endpoint",
        ),
        (
            "http://127.0.0.1:1/v2,,http://127.0.0.1:2/v2",
            "have an empty entry",
        ),
        (
            "http://127.0.0.1:1/v2,http://127.0.0.1:1/v2",
            "http://127.0.0.1:1/v2 is listed twice",
        ),
        (
            "http://127.0.0.1:1/v2,http://127.0.0.1:2/kms",
            "http://127.0.0.1:2/kms is not a zone's API base",
        ),
    ];
    for (list, expected) in cases {
        let out = env.run(&["init", Env::s(&env.cipher), "--kms", list]);
        assert_eq!(out.status.code(), Some(2), "{list}");
        let sentence = one_sentence(&out);
        assert!(sentence.contains(expected), "{list}: {sentence}");
        assert!(!env.cipher.exists(), "{list}");
        let out = env.run(&["key", "list", "--kms", list]);
        assert_eq!(out.status.code(), Some(2), "{list}");
        assert!(one_sentence(&out).contains(expected), "{list}");
    }
}

#[test]
fn a_server_killed_under_a_mount_while_another_serves_the_key_gives_no_eio() {
    let mut pair = Pair::start();
    let mut env = Env::new();
    with_creds(&mut env, &pair.clients[0]);
    let list = pair.both();
    env.ok(&[
        "init",
        Env::s(&env.cipher),
        "--kms",
        &list,
        "--key",
        &pair.key,
    ]);
    let mount = env.mount();
    let files = 12;
    for i in 0..files {
        std::fs::write(env.plain.join(format!("f{i}")), format!("content {i}")).expect("write");
    }
    mount.unmount();

    // No DEK cache: every open unwraps through the KMS.
    let _mount = env.mount_with(&["--cache-entries", "0"]);
    let plain = env.plain.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (stop, reads) = (stop.clone(), reads.clone());
        std::thread::spawn(move || -> Result<(), String> {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let path = plain.join(format!("f{}", i % files));
                match std::fs::read_to_string(&path) {
                    Ok(text) if text == format!("content {}", i % files) => {}
                    Ok(text) => return Err(format!("{}: read {text:?}", path.display())),
                    Err(e) => return Err(format!("{}: {e}", path.display())),
                }
                reads.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
            Ok(())
        })
    };
    wait_until(
        "reads through the first server",
        Duration::from_secs(30),
        || reads.load(Ordering::SeqCst) >= 20,
    );
    pair.zones.servers[0].kill_9();
    let at_kill = reads.load(Ordering::SeqCst);
    wait_until(
        "reads through the second server",
        Duration::from_secs(60),
        || reads.load(Ordering::SeqCst) >= at_kill + 50 || reader.is_finished(),
    );
    // New files need new data keys: from the second server now.
    for i in 0..5 {
        let path = env.plain.join(format!("new{i}"));
        std::fs::write(&path, format!("new {i}")).expect("create after the kill");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read back"),
            format!("new {i}")
        );
    }
    stop.store(true, Ordering::SeqCst);
    let outcome = reader.join().expect("the reader ran");
    assert_eq!(outcome, Ok(()), "no EIO, no wrong byte");
    assert!(reads.load(Ordering::SeqCst) >= at_kill + 50);
    let log = env.log_text();
    let moves = moves_from(&log, &pair.url(0));
    eprintln!(
        "reads: {at_kill} before the kill, {} in all; {} failover line(s)",
        reads.load(Ordering::SeqCst),
        moves.len()
    );
    assert!(!moves.is_empty(), "the failover is logged: {log}");
    assert!(
        moves
            .iter()
            .all(|m| m.contains(&format!("; trying {}", pair.url(1)))),
        "{moves:?}"
    );
    // The dead server cools down: far fewer moves than unwraps after the kill.
    assert!(moves.len() < 10, "{} moves: {log}", moves.len());
    let audit = settled_audit(&pair.zones.servers[1].data);
    assert!(
        audit.iter().filter(|l| l.contains("decrypt")).count() >= 40,
        "the second server unwrapped the keys"
    );
}

#[test]
fn answers_that_judged_the_request_never_reach_the_second_server() {
    let mut pair = Pair::start();
    let mut env = Env::new();
    with_creds(&mut env, &pair.clients[0]);
    let list = pair.both();
    let second = pair.zones.servers[1].data.clone();
    let first = pair.zones.servers[0].data.clone();
    let (first, second) = (first.as_path(), second.as_path());
    let (first_before, second_before) = (settled_audit(first).len(), settled_audit(second).len());

    // A key that does not exist: 4xx "Key Not Found" from the first server, and that is final.
    let out = env.run(&["key", "show", NO_SUCH_KEY, "--kms", &list]);
    assert_eq!(out.status.code(), Some(7), "{}", one_sentence(&out));
    assert!(one_sentence(&out).contains("Key Not Found"));
    // A disabled key: 4xx "Key is Disabled" to a change that may be repeated, final too.
    let plain_key = pair.clients[0].create_key("plain");
    ok(post(&pair.clients[0], &plain_key, "disable", json!({})));
    let out = env.run(&["key", "disable-rotation", &plain_key, "--kms", &list]);
    assert_eq!(out.status.code(), Some(7), "{}", one_sentence(&out));
    assert!(one_sentence(&out).contains("Key is Disabled"));
    // Wrong credentials: 403, final.
    let mut stranger = Env::new();
    stranger
        .vars
        .push(("EXOSCALE_API_KEY".into(), "EXOnobody".into()));
    stranger
        .vars
        .push(("EXOSCALE_API_SECRET".into(), "wrong".into()));
    let out = stranger.run(&["key", "list", "--kms", &list]);
    assert_eq!(out.status.code(), Some(4), "{}", one_sentence(&out));

    let first_after = settled_audit(first).len();
    assert!(first_after > first_before, "the first server answered");
    assert_eq!(
        settled_audit(second).len(),
        second_before,
        "the second server saw no request"
    );

    // The control: with the first server gone, the same call reaches the second (and its
    // audit log shows it).
    pair.zones.servers[0].kill_9();
    let out = env.run(&["key", "show", NO_SUCH_KEY, "--kms", &list]);
    assert_eq!(out.status.code(), Some(7), "{}", one_sentence(&out));
    assert!(settled_audit(second).len() > second_before);
}

/// A data directory made read-only for everyone, root included (a read-only bind mount of
/// itself); made writable again on drop.
struct ReadOnly(PathBuf);

impl ReadOnly {
    fn make(dir: &Path) -> ReadOnly {
        let run = |args: &[&str]| {
            let out = Command::new("mount").args(args).output().expect("mount");
            assert!(
                out.status.success(),
                "mount {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let path = Env::s(dir);
        run(&["--bind", path, path]);
        let guard = ReadOnly(dir.to_path_buf());
        run(&["-o", "remount,bind,ro", path]);
        guard
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

#[test]
fn a_server_that_cannot_write_its_state_answers_500_and_repeatable_changes_move_on() {
    let pair = Pair::start();
    let mut env = Env::new();
    with_creds(&mut env, &pair.clients[0]);
    let list = pair.both();
    let first = &pair.zones.servers[0];
    let _read_only = ReadOnly::make(&first.data);
    // The first server still reads (its keyrings are in memory) but cannot change anything.
    let (status, _) = post(&pair.clients[0], &pair.key, "disable", json!({}));
    assert_eq!(status, 500, "a server that cannot write answers 500");
    assert_eq!(get_key(&pair.clients[1], &pair.key)["status"], "enabled");

    // disable may be repeated: the 500 moves it on to the second server.
    let out = env.run(&["key", "disable", &pair.key, "--kms", &list]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(moves_from(&stderr, &pair.url(0)).len(), 1, "{stderr}");
    assert!(stderr.contains("500"), "the cause is named: {stderr}");
    assert_eq!(get_key(&pair.clients[1], &pair.key)["status"], "disabled");

    // rotate may not: a 500 after the request was sent is the end, and nothing moves on.
    let second_before = settled_audit(&pair.zones.servers[1].data).len();
    let out = env.run(&["key", "rotate", &pair.key, "--kms", &list]);
    let sentence = one_sentence(&out);
    assert_eq!(out.status.code(), Some(3), "{sentence}");
    assert!(
        sentence.contains("500") && sentence.contains("1 endpoint tried, 1 attempt"),
        "{sentence}"
    );
    assert_eq!(
        settled_audit(&pair.zones.servers[1].data).len(),
        second_before,
        "the second server saw no rotate"
    );
}

/// A stand-in for a broken endpoint (in addition to the real servers): answers 503 to every
/// request, counting them. Stops with the test process.
fn always_503() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/v2", listener.local_addr().expect("addr"));
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(&stream);
                loop {
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    seen.fetch_add(1, Ordering::SeqCst);
                    let problem =
                        r#"{"title":"Service Unavailable","status":503,"detail":"stand-in"}"#;
                    let answer = format!(
                        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\n\r\n{problem}",
                        problem.len()
                    );
                    if (&stream).write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, count)
}

#[test]
fn a_503_endpoint_is_passed_for_reads_but_not_for_a_create() {
    let mut env = Env::new();
    let data = env.dir.path().join("kms-data");
    let server = ServerGuard::start_in(&data, "ch-gva-2", "127.0.0.1:0", &[]);
    let client = KmsClient::new(&server.url, create_org(&data));
    with_creds(&mut env, &client);
    let (broken, count) = always_503();
    let list = format!("{broken},{}", server.url);

    let out = env.ok(&["key", "list", "--kms", &list, "--json"]);
    assert!(out.contains("Default Organization Key"), "{out}");
    assert_eq!(count.load(Ordering::SeqCst), 1);

    let before = settled_audit(&data).len();
    let out = env.run(&["key", "create", "twice-is-too-many", "--kms", &list]);
    let sentence = one_sentence(&out);
    assert_eq!(out.status.code(), Some(3), "{sentence}");
    assert!(
        sentence.contains("503 Service Unavailable: stand-in"),
        "{sentence}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert_eq!(
        settled_audit(&data).len(),
        before,
        "the real server saw no create"
    );
}

#[test]
fn kms_bench_shares_the_load_between_the_servers_of_a_list() {
    let pair = Pair::start();
    let mut env = Env::new();
    with_creds(&mut env, &pair.clients[0]);
    let out = env.ok(&[
        "kms",
        "bench",
        "--kms",
        &pair.both(),
        "--key",
        &pair.key,
        "--seconds",
        "1",
        "--concurrency",
        "2",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["endpoint"], pair.both().as_str());
    for server in &pair.zones.servers {
        let audit = settled_audit(&server.data);
        let decrypts = audit.iter().filter(|l| l.contains("decrypt")).count();
        assert!(decrypts >= 1, "{}: {decrypts} decrypts", server.url);
    }
}

/// Runs `kmsfs ARGS` of `env` in a mount namespace of its own where `/etc/hosts` is `hosts`
/// (the machine's file is untouched; the namespace ends with the process).
fn run_with_hosts(env: &Env, hosts: &Path, args: &[&str]) -> Output {
    let cmd = env.cmd();
    let kmsfs = cmd.get_program().to_os_string();
    let mut wrapped = Command::new("unshare");
    wrapped
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$0\" /etc/hosts && exec \"$@\"")
        .arg(hosts)
        .arg(kmsfs)
        .args(args);
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    wrapped.output().expect("run kmsfs under unshare")
}

#[test]
fn a_name_with_two_addresses_is_two_servers_and_keeps_its_name() {
    let mut env = Env::new();
    let hosts = env.dir.path().join("hosts");
    std::fs::write(
        &hosts,
        "127.0.0.1 localhost\n127.0.0.1 kms.test\n127.0.0.2 kms.test\n",
    )
    .expect("write the hosts file");
    let data = env.dir.path().join("kms-data");
    let org = create_org(&data);
    let client = KmsClient::new("http://127.0.0.1:1/v2", org);
    with_creds(&mut env, &client);
    // Twice, on a fresh port: once with only 127.0.0.1 serving, once only 127.0.0.2. Whatever
    // order the resolver gives the two addresses, exactly one of the runs meets the dead one
    // first and moves on once.
    let mut moves = Vec::new();
    for (alive, dead) in [("127.0.0.1", "127.0.0.2"), ("127.0.0.2", "127.0.0.1")] {
        let port = reserve_port();
        let mut server = ServerGuard::start_in(&data, "ch-gva-2", &format!("{alive}:{port}"), &[]);
        let url = format!("http://kms.test:{port}/v2");
        let before = settled_audit(&data).len();
        let out = run_with_hosts(&env, &hosts, &["key", "list", "--kms", &url, "--json"]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{alive}: {stderr}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Default Organization Key"),
            "{alive}"
        );
        assert_eq!(
            settled_audit(&data).len(),
            before + 1,
            "{alive}: one list served"
        );
        let found = moves_from(&stderr, &format!("{url} ({dead})"));
        for line in &found {
            assert!(
                line.contains(&format!("; trying {url} ({alive})")),
                "{line}"
            );
        }
        moves.extend(found);
        server.kill_9();
    }
    assert_eq!(moves.len(), 1, "{moves:?}");
}
