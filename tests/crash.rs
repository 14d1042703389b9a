//! Crash consistency: SIGKILL at random moments, round after round, of
//! - the mount daemon while writers append, overwrite, write 1-8 MiB at once, create small files
//!   and fsync; again with the cipher directory on a small ext4 volume whose writes are
//!   throttled, so that kills land inside large writes;
//! - `kmsfs rewrap` while it re-wraps headers;
//! - the KMS server while clients create and rotate keys.
//!
//! What a killed mount daemon may leave, and what the tests hold it to (only fsync promises
//! anything; the kernel writes dirty pages back to the daemon at any time and in any order):
//! - A byte an acknowledged fsync covered reads back exactly, unless a write after that fsync
//!   was rewriting its block at the kill (below).
//! - A byte written after the file's last fsync (the write acknowledged, or in flight at the
//!   kill) reads as one of the values it had since that fsync: the fsynced one or one of the
//!   writes'; past the fsynced end of the file also zero (a page written back before the one
//!   ahead of it leaves a hole). Never any other byte.
//! - A read fails, with EIO, only in a block that a write after the last fsync touched (the
//!   blocks it covers, and the block that held the old end of the file, which an append re-seals
//!   in place): the block being written at the kill. A cipher block (4,124 bytes) straddles
//!   pages, and a write killed in a page boundary leaves it half old, half new: it fails
//!   authentication, with whatever it held before, fsynced bytes included. Those bytes are
//!   counted apart ("fsynced bytes in torn blocks"); fsynced bytes lost anywhere else fail the
//!   test.
//! - The size is at least the fsynced size and at most the furthest end written.
//! - `kmsfs fsck` names only such blocks, and no file untouched since its fsync; `fsck
//!   --repair` leaves a directory that fsck finds clean and that mounts again.
//!
//! `KMSFS_CRASH_ROUNDS=N` runs N rounds of each kind (a few by default); `KMSFS_CRASH_SEED=S`
//! repeats a run's random choices (sizes, offsets, when to kill; not the scheduler's timing).

mod common;
#[path = "crash/daemon.rs"]
mod daemon;
#[path = "crash/model.rs"]
mod model;

use common::crash::{self, CrashMount, FsckFile, Throttle};
use common::kms_server::{self, ServerGuard};
use common::volume::LoopVolume;
use common::{Env, MountGuard, Rng, pattern};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use daemon::*;
use model::*;

const BLOCK: u64 = 4096;
const MIB: u64 = 1 << 20;

#[test]
fn the_mount_daemon_killed_at_random_moments_keeps_every_fsynced_byte() {
    let seed = crash::seed("mount daemon");
    let env = Env::new();
    env.init();
    let mut crashes = MountCrashes {
        env: &env,
        models: Models::default(),
        rng: Rng(seed),
        seed,
        throttle: None,
        kill_after: 50..1200,
        large_max: 24 * MIB,
        tally: Tally::default(),
    };
    crashes.run(crash::rounds(3), BTreeMap::new());
    println!("mount daemon, SIGKILL: {:#?}", crashes.tally);
}

#[test]
fn the_mount_daemon_killed_inside_throttled_large_writes_keeps_every_fsynced_byte() {
    let seed = crash::seed("mount daemon, throttled volume");
    let mut env = Env::new();
    let volume = LoopVolume::new(
        &env.dir.path().join("volume.img"),
        256 * MIB,
        &env.dir.path().join("volume"),
        "rw",
    );
    env.cipher = volume.mountpoint.join("cipher");
    env.init();
    let bps = 8 * MIB;
    let throttle = Throttle::new(
        &volume.loop_device.dev,
        bps,
        &format!("kmsfs-crash-{}", std::process::id()),
    );
    // The throttle slows the daemon's writes: 4 MiB written and fsynced take at least a
    // quarter of the time the limit allows for them.
    let mount = CrashMount::mount(&env);
    throttle.add(mount.pid);
    let calibration = pattern(16 * MIB as usize, seed);
    let started = Instant::now();
    let file = File::create(env.plain.join("calibration")).expect("create");
    file.write_all_at(&calibration, 0).expect("write");
    file.sync_all().expect("fsync");
    let took = started.elapsed();
    drop(file);
    println!(
        "{} at {bps} B/s on {} ({}) with its bdi strict_limit and max_bytes 1 MiB: 16 MiB written and fsynced in {took:?}",
        throttle.kind(),
        volume.loop_device.device,
        volume.loop_device.dev
    );
    assert!(
        took >= Duration::from_secs_f64(16.0 * MIB as f64 / bps as f64 / 2.0),
        "the throttle does not slow writes: 16 MiB in {took:?}"
    );
    MountGuard::adopt(&env).unmount();
    drop(mount);
    let calibrated = FileModel {
        durable: calibration,
        created: true,
        ..FileModel::default()
    };
    let mut crashes = MountCrashes {
        env: &env,
        models: Models::default(),
        rng: Rng(seed),
        seed,
        throttle: Some(&throttle),
        kill_after: 200..2500,
        large_max: 24 * MIB,
        tally: Tally::default(),
    };
    crashes.run(
        crash::rounds(2),
        BTreeMap::from([("calibration".to_string(), calibrated)]),
    );
    println!(
        "mount daemon, SIGKILL, throttled volume: {:#?}",
        crashes.tally
    );
}

#[test]
fn fsck_lines_of_a_crash_parse_and_lines_of_other_damage_do_not() {
    let out = "/c/AbC (plaintext /large): block 7 fails authentication\n\
        /c/dEf (plaintext /append-1): torn tail: block 3 is torn: 5 bytes, fewer than a block holds\n\
        /c/x (plaintext /small/r0-1): blocks 1, 2 fail authentication; block 2 ends the file but is not sealed as its last block: the file was cut short\n\
        /c/y (plaintext /z): block 4 is sealed as the last block but more follow it: blocks were added after the file's end\n\
        /c/w (plaintext /h): header: header authentication failed\n\
        /c/o: orphaned long-name side file; safe to delete\n";
    let (files, others) = crash::parse_fsck(out);
    let named: Vec<(&str, &[u64])> = files
        .iter()
        .map(|f| (f.plain.as_str(), f.blocks.as_slice()))
        .collect();
    assert_eq!(
        named,
        [
            ("/large", &[7][..]),
            ("/append-1", &[3][..]),
            ("/small/r0-1", &[1, 2, 2][..])
        ]
    );
    assert_eq!(others.len(), 3, "{others:?}");
}

#[test]
fn the_model_allows_fsynced_and_written_bytes_and_nothing_else() {
    let mut model = FileModel {
        durable: vec![1; 5000],
        ..FileModel::default()
    };
    model.pending.push((4000, vec![2; 2000]));
    model.pending.push((8200, vec![3; 10]));
    assert!(model.allows(10, 1) && !model.allows(10, 2) && !model.allows(10, 0));
    assert!(model.allows(4500, 1) && model.allows(4500, 2) && !model.allows(4500, 3));
    // Past the fsynced end: written values, or a hole.
    assert!(model.allows(5500, 2) && model.allows(5500, 0) && !model.allows(5500, 1));
    assert!(model.allows(8205, 3) && model.allows(7000, 0) && !model.allows(7000, 2));
    // Blocks 0 (untouched) stay out; block 1 held the fsynced end, 2 is written.
    assert_eq!(model.touched(), BTreeSet::from([0, 1, 2]));
    model.pending.truncate(0);
    model.pending.push((0, vec![5; 10]));
    assert_eq!(
        model.touched(),
        BTreeSet::from([0]),
        "an overwrite in place"
    );
    model.synced();
    assert_eq!(&model.durable[..11], &[5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 1]);
    assert!(model.touched().is_empty());
}

/// The headers (first 512 bytes) of every non-empty cipher file but `kmsfs.conf`.
fn headers(cipher: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut stack = vec![cipher.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read the cipher directory") {
            let path = entry.expect("entry").path();
            let meta = fs::symlink_metadata(&path).expect("lstat");
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() && meta.len() >= 512 && !path.ends_with("kmsfs.conf") {
                let mut header = vec![0u8; 512];
                File::open(&path)
                    .and_then(|f| f.read_exact_at(&mut header, 0))
                    .expect("read a header");
                found.insert(path, header);
            }
        }
    }
    found
}

/// `kmsfs rewrap --jobs JOBS EXTRA` of `env`, started.
fn spawn_rewrap(env: &Env, jobs: usize, extra: &[&str]) -> std::process::Child {
    env.cmd()
        .args(["rewrap", Env::s(&env.cipher), "--jobs", &jobs.to_string()])
        .args(extra)
        .args(["--passphrase-file", Env::s(&env.passfile)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn rewrap")
}

/// Waits until a header differs from `before` (or `child` exits); returns the time it took.
fn wait_for_a_changed_header(
    env: &Env,
    before: &BTreeMap<PathBuf, Vec<u8>>,
    child: &mut std::process::Child,
) -> Duration {
    let started = Instant::now();
    while headers(&env.cipher) == *before && child.try_wait().expect("wait").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "rewrap changes nothing"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    started.elapsed()
}

#[test]
fn rewrap_killed_at_random_moments_leaves_every_file_readable_and_a_rerun_finishes() {
    let seed = crash::seed("rewrap");
    let mut rng = Rng(seed);
    let env = Env::new();
    env.init();
    let mount = env.mount();
    let files: Vec<(String, usize)> = (0..400)
        .map(|i| (format!("f{i:03}"), [0, 1, 4096, 20_000, 70_000][i % 5] + i))
        .collect();
    for (i, (name, len)) in files.iter().enumerate() {
        fs::write(env.plain.join(name), pattern(*len, i as u64)).expect("write");
    }
    mount.unmount();
    // One whole run, timed: the first header changes after the keystore is open; the kills
    // fall in the span of the header changes (three rounds in four) or anywhere in the run.
    env.rotate_key();
    let before = headers(&env.cipher);
    let started = Instant::now();
    let mut child = spawn_rewrap(&env, 2, &[]);
    let first_change = wait_for_a_changed_header(&env, &before, &mut child);
    let _ = child.wait();
    let mut whole = started.elapsed();
    let mut headers_phase = whole.saturating_sub(first_change);
    let (mut killed, mut mid_way, mut finished_first) = (0, 0, 0);
    // A key takes 10 manual rotations: past 9, the directory moves to a new key instead.
    let mut rotations = 1;
    for round in 0..crash::rounds(3) {
        let mut target = Vec::new();
        if rotations < 9 {
            env.rotate_key();
            rotations += 1;
        } else {
            target = vec!["--to-key".to_string(), env.create_key(&format!("k{round}"))];
            rotations = 0;
        }
        let target: Vec<&str> = target.iter().map(String::as_str).collect();
        let before = headers(&env.cipher);
        let mut child = spawn_rewrap(&env, 1 + rng.below(4) as usize, &target);
        let delay = if rng.below(4) == 0 {
            rng.below(whole.as_millis() as u64 * 3 / 4 + 1)
        } else {
            wait_for_a_changed_header(&env, &before, &mut child);
            rng.below(headers_phase.as_millis() as u64 / 2 + 1)
        };
        std::thread::sleep(Duration::from_millis(delay));
        if child.try_wait().expect("wait").is_some() {
            finished_first += 1;
            // Runs go faster than the timed one: the next kills come sooner.
            headers_phase = headers_phase * 2 / 3;
            whole = whole * 2 / 3;
        } else {
            crash::kill_9(child.id());
            killed += 1;
        }
        let _ = child.wait();
        let after = headers(&env.cipher);
        let changed = after
            .iter()
            .filter(|(p, h)| before.get(*p) != Some(h))
            .count();
        if changed > 0 && changed < before.len() {
            mid_way += 1;
        }
        let out = env.fsck();
        assert_eq!(
            out.status.code(),
            Some(0),
            "round {round} (seed {seed}), killed after {delay} ms, {changed} headers changed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let mount = env.mount();
        for (i, (name, len)) in files.iter().enumerate() {
            let data = fs::read(env.plain.join(name))
                .unwrap_or_else(|e| panic!("round {round} (seed {seed}): {name}: {e}"));
            assert!(
                data == pattern(*len, i as u64),
                "round {round} (seed {seed}): {name} reads back wrong"
            );
        }
        mount.unmount();
        let rerun = env.rewrap_with(&target);
        let summary = String::from_utf8_lossy(&rerun.stdout);
        assert!(
            rerun.status.success() && summary.contains(", 0 failed"),
            "round {round} (seed {seed}): the rerun: {summary}{}",
            String::from_utf8_lossy(&rerun.stderr)
        );
        let rerun_headers = headers(&env.cipher);
        let stale = rerun_headers
            .iter()
            .filter(|(p, h)| before.get(*p) == Some(h))
            .count();
        assert_eq!(
            stale, 0,
            "round {round}: the rerun left {stale} headers as they were"
        );
    }
    println!(
        "rewrap, SIGKILL: {killed} kills ({mid_way} with some headers re-wrapped and some not), {finished_first} runs finished before the kill; a whole run takes {whole:?}, its header changes {headers_phase:?}"
    );
}

/// What the clients know of one key: acknowledged and attempted rotations.
#[derive(Debug, Default, Clone)]
struct KeyModel {
    name: String,
    rotations_acked: u64,
    rotations_tried: u64,
}

#[test]
fn the_kms_server_killed_at_random_moments_keeps_every_acknowledged_create_and_rotation() {
    let seed = crash::seed("kms server");
    let mut rng = Rng(seed);
    let mut server = ServerGuard::start("ch-gva-2");
    let client = Arc::new(server.new_client());
    let keys: Arc<Mutex<BTreeMap<String, KeyModel>>> = Arc::default();
    let (mut created, mut rotated) = (0, 0);
    for round in 0..crash::rounds(3) {
        let killed = Arc::new(AtomicBool::new(false));
        let tried_names: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let threads: Vec<_> = (0..3)
            .map(|t| {
                let (client, keys, killed, tried_names) = (
                    client.clone(),
                    keys.clone(),
                    killed.clone(),
                    tried_names.clone(),
                );
                let mut rng = Rng(rng.next() | 1);
                std::thread::spawn(move || -> Result<(u64, u64), String> {
                    let http = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(10))
                        .build()
                        .map_err(|e| e.to_string())?;
                    let (mut creates, mut rotations) = (0, 0);
                    for n in 0.. {
                        // A key takes 10 manual rotations: only keys below that are tried,
                        // and the try is counted under the same lock as the choice.
                        let chosen = {
                            let mut keys = keys.lock().unwrap_or_else(PoisonError::into_inner);
                            let open: Vec<String> = keys
                                .iter()
                                .filter(|(_, k)| k.rotations_tried < 10)
                                .map(|(id, _)| id.clone())
                                .collect();
                            if open.is_empty() || rng.below(3) == 0 {
                                None
                            } else {
                                let id = open[rng.below(open.len() as u64) as usize].clone();
                                if let Some(model) = keys.get_mut(&id) {
                                    model.rotations_tried += 1;
                                }
                                Some(id)
                            }
                        };
                        let answer =
                            if let Some(id) = chosen {
                                let path = format!("/kms-key/{id}/rotate");
                                crash::try_call(&client, &http, "POST", &path, Some(&json!({})))
                                    .map(|(status, body)| {
                                        if status == 200 {
                                            rotations += 1;
                                            if let Some(model) = keys
                                                .lock()
                                                .unwrap_or_else(PoisonError::into_inner)
                                                .get_mut(&id)
                                            {
                                                model.rotations_acked += 1;
                                            }
                                        }
                                        (status, body)
                                    })
                            } else {
                                let name = format!("r{round}-t{t}-{n}");
                                tried_names
                                    .lock()
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .insert(name.clone());
                                let body = json!({ "name": name });
                                crash::try_call(&client, &http, "POST", "/kms-key", Some(&body))
                                    .map(|(status, key)| {
                                        if let (200, Some(id)) = (status, key["id"].as_str()) {
                                            creates += 1;
                                            let model = KeyModel {
                                                name,
                                                ..KeyModel::default()
                                            };
                                            keys.lock()
                                                .unwrap_or_else(PoisonError::into_inner)
                                                .insert(id.to_string(), model);
                                        }
                                        (status, key)
                                    })
                            };
                        let dead = killed.load(Ordering::SeqCst);
                        match answer {
                            Ok((200, _)) => {}
                            Ok(_) | Err(_) if dead => break,
                            Ok((status, body)) => {
                                return Err(format!("{status} before the kill: {body}"));
                            }
                            Err(e) => return Err(format!("no answer before the kill: {e}")),
                        }
                    }
                    Ok((creates, rotations))
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20 + rng.below(600)));
        killed.store(true, Ordering::SeqCst);
        let log_before = server.log_text().len();
        server.kill_9();
        for thread in threads {
            let (creates, rotations) = thread
                .join()
                .expect("a client panicked")
                .unwrap_or_else(|e| panic!("round {round} (seed {seed}): {e}"));
            created += creates;
            rotated += rotations;
        }
        server.restart();
        let log = server.log_text();
        let restart_log = &log[log_before.min(log.len())..];
        assert!(
            !restart_log.contains("ERROR") && !restart_log.contains("WARN"),
            "round {round}: the server does not start cleanly:\n{restart_log}"
        );
        let listed = kms_server::ok(client.call("GET", "/kms-key", None));
        let listed: BTreeMap<String, String> = listed["kms-keys"]
            .as_array()
            .expect("kms-keys")
            .iter()
            .map(|k| {
                let field = |f: &str| k[f].as_str().unwrap_or_default().to_string();
                (field("id"), field("name"))
            })
            .collect();
        let mut keys = keys.lock().unwrap_or_else(PoisonError::into_inner);
        for (id, model) in keys.iter() {
            assert_eq!(
                listed.get(id),
                Some(&model.name),
                "round {round} (seed {seed}): acknowledged key {id} ({}) is gone",
                model.name
            );
            let version = kms_server::get_key(&client, id)["material"]["version"]
                .as_u64()
                .expect("a version");
            assert!(
                (1 + model.rotations_acked..=1 + model.rotations_tried).contains(&version),
                "round {round} (seed {seed}): key {id} is at version {version} after {} acknowledged and {} tried rotations",
                model.rotations_acked,
                model.rotations_tried
            );
        }
        let tried = tried_names.lock().unwrap_or_else(PoisonError::into_inner);
        for (id, name) in &listed {
            if keys.contains_key(id) || name == "Default Organization Key" {
                continue;
            }
            assert!(
                tried.contains(name),
                "round {round}: key {id} ({name}) was never asked for"
            );
            // A create in flight at the kill that was done: known from now on.
            let version = kms_server::get_key(&client, id)["material"]["version"]
                .as_u64()
                .unwrap_or(1);
            keys.insert(
                id.clone(),
                KeyModel {
                    name: name.clone(),
                    rotations_acked: version - 1,
                    rotations_tried: version - 1,
                },
            );
        }
        // What the server holds now is what the next round starts from.
        for (id, model) in keys.iter_mut() {
            let version = kms_server::get_key(&client, id)["material"]["version"]
                .as_u64()
                .unwrap_or(1);
            model.rotations_acked = version - 1;
            model.rotations_tried = version - 1;
        }
    }
    println!(
        "kms server, SIGKILL: {} rounds, {created} acknowledged creates and {rotated} acknowledged rotations, all there after each restart",
        crash::rounds(3)
    );
}
