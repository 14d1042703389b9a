//! File handles (`name_to_handle_at(2)`, `open_by_handle_at(2)`): an inode named without a
//! descriptor held open, reopened later.

use super::cvt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

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
