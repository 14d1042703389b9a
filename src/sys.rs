//! The system calls that std does not wrap, each behind a safe function: the file and directory
//! calls here, file handles in `handle`, process control in `process`, mounts in `mount` (all
//! re-exported here), atomic durable file writes in [`durable`], and what a service manager
//! hands a daemon (readiness socket, credentials) in [`systemd`]. The only module tree with
//! `unsafe`; every block states why it is sound.

pub mod durable;
mod handle;
mod mount;
mod process;
pub mod systemd;

pub use handle::{FileHandle, file_handle, open_by_handle};
pub use mount::{clone_fuse_device, mount_setattr, umount_lazy};
pub use process::{
    Forked, block_termination_signals, disable_core_dumps, effective_uid, fork, open_file_limit,
    pin_thread_to_cpu, process_alive, raise_open_file_limit, redirect_stdio, set_umask, setsid,
    thread_count, unshare_fs, wait_for_signal,
};

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// A name or path as a C string; an interior NUL is EINVAL.
pub fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// The `/proc/self/fd/N` path of a descriptor: reaches the inode behind an `O_PATH` descriptor
/// for calls that have no `*at` form.
pub fn proc_fd_path(fd: BorrowedFd<'_>) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .expect("BUG: a formatted path has no NUL")
}

/// `openat(2)`.
pub fn openat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: u32,
) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid NUL-terminated string and `dir` a live descriptor; on success the
    // returned descriptor is new and owned by nobody else.
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode,
        )
    })?;
    // SAFETY: `fd` was just returned by openat and is owned by us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `open(2)` of a path (used with `/proc/self/fd/N` paths).
pub fn open_path(path: &CStr, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: `path` is NUL-terminated; the result is a new descriptor we own.
    let fd = cvt(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, mode) })?;
    // SAFETY: `fd` was just returned by open and is owned by us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fstatat(2)`; with an empty `name` and `AT_EMPTY_PATH`, the stat of `dir` itself.
pub fn fstatat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<libc::stat> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, NUL-terminated name, and `st` is a writable stat buffer.
    cvt(unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, flags) })?;
    Ok(st)
}

/// The stat of the inode behind `fd` (any kind of descriptor, `O_PATH` included).
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    fstatat(fd, c"", libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW)
}

/// `mkdirat(2)`.
pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: valid descriptor and NUL-terminated name.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

/// `mknodat(2)`.
pub fn mknodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32, rdev: u64) -> io::Result<()> {
    // SAFETY: valid descriptor and NUL-terminated name.
    cvt(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev) }).map(drop)
}

/// `unlinkat(2)`.
pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: valid descriptor and NUL-terminated name.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

/// `renameat2(2)` with `RENAME_NOREPLACE` / `RENAME_EXCHANGE` flags.
pub fn renameat2(
    old_dir: BorrowedFd<'_>,
    old: &CStr,
    new_dir: BorrowedFd<'_>,
    new: &CStr,
    flags: u32,
) -> io::Result<()> {
    // SAFETY: valid descriptors and NUL-terminated names.
    cvt(unsafe {
        libc::renameat2(
            old_dir.as_raw_fd(),
            old.as_ptr(),
            new_dir.as_raw_fd(),
            new.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// `symlinkat(2)`.
pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: NUL-terminated strings and a valid descriptor.
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// `readlinkat(2)` of the symlink an `O_PATH | O_NOFOLLOW` descriptor refers to.
pub fn readlink_fd(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: `buf` is writable for `buf.len()` bytes; the empty name reads the link `fd` is.
    let n = cvt_size(unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(n);
    Ok(buf)
}

/// `linkat(2)`: a new name `new` in `new_dir` for the inode behind `fd`.
pub fn link_fd(fd: BorrowedFd<'_>, new_dir: BorrowedFd<'_>, new: &CStr) -> io::Result<()> {
    let path = proc_fd_path(fd);
    // SAFETY: NUL-terminated paths and valid descriptors.
    cvt(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            path.as_ptr(),
            new_dir.as_raw_fd(),
            new.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
    .map(drop)
}

/// `fchownat(2)` of the inode behind `fd` (symlinks included); `u32::MAX` leaves an id as is.
pub fn chown_fd(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: valid descriptor and a static empty name.
    cvt(unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            uid,
            gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// `chmod(2)` of a path.
pub fn chmod_path(path: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: NUL-terminated path.
    cvt(unsafe { libc::chmod(path.as_ptr(), mode) }).map(drop)
}

/// `utimensat(2)` of a path; `None` leaves a time unchanged (`UTIME_OMIT`), and
/// [`TimeSpec::Now`] sets the current time.
pub fn utimens_path(path: &CStr, atime: TimeSpec, mtime: TimeSpec) -> io::Result<()> {
    let times = [atime.to_timespec(), mtime.to_timespec()];
    // SAFETY: NUL-terminated path and a two-element timespec array.
    cvt(unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), times.as_ptr(), 0) }).map(drop)
}

/// A time argument for [`utimens_path`].
#[derive(Debug, Clone, Copy)]
pub enum TimeSpec {
    /// Leave unchanged.
    Omit,
    /// The current time.
    Now,
    /// Seconds and nanoseconds since the epoch.
    At(i64, i64),
}

impl TimeSpec {
    fn to_timespec(self) -> libc::timespec {
        match self {
            TimeSpec::Omit => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
            TimeSpec::Now => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_NOW,
            },
            TimeSpec::At(sec, nsec) => libc::timespec {
                tv_sec: sec,
                tv_nsec: nsec,
            },
        }
    }
}

/// `faccessat(2)` of a path.
pub fn access_path(path: &CStr, mask: libc::c_int) -> io::Result<()> {
    // SAFETY: NUL-terminated path.
    cvt(unsafe { libc::faccessat(libc::AT_FDCWD, path.as_ptr(), mask, 0) }).map(drop)
}

/// `fstatvfs(2)`.
pub fn fstatvfs(fd: BorrowedFd<'_>) -> io::Result<libc::statvfs> {
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and a writable buffer.
    cvt(unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// `fallocate(2)` with mode 0 (allocate, extending the size).
pub fn fallocate(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(io::Error::from_raw_os_error(libc::EFBIG));
    };
    // SAFETY: valid descriptor; the kernel checks the range.
    cvt(unsafe { libc::fallocate(fd.as_raw_fd(), 0, offset, len) }).map(drop)
}

/// `sync_file_range(2)` with `SYNC_FILE_RANGE_WRITE`: starts writeback of the range and returns
/// without waiting for it.
pub fn start_writeback(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(io::Error::from_raw_os_error(libc::EFBIG));
    };
    // SAFETY: valid descriptor; the kernel checks the range and the flags.
    cvt(unsafe { libc::sync_file_range(fd.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) })
        .map(drop)
}

/// `getxattr(2)`, or `lgetxattr(2)` with `link` (of a symlink itself); with an empty `buf`,
/// the size of the value.
pub fn getxattr(path: &CStr, name: &CStr, buf: &mut [u8], link: bool) -> io::Result<usize> {
    let call = if link {
        libc::lgetxattr
    } else {
        libc::getxattr
    };
    // SAFETY: NUL-terminated strings; `buf` is writable for its length (0 asks for the size).
    cvt_size(unsafe {
        call(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })
}

/// `setxattr(2)`, or `lsetxattr(2)` with `link`.
pub fn setxattr(
    path: &CStr,
    name: &CStr,
    value: &[u8],
    flags: libc::c_int,
    link: bool,
) -> io::Result<()> {
    let call = if link {
        libc::lsetxattr
    } else {
        libc::setxattr
    };
    // SAFETY: NUL-terminated strings; `value` is readable for its length.
    cvt(unsafe {
        call(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

/// `listxattr(2)`, or `llistxattr(2)` with `link`; with an empty `buf`, the size of the list.
pub fn listxattr(path: &CStr, buf: &mut [u8], link: bool) -> io::Result<usize> {
    let call = if link {
        libc::llistxattr
    } else {
        libc::listxattr
    };
    // SAFETY: NUL-terminated path; `buf` is writable for its length.
    cvt_size(unsafe { call(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })
}

/// `removexattr(2)`, or `lremovexattr(2)` with `link`.
pub fn removexattr(path: &CStr, name: &CStr, link: bool) -> io::Result<()> {
    let call = if link {
        libc::lremovexattr
    } else {
        libc::removexattr
    };
    // SAFETY: NUL-terminated strings.
    cvt(unsafe { call(path.as_ptr(), name.as_ptr()) }).map(drop)
}

/// The raw descriptor number, for logs.
pub fn raw(fd: &impl AsRawFd) -> RawFd {
    fd.as_raw_fd()
}

/// `utimensat(2)` of the inode behind `fd` itself (`AT_EMPTY_PATH`; a symlink's own times):
/// `Omit` leaves a time unchanged, `Now` sets the current time.
pub fn utimens_fd(fd: BorrowedFd<'_>, atime: TimeSpec, mtime: TimeSpec) -> io::Result<()> {
    let times = [atime.to_timespec(), mtime.to_timespec()];
    // SAFETY: valid descriptor, a static empty name and a two-element timespec array.
    cvt(unsafe {
        libc::utimensat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            times.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// `fallocate(2)` with any `mode` (`FALLOC_FL_*`).
pub fn fallocate_mode(fd: BorrowedFd<'_>, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(io::Error::from_raw_os_error(libc::EFBIG));
    };
    // SAFETY: valid descriptor; the kernel checks the mode and the range.
    cvt(unsafe { libc::fallocate(fd.as_raw_fd(), mode, offset, len) }).map(drop)
}

/// `lseek(2)`; `ENXIO` for `SEEK_DATA`/`SEEK_HOLE` past the end is an error like any other.
pub fn lseek(fd: BorrowedFd<'_>, offset: u64, whence: i32) -> io::Result<u64> {
    let Ok(offset) = i64::try_from(offset) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    // SAFETY: valid descriptor; lseek touches no memory.
    let pos = unsafe { libc::lseek(fd.as_raw_fd(), offset, whence) };
    if pos < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(pos as u64)
    }
}

/// One entry of a `getdents64(2)` buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDirEntry {
    /// Inode number on the backing filesystem.
    pub ino: u64,
    /// The position after this entry (to `lseek` to, to go on from the next one).
    pub next: u64,
    /// `DT_*` type, `DT_UNKNOWN` when the filesystem does not say.
    pub kind: u8,
    /// Name.
    pub name: Vec<u8>,
}

/// Reads the next entries of the directory open as `fd` from its current position; an empty
/// list is the end. `buf` is reused between calls.
pub fn getdents(fd: BorrowedFd<'_>, buf: &mut Vec<u8>) -> io::Result<Vec<RawDirEntry>> {
    if buf.len() < 32 * 1024 {
        buf.resize(32 * 1024, 0);
    }
    // SAFETY: `buf` is writable for its length; the kernel writes at most that many bytes.
    let n = cvt_size(unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            fd.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        ) as libc::ssize_t
    })?;
    Ok(parse_dirents(&buf[..n]))
}

/// Parses `linux_dirent64` records: `d_ino` u64, `d_off` i64, `d_reclen` u16, `d_type` u8,
/// then the NUL-terminated name. A record that does not fit ends the list.
fn parse_dirents(mut bytes: &[u8]) -> Vec<RawDirEntry> {
    let mut entries = Vec::new();
    while bytes.len() >= 19 {
        let u64_at = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[at..at + 8]);
            u64::from_ne_bytes(word)
        };
        let reclen = usize::from(u16::from_ne_bytes([bytes[16], bytes[17]]));
        if reclen < 19 || reclen > bytes.len() {
            break;
        }
        let name = &bytes[19..reclen];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        entries.push(RawDirEntry {
            ino: u64_at(0),
            next: u64_at(8),
            kind: bytes[18],
            name: name.to_vec(),
        });
        bytes = &bytes[reclen..];
    }
    entries
}

/// Sets or clears `O_NOATIME` on an open file description (`fcntl(F_SETFL)`).
pub fn set_noatime(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFL takes no argument and touches no memory.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    let flags = if on {
        flags | libc::O_NOATIME
    } else {
        flags & !libc::O_NOATIME
    };
    // SAFETY: F_SETFL takes an integer of flags.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags) }).map(drop)
}
