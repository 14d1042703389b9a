//! The tree of a cipher directory, for fsck and rewrap: its regular files and, with encrypted
//! names, the plaintext path of each, the names, symlink targets and `user.` extended
//! attributes that do not read back, and the long-name side files a crash left without their
//! name. It only reads; [`remove_orphan`] and [`BadName::repair_id_link`] are the changes.
//!
//! A walk reads the disk first (every directory's id, listing and long names' side files) and
//! decrypts names afterwards, so that a name that does not open with its own directory's id can
//! be tried with every other directory's: that tells a name moved from another directory, and
//! two directories whose ids were swapped, from plain damage. Symlink targets and
//! extended attributes need no other directory: they are opened as they are read.

use super::HIDDEN_ROOT_NAMES;
use super::naming::{
    NameFault, dir_id_copy, full_cipher_name, read_dir_id_link, rewrite_dir_id_link,
    side_file_owner,
};
use crate::format::{DirId, NameCipher, is_internal};
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

mod damage;
#[cfg(test)]
#[path = "walk/tests/kms.rs"]
mod kms_tests;
mod reading;
mod sealed;
#[cfg(test)]
#[path = "walk/tests/sealed.rs"]
mod sealed_tests;
#[cfg(test)]
mod tests;

pub use damage::{BadName, DirRef, IdLinkFault, NameDamage};
pub use sealed::{SealedDamage, SealedFault};
use sealed::{SealedRead, SealedReader};

/// Every regular file under `cipher_dir`, sorted by path, without `kmsfs.conf` and the files
/// that keep names. Symlinks are not followed.
pub fn cipher_files(cipher_dir: &Path) -> io::Result<Vec<PathBuf>> {
    let tree = walk_tree(cipher_dir, None)?;
    Ok(tree.files.into_iter().map(|file| file.cipher).collect())
}

/// What a walk of a cipher directory found.
#[derive(Debug, Default)]
pub struct Tree {
    /// Every regular file, sorted by plaintext path (those whose path does not read last, by
    /// cipher path).
    pub files: Vec<TreeFile>,
    /// Names that do not read back, and directories whose names cannot be read, by plaintext
    /// directory, then cipher path.
    pub bad_names: Vec<BadName>,
    /// Long-name side files whose name does not exist, by cipher path.
    pub orphans: Vec<PathBuf>,
    /// Names read (encrypted names only): every entry but the filesystem's own files.
    pub names: u64,
    /// Names that do not read back: those of `bad_names`, and every name of a directory whose
    /// id is lost.
    pub unreadable_names: u64,
    /// Symlink targets and `user.` extended attributes that do not read back (encrypted names
    /// only), by plaintext path, then cipher path.
    pub sealed_damage: Vec<SealedDamage>,
    /// Symlink targets read (encrypted names only).
    pub targets: u64,
    /// `user.` extended attributes read, of every node the root included (encrypted names
    /// only; the filesystem's own copy of a directory's id is not one).
    pub xattrs: u64,
}

/// A regular file of a cipher directory. Displays as its cipher path followed by its
/// plaintext path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFile {
    /// Its path in the cipher directory.
    pub cipher: PathBuf,
    /// Its path through a mount.
    pub plain: PlainPath,
}

/// Where a file of the cipher directory shows through a mount.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PlainPath {
    /// Names are not encrypted: where it is in the cipher directory.
    AsStored,
    /// Its path from the root of the mount, starting with `/`.
    Known(PathBuf),
    /// A name on its path does not decrypt: the mount does not show it.
    Unreadable,
}

/// Writes a node's cipher path followed by its plaintext path, as `fsck` reports it.
fn write_paths(f: &mut fmt::Formatter<'_>, cipher: &Path, plain: &PlainPath) -> fmt::Result {
    let cipher = cipher.display();
    match plain {
        PlainPath::AsStored => write!(f, "{cipher}"),
        PlainPath::Known(plain) => write!(f, "{cipher} (plaintext {})", plain.display()),
        PlainPath::Unreadable => write!(f, "{cipher} (plaintext path unreadable)"),
    }
}

impl fmt::Display for TreeFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_paths(f, &self.cipher, &self.plain)
    }
}

/// Walks the cipher directory `cipher_dir`: with `names` (encrypted names), decrypts every
/// name, symlink target and `user.` extended attribute (names and values) and checks every
/// long name's side file; without, lists the regular files. Symlinks are not followed;
/// `kmsfs.conf`, its temporary file, directory ids and side files are not files of the tree.
///
/// # Errors
///
/// When a directory cannot be listed or opened. A name that does not read is no error: it is
/// in [`Tree::bad_names`]; a target or attribute, in [`Tree::sealed_damage`].
pub fn walk_tree(cipher_dir: &Path, names: Option<&NameCipher>) -> io::Result<Tree> {
    let dirs = scan(cipher_dir, names)?;
    Ok(match names {
        Some(cipher) => reading::Reading::new(dirs, cipher).into_tree(),
        None => stored_tree(dirs),
    })
}

/// Deletes the orphaned side file `orphan` (one of [`Tree::orphans`]), after checking again
/// that its name does not exist.
///
/// # Errors
///
/// `InvalidInput` when `orphan` is no side file's name, `AlreadyExists` when its name exists
/// now, or the error of the removal.
pub fn remove_orphan(orphan: &Path) -> io::Result<()> {
    let owner = orphan
        .file_name()
        .and_then(|side| side_file_owner(side.as_bytes()))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a side file"))?;
    match std::fs::symlink_metadata(orphan.with_file_name(OsStr::from_bytes(owner))) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::remove_file(orphan),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "its name exists now",
        )),
        Err(e) => Err(e),
    }
}

impl BadName {
    /// For a directory whose id link disagrees with the copy of its id ([`NameDamage::IdLink`]):
    /// makes the link again from the copy, the id the mount reads (`fsck --repair`). `None` for
    /// any other damage, which no repair touches.
    ///
    /// # Errors
    ///
    /// As [`restore_dir_id_link`].
    pub fn repair_id_link(&self) -> Option<io::Result<()>> {
        matches!(self.fault, NameDamage::IdLink(_)).then(|| restore_dir_id_link(&self.cipher))
    }
}

/// Makes the id link of the cipher directory `dir` again from the copy of its id in its
/// extended attribute, the id the mount reads.
///
/// # Errors
///
/// `NotFound` when the directory has no copy of its id (nothing to make the link from), or the
/// error of opening the directory or replacing the link.
fn restore_dir_id_link(dir: &Path) -> io::Result<()> {
    let dir = std::fs::File::open(dir)?;
    let id = dir_id_copy(dir.as_fd()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "the directory has no copy of its id",
        )
    })?;
    rewrite_dir_id_link(dir.as_fd(), &id).map_err(|e| io::Error::from_raw_os_error(e.0))
}

/// The id of the directory open as `dir` as the mount reads it (the copy in its extended
/// attribute, else its id link), and, when it has a copy, how the link disagrees with it.
fn read_dir_id(
    dir: std::os::fd::BorrowedFd<'_>,
) -> (Result<Option<DirId>, NameFault>, Option<IdLinkFault>) {
    let Some(copy) = dir_id_copy(dir) else {
        return (read_dir_id_link(dir), None);
    };
    let link = match read_dir_id_link(dir) {
        Ok(Some(id)) if id == copy => None,
        Ok(Some(_)) => Some(IdLinkFault::OtherId),
        Ok(None) => Some(IdLinkFault::Missing),
        Err(fault) => Some(IdLinkFault::Unreadable(fault)),
    };
    (Ok(Some(copy)), link)
}

/// One directory as the disk holds it.
struct ScannedDir {
    cipher: PathBuf,
    /// Its parent and its index among the parent's entries; `None` for the root.
    parent: Option<(usize, usize)>,
    /// Its id (encrypted names), read as the mount reads it: the copy, else the link;
    /// `Ok(None)` with plaintext names.
    id: Result<Option<DirId>, NameFault>,
    /// How its id link disagrees with the copy, when it has a copy (encrypted names).
    link: Option<IdLinkFault>,
    /// Every entry but the filesystem's own files, by name.
    entries: Vec<ScannedEntry>,
    /// Side files whose name does not exist.
    orphans: Vec<PathBuf>,
    /// Its own extended attributes (encrypted names).
    sealed: SealedRead,
}

struct ScannedEntry {
    disk: OsString,
    kind: EntryKind,
    /// Its full cipher name (encrypted names): itself, or a long name's side file.
    full: Option<Result<Vec<u8>, NameFault>>,
    /// Its target and extended attributes (encrypted names; a directory's are its own).
    sealed: SealedRead,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    Dir(usize),
    File,
    Other,
}

/// Every directory under `root`, a parent before its children; with `names`, every node's
/// symlink target and extended attributes opened.
fn scan(root: &Path, names: Option<&NameCipher>) -> io::Result<Vec<ScannedDir>> {
    let mut dirs = vec![ScannedDir {
        cipher: root.to_path_buf(),
        parent: None,
        id: Ok(None),
        link: None,
        entries: Vec::new(),
        orphans: Vec::new(),
        sealed: SealedRead::default(),
    }];
    let mut sealed = names.map(SealedReader::new);
    let mut next = 0;
    while next < dirs.len() {
        scan_one(&mut dirs, next, sealed.as_mut())?;
        next += 1;
    }
    Ok(dirs)
}

/// Reads directory `index` of `dirs`, appending its subdirectories to `dirs`; with `reader`
/// (encrypted names), opens its own extended attributes and its other entries' targets and
/// extended attributes.
fn scan_one(
    dirs: &mut Vec<ScannedDir>,
    index: usize,
    mut reader: Option<&mut SealedReader<'_>>,
) -> io::Result<()> {
    let encrypted = reader.is_some();
    let path = dirs[index].cipher.clone();
    let dir = std::fs::File::open(&path)?;
    let mut listing = Vec::new();
    for entry in std::fs::read_dir(&path)? {
        let entry = entry?;
        listing.push((entry.file_name(), entry.file_type()?));
    }
    listing.sort_by(|a, b| a.0.cmp(&b.0));
    let mut entries = Vec::with_capacity(listing.len());
    let mut side_files = Vec::new();
    for (name, file_type) in listing {
        if index == 0 && HIDDEN_ROOT_NAMES.iter().any(|hidden| name == *hidden) {
            continue;
        }
        if !file_type.is_dir() && is_internal(name.as_bytes()) {
            if side_file_owner(name.as_bytes()).is_some() {
                side_files.push(name);
            }
            continue;
        }
        let kind = if file_type.is_dir() {
            dirs.push(ScannedDir {
                cipher: path.join(&name),
                parent: Some((index, entries.len())),
                id: Ok(None),
                link: None,
                entries: Vec::new(),
                orphans: Vec::new(),
                sealed: SealedRead::default(),
            });
            EntryKind::Dir(dirs.len() - 1)
        } else if file_type.is_file() {
            EntryKind::File
        } else {
            EntryKind::Other
        };
        let full = encrypted.then(|| {
            full_cipher_name(dir.as_fd(), name.as_bytes()).map(std::borrow::Cow::into_owned)
        });
        let sealed = match (&mut reader, kind) {
            (Some(reader), EntryKind::File | EntryKind::Other) => {
                reader.read(&path.join(&name), file_type.is_symlink())
            }
            _ => SealedRead::default(),
        };
        entries.push(ScannedEntry {
            disk: name,
            kind,
            full,
            sealed,
        });
    }
    let scanned = &mut dirs[index];
    if let Some(reader) = reader {
        scanned.sealed = reader.read(&path, false);
        (scanned.id, scanned.link) = read_dir_id(dir.as_fd());
        let present: HashSet<&[u8]> = entries.iter().map(|e| e.disk.as_bytes()).collect();
        scanned.orphans = side_files
            .iter()
            .filter(|side| {
                side_file_owner(side.as_bytes()).is_some_and(|owner| !present.contains(owner))
            })
            .map(|side| path.join(side))
            .collect();
    }
    scanned.entries = entries;
    Ok(())
}

/// The tree of a directory with plaintext names: its files, where they are.
fn stored_tree(dirs: Vec<ScannedDir>) -> Tree {
    let mut files: Vec<TreeFile> = dirs
        .iter()
        .flat_map(|dir| {
            dir.entries
                .iter()
                .filter(|e| e.kind == EntryKind::File)
                .map(|e| TreeFile {
                    cipher: dir.cipher.join(&e.disk),
                    plain: PlainPath::AsStored,
                })
        })
        .collect();
    files.sort_by(|a, b| a.cipher.cmp(&b.cipher));
    Tree {
        files,
        ..Tree::default()
    }
}
