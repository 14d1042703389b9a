//! The filesystem: a plain struct with the semantics ([`CryptFs`]), testable without a mount,
//! and [`fuse`], the thin adapter from FUSE requests (see [`crate::fuse`]) to it, which only maps
//! calls and errnos.
//!
//! Inodes follow backing inodes through `O_PATH` descriptors and `*at()` system calls
//! ([`inode`]); content goes through the format ([`content`]); file keys come through the DEK
//! cache and the KMS ([`keys`]).

mod attr;
mod budget;
mod check;
mod content;
mod creds;
mod dirs;
pub mod fuse;
mod inode;
mod io;
pub mod keys;
mod names;
mod naming;
mod rewrap;
pub mod stats;
mod walk;
mod xattrs;

pub use attr::{Attr, Caller, DirEntry, FileKind, SetAttr, Statfs};
pub use budget::{MIN_SEAL_BUDGET, SealBudget};
pub use check::{BlockCheck, Damage, FileCheck, Repair, TailCut, check_file, repair_file};
pub use inode::ROOT_INO;
pub use io::Opened;
pub use naming::{NameFault, write_dir_id};
pub use rewrap::{RewrapOutcome, RewrapTarget, rewrap_file};
pub use walk::{
    BadName, DirRef, NameDamage, PlainPath, SealedDamage, SealedFault, Tree, TreeFile,
    cipher_files, remove_orphan, walk_tree,
};

use crate::config::{CONF_NAME, CONF_TEMP_NAME};
use crate::sys;
use inode::InodeTable;
use keys::KeyPath;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// An errno: what the filesystem answers the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsError(pub i32);

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> Self {
        FsError(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

impl std::fmt::Display for FsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}

/// Result of a filesystem operation.
pub type FsResult<T> = Result<T, FsError>;

/// Names in the cipher directory's root that the mount never shows.
const HIDDEN_ROOT_NAMES: [&str; 2] = [CONF_NAME, CONF_TEMP_NAME];

/// The encrypted filesystem over one cipher directory.
pub struct CryptFs {
    cipher_dir: PathBuf,
    inodes: InodeTable,
    handles: Mutex<HashMap<u64, Arc<io::Handle>>>,
    next_handle: AtomicU64,
    keys: KeyPath,
    run_as_root: bool,
    naming: naming::Naming,
    budget: budget::SealBudget,
}

impl CryptFs {
    /// The filesystem over `cipher_dir`, taking file keys from `keys`.
    pub fn new(cipher_dir: &Path, keys: KeyPath) -> FsResult<Self> {
        let path = sys::cstr(cipher_dir.as_os_str())?;
        let root = sys::open_path(&path, libc::O_PATH | libc::O_DIRECTORY, 0)?;
        Self::with_inodes(cipher_dir, keys, InodeTable::new(root)?)
    }

    /// Like [`CryptFs::new`], keeping at most about `budget` inode descriptors open.
    #[cfg(test)]
    fn with_descriptor_budget(cipher_dir: &Path, keys: KeyPath, budget: usize) -> FsResult<Self> {
        let path = sys::cstr(cipher_dir.as_os_str())?;
        let root = sys::open_path(&path, libc::O_PATH | libc::O_DIRECTORY, 0)?;
        Self::with_inodes(cipher_dir, keys, InodeTable::with_budget(root, budget)?)
    }

    fn with_inodes(cipher_dir: &Path, keys: KeyPath, inodes: InodeTable) -> FsResult<Self> {
        Ok(CryptFs {
            cipher_dir: cipher_dir.to_path_buf(),
            inodes,
            handles: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            keys,
            run_as_root: is_root(),
            naming: naming::Naming::Plain,
            budget: budget::SealBudget::default(),
        })
    }

    /// The same filesystem with a lowered seal budget per content key (tests that want to see
    /// files re-keyed).
    pub fn with_seal_budget(self, budget: budget::SealBudget) -> Self {
        CryptFs { budget, ..self }
    }

    /// The same filesystem with names encrypted by `cipher` (format version 2).
    pub fn with_encrypted_names(self, cipher: crate::format::NameCipher) -> Self {
        CryptFs {
            naming: naming::Naming::Encrypted(cipher),
            ..self
        }
    }

    /// The cipher directory.
    pub fn cipher_dir(&self) -> &Path {
        &self.cipher_dir
    }

    /// The key path (for its cache counters).
    pub fn keys(&self) -> &KeyPath {
        &self.keys
    }

    /// Number of inodes the kernel holds references to.
    pub fn inode_count(&self) -> usize {
        self.inodes.count()
    }

    /// Number of regular files open (handles the kernel holds).
    pub fn open_files(&self) -> usize {
        let handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
        handles
            .values()
            .filter(|h| matches!(***h, io::Handle::File(_)))
            .count()
    }

    /// Number of backing descriptors held open for those inodes.
    pub fn inode_descriptors(&self) -> usize {
        self.inodes.open_descriptors()
    }

    fn handle(&self, fh: u64) -> FsResult<Arc<io::Handle>> {
        self.handles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&fh)
            .cloned()
            .ok_or(FsError(libc::EBADF))
    }

    fn add_handle(&self, handle: io::Handle) -> u64 {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.handles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(fh, Arc::new(handle));
        fh
    }

    fn remove_handle(&self, fh: u64) {
        self.handles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&fh);
    }
}

/// Whether the daemon runs as root (then it gives new nodes to the caller).
fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
#[path = "tests/kms.rs"]
mod tests_kms;
#[cfg(test)]
#[path = "tests/prop.rs"]
mod tests_prop;
