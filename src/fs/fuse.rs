//! The thin FUSE adapter: each request calls [`CryptFs`] and replies, or maps the error to an
//! errno. No logic lives here. [`Negotiation`] is what `fuser` asks at INIT when it mounts;
//! [`FuseAdapter`] serves every request after that, through the transport in [`crate::fuse`].

use super::attr::{Attr, Caller, FileKind, SetAttr, SetTime};
use super::stats::RequestCounters;
use super::{CryptFs, FsError};
use crate::fuse::abi::{FOPEN_DIRECT_IO, FOPEN_KEEP_CACHE, WRITE_KILL_SUIDGID};
use crate::fuse::{
    DirEntries, Entry, Handler, MAX_WRITE, NodeAttr, Operation, Reply, Request, StatfsOut, TimeArg,
};
use answer::Answer;
use fuser::{Filesystem, InitFlags, KernelConfig};
use std::sync::Arc;
use std::time::Duration;

/// How long the kernel may cache attributes and names. Every change goes through this mount,
/// so a short TTL only matters for changes made in the cipher directory behind its back.
const TTL: Duration = Duration::from_secs(1);

/// Open flags of regular files: the kernel keeps their page cache across opens. Every write goes
/// through this mount, so the cache cannot be stale; a change made in the cipher directory behind
/// the mount's back is seen once the pages are evicted or the directory is mounted again (with
/// the writeback cache the kernel trusts its own size and mtime of cached files, so
/// `FUSE_AUTO_INVAL_DATA` would not help).
const FILE_OPEN_FLAGS: u32 = FOPEN_KEEP_CACHE;

/// Open flags of a file that ends in a torn block: reads bypass the page cache, so that a read
/// at its end reaches the daemon and answers EIO rather than the end of the file.
const TORN_FILE_OPEN_FLAGS: u32 = FOPEN_DIRECT_IO;

/// What the daemon asks of the kernel at INIT (`fuser` mounts and runs the handshake).
pub struct Negotiation {
    /// The kernel checks permissions on this mount (`default_permissions`).
    pub permissions_checked: bool,
    /// Asks for FUSE over io_uring when set; set to true when the kernel offers it.
    pub io_uring: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl Filesystem for Negotiation {
    fn init(&mut self, _req: &fuser::Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.set_max_readahead(1 << 20);
        // The kernel gathers writes in its page cache and sends them in large requests; it then
        // owns size and mtime while pages are dirty, and may read through write-only handles
        // (which is why writers' backing files are opened read-write).
        if config
            .add_capabilities(InitFlags::FUSE_WRITEBACK_CACHE)
            .is_err()
        {
            tracing::warn!("the kernel offers no writeback cache: writes go through one by one");
        }
        // Readdir answers with attributes when the kernel sees lookups follow it (ls -l,
        // find, rm -r), saving one round trip per entry; lookups and readdirs in one directory
        // may run in parallel.
        let _ = config.add_capabilities(
            InitFlags::FUSE_DO_READDIRPLUS
                | InitFlags::FUSE_READDIRPLUS_AUTO
                | InitFlags::FUSE_PARALLEL_DIROPS,
        );
        let _ = config.set_max_background(64);
        if let Some(offered) = &self.io_uring {
            let granted = config
                .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
                .is_ok();
            offered.store(granted, std::sync::atomic::Ordering::Relaxed);
        }
        // The kernel sends modes unmasked with the caller's umask, which the daemon applies as
        // a local filesystem does (not at all under a default ACL); POSIX ACLs are stored on
        // the backing files and enforced by the kernel; file handles of the mount stay valid
        // across remounts (node ids are backing inode numbers; see `inode`).
        for (flag, what) in [
            (
                InitFlags::FUSE_DONT_MASK,
                "umask handling by the filesystem",
            ),
            // The daemon clears set-user-id and set-group-id itself on write, truncate, chown
            // and fallocate, with the kernel's rule for the caller (the kernel marks the writes
            // that need it); and no `security.capability` lookup before every write.
            (
                InitFlags::FUSE_HANDLE_KILLPRIV_V2,
                "set-user-id clearing by the filesystem",
            ),
            (
                InitFlags::FUSE_EXPORT_SUPPORT,
                "file handles across remounts (NFS export)",
            ),
        ] {
            if config.add_capabilities(flag).is_err() {
                tracing::warn!("the kernel offers no {what}");
            }
        }
        // POSIX ACLs are the kernel's to enforce where it checks permissions (a mount others
        // can reach: `default_permissions`). On a mount only its owner reaches, the kernel
        // checks nothing, and `FUSE_POSIX_ACL` would turn those checks on, costing a GETATTR
        // round trip per unlink or create in a directory: there ACLs still go to the backing
        // files, which inherit them and keep the mode in step.
        if self.permissions_checked && config.add_capabilities(InitFlags::FUSE_POSIX_ACL).is_err() {
            tracing::warn!("the kernel offers no POSIX ACLs");
        }
        Ok(())
    }
}

/// The request handler over a [`CryptFs`].
pub struct FuseAdapter {
    fs: Arc<CryptFs>,
    /// The kernel writes a file's dirty pages back at close whether or not it sends FLUSH
    /// (Linux 5.14 and later), so FLUSH can be declined.
    flush_not_needed: bool,
    /// Requests served, by operation ([`OPERATIONS`]), and the EIO answers.
    requests: Arc<RequestCounters>,
}

/// True when the running kernel is `major.minor` or later (from /proc/sys/kernel/osrelease).
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}

impl FuseAdapter {
    /// Serves `fs`.
    pub fn new(fs: Arc<CryptFs>) -> Self {
        FuseAdapter {
            fs,
            flush_not_needed: kernel_at_least(5, 14),
            requests: Arc::new(RequestCounters::new(&OPERATIONS)),
        }
    }

    /// The requests served so far.
    pub fn requests(&self) -> Arc<RequestCounters> {
        self.requests.clone()
    }
}

fn mode_bits(k: FileKind) -> u32 {
    match k {
        FileKind::File => libc::S_IFREG,
        FileKind::Directory => libc::S_IFDIR,
        FileKind::Symlink => libc::S_IFLNK,
        FileKind::Fifo => libc::S_IFIFO,
        FileKind::Socket => libc::S_IFSOCK,
        FileKind::CharDevice => libc::S_IFCHR,
        FileKind::BlockDevice => libc::S_IFBLK,
    }
}

fn node_attr(a: &Attr) -> NodeAttr {
    NodeAttr {
        ino: a.ino,
        size: a.size,
        blocks: a.blocks,
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        mode: mode_bits(a.kind) | u32::from(a.perm),
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
    }
}

fn entry_of(a: &Attr) -> Entry {
    Entry {
        attr: node_attr(a),
        generation: a.generation,
        ttl: TTL,
    }
}

fn caller(req: &Request<'_>) -> Caller {
    Caller {
        uid: req.header.uid,
        gid: req.header.gid,
        pid: req.header.pid,
    }
}

fn set_time(t: Option<TimeArg>) -> Option<SetTime> {
    t.map(|t| match t {
        TimeArg::Now => SetTime::Now,
        TimeArg::At(at) => SetTime::At(at),
    })
}

fn entry(reply: Answer<'_>, result: Result<Attr, FsError>) {
    match result {
        Ok(attr) => reply.entry(&entry_of(&attr)),
        Err(e) => reply.error(e.0),
    }
}

fn attr(reply: Answer<'_>, result: Result<Attr, FsError>) {
    match result {
        Ok(attr) => reply.attr(&node_attr(&attr), TTL),
        Err(e) => reply.error(e.0),
    }
}

fn empty(reply: Answer<'_>, result: Result<(), FsError>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e.0),
    }
}

fn opened(reply: Answer<'_>, result: Result<u64, FsError>, open_flags: u32) {
    match result {
        Ok(fh) => reply.opened(fh, open_flags),
        Err(e) => reply.error(e.0),
    }
}

fn created(reply: Answer<'_>, result: Result<(Attr, u64), FsError>) {
    match result {
        Ok((attr, fh)) => reply.created(&entry_of(&attr), fh, FILE_OPEN_FLAGS),
        Err(e) => reply.error(e.0),
    }
}

fn data(reply: Answer<'_>, result: Result<Vec<u8>, FsError>) {
    match result {
        Ok(bytes) => reply.data(&bytes),
        Err(e) => reply.error(e.0),
    }
}

fn xattr(reply: Answer<'_>, size: u32, result: Result<Vec<u8>, FsError>) {
    match result {
        Ok(bytes) if size == 0 => reply.xattr_size(u32::try_from(bytes.len()).unwrap_or(u32::MAX)),
        Ok(bytes) => reply.data(&bytes),
        Err(e) => reply.error(e.0),
    }
}

/// The span of one request: named after its operation, with the ids it concerns (`ino`, `fh`,
/// `parent`) and nothing else. Never a name, a value or data: with encrypted names a plaintext
/// name is a secret, and logs are not the place for one.
fn span_of(op: &Operation<'_>, node: u64) -> tracing::Span {
    use tracing::debug_span as span;
    match op {
        Operation::Lookup { .. } => span!("lookup", parent = node),
        Operation::Forget { .. } => span!("forget", ino = node),
        Operation::BatchForget { nodes } => span!("batch_forget", count = nodes.len()),
        Operation::Getattr => span!("getattr", ino = node),
        Operation::Setattr(set) => span!("setattr", ino = node, fh = set.fh),
        Operation::Readlink => span!("readlink", ino = node),
        Operation::Symlink { .. } => span!("symlink", parent = node),
        Operation::Mknod { .. } => span!("mknod", parent = node),
        Operation::Mkdir { .. } => span!("mkdir", parent = node),
        Operation::Unlink { .. } => span!("unlink", parent = node),
        Operation::Rmdir { .. } => span!("rmdir", parent = node),
        Operation::Rename { new_parent, .. } => span!("rename", parent = node, new_parent),
        Operation::Link { target, .. } => span!("link", ino = target, new_parent = node),
        Operation::Open { .. } => span!("open", ino = node),
        Operation::Read { fh, .. } => span!("read", ino = node, fh),
        Operation::Write { fh, .. } => span!("write", ino = node, fh),
        Operation::Statfs => span!("statfs", ino = node),
        Operation::Release { fh } => span!("release", ino = node, fh),
        Operation::Flush => span!("flush", ino = node),
        Operation::Fsync { fh, .. } => span!("fsync", ino = node, fh),
        Operation::Setxattr { .. } => span!("setxattr", ino = node),
        Operation::Getxattr { .. } => span!("getxattr", ino = node),
        Operation::Listxattr { .. } => span!("listxattr", ino = node),
        Operation::Removexattr { .. } => span!("removexattr", ino = node),
        Operation::Opendir => span!("opendir", ino = node),
        Operation::Readdir { fh, .. } => span!("readdir", ino = node, fh),
        Operation::Readdirplus { fh, .. } => span!("readdirplus", ino = node, fh),
        Operation::Releasedir { fh } => span!("releasedir", ino = node, fh),
        Operation::Fsyncdir => span!("fsyncdir", ino = node),
        Operation::Access { .. } => span!("access", ino = node),
        Operation::Create { .. } => span!("create", parent = node),
        Operation::Tmpfile { .. } => span!("tmpfile", parent = node),
        Operation::Fallocate { fh, .. } => span!("fallocate", ino = node, fh),
        Operation::Lseek { fh, .. } => span!("lseek", ino = node, fh),
        Operation::CopyFileRange { fh_in, fh_out, .. } => {
            span!("copy_file_range", ino = node, fh = fh_in, fh_out)
        }
        Operation::Destroy => span!("destroy"),
        Operation::Interrupt => span!("interrupt"),
        Operation::Unsupported(opcode) => span!("unsupported", opcode),
    }
}

impl Handler for FuseAdapter {
    fn forget(&self, node: u64, nlookup: u64) {
        let _span = tracing::debug_span!("forget", ino = node).entered();
        self.requests.count(1);
        self.fs.forget(node, nlookup);
    }

    fn handle(&self, req: &Request<'_>, reply: Reply<'_>) {
        let fs = &*self.fs;
        let ino = req.header.nodeid;
        let _span = span_of(&req.op, ino).entered();
        self.requests.count(operation_index(&req.op));
        let reply = Answer::new(reply, &self.requests);
        match req.op {
            Operation::Lookup { name } => entry(reply, fs.lookup(ino, name)),
            Operation::Getattr => attr(reply, fs.getattr(ino)),
            Operation::Setattr(set) => {
                let change = SetAttr {
                    mode: set.mode,
                    uid: set.uid,
                    gid: set.gid,
                    size: set.size,
                    atime: set_time(set.atime),
                    mtime: set_time(set.mtime),
                };
                attr(reply, fs.setattr(ino, change, set.fh, caller(req)));
            }
            Operation::Readlink => data(reply, fs.readlink(ino)),
            Operation::Symlink { name, target } => {
                entry(reply, fs.symlink(ino, name, target, caller(req)));
            }
            Operation::Mknod { name, node, rdev } => entry(
                reply,
                fs.mknod(ino, name, node.mode, node.umask, rdev, caller(req)),
            ),
            Operation::Mkdir { name, node } => {
                entry(
                    reply,
                    fs.mkdir(ino, name, node.mode, node.umask, caller(req)),
                );
            }
            Operation::Unlink { name } => empty(reply, fs.unlink(ino, name)),
            Operation::Rmdir { name } => empty(reply, fs.rmdir(ino, name)),
            Operation::Rename {
                name,
                new_parent,
                new_name,
                flags,
            } => empty(reply, fs.rename(ino, name, new_parent, new_name, flags)),
            Operation::Link { target, new_name } => entry(reply, fs.link(target, ino, new_name)),
            Operation::Open { flags } => match fs.open_file(ino, flags) {
                Ok(file) if file.torn => reply.opened(file.fh, TORN_FILE_OPEN_FLAGS),
                result => opened(reply, result.map(|file| file.fh), FILE_OPEN_FLAGS),
            },
            Operation::Read { fh, offset, size } => {
                let mut reply = Some(reply);
                let result = fs.read_with(fh, offset, size, |bytes| {
                    if let Some(reply) = reply.take() {
                        reply.data(bytes);
                    }
                });
                if let (Err(e), Some(reply)) = (result, reply) {
                    reply.error(e.0);
                }
            }
            Operation::Write {
                fh,
                offset,
                data,
                write_flags,
            } => {
                let mut result = fs.write(fh, offset, data);
                if result.is_ok() && write_flags & WRITE_KILL_SUIDGID != 0 {
                    result = fs.kill_privileges_of(fh, caller(req)).and(result);
                }
                match result {
                    Ok(n) => reply.written(n),
                    Err(e) => reply.error(e.0),
                }
            }
            Operation::Statfs => match fs.statfs() {
                Ok(s) => reply.statfs(&StatfsOut {
                    blocks: s.blocks,
                    bfree: s.bfree,
                    bavail: s.bavail,
                    files: s.files,
                    ffree: s.ffree,
                    bsize: s.bsize,
                    namelen: s.namelen,
                    frsize: s.frsize,
                }),
                Err(e) => reply.error(e.0),
            },
            Operation::Release { fh } => {
                fs.release(fh);
                reply.ok();
            }
            // Nothing to do at close: a write reaches the backing file before it is
            // acknowledged. On Linux 5.14 and later the kernel writes dirty pages back (and
            // reports their errors to close) before it would send FLUSH, so ENOSYS tells it to
            // stop sending FLUSH, which saves a round trip per close; older kernels skip that
            // writeback once told, so they get OK.
            Operation::Flush if self.flush_not_needed => reply.error(libc::ENOSYS),
            Operation::Flush => reply.ok(),
            Operation::Fsync { fh, datasync } => empty(reply, fs.fsync(fh, datasync)),
            Operation::Setxattr { name, value, flags } => {
                empty(reply, fs.setxattr(ino, name, value, flags, caller(req)));
            }
            Operation::Getxattr { name, size } => xattr(reply, size, fs.getxattr(ino, name, size)),
            Operation::Listxattr { size } => xattr(reply, size, fs.listxattr(ino, size)),
            Operation::Removexattr { name } => empty(reply, fs.removexattr(ino, name)),
            Operation::Opendir => opened(reply, fs.opendir(ino), 0),
            Operation::Readdir { fh, offset, size } => {
                let mut entries = DirEntries::new(size);
                let result = fs.readdir(fh, offset, |e, next| {
                    entries.add(e.ino, next, mode_bits(e.kind), &e.name)
                });
                match result {
                    Ok(()) => reply.dir(entries),
                    Err(e) => reply.error(e.0),
                }
            }
            Operation::Readdirplus { fh, offset, size } => {
                let mut entries = DirEntries::new(size);
                let result = fs.readdirplus(fh, offset, |e, attr, next| {
                    entries.add_plus(&entry_of(attr), next, &e.name)
                });
                match result {
                    Ok(()) => reply.dir(entries),
                    Err(e) => reply.error(e.0),
                }
            }
            Operation::Releasedir { fh } => {
                fs.releasedir(fh);
                reply.ok();
            }
            Operation::Fsyncdir => empty(reply, fs.fsyncdir(ino)),
            Operation::Access { mask } => empty(reply, fs.access(ino, mask)),
            Operation::Create { name, node, flags } => created(
                reply,
                fs.create(ino, name, node.mode, node.umask, flags, caller(req)),
            ),
            Operation::Tmpfile { node, flags } => created(
                reply,
                fs.tmpfile(ino, node.mode, node.umask, flags, caller(req)),
            ),
            Operation::Fallocate {
                fh,
                offset,
                length,
                mode,
            } => empty(reply, fs.fallocate(fh, offset, length, mode, caller(req))),
            Operation::Lseek { fh, offset, whence } => {
                // With the writeback cache, written data may still be only in the kernel's
                // pages: invalidating them has the kernel write them back first (another request
                // thread serves those writes), so holes are judged on what is really written.
                if let Err(e) = reply.channel().inval_inode(ino, 0, 0) {
                    tracing::debug!("cannot have the kernel write back before lseek: {e}");
                }
                let Ok(offset) = u64::try_from(offset) else {
                    reply.error(libc::EINVAL);
                    return;
                };
                match fs.seek(fh, offset, whence) {
                    Ok(pos) => reply.offset(i64::try_from(pos).unwrap_or(i64::MAX)),
                    Err(e) => reply.error(e.0),
                }
            }
            Operation::CopyFileRange {
                fh_in,
                offset_in,
                fh_out,
                offset_out,
                len,
                wide,
            } => {
                // The narrow reply says at most u32::MAX bytes; the caller asks again for the
                // rest.
                let len = if wide {
                    len
                } else {
                    len.min(u64::from(u32::MAX) & !0xfff)
                };
                match fs.copy_file_range(fh_in, offset_in, fh_out, offset_out, len, caller(req)) {
                    Ok(n) if wide => reply.copied(n),
                    Ok(n) => reply.written(u32::try_from(n).unwrap_or(u32::MAX)),
                    Err(e) => reply.error(e.0),
                }
            }
            // Answered by the transport itself.
            Operation::Forget { .. }
            | Operation::BatchForget { .. }
            | Operation::Destroy
            | Operation::Interrupt
            | Operation::Unsupported(_) => reply.error(libc::ENOSYS),
        }
    }
}

/// The operations requests are counted by, in the order of [`operation_index`]: the names
/// of their spans.
pub const OPERATIONS: [&str; 38] = [
    "lookup",
    "forget",
    "batch_forget",
    "getattr",
    "setattr",
    "readlink",
    "symlink",
    "mknod",
    "mkdir",
    "unlink",
    "rmdir",
    "rename",
    "link",
    "open",
    "read",
    "write",
    "statfs",
    "release",
    "flush",
    "fsync",
    "setxattr",
    "getxattr",
    "listxattr",
    "removexattr",
    "opendir",
    "readdir",
    "readdirplus",
    "releasedir",
    "fsyncdir",
    "access",
    "create",
    "tmpfile",
    "fallocate",
    "lseek",
    "copy_file_range",
    "destroy",
    "interrupt",
    "unsupported",
];

/// The index of `op` in [`OPERATIONS`].
fn operation_index(op: &Operation<'_>) -> usize {
    match op {
        Operation::Lookup { .. } => 0,
        Operation::Forget { .. } => 1,
        Operation::BatchForget { .. } => 2,
        Operation::Getattr => 3,
        Operation::Setattr(_) => 4,
        Operation::Readlink => 5,
        Operation::Symlink { .. } => 6,
        Operation::Mknod { .. } => 7,
        Operation::Mkdir { .. } => 8,
        Operation::Unlink { .. } => 9,
        Operation::Rmdir { .. } => 10,
        Operation::Rename { .. } => 11,
        Operation::Link { .. } => 12,
        Operation::Open { .. } => 13,
        Operation::Read { .. } => 14,
        Operation::Write { .. } => 15,
        Operation::Statfs => 16,
        Operation::Release { .. } => 17,
        Operation::Flush => 18,
        Operation::Fsync { .. } => 19,
        Operation::Setxattr { .. } => 20,
        Operation::Getxattr { .. } => 21,
        Operation::Listxattr { .. } => 22,
        Operation::Removexattr { .. } => 23,
        Operation::Opendir => 24,
        Operation::Readdir { .. } => 25,
        Operation::Readdirplus { .. } => 26,
        Operation::Releasedir { .. } => 27,
        Operation::Fsyncdir => 28,
        Operation::Access { .. } => 29,
        Operation::Create { .. } => 30,
        Operation::Tmpfile { .. } => 31,
        Operation::Fallocate { .. } => 32,
        Operation::Lseek { .. } => 33,
        Operation::CopyFileRange { .. } => 34,
        Operation::Destroy => 35,
        Operation::Interrupt => 36,
        Operation::Unsupported(_) => 37,
    }
}

mod answer;
#[cfg(test)]
mod tests;
