//! Where a zone's org records are persisted ([`Backend`]): sealed files in a data directory
//! (one server), or etcd (several servers of a zone). Both keep the same bytes per
//! organization (see [`super::super::org`]); this is the one place that knows the difference.

use super::super::ServerError;
use super::super::etcd::{CasError, EtcdStore, EtcdTarget};
use super::super::org;
use super::super::root::{self, RootKey};
use crate::crypto::SecretBytes;
use crate::kms::seal;
use crate::kms::{KeystoreError, KmsError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use uuid::Uuid;

/// One organization's persisted record: the sealed bytes and their revision (etcd's mod
/// revision; always 0 in the file store, where one writer exists).
pub(crate) struct Record {
    /// The organization.
    pub(crate) id: Uuid,
    /// The org file's bytes.
    pub(crate) bytes: Vec<u8>,
    /// The revision the bytes were read at.
    pub(crate) revision: i64,
}

/// Why a write of a record did not happen.
pub(crate) enum PutError {
    /// Another server changed the record since it was read: here it is now.
    Lost(Option<Record>),
    /// The write failed (disk or etcd); nothing changed.
    Failed(KmsError),
}

/// The persistence of a zone's records.
pub(crate) enum Backend {
    /// `DIR/orgs/*.org`.
    File(PathBuf),
    /// A prefix in an etcd cluster.
    Etcd(Arc<EtcdStore>),
}

/// The answer of a change that the etcd store could not take: 503.
pub(crate) fn unavailable(detail: String) -> KmsError {
    KmsError::Unavailable {
        status: 503,
        title: "Service Unavailable".into(),
        detail,
    }
}

/// Creates the data directory (0700) and its `orgs/` directory.
pub(crate) fn create_dirs(dir: &Path) -> Result<(), ServerError> {
    use std::os::unix::fs::DirBuilderExt;
    let orgs = org::orgs_dir(dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&orgs)
        .map_err(|e| ServerError::io("create", &orgs, e))
}

/// Creates the data directory `dir` (0700) alone, for the audit log and `root.key` of a server
/// on etcd.
fn create_dir(dir: &Path) -> Result<(), ServerError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| ServerError::io("create", dir, e))
}

/// Every org file in `dir`, by id.
pub(crate) fn org_files(dir: &Path) -> Result<Vec<(Uuid, PathBuf)>, ServerError> {
    let orgs = org::orgs_dir(dir);
    let entries = std::fs::read_dir(&orgs).map_err(|e| ServerError::io("list", &orgs, e))?;
    Ok(entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let id = org::org_of_file_name(&e.file_name().to_string_lossy())?;
            Some((id, e.path()))
        })
        .collect())
}

impl Backend {
    /// Opens the file store in `dir` (creating it) and its root key.
    ///
    /// # Errors
    /// As [`RootKey::open_or_create`].
    pub(crate) fn open_dir(
        dir: &Path,
        passphrase: Option<&SecretBytes>,
    ) -> Result<(Self, RootKey), ServerError> {
        create_dirs(dir)?;
        let root = RootKey::open_or_create(dir, passphrase)?;
        Ok((Backend::File(dir.to_path_buf()), root))
    }

    /// Connects to the etcd store `target` and opens the zone's root key: from the passphrase
    /// and the KDF record in etcd (made on first use), or from `DIR/root.key`. Needs a tokio
    /// runtime; blocking.
    ///
    /// # Errors
    /// [`ServerError::Store`] when etcd cannot be reached; as [`RootKey::for_etcd`].
    pub(crate) fn open_etcd(
        dir: &Path,
        target: &EtcdTarget,
        passphrase: Option<&SecretBytes>,
    ) -> Result<(Self, RootKey), ServerError> {
        create_dir(dir)?;
        let etcd = EtcdStore::connect(target)?;
        let kdf_key = etcd.key("root.kdf");
        let place = etcd.place("root.kdf");
        let mut kdf = etcd.get(&kdf_key).map_err(ServerError::Store)?;
        let empty = etcd.count().map_err(ServerError::Store)? == 0;
        if let (Some(passphrase), None, true) = (passphrase, &kdf, empty) {
            let (_, record) = root::new_kdf_record(passphrase)?;
            // A server that makes it at the same moment wins; both then read the winner's.
            match etcd.compare_and_swap(&kdf_key, &record, 0) {
                Ok(_) | Err(CasError::Lost(_)) => {}
                Err(CasError::Unreachable(e)) => return Err(ServerError::Store(e)),
            }
            kdf = etcd.get(&kdf_key).map_err(ServerError::Store)?;
        }
        let root = RootKey::for_etcd(
            dir,
            passphrase,
            kdf.as_ref().map(|r| r.bytes.as_slice()),
            &place,
            empty,
        )?;
        Ok((Backend::Etcd(Arc::new(etcd)), root))
    }

    /// The etcd store, if this is one.
    pub(crate) fn etcd(&self) -> Option<&Arc<EtcdStore>> {
        match self {
            Backend::File(_) => None,
            Backend::Etcd(etcd) => Some(etcd),
        }
    }

    /// Where `org`'s record is, for messages.
    pub(crate) fn place(&self, org: Uuid) -> PathBuf {
        match self {
            Backend::File(dir) => org::org_path(dir, org),
            Backend::Etcd(etcd) => etcd.place(&format!("orgs/{org}")),
        }
    }

    /// Every record. Blocking.
    ///
    /// # Errors
    /// [`ServerError::Io`] or [`ServerError::Store`].
    pub(crate) fn list(&self) -> Result<Vec<Record>, ServerError> {
        match self {
            Backend::File(dir) => org_files(dir)?
                .into_iter()
                .map(|(id, path)| {
                    let bytes =
                        std::fs::read(&path).map_err(|e| ServerError::io("read", &path, e))?;
                    Ok(Record {
                        id,
                        bytes,
                        revision: 0,
                    })
                })
                .collect(),
            Backend::Etcd(etcd) => {
                let records = etcd.list(&etcd.orgs_prefix()).map_err(ServerError::Store)?;
                Ok(records
                    .into_iter()
                    .filter_map(|(key, r)| {
                        Some(Record {
                            id: etcd.org_of_key(&key)?,
                            bytes: r.bytes,
                            revision: r.revision,
                        })
                    })
                    .collect())
            }
        }
    }

    /// Writes `org`'s record if it is still at `revision`; returns the new revision. The file
    /// store writes atomically and durably (one writer: the revision is not compared); etcd
    /// compares and swaps in one transaction. Blocking.
    ///
    /// # Errors
    /// [`PutError`].
    pub(crate) fn put(&self, org: Uuid, bytes: &[u8], revision: i64) -> Result<i64, PutError> {
        match self {
            Backend::File(dir) => {
                let path = org::org_path(dir, org);
                seal::write_atomic(&path, bytes)
                    .map_err(|e| PutError::Failed(KeystoreError::io("write", path, e).into()))?;
                Ok(0)
            }
            Backend::Etcd(etcd) => {
                match etcd.compare_and_swap(&etcd.org_key(org), bytes, revision) {
                    Ok(revision) => Ok(revision),
                    Err(CasError::Lost(now)) => Err(PutError::Lost(now.map(|r| Record {
                        id: org,
                        bytes: r.bytes,
                        revision: r.revision,
                    }))),
                    Err(CasError::Unreachable(e)) => Err(PutError::Failed(unavailable(e))),
                }
            }
        }
    }

    /// `org`'s stored record when it is newer than `revision` (etcd; never in the file store,
    /// whose only writer is this server). Blocking.
    ///
    /// # Errors
    /// A 503 [`KmsError::Unavailable`] when etcd does not answer.
    pub(crate) fn newer(&self, org: Uuid, revision: i64) -> Result<Option<Record>, KmsError> {
        match self {
            Backend::File(_) => Ok(None),
            Backend::Etcd(etcd) => Ok(etcd
                .get(&etcd.org_key(org))
                .map_err(unavailable)?
                .filter(|r| r.revision != revision)
                .map(|r| Record {
                    id: org,
                    bytes: r.bytes,
                    revision: r.revision,
                })),
        }
    }

    /// Writes a new organization's record, unless one exists (then `false`). Blocking.
    ///
    /// # Errors
    /// [`ServerError::Io`] or [`ServerError::Store`].
    pub(crate) fn create(&self, org: Uuid, bytes: &[u8]) -> Result<bool, ServerError> {
        match self {
            Backend::File(dir) => {
                let path = org::org_path(dir, org);
                seal::write_new(&path, bytes).map_err(|e| ServerError::io("write", &path, e))
            }
            Backend::Etcd(etcd) => match etcd.compare_and_swap(&etcd.org_key(org), bytes, 0) {
                Ok(_) => Ok(true),
                Err(CasError::Lost(_)) => Ok(false),
                Err(CasError::Unreachable(e)) => Err(ServerError::Store(e)),
            },
        }
    }
}
