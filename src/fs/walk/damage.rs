//! What a walk reports about names: one [`BadName`] per name that does not read back, or per
//! directory whose names cannot be read; each displays as one line of `fsck`'s report.

use crate::format::DIR_ID_FILE;
use crate::fs::NameFault;
use crate::fs::naming::DIR_ID_XATTR;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

/// A name that does not read back, or a directory whose names cannot be read. Displays as one
/// line of `fsck`'s report.
#[derive(Debug)]
pub struct BadName {
    /// The entry's cipher path; the directory's own, for a fault of a whole directory.
    pub cipher: PathBuf,
    /// The plaintext path of the directory the entry is in (of the directory itself, for a
    /// fault of a whole directory); `None` when a name on its path does not read.
    pub dir: Option<PathBuf>,
    /// What is wrong.
    pub fault: NameDamage,
}

/// What is wrong with a name, or with a whole directory's names.
#[derive(Debug)]
pub enum NameDamage {
    /// One name does not read back.
    Name(NameFault),
    /// One name decrypts with the id of directory `from`, where it reads as `plain`: it was
    /// moved from there by hand (a rename through a mount makes a new cipher name).
    MovedFrom {
        /// The directory whose id opens it.
        from: DirRef,
        /// Its plaintext name there.
        plain: OsString,
    },
    /// A directory with entries and no [`DIR_ID_FILE`].
    NoDirId {
        /// Its names, none of which can be read.
        names: u64,
    },
    /// A directory whose [`DIR_ID_FILE`] cannot be read or parsed.
    DirIdUnreadable {
        /// Why.
        fault: NameFault,
        /// Its names, none of which can be read.
        names: u64,
    },
    /// A directory whose [`DIR_ID_FILE`] holds the same id as that of `other`, whose names
    /// decrypt with it: a copy.
    DirIdCopied {
        /// The directory the id belongs to.
        other: DirRef,
        /// Its names, none of which can be read.
        names: u64,
    },
    /// A directory whose names decrypt with the id in the [`DIR_ID_FILE`] of `other`, not with
    /// its own.
    DirIdOf {
        /// The directory that holds its id.
        other: DirRef,
        /// True when `other`'s names decrypt with this directory's id: the files were swapped.
        swapped: bool,
        /// Its names, none of which can be read.
        names: u64,
    },
    /// A directory none of whose names decrypts, with its id or with any other directory's.
    DirIdWrong {
        /// Its names, none of which can be read.
        names: u64,
    },
    /// A directory whose [`DIR_ID_FILE`] link does not hold the id of the copy in its extended
    /// attribute. The mount reads the copy, so its names read; a copy of the cipher directory
    /// without extended attributes would read them with the link, and lose them.
    IdLink(IdLinkFault),
}

/// How a directory's [`DIR_ID_FILE`] link disagrees with the copy of its id.
#[derive(Debug)]
pub enum IdLinkFault {
    /// There is no link.
    Missing,
    /// The link holds another id.
    OtherId,
    /// The link cannot be read, does not parse, or is not a link.
    Unreadable(NameFault),
}

/// A directory named in a report: by its plaintext path when it reads, else by its cipher path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirRef {
    /// Its path in the cipher directory.
    pub cipher: PathBuf,
    /// Its path from the root of the mount, if every name on it reads.
    pub plain: Option<PathBuf>,
}

impl fmt::Display for DirRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.plain {
            Some(plain) => write!(f, "{}", plain.display()),
            None => write!(f, "{}", self.cipher.display()),
        }
    }
}

impl NameDamage {
    /// True for a fault of a whole directory, false for one name's.
    pub fn is_directory_wide(&self) -> bool {
        !matches!(self, NameDamage::Name(_) | NameDamage::MovedFrom { .. })
    }
}

impl fmt::Display for NameDamage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lost = |f: &mut fmt::Formatter<'_>, names: u64| match names {
            0 => Ok(()),
            1 => write!(f, "; its one name cannot be read"),
            n => write!(f, "; its {n} names cannot be read"),
        };
        match self {
            NameDamage::Name(fault) => write!(f, "{fault}"),
            NameDamage::MovedFrom { from, plain } => write!(
                f,
                "moved here from {from}, where it reads {:?}",
                plain.to_string_lossy()
            ),
            NameDamage::NoDirId { names } => {
                write!(f, "has entries but no {DIR_ID_FILE}")?;
                lost(f, *names)
            }
            NameDamage::DirIdUnreadable {
                fault: NameFault::Io(e),
                names,
            } => {
                write!(f, "its {DIR_ID_FILE} cannot be read: {e}")?;
                lost(f, *names)
            }
            NameDamage::DirIdUnreadable { fault, names } => {
                write!(f, "{fault}")?;
                lost(f, *names)
            }
            NameDamage::DirIdCopied { other, names } => {
                write!(f, "its {DIR_ID_FILE} is a copy of that of {other}")?;
                lost(f, *names)
            }
            NameDamage::DirIdOf {
                other,
                swapped: true,
                names,
            } => {
                write!(f, "its {DIR_ID_FILE} and that of {other} are swapped")?;
                lost(f, *names)?;
                write!(f, " (they decrypt with the id in the other's)")
            }
            NameDamage::DirIdOf {
                other,
                swapped: false,
                names,
            } => {
                write!(f, "its {DIR_ID_FILE} is not its own")?;
                lost(f, *names)?;
                write!(f, " (they decrypt with the id in that of {other})")
            }
            NameDamage::DirIdWrong { names } => {
                write!(
                    f,
                    "its {DIR_ID_FILE} is damaged or not its own: no name decrypts with it"
                )?;
                lost(f, *names)
            }
            NameDamage::IdLink(fault) => {
                match fault {
                    IdLinkFault::Missing => write!(f, "its {DIR_ID_FILE} is missing")?,
                    IdLinkFault::OtherId => {
                        write!(f, "its {DIR_ID_FILE} holds another id than its copy")?;
                    }
                    IdLinkFault::Unreadable(NameFault::Io(e)) => {
                        write!(f, "its {DIR_ID_FILE} cannot be read: {e}")?;
                    }
                    IdLinkFault::Unreadable(fault) => write!(f, "{fault}")?,
                }
                write!(
                    f,
                    "; its names read with the copy in {}, as the mount reads them",
                    DIR_ID_XATTR.to_string_lossy()
                )
            }
        }
    }
}

impl fmt::Display for BadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.fault.is_directory_wide() {
            "directory"
        } else {
            "name in"
        };
        write!(f, "{}: ", self.cipher.display())?;
        match (&self.dir, self.fault.is_directory_wide()) {
            (Some(dir), _) => write!(f, "{what} {}: ", dir.display())?,
            (None, true) => write!(f, "directory under an unreadable name: ")?,
            (None, false) => write!(f, "name in a directory under an unreadable name: ")?,
        }
        write!(f, "{}", self.fault)
    }
}
