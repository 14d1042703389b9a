//! The kernel's FUSE wire format (`include/uapi/linux/fuse.h`, protocol 7.40 as negotiated at
//! INIT): opcode numbers, flag bits, and the byte layouts of the structures this daemon reads
//! and writes. Every structure is native-endian, with the kernel's padding.
//!
//! Reading goes through [`Args`], a cursor that answers [`Malformed`] instead of panicking on
//! a short or unterminated request; writing goes through [`Out`], which appends fields.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// Operation codes of requests (`enum fuse_opcode`).
pub mod opcode {
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2;
    pub const GETATTR: u32 = 3;
    pub const SETATTR: u32 = 4;
    pub const READLINK: u32 = 5;
    pub const SYMLINK: u32 = 6;
    pub const MKNOD: u32 = 8;
    pub const MKDIR: u32 = 9;
    pub const UNLINK: u32 = 10;
    pub const RMDIR: u32 = 11;
    pub const RENAME: u32 = 12;
    pub const LINK: u32 = 13;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const WRITE: u32 = 16;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const FSYNC: u32 = 20;
    pub const SETXATTR: u32 = 21;
    pub const GETXATTR: u32 = 22;
    pub const LISTXATTR: u32 = 23;
    pub const REMOVEXATTR: u32 = 24;
    pub const FLUSH: u32 = 25;
    pub const INIT: u32 = 26;
    pub const OPENDIR: u32 = 27;
    pub const READDIR: u32 = 28;
    pub const RELEASEDIR: u32 = 29;
    pub const FSYNCDIR: u32 = 30;
    pub const ACCESS: u32 = 34;
    pub const CREATE: u32 = 35;
    pub const INTERRUPT: u32 = 36;
    pub const DESTROY: u32 = 38;
    pub const BATCH_FORGET: u32 = 42;
    pub const FALLOCATE: u32 = 43;
    pub const READDIRPLUS: u32 = 44;
    pub const RENAME2: u32 = 45;
    pub const LSEEK: u32 = 46;
    pub const COPY_FILE_RANGE: u32 = 47;
    pub const TMPFILE: u32 = 51;
    pub const COPY_FILE_RANGE_64: u32 = 53;
}

/// `fuse_setattr_in.valid` bits: which fields a SETATTR sets.
pub mod fattr {
    pub const MODE: u32 = 1 << 0;
    pub const UID: u32 = 1 << 1;
    pub const GID: u32 = 1 << 2;
    pub const SIZE: u32 = 1 << 3;
    pub const ATIME: u32 = 1 << 4;
    pub const MTIME: u32 = 1 << 5;
    pub const FH: u32 = 1 << 6;
    pub const ATIME_NOW: u32 = 1 << 7;
    pub const MTIME_NOW: u32 = 1 << 8;
}

/// `fuse_write_in.write_flags`: the write must clear set-user-id and set-group-id
/// (`FUSE_HANDLE_KILLPRIV_V2`).
pub const WRITE_KILL_SUIDGID: u32 = 1 << 2;

/// `fuse_fsync_in.fsync_flags`: only data (`fdatasync`).
pub const FSYNC_DATASYNC: u32 = 1;

/// `fuse_open_out.open_flags`: reads and writes of this handle bypass the page cache.
pub const FOPEN_DIRECT_IO: u32 = 1;

/// `fuse_open_out.open_flags`: keep the page cache across opens.
pub const FOPEN_KEEP_CACHE: u32 = 1 << 1;

/// The notification code of "invalidate an inode's cached data and attributes"
/// (`FUSE_NOTIFY_INVAL_INODE`), sent in the error field of an unsolicited message.
pub const NOTIFY_INVAL_INODE: i32 = 2;

/// FUSE over io_uring (`include/uapi/linux/fuse.h`, protocol 7.42): the layout of a ring
/// entry's header buffer and the commands of `IORING_OP_URING_CMD` on the device.
///
/// The header buffer (`fuse_uring_req_header`, 288 bytes):
///
/// | offset | bytes | what |
/// |---|---|---|
/// | 0 | 128 | `in_out`: `fuse_in_header` of a request, `fuse_out_header` of its reply |
/// | 128 | 128 | `op_in`: the per-opcode header of the request |
/// | 256 | 8 | `ring_ent_in_out.flags` |
/// | 264 | 8 | `ring_ent_in_out.commit_id`: names the request in its reply |
/// | 272 | 4 | `ring_ent_in_out.payload_sz`: bytes of the payload buffer in use |
/// | 276 | 12 | padding, reserved |
///
/// The 80-byte command area of the SQE holds `fuse_uring_cmd_req`: flags (u64), commit_id
/// (u64), qid (u16), 6 bytes of padding.
pub mod uring {
    /// `FUSE_IO_URING_CMD_REGISTER`: hands the kernel an entry's two buffers and waits for a
    /// request.
    pub const CMD_REGISTER: u32 = 1;
    /// `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`: answers the entry's request and waits for the
    /// next.
    pub const CMD_COMMIT_AND_FETCH: u32 = 2;
    /// Bytes of the `in_out` area.
    pub const IN_OUT_LEN: usize = 128;
    /// Offset and bytes of the `op_in` area.
    pub const OP_IN: usize = 128;
    /// Bytes of the `op_in` area.
    pub const OP_IN_LEN: usize = 128;
    /// Offset of `ring_ent_in_out.commit_id`.
    pub const COMMIT_ID: usize = 264;
    /// Offset of `ring_ent_in_out.payload_sz`.
    pub const PAYLOAD_SZ: usize = 272;
    /// Bytes of the whole header buffer.
    pub const HEADER_LEN: usize = 288;
    /// The iovecs of a REGISTER: the header buffer and the payload buffer.
    pub const REGISTER_IOVECS: u32 = 2;

    /// The command area of an SQE for queue `qid`, answering `commit_id` (0 at REGISTER).
    pub fn cmd_req(commit_id: u64, qid: u16) -> [u8; 80] {
        let mut cmd = [0u8; 80];
        cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
        cmd[16..18].copy_from_slice(&qid.to_ne_bytes());
        cmd
    }
}

/// Bytes of `fuse_in_header`.
pub const IN_HEADER_LEN: usize = 40;

/// Bytes of `fuse_out_header`.
pub const OUT_HEADER_LEN: usize = 16;

/// Bytes of `fuse_attr`.
pub const ATTR_LEN: usize = 88;

/// Bytes of `fuse_entry_out`.
pub const ENTRY_OUT_LEN: usize = 40 + ATTR_LEN;

/// Bytes of `fuse_dirent` before the name.
pub const DIRENT_LEN: usize = 24;

/// A request too short for its opcode, or a name without its terminating NUL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// `fuse_in_header`: what every request starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InHeader {
    /// Bytes of the whole request, this header included.
    pub len: u32,
    /// The operation.
    pub opcode: u32,
    /// The request's id, echoed in the reply.
    pub unique: u64,
    /// The node the request is about.
    pub nodeid: u64,
    /// The caller's filesystem user id.
    pub uid: u32,
    /// The caller's filesystem group id.
    pub gid: u32,
    /// The caller's process id (0 for requests the kernel makes on its own).
    pub pid: u32,
    /// Bytes of extension headers at the end of the request, in units of 8.
    pub total_extlen: u16,
}

impl InHeader {
    /// Reads the header at the start of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<InHeader, Malformed> {
        let mut args = Args::new(bytes.get(..IN_HEADER_LEN).ok_or(Malformed)?);
        let header = InHeader {
            len: args.u32()?,
            opcode: args.u32()?,
            unique: args.u64()?,
            nodeid: args.u64()?,
            uid: args.u32()?,
            gid: args.u32()?,
            pid: args.u32()?,
            total_extlen: args.u16()?,
        };
        Ok(header)
    }
}

/// A cursor over a request's arguments.
#[derive(Debug)]
pub struct Args<'a> {
    bytes: &'a [u8],
}

impl<'a> Args<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Args { bytes }
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.bytes.len() < n {
            return Err(Malformed);
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let mut out = [0; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    /// The next `u16`.
    pub fn u16(&mut self) -> Result<u16, Malformed> {
        Ok(u16::from_ne_bytes(self.array()?))
    }

    /// The next `u32`.
    pub fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_ne_bytes(self.array()?))
    }

    /// The next `i32`.
    pub fn i32(&mut self) -> Result<i32, Malformed> {
        Ok(i32::from_ne_bytes(self.array()?))
    }

    /// The next `u64`.
    pub fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_ne_bytes(self.array()?))
    }

    /// The next `i64`.
    pub fn i64(&mut self) -> Result<i64, Malformed> {
        Ok(i64::from_ne_bytes(self.array()?))
    }

    /// Skips `n` bytes (padding, fields this daemon does not use).
    pub fn skip(&mut self, n: usize) -> Result<(), Malformed> {
        self.bytes(n).map(|_| ())
    }

    /// The next NUL-terminated name, without its NUL.
    pub fn name(&mut self) -> Result<&'a OsStr, Malformed> {
        let end = self.bytes.iter().position(|&b| b == 0).ok_or(Malformed)?;
        let name = &self.bytes[..end];
        self.bytes = &self.bytes[end + 1..];
        Ok(OsStr::from_bytes(name))
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }
}

/// An outgoing structure under construction.
#[derive(Debug, Default)]
pub struct Out {
    bytes: Vec<u8>,
}

impl Out {
    /// An empty structure with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Out {
            bytes: Vec::with_capacity(capacity),
        }
    }

    /// Appends a `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_ne_bytes());
        self
    }

    /// Appends an `i32`.
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_ne_bytes());
        self
    }

    /// Appends a `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_ne_bytes());
        self
    }

    /// Appends an `i64`.
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_ne_bytes());
        self
    }

    /// Appends raw bytes.
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(bytes);
        self
    }

    /// Appends zero bytes up to the next multiple of 8 (dirent names are padded so).
    pub fn pad8(&mut self) -> &mut Self {
        let pad = self.bytes.len().next_multiple_of(8) - self.bytes.len();
        self.bytes.extend_from_slice(&[0; 8][..pad]);
        self
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True when nothing was appended.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// `fuse_out_header` for a reply of `payload_len` bytes to request `unique`, with `error` a
/// negative errno (or 0); notifications put their code in `error` and 0 in `unique`.
pub fn out_header(payload_len: usize, error: i32, unique: u64) -> [u8; OUT_HEADER_LEN] {
    let len = u32::try_from(OUT_HEADER_LEN + payload_len).unwrap_or(u32::MAX);
    let mut out = [0; OUT_HEADER_LEN];
    out[0..4].copy_from_slice(&len.to_ne_bytes());
    out[4..8].copy_from_slice(&error.to_ne_bytes());
    out[8..16].copy_from_slice(&unique.to_ne_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_reads_its_fields_in_the_kernels_order() {
        let mut out = Out::default();
        out.u32(56).u32(opcode::LOOKUP).u64(7).u64(1);
        out.u32(1000).u32(100).u32(42).u32(3);
        let header = InHeader::parse(out.as_bytes()).unwrap();
        assert_eq!(
            header,
            InHeader {
                len: 56,
                opcode: opcode::LOOKUP,
                unique: 7,
                nodeid: 1,
                uid: 1000,
                gid: 100,
                pid: 42,
                total_extlen: 3,
            }
        );
    }

    #[test]
    fn a_ring_command_puts_commit_id_and_queue_where_the_kernel_reads_them() {
        let cmd = uring::cmd_req(0x0102_0304_0506_0708, 3);
        assert_eq!(&cmd[..8], &[0; 8]);
        assert_eq!(
            u64::from_ne_bytes(cmd[8..16].try_into().unwrap()),
            0x0102_0304_0506_0708
        );
        assert_eq!(u16::from_ne_bytes(cmd[16..18].try_into().unwrap()), 3);
        assert!(cmd[18..].iter().all(|&b| b == 0));
        assert_eq!(uring::OP_IN + uring::OP_IN_LEN + 32, uring::HEADER_LEN);
        assert_eq!(uring::COMMIT_ID, uring::OP_IN + uring::OP_IN_LEN + 8);
    }

    #[test]
    fn short_input_is_malformed_not_a_panic() {
        assert_eq!(InHeader::parse(&[0; 39]), Err(Malformed));
        let mut args = Args::new(&[1, 2, 3]);
        assert_eq!(args.u32(), Err(Malformed));
        assert_eq!(args.bytes(4), Err(Malformed));
        assert_eq!(args.bytes(3).unwrap(), &[1, 2, 3]);
    }

    #[test]
    fn a_name_needs_its_nul() {
        let mut args = Args::new(b"a\0bc");
        assert_eq!(args.name().unwrap(), "a");
        assert_eq!(args.name(), Err(Malformed));
    }

    #[test]
    fn padding_rounds_to_eight() {
        let mut out = Out::default();
        out.raw(b"abc").pad8();
        assert_eq!(out.len(), 8);
        out.pad8();
        assert_eq!(out.len(), 8);
    }

    #[test]
    fn the_out_header_counts_itself() {
        let header = out_header(24, -2, 9);
        assert_eq!(u32::from_ne_bytes(header[0..4].try_into().unwrap()), 40);
        assert_eq!(i32::from_ne_bytes(header[4..8].try_into().unwrap()), -2);
        assert_eq!(u64::from_ne_bytes(header[8..16].try_into().unwrap()), 9);
    }
}
