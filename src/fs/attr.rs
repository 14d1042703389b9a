//! Attributes, directory entries and caller identity: the filesystem's own types, free of
//! `fuser` types.

use crate::format;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Kind of node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Regular file.
    File,
    /// Directory.
    Directory,
    /// Symbolic link.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
    /// Character device.
    CharDevice,
    /// Block device.
    BlockDevice,
}

impl FileKind {
    /// The kind of a `st_mode`.
    pub fn from_mode(mode: u32) -> FileKind {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => FileKind::Directory,
            libc::S_IFLNK => FileKind::Symlink,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFSOCK => FileKind::Socket,
            libc::S_IFCHR => FileKind::CharDevice,
            libc::S_IFBLK => FileKind::BlockDevice,
            _ => FileKind::File,
        }
    }
}

/// Attributes of a node as the mount shows them (plaintext size for files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// Node id, which is also the inode number `stat` shows.
    pub ino: u64,
    /// The node's generation (a reused inode number gets a new one).
    pub generation: u64,
    /// Plaintext size.
    pub size: u64,
    /// 512-byte blocks allocated on the backing filesystem.
    pub blocks: u64,
    /// Access time.
    pub atime: SystemTime,
    /// Modification time.
    pub mtime: SystemTime,
    /// Change time.
    pub ctime: SystemTime,
    /// Kind.
    pub kind: FileKind,
    /// Permission bits (with setuid, setgid, sticky).
    pub perm: u16,
    /// Hard links.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number for device nodes.
    pub rdev: u32,
    /// Preferred I/O size.
    pub blksize: u32,
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    let nsec = u32::try_from(nsec).unwrap_or(0);
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec.unsigned_abs(), nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec.into())
    }
}

impl Attr {
    /// Attributes of node `ino` from the backing `stat`.
    pub fn from_stat(ino: u64, st: &libc::stat) -> Attr {
        let kind = FileKind::from_mode(st.st_mode);
        let size = match kind {
            FileKind::File => format::plain_size_lenient(st.st_size as u64),
            _ => st.st_size as u64,
        };
        Attr {
            ino,
            generation: 0,
            size,
            blocks: st.st_blocks as u64,
            atime: time(st.st_atime, st.st_atime_nsec),
            mtime: time(st.st_mtime, st.st_mtime_nsec),
            ctime: time(st.st_ctime, st.st_ctime_nsec),
            kind,
            perm: (st.st_mode & 0o7777) as u16,
            nlink: st.st_nlink as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev as u32,
            blksize: 4096,
        }
    }
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Backing inode number (informational; lookups give node ids).
    pub ino: u64,
    /// Kind.
    pub kind: FileKind,
    /// Name.
    pub name: std::ffi::OsString,
}

/// Who made a request (new nodes are given to them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// User id (the filesystem uid).
    pub uid: u32,
    /// Group id (the filesystem gid).
    pub gid: u32,
    /// Process id (0 when unknown), to learn the caller's groups and capabilities when a rule
    /// needs them.
    pub pid: u32,
}

/// A time to set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTime {
    /// The current time.
    Now,
    /// A given time.
    At(SystemTime),
}

/// The changes of a `setattr`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New plaintext size.
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<SetTime>,
    /// New modification time.
    pub mtime: Option<SetTime>,
}

/// Filesystem statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statfs {
    /// Total blocks.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Blocks available to unprivileged users.
    pub bavail: u64,
    /// Total inodes.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Block size.
    pub bsize: u32,
    /// Longest name.
    pub namelen: u32,
    /// Fragment size.
    pub frsize: u32,
}
