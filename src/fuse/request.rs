//! Requests as the kernel sends them, decoded: an [`Operation`] per opcode this daemon serves,
//! its arguments borrowed from the read buffer.

use super::abi::{Args, InHeader, Malformed, fattr, opcode};
use std::ffi::OsStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A time a SETATTR sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeArg {
    /// The current time.
    Now,
    /// A given time.
    At(SystemTime),
}

/// What a SETATTR changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetattrArgs {
    /// New permission bits (with the kind bits the kernel sends).
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size.
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<TimeArg>,
    /// New modification time.
    pub mtime: Option<TimeArg>,
    /// The open file the change comes through (`ftruncate`, `fchmod`).
    pub fh: Option<u64>,
}

/// A node to make: the mode the caller asked for, unmasked, and the caller's umask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewNode {
    /// The mode asked for (kind bits included).
    pub mode: u32,
    /// The caller's umask.
    pub umask: u32,
}

/// One decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation<'a> {
    /// Find `name` in the directory.
    Lookup { name: &'a OsStr },
    /// The kernel drops `nlookup` references to the node.
    Forget { nlookup: u64 },
    /// Several forgets at once: (node, references).
    BatchForget { nodes: Vec<(u64, u64)> },
    /// Attributes of the node.
    Getattr,
    /// Change attributes.
    Setattr(SetattrArgs),
    /// Target of a symlink.
    Readlink,
    /// Make a symlink `name` to `target`.
    Symlink { name: &'a OsStr, target: &'a OsStr },
    /// Make a device node, fifo or socket.
    Mknod {
        name: &'a OsStr,
        node: NewNode,
        rdev: u32,
    },
    /// Make a directory.
    Mkdir { name: &'a OsStr, node: NewNode },
    /// Remove a non-directory.
    Unlink { name: &'a OsStr },
    /// Remove a directory.
    Rmdir { name: &'a OsStr },
    /// Rename (with `RENAME_*` flags).
    Rename {
        name: &'a OsStr,
        new_parent: u64,
        new_name: &'a OsStr,
        flags: u32,
    },
    /// A new name for node `target` in this directory.
    Link { target: u64, new_name: &'a OsStr },
    /// Open a file.
    Open { flags: i32 },
    /// Read from an open file.
    Read { fh: u64, offset: u64, size: u32 },
    /// Write to an open file.
    Write {
        fh: u64,
        offset: u64,
        data: &'a [u8],
        write_flags: u32,
    },
    /// Filesystem statistics.
    Statfs,
    /// Close an open file.
    Release { fh: u64 },
    /// Flush an open file (at every close of a descriptor).
    Flush,
    /// Sync an open file.
    Fsync { fh: u64, datasync: bool },
    /// Set an extended attribute.
    Setxattr {
        name: &'a OsStr,
        value: &'a [u8],
        flags: i32,
    },
    /// Get an extended attribute (`size` 0 asks for the length).
    Getxattr { name: &'a OsStr, size: u32 },
    /// List extended attributes (`size` 0 asks for the length).
    Listxattr { size: u32 },
    /// Remove an extended attribute.
    Removexattr { name: &'a OsStr },
    /// Open a directory.
    Opendir,
    /// Read directory entries.
    Readdir { fh: u64, offset: u64, size: u32 },
    /// Read directory entries with their attributes.
    Readdirplus { fh: u64, offset: u64, size: u32 },
    /// Close an open directory.
    Releasedir { fh: u64 },
    /// Sync a directory.
    Fsyncdir,
    /// Check access (`access(2)` on a mount without `default_permissions`).
    Access { mask: i32 },
    /// Create and open a file.
    Create {
        name: &'a OsStr,
        node: NewNode,
        flags: i32,
    },
    /// Create and open a file with no name in the directory (`O_TMPFILE`).
    Tmpfile { node: NewNode, flags: i32 },
    /// Allocate, punch or zero a range of an open file.
    Fallocate {
        fh: u64,
        offset: u64,
        length: u64,
        mode: i32,
    },
    /// Find data or a hole in an open file.
    Lseek { fh: u64, offset: i64, whence: i32 },
    /// Copy a range between open files; `wide` when the reply may count past 4 GiB.
    CopyFileRange {
        fh_in: u64,
        offset_in: u64,
        fh_out: u64,
        offset_out: u64,
        len: u64,
        wide: bool,
    },
    /// The kernel ends the session.
    Destroy,
    /// The kernel asks to interrupt a request (ignored: requests are short).
    Interrupt,
    /// INIT after the handshake, or an opcode this daemon does not serve.
    Unsupported(u32),
}

fn time_arg(valid: u32, set: u32, now: u32, sec: u64, nsec: u32) -> Option<TimeArg> {
    if valid & now != 0 {
        Some(TimeArg::Now)
    } else if valid & set != 0 {
        // The kernel sends seconds as an unsigned field holding a signed value.
        let sec = sec as i64;
        let at = if sec >= 0 {
            UNIX_EPOCH + Duration::new(sec.unsigned_abs(), nsec)
        } else {
            UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec.into())
        };
        Some(TimeArg::At(at))
    } else {
        None
    }
}

fn setattr(args: &mut Args<'_>) -> Result<SetattrArgs, Malformed> {
    let valid = args.u32()?;
    args.skip(4)?;
    let fh = args.u64()?;
    let size = args.u64()?;
    let _lock_owner = args.u64()?;
    let atime = args.u64()?;
    let mtime = args.u64()?;
    let _ctime = args.u64()?;
    let atimensec = args.u32()?;
    let mtimensec = args.u32()?;
    let _ctimensec = args.u32()?;
    let mode = args.u32()?;
    args.skip(4)?;
    let uid = args.u32()?;
    let gid = args.u32()?;
    let pick = |bit: u32, v| (valid & bit != 0).then_some(v);
    Ok(SetattrArgs {
        mode: pick(fattr::MODE, mode),
        uid: pick(fattr::UID, uid),
        gid: pick(fattr::GID, gid),
        size: (valid & fattr::SIZE != 0).then_some(size),
        atime: time_arg(valid, fattr::ATIME, fattr::ATIME_NOW, atime, atimensec),
        mtime: time_arg(valid, fattr::MTIME, fattr::MTIME_NOW, mtime, mtimensec),
        fh: (valid & fattr::FH != 0).then_some(fh),
    })
}

/// `fuse_read_in` as READ, READDIR and READDIRPLUS send it: (handle, offset, size).
fn read_in(args: &mut Args<'_>) -> Result<(u64, u64, u32), Malformed> {
    let fh = args.u64()?;
    let offset = args.u64()?;
    let size = args.u32()?;
    Ok((fh, offset, size))
}

/// `fuse_create_in` as CREATE and TMPFILE send it: (node, open flags).
fn create_in(args: &mut Args<'_>) -> Result<(NewNode, i32), Malformed> {
    let flags = args.i32()?;
    let mode = args.u32()?;
    let umask = args.u32()?;
    args.skip(4)?;
    Ok((NewNode { mode, umask }, flags))
}

impl<'a> Operation<'a> {
    /// Decodes the arguments `body` (the request after its header, without extension headers)
    /// of a request with `opcode`.
    pub fn parse(opcode: u32, body: &'a [u8]) -> Result<Operation<'a>, Malformed> {
        let args = &mut Args::new(body);
        let op = match opcode {
            opcode::LOOKUP => Operation::Lookup { name: args.name()? },
            opcode::FORGET => Operation::Forget {
                nlookup: args.u64()?,
            },
            opcode::BATCH_FORGET => {
                let count = args.u32()?;
                args.skip(4)?;
                let mut nodes = Vec::with_capacity(count.min(4096) as usize);
                for _ in 0..count {
                    nodes.push((args.u64()?, args.u64()?));
                }
                Operation::BatchForget { nodes }
            }
            opcode::GETATTR => Operation::Getattr,
            opcode::SETATTR => Operation::Setattr(setattr(args)?),
            opcode::READLINK => Operation::Readlink,
            opcode::SYMLINK => Operation::Symlink {
                name: args.name()?,
                target: args.name()?,
            },
            opcode::MKNOD => {
                let mode = args.u32()?;
                let rdev = args.u32()?;
                let umask = args.u32()?;
                args.skip(4)?;
                Operation::Mknod {
                    node: NewNode { mode, umask },
                    rdev,
                    name: args.name()?,
                }
            }
            opcode::MKDIR => {
                let mode = args.u32()?;
                let umask = args.u32()?;
                Operation::Mkdir {
                    node: NewNode { mode, umask },
                    name: args.name()?,
                }
            }
            opcode::UNLINK => Operation::Unlink { name: args.name()? },
            opcode::RMDIR => Operation::Rmdir { name: args.name()? },
            opcode::RENAME | opcode::RENAME2 => {
                let new_parent = args.u64()?;
                let flags = if opcode == opcode::RENAME2 {
                    let flags = args.u32()?;
                    args.skip(4)?;
                    flags
                } else {
                    0
                };
                Operation::Rename {
                    new_parent,
                    flags,
                    name: args.name()?,
                    new_name: args.name()?,
                }
            }
            opcode::LINK => Operation::Link {
                target: args.u64()?,
                new_name: args.name()?,
            },
            opcode::OPEN => Operation::Open { flags: args.i32()? },
            opcode::READ => {
                let (fh, offset, size) = read_in(args)?;
                Operation::Read { fh, offset, size }
            }
            opcode::WRITE => {
                let fh = args.u64()?;
                let offset = args.u64()?;
                let size = args.u32()?;
                let write_flags = args.u32()?;
                args.skip(16)?;
                Operation::Write {
                    fh,
                    offset,
                    write_flags,
                    data: args.bytes(size as usize)?,
                }
            }
            opcode::STATFS => Operation::Statfs,
            opcode::RELEASE => Operation::Release { fh: args.u64()? },
            opcode::RELEASEDIR => Operation::Releasedir { fh: args.u64()? },
            opcode::FLUSH => Operation::Flush,
            opcode::FSYNC => {
                let fh = args.u64()?;
                let flags = args.u32()?;
                Operation::Fsync {
                    fh,
                    datasync: flags & super::abi::FSYNC_DATASYNC != 0,
                }
            }
            opcode::FSYNCDIR => Operation::Fsyncdir,
            opcode::SETXATTR => {
                // The short form: `FUSE_SETXATTR_EXT` is not negotiated.
                let size = args.u32()?;
                let flags = args.i32()?;
                let name = args.name()?;
                Operation::Setxattr {
                    name,
                    flags,
                    value: args.bytes(size as usize)?,
                }
            }
            opcode::GETXATTR => {
                let size = args.u32()?;
                args.skip(4)?;
                Operation::Getxattr {
                    size,
                    name: args.name()?,
                }
            }
            opcode::LISTXATTR => Operation::Listxattr { size: args.u32()? },
            opcode::REMOVEXATTR => Operation::Removexattr { name: args.name()? },
            opcode::OPENDIR => Operation::Opendir,
            opcode::READDIR => {
                let (fh, offset, size) = read_in(args)?;
                Operation::Readdir { fh, offset, size }
            }
            opcode::READDIRPLUS => {
                let (fh, offset, size) = read_in(args)?;
                Operation::Readdirplus { fh, offset, size }
            }
            opcode::ACCESS => Operation::Access { mask: args.i32()? },
            opcode::CREATE => {
                let (node, flags) = create_in(args)?;
                Operation::Create {
                    node,
                    flags,
                    name: args.name()?,
                }
            }
            opcode::TMPFILE => {
                let (node, flags) = create_in(args)?;
                Operation::Tmpfile { node, flags }
            }
            opcode::FALLOCATE => Operation::Fallocate {
                fh: args.u64()?,
                offset: args.u64()?,
                length: args.u64()?,
                mode: args.i32()?,
            },
            opcode::LSEEK => Operation::Lseek {
                fh: args.u64()?,
                offset: args.i64()?,
                whence: args.i32()?,
            },
            opcode::COPY_FILE_RANGE | opcode::COPY_FILE_RANGE_64 => {
                let fh_in = args.u64()?;
                let offset_in = args.u64()?;
                let _node_out = args.u64()?;
                Operation::CopyFileRange {
                    fh_in,
                    offset_in,
                    fh_out: args.u64()?,
                    offset_out: args.u64()?,
                    len: args.u64()?,
                    wide: opcode == opcode::COPY_FILE_RANGE_64,
                }
            }
            opcode::DESTROY => Operation::Destroy,
            opcode::INTERRUPT => Operation::Interrupt,
            other => Operation::Unsupported(other),
        };
        Ok(op)
    }
}

/// A decoded request: who asks, about which node, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// The header.
    pub header: InHeader,
    /// The operation and its arguments.
    pub op: Operation<'a>,
}

impl<'a> Request<'a> {
    /// Decodes one request as read from the device.
    pub fn parse(bytes: &'a [u8]) -> Result<Request<'a>, Malformed> {
        let header = InHeader::parse(bytes)?;
        let len = (header.len as usize).min(bytes.len());
        let ext = usize::from(header.total_extlen) * 8;
        let body = bytes
            .get(super::abi::IN_HEADER_LEN..len.checked_sub(ext).ok_or(Malformed)?)
            .ok_or(Malformed)?;
        let op = Operation::parse(header.opcode, body)?;
        Ok(Request { header, op })
    }
}

#[cfg(test)]
mod tests {
    use super::super::abi::Out;
    use super::*;

    fn request(op: u32, body: &[u8], extlen: u16) -> Vec<u8> {
        let mut out = Out::default();
        let len = 40 + body.len() + usize::from(extlen) * 8;
        out.u32(len as u32).u32(op).u64(5).u64(9);
        out.u32(0).u32(0).u32(1).u32(u32::from(extlen));
        out.raw(body);
        out.raw(&vec![0xee; usize::from(extlen) * 8]);
        out.as_bytes().to_vec()
    }

    #[test]
    fn a_rename2_carries_both_names_and_its_flags() {
        let mut body = Out::default();
        body.u64(3).u32(libc::RENAME_EXCHANGE).u32(0).raw(b"a\0b\0");
        let bytes = request(opcode::RENAME2, body.as_bytes(), 0);
        let req = Request::parse(&bytes).unwrap();
        assert_eq!(req.header.nodeid, 9);
        assert_eq!(
            req.op,
            Operation::Rename {
                name: OsStr::new("a"),
                new_parent: 3,
                new_name: OsStr::new("b"),
                flags: libc::RENAME_EXCHANGE,
            }
        );
    }

    #[test]
    fn extension_headers_are_not_part_of_the_arguments() {
        let mut body = Out::default();
        body.u32(0o100644).u32(0o022).raw(b"dir\0");
        let bytes = request(opcode::MKDIR, body.as_bytes(), 2);
        let req = Request::parse(&bytes).unwrap();
        assert_eq!(
            req.op,
            Operation::Mkdir {
                name: OsStr::new("dir"),
                node: NewNode {
                    mode: 0o100644,
                    umask: 0o022
                },
            }
        );
    }

    #[test]
    fn a_write_shorter_than_it_says_is_malformed() {
        let mut body = Out::default();
        body.u64(1)
            .u64(0)
            .u32(10)
            .u32(0)
            .u64(0)
            .u32(0)
            .u32(0)
            .raw(b"12345");
        let bytes = request(opcode::WRITE, body.as_bytes(), 0);
        assert_eq!(Request::parse(&bytes), Err(Malformed));
    }

    #[test]
    fn setattr_takes_only_the_fields_marked_valid() {
        let mut body = Out::default();
        body.u32(fattr::SIZE | fattr::MTIME_NOW | fattr::ATIME)
            .u32(0);
        body.u64(77).u64(4096).u64(0); // fh (not valid), size, lock owner
        body.u64((-1i64) as u64).u64(0).u64(0); // atime -1 s, mtime, ctime
        body.u32(500_000_000).u32(0).u32(0);
        body.u32(0o777).u32(0).u32(1).u32(2).u32(0);
        let bytes = request(opcode::SETATTR, body.as_bytes(), 0);
        let Operation::Setattr(set) = Request::parse(&bytes).unwrap().op else {
            panic!("not a setattr");
        };
        assert_eq!(set.size, Some(4096));
        assert_eq!(set.mtime, Some(TimeArg::Now));
        assert_eq!(
            set.atime,
            Some(TimeArg::At(UNIX_EPOCH - Duration::from_millis(500)))
        );
        assert_eq!(
            (set.mode, set.uid, set.gid, set.fh),
            (None, None, None, None)
        );
    }

    #[test]
    fn a_tmpfile_is_a_create_without_a_name() {
        let mut body = Out::default();
        body.i32(libc::O_RDWR)
            .u32(0o100600)
            .u32(0o022)
            .u32(0)
            .raw(b"/\0");
        let bytes = request(opcode::TMPFILE, body.as_bytes(), 0);
        assert_eq!(
            Request::parse(&bytes).unwrap().op,
            Operation::Tmpfile {
                node: NewNode {
                    mode: 0o100600,
                    umask: 0o022
                },
                flags: libc::O_RDWR,
            }
        );
    }

    #[test]
    fn unknown_opcodes_are_named_not_refused() {
        let bytes = request(4242, &[], 0);
        assert_eq!(
            Request::parse(&bytes).unwrap().op,
            Operation::Unsupported(4242)
        );
    }

    #[test]
    fn a_length_shorter_than_its_extensions_is_malformed() {
        let mut bytes = request(opcode::GETATTR, &[], 0);
        bytes[36] = 9; // 72 bytes of extensions in a 40-byte request
        assert_eq!(Request::parse(&bytes), Err(Malformed));
    }
}
