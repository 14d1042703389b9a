//! Process control: resource limits, core dumps, forking into a daemon, signals, the umask and
//! the caller's identity.

use super::cvt;
use std::io;
use std::os::fd::AsRawFd;

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

/// Pins the calling thread to CPU `cpu`.
pub fn pin_thread_to_cpu(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it (cpu is in range).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    cvt(unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) })
        .map(drop)
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

/// The process's effective user id.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
