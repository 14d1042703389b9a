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

/// The encryption context of the DEK of file `file_id` in filesystem `fs_id`.
pub fn dek_context(fs_id: &FsId, file_id: &FileId) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + DEK_CONTEXT_LABEL.len() + 32);
    for field in [DEK_CONTEXT_LABEL, fs_id.as_slice(), file_id.as_slice()] {
        let len = u32::try_from(field.len()).expect("BUG: context fields are short");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(field);
    }
    out
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
}
