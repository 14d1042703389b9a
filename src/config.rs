//! A cipher directory's `kmsfs.conf`: format version, filesystem id, block size, KMS backend and
//! key. No secret is ever written here. [`known`] keeps the user's record of trusted KMS
//! endpoints.

pub mod known;
pub mod passfiles;

use crate::format::FsId;
use crate::sys::durable::{self, Staging};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// File name of the configuration inside a cipher directory (hidden from the mount).
pub const CONF_NAME: &str = "kmsfs.conf";

/// File name of the configuration's temporary file while it is saved (hidden from the mount).
pub const CONF_TEMP_NAME: &str = ".kmsfs.conf.tmp";

/// Which KMS a cipher directory uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "kebab-case")]
pub enum KmsConfig {
    /// The in-process KMS over a sealed keystore file.
    Embedded {
        /// Path of the keystore.
        keystore: PathBuf,
    },
    /// An Exoscale-v2-compatible KMS over HTTP.
    Remote {
        /// API base URL, ending in `/v2`: the only one, or the first of `endpoints` (what builds
        /// that know a single endpoint use).
        endpoint: String,
        /// Every endpoint of the zone, in order, when there are several (none written when
        /// there is one, so a one-endpoint file is what it always was).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        endpoints: Vec<String>,
    },
}

impl KmsConfig {
    /// A remote backend at `endpoints` (normalized URLs, at least one).
    pub fn remote(endpoints: Vec<String>) -> Self {
        let endpoint = endpoints.first().cloned().unwrap_or_default();
        let endpoints = if endpoints.len() > 1 {
            endpoints
        } else {
            Vec::new()
        };
        KmsConfig::Remote {
            endpoint,
            endpoints,
        }
    }

    /// A remote backend's endpoints in the form `--kms` takes (`URL` or `URL1,URL2,...`);
    /// `None` for the embedded one. A list whose first entry is not `endpoint` is damage.
    pub fn remote_endpoints(&self) -> Option<Result<String, String>> {
        let KmsConfig::Remote {
            endpoint,
            endpoints,
        } = self
        else {
            return None;
        };
        Some(match endpoints.first() {
            None => Ok(endpoint.clone()),
            Some(first) if first == endpoint => Ok(endpoints.join(",")),
            Some(first) => Err(format!(
                "its endpoint {endpoint} is not the first of its endpoints ({first})"
            )),
        })
    }
}

/// The filesystem key of a directory whose names are encrypted, as the KMS wrapped it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedFsKey {
    /// The KMS key that wraps it.
    #[serde(rename = "key-id")]
    pub key_id: Uuid,
    /// The KMS ciphertext, base64.
    pub wrapped: String,
}

/// The newest format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 2;

/// The contents of `kmsfs.conf`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CipherConfig {
    /// On-disk format version: 1, or 2 (names may be encrypted).
    #[serde(rename = "format-version")]
    pub format_version: u32,
    /// Random filesystem id, hex.
    #[serde(rename = "fs-id")]
    pub fs_id: String,
    /// Plaintext bytes per block (4096).
    #[serde(rename = "block-size")]
    pub block_size: u32,
    /// The KMS backend.
    pub kms: KmsConfig,
    /// The KMS key that wraps new DEKs.
    #[serde(rename = "key-id")]
    pub key_id: Uuid,
    /// The filesystem key names are encrypted with (version 2); none: names are plaintext.
    #[serde(rename = "fs-key", default, skip_serializing_if = "Option::is_none")]
    pub fs_key: Option<WrappedFsKey>,
}

/// Why a configuration could not be read or written; each a plain sentence.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No `kmsfs.conf`.
    #[error(
        "{0} is not a kmsfs cipher directory (it has no kmsfs.conf); create one with `kmsfs init`"
    )]
    NotCipherDir(PathBuf),
    /// Unreadable or invalid `kmsfs.conf`.
    #[error("{path} is damaged: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The directory names a KMS endpoint never recorded for it.
    #[error(
        "{dir} names the KMS endpoint {endpoint}, which you never used with this directory; nothing was sent to it. If you trust it, name it on the command line: --kms {endpoint}"
    )]
    EndpointUnknown {
        /// The cipher directory.
        dir: PathBuf,
        /// The endpoint its kmsfs.conf names.
        endpoint: String,
    },
    /// The directory names another KMS endpoint than the recorded one.
    #[error(
        "{dir} now names the KMS endpoint {endpoint}, but you use it with {recorded}: its kmsfs.conf may have been tampered with, and nothing was sent. If you trust the new endpoint, name it on the command line: --kms {endpoint}"
    )]
    EndpointChanged {
        /// The cipher directory.
        dir: PathBuf,
        /// The endpoint its kmsfs.conf names.
        endpoint: String,
        /// The endpoint recorded for it.
        recorded: String,
    },
    /// `--kms` names another endpoint than the directory's kmsfs.conf.
    #[error(
        "--kms {named} is not the endpoint {endpoint} that {dir}/kmsfs.conf names; nothing was sent to either"
    )]
    EndpointMismatch {
        /// The cipher directory.
        dir: PathBuf,
        /// The endpoint given on the command line.
        named: String,
        /// The endpoint its kmsfs.conf names.
        endpoint: String,
    },
    /// An I/O error.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl CipherConfig {
    /// A new configuration with a random filesystem id.
    pub fn new(kms: KmsConfig, key_id: Uuid) -> Self {
        CipherConfig {
            format_version: FORMAT_VERSION,
            fs_id: crate::format::hex(&crate::crypto::random_array::<16>()),
            block_size: crate::format::BLOCK_PLAIN_LEN as u32,
            kms,
            key_id,
            fs_key: None,
        }
    }

    /// Reads `DIR/kmsfs.conf`.
    pub fn load(dir: &Path) -> Result<Self, ConfigError> {
        let path = dir.join(CONF_NAME);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::NotCipherDir(dir.to_path_buf()));
            }
            Err(source) => return Err(ConfigError::Io { path, source }),
        };
        let invalid = |reason: String| ConfigError::Invalid {
            path: path.clone(),
            reason,
        };
        let config: CipherConfig =
            serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if !(1..=FORMAT_VERSION).contains(&config.format_version) {
            return Err(invalid(format!(
                "format version {} is not supported (this build reads versions 1 to {FORMAT_VERSION})",
                config.format_version
            )));
        }
        if config.format_version == 1 && config.fs_key.is_some() {
            return Err(invalid(
                "format version 1 has plaintext names, yet an fs-key is set".into(),
            ));
        }
        if config.block_size != crate::format::BLOCK_PLAIN_LEN as u32 {
            return Err(invalid(format!(
                "block size {} is not supported",
                config.block_size
            )));
        }
        config.fs_id().map_err(invalid)?;
        Ok(config)
    }

    /// The filesystem id as bytes.
    pub fn fs_id(&self) -> Result<FsId, String> {
        let mut out = FsId::default();
        ::hex::decode_to_slice(&self.fs_id, &mut out)
            .map_err(|_| format!("fs-id must be 32 hex digits, found {:?}", self.fs_id))?;
        Ok(out)
    }

    /// Writes `DIR/kmsfs.conf` atomically and durably through [`CONF_TEMP_NAME`] (temporary
    /// file, fsync, rename, fsync of the directory).
    pub fn save(&self, dir: &Path) -> Result<(), ConfigError> {
        let path = dir.join(CONF_NAME);
        let mut text = serde_json::to_string_pretty(self).expect("BUG: config always serializes");
        text.push('\n');
        durable::replace(&path, text.as_bytes(), Staging::Named(CONF_TEMP_NAME))
            .map_err(|source| ConfigError::Io { path, source })
    }
}

/// The default embedded keystore: `$XDG_DATA_HOME/kmsfs/keystore`, else
/// `~/.local/share/kmsfs/keystore`.
pub fn default_keystore_path() -> PathBuf {
    data_home().join("kmsfs").join("keystore")
}

fn data_home() -> PathBuf {
    match std::env::var_os("XDG_DATA_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => home().join(".local").join("share"),
    }
}

/// `$XDG_STATE_HOME`, else `~/.local/state`: where daemon logs go.
pub fn state_home() -> PathBuf {
    match std::env::var_os("XDG_STATE_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => home().join(".local").join("state"),
    }
}

/// `$HOME`, else `/root`.
/// Reads a record of the user's own configuration (JSON) at `path`; the default when there is
/// none.
fn load_record<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(source) => Err(ConfigError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes a record of the user's own configuration at `path` atomically and durably
/// (temporary file, fsync, rename, fsync of the directory), making its directory if needed.
fn save_record<T: serde::Serialize>(path: &Path, record: &T) -> Result<(), ConfigError> {
    let io = |source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(durable::parent_dir(path)).map_err(io)?;
    let mut text = serde_json::to_string_pretty(record).expect("BUG: records always serialize");
    text.push('\n');
    durable::replace(path, text.as_bytes(), Staging::Unique).map_err(io)
}

/// `$XDG_CONFIG_HOME/kmsfs`, else `~/.config/kmsfs`: the user's own records (which endpoint and
/// which passphrase file each directory or keystore uses), never inside a cipher directory.
pub fn user_config_dir() -> PathBuf {
    let config_home = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => home().join(".config"),
    };
    config_home.join("kmsfs")
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = CipherConfig::new(
            KmsConfig::Embedded {
                keystore: "/tmp/ks".into(),
            },
            Uuid::new_v4(),
        );
        config.save(dir.path()).expect("saves");
        assert_eq!(CipherConfig::load(dir.path()).expect("loads"), config);
        assert_eq!(config.fs_id().expect("hex").len(), 16);
    }

    #[test]
    fn missing_and_damaged_configs_are_plain_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = CipherConfig::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is not a kmsfs cipher directory"), "{err}");
        std::fs::write(dir.path().join(CONF_NAME), "{not json").expect("write");
        let err = CipherConfig::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is damaged"), "{err}");
    }

    fn embedded() -> CipherConfig {
        CipherConfig::new(
            KmsConfig::Embedded {
                keystore: "/tmp/ks".into(),
            },
            Uuid::new_v4(),
        )
    }

    #[test]
    fn a_save_that_fails_names_the_file_and_keeps_the_old_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = embedded();
        old.save(dir.path()).expect("saves");
        // The temporary file's name is taken by a directory: the new configuration cannot be
        // staged.
        std::fs::create_dir(dir.path().join(CONF_TEMP_NAME)).expect("mkdir");
        let err = embedded().save(dir.path()).expect_err("cannot stage");
        let conf = dir.path().join(CONF_NAME);
        assert!(
            err.to_string()
                .starts_with(&format!("cannot access {}: ", conf.display())),
            "{err}"
        );
        assert_eq!(CipherConfig::load(dir.path()).expect("loads"), old);
    }

    #[test]
    fn a_save_into_a_missing_directory_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let absent = dir.path().join("absent");
        let err = embedded().save(&absent).expect_err("no directory");
        let conf = absent.join(CONF_NAME);
        assert!(
            err.to_string()
                .starts_with(&format!("cannot access {}: ", conf.display())),
            "{err}"
        );
        assert!(!absent.exists());
    }

    #[test]
    fn an_fs_id_that_is_not_32_hex_digits_is_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        for bad in ["ab", &"g".repeat(32), &"ab".repeat(17), &"é".repeat(16)] {
            let mut config = embedded();
            config.fs_id = bad.to_string();
            config.save(dir.path()).expect("saves");
            let err = CipherConfig::load(dir.path()).expect_err("bad fs-id");
            assert!(
                err.to_string().contains("fs-id must be 32 hex digits"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn remote_configs_name_only_the_endpoint() {
        let config = CipherConfig::new(
            KmsConfig::remote(vec!["http://127.0.0.1:8400/v2".into()]),
            Uuid::new_v4(),
        );
        let text = serde_json::to_string(&config).expect("serializes");
        assert!(
            text.contains(r#""kms":{"backend":"remote","endpoint":"http://127.0.0.1:8400/v2"}"#),
            "{text}"
        );
        assert_eq!(
            config.kms.remote_endpoints(),
            Some(Ok("http://127.0.0.1:8400/v2".into()))
        );
    }

    #[test]
    fn several_endpoints_keep_the_first_where_one_endpoint_always_was() {
        let (a, b) = ("http://127.0.0.1:1/v2", "http://127.0.0.1:2/v2");
        let config = CipherConfig::new(KmsConfig::remote(vec![a.into(), b.into()]), Uuid::new_v4());
        let dir = tempfile::tempdir().expect("tempdir");
        config.save(dir.path()).expect("saves");
        let loaded = CipherConfig::load(dir.path()).expect("loads");
        assert_eq!(loaded, config);
        assert_eq!(loaded.kms.remote_endpoints(), Some(Ok(format!("{a},{b}"))));
        // What a build that knows one endpoint reads: the first.
        let text = std::fs::read_to_string(dir.path().join(CONF_NAME)).expect("read");
        let json: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(json["kms"]["endpoint"], a);

        let tampered = KmsConfig::Remote {
            endpoint: b.into(),
            endpoints: vec![a.into(), b.into()],
        };
        let err = tampered
            .remote_endpoints()
            .expect("remote")
            .expect_err("damage");
        assert!(err.contains("is not the first of its endpoints"), "{err}");
        let embedded = KmsConfig::Embedded {
            keystore: "/k".into(),
        };
        assert_eq!(embedded.remote_endpoints(), None);
    }
}
