//! The KMS ciphertext blob: what `encrypt`, `generate-data-key` and `re-encrypt` return and
//! `decrypt` takes. Self-describing, so a reader (and `kmsfs inspect`) can tell which key and
//! which material version made it without asking the KMS.
//!
//! Byte layout, version 1 (all integers big-endian):
//!
//! ```text
//! offset  length  field
//!      0       1  format byte, 0x01
//!      1      16  KMS key id (the UUID's 16 bytes)
//!     17       4  key material version (u32)
//!     21      12  AES-GCM nonce (random)
//!     33       n  AES-256-GCM ciphertext of the n plaintext bytes
//!   33+n      16  AES-GCM tag
//! ```
//!
//! AAD = the 33 header bytes (format, key id, version, nonce) || the encryption context bytes
//! (an absent context is the same as an empty one). The header is fixed-length, so the split
//! between header and context is unambiguous. The nonce is in the AAD only because it is part
//! of the header; GCM authenticates it anyway.
//!
//! A blob of the smallest size (49 bytes) carries an empty plaintext.

use crate::crypto::{AeadKey, AuthError, NONCE_LEN, SecretBytes, TAG_LEN, random_array};
use uuid::Uuid;
use zeroize::Zeroizing;

/// The format byte of version 1 blobs.
pub const FORMAT_V1: u8 = 0x01;
/// Length of the header: format byte, key id, material version, nonce.
pub const HEADER_LEN: usize = 1 + 16 + 4 + NONCE_LEN;
/// Bytes a blob adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// The parsed header of a blob: which key and material version sealed it, with which nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobHeader {
    /// The KMS key id.
    pub key_id: Uuid,
    /// The key material version.
    pub version: u32,
    /// The AES-GCM nonce.
    pub nonce: [u8; NONCE_LEN],
}

impl BlobHeader {
    /// The header's 33 bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = FORMAT_V1;
        out[1..17].copy_from_slice(self.key_id.as_bytes());
        out[17..21].copy_from_slice(&self.version.to_be_bytes());
        out[21..HEADER_LEN].copy_from_slice(&self.nonce);
        out
    }

    /// Parses the header of `blob`; `None` when the blob is too short to hold a header and a tag,
    /// or its format byte is not [`FORMAT_V1`].
    pub fn parse(blob: &[u8]) -> Option<Self> {
        if blob.len() < OVERHEAD || blob[0] != FORMAT_V1 {
            return None;
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&blob[1..17]);
        let mut version = [0u8; 4];
        version.copy_from_slice(&blob[17..21]);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&blob[21..HEADER_LEN]);
        Some(BlobHeader {
            key_id: Uuid::from_bytes(id),
            version: u32::from_be_bytes(version),
            nonce,
        })
    }
}

/// The key id and material version a blob names, without decrypting it (for `kmsfs inspect`).
/// `None` when the bytes are not a version 1 blob.
pub fn blob_key_version(blob: &[u8]) -> Option<(Uuid, u32)> {
    BlobHeader::parse(blob).map(|h| (h.key_id, h.version))
}

fn aad(header: &[u8; HEADER_LEN], context: Option<&[u8]>) -> Vec<u8> {
    let context = context.unwrap_or_default();
    let mut aad = Vec::with_capacity(HEADER_LEN + context.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(context);
    aad
}

/// Seals `plaintext` under `key` (material `version` of KMS key `key_id`) into a blob, with a
/// fresh random nonce.
pub fn seal(
    key: &AeadKey,
    key_id: Uuid,
    version: u32,
    plaintext: &[u8],
    context: Option<&[u8]>,
) -> Vec<u8> {
    let header = BlobHeader {
        key_id,
        version,
        nonce: random_array(),
    };
    let header_bytes = header.to_bytes();
    let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
    out.extend_from_slice(&header_bytes);
    out.extend_from_slice(plaintext);
    let tag = key.seal_detached(
        header.nonce,
        &aad(&header_bytes, context),
        &mut out[HEADER_LEN..],
    );
    out.extend_from_slice(&tag);
    out
}

/// Opens a blob made by [`seal`] with the key of the material version its header names.
///
/// # Errors
/// [`AuthError`] when the blob is malformed, was sealed under another key or context, or was
/// altered in any byte. The caller should check the header's key id before calling.
pub fn open(key: &AeadKey, blob: &[u8], context: Option<&[u8]>) -> Result<SecretBytes, AuthError> {
    let header = BlobHeader::parse(blob).ok_or(AuthError)?;
    let header_bytes = header.to_bytes();
    // Zeroized on every path, so a partly decrypted buffer never lingers.
    let mut buf = Zeroizing::new(blob[HEADER_LEN..].to_vec());
    let plain_len = key
        .open_in_place(header.nonce, &aad(&header_bytes, context), &mut buf)?
        .len();
    buf.truncate(plain_len);
    Ok(SecretBytes::new(std::mem::take(&mut *buf)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Key256;

    #[test]
    fn seal_then_open_and_header_round_trip() {
        let key = AeadKey::new(&Key256::random());
        let id = Uuid::new_v4();
        let blob = seal(&key, id, 7, b"secret", Some(b"ctx"));
        assert_eq!(blob.len(), OVERHEAD + 6);
        assert_eq!(blob_key_version(&blob), Some((id, 7)));
        assert_eq!(
            open(&key, &blob, Some(b"ctx"))
                .expect("opens")
                .expose_secret(),
            b"secret"
        );
        let empty = seal(&key, id, 1, b"", None);
        assert_eq!(empty.len(), OVERHEAD);
        assert!(
            open(&key, &empty, Some(b""))
                .expect("absent = empty context")
                .is_empty()
        );
    }

    #[test]
    fn every_alteration_fails_the_same_way() {
        let key = AeadKey::new(&Key256::random());
        let blob = seal(&key, Uuid::new_v4(), 1, b"payload", Some(b"ctx"));
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x01;
            assert_eq!(
                open(&key, &bad, Some(b"ctx")).map(|_| ()),
                Err(AuthError),
                "byte {i}"
            );
        }
        let other = AeadKey::new(&Key256::random());
        type Case<'a> = (&'a AeadKey, &'a [u8], Option<&'a [u8]>);
        let cases: [Case; 6] = [
            (&key, &blob, Some(b"ctX")),
            (&key, &blob, None),
            (&other, &blob, Some(b"ctx")),
            (&key, &blob[..OVERHEAD - 1], Some(b"ctx")),
            (&key, &blob[..blob.len() - 1], Some(b"ctx")),
            (&key, b"", Some(b"ctx")),
        ];
        for (i, (k, b, c)) in cases.into_iter().enumerate() {
            assert_eq!(open(k, b, c).map(|_| ()), Err(AuthError), "case {i}");
        }
    }

    #[test]
    fn header_parse_refuses_short_and_unknown_formats() {
        assert_eq!(blob_key_version(&[FORMAT_V1; OVERHEAD - 1]), None);
        assert_eq!(blob_key_version(&[0x02; OVERHEAD]), None);
        assert_eq!(blob_key_version(&[]), None);
        let mut ok = [0u8; OVERHEAD];
        ok[0] = FORMAT_V1;
        ok[20] = 3;
        assert_eq!(blob_key_version(&ok), Some((Uuid::nil(), 3)));
    }
}
