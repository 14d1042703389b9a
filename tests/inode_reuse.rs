//! Backing inode numbers are reused at once on ext4: a file made right after another was
//! removed often gets its number, and the mount's node id is that number. These tests churn
//! names the way the fsstress tool does (symlinks and files removed, made, renamed over each
//! other, listed and looked up by other threads) and check, right after each file is made and
//! written back to front through the mount, that the mount shows its own size and content.

mod common;

use common::{Env, Rng};
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Directories, and names per directory, of the churned tree.
const DIRS: u64 = 3;
const FILES: u64 = 4;
const SYMLINKS: u64 = 4;

/// A file's content: a 24-byte header (owner, serial, length) then bytes that follow from it.
fn content(owner: u64, serial: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&owner.to_le_bytes());
    out.extend_from_slice(&serial.to_le_bytes());
    out.extend_from_slice(&(len as u64).to_le_bytes());
    let mut x = owner.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ serial;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(x as u8);
    }
    out.truncate(len);
    out
}

/// What the churn found wrong, as sentences.
#[derive(Default)]
struct Findings {
    problems: std::sync::Mutex<Vec<String>>,
    reused: AtomicU64,
    checked: AtomicU64,
}

impl Findings {
    fn report(&self, problem: String) {
        let mut problems = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        if problems.len() < 20 {
            problems.push(problem);
        }
    }
}

fn random_dir(rng: &mut Rng) -> PathBuf {
    match rng.below(4) {
        0 => PathBuf::new(),
        n => PathBuf::from(format!("d{}", n - 1)),
    }
}

/// One thread's churn for `rounds` operations over the tree at `root`.
fn churn(root: &Path, tid: u64, rounds: u64, seed: u64, findings: &Findings, stop: &AtomicBool) {
    let mut rng = Rng((seed ^ (tid + 1).wrapping_mul(0x2545_F491_4F6C_DD1D)).max(1));
    let mut serial = 0;
    let mut freed: Vec<u64> = Vec::new();
    for _ in 0..rounds {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let dir = random_dir(&mut rng);
        match rng.below(10) {
            // Make one of this thread's files, write it back to front, check it at once.
            0..=2 => {
                let rel = dir.join(format!("t{tid}_f{}", rng.below(FILES)));
                let path = root.join(&rel);
                let Ok(file) = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(0o644)
                    .open(&path)
                else {
                    continue;
                };
                serial += 1;
                let len = 48 + rng.below(24 * 1024) as usize;
                let data = content(tid, serial, len);
                let cut = rng.below(len as u64) as usize;
                file.write_all_at(&data[cut..], cut as u64)
                    .expect("write the back half");
                file.write_all_at(&data[..cut], 0)
                    .expect("write the front half");
                let ino = file.metadata().expect("fstat").ino();
                if freed.contains(&ino) {
                    findings.reused.fetch_add(1, Ordering::Relaxed);
                }
                drop(file);
                check_file(&path, &rel, &data, ino, findings);
            }
            // Remove a symlink or a file, remembering its number.
            3 | 4 => {
                let rel = if rng.below(2) == 0 {
                    dir.join(format!("s{}", rng.below(SYMLINKS)))
                } else {
                    dir.join(format!("t{tid}_f{}", rng.below(FILES)))
                };
                let path = root.join(rel);
                if let Ok(meta) = fs::symlink_metadata(&path)
                    && fs::remove_file(&path).is_ok()
                {
                    freed.push(meta.ino());
                    if freed.len() > 64 {
                        freed.remove(0);
                    }
                }
            }
            // Make a symlink.
            5 => {
                let rel = dir.join(format!("s{}", rng.below(SYMLINKS)));
                let _ = std::os::unix::fs::symlink("d0", root.join(rel));
            }
            // Rename a symlink over another, or one of this thread's files over another.
            6 => {
                let (from, to) = if rng.below(2) == 0 {
                    (
                        dir.join(format!("s{}", rng.below(SYMLINKS))),
                        random_dir(&mut rng).join(format!("s{}", rng.below(SYMLINKS))),
                    )
                } else {
                    (
                        dir.join(format!("t{tid}_f{}", rng.below(FILES))),
                        random_dir(&mut rng).join(format!("t{tid}_f{}", rng.below(FILES))),
                    )
                };
                let _ = fs::rename(root.join(from), root.join(to));
            }
            // List a directory with attributes (READDIRPLUS) and look every entry up.
            7 | 8 => {
                if let Ok(entries) = fs::read_dir(root.join(&dir)) {
                    for entry in entries.flatten() {
                        let _ = fs::symlink_metadata(entry.path());
                    }
                }
            }
            // Look a name up and read a file of any thread.
            _ => {
                let owner = rng.below(4);
                let path = root
                    .join(&dir)
                    .join(format!("t{owner}_f{}", rng.below(FILES)));
                if let Ok(mut file) = File::open(&path) {
                    let mut bytes = Vec::new();
                    let _ = file.read_to_end(&mut bytes);
                }
                let _ = fs::symlink_metadata(root.join(&dir).join(format!("s{}", rng.below(4))));
            }
        }
    }
}

/// Checks that `path`, just written with `data` through a descriptor whose inode was `ino` and
/// closed, shows that size and content through a new lookup.
fn check_file(path: &Path, rel: &Path, data: &[u8], ino: u64, findings: &Findings) {
    findings.checked.fetch_add(1, Ordering::Relaxed);
    // Only this thread changes its files: the name still holds what was written.
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) => {
            findings.report(format!("{}: lstat after writing: {e}", rel.display()));
            return;
        }
    };
    let read = fs::read(path).unwrap_or_else(|e| format!("read failed: {e}").into_bytes());
    if meta.len() != data.len() as u64 || read != data || meta.ino() != ino {
        findings.report(format!(
            "{}: wrote {} bytes on inode {ino}; the mount shows inode {} of {} bytes, reads {} \
             bytes{}",
            rel.display(),
            data.len(),
            meta.ino(),
            meta.len(),
            read.len(),
            if read.len() == data.len() && read != data {
                " that differ"
            } else {
                ""
            }
        ));
    }
}

fn run_churn(root: &Path, threads: u64, rounds: u64, seed: u64) -> Arc<Findings> {
    for d in 0..DIRS {
        fs::create_dir_all(root.join(format!("d{d}"))).expect("mkdir");
    }
    let findings = Arc::new(Findings::default());
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        for tid in 0..threads {
            let findings = findings.clone();
            let stop = stop.clone();
            s.spawn(move || churn(root, tid, rounds, seed, &findings, &stop));
        }
    });
    findings
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The churn with the daemon closing idle descriptors (an open-file limit of 64), where a
/// removed node's number could otherwise be reused while the kernel still holds the node.
#[test]
fn files_on_reused_inode_numbers_show_their_own_size_and_content() {
    let env = Env::new();
    env.init();
    let _mount = mount_with_nofile(&env, 64);
    let seed = env_u64("KMSFS_REUSE_SEED", 20_261_207);
    let rounds = env_u64("KMSFS_REUSE_OPS", 3_000);
    println!("seed {seed} (KMSFS_REUSE_SEED), {rounds} ops per thread (KMSFS_REUSE_OPS)");
    let findings = run_churn(&env.plain.join("churn"), 4, rounds, seed);
    let problems = findings.problems.lock().expect("findings").clone();
    println!(
        "{} files checked, {} on a number freed just before",
        findings.checked.load(Ordering::Relaxed),
        findings.reused.load(Ordering::Relaxed)
    );
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}\nlog:\n{}",
        problems.len(),
        problems.join("\n"),
        env.log_text()
    );
}

/// Mounts `env` as `kmsfs mount` does under an open-file limit of `nofile` it cannot raise, so
/// the daemon keeps at most `nofile / 2` inode descriptors open and closes idle ones.
fn mount_with_nofile(env: &Env, nofile: u32) -> common::MountGuard {
    let out = std::process::Command::new("prlimit")
        .arg(format!("--nofile={nofile}:{nofile}"))
        .arg(common::kmsfs_bin())
        .args(env.mount_args())
        .env("XDG_STATE_HOME", env.dir.path().join("state-home"))
        .env("XDG_CONFIG_HOME", env.dir.path().join("config-home"))
        .output()
        .expect("run prlimit");
    let guard = common::MountGuard::adopt(env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    guard
}

/// A file the kernel still holds (here through an `O_PATH` descriptor, as a file handle or a
/// process's cwd would) stays a file after it is unlinked, as on a local filesystem: `fstat`
/// answers with its attributes and no new file takes its inode number, even when the daemon had
/// closed the file's descriptor for being idle. Were the backing inode freed, ext4 would hand its
/// number to one of the next new files, and the mount's node id would then name two files.
#[test]
fn an_unlinked_file_the_kernel_holds_keeps_its_inode_number() {
    let env = Env::new();
    env.init();
    // At most 32 inode descriptors: most of the 120 files below have theirs closed.
    let _mount = mount_with_nofile(&env, 64);
    let dir = env.plain.join("dir");
    fs::create_dir(&dir).expect("mkdir");
    let victim = dir.join("victim");
    fs::write(&victim, b"victim").expect("write the victim");
    let held = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(&victim)
        .expect("open the victim O_PATH");
    let victim_ino = held.metadata().expect("fstat").ino();
    for i in 0..120 {
        fs::write(dir.join(format!("filler{i}")), b"x").expect("write a filler");
    }
    for i in 0..120 {
        fs::metadata(dir.join(format!("filler{i}"))).expect("stat a filler");
    }
    fs::remove_file(&victim).expect("unlink the victim");
    let meta = held.metadata().expect("fstat of the held, unlinked victim");
    assert_eq!((meta.ino(), meta.nlink(), meta.len()), (victim_ino, 0, 6));
    for i in 0..200 {
        let path = dir.join(format!("new{i}"));
        fs::write(&path, b"new").expect("write a new file");
        let ino = fs::metadata(&path).expect("stat a new file").ino();
        assert_ne!(
            ino, victim_ino,
            "new{i} took the inode number of a file the kernel still holds"
        );
    }
    let meta = held
        .metadata()
        .expect("fstat of the victim after the new files");
    assert_eq!((meta.ino(), meta.nlink(), meta.len()), (victim_ino, 0, 6));
    drop(held);
}
