//! The inode table: inodes follow the backing inodes, not their paths (renames never make a
//! node point elsewhere). Each inode holds an `O_PATH` descriptor of its backing inode: past a
//! budget of open descriptors, those of idle inodes are closed and a file handle is kept to
//! reopen them by, so a tree of any size fits the open-file limit. A node removed through the
//! mount keeps its descriptor until the kernel forgets it, so that its backing inode, and with it
//! its number, stays allocated while the kernel may still name it.
//!
//! A node's id is its backing inode number, and its FUSE generation the backing inode's
//! generation: one file shows one inode number in `stat` and in `readdir`, the same after a
//! remount, and a file handle the kernel gives out (`name_to_handle_at`, NFS export) names the
//! same file after a remount. Inodes of another device, or numbered like the root, get ids of
//! their own above [`SPILL_BASE`].

use super::FsError;
use super::content::FileState;
use crate::sys;
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// The FUSE node id of the mount's root.
pub const ROOT_INO: u64 = 1;

/// Node ids from here on are given to backing inodes that cannot use their own number: on
/// another device than the cipher directory (a mount inside it), or numbered 1 (the root's id).
pub const SPILL_BASE: u64 = 1 << 63;

/// Descriptors the table may keep open: half the open-file limit (the rest is for open files
/// and everything else), within bounds.
fn budget_for(limit: u64) -> usize {
    usize::try_from(limit / 2)
        .unwrap_or(usize::MAX)
        .clamp(16, 1 << 20)
}

/// What every inode shares: the count of open descriptors against the budget, and the
/// filesystem to reopen by handle.
struct Descriptors {
    open: AtomicUsize,
    budget: usize,
    /// Open count above which the next sweep runs: the budget, or more while most inodes are in
    /// use, so that a sweep that freed little is not repeated on every request.
    next_sweep: AtomicUsize,
    /// The cipher directory, to reopen handles on its filesystem; `None` when handles cannot
    /// be used (no `CAP_DAC_READ_SEARCH`, or a filesystem without them): then no descriptor is
    /// ever closed early.
    reopen: Option<(OwnedFd, u64)>,
}

/// An open `O_PATH` descriptor of a backing inode, counted against the budget while open.
pub struct InodeFd {
    fd: OwnedFd,
    descriptors: Arc<Descriptors>,
}

impl AsFd for InodeFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for InodeFd {
    fn drop(&mut self) {
        self.descriptors.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Descriptors {
    fn counted(self: &Arc<Self>, fd: OwnedFd) -> Arc<InodeFd> {
        self.open.fetch_add(1, Ordering::Relaxed);
        Arc::new(InodeFd {
            fd,
            descriptors: self.clone(),
        })
    }
}

/// A `/proc/self/fd/N` path of an inode, with the descriptor `N` it names kept open.
pub struct ProcPath {
    _fd: Arc<InodeFd>,
    path: CString,
}

impl std::ops::Deref for ProcPath {
    type Target = CStr;

    fn deref(&self) -> &CStr {
        &self.path
    }
}

/// What is known of an inode's extended attributes.
#[derive(Default)]
pub struct XattrsKnown {
    /// Changes made through the mount.
    version: u64,
    /// Known to have none.
    none: bool,
}

/// One backing inode the kernel holds a reference to.
pub struct Inode {
    /// Our node id.
    pub ino: u64,
    /// The `O_PATH | O_NOFOLLOW` descriptor while open.
    fd: Mutex<Option<Arc<InodeFd>>>,
    /// How to reopen the backing inode once its descriptor was closed (made with the node;
    /// `None` when the backing filesystem has no handles: the descriptor then stays open).
    handle: Option<sys::FileHandle>,
    /// The FUSE generation: the backing inode's, so that a reused inode number is a new node
    /// to the kernel.
    pub generation: u64,
    /// Used since the last sweep (second chance before its descriptor is closed).
    used: AtomicBool,
    /// Removed from its directory through the mount (see [`InodeTable::hold_before_removal`]):
    /// its descriptor stays open until the kernel forgets the node.
    held: AtomicBool,
    /// What is known of its extended attributes (see [`Inode::has_no_xattrs`]).
    xattrs: Mutex<XattrsKnown>,
    descriptors: Arc<Descriptors>,
    /// `st_mode & S_IFMT` of the backing inode.
    pub kind: u32,
    /// Backing (device, inode) pair.
    backing: (u64, u64),
    /// The open-file state shared by every handle of a regular file.
    state: Mutex<Weak<FileState>>,
    /// A directory's id, once read (encrypted names: see `naming`).
    pub dir_id: std::sync::OnceLock<super::naming::KnownDirId>,
}

impl Inode {
    /// The backing inode's descriptor, reopened by handle if it was closed. Keep the returned
    /// value for as long as the descriptor (or a `/proc/self/fd` path made of it) is used.
    pub fn fd(&self) -> Result<Arc<InodeFd>, FsError> {
        self.used.store(true, Ordering::Relaxed);
        let mut slot = self.fd.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(fd) = &*slot {
            return Ok(fd.clone());
        }
        let (Some(handle), Some((mount_fd, _))) = (&self.handle, &self.descriptors.reopen) else {
            return Err(FsError(libc::ESTALE));
        };
        let fd = sys::open_by_handle(mount_fd.as_fd(), handle, libc::O_PATH | libc::O_NOFOLLOW)?;
        let st = sys::fstat(fd.as_fd())?;
        if (st.st_dev, st.st_ino) != self.backing {
            return Err(FsError(libc::ESTALE));
        }
        let fd = self.descriptors.counted(fd);
        *slot = Some(fd.clone());
        Ok(fd)
    }

    /// The backing inode as a `/proc/self/fd` path, for the calls that take a path; the path
    /// holds the descriptor open for as long as it lives.
    pub fn proc_path(&self) -> Result<ProcPath, FsError> {
        let fd = self.fd()?;
        let path = sys::proc_fd_path(fd.as_fd());
        Ok(ProcPath { _fd: fd, path })
    }

    /// True once the inode was found to have no extended attribute at all, and none was set
    /// since. The kernel asks for some before every write(2) (`security.capability`) and `ls -l`
    /// for others on every file (ACLs, security labels); every change to attributes goes
    /// through the mount, so the answer can be remembered.
    pub fn has_no_xattrs(&self) -> bool {
        self.xattrs_known().none
    }

    /// The count of attribute changes, to pass to [`Inode::record_no_xattrs`] once a listing
    /// started now found none.
    pub fn xattrs_version(&self) -> u64 {
        self.xattrs_known().version
    }

    /// Remembers that the inode has no extended attribute, unless one changed since `version`
    /// was read.
    pub fn record_no_xattrs(&self, version: u64) {
        let mut known = self.xattrs_known();
        if known.version == version {
            known.none = true;
        }
    }

    /// Forgets what was known of the attributes (one is being set or removed).
    pub fn xattrs_changed(&self) {
        let mut known = self.xattrs_known();
        known.version += 1;
        known.none = false;
    }

    fn xattrs_known(&self) -> std::sync::MutexGuard<'_, XattrsKnown> {
        self.xattrs.lock().unwrap_or_else(PoisonError::into_inner)
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
        let unknown = || format!("<inode {}>", self.backing.1);
        let Ok(fd) = self.fd() else {
            return unknown();
        };
        std::fs::read_link(format!("/proc/self/fd/{}", sys::raw(&fd.fd)))
            .map_or_else(|_| unknown(), |p| p.display().to_string())
    }

    /// Whether `fd`, just opened by name, is this inode; if so, and this inode's descriptor was
    /// closed, `fd` becomes it. With its descriptor open the inode cannot have been freed, so
    /// same device and inode number means the same inode; with it closed, the backing file may
    /// have been deleted and its number reused, so the file handles must match. Gives `fd` back
    /// when it is another inode.
    fn adopt_if_same(&self, fd: OwnedFd) -> Result<(), OwnedFd> {
        let mut slot = self.fd.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_some() {
            return Ok(());
        }
        let same = match (&self.handle, sys::file_handle(fd.as_fd())) {
            (Some(kept), Ok((found, _))) => *kept == found,
            _ => false,
        };
        if !same {
            return Err(fd);
        }
        *slot = Some(self.descriptors.counted(fd));
        Ok(())
    }

    /// Closes the descriptor if the inode is idle and can be reopened; true if it was closed.
    fn close_if_idle(&self) -> bool {
        if self.ino == ROOT_INO
            || self.held.load(Ordering::Relaxed)
            || self.used.swap(false, Ordering::Relaxed)
        {
            return false;
        }
        let Some((_, root_dev)) = &self.descriptors.reopen else {
            return false;
        };
        let mut slot = self.fd.lock().unwrap_or_else(PoisonError::into_inner);
        // Only the table's reference: no request is using the descriptor right now.
        if slot.as_ref().is_none_or(|fd| Arc::strong_count(fd) != 1) {
            return false;
        }
        // A handle is decoded by the filesystem it is opened on: only inodes on the cipher
        // directory's own filesystem can be reopened.
        if self.handle.is_none() || self.backing.0 != *root_dev {
            return false;
        }
        *slot = None;
        true
    }
}

struct Table {
    /// Every node with its count of kernel references.
    by_ino: HashMap<u64, (Arc<Inode>, u64)>,
    /// Node ids of the backing inodes that cannot use their own number (see [`SPILL_BASE`]).
    spilled: HashMap<(u64, u64), u64>,
    next_spill: u64,
}

/// All inodes the kernel knows, with their lookup counts.
pub struct InodeTable {
    table: Mutex<Table>,
    descriptors: Arc<Descriptors>,
    /// The cipher directory's (device, inode).
    root_backing: (u64, u64),
    /// Whether the cipher directory's filesystem makes handles from inode numbers alone, so a
    /// node the table forgot can be found again by its id (NFS export, `open_by_handle_at`).
    numbers_reopen: bool,
}

impl InodeTable {
    /// A table holding the root, `root_fd` being the cipher directory opened `O_PATH`.
    pub fn new(root_fd: OwnedFd) -> Result<Self, FsError> {
        let limit = sys::open_file_limit().unwrap_or(1024);
        Self::with_budget(root_fd, budget_for(limit))
    }

    /// A table that keeps at most about `budget` descriptors open.
    pub fn with_budget(root_fd: OwnedFd, budget: usize) -> Result<Self, FsError> {
        let st = sys::fstat(root_fd.as_fd())?;
        let reopen = handles_work(root_fd.as_fd(), st.st_dev);
        if reopen.is_none() {
            tracing::info!(
                "file handles are not available (they need CAP_DAC_READ_SEARCH): the mount keeps one descriptor open per inode the kernel remembers, so a tree larger than the open-file limit fails with EMFILE"
            );
        }
        let root_handle = sys::file_handle(root_fd.as_fd()).ok().map(|(h, _)| h);
        let numbers_reopen = reopen.is_some()
            && root_handle
                .as_ref()
                .is_some_and(|h| h.names_inodes_by_number());
        let descriptors = Arc::new(Descriptors {
            open: AtomicUsize::new(0),
            budget,
            next_sweep: AtomicUsize::new(budget),
            reopen,
        });
        let root_backing = (st.st_dev, st.st_ino);
        let root = Arc::new(Inode {
            ino: ROOT_INO,
            fd: Mutex::new(Some(descriptors.counted(root_fd))),
            handle: None,
            // The kernel made the root's inode at mount time with generation 0.
            generation: 0,
            used: AtomicBool::new(false),
            held: AtomicBool::new(false),
            xattrs: Mutex::default(),
            descriptors: descriptors.clone(),
            kind: st.st_mode & libc::S_IFMT,
            backing: root_backing,
            state: Mutex::new(Weak::new()),
            dir_id: std::sync::OnceLock::new(),
        });
        let mut by_ino = HashMap::new();
        // The root is never forgotten: its count starts high.
        by_ino.insert(ROOT_INO, (root, u64::MAX / 2));
        Ok(InodeTable {
            table: Mutex::new(Table {
                by_ino,
                spilled: HashMap::new(),
                next_spill: SPILL_BASE,
            }),
            descriptors,
            root_backing,
            numbers_reopen,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The inode with node id `ino`; ENOENT when the kernel refers to one we forgot.
    pub fn get(&self, ino: u64) -> Result<Arc<Inode>, FsError> {
        let table = self.lock();
        // Reopened descriptors are counted too: any request may find the budget exceeded.
        if self.over_budget() {
            self.sweep(&table);
        }
        table
            .by_ino
            .get(&ino)
            .map(|(inode, _)| inode.clone())
            .ok_or(FsError(libc::ENOENT))
    }

    fn over_budget(&self) -> bool {
        let d = &self.descriptors;
        if d.reopen.is_none() {
            return false;
        }
        let open = d.open.load(Ordering::Relaxed);
        let next = d.next_sweep.load(Ordering::Relaxed);
        if open <= d.budget && next != d.budget {
            // Back under the budget: the next sweep is due at the budget again.
            d.next_sweep.store(d.budget, Ordering::Relaxed);
        }
        open > next
    }

    /// The node id of backing inode `backing`, without spilling: `None` when it needs a spilled
    /// id (see [`SPILL_BASE`]).
    fn own_id(&self, backing: (u64, u64)) -> Option<u64> {
        if backing == self.root_backing {
            Some(ROOT_INO)
        } else if backing.0 == self.root_backing.0
            && backing.1 != ROOT_INO
            && backing.1 < SPILL_BASE
        {
            Some(backing.1)
        } else {
            None
        }
    }

    /// The inode number a directory listing shows for backing inode number `backing_ino` of
    /// the cipher directory's device: the node id a lookup of it gives.
    pub fn listed_ino(&self, backing_ino: u64) -> u64 {
        let backing = (self.root_backing.0, backing_ino);
        self.own_id(backing)
            .or_else(|| self.lock().spilled.get(&backing).copied())
            .unwrap_or(backing_ino)
    }

    /// The node the kernel holds for the backing inode `st` describes, if it holds one; no
    /// reference is counted.
    pub fn known(&self, st: &libc::stat) -> Option<Arc<Inode>> {
        let backing = (st.st_dev, st.st_ino);
        let table = self.lock();
        let ino = self
            .own_id(backing)
            .or_else(|| table.spilled.get(&backing).copied())?;
        let (inode, _) = table.by_ino.get(&ino)?;
        (inode.backing == backing).then(|| inode.clone())
    }

    /// Keeps entry `name` of directory `parent`, about to be removed through the mount
    /// (unlink, rmdir, rename over it), allocated for as long as the kernel holds its node: its
    /// descriptor is reopened if it was closed, and stays open until the node is forgotten.
    /// Without it, removing a node whose descriptor was closed for being idle frees the backing
    /// inode at once, and the backing filesystem may give its number, which is our node id, to
    /// a new file while the kernel still holds the old node or has a reply naming it in flight.
    /// Best effort: a name that is not there, or a node that cannot be reopened (gone behind
    /// the mount's back), is left to the removal itself.
    pub fn hold_before_removal(&self, parent: &Inode, name: &CStr) {
        if self.descriptors.reopen.is_none() {
            // Descriptors are never closed early: every node the kernel holds is open.
            return;
        }
        let Ok(parent_fd) = parent.fd() else {
            return;
        };
        let Ok(st) = sys::fstatat(parent_fd.as_fd(), name, libc::AT_SYMLINK_NOFOLLOW) else {
            return;
        };
        if let Some(inode) = self.known(&st) {
            // Held first, so that no sweep closes the descriptor once it is open.
            inode.held.store(true, Ordering::Relaxed);
            if let Err(e) = inode.fd() {
                tracing::debug!(
                    ino = inode.ino,
                    "cannot reopen a node before its removal: {e}"
                );
            }
        }
    }

    fn node_id(&self, table: &mut Table, backing: (u64, u64)) -> u64 {
        if let Some(id) = self.own_id(backing) {
            return id;
        }
        if let Some(&id) = table.spilled.get(&backing) {
            return id;
        }
        let id = table.next_spill;
        table.next_spill += 1;
        table.spilled.insert(backing, id);
        id
    }

    /// Looks `name` up in directory `parent` and counts one kernel reference to it.
    pub fn lookup(&self, parent: &Inode, name: &CStr) -> Result<(Arc<Inode>, libc::stat), FsError> {
        if parent.ino == ROOT_INO && name.to_bytes() == b".." {
            // Never above the cipher directory.
            return self.lookup_id(ROOT_INO);
        }
        let open = || {
            sys::openat(
                parent.fd()?.as_fd(),
                name,
                libc::O_PATH | libc::O_NOFOLLOW,
                0,
            )
            .map_err(FsError::from)
        };
        let fd = match open() {
            // Out of descriptors: close idle ones now and try once more.
            Err(FsError(libc::EMFILE)) if self.descriptors.reopen.is_some() => {
                self.sweep(&self.lock());
                open()?
            }
            result => result?,
        };
        self.adopt(fd)
    }

    /// Finds node `ino` again and counts one kernel reference to it: the kernel asks for a node
    /// by id (a lookup of "." in it) when it decodes a file handle of a node it forgot, after
    /// a remount for example. ESTALE when the backing inode is gone or cannot be found by
    /// number on this filesystem.
    pub fn lookup_id(&self, ino: u64) -> Result<(Arc<Inode>, libc::stat), FsError> {
        let known = {
            let mut table = self.lock();
            table.by_ino.get_mut(&ino).map(|(inode, count)| {
                *count += 1;
                inode.clone()
            })
        };
        if let Some(inode) = known {
            match inode.fd().and_then(|fd| Ok(sys::fstat(fd.as_fd())?)) {
                Ok(st) => return Ok((inode, st)),
                Err(e) => {
                    self.forget(ino, 1);
                    return Err(e);
                }
            }
        }
        let (Some((mount_fd, _)), true, Ok(number)) = (
            &self.descriptors.reopen,
            self.numbers_reopen,
            u32::try_from(ino),
        ) else {
            return Err(FsError(libc::ESTALE));
        };
        let handle = sys::FileHandle::for_inode(number);
        let fd = sys::open_by_handle(mount_fd.as_fd(), &handle, libc::O_PATH | libc::O_NOFOLLOW)
            .map_err(|_| FsError(libc::ESTALE))?;
        let (inode, st) = self.adopt(fd)?;
        if inode.ino != ino {
            self.forget(inode.ino, 1);
            return Err(FsError(libc::ESTALE));
        }
        Ok((inode, st))
    }

    /// The node of the backing inode open as `file` (a file with no name yet: `O_TMPFILE`),
    /// with one more kernel reference.
    pub fn lookup_open(&self, file: BorrowedFd<'_>) -> Result<(Arc<Inode>, libc::stat), FsError> {
        let path = sys::proc_fd_path(file);
        self.adopt(sys::open_path(&path, libc::O_PATH, 0)?)
    }

    /// The node of the backing inode `fd` is open on, with one more kernel reference.
    fn adopt(&self, fd: OwnedFd) -> Result<(Arc<Inode>, libc::stat), FsError> {
        let st = sys::fstat(fd.as_fd())?;
        let backing = (st.st_dev, st.st_ino);
        let mut table = self.lock();
        let ino = self.node_id(&mut table, backing);
        let mut fd = fd;
        let mut count = 1;
        if let Some((inode, known)) = table.by_ino.get_mut(&ino) {
            match inode.adopt_if_same(fd) {
                Ok(()) => {
                    *known += 1;
                    return Ok((inode.clone(), st));
                }
                // The inode number was freed and reused while the kernel still holds the old
                // node: only when the old file was removed behind the mount's back, since a
                // removal through the mount holds the inode until the kernel forgets it (see
                // `hold_before_removal`). The new inode takes the id with a new generation, so
                // the kernel retires its old node; the references to both stay counted under
                // the one id, and the kernel forgets them all in the end.
                Err(opened) => {
                    fd = opened;
                    count += *known;
                }
            }
        }
        let handle = sys::file_handle(fd.as_fd()).ok().map(|(handle, _)| handle);
        let generation = if ino == ROOT_INO {
            0
        } else {
            handle.as_ref().map_or(0, |h| u64::from(h.generation()))
        };
        let inode = Arc::new(Inode {
            ino,
            fd: Mutex::new(Some(self.descriptors.counted(fd))),
            handle,
            generation,
            used: AtomicBool::new(true),
            held: AtomicBool::new(false),
            xattrs: Mutex::default(),
            descriptors: self.descriptors.clone(),
            kind: st.st_mode & libc::S_IFMT,
            backing,
            state: Mutex::new(Weak::new()),
            dir_id: std::sync::OnceLock::new(),
        });
        table.by_ino.insert(ino, (inode.clone(), count));
        if self.over_budget() {
            self.sweep(&table);
        }
        Ok((inode, st))
    }

    /// Closes descriptors of idle inodes until a quarter of the budget is free again: a clock
    /// sweep, where an inode used since the last sweep gets a second chance.
    fn sweep(&self, table: &Table) {
        let d = &self.descriptors;
        let target = d.budget - d.budget / 4;
        'passes: for _pass in 0..2 {
            for (inode, _) in table.by_ino.values() {
                if d.open.load(Ordering::Relaxed) <= target {
                    break 'passes;
                }
                // Only the table holds the inode: no request in flight and no open handle (an
                // open file may be unlinked, and not every filesystem reopens an unlinked inode
                // by handle; ext4 does).
                if Arc::strong_count(inode) == 1 {
                    inode.close_if_idle();
                }
            }
        }
        // While most inodes are busy, sweep again only after a quarter of the budget more, and
        // at the latest at one and a half budgets (three quarters of the open-file limit).
        let open = d.open.load(Ordering::Relaxed);
        let next = (open + d.budget / 4).clamp(d.budget, d.budget + d.budget / 2);
        d.next_sweep.store(next, Ordering::Relaxed);
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
            && ino >= SPILL_BASE
        {
            table.spilled.remove(&inode.backing);
        }
    }

    /// Number of inodes held (the root included).
    pub fn count(&self) -> usize {
        self.lock().by_ino.len()
    }

    /// Number of backing descriptors open for inodes.
    pub fn open_descriptors(&self) -> usize {
        self.descriptors.open.load(Ordering::Relaxed)
    }
}

/// The cipher directory's filesystem, to reopen handles on, if a handle made there opens again
/// (it needs `CAP_DAC_READ_SEARCH` and a filesystem that supports handles).
fn handles_work(root: BorrowedFd<'_>, dev: u64) -> Option<(OwnedFd, u64)> {
    let (handle, _) = sys::file_handle(root).ok()?;
    // open_by_handle_at(2) takes no O_PATH descriptor for the filesystem.
    let mount_fd = sys::open_path(
        &sys::proc_fd_path(root),
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
    )
    .ok()?;
    let probe = sys::open_by_handle(mount_fd.as_fd(), &handle, libc::O_PATH).ok()?;
    let st = sys::fstat(probe.as_fd()).ok()?;
    (st.st_dev == dev).then_some((mount_fd, dev))
}
