//! The regular files of a cipher directory (for fsck and rewrap), without the configuration
//! and the files that keep names (directory ids, long names' side files).

use super::HIDDEN_ROOT_NAMES;
use crate::format::is_internal;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Every regular file under `cipher_dir`, sorted by path, without `kmsfs.conf` and the files
/// that keep names. Symlinks are not followed.
pub fn cipher_files(cipher_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![cipher_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file()
                && !(dir == cipher_dir && HIDDEN_ROOT_NAMES.iter().any(|h| entry.file_name() == *h))
                && !is_internal(entry.file_name().as_bytes())
            {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    Ok(files)
}
