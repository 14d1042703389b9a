//! Directories: opening, listing (with and without attributes), closing and syncing them.
//! Entries are read from the backing directory with `getdents64` at each call.

use super::attr::{Attr, DirEntry, FileKind};
use super::inode::{Inode, ROOT_INO};
use super::io::Handle;
use super::{CryptFs, FsError, FsResult};
use crate::sys;
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, PoisonError};

impl CryptFs {
    /// Opens directory `ino`. Its entries are read from the backing directory at each
    /// `readdir`, so a listing from offset 0 (`rewinddir`) shows the directory as it is now.
    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        let inode = self.inodes.get(ino)?;
        let fd = sys::openat(
            inode.fd()?.as_fd(),
            c".",
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )?;
        let stream = std::sync::Mutex::new(DirStream {
            fd,
            buf: Vec::new(),
            pending: std::collections::VecDeque::new(),
            at: None,
            reported: false,
        });
        Ok(self.add_handle(Handle::Dir { inode, stream }))
    }

    /// Walks the entries of open directory `fh` from position `offset` (0, or a position a
    /// previous entry gave): `visit` gets each entry with the position after it, and returns
    /// true to stop. Positions are the backing directory's own, which stay valid while entries
    /// are added and removed (`telldir`/`seekdir`).
    fn walk_dir(
        &self,
        fh: u64,
        offset: u64,
        mut visit: impl FnMut(&Arc<Inode>, DirEntry, &[u8], u64) -> FsResult<bool>,
    ) -> FsResult<()> {
        let handle = self.handle(fh)?;
        let Handle::Dir { inode, stream } = &*handle else {
            return Err(FsError(libc::ENOTDIR));
        };
        let mut stream = stream.lock().unwrap_or_else(PoisonError::into_inner);
        let DirStream {
            fd,
            buf,
            pending,
            at,
            reported,
        } = &mut *stream;
        // Going on from where the last call stopped takes the entries read then; any other
        // position (0 included: a rewind) is read afresh.
        if *at != Some(offset) {
            sys::lseek(fd.as_fd(), offset, libc::SEEK_SET)?;
            pending.clear();
            *at = Some(offset);
        }
        loop {
            if pending.is_empty() {
                pending.extend(sys::getdents(fd.as_fd(), buf)?);
                if pending.is_empty() {
                    return Ok(());
                }
            }
            let Some(raw) = pending.front() else {
                return Ok(());
            };
            let next = raw.next;
            let shown = self.shown_name(inode, fd.as_fd(), &raw.name, reported);
            let kind = if shown.is_none() {
                None
            } else if let Some(kind) = dirent_kind(raw.kind) {
                Some(kind)
            } else {
                // Gone since it was listed: skipped.
                let disk = sys::cstr(OsStr::from_bytes(&raw.name))?;
                sys::fstatat(fd.as_fd(), &disk, libc::AT_SYMLINK_NOFOLLOW)
                    .ok()
                    .map(|st| FileKind::from_mode(st.st_mode))
            };
            if let (Some(kind), Some(name)) = (kind, shown) {
                let ino = match raw.name.as_slice() {
                    b"." => inode.ino,
                    b".." if inode.ino == ROOT_INO => ROOT_INO,
                    _ => self.inodes.listed_ino(raw.ino),
                };
                let entry = DirEntry { ino, kind, name };
                if visit(inode, entry, &raw.name, next)? {
                    // Not taken: it is the first of the next call.
                    return Ok(());
                }
            }
            pending.pop_front();
            *at = Some(next);
        }
    }

    /// Entries of an open directory from position `offset` on (see [`walk_dir`]).
    ///
    /// [`walk_dir`]: CryptFs::walk_dir
    pub fn readdir(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(&DirEntry, u64) -> bool,
    ) -> FsResult<()> {
        self.walk_dir(fh, offset, |_, entry, _, next| Ok(add(&entry, next)))
    }

    /// Like [`readdir`](Self::readdir), with each entry's attributes; every entry but `.` and
    /// `..` that `add` accepts counts one kernel reference, as a lookup does. An entry gone since
    /// it was listed is skipped.
    pub fn readdirplus(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(&DirEntry, &Attr, u64) -> bool,
    ) -> FsResult<()> {
        // Once an entry is in the reply its reference is counted: a later error ends the reply
        // early (the kernel asks again from there) instead of losing what was counted.
        let mut sent = false;
        let mut dir_attr = None;
        let result = self.walk_dir(fh, offset, |dir, entry, disk, next| {
            if entry.name == "." || entry.name == ".." {
                // The kernel links neither, so they count no reference; it reads only their
                // inode number (from the attributes).
                let attr = match dir_attr {
                    Some(attr) => attr,
                    None => *dir_attr.insert(self.attr_of(dir)?),
                };
                let attr = Attr {
                    ino: entry.ino,
                    ..attr
                };
                let full = add(&entry, &attr, next);
                sent |= !full;
                return Ok(full);
            }
            let found = sys::cstr(OsStr::from_bytes(disk))
                .map_err(FsError::from)
                .and_then(|cname| self.inodes.lookup(dir, &cname));
            let (child, st) = match found {
                Ok(found) => found,
                Err(FsError(libc::ENOENT)) => return Ok(false),
                Err(e) => return Err(e),
            };
            let attr = self.attr(&child, &st);
            let listed = DirEntry {
                ino: child.ino,
                kind: attr.kind,
                ..entry
            };
            if add(&listed, &attr, next) {
                // The reply is full: this entry was not sent, so its reference is not counted.
                self.inodes.forget(child.ino, 1);
                return Ok(true);
            }
            sent = true;
            Ok(false)
        });
        match result {
            Err(_) if sent => Ok(()),
            other => other,
        }
    }

    /// Closes a directory handle.
    pub fn releasedir(&self, fh: u64) {
        self.remove_handle(fh);
    }

    /// Syncs directory `ino`.
    pub fn fsyncdir(&self, ino: u64) -> FsResult<()> {
        let inode = self.inodes.get(ino)?;
        let dir = std::fs::File::open(OsStr::from_bytes(inode.proc_path()?.to_bytes()))?;
        Ok(dir.sync_all()?)
    }
}

/// An open directory: the backing directory read with `getdents64`, its buffer, and the
/// entries read but not yet given out, which start at position `at`.
pub struct DirStream {
    fd: std::os::fd::OwnedFd,
    buf: Vec<u8>,
    pending: std::collections::VecDeque<sys::RawDirEntry>,
    at: Option<u64>,
    /// A name that does not decrypt was logged (once per open directory).
    reported: bool,
}

/// The kind a `DT_*` type names; `None` for `DT_UNKNOWN` (ask `stat`).
fn dirent_kind(dt: u8) -> Option<FileKind> {
    Some(match dt {
        libc::DT_DIR => FileKind::Directory,
        libc::DT_LNK => FileKind::Symlink,
        libc::DT_FIFO => FileKind::Fifo,
        libc::DT_SOCK => FileKind::Socket,
        libc::DT_CHR => FileKind::CharDevice,
        libc::DT_BLK => FileKind::BlockDevice,
        libc::DT_REG => FileKind::File,
        _ => return None,
    })
}
