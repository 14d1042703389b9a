//! The system calls of the random-operation tools that neither std nor `kmsfs::sys` wraps:
//! `mmap`/`msync`/`munmap`, `fallocate` with a mode, `copy_file_range`, `truncate` and `posix_fadvise`. The only module of
//! these tests with `unsafe`; every block states why it is sound.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// The size of a memory page, the alignment of a mapping's file offset.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no memory arguments.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).expect("BUG: the page size is positive")
}

fn off_t(value: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(value).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))
}

/// `fallocate(2)` with `mode` (0, `FALLOC_FL_KEEP_SIZE`, `FALLOC_FL_PUNCH_HOLE | ...`, ...).
pub fn fallocate(file: &File, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
    let (offset, len) = (off_t(offset)?, off_t(len)?);
    // SAFETY: valid descriptor; the kernel checks the range and the mode.
    let ret = unsafe { libc::fallocate(file.as_raw_fd(), mode, offset, len) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `copy_file_range(2)` of `len` bytes from `src` at `src_off` to `dst` at `dst_off`; returns
/// how many bytes were copied (short at the source's end of file).
pub fn copy_file_range(
    src: &File,
    src_off: u64,
    dst: &File,
    dst_off: u64,
    len: usize,
) -> io::Result<usize> {
    let (mut src_off, mut dst_off) = (off_t(src_off)?, off_t(dst_off)?);
    // SAFETY: valid descriptors; the offsets are live locals the kernel updates.
    let ret = unsafe {
        libc::copy_file_range(
            src.as_raw_fd(),
            &mut src_off,
            dst.as_raw_fd(),
            &mut dst_off,
            len,
            0,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret as usize)
}

/// `truncate(2)` of `path` to `len` bytes.
pub fn truncate(path: &Path, len: u64) -> io::Result<()> {
    let path = kmsfs::sys::cstr(path.as_os_str())?;
    // SAFETY: a NUL-terminated path; the kernel checks the length.
    let ret = unsafe { libc::truncate(path.as_ptr(), off_t(len)?) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `posix_fadvise(2)` of the whole file with `POSIX_FADV_DONTNEED`: its clean cached pages are
/// dropped, so the next reads reach the filesystem (through FUSE: the daemon).
pub fn drop_cached_pages(file: &File) -> io::Result<()> {
    // SAFETY: valid descriptor; no memory arguments.
    let ret = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if ret != 0 {
        return Err(io::Error::from_raw_os_error(ret));
    }
    Ok(())
}

/// A shared mapping of part of a file (`MAP_SHARED`), unmapped on drop. The caller keeps every
/// byte it touches inside the file's size rounded up to a page (past that, access is SIGBUS),
/// and nothing else writes the file while it is mapped.
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes of `file` from `offset` (a multiple of [`page_size`]), read-only or
    /// read-write.
    pub fn new(file: &File, offset: u64, len: usize, writable: bool) -> io::Result<Mapping> {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a fresh mapping chosen by the kernel (null hint), of a valid descriptor; the
        // kernel checks the length and the offset's alignment.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                off_t(offset)?,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` is a live mapping of `len` readable bytes until drop; no other writer
        // of the file runs meanwhile (the type's contract), so the bytes do not change under
        // the borrow.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The mapped bytes, writable (the mapping must be writable).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` makes this the only borrow.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// `msync(2)` of the whole mapping with `flags` (`MS_SYNC`, `MS_ASYNC`, `MS_INVALIDATE`).
    pub fn sync(&self, flags: libc::c_int) -> io::Result<()> {
        // SAFETY: the range is exactly this live mapping.
        let ret = unsafe { libc::msync(self.ptr.cast(), self.len, flags) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the range is exactly this mapping, and no borrow of it outlives `self`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
