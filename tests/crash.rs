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

const BLOCK: u64 = 4096;
const MIB: u64 = 1 << 20;

/// One file as the writers left it: what its last acknowledged fsync covered, and the writes
/// issued since (acknowledged by write(2), or in flight at the kill).
#[derive(Default, Clone)]
struct FileModel {
    durable: Vec<u8>,
    pending: Vec<(u64, Vec<u8>)>,
    /// Its create was answered: the backing file exists, whatever the kill.
    created: bool,
    /// Blocks found torn since the last repair (EIO through the mount, or named by fsck).
    torn: BTreeSet<u64>,
}

impl FileModel {
    /// The size the file has once every write issued is applied.
    fn latest_len(&self) -> u64 {
        self.pending
            .iter()
            .map(|(offset, data)| offset + data.len() as u64)
            .fold(self.durable.len() as u64, u64::max)
    }

    /// The content once every write issued is applied.
    fn latest(&self) -> Vec<u8> {
        let mut content = self.durable.clone();
        for (offset, data) in &self.pending {
            let (from, to) = (*offset as usize, *offset as usize + data.len());
            if content.len() < to {
                content.resize(to, 0);
            }
            content[from..to].copy_from_slice(data);
        }
        content
    }

    /// An fsync acknowledged every write issued.
    fn synced(&mut self) {
        self.durable = self.latest();
        self.pending.clear();
    }

    /// Blocks a write since the last fsync touched: those it covers, and the block that held
    /// the fsynced end of the file when it writes past it (re-sealed in place).
    fn touched(&self) -> BTreeSet<u64> {
        let mut blocks = BTreeSet::new();
        let durable_len = self.durable.len() as u64;
        for (offset, data) in self.pending.iter().filter(|(_, d)| !d.is_empty()) {
            let end = offset + data.len() as u64;
            blocks.extend(offset / BLOCK..=(end - 1) / BLOCK);
            if end > durable_len && durable_len > 0 {
                blocks.insert((durable_len - 1) / BLOCK);
            }
        }
        blocks
    }

    /// Whether `byte` at `pos` is one of the values the file may hold there.
    fn allows(&self, pos: u64, byte: u8) -> bool {
        let fsynced = match self.durable.get(pos as usize) {
            Some(&b) => b == byte,
            None => byte == 0,
        };
        fsynced
            || self.pending.iter().any(|(offset, data)| {
                pos >= *offset
                    && pos < offset + data.len() as u64
                    && data[(pos - offset) as usize] == byte
            })
    }
}

type Models = Arc<Mutex<BTreeMap<String, FileModel>>>;

fn lock(models: &Models) -> std::sync::MutexGuard<'_, BTreeMap<String, FileModel>> {
    models.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The shapes of the writers' work.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// Appends of odd sizes (1 to 12,000 bytes), an fsync after one in three.
    Appends,
    /// Overwrites in place at odd offsets of a 256 KiB file, an fsync after one in three.
    Overwrites,
    /// Sequential writes of 1 to 8 MiB in one call, each followed by an fsync.
    Large,
    /// New small files, each written and fsynced.
    SmallFiles,
}

const SHAPES: [Shape; 5] = [
    Shape::Appends,
    Shape::Appends,
    Shape::Overwrites,
    Shape::Large,
    Shape::SmallFiles,
];

/// A writer thread's view: where it writes, the models, and whether the daemon was killed.
#[derive(Clone)]
struct Writer {
    plain: PathBuf,
    models: Models,
    killed: Arc<AtomicBool>,
    /// Fsyncs acknowledged.
    fsyncs: Arc<AtomicUsize>,
    /// Files of the `Large` shape wrap to offset 0 past this size.
    large_max: u64,
}

impl Writer {
    /// Opens (creating) `name`, tracked from before the create.
    fn open(&self, name: &str, new: bool) -> io::Result<File> {
        lock(&self.models).entry(name.to_string()).or_default();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(!new)
            .create_new(new)
            .open(self.plain.join(name))?;
        if let Some(model) = lock(&self.models).get_mut(name) {
            model.created = true;
        }
        Ok(file)
    }

    fn latest_len(&self, name: &str) -> u64 {
        lock(&self.models)
            .get(name)
            .map_or(0, FileModel::latest_len)
    }

    /// Writes `data` at `offset`, recorded before the call (it may be in flight at the kill).
    fn write(&self, file: &File, name: &str, offset: u64, data: Vec<u8>) -> io::Result<()> {
        let len = data.len();
        let copy = data.clone();
        if let Some(model) = lock(&self.models).get_mut(name) {
            model.pending.push((offset, data));
        }
        file.write_all_at(&copy[..len], offset)
    }

    /// fsync; once acknowledged, everything written so far is promised.
    fn fsync(&self, file: &File, name: &str) -> io::Result<()> {
        file.sync_all()?;
        self.fsyncs.fetch_add(1, Ordering::SeqCst);
        if let Some(model) = lock(&self.models).get_mut(name) {
            model.synced();
        }
        Ok(())
    }

    /// Works in `shape` until an error (the kill) or 60 s; an error before the kill is a
    /// finding.
    fn run(&self, shape: Shape, id: usize, round: usize, seed: u64) -> Result<(), String> {
        let mut rng = Rng(seed | 1);
        let deadline = Instant::now() + Duration::from_secs(60);
        let result = match shape {
            Shape::Appends => self.appends(&format!("append-{id}"), &mut rng, deadline),
            Shape::Overwrites => self.overwrites("overwrite", &mut rng, deadline),
            Shape::Large => self.large("large", &mut rng, deadline),
            Shape::SmallFiles => self.small_files(round, &mut rng, deadline),
        };
        match result {
            Err(e) if !self.killed.load(Ordering::SeqCst) => {
                Err(format!("{shape:?} writer {id} failed before the kill: {e}"))
            }
            _ => Ok(()),
        }
    }

    fn appends(&self, name: &str, rng: &mut Rng, deadline: Instant) -> io::Result<()> {
        let file = self.open(name, false)?;
        while Instant::now() < deadline {
            let len = 1 + rng.below(12_000) as usize;
            let mut offset = self.latest_len(name);
            if offset > 4 * MIB {
                offset = rng.below(offset);
            }
            self.write(&file, name, offset, pattern(len, rng.next()))?;
            if rng.below(3) == 0 {
                self.fsync(&file, name)?;
            }
        }
        Ok(())
    }

    fn overwrites(&self, name: &str, rng: &mut Rng, deadline: Instant) -> io::Result<()> {
        let file = self.open(name, false)?;
        if self.latest_len(name) < 256 * 1024 {
            self.write(&file, name, 0, pattern(256 * 1024, rng.next()))?;
            self.fsync(&file, name)?;
        }
        while Instant::now() < deadline {
            let offset = rng.below(self.latest_len(name));
            let len = 1 + rng.below(20_000) as usize;
            self.write(&file, name, offset, pattern(len, rng.next()))?;
            if rng.below(3) == 0 {
                self.fsync(&file, name)?;
            }
        }
        Ok(())
    }

    fn large(&self, name: &str, rng: &mut Rng, deadline: Instant) -> io::Result<()> {
        let file = self.open(name, false)?;
        while Instant::now() < deadline {
            let len = ((1 + rng.below(8)) * MIB - rng.below(5_000)) as usize;
            let mut offset = self.latest_len(name);
            if offset + len as u64 > self.large_max {
                offset = rng.below(4) * BLOCK;
            }
            self.write(&file, name, offset, pattern(len, rng.next()))?;
            self.fsync(&file, name)?;
        }
        Ok(())
    }

    fn small_files(&self, round: usize, rng: &mut Rng, deadline: Instant) -> io::Result<()> {
        for n in 0.. {
            if Instant::now() >= deadline {
                break;
            }
            let name = format!("small/r{round}-{n}");
            let file = self.open(&name, true)?;
            let len = 1 + rng.below(30_000) as usize;
            self.write(&file, &name, 0, pattern(len, rng.next()))?;
            self.fsync(&file, &name)?;
        }
        Ok(())
    }
}

/// A file read back through the mount: its bytes (zeros where a block failed), and the blocks
/// that failed with EIO.
struct ReadBack {
    bytes: Vec<u8>,
    failed: BTreeSet<u64>,
}

fn read_exact(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    file.read_exact_at(buf, offset)
}

/// Reads `path` through the mount, 1 MiB at a time, block by block where a read fails.
fn read_back(path: &Path) -> io::Result<ReadBack> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut bytes = vec![0u8; len as usize];
    let mut failed = BTreeSet::new();
    for start in (0..len).step_by(MIB as usize) {
        let end = (start + MIB).min(len);
        if read_exact(&file, &mut bytes[start as usize..end as usize], start).is_ok() {
            continue;
        }
        for from in (start..end).step_by(BLOCK as usize) {
            let to = (from + BLOCK).min(end);
            match read_exact(&file, &mut bytes[from as usize..to as usize], from) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                    bytes[from as usize..to as usize].fill(0);
                    failed.insert(from / BLOCK);
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(ReadBack { bytes, failed })
}

/// The files on the mount (the root and `small/`), by name relative to the mount point.
fn files_on(plain: &Path) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for dir in ["", "small"] {
        let Ok(entries) = fs::read_dir(plain.join(dir)) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                let name = entry.file_name().to_string_lossy().into_owned();
                names.insert(if dir.is_empty() {
                    name
                } else {
                    format!("{dir}/{name}")
                });
            }
        }
    }
    names
}

/// What the rounds of one kind saw.
#[derive(Debug, Default)]
struct Tally {
    rounds: usize,
    /// Kills while a daemon thread was inside a write-side system call.
    kills_in_write: usize,
    /// Those system calls, counted over the kills.
    calls_at_kill: BTreeMap<&'static str, usize>,
    /// Kills (on the slow volume) while a write extending a file had done part of its bytes.
    kills_in_partly_done_writes: usize,
    /// Rounds after which some block was torn.
    rounds_with_torn_blocks: usize,
    torn_blocks: usize,
    /// Fsynced bytes that did not come back, outside blocks torn by the kill (must be 0).
    fsynced_bytes_lost: u64,
    /// Fsynced bytes in blocks torn by the kill (unreadable after it: a later write was
    /// rewriting their block).
    fsynced_bytes_in_torn_blocks: u64,
    /// Bytes that read back as a value the file never held there (must be 0).
    wrong_bytes: u64,
    /// Files fsck named after a kill, by what it said of them.
    fsck_verdicts: BTreeMap<&'static str, usize>,
    /// Blocks inside a file torn by the kill, which `fsck --repair` leaves (it cuts damage at
    /// the end only); the test writes them whole, which mends them.
    inner_torn_blocks_left_by_repair: usize,
    /// Rounds whose `fsck --repair` (and, for blocks inside a file, a write) left the
    /// directory clean.
    repairs_clean: usize,
    remount_failures: usize,
    fsyncs_acknowledged: usize,
}

/// The round machinery of the mount daemon's crashes.
struct MountCrashes<'a> {
    env: &'a Env,
    models: Models,
    rng: Rng,
    seed: u64,
    throttle: Option<&'a Throttle>,
    /// When to kill, in milliseconds after the writers start.
    kill_after: std::ops::Range<u64>,
    large_max: u64,
    tally: Tally,
}

impl MountCrashes<'_> {
    fn run(&mut self, rounds: usize, extra: BTreeMap<String, FileModel>) {
        lock(&self.models).extend(extra);
        for round in 0..rounds {
            let mut findings = Vec::new();
            let mount = CrashMount::mount(self.env);
            if let Some(throttle) = self.throttle {
                throttle.add(mount.pid);
            }
            if round == 0 {
                fs::create_dir_all(self.env.plain.join("small")).expect("mkdir small");
            }
            self.check_after_repair(&mut findings);
            self.crash(&mount, round, &mut findings);
            mount.lazy_unmount();
            self.check_after_crash(&mut findings);
            self.fsck_and_repair(&mut findings);
            self.tally.rounds += 1;
            assert!(
                findings.is_empty(),
                "round {round} (seed {}): {findings:#?}\n{:#?}\ndaemon log:\n{}",
                self.seed,
                self.tally,
                self.env.log_text()
            );
        }
        let _mount =
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.env.mount())) {
                Ok(mount) => mount,
                Err(_) => {
                    self.tally.remount_failures += 1;
                    panic!("the repaired directory does not mount: {:#?}", self.tally);
                }
            };
        let mut findings = Vec::new();
        self.check_after_repair(&mut findings);
        assert!(findings.is_empty(), "after the last repair: {findings:#?}");
    }

    /// Runs the writers, kills the daemon at a random moment, and waits for the writers.
    fn crash(&mut self, mount: &CrashMount, round: usize, findings: &mut Vec<String>) {
        let writer = Writer {
            plain: self.env.plain.clone(),
            models: self.models.clone(),
            killed: Arc::new(AtomicBool::new(false)),
            fsyncs: Arc::default(),
            large_max: self.large_max,
        };
        let threads: Vec<_> = SHAPES
            .iter()
            .enumerate()
            .map(|(id, &shape)| {
                let (writer, seed) = (writer.clone(), self.rng.next());
                std::thread::spawn(move || writer.run(shape, id, round, seed))
            })
            .collect();
        let span = self.kill_after.end - self.kill_after.start;
        let delay = self.kill_after.start + self.rng.below(span);
        let kill = crash::ArmedKill::arm(mount.pid);
        std::thread::sleep(Duration::from_millis(delay));
        if self.throttle.is_some() {
            // On the slow volume, wait (up to 3 s) for a write that has done part of its
            // bytes, so that the kill cuts it short.
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if crash::in_partly_done_write(mount.pid) {
                    self.tally.kills_in_partly_done_writes += 1;
                    break;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        writer.killed.store(true, Ordering::SeqCst);
        let calls = mount.kill_daemon(kill);
        if !calls.is_empty() {
            self.tally.kills_in_write += 1;
        }
        for call in calls {
            *self.tally.calls_at_kill.entry(call).or_default() += 1;
        }
        for thread in threads {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(finding)) => findings.push(finding),
                Err(_) => findings.push("a writer panicked".into()),
            }
        }
        self.tally.fsyncs_acknowledged += writer.fsyncs.load(Ordering::SeqCst);
    }

    /// Mounts again and reads every file back against its model.
    fn check_after_crash(&mut self, findings: &mut Vec<String>) {
        let mount = self.env.mount();
        let on_mount = files_on(&self.env.plain);
        let mut models = lock(&self.models);
        let mut torn_now = 0;
        models.retain(|name, model| {
            let present = on_mount.contains(name);
            if !present && model.created {
                findings.push(format!("{name}: created, but gone after the kill"));
            }
            present
        });
        for name in on_mount.iter().filter(|n| !models.contains_key(*n)) {
            findings.push(format!("{name}: on the mount, but no writer made it"));
        }
        for (name, model) in models.iter_mut() {
            let read = match read_back(&self.env.plain.join(name)) {
                Ok(read) => read,
                Err(e) => {
                    findings.push(format!("{name}: cannot be read: {e}"));
                    continue;
                }
            };
            let len = read.bytes.len() as u64;
            if len < model.durable.len() as u64 {
                findings.push(format!(
                    "{name}: {len} bytes, fewer than the {} fsynced",
                    model.durable.len()
                ));
            }
            if len > model.latest_len() {
                findings.push(format!(
                    "{name}: {len} bytes, more than the {} ever written",
                    model.latest_len()
                ));
            }
            let touched = model.touched();
            for block in &read.failed {
                if !touched.contains(block) {
                    findings.push(format!(
                        "{name}: block {block} reads EIO, but no write touched it since its fsync"
                    ));
                }
            }
            torn_now += read.failed.len();
            self.tally.fsynced_bytes_in_torn_blocks += read
                .failed
                .iter()
                .map(|&b| {
                    let durable = model.durable.len() as u64;
                    (durable.min((b + 1) * BLOCK)).saturating_sub(b * BLOCK)
                })
                .sum::<u64>();
            model.torn.extend(read.failed.iter().copied());
            let wrong = wrong_bytes(model, &read);
            if wrong > 0 {
                self.tally.wrong_bytes += wrong;
                findings.push(format!("{name}: {wrong} bytes read back wrong"));
            }
        }
        drop(models);
        self.tally.torn_blocks += torn_now;
        mount.unmount();
    }

    /// fsck names only touched blocks; `--repair` leaves the directory clean.
    fn fsck_and_repair(&mut self, findings: &mut Vec<String>) {
        let out = self.env.fsck();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let (files, others) = crash::parse_fsck(&stdout);
        findings.extend(
            others
                .iter()
                .map(|line| format!("fsck after a kill says: {line}")),
        );
        let expected_code = if files.is_empty() { 0 } else { 1 };
        if out.status.code() != Some(expected_code) {
            findings.push(format!("fsck exits {:?}: {stdout}", out.status.code()));
        }
        let mut models = lock(&self.models);
        let mut torn_round = false;
        for FsckFile {
            plain,
            blocks,
            line,
        } in &files
        {
            let name = plain.trim_start_matches('/');
            let Some(model) = models.get_mut(name) else {
                findings.push(format!("fsck names a file no writer made: {line}"));
                continue;
            };
            let verdict = if line.contains("torn tail") {
                "torn tail"
            } else if line.contains("ends the file but is not sealed") {
                "ends in a block not sealed as the last"
            } else {
                "a block fails authentication"
            };
            *self.tally.fsck_verdicts.entry(verdict).or_default() += 1;
            let touched = model.touched();
            for block in blocks {
                if !touched.contains(block) {
                    findings.push(format!(
                        "fsck names block {block}, which no write touched since the fsync: {line}"
                    ));
                }
            }
            model.torn.extend(blocks.iter().copied());
            torn_round = true;
        }
        if torn_round || models.values().any(|m| !m.torn.is_empty()) {
            self.tally.rounds_with_torn_blocks += 1;
        }
        drop(models);
        let repair = self.env.fsck_with(&["--repair"]);
        let repaired = String::from_utf8_lossy(&repair.stdout).into_owned();
        let left: Vec<&str> = repaired
            .lines()
            .filter(|l| l.contains("not repaired"))
            .collect();
        if repair.status.code() != Some(if left.is_empty() { 0 } else { 1 }) {
            findings.push(format!(
                "fsck --repair exits {:?}: {repaired}",
                repair.status.code()
            ));
        }
        let mut again = self.env.fsck();
        if !left.is_empty() {
            // A block inside the file torn by the kill: the repair only cuts damage at the end,
            // and says so. It must be a block being written at the kill; a write covering it
            // whole mends it, as it would for a user.
            let report = String::from_utf8_lossy(&again.stdout).into_owned();
            let (files, others) = crash::parse_fsck(&report);
            findings.extend(others.iter().map(|l| format!("left by the repair: {l}")));
            let to_mend: Vec<(String, u64)> = files
                .iter()
                .flat_map(|f| {
                    let name = f.plain.trim_start_matches('/').to_string();
                    f.blocks.iter().map(move |&block| (name.clone(), block))
                })
                .collect();
            self.tally.inner_torn_blocks_left_by_repair += to_mend.len();
            self.mend_by_writing(&to_mend, findings);
            again = self.env.fsck();
        }
        if again.status.code() == Some(0) {
            self.tally.repairs_clean += 1;
        } else {
            findings.push(format!(
                "fsck after the repair: {}",
                String::from_utf8_lossy(&again.stdout)
            ));
        }
    }

    /// Writes each of `blocks` (file, block) whole through a mount, with the bytes the file
    /// would hold once every write issued is applied, and fsyncs.
    fn mend_by_writing(&mut self, blocks: &[(String, u64)], findings: &mut Vec<String>) {
        let mount = self.env.mount();
        let mut models = lock(&self.models);
        for (name, block) in blocks {
            let Some(model) = models.get_mut(name) else {
                findings.push(format!("the repair leaves {name}, which no writer made"));
                continue;
            };
            if !model.torn.contains(block) {
                findings.push(format!(
                    "the repair leaves block {block} of {name}, which was not torn by the kill"
                ));
                continue;
            }
            let path = self.env.plain.join(name);
            let result = OpenOptions::new().write(true).open(&path).and_then(|file| {
                let len = file.metadata()?.len();
                let from = block * BLOCK;
                let to = ((block + 1) * BLOCK).min(len);
                let mut bytes = model.latest();
                bytes.resize(to.max(bytes.len() as u64) as usize, 0);
                let data = bytes[from as usize..to as usize].to_vec();
                model.pending.push((from, data.clone()));
                file.write_all_at(&data, from)?;
                file.sync_all()
            });
            if let Err(e) = result {
                findings.push(format!("{name}: writing block {block} whole fails: {e}"));
            }
        }
        drop(models);
        mount.unmount();
    }

    /// Every file reads whole after the repair, as long as its fsynced size at least (but for
    /// blocks torn by the kill), every byte as fsynced or as a later write left it; what it
    /// holds now is its fsynced state from here on.
    fn check_after_repair(&mut self, findings: &mut Vec<String>) {
        let mut models = lock(&self.models);
        for (name, model) in models.iter_mut() {
            let read = match read_back(&self.env.plain.join(name)) {
                Ok(read) if read.failed.is_empty() => read,
                Ok(read) => {
                    findings.push(format!(
                        "{name}: blocks {:?} read EIO after the repair",
                        read.failed
                    ));
                    continue;
                }
                Err(e) => {
                    findings.push(format!("{name}: cannot be read after the repair: {e}"));
                    continue;
                }
            };
            // Fsynced bytes the repair cut off (a later write may have changed those that stay:
            // the wrong-bytes check holds those to the model).
            let lost = (read.bytes.len() as u64..model.durable.len() as u64)
                .filter(|pos| !model.torn.contains(&(pos / BLOCK)))
                .count() as u64;
            let wrong = wrong_bytes(model, &read);
            self.tally.fsynced_bytes_lost += lost;
            self.tally.wrong_bytes += wrong;
            if lost > 0 || wrong > 0 {
                findings.push(format!(
                    "{name}: after the repair, {lost} fsynced bytes lost outside torn blocks {:?}, {wrong} bytes wrong",
                    model.torn
                ));
            }
            model.durable = read.bytes;
            model.pending.clear();
            model.created = true;
            model.torn.clear();
        }
    }
}

/// Bytes of `read` (outside its failed blocks) that the file never held at their place.
fn wrong_bytes(model: &FileModel, read: &ReadBack) -> u64 {
    let latest = model.latest();
    let mut wrong = 0;
    for (index, chunk) in read.bytes.chunks(BLOCK as usize).enumerate() {
        let from = index * BLOCK as usize;
        if read.failed.contains(&(index as u64)) {
            continue;
        }
        let same = |content: &[u8]| content.get(from..from + chunk.len()) == Some(chunk);
        if same(&model.durable) || same(&latest) {
            continue;
        }
        wrong += chunk
            .iter()
            .enumerate()
            .filter(|&(i, &byte)| !model.allows((from + i) as u64, byte))
            .count() as u64;
    }
    wrong
}

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
