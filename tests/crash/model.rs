//! The model of the files the writers write (what an fsync acknowledged, what was written
//! since), the writers themselves, and reading a file back to compare with its model.

use super::*;

/// One file as the writers left it: what its last acknowledged fsync covered, and the writes
/// issued since (acknowledged by write(2), or in flight at the kill).
#[derive(Default, Clone)]
pub(crate) struct FileModel {
    pub(crate) durable: Vec<u8>,
    pub(crate) pending: Vec<(u64, Vec<u8>)>,
    /// Its create was answered: the backing file exists, whatever the kill.
    pub(crate) created: bool,
    /// Blocks found torn since the last repair (EIO through the mount, or named by fsck).
    pub(crate) torn: BTreeSet<u64>,
}

impl FileModel {
    /// The size the file has once every write issued is applied.
    pub(crate) fn latest_len(&self) -> u64 {
        self.pending
            .iter()
            .map(|(offset, data)| offset + data.len() as u64)
            .fold(self.durable.len() as u64, u64::max)
    }

    /// The content once every write issued is applied.
    pub(crate) fn latest(&self) -> Vec<u8> {
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
    pub(crate) fn synced(&mut self) {
        self.durable = self.latest();
        self.pending.clear();
    }

    /// Blocks a write since the last fsync touched: those it covers, and the block that held
    /// the fsynced end of the file when it writes past it (re-sealed in place).
    pub(crate) fn touched(&self) -> BTreeSet<u64> {
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
    pub(crate) fn allows(&self, pos: u64, byte: u8) -> bool {
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

pub(crate) type Models = Arc<Mutex<BTreeMap<String, FileModel>>>;

pub(crate) fn lock(models: &Models) -> std::sync::MutexGuard<'_, BTreeMap<String, FileModel>> {
    models.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The shapes of the writers' work.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shape {
    /// Appends of odd sizes (1 to 12,000 bytes), an fsync after one in three.
    Appends,
    /// Overwrites in place at odd offsets of a 256 KiB file, an fsync after one in three.
    Overwrites,
    /// Sequential writes of 1 to 8 MiB in one call, each followed by an fsync.
    Large,
    /// New small files, each written and fsynced.
    SmallFiles,
}

pub(crate) const SHAPES: [Shape; 5] = [
    Shape::Appends,
    Shape::Appends,
    Shape::Overwrites,
    Shape::Large,
    Shape::SmallFiles,
];

/// A writer thread's view: where it writes, the models, and whether the daemon was killed.
#[derive(Clone)]
pub(crate) struct Writer {
    pub(crate) plain: PathBuf,
    pub(crate) models: Models,
    pub(crate) killed: Arc<AtomicBool>,
    /// Fsyncs acknowledged.
    pub(crate) fsyncs: Arc<AtomicUsize>,
    /// Files of the `Large` shape wrap to offset 0 past this size.
    pub(crate) large_max: u64,
}

impl Writer {
    /// Opens (creating) `name`, tracked from before the create.
    pub(crate) fn open(&self, name: &str, new: bool) -> io::Result<File> {
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

    pub(crate) fn latest_len(&self, name: &str) -> u64 {
        lock(&self.models)
            .get(name)
            .map_or(0, FileModel::latest_len)
    }

    /// Writes `data` at `offset`, recorded before the call (it may be in flight at the kill).
    pub(crate) fn write(
        &self,
        file: &File,
        name: &str,
        offset: u64,
        data: Vec<u8>,
    ) -> io::Result<()> {
        let len = data.len();
        let copy = data.clone();
        if let Some(model) = lock(&self.models).get_mut(name) {
            model.pending.push((offset, data));
        }
        file.write_all_at(&copy[..len], offset)
    }

    /// fsync; once acknowledged, everything written so far is promised.
    pub(crate) fn fsync(&self, file: &File, name: &str) -> io::Result<()> {
        file.sync_all()?;
        self.fsyncs.fetch_add(1, Ordering::SeqCst);
        if let Some(model) = lock(&self.models).get_mut(name) {
            model.synced();
        }
        Ok(())
    }

    /// Works in `shape` until an error (the kill) or 60 s; an error before the kill is a
    /// finding.
    pub(crate) fn run(
        &self,
        shape: Shape,
        id: usize,
        round: usize,
        seed: u64,
    ) -> Result<(), String> {
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

    pub(crate) fn appends(&self, name: &str, rng: &mut Rng, deadline: Instant) -> io::Result<()> {
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

    pub(crate) fn overwrites(
        &self,
        name: &str,
        rng: &mut Rng,
        deadline: Instant,
    ) -> io::Result<()> {
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

    pub(crate) fn large(&self, name: &str, rng: &mut Rng, deadline: Instant) -> io::Result<()> {
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

    pub(crate) fn small_files(
        &self,
        round: usize,
        rng: &mut Rng,
        deadline: Instant,
    ) -> io::Result<()> {
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
pub(crate) struct ReadBack {
    pub(crate) bytes: Vec<u8>,
    pub(crate) failed: BTreeSet<u64>,
}

pub(crate) fn read_exact(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    file.read_exact_at(buf, offset)
}

/// Reads `path` through the mount, 1 MiB at a time, block by block where a read fails.
pub(crate) fn read_back(path: &Path) -> io::Result<ReadBack> {
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
pub(crate) fn files_on(plain: &Path) -> BTreeSet<String> {
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

/// Bytes of `read` (outside its failed blocks) that the file never held at their place.
pub(crate) fn wrong_bytes(model: &FileModel, read: &ReadBack) -> u64 {
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
