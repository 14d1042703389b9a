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
use crate::kms::remote::endpoints::EndpointList;
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
    secret_from(
        file.or(credential.as_deref()),
        "--passphrase-file",
        PASSPHRASE_ENV,
        "passphrase",
        confirm,
    )
}

/// Reads a secret named `what` (e.g. "new passphrase"): from `file` (the option `flag`), else
/// the environment variable `env`, else a prompt on a terminal (twice when `confirm`). Empty
/// is refused.
pub fn secret_from(
    file: Option<&Path>,
    flag: &str,
    env: &str,
    what: &str,
    confirm: bool,
) -> CliResult<SecretBytes> {
    let text = if let Some(file) = file {
        passphrase_from_file(file)?
    } else if let Some(value) = std::env::var_os(env) {
        SecretBytes::new(value.into_encoded_bytes())
    } else if std::io::stdin().is_terminal() {
        let mut label = what.to_string();
        if let Some(first) = label.get_mut(..1) {
            first.make_ascii_uppercase();
        }
        if confirm {
            prompt_twice(&format!("{label}: "), &format!("{label} again: "))?
        } else {
            prompt(&format!("{label}: "))?
        }
    } else {
        return Err(CliError::usage(format!(
            "no {what}: give {flag} FILE, set {env}, or run on a terminal"
        )));
    };
    if text.is_empty() {
        return Err(CliError::with(
            Exit::Authentication,
            format!("the {what} is empty"),
        ));
    }
    Ok(text)
}

/// The passphrase in `file`, without its trailing line ends.
pub fn passphrase_from_file(file: &Path) -> CliResult<SecretBytes> {
    SecretBytes::read_file(file).map_err(|e| CliError::io("read the passphrase file", file, &e))
}

/// A passphrase typed twice on the terminal (`first`, then `again`); they must agree.
pub fn prompt_twice(first: &str, again: &str) -> CliResult<SecretBytes> {
    let typed = prompt(first)?;
    if prompt(again)?.expose_secret() != typed.expose_secret() {
        return Err(CliError::with(
            Exit::Authentication,
            "the two passphrases differ",
        ));
    }
    Ok(typed)
}

/// One passphrase typed on the terminal without echo. Ctrl-C there ends the process with the
/// terminal as it was: rpassword (from 7.5.5) restores echo before it raises SIGINT.
fn prompt(text: &str) -> CliResult<SecretBytes> {
    rpassword::prompt_password(text)
        .map(|s| SecretBytes::new(s.into_bytes()))
        .map_err(|e| CliError::with(Exit::Io, format!("cannot read the passphrase: {e}")))
}

/// The keystore a command names: `--keystore`, else the default one.
pub fn keystore_path(args: &KeystoreArgs) -> PathBuf {
    args.keystore.clone().unwrap_or_else(default_keystore_path)
}

/// The passphrase of the keystore at `keystore`: `--passphrase-file`, else
/// `$KMSFS_PASSPHRASE`, else the passphrase file recorded for that keystore by
/// `kmsfs init --passphrase-file` ([`crate::config::passfiles`]), else a prompt.
pub fn keystore_passphrase(keystore: &Path, file: Option<&Path>) -> CliResult<SecretBytes> {
    if file.is_none()
        && std::env::var_os(PASSPHRASE_ENV).is_none()
        && let Some(recorded) = crate::config::passfiles::recorded(keystore)
    {
        return passphrase(Some(&recorded), false).map_err(|e| {
            CliError::with(
                e.exit,
                format!(
                    "{} (the passphrase file `kmsfs init` recorded for the keystore {}; give --passphrase-file or set {PASSPHRASE_ENV})",
                    e.message,
                    keystore.display()
                ),
            )
        });
    }
    passphrase(file, false)
}

/// Opens the embedded keystore at `path` (its passphrase as [`keystore_passphrase`] finds it).
pub fn open_embedded(path: &Path, passphrase_file: Option<&Path>) -> CliResult<EmbeddedKms> {
    if !path.exists() {
        let missing = KeystoreError::Missing {
            path: path.to_path_buf(),
        };
        return Err(KmsError::from(missing).into());
    }
    let pass = keystore_passphrase(path, passphrase_file)?;
    Ok(EmbeddedKms::open(path, &pass)?)
}

/// The cipher directory a user means by `path`: `path` itself when it holds a `kmsfs.conf`,
/// else the cipher directory of the live kmsfs mount at `path` (so a mount point works
/// wherever a cipher directory does), else `path` (whose loading then says what is wrong).
pub fn cipherdir_of(path: &Path) -> PathBuf {
    if path.join(crate::config::CONF_NAME).exists() {
        return path.to_path_buf();
    }
    let Ok(canonical) = std::fs::canonicalize(path) else {
        return path.to_path_buf();
    };
    super::mounts::mounts()
        .into_iter()
        .filter(|m| m.mountpoint == canonical)
        .filter_map(|m| m.cipherdir())
        .next_back()
        .unwrap_or_else(|| path.to_path_buf())
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
        KmsConfig::Remote { endpoint, .. } => Err(CliError::usage(format!(
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
        KmsConfig::Remote { .. } => {
            let damaged = |why: String| {
                CliError::with(
                    Exit::Config,
                    format!("{}/kmsfs.conf is damaged: {why}", dir.display()),
                )
            };
            let listed = config
                .kms
                .remote_endpoints()
                .expect("BUG: a remote backend has endpoints")
                .map_err(damaged)?;
            let endpoints = endpoints_of(&listed).map_err(|e| damaged(e.message))?;
            let named = named.map(endpoints_of).transpose()?;
            crate::config::known::check(
                dir,
                &config.fs_id,
                &endpoints.to_string(),
                named.as_ref().map(EndpointList::to_string).as_deref(),
            )?;
            Ok(Arc::new(open_remote(endpoints)?))
        }
    }
}

/// Checked, normalized endpoints: `URL` or `URL1,URL2,...` (servers of one zone).
pub fn endpoints_of(text: &str) -> CliResult<EndpointList> {
    Ok(EndpointList::parse(text)?)
}

/// A client of the KMS at `endpoints` with the credentials of `EXOSCALE_API_KEY` and
/// `EXOSCALE_API_SECRET`.
pub fn open_remote(endpoints: EndpointList) -> CliResult<RemoteKms> {
    let credentials = crate::kms::remote::http::credentials_from_env()?;
    Ok(RemoteKms::with_list(endpoints, credentials))
}
