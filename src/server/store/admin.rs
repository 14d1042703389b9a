//! The admin commands on a zone's store, with or without a server running on it: create and
//! import an organization (`kmsfs kms org create|import`), and move a file store into etcd
//! (`kmsfs kms migrate`).

use super::super::ServerError;
use super::super::etcd::{CasError, EtcdStore, EtcdTarget};
use super::super::org::{self, OrgCredentials, OrgState};
use super::super::root::RootKey;
use super::backend::{Backend, org_files};
use crate::crypto::SecretBytes;
use crate::kms::clock::{Clock, SystemClock};
use std::path::Path;

/// Creates a new organization with one credential in data directory `dir` (safe while a
/// server runs there: it only adds a file). Returns what to hand to the organization.
///
/// # Errors
/// [`ServerError`] when the directory or its root key cannot be used.
pub fn create_org(
    dir: &Path,
    name: &str,
    passphrase: Option<&SecretBytes>,
) -> Result<OrgCredentials, ServerError> {
    create_org_at(dir, None, name, passphrase)
}

/// [`create_org`] in the etcd store `etcd` when given (`dir` then holds only `root.key`, when
/// there is no passphrase). Blocking; with etcd it needs a tokio runtime (a multi-thread one
/// entered by the caller).
///
/// # Errors
/// As [`create_org`]; [`ServerError::Store`] when etcd cannot be reached.
pub fn create_org_at(
    dir: &Path,
    etcd: Option<&EtcdTarget>,
    name: &str,
    passphrase: Option<&SecretBytes>,
) -> Result<OrgCredentials, ServerError> {
    if name.trim().is_empty() {
        return Err(ServerError::Invalid(
            "the organization name is empty".into(),
        ));
    }
    // An offline command (no server, no store): the system's clock.
    let made = OrgCredentials::generate(name, SystemClock.now());
    import_org_at(dir, etcd, &made, passphrase)?;
    Ok(made)
}

/// Installs an organization and credential made by [`create_org`] (in another zone's data
/// directory, say). Installing the same one twice is fine.
///
/// # Errors
/// [`ServerError::Invalid`] when the organization exists with other credentials or the API key
/// belongs to another organization; [`ServerError::Io`] for disk trouble.
pub fn import_org(
    dir: &Path,
    org: &OrgCredentials,
    passphrase: Option<&SecretBytes>,
) -> Result<(), ServerError> {
    import_org_at(dir, None, org, passphrase)
}

/// [`import_org`] into the etcd store `etcd` when given (see [`create_org_at`]).
///
/// # Errors
/// As [`import_org`]; [`ServerError::Store`] when etcd cannot be reached.
pub fn import_org_at(
    dir: &Path,
    etcd: Option<&EtcdTarget>,
    org: &OrgCredentials,
    passphrase: Option<&SecretBytes>,
) -> Result<(), ServerError> {
    let (backend, root) = match etcd {
        None => Backend::open_dir(dir, passphrase)?,
        Some(target) => Backend::open_etcd(dir, target, passphrase)?,
    };
    for record in backend.list()? {
        let id = record.id;
        let existing = OrgState::open(&record.bytes, &root, &backend.place(id))?;
        let same_key = existing
            .credentials
            .iter()
            .find(|c| c.key == org.credentials.key);
        match (id == org.org, same_key) {
            (true, Some(c))
                if c.secret.expose_secret() == org.credentials.secret.expose_secret() =>
            {
                return Ok(());
            }
            (true, _) => {
                return Err(ServerError::Invalid(format!(
                    "organization {id} exists already with other credentials"
                )));
            }
            (false, Some(_)) => {
                return Err(ServerError::Invalid(format!(
                    "API key {} belongs to organization {id}",
                    org.credentials.key
                )));
            }
            (false, None) => {}
        }
    }
    let bytes = org::seal_org_file(
        &root,
        org.org,
        &org.name,
        std::slice::from_ref(&org.credentials),
        org.created_at,
        None,
    )?;
    if backend.create(org.org, &bytes)? {
        Ok(())
    } else {
        Err(ServerError::Invalid(format!(
            "organization {} was created at the same moment",
            org.org
        )))
    }
}

/// Copies the file store in `dir` into the empty etcd prefix `target`, record for record (the
/// sealed bytes as they are, so the zone keeps its root key: the same `root.key` on every
/// server, or the same passphrase, whose KDF record is copied too). Checks first that every
/// org file opens; refuses a prefix that holds anything. Returns how many organizations moved.
/// Blocking; needs an entered multi-thread tokio runtime.
///
/// # Errors
/// [`ServerError::Invalid`] for a non-empty prefix or a directory that is not a data
/// directory; as [`super::Store::open`] for a damaged one; [`ServerError::Store`] for etcd.
pub fn migrate(
    dir: &Path,
    target: &EtcdTarget,
    passphrase: Option<&SecretBytes>,
) -> Result<usize, ServerError> {
    if !org::orgs_dir(dir).is_dir() {
        return Err(ServerError::Invalid(format!(
            "{} is not a data directory of `kmsfs kms serve` (no orgs/ in it)",
            dir.display()
        )));
    }
    let root = RootKey::open_or_create(dir, passphrase)?;
    let mut records = Vec::new();
    for (id, path) in org_files(dir)? {
        let bytes = std::fs::read(&path).map_err(|e| ServerError::io("read", &path, e))?;
        OrgState::open(&bytes, &root, &path)?;
        records.push((id, bytes));
    }
    let etcd = EtcdStore::connect(target)?;
    if etcd.count().map_err(ServerError::Store)? != 0 {
        return Err(ServerError::Invalid(format!(
            "{} is not empty: migrate only into an unused prefix",
            etcd.describe()
        )));
    }
    let kdf_path = dir.join("root.kdf");
    if passphrase.is_some() {
        let kdf = std::fs::read(&kdf_path).map_err(|e| ServerError::io("read", &kdf_path, e))?;
        create_new(&etcd, &etcd.key("root.kdf"), &kdf)?;
    }
    for (id, bytes) in &records {
        create_new(&etcd, &etcd.org_key(*id), bytes)?;
    }
    Ok(records.len())
}

/// Writes a record that must not exist yet.
fn create_new(etcd: &EtcdStore, key: &str, bytes: &[u8]) -> Result<(), ServerError> {
    match etcd.compare_and_swap(key, bytes, 0) {
        Ok(_) => Ok(()),
        Err(CasError::Lost(_)) => Err(ServerError::Invalid(format!(
            "{key} appeared in etcd during the migration: something else writes there"
        ))),
        Err(CasError::Unreachable(e)) => Err(ServerError::Store(e)),
    }
}
