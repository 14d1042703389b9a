//! Namespace operations: lookup, attributes, directories, links, renames, extended attributes.
//! Each is one `*at()` call on the parent's `O_PATH` descriptor.

use super::attr::{Attr, Caller, DirEntry, FileKind, SetAttr, SetTime, Statfs};
use super::inode::{Inode, ROOT_INO};
use super::io::Handle;
use super::naming::XATTR_MAX;
use super::{CryptFs, FsError, FsResult, creds};
use crate::sys::{self, TimeSpec};
use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, PoisonError};
use std::time::UNIX_EPOCH;

impl CryptFs {
    pub(super) fn attr_of(&self, inode: &Inode) -> FsResult<Attr> {
        Ok(self.attr(inode, &sys::fstat(inode.fd()?.as_fd())?))
    }

    /// The attributes of `inode` from its backing `stat`: a symlink shows its target's
    /// length as the mount shows the target.
    pub(super) fn attr(&self, inode: &Inode, st: &libc::stat) -> Attr {
        let attr = attr(inode, st);
        if attr.kind == FileKind::Symlink {
            Attr {
                size: self.shown_target_len(attr.size),
                ..attr
            }
        } else {
            attr
        }
    }

    /// Looks `name` up in `parent`; counts one kernel reference. The kernel looks up "." in a
    /// node it knows only by id (decoding a file handle) and ".." for its parent.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> FsResult<Attr> {
        let (inode, st) = if name.as_bytes() == b"." {
            self.inodes.lookup_id(parent)?
        } else {
            let parent = self.inodes.get(parent)?;
            let disk = self.disk_name(&parent, name, libc::ENOENT)?;
            self.inodes.lookup(&parent, &disk.name)?
        };
        Ok(self.attr(&inode, &st))
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
    pub fn setattr(
        &self,
        ino: u64,
        change: SetAttr,
        fh: Option<u64>,
        caller: Caller,
    ) -> FsResult<Attr> {
        let inode = self.inodes.get(ino)?;
        let is_link = inode.kind == libc::S_IFLNK;
        let path = inode.proc_path()?;
        // A truncate or an owner change of a regular file clears set-user-id and set-group-id
        // as the kernel decides for the caller (the daemon itself may keep them).
        let modifies = change.size.is_some() || change.uid.is_some() || change.gid.is_some();
        let kill = if modifies && inode.is_file() {
            let st = sys::fstat(inode.fd()?.as_fd())?;
            let mode = change
                .mode
                .map_or(st.st_mode, |m| (st.st_mode & libc::S_IFMT) | m);
            creds::mode_after_modification(caller, mode, st.st_gid)
                .map(|after| mode & 0o7777 & !after)
        } else {
            None
        };
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
        if let Some(killed) = kill.filter(|bits| *bits != 0) {
            let st = sys::fstat(inode.fd()?.as_fd())?;
            if st.st_mode & killed != 0 {
                sys::chmod_path(&path, st.st_mode & 0o7777 & !killed)?;
            }
        }
        if change.atime.is_some() || change.mtime.is_some() {
            // On the inode itself: a symlink's own times, never its target's.
            sys::utimens_fd(
                inode.fd()?.as_fd(),
                time_spec(change.atime),
                time_spec(change.mtime),
            )?;
        }
        self.attr_of(&inode)
    }

    /// Target of symlink `ino`.
    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let inode = self.inodes.get(ino)?;
        let disk = sys::readlink_fd(inode.fd()?.as_fd())?;
        self.shown_target(&inode, disk)
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
        let fd = inode.fd()?;
        let made = sys::fstat(fd.as_fd())?;
        sys::chown_fd(fd.as_fd(), caller.uid, gid)?;
        // A chown clears set-user-id (and group-executable set-group-id): give back the mode
        // the node was made with, which the kernel already checked for the caller.
        if made.st_mode & (libc::S_ISUID | libc::S_ISGID) != 0 && inode.kind != libc::S_IFLNK {
            sys::chmod_path(&inode.proc_path()?, made.st_mode & 0o7777)?;
        }
        Ok(())
    }

    /// The node just made as `name` in `parent`, given to `caller`.
    pub(super) fn made(&self, parent: &Inode, name: &CString, caller: Caller) -> FsResult<Attr> {
        let (inode, _) = self.inodes.lookup(parent, name)?;
        self.give_to_caller(parent, &inode, caller)?;
        self.attr_of(&inode)
    }

    /// The node just made with no name (`O_TMPFILE`) in `parent`, open as `file`, given to
    /// `caller`.
    pub(super) fn made_unnamed(
        &self,
        parent: &Inode,
        file: BorrowedFd<'_>,
        caller: Caller,
    ) -> FsResult<(Arc<Inode>, Attr)> {
        let (inode, _) = self.inodes.lookup_open(file)?;
        self.give_to_caller(parent, &inode, caller)?;
        let attr = self.attr_of(&inode)?;
        Ok((inode, attr))
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
        let disk = self.disk_name(&parent, name, libc::EPERM)?;
        let dir = parent.fd()?;
        self.making(&parent, &disk, || {
            with_umask(umask, mode, |mode| {
                sys::mknodat(dir.as_fd(), &disk.name, mode, rdev.into())
            })
        })?;
        self.made(&parent, &disk.name, caller)
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
        let disk = self.disk_name(&parent, name, libc::EPERM)?;
        let dir = parent.fd()?;
        self.making(&parent, &disk, || {
            with_umask(umask, mode & 0o7777, |mode| {
                sys::mkdirat(dir.as_fd(), &disk.name, mode)
            })
        })?;
        if !self.encrypts_names() {
            return self.made(&parent, &disk.name, caller);
        }
        let (inode, _) = self.inodes.lookup(&parent, &disk.name)?;
        // Its id, before any name is made in it and before it is given to the caller; a crash
        // before this leaves an empty directory without one, which gets one when first used.
        let made = self
            .give_dir_id(&inode)
            .and_then(|()| self.give_to_caller(&parent, &inode, caller))
            .and_then(|()| self.attr_of(&inode));
        if made.is_err() {
            self.inodes.forget(inode.ino, 1);
        }
        made
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
        let disk = self.disk_name(&parent, name, libc::EPERM)?;
        let target = self.disk_target(target)?;
        self.making(&parent, &disk, || {
            Ok(sys::symlinkat(&target, parent.fd()?.as_fd(), &disk.name)?)
        })?;
        self.made(&parent, &disk.name, caller)
    }

    /// Removes a non-directory.
    pub fn unlink(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        let parent = self.inodes.get(parent)?;
        let disk = self.disk_name(&parent, name, libc::ENOENT)?;
        sys::unlinkat(parent.fd()?.as_fd(), &disk.name, 0)?;
        self.undo_long_name(&parent, &disk);
        Ok(())
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        let parent = self.inodes.get(parent)?;
        let disk = self.disk_name(&parent, name, libc::ENOENT)?;
        self.remove_dir(&parent, &disk.name)?;
        self.undo_long_name(&parent, &disk);
        Ok(())
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
        let old = self.disk_name(&parent, name, libc::ENOENT)?;
        let new = self.disk_name(&new_parent, new_name, libc::EPERM)?;
        self.making(&new_parent, &new, || {
            let cleared = if flags & libc::RENAME_EXCHANGE == 0 {
                self.clear_replaced_dir(&new_parent, &new.name)?
            } else {
                None
            };
            let renamed = sys::renameat2(
                parent.fd()?.as_fd(),
                &old.name,
                new_parent.fd()?.as_fd(),
                &new.name,
                flags,
            );
            if renamed.is_err() {
                self.restore_dir_id(cleared);
            }
            Ok(renamed?)
        })?;
        // The old name is gone, unless both were links to one file (then rename does nothing)
        // or the two were exchanged.
        self.undo_long_name(&parent, &old);
        Ok(())
    }

    /// Adds a hard link `new_name` in `new_parent` to `ino`.
    pub fn link(&self, ino: u64, new_parent: u64, new_name: &OsStr) -> FsResult<Attr> {
        let inode = self.inodes.get(ino)?;
        let new_parent = self.inodes.get(new_parent)?;
        let disk = self.disk_name(&new_parent, new_name, libc::EPERM)?;
        self.making(&new_parent, &disk, || {
            Ok(sys::link_fd(
                inode.fd()?.as_fd(),
                new_parent.fd()?.as_fd(),
                &disk.name,
            )?)
        })?;
        let (linked, st) = self.inodes.lookup(&new_parent, &disk.name)?;
        Ok(self.attr(&linked, &st))
    }

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

    /// Value of extended attribute `name` (size 0: only its length).
    pub fn getxattr(&self, ino: u64, name: &OsStr, size: u32) -> FsResult<Vec<u8>> {
        let inode = self.inodes.get(ino)?;
        if inode.has_no_xattrs() {
            return Err(FsError(libc::ENODATA));
        }
        let version = inode.xattrs_version();
        let cname = self.disk_xattr_name(name)?;
        let sealed = self.xattr_cipher(name.as_bytes()).is_some();
        // A sealed value is read whole, to be opened; its plaintext is then held to `size`.
        let mut buf = vec![0u8; if sealed { XATTR_MAX } else { size as usize }];
        let n = match on_xattrs(&inode, &mut buf[..], |path, link, buf| {
            sys::getxattr(path, &cname, buf, link)
        }) {
            Err(FsError(libc::ENODATA)) => {
                // Is that because it shows none at all? Then later questions need no system
                // call. (A list longer than the probe fails with ERANGE: it shows some.)
                let mut probe = [0u8; 64];
                let listed = on_xattrs(&inode, &mut probe[..], |path, link, buf| {
                    sys::listxattr(path, buf, link)
                });
                if listed.is_ok_and(|len| self.shows_no_xattr(&probe[..len])) {
                    inode.record_no_xattrs(version);
                }
                return Err(FsError(libc::ENODATA));
            }
            result => result?,
        };
        if !sealed {
            // The backing call held it to `size` (with size 0 it only measured).
            return Ok(if size == 0 {
                vec![0; n]
            } else {
                buf.truncate(n);
                buf
            });
        }
        buf.truncate(n);
        let value = self.shown_xattr_value(&inode, name, &cname, &buf)?;
        if size == 0 {
            return Ok(vec![0; value.len()]);
        }
        if value.len() > size as usize {
            return Err(FsError(libc::ERANGE));
        }
        Ok(value)
    }

    /// Sets extended attribute `name` for `caller`. Setting a file's access ACL changes its
    /// mode (the backing filesystem keeps the two in step) and, for a caller outside the file's
    /// group without `CAP_FSETID`, clears set-group-id, as the kernel does for `chmod`.
    pub fn setxattr(
        &self,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        caller: Caller,
    ) -> FsResult<()> {
        let inode = self.inodes.get(ino)?;
        let cname = self.disk_xattr_name(name)?;
        let value = self.disk_xattr_value(name, &cname, value)?;
        inode.xattrs_changed();
        let result = on_xattrs(&inode, &mut (), |path, link, _| {
            sys::setxattr(path, &cname, &value, flags, link)
        });
        inode.xattrs_changed();
        result?;
        if name.as_bytes() == ACL_ACCESS && inode.kind != libc::S_IFLNK {
            let st = sys::fstat(inode.fd()?.as_fd())?;
            if st.st_mode & libc::S_ISGID != 0 && !creds::may_keep_sgid(caller, st.st_gid) {
                sys::chmod_path(&inode.proc_path()?, st.st_mode & 0o7777 & !libc::S_ISGID)?;
            }
        }
        Ok(())
    }

    /// The NUL-separated list of extended attribute names (size 0: only its length).
    pub fn listxattr(&self, ino: u64, size: u32) -> FsResult<Vec<u8>> {
        let inode = self.inodes.get(ino)?;
        if inode.has_no_xattrs() {
            return Ok(Vec::new());
        }
        // With sealed names the list is read whole, to be decrypted, then held to `size`.
        let whole = self.encrypts_names();
        let mut buf = vec![0u8; if whole { XATTR_MAX } else { size as usize }];
        let n = on_xattrs(&inode, &mut buf[..], |path, link, buf| {
            sys::listxattr(path, buf, link)
        })?;
        if !whole {
            // The backing call held it to `size` (with size 0 it only measured).
            return Ok(if size == 0 {
                vec![0; n]
            } else {
                buf.truncate(n);
                buf
            });
        }
        buf.truncate(n);
        let list = self.shown_xattr_list(&inode, &buf);
        if size == 0 {
            return Ok(vec![0; list.len()]);
        }
        if list.len() > size as usize {
            return Err(FsError(libc::ERANGE));
        }
        Ok(list)
    }

    /// Removes extended attribute `name`.
    pub fn removexattr(&self, ino: u64, name: &OsStr) -> FsResult<()> {
        let inode = self.inodes.get(ino)?;
        if inode.has_no_xattrs() {
            return Err(FsError(libc::ENODATA));
        }
        let cname = self.disk_xattr_name(name)?;
        inode.xattrs_changed();
        let result = on_xattrs(&inode, &mut (), |path, link, _| {
            sys::removexattr(path, &cname, link)
        });
        inode.xattrs_changed();
        result
    }
}

/// The name of the access ACL as an extended attribute.
const ACL_ACCESS: &[u8] = b"system.posix_acl_access";

/// Runs an extended-attribute call on `inode` itself: `call(path, link, state)` on its
/// `/proc/self/fd` path, or for a symlink (which that path would follow) on the link's current
/// backing path with `link` set, checked to still be this inode before and after.
fn on_xattrs<R, S: ?Sized>(
    inode: &Inode,
    state: &mut S,
    call: impl FnOnce(&std::ffi::CStr, bool, &mut S) -> std::io::Result<R>,
) -> FsResult<R> {
    if inode.kind != libc::S_IFLNK {
        return Ok(call(&inode.proc_path()?, false, state)?);
    }
    let fd = inode.fd()?;
    let proc = sys::proc_fd_path(fd.as_fd());
    let path = std::fs::read_link(OsStr::from_bytes(proc.to_bytes()))?;
    let path = sys::cstr(path.as_os_str())?;
    let backing = sys::fstat(fd.as_fd())?;
    let is_it = || {
        sys::fstatat(fd.as_fd(), &path, libc::AT_SYMLINK_NOFOLLOW)
            .is_ok_and(|st| (st.st_dev, st.st_ino) == (backing.st_dev, backing.st_ino))
    };
    if !is_it() {
        // Renamed or removed meanwhile.
        return Err(FsError(libc::ESTALE));
    }
    Ok(call(&path, true, state)?)
}

/// The attributes of `inode` from its backing `stat`.
pub(super) fn attr(inode: &Inode, st: &libc::stat) -> Attr {
    Attr {
        generation: inode.generation,
        ..Attr::from_stat(inode.ino, st)
    }
}

thread_local! {
    /// Whether this thread has a umask of its own (see [`with_umask`]); `None` until tried.
    static OWN_UMASK: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// Runs `make`, which creates one node with the mode it is given, under the caller's `umask`,
/// as the kernel would for a local filesystem: the backing filesystem applies the umask, or, in
/// a directory with a default ACL, the ACL instead. Each request thread gets a umask of its own
/// (`unshare(CLONE_FS)`); where that fails, the umask is cleared from `mode` by hand, without
/// the default-ACL exception.
pub(super) fn with_umask<R>(
    umask: u32,
    mode: u32,
    make: impl FnOnce(u32) -> std::io::Result<R>,
) -> FsResult<R> {
    let own = OWN_UMASK.with(|own| {
        *own.get().get_or_insert_with(|| match sys::unshare_fs() {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("cannot give a request thread its own umask: {e}");
                false
            }
        })
    });
    if !own {
        return Ok(make(mode & !umask)?);
    }
    let before = sys::set_umask(umask);
    let result = make(mode);
    sys::set_umask(before);
    Ok(result?)
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
