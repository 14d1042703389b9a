//! Content blocks: sealing and opening with a file's DEK, and the header tag.
//!
//! A block on disk is `nonce (12) || ciphertext || tag (16)` with AAD
//! `"kmsfs-block-v1" || file_id || index (u64 big-endian)`, so blocks cannot be reordered or
//! moved between files. A block of all zero bytes is a hole and reads as zeros.

use super::header::{AUTHENTICATED_PREFIX, FileHeader, HEADER_LEN};
use super::{BLOCK_OVERHEAD, FileId, FormatError, HeaderVersion};
use crate::crypto::{self, AeadKey, Key256, NONCE_LEN, TAG_LEN};

const BLOCK_AAD_LABEL: &[u8; 14] = b"kmsfs-block-v1";
const HEADER_KEY_INFO_V1: &[u8] = b"kmsfs-header-v1";
const HEADER_KEY_INFO_V2: &[u8] = b"kmsfs-header-v2";
const HEADER_TAG_LEN: usize = 16;

/// The AAD of block `index` of file `file_id`.
pub fn block_aad(file_id: &FileId, index: u64) -> [u8; 38] {
    let mut aad = [0u8; 38];
    aad[..14].copy_from_slice(BLOCK_AAD_LABEL);
    aad[14..30].copy_from_slice(file_id);
    aad[30..].copy_from_slice(&index.to_be_bytes());
    aad
}

/// Everything needed to read and write one file's content: its AES-256-GCM key (the DEK,
/// expanded once) and its header key, for the file's header version.
pub struct FileCipher {
    file_id: FileId,
    header_version: HeaderVersion,
    aead: AeadKey,
    header_key: Key256,
}

impl std::fmt::Debug for FileCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileCipher")
            .field("file_id", &hex(&self.file_id))
            .field("header_version", &self.header_version)
            .field("keys", &"[redacted]")
            .finish()
    }
}

/// Lower-case hex of `bytes` (file ids in logs and output).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl FileCipher {
    /// The cipher of file `file_id` whose DEK is `dek` and whose header is of `header_version`
    /// (the header key depends on it; the blocks do not).
    pub fn new(dek: &Key256, file_id: FileId, header_version: HeaderVersion) -> Self {
        let info = match header_version {
            HeaderVersion::V1 => HEADER_KEY_INFO_V1,
            HeaderVersion::V2 => HEADER_KEY_INFO_V2,
        };
        FileCipher {
            file_id,
            header_version,
            aead: AeadKey::new(dek),
            header_key: crypto::hkdf_sha256(dek.expose_secret(), &file_id, info),
        }
    }

    /// The file id this cipher binds into every block.
    pub fn file_id(&self) -> &FileId {
        &self.file_id
    }

    /// The version of the header this cipher writes and verifies.
    pub fn header_version(&self) -> HeaderVersion {
        self.header_version
    }

    pub(super) fn header_tag(&self, prefix: &[u8]) -> [u8; HEADER_TAG_LEN] {
        let mac = crypto::hmac_sha256(self.header_key.expose_secret(), &[prefix]);
        let mut tag = [0u8; HEADER_TAG_LEN];
        tag.copy_from_slice(&mac[..HEADER_TAG_LEN]);
        tag
    }

    /// Checks an encoded header: its structure, that it names this file and this cipher's
    /// header version, and its tag.
    pub fn verify_header(&self, bytes: &[u8; HEADER_LEN]) -> Result<(), FormatError> {
        let parsed = FileHeader::parse(bytes)?;
        let tag = self.header_tag(&bytes[..AUTHENTICATED_PREFIX]);
        if parsed.file_id != self.file_id
            || parsed.version != self.header_version
            || !crypto::constant_time_eq(&tag, FileHeader::stored_tag(bytes))
        {
            return Err(FormatError::HeaderAuth);
        }
        Ok(())
    }

    /// Seals `plain` (at most one block) as block `index` into `out`, which must be exactly
    /// `plain.len() + 28` bytes, with a fresh random nonce.
    pub fn seal_block(&self, index: u64, plain: &[u8], out: &mut [u8]) {
        self.seal_block_with_nonce(index, crypto::random_array(), plain, out);
    }

    /// Seals `plain` (at most one block) as block `index` and appends it to `out`, with a fresh
    /// random nonce: no zeroed output buffer, one copy of the plaintext.
    pub fn seal_block_append(&self, index: u64, plain: &[u8], out: &mut Vec<u8>) {
        let nonce: [u8; NONCE_LEN] = crypto::random_array();
        let start = out.len();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self.aead.seal_detached(
            nonce,
            &block_aad(&self.file_id, index),
            &mut out[start + NONCE_LEN..],
        );
        out.extend_from_slice(&tag);
    }

    /// [`FileCipher::seal_block`] with a given nonce: for test vectors only. Reusing a nonce
    /// under one DEK breaks AES-GCM.
    pub fn seal_block_with_nonce(
        &self,
        index: u64,
        nonce: [u8; NONCE_LEN],
        plain: &[u8],
        out: &mut [u8],
    ) {
        assert_eq!(
            out.len(),
            plain.len() + BLOCK_OVERHEAD as usize,
            "BUG: block output buffer has the wrong length"
        );
        let (nonce_out, rest) = out.split_at_mut(NONCE_LEN);
        nonce_out.copy_from_slice(&nonce);
        let (body, tag_out) = rest.split_at_mut(plain.len());
        body.copy_from_slice(plain);
        let tag = self
            .aead
            .seal_detached(nonce, &block_aad(&self.file_id, index), body);
        tag_out.copy_from_slice(&tag);
    }

    /// Opens block `index` in place: `block` holds `nonce || ciphertext || tag` as read from
    /// disk; on success the plaintext is `block[12..12 + n]` and `n` is returned. An all-zero
    /// block is a hole: its plaintext is zeros.
    pub fn open_block_in_place(&self, index: u64, block: &mut [u8]) -> Result<usize, FormatError> {
        let n = self.open_block_to_front(index, block, 0)?;
        block.copy_within(..n, NONCE_LEN);
        Ok(n)
    }

    /// Opens block `index`, which fills `buf[src..]` as read from disk, and writes its plaintext
    /// to the front of `buf` (`buf[..n]`, `n` returned) in the same pass: a read request opens
    /// its blocks one after the other towards the front of one buffer, and the plaintext ends up
    /// contiguous with no second copy. An all-zero block is a hole: its plaintext is zeros.
    pub fn open_block_to_front(
        &self,
        index: u64,
        buf: &mut [u8],
        src: usize,
    ) -> Result<usize, FormatError> {
        let block = buf.get(src..).unwrap_or_default();
        if block.len() <= BLOCK_OVERHEAD as usize {
            return Err(FormatError::BlockAuth(index));
        }
        let plain_len = block.len() - NONCE_LEN - TAG_LEN;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&block[..NONCE_LEN]);
        // A sealed block's random nonce is never all zeros (odds 2^-96), so only a block whose
        // nonce is zero is scanned for being a hole.
        if nonce == [0; NONCE_LEN] && block.iter().all(|&b| b == 0) {
            buf[..plain_len].fill(0);
            return Ok(plain_len);
        }
        self.aead
            .open_within(
                nonce,
                &block_aad(&self.file_id, index),
                buf,
                src + NONCE_LEN,
            )
            .map_err(|_| FormatError::BlockAuth(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher() -> FileCipher {
        FileCipher::new(&Key256::random(), [5; 16], HeaderVersion::V2)
    }

    fn seal(c: &FileCipher, index: u64, plain: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; plain.len() + 28];
        c.seal_block(index, plain, &mut out);
        out
    }

    #[test]
    fn seal_open_round_trip() {
        let c = cipher();
        for len in [1usize, 100, 4095, 4096] {
            let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut block = seal(&c, 3, &plain);
            let n = c.open_block_in_place(3, &mut block).expect("opens");
            assert_eq!(&block[12..12 + n], &plain[..]);
        }
    }

    #[test]
    fn blocks_opened_to_the_front_end_up_contiguous() {
        let c = cipher();
        let plain: Vec<u8> = (0..3 * 4096 + 10).map(|i| (i * 7) as u8).collect();
        let mut buf = Vec::new();
        for (i, chunk) in plain.chunks(4096).enumerate() {
            c.seal_block_append(i as u64, chunk, &mut buf);
        }
        // A hole in the middle: block 1 as the filesystem leaves it when never written.
        buf[4124..2 * 4124].fill(0);
        let (mut src, mut dst) = (0, 0);
        for index in 0..4 {
            let len = (buf.len() - src).min(4124);
            dst += c
                .open_block_to_front(index, &mut buf[dst..src + len], src - dst)
                .expect("opens");
            src += len;
        }
        let mut expected = plain.clone();
        expected[4096..8192].fill(0);
        assert_eq!(&buf[..dst], &expected[..]);
        // A block whose nonce is zero but whose body is not is no hole: it fails.
        let mut forged = seal(&c, 0, b"abc");
        forged[..12].fill(0);
        assert_eq!(
            c.open_block_to_front(0, &mut forged, 0),
            Err(FormatError::BlockAuth(0))
        );
    }

    #[test]
    fn wrong_index_wrong_file_flipped_bit_fail() {
        let c = cipher();
        let block = seal(&c, 1, b"secret");
        assert_eq!(
            c.open_block_in_place(2, &mut block.clone()),
            Err(FormatError::BlockAuth(2))
        );
        let other = FileCipher::new(&Key256::random(), [5; 16], HeaderVersion::V2);
        assert!(other.open_block_in_place(1, &mut block.clone()).is_err());
        for i in 0..block.len() {
            let mut bad = block.clone();
            bad[i] ^= 0x80;
            assert!(
                c.open_block_in_place(1, &mut bad).is_err(),
                "bit flip at {i}"
            );
        }
        assert!(c.open_block_in_place(1, &mut block[..28].to_vec()).is_err());
    }

    #[test]
    fn zero_block_is_a_hole() {
        let c = cipher();
        let mut block = vec![0u8; 4124];
        assert_eq!(c.open_block_in_place(9, &mut block), Ok(4096));
        assert!(block[12..12 + 4096].iter().all(|&b| b == 0));
    }

    /// The test vectors of docs/FORMAT.md, kept as a data file: fixed DEK, file id, nonce and
    /// plaintext give exact ciphertext bytes.
    #[test]
    fn format_test_vectors() {
        let doc = include_str!("../../docs/FORMAT.md");
        let vectors: serde_json::Value =
            serde_json::from_str(include_str!("../../testdata/format-v1-vectors.json"))
                .expect("vector file is JSON");
        let list = vectors["vectors"].as_array().expect("vectors array");
        assert!(list.len() >= 2);
        for v in list {
            let field = |name: &str| super::super::unhex(v[name].as_str().expect("hex field"));
            let dek = Key256::from_slice(&field("dek")).expect("32-byte dek");
            let mut file_id = [0u8; 16];
            file_id.copy_from_slice(&field("file_id"));
            let mut nonce = [0u8; 12];
            nonce.copy_from_slice(&field("nonce"));
            let index = v["block_index"].as_u64().expect("index");
            let plain = field("plaintext");
            let c = FileCipher::new(&dek, file_id, HeaderVersion::V1);
            let mut out = vec![0u8; plain.len() + 28];
            c.seal_block_with_nonce(index, nonce, &plain, &mut out);
            let expected = v["ciphertext"].as_str().expect("ciphertext");
            assert_eq!(hex(&out), expected, "vector {}", v["name"]);
            assert!(
                doc.contains(expected),
                "docs/FORMAT.md lacks vector {}",
                v["name"]
            );
            let n = c.open_block_in_place(index, &mut out).expect("opens");
            assert_eq!(&out[12..12 + n], &plain[..]);
        }
    }
}
