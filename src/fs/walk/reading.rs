//! The decrypting half of a walk: every name with its own directory's id, then, for those that
//! do not open, the diagnosis (moved from another directory, a directory id swapped, copied,
//! damaged or missing).

use super::{BadName, DirRef, EntryKind, NameDamage, PlainPath, ScannedDir, Tree, TreeFile};
use crate::format::{DirId, NameCipher, NameError};
use crate::fs::NameFault;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

/// The most names of one directory that are tried with every other directory's id (a name
/// that does not open costs one decryption per directory of the tree).
const SEARCHED_PER_DIR: usize = 64;

/// One name decrypted with its own directory's id; `None` when not tried (no id, or no full
/// cipher name).
type OwnRead = Option<Result<Vec<u8>, NameError>>;

/// The names of a scanned tree, decrypted.
pub(super) struct Reading<'a> {
    cipher: &'a NameCipher,
    dirs: Vec<ScannedDir>,
    /// By directory and entry: its plaintext name with its own directory's id.
    own: Vec<Vec<OwnRead>>,
    /// Directories by their id (as the mount reads it), in walk order.
    by_id: HashMap<DirId, Vec<usize>>,
}

impl<'a> Reading<'a> {
    pub(super) fn new(dirs: Vec<ScannedDir>, cipher: &'a NameCipher) -> Self {
        let own = dirs
            .iter()
            .map(|dir| {
                dir.entries
                    .iter()
                    .map(|entry| match (&dir.id, &entry.full) {
                        (Ok(Some(id)), Some(Ok(full))) => Some(cipher.decrypt_name(id, full)),
                        _ => None,
                    })
                    .collect()
            })
            .collect();
        let mut by_id: HashMap<DirId, Vec<usize>> = HashMap::new();
        for (index, dir) in dirs.iter().enumerate() {
            if let Ok(Some(id)) = dir.id {
                by_id.entry(id).or_default().push(index);
            }
        }
        Reading {
            cipher,
            dirs,
            own,
            by_id,
        }
    }

    fn id(&self, dir: usize) -> Option<&DirId> {
        self.dirs[dir].id.as_ref().ok().and_then(Option::as_ref)
    }

    /// True when some name of `dir` decrypts with its own id.
    fn reads_any(&self, dir: usize) -> bool {
        self.own[dir].iter().any(|name| matches!(name, Some(Ok(_))))
    }

    /// The first full cipher name of `dir` that does not decrypt with its id, when none does.
    fn none_read(&self, dir: usize) -> Option<&[u8]> {
        if self.reads_any(dir) {
            return None;
        }
        self.dirs[dir]
            .entries
            .iter()
            .zip(&self.own[dir])
            .find_map(|(entry, own)| match (&entry.full, own) {
                (Some(Ok(full)), Some(Err(_))) => Some(full.as_slice()),
                _ => None,
            })
    }

    /// The directory other than `dir` whose id opens `full`, and the plaintext name; one
    /// whose own names read first.
    fn opened_elsewhere(&self, dir: usize, full: &[u8]) -> Option<(usize, Vec<u8>)> {
        let own_id = self.id(dir);
        let mut found: Option<(usize, Vec<u8>)> = None;
        for (id, holders) in &self.by_id {
            if Some(id) == own_id {
                continue;
            }
            if let Ok(plain) = self.cipher.decrypt_name(id, full) {
                let holder = holders
                    .iter()
                    .copied()
                    .find(|&h| self.reads_any(h))
                    .unwrap_or(holders[0]);
                if found.as_ref().is_none_or(|(best, _)| holder < *best) {
                    found = Some((holder, plain));
                }
            }
        }
        found
    }

    /// What is wrong with `dir` as a whole, if its names cannot be read for a reason of the
    /// directory's (its id).
    fn directory_fault(&mut self, dir: usize, plain: &[Option<PathBuf>]) -> Option<NameDamage> {
        let names = self.dirs[dir].entries.len() as u64;
        let dir_ref = |other: usize| DirRef {
            cipher: self.dirs[other].cipher.clone(),
            plain: plain[other].clone(),
        };
        match &self.dirs[dir].id {
            Err(_) => {
                let fault = std::mem::replace(&mut self.dirs[dir].id, Ok(None))
                    .expect_err("BUG: matched as an error");
                return Some(NameDamage::DirIdUnreadable { fault, names });
            }
            Ok(None) if names > 0 || !self.dirs[dir].orphans.is_empty() => {
                return Some(NameDamage::NoDirId { names });
            }
            Ok(None) => return None,
            Ok(Some(_)) => {}
        }
        let first = self.none_read(dir)?;
        let id = *self.id(dir).expect("BUG: the directory has an id");
        if let Some(&other) = self.by_id[&id]
            .iter()
            .find(|&&o| o != dir && self.reads_any(o))
        {
            return Some(NameDamage::DirIdCopied {
                other: dir_ref(other),
                names,
            });
        }
        match self.opened_elsewhere(dir, first) {
            Some((other, _)) => {
                let theirs = self.none_read(other)?;
                let swapped = self.cipher.decrypt_name(&id, theirs).is_ok();
                Some(NameDamage::DirIdOf {
                    other: dir_ref(other),
                    swapped,
                    names,
                })
            }
            None => {
                // Two or more names, of which none opens anywhere (as far as searched): no
                // name was moved here, the id itself is wrong.
                let mut tried = self.dirs[dir]
                    .entries
                    .iter()
                    .zip(&self.own[dir])
                    .filter_map(|(entry, own)| match (&entry.full, own) {
                        (Some(Ok(full)), Some(_)) => Some(full),
                        _ => None,
                    })
                    .take(SEARCHED_PER_DIR)
                    .peekable();
                tried.next();
                let lost = tried.peek().is_some()
                    && tried.all(|full| self.opened_elsewhere(dir, full).is_none());
                lost.then_some(NameDamage::DirIdWrong { names })
            }
        }
    }

    /// The plaintext name of entry `entry` of `dir` (whose own id is sound), or `None` after
    /// noting in `tree` why it does not read. `searched` counts the names of `dir` tried with
    /// other directories' ids.
    fn entry_name(
        &mut self,
        dir: usize,
        entry: usize,
        plain: &[Option<PathBuf>],
        searched: &mut usize,
        tree: &mut Tree,
    ) -> Option<Vec<u8>> {
        let fault = match self.own[dir][entry].clone() {
            Some(Ok(name)) => return Some(name),
            Some(Err(NameError::Auth)) if *searched < SEARCHED_PER_DIR => {
                *searched += 1;
                let moved = match &self.dirs[dir].entries[entry].full {
                    Some(Ok(full)) => self.opened_elsewhere(dir, full),
                    _ => None,
                };
                match moved {
                    Some((from, name)) => NameDamage::MovedFrom {
                        from: DirRef {
                            cipher: self.dirs[from].cipher.clone(),
                            plain: plain[from].clone(),
                        },
                        plain: OsString::from_vec(name),
                    },
                    None => NameDamage::Name(NameFault::Cipher(NameError::Auth)),
                }
            }
            Some(Err(e)) => NameDamage::Name(NameFault::Cipher(e)),
            None => match self.dirs[dir].entries[entry].full.take() {
                Some(Err(fault)) => NameDamage::Name(fault),
                // Not tried for want of an id: a fault of the directory, noted already.
                _ => return None,
            },
        };
        tree.bad_names.push(BadName {
            cipher: self.dirs[dir]
                .cipher
                .join(&self.dirs[dir].entries[entry].disk),
            dir: plain[dir].clone(),
            fault,
        });
        None
    }

    /// The plaintext path of every directory whose path reads: a name that decrypts with its
    /// own directory's id, under a parent whose path reads.
    fn plain_paths(&self) -> Vec<Option<PathBuf>> {
        let mut plain: Vec<Option<PathBuf>> = vec![None; self.dirs.len()];
        plain[0] = Some(PathBuf::from("/"));
        for dir in 1..self.dirs.len() {
            // A parent comes before its children.
            if let Some((parent, entry)) = self.dirs[dir].parent
                && let (Some(parent_plain), Some(Ok(name))) =
                    (&plain[parent], &self.own[parent][entry])
            {
                plain[dir] = Some(parent_plain.join(OsStr::from_bytes(name)));
            }
        }
        plain
    }

    pub(super) fn into_tree(mut self) -> Tree {
        let mut tree = Tree::default();
        let plain = self.plain_paths();
        for dir in 0..self.dirs.len() {
            let dir_plain = plain[dir]
                .clone()
                .map_or(PlainPath::Unreadable, PlainPath::Known);
            std::mem::take(&mut self.dirs[dir].sealed).note(
                &mut tree,
                &self.dirs[dir].cipher,
                dir_plain,
            );
            tree.names += self.dirs[dir].entries.len() as u64;
            tree.orphans.append(&mut self.dirs[dir].orphans);
            if let Some(link) = self.dirs[dir].link.take() {
                tree.bad_names.push(BadName {
                    cipher: self.dirs[dir].cipher.clone(),
                    dir: plain[dir].clone(),
                    fault: NameDamage::IdLink(link),
                });
            }
            let dir_fault = self.directory_fault(dir, &plain);
            let lost = dir_fault.is_some();
            if let Some(fault) = dir_fault {
                tree.bad_names.push(BadName {
                    cipher: self.dirs[dir].cipher.clone(),
                    dir: plain[dir].clone(),
                    fault,
                });
            }
            let mut searched = 0;
            for entry in 0..self.dirs[dir].entries.len() {
                let name = if lost {
                    None
                } else {
                    self.entry_name(dir, entry, &plain, &mut searched, &mut tree)
                };
                if name.is_none() {
                    tree.unreadable_names += 1;
                }
                let entry_plain = match (&plain[dir], &name) {
                    (Some(dir_plain), Some(name)) => {
                        PlainPath::Known(dir_plain.join(OsStr::from_bytes(name)))
                    }
                    _ => PlainPath::Unreadable,
                };
                let cipher = self.dirs[dir]
                    .cipher
                    .join(&self.dirs[dir].entries[entry].disk);
                let scanned = &mut self.dirs[dir].entries[entry];
                std::mem::take(&mut scanned.sealed).note(&mut tree, &cipher, entry_plain.clone());
                if scanned.kind == EntryKind::File {
                    tree.files.push(TreeFile {
                        cipher,
                        plain: entry_plain,
                    });
                }
            }
        }
        tree.files
            .sort_by(|a, b| (&a.plain, &a.cipher).cmp(&(&b.plain, &b.cipher)));
        tree.sealed_damage
            .sort_by(|a, b| (&a.plain, &a.cipher).cmp(&(&b.plain, &b.cipher)));
        // By plaintext directory (those under an unreadable name last), then cipher path: a
        // directory's own line comes before those of its names.
        tree.bad_names.sort_by(|a, b| {
            (a.dir.is_none(), &a.dir, &a.cipher).cmp(&(b.dir.is_none(), &b.dir, &b.cipher))
        });
        tree.orphans.sort();
        tree
    }
}
