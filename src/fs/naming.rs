//! Names in the cipher directory: the mount's names as they are (plaintext names), or encrypted
//! (format version 2): each name sealed with the name key and its directory's id, so the same
//! name in two directories has two cipher names and a name moved to another directory does not
//! open. A cipher name too long for the backing filesystem is kept under a short hashed name,
//! with the full cipher name in a side file beside it.
//!
//! Side files belong to names, not to inodes: a side file's content depends only on the
//! directory and the plaintext name, so it is written before a name is made and removed after
//! a name is gone, and a rename or link moves no side file but those of the names involved.

use super::inode::{Inode, ROOT_INO};
use super::{CryptFs, FsError, FsResult, HIDDEN_ROOT_NAMES};
use crate::format::{
    self as cipher_names, DIR_ID_FILE, DIR_ID_TARGET_LEN, DirId, LONG_SIDE_SUFFIX, MAX_PLAIN_NAME,
    MAX_PLAIN_TARGET, NameCipher, NameError,
};
use crate::sys;
use std::borrow::Cow;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// How a cipher directory keeps its names.
pub enum Naming {
    /// As the mount shows them.
    Plain,
    /// Encrypted with this cipher.
    Encrypted(NameCipher),
}

/// A name as it is, or will be, in one backing directory.
pub struct DiskName {
    /// The name in the backing directory.
    pub name: CString,
    /// For a long cipher name: its side file's name and the full cipher name it holds.
    long: Option<(CString, String)>,
}

impl DiskName {
    fn plain(name: CString) -> Self {
        DiskName { name, long: None }
    }
}

/// A directory's id as the mount read or made it, and whether the directory keeps a copy of it
/// in an extended attribute ([`DIR_ID_XATTR`]).
#[derive(Debug, Clone, Copy)]
pub struct KnownDirId {
    /// The id.
    pub id: DirId,
    /// The directory has the copy: its id survives the loss of its id link.
    pub copied: bool,
}

/// Bytes of a directory id.
const DIR_ID_LEN: usize = std::mem::size_of::<DirId>();

/// [`DIR_ID_FILE`] for the system calls.
pub(super) const DIR_ID_FILE_C: &CStr = c"kmsfs.dirid";

/// The longest side file read back: a long cipher name is at most 362 characters.
const SIDE_FILE_MAX: u64 = 4096;

/// Why a name in a cipher directory does not read back as a plaintext name (encrypted names).
#[derive(Debug, thiserror::Error)]
pub enum NameFault {
    /// The directory's id link does not parse.
    #[error("its {DIR_ID_FILE} is damaged: {0}")]
    DirId(NameError),
    /// The directory's id is kept in a regular file, not a symlink: the layout of development
    /// builds before the link (format version 2 was never released with it).
    #[error("its {DIR_ID_FILE} is a regular file, not a symlink (an unreleased layout)")]
    DirIdNotALink,
    /// A long name without its side file.
    #[error("its side file is missing")]
    SideFileMissing,
    /// A long name whose side file holds the full cipher name of another long name, given.
    #[error("its side file holds the cipher name of {0}")]
    SideFileOfAnother(String),
    /// A long name whose side file holds no long cipher name at all.
    #[error("its side file holds no long cipher name")]
    SideFileNotAName,
    /// The cipher name does not decrypt with its directory's id.
    #[error("does not decrypt: {0}")]
    Cipher(NameError),
    /// Reading the id link or the side file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<NameFault> for FsError {
    fn from(fault: NameFault) -> Self {
        match fault {
            NameFault::Io(e) => e.into(),
            _ => FsError(libc::EIO),
        }
    }
}

/// Reads the id link of the directory open as `dir` (any descriptor, `O_PATH` included);
/// `None` when it has none.
///
/// # Errors
///
/// [`NameFault::DirId`] when the link's target does not parse, [`NameFault::DirIdNotALink`]
/// when `kmsfs.dirid` is not a symlink, [`NameFault::Io`] when it cannot be read.
pub(super) fn read_dir_id_link(dir: BorrowedFd<'_>) -> Result<Option<DirId>, NameFault> {
    let link = std::path::Path::new(OsStr::from_bytes(sys::proc_fd_path(dir).to_bytes()))
        .join(DIR_ID_FILE);
    let target = match std::fs::read_link(link) {
        Ok(target) => target,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            return Err(NameFault::DirIdNotALink);
        }
        Err(e) => return Err(e.into()),
    };
    cipher_names::parse_dir_id_target(target.as_os_str().as_bytes())
        .map(Some)
        .map_err(NameFault::DirId)
}

/// The extended attribute of a backing directory that holds a copy of its id (16 raw bytes).
/// The attribute lives in the directory's own inode, in memory once the directory is open, and
/// is journaled with it: after a crash that lost the id link the id is still there, and the
/// link is made again from it. Copies of the cipher directory that drop extended attributes
/// keep the link.
pub(super) const DIR_ID_XATTR: &CStr = c"user.kmsfs.dirid";

/// The copy of the id of the directory open as `dir` (any descriptor, `O_PATH` included).
pub(super) fn dir_id_copy(dir: BorrowedFd<'_>) -> Option<DirId> {
    let mut copy = [0u8; DIR_ID_LEN + 1];
    let n = sys::getxattr(&sys::proc_fd_path(dir), DIR_ID_XATTR, &mut copy, false).ok()?;
    cipher_names::parse_dir_id(&copy[..n]).ok()
}

/// The id of the directory open as `dir` (any descriptor, `O_PATH` included) for the
/// filesystem: the copy in its extended attribute when it has one, else its id link.
///
/// Reading the copy costs no disk read once the directory is open. With a copy, only the
/// link's presence and length are checked (`fstatat`): a link lost or damaged by a crash is
/// made again from the copy (best effort: the copy alone keeps the names readable). Without a
/// copy (a cipher directory copied without extended attributes), the link is read; a damaged
/// one is logged and reads as EIO. fsck reads the same way ([`super::walk`]), and compares.
fn dir_id_or_eio(dir: BorrowedFd<'_>) -> FsResult<Option<KnownDirId>> {
    let Some((id, from_copy)) = known_dir_id(dir)? else {
        return Ok(None);
    };
    if from_copy && !id_link_is_whole(dir) {
        tracing::warn!("a directory's id link was lost or damaged; made again from its copy");
        if let Err(e) = rewrite_dir_id_link(dir, &id) {
            tracing::warn!("cannot make a directory's id link again from its copy: {e}");
        }
    }
    Ok(Some(KnownDirId {
        id,
        copied: from_copy,
    }))
}

/// Replaces whatever `kmsfs.dirid` of the directory open as `dir` is (a link, a regular file
/// or nothing) with the link to `id`.
pub(super) fn rewrite_dir_id_link(dir: BorrowedFd<'_>, id: &DirId) -> FsResult<()> {
    unlink_id_link(dir)?;
    write_dir_id_link(dir, id)
}

/// The id of the directory open as `dir`, and whether it came from the copy: the copy when
/// there is one, else the id link (damaged: logged, EIO); `None` when it has neither.
fn known_dir_id(dir: BorrowedFd<'_>) -> FsResult<Option<(DirId, bool)>> {
    if let Some(id) = dir_id_copy(dir) {
        return Ok(Some((id, true)));
    }
    match read_dir_id_link(dir) {
        Ok(id) => Ok(id.map(|id| (id, false))),
        Err(fault) => {
            if matches!(fault, NameFault::DirId(_) | NameFault::DirIdNotALink) {
                tracing::error!("a directory's id is unreadable: {fault}");
            }
            Err(fault.into())
        }
    }
}

/// True when the directory open as `dir` has an id link of the right length (not read).
fn id_link_is_whole(dir: BorrowedFd<'_>) -> bool {
    sys::fstatat(dir, DIR_ID_FILE_C, libc::AT_SYMLINK_NOFOLLOW).is_ok_and(|st| {
        st.st_mode & libc::S_IFMT == libc::S_IFLNK && st.st_size == DIR_ID_TARGET_LEN as libc::off_t
    })
}

/// The full cipher name of entry `disk` of the directory open as `dir`: `disk` itself, or for a
/// long name the content of its side file, which must be this short name's.
///
/// # Errors
///
/// For a long name: [`NameFault::SideFileMissing`], [`NameFault::SideFileOfAnother`] or
/// [`NameFault::SideFileNotAName`] when the side file is not this name's, [`NameFault::Io`]
/// when it cannot be read.
pub(super) fn full_cipher_name<'a>(
    dir: BorrowedFd<'_>,
    disk: &'a [u8],
) -> Result<Cow<'a, [u8]>, NameFault> {
    if !cipher_names::is_long(disk) {
        return Ok(Cow::Borrowed(disk));
    }
    let mut side = disk.to_vec();
    side.extend_from_slice(LONG_SIDE_SUFFIX.as_bytes());
    let side = CString::new(side).map_err(|_| NameFault::SideFileNotAName)?;
    let fd = match sys::openat(dir, &side, libc::O_RDONLY | libc::O_NOFOLLOW, 0) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            return Err(NameFault::SideFileMissing);
        }
        Err(e) => return Err(e.into()),
    };
    let mut full = Vec::with_capacity(512);
    std::io::Read::read_to_end(
        &mut std::io::Read::take(std::fs::File::from(fd), SIDE_FILE_MAX),
        &mut full,
    )?;
    // The side file must be the one of this short name.
    match std::str::from_utf8(&full)
        .ok()
        .and_then(cipher_names::long_name)
    {
        Some(short) if short.as_bytes() == disk => Ok(Cow::Owned(full)),
        Some(short) => Err(NameFault::SideFileOfAnother(short)),
        None => Err(NameFault::SideFileNotAName),
    }
}

/// The short name a side file `side` belongs to (`kmsfs.long.<hash>` for
/// `kmsfs.long.<hash>.name`), or `None` when `side` is no side file's name.
pub(super) fn side_file_owner(side: &[u8]) -> Option<&[u8]> {
    if !cipher_names::is_internal(side) {
        return None;
    }
    // The directory id link is internal too, and has no such suffix.
    side.strip_suffix(LONG_SIDE_SUFFIX.as_bytes())
}

/// Gives the new directory open as `dir` (any descriptor, `O_PATH` included) a random id
/// (encrypted names): its id link and the copy in its extended attribute.
pub fn write_dir_id(dir: BorrowedFd<'_>) -> FsResult<KnownDirId> {
    let id = cipher_names::random_dir_id();
    let copied = write_dir_id_bytes(dir, &id)?;
    Ok(KnownDirId { id, copied })
}

/// Writes id `id` of the directory open as `dir`: its id link, then the copy. True when the copy
/// was written: a backing filesystem without user xattrs keeps the link only.
fn write_dir_id_bytes(dir: BorrowedFd<'_>, id: &DirId) -> FsResult<bool> {
    write_dir_id_link(dir, id)?;
    match sys::setxattr(&sys::proc_fd_path(dir), DIR_ID_XATTR, id, 0, false) {
        Ok(()) => Ok(true),
        Err(e) => {
            tracing::debug!("cannot keep a copy of a directory's id in an xattr: {e}");
            Ok(false)
        }
    }
}

/// Makes the id link of the directory open as `dir`, to `id`; EEXIST when there is one.
fn write_dir_id_link(dir: BorrowedFd<'_>, id: &DirId) -> FsResult<()> {
    let target =
        CString::new(cipher_names::dir_id_target(id)).expect("BUG: base64url has no NUL byte");
    Ok(sys::symlinkat(&target, dir, DIR_ID_FILE_C)?)
}

/// Removes the id link of the directory open as `dir`, if it has one (a directory known by its
/// copy alone may have lost it).
fn unlink_id_link(dir: BorrowedFd<'_>) -> FsResult<()> {
    match sys::unlinkat(dir, DIR_ID_FILE_C, 0) {
        Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e.into()),
        _ => Ok(()),
    }
}

/// True when the backing directory open for reading as `dir` (`O_RDONLY | O_DIRECTORY`, at
/// its start; read to the end) holds no entry but `.`, `..` and the id link.
fn holds_nothing(dir: BorrowedFd<'_>) -> FsResult<bool> {
    let mut buf = Vec::new();
    loop {
        let entries = sys::getdents(dir, &mut buf)?;
        if entries.is_empty() {
            return Ok(true);
        }
        if entries
            .iter()
            .any(|e| !matches!(e.name.as_slice(), b"." | b"..") && e.name != DIR_ID_FILE.as_bytes())
        {
            return Ok(false);
        }
    }
}

/// The directory open as `dir` (any descriptor, `O_PATH` included), opened again for reading.
fn for_reading(dir: BorrowedFd<'_>) -> FsResult<std::os::fd::OwnedFd> {
    Ok(sys::openat(
        dir,
        c".",
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
    )?)
}

impl CryptFs {
    /// True when names are encrypted.
    pub fn encrypts_names(&self) -> bool {
        matches!(self.naming, Naming::Encrypted(_))
    }

    /// The id of directory `dir` (read once, then cached). A directory that lost its id link
    /// while empty (a crash right after its `mkdir`) gets a new one; one that has entries but
    /// no id cannot be read (EIO, logged).
    fn dir_id(&self, dir: &Inode) -> FsResult<DirId> {
        self.dir_id_and_copy(dir).map(|known| known.id)
    }

    /// As [`CryptFs::dir_id`], with whether the directory keeps a copy of it.
    fn dir_id_and_copy(&self, dir: &Inode) -> FsResult<KnownDirId> {
        if let Some(known) = dir.dir_id.get() {
            return Ok(*known);
        }
        let fd = dir.fd()?;
        let id = match dir_id_or_eio(fd.as_fd())? {
            Some(id) => id,
            None if holds_nothing(for_reading(fd.as_fd())?.as_fd())? => {
                match write_dir_id(fd.as_fd()) {
                    Ok(id) => id,
                    // Made by another thread meanwhile.
                    Err(FsError(libc::EEXIST)) => {
                        dir_id_or_eio(fd.as_fd())?.ok_or(FsError(libc::EIO))?
                    }
                    Err(e) => return Err(e),
                }
            }
            None => {
                tracing::error!(
                    dir = %dir.backing_path(),
                    "directory has entries but no {DIR_ID_FILE}: its names cannot be read"
                );
                return Err(FsError(libc::EIO));
            }
        };
        Ok(*dir.dir_id.get_or_init(|| id))
    }

    /// Gives directory `dir`, just made, its id, and caches it: the first name made in it
    /// needs it. A directory made without write permission for the daemon (`mkdir -m 0555` by
    /// a daemon that is not root) gets it for as long as the id link takes.
    pub(super) fn give_dir_id(&self, dir: &Inode) -> FsResult<()> {
        let fd = dir.fd()?;
        let id = match write_dir_id(fd.as_fd()) {
            Err(FsError(libc::EACCES)) => {
                let path = dir.proc_path()?;
                let mode = sys::fstat(fd.as_fd())?.st_mode & 0o7777;
                sys::chmod_path(&path, mode | libc::S_IWUSR)?;
                let written = write_dir_id(fd.as_fd());
                sys::chmod_path(&path, mode)?;
                written?
            }
            // Another request used it meanwhile, and gave it an id (see `dir_id`).
            Err(FsError(libc::EEXIST)) => return self.dir_id(dir).map(drop),
            written => written?,
        };
        let _ = dir.dir_id.set(id);
        Ok(())
    }

    /// The name `plain` of directory `parent` as it is on disk. The names the filesystem keeps
    /// for itself are refused with `denied`; a name longer than 255 bytes with ENAMETOOLONG.
    pub(super) fn disk_name(
        &self,
        parent: &Inode,
        plain: &OsStr,
        denied: i32,
    ) -> FsResult<DiskName> {
        let bytes = plain.as_bytes();
        if bytes.len() > MAX_PLAIN_NAME {
            return Err(FsError(libc::ENAMETOOLONG));
        }
        let cipher = match &self.naming {
            Naming::Encrypted(cipher) if !matches!(bytes, b"." | b"..") => cipher,
            _ => {
                if parent.ino == ROOT_INO && HIDDEN_ROOT_NAMES.iter().any(|h| h.as_bytes() == bytes)
                {
                    return Err(FsError(denied));
                }
                return Ok(DiskName::plain(sys::cstr(plain)?));
            }
        };
        if cipher_names::check_plain_name(bytes).is_err() {
            return Err(FsError(libc::EINVAL));
        }
        let full = cipher.encrypt_name(&self.dir_id(parent)?, bytes);
        let to_c = |s: String| CString::new(s).map_err(|_| FsError(libc::EINVAL));
        Ok(match cipher_names::long_name(&full) {
            None => DiskName::plain(to_c(full)?),
            Some(short) => DiskName {
                name: to_c(short.clone())?,
                long: Some((to_c(short + LONG_SIDE_SUFFIX)?, full)),
            },
        })
    }

    /// Before `name` is made in `parent`: writes its side file if it is a long name.
    pub(super) fn keep_long_name(&self, parent: &Inode, name: &DiskName) -> FsResult<()> {
        let Some((side, full)) = &name.long else {
            return Ok(());
        };
        let parent_fd = parent.fd()?;
        let made = super::names::with_umask(0o022, 0o444, |mode| {
            sys::openat(
                parent_fd.as_fd(),
                side,
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                mode,
            )
        });
        let fd = match made {
            Ok(fd) => fd,
            // The name exists (or existed): its side file holds the same bytes.
            Err(FsError(libc::EEXIST)) => return Ok(()),
            Err(e) => return Err(e),
        };
        std::io::Write::write_all(&mut std::fs::File::from(fd), full.as_bytes())?;
        Ok(())
    }

    /// After making `name` in `parent` failed: removes the side file written for it, unless the
    /// name exists (its side file is the same bytes).
    pub(super) fn undo_long_name(&self, parent: &Inode, name: &DiskName) {
        if name.long.is_none() {
            return;
        }
        let Ok(fd) = parent.fd() else { return };
        if sys::fstatat(fd.as_fd(), &name.name, libc::AT_SYMLINK_NOFOLLOW).is_err() {
            self.drop_long_name(parent, name);
        }
    }

    /// After `name` is gone from `parent`: removes its side file if it is a long name.
    pub(super) fn drop_long_name(&self, parent: &Inode, name: &DiskName) {
        let Some((side, _)) = &name.long else { return };
        if let Ok(fd) = parent.fd()
            && let Err(e) = sys::unlinkat(fd.as_fd(), side, 0)
            && e.raw_os_error() != Some(libc::ENOENT)
        {
            tracing::warn!(dir = %parent.backing_path(), "cannot remove a long name's side file: {e}");
        }
    }

    /// Runs `make`, which makes `name` in `parent`, with the long name's side file written
    /// first and removed again if `make` fails.
    pub(super) fn making<R>(
        &self,
        parent: &Inode,
        name: &DiskName,
        make: impl FnOnce() -> FsResult<R>,
    ) -> FsResult<R> {
        self.keep_long_name(parent, name)?;
        let made = make();
        if made.is_err() {
            self.undo_long_name(parent, name);
        }
        made
    }

    /// The name the mount shows for entry `disk` of directory `dir` (open as `dir_fd`), or
    /// `None` for an entry it never shows: the filesystem's own files, and cipher names that
    /// do not authenticate (logged once per listing through `reported`).
    pub(super) fn shown_name(
        &self,
        dir: &Inode,
        dir_fd: BorrowedFd<'_>,
        disk: &[u8],
        reported: &mut bool,
    ) -> Option<OsString> {
        if matches!(disk, b"." | b"..") {
            return Some(OsStr::from_bytes(disk).to_os_string());
        }
        let cipher = match &self.naming {
            Naming::Plain => {
                let hidden =
                    dir.ino == ROOT_INO && HIDDEN_ROOT_NAMES.iter().any(|h| h.as_bytes() == disk);
                return (!hidden).then(|| OsStr::from_bytes(disk).to_os_string());
            }
            Naming::Encrypted(cipher) => cipher,
        };
        if cipher_names::is_internal(disk)
            || (dir.ino == ROOT_INO && HIDDEN_ROOT_NAMES.iter().any(|h| h.as_bytes() == disk))
        {
            return None;
        }
        let decrypted = match self.dir_id(dir) {
            Ok(id) => full_cipher_name(dir_fd, disk)
                .and_then(|full| cipher.decrypt_name(&id, &full).map_err(NameFault::Cipher))
                .map_err(|fault| fault.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match decrypted {
            Ok(plain) => Some(OsString::from_vec(plain)),
            Err(e) => {
                if !std::mem::replace(reported, true) {
                    tracing::warn!(
                        dir = %dir.backing_path(),
                        entry = %String::from_utf8_lossy(disk),
                        "a name in this directory does not decrypt ({e}); such entries are not listed (kmsfs fsck names them)"
                    );
                }
                None
            }
        }
    }

    /// The target a new symlink stores on disk for `plain`.
    pub(super) fn disk_target(&self, plain: &OsStr) -> FsResult<CString> {
        match &self.naming {
            Naming::Plain => Ok(sys::cstr(plain)?),
            Naming::Encrypted(_) if plain.len() > MAX_PLAIN_TARGET => {
                Err(FsError(libc::ENAMETOOLONG))
            }
            Naming::Encrypted(cipher) => CString::new(cipher.encrypt_target(plain.as_bytes()))
                .map_err(|_| FsError(libc::EINVAL)),
        }
    }

    /// The target the mount shows for symlink `inode`, whose target on disk is `disk`.
    pub(super) fn shown_target(&self, inode: &Inode, disk: Vec<u8>) -> FsResult<Vec<u8>> {
        match &self.naming {
            Naming::Plain => Ok(disk),
            Naming::Encrypted(cipher) => cipher.decrypt_target(&disk).map_err(|_| {
                tracing::error!(link = %inode.backing_path(), "symlink target does not decrypt");
                FsError(libc::EIO)
            }),
        }
    }

    /// The size `stat` shows for a symlink whose target on disk is `disk_len` bytes.
    pub(super) fn shown_target_len(&self, disk_len: u64) -> u64 {
        match &self.naming {
            Naming::Plain => disk_len,
            Naming::Encrypted(_) => NameCipher::target_plain_len(disk_len).unwrap_or(0),
        }
    }

    /// Before a rename over `name` in `parent` (encrypted names): a directory there holding
    /// nothing but its id loses the id, since the backing filesystem replaces only empty
    /// directories. Returns what [`CryptFs::restore_dir_id`] puts back if the rename fails.
    pub(super) fn clear_replaced_dir(
        &self,
        parent: &Inode,
        name: &CString,
    ) -> FsResult<Option<(std::os::fd::OwnedFd, DirId)>> {
        if !self.encrypts_names() {
            return Ok(None);
        }
        let parent_fd = parent.fd()?;
        let Ok(dir) = sys::openat(
            parent_fd.as_fd(),
            name,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        ) else {
            // Absent, or not a directory: nothing to clear.
            return Ok(None);
        };
        if !holds_nothing(dir.as_fd())? {
            // The backing rename fails as it should (ENOTEMPTY, or EISDIR for a file).
            return Ok(None);
        }
        let Some((id, _)) = known_dir_id(dir.as_fd())? else {
            return Ok(None);
        };
        unlink_id_link(dir.as_fd())?;
        Ok(Some((dir, id)))
    }

    /// Puts back a directory id [`CryptFs::clear_replaced_dir`] took, after a failed rename.
    pub(super) fn restore_dir_id(&self, cleared: Option<(std::os::fd::OwnedFd, DirId)>) {
        if let Some((dir, id)) = cleared
            && let Err(e) = write_dir_id_bytes(dir.as_fd(), &id)
        {
            tracing::error!("cannot put a directory's id back after a failed rename: {e}");
        }
    }

    /// Removes directory `name` from `parent`: with encrypted names, its id link first (put
    /// back if the directory turns out not to be empty).
    ///
    /// A directory with the copy of its id is not listed first: the backing `rmdir` says
    /// whether it is empty, and a failed one gets its link back from the copy, which stays with
    /// the directory (a crash in between leaves the copy, from which the mount makes the link
    /// again). When the mount already knows that the directory has the copy (it listed it, as
    /// `rm -r` does), its id is not even read. One known by its link alone is listed first: the
    /// link is its only id.
    pub(super) fn remove_dir(&self, parent: &Inode, name: &CString) -> FsResult<()> {
        let parent_fd = parent.fd()?;
        let remove =
            || sys::unlinkat(parent_fd.as_fd(), name, libc::AT_REMOVEDIR).map_err(FsError::from);
        if !self.encrypts_names() {
            return remove();
        }
        if let Some(id) = self.known_copied_id(parent_fd.as_fd(), name)? {
            return remove_copied_dir(parent_fd.as_fd(), name, &id);
        }
        let dir = sys::openat(
            parent_fd.as_fd(),
            name,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )?;
        let known = known_dir_id(dir.as_fd())?;
        if !matches!(known, Some((_, true))) && !holds_nothing(for_reading(dir.as_fd())?.as_fd())? {
            return Err(FsError(libc::ENOTEMPTY));
        }
        let id = known.map(|(id, _)| id);
        if id.is_some() {
            unlink_id_link(dir.as_fd())?;
        }
        let removed = remove();
        if removed.is_err()
            && let Some(id) = id
            && let Err(e) = write_dir_id_bytes(dir.as_fd(), &id)
        {
            tracing::error!(dir = %parent.backing_path(), "cannot put a directory's id back: {e}");
        }
        removed
    }

    /// The id of entry `name` of the backing directory open as `parent` when it is a directory
    /// the mount holds, whose id it read and found copied in the directory's extended attribute.
    fn known_copied_id(&self, parent: BorrowedFd<'_>, name: &CStr) -> FsResult<Option<DirId>> {
        let st = sys::fstatat(parent, name, libc::AT_SYMLINK_NOFOLLOW)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Ok(None);
        }
        Ok(self
            .inodes
            .known(&st)
            .and_then(|dir| dir.dir_id.get().copied())
            .and_then(|known| known.copied.then_some(known.id)))
    }
}

/// Removes directory `name`, which keeps the copy of its id `id`, from the backing directory
/// open as `parent`: its id link, then the directory; the link is made again from the copy when
/// the directory turns out not to be empty (from `id` if the copy went meanwhile).
fn remove_copied_dir(parent: BorrowedFd<'_>, name: &CStr, id: &DirId) -> FsResult<()> {
    let mut link = name.to_bytes().to_vec();
    link.push(b'/');
    link.extend_from_slice(DIR_ID_FILE_C.to_bytes());
    let link = CString::new(link).expect("BUG: two C strings joined by a slash have no NUL");
    match sys::unlinkat(parent, &link, 0) {
        Err(e) if e.raw_os_error() != Some(libc::ENOENT) => return Err(e.into()),
        _ => {}
    }
    let removed = sys::unlinkat(parent, name, libc::AT_REMOVEDIR).map_err(FsError::from);
    if removed.is_err() {
        let restored = sys::openat(
            parent,
            name,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
        .map_err(FsError::from)
        .and_then(|dir| {
            let copy = dir_id_copy(dir.as_fd());
            match write_dir_id_link(dir.as_fd(), copy.as_ref().unwrap_or(id)) {
                Err(FsError(libc::EEXIST)) => Ok(()),
                written => written,
            }
        });
        if let Err(e) = restored {
            tracing::error!("cannot put a directory's id link back from its copy: {e}");
        }
    }
    removed
}

/// The namespace of extended attributes whose names and values are encrypted.
pub(super) const USER_XATTR: &[u8] = b"user.";

/// The longest value or name list an extended-attribute call can return (Linux).
pub const XATTR_MAX: usize = 65536;

impl CryptFs {
    /// The cipher that seals extended attribute `name`: `user.` ones with encrypted names.
    pub(super) fn xattr_cipher(&self, name: &[u8]) -> Option<&NameCipher> {
        match &self.naming {
            Naming::Encrypted(cipher) if name.starts_with(USER_XATTR) => Some(cipher),
            _ => None,
        }
    }

    /// Extended attribute `name` as it is stored: `user.<cipher>` for sealed ones.
    pub(super) fn disk_xattr_name(&self, name: &OsStr) -> FsResult<CString> {
        let bytes = name.as_bytes();
        let Some(cipher) = self.xattr_cipher(bytes) else {
            return Ok(sys::cstr(name)?);
        };
        let plain = &bytes[USER_XATTR.len()..];
        if plain.is_empty() || plain.contains(&0) {
            return Err(FsError(libc::EINVAL));
        }
        if plain.len() > cipher_names::MAX_PLAIN_XATTR_NAME {
            return Err(FsError(libc::ERANGE));
        }
        let mut stored = USER_XATTR.to_vec();
        stored.extend_from_slice(cipher.encrypt_xattr_name(plain).as_bytes());
        CString::new(stored).map_err(|_| FsError(libc::EINVAL))
    }

    /// The value stored for `value` of extended attribute `disk_name` (as stored).
    pub(super) fn disk_xattr_value(
        &self,
        name: &OsStr,
        disk_name: &CString,
        value: &[u8],
    ) -> FsResult<Vec<u8>> {
        match self.xattr_cipher(name.as_bytes()) {
            None => Ok(value.to_vec()),
            Some(_) if value.len() > cipher_names::MAX_PLAIN_XATTR_VALUE => {
                Err(FsError(libc::E2BIG))
            }
            Some(cipher) => Ok(cipher.seal_xattr_value(disk_name.as_bytes(), value)),
        }
    }

    /// The value shown for the `stored` value of extended attribute `name` (stored as
    /// `disk_name`) of `inode`: EIO (logged) when a sealed one does not open.
    pub(super) fn shown_xattr_value(
        &self,
        inode: &Inode,
        name: &OsStr,
        disk_name: &CString,
        stored: &[u8],
    ) -> FsResult<Vec<u8>> {
        match self.xattr_cipher(name.as_bytes()) {
            None => Ok(stored.to_vec()),
            Some(cipher) => cipher
                .open_xattr_value(disk_name.as_bytes(), stored)
                .map_err(|_| {
                    tracing::error!(path = %inode.backing_path(), "an extended attribute's value does not decrypt");
                    FsError(libc::EIO)
                }),
        }
    }

    /// True when the stored list of extended attribute names `stored` shows none: it is empty,
    /// or with encrypted names holds only a directory's copy of its id (which every directory
    /// has, and which is never shown).
    pub(super) fn shows_no_xattr(&self, stored: &[u8]) -> bool {
        let hidden = |name: &[u8]| self.encrypts_names() && name == DIR_ID_XATTR.to_bytes();
        stored
            .split(|&b| b == 0)
            .all(|name| name.is_empty() || hidden(name))
    }

    /// The NUL-separated list of names shown for the stored list `stored`: sealed names
    /// decrypted; one that does not decrypt is left out (logged).
    pub(super) fn shown_xattr_list(&self, inode: &Inode, stored: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(stored.len());
        for name in stored
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty() && *n != DIR_ID_XATTR.to_bytes())
        {
            let Some(cipher) = self.xattr_cipher(name) else {
                out.extend_from_slice(name);
                out.push(0);
                continue;
            };
            match cipher.decrypt_xattr_name(&name[USER_XATTR.len()..]) {
                Ok(plain) => {
                    out.extend_from_slice(USER_XATTR);
                    out.extend_from_slice(&plain);
                    out.push(0);
                }
                Err(_) => tracing::warn!(
                    path = %inode.backing_path(),
                    "an extended attribute's name does not decrypt; it is not listed"
                ),
            }
        }
        out
    }
}
