//! Open files: open and create, read, write, truncate, fsync, fallocate. File keys are loaded
//! once per open file (shared by its handles); content goes through [`super::content`].

use super::attr::{Attr, Caller, DirEntry};
use super::content::{self, ContentError, FileState};
use super::inode::Inode;
use super::keys::KeyError;
use super::{CryptFs, FsError, FsResult};
use crate::format::{BLOCK_PLAIN_LEN, FileCipher, FormatError};
use crate::sys;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsFd;
use std::sync::{Arc, PoisonError};

/// An open handle.
pub enum Handle {
    /// An open regular file.
    File {
        /// Its inode (keeps the node alive while open).
        inode: Arc<Inode>,
        /// The backing file, opened read-write whenever the handle may write.
        file: File,
        /// State shared with the file's other handles.
        state: Arc<FileState>,
    },
    /// An open directory with its entries.
    Dir {
        /// Its inode.
        inode: Arc<Inode>,
        /// Entries read at opendir.
        entries: Vec<DirEntry>,
    },
}

/// Flags the backing open keeps: the rest (`O_APPEND`, `O_TRUNC`, `O_DIRECT`, ...) are the
/// mount's business, since positions and sizes differ on disk.
const KEPT_FLAGS: i32 = libc::O_SYNC | libc::O_DSYNC | libc::O_NOATIME;

fn backing_flags(flags: i32) -> i32 {
    let access = if flags & libc::O_ACCMODE == libc::O_RDONLY {
        libc::O_RDONLY
    } else {
        // Partial blocks need read-modify-write, so a writer also reads.
        libc::O_RDWR
    };
    access | (flags & KEPT_FLAGS)
}

impl CryptFs {
    /// Logs a content failure once, naming the file and block, and maps it to an errno.
    fn content_error(&self, inode: &Inode, state: &FileState, err: ContentError) -> FsError {
        match err {
            ContentError::Io(e) => FsError::from(e),
            ContentError::Corrupt(FormatError::BlockAuth(block)) => {
                if state.first_report(block) {
                    tracing::error!(path = %inode.backing_path(), block, "block authentication failed: reading it gives EIO");
                }
                FsError(libc::EIO)
            }
            ContentError::Corrupt(e) => {
                tracing::error!(path = %inode.backing_path(), "corrupt file: {e}");
                FsError(libc::EIO)
            }
        }
    }

    fn key_error(&self, inode: &Inode, err: KeyError) -> FsError {
        match err {
            KeyError::Io(e) => FsError::from(e),
            KeyError::Corrupt(e) => {
                tracing::error!(path = %inode.backing_path(), block = "header", "header rejected: {e}");
                FsError(libc::EIO)
            }
            KeyError::Kms(e) => {
                tracing::error!(path = %inode.backing_path(), "cannot unwrap the file key: {e}");
                FsError(libc::EIO)
            }
        }
    }

    /// The file's cipher, loading its header when the file has one and it is not loaded yet.
    /// Called with the state's write lock held or before the handle is shared.
    fn load_cipher(
        &self,
        inode: &Inode,
        file: &File,
        slot: &mut Option<Arc<FileCipher>>,
    ) -> FsResult<()> {
        if slot.is_some() {
            return Ok(());
        }
        let len = file.metadata()?.len();
        if len == 0 {
            return Ok(());
        }
        let cipher = self
            .keys
            .open_header(file)
            .map_err(|e| self.key_error(inode, e))?;
        *slot = Some(cipher);
        Ok(())
    }

    fn open_inode(&self, inode: Arc<Inode>, file: File, flags: i32) -> FsResult<u64> {
        let state = inode.file_state();
        {
            let mut cipher = state.cipher.write().unwrap_or_else(PoisonError::into_inner);
            if flags & libc::O_TRUNC != 0 && flags & libc::O_ACCMODE != libc::O_RDONLY {
                content::make_empty(&file)?;
                *cipher = None;
            } else if cipher.is_some() && file.metadata()?.len() == 0 {
                // Emptied behind our back (e.g. truncated in the cipher directory).
                *cipher = None;
            }
            self.load_cipher(&inode, &file, &mut cipher)?;
        }
        Ok(self.add_handle(Handle::File { inode, file, state }))
    }

    /// Opens regular file `ino` with open(2) `flags`; unwraps its DEK (cache, else KMS).
    pub fn open(&self, ino: u64, flags: i32) -> FsResult<u64> {
        let inode = self.inodes.get(ino)?;
        if !inode.is_file() {
            return Err(FsError(libc::EINVAL));
        }
        let fd = sys::open_path(&inode.proc_path()?, backing_flags(flags), 0)?;
        self.open_inode(inode, File::from(fd), flags)
    }

    /// Creates and opens regular file `name` in `parent`.
    pub fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        caller: Caller,
    ) -> FsResult<(Attr, u64)> {
        let parent_inode = self.inodes.get(parent)?;
        let cname = Self::name(&parent_inode, name, libc::EPERM)?;
        let create_flags =
            backing_flags(flags) | libc::O_CREAT | libc::O_NOFOLLOW | (flags & libc::O_EXCL);
        let fd = sys::openat(
            parent_inode.fd()?.as_fd(),
            &cname,
            create_flags,
            mode & !umask & 0o7777,
        )?;
        let attr = self.made(&parent_inode, &cname, caller)?;
        let inode = self.inodes.get(attr.ino)?;
        let fh = self.open_inode(inode, File::from(fd), flags)?;
        Ok((attr, fh))
    }

    fn file_handle(&self, fh: u64) -> FsResult<Arc<Handle>> {
        let handle = self.handle(fh)?;
        match &*handle {
            Handle::File { .. } => Ok(handle),
            Handle::Dir { .. } => Err(FsError(libc::EISDIR)),
        }
    }

    /// Reads up to `size` bytes at `offset`.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        self.read_with(fh, offset, size, <[u8]>::to_vec)
    }

    /// Reads up to `size` bytes at `offset` and hands them to `f` straight from the request
    /// thread's buffer (the FUSE reply copies them from there).
    pub fn read_with<R>(
        &self,
        fh: u64,
        offset: u64,
        size: u32,
        f: impl FnOnce(&[u8]) -> R,
    ) -> FsResult<R> {
        let handle = self.file_handle(fh)?;
        let Handle::File { inode, file, state } = &*handle else {
            return Err(FsError(libc::EBADF));
        };
        loop {
            let guard = state.cipher.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(cipher) = &*guard {
                return content::with_buffer(|buf| {
                    let range = content::read_into(file, cipher, offset, size, buf)
                        .map_err(|e| self.content_error(inode, state, e))?;
                    Ok(f(&buf[range]))
                });
            }
            drop(guard);
            let mut slot = state.cipher.write().unwrap_or_else(PoisonError::into_inner);
            self.load_cipher(inode, file, &mut slot)?;
            if slot.is_none() {
                return Ok(f(&[]));
            }
        }
    }

    /// Writes `data` at `offset`; creates the file's DEK and header on its first write. A
    /// block-aligned write is sealed before the file's lock is taken.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let handle = self.file_handle(fh)?;
        let Handle::File { inode, file, state } = &*handle else {
            return Err(FsError(libc::EBADF));
        };
        let aligned = offset.is_multiple_of(BLOCK_PLAIN_LEN)
            && (data.len() as u64).is_multiple_of(BLOCK_PLAIN_LEN);
        content::with_buffer(|buf| {
            buf.clear();
            let mut sealed_with = None;
            if aligned {
                let loaded = state
                    .cipher
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                if let Some(cipher) = loaded {
                    content::seal_blocks(&cipher, offset / BLOCK_PLAIN_LEN, data, buf);
                    sealed_with = Some(cipher);
                }
            }
            let mut slot = state.cipher.write().unwrap_or_else(PoisonError::into_inner);
            let cipher = self.cipher_for_writing(inode, file, &mut slot)?;
            let result = match sealed_with {
                // Sealed under the DEK still in use (the file was not emptied and recreated
                // with a new one meanwhile).
                Some(sealed_with) if Arc::ptr_eq(&sealed_with, &cipher) => {
                    content::write_sealed(file, &cipher, offset / BLOCK_PLAIN_LEN, buf)
                }
                _ => content::write(file, &cipher, offset, data, buf),
            };
            result.map_err(|e| self.content_error(inode, state, e))?;
            Ok(data.len() as u32)
        })
    }

    /// The cipher to write with: the loaded one, the one in the header, or a new DEK and header
    /// for an empty file.
    fn cipher_for_writing(
        &self,
        inode: &Inode,
        file: &File,
        slot: &mut Option<Arc<FileCipher>>,
    ) -> FsResult<Arc<FileCipher>> {
        if slot.is_some() && file.metadata()?.len() == 0 {
            *slot = None;
        }
        self.load_cipher(inode, file, slot)?;
        if let Some(cipher) = slot {
            return Ok(cipher.clone());
        }
        let cipher = self
            .keys
            .create_header(file)
            .map_err(|e| self.key_error(inode, e))?;
        *slot = Some(cipher.clone());
        Ok(cipher)
    }

    /// Sets the size of regular file `inode`, through handle `fh` when given.
    pub(super) fn truncate(&self, inode: &Arc<Inode>, size: u64, fh: Option<u64>) -> FsResult<()> {
        if !inode.is_file() {
            return Err(FsError(libc::EISDIR));
        }
        let opened;
        let handle;
        let (file, state) = match fh.map(|fh| self.file_handle(fh)).transpose()? {
            Some(h) => {
                handle = h;
                match &*handle {
                    Handle::File { file, state, .. } => (file, state.clone()),
                    Handle::Dir { .. } => return Err(FsError(libc::EISDIR)),
                }
            }
            None => {
                opened = File::from(sys::open_path(&inode.proc_path()?, libc::O_RDWR, 0)?);
                (&opened, inode.file_state())
            }
        };
        let mut slot = state.cipher.write().unwrap_or_else(PoisonError::into_inner);
        if size == 0 {
            content::make_empty(file)?;
            *slot = None;
            return Ok(());
        }
        let cipher = self.cipher_for_writing(inode, file, &mut slot)?;
        content::truncate(file, Some(&cipher), size)
            .map_err(|e| self.content_error(inode, &state, e))
    }

    /// `fallocate` mode 0: the range reads as zeros and the size covers it; other modes are
    /// not supported.
    pub fn fallocate(&self, fh: u64, offset: u64, length: u64, mode: i32) -> FsResult<()> {
        if mode != 0 {
            return Err(FsError(libc::EOPNOTSUPP));
        }
        let handle = self.file_handle(fh)?;
        let Handle::File { inode, file, state } = &*handle else {
            return Err(FsError(libc::EBADF));
        };
        let end = offset.checked_add(length).ok_or(FsError(libc::EFBIG))?;
        let mut slot = state.cipher.write().unwrap_or_else(PoisonError::into_inner);
        let cipher = self.cipher_for_writing(inode, file, &mut slot)?;
        let plain = content::plain_len(file).map_err(|e| self.content_error(inode, state, e))?;
        if end > plain {
            content::truncate(file, Some(&cipher), end)
                .map_err(|e| self.content_error(inode, state, e))?;
        }
        let first = crate::format::block_cipher_offset(offset / crate::format::BLOCK_PLAIN_LEN);
        let last = crate::format::cipher_size(end.max(plain));
        Ok(sys::fallocate(file.as_fd(), first, last - first)?)
    }

    /// Syncs the backing file.
    pub fn fsync(&self, fh: u64, datasync: bool) -> FsResult<()> {
        let handle = self.file_handle(fh)?;
        let Handle::File { file, .. } = &*handle else {
            return Err(FsError(libc::EBADF));
        };
        if datasync {
            file.sync_data()?;
        } else {
            file.sync_all()?;
        }
        Ok(())
    }

    /// Closes a file handle.
    pub fn release(&self, fh: u64) {
        self.remove_handle(fh);
    }
}
