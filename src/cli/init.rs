//! `kmsfs init`: a new cipher directory, with the keystore and KMS key it needs.

use super::secret::{self, EMBEDDED_ZONE};
use super::{CliError, CliResult, KeystoreArgs};
use crate::config::{CipherConfig, KmsConfig};
use crate::kms::embedded::EmbeddedKms;
use crate::kms::wire::{CreateKeyRequest, KeyStatus};
use crate::kms::{KeyService, KmsError, Refusal};
use std::path::Path;
use std::process::ExitCode;
use uuid::Uuid;

/// Creates `cipherdir` wrapped by `key` (or a new key named after the directory).
pub fn run(cipherdir: &Path, args: &KeystoreArgs, key: Option<Uuid>) -> CliResult<ExitCode> {
    super::init_stderr_logging("warn");
    check_empty(cipherdir)?;
    let keystore = absolute(&secret::keystore_path(args))?;
    let kms = if keystore.exists() {
        secret::open_embedded(&keystore, args.passphrase_file.as_deref())?
    } else {
        let pass = secret::passphrase(args.passphrase_file.as_deref(), true)?;
        let kms = EmbeddedKms::create(&keystore, &pass, EMBEDDED_ZONE)?;
        eprintln!("Created keystore {}", keystore.display());
        kms
    };
    let key = match key {
        Some(id) => {
            let key = kms.get_key(id)?;
            if key.status != KeyStatus::Enabled {
                return Err(CliError::new(format!(
                    "key {id} is {}; enable it first with `kmsfs key enable {id}`",
                    key.status.as_str()
                )));
            }
            key
        }
        None => create_named_key(&kms, cipherdir)?,
    };
    std::fs::create_dir_all(cipherdir)
        .map_err(|e| CliError::new(format!("cannot create {}: {e}", cipherdir.display())))?;
    let config = CipherConfig::new(
        KmsConfig::Embedded {
            keystore: keystore.clone(),
        },
        key.id,
    );
    config.save(cipherdir)?;
    println!(
        "Created cipher directory {} (key {} \"{}\", keystore {}).",
        cipherdir.display(),
        key.id,
        key.name,
        keystore.display()
    );
    println!(
        "Mount it with: kmsfs mount {} MOUNTPOINT",
        cipherdir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn check_empty(dir: &Path) -> CliResult {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(CliError::new(format!(
                    "{} is not empty; kmsfs init needs an empty or absent directory",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CliError::new(format!("cannot read {}: {e}", dir.display()))),
    }
}

fn absolute(path: &Path) -> CliResult<std::path::PathBuf> {
    std::path::absolute(path)
        .map_err(|e| CliError::new(format!("cannot resolve {}: {e}", path.display())))
}

/// A new key named after the directory (`NAME`, else `NAME-2`, `NAME-3`, ...).
fn create_named_key(kms: &dyn KeyService, cipherdir: &Path) -> CliResult<crate::kms::KmsKey> {
    let base = absolute(cipherdir)?
        .file_name()
        .map_or_else(|| "kmsfs".to_string(), |n| n.to_string_lossy().into_owned());
    for attempt in 1..=100 {
        let name = if attempt == 1 {
            base.clone()
        } else {
            format!("{base}-{attempt}")
        };
        let request = CreateKeyRequest {
            name,
            description: Some(format!("kmsfs cipher directory {}", cipherdir.display())),
            usage: None,
            multi_zone: false,
        };
        match kms.create_key(&request) {
            Ok(key) => return Ok(key),
            Err(KmsError::Refused {
                refusal: Refusal::NameConflict,
                ..
            }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(CliError::new(format!(
        "every key name from {base} to {base}-100 is taken; pass --key ID"
    )))
}
