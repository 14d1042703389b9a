//! The nonce budget of a file's content key (header version 2). Blocks are sealed with random
//! 96-bit nonces, and NIST SP 800-38D allows one AES-GCM key 2^32 such seals; a database file
//! or a VM image that rewrites its blocks for years could get there. So each file counts the
//! blocks its content key sealed, in its header ([`Keying::seals`], reserved ahead so that the
//! header is rewritten once per [`SealBudget::step`] seals), and before the count would pass
//! the budget (2^31) moves to the next epoch's key and re-seals its content, online:
//!
//! 1. the header names epoch `e + 1` and says it is re-keying, and is synced: from then on a
//!    block may be under either key, and reads try both;
//! 2. every block that is not a hole is read and sealed again under the new key, and synced;
//! 3. the header says the re-key is done.
//!
//! All under the file's lock: a concurrent write waits and then seals under the new key. A
//! crash in between leaves a re-keying header, whose blocks read under either key; the first
//! change through a mount finishes the re-key. Version 1 headers have no room for a count.

use super::content::{self, FileState};
use super::inode::Inode;
use super::{CryptFs, FsError, FsResult};
use crate::format::{BLOCK_PLAIN_LEN, FileCipher, Keying};
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many blocks one content key may seal, and how far ahead the header reserves seals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealBudget {
    limit: u64,
    step: u64,
}

/// The most a test may lower the budget to: the slack ([`SealBudget::step`]) must exceed what
/// the request threads can seal before they take the file's lock (16 threads × 258 blocks).
pub const MIN_SEAL_BUDGET: u64 = 1 << 15;

impl Default for SealBudget {
    /// 2^31 seals per key (half of what NIST allows), reserved 2^16 (256 MiB) at a time.
    fn default() -> Self {
        SealBudget {
            limit: 1 << 31,
            step: 1 << 16,
        }
    }
}

impl SealBudget {
    /// A lower budget, for tests that want to see re-keys: at least [`MIN_SEAL_BUDGET`] blocks,
    /// reserved an eighth at a time.
    pub fn lowered(limit: u64) -> Option<SealBudget> {
        (limit >= MIN_SEAL_BUDGET && limit <= SealBudget::default().limit).then(|| SealBudget {
            limit,
            step: (limit / 8).min(SealBudget::default().step),
        })
    }

    /// Seals reserved at a time, and the slack kept below the limit.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Whether `n` more seals may run before the file's lock is taken, with `counted` counted.
    fn room_for(&self, counted: u64, n: u64) -> bool {
        counted + n + self.step <= self.limit
    }
}

/// One file's seal count while it is loaded (in its [`FileState`]).
#[derive(Debug, Default)]
pub struct SealCount {
    /// Seals counted under the current content key (an upper bound).
    counted: AtomicU64,
    /// Seals the header reserves.
    reserved: AtomicU64,
}

impl SealCount {
    /// Starts counting for a header just loaded: its reserved seals may all have been used.
    pub fn loaded(&self, cipher: &FileCipher) {
        let seals = cipher.keying().seals;
        self.counted.store(seals, Ordering::Relaxed);
        self.reserved.store(seals, Ordering::Relaxed);
    }

    /// Starts counting for a header just made: nothing sealed yet.
    pub fn fresh(&self, cipher: &FileCipher) {
        self.counted.store(0, Ordering::Relaxed);
        self.reserved
            .store(cipher.keying().seals, Ordering::Relaxed);
    }
}

impl CryptFs {
    /// Whether a write of `n` blocks may be sealed before the file's lock is taken under
    /// `cipher`: not when it could bring the count near the budget (the lock holder re-keys).
    pub(super) fn may_seal_ahead(&self, state: &FileState, cipher: &FileCipher, n: u64) -> bool {
        !cipher.counts_seals()
            || self
                .budget
                .room_for(state.seals.counted.load(Ordering::Relaxed), n)
    }

    /// Counts `n` seals about to run under the file's cipher in `slot` (with the file's lock
    /// held exclusively): rewrites the header's reservation when the count passes it, and
    /// re-keys the file first when the count would come near the budget. Returns the cipher to
    /// seal with.
    pub(super) fn reserve_seals(
        &self,
        inode: &Inode,
        file: &File,
        state: &FileState,
        slot: &mut Option<Arc<FileCipher>>,
        n: u64,
    ) -> FsResult<Arc<FileCipher>> {
        let cipher = slot.clone().ok_or(FsError(libc::EIO))?;
        if !cipher.counts_seals() {
            return Ok(cipher);
        }
        let counted = state.seals.counted.load(Ordering::Relaxed) + n;
        if counted <= state.seals.reserved.load(Ordering::Relaxed) {
            state.seals.counted.store(counted, Ordering::Relaxed);
            return Ok(cipher);
        }
        if counted + self.budget.step > self.budget.limit {
            let cipher = self.rekey(inode, file, state, slot)?;
            state.seals.counted.fetch_add(n, Ordering::Relaxed);
            return Ok(cipher);
        }
        let keying = Keying {
            seals: counted + self.budget.step,
            ..cipher.keying()
        };
        let next = self
            .keys
            .rewrite_keying(file, &cipher, keying)
            .map_err(|e| self.key_error(inode, e))?;
        state.seals.counted.store(counted, Ordering::Relaxed);
        state.seals.reserved.store(keying.seals, Ordering::Relaxed);
        *slot = Some(next.clone());
        Ok(next)
    }

    /// Moves the file to its content key's next epoch and re-seals its blocks (see the module
    /// documentation). Returns the cipher of the re-keyed file.
    fn rekey(
        &self,
        inode: &Inode,
        file: &File,
        state: &FileState,
        slot: &mut Option<Arc<FileCipher>>,
    ) -> FsResult<Arc<FileCipher>> {
        let cipher = slot.clone().ok_or(FsError(libc::EIO))?;
        let plain = content::plain_len(file).map_err(|e| self.content_error(inode, state, e))?;
        let blocks = plain.div_ceil(BLOCK_PLAIN_LEN);
        let Some(epoch) = cipher.keying().epoch.checked_add(1) else {
            tracing::error!(path = %inode.backing_path(), "the content key has no next epoch");
            return Err(FsError(libc::EIO));
        };
        if blocks + 2 * self.budget.step > self.budget.limit {
            tracing::error!(
                path = %inode.backing_path(),
                blocks,
                "the file has too many blocks to re-seal under one content key"
            );
            return Err(FsError(libc::EFBIG));
        }
        let keying = Keying {
            epoch,
            rekeying: true,
            seals: blocks + self.budget.step,
        };
        let next = self
            .keys
            .rewrite_keying(file, &cipher, keying)
            .map_err(|e| self.key_error(inode, e))?;
        // The header names the new key before any block is sealed under it.
        file.sync_data()?;
        *slot = Some(next);
        state.seals.counted.store(0, Ordering::Relaxed);
        state.seals.reserved.store(keying.seals, Ordering::Relaxed);
        self.finish_rekey(inode, file, state, slot)
    }

    /// Re-seals every block of a re-keying file under its epoch's key, syncs, and writes the
    /// header that says the re-key is done. Returns the cipher of that header.
    pub(super) fn finish_rekey(
        &self,
        inode: &Inode,
        file: &File,
        state: &FileState,
        slot: &mut Option<Arc<FileCipher>>,
    ) -> FsResult<Arc<FileCipher>> {
        let cipher = slot.clone().ok_or(FsError(libc::EIO))?;
        let resealed =
            content::reseal_all(file, &cipher).map_err(|e| self.content_error(inode, state, e))?;
        state.seals.counted.fetch_add(resealed, Ordering::Relaxed);
        file.sync_data()?;
        let keying = Keying {
            rekeying: false,
            ..cipher.keying()
        };
        let settled = self
            .keys
            .rewrite_keying(file, &cipher, keying)
            .map_err(|e| self.key_error(inode, e))?;
        tracing::info!(
            path = %inode.backing_path(),
            epoch = keying.epoch,
            blocks = resealed,
            "re-keyed: the content key's seal budget was reached, every block is sealed again under the next epoch's key"
        );
        *slot = Some(settled.clone());
        Ok(settled)
    }
}
