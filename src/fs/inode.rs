//! The inode table: one `O_PATH` descriptor per backing inode the kernel knows, so inodes follow
//! the backing files, not their paths (renames never make a node point elsewhere).

use super::FsError;
use super::content::FileState;
use crate::sys;
use std::collections::HashMap;
use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// The FUSE node id of the mount's root.
pub const ROOT_INO: u64 = 1;

/// One backing inode the kernel holds a reference to.
pub struct Inode {
    /// Our node id.
    pub ino: u64,
    /// `O_PATH | O_NOFOLLOW` descriptor of the backing inode.
    pub fd: OwnedFd,
    /// `st_mode & S_IFMT` of the backing inode.
    pub kind: u32,
    /// Backing (device, inode) pair.
    backing: (u64, u64),
    /// The open-file state shared by every handle of a regular file.
    state: Mutex<Weak<FileState>>,
}

impl Inode {
    /// The descriptor, borrowed.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// True for a regular file.
    pub fn is_file(&self) -> bool {
        self.kind == libc::S_IFREG
    }

    /// The shared open-file state, made on first use and dropped with the last user.
    pub fn file_state(&self) -> Arc<FileState> {
        let mut slot = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = slot.upgrade() {
            return state;
        }
        let state = Arc::new(FileState::default());
        *slot = Arc::downgrade(&state);
        state
    }

    /// The current backing path of this inode, for log lines.
    pub fn backing_path(&self) -> String {
        std::fs::read_link(format!("/proc/self/fd/{}", sys::raw(&self.fd))).map_or_else(
            |_| format!("<inode {}>", self.backing.1),
            |p| p.display().to_string(),
        )
    }
}

struct Table {
    by_ino: HashMap<u64, (Arc<Inode>, u64)>,
    by_backing: HashMap<(u64, u64), u64>,
    next_ino: u64,
}

/// All inodes the kernel knows, with their lookup counts.
pub struct InodeTable {
    table: Mutex<Table>,
}

impl InodeTable {
    /// A table holding the root, `root_fd` being the cipher directory opened `O_PATH`.
    pub fn new(root_fd: OwnedFd) -> Result<Self, FsError> {
        let st = sys::fstat(root_fd.as_fd())?;
        let root = Arc::new(Inode {
            ino: ROOT_INO,
            fd: root_fd,
            kind: st.st_mode & libc::S_IFMT,
            backing: (st.st_dev, st.st_ino),
            state: Mutex::new(Weak::new()),
        });
        let mut by_ino = HashMap::new();
        // The root is never forgotten: its count starts high.
        by_ino.insert(ROOT_INO, (root, u64::MAX / 2));
        let mut by_backing = HashMap::new();
        by_backing.insert((st.st_dev, st.st_ino), ROOT_INO);
        Ok(InodeTable {
            table: Mutex::new(Table {
                by_ino,
                by_backing,
                next_ino: ROOT_INO + 1,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The inode with node id `ino`; ESTALE-like ENOENT when the kernel refers to one we forgot.
    pub fn get(&self, ino: u64) -> Result<Arc<Inode>, FsError> {
        self.lock()
            .by_ino
            .get(&ino)
            .map(|(inode, _)| inode.clone())
            .ok_or(FsError(libc::ENOENT))
    }

    /// Looks `name` up in directory `parent` and counts one kernel reference to it.
    pub fn lookup(&self, parent: &Inode, name: &CStr) -> Result<(Arc<Inode>, libc::stat), FsError> {
        let fd = sys::openat(parent.fd(), name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        let st = sys::fstat(fd.as_fd())?;
        let backing = (st.st_dev, st.st_ino);
        let mut table = self.lock();
        if let Some(&ino) = table.by_backing.get(&backing)
            && let Some((inode, count)) = table.by_ino.get_mut(&ino)
        {
            *count += 1;
            return Ok((inode.clone(), st));
        }
        let ino = table.next_ino;
        table.next_ino += 1;
        let inode = Arc::new(Inode {
            ino,
            fd,
            kind: st.st_mode & libc::S_IFMT,
            backing,
            state: Mutex::new(Weak::new()),
        });
        table.by_ino.insert(ino, (inode.clone(), 1));
        table.by_backing.insert(backing, ino);
        Ok((inode, st))
    }

    /// Drops `n` kernel references to `ino`; the inode goes when none is left.
    pub fn forget(&self, ino: u64, n: u64) {
        let mut table = self.lock();
        let gone = match table.by_ino.get_mut(&ino) {
            Some((_, count)) => {
                *count = count.saturating_sub(n);
                *count == 0
            }
            None => false,
        };
        if gone
            && let Some((inode, _)) = table.by_ino.remove(&ino)
            && table.by_backing.get(&inode.backing) == Some(&ino)
        {
            table.by_backing.remove(&inode.backing);
        }
    }

    /// Number of inodes held (the root included).
    pub fn count(&self) -> usize {
        self.lock().by_ino.len()
    }
}
