//! The child side: runs one phase of one scenario in the working directory it was started in,
//! and answers one line per step (`ok ...` or `err ENAME`). Nothing here decides what is right:
//! the driver compares the lines of the two trees.

use super::acl;
use super::lang::{Op, Run, Time, expand};
use super::streams::{self, Streams};
use super::sys::{self, Res, c, errno_name};
use std::collections::HashMap;

/// The state of a phase: open descriptors and directory streams by slot.
pub struct Child {
    run: Run,
    out: String,
    fds: HashMap<usize, i32>,
    dirs: Streams,
}

/// `ok`, or `err ENAME`.
pub fn ok(r: Res) -> String {
    match r {
        Ok(_) => "ok".to_string(),
        Err(e) => err(e),
    }
}

/// `err ENAME`.
pub fn err(e: i32) -> String {
    format!("err {}", errno_name(e))
}

/// Bytes for a report: short printable ones as text, others as length and checksum.
fn show_bytes(data: &[u8]) -> String {
    if data.len() <= 40 && data.iter().all(|b| b.is_ascii_graphic()) {
        format!("{:?}", String::from_utf8_lossy(data))
    } else {
        let sum = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        format!("{} bytes fnv={sum:016x}", data.len())
    }
}

fn kind(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "reg",
        libc::S_IFDIR => "dir",
        libc::S_IFLNK => "lnk",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "sock",
        libc::S_IFCHR => "chr",
        libc::S_IFBLK => "blk",
        _ => "?",
    }
}

/// The attributes compared across trees (no inode number, no times, no blocks).
pub fn describe(st: &libc::stat) -> String {
    format!(
        "{} {:04o} uid={} gid={} nlink={} size={}",
        kind(st.st_mode),
        st.st_mode & 0o7777,
        st.st_uid,
        st.st_gid,
        st.st_nlink,
        st.st_size
    )
}

/// atime, mtime and ctime, to the nanosecond.
pub fn times_of(st: &libc::stat) -> [(i64, i64); 3] {
    [
        (st.st_atime, st.st_atime_nsec),
        (st.st_mtime, st.st_mtime_nsec),
        (st.st_ctime, st.st_ctime_nsec),
    ]
}

/// Which of two sets of times differ: `amc`, with `-` for each that did not.
pub fn changed_times(old: &[(i64, i64); 3], new: &[(i64, i64); 3]) -> String {
    ['a', 'm', 'c']
        .iter()
        .zip(old.iter().zip(new))
        .map(|(&ch, (o, n))| if o != n { ch } else { '-' })
        .collect()
}

/// The `*at()` flags: AT_SYMLINK_NOFOLLOW or nothing.
fn at_flags(nofollow: bool) -> i32 {
    if nofollow {
        libc::AT_SYMLINK_NOFOLLOW
    } else {
        0
    }
}

fn timespec(t: Time) -> libc::timespec {
    let (tv_sec, tv_nsec) = match t {
        Time::Now => (0, libc::UTIME_NOW),
        Time::Omit => (0, libc::UTIME_OMIT),
        Time::At(s) => (s, 0),
    };
    libc::timespec { tv_sec, tv_nsec }
}

impl Child {
    /// A phase of `run`; `{out}` expands to `out`.
    pub fn new(run: Run, out: String) -> Child {
        Child {
            run,
            out,
            fds: HashMap::new(),
            dirs: Streams::default(),
        }
    }

    fn p(&self, path: &str) -> std::ffi::CString {
        c(&expand(path, &self.out))
    }

    fn fd(&self, slot: usize) -> i32 {
        self.fds.get(&slot).copied().unwrap_or(-1)
    }

    /// Runs one step; the answer line.
    pub fn step(&mut self, op: &Op) -> String {
        let run = self.run;
        match op {
            Op::Umask(mask) => {
                sys::umask(*mask);
                "ok".into()
            }
            Op::Open {
                slot,
                path,
                flags,
                mode,
            } => match sys::open(&self.p(path), *flags, *mode) {
                Ok(fd) => {
                    if let Some(old) = self.fds.insert(*slot, fd as i32) {
                        let _ = sys::close(old);
                    }
                    "ok".into()
                }
                Err(e) => err(e),
            },
            Op::Close { slot } => match self.fds.remove(slot) {
                Some(fd) => ok(sys::close(fd)),
                None => err(libc::EBADF),
            },
            Op::Touch { paths } => {
                for path in paths {
                    let fd = match sys::open(&self.p(path), libc::O_WRONLY | libc::O_CREAT, 0o666) {
                        Ok(fd) => fd as i32,
                        Err(e) => return format!("{path}: {}", err(e)),
                    };
                    if let Err(e) = sys::close(fd) {
                        return format!("{path}: {}", err(e));
                    }
                }
                "ok".into()
            }
            Op::Mkdir { path, mode } => ok(sys::mkdir(&self.p(path), *mode)),
            Op::Mknod { path, mode, dev } => ok(sys::mknod(&self.p(path), *mode, *dev)),
            Op::Mkfifo { path, mode } => ok(sys::mkfifo(&self.p(path), *mode)),
            Op::Bind { path } => ok(sys::bind_unix(&expand(path, &self.out))),
            Op::Symlink { target, path } => ok(sys::symlink(&self.p(target), &self.p(path))),
            Op::Link { old, new, follow } => {
                let flags = if *follow { libc::AT_SYMLINK_FOLLOW } else { 0 };
                ok(sys::linkat(&self.p(old), &self.p(new), flags))
            }
            Op::LinkFd { slot, new } => {
                let proc = c(&format!("/proc/self/fd/{}", self.fd(*slot)));
                ok(sys::linkat(&proc, &self.p(new), libc::AT_SYMLINK_FOLLOW))
            }
            Op::Unlink { path } => ok(sys::unlink(&self.p(path))),
            Op::Rmdir { path } => ok(sys::rmdir(&self.p(path))),
            Op::Rename { old, new, flags } => ok(sys::rename(&self.p(old), &self.p(new), *flags)),
            Op::Chmod {
                path,
                mode,
                nofollow,
            } => {
                let flags = at_flags(*nofollow);
                ok(sys::chmod(&self.p(path), *mode, flags))
            }
            Op::Fchmod { slot, mode } => ok(sys::fchmod(self.fd(*slot), *mode)),
            Op::Chown {
                path,
                uid,
                gid,
                nofollow,
            } => {
                let flags = at_flags(*nofollow);
                ok(sys::chown(
                    &self.p(path),
                    uid.resolve(run),
                    gid.resolve(run),
                    flags,
                ))
            }
            Op::Fchown { slot, uid, gid } => ok(sys::fchown(
                self.fd(*slot),
                uid.resolve(run),
                gid.resolve(run),
            )),
            Op::Utimes {
                path,
                slot,
                atime,
                mtime,
                nofollow,
            } => {
                let times = [timespec(*atime), timespec(*mtime)];
                let flags = at_flags(*nofollow);
                let path = path.as_deref().map(|p| self.p(p));
                ok(sys::utimens(self.fd(*slot), path.as_deref(), times, flags))
            }
            Op::Truncate { path, len } => ok(sys::truncate(&self.p(path), *len)),
            Op::Ftruncate { slot, len } => ok(sys::ftruncate(self.fd(*slot), *len)),
            Op::Fallocate {
                slot,
                mode,
                off,
                len,
            } => ok(sys::fallocate(self.fd(*slot), *mode, *off, *len)),
            Op::Write { slot, off, data } => match sys::write(self.fd(*slot), *off, data) {
                Ok(n) => format!("ok {n}"),
                Err(e) => err(e),
            },
            Op::Read { slot, off, len } => match sys::read(self.fd(*slot), *off, *len) {
                Ok(data) => format!("ok {}", show_bytes(&data)),
                Err(e) => err(e),
            },
            Op::Lseek { slot, off, whence } => match sys::lseek(self.fd(*slot), *off, *whence) {
                Ok(n) => format!("ok {n}"),
                Err(e) => err(e),
            },
            Op::Holes { slot } => holes(self.fd(*slot)),
            Op::CopyRange { from, to, len } => {
                match sys::copy_file_range(self.fd(*from), self.fd(*to), *len) {
                    Ok(n) => format!("ok {n}"),
                    Err(e) => err(e),
                }
            }
            Op::Stat {
                path,
                slot,
                nofollow,
            } => {
                let flags = at_flags(*nofollow);
                let path = path.as_deref().map(|p| self.p(p));
                match sys::stat(self.fd(*slot), path.as_deref(), flags) {
                    Ok(st) => format!("ok {}", describe(&st)),
                    Err(e) => err(e),
                }
            }
            Op::Blocks { path } => {
                match sys::stat(-1, Some(&self.p(path)), libc::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) => format!("ok blocks={}", st.st_blocks),
                    Err(e) => err(e),
                }
            }
            Op::Access { path, mode } => ok(sys::access(&self.p(path), *mode)),
            Op::Readlink { path } => match sys::readlink(&self.p(path)) {
                Ok(t) => format!("ok {}", show_bytes(&t)),
                Err(e) => err(e),
            },
            Op::XSet {
                path,
                nofollow,
                name,
                value,
                flags,
            } => {
                let value = expand(value, &self.out);
                ok(sys::setxattr(
                    &self.p(path),
                    &c(name),
                    value.as_bytes(),
                    *flags,
                    *nofollow,
                ))
            }
            Op::XGet {
                path,
                nofollow,
                name,
                size,
            } => match sys::getxattr(&self.p(path), &c(name), *size, *nofollow) {
                Ok((len, v)) => format!("ok {len} {}", show_bytes(&v)),
                Err(e) => err(e),
            },
            Op::XList { path, nofollow } => match sys::listxattr(&self.p(path), *nofollow) {
                Ok(mut names) => {
                    names.sort();
                    format!("ok [{}]", names.join(","))
                }
                Err(e) => err(e),
            },
            Op::XRm {
                path,
                nofollow,
                name,
            } => ok(sys::removexattr(&self.p(path), &c(name), *nofollow)),
            Op::AclSet {
                path,
                default,
                entries,
            } => ok(sys::setxattr(
                &self.p(path),
                &c(acl_name(*default)),
                &acl::to_xattr(entries, run),
                0,
                false,
            )),
            Op::AclGet { path, default } => {
                match sys::getxattr(&self.p(path), &c(acl_name(*default)), 65536, false) {
                    Ok((_, v)) => format!("ok {}", acl::from_xattr(&v)),
                    Err(e) => err(e),
                }
            }
            Op::Opendir { slot, path } => self.dirs.opendir(*slot, &expand(path, &self.out)),
            Op::Readdir { slot, count } => self.dirs.readdir(*slot, *count),
            Op::Telldir { slot } => self.dirs.telldir(*slot),
            Op::Seekdir { slot } => self.dirs.seekdir(*slot),
            Op::Rewinddir { slot } => self.dirs.rewinddir(*slot),
            Op::ReadRest { slot } => self.dirs.readrest(*slot),
            Op::Closedir { slot } => self.dirs.closedir(*slot),
            Op::Names { path } => streams::names(&expand(path, &self.out)),
            Op::Inos { path } => streams::inos(&expand(path, &self.out)),
            Op::DropCaches { paths } => {
                let paths: Vec<_> = paths.iter().map(|p| self.p(p)).collect();
                let times = |p: &std::ffi::CString| {
                    sys::stat(-1, Some(p), libc::AT_SYMLINK_NOFOLLOW).map(|st| times_of(&st))
                };
                let before: Vec<_> = paths.iter().map(times).collect();
                if let Err(e) = std::fs::write("/proc/sys/vm/drop_caches", "2") {
                    return err(e.raw_os_error().unwrap_or(libc::EIO));
                }
                let moved: Vec<String> = paths
                    .iter()
                    .zip(before)
                    .map(|(p, old)| match (old, times(p)) {
                        (Ok(old), Ok(new)) => format!(" moved={}", changed_times(&old, &new)),
                        (_, Err(e)) | (Err(e), _) => format!(" {}", err(e)),
                    })
                    .collect();
                format!("ok{}", moved.concat())
            }
        }
    }
}

fn acl_name(default: bool) -> &'static str {
    if default {
        "system.posix_acl_default"
    } else {
        "system.posix_acl_access"
    }
}

/// Walks the descriptor's data regions with SEEK_DATA/SEEK_HOLE. Answers what POSIX
/// guarantees (no data byte inside a reported hole; SEEK_DATA and SEEK_HOLE at EOF are
/// ENXIO) and the regions rounded out to 64 KiB, which hides a coarser hole granularity.
fn holes(fd: i32) -> String {
    const GRAIN: i64 = 64 << 10;
    let size = match sys::stat(fd, None, 0) {
        Ok(st) => st.st_size,
        Err(e) => return err(e),
    };
    let mut regions: Vec<(i64, i64)> = Vec::new();
    let mut off = 0;
    while off < size {
        let data = match sys::lseek(fd, off, libc::SEEK_DATA) {
            Ok(d) => d,
            Err(libc::ENXIO) => break,
            Err(e) => return format!("SEEK_DATA at {off}: {}", err(e)),
        };
        let hole = match sys::lseek(fd, data, libc::SEEK_HOLE) {
            Ok(h) => h,
            Err(e) => return format!("SEEK_HOLE at {data}: {}", err(e)),
        };
        if hole <= data {
            return format!("SEEK_HOLE at {data} answered {hole}");
        }
        regions.push((data, hole));
        off = hole;
    }
    let content = match sys::read(fd, Some(0), size as usize) {
        Ok(c) => c,
        Err(e) => return err(e),
    };
    let in_region = |i: i64| regions.iter().any(|&(s, e)| s <= i && i < e);
    let hidden = content
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b != 0 && !in_region(i as i64))
        .count();
    let mut rounded: Vec<(i64, i64)> = Vec::new();
    for &(s, e) in &regions {
        let (s, e) = (
            s / GRAIN * GRAIN,
            ((e + GRAIN - 1) / GRAIN * GRAIN).min(size),
        );
        match rounded.last_mut() {
            Some(last) if last.1 >= s => last.1 = last.1.max(e),
            _ => rounded.push((s, e)),
        }
    }
    let shown: Vec<String> = rounded
        .iter()
        .map(|(s, e)| format!("{}K..{}K", s >> 10, e >> 10))
        .collect();
    format!(
        "ok data-in-holes={hidden} regions=[{}] data@eof={} hole@eof={}",
        shown.join(","),
        ok(sys::lseek(fd, size, libc::SEEK_DATA)),
        ok(sys::lseek(fd, size, libc::SEEK_HOLE)),
    )
}
