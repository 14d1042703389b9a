//! `kmsfs fsck`: authenticate every header and block; one line per damaged file.

use super::secret;
use super::{CliError, CliResult};
use crate::cache::DekCache;
use crate::config::{CONF_NAME, CipherConfig};
use crate::fs::keys::KeyPath;
use crate::fs::{FileCheck, check_file};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// Checks `cipherdir`; exit 0 when clean, 1 when a file is damaged.
pub fn run(cipherdir: &Path, passphrase_file: Option<&Path>) -> CliResult<ExitCode> {
    super::init_stderr_logging("error");
    let config = CipherConfig::load(cipherdir)?;
    let kms = secret::open_kms(&config, passphrase_file)?;
    let fs_id = config.fs_id().map_err(CliError::new)?;
    let keys = KeyPath::new(kms, DekCache::new(0, Duration::ZERO), fs_id, config.key_id);
    let mut files = 0u64;
    let mut damaged = 0u64;
    let mut stack = vec![cipherdir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| CliError::new(format!("cannot read {}: {e}", dir.display())))?;
        let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(path);
                continue;
            }
            if !kind.is_file() || (dir == cipherdir && entry.file_name() == CONF_NAME) {
                continue;
            }
            files += 1;
            match check_file(&path, &keys) {
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
    }
    eprintln!("fsck: {files} files checked, {damaged} damaged");
    Ok(if damaged == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
