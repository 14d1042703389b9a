//! Namespace operations: lookup, attributes, directories, links, renames, extended attributes.
//! Each is one `*at()` call on the parent's `O_PATH` descriptor.

use super::attr::{Attr, Caller, DirEntry, FileKind, SetAttr, SetTime, Statfs};
use super::inode::{Inode, ROOT_INO};
use super::io::Handle;
use super::{CryptFs, FsError, FsResult, HIDDEN_ROOT_NAMES};
use crate::sys::{self, TimeSpec};
use std::ffi::{CString, OsStr};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileTypeExt};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

impl CryptFs {
    /// True when `name` in `parent` is one of ours that the mount never shows.
    fn is_hidden(parent: &Inode, name: &OsStr) -> bool {
        parent.ino == ROOT_INO && HIDDEN_ROOT_NAMES.iter().any(|h| OsStr::new(h) == name)
    }

    /// `name` as a C string, refusing the hidden names with `denied`.
    pub(super) fn name(parent: &Inode, name: &OsStr, denied: i32) -> FsResult<CString> {
        if Self::is_hidden(parent, name) {
            return Err(FsError(denied));
        }
        Ok(sys::cstr(name)?)
    }

    fn attr_of(&self, inode: &Inode) -> FsResult<Attr> {
        Ok(Attr::from_stat(
            inode.ino,
            &sys::fstat(inode.fd()?.as_fd())?,
        ))
    }

    /// Looks `name` up in `parent`; counts one kernel reference.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> FsResult<Attr> {
        let parent = self.inodes.get(parent)?;
        let cname = Self::name(&parent, name, libc::ENOENT)?;
        let (inode, st) = self.inodes.lookup(&parent, &cname)?;
        Ok(Attr::from_stat(inode.ino, &st))
    }

    /// Drops `n` kernel references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        self.inodes.forget(ino, n);
    }

    /// Attributes of `ino`.
    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        self.attr_of(&*self.inodes.get(ino)?)
    }

    /// Changes mode, owner, size and times of `ino`; `fh` is the handle the change came
    /// through, if any.
    pub fn setattr(&self, ino: u64, change: SetAttr, fh: Option<u64>) -> FsResult<Attr> {
        let inode = self.inodes.get(ino)?;
        let is_link = inode.kind == libc::S_IFLNK;
        let path = inode.proc_path()?;
        if let Some(mode) = change.mode {
            if is_link {
                return Err(FsError(libc::EOPNOTSUPP));
            }
            sys::chmod_path(&path, mode & 0o7777)?;
        }
        if change.uid.is_some() || change.gid.is_some() {
            sys::chown_fd(
                inode.fd()?.as_fd(),
                change.uid.unwrap_or(u32::MAX),
                change.gid.unwrap_or(u32::MAX),
            )?;
        }
        if let Some(size) = change.size {
            self.truncate(&inode, size, fh)?;
        }
        if (change.atime.is_some() || change.mtime.is_some()) && !is_link {
            sys::utimens_path(&path, time_spec(change.atime), time_spec(change.mtime))?;
        }
        self.attr_of(&inode)
    }

    /// Target of symlink `ino`.
    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        Ok(sys::readlink_fd(self.inodes.get(ino)?.fd()?.as_fd())?)
    }

    /// Gives a node the mount's caller just made to that caller, as the kernel would: owner =
    /// caller, group = caller's, or the parent's when the parent is setgid.
    fn give_to_caller(&self, parent: &Inode, inode: &Inode, caller: Caller) -> FsResult<()> {
        if !self.run_as_root || (caller.uid == 0 && caller.gid == 0) {
            return Ok(());
        }
        let parent_st = sys::fstat(parent.fd()?.as_fd())?;
        let gid = if parent_st.st_mode & libc::S_ISGID != 0 {
            parent_st.st_gid
        } else {
            caller.gid
        };
        sys::chown_fd(inode.fd()?.as_fd(), caller.uid, gid)?;
        Ok(())
    }

    pub(super) fn made(&self, parent: &Inode, name: &CString, caller: Caller) -> FsResult<Attr> {
        let (inode, _) = self.inodes.lookup(parent, name)?;
        self.give_to_caller(parent, &inode, caller)?;
        self.attr_of(&inode)
    }

    /// Makes a FIFO, socket, device node or empty regular file.
    pub fn mknod(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        caller: Caller,
    ) -> FsResult<Attr> {
        let parent = self.inodes.get(parent)?;
        let cname = Self::name(&parent, name, libc::EPERM)?;
        sys::mknodat(parent.fd()?.as_fd(), &cname, mode & !umask, rdev.into())?;
        self.made(&parent, &cname, caller)
    }

    /// Makes a directory.
    pub fn mkdir(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        caller: Caller,
    ) -> FsResult<Attr> {
        let parent = self.inodes.get(parent)?;
        let cname = Self::name(&parent, name, libc::EPERM)?;
        sys::mkdirat(parent.fd()?.as_fd(), &cname, mode & !umask & 0o7777)?;
        self.made(&parent, &cname, caller)
    }

    /// Makes a symlink.
    pub fn symlink(
        &self,
        parent: u64,
        name: &OsStr,
        target: &OsStr,
        caller: Caller,
    ) -> FsResult<Attr> {
        let parent = self.inodes.get(parent)?;
        let cname = Self::name(&parent, name, libc::EPERM)?;
        sys::symlinkat(&sys::cstr(target)?, parent.fd()?.as_fd(), &cname)?;
        self.made(&parent, &cname, caller)
    }

    /// Removes a non-directory.
    pub fn unlink(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        let parent = self.inodes.get(parent)?;
        let cname = Self::name(&parent, name, libc::ENOENT)?;
        Ok(sys::unlinkat(parent.fd()?.as_fd(), &cname, 0)?)
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        let parent = self.inodes.get(parent)?;
        let cname = Self::name(&parent, name, libc::ENOENT)?;
        Ok(sys::unlinkat(
            parent.fd()?.as_fd(),
            &cname,
            libc::AT_REMOVEDIR,
        )?)
    }

    /// Renames; `flags` are `RENAME_NOREPLACE` / `RENAME_EXCHANGE`. Nothing is re-encrypted:
    /// file ids and DEKs do not depend on names.
    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: u32,
    ) -> FsResult<()> {
        let parent = self.inodes.get(parent)?;
        let new_parent = self.inodes.get(new_parent)?;
        let old = Self::name(&parent, name, libc::ENOENT)?;
        let new = Self::name(&new_parent, new_name, libc::EPERM)?;
        Ok(sys::renameat2(
            parent.fd()?.as_fd(),
            &old,
            new_parent.fd()?.as_fd(),
            &new,
            flags,
        )?)
    }

    /// Adds a hard link `new_name` in `new_parent` to `ino`.
    pub fn link(&self, ino: u64, new_parent: u64, new_name: &OsStr) -> FsResult<Attr> {
        let inode = self.inodes.get(ino)?;
        let new_parent = self.inodes.get(new_parent)?;
        let cname = Self::name(&new_parent, new_name, libc::EPERM)?;
        sys::link_fd(inode.fd()?.as_fd(), new_parent.fd()?.as_fd(), &cname)?;
        let (linked, st) = self.inodes.lookup(&new_parent, &cname)?;
        Ok(Attr::from_stat(linked.ino, &st))
    }

    /// Opens directory `ino`: its entries are read once, here.
    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        let inode = self.inodes.get(ino)?;
        let path = inode.proc_path()?;
        let mut entries = vec![
            DirEntry {
                ino: 0,
                kind: FileKind::Directory,
                name: ".".into(),
            },
            DirEntry {
                ino: 0,
                kind: FileKind::Directory,
                name: "..".into(),
            },
        ];
        for entry in std::fs::read_dir(OsStr::from_bytes(path.to_bytes()))? {
            let entry = entry?;
            let name = entry.file_name();
            if Self::is_hidden(&inode, &name) {
                continue;
            }
            let file_type = entry.file_type()?;
            let kind = if file_type.is_dir() {
                FileKind::Directory
            } else if file_type.is_symlink() {
                FileKind::Symlink
            } else if file_type.is_fifo() {
                FileKind::Fifo
            } else if file_type.is_socket() {
                FileKind::Socket
            } else if file_type.is_char_device() {
                FileKind::CharDevice
            } else if file_type.is_block_device() {
                FileKind::BlockDevice
            } else {
                FileKind::File
            };
            entries.push(DirEntry {
                ino: entry.ino(),
                kind,
                name,
            });
        }
        Ok(self.add_handle(Handle::Dir { inode, entries }))
    }

    /// Entries of an open directory from position `offset` on; each entry's position is its
    /// index + 1.
    pub fn readdir(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(&DirEntry, u64) -> bool,
    ) -> FsResult<()> {
        let handle = self.handle(fh)?;
        let Handle::Dir { inode, entries } = &*handle else {
            return Err(FsError(libc::ENOTDIR));
        };
        for (i, entry) in entries.iter().enumerate().skip(offset as usize) {
            let ino = if entry.ino == 0 { inode.ino } else { entry.ino };
            if add(
                &DirEntry {
                    ino,
                    ..entry.clone()
                },
                i as u64 + 1,
            ) {
                break;
            }
        }
        Ok(())
    }

    /// Like [`readdir`](Self::readdir), with each entry's attributes; every entry but `.` and
    /// `..` that `add` accepts counts one kernel reference, as a lookup does. An entry gone since
    /// opendir is skipped.
    pub fn readdirplus(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(&DirEntry, &Attr, u64) -> bool,
    ) -> FsResult<()> {
        let handle = self.handle(fh)?;
        let Handle::Dir { inode, entries } = &*handle else {
            return Err(FsError(libc::ENOTDIR));
        };
        // Once an entry is in the reply its reference is counted: a later error ends the reply
        // early (the kernel asks again from there) instead of losing what was counted.
        let mut sent = false;
        let mut dir_attr = None;
        for (i, entry) in entries.iter().enumerate().skip(offset as usize) {
            let next = i as u64 + 1;
            if entry.ino == 0 {
                // `.` and `..`: the kernel links neither, so they count no reference.
                let attr = match dir_attr.map_or_else(|| self.attr_of(inode), Ok) {
                    Ok(attr) => *dir_attr.insert(attr),
                    Err(_) if sent => break,
                    Err(e) => return Err(e),
                };
                let dot = DirEntry {
                    ino: inode.ino,
                    ..entry.clone()
                };
                if add(&dot, &attr, next) {
                    break;
                }
                sent = true;
                continue;
            }
            let found = sys::cstr(&entry.name)
                .map_err(FsError::from)
                .and_then(|cname| self.inodes.lookup(inode, &cname));
            let (child, st) = match found {
                Ok(found) => found,
                Err(FsError(libc::ENOENT)) => continue,
                Err(_) if sent => break,
                Err(e) => return Err(e),
            };
            let attr = Attr::from_stat(child.ino, &st);
            let listed = DirEntry {
                ino: child.ino,
                kind: attr.kind,
                name: entry.name.clone(),
            };
            if add(&listed, &attr, next) {
                // The reply is full: this entry was not sent, so its reference is not counted.
                self.inodes.forget(child.ino, 1);
                break;
            }
            sent = true;
        }
        Ok(())
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

    /// Statistics of the backing filesystem.
    pub fn statfs(&self) -> FsResult<Statfs> {
        let root = self.inodes.get(ROOT_INO)?;
        let st = sys::fstatvfs(root.fd()?.as_fd())?;
        Ok(Statfs {
            blocks: st.f_blocks,
            bfree: st.f_bfree,
            bavail: st.f_bavail,
            files: st.f_files,
            ffree: st.f_ffree,
            bsize: st.f_bsize as u32,
            namelen: st.f_namemax as u32,
            frsize: st.f_frsize as u32,
        })
    }

    /// Checks access to `ino` for `mask` (`R_OK`, `W_OK`, `X_OK`, `F_OK`).
    pub fn access(&self, ino: u64, mask: i32) -> FsResult<()> {
        let inode = self.inodes.get(ino)?;
        if inode.kind == libc::S_IFLNK {
            return Ok(());
        }
        Ok(sys::access_path(&inode.proc_path()?, mask)?)
    }

    /// The inode whose extended attributes are asked for: not a symlink (its /proc path would
    /// follow the link; Linux allows no user xattrs on links).
    fn xattr_inode(&self, ino: u64) -> FsResult<Arc<Inode>> {
        let inode = self.inodes.get(ino)?;
        if inode.kind == libc::S_IFLNK {
            return Err(FsError(libc::EOPNOTSUPP));
        }
        Ok(inode)
    }

    /// Value of extended attribute `name` (size 0: only its length).
    pub fn getxattr(&self, ino: u64, name: &OsStr, size: u32) -> FsResult<Vec<u8>> {
        let inode = self.xattr_inode(ino)?;
        if inode.has_no_xattrs() {
            return Err(FsError(libc::ENODATA));
        }
        let path = inode.proc_path()?;
        let version = inode.xattrs_version();
        let mut buf = vec![0u8; size as usize];
        let n = match sys::getxattr(&path, &sys::cstr(name)?, &mut buf) {
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {
                // Is that because it has none at all? Then later questions need no system call.
                if sys::listxattr(&path, &mut []).is_ok_and(|len| len == 0) {
                    inode.record_no_xattrs(version);
                }
                return Err(FsError(libc::ENODATA));
            }
            result => result?,
        };
        buf.truncate(n);
        if size == 0 {
            return Ok(vec![0; n]);
        }
        Ok(buf)
    }

    /// Sets extended attribute `name`.
    pub fn setxattr(&self, ino: u64, name: &OsStr, value: &[u8], flags: i32) -> FsResult<()> {
        let inode = self.xattr_inode(ino)?;
        let path = inode.proc_path()?;
        inode.xattrs_changed();
        let result = sys::setxattr(&path, &sys::cstr(name)?, value, flags);
        inode.xattrs_changed();
        Ok(result?)
    }

    /// The NUL-separated list of extended attribute names (size 0: only its length).
    pub fn listxattr(&self, ino: u64, size: u32) -> FsResult<Vec<u8>> {
        let inode = match self.xattr_inode(ino) {
            Ok(inode) => inode,
            Err(FsError(libc::EOPNOTSUPP)) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        if inode.has_no_xattrs() {
            return Ok(Vec::new());
        }
        let path = inode.proc_path()?;
        let mut buf = vec![0u8; size as usize];
        let n = sys::listxattr(&path, &mut buf)?;
        buf.truncate(n);
        if size == 0 {
            return Ok(vec![0; n]);
        }
        Ok(buf)
    }

    /// Removes extended attribute `name`.
    pub fn removexattr(&self, ino: u64, name: &OsStr) -> FsResult<()> {
        let inode = self.xattr_inode(ino)?;
        if inode.has_no_xattrs() {
            return Err(FsError(libc::ENODATA));
        }
        Ok(sys::removexattr(&inode.proc_path()?, &sys::cstr(name)?)?)
    }
}

fn time_spec(t: Option<SetTime>) -> TimeSpec {
    match t {
        None => TimeSpec::Omit,
        Some(SetTime::Now) => TimeSpec::Now,
        Some(SetTime::At(at)) => match at.duration_since(UNIX_EPOCH) {
            Ok(d) => TimeSpec::At(d.as_secs() as i64, i64::from(d.subsec_nanos())),
            Err(e) => {
                let d = e.duration();
                let (mut sec, mut nsec) = (-(d.as_secs() as i64), -i64::from(d.subsec_nanos()));
                if nsec < 0 {
                    sec -= 1;
                    nsec += 1_000_000_000;
                }
                TimeSpec::At(sec, nsec)
            }
        },
    }
}
