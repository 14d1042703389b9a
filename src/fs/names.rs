//! Namespace operations: lookup, attributes, creating nodes, links, removals and renames, and
//! the filesystem's statistics. Each is one `*at()` call on the parent's `O_PATH` descriptor.
//! Directories are listed in [`super::dirs`], extended attributes in [`super::xattrs`].

use super::attr::{Attr, Caller, FileKind, SetAttr, SetTime, Statfs};
use super::inode::{Inode, ROOT_INO};
use super::{CryptFs, FsError, FsResult, creds};
use crate::sys::{self, TimeSpec};
use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
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
    /// caller, group = caller's, or the parent's when the parent is setgid. `made` is the
    /// node's stat as made. Returns the node's attributes afterwards.
    fn give_to_caller(
        &self,
        parent: &Inode,
        inode: &Inode,
        made: &libc::stat,
        caller: Caller,
    ) -> FsResult<Attr> {
        if !self.run_as_root || (caller.uid == 0 && caller.gid == 0) {
            // Made by root as root: already the caller's.
            return Ok(self.attr(inode, made));
        }
        let parent_st = sys::fstat(parent.fd()?.as_fd())?;
        let gid = if parent_st.st_mode & libc::S_ISGID != 0 {
            parent_st.st_gid
        } else {
            caller.gid
        };
        let fd = inode.fd()?;
        sys::chown_fd(fd.as_fd(), caller.uid, gid)?;
        // A chown clears set-user-id (and group-executable set-group-id): give back the mode
        // the node was made with, which the kernel already checked for the caller.
        if made.st_mode & (libc::S_ISUID | libc::S_ISGID) != 0 && inode.kind != libc::S_IFLNK {
            sys::chmod_path(&inode.proc_path()?, made.st_mode & 0o7777)?;
        }
        self.attr_of(inode)
    }

    /// The node just made as `name` in `parent`, given to `caller`.
    pub(super) fn made(&self, parent: &Inode, name: &CString, caller: Caller) -> FsResult<Attr> {
        let (inode, st) = self.inodes.lookup(parent, name)?;
        self.give_to_caller(parent, &inode, &st, caller)
    }

    /// The node just made with no name (`O_TMPFILE`) in `parent`, open as `file`, given to
    /// `caller`.
    pub(super) fn made_unnamed(
        &self,
        parent: &Inode,
        file: BorrowedFd<'_>,
        caller: Caller,
    ) -> FsResult<(Arc<Inode>, Attr)> {
        let (inode, st) = self.inodes.lookup_open(file)?;
        let attr = self.give_to_caller(parent, &inode, &st, caller)?;
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
        // (The id's link changed the directory: stat it again.)
        let made = self
            .give_dir_id(&inode)
            .and_then(|()| Ok(sys::fstat(inode.fd()?.as_fd())?))
            .and_then(|st| self.give_to_caller(&parent, &inode, &st, caller));
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
        self.inodes.hold_before_removal(&parent, &disk.name);
        sys::unlinkat(parent.fd()?.as_fd(), &disk.name, 0)?;
        self.undo_long_name(&parent, &disk);
        Ok(())
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        let parent = self.inodes.get(parent)?;
        let disk = self.disk_name(&parent, name, libc::ENOENT)?;
        self.inodes.hold_before_removal(&parent, &disk.name);
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
        if flags & (libc::RENAME_EXCHANGE | libc::RENAME_NOREPLACE) == 0 {
            // The entry renamed over, if any, is removed.
            self.inodes.hold_before_removal(&new_parent, &new.name);
        }
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
}

/// The attributes of `inode` from its backing `stat`.
pub(super) fn attr(inode: &Inode, st: &libc::stat) -> Attr {
    Attr {
        generation: inode.generation,
        ..Attr::from_stat(inode.ino, st)
    }
}

/// A request thread's umask, as [`with_umask`] left it.
#[derive(Clone, Copy)]
enum ThreadUmask {
    /// Not tried yet: the thread shares the process's umask.
    Untried,
    /// `unshare(CLONE_FS)` failed: the umask is the process's, never changed here.
    Shared,
    /// The thread has its own umask, set to this.
    Own(u32),
}

thread_local! {
    /// This thread's umask (see [`with_umask`]).
    static THREAD_UMASK: std::cell::Cell<ThreadUmask> =
        const { std::cell::Cell::new(ThreadUmask::Untried) };
}

/// Runs `make`, which creates one node with the mode it is given, under the caller's `umask`,
/// as the kernel would for a local filesystem: the backing filesystem applies the umask, or, in
/// a directory with a default ACL, the ACL instead. Each request thread gets a umask of its own
/// (`unshare(CLONE_FS)`, once), set only when a caller's differs from the last one (callers
/// mostly share one umask: no system call then); where that fails, the umask is cleared from
/// `mode` by hand, without the default-ACL exception. Nodes a request thread makes for itself
/// go through here too, with the umask they need.
pub(super) fn with_umask<R>(
    umask: u32,
    mode: u32,
    make: impl FnOnce(u32) -> std::io::Result<R>,
) -> FsResult<R> {
    let umask = umask & 0o777;
    THREAD_UMASK.with(|state| {
        let current = match state.get() {
            ThreadUmask::Untried => match sys::unshare_fs() {
                Ok(()) => None,
                Err(e) => {
                    tracing::warn!("cannot give a request thread its own umask: {e}");
                    state.set(ThreadUmask::Shared);
                    return Ok(make(mode & !umask)?);
                }
            },
            ThreadUmask::Shared => return Ok(make(mode & !umask)?),
            ThreadUmask::Own(current) => Some(current),
        };
        if current != Some(umask) {
            sys::set_umask(umask);
            state.set(ThreadUmask::Own(umask));
        }
        Ok(make(mode)?)
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
