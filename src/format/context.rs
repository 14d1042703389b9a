//! The encryption contexts of the keys the KMS wraps: a file's DEK and the filesystem key.
//!
//! Each field is written as its length (u32 big-endian) followed by its bytes, so no two
//! different field lists encode to the same bytes:
//!
//! ```text
//! version 1 header:  len || "kmsfs-dek-v1" || len || fs_id || len || file_id
//! version 2 header:  len || "kmsfs-dek-v2" || len || fs_id || len || file_id || len || key_id
//! filesystem key:    len || "kmsfs-fs-key-v2" || len || fs_id || len || key_id
//! ```
//!
//! The KMS's AEAD authenticates the context, so a wrapped DEK unwraps only for the filesystem,
//! the file and (version 2) the key id it was wrapped for, and the filesystem key only for its
//! filesystem and key id. `re-encrypt` takes a destination context: moving a version 2 DEK or
//! the filesystem key to another key names the new key id there.

use super::{FileId, FsId, HeaderVersion};
use uuid::Uuid;

const DEK_CONTEXT_V1_LABEL: &[u8] = b"kmsfs-dek-v1";
const DEK_CONTEXT_V2_LABEL: &[u8] = b"kmsfs-dek-v2";
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

/// The encryption context of the DEK of file `file_id` in filesystem `fs_id`, wrapped by KMS key
/// `key_id`, for a header of `version`: version 1 leaves the key id out, version 2 names it.
pub fn dek_context(
    version: HeaderVersion,
    fs_id: &FsId,
    file_id: &FileId,
    key_id: &Uuid,
) -> Vec<u8> {
    match version {
        HeaderVersion::V1 => length_prefixed(&[DEK_CONTEXT_V1_LABEL, fs_id, file_id]),
        HeaderVersion::V2 => {
            length_prefixed(&[DEK_CONTEXT_V2_LABEL, fs_id, file_id, key_id.as_bytes()])
        }
    }
}

/// The encryption context of the filesystem key of filesystem `fs_id` (format version 2: the
/// key names are encrypted with), wrapped by KMS key `key_id`.
pub fn fs_key_context(fs_id: &FsId, key_id: &Uuid) -> Vec<u8> {
    length_prefixed(&[FS_KEY_CONTEXT_LABEL, fs_id, key_id.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: Uuid = Uuid::from_bytes([3; 16]);

    #[test]
    fn the_v1_context_is_length_prefixed_and_names_no_key() {
        let ctx = dek_context(HeaderVersion::V1, &[1; 16], &[2; 16], &KEY);
        assert_eq!(&ctx[..4], &12u32.to_be_bytes());
        assert_eq!(&ctx[4..16], b"kmsfs-dek-v1");
        assert_eq!(&ctx[16..20], &16u32.to_be_bytes());
        assert_eq!(&ctx[20..36], &[1; 16]);
        assert_eq!(&ctx[36..40], &16u32.to_be_bytes());
        assert_eq!(&ctx[40..], &[2; 16]);
        assert_ne!(
            ctx,
            dek_context(HeaderVersion::V1, &[2; 16], &[1; 16], &KEY)
        );
        // The version 1 hole: the key id is not part of the context.
        assert_eq!(
            ctx,
            dek_context(HeaderVersion::V1, &[1; 16], &[2; 16], &Uuid::nil())
        );
    }

    #[test]
    fn the_v2_context_names_its_label_filesystem_file_and_key() {
        let ctx = dek_context(HeaderVersion::V2, &[1; 16], &[2; 16], &KEY);
        assert_eq!(ctx.len(), 4 + 12 + 3 * (4 + 16));
        assert_eq!(&ctx[..4], &12u32.to_be_bytes());
        assert_eq!(&ctx[4..16], b"kmsfs-dek-v2");
        assert_eq!(&ctx[16..20], &16u32.to_be_bytes());
        assert_eq!(&ctx[20..36], &[1; 16]);
        assert_eq!(&ctx[36..40], &16u32.to_be_bytes());
        assert_eq!(&ctx[40..56], &[2; 16]);
        assert_eq!(&ctx[56..60], &16u32.to_be_bytes());
        assert_eq!(&ctx[60..], &[3; 16]);
    }

    #[test]
    fn a_v2_context_differs_in_every_field_and_from_v1() {
        let base = dek_context(HeaderVersion::V2, &[1; 16], &[2; 16], &KEY);
        let others = [
            dek_context(HeaderVersion::V1, &[1; 16], &[2; 16], &KEY),
            dek_context(HeaderVersion::V2, &[9; 16], &[2; 16], &KEY),
            dek_context(HeaderVersion::V2, &[1; 16], &[9; 16], &KEY),
            dek_context(
                HeaderVersion::V2,
                &[1; 16],
                &[2; 16],
                &Uuid::from_bytes([9; 16]),
            ),
            // Fields swapped: the same bytes in other places are another context.
            dek_context(HeaderVersion::V2, &[2; 16], &[1; 16], &KEY),
        ];
        for (i, other) in others.iter().enumerate() {
            assert_ne!(&base, other, "context {i}");
        }
    }

    #[test]
    fn the_fs_key_context_names_its_label_filesystem_and_key() {
        let ctx = fs_key_context(&[1; 16], &KEY);
        assert_eq!(ctx.len(), 4 + 15 + 2 * (4 + 16));
        assert_eq!(&ctx[..4], &15u32.to_be_bytes());
        assert_eq!(&ctx[4..19], b"kmsfs-fs-key-v2");
        assert_eq!(&ctx[19..23], &16u32.to_be_bytes());
        assert_eq!(&ctx[23..39], &[1; 16]);
        assert_eq!(&ctx[39..43], &16u32.to_be_bytes());
        assert_eq!(&ctx[43..], &[3; 16]);
    }

    #[test]
    fn an_fs_key_context_differs_in_every_field_and_from_every_dek_context() {
        let base = fs_key_context(&[1; 16], &KEY);
        let others = [
            fs_key_context(&[9; 16], &KEY),
            fs_key_context(&[1; 16], &Uuid::from_bytes([9; 16])),
            fs_key_context(&[1; 16], &Uuid::nil()),
            // Fields swapped.
            fs_key_context(KEY.as_bytes(), &Uuid::from_bytes([1; 16])),
            dek_context(HeaderVersion::V1, &[1; 16], &[3; 16], &KEY),
            dek_context(HeaderVersion::V2, &[1; 16], &[3; 16], &KEY),
        ];
        for (i, other) in others.iter().enumerate() {
            assert_ne!(&base, other, "context {i}");
        }
    }
}
