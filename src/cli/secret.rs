//! Passphrases (from a file, `KMSFS_PASSPHRASE`, or a prompt) and opening the KMS a cipher
//! directory or a command names. A directory's remote KMS is opened only after the
//! known-endpoint check ([`crate::config::known`]), so a tampered `kmsfs.conf` never receives
//! credentials.

use super::exit::Exit;
use super::{CliError, CliResult, KeystoreArgs};
use crate::config::{CipherConfig, KmsConfig, default_keystore_path};
use crate::crypto::SecretBytes;
use crate::kms::embedded::EmbeddedKms;
use crate::kms::remote::RemoteKms;
use crate::kms::remote::http::Endpoint;
use crate::kms::{KeyService, KeystoreError, KmsError};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The environment variable a passphrase may come from.
pub const PASSPHRASE_ENV: &str = "KMSFS_PASSPHRASE";

/// The zone name of the embedded KMS.
pub const EMBEDDED_ZONE: &str = "embedded";

/// Reads the passphrase: `--passphrase-file`, else the systemd credential `passphrase`, else
/// `$KMSFS_PASSPHRASE`, else a prompt on a terminal (twice when `confirm`, for a new keystore).
pub fn passphrase(file: Option<&Path>, confirm: bool) -> CliResult<SecretBytes> {
    let credential = crate::sys::systemd::credential("passphrase");
    let text = if let Some(file) = file.or(credential.as_deref()) {
        let bytes =
            std::fs::read(file).map_err(|e| CliError::io("read the passphrase file", file, &e))?;
        let mut bytes = SecretBytes::new(bytes).expose_secret().to_vec();
        while bytes.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
            bytes.pop();
        }
        SecretBytes::new(bytes)
    } else if let Some(value) = std::env::var_os(PASSPHRASE_ENV) {
        SecretBytes::new(value.into_encoded_bytes())
    } else if std::io::stdin().is_terminal() {
        let first = prompt("Passphrase: ")?;
        if confirm && prompt("Passphrase again: ")?.expose_secret() != first.expose_secret() {
            return Err(CliError::with(Exit::Keystore, "the two passphrases differ"));
        }
        first
    } else {
        return Err(CliError::usage(format!(
            "no passphrase: give --passphrase-file FILE, set {PASSPHRASE_ENV}, or run on a terminal"
        )));
    };
    if text.is_empty() {
        return Err(CliError::with(Exit::Keystore, "the passphrase is empty"));
    }
    Ok(text)
}

fn prompt(text: &str) -> CliResult<SecretBytes> {
    rpassword::prompt_password(text)
        .map(|s| SecretBytes::new(s.into_bytes()))
        .map_err(|e| CliError::with(Exit::Io, format!("cannot read the passphrase: {e}")))
}

/// The keystore a command names: `--keystore`, else the default one.
pub fn keystore_path(args: &KeystoreArgs) -> PathBuf {
    args.keystore.clone().unwrap_or_else(default_keystore_path)
}

/// Opens the embedded keystore at `path`.
pub fn open_embedded(path: &Path, passphrase_file: Option<&Path>) -> CliResult<EmbeddedKms> {
    if !path.exists() {
        let missing = KeystoreError::Missing {
            path: path.to_path_buf(),
        };
        return Err(KmsError::from(missing).into());
    }
    let pass = passphrase(passphrase_file, false)?;
    Ok(EmbeddedKms::open(path, &pass)?)
}

/// `config` with its embedded keystore at `keystore`, when one is given: for a cipher directory
/// moved or copied with its keystore, since `kmsfs.conf` keeps the keystore's absolute path. The
/// keystore must still open with the passphrase and hold the directory's key.
pub fn with_keystore(mut config: CipherConfig, keystore: Option<&Path>) -> CliResult<CipherConfig> {
    let Some(path) = keystore else {
        return Ok(config);
    };
    match &mut config.kms {
        KmsConfig::Embedded { keystore } => {
            *keystore = path.to_path_buf();
            Ok(config)
        }
        KmsConfig::Remote { endpoint } => Err(CliError::usage(format!(
            "--keystore is for a directory with an embedded keystore; this one uses the remote KMS {endpoint}"
        ))),
    }
}

/// Opens the KMS the configuration of cipher directory `dir` names; a remote one only when its
/// endpoint is the one recorded for the directory, or `named`, the endpoint the user gave with
/// `--kms`, which must equal the directory's and then becomes the recorded one.
pub fn open_kms_named(
    dir: &Path,
    config: &CipherConfig,
    passphrase_file: Option<&Path>,
    named: Option<&str>,
) -> CliResult<Arc<dyn KeyService>> {
    match &config.kms {
        KmsConfig::Embedded { keystore } => {
            if let Some(named) = named {
                return Err(CliError::usage(format!(
                    "{} uses the embedded keystore {}, not a remote KMS: drop --kms {named}",
                    dir.display(),
                    keystore.display()
                )));
            }
            Ok(Arc::new(open_embedded(keystore, passphrase_file)?))
        }
        KmsConfig::Remote { endpoint } => {
            let endpoint = endpoint_of(endpoint).map_err(|e| {
                CliError::with(
                    Exit::Config,
                    format!("{}/kmsfs.conf is damaged: {}", dir.display(), e.message),
                )
            })?;
            let named = named.map(endpoint_of).transpose()?;
            crate::config::known::check(
                dir,
                &config.fs_id,
                endpoint.as_str(),
                named.as_ref().map(Endpoint::as_str),
            )?;
            Ok(Arc::new(open_remote(endpoint.as_str())?))
        }
    }
}

/// A checked, normalized endpoint.
pub fn endpoint_of(text: &str) -> CliResult<Endpoint> {
    Ok(Endpoint::parse(text)?)
}

/// A client of the KMS at `endpoint` with the credentials of `EXOSCALE_API_KEY` and
/// `EXOSCALE_API_SECRET`.
pub fn open_remote(endpoint: &str) -> CliResult<RemoteKms> {
    Ok(RemoteKms::from_env(endpoint)?)
}
