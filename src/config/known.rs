//! The user's record of which KMS endpoint each remote cipher directory uses
//! (`$XDG_CONFIG_HOME/kmsfs/known-endpoints.json`, the known_hosts idea).
//!
//! Whoever can write a cipher directory can change its `kmsfs.conf`, so the endpoint named there
//! is trusted only when it matches what `kmsfs init` (or a mount with `--kms URL`) recorded for
//! the directory's fs-id here. [`check`] runs before any request is sent.

use super::ConfigError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// File name of the record inside `$XDG_CONFIG_HOME/kmsfs/`.
pub const KNOWN_ENDPOINTS_NAME: &str = "known-endpoints.json";

/// What is recorded for one cipher directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownDirectory {
    /// The KMS endpoint, normalized; several as `--kms` takes them (`URL1,URL2`).
    pub endpoint: String,
    /// Where the directory was when recorded (informative only).
    pub path: PathBuf,
}

/// The whole record: cipher directories by fs-id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownEndpoints {
    /// fs-id (hex) → directory.
    pub directories: BTreeMap<String, KnownDirectory>,
}

/// `$XDG_CONFIG_HOME/kmsfs/known-endpoints.json`, else `~/.config/kmsfs/known-endpoints.json`.
pub fn known_endpoints_path() -> PathBuf {
    super::user_config_dir().join(KNOWN_ENDPOINTS_NAME)
}

impl KnownEndpoints {
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

/// Records `endpoint` as the KMS of the directory `fs_id` at `dir`.
pub fn record(fs_id: &str, endpoint: &str, dir: &Path) -> Result<(), ConfigError> {
    let path = known_endpoints_path();
    let mut known = KnownEndpoints::load(&path)?;
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    known.directories.insert(
        fs_id.to_string(),
        KnownDirectory {
            endpoint: endpoint.to_string(),
            path: dir,
        },
    );
    known.save(&path)
}

/// The known-endpoint rule. `endpoint` is what the directory's `kmsfs.conf` names (normalized),
/// `named` what the user gave with `--kms` (normalized), if anything.
///
/// With `named`: it must equal `endpoint`, and the record is updated. Without: the record must
/// hold `endpoint` for `fs_id`.
pub fn check(
    dir: &Path,
    fs_id: &str,
    endpoint: &str,
    named: Option<&str>,
) -> Result<(), ConfigError> {
    if let Some(named) = named {
        if named != endpoint {
            return Err(ConfigError::EndpointMismatch {
                dir: dir.to_path_buf(),
                named: named.to_string(),
                endpoint: endpoint.to_string(),
            });
        }
        return record(fs_id, endpoint, dir);
    }
    let known = KnownEndpoints::load(&known_endpoints_path())?;
    match known.directories.get(fs_id) {
        Some(entry) if entry.endpoint == endpoint => Ok(()),
        Some(entry) => Err(ConfigError::EndpointChanged {
            dir: dir.to_path_buf(),
            endpoint: endpoint.to_string(),
            recorded: entry.endpoint.clone(),
        }),
        None => Err(ConfigError::EndpointUnknown {
            dir: dir.to_path_buf(),
            endpoint: endpoint.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_and_atomic_save() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join(KNOWN_ENDPOINTS_NAME);
        assert_eq!(
            KnownEndpoints::load(&path).expect("absent"),
            KnownEndpoints::default()
        );
        let mut known = KnownEndpoints::default();
        known.directories.insert(
            "ab".repeat(16),
            KnownDirectory {
                endpoint: "http://127.0.0.1:1/v2".into(),
                path: "/c".into(),
            },
        );
        known.save(&path).expect("saves");
        assert_eq!(KnownEndpoints::load(&path).expect("loads"), known);
        std::fs::write(&path, "{").expect("damage");
        let err = KnownEndpoints::load(&path).unwrap_err().to_string();
        assert!(err.contains("is damaged"), "{err}");
    }

    #[test]
    fn a_save_that_fails_names_the_record_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(KNOWN_ENDPOINTS_NAME);
        let mut new = KnownEndpoints::default();
        new.directories.insert(
            "cd".repeat(16),
            KnownDirectory {
                endpoint: "http://127.0.0.1:2/v2".into(),
                path: "/d".into(),
            },
        );
        // A non-empty directory stands where the record goes: the rename fails after the
        // temporary file was written.
        std::fs::create_dir(&path).expect("mkdir");
        std::fs::write(path.join("keep"), b"").expect("write");
        let err = new.save(&path).expect_err("a directory is in the way");
        assert!(
            err.to_string()
                .starts_with(&format!("cannot access {}: ", path.display())),
            "{err}"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("lists").collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");

        // Its directory cannot be made: a file stands where it should be.
        let blocked = dir.path().join("file");
        std::fs::write(&blocked, b"").expect("write");
        let inside = blocked.join(KNOWN_ENDPOINTS_NAME);
        let err = new.save(&inside).expect_err("no directory");
        assert!(
            err.to_string().contains(&inside.display().to_string()),
            "{err}"
        );
    }
}
