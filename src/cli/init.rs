//! `kmsfs init`: a new cipher directory, with the keystore (or remote KMS) and KMS key it needs.

use super::exit::Exit;
use super::secret::{self, EMBEDDED_ZONE};
use super::{CliError, CliResult, KeystoreArgs};
use crate::config::{CipherConfig, KmsConfig};
use crate::kms::embedded::EmbeddedKms;
use crate::kms::wire::{CreateKeyRequest, KeyStatus};
use crate::kms::{KeyService, KmsError, Refusal};
use std::path::Path;
use std::process::ExitCode;
use uuid::Uuid;

/// Creates `cipherdir` wrapped by `key` (or a new key named after the directory), on the
/// embedded keystore, or on the remote KMS at `kms` (whose endpoint is then recorded as the
/// directory's trusted one). Names are encrypted unless `plaintext_names`.
pub fn run(
    cipherdir: &Path,
    args: &KeystoreArgs,
    key: Option<Uuid>,
    kms: Option<&str>,
    plaintext_names: bool,
) -> CliResult<ExitCode> {
    super::init_stderr_logging("warn");
    check_empty(cipherdir)?;
    let (service, backend, described): (Box<dyn KeyService>, KmsConfig, String) = match kms {
        Some(url) => {
            if args.keystore.is_some() {
                return Err(CliError::usage(
                    "--keystore and --kms exclude each other: a directory uses one KMS",
                ));
            }
            let endpoints = secret::endpoints_of(url)?;
            let described = format!("KMS {endpoints}");
            let backend = KmsConfig::remote(endpoints.to_strings());
            let remote = secret::open_remote(endpoints)?;
            (Box::new(remote), backend, described)
        }
        None => {
            let keystore = absolute(&secret::keystore_path(args))?;
            let embedded = open_or_create_keystore(&keystore, args)?;
            let described = format!("keystore {}", keystore.display());
            (
                Box::new(embedded),
                KmsConfig::Embedded { keystore },
                described,
            )
        }
    };
    let key = match key {
        Some(id) => {
            let key = service.get_key(id)?;
            if key.status != KeyStatus::Enabled {
                return Err(CliError::with(
                    Exit::KmsRefused,
                    format!(
                        "key {id} is {}; enable it first with `kmsfs key enable {id}`",
                        key.status.as_str()
                    ),
                ));
            }
            key
        }
        None => create_named_key(service.as_ref(), cipherdir)?,
    };
    std::fs::create_dir_all(cipherdir).map_err(|e| CliError::io("create", cipherdir, &e))?;
    let mut config = CipherConfig::new(backend, key.id);
    if !plaintext_names {
        let fs_id = config.fs_id().map_err(CliError::config)?;
        config.fs_key = Some(super::fs_key::make(service.as_ref(), key.id, &fs_id)?);
        let root =
            std::fs::File::open(cipherdir).map_err(|e| CliError::io("open", cipherdir, &e))?;
        crate::fs::write_dir_id(std::os::fd::AsFd::as_fd(&root)).map_err(|e| {
            let message = format!("cannot write {}'s directory id: {e}", cipherdir.display());
            CliError::with(Exit::Io, message)
        })?;
    }
    config.save(cipherdir)?;
    match (&config.kms, args.passphrase_file.as_deref()) {
        (KmsConfig::Remote { .. }, _) => {
            if let Some(Ok(endpoints)) = config.kms.remote_endpoints() {
                crate::config::known::record(&config.fs_id, &endpoints, cipherdir)?;
            }
        }
        // Later commands on this keystore find the passphrase the same way.
        (KmsConfig::Embedded { keystore }, Some(file)) => {
            crate::config::passfiles::record(keystore, Some(file))?;
        }
        (KmsConfig::Embedded { .. }, None) => {}
    }
    println!(
        "Created cipher directory {} (key {} \"{}\", {described}; {} names).",
        cipherdir.display(),
        key.id,
        key.name,
        if plaintext_names {
            "plaintext"
        } else {
            "encrypted"
        },
    );
    println!(
        "Mount it with: kmsfs mount {} MOUNTPOINT",
        cipherdir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn open_or_create_keystore(keystore: &Path, args: &KeystoreArgs) -> CliResult<EmbeddedKms> {
    if keystore.exists() {
        return secret::open_embedded(keystore, args.passphrase_file.as_deref());
    }
    let pass = secret::passphrase(args.passphrase_file.as_deref(), true)?;
    let kms = EmbeddedKms::create(keystore, &pass, EMBEDDED_ZONE)?;
    eprintln!("Created keystore {}", keystore.display());
    Ok(kms)
}

fn check_empty(dir: &Path) -> CliResult {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(CliError::usage(format!(
                    "{} is not empty; kmsfs init needs an empty or absent directory",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CliError::io("read", dir, &e)),
    }
}

fn absolute(path: &Path) -> CliResult<std::path::PathBuf> {
    std::path::absolute(path).map_err(|e| CliError::io("resolve", path, &e))
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
