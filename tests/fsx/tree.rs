//! The fsstress-style tool: threads doing random namespace and data operations on one shared
//! directory tree, each with its own seed. Errors that races explain (ENOENT, EEXIST,
//! ENOTEMPTY, ...) are counted; any other error fails the run.
//!
//! Names say what a thing is, and every operation keeps that true: `dN` is a directory,
//! `sN` a symlink, `tK_fN` a regular file whose content only thread K writes (renames and links
//! keep the `tK_` of the source), so no two threads ever write one file at once and every file
//! stays self-consistent (see [`super::stamp`]). A thread reading its own file checks it at
//! once; [`check_tree`] checks every file between rounds of operations, before and after a
//! remount, and at the end. Besides, the threads write stripes of shared files, stripes that
//! share blocks (see [`stripes`]).

#[path = "tree_check.rs"]
mod check;
#[path = "tree_content.rs"]
mod content;
#[path = "tree_rounds.rs"]
mod rounds;
#[path = "tree_stripes.rs"]
mod stripes;

pub use check::{Summary, changes, check_tree, history_of};

use super::oplog::OpLog;
use super::seeded;
use super::stamp::{self, STAMP_LEN};
use crate::common::Rng;
use check::{check_name, check_target, check_type, check_xattr_value, ino_tag, xattr_value};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Directory names per level (`d0`..), file names per thread, symlink names.
const DIRS: u64 = 3;
const FILES: u64 = 8;
const SYMLINKS: u64 = 4;
const XATTRS: u64 = 2;

/// What a run does.
pub struct Config {
    /// Names the run in reports.
    pub name: String,
    pub seed: u64,
    pub threads: u32,
    /// Operations of all threads together.
    pub ops: u64,
    /// Every this many operations of each thread (0: never) the threads pause, the tree is
    /// checked, the run's `remount` is called and the tree checked again and compared.
    pub remount_every: u64,
}

/// The kinds of operation.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Kind {
    Create,
    Mkdir,
    Unlink,
    Rmdir,
    Rename,
    Link,
    Symlink,
    Readlink,
    Rewrite,
    Append,
    Truncate,
    Read,
    Stat,
    Chmod,
    Setxattr,
    Getxattr,
    Getdents,
    /// A write of this thread's stripe of a shared file (see [`stripes`]).
    StripeWrite,
    /// A read of this thread's stripe, checked against its last write.
    StripeRead,
}

const WEIGHTS: [(Kind, u64); 19] = [
    (Kind::Create, 10),
    (Kind::Mkdir, 5),
    (Kind::Unlink, 6),
    (Kind::Rmdir, 3),
    (Kind::Rename, 10),
    (Kind::Link, 4),
    (Kind::Symlink, 3),
    (Kind::Readlink, 3),
    (Kind::Rewrite, 12),
    (Kind::Append, 6),
    (Kind::Truncate, 6),
    (Kind::Read, 10),
    (Kind::Stat, 6),
    (Kind::Chmod, 3),
    (Kind::Setxattr, 4),
    (Kind::Getxattr, 3),
    (Kind::Getdents, 6),
    (Kind::StripeWrite, 6),
    (Kind::StripeRead, 3),
];

/// Errors a race between threads explains, per kind.
fn race_explains(kind: Kind, errno: i32) -> bool {
    match errno {
        libc::ENOENT | libc::EEXIST | libc::ENOTEMPTY => true,
        // A directory moved into its own subtree.
        libc::EINVAL => kind == Kind::Rename,
        libc::ENODATA => kind == Kind::Getxattr,
        // Following a symlink whose target is a symlink cycle.
        libc::ELOOP => kind == Kind::Stat,
        _ => false,
    }
}

/// Per kind: operations that succeeded and that failed with an error a race explains.
pub type Counts = BTreeMap<Kind, (u64, u64)>;

/// What a run did.
pub struct Outcome {
    pub counts: Counts,
    /// Every thread's operations, in order: (operation number, line). Lines about a file say
    /// `[ino E:N]` (its inode number N through the filesystem after E remounts) and its stamps
    /// (`id: N`), so that the history of a file found wrong can be found ([`history_of`]).
    pub history: Vec<Vec<(u64, String)>>,
    /// Remounts done (the epoch of inode numbers after the run, see [`check_tree`]).
    pub remounts: u64,
}

/// Runs the threads on `root` (an existing directory) in rounds of
/// [`Config::remount_every`] operations each, checking the tree and calling `remount` between
/// rounds; panics with a report on the first unexplained error or inconsistent file.
pub fn run(root: &Path, cfg: &Config, remount: &mut dyn FnMut()) -> Outcome {
    let direct = stripes::create(root, cfg.threads);
    let how = if direct {
        format!(" and (O_DIRECT) {}", stripes::SHARED_DIRECT)
    } else {
        " (unaligned O_DIRECT refused here)".to_string()
    };
    println!(
        "{}: {} stripes of {} bytes in {}{how}",
        cfg.name,
        cfg.threads,
        stripes::STRIPE,
        stripes::SHARED,
    );
    let per_thread = cfg.ops / u64::from(cfg.threads);
    let round_len = match cfg.remount_every {
        0 => per_thread.max(1),
        n => n,
    };
    let rounds = per_thread.div_ceil(round_len);
    let shared = rounds::Shared::new(cfg.threads);
    let counts: Vec<Counts> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..cfg.threads)
            .map(|tid| {
                let shared = &shared;
                scope.spawn(move || {
                    let mut worker = Worker {
                        cfg,
                        tid,
                        seed: stamp::mix(cfg.seed ^ u64::from(tid)),
                        rng: seeded(stamp::mix(cfg.seed ^ u64::from(tid))),
                        root,
                        serial: 0,
                        log: OpLog::default(),
                        op_no: 0,
                        shared,
                        epoch: 0,
                        counts: Counts::new(),
                        direct,
                        stripe_generations: [0; 2],
                    };
                    for round in 0..rounds {
                        worker.epoch = if cfg.remount_every == 0 { 0 } else { round };
                        let end = ((round + 1) * round_len).min(per_thread);
                        shared.guard(|| worker.run(end));
                        shared.end_round();
                    }
                    worker.counts
                })
            })
            .collect();
        for round in 0..rounds {
            shared.between_rounds(|| {
                if cfg.remount_every == 0 {
                    return Ok(());
                }
                let at = format!("after round {} (op {} of each thread)", round + 1, {
                    ((round + 1) * round_len).min(per_thread)
                });
                rounds::check_and_remount(&cfg.name, &at, round, root, &shared, remount)
            });
        }
        handles
            .into_iter()
            .map(|h| h.join().expect("BUG: workers catch their panics"))
            .collect()
    });
    if let Some(report) = shared.failure() {
        panic!("{report}");
    }
    let mut total = Counts::new();
    for thread_counts in counts {
        for (kind, (ok, raced)) in thread_counts {
            let entry = total.entry(kind).or_default();
            entry.0 += ok;
            entry.1 += raced;
        }
    }
    Outcome {
        counts: total,
        history: shared.history(),
        remounts: if cfg.remount_every == 0 { 0 } else { rounds },
    }
}

/// One thread's state.
struct Worker<'a> {
    cfg: &'a Config,
    tid: u32,
    seed: u64,
    rng: Rng,
    root: &'a Path,
    /// Files this thread created so far (the low half of their ids).
    serial: u64,
    log: OpLog,
    op_no: u64,
    /// The stop flag, the first failure and every thread's history.
    shared: &'a rounds::Shared,
    /// How many remounts happened: inode numbers are only unique within one mount.
    epoch: u64,
    counts: Counts,
    /// Whether there is a shared file used `O_DIRECT`.
    direct: bool,
    /// The generation of this thread's stripe in each shared file.
    stripe_generations: [u64; 2],
}

/// Why an operation stopped: an error from a system call, or a file that does not hold what
/// its stamp says.
enum Trouble {
    Os(&'static str, io::Error),
    Content(String),
}

type OpResult = Result<(), Trouble>;

/// Tags an io error with the system call that returned it.
fn os<T>(call: &'static str, result: io::Result<T>) -> Result<T, Trouble> {
    result.map_err(|e| Trouble::Os(call, e))
}

impl Worker<'_> {
    /// Runs operations until this thread's operation `end`, or until the run stops.
    fn run(&mut self, end: u64) {
        let total: u64 = WEIGHTS.iter().map(|(_, w)| w).sum();
        while self.op_no < end {
            if self.shared.stopped() {
                return;
            }
            self.op_no += 1;
            let mut pick = self.rng.below(total);
            let mut kind = WEIGHTS[0].0;
            for (k, w) in WEIGHTS {
                if pick < w {
                    kind = k;
                    break;
                }
                pick -= w;
            }
            let raced = match self.step(kind) {
                Ok(()) => false,
                Err(Trouble::Os(_, e))
                    if e.raw_os_error().is_some_and(|n| race_explains(kind, n)) =>
                {
                    true
                }
                Err(Trouble::Os(call, e)) => {
                    return self.fail(&format!("{kind:?}: {call}: {e}"));
                }
                Err(Trouble::Content(what)) => return self.fail(&format!("{kind:?}: {what}")),
            };
            let entry = self.counts.entry(kind).or_default();
            if raced {
                entry.1 += 1;
            } else {
                entry.0 += 1;
            }
        }
    }

    /// Fails the run with this thread's last operations: every thread stops.
    fn fail(&self, what: &str) {
        self.shared.fail(format!(
            "{name} FAILED in thread {tid} (seed {tseed:#x}, run seed {seed}) at its op {no}: {what}\n\
             its last operations:\n{log}\
             reproduce: KMSFS_FSX_SEED={seed} KMSFS_FSSTRESS_OPS={ops} cargo test --test fsx",
            name = self.cfg.name,
            tid = self.tid,
            tseed = self.seed,
            seed = self.cfg.seed,
            no = self.op_no,
            log = self.log.dump(),
            ops = self.cfg.ops,
        ));
    }

    fn record(&mut self, line: String) {
        self.shared.record(self.tid, self.op_no, &line);
        self.log.push(self.op_no, line);
    }

    /// `[ino E:N]` of `rel` (not following symlinks), or `[ino ?]`: tags a line of the history.
    fn ino_of(&self, rel: &Path) -> String {
        match fs::symlink_metadata(self.path(rel)) {
            Ok(meta) => ino_tag(self.epoch, meta.ino()),
            Err(_) => "[ino ?]".to_string(),
        }
    }

    fn path(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    /// A directory (maybe missing) 0 to 2 levels down, the root most often.
    fn random_dir(&mut self) -> PathBuf {
        let depth = match self.rng.below(8) {
            0..=3 => 0,
            4..=6 => 1,
            _ => 2,
        };
        (0..depth)
            .map(|_| format!("d{}", self.rng.below(DIRS)))
            .collect()
    }

    fn dir_path(&mut self) -> PathBuf {
        let name = format!("d{}", self.rng.below(DIRS));
        self.random_dir().join(name)
    }

    fn file_of(&mut self, owner: u64) -> PathBuf {
        let name = format!("t{owner}_f{}", self.rng.below(FILES));
        self.random_dir().join(name)
    }

    fn own_file(&mut self) -> PathBuf {
        self.file_of(u64::from(self.tid))
    }

    fn any_file(&mut self) -> PathBuf {
        let owner = self.rng.below(u64::from(self.cfg.threads));
        self.file_of(owner)
    }

    fn symlink_path(&mut self) -> PathBuf {
        let name = format!("s{}", self.rng.below(SYMLINKS));
        self.random_dir().join(name)
    }

    /// A file or a directory.
    fn file_or_dir(&mut self) -> PathBuf {
        if self.rng.below(3) == 0 {
            self.dir_path()
        } else {
            self.any_file()
        }
    }

    /// A content length: from the stamp alone to a few blocks ±1, sometimes up to 256 KiB.
    fn pick_len(&mut self) -> u64 {
        let rng = &mut self.rng;
        let len = match rng.below(8) {
            0 => rng.below(64),
            1 | 2 => ((1 + rng.below(4)) * 4096 + rng.below(3)).saturating_sub(1),
            3 => rng.below(256 * 1024),
            _ => rng.below(24 * 1024),
        };
        STAMP_LEN + len
    }

    fn new_id(&mut self) -> u64 {
        self.serial += 1;
        (u64::from(self.tid) + 1) << 32 | self.serial
    }

    fn step(&mut self, kind: Kind) -> OpResult {
        match kind {
            Kind::Create => self.create(),
            Kind::Mkdir => {
                let rel = self.dir_path();
                self.record(format!("mkdir {}", rel.display()));
                os("mkdir", fs::create_dir(self.path(&rel)))
            }
            Kind::Unlink => {
                let rel = if self.rng.below(4) == 0 {
                    self.symlink_path()
                } else {
                    self.any_file()
                };
                let ino = self.ino_of(&rel);
                self.record(format!("unlink {} {ino}", rel.display()));
                os("unlink", fs::remove_file(self.path(&rel)))
            }
            Kind::Rmdir => {
                let rel = self.dir_path();
                self.record(format!("rmdir {}", rel.display()));
                os("rmdir", fs::remove_dir(self.path(&rel)))
            }
            Kind::Rename => {
                let (from, to) = match self.rng.below(20) {
                    0..=11 => {
                        let from = self.any_file();
                        let owner = owner_of(&from).expect("BUG: a file name");
                        (from, self.file_of(owner))
                    }
                    12..=16 => (self.dir_path(), self.dir_path()),
                    _ => (self.symlink_path(), self.symlink_path()),
                };
                let (ino, over) = (self.ino_of(&from), self.ino_of(&to));
                self.record(format!(
                    "rename {} {ino} -> {} {over}",
                    from.display(),
                    to.display()
                ));
                os("rename", fs::rename(self.path(&from), self.path(&to)))
            }
            Kind::Link => {
                let from = self.any_file();
                let owner = owner_of(&from).expect("BUG: a file name");
                let to = self.file_of(owner);
                let ino = self.ino_of(&from);
                self.record(format!("link {} {ino} -> {}", from.display(), to.display()));
                os("link", fs::hard_link(self.path(&from), self.path(&to)))
            }
            Kind::Symlink => {
                let rel = self.symlink_path();
                let target = match self.rng.below(3) {
                    0 => self.dir_path(),
                    1 => self.symlink_path(),
                    _ => self.any_file(),
                };
                self.record(format!("symlink {} -> {}", rel.display(), target.display()));
                os(
                    "symlink",
                    std::os::unix::fs::symlink(&target, self.path(&rel)),
                )
            }
            Kind::Readlink => {
                let rel = self.symlink_path();
                self.record(format!("readlink {}", rel.display()));
                let target = os("readlink", fs::read_link(self.path(&rel)))?;
                check_target(&target).map_err(Trouble::Content)
            }
            Kind::Rewrite => self.rewrite(),
            Kind::Append => self.append(),
            Kind::Truncate => self.truncate(),
            Kind::Read => {
                let rel = self.any_file();
                let mine = owner_of(&rel) == Some(u64::from(self.tid));
                let uncached = self.rng.below(3) == 0;
                self.record(format!("read {} (cache dropped {uncached})", rel.display()));
                let mut file = os("open O_RDONLY", File::open(self.path(&rel)))?;
                if uncached {
                    // The read reaches the filesystem, not the page cache.
                    os("posix_fadvise", super::sys::drop_cached_pages(&file))?;
                }
                let mut bytes = Vec::new();
                os("read", file.read_to_end(&mut bytes))?;
                if mine {
                    // Only this thread writes the file: it holds what its stamp says.
                    stamp::verify(&bytes).map_err(Trouble::Content)?;
                }
                Ok(())
            }
            Kind::Stat => {
                let rel = match self.rng.below(4) {
                    0 => self.dir_path(),
                    1 => self.symlink_path(),
                    _ => self.any_file(),
                };
                let follow = self.rng.below(4) == 0;
                self.record(format!("stat {} (follow {follow})", rel.display()));
                if follow {
                    os("stat", fs::metadata(self.path(&rel))).map(drop)
                } else {
                    let meta = os("lstat", fs::symlink_metadata(self.path(&rel)))?;
                    check_type(&rel, &meta).map_err(Trouble::Content)
                }
            }
            Kind::Chmod => {
                let rel = self.file_or_dir();
                let mode = [0o600, 0o640, 0o644, 0o700, 0o750, 0o755][self.rng.below(6) as usize];
                let mode = if rel
                    .file_name()
                    .is_some_and(|n| n.as_encoded_bytes()[0] == b'd')
                {
                    mode | 0o700
                } else {
                    mode
                };
                self.record(format!("chmod {} {mode:o}", rel.display()));
                os(
                    "chmod",
                    fs::set_permissions(self.path(&rel), fs::Permissions::from_mode(mode)),
                )
            }
            Kind::Setxattr => {
                let rel = self.file_or_dir();
                let name = format!("user.k{}", self.rng.below(XATTRS));
                let remove = self.rng.below(5) == 0;
                let len = 1 + self.rng.below(200) as usize;
                let value = xattr_value(self.rng.next(), len);
                self.record(format!(
                    "{} {} {name}",
                    if remove { "removexattr" } else { "setxattr" },
                    rel.display()
                ));
                let path = cpath(&self.path(&rel));
                let name = std::ffi::CString::new(name).expect("BUG: no NUL in a name");
                if remove {
                    // A missing attribute is ENODATA: the race of two removes.
                    match kmsfs::sys::removexattr(&path, &name, false) {
                        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(()),
                        r => os("removexattr", r),
                    }
                } else {
                    os(
                        "setxattr",
                        kmsfs::sys::setxattr(&path, &name, &value, 0, false),
                    )
                }
            }
            Kind::Getxattr => {
                let rel = self.file_or_dir();
                let name = format!("user.k{}", self.rng.below(XATTRS));
                self.record(format!("getxattr {} {name}", rel.display()));
                let path = cpath(&self.path(&rel));
                let name = std::ffi::CString::new(name).expect("BUG: no NUL in a name");
                let mut buf = [0u8; 512];
                let n = os(
                    "getxattr",
                    kmsfs::sys::getxattr(&path, &name, &mut buf, false),
                )?;
                check_xattr_value(&buf[..n]).map_err(Trouble::Content)
            }
            Kind::StripeWrite => self.stripe_write(),
            Kind::StripeRead => self.stripe_read(),
            Kind::Getdents => {
                let rel = self.random_dir();
                let stat_each = self.rng.below(2) == 0;
                self.record(format!(
                    "getdents {} (lstat each {stat_each})",
                    rel.display()
                ));
                for entry in os("opendir", fs::read_dir(self.path(&rel)))? {
                    let entry = os("getdents", entry)?;
                    let child = rel.join(entry.file_name());
                    check_name(&child).map_err(Trouble::Content)?;
                    if stat_each {
                        match fs::symlink_metadata(entry.path()) {
                            Ok(meta) => check_type(&child, &meta).map_err(Trouble::Content)?,
                            // Removed since the directory was read.
                            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                            Err(e) => return Err(Trouble::Os("lstat", e)),
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

fn cpath(path: &Path) -> std::ffi::CString {
    kmsfs::sys::cstr(path.as_os_str()).expect("BUG: no NUL in a path")
}

/// The owner `K` of a file name `tK_fN`.
fn owner_of(rel: &Path) -> Option<u64> {
    let name = rel.file_name()?.to_str()?;
    let (owner, _) = name.strip_prefix('t')?.split_once("_f")?;
    owner.parse().ok()
}
