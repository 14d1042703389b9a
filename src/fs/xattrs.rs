//! Extended attributes: get, set, list and remove, on the backing inode itself (a symlink's
//! own, checked to still be the same inode), with `user.` names and values sealed when names
//! are encrypted.

use super::attr::Caller;
use super::inode::Inode;
use super::naming::XATTR_MAX;
use super::{CryptFs, FsError, FsResult, creds};
use crate::sys;
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

impl CryptFs {
    /// Value of extended attribute `name` (size 0: only its length).
    pub fn getxattr(&self, ino: u64, name: &OsStr, size: u32) -> FsResult<Vec<u8>> {
        let inode = self.inodes.get(ino)?;
        if inode.has_no_xattrs() {
            return Err(FsError(libc::ENODATA));
        }
        let version = inode.xattrs_version();
        let cname = self.disk_xattr_name(name)?;
        // The list first: one system call answers the usual question about a name the node
        // does not have (`ls -l` asks two per file, the kernel one before a new file's first
        // write), and an empty list answers every later one from memory. A list longer than
        // the probe (ERANGE) leaves it to the read below.
        let mut probe = [0u8; 256];
        let listed = on_xattrs(&inode, &mut probe[..], |path, link, buf| {
            sys::listxattr(path, buf, link)
        });
        if let Ok(len) = listed {
            let stored = &probe[..len];
            if self.shows_no_xattr(stored) {
                inode.record_no_xattrs(version);
                return Err(FsError(libc::ENODATA));
            }
            if !stored.split(|&b| b == 0).any(|n| n == cname.to_bytes()) {
                return Err(FsError(libc::ENODATA));
            }
        }
        let sealed = self.xattr_cipher(name.as_bytes()).is_some();
        // A sealed value is read whole, to be opened; its plaintext is then held to `size`.
        let mut buf = vec![0u8; if sealed { XATTR_MAX } else { size as usize }];
        let n = on_xattrs(&inode, &mut buf[..], |path, link, buf| {
            sys::getxattr(path, &cname, buf, link)
        })?;
        if !sealed {
            return Ok(held_by_backing(buf, n, size));
        }
        buf.truncate(n);
        fitted(self.shown_xattr_value(&inode, name, &cname, &buf)?, size)
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
            return Ok(held_by_backing(buf, n, size));
        }
        buf.truncate(n);
        fitted(self.shown_xattr_list(&inode, &buf), size)
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

/// The answer of a backing get or list call made with the caller's `size` (0: it only
/// measured): its `n` bytes in `buf`, or for size 0 as many placeholder bytes (the length).
fn held_by_backing(mut buf: Vec<u8>, n: usize, size: u32) -> Vec<u8> {
    if size == 0 {
        return vec![0; n];
    }
    buf.truncate(n);
    buf
}

/// `value` for a caller that asked with buffer `size`: for size 0 its length alone (as
/// placeholder bytes); ERANGE when it does not fit.
fn fitted(value: Vec<u8>, size: u32) -> FsResult<Vec<u8>> {
    if size == 0 {
        return Ok(vec![0; value.len()]);
    }
    if value.len() > size as usize {
        return Err(FsError(libc::ERANGE));
    }
    Ok(value)
}
