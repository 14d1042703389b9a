//! The tree of a cipher directory, for fsck and rewrap: its regular files and, with encrypted
//! names, the plaintext path of each, the names that do not read back, and the long-name side
//! files a crash left without their name. It only reads; [`remove_orphan`] is the one change.
//!
//! A walk reads the disk first (every directory's id, listing and long names' side files) and
//! decrypts afterwards, so that a name that does not open with its own directory's id can be
//! tried with every other directory's: that tells a name moved from another directory, and
//! two directories whose id files were swapped, from plain damage.

use super::HIDDEN_ROOT_NAMES;
use super::naming::{NameFault, full_cipher_name, read_dir_id, side_file_owner};
use crate::format::{DirId, NameCipher, is_internal};
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

mod damage;
mod reading;
#[cfg(test)]
mod tests;

pub use damage::{BadName, DirRef, NameDamage};

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

impl fmt::Display for TreeFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cipher = self.cipher.display();
        match &self.plain {
            PlainPath::AsStored => write!(f, "{cipher}"),
            PlainPath::Known(plain) => write!(f, "{cipher} (plaintext {})", plain.display()),
            PlainPath::Unreadable => write!(f, "{cipher} (plaintext path unreadable)"),
        }
    }
}

/// Walks the cipher directory `cipher_dir`: with `names` (encrypted names), decrypts every
/// name and checks every long name's side file; without, lists the regular files. Symlinks are
/// not followed; `kmsfs.conf`, its temporary file, directory ids and side files are not files
/// of the tree.
///
/// # Errors
///
/// When a directory cannot be listed or opened. A name that does not read is no error: it is
/// in [`Tree::bad_names`].
pub fn walk_tree(cipher_dir: &Path, names: Option<&NameCipher>) -> io::Result<Tree> {
    let dirs = scan(cipher_dir, names.is_some())?;
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

/// One directory as the disk holds it.
struct ScannedDir {
    cipher: PathBuf,
    /// Its parent and its index among the parent's entries; `None` for the root.
    parent: Option<(usize, usize)>,
    /// Its id (encrypted names); `Ok(None)` with plaintext names.
    id: Result<Option<DirId>, NameFault>,
    /// Every entry but the filesystem's own files, by name.
    entries: Vec<ScannedEntry>,
    /// Side files whose name does not exist.
    orphans: Vec<PathBuf>,
}

struct ScannedEntry {
    disk: OsString,
    kind: EntryKind,
    /// Its full cipher name (encrypted names): itself, or a long name's side file.
    full: Option<Result<Vec<u8>, NameFault>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    Dir(usize),
    File,
    Other,
}

/// Every directory under `root`, a parent before its children.
fn scan(root: &Path, encrypted: bool) -> io::Result<Vec<ScannedDir>> {
    let mut dirs = vec![ScannedDir {
        cipher: root.to_path_buf(),
        parent: None,
        id: Ok(None),
        entries: Vec::new(),
        orphans: Vec::new(),
    }];
    let mut next = 0;
    while next < dirs.len() {
        scan_one(&mut dirs, next, encrypted)?;
        next += 1;
    }
    Ok(dirs)
}

/// Reads directory `index` of `dirs`, appending its subdirectories to `dirs`.
fn scan_one(dirs: &mut Vec<ScannedDir>, index: usize, encrypted: bool) -> io::Result<()> {
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
    for (name, kind) in listing {
        if index == 0 && HIDDEN_ROOT_NAMES.iter().any(|hidden| name == *hidden) {
            continue;
        }
        if !kind.is_dir() && is_internal(name.as_bytes()) {
            if side_file_owner(name.as_bytes()).is_some() {
                side_files.push(name);
            }
            continue;
        }
        let kind = if kind.is_dir() {
            dirs.push(ScannedDir {
                cipher: path.join(&name),
                parent: Some((index, entries.len())),
                id: Ok(None),
                entries: Vec::new(),
                orphans: Vec::new(),
            });
            EntryKind::Dir(dirs.len() - 1)
        } else if kind.is_file() {
            EntryKind::File
        } else {
            EntryKind::Other
        };
        let full = encrypted.then(|| {
            full_cipher_name(dir.as_fd(), name.as_bytes()).map(std::borrow::Cow::into_owned)
        });
        entries.push(ScannedEntry {
            disk: name,
            kind,
            full,
        });
    }
    let scanned = &mut dirs[index];
    if encrypted {
        scanned.id = read_dir_id(dir.as_fd());
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
