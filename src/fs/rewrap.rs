//! Re-wrapping one file's DEK after a key rotation, or to another key: `re-encrypt` in the KMS,
//! then the 512-byte header rewritten in place with one write and one fdatasync. Content bytes
//! are never read or written, and the DEK never leaves the KMS. A file keeps its header version;
//! in version 2 the destination context names the destination key.

use super::keys::KeyError;
use crate::format::{self, FileHeader, FormatError, FsId, HEADER_LEN};
use crate::kms::{KeyService, blob};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use uuid::Uuid;

/// What re-wrapping did to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewrapOutcome {
    /// An empty file has no header and no DEK.
    Empty,
    /// Already wrapped by the target key's newest material.
    Current,
    /// The header was rewritten.
    Rewrapped,
    /// `--dry-run`: the header would be rewritten.
    WouldRewrap,
}

/// What a re-wrap aims at.
pub struct RewrapTarget<'a> {
    /// The KMS.
    pub kms: &'a dyn KeyService,
    /// The filesystem id (part of the DEK's encryption context).
    pub fs_id: FsId,
    /// The key to wrap under; `None` keeps each file's own key.
    pub to_key: Option<Uuid>,
    /// The newest material version of a key, if known.
    pub newest_version: &'a (dyn Fn(Uuid) -> Result<u32, KeyError> + Sync),
    /// Only report what would change.
    pub dry_run: bool,
}

fn read_header(file: &File) -> Result<Option<[u8; HEADER_LEN]>, KeyError> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let mut bytes = [0u8; HEADER_LEN];
    file.read_exact_at(&mut bytes, 0)
        .map_err(|_| FormatError::ShortHeader(len as usize))?;
    Ok(Some(bytes))
}

/// Re-wraps the DEK of the cipher file at `path` if it is not under the target key's newest
/// material. Blobs of other KMS servers do not show their version: they are always re-wrapped.
pub fn rewrap_file(path: &Path, target: &RewrapTarget<'_>) -> Result<RewrapOutcome, KeyError> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let Some(old) = read_header(&file)? else {
        return Ok(RewrapOutcome::Empty);
    };
    let header = FileHeader::parse(&old)?;
    let key = target.to_key.unwrap_or(header.key_id);
    let newest = (target.newest_version)(key)?;
    let current =
        header.key_id == key && blob::blob_key_version(&header.wrapped_dek) == Some((key, newest));
    if current {
        return Ok(RewrapOutcome::Current);
    }
    if target.dry_run {
        return Ok(RewrapOutcome::WouldRewrap);
    }
    // In version 2 the context names the key: the destination's names the destination key.
    let destination_context =
        format::dek_context(header.version, &target.fs_id, &header.file_id, &key);
    let wrapped = target.kms.re_encrypt(
        header.key_id,
        &header.wrapped_dek,
        Some(&header.dek_context(&target.fs_id)),
        key,
        Some(&destination_context),
    )?;
    let new = FileHeader::rewrap(&old, key, &wrapped)?;
    // The daemon takes the same lock when it writes or removes a header: write only if the
    // header is still the one re-wrapped.
    file.lock()?;
    let result = (|| {
        if read_header(&file)? != Some(old) {
            return Err(KeyError::Io(std::io::Error::other(
                "the header changed while it was being re-wrapped; run rewrap again",
            )));
        }
        file.write_all_at(&new, 0)?;
        file.sync_data()?;
        Ok(RewrapOutcome::Rewrapped)
    })();
    file.unlock()?;
    result
}
