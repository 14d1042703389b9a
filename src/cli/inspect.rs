//! `kmsfs inspect`: a cipher file's header as JSON (its version, file id, key id, wrapped DEK
//! length and material version), without a KMS call.

use super::{CliError, CliResult};
use crate::format::{self, FileHeader, HEADER_LEN};
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

/// Prints the header of `path`: a cipher file, or a file under a live kmsfs mount (then the
/// cipher file behind it).
pub fn run(path: &Path) -> CliResult<ExitCode> {
    let behind = cipher_file_behind(path)?;
    let path = behind.as_deref().unwrap_or(path);
    let mut file = std::fs::File::open(path).map_err(|e| CliError::io("open", path, &e))?;
    let cipher_size = file
        .metadata()
        .map_err(|e| CliError::io("stat", path, &e))?
        .len();
    if cipher_size == 0 {
        let out = serde_json::json!({
            "path": path.display().to_string(),
            "cipher-size": 0,
            "plain-size": 0,
            "header": null,
            "note": "an empty file has no header; its DEK is made on the first write",
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("BUG: JSON value serializes")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut bytes = [0u8; HEADER_LEN];
    file.read_exact(&mut bytes).map_err(|_| {
        CliError::new(format!(
            "{} is {cipher_size} bytes, too short for a kmsfs header",
            path.display()
        ))
    })?;
    let header = FileHeader::parse(&bytes)
        .map_err(|e| CliError::new(format!("{} has no valid kmsfs header: {e}", path.display())))?;
    let material = crate::kms::blob::blob_key_version(&header.wrapped_dek)
        .filter(|(key, _)| *key == header.key_id)
        .map(|(_, version)| version);
    let mut out = serde_json::json!({
        "path": path.display().to_string(),
        "header-version": header.version.number(),
        "file-id": format::hex(&header.file_id),
        "key-id": header.key_id.to_string(),
        "wrapped-dek-length": header.wrapped_dek.len(),
        "key-material-version": material,
        "cipher-size": cipher_size,
        "plain-size": format::plain_size(cipher_size).ok(),
    });
    if header.version != format::HeaderVersion::V1 {
        // Version 2: the content key's epoch and its seals (the nonce budget).
        out["content-key-epoch"] = header.keying.epoch.into();
        out["re-keying"] = header.keying.rekeying.into();
        out["seals-reserved"] = header.keying.seals.into();
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&out).expect("BUG: JSON value serializes")
    );
    Ok(ExitCode::SUCCESS)
}

/// For a file under a live kmsfs mount: the cipher file behind it, found by inode number (a
/// node's inode number is its backing inode's); `None` for any other path.
fn cipher_file_behind(path: &Path) -> CliResult<Option<std::path::PathBuf>> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(None);
    };
    let device = format!("{}:{}", libc::major(meta.dev()), libc::minor(meta.dev()));
    let Some(cipherdir) = super::mounts::mounts()
        .into_iter()
        .find(|m| m.device == device)
        .and_then(|m| m.cipherdir())
    else {
        return Ok(None);
    };
    if !meta.is_file() {
        return Err(CliError::new(format!(
            "{} is not a regular file: only files have a header",
            path.display()
        )));
    }
    let files =
        crate::fs::cipher_files(&cipherdir).map_err(|e| CliError::io("read", &cipherdir, &e))?;
    files
        .into_iter()
        .find(|f| std::fs::symlink_metadata(f).is_ok_and(|m| m.ino() == meta.ino()))
        .map(Some)
        .ok_or_else(|| {
            CliError::new(format!(
                "no file of {} has the inode number of {}",
                cipherdir.display(),
                path.display()
            ))
        })
}
