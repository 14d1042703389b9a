//! The 512-byte file header.
//!
//! ```text
//! offset  len  field
//!      0    6  magic "KMSFS\0"
//!      6    2  format version, u16 big-endian = 1
//!      8    2  flags, u16 big-endian = 0 (none defined in version 1)
//!     10    2  reserved = 0
//!     12   16  file id (random)
//!     28   16  KMS key id (UUID, 16 raw bytes)
//!     44    2  wrapped DEK length n, u16 big-endian, 1..=450
//!     46    n  wrapped DEK (the KMS ciphertext blob)
//!   46+n    …  zero padding up to offset 496
//!    496   16  tag: HMAC-SHA256(header key, bytes 0..28), first 16 bytes
//! ```
//!
//! The header key is HKDF-SHA256(DEK, salt = file id, info = "kmsfs-header-v1"). The tag covers
//! the fixed part (magic, version, flags, reserved, file id); the wrap slot (key id, length,
//! wrapped DEK) is authenticated by the KMS, whose AEAD binds the file id and filesystem id
//! through the encryption context, and the padding must be zero. So every header byte is
//! checked, and re-wrapping a DEK (`re-encrypt`) rewrites the wrap slot without the DEK.

use super::{FileCipher, FileId, FormatError};
use uuid::Uuid;

/// Header size: one sector.
pub const HEADER_LEN: usize = 512;
/// The largest wrapped DEK a header holds.
pub const MAX_WRAPPED_LEN: usize = TAG_OFFSET - WRAPPED_OFFSET;

const MAGIC: [u8; 6] = *b"KMSFS\0";
const VERSION: u16 = 1;
const FILE_ID_OFFSET: usize = 12;
const KEY_ID_OFFSET: usize = 28;
const WRAPPED_LEN_OFFSET: usize = 44;
const WRAPPED_OFFSET: usize = 46;
const TAG_OFFSET: usize = 496;
/// Bytes covered by the tag.
pub(super) const AUTHENTICATED_PREFIX: usize = KEY_ID_OFFSET;

/// A parsed header: which file, which KMS key, and the wrapped DEK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHeader {
    /// The file's random id.
    pub file_id: FileId,
    /// The KMS key that wrapped the DEK.
    pub key_id: Uuid,
    /// The wrapped DEK (opaque KMS ciphertext).
    pub wrapped_dek: Vec<u8>,
}

impl FileHeader {
    /// Encodes the header and its tag. `cipher` must be the file's own cipher (same DEK and
    /// file id). Fails only when the wrapped DEK does not fit.
    pub fn encode(&self, cipher: &FileCipher) -> Result<[u8; HEADER_LEN], FormatError> {
        let mut out = [0u8; HEADER_LEN];
        out[..6].copy_from_slice(&MAGIC);
        out[6..8].copy_from_slice(&VERSION.to_be_bytes());
        out[FILE_ID_OFFSET..KEY_ID_OFFSET].copy_from_slice(&self.file_id);
        self.write_wrap_slot(&mut out)?;
        let tag = cipher.header_tag(&out[..AUTHENTICATED_PREFIX]);
        out[TAG_OFFSET..].copy_from_slice(&tag);
        Ok(out)
    }

    /// Replaces the wrap slot (key id and wrapped DEK) of an encoded header, keeping its tag:
    /// what a re-wrap after a key rotation writes.
    pub fn rewrap(
        encoded: &[u8; HEADER_LEN],
        key_id: Uuid,
        wrapped_dek: &[u8],
    ) -> Result<[u8; HEADER_LEN], FormatError> {
        let parsed = Self::parse(encoded)?;
        let replaced = FileHeader {
            file_id: parsed.file_id,
            key_id,
            wrapped_dek: wrapped_dek.to_vec(),
        };
        let mut out = *encoded;
        out[KEY_ID_OFFSET..TAG_OFFSET].fill(0);
        replaced.write_wrap_slot(&mut out)?;
        Ok(out)
    }

    fn write_wrap_slot(&self, out: &mut [u8; HEADER_LEN]) -> Result<(), FormatError> {
        let n = self.wrapped_dek.len();
        if n == 0 || n > MAX_WRAPPED_LEN {
            return Err(FormatError::BadWrappedLen(n));
        }
        out[KEY_ID_OFFSET..WRAPPED_LEN_OFFSET].copy_from_slice(self.key_id.as_bytes());
        let len = u16::try_from(n).expect("BUG: n <= MAX_WRAPPED_LEN fits in u16");
        out[WRAPPED_LEN_OFFSET..WRAPPED_OFFSET].copy_from_slice(&len.to_be_bytes());
        out[WRAPPED_OFFSET..WRAPPED_OFFSET + n].copy_from_slice(&self.wrapped_dek);
        Ok(())
    }

    /// Parses the structure of a header (magic, version, lengths, zero padding). Does not
    /// authenticate it: that needs the DEK, see [`FileCipher::verify_header`].
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
        let version = u16::from_be_bytes([bytes[6], bytes[7]]);
        if version != VERSION {
            return Err(FormatError::UnsupportedVersion(version));
        }
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
        let n = usize::from(u16::from_be_bytes([bytes[44], bytes[45]]));
        if n == 0 || n > MAX_WRAPPED_LEN {
            return Err(FormatError::BadWrappedLen(n));
        }
        if bytes[WRAPPED_OFFSET + n..TAG_OFFSET]
            .iter()
            .any(|&b| b != 0)
        {
            return Err(FormatError::BadPadding);
        }
        Ok(FileHeader {
            file_id,
            key_id: Uuid::from_bytes(key_id),
            wrapped_dek: bytes[WRAPPED_OFFSET..WRAPPED_OFFSET + n].to_vec(),
        })
    }

    /// The stored tag of an encoded header.
    pub(super) fn stored_tag(bytes: &[u8; HEADER_LEN]) -> &[u8] {
        &bytes[TAG_OFFSET..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Key256;

    fn sample() -> (FileHeader, FileCipher) {
        let file_id = [7u8; 16];
        let header = FileHeader {
            file_id,
            key_id: Uuid::from_bytes([9; 16]),
            wrapped_dek: vec![0xAB; 77],
        };
        (header, FileCipher::new(&Key256::random(), file_id))
    }

    #[test]
    fn encode_parse_verify_round_trip() {
        let (header, cipher) = sample();
        let bytes = header.encode(&cipher).expect("fits");
        assert_eq!(FileHeader::parse(&bytes), Ok(header));
        assert_eq!(cipher.verify_header(&bytes), Ok(()));
    }

    #[test]
    fn every_flipped_byte_is_caught_by_parse_or_tag() {
        let (header, cipher) = sample();
        let bytes = header.encode(&cipher).expect("fits");
        for i in 0..HEADER_LEN {
            let mut bad = bytes;
            bad[i] ^= 0x01;
            let parsed = FileHeader::parse(&bad);
            let caught = match parsed {
                Err(_) => true,
                // The wrap slot is authenticated by the KMS: a changed key id or wrapped DEK
                // parses but differs, so the unwrap fails.
                Ok(p) => p != header || cipher.verify_header(&bad).is_err(),
            };
            assert!(caught, "flipped byte {i} went unnoticed");
        }
    }

    #[test]
    fn wrong_dek_fails_the_tag() {
        let (header, cipher) = sample();
        let bytes = header.encode(&cipher).expect("fits");
        let other = FileCipher::new(&Key256::random(), header.file_id);
        assert_eq!(other.verify_header(&bytes), Err(FormatError::HeaderAuth));
    }

    #[test]
    fn rewrap_keeps_the_tag_valid() {
        let (header, cipher) = sample();
        let bytes = header.encode(&cipher).expect("fits");
        let new_key = Uuid::from_bytes([3; 16]);
        let rewrapped = FileHeader::rewrap(&bytes, new_key, &[0x55; 12]).expect("fits");
        let parsed = FileHeader::parse(&rewrapped).expect("parses");
        assert_eq!(parsed.key_id, new_key);
        assert_eq!(parsed.wrapped_dek, vec![0x55; 12]);
        assert_eq!(parsed.file_id, header.file_id);
        assert_eq!(cipher.verify_header(&rewrapped), Ok(()));
    }

    #[test]
    fn bad_lengths_and_short_input() {
        let (mut header, cipher) = sample();
        header.wrapped_dek = vec![];
        assert_eq!(header.encode(&cipher), Err(FormatError::BadWrappedLen(0)));
        header.wrapped_dek = vec![1; MAX_WRAPPED_LEN + 1];
        assert!(header.encode(&cipher).is_err());
        header.wrapped_dek = vec![1; MAX_WRAPPED_LEN];
        assert!(header.encode(&cipher).is_ok());
        assert_eq!(
            FileHeader::parse(&[0u8; 100]),
            Err(FormatError::ShortHeader(100))
        );
        let mut bytes = header.encode(&cipher).expect("fits");
        bytes[44..46].copy_from_slice(&999u16.to_be_bytes());
        assert_eq!(
            FileHeader::parse(&bytes),
            Err(FormatError::BadWrappedLen(999))
        );
        bytes[6..8].copy_from_slice(&2u16.to_be_bytes());
        assert_eq!(
            FileHeader::parse(&bytes),
            Err(FormatError::UnsupportedVersion(2))
        );
        assert!(matches!(
            FileHeader::parse(&[0u8; 512]),
            Err(FormatError::BadMagic { .. })
        ));
    }
}

#[cfg(test)]
mod vector_tests {
    use super::super::unhex;
    use super::*;
    use crate::crypto::Key256;

    /// The header vector of docs/FORMAT.md (testdata/format-v1-vectors.json), computed
    /// independently: encoding gives exactly these 512 bytes.
    #[test]
    fn header_test_vector() {
        let vectors: serde_json::Value =
            serde_json::from_str(include_str!("../../testdata/format-v1-vectors.json"))
                .expect("vector file is JSON");
        let v = &vectors["header"];
        let field = |name: &str| unhex(v[name].as_str().expect("hex field"));
        let dek = Key256::from_slice(&field("dek")).expect("32 bytes");
        let mut file_id = [0u8; 16];
        file_id.copy_from_slice(&field("file_id"));
        let header = FileHeader {
            file_id,
            key_id: v["key_id"]
                .as_str()
                .and_then(|s| Uuid::parse_str(s).ok())
                .expect("uuid"),
            wrapped_dek: field("wrapped_dek"),
        };
        let encoded = header
            .encode(&FileCipher::new(&dek, file_id))
            .expect("fits");
        assert_eq!(encoded.to_vec(), field("header"));
        let doc = include_str!("../../docs/FORMAT.md");
        assert!(
            doc.contains(v["tag"].as_str().expect("tag")),
            "docs/FORMAT.md lacks the header tag"
        );
    }
}
