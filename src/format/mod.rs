//! The on-disk format of a cipher file: header encode/decode (header versions 1 and 2), block
//! seal/open, and the plaintext ⇄ ciphertext offset and size math. Pure: no file I/O, no FUSE,
//! no HTTP.
//!
//! ```text
//! [ header: 512 bytes ][ block 0 ][ block 1 ] ... [ last block, may be short ]
//! block i = nonce (12) || AES-256-GCM(plaintext [i*4096, (i+1)*4096)) || tag (16)
//! AAD of block i = "kmsfs-block-v1" || file_id (16) || i as u64 big-endian          (header v1)
//! AAD of block i = "kmsfs-block-v2" || file_id (16) || i as u64 big-endian || last  (header v2)
//! ```
//!
//! Format version 2 adds encrypted names, symlink targets and `user.*` xattrs (`names`: AES-SIV
//! under keys derived from a filesystem key, long names, the internal files of a cipher
//! directory), and header version 2 (`header`, `context`: the KMS key id bound into the DEK's
//! encryption context). The header version is per file: version 1 files stay version 1.
//!
//! `docs/FORMAT.md` is the normative description; its test vectors are checked by
//! `block::tests`, `header::tests::vectors` and `names::tests`.

mod block;
mod context;
mod header;
mod names;
mod size;

pub use block::{BlockAad, FileCipher, Place, block_aad, hex};
pub use context::{dek_context, fs_key_context};
pub use header::{FileHeader, HEADER_LEN, HeaderVersion, Keying, MAX_WRAPPED_LEN};
pub use names::{
    DIR_ID_FILE, DIR_ID_TARGET_LEN, DirId, FsKey, LONG_PREFIX, LONG_SIDE_SUFFIX, MAX_CIPHER_NAME,
    MAX_CIPHER_TARGET, MAX_CIPHER_XATTR_NAME, MAX_PLAIN_NAME, MAX_PLAIN_SHORT_NAME,
    MAX_PLAIN_TARGET, MAX_PLAIN_XATTR_NAME, MAX_PLAIN_XATTR_VALUE, MAX_SHORT_CIPHER_NAME,
    NameCipher, NameError, check_plain_name, dir_id_target, is_internal, is_long, long_name,
    long_side_name, parse_dir_id, parse_dir_id_target, random_dir_id,
};
pub use size::{
    BLOCK_CIPHER_LEN, BLOCK_OVERHEAD, BLOCK_PLAIN_LEN, CipherExtent, block_cipher_offset,
    cipher_size, plain_size, plain_size_lenient,
};

/// The bytes of hex `text`, for test vectors; panics on anything else.
#[cfg(test)]
fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A 128-bit random file identifier, bound into every block's AAD and the DEK's context.
pub type FileId = [u8; 16];

/// A 128-bit random filesystem identifier (from `kmsfs.conf`), bound into the DEK's context.
pub type FsId = [u8; 16];

/// Why bytes from disk are not a valid cipher file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The header does not start with the kmsfs magic.
    #[error("not a kmsfs file: expected magic {expected:?}, found {found:?}")]
    BadMagic {
        /// What a header starts with.
        expected: [u8; 6],
        /// What was found.
        found: [u8; 6],
    },
    /// A header version this build does not read.
    #[error("unsupported header version {0} (this build reads versions 1 and 2)")]
    UnsupportedVersion(u16),
    /// Flags or reserved bytes that versions 1 and 2 leave zero are set.
    #[error("header field {field} must be zero, found {found:#x}")]
    NonZeroReserved {
        /// Which field.
        field: &'static str,
        /// Its value.
        found: u32,
    },
    /// The wrapped DEK length is 0 or does not fit the header.
    #[error(
        "wrapped DEK length {0} does not fit the header (1 to {MAX_WRAPPED_LEN} bytes, 450 in version 1)"
    )]
    BadWrappedLen(usize),
    /// The padding after the wrapped DEK is not all zero.
    #[error("header padding is not zero")]
    BadPadding,
    /// Fewer than 512 header bytes.
    #[error("header is {0} bytes, expected {HEADER_LEN}")]
    ShortHeader(usize),
    /// The ciphertext size maps to no plaintext size.
    #[error("ciphertext size {0} is not a valid kmsfs file size")]
    BadCipherSize(u64),
    /// The header tag does not authenticate the header under this DEK.
    #[error("header authentication failed")]
    HeaderAuth,
    /// A block failed authentication.
    #[error("block {0} authentication failed")]
    BlockAuth(u64),
    /// Header version 2: the file ends with block `.0`, which is whole but not sealed as the
    /// last block (or is a hole): the file was cut short after it.
    #[error("block {0} ends the file but is not sealed as its last block: the file was cut short")]
    EndNotSealedLast(u64),
    /// Header version 2: block `.0` is sealed as the file's last block but more blocks follow
    /// it: blocks were added after the end.
    #[error(
        "block {0} is sealed as the last block but more follow it: blocks were added after the file's end"
    )]
    LastBlockInside(u64),
    /// The file ends in a torn block: fewer bytes than the smallest block (29) after its
    /// complete blocks.
    #[error("block {index} is torn: {len} bytes, fewer than a block holds")]
    TornBlock {
        /// The block's index.
        index: u64,
        /// Its bytes on disk (1 to 28).
        len: u64,
    },
}
