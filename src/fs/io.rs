//! Open files: open and create, read, write, truncate, fsync, fallocate. File keys are loaded
//! once per open file (shared by its handles); content goes through [`super::content`].

use super::attr::{Attr, Caller};
use super::content::{self, ContentError, FileState};
use super::inode::Inode;
use super::keys::KeyError;
use super::{CryptFs, FsError, FsResult};
use crate::format::{
    BLOCK_PLAIN_LEN, CipherExtent, FileCipher, FormatError, block_cipher_offset, cipher_size,
};
use crate::sys;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};

/// An open handle.
pub enum Handle {
    /// An open regular file.
    File(OpenFile),
    /// An open directory.
    Dir {
        /// Its inode.
        inode: Arc<Inode>,
        /// The backing directory, read at each `readdir`.
        stream: std::sync::Mutex<super::dirs::DirStream>,
    },
}

/// A regular file just opened: its handle, and what the kernel must know of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// The handle.
    pub fh: u64,
    /// The file ends in a torn block (see [`content::read_into`]). Its size leaves the torn
    /// block out, and the kernel answers a read at the end of a file from its page cache
    /// without asking the daemon: reads through this handle must bypass that cache
    /// (`FOPEN_DIRECT_IO`) for a read there to answer EIO.
    pub torn: bool,
}

/// An open regular file.
pub struct OpenFile {
    /// Its inode (keeps the node alive while open).
    inode: Arc<Inode>,
    /// The backing file, opened read-write whenever the handle may write.
    file: File,
    /// State shared with the file's other handles.
    state: Arc<FileState>,
    /// The backing file is open `O_NOATIME` until the first read the caller asks for, so that
    /// the daemon's own reads (the header, blocks it rewrites) never move the access time; the
    /// caller's reads then do, by the backing filesystem's rule.
    quiet_until_read: AtomicBool,
}

impl Handle {
    /// The open regular file; EISDIR for a directory.
    fn as_file(&self) -> FsResult<&OpenFile> {
        match self {
            Handle::File(open) => Ok(open),
            Handle::Dir { .. } => Err(FsError(libc::EISDIR)),
        }
    }
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
    access | (flags & KEPT_FLAGS) | libc::O_NOATIME
}

/// Moves the access time of backing file `file` (open `O_NOATIME`) as a read would, by the
/// backing filesystem's rule (`relatime`, ...), with a one-byte read of the header.
fn touch_access_time(file: &File) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    sys::set_noatime(file.as_fd(), false)?;
    let read = file.read_at(&mut [0u8; 1], 0);
    sys::set_noatime(file.as_fd(), true)?;
    read.map(drop)
}

/// Opens a backing file by its `/proc` path with `flags`; without `O_NOATIME` where it is not
/// allowed (a file of another user, for a daemon that is not root).
fn open_backing(path: &std::ffi::CStr, flags: i32) -> FsResult<File> {
    match sys::open_path(path, flags, 0) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && flags & libc::O_NOATIME != 0 => Ok(
            File::from(sys::open_path(path, flags & !libc::O_NOATIME, 0)?),
        ),
        result => Ok(File::from(result?)),
    }
}

/// What the filesystem was doing with a file's key when the KMS failed.
#[derive(Debug, Clone, Copy)]
pub(super) enum KeyStep {
    /// Unwrapping the DEK of an existing file.
    Unwrap,
    /// Making the DEK of a new file (its first write).
    Make,
}

impl CryptFs {
    /// Logs a content failure once, naming the file and block, and maps it to an errno.
    pub(super) fn content_error(
        &self,
        inode: &Inode,
        state: &FileState,
        err: ContentError,
    ) -> FsError {
        match err {
            ContentError::Io(e) => FsError::from(e),
            ContentError::Corrupt(FormatError::BlockAuth(block)) => {
                if state.first_report(block) {
                    tracing::error!(path = %inode.backing_path(), block, "block authentication failed: reading it gives EIO");
                }
                FsError(libc::EIO)
            }
            ContentError::Corrupt(
                e @ (FormatError::EndNotSealedLast(block) | FormatError::LastBlockInside(block)),
            ) => {
                if state.first_report(block) {
                    tracing::error!(path = %inode.backing_path(), block, "{e}; reading it gives EIO");
                }
                FsError(libc::EIO)
            }
            ContentError::Corrupt(FormatError::TornBlock { index, len }) => {
                if state.first_report(index) {
                    tracing::error!(path = %inode.backing_path(), block = index, torn_bytes = len, "torn tail: the last block has fewer bytes than a block holds; reading it gives EIO, the blocks before it read");
                }
                FsError(libc::EIO)
            }
            ContentError::Corrupt(e) => {
                tracing::error!(path = %inode.backing_path(), "corrupt file: {e}");
                FsError(libc::EIO)
            }
        }
    }

    /// The errno for key failure `err` of file `inode`, logged in one line. The KMS's own
    /// failures say whether the file's key was being unwrapped (an existing file) or made (the
    /// first write of a new file).
    pub(super) fn key_error(&self, inode: &Inode, err: KeyError) -> FsError {
        self.key_error_in(inode, KeyStep::Unwrap, err)
    }

    /// As [`CryptFs::key_error`], for key step `step`.
    pub(super) fn key_error_in(&self, inode: &Inode, step: KeyStep, err: KeyError) -> FsError {
        match err {
            KeyError::Io(e) => FsError::from(e),
            e @ (KeyError::Corrupt(_) | KeyError::Refused(_)) => {
                tracing::error!(path = %inode.backing_path(), block = "header", "header rejected: {e}");
                FsError(libc::EIO)
            }
            KeyError::Kms(e) => {
                let doing = match step {
                    KeyStep::Unwrap => "cannot unwrap the file key",
                    KeyStep::Make => "cannot make a key for the new file",
                };
                tracing::error!(path = %inode.backing_path(), "{doing}: {e}");
                FsError(libc::EIO)
            }
        }
    }

    /// The file's cipher, loading its header when the file has one and it is not loaded yet.
    /// `len` is the backing file's length, as the caller just read it. Called with the state's
    /// write lock held or before the handle is shared.
    fn load_cipher(
        &self,
        inode: &Inode,
        file: &File,
        slot: &mut Option<Arc<FileCipher>>,
        len: u64,
    ) -> FsResult<()> {
        if slot.is_some() || len == 0 {
            return Ok(());
        }
        let cipher = self
            .keys
            .open_header(file)
            .map_err(|e| self.key_error(inode, e))?;
        inode.file_state().seals.loaded(&cipher);
        *slot = Some(cipher);
        Ok(())
    }

    fn open_inode(&self, inode: Arc<Inode>, file: File, flags: i32) -> FsResult<Opened> {
        let state = inode.file_state();
        let len;
        {
            let mut cipher = state.cipher.write().unwrap_or_else(PoisonError::into_inner);
            if flags & libc::O_TRUNC != 0 && flags & libc::O_ACCMODE != libc::O_RDONLY {
                content::make_empty(&file)?;
                *cipher = None;
            }
            len = file.metadata()?.len();
            if len == 0 {
                // Empty, or emptied behind our back (e.g. truncated in the cipher directory).
                *cipher = None;
            }
            self.load_cipher(&inode, &file, &mut cipher, len)?;
        }
        let torn = CipherExtent::of(len).is_ok_and(|extent| extent.torn_len > 0);
        let quiet = flags & libc::O_NOATIME == 0;
        if quiet && flags & libc::O_ACCMODE != libc::O_WRONLY && flags & libc::O_TRUNC == 0 {
            // Opening to read counts as reading, for the access time: reads the kernel serves
            // from its page cache never reach the daemon, and a file opened to be read is
            // read. Best effort: a failure only leaves the access time where it is.
            let _ = touch_access_time(&file);
        }
        let fh = self.add_handle(Handle::File(OpenFile {
            inode,
            file,
            state,
            quiet_until_read: AtomicBool::new(quiet),
        }));
        Ok(Opened { fh, torn })
    }

    /// Opens regular file `ino` with open(2) `flags`; unwraps its DEK (cache, else KMS).
    pub fn open(&self, ino: u64, flags: i32) -> FsResult<u64> {
        self.open_file(ino, flags).map(|opened| opened.fh)
    }

    /// Like [`CryptFs::open`], saying also whether the file ends in a torn block.
    pub fn open_file(&self, ino: u64, flags: i32) -> FsResult<Opened> {
        let inode = self.inodes.get(ino)?;
        if !inode.is_file() {
            return Err(FsError(libc::EINVAL));
        }
        let file = open_backing(&inode.proc_path()?, backing_flags(flags))?;
        self.open_inode(inode, file, flags)
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
        let disk = self.disk_name(&parent_inode, name, libc::EPERM)?;
        let create_flags =
            backing_flags(flags) | libc::O_CREAT | libc::O_NOFOLLOW | (flags & libc::O_EXCL);
        let dir = parent_inode.fd()?;
        let fd = self.making(&parent_inode, &disk, || {
            super::names::with_umask(umask, mode & 0o7777, |mode| {
                sys::openat(dir.as_fd(), &disk.name, create_flags, mode)
            })
        })?;
        let attr = self.made(&parent_inode, &disk.name, caller)?;
        let inode = self.inodes.get(attr.ino)?;
        let opened = self.open_inode(inode, File::from(fd), flags)?;
        Ok((attr, opened.fh))
    }

    /// Creates and opens a regular file with no name in directory `parent` (`O_TMPFILE`). A
    /// link gives it a name later, unless `flags` has `O_EXCL`; closed without one, it is gone.
    pub fn tmpfile(
        &self,
        parent: u64,
        mode: u32,
        umask: u32,
        flags: i32,
        caller: Caller,
    ) -> FsResult<(Attr, u64)> {
        let parent_inode = self.inodes.get(parent)?;
        let tmp_flags = backing_flags(flags) | libc::O_TMPFILE | (flags & libc::O_EXCL);
        let dir = parent_inode.fd()?;
        let fd = super::names::with_umask(umask, mode & 0o7777, |mode| {
            sys::openat(dir.as_fd(), c".", tmp_flags, mode)
        })?;
        let (inode, attr) = self.made_unnamed(&parent_inode, fd.as_fd(), caller)?;
        let opened = self.open_inode(inode, File::from(fd), flags)?;
        Ok((attr, opened.fh))
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
        let handle = self.handle(fh)?;
        let OpenFile {
            inode,
            file,
            state,
            quiet_until_read,
        } = handle.as_file()?;
        if quiet_until_read.swap(false, Ordering::Relaxed) {
            // Best effort: a failure only leaves the access time where it is.
            let _ = sys::set_noatime(file.as_fd(), false);
        }
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
            let len = file.metadata()?.len();
            self.load_cipher(inode, file, &mut slot, len)?;
            if slot.is_none() {
                return Ok(f(&[]));
            }
        }
    }

    /// Writes `data` at `offset`; creates the file's DEK and header on its first write. A
    /// block-aligned write is sealed before the file's lock is taken.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let handle = self.handle(fh)?;
        let OpenFile {
            inode, file, state, ..
        } = handle.as_file()?;
        let aligned = offset.is_multiple_of(BLOCK_PLAIN_LEN)
            && (data.len() as u64).is_multiple_of(BLOCK_PLAIN_LEN);
        // The blocks this write may seal: those it touches, and the old last block.
        let seals =
            (offset + data.len() as u64).div_ceil(BLOCK_PLAIN_LEN) - offset / BLOCK_PLAIN_LEN + 1;
        content::with_buffer(|buf| {
            buf.clear();
            let mut sealed_with = None;
            if aligned {
                let loaded = state
                    .cipher
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                if let Some(cipher) = loaded.filter(|c| self.may_seal_ahead(state, c, seals)) {
                    content::seal_blocks(&cipher, offset / BLOCK_PLAIN_LEN, data, buf);
                    sealed_with = Some(cipher);
                }
            }
            let mut slot = state.cipher.write().unwrap_or_else(PoisonError::into_inner);
            self.cipher_for_writing(inode, file, state, &mut slot)?;
            let cipher = self.reserve_seals(inode, file, state, &mut slot, seals)?;
            let result = match sealed_with {
                // Sealed under the content key still in use (the file was not emptied and
                // recreated with a new DEK, nor re-keyed, meanwhile).
                Some(sealed_with) if sealed_with.seals_like(&cipher) => {
                    content::write_sealed(file, &cipher, offset / BLOCK_PLAIN_LEN, data, buf)
                }
                _ => content::write(file, &cipher, offset, data, buf),
            };
            result.map_err(|e| self.content_error(inode, state, e))?;
            Ok(data.len() as u32)
        })
    }

    /// The cipher to write with: the loaded one, the one in the header, or a new DEK and header
    /// for an empty file. Mends the end of the file first ([`Self::mend_end`]).
    fn cipher_for_writing(
        &self,
        inode: &Inode,
        file: &File,
        state: &FileState,
        slot: &mut Option<Arc<FileCipher>>,
    ) -> FsResult<Arc<FileCipher>> {
        let len = file.metadata()?.len();
        if len == 0 {
            *slot = None;
        }
        self.load_cipher(inode, file, slot, len)?;
        if let Some(cipher) = slot.clone() {
            self.mend_end(inode, file, state, &cipher)?;
            if cipher.is_rekeying() {
                // A re-key a crash cut short: finished before anything else is sealed.
                return self.finish_rekey(inode, file, state, slot);
            }
            return Ok(cipher);
        }
        let cipher = self
            .keys
            .create_header(file, self.budget.step())
            .map_err(|e| self.key_error_in(inode, KeyStep::Make, e))?;
        state.seals.fresh(&cipher);
        *slot = Some(cipher.clone());
        Ok(cipher)
    }

    /// Before a change of a file's content or size: mends the damage a crash leaves at its
    /// end, with one log line each: cuts a torn tail, and (header version 2, checked once while
    /// the file is loaded) re-seals a last block that is whole but sealed as an inner block.
    ///
    /// Why mend rather than refuse: the torn bytes (1 to 28, after the complete blocks) hold
    /// nothing that could ever be authenticated, and a last block sealed as an inner one holds
    /// authentic plaintext that reads give EIO for only because of its place; reads already show
    /// the file as its complete blocks, which the mend keeps, so it loses nothing a reader could
    /// get. The file is then a valid one of that size, and the change applies to it as the
    /// kernel sees it (an append lands right after the complete blocks). Refusing would leave
    /// every writer of a file cut short by a crash (a log, a database) failing with EIO until an
    /// unmount and a `kmsfs fsck --repair`, which mends exactly the same way. Called with the
    /// file's lock held exclusively.
    fn mend_end(
        &self,
        inode: &Inode,
        file: &File,
        state: &FileState,
        cipher: &FileCipher,
    ) -> FsResult<()> {
        let mended =
            content::mend_end(file, cipher, state.first_change()).map_err(|e| match e {
                ContentError::Io(e) => FsError::from(e),
                ContentError::Corrupt(e) => {
                    tracing::error!(path = %inode.backing_path(), "corrupt file: {e}");
                    FsError(libc::EIO)
                }
            })?;
        if let Some(torn) = mended.torn {
            tracing::warn!(
                path = %inode.backing_path(),
                block = torn.plain_size / BLOCK_PLAIN_LEN,
                torn_bytes = torn.torn_len,
                "torn tail cut before a write: the file now ends with its last complete block"
            );
        }
        if let Some(block) = mended.resealed {
            tracing::warn!(
                path = %inode.backing_path(),
                block,
                "the file ended in a block not sealed as its last (a crash cut it short): re-sealed as the last before a write"
            );
        }
        Ok(())
    }

    /// Sets the size of regular file `inode`, through handle `fh` when given.
    pub(super) fn truncate(&self, inode: &Arc<Inode>, size: u64, fh: Option<u64>) -> FsResult<()> {
        if !inode.is_file() {
            return Err(FsError(libc::EISDIR));
        }
        let opened;
        let handle;
        let (file, state) = match fh.map(|fh| self.handle(fh)).transpose()? {
            Some(h) => {
                handle = h;
                let open = handle.as_file()?;
                (&open.file, open.state.clone())
            }
            None => {
                opened = open_backing(&inode.proc_path()?, libc::O_RDWR | libc::O_NOATIME)?;
                (&opened, inode.file_state())
            }
        };
        let mut slot = state.cipher.write().unwrap_or_else(PoisonError::into_inner);
        if size == 0 {
            content::make_empty(file)?;
            *slot = None;
            return Ok(());
        }
        self.cipher_for_writing(inode, file, &state, &mut slot)?;
        let cipher = self.reserve_seals(inode, file, &state, &mut slot, TRUNCATE_SEALS)?;
        content::truncate(file, &cipher, size).map_err(|e| self.content_error(inode, &state, e))
    }

    /// `fallocate(2)` for `caller`:
    /// - mode 0: the range reads as zeros, the size covers it, its blocks are allocated;
    /// - `FALLOC_FL_KEEP_SIZE`: the range's blocks are allocated, nothing else changes;
    /// - `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`: the range reads as zeros; whole blocks
    ///   become holes on the backing file (their space is freed), partly covered ones are
    ///   rewritten with zeros;
    /// - `FALLOC_FL_ZERO_RANGE` (with or without `KEEP_SIZE`): the range reads as zeros and
    ///   stays allocated; without `KEEP_SIZE` the size covers it.
    ///
    /// Collapsing and inserting ranges would move blocks, whose index is sealed into them:
    /// EOPNOTSUPP. Like a write, it clears set-user-id and set-group-id as the kernel does.
    pub fn fallocate(
        &self,
        fh: u64,
        offset: u64,
        length: u64,
        mode: i32,
        caller: Caller,
    ) -> FsResult<()> {
        const KEEP: i32 = libc::FALLOC_FL_KEEP_SIZE;
        const PUNCH: i32 = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        const ZERO: i32 = libc::FALLOC_FL_ZERO_RANGE;
        const ZERO_KEEP: i32 = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;
        if ![0, KEEP, PUNCH, ZERO, ZERO_KEEP].contains(&mode) {
            return Err(FsError(libc::EOPNOTSUPP));
        }
        let handle = self.handle(fh)?;
        let OpenFile {
            inode, file, state, ..
        } = handle.as_file()?;
        let end = offset.checked_add(length).ok_or(FsError(libc::EFBIG))?;
        let mut slot = state.cipher.write().unwrap_or_else(PoisonError::into_inner);
        if file.metadata()?.len() > 0 {
            // Loads the cipher and mends the end of the file.
            self.cipher_for_writing(inode, file, state, &mut slot)?;
            self.reserve_seals(inode, file, state, &mut slot, FALLOCATE_SEALS)?;
        }
        let plain = content::plain_len(file).map_err(|e| self.content_error(inode, state, e))?;
        let grows = mode & KEEP == 0 && end > plain;
        if grows {
            self.cipher_for_writing(inode, file, state, &mut slot)?;
            let cipher = self.reserve_seals(inode, file, state, &mut slot, TRUNCATE_SEALS)?;
            content::truncate(file, &cipher, end)
                .map_err(|e| self.content_error(inode, state, e))?;
        }
        let first_block = offset / BLOCK_PLAIN_LEN;
        let last_block = end.div_ceil(BLOCK_PLAIN_LEN);
        let cipher_range = |size: u64| {
            let from = block_cipher_offset(first_block);
            let to = block_cipher_offset(last_block).min(cipher_size(size).max(from));
            (from, to - from)
        };
        match mode {
            0 | KEEP => {
                // Allocation only: blocks never written stay holes, which read as zeros.
                let from = block_cipher_offset(first_block);
                let to = block_cipher_offset(last_block);
                sys::fallocate_mode(file.as_fd(), KEEP, from, to - from)?;
            }
            _ => {
                // Zero what the file holds of the range; past its old end it is zeros already.
                let zero_end = end.min(plain);
                if offset < zero_end {
                    let cipher = slot.clone().ok_or(FsError(libc::EIO))?;
                    let backing_mode = if mode == PUNCH { PUNCH } else { ZERO_KEEP };
                    content::zero_range(file, &cipher, offset, zero_end, |from, len| {
                        sys::fallocate_mode(file.as_fd(), backing_mode, from, len)
                    })
                    .map_err(|e| self.content_error(inode, state, e))?;
                }
                if mode != PUNCH {
                    let new_size = content::plain_len(file)
                        .map_err(|e| self.content_error(inode, state, e))?;
                    let (from, len) = cipher_range(new_size);
                    if len > 0 {
                        sys::fallocate_mode(file.as_fd(), KEEP, from, len)?;
                    }
                }
            }
        }
        drop(slot);
        self.kill_privileges(inode, caller)
    }

    /// Clears set-user-id and set-group-id of regular file `inode` after `caller` modified it,
    /// where the kernel's rule says so.
    pub(super) fn kill_privileges(&self, inode: &Inode, caller: Caller) -> FsResult<()> {
        let st = sys::fstat(inode.fd()?.as_fd())?;
        if let Some(mode) = super::creds::mode_after_modification(caller, st.st_mode, st.st_gid) {
            sys::chmod_path(&inode.proc_path()?, mode)?;
        }
        Ok(())
    }

    /// Clears set-user-id and set-group-id of the file open as `fh` after `caller` wrote to
    /// it, where the kernel's rule says so.
    pub fn kill_privileges_of(&self, fh: u64, caller: Caller) -> FsResult<()> {
        self.kill_privileges(&self.handle(fh)?.as_file()?.inode, caller)
    }

    /// `copy_file_range(2)`: copies up to `len` plaintext bytes from handle `fh_in` at
    /// `offset_in` to handle `fh_out` at `offset_out`, inside the daemon (no round trip per
    /// chunk); returns the bytes copied, fewer at the source's end.
    pub fn copy_file_range(
        &self,
        fh_in: u64,
        offset_in: u64,
        fh_out: u64,
        offset_out: u64,
        len: u64,
        caller: Caller,
    ) -> FsResult<u64> {
        const CHUNK: u64 = 1 << 20;
        let mut copied = 0;
        while copied < len {
            let want = (len - copied).min(CHUNK) as u32;
            let data = self.read(fh_in, offset_in + copied, want)?;
            if data.is_empty() {
                break;
            }
            self.write(fh_out, offset_out + copied, &data)?;
            copied += data.len() as u64;
        }
        if copied > 0 {
            self.kill_privileges_of(fh_out, caller)?;
        }
        Ok(copied)
    }

    /// `lseek(2)` with `SEEK_DATA` or `SEEK_HOLE` from plaintext `offset`. A block is a hole
    /// when its whole cipher block is a hole of the backing file; data may be reported where a
    /// block is all zeros, never a hole where there is data. ENXIO at or past the end.
    pub fn seek(&self, fh: u64, offset: u64, whence: i32) -> FsResult<u64> {
        let handle = self.handle(fh)?;
        let OpenFile {
            inode, file, state, ..
        } = handle.as_file()?;
        let shared = loop {
            let guard = state.cipher.read().unwrap_or_else(PoisonError::into_inner);
            if guard.is_some() || file.metadata()?.len() == 0 {
                break guard;
            }
            drop(guard);
            let mut slot = state.cipher.write().unwrap_or_else(PoisonError::into_inner);
            let len = file.metadata()?.len();
            self.load_cipher(inode, file, &mut slot, len)?;
        };
        let plain = content::extent(file)
            .map_err(|e| self.content_error(inode, state, e))?
            .plain_size;
        if offset >= plain {
            return Err(FsError(libc::ENXIO));
        }
        let cipher_end = cipher_size(plain);
        let blocks = plain.div_ceil(BLOCK_PLAIN_LEN);
        let fd = file.as_fd();
        // The block holding cipher offset `at` (at or after the first block).
        let block_at = |at: u64| (at - block_cipher_offset(0)) / crate::format::BLOCK_CIPHER_LEN;
        let backing_seek = |at: u64, whence: i32| match sys::lseek(fd, at, whence) {
            Ok(pos) => Ok(Some(pos.min(cipher_end))),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
            Err(e) => Err(FsError::from(e)),
        };
        // Cipher blocks straddle the backing filesystem's blocks, so the backing file's holes
        // only point near ours: a block is a hole when all its bytes are zero. The last block of
        // a version 2 file is never a hole: it counts as one when it holds sealed zeros (what
        // growing a file by `truncate` writes).
        let is_hole = |index: u64| {
            let hole =
                content::block_is_hole(file, index, cipher_end).and_then(|hole| match &*shared {
                    Some(cipher) if !hole && cipher.marks_last() && index + 1 == blocks => {
                        content::last_block_is_zeros(file, cipher, plain)
                    }
                    _ => Ok(hole),
                });
            hole.map_err(|e| self.content_error(inode, state, e))
        };
        let mut index = offset / BLOCK_PLAIN_LEN;
        match whence {
            libc::SEEK_DATA => loop {
                if index >= blocks {
                    return Err(FsError(libc::ENXIO));
                }
                let Some(data) = backing_seek(block_cipher_offset(index), libc::SEEK_DATA)? else {
                    return Err(FsError(libc::ENXIO));
                };
                if data >= cipher_end {
                    return Err(FsError(libc::ENXIO));
                }
                index = index.max(block_at(data));
                if !is_hole(index)? {
                    return Ok((index * BLOCK_PLAIN_LEN).max(offset));
                }
                index += 1;
            },
            libc::SEEK_HOLE => loop {
                if index >= blocks {
                    return Ok(plain);
                }
                if is_hole(index)? {
                    return Ok((index * BLOCK_PLAIN_LEN).max(offset));
                }
                // Skip the data the backing file has from here.
                let next = match backing_seek(block_cipher_offset(index), libc::SEEK_HOLE)? {
                    Some(hole) if hole < cipher_end => block_at(hole),
                    _ => blocks,
                };
                index = next.max(index + 1);
            },
            _ => Err(FsError(libc::EINVAL)),
        }
    }

    /// Syncs the backing file.
    pub fn fsync(&self, fh: u64, datasync: bool) -> FsResult<()> {
        let handle = self.handle(fh)?;
        let file = &handle.as_file()?.file;
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

/// Blocks a size change may seal: the old last block, the new one, and one to spare.
const TRUNCATE_SEALS: u64 = 3;
/// Blocks a `fallocate` may seal besides its size change: the partly covered blocks at both
/// ends of a zeroed range, each with the old last block.
const FALLOCATE_SEALS: u64 = 6;
