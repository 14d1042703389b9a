//! `kmsfs fsck`: authenticate every header and block; one line per damaged file.

use super::secret;
use super::{CliError, CliResult};
use crate::cache::DekCache;
use crate::config::CipherConfig;
use crate::fs::keys::KeyPath;
use crate::fs::{FileCheck, check_file};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// Checks `cipherdir`; exit 0 when clean, 1 when a file is damaged. `kms` is a remote endpoint
/// the user names (see [`secret::open_kms_named`]).
pub fn run(
    cipherdir: &Path,
    passphrase_file: Option<&Path>,
    kms: Option<&str>,
) -> CliResult<ExitCode> {
    super::init_stderr_logging("error");
    let config = CipherConfig::load(cipherdir)?;
    let kms = secret::open_kms_named(cipherdir, &config, passphrase_file, kms)?;
    let fs_id = config.fs_id().map_err(CliError::new)?;
    let keys = KeyPath::new(kms, DekCache::new(0, Duration::ZERO), fs_id, config.key_id);
    let mut files = 0u64;
    let mut damaged = 0u64;
    let paths = crate::fs::cipher_files(cipherdir)
        .map_err(|e| CliError::new(format!("cannot read {}: {e}", cipherdir.display())))?;
    for path in &paths {
        files += 1;
        match check_file(path, &keys) {
            Ok(FileCheck::Clean) => {}
            Ok(FileCheck::Damaged(what)) => {
                damaged += 1;
                println!("{}: {what}", path.display());
            }
            Err(e) => {
                return Err(CliError::new(format!(
                    "cannot check {}: {e}",
                    path.display()
                )));
            }
        }
    }
    eprintln!("fsck: {files} files checked, {damaged} damaged");
    Ok(if damaged == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
