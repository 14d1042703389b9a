//! A differential POSIX test: every scenario of the table runs twice, in a plain directory of
//! the backing filesystem (ext4) and in a kmsfs mount (`-o allow_other,default_permissions`),
//! as root and as an unprivileged user, and both trees must answer alike: each step's result
//! and errno, and afterwards every entry's mode, owner, link count, size, which of its
//! atime/mtime/ctime changed, and whether readdir's d_ino equals stat's st_ino.
//!
//! Each phase of a scenario runs in a child process: this test binary again, under
//! `setpriv --reuid --regid --clear-groups` (or `--groups`), filtered to the `posix_child`
//! entry, which does nothing unless `KMSFS_POSIX_CHILD` names a phase.
//!
//! The scenarios live in `posix/table*.rs`, one per line, in the language of `posix/lang.rs`
//! (parsed by `posix/parse.rs`, run by `posix/run.rs` and `posix/streams.rs`, system calls
//! in `posix/sys.rs`). To add one, add a line: `both("family/what", "script")` (or `root`,
//! `user`). A scenario where kmsfs differs on purpose gets `.intended("why")`: its mismatches
//! are listed but do not fail the test. Known bugs are never marked.
//!
//! Knobs: `KMSFS_POSIX_ONLY=SUBSTRING` runs only the scenarios whose name holds it;
//! `KMSFS_POSIX_SHOW=1` prints every observation of both trees; `KMSFS_POSIX_SABOTAGE=1`
//! spoils one kmsfs observation per run, so every run must report a mismatch (a check that
//! the comparison can fail).

mod common;

#[path = "posix/acl.rs"]
mod acl;
#[path = "posix/drive.rs"]
mod drive;
#[path = "posix/lang.rs"]
mod lang;
#[path = "posix/parse.rs"]
mod parse;
#[path = "posix/run.rs"]
mod run;
#[path = "posix/streams.rs"]
mod streams;
#[path = "posix/sys.rs"]
mod sys;
#[path = "posix/table.rs"]
mod table;
#[path = "posix/table_data.rs"]
mod table_data;
#[path = "posix/table_names.rs"]
mod table_names;

use common::Env;
use drive::{Mismatch, Trees};
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// What one run of a scenario found: its mismatches, or why it could not run.
type RunResult = Result<Vec<Mismatch>, String>;

/// Parallel scenario runs (each waits mostly on child processes and the mount).
const WORKERS: usize = 3;

/// The child entry (see the module comment); a no-op in a normal test run.
#[test]
fn posix_child() {
    if let Ok(spec) = std::env::var(drive::CHILD_VAR) {
        drive::child_main(&spec, &table::all());
    }
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

#[test]
fn kmsfs_answers_posix_scenarios_like_ext4() {
    let started = Instant::now();
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid());
    assert!(
        matches!(uid, Ok(0)),
        "this test runs as root: it changes owners and starts children as other users"
    );
    let scenarios = table::all();
    let mut names = BTreeSet::new();
    for sc in &scenarios {
        assert!(names.insert(&sc.name), "two scenarios named {}", sc.name);
        if let Err(e) = parse::parse(&sc.script) {
            panic!("scenario {}: {e}", sc.name);
        }
    }
    let only = std::env::var("KMSFS_POSIX_ONLY").unwrap_or_default();
    let chosen: Vec<&lang::Scenario> = scenarios
        .iter()
        .filter(|s| s.name.contains(&only))
        .collect();

    let env = Env::new();
    env.init();
    let _mount = env.mount_with(&["-o", "allow_other,default_permissions"]);
    // The test directory is 0700; the users must reach both trees.
    chmod(env.dir.path(), 0o755);
    chmod(&env.plain, 0o755);
    let shm = tempfile::Builder::new()
        .prefix("kmsfs-posix-")
        .tempdir_in("/dev/shm")
        .expect("a directory on tmpfs");
    chmod(shm.path(), 0o755);
    let trees = Trees {
        ext4: env.dir.path().join("ext4"),
        ext4_out: shm.path().to_path_buf(),
        kmsfs: env.plain.join("posix"),
        kmsfs_out: env.dir.path().join("outside"),
    };
    for dir in [&trees.ext4, &trees.kmsfs, &trees.kmsfs_out] {
        std::fs::create_dir(dir).expect("mkdir tree");
        chmod(dir, 0o755);
    }

    let jobs: Vec<(&lang::Scenario, lang::Run)> = chosen
        .iter()
        .flat_map(|&sc| sc.runs().into_iter().map(move |r| (sc, r)))
        .collect();
    // Scenarios that drop the kernel's caches run alone, after the others.
    let (alone, together): (Vec<usize>, Vec<usize>) =
        (0..jobs.len()).partition(|&i| drive::drops_caches(jobs[i].0));
    let results: Mutex<Vec<(usize, RunResult)>> = Mutex::new(Vec::new());
    let run_job = |i: usize| {
        let (sc, run) = jobs[i];
        let result = drive::run_scenario(sc, run, &trees);
        results.lock().expect("results").push((i, result));
    };
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                while let Some(&i) = together.get(next.fetch_add(1, Ordering::Relaxed)) {
                    run_job(i);
                }
            });
        }
    });
    alone.into_iter().for_each(run_job);
    let mut results = results.into_inner().expect("results");
    results.sort_by_key(|(i, _)| *i);

    let mut failing = Vec::new();
    let mut intended = Vec::new();
    let mut harness = Vec::new();
    for (_, result) in results {
        match result {
            Ok(mismatches) => {
                for m in mismatches {
                    if m.intended.is_some() {
                        intended.push(m);
                    } else {
                        failing.push(m);
                    }
                }
            }
            Err(e) => harness.push(e),
        }
    }
    let runs_of = |name: &str| jobs.iter().filter(|(_, r)| r.name == name).count();
    let failing_scenarios: BTreeSet<(&str, &str)> = failing
        .iter()
        .map(|m| (m.scenario.as_str(), m.run))
        .collect();
    let mut report = String::new();
    for m in &failing {
        report.push_str(&format!("  MISMATCH {m}\n"));
    }
    for e in &harness {
        report.push_str(&format!("  HARNESS ERROR {e}\n"));
    }
    for m in &intended {
        println!(
            "  intended difference ({}): {m}",
            m.intended.unwrap_or_default()
        );
    }
    println!(
        "posix differential: {} scenarios ({} runs as root, {} as user {}), {} mismatches in {} \
         runs, {} intended, {} harness errors, {:.1} s",
        chosen.len(),
        runs_of("root"),
        runs_of("user"),
        lang::USER,
        failing.len(),
        failing_scenarios.len(),
        intended.len(),
        harness.len(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "posix differential: {} scenarios, {} mismatches",
        chosen.len(),
        failing.len()
    );
    assert!(
        failing.is_empty() && harness.is_empty(),
        "kmsfs differs from ext4 in {} runs of {} scenarios ({} mismatches, {} harness \
         errors):\n{report}",
        failing_scenarios.len(),
        chosen.len(),
        failing.len(),
        harness.len()
    );
}
