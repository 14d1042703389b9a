//! The sealed parts of a node besides its name (encrypted names): a symlink's target, and the
//! names and values of its `user.` extended attributes. They need no other directory to be
//! judged, so each node's are read and opened as the walk reads the disk; what does not open
//! is one [`SealedDamage`], one line of `fsck`'s report.

use super::{PlainPath, Tree, write_paths};
use crate::format::{NameCipher, NameError};
use crate::fs::naming::{DIR_ID_XATTR, USER_XATTR, XATTR_MAX};
use crate::sys;
use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// A node whose symlink target or `user.` extended attribute does not read back. Displays as
/// one line of `fsck`'s report: cipher path, plaintext path, what is wrong.
#[derive(Debug)]
pub struct SealedDamage {
    /// The node's path in the cipher directory.
    pub cipher: PathBuf,
    /// Its path through a mount.
    pub plain: PlainPath,
    /// What is wrong.
    pub fault: SealedFault,
}

/// What is wrong with a node's symlink target or extended attributes.
#[derive(Debug)]
pub enum SealedFault {
    /// The symlink's target does not decrypt: the link reads EIO through a mount.
    Target(NameError),
    /// A `user.` extended attribute whose name does not decrypt: a mount does not list it.
    XattrName {
        /// Its name as stored, `user.` included.
        stored: OsString,
        /// Why it does not decrypt.
        fault: NameError,
    },
    /// A `user.` extended attribute whose value does not open: a mount reads it as EIO.
    XattrValue {
        /// Its plaintext name, `user.` included.
        plain: OsString,
        /// Why the value does not open.
        fault: NameError,
    },
    /// The target or the extended attributes cannot be read from the cipher directory.
    Unreadable {
        /// What: "its symlink target", "its extended attributes", "extended attribute ...".
        what: String,
        /// The OS error.
        error: io::Error,
    },
}

impl fmt::Display for SealedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealedFault::Target(fault) => write!(f, "symlink target does not decrypt: {fault}"),
            SealedFault::XattrName { stored, fault } => write!(
                f,
                "extended attribute stored as {:?}: name does not decrypt: {fault}",
                stored.to_string_lossy()
            ),
            SealedFault::XattrValue { plain, fault } => write!(
                f,
                "extended attribute {:?}: value does not decrypt: {fault}",
                plain.to_string_lossy()
            ),
            SealedFault::Unreadable { what, error } => write!(f, "{what} cannot be read: {error}"),
        }
    }
}

impl SealedDamage {
    /// Its cipher path followed by its plaintext path, as its report line starts.
    pub fn location(&self) -> impl fmt::Display + '_ {
        struct Location<'a>(&'a SealedDamage);
        impl fmt::Display for Location<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_paths(f, &self.0.cipher, &self.0.plain)
            }
        }
        Location(self)
    }
}

impl fmt::Display for SealedDamage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location(), self.fault)
    }
}

/// What reading one node's sealed parts found.
#[derive(Debug, Default)]
pub(super) struct SealedRead {
    /// Symlink targets read (0 or 1).
    targets: u64,
    /// `user.` extended attributes read.
    xattrs: u64,
    /// Those that do not read back.
    faults: Vec<SealedFault>,
}

impl SealedRead {
    /// Adds what was read to `tree`'s counts and its faults to [`Tree::sealed_damage`], for the
    /// node at `cipher`, shown through a mount at `plain`.
    pub(super) fn note(self, tree: &mut Tree, cipher: &Path, plain: PlainPath) {
        tree.targets += self.targets;
        tree.xattrs += self.xattrs;
        tree.sealed_damage
            .extend(self.faults.into_iter().map(|fault| SealedDamage {
                cipher: cipher.to_path_buf(),
                plain: plain.clone(),
                fault,
            }));
    }
}

/// Reads and opens the sealed parts of nodes, one buffer for every node.
pub(super) struct SealedReader<'a> {
    cipher: &'a NameCipher,
    buf: Vec<u8>,
}

/// True for an error that means the node, or one attribute, went away while it was read (a
/// directory walked while mounted): nothing to report.
fn gone(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::ENOENT | libc::ENODATA))
}

impl<'a> SealedReader<'a> {
    pub(super) fn new(cipher: &'a NameCipher) -> Self {
        SealedReader {
            cipher,
            buf: vec![0; XATTR_MAX],
        }
    }

    /// The target (of a symlink) and `user.` extended attributes of the node at `path`,
    /// opened. Symlinks are not followed.
    pub(super) fn read(&mut self, path: &Path, symlink: bool) -> SealedRead {
        let mut read = SealedRead::default();
        if symlink {
            match std::fs::read_link(path) {
                Ok(target) => {
                    read.targets += 1;
                    if let Err(fault) = self.cipher.decrypt_target(target.as_os_str().as_bytes()) {
                        read.faults.push(SealedFault::Target(fault));
                    }
                }
                Err(e) if gone(&e) => return read,
                Err(error) => read.faults.push(SealedFault::Unreadable {
                    what: "its symlink target".into(),
                    error,
                }),
            }
        }
        if let Err(error) = self.read_xattrs(path, &mut read) {
            read.faults.push(SealedFault::Unreadable {
                what: "its extended attributes".into(),
                error,
            });
        }
        read
    }

    fn read_xattrs(&mut self, path: &Path, read: &mut SealedRead) -> io::Result<()> {
        let cpath = sys::cstr(path.as_os_str())?;
        let list = match sys::listxattr(&cpath, &mut self.buf, true) {
            Ok(n) => self.buf[..n].to_vec(),
            Err(e) if gone(&e) => return Ok(()),
            // A backing filesystem without extended attributes has none to check.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(()),
            Err(e) => return Err(e),
        };
        let sealed = list
            .split(|&b| b == 0)
            .filter(|name| name.starts_with(USER_XATTR) && *name != DIR_ID_XATTR.to_bytes());
        for stored in sealed {
            read.xattrs += 1;
            let plain = match self.cipher.decrypt_xattr_name(&stored[USER_XATTR.len()..]) {
                Ok(plain) => [USER_XATTR, &plain].concat(),
                Err(fault) => {
                    read.faults.push(SealedFault::XattrName {
                        stored: OsStr::from_bytes(stored).to_os_string(),
                        fault,
                    });
                    continue;
                }
            };
            let plain = OsString::from_vec(plain);
            let Ok(name) = CString::new(stored) else {
                continue;
            };
            let value = match sys::getxattr(&cpath, &name, &mut self.buf, true) {
                Ok(n) => &self.buf[..n],
                Err(e) if gone(&e) => continue,
                Err(error) => {
                    read.faults.push(SealedFault::Unreadable {
                        what: format!("extended attribute {:?}", plain.to_string_lossy()),
                        error,
                    });
                    continue;
                }
            };
            // The value is bound to the name as stored, `user.` included: what a mount seals
            // and opens (src/fs/naming.rs, `disk_xattr_value` and `shown_xattr_value`).
            if let Err(fault) = self.cipher.open_xattr_value(stored, value) {
                read.faults.push(SealedFault::XattrValue { plain, fault });
            }
        }
        Ok(())
    }
}
