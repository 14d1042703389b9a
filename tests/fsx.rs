//! Random operation runs through a real mount: fsx (one file against a model of its bytes,
//! with pread/pwrite and with mmap) and an fsstress-style run (threads on one directory tree).
//! Each tool also runs on a plain directory of the backing filesystem, which checks the tool
//! and its model themselves, and once with a planted fault, which checks that it notices.
//!
//! CI size by default. Full size:
//! `KMSFS_FSX_OPS=100000 KMSFS_FSSTRESS_OPS=100000 cargo test --test fsx -- --nocapture`
//! (`KMSFS_FSX_OPS` per fsx mode, `KMSFS_FSSTRESS_OPS` for all threads together);
//! `KMSFS_FSX_SEED` sets the seed of every run (default [`DEFAULT_SEED`], printed);
//! `KMSFS_FSX_MOUNT_ARGS` adds `kmsfs mount` arguments (e.g. `--threads 1 --cache-entries 1`);
//! `KMSFS_FSX_REMOUNT_EVERY` sets how many operations (of all threads) run between remounts
//! (default [`REMOUNT_EVERY`] for fsx, a tenth of the run for fsstress; 0: only at the end).

mod common;
#[path = "fsx/one_file.rs"]
mod one_file;
#[path = "fsx/oplog.rs"]
mod oplog;
#[path = "fsx/stamp.rs"]
mod stamp;
#[path = "fsx/sys.rs"]
mod sys;
#[path = "fsx/tree.rs"]
mod tree;

use common::{Env, Rng};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

/// The seed when `KMSFS_FSX_SEED` is not set.
const DEFAULT_SEED: u64 = 20_261_105;

/// CI sizes: operations per fsx mode, and of all fsstress threads together.
const CI_FSX_OPS: u64 = 3_000;
const CI_FSSTRESS_OPS: u64 = 6_000;
const FSSTRESS_THREADS: u32 = 4;

/// fsx reads the whole file back every this many operations.
const CHECK_EVERY: u64 = 100;

/// fsx closes its files, unmounts, checks, mounts and compares every this many operations.
const REMOUNT_EVERY: u64 = 1_000;

/// fsstress pauses its threads and does the same about this many times per run (at least
/// every [`FSSTRESS_REMOUNT_EVERY_MIN`] operations of all threads): each pause walks and reads
/// the whole tree twice.
const FSSTRESS_REMOUNTS: u64 = 10;
const FSSTRESS_REMOUNT_EVERY_MIN: u64 = 2_000;

/// fsx's file never grows past this (writes reach up to 256 KiB past any offset below it).
const FSX_MAX_LEN: u64 = 1 << 20;

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("{name}={text:?}: {e}"))
        }
        Err(_) => default,
    }
}

fn remount_every(default: u64) -> u64 {
    env_u64("KMSFS_FSX_REMOUNT_EVERY", default)
}

fn seed() -> u64 {
    env_u64("KMSFS_FSX_SEED", DEFAULT_SEED)
}

/// A generator for `seed` (any seed, 0 included: xorshift must not start at 0).
fn seeded(seed: u64) -> Rng {
    Rng(stamp::mix(seed).max(1))
}

/// Reads until `buf` is full or the end of file; returns how many bytes were read.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn fsx_config(name: &str, mapped: bool) -> one_file::Config {
    one_file::Config {
        name: name.to_string(),
        seed: seed(),
        ops: env_u64("KMSFS_FSX_OPS", CI_FSX_OPS),
        mapped,
        check_every: CHECK_EVERY,
        max_len: FSX_MAX_LEN,
        remount_every: remount_every(REMOUNT_EVERY),
        corrupt_model_at: None,
    }
}

fn fsstress_config(name: &str) -> tree::Config {
    let ops = env_u64("KMSFS_FSSTRESS_OPS", CI_FSSTRESS_OPS);
    let every = remount_every((ops / FSSTRESS_REMOUNTS).max(FSSTRESS_REMOUNT_EVERY_MIN));
    tree::Config {
        name: name.to_string(),
        seed: seed(),
        threads: FSSTRESS_THREADS,
        ops,
        remount_every: every / u64::from(FSSTRESS_THREADS),
    }
}

/// Extra `kmsfs mount` arguments from `KMSFS_FSX_MOUNT_ARGS`.
fn mount_args() -> Vec<String> {
    std::env::var("KMSFS_FSX_MOUNT_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn mount_env(env: &Env) -> common::MountGuard {
    let args = mount_args();
    if !args.is_empty() {
        println!("kmsfs mount with {args:?} (KMSFS_FSX_MOUNT_ARGS)");
    }
    env.mount_with(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Runs fsx and prints what it did.
fn run_fsx(dir: &Path, cfg: &one_file::Config, remount: &mut dyn FnMut()) -> one_file::Outcome {
    println!(
        "{}: seed {} (KMSFS_FSX_SEED), {} ops (KMSFS_FSX_OPS)",
        cfg.name, cfg.seed, cfg.ops
    );
    let start = Instant::now();
    let outcome = one_file::run(dir, cfg, remount);
    let remounts = outcome
        .done
        .get(&one_file::Kind::Remount)
        .copied()
        .unwrap_or(0);
    println!(
        "{}: {} ops and {remounts} remounts, 0 mismatches, {:.1} s; final size {}; \
         done per kind: {:?}",
        cfg.name,
        outcome.done.values().sum::<u64>() - remounts,
        start.elapsed().as_secs_f64(),
        outcome.model.len(),
        outcome.done
    );
    for (kind, why, times) in &outcome.skipped {
        println!("{}: {kind:?} skipped {times} times: {why}", cfg.name);
    }
    outcome
}

/// Checks the tree under `root` ([`tree::check_tree`]); a problem fails the test with the
/// history of the files it names.
fn check_tree(name: &str, root: &Path, stressed: &Stressed) -> tree::Summary {
    let (summary, problems) = tree::check_tree(name, root, stressed.epoch);
    assert!(
        problems.is_empty(),
        "{name}: {} problem(s) in the tree:\n{}\n{}",
        problems.len(),
        problems.join("\n"),
        tree::history_of(&problems, &stressed.history)
    );
    summary
}

/// What [`run_fsstress`] leaves.
struct Stressed {
    /// The tree at the end of the run.
    summary: tree::Summary,
    /// Every thread's operations.
    history: Vec<Vec<(u64, String)>>,
    /// Remounts so far: inode numbers in reports are only unique within one mount.
    epoch: u64,
}

/// Runs fsstress on `root`, verifies the tree and prints what it did.
fn run_fsstress(root: &Path, cfg: &tree::Config, remount: &mut dyn FnMut()) -> Stressed {
    println!(
        "{}: seed {} (KMSFS_FSX_SEED), {} threads, {} ops (KMSFS_FSSTRESS_OPS), \
         check and remount every {} ops of each thread (KMSFS_FSX_REMOUNT_EVERY / threads)",
        cfg.name, cfg.seed, cfg.threads, cfg.ops, cfg.remount_every
    );
    std::fs::create_dir(root).expect("mkdir the stress root");
    let start = Instant::now();
    let tree::Outcome {
        counts,
        history,
        remounts,
    } = tree::run(root, cfg, remount);
    let elapsed = start.elapsed().as_secs_f64();
    let mut stressed = Stressed {
        summary: tree::Summary::new(),
        history,
        epoch: remounts,
    };
    let summary = check_tree(&cfg.name, root, &stressed);
    let files = summary.values().filter(|v| v.starts_with("file")).count();
    let (ok, raced) = counts
        .values()
        .fold((0, 0), |(a, b), (ok, raced)| (a + ok, b + raced));
    println!(
        "{}: {} ops ({ok} succeeded, {raced} failed as races explain), {elapsed:.1} s; \
         the tree holds {} entries, {files} files, all self-consistent",
        cfg.name,
        ok + raced,
        summary.len()
    );
    println!("{}: per kind (succeeded, raced): {counts:?}", cfg.name);
    stressed.summary = summary;
    stressed
}

/// Unmounts, expects `kmsfs fsck` clean and a daemon log without errors, and mounts again.
fn remount_after_fsck(env: &Env, mount: common::MountGuard) -> common::MountGuard {
    assert!(
        common::is_mounted(&env.plain) && std::fs::metadata(&env.plain).is_ok(),
        "the mount is gone: the daemon died\nlog:\n{}",
        env.log_text()
    );
    mount.unmount();
    let log = env.log_text();
    assert!(
        !log.contains("ERROR") && !log.contains("panicked"),
        "the daemon logged errors:\n{log}"
    );
    let out = env.fsck();
    assert!(
        out.status.success(),
        "fsck: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("fsck: {}", String::from_utf8_lossy(&out.stderr).trim());
    mount_env(env)
}

fn fsx_through_the_mount(mapped: bool) {
    let env = Env::new();
    env.init();
    let mut guard = Some(mount_env(&env));
    let name = if mapped {
        "fsx (mapped) through the mount"
    } else {
        "fsx through the mount"
    };
    let outcome = run_fsx(&env.plain, &fsx_config(name, mapped), &mut || {
        let old = guard.take().expect("BUG: mounted between remounts");
        guard = Some(remount_after_fsck(&env, old));
    });
    let _mount = remount_after_fsck(&env, guard.take().expect("BUG: mounted"));
    let after = std::fs::read(&outcome.path).expect("read the file after remount");
    if let Some(diff) = oplog::first_difference(0, &outcome.model, &after) {
        panic!("{name}: after unmount and mount again: {diff}");
    }
}

#[test]
fn fsx_through_the_mount_matches_its_model() {
    fsx_through_the_mount(false);
}

#[test]
fn fsx_mapped_through_the_mount_matches_its_model() {
    fsx_through_the_mount(true);
}

/// The same runs on the backing filesystem: a wrong model fails here.
#[test]
fn fsx_on_the_backing_filesystem_matches_its_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_fsx(
        dir.path(),
        &fsx_config("fsx on the backing filesystem", false),
        &mut || {},
    );
    run_fsx(
        dir.path(),
        &fsx_config("fsx (mapped) on the backing filesystem", true),
        &mut || {},
    );
}

/// A planted fault (one model byte flipped after op 300) is reported.
#[test]
#[should_panic(expected = "FAILED at op")]
fn fsx_reports_a_file_that_differs_from_its_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = fsx_config("fsx with a planted fault", false);
    cfg.ops = 600;
    cfg.corrupt_model_at = Some(300);
    run_fsx(dir.path(), &cfg, &mut || {});
}

#[test]
fn fsstress_through_the_mount_leaves_every_file_self_consistent() {
    let env = Env::new();
    env.init();
    let mut guard = Some(mount_env(&env));
    let root = env.plain.join("stress");
    let name = "fsstress through the mount";
    let mut stressed = run_fsstress(&root, &fsstress_config(name), &mut || {
        let old = guard.take().expect("BUG: mounted between remounts");
        guard = Some(remount_after_fsck(&env, old));
    });
    let _mount = remount_after_fsck(&env, guard.take().expect("BUG: mounted"));
    stressed.epoch += 1;
    let after = check_tree(name, &root, &stressed);
    let changed = tree::changes(&stressed.summary, &after);
    assert!(
        changed.is_empty(),
        "{name}: the tree changed across unmount and mount:\n{}\n{}",
        changed.join("\n"),
        tree::history_of(&changed, &stressed.history)
    );
}

/// The same run on the backing filesystem: a wrong rule of the tool fails here.
#[test]
fn fsstress_on_the_backing_filesystem_leaves_every_file_self_consistent() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_fsstress(
        &dir.path().join("stress"),
        &fsstress_config("fsstress on the backing filesystem"),
        &mut || {},
    );
}

/// A file changed behind the tool's back (one byte past its stamp) is reported.
#[test]
#[should_panic(expected = "problem(s) in the tree")]
fn fsstress_reports_a_file_changed_behind_its_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("stress");
    let mut cfg = fsstress_config("fsstress with a planted fault");
    cfg.ops = 800;
    let stressed = run_fsstress(&root, &cfg, &mut || {});
    let (victim, _) = stressed
        .summary
        .iter()
        .find(|(_, what)| what.starts_with("file") && !what.ends_with("None"))
        .expect("a non-empty file");
    let mut bytes = std::fs::read(root.join(victim)).expect("read the victim");
    *bytes.last_mut().expect("a non-empty file") ^= 1;
    std::fs::write(root.join(victim), &bytes).expect("write the victim");
    check_tree(&cfg.name, &root, &stressed);
}
