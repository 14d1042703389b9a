//! The shared file of the fsstress tool: thread K alone writes stripe K, bytes
//! `[K * STRIPE, (K + 1) * STRIPE)`, and [`STRIPE`] is no multiple of 4 KiB, so neighbouring
//! stripes share blocks and concurrent writers of one file meet in the read-modify-write of a
//! shared block. A stripe says what it holds: its thread and generation (u64 LE each), then
//! the stream of both. Where unaligned `O_DIRECT` works (through FUSE it does, and the daemon
//! then sees each exact unaligned range) every read and write of the file is `O_DIRECT`;
//! elsewhere (most local filesystems refuse it) they go through the page cache. Never both in
//! one run: Linux does not keep the two coherent under concurrent writers.

use super::super::stamp::mix;
use super::{OpResult, Trouble, Worker, os};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// The shared file's name in the tree's root.
pub const SHARED: &str = "shared";

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

/// Creates the shared file with every stripe at generation 0; returns whether unaligned
/// `O_DIRECT` transfers work on it.
pub fn create(root: &Path, threads: u32) -> bool {
    let path = root.join(SHARED);
    let file = File::create(&path).expect("create the shared file");
    for tid in 0..u64::from(threads) {
        file.write_all_at(&content(tid, 0), tid * STRIPE)
            .expect("write the shared file");
    }
    let direct = open(&path, true).and_then(|f| f.write_all_at(&content(0, 0)[..1], 0));
    match direct {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => false,
        Err(e) => panic!("O_DIRECT write of the shared file: {e}"),
    }
}

/// Checks every stripe of the shared file; returns their generations.
pub fn verify(root: &Path) -> Result<Vec<u64>, String> {
    let bytes = std::fs::read(root.join(SHARED)).map_err(|e| format!("read {SHARED}: {e}"))?;
    if bytes.is_empty() || !(bytes.len() as u64).is_multiple_of(STRIPE) {
        return Err(format!(
            "{SHARED}: {} bytes, no multiple of {STRIPE}",
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
    /// Writes this thread's stripe at its next generation, in one to three pieces.
    pub(super) fn stripe_write(&mut self) -> OpResult {
        let tid = u64::from(self.tid);
        let generation = self.stripe_generation + 1;
        let data = content(tid, generation);
        let mut cuts = vec![0, STRIPE as usize];
        for _ in 0..self.rng.below(3) {
            cuts.push(1 + self.rng.below(STRIPE - 1) as usize);
        }
        cuts.sort_unstable();
        self.record(format!(
            "stripe write, generation {generation}, cut at {cuts:?} (O_DIRECT {})",
            self.direct
        ));
        let file = os(
            "open the shared file",
            open(&self.root.join(SHARED), self.direct),
        )?;
        for piece in cuts.windows(2) {
            os(
                "pwrite of a stripe",
                file.write_all_at(&data[piece[0]..piece[1]], tid * STRIPE + piece[0] as u64),
            )?;
        }
        self.stripe_generation = generation;
        Ok(())
    }

    /// Reads this thread's stripe back: it holds what this thread last wrote, whatever its
    /// neighbours write meanwhile.
    pub(super) fn stripe_read(&mut self) -> OpResult {
        let tid = u64::from(self.tid);
        self.record(format!(
            "stripe read, generation {} expected",
            self.stripe_generation
        ));
        let file = os(
            "open the shared file",
            open(&self.root.join(SHARED), self.direct),
        )?;
        let mut buf = vec![0u8; STRIPE as usize];
        let n = os(
            "pread of a stripe",
            super::super::read_full_at(&file, &mut buf, tid * STRIPE),
        )?;
        let found = check(tid, &buf[..n]).map_err(Trouble::Content)?;
        if found != self.stripe_generation {
            return Err(Trouble::Content(format!(
                "stripe {tid} holds generation {found}, last written {}",
                self.stripe_generation
            )));
        }
        Ok(())
    }
}
