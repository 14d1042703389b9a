//! The thin `fuser` adapter: each method calls [`CryptFs`] and replies, or maps the error to an
//! errno. No logic lives here.

use super::attr::{Attr, Caller, FileKind, SetAttr, SetTime};
use super::{CryptFs, FsError};
use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType,
    Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, Notifier,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

/// How long the kernel may cache attributes and names. Every change goes through this mount,
/// so a short TTL only matters for changes made in the cipher directory behind its back.
const TTL: Duration = Duration::from_secs(1);

/// Open flags of regular files: the kernel keeps their page cache across opens. Every write goes
/// through this mount, so the cache cannot be stale; a change made in the cipher directory behind
/// the mount's back is seen once the pages are evicted or the directory is mounted again (with
/// the writeback cache the kernel trusts its own size and mtime of cached files, so
/// `FUSE_AUTO_INVAL_DATA` would not help).
const FILE_OPEN_FLAGS: FopenFlags = FopenFlags::FOPEN_KEEP_CACHE;

/// Called once when the kernel ends the session (unmount), with the filesystem.
pub type OnDestroy = Box<dyn FnOnce(&CryptFs) + Send + Sync>;

/// The `fuser::Filesystem` over a [`CryptFs`].
pub struct FuseAdapter {
    fs: Arc<CryptFs>,
    on_destroy: Option<OnDestroy>,
    /// The kernel writes a file's dirty pages back at close whether or not it sends FLUSH
    /// (Linux 5.14 and later), so FLUSH can be declined.
    flush_not_needed: bool,
    /// The kernel checks permissions on this mount (`default_permissions`).
    permissions_checked: bool,
    /// The session's channel to the kernel, once the session exists (see [`FuseAdapter::notifier`]).
    notifier: Arc<OnceLock<Notifier>>,
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
    /// Wraps `fs`; `on_destroy` runs at unmount; `permissions_checked` when the mount has
    /// `default_permissions` (the kernel checks every caller's permissions).
    pub fn new(fs: Arc<CryptFs>, on_destroy: OnDestroy, permissions_checked: bool) -> Self {
        FuseAdapter {
            fs,
            on_destroy: Some(on_destroy),
            permissions_checked,
            flush_not_needed: kernel_at_least(5, 14),
            notifier: Arc::new(OnceLock::new()),
        }
    }

    /// Where to put the session's notifier once the session is made (the adapter is moved into
    /// it): `lseek` uses it to have the kernel write a file's dirty pages back first.
    pub fn notifier(&self) -> Arc<OnceLock<Notifier>> {
        self.notifier.clone()
    }
}

fn errno(e: FsError) -> Errno {
    Errno::from_i32(e.0)
}

fn kind(k: FileKind) -> FileType {
    match k {
        FileKind::File => FileType::RegularFile,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.ctime,
        kind: kind(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: 0,
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    t.map(|t| match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(at) => SetTime::At(at),
    })
}

fn entry(reply: ReplyEntry, result: Result<Attr, FsError>) {
    match result {
        Ok(attr) => reply.entry(&TTL, &file_attr(&attr), Generation(attr.generation)),
        Err(e) => reply.error(errno(e)),
    }
}

fn empty(reply: ReplyEmpty, result: Result<(), FsError>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

fn xattr(reply: ReplyXattr, size: u32, result: Result<Vec<u8>, FsError>) {
    match result {
        Ok(data) if size == 0 => reply.size(data.len() as u32),
        Ok(data) => reply.data(&data),
        Err(e) => reply.error(errno(e)),
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
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

    fn destroy(&mut self) {
        if let Some(on_destroy) = self.on_destroy.take() {
            on_destroy(&self.fs);
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _span = tracing::debug_span!("lookup", parent = parent.0, ?name).entered();
        entry(reply, self.fs.lookup(parent.0, name));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _span = tracing::debug_span!("getattr", ino = ino.0).entered();
        match self.fs.getattr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &file_attr(&attr)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _span = tracing::debug_span!("setattr", ino = ino.0, ?size).entered();
        let change = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: set_time(atime),
            mtime: set_time(mtime),
        };
        match self.fs.setattr(ino.0, change, fh.map(|f| f.0), caller(req)) {
            Ok(attr) => reply.attr(&TTL, &file_attr(&attr)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let _span = tracing::debug_span!("mknod", parent = parent.0, ?name).entered();
        entry(
            reply,
            self.fs
                .mknod(parent.0, name, mode, umask, rdev, caller(req)),
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let _span = tracing::debug_span!("mkdir", parent = parent.0, ?name).entered();
        entry(
            reply,
            self.fs.mkdir(parent.0, name, mode, umask, caller(req)),
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _span = tracing::debug_span!("unlink", parent = parent.0, ?name).entered();
        empty(reply, self.fs.unlink(parent.0, name));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _span = tracing::debug_span!("rmdir", parent = parent.0, ?name).entered();
        empty(reply, self.fs.rmdir(parent.0, name));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let _span = tracing::debug_span!("symlink", parent = parent.0, ?link_name).entered();
        entry(
            reply,
            self.fs
                .symlink(parent.0, link_name, target.as_os_str(), caller(req)),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _span = tracing::debug_span!(
            "rename",
            parent = parent.0,
            ?name,
            newparent = newparent.0,
            ?newname
        )
        .entered();
        empty(
            reply,
            self.fs
                .rename(parent.0, name, newparent.0, newname, flags.bits()),
        );
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _span =
            tracing::debug_span!("link", ino = ino.0, newparent = newparent.0, ?newname).entered();
        entry(reply, self.fs.link(ino.0, newparent.0, newname));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _span = tracing::debug_span!("open", ino = ino.0).entered();
        match self.fs.open(ino.0, flags.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FILE_OPEN_FLAGS),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _span = tracing::debug_span!("read", ino = ino.0, fh = fh.0, offset, size).entered();
        let mut reply = Some(reply);
        let result = self.fs.read_with(fh.0, offset, size, |data| {
            if let Some(reply) = reply.take() {
                reply.data(data);
            }
        });
        if let (Err(e), Some(reply)) = (result, reply) {
            reply.error(errno(e));
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _span = tracing::debug_span!("write", ino = ino.0, fh = fh.0, offset, len = data.len())
            .entered();
        let mut result = self.fs.write(fh.0, offset, data);
        if result.is_ok() && write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
            result = self.fs.kill_privileges_of(fh.0, caller(req)).and(result);
        }
        match result {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
        }
    }

    /// Nothing to do at close: a write reaches the backing file before it is acknowledged. On
    /// Linux 5.14 and later the kernel writes dirty pages back (and reports their errors to
    /// close) before it would send FLUSH, so ENOSYS tells it to stop sending FLUSH, which saves
    /// a round trip per close; older kernels skip that writeback once told, so they get OK.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        if self.flush_not_needed {
            reply.error(Errno::ENOSYS);
        } else {
            reply.ok();
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.fs.fsync(fh.0, datasync));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _span = tracing::debug_span!("opendir", ino = ino.0).entered();
        match self.fs.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let result = self.fs.readdir(fh.0, offset, |entry, next| {
            reply.add(INodeNo(entry.ino), next, kind(entry.kind), &entry.name)
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let result = self.fs.readdirplus(fh.0, offset, |entry, attr, next| {
            reply.add(
                INodeNo(entry.ino),
                next,
                &entry.name,
                &TTL,
                &file_attr(attr),
                Generation(attr.generation),
            )
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.fs.fsyncdir(ino.0));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        empty(
            reply,
            self.fs.setxattr(ino.0, name, value, flags, caller(req)),
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        xattr(reply, size, self.fs.getxattr(ino.0, name, size));
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        xattr(reply, size, self.fs.listxattr(ino.0, size));
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.fs.removexattr(ino.0, name));
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        empty(reply, self.fs.access(ino.0, mask.bits()));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let _span = tracing::debug_span!("create", parent = parent.0, ?name).entered();
        match self
            .fs
            .create(parent.0, name, mode, umask, flags, caller(req))
        {
            Ok((attr, fh)) => reply.created(
                &TTL,
                &file_attr(&attr),
                Generation(attr.generation),
                FileHandle(fh),
                FILE_OPEN_FLAGS,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let _span = tracing::debug_span!("fallocate", ino = ino.0, offset, length, mode).entered();
        empty(
            reply,
            self.fs.fallocate(fh.0, offset, length, mode, caller(req)),
        );
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let _span = tracing::debug_span!("lseek", ino = ino.0, offset, whence).entered();
        // With the writeback cache, written data may still be only in the kernel's pages:
        // invalidating them has the kernel write them back first (another request thread
        // serves those writes), so holes are judged on what is really written.
        if let Some(notifier) = self.notifier.get()
            && let Err(e) = notifier.inval_inode(ino, 0, 0)
        {
            tracing::debug!("cannot have the kernel write back before lseek: {e}");
        }
        let Ok(offset) = u64::try_from(offset) else {
            reply.error(Errno::EINVAL);
            return;
        };
        match self.fs.seek(fh.0, offset, whence) {
            Ok(pos) => reply.offset(pos as i64),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn copy_file_range(
        &self,
        req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let _span = tracing::debug_span!("copy_file_range", offset_in, offset_out, len).entered();
        // One reply says at most u32::MAX bytes; the caller asks again for the rest.
        let len = len.min(u64::from(u32::MAX) & !0xfff);
        match self
            .fs
            .copy_file_range(fh_in.0, offset_in, fh_out.0, offset_out, len, caller(req))
        {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e)),
        }
    }
}
