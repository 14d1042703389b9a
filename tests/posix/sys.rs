//! The system calls the scenarios make, straight through `libc` so that every errno is the
//! kernel's own. The only `unsafe` of the POSIX test; each block says why it is sound.
//!
//! Every call answers `Ok(value)` or `Err(errno)`.

use std::ffi::{CStr, CString};

/// A system call's answer: its non-negative return value, or the errno.
pub type Res = Result<i64, i32>;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn cvt(ret: i64) -> Res {
    if ret < 0 { Err(errno()) } else { Ok(ret) }
}

/// `path` as a C string (a scenario path never holds a NUL byte).
pub fn c(path: &str) -> CString {
    CString::new(path).expect("BUG: a scenario path holds a NUL byte")
}

/// The symbolic name of an errno (`E123` for one not listed).
pub fn errno_name(e: i32) -> String {
    let known = [
        (libc::EPERM, "EPERM"),
        (libc::ENOENT, "ENOENT"),
        (libc::EIO, "EIO"),
        (libc::ENXIO, "ENXIO"),
        (libc::E2BIG, "E2BIG"),
        (libc::EBADF, "EBADF"),
        (libc::EAGAIN, "EAGAIN"),
        (libc::EACCES, "EACCES"),
        (libc::EFAULT, "EFAULT"),
        (libc::EBUSY, "EBUSY"),
        (libc::EEXIST, "EEXIST"),
        (libc::EXDEV, "EXDEV"),
        (libc::ENODEV, "ENODEV"),
        (libc::ENOTDIR, "ENOTDIR"),
        (libc::EISDIR, "EISDIR"),
        (libc::EINVAL, "EINVAL"),
        (libc::ETXTBSY, "ETXTBSY"),
        (libc::EFBIG, "EFBIG"),
        (libc::ENOSPC, "ENOSPC"),
        (libc::ESPIPE, "ESPIPE"),
        (libc::EROFS, "EROFS"),
        (libc::EMLINK, "EMLINK"),
        (libc::ERANGE, "ERANGE"),
        (libc::ENAMETOOLONG, "ENAMETOOLONG"),
        (libc::ENOSYS, "ENOSYS"),
        (libc::ENOTEMPTY, "ENOTEMPTY"),
        (libc::ELOOP, "ELOOP"),
        (libc::ENODATA, "ENODATA"),
        (libc::EOPNOTSUPP, "EOPNOTSUPP"),
        (libc::EADDRINUSE, "EADDRINUSE"),
        (libc::EOVERFLOW, "EOVERFLOW"),
    ];
    known
        .iter()
        .find(|(n, _)| *n == e)
        .map(|(_, name)| name.to_string())
        .unwrap_or_else(|| format!("E{e}"))
}

/// `open(2)`.
pub fn open(path: &CStr, flags: i32, mode: u32) -> Res {
    // SAFETY: `path` is a valid C string for the duration of the call.
    cvt(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, mode) }.into())
}

/// `close(2)`.
pub fn close(fd: i32) -> Res {
    // SAFETY: closing a descriptor number has no memory effect; the caller owns `fd`.
    cvt(unsafe { libc::close(fd) }.into())
}

/// `umask(2)`; never fails.
pub fn umask(mask: u32) {
    // SAFETY: umask only changes the process's creation mask.
    unsafe { libc::umask(mask) };
}

/// `mkdir(2)`.
pub fn mkdir(path: &CStr, mode: u32) -> Res {
    // SAFETY: valid C string.
    cvt(unsafe { libc::mkdir(path.as_ptr(), mode) }.into())
}

/// `mknod(2)` with the file type in `mode`.
pub fn mknod(path: &CStr, mode: u32, dev: u64) -> Res {
    // SAFETY: valid C string.
    cvt(unsafe { libc::mknod(path.as_ptr(), mode, dev) }.into())
}

/// `mkfifo(3)`.
pub fn mkfifo(path: &CStr, mode: u32) -> Res {
    // SAFETY: valid C string.
    cvt(unsafe { libc::mkfifo(path.as_ptr(), mode) }.into())
}

/// A Unix stream socket bound to `path` (which creates the socket node), then closed.
pub fn bind_unix(path: &str) -> Res {
    // SAFETY: plain socket creation, no pointers.
    let fd = cvt(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) }.into())? as i32;
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if path.len() >= addr.sun_path.len() {
        let _ = close(fd);
        return Err(libc::ENAMETOOLONG);
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(path.bytes()) {
        *dst = src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + path.len() + 1;
    // SAFETY: `addr` is a valid sockaddr_un and `len` does not exceed its size.
    let ret = unsafe {
        libc::bind(
            fd,
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    let result = cvt(ret.into());
    let _ = close(fd);
    result
}

/// `symlink(2)`.
pub fn symlink(target: &CStr, path: &CStr) -> Res {
    // SAFETY: valid C strings.
    cvt(unsafe { libc::symlink(target.as_ptr(), path.as_ptr()) }.into())
}

/// `linkat(2)` relative to the working directory.
pub fn linkat(old: &CStr, new: &CStr, flags: i32) -> Res {
    // SAFETY: valid C strings.
    cvt(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            old.as_ptr(),
            libc::AT_FDCWD,
            new.as_ptr(),
            flags,
        )
    }
    .into())
}

/// `unlink(2)`.
pub fn unlink(path: &CStr) -> Res {
    // SAFETY: valid C string.
    cvt(unsafe { libc::unlink(path.as_ptr()) }.into())
}

/// `rmdir(2)`.
pub fn rmdir(path: &CStr) -> Res {
    // SAFETY: valid C string.
    cvt(unsafe { libc::rmdir(path.as_ptr()) }.into())
}

/// `renameat2(2)` relative to the working directory.
pub fn rename(old: &CStr, new: &CStr, flags: u32) -> Res {
    // SAFETY: valid C strings.
    cvt(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            old.as_ptr(),
            libc::AT_FDCWD,
            new.as_ptr(),
            flags,
        )
    }
    .into())
}

/// `fchmodat(2)` (glibc answers EOPNOTSUPP for a symlink with AT_SYMLINK_NOFOLLOW).
pub fn chmod(path: &CStr, mode: u32, flags: i32) -> Res {
    // SAFETY: valid C string.
    cvt(unsafe { libc::fchmodat(libc::AT_FDCWD, path.as_ptr(), mode, flags) }.into())
}

/// `fchmod(2)`.
pub fn fchmod(fd: i32, mode: u32) -> Res {
    // SAFETY: no pointers.
    cvt(unsafe { libc::fchmod(fd, mode) }.into())
}

/// `fchownat(2)`; `u32::MAX` leaves an id unchanged.
pub fn chown(path: &CStr, uid: u32, gid: u32, flags: i32) -> Res {
    // SAFETY: valid C string.
    cvt(unsafe { libc::fchownat(libc::AT_FDCWD, path.as_ptr(), uid, gid, flags) }.into())
}

/// `fchown(2)`.
pub fn fchown(fd: i32, uid: u32, gid: u32) -> Res {
    // SAFETY: no pointers.
    cvt(unsafe { libc::fchown(fd, uid, gid) }.into())
}

/// `utimensat(2)` with a path, or `futimens(3)` when `path` is `None` and `fd` is given.
pub fn utimens(fd: i32, path: Option<&CStr>, times: [libc::timespec; 2], flags: i32) -> Res {
    let ret = match path {
        // SAFETY: valid C string and a two-element array as the call expects.
        Some(p) => unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), flags) },
        // SAFETY: a two-element array as the call expects.
        None => unsafe { libc::futimens(fd, times.as_ptr()) },
    };
    cvt(ret.into())
}

/// `truncate(2)`.
pub fn truncate(path: &CStr, len: i64) -> Res {
    // SAFETY: valid C string.
    cvt(unsafe { libc::truncate(path.as_ptr(), len) }.into())
}

/// `ftruncate(2)`.
pub fn ftruncate(fd: i32, len: i64) -> Res {
    // SAFETY: no pointers.
    cvt(unsafe { libc::ftruncate(fd, len) }.into())
}

/// `fallocate(2)`.
pub fn fallocate(fd: i32, mode: i32, off: i64, len: i64) -> Res {
    // SAFETY: no pointers.
    cvt(unsafe { libc::fallocate(fd, mode, off, len) }.into())
}

/// `write(2)` at the file position, or `pwrite(2)` at `off`.
pub fn write(fd: i32, off: Option<i64>, data: &[u8]) -> Res {
    let ret = match off {
        // SAFETY: `data` is valid for `data.len()` bytes.
        Some(o) => unsafe { libc::pwrite(fd, data.as_ptr().cast(), data.len(), o) },
        // SAFETY: as above.
        None => unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) },
    };
    cvt(ret as i64)
}

/// `read(2)` at the file position, or `pread(2)` at `off`, of at most `len` bytes.
pub fn read(fd: i32, off: Option<i64>, len: usize) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; len];
    let ret = match off {
        // SAFETY: `buf` is valid for `len` writable bytes.
        Some(o) => unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), len, o) },
        // SAFETY: as above.
        None => unsafe { libc::read(fd, buf.as_mut_ptr().cast(), len) },
    };
    let n = cvt(ret as i64)?;
    buf.truncate(n as usize);
    Ok(buf)
}

/// `lseek(2)`.
pub fn lseek(fd: i32, off: i64, whence: i32) -> Res {
    // SAFETY: no pointers.
    cvt(unsafe { libc::lseek(fd, off, whence) })
}

/// `copy_file_range(2)` between the file positions of two descriptors.
pub fn copy_file_range(from: i32, to: i32, len: usize) -> Res {
    // SAFETY: null offsets mean "use and advance the file positions".
    cvt(unsafe {
        libc::copy_file_range(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, 0)
    } as i64)
}

/// `fstatat(2)` relative to the working directory, or `fstat(2)` when `path` is `None`.
pub fn stat(fd: i32, path: Option<&CStr>, flags: i32) -> Result<libc::stat, i32> {
    // SAFETY: `stat` is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let ret = match path {
        // SAFETY: valid C string and a valid out-pointer.
        Some(p) => unsafe { libc::fstatat(libc::AT_FDCWD, p.as_ptr(), &mut st, flags) },
        // SAFETY: a valid out-pointer.
        None => unsafe { libc::fstat(fd, &mut st) },
    };
    cvt(ret.into()).map(|_| st)
}

/// `faccessat(2)` with the real ids (which are the effective ones in every child).
pub fn access(path: &CStr, mode: i32) -> Res {
    // SAFETY: valid C string.
    cvt(unsafe { libc::faccessat(libc::AT_FDCWD, path.as_ptr(), mode, 0) }.into())
}

/// `readlink(2)`.
pub fn readlink(path: &CStr) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: `buf` is valid for its length.
    let n =
        cvt(unsafe { libc::readlink(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) } as i64)?;
    buf.truncate(n as usize);
    Ok(buf)
}

/// `setxattr(2)` or, with `nofollow`, `lsetxattr(2)`.
pub fn setxattr(path: &CStr, name: &CStr, value: &[u8], flags: i32, nofollow: bool) -> Res {
    let (p, n, v, len) = (
        path.as_ptr(),
        name.as_ptr(),
        value.as_ptr().cast(),
        value.len(),
    );
    // SAFETY: valid C strings and a value valid for `len` bytes.
    let ret = unsafe {
        if nofollow {
            libc::lsetxattr(p, n, v, len, flags)
        } else {
            libc::setxattr(p, n, v, len, flags)
        }
    };
    cvt(ret.into())
}

/// `getxattr(2)` or `lgetxattr(2)` into a buffer of `size` bytes: the value's length and
/// what fit (nothing when `size` is 0, which asks for the length only).
pub fn getxattr(
    path: &CStr,
    name: &CStr,
    size: usize,
    nofollow: bool,
) -> Result<(usize, Vec<u8>), i32> {
    let mut buf = vec![0u8; size];
    let (p, n, b) = (path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast());
    // SAFETY: valid C strings and a buffer valid for `size` bytes.
    let ret = unsafe {
        if nofollow {
            libc::lgetxattr(p, n, b, size)
        } else {
            libc::getxattr(p, n, b, size)
        }
    };
    let len = cvt(ret as i64)? as usize;
    buf.truncate(len.min(size));
    Ok((len, buf))
}

/// `listxattr(2)` or `llistxattr(2)`: the names.
pub fn listxattr(path: &CStr, nofollow: bool) -> Result<Vec<String>, i32> {
    let mut buf = vec![0u8; 65536];
    let (p, b) = (path.as_ptr(), buf.as_mut_ptr().cast());
    // SAFETY: valid C string and a buffer valid for its length.
    let ret = unsafe {
        if nofollow {
            libc::llistxattr(p, b, buf.len())
        } else {
            libc::listxattr(p, b, buf.len())
        }
    };
    let len = cvt(ret as i64)? as usize;
    Ok(buf[..len]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect())
}

/// `removexattr(2)` or `lremovexattr(2)`.
pub fn removexattr(path: &CStr, name: &CStr, nofollow: bool) -> Res {
    // SAFETY: valid C strings.
    let ret = unsafe {
        if nofollow {
            libc::lremovexattr(path.as_ptr(), name.as_ptr())
        } else {
            libc::removexattr(path.as_ptr(), name.as_ptr())
        }
    };
    cvt(ret.into())
}

/// An open directory stream (`opendir(3)`), closed on drop.
pub struct Dir(*mut libc::DIR);

/// One entry from `readdir(3)`.
pub struct DirEnt {
    pub name: String,
    pub ino: u64,
}

impl Dir {
    /// `opendir(3)`.
    pub fn open(path: &CStr) -> Result<Dir, i32> {
        // SAFETY: valid C string.
        let dir = unsafe { libc::opendir(path.as_ptr()) };
        if dir.is_null() {
            Err(errno())
        } else {
            Ok(Dir(dir))
        }
    }

    /// `readdir(3)`: the next entry, `Ok(None)` at the end.
    pub fn read(&mut self) -> Result<Option<DirEnt>, i32> {
        // SAFETY: errno is thread-local; resetting it tells the end from an error.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `self.0` is an open stream.
        let ent = unsafe { libc::readdir(self.0) };
        if ent.is_null() {
            return match errno() {
                0 => Ok(None),
                e => Err(e),
            };
        }
        // SAFETY: a non-null result points to a valid dirent until the next call on the stream.
        let ent = unsafe { &*ent };
        // SAFETY: d_name is NUL-terminated.
        let name = unsafe { CStr::from_ptr(ent.d_name.as_ptr()) };
        Ok(Some(DirEnt {
            name: name.to_string_lossy().into_owned(),
            ino: ent.d_ino,
        }))
    }

    /// `telldir(3)`.
    pub fn tell(&mut self) -> i64 {
        // SAFETY: `self.0` is an open stream.
        unsafe { libc::telldir(self.0) }
    }

    /// `seekdir(3)`.
    pub fn seek(&mut self, pos: i64) {
        // SAFETY: `self.0` is an open stream; `pos` came from telldir on it.
        unsafe { libc::seekdir(self.0, pos) }
    }

    /// `rewinddir(3)`.
    pub fn rewind(&mut self) {
        // SAFETY: `self.0` is an open stream.
        unsafe { libc::rewinddir(self.0) }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        // SAFETY: `self.0` is an open stream, closed exactly once here.
        unsafe { libc::closedir(self.0) };
    }
}
