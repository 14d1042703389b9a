//! Replies: one per request, encoded in the kernel's layout and written in one `writev`.
//!
//! A [`Reply`] is consumed by the method that answers; one dropped unanswered (a bug) answers
//! EIO rather than leave the caller waiting forever.
//!
//! A request that came through a FUSE-over-io_uring entry is answered into that entry instead
//! ([`RingReply`]): the ring thread commits it once the handler returns. Notifications always
//! go to the device.

use super::abi::{ATTR_LEN, DIRENT_LEN, ENTRY_OUT_LEN, NOTIFY_INVAL_INODE, Out, out_header};
use std::cell::RefCell;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A descriptor of the FUSE device: requests are read from it and replies written to it.
#[derive(Debug)]
pub struct Channel {
    device: File,
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.device.as_fd()
    }
}

impl Channel {
    /// A channel over an open FUSE device.
    pub fn new(device: File) -> Self {
        Channel { device }
    }

    /// Reads one request into `buf` (the kernel hands out whole requests only).
    pub fn receive(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.device).read(buf)
    }

    /// Writes one message made of `parts`, in one system call as the device requires.
    pub fn send(&self, parts: &[IoSlice<'_>]) -> io::Result<()> {
        (&self.device).write_vectored(parts).map(|_| ())
    }

    /// Has the kernel drop its cached data and attributes of node `ino` from `offset` for
    /// `len` bytes (0: to the end), writing dirty pages back first.
    pub fn inval_inode(&self, ino: u64, offset: i64, len: i64) -> io::Result<()> {
        let mut body = Out::with_capacity(24);
        body.u64(ino).i64(offset).i64(len);
        let header = out_header(body.len(), NOTIFY_INVAL_INODE, 0);
        self.send(&[IoSlice::new(&header), IoSlice::new(body.as_bytes())])
    }
}

/// Attributes of a node in the kernel's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeAttr {
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    /// Access time.
    pub atime: SystemTime,
    /// Modification time.
    pub mtime: SystemTime,
    /// Change time.
    pub ctime: SystemTime,
    /// Kind and permission bits (`st_mode`).
    pub mode: u32,
    /// Hard links.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number of a device node.
    pub rdev: u32,
    /// Preferred I/O size.
    pub blksize: u32,
}

/// A name's answer: the node, its generation and attributes, and how long the kernel may keep
/// both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Attributes (the node id is `attr.ino`).
    pub attr: NodeAttr,
    /// The node's generation.
    pub generation: u64,
    /// How long the name and the attributes may be cached.
    pub ttl: Duration,
}

/// Filesystem statistics as `fuse_kstatfs` carries them (the fields of `statvfs`, named as
/// there: blocks in units of `frsize`, inodes in `files`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct StatfsOut {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

/// Seconds and nanoseconds since the epoch, the seconds negative before it.
fn split_time(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        ),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            match d.subsec_nanos() {
                0 => (-secs, 0),
                ns => (-secs - 1, 1_000_000_000 - ns),
            }
        }
    }
}

fn put_attr(out: &mut Out, a: &NodeAttr) {
    let (atime, atime_ns) = split_time(a.atime);
    let (mtime, mtime_ns) = split_time(a.mtime);
    let (ctime, ctime_ns) = split_time(a.ctime);
    out.u64(a.ino).u64(a.size).u64(a.blocks);
    out.i64(atime).i64(mtime).i64(ctime);
    out.u32(atime_ns).u32(mtime_ns).u32(ctime_ns);
    out.u32(a.mode)
        .u32(a.nlink)
        .u32(a.uid)
        .u32(a.gid)
        .u32(a.rdev);
    out.u32(a.blksize).u32(0);
}

fn put_entry(out: &mut Out, e: &Entry) {
    let secs = e.ttl.as_secs();
    let nsec = e.ttl.subsec_nanos();
    out.u64(e.attr.ino).u64(e.generation);
    out.u64(secs).u64(secs).u32(nsec).u32(nsec);
    put_attr(out, &e.attr);
}

fn put_open(out: &mut Out, fh: u64, open_flags: u32) {
    out.u64(fh).u32(open_flags).u32(0);
}

/// The answer to a request that came through a ring entry, kept until the ring thread copies
/// it into the entry's buffers (the request's bytes live there until the handler returns).
#[derive(Debug, Default)]
pub struct RingReply {
    answer: RefCell<RingAnswer>,
}

#[derive(Debug, Default)]
struct RingAnswer {
    given: bool,
    error: i32,
    payload: Vec<u8>,
}

impl RingReply {
    fn put(&self, error: i32, payload: &[u8]) {
        let mut answer = self.answer.borrow_mut();
        answer.given = true;
        answer.error = error;
        // The buffer of the previous answer is reused.
        answer.payload.clear();
        answer.payload.extend_from_slice(payload);
    }

    /// Hands the answer given since the last call, as (error, payload), to `take`; `None`
    /// when no answer was given.
    pub fn take_with<T>(&self, take: impl FnOnce(i32, &[u8]) -> T) -> Option<T> {
        let mut answer = self.answer.borrow_mut();
        if !answer.given {
            return None;
        }
        answer.given = false;
        Some(take(answer.error, &answer.payload))
    }
}

/// Where a request's answer goes.
#[derive(Debug, Clone, Copy)]
pub enum Sink<'a> {
    /// Written to the device.
    Device(&'a Channel),
    /// Kept for a ring entry; notifications still go to `channel`.
    Ring {
        /// The device, for notifications.
        channel: &'a Channel,
        /// The entry's answer.
        reply: &'a RingReply,
    },
}

impl<'a> Sink<'a> {
    /// The reply to request `unique`.
    pub fn reply(self, unique: u64) -> Reply<'a> {
        match self {
            Sink::Device(channel) => Reply::new(channel, unique),
            Sink::Ring { channel, reply } => Reply {
                channel,
                ring: Some(reply),
                unique,
                sent: false,
            },
        }
    }
}

/// The answer to one request.
#[must_use = "every request needs its reply"]
pub struct Reply<'a> {
    channel: &'a Channel,
    ring: Option<&'a RingReply>,
    unique: u64,
    sent: bool,
}

impl<'a> Reply<'a> {
    /// The reply to request `unique`, sent on `channel`.
    pub fn new(channel: &'a Channel, unique: u64) -> Self {
        Reply {
            channel,
            ring: None,
            unique,
            sent: false,
        }
    }

    /// The channel the request came on, for notifications while it is served.
    pub fn channel(&self) -> &'a Channel {
        self.channel
    }

    fn send(mut self, error: i32, payload: &[u8]) {
        self.sent = true;
        if let Some(ring) = self.ring {
            ring.put(error, payload);
            return;
        }
        let header = out_header(payload.len(), error, self.unique);
        let parts = [IoSlice::new(&header), IoSlice::new(payload)];
        if let Err(e) = self.channel.send(&parts) {
            // ENOENT: the request was interrupted and is gone; nobody waits for the answer.
            if e.raw_os_error() != Some(libc::ENOENT) {
                tracing::warn!(unique = self.unique, "cannot answer the kernel: {e}");
            }
        }
    }

    /// Fails the request with `errno`.
    pub fn error(self, errno: i32) {
        self.send(-errno.abs(), &[]);
    }

    /// Succeeds with no data.
    pub fn ok(self) {
        self.send(0, &[]);
    }

    /// Answers a lookup or a node's creation.
    pub fn entry(self, entry: &Entry) {
        let mut out = Out::with_capacity(ENTRY_OUT_LEN);
        put_entry(&mut out, entry);
        self.send(0, out.as_bytes());
    }

    /// Answers GETATTR or SETATTR.
    pub fn attr(self, attr: &NodeAttr, ttl: Duration) {
        let mut out = Out::with_capacity(16 + ATTR_LEN);
        out.u64(ttl.as_secs()).u32(ttl.subsec_nanos()).u32(0);
        put_attr(&mut out, attr);
        self.send(0, out.as_bytes());
    }

    /// Answers OPEN or OPENDIR with handle `fh` and `FOPEN_*` flags.
    pub fn opened(self, fh: u64, open_flags: u32) {
        let mut out = Out::with_capacity(16);
        put_open(&mut out, fh, open_flags);
        self.send(0, out.as_bytes());
    }

    /// Answers CREATE or TMPFILE: the new node and its open handle.
    pub fn created(self, entry: &Entry, fh: u64, open_flags: u32) {
        let mut out = Out::with_capacity(ENTRY_OUT_LEN + 16);
        put_entry(&mut out, entry);
        put_open(&mut out, fh, open_flags);
        self.send(0, out.as_bytes());
    }

    /// Answers with bytes (READ, READLINK, GETXATTR, LISTXATTR).
    pub fn data(self, data: &[u8]) {
        self.send(0, data);
    }

    /// Answers WRITE or COPY_FILE_RANGE with the bytes written.
    pub fn written(self, n: u32) {
        let mut out = Out::with_capacity(8);
        out.u32(n).u32(0);
        self.send(0, out.as_bytes());
    }

    /// Answers COPY_FILE_RANGE_64 with the bytes copied.
    pub fn copied(self, n: u64) {
        let mut out = Out::with_capacity(8);
        out.u64(n);
        self.send(0, out.as_bytes());
    }

    /// Answers STATFS.
    pub fn statfs(self, s: &StatfsOut) {
        let mut out = Out::with_capacity(80);
        out.u64(s.blocks)
            .u64(s.bfree)
            .u64(s.bavail)
            .u64(s.files)
            .u64(s.ffree);
        out.u32(s.bsize).u32(s.namelen).u32(s.frsize).u32(0);
        out.raw(&[0; 24]);
        self.send(0, out.as_bytes());
    }

    /// Answers GETXATTR or LISTXATTR asked with size 0: the size a buffer needs.
    pub fn xattr_size(self, n: u32) {
        let mut out = Out::with_capacity(8);
        out.u32(n).u32(0);
        self.send(0, out.as_bytes());
    }

    /// Answers LSEEK.
    pub fn offset(self, offset: i64) {
        let mut out = Out::with_capacity(8);
        out.i64(offset);
        self.send(0, out.as_bytes());
    }

    /// Answers READDIR or READDIRPLUS with the entries gathered.
    pub fn dir(self, entries: DirEntries) {
        self.send(0, entries.out.as_bytes());
    }
}

impl Drop for Reply<'_> {
    fn drop(&mut self) {
        if !self.sent {
            tracing::error!(unique = self.unique, "BUG: a request was left unanswered");
            self.sent = true;
            if let Some(ring) = self.ring {
                ring.put(-libc::EIO, &[]);
                return;
            }
            let header = out_header(0, -libc::EIO, self.unique);
            let _ = self.channel.send(&[IoSlice::new(&header)]);
        }
    }
}

/// Directory entries for one READDIR or READDIRPLUS reply, up to the size the kernel asked.
pub struct DirEntries {
    out: Out,
    max: usize,
}

impl DirEntries {
    /// Room for `size` bytes of entries.
    pub fn new(size: u32) -> Self {
        let max = size as usize;
        DirEntries {
            out: Out::with_capacity(max.min(1 << 17)),
            max,
        }
    }

    fn fits(&self, header: usize, name: &OsStr) -> bool {
        let len = (header + name.len()).next_multiple_of(8);
        self.out.len() + len <= self.max
    }

    fn put_dirent(&mut self, ino: u64, next: u64, mode: u32, name: &OsStr) {
        let namelen = u32::try_from(name.len()).unwrap_or(u32::MAX);
        self.out
            .u64(ino)
            .u64(next)
            .u32(namelen)
            .u32((mode & libc::S_IFMT) >> 12);
        self.out.raw(name.as_bytes()).pad8();
    }

    /// Adds an entry of kind `mode` (its `S_IFMT` bits) whose successor is at `next`; true when
    /// the reply is full and the entry was not added.
    pub fn add(&mut self, ino: u64, next: u64, mode: u32, name: &OsStr) -> bool {
        if !self.fits(DIRENT_LEN, name) {
            return true;
        }
        self.put_dirent(ino, next, mode, name);
        false
    }

    /// Adds an entry with its attributes (READDIRPLUS); true when full, as [`add`](Self::add).
    pub fn add_plus(&mut self, entry: &Entry, next: u64, name: &OsStr) -> bool {
        if !self.fits(ENTRY_OUT_LEN + DIRENT_LEN, name) {
            return true;
        }
        put_entry(&mut self.out, entry);
        self.put_dirent(entry.attr.ino, next, entry.attr.mode, name);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr() -> NodeAttr {
        NodeAttr {
            ino: 12,
            size: 3,
            blocks: 8,
            atime: UNIX_EPOCH - Duration::from_millis(1500),
            mtime: UNIX_EPOCH + Duration::new(7, 9),
            ctime: UNIX_EPOCH,
            mode: libc::S_IFREG | 0o644,
            nlink: 1,
            uid: 2,
            gid: 3,
            rdev: 0,
            blksize: 4096,
        }
    }

    #[test]
    fn an_entry_has_the_kernels_size_and_order() {
        let mut out = Out::default();
        put_entry(
            &mut out,
            &Entry {
                attr: attr(),
                generation: 5,
                ttl: Duration::from_millis(1500),
            },
        );
        let b = out.as_bytes();
        assert_eq!(b.len(), ENTRY_OUT_LEN);
        let u64_at = |i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().unwrap());
        let u32_at = |i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().unwrap());
        assert_eq!((u64_at(0), u64_at(8), u64_at(16)), (12, 5, 1));
        assert_eq!(u32_at(32), 500_000_000);
        // atime 1.5 s before the epoch: -2 s + 0.5 s.
        assert_eq!(u64_at(40 + 24) as i64, -2);
        assert_eq!(u32_at(40 + 48), 500_000_000);
        assert_eq!(u32_at(40 + 52), 9);
        assert_eq!(u32_at(40 + 60), libc::S_IFREG | 0o644);
    }

    #[test]
    fn dirents_are_padded_and_stop_when_full() {
        let mut dir = DirEntries::new(64);
        assert!(!dir.add(1, 1, libc::S_IFDIR, OsStr::new(".")));
        assert_eq!(dir.out.len(), 32);
        assert!(!dir.add(2, 2, libc::S_IFREG, OsStr::new("12345678")));
        assert_eq!(dir.out.len(), 64);
        assert!(dir.add(3, 3, libc::S_IFREG, OsStr::new("x")));
        assert_eq!(dir.out.len(), 64);
        let b = dir.out.as_bytes();
        assert_eq!(u32::from_ne_bytes(b[52..56].try_into().unwrap()), 8); // DT_REG
    }
}
