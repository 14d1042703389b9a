//! The system calls that std does not wrap, each behind a safe function. The only module with
//! `unsafe`; every block states why it is sound.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

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

/// A file handle from `name_to_handle_at(2)`: names an inode of one filesystem for as long as
/// the inode lives, without holding a descriptor open. Two handles of one filesystem are equal
/// only for the same inode (the generation in it tells a reused inode number apart).
#[derive(PartialEq, Eq)]
pub struct FileHandle {
    handle_type: i32,
    bytes: Box<[u8]>,
}

/// `FILEID_INO32_GEN`: the handle type of ext2/3/4 (and others), 32-bit inode number then
/// 32-bit generation.
const FILEID_INO32_GEN: i32 = 1;

impl FileHandle {
    /// A 32-bit digest of the handle, which tells a reused inode number apart: the generation
    /// itself for `FILEID_INO32_GEN` handles, a hash of the handle's bytes otherwise.
    pub fn generation(&self) -> u32 {
        if self.handle_type == FILEID_INO32_GEN && self.bytes.len() == 8 {
            return u32::from_ne_bytes([
                self.bytes[4],
                self.bytes[5],
                self.bytes[6],
                self.bytes[7],
            ]);
        }
        // FNV-1a: stable across runs, which a generation must be.
        let mut hash: u32 = 0x811c_9dc5;
        for &b in self.bytes.iter() {
            hash = (hash ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        hash
    }

    /// Whether handles of this one's filesystem can be made from an inode number alone
    /// ([`FileHandle::for_inode`]): `FILEID_INO32_GEN` handles of 8 bytes, whose generation 0
    /// means "any" to ext2/3/4.
    pub fn names_inodes_by_number(&self) -> bool {
        self.handle_type == FILEID_INO32_GEN && self.bytes.len() == 8
    }

    /// The handle of inode `ino` on a filesystem whose handles [`names_inodes_by_number`]
    /// (generation 0: the caller checks what it opens).
    ///
    /// [`names_inodes_by_number`]: FileHandle::names_inodes_by_number
    pub fn for_inode(ino: u32) -> FileHandle {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&ino.to_ne_bytes());
        FileHandle {
            handle_type: FILEID_INO32_GEN,
            bytes: Box::new(bytes),
        }
    }
}

/// Words of a `struct file_handle` buffer: the 8-byte header and `MAX_HANDLE_SZ` bytes, as
/// `u32`s for the struct's alignment.
const HANDLE_WORDS: usize = 2 + libc::MAX_HANDLE_SZ as usize / 4;

/// The file handle of the inode `fd` refers to (`AT_EMPTY_PATH`), with its mount id.
pub fn file_handle(fd: BorrowedFd<'_>) -> io::Result<(FileHandle, i32)> {
    let mut buf = [0u32; HANDLE_WORDS];
    buf[0] = libc::MAX_HANDLE_SZ as u32;
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `buf` is a 4-byte aligned `struct file_handle` whose `handle_bytes` says how many
    // bytes follow the header; the empty path with AT_EMPTY_PATH names `fd` itself.
    cvt(unsafe {
        libc::name_to_handle_at(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        )
    })?;
    let len = (buf[0] as usize).min(libc::MAX_HANDLE_SZ as usize);
    let bytes: Vec<u8> = buf[2..]
        .iter()
        .flat_map(|w| w.to_ne_bytes())
        .take(len)
        .collect();
    let handle = FileHandle {
        handle_type: buf[1] as i32,
        bytes: bytes.into_boxed_slice(),
    };
    Ok((handle, mount_id))
}

/// `open_by_handle_at(2)`: opens the inode `handle` names on the filesystem of `mount_fd`.
/// Needs `CAP_DAC_READ_SEARCH`.
pub fn open_by_handle(
    mount_fd: BorrowedFd<'_>,
    handle: &FileHandle,
    flags: i32,
) -> io::Result<OwnedFd> {
    let mut buf = [0u32; HANDLE_WORDS];
    buf[0] = handle.bytes.len() as u32;
    buf[1] = handle.handle_type as u32;
    for (word, chunk) in buf[2..].iter_mut().zip(handle.bytes.chunks(4)) {
        let mut four = [0u8; 4];
        four[..chunk.len()].copy_from_slice(chunk);
        *word = u32::from_ne_bytes(four);
    }
    // SAFETY: `buf` is a 4-byte aligned `struct file_handle` holding `handle_bytes` bytes.
    let fd = cvt(unsafe {
        libc::open_by_handle_at(
            mount_fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            flags | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The soft open-file limit.
pub fn open_file_limit() -> io::Result<u64> {
    Ok(nofile_limit()?.rlim_cur)
}

/// `getrlimit(RLIMIT_NOFILE)`.
fn nofile_limit() -> io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) })?;
    Ok(limit)
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

/// `umount2(2)` with `MNT_DETACH`.
pub fn umount_lazy(path: &Path) -> io::Result<()> {
    let path = cstr(path.as_os_str())?;
    // SAFETY: NUL-terminated path.
    cvt(unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) }).map(drop)
}

/// Makes the process non-dumpable and turns core dumps off, so key material never lands in a
/// core file.
pub fn disable_core_dumps() -> io::Result<()> {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit value.
    cvt(unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) })?;
    // SAFETY: PR_SET_DUMPABLE takes an integer argument.
    cvt(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) }).map(drop)
}

/// Raises the open-file limit as far as allowed: the daemon keeps an `O_PATH` descriptor per
/// inode the kernel remembers up to half of it (idle ones are then closed and reopened by file
/// handle). Returns the new soft limit.
pub fn raise_open_file_limit() -> io::Result<u64> {
    let limit = nofile_limit()?;
    // As root the hard limit itself may rise, up to the kernel's nr_open.
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(limit.rlim_max);
    let wanted = libc::rlimit {
        rlim_cur: ceiling.max(limit.rlim_max),
        rlim_max: ceiling.max(limit.rlim_max),
    };
    // SAFETY: a valid rlimit value.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } == 0 {
        return Ok(wanted.rlim_cur);
    }
    let soft = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: a valid rlimit value.
    cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) })?;
    Ok(soft.rlim_cur)
}

/// The number of threads of this process (from /proc), to check that `fork` is safe.
pub fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(usize::MAX)
}

/// Which side of a [`fork`] this is.
pub enum Forked {
    /// The parent, with the child's pid.
    Parent(libc::pid_t),
    /// The child.
    Child,
}

/// `fork(2)`. Refused unless the process has a single thread, the only case where the child
/// may keep running Rust code.
pub fn fork() -> io::Result<Forked> {
    if thread_count() != 1 {
        return Err(io::Error::other(
            "refusing to fork a multi-threaded process",
        ));
    }
    // SAFETY: the process has one thread, so the child inherits no lock held by another thread.
    match cvt(unsafe { libc::fork() })? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// `setsid(2)`: detach from the controlling terminal.
pub fn setsid() -> io::Result<()> {
    // SAFETY: no arguments.
    cvt(unsafe { libc::setsid() }).map(drop)
}

/// Points standard input at /dev/null and standard output and error at `log`.
pub fn redirect_stdio(log: &std::fs::File) -> io::Result<()> {
    let null = std::fs::File::open("/dev/null")?;
    for (src, dst) in [
        (null.as_raw_fd(), 0),
        (log.as_raw_fd(), 1),
        (log.as_raw_fd(), 2),
    ] {
        // SAFETY: both descriptors are open; dup2 replaces `dst` atomically.
        cvt(unsafe { libc::dup2(src, dst) })?;
    }
    Ok(())
}

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread (and threads it spawns later) and
/// returns the set, for [`wait_for_signal`].
pub fn block_termination_signals() -> io::Result<libc::sigset_t> {
    // SAFETY: an all-zero sigset_t is valid storage for sigemptyset to initialise.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is valid storage; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
    }
    // SAFETY: `set` is initialised; the old mask is not wanted.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(set)
}

/// Waits for one of the signals in `set` (blocked beforehand) and returns its number.
pub fn wait_for_signal(set: &libc::sigset_t) -> libc::c_int {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is an initialised signal set and `sig` writable.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}

/// Whether process `pid` exists and is not a zombie.
pub fn process_alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    // A zombie (exited, not yet reaped) has state Z after the command name in /proc/PID/stat.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The raw descriptor number, for logs.
pub fn raw(fd: &impl AsRawFd) -> RawFd {
    fd.as_raw_fd()
}

/// `unshare(CLONE_FS)`: the calling thread stops sharing its umask (and working directory)
/// with the rest of the process, so that it can create nodes with a caller's umask.
pub fn unshare_fs() -> io::Result<()> {
    // SAFETY: CLONE_FS only copies the thread's filesystem attributes; no memory is involved.
    cvt(unsafe { libc::unshare(libc::CLONE_FS) }).map(drop)
}

/// `umask(2)`: sets the calling thread's umask (process-wide unless [`unshare_fs`] was called)
/// and returns the previous one.
pub fn set_umask(mask: u32) -> u32 {
    // SAFETY: umask cannot fail and touches no memory.
    unsafe { libc::umask(mask & 0o777) }
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

/// `mount_setattr(2)` of the mount at `path` alone: sets the mount attributes `set` and clears
/// `clear` (`MOUNT_ATTR_*`; the access-time mode is one field: clear `MOUNT_ATTR__ATIME` to set
/// it).
pub fn mount_setattr(path: &Path, set: u64, clear: u64) -> io::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let path = cstr(path.as_os_str())?;
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: NUL-terminated path and a `struct mount_attr` of the size passed.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            0,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        ) as libc::c_int
    })
    .map(drop)
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

/// `FUSE_DEV_IOC_CLONE` (`_IOR(229, 0, uint32_t)`).
const FUSE_DEV_IOC_CLONE: libc::c_ulong = 0x8004_e500;

/// A new descriptor of the FUSE connection `device` serves: `/dev/fuse` opened again and bound
/// to it (`FUSE_DEV_IOC_CLONE`), so that each request thread reads and answers on its own queue.
pub fn clone_fuse_device(device: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let clone = open_path(c"/dev/fuse", libc::O_RDWR, 0)?;
    let mut source =
        u32::try_from(device.as_raw_fd()).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: FUSE_DEV_IOC_CLONE reads one u32 (the descriptor to clone) from the pointer,
    // which points to a live u32 for the duration of the call.
    cvt(unsafe { libc::ioctl(clone.as_raw_fd(), FUSE_DEV_IOC_CLONE, &mut source) })?;
    Ok(clone)
}

/// The process's effective user id.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
