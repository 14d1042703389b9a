//! The fsx tool (after the classic fsx of Avadis Tevanian and xfstests' `ltp/fsx.c`, written
//! afresh): random operations on one file, checked against a model of its bytes in memory.
//! Reads are compared with the model; writes land at random offsets, far past the end of file
//! too (sparse), biased to hit 4 KiB block boundaries ±1 and the last partial block; truncates
//! (by descriptor and by path) go up and down; `O_DIRECT` reads and writes and appends through
//! a second descriptor, fallocate modes, copies, syncs, page-cache drops and reopens mix in. In mapped mode reads and writes
//! go through a shared mapping with `msync`. The size is checked after every operation and the
//! whole file every [`Config::check_every`] operations and at the end. Kinds the filesystem
//! refuses (probed once at the start) are skipped, and said so.

#[path = "one_file_mapped.rs"]
mod mapped;

use super::oplog::{OpLog, first_difference};
use super::sys;
use super::{read_full_at, seeded};
use crate::common::Rng;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The content block of kmsfs: offsets and lengths are biased towards its edges.
const BLOCK: u64 = 4096;

/// The longest single read, write, copy or fallocate.
const MAX_OP_LEN: u64 = 256 * 1024;

/// The second file of [`Kind::CopyToSecond`] stays below this size.
const SECOND_MAX_LEN: u64 = 2 * MAX_OP_LEN;

/// What a run does.
pub struct Config {
    /// Names the run in reports.
    pub name: String,
    pub seed: u64,
    pub ops: u64,
    /// Reads and writes through a shared mapping instead of pread/pwrite.
    pub mapped: bool,
    /// The whole file is read back and compared every this many operations.
    pub check_every: u64,
    /// The file never grows past this size.
    pub max_len: u64,
    /// Every this many operations (0: never) both files are closed, the run's `remount` is
    /// called, and they are reopened and compared whole: what reached the filesystem, not the
    /// page cache, and the size the filesystem itself reports.
    pub remount_every: u64,
    /// Self-test: after this operation, one byte of the model is flipped, so the run must fail.
    pub corrupt_model_at: Option<u64>,
}

/// The kinds of operation.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Kind {
    Read,
    Write,
    MapRead,
    MapWrite,
    /// A read through a second descriptor opened `O_DIRECT`: through FUSE it bypasses the page
    /// cache and reaches the daemon with its exact, unaligned range.
    DirectRead,
    /// A write through a second descriptor opened `O_DIRECT`.
    DirectWrite,
    Truncate,
    /// `truncate(2)` by path: the filesystem gets no open handle with it.
    TruncatePath,
    /// A write through a second descriptor opened `O_APPEND`.
    Append,
    Allocate,
    AllocateKeepSize,
    PunchHole,
    ZeroRange,
    ZeroRangeKeepSize,
    CopyWithin,
    CopyToSecond,
    Fsync,
    Fdatasync,
    /// Drops the file's clean cached pages (after an fdatasync, half of the time), so that
    /// reads reach the filesystem instead of the page cache.
    DropCache,
    Reopen,
    /// Not picked at random: every [`Config::remount_every`] operations.
    Remount,
}

/// How often each kind is picked, out of the sum.
const WEIGHTS: [(Kind, u64); 18] = [
    (Kind::Read, 19),
    (Kind::Write, 22),
    (Kind::DirectRead, 3),
    (Kind::DirectWrite, 4),
    (Kind::Truncate, 6),
    (Kind::TruncatePath, 2),
    (Kind::Append, 3),
    (Kind::Allocate, 4),
    (Kind::AllocateKeepSize, 2),
    (Kind::PunchHole, 4),
    (Kind::ZeroRange, 3),
    (Kind::ZeroRangeKeepSize, 2),
    (Kind::CopyWithin, 3),
    (Kind::CopyToSecond, 3),
    (Kind::Fsync, 2),
    (Kind::Fdatasync, 2),
    (Kind::DropCache, 3),
    (Kind::Reopen, 4),
];

/// Kinds the filesystem may refuse; probed once at the start.
const OPTIONAL: [Kind; 9] = [
    Kind::DirectRead,
    Kind::DirectWrite,
    Kind::Allocate,
    Kind::AllocateKeepSize,
    Kind::PunchHole,
    Kind::ZeroRange,
    Kind::ZeroRangeKeepSize,
    Kind::CopyWithin,
    Kind::CopyToSecond,
];

impl Kind {
    fn fallocate_mode(self) -> Option<libc::c_int> {
        match self {
            Kind::Allocate => Some(0),
            Kind::AllocateKeepSize => Some(libc::FALLOC_FL_KEEP_SIZE),
            Kind::PunchHole => Some(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE),
            Kind::ZeroRange => Some(libc::FALLOC_FL_ZERO_RANGE),
            Kind::ZeroRangeKeepSize => Some(libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE),
            _ => None,
        }
    }
}

/// What a run did.
pub struct Outcome {
    /// The file's path and the bytes it must hold.
    pub path: PathBuf,
    pub model: Vec<u8>,
    /// Operations done, per kind.
    pub done: BTreeMap<Kind, u64>,
    /// Kinds the filesystem refused at the start, with the error, and how often each was
    /// picked and skipped.
    pub skipped: Vec<(Kind, String, u64)>,
}

/// Runs fsx on a file `fsx-file` in `dir`, calling `remount` as [`Config::remount_every`]
/// says; panics with a report on the first mismatch.
pub fn run(dir: &Path, cfg: &Config, remount: &mut dyn FnMut()) -> Outcome {
    assert!(cfg.max_len > BLOCK && cfg.check_every > 0);
    let refused = probe(dir);
    for (kind, why) in &refused {
        println!(
            "{}: {kind:?} refused by the filesystem ({why}): skipped",
            cfg.name
        );
    }
    let path = dir.join("fsx-file");
    let second_path = dir.join("fsx-second");
    let create = |p: &Path| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(p)
            .unwrap_or_else(|e| panic!("{}: create {}: {e}", cfg.name, p.display()))
    };
    let mut fsx = Fsx {
        cfg,
        rng: seeded(cfg.seed),
        file: Some(create(&path)),
        second: Some(create(&second_path)),
        path,
        second_path,
        model: Vec::new(),
        second_model: Vec::new(),
        log: OpLog::default(),
        op_no: 0,
        done: BTreeMap::new(),
        skipped: refused
            .iter()
            .map(|(k, why)| (*k, why.clone(), 0))
            .collect(),
        page: sys::page_size(),
    };
    let total: u64 = WEIGHTS.iter().map(|(_, w)| w).sum();
    for no in 1..=cfg.ops {
        fsx.op_no = no;
        let kind = loop {
            let mut pick = fsx.rng.below(total);
            let (mut kind, _) = WEIGHTS[0];
            for (k, w) in WEIGHTS {
                if pick < w {
                    kind = k;
                    break;
                }
                pick -= w;
            }
            match fsx.skipped.iter_mut().find(|(k, _, _)| *k == kind) {
                Some((_, _, times)) => *times += 1,
                None => break kind,
            }
        };
        let kind = match kind {
            Kind::Read if cfg.mapped => Kind::MapRead,
            Kind::Write if cfg.mapped => Kind::MapWrite,
            k => k,
        };
        fsx.step(kind);
        *fsx.done.entry(kind).or_default() += 1;
        fsx.check_size();
        if cfg.corrupt_model_at == Some(no) && !fsx.model.is_empty() {
            let at = fsx.model.len() / 2;
            fsx.model[at] ^= 0x5a;
            println!(
                "{}: self-test: model byte {at} flipped after op {no}",
                cfg.name
            );
        }
        if no % cfg.check_every == 0 {
            fsx.check_all();
        }
        if cfg.remount_every > 0 && no % cfg.remount_every == 0 {
            fsx.remount(remount);
        }
    }
    fsx.check_all();
    fsx.check_second();
    Outcome {
        path: fsx.path.clone(),
        model: std::mem::take(&mut fsx.model),
        done: fsx.done,
        skipped: fsx.skipped,
    }
}

/// Tries every optional kind once on scratch files in `dir`; returns the kinds the filesystem
/// refuses (EOPNOTSUPP, ENOSYS, EXDEV; EINVAL for an unaligned `O_DIRECT` transfer, which most
/// local filesystems refuse) with the error. Any other failure is a failure.
fn probe(dir: &Path) -> Vec<(Kind, String)> {
    let (a_path, b_path) = (dir.join("fsx-probe-a"), dir.join("fsx-probe-b"));
    let open = |p: &Path| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(p)
            .unwrap_or_else(|e| panic!("probe: create {}: {e}", p.display()))
    };
    let mut refused = Vec::new();
    for kind in OPTIONAL {
        let (a, b) = (open(&a_path), open(&b_path));
        a.write_all_at(&[7u8; 3 * BLOCK as usize], 0)
            .expect("probe: write");
        let direct = || open_direct(&a_path);
        let result = match kind.fallocate_mode() {
            Some(mode) => sys::fallocate(&a, mode, BLOCK, 2 * BLOCK),
            None if kind == Kind::DirectRead => {
                direct().and_then(|f| read_full_at(&f, &mut [0u8; 3], 1).map(drop))
            }
            None if kind == Kind::DirectWrite => direct().and_then(|f| f.write_all_at(b"x", 1)),
            None if kind == Kind::CopyWithin => {
                sys::copy_file_range(&a, 0, &a, 2 * BLOCK, BLOCK as usize).map(drop)
            }
            None => sys::copy_file_range(&a, 0, &b, 0, BLOCK as usize).map(drop),
        };
        match result {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EXDEV)
                ) || (matches!(kind, Kind::DirectRead | Kind::DirectWrite)
                    && e.raw_os_error() == Some(libc::EINVAL)) =>
            {
                refused.push((kind, e.to_string()))
            }
            Err(e) => panic!("probe of {kind:?} failed unexpectedly: {e}"),
        }
    }
    fs::remove_file(&a_path).expect("probe: unlink");
    fs::remove_file(&b_path).expect("probe: unlink");
    refused
}

/// The state of one run.
struct Fsx<'a> {
    cfg: &'a Config,
    rng: Rng,
    path: PathBuf,
    /// `None` only inside a reopen or a remount.
    file: Option<File>,
    second_path: PathBuf,
    second: Option<File>,
    /// The expected bytes of the file; its length is the expected size.
    model: Vec<u8>,
    second_model: Vec<u8>,
    log: OpLog,
    op_no: u64,
    done: BTreeMap<Kind, u64>,
    skipped: Vec<(Kind, String, u64)>,
    page: u64,
}

impl Fsx<'_> {
    fn file(&self) -> &File {
        self.file
            .as_ref()
            .expect("BUG: the file is open between operations")
    }

    fn second(&self) -> &File {
        self.second
            .as_ref()
            .expect("BUG: the second file is open between operations")
    }

    /// Closes both files, calls `remount`, reopens them and compares them whole.
    fn remount(&mut self, remount: &mut dyn FnMut()) {
        let size = self.size();
        self.record(
            Kind::Remount,
            "close both files, remount, reopen".into(),
            size,
        );
        *self.done.entry(Kind::Remount).or_default() += 1;
        self.file = None;
        self.second = None;
        // A failed unmount, fsck or mount fails the run with its report.
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(remount)) {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            self.fail(&format!("remount: {why}"));
        }
        let open = |p: &Path| OpenOptions::new().read(true).write(true).open(p);
        let file = self.ok("open after remount", open(&self.path));
        self.file = Some(file);
        let second = self.ok("open after remount", open(&self.second_path));
        self.second = Some(second);
        self.check_size();
        self.check_all();
        self.check_second();
    }

    fn size(&self) -> u64 {
        self.model.len() as u64
    }

    /// Fails the run: the report names the seed, the operation, the last operations and `what`.
    fn fail(&self, what: &str) -> ! {
        panic!(
            "{name} FAILED at op {no} of {ops} (seed {seed}, mapped {mapped}): {what}\n\
             last operations (number, kind, range, size before -> after):\n{log}\
             reproduce: KMSFS_FSX_SEED={seed} KMSFS_FSX_OPS={ops} cargo test --test fsx",
            name = self.cfg.name,
            no = self.op_no,
            ops = self.cfg.ops,
            seed = self.cfg.seed,
            mapped = self.cfg.mapped,
            log = self.log.dump(),
        )
    }

    fn ok<T>(&self, what: &str, result: io::Result<T>) -> T {
        result.unwrap_or_else(|e| self.fail(&format!("{what}: {e}")))
    }

    fn compare(&self, what: &str, base: u64, expected: &[u8], found: &[u8]) {
        if let Some(diff) = first_difference(base, expected, found) {
            self.fail(&format!("{what}: {diff}"));
        }
    }

    fn record(&mut self, kind: Kind, range: String, before: u64) {
        let line = format!(
            "{:<18} {range:<44} size {before:#x} -> {:#x}",
            format!("{kind:?}"),
            self.size()
        );
        self.log.push(self.op_no, line);
    }

    /// An offset below `max_len`: anywhere (often far past the end of file), at a block
    /// boundary ±1, in the last partial block, at the end of file ±1, or inside the file.
    fn pick_off(&mut self) -> u64 {
        let size = self.size();
        let rng = &mut self.rng;
        let off = match rng.below(10) {
            0 | 1 => rng.below(self.cfg.max_len),
            2 | 3 => {
                let k = rng.below(size / BLOCK + 2);
                (k * BLOCK + rng.below(3)).saturating_sub(1)
            }
            4 => size / BLOCK * BLOCK + rng.below(BLOCK),
            5 => (size + rng.below(3)).saturating_sub(1),
            _ => rng.below(size.max(1)),
        };
        off.min(self.cfg.max_len - 1)
    }

    /// A length of at least 1 that keeps `off + len` within `max_len`: a few bytes, whole
    /// blocks ±1, up to a block boundary ±1, or anything up to [`MAX_OP_LEN`].
    fn pick_len(&mut self, off: u64) -> u64 {
        let rng = &mut self.rng;
        let len = match rng.below(10) {
            0 | 1 => 1 + rng.below(16),
            2 | 3 => ((1 + rng.below(4)) * BLOCK + rng.below(3)).saturating_sub(1),
            4 | 5 => {
                let end = ((off / BLOCK + 1 + rng.below(4)) * BLOCK + rng.below(3)) - 1;
                end - off
            }
            6 | 7 => 1 + rng.below(MAX_OP_LEN),
            _ => 1 + rng.below(16 * 1024),
        };
        len.clamp(1, self.cfg.max_len - off)
    }

    /// A new size for a truncate: 0, a block boundary ±1, near the current size, or anything.
    fn pick_size(&mut self) -> u64 {
        let size = self.size();
        let rng = &mut self.rng;
        let new = match rng.below(8) {
            0 => 0,
            1 | 2 => {
                let k = rng.below(self.cfg.max_len / BLOCK + 1);
                (k * BLOCK + rng.below(3)).saturating_sub(1)
            }
            3 | 4 => (size + rng.below(2 * BLOCK + 1)).saturating_sub(BLOCK),
            _ => rng.below(self.cfg.max_len + 1),
        };
        new.min(self.cfg.max_len)
    }

    fn random_bytes(&mut self, len: u64) -> Vec<u8> {
        let mut data = vec![0u8; len as usize];
        for chunk in data.chunks_mut(8) {
            let word = self.rng.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        data
    }

    fn set_model_len(&mut self, len: u64) {
        self.model.resize(len as usize, 0);
    }

    fn step(&mut self, kind: Kind) {
        let before = self.size();
        match kind {
            Kind::Read => {
                let off = self.pick_off();
                let len = self.pick_len(off);
                self.record(kind, range(off, len), before);
                let mut buf = vec![0u8; len as usize];
                let n = self.ok("pread", read_full_at(self.file(), &mut buf, off));
                let expected = self.model_range(off, len);
                self.compare("read", off, expected, &buf[..n]);
            }
            Kind::Write => {
                let off = self.pick_off();
                let len = self.pick_len(off);
                let data = self.random_bytes(len);
                self.write_model(off, &data);
                self.record(kind, range(off, len), before);
                self.ok("pwrite", self.file().write_all_at(&data, off));
            }
            Kind::DirectRead => {
                let off = self.pick_off();
                let len = self.pick_len(off);
                self.record(kind, range(off, len), before);
                let direct = self.ok("open O_DIRECT", open_direct(&self.path));
                let mut buf = vec![0u8; len as usize];
                let n = self.ok("pread O_DIRECT", read_full_at(&direct, &mut buf, off));
                let expected = self.model_range(off, len);
                self.compare("O_DIRECT read", off, expected, &buf[..n]);
            }
            Kind::DirectWrite => {
                let off = self.pick_off();
                let len = self.pick_len(off);
                let data = self.random_bytes(len);
                self.write_model(off, &data);
                self.record(kind, range(off, len), before);
                let direct = self.ok("open O_DIRECT", open_direct(&self.path));
                self.ok("pwrite O_DIRECT", direct.write_all_at(&data, off));
            }
            Kind::MapRead => self.map_read(before),
            Kind::MapWrite => self.map_write(before),
            Kind::Truncate => {
                let new = self.pick_size();
                self.set_model_len(new);
                self.record(kind, format!("to {new:#x}"), before);
                self.ok("ftruncate", self.file().set_len(new));
            }
            Kind::TruncatePath => {
                let new = self.pick_size();
                self.set_model_len(new);
                self.record(kind, format!("to {new:#x}"), before);
                self.ok("truncate", sys::truncate(&self.path, new));
            }
            Kind::Append => {
                let len = self.pick_len(before.min(self.cfg.max_len - 1));
                let data = self.random_bytes(len.min(self.cfg.max_len - before));
                self.write_model(before, &data);
                self.record(kind, range(before, data.len() as u64), before);
                let appender = OpenOptions::new().append(true).open(&self.path);
                let mut appender = self.ok("open O_APPEND", appender);
                self.ok("write O_APPEND", appender.write_all(&data));
            }
            Kind::Allocate
            | Kind::AllocateKeepSize
            | Kind::PunchHole
            | Kind::ZeroRange
            | Kind::ZeroRangeKeepSize => {
                let off = self.pick_off();
                let len = self.pick_len(off);
                let keep_size = kind != Kind::Allocate && kind != Kind::ZeroRange;
                if !keep_size && off + len > before {
                    self.set_model_len(off + len);
                }
                if matches!(
                    kind,
                    Kind::PunchHole | Kind::ZeroRange | Kind::ZeroRangeKeepSize
                ) {
                    let end = (off + len).min(self.size());
                    if off < end {
                        self.model[off as usize..end as usize].fill(0);
                    }
                }
                self.record(kind, range(off, len), before);
                let mode = kind.fallocate_mode().expect("BUG: a fallocate kind");
                self.ok("fallocate", sys::fallocate(self.file(), mode, off, len));
            }
            Kind::CopyWithin => self.copy_within(before),
            Kind::CopyToSecond => self.copy_to_second(before),
            Kind::Fsync => {
                self.record(kind, String::new(), before);
                self.ok("fsync", self.file().sync_all());
            }
            Kind::Fdatasync => {
                self.record(kind, String::new(), before);
                self.ok("fdatasync", self.file().sync_data());
            }
            Kind::DropCache => {
                let sync_first = self.rng.below(2) == 0;
                let how = if sync_first { "after fdatasync" } else { "" };
                self.record(kind, how.to_string(), before);
                if sync_first {
                    self.ok("fdatasync", self.file().sync_data());
                }
                self.ok("posix_fadvise", sys::drop_cached_pages(self.file()));
            }
            Kind::Reopen => {
                let truncate = self.rng.below(8) == 0;
                if truncate {
                    self.model.clear();
                }
                let how = if truncate { "with O_TRUNC" } else { "" };
                self.record(kind, how.to_string(), before);
                self.file = None;
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .truncate(truncate)
                    .open(&self.path);
                self.file = Some(self.ok("reopen", file));
            }
            Kind::Remount => unreachable!("BUG: remounts are not picked at random"),
        }
    }

    /// The model's bytes of a read of `len` at `off` (short at the end of file).
    fn model_range(&self, off: u64, len: u64) -> &[u8] {
        let from = off.min(self.size()) as usize;
        let to = (off + len).min(self.size()) as usize;
        &self.model[from..to]
    }

    fn write_model(&mut self, off: u64, data: &[u8]) {
        let end = off + data.len() as u64;
        if end > self.size() {
            self.set_model_len(end);
        }
        self.model[off as usize..end as usize].copy_from_slice(data);
    }

    /// `copy_file_range` from one range of the file to another range of it that does not
    /// overlap (possibly past the end of file).
    fn copy_within(&mut self, before: u64) {
        if before == 0 {
            self.record(
                Kind::CopyWithin,
                "(empty file: nothing to copy)".into(),
                before,
            );
            return;
        }
        let src = self.pick_off() % before;
        let len = self.pick_len(src).min(before - src);
        let mut dst = self.pick_off().min(self.cfg.max_len - len);
        if dst < src + len && src < dst + len {
            // Overlapping ranges are EINVAL: move the destination past the source.
            dst = src + len + self.rng.below(BLOCK);
            if dst + len > self.cfg.max_len {
                self.record(Kind::CopyWithin, "(no room past the source)".into(), before);
                return;
            }
        }
        self.record(
            Kind::CopyWithin,
            format!("{} to {dst:#x}", range(src, len)),
            before,
        );
        let result = sys::copy_file_range(self.file(), src, self.file(), dst, len as usize);
        let n = self.ok("copy_file_range within the file", result) as u64;
        if n == 0 || n > len {
            self.fail(&format!("copy_file_range copied {n} of {len} bytes"));
        }
        let data = self.model[src as usize..(src + n) as usize].to_vec();
        self.write_model(dst, &data);
    }

    /// `copy_file_range` from the file to the second file; the copied range of the second file
    /// is read back and compared.
    fn copy_to_second(&mut self, before: u64) {
        if before == 0 {
            self.record(
                Kind::CopyToSecond,
                "(empty file: nothing to copy)".into(),
                before,
            );
            return;
        }
        let src = self.pick_off() % before;
        let len = self.pick_len(src).min(before - src);
        let second_len = self.second_model.len() as u64;
        let dst = self.rng.below(second_len + BLOCK).min(SECOND_MAX_LEN - len);
        self.record(
            Kind::CopyToSecond,
            format!("{} to second at {dst:#x}", range(src, len)),
            before,
        );
        let result = sys::copy_file_range(self.file(), src, self.second(), dst, len as usize);
        let n = self.ok("copy_file_range to the second file", result) as u64;
        if n == 0 || n > len {
            self.fail(&format!("copy_file_range copied {n} of {len} bytes"));
        }
        let end = (dst + n) as usize;
        if end > self.second_model.len() {
            self.second_model.resize(end, 0);
        }
        self.second_model[dst as usize..end]
            .copy_from_slice(&self.model[src as usize..][..n as usize]);
        let mut buf = vec![0u8; n as usize];
        let got = self.ok(
            "pread of the second file",
            read_full_at(self.second(), &mut buf, dst),
        );
        self.compare(
            "the copied range of the second file",
            dst,
            &self.second_model[dst as usize..end],
            &buf[..got],
        );
    }

    fn check_size(&self) {
        let size = self.ok("fstat", self.file().metadata()).len();
        if size != self.size() {
            self.fail(&format!(
                "fstat size {size} ({size:#x}), expected {} ({:#x})",
                self.size(),
                self.size()
            ));
        }
    }

    /// Reads the whole file back (one byte more than expected) and compares it with the model.
    fn check_all(&self) {
        let mut buf = vec![0u8; self.model.len() + 1];
        let n = self.ok(
            "pread of the whole file",
            read_full_at(self.file(), &mut buf, 0),
        );
        self.compare("the whole file", 0, &self.model, &buf[..n]);
    }

    fn check_second(&self) {
        let mut buf = vec![0u8; self.second_model.len() + 1];
        let n = self.ok(
            "pread of the second file",
            read_full_at(self.second(), &mut buf, 0),
        );
        self.compare("the whole second file", 0, &self.second_model, &buf[..n]);
    }
}

fn open_direct(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

fn range(off: u64, len: u64) -> String {
    format!("{off:#x}..{:#x} ({len} bytes)", off + len)
}
