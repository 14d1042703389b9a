//! The shared files of the fsstress tool: in each, thread K alone writes stripe K, bytes
//! `[K * STRIPE, (K + 1) * STRIPE)`, and [`STRIPE`] is no multiple of 4 KiB, so neighbouring
//! stripes share blocks and concurrent writers of one file meet in the read-modify-write of a
//! shared block. A stripe says what it holds: its thread and generation (u64 LE each), then
//! the stream of both. [`SHARED`] is read and written through the page cache; where unaligned
//! `O_DIRECT` works (through FUSE it does, and the daemon then sees each exact unaligned
//! range) [`SHARED_DIRECT`] is read and written `O_DIRECT` only (most local filesystems refuse
//! it: then there is no such file). Never both ways on one file: Linux does not keep the two
//! coherent under concurrent writers.

use super::super::stamp::mix;
use super::{OpResult, Trouble, Worker, os};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The shared files' names in the tree's root: the one used through the page cache, and the
/// one used `O_DIRECT`.
pub const SHARED: &str = "shared";
pub const SHARED_DIRECT: &str = "shared_direct";

/// True for the name of a shared file.
pub fn is_shared(rel: &Path) -> bool {
    rel == Path::new(SHARED) || rel == Path::new(SHARED_DIRECT)
}

/// The length of a stripe: two blocks and a piece of a third.
pub const STRIPE: u64 = 2 * 4096 + 1234;

/// Stripe `tid`'s content at generation `generation`.
pub fn content(tid: u64, generation: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(STRIPE as usize);
    out.extend_from_slice(&tid.to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    let seed = mix(tid ^ mix(generation));
    let mut word = 0;
    while (out.len() as u64) < STRIPE {
        let bytes = mix(seed ^ word).to_le_bytes();
        let take = (STRIPE as usize - out.len()).min(8);
        out.extend_from_slice(&bytes[..take]);
        word += 1;
    }
    out
}

/// The generation stripe `tid` holds, if it is a whole content of that stripe.
pub fn check(tid: u64, bytes: &[u8]) -> Result<u64, String> {
    if bytes.len() as u64 != STRIPE {
        return Err(format!(
            "stripe {tid}: {} bytes, expected {STRIPE}",
            bytes.len()
        ));
    }
    let generation = u64::from_le_bytes(bytes[8..16].try_into().expect("BUG: 8 bytes"));
    let expected = content(tid, generation);
    match super::super::oplog::first_difference(tid * STRIPE, &expected, bytes) {
        None => Ok(generation),
        Some(diff) => Err(format!(
            "stripe {tid} (says generation {generation}): {diff}"
        )),
    }
}

fn open(path: &Path, direct: bool) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(if direct { libc::O_DIRECT } else { 0 })
        .open(path)
}

/// Creates the shared files with every stripe at generation 0; returns whether unaligned
/// `O_DIRECT` transfers work (else there is no [`SHARED_DIRECT`]).
pub fn create(root: &Path, threads: u32) -> bool {
    for name in [SHARED, SHARED_DIRECT] {
        let file = File::create(root.join(name)).expect("create a shared file");
        for tid in 0..u64::from(threads) {
            file.write_all_at(&content(tid, 0), tid * STRIPE)
                .expect("write a shared file");
        }
    }
    let path = root.join(SHARED_DIRECT);
    let direct = open(&path, true).and_then(|f| f.write_all_at(&content(0, 0)[..1], 0));
    match direct {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            std::fs::remove_file(&path).expect("unlink the O_DIRECT shared file");
            false
        }
        Err(e) => panic!("O_DIRECT write of {}: {e}", path.display()),
    }
}

/// Checks every stripe of shared file `path`; returns their generations.
pub fn verify(path: &Path) -> Result<Vec<u64>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    if bytes.is_empty() || !(bytes.len() as u64).is_multiple_of(STRIPE) {
        return Err(format!(
            "{}: {} bytes, no multiple of {STRIPE}",
            path.display(),
            bytes.len()
        ));
    }
    bytes
        .chunks(STRIPE as usize)
        .enumerate()
        .map(|(tid, stripe)| check(tid as u64, stripe))
        .collect()
}

impl Worker<'_> {
    /// One of the shared files: its index in `stripe_generations`, its path, and whether it is
    /// used `O_DIRECT`.
    fn pick_shared(&mut self) -> (usize, PathBuf, bool) {
        if self.direct && self.rng.below(2) == 0 {
            (1, self.root.join(SHARED_DIRECT), true)
        } else {
            (0, self.root.join(SHARED), false)
        }
    }

    /// Writes this thread's stripe of a shared file at its next generation, in one to three
    /// pieces.
    pub(super) fn stripe_write(&mut self) -> OpResult {
        let tid = u64::from(self.tid);
        let (which, path, direct) = self.pick_shared();
        let generation = self.stripe_generations[which] + 1;
        let data = content(tid, generation);
        let mut cuts = vec![0, STRIPE as usize];
        for _ in 0..self.rng.below(3) {
            cuts.push(1 + self.rng.below(STRIPE - 1) as usize);
        }
        cuts.sort_unstable();
        self.record(format!(
            "stripe write of {}, generation {generation}, cut at {cuts:?}",
            path.display()
        ));
        let file = os("open a shared file", open(&path, direct))?;
        for piece in cuts.windows(2) {
            os(
                "pwrite of a stripe",
                file.write_all_at(&data[piece[0]..piece[1]], tid * STRIPE + piece[0] as u64),
            )?;
        }
        self.stripe_generations[which] = generation;
        Ok(())
    }

    /// Reads this thread's stripe of a shared file back: it holds what this thread last wrote
    /// there, whatever its neighbours write meanwhile.
    pub(super) fn stripe_read(&mut self) -> OpResult {
        let tid = u64::from(self.tid);
        let (which, path, direct) = self.pick_shared();
        let expected = self.stripe_generations[which];
        self.record(format!(
            "stripe read of {}, generation {expected} expected",
            path.display()
        ));
        let file = os("open a shared file", open(&path, direct))?;
        let mut buf = vec![0u8; STRIPE as usize];
        let n = os(
            "pread of a stripe",
            super::super::read_full_at(&file, &mut buf, tid * STRIPE),
        )?;
        let found = check(tid, &buf[..n]).map_err(Trouble::Content)?;
        if found != expected {
            return Err(Trouble::Content(format!(
                "stripe {tid} of {} holds generation {found}, last written {expected}",
                path.display()
            )));
        }
        Ok(())
    }
}
