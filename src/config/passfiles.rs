//! The user's record of which passphrase file opens each embedded keystore
//! (`$XDG_CONFIG_HOME/kmsfs/passphrase-files.json`), so that a keystore made with
//! `kmsfs init --passphrase-file FILE` is opened the same way later (by `kmsfs key`, `mount`,
//! `fsck`, `rewrap`, `passwd`) without naming the file again.
//!
//! It holds paths, never a passphrase, and lives in the user's own configuration: a cipher
//! directory's `kmsfs.conf`, which whoever can write the directory can change, names no
//! passphrase file.

use super::ConfigError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// File name of the record inside `$XDG_CONFIG_HOME/kmsfs/`.
pub const PASSPHRASE_FILES_NAME: &str = "passphrase-files.json";

/// The whole record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassphraseFiles {
    /// Keystore (absolute path) → its passphrase file (absolute path).
    pub keystores: BTreeMap<PathBuf, PathBuf>,
}

/// `$XDG_CONFIG_HOME/kmsfs/passphrase-files.json`, else `~/.config/kmsfs/...`.
pub fn passphrase_files_path() -> PathBuf {
    super::user_config_dir().join(PASSPHRASE_FILES_NAME)
}

impl PassphraseFiles {
    /// Reads the record at `path` (empty when there is none).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        super::load_record(path)
    }

    /// Writes the record atomically and durably (temporary file, fsync, rename, fsync of the
    /// directory).
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        super::save_record(path, self)
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The passphrase file recorded for the keystore at `keystore`, if any (an unreadable record
/// counts as none: it only saves typing).
pub fn recorded(keystore: &Path) -> Option<PathBuf> {
    let record = PassphraseFiles::load(&passphrase_files_path()).ok()?;
    record.keystores.get(&absolute(keystore)).cloned()
}

/// Records `file` as the passphrase file of `keystore`; with `None`, forgets the keystore's.
pub fn record(keystore: &Path, file: Option<&Path>) -> Result<(), ConfigError> {
    let path = passphrase_files_path();
    let mut record = PassphraseFiles::load(&path)?;
    let keystore = absolute(keystore);
    let changed = match file {
        Some(file) => record
            .keystores
            .insert(keystore, absolute(file))
            .is_none_or(|old| old != absolute(file)),
        None => record.keystores.remove(&keystore).is_some(),
    };
    if changed { record.save(&path) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_and_forgets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(PASSPHRASE_FILES_NAME);
        let mut record = PassphraseFiles::load(&path).expect("absent is empty");
        assert!(record.keystores.is_empty());
        record
            .keystores
            .insert("/k/keystore".into(), "/k/passphrase".into());
        record.save(&path).expect("save");
        let again = PassphraseFiles::load(&path).expect("load");
        assert_eq!(again, record);
        std::fs::write(&path, b"{ not json").expect("damage");
        assert!(PassphraseFiles::load(&path).is_err());
    }
}
