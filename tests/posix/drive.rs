//! The driver side: runs each scenario's phases in both trees as child processes under
//! `setpriv`, takes the snapshots, and compares what the two trees answered.

use super::lang::Op;
use super::lang::{DIR_SIZE_OF_CIPHER_NAMES, Phase, Run, Scenario};
use super::parse;
use super::run::{changed_times, describe, times_of};
use super::sys::{self, c};
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::DirEntryExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable that makes the child entry run a phase:
/// `SCENARIO<TAB>RUN<TAB>PHASE`.
pub const CHILD_VAR: &str = "KMSFS_POSIX_CHILD";
/// The environment variable holding the child's `{out}` directory.
pub const OUT_VAR: &str = "KMSFS_POSIX_OUT";
/// Set to anything, the driver spoils one kmsfs observation per run, which must then show up
/// as a mismatch of every scenario (a check that the comparison can fail).
pub const SABOTAGE_VAR: &str = "KMSFS_POSIX_SABOTAGE";
/// Set to anything, the driver prints every observation of both trees.
pub const SHOW_VAR: &str = "KMSFS_POSIX_SHOW";
/// The name of the child test entry.
pub const CHILD_TEST: &str = "posix_child";

/// Old times every entry gets after the setup, so any later change (even of atime under
/// relatime) shows.
const OLD_TIME: i64 = 1_000_000_000;
/// A pause after the snapshot, longer than a coarse clock tick.
const TICK: Duration = Duration::from_millis(15);
/// Longest a phase may take.
const PHASE_TIMEOUT: Duration = Duration::from_secs(30);

/// The two trees and, for each, a directory on another filesystem (`{out}`).
pub struct Trees {
    pub ext4: PathBuf,
    pub ext4_out: PathBuf,
    pub kmsfs: PathBuf,
    pub kmsfs_out: PathBuf,
}

/// One thing observed in a tree: a step's answer or an entry's final state.
#[derive(Debug, Clone)]
struct Obs {
    key: String,
    label: String,
    value: String,
}

/// A difference between the trees.
#[derive(Debug, Clone)]
pub struct Mismatch {
    pub scenario: String,
    pub run: &'static str,
    pub label: String,
    pub ext4: String,
    pub kmsfs: String,
    pub intended: Option<&'static str>,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} [{}] {}\n      ext4:  {}\n      kmsfs: {}",
            self.scenario, self.run, self.label, self.ext4, self.kmsfs
        )
    }
}

/// The directory name of a scenario's run.
fn dir_name(sc: &Scenario, run: Run) -> String {
    format!("{}.{}", sc.name.replace('/', "_"), run.name)
}

fn mkdir_owned(path: &Path, mode: u32, uid: u32) -> Result<(), String> {
    std::fs::create_dir(path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
    let p = c(path.to_str().expect("utf-8 path"));
    sys::chmod(&p, mode, 0).map_err(|e| format!("chmod {}: {e}", path.display()))?;
    sys::chown(&p, uid, uid, 0).map_err(|e| format!("chown {}: {e}", path.display()))?;
    Ok(())
}

/// Whether `sc` drops the kernel's caches, which disturbs the times of scenarios running
/// beside it: such scenarios run alone.
pub fn drops_caches(sc: &Scenario) -> bool {
    parse::parse(&sc.script).is_ok_and(|script| {
        script.phases.iter().any(|p| {
            p.steps
                .iter()
                .any(|s| matches!(s.op, Op::DropCaches { .. }))
        })
    })
}

/// Runs `sc` as `run` in both trees; the differences.
pub fn run_scenario(sc: &Scenario, run: Run, trees: &Trees) -> Result<Vec<Mismatch>, String> {
    let script = parse::parse(&sc.script).map_err(|e| format!("{}: {e}", sc.name))?;
    let (phases, setup) = (&script.phases, script.setup);
    let name = dir_name(sc, run);
    let sides = [
        (trees.ext4.join(&name), trees.ext4_out.join(&name)),
        (trees.kmsfs.join(&name), trees.kmsfs_out.join(&name)),
    ];
    for (dir, out) in &sides {
        mkdir_owned(dir, 0o755, run.me)?;
        mkdir_owned(out, 0o777, 0)?;
    }
    let mut obs: [Vec<Obs>; 2] = [Vec::new(), Vec::new()];
    let mut times: [HashMap<String, [(i64, i64); 3]>; 2] = [HashMap::new(), HashMap::new()];
    for (side, (dir, out)) in sides.iter().enumerate() {
        for i in 0..setup {
            obs[side].extend(run_phase(sc, run, phases, i, dir, out)?);
        }
        times[side] = baseline(dir);
    }
    std::thread::sleep(TICK);
    for (side, (dir, out)) in sides.iter().enumerate() {
        for i in setup..phases.len() {
            obs[side].extend(run_phase(sc, run, phases, i, dir, out)?);
        }
        obs[side].extend(final_state(dir, &times[side]));
    }
    if std::env::var_os(SHOW_VAR).is_some() {
        for (tree, list) in ["ext4", "kmsfs"].iter().zip(&obs) {
            for o in list {
                println!(
                    "{} [{}] {tree}: {} => {}",
                    sc.name, run.name, o.label, o.value
                );
            }
        }
    }
    if std::env::var_os(SABOTAGE_VAR).is_some()
        && let Some(last) = obs[1].last_mut()
    {
        last.value.push_str(" (sabotaged)");
    }
    Ok(compare(&obs[0], &obs[1])
        .into_iter()
        .map(|(label, ext4, kmsfs)| {
            let only_atime = sc
                .atime_differs
                .filter(|_| without_atime(&ext4) == without_atime(&kmsfs));
            let only_dir_size = (without_dir_size(&ext4) == without_dir_size(&kmsfs))
                .then_some(DIR_SIZE_OF_CIPHER_NAMES);
            Mismatch {
                scenario: sc.name.clone(),
                run: run.name,
                label,
                ext4,
                kmsfs,
                intended: sc.intended.or(only_atime).or(only_dir_size),
            }
        })
        .collect())
}

/// Runs phase `index` in a child process as its actor; one observation per step.
fn run_phase(
    sc: &Scenario,
    run: Run,
    phases: &[Phase],
    index: usize,
    dir: &Path,
    out: &Path,
) -> Result<Vec<Obs>, String> {
    let phase = &phases[index];
    let first_step = phases[..index].iter().map(|p| p.steps.len()).sum::<usize>() + 1;
    let (uid, gid, groups) = phase.actor.ids(run);
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"));
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        cmd.arg(format!("--groups={}", list.join(",")));
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    cmd.arg("--")
        .arg(exe)
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_VAR, format!("{}\t{}\t{index}", sc.name, run.name))
        .env(OUT_VAR, out)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("spawn setpriv: {e}"))?;
    let deadline = Instant::now() + PHASE_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} [{}] phase {index} in {}: no answer in {PHASE_TIMEOUT:?}",
                    sc.name,
                    run.name,
                    dir.display()
                ));
            }
            Err(e) => return Err(format!("wait: {e}")),
        }
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("child output: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let answers: Vec<&str> = stdout
        .lines()
        // The test harness prints "test posix_child ... " without a newline first.
        .filter_map(|l| l.split_once("@@ ").map(|(_, answer)| answer))
        .collect();
    if !output.status.success() || answers.len() != phase.steps.len() {
        return Err(format!(
            "{} [{}] phase {index} ({}) in {}: {} answers for {} steps, {}\n{}\n{}",
            sc.name,
            run.name,
            phase.actor,
            dir.display(),
            answers.len(),
            phase.steps.len(),
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(phase
        .steps
        .iter()
        .zip(answers)
        .enumerate()
        .map(|(i, (step, answer))| Obs {
            key: format!("{index}.{i}"),
            label: format!("step {} {} `{}`", first_step + i, phase.actor, step.text),
            value: answer.to_string(),
        })
        .collect())
}

/// Every entry under `dir` (not following symlinks), with `.` first, and whether its d_ino
/// equals its st_ino.
fn walk(dir: &Path) -> Vec<(String, PathBuf, bool)> {
    let mut found = vec![(".".to_string(), dir.to_path_buf(), true)];
    let mut stack = vec![(String::new(), dir.to_path_buf())];
    while let Some((rel, path)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let child_rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let child = entry.path();
            let st = sys::stat(
                -1,
                Some(&c(&child.to_string_lossy())),
                libc::AT_SYMLINK_NOFOLLOW,
            );
            let same_ino = st.is_ok_and(|st| st.st_ino == entry.ino());
            if st.is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR) {
                stack.push((child_rel.clone(), child.clone()));
            }
            found.push((child_rel, child, same_ino));
        }
    }
    found.sort();
    found
}

/// Sets every entry's atime and mtime to [`OLD_TIME`] and records all three times.
fn baseline(dir: &Path) -> HashMap<String, [(i64, i64); 3]> {
    let old = libc::timespec {
        tv_sec: OLD_TIME,
        tv_nsec: 0,
    };
    let entries = walk(dir);
    // All first, then the records: hard links share their times.
    for (_, path, _) in &entries {
        let p = c(&path.to_string_lossy());
        let _ = sys::utimens(-1, Some(&p), [old, old], libc::AT_SYMLINK_NOFOLLOW);
    }
    let mut times = HashMap::new();
    for (rel, path, _) in &entries {
        let p = c(&path.to_string_lossy());
        if let Ok(st) = sys::stat(-1, Some(&p), libc::AT_SYMLINK_NOFOLLOW) {
            times.insert(rel.clone(), times_of(&st));
        }
    }
    times
}

/// The final state of every entry: attributes, which times changed since the baseline, and
/// whether readdir's d_ino was its st_ino. Times are read before any directory is listed.
fn final_state(dir: &Path, before: &HashMap<String, [(i64, i64); 3]>) -> Vec<Obs> {
    let mut changed = HashMap::new();
    for (rel, old) in before {
        let p = c(&dir.join(rel).to_string_lossy());
        if let Ok(st) = sys::stat(-1, Some(&p), libc::AT_SYMLINK_NOFOLLOW) {
            changed.insert(rel.clone(), changed_times(old, &times_of(&st)));
        }
    }
    walk(dir)
        .into_iter()
        .map(|(rel, path, same_ino)| {
            let p = c(&path.to_string_lossy());
            let value = match sys::stat(-1, Some(&p), libc::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => format!(
                    "{} times={}{}",
                    describe(&st),
                    changed.get(&rel).map_or("new", String::as_str),
                    if same_ino { "" } else { " d_ino!=st_ino" }
                ),
                Err(e) => sys::errno_name(e),
            };
            Obs {
                key: format!("state {rel}"),
                label: format!("final state of `{rel}`"),
                value,
            }
        })
        .collect()
}

/// An observation with whether atime changed left out (`times=amc` becomes `times=?mc`).
fn without_atime(value: &str) -> String {
    match value.split_once("times=") {
        Some((head, tail)) if tail.starts_with(['a', '-']) => {
            format!("{head}times=?{}", &tail[1..])
        }
        _ => value.to_string(),
    }
}

/// `value` with the size of a directory left out.
fn without_dir_size(value: &str) -> String {
    let is_dir = value.split_whitespace().take(2).any(|t| t == "dir");
    value
        .split_whitespace()
        .map(|t| {
            if is_dir && t.starts_with("size=") {
                "size=?"
            } else {
                t
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The observations that differ, as (label, ext4, kmsfs), in the order they were made.
fn compare(ext4: &[Obs], kmsfs: &[Obs]) -> Vec<(String, String, String)> {
    let theirs: BTreeMap<&str, &Obs> = kmsfs.iter().map(|o| (o.key.as_str(), o)).collect();
    let ours: BTreeMap<&str, &Obs> = ext4.iter().map(|o| (o.key.as_str(), o)).collect();
    let absent = "(absent)".to_string();
    let mut diffs = Vec::new();
    for o in ext4 {
        let k = theirs.get(o.key.as_str()).map_or(&absent, |t| &t.value);
        if *k != o.value {
            diffs.push((o.label.clone(), o.value.clone(), k.clone()));
        }
    }
    for o in kmsfs {
        if !ours.contains_key(o.key.as_str()) {
            diffs.push((o.label.clone(), absent.clone(), o.value.clone()));
        }
    }
    diffs
}

/// The child entry: runs the phase named in [`CHILD_VAR`] and prints `@@ ANSWER` per step.
pub fn child_main(spec: &str, table: &[Scenario]) {
    let mut parts = spec.split('\t');
    let (Some(name), Some(run), Some(index)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("bad {CHILD_VAR}: {spec:?}");
    };
    let sc = table
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no scenario {name:?}"));
    let run = Run::named(run).unwrap_or_else(|| panic!("no run {run:?}"));
    let index: usize = index.parse().expect("phase index");
    let phases = parse::parse(&sc.script)
        .expect("the driver parsed this script")
        .phases;
    let out = std::env::var(OUT_VAR).unwrap_or_default();
    sys::umask(0o022);
    let mut child = super::run::Child::new(run, out);
    for step in &phases[index].steps {
        println!("@@ {}", child.step(&step.op));
    }
}
