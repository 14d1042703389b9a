//! The encryption context a file's DEK is wrapped with.
//!
//! Each field is written as its length (u32 big-endian) followed by its bytes, so no two
//! different field lists encode to the same bytes:
//!
//! ```text
//! len("kmsfs-dek-v1") || "kmsfs-dek-v1" || len(fs_id) || fs_id || len(file_id) || file_id
//! ```

use super::{FileId, FsId};

const DEK_CONTEXT_LABEL: &[u8] = b"kmsfs-dek-v1";

const FS_KEY_CONTEXT_LABEL: &[u8] = b"kmsfs-fs-key-v2";

/// The fields, each preceded by its length as u32 big-endian.
fn length_prefixed(fields: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(fields.iter().map(|f| 4 + f.len()).sum());
    for field in fields {
        let len = u32::try_from(field.len()).expect("BUG: context fields are short");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

/// The encryption context of the DEK of file `file_id` in filesystem `fs_id`.
pub fn dek_context(fs_id: &FsId, file_id: &FileId) -> Vec<u8> {
    length_prefixed(&[DEK_CONTEXT_LABEL, fs_id, file_id])
}

/// The encryption context of the filesystem key of filesystem `fs_id` (format version 2: the
/// key names are encrypted with).
pub fn fs_key_context(fs_id: &FsId) -> Vec<u8> {
    length_prefixed(&[FS_KEY_CONTEXT_LABEL, fs_id])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_is_length_prefixed() {
        let ctx = dek_context(&[1; 16], &[2; 16]);
        assert_eq!(&ctx[..4], &12u32.to_be_bytes());
        assert_eq!(&ctx[4..16], b"kmsfs-dek-v1");
        assert_eq!(&ctx[16..20], &16u32.to_be_bytes());
        assert_eq!(&ctx[20..36], &[1; 16]);
        assert_eq!(&ctx[36..40], &16u32.to_be_bytes());
        assert_eq!(&ctx[40..], &[2; 16]);
        assert_ne!(ctx, dek_context(&[2; 16], &[1; 16]));
    }

    #[test]
    fn the_fs_key_context_names_its_label_and_filesystem() {
        let ctx = fs_key_context(&[3; 16]);
        assert_eq!(&ctx[..4], &15u32.to_be_bytes());
        assert_eq!(&ctx[4..19], b"kmsfs-fs-key-v2");
        assert_eq!(&ctx[19..23], &16u32.to_be_bytes());
        assert_eq!(&ctx[23..], &[3; 16]);
    }
}
