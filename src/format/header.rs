//! The 512-byte file header, versions 1 and 2 (one layout; each file keeps the version it was
//! made with).
//!
//! ```text
//! offset  len  field
//!      0    6  magic "KMSFS\0"
//!      6    2  header version, u16 big-endian: 1 or 2
//!      8    2  flags, u16 big-endian = 0 (none defined)
//!     10    2  reserved = 0
//!     12   16  file id (random)
//!     28   16  KMS key id (UUID, 16 raw bytes)         ┐
//!     44    2  wrapped DEK length n, u16 big-endian    │ the wrap slot
//!     46    n  wrapped DEK (the KMS ciphertext blob)   ┘
//!   46+n    …  zero padding up to offset 496 (version 1) or 480 (version 2)
//!    480    4  version 2: content key epoch, u32 big-endian          ┐
//!    484    4  version 2: re-keying, u32 big-endian: 0 or 1          │ the keying
//!    488    8  version 2: seals reserved, u64 big-endian             ┘
//!    496   16  tag: HMAC-SHA256(header key, bytes 0..28 [|| bytes 480..496 in version 2]),
//!              first 16 bytes
//! ```
//!
//! The header key is HKDF-SHA256(DEK, salt = file id, info = "kmsfs-header-v1" or
//! "kmsfs-header-v2"). The tag covers the fixed part (magic, version, flags, reserved, file
//! id) and in version 2 the keying ([`Keying`]), the padding must be zero, and the wrap slot is
//! authenticated by the KMS: its AEAD binds the DEK's encryption context
//! ([`super::dek_context`]), which names the filesystem and the file, and in version 2 the key
//! id too. A re-wrap (`re-encrypt`, also to another key) rewrites the wrap slot without the
//! DEK, so the tag, which needs the DEK, cannot cover it; a re-wrap leaves the keying and the
//! tag as they are.
//!
//! Version 1 leaves the key id to the KMS's own check that a blob is its key's: a KMS that
//! decrypts a blob under whichever key the blob names would not notice a changed key id.

use super::context::dek_context;
use super::{FileCipher, FileId, FormatError, FsId};
use uuid::Uuid;

/// Header size: one sector.
pub const HEADER_LEN: usize = 512;
/// The largest wrapped DEK a version 2 header holds (a version 1 header holds 450 bytes).
pub const MAX_WRAPPED_LEN: usize = KEYING_OFFSET - WRAPPED_OFFSET;

const MAGIC: [u8; 6] = *b"KMSFS\0";
const FILE_ID_OFFSET: usize = 12;
const KEY_ID_OFFSET: usize = 28;
const WRAPPED_LEN_OFFSET: usize = 44;
const WRAPPED_OFFSET: usize = 46;
const KEYING_OFFSET: usize = 480;
const TAG_OFFSET: usize = 496;
/// Bytes covered by the tag: everything before the wrap slot, and in version 2 the keying.
pub(super) const AUTHENTICATED_PREFIX: usize = KEY_ID_OFFSET;
/// The keying's bytes in a version 2 header, covered by the tag too.
pub(super) const KEYING: std::ops::Range<usize> = KEYING_OFFSET..TAG_OFFSET;

/// The version of one file's header. New files get [`HeaderVersion::V2`]; a version 1 file
/// stays version 1, also when its DEK is re-wrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderVersion {
    /// Version 1: the DEK's context names the filesystem and the file; the key id is checked
    /// by the KMS only as far as it checks that a blob is its key's.
    V1,
    /// Version 2: the DEK's context names the key id too, and the header counts the seals of
    /// the content key ([`Keying`]).
    V2,
}

impl HeaderVersion {
    /// The version new files get.
    pub const NEWEST: HeaderVersion = HeaderVersion::V2;

    /// The version number as stored at offset 6.
    pub fn number(self) -> u16 {
        match self {
            HeaderVersion::V1 => 1,
            HeaderVersion::V2 => 2,
        }
    }

    /// Where the wrap slot and its padding end.
    fn slot_end(self) -> usize {
        match self {
            HeaderVersion::V1 => TAG_OFFSET,
            HeaderVersion::V2 => KEYING_OFFSET,
        }
    }

    /// The version stored as `number`, if this build reads it.
    pub fn from_number(number: u16) -> Result<Self, FormatError> {
        match number {
            1 => Ok(HeaderVersion::V1),
            2 => Ok(HeaderVersion::V2),
            other => Err(FormatError::UnsupportedVersion(other)),
        }
    }
}

/// A parsed header: its version, which file, which KMS key, the wrapped DEK and (version 2)
/// the keying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHeader {
    /// The header version.
    pub version: HeaderVersion,
    /// The file's random id.
    pub file_id: FileId,
    /// The KMS key that wrapped the DEK.
    pub key_id: Uuid,
    /// The wrapped DEK (opaque KMS ciphertext).
    pub wrapped_dek: Vec<u8>,
    /// Version 2: which content key seals the blocks, and how many blocks it may have sealed.
    /// Always the default in version 1.
    pub keying: Keying,
}

/// Version 2: the content key a file's blocks are sealed with, and its seal count (bytes
/// 480..496 of the header, under the tag). Each AES-GCM key seals at most a budget of blocks
/// with random nonces; past it, the file moves to the next epoch's key and re-seals its blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Keying {
    /// The content key's epoch: 0 is the DEK itself, `e > 0` a key derived from it.
    pub epoch: u32,
    /// True while the blocks are re-sealed from epoch `epoch - 1` to `epoch`: a block may be
    /// under either key.
    pub rekeying: bool,
    /// An upper bound of the blocks sealed under the epoch's key: reserved ahead, so that the
    /// header is rewritten only when the count passes it.
    pub seals: u64,
}

impl Keying {
    /// The 16 bytes of the keying as the header stores them.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..4].copy_from_slice(&self.epoch.to_be_bytes());
        out[4..8].copy_from_slice(&u32::from(self.rekeying).to_be_bytes());
        out[8..].copy_from_slice(&self.seals.to_be_bytes());
        out
    }

    fn parse(bytes: &[u8]) -> Result<Keying, FormatError> {
        let word = |at: usize| {
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let rekeying = match word(4) {
            0 => false,
            1 => true,
            other => {
                return Err(FormatError::NonZeroReserved {
                    field: "re-keying",
                    found: other,
                });
            }
        };
        if rekeying && word(0) == 0 {
            return Err(FormatError::NonZeroReserved {
                field: "re-keying",
                found: 1,
            });
        }
        let mut seals = [0u8; 8];
        seals.copy_from_slice(&bytes[8..16]);
        Ok(Keying {
            epoch: word(0),
            rekeying,
            seals: u64::from_be_bytes(seals),
        })
    }
}

impl FileHeader {
    /// Encodes the header and its tag. `cipher` must be the file's own cipher (same DEK, file
    /// id and header version). Fails only when the wrapped DEK does not fit.
    pub fn encode(&self, cipher: &FileCipher) -> Result<[u8; HEADER_LEN], FormatError> {
        assert!(
            cipher.file_id() == &self.file_id && cipher.header_version() == self.version,
            "BUG: a header is encoded with another file's cipher"
        );
        assert!(
            self.version != HeaderVersion::V1 || self.keying == Keying::default(),
            "BUG: a version 1 header has no keying"
        );
        let mut out = [0u8; HEADER_LEN];
        out[..6].copy_from_slice(&MAGIC);
        out[6..8].copy_from_slice(&self.version.number().to_be_bytes());
        out[FILE_ID_OFFSET..KEY_ID_OFFSET].copy_from_slice(&self.file_id);
        self.write_wrap_slot(&mut out)?;
        if self.version == HeaderVersion::V2 {
            out[KEYING].copy_from_slice(&self.keying.to_bytes());
        }
        let tag = cipher.header_tag(&out);
        out[TAG_OFFSET..].copy_from_slice(&tag);
        Ok(out)
    }

    /// The encryption context of this file's DEK in filesystem `fs_id`.
    pub fn dek_context(&self, fs_id: &FsId) -> Vec<u8> {
        dek_context(self.version, fs_id, &self.file_id, &self.key_id)
    }

    /// Replaces the wrap slot (key id and wrapped DEK) of an encoded header, keeping its
    /// version, keying and tag: what a re-wrap writes. In version 2 the DEK must have been wrapped
    /// under the context that names the new key id.
    pub fn rewrap(
        encoded: &[u8; HEADER_LEN],
        key_id: Uuid,
        wrapped_dek: &[u8],
    ) -> Result<[u8; HEADER_LEN], FormatError> {
        let parsed = Self::parse(encoded)?;
        let replaced = FileHeader {
            key_id,
            wrapped_dek: wrapped_dek.to_vec(),
            ..parsed
        };
        let mut out = *encoded;
        out[KEY_ID_OFFSET..replaced.version.slot_end()].fill(0);
        replaced.write_wrap_slot(&mut out)?;
        Ok(out)
    }

    fn write_wrap_slot(&self, out: &mut [u8; HEADER_LEN]) -> Result<(), FormatError> {
        let n = self.wrapped_dek.len();
        if n == 0 || n > self.version.slot_end() - WRAPPED_OFFSET {
            return Err(FormatError::BadWrappedLen(n));
        }
        out[KEY_ID_OFFSET..WRAPPED_LEN_OFFSET].copy_from_slice(self.key_id.as_bytes());
        let len = u16::try_from(n).expect("BUG: n <= MAX_WRAPPED_LEN fits in u16");
        out[WRAPPED_LEN_OFFSET..WRAPPED_OFFSET].copy_from_slice(&len.to_be_bytes());
        out[WRAPPED_OFFSET..WRAPPED_OFFSET + n].copy_from_slice(&self.wrapped_dek);
        Ok(())
    }

    /// Parses the structure of a header (magic, version, flags, reserved, lengths, zero
    /// padding). Does not authenticate it: that needs the DEK, see
    /// [`FileCipher::verify_header`].
    pub fn parse(bytes: &[u8]) -> Result<FileHeader, FormatError> {
        if bytes.len() < HEADER_LEN {
            return Err(FormatError::ShortHeader(bytes.len()));
        }
        let mut magic = [0u8; 6];
        magic.copy_from_slice(&bytes[..6]);
        if magic != MAGIC {
            return Err(FormatError::BadMagic {
                expected: MAGIC,
                found: magic,
            });
        }
        let version = HeaderVersion::from_number(u16::from_be_bytes([bytes[6], bytes[7]]))?;
        let flags = u16::from_be_bytes([bytes[8], bytes[9]]);
        if flags != 0 {
            return Err(FormatError::NonZeroReserved {
                field: "flags",
                found: flags.into(),
            });
        }
        let reserved = u16::from_be_bytes([bytes[10], bytes[11]]);
        if reserved != 0 {
            return Err(FormatError::NonZeroReserved {
                field: "reserved",
                found: reserved.into(),
            });
        }
        let mut file_id = [0u8; 16];
        file_id.copy_from_slice(&bytes[FILE_ID_OFFSET..KEY_ID_OFFSET]);
        let mut key_id = [0u8; 16];
        key_id.copy_from_slice(&bytes[KEY_ID_OFFSET..WRAPPED_LEN_OFFSET]);
        let n = usize::from(u16::from_be_bytes([
            bytes[WRAPPED_LEN_OFFSET],
            bytes[WRAPPED_LEN_OFFSET + 1],
        ]));
        let slot_end = version.slot_end();
        if n == 0 || n > slot_end - WRAPPED_OFFSET {
            return Err(FormatError::BadWrappedLen(n));
        }
        if bytes[WRAPPED_OFFSET + n..slot_end].iter().any(|&b| b != 0) {
            return Err(FormatError::BadPadding);
        }
        let keying = match version {
            HeaderVersion::V1 => Keying::default(),
            HeaderVersion::V2 => Keying::parse(&bytes[KEYING])?,
        };
        Ok(FileHeader {
            version,
            file_id,
            key_id: Uuid::from_bytes(key_id),
            wrapped_dek: bytes[WRAPPED_OFFSET..WRAPPED_OFFSET + n].to_vec(),
            keying,
        })
    }

    /// The stored tag of an encoded header.
    pub(super) fn stored_tag(bytes: &[u8; HEADER_LEN]) -> &[u8] {
        &bytes[TAG_OFFSET..]
    }
}

#[cfg(test)]
mod tests;
