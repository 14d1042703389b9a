//! `kmsfs passwd`: seal an embedded keystore under a new passphrase. The keys inside do not
//! change, so no file, header or name is re-encrypted; the keystore is replaced atomically, and
//! a wrong old passphrase changes nothing.

use super::{CliError, CliResult, secret};
use crate::config::{CipherConfig, KmsConfig};
use crate::crypto::SecretBytes;
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The environment variable the new passphrase may come from.
pub const NEW_PASSPHRASE_ENV: &str = "KMSFS_NEW_PASSPHRASE";

/// Arguments of `kmsfs passwd`.
#[derive(Args)]
pub struct PasswdArgs {
    /// A cipher directory or its mount point: change the passphrase of the keystore it uses
    /// (default: --keystore, else the default keystore).
    dir: Option<PathBuf>,
    /// The keystore (default: $XDG_DATA_HOME/kmsfs/keystore).
    #[arg(long, value_name = "PATH")]
    keystore: Option<PathBuf>,
    /// Read the current passphrase from FILE (else $KMSFS_PASSPHRASE, else the file recorded
    /// at init, else a prompt).
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// Read the new passphrase from FILE (else $KMSFS_NEW_PASSPHRASE, else a prompt, twice).
    #[arg(long, value_name = "FILE")]
    new_passphrase_file: Option<PathBuf>,
}

/// Runs `kmsfs passwd`.
pub fn run(args: PasswdArgs) -> CliResult<ExitCode> {
    super::init_stderr_logging("warn");
    let keystore = keystore_of(&args)?;
    let keystore = std::path::absolute(&keystore).unwrap_or(keystore);
    if let Some(mountpoint) = mounted_user(&keystore) {
        return Err(CliError::new(format!(
            "the keystore {} is in use by the mount at {}: unmount it first (the daemon keeps the old passphrase)",
            keystore.display(),
            mountpoint.display()
        )));
    }
    let kms = secret::open_embedded(&keystore, args.passphrase_file.as_deref())?;
    let new = new_passphrase(args.new_passphrase_file.as_deref())?;
    kms.change_passphrase(&new)?;
    println!(
        "Changed the passphrase of the keystore {}.",
        keystore.display()
    );
    // A passphrase file recorded for this keystore holds the old passphrase: the new file
    // takes its place, or the record goes.
    if let Some(old) = crate::config::passfiles::recorded(&keystore) {
        let new_file = args.new_passphrase_file.as_deref();
        crate::config::passfiles::record(&keystore, new_file)?;
        match new_file {
            Some(new_file) => println!(
                "Commands now read its passphrase from {} instead of {}.",
                new_file.display(),
                old.display()
            ),
            None => println!(
                "The passphrase file {} no longer opens it and is no longer read for it.",
                old.display()
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The keystore the arguments name: a directory's (or mount point's), `--keystore`, else the
/// default one.
fn keystore_of(args: &PasswdArgs) -> CliResult<PathBuf> {
    let Some(named) = &args.dir else {
        return Ok(args
            .keystore
            .clone()
            .unwrap_or_else(crate::config::default_keystore_path));
    };
    let dir = secret::cipherdir_of(named);
    let config = secret::with_keystore(CipherConfig::load(&dir)?, args.keystore.as_deref())?;
    match config.kms {
        KmsConfig::Embedded { keystore } => Ok(keystore),
        KmsConfig::Remote { endpoint, .. } => Err(CliError::usage(format!(
            "{} uses the remote KMS {endpoint}, which has no passphrase: its credentials are the API key and secret",
            named.display()
        ))),
    }
}

/// The mount point of a live kmsfs mount whose directory uses the keystore `keystore`.
fn mounted_user(keystore: &Path) -> Option<PathBuf> {
    super::mounts::mounts().into_iter().find_map(|m| {
        let config = CipherConfig::load(&m.cipherdir()?).ok()?;
        match config.kms {
            KmsConfig::Embedded { keystore: k } if k == keystore => Some(m.mountpoint),
            _ => None,
        }
    })
}

/// The new passphrase: `--new-passphrase-file`, else `$KMSFS_NEW_PASSPHRASE`, else a prompt on
/// a terminal, twice.
fn new_passphrase(file: Option<&Path>) -> CliResult<SecretBytes> {
    secret::secret_from(
        file,
        "--new-passphrase-file",
        NEW_PASSPHRASE_ENV,
        "new passphrase",
        true,
    )
}
