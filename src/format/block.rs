//! Content blocks: sealing and opening with a file's DEK, and the header tag.
//!
//! A block on disk is `nonce (12) || ciphertext || tag (16)`. Its AAD binds the file and the
//! block's index, so blocks cannot be reordered or moved between files:
//!
//! ```text
//! header version 1:  "kmsfs-block-v1" || file_id (16) || index (u64 big-endian)
//! header version 2:  "kmsfs-block-v2" || file_id (16) || index (u64 big-endian) || last (1)
//! ```
//!
//! In version 2 `last` is 1 for the file's last block and 0 for every other block, so a file
//! cut at a block boundary ends in a block sealed as not the last, and blocks added after the
//! end follow a block sealed as the last: both fail. A block of all zero bytes is a hole and
//! reads as zeros; in version 2 a hole is never the last block.

use super::header::{AUTHENTICATED_PREFIX, FileHeader, HEADER_LEN, KEYING, Keying};
use super::{BLOCK_OVERHEAD, FileId, FormatError, HeaderVersion};
use crate::crypto::{self, AeadKey, Key256, NONCE_LEN, TAG_LEN};

const BLOCK_AAD_LABEL_V1: &[u8; 14] = b"kmsfs-block-v1";
const BLOCK_AAD_LABEL_V2: &[u8; 14] = b"kmsfs-block-v2";
const HEADER_KEY_INFO_V1: &[u8] = b"kmsfs-header-v1";
const HEADER_KEY_INFO_V2: &[u8] = b"kmsfs-header-v2";
const CONTENT_KEY_INFO_V2: &[u8] = b"kmsfs-content-v2";
const HEADER_TAG_LEN: usize = 16;

/// Where a block sits in its file. Header version 2 seals the last block differently from the
/// others; version 1 does not tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Any block but the last.
    Inner,
    /// The file's last block.
    Last,
}

impl Place {
    /// The place of block `index` in a file of `plain_size` plaintext bytes.
    pub fn of(index: u64, plain_size: u64) -> Place {
        if plain_size > 0 && index == (plain_size - 1) / super::BLOCK_PLAIN_LEN {
            Place::Last
        } else {
            Place::Inner
        }
    }

    fn other(self) -> Place {
        match self {
            Place::Inner => Place::Last,
            Place::Last => Place::Inner,
        }
    }
}

/// The AAD of one block: 38 bytes in header version 1, 39 in version 2.
pub struct BlockAad {
    bytes: [u8; 39],
    len: usize,
}

impl BlockAad {
    /// The AAD bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The AAD of block `index` at `place` of file `file_id` with a header of `version`.
pub fn block_aad(version: HeaderVersion, file_id: &FileId, index: u64, place: Place) -> BlockAad {
    let mut bytes = [0u8; 39];
    bytes[14..30].copy_from_slice(file_id);
    bytes[30..38].copy_from_slice(&index.to_be_bytes());
    let len = match version {
        HeaderVersion::V1 => {
            bytes[..14].copy_from_slice(BLOCK_AAD_LABEL_V1);
            38
        }
        HeaderVersion::V2 => {
            bytes[..14].copy_from_slice(BLOCK_AAD_LABEL_V2);
            bytes[38] = u8::from(place == Place::Last);
            39
        }
    };
    BlockAad { bytes, len }
}

/// Everything needed to read and write one file's content, as one header describes it: its
/// AES-256-GCM content key (expanded once; while re-keying, the previous epoch's too), its
/// header key, and the DEK they come from.
pub struct FileCipher {
    file_id: FileId,
    header_version: HeaderVersion,
    keying: Keying,
    dek: Key256,
    aead: AeadKey,
    previous: Option<AeadKey>,
    header_key: Key256,
}

impl std::fmt::Debug for FileCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileCipher")
            .field("file_id", &hex(&self.file_id))
            .field("header_version", &self.header_version)
            .field("keying", &self.keying)
            .field("keys", &"[redacted]")
            .finish()
    }
}

/// The content key of `epoch`: the DEK itself for epoch 0, else
/// HKDF-SHA256(DEK, salt = file id, info = "kmsfs-content-v2" || epoch as u32 big-endian).
fn content_key(dek: &Key256, file_id: &FileId, epoch: u32) -> AeadKey {
    if epoch == 0 {
        return AeadKey::new(dek);
    }
    let mut info = CONTENT_KEY_INFO_V2.to_vec();
    info.extend_from_slice(&epoch.to_be_bytes());
    AeadKey::new(&crypto::hkdf_sha256(dek.expose_secret(), file_id, &info))
}

/// Lower-case hex of `bytes` (file ids in logs and output), by the `hex` crate.
pub fn hex(bytes: &[u8]) -> String {
    ::hex::encode(bytes)
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
            keying: Keying::default(),
            dek: dek.clone(),
            aead: AeadKey::new(dek),
            previous: None,
            header_key: crypto::hkdf_sha256(dek.expose_secret(), &file_id, info),
        }
    }

    /// The same file's cipher for a header with `keying` (version 2): the epoch's content key,
    /// and while re-keying the previous epoch's too.
    pub fn with_keying(&self, keying: Keying) -> FileCipher {
        assert!(
            self.header_version != HeaderVersion::V1 || keying == Keying::default(),
            "BUG: a version 1 file has no keying"
        );
        let previous = (keying.rekeying && keying.epoch > 0)
            .then(|| content_key(&self.dek, &self.file_id, keying.epoch - 1));
        FileCipher {
            file_id: self.file_id,
            header_version: self.header_version,
            keying,
            dek: self.dek.clone(),
            aead: content_key(&self.dek, &self.file_id, keying.epoch),
            previous,
            header_key: self.header_key.clone(),
        }
    }

    /// The keying of the header this cipher was made for.
    pub fn keying(&self) -> Keying {
        self.keying
    }

    /// The file id this cipher binds into every block.
    pub fn file_id(&self) -> &FileId {
        &self.file_id
    }

    /// The version of the header this cipher writes and verifies.
    pub fn header_version(&self) -> HeaderVersion {
        self.header_version
    }

    /// True when this cipher seals the last block as the last one (header version 2).
    pub fn marks_last(&self) -> bool {
        self.header_version != HeaderVersion::V1
    }

    /// True when the file's header counts the seals of its content key (header version 2).
    pub fn counts_seals(&self) -> bool {
        self.header_version != HeaderVersion::V1
    }

    /// True when `other` seals with the same content key: the same file (DEK) and epoch.
    pub fn seals_like(&self, other: &FileCipher) -> bool {
        self.file_id == other.file_id && self.keying.epoch == other.keying.epoch
    }

    fn aad(&self, index: u64, place: Place) -> BlockAad {
        block_aad(self.header_version, &self.file_id, index, place)
    }

    /// The tag of an encoded header: over bytes 0..28, and in version 2 the keying too.
    pub(super) fn header_tag(&self, header: &[u8; HEADER_LEN]) -> [u8; HEADER_TAG_LEN] {
        let prefix = &header[..AUTHENTICATED_PREFIX];
        let mac = match self.header_version {
            HeaderVersion::V1 => crypto::hmac_sha256(self.header_key.expose_secret(), &[prefix]),
            HeaderVersion::V2 => {
                crypto::hmac_sha256(self.header_key.expose_secret(), &[prefix, &header[KEYING]])
            }
        };
        let mut tag = [0u8; HEADER_TAG_LEN];
        tag.copy_from_slice(&mac[..HEADER_TAG_LEN]);
        tag
    }

    /// Checks an encoded header: its structure, that it names this file, this cipher's header
    /// version and keying, and its tag.
    pub fn verify_header(&self, bytes: &[u8; HEADER_LEN]) -> Result<(), FormatError> {
        let parsed = FileHeader::parse(bytes)?;
        let tag = self.header_tag(bytes);
        if parsed.file_id != self.file_id
            || parsed.version != self.header_version
            || parsed.keying != self.keying
            || !crypto::constant_time_eq(&tag, FileHeader::stored_tag(bytes))
        {
            return Err(FormatError::HeaderAuth);
        }
        Ok(())
    }

    /// Seals `plain` (at most one block) as block `index` at `place` into `out`, which must be
    /// exactly `plain.len() + 28` bytes, with a fresh random nonce.
    pub fn seal_block(&self, index: u64, place: Place, plain: &[u8], out: &mut [u8]) {
        self.seal_block_with_nonce(index, place, crypto::random_array(), plain, out);
    }

    /// Seals `plain` (at most one block) as block `index` at `place` and appends it to `out`,
    /// with a fresh random nonce: no zeroed output buffer, one copy of the plaintext.
    pub fn seal_block_append(&self, index: u64, place: Place, plain: &[u8], out: &mut Vec<u8>) {
        let nonce: [u8; NONCE_LEN] = crypto::random_array();
        let start = out.len();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self.aead.seal_detached(
            nonce,
            self.aad(index, place).as_bytes(),
            &mut out[start + NONCE_LEN..],
        );
        out.extend_from_slice(&tag);
    }

    /// [`FileCipher::seal_block`] with a given nonce: for test vectors only. Reusing a nonce
    /// under one DEK breaks AES-GCM.
    pub fn seal_block_with_nonce(
        &self,
        index: u64,
        place: Place,
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
            .seal_detached(nonce, self.aad(index, place).as_bytes(), body);
        tag_out.copy_from_slice(&tag);
    }

    /// Opens block `index` at `place` in place: `block` holds `nonce || ciphertext || tag` as
    /// read from disk; on success the plaintext is `block[12..12 + n]` and `n` is returned. An
    /// all-zero block is a hole: its plaintext is zeros.
    pub fn open_block_in_place(
        &self,
        index: u64,
        place: Place,
        block: &mut [u8],
    ) -> Result<usize, FormatError> {
        let n = self.open_block_to_front(index, place, block, 0)?;
        block.copy_within(..n, NONCE_LEN);
        Ok(n)
    }

    /// Opens block `index` at `place`, which fills `buf[src..]` as read from disk, and writes
    /// its plaintext to the front of `buf` (`buf[..n]`, `n` returned) in the same pass: a read
    /// request opens its blocks one after the other towards the front of one buffer, and the
    /// plaintext ends up contiguous with no second copy. An all-zero block is a hole: its
    /// plaintext is zeros; in header version 2 a hole at the last place fails
    /// ([`FormatError::EndNotSealedLast`]). On failure `buf[src..]` is left undefined.
    pub fn open_block_to_front(
        &self,
        index: u64,
        place: Place,
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
            if place == Place::Last && self.marks_last() {
                return Err(FormatError::EndNotSealedLast(index));
            }
            buf[..plain_len].fill(0);
            return Ok(plain_len);
        }
        let aad = self.aad(index, place);
        let Some(previous) = &self.previous else {
            return self
                .aead
                .open_within(nonce, aad.as_bytes(), buf, src + NONCE_LEN)
                .map_err(|_| FormatError::BlockAuth(index));
        };
        // Re-keying: the block is under this epoch's key or the previous one's. A failed open
        // leaves the bytes undefined, so the second try gets a copy.
        let saved = buf[src..].to_vec();
        if let Ok(n) = self
            .aead
            .open_within(nonce, aad.as_bytes(), buf, src + NONCE_LEN)
        {
            return Ok(n);
        }
        buf[src..].copy_from_slice(&saved);
        previous
            .open_within(nonce, aad.as_bytes(), buf, src + NONCE_LEN)
            .map_err(|_| FormatError::BlockAuth(index))
    }

    /// True while the file is re-keyed: a block may be under the previous epoch's key.
    pub fn is_rekeying(&self) -> bool {
        self.previous.is_some()
    }

    /// Why block `index`, which failed to open at `place`, failed: a block that opens at the
    /// other place is whole but in the wrong place ([`FormatError::EndNotSealedLast`]: the file
    /// was cut short after it; [`FormatError::LastBlockInside`]: blocks were added after it);
    /// any other is [`FormatError::BlockAuth`]. `block` is the block as read from disk again
    /// (opening it leaves it undefined).
    pub fn diagnose(&self, index: u64, place: Place, block: &mut [u8]) -> FormatError {
        if !self.marks_last() {
            return FormatError::BlockAuth(index);
        }
        match (
            self.open_block_to_front(index, place.other(), block, 0),
            place,
        ) {
            (Ok(_), Place::Last) => FormatError::EndNotSealedLast(index),
            (Ok(_), Place::Inner) => FormatError::LastBlockInside(index),
            (Err(_), _) => FormatError::BlockAuth(index),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher(version: HeaderVersion) -> FileCipher {
        FileCipher::new(&Key256::random(), [5; 16], version)
    }

    fn seal(c: &FileCipher, index: u64, place: Place, plain: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; plain.len() + 28];
        c.seal_block(index, place, plain, &mut out);
        out
    }

    #[test]
    fn seal_open_round_trip() {
        for version in [HeaderVersion::V1, HeaderVersion::V2] {
            let c = cipher(version);
            for len in [1usize, 100, 4095, 4096] {
                let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
                for place in [Place::Inner, Place::Last] {
                    let mut block = seal(&c, 3, place, &plain);
                    let n = c.open_block_in_place(3, place, &mut block).expect("opens");
                    assert_eq!(&block[12..12 + n], &plain[..]);
                }
            }
        }
    }

    #[test]
    fn the_place_of_a_block() {
        assert_eq!(
            Place::of(0, 0),
            Place::Inner,
            "an empty file has no last block"
        );
        assert_eq!(Place::of(0, 1), Place::Last);
        assert_eq!(Place::of(0, 4096), Place::Last);
        assert_eq!(Place::of(0, 4097), Place::Inner);
        assert_eq!(Place::of(1, 4097), Place::Last);
        assert_eq!(Place::of(2, 4097), Place::Inner, "past the end");
    }

    #[test]
    fn version_2_tells_the_last_block_from_the_others() {
        let c = cipher(HeaderVersion::V2);
        let last = seal(&c, 4, Place::Last, b"the end");
        let inner = seal(&c, 4, Place::Inner, &[7; 4096]);
        // A last block read as an inner one: blocks were added after it.
        assert_eq!(
            c.open_block_in_place(4, Place::Inner, &mut last.clone()),
            Err(FormatError::BlockAuth(4))
        );
        assert_eq!(
            c.diagnose(4, Place::Inner, &mut last.clone()),
            FormatError::LastBlockInside(4)
        );
        // An inner block at the end: the file was cut short after it.
        assert_eq!(
            c.open_block_in_place(4, Place::Last, &mut inner.clone()),
            Err(FormatError::BlockAuth(4))
        );
        assert_eq!(
            c.diagnose(4, Place::Last, &mut inner.clone()),
            FormatError::EndNotSealedLast(4)
        );
        // A hole is an inner block, never the last one.
        let mut hole = vec![0u8; 4124];
        assert_eq!(
            c.open_block_in_place(4, Place::Inner, &mut hole.clone()),
            Ok(4096)
        );
        assert_eq!(
            c.open_block_in_place(4, Place::Last, &mut hole),
            Err(FormatError::EndNotSealedLast(4))
        );
        // A block that fails at both places is plain damage.
        let mut flipped = last.clone();
        flipped[20] ^= 1;
        assert_eq!(
            c.diagnose(4, Place::Inner, &mut flipped),
            FormatError::BlockAuth(4)
        );
    }

    #[test]
    fn version_1_ignores_the_place() {
        let c = cipher(HeaderVersion::V1);
        let mut block = seal(&c, 1, Place::Last, b"v1");
        assert_eq!(c.open_block_in_place(1, Place::Inner, &mut block), Ok(2));
        assert_eq!(
            c.open_block_in_place(1, Place::Last, &mut vec![0u8; 4124]),
            Ok(4096),
            "a hole may end a version 1 file"
        );
        assert_eq!(
            c.diagnose(1, Place::Last, &mut seal(&c, 2, Place::Last, b"x")),
            FormatError::BlockAuth(1)
        );
    }

    #[test]
    fn blocks_opened_to_the_front_end_up_contiguous() {
        let c = cipher(HeaderVersion::V2);
        let plain: Vec<u8> = (0..3 * 4096 + 10).map(|i| (i * 7) as u8).collect();
        let mut buf = Vec::new();
        for (i, chunk) in plain.chunks(4096).enumerate() {
            c.seal_block_append(
                i as u64,
                Place::of(i as u64, plain.len() as u64),
                chunk,
                &mut buf,
            );
        }
        // A hole in the middle: block 1 as the filesystem leaves it when never written.
        buf[4124..2 * 4124].fill(0);
        let (mut src, mut dst) = (0, 0);
        for index in 0..4 {
            let len = (buf.len() - src).min(4124);
            let place = Place::of(index, plain.len() as u64);
            dst += c
                .open_block_to_front(index, place, &mut buf[dst..src + len], src - dst)
                .expect("opens");
            src += len;
        }
        let mut expected = plain.clone();
        expected[4096..8192].fill(0);
        assert_eq!(&buf[..dst], &expected[..]);
        // A block whose nonce is zero but whose body is not is no hole: it fails.
        let mut forged = seal(&c, 0, Place::Inner, b"abc");
        forged[..12].fill(0);
        assert_eq!(
            c.open_block_to_front(0, Place::Inner, &mut forged, 0),
            Err(FormatError::BlockAuth(0))
        );
    }

    #[test]
    fn wrong_index_wrong_file_flipped_bit_fail() {
        for version in [HeaderVersion::V1, HeaderVersion::V2] {
            let c = cipher(version);
            let block = seal(&c, 1, Place::Inner, b"secret");
            assert_eq!(
                c.open_block_in_place(2, Place::Inner, &mut block.clone()),
                Err(FormatError::BlockAuth(2))
            );
            let other = FileCipher::new(&Key256::random(), [5; 16], version);
            assert!(
                other
                    .open_block_in_place(1, Place::Inner, &mut block.clone())
                    .is_err()
            );
            for i in 0..block.len() {
                let mut bad = block.clone();
                bad[i] ^= 0x80;
                assert!(
                    c.open_block_in_place(1, Place::Inner, &mut bad).is_err(),
                    "bit flip at {i}"
                );
            }
            assert!(
                c.open_block_in_place(1, Place::Inner, &mut block[..28].to_vec())
                    .is_err()
            );
        }
        // The same DEK and file id under the other header version: the AAD differs.
        let dek = Key256::random();
        let v1 = FileCipher::new(&dek, [5; 16], HeaderVersion::V1);
        let v2 = FileCipher::new(&dek, [5; 16], HeaderVersion::V2);
        let block = seal(&v1, 0, Place::Last, b"moved");
        assert!(
            v2.open_block_in_place(0, Place::Last, &mut block.clone())
                .is_err()
        );
        assert!(
            v2.open_block_in_place(0, Place::Inner, &mut block.clone())
                .is_err()
        );
    }

    #[test]
    fn zero_block_is_a_hole() {
        let c = cipher(HeaderVersion::V2);
        let mut block = vec![0u8; 4124];
        assert_eq!(c.open_block_in_place(9, Place::Inner, &mut block), Ok(4096));
        assert!(block[12..12 + 4096].iter().all(|&b| b == 0));
    }

    /// Checks one block vector: exact ciphertext bytes, listed in docs/FORMAT.md (in full or
    /// by the SHA-256 of its ciphertext), opening at its place only (version 2).
    fn check_block_vector(v: &serde_json::Value, version: HeaderVersion, doc: &str) {
        let field = |name: &str| super::super::unhex(v[name].as_str().expect("hex field"));
        let dek = Key256::from_slice(&field("dek")).expect("32-byte dek");
        let mut file_id = [0u8; 16];
        file_id.copy_from_slice(&field("file_id"));
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&field("nonce"));
        let index = v["block_index"].as_u64().expect("index");
        let place = match v["last"].as_bool() {
            Some(true) => Place::Last,
            _ => Place::Inner,
        };
        let plain = field("plaintext");
        let c = FileCipher::new(&dek, file_id, version);
        let c = match v["epoch"].as_u64() {
            Some(epoch) => c.with_keying(Keying {
                epoch: epoch as u32,
                ..Keying::default()
            }),
            None => c,
        };
        let mut out = vec![0u8; plain.len() + 28];
        c.seal_block_with_nonce(index, place, nonce, &plain, &mut out);
        let expected = v["ciphertext"].as_str().expect("ciphertext");
        assert_eq!(hex(&out), expected, "vector {}", v["name"]);
        let listed = v["ciphertext_sha256"]
            .as_str()
            .map_or(expected.to_string(), str::to_string);
        assert!(
            doc.contains(&listed),
            "docs/FORMAT.md lacks vector {}",
            v["name"]
        );
        if version == HeaderVersion::V2 {
            let other = match place {
                Place::Inner => Place::Last,
                Place::Last => Place::Inner,
            };
            assert!(
                c.open_block_in_place(index, other, &mut out.clone())
                    .is_err()
            );
        }
        let n = c
            .open_block_in_place(index, place, &mut out)
            .expect("opens");
        assert_eq!(&out[12..12 + n], &plain[..]);
    }

    /// The test vectors of docs/FORMAT.md, kept as data files: fixed DEK, file id, nonce and
    /// plaintext give exact ciphertext bytes.
    #[test]
    fn format_test_vectors() {
        let doc = include_str!("../../docs/FORMAT.md");
        let v1: serde_json::Value =
            serde_json::from_str(include_str!("../../testdata/format-v1-vectors.json"))
                .expect("vector file is JSON");
        let list = v1["vectors"].as_array().expect("vectors array");
        assert!(list.len() >= 2);
        for v in list {
            check_block_vector(v, HeaderVersion::V1, doc);
        }
        let v2: serde_json::Value =
            serde_json::from_str(include_str!("../../testdata/format-v2-vectors.json"))
                .expect("vector file is JSON");
        let list = v2["blocks"].as_array().expect("blocks array");
        assert!(list.len() >= 2);
        for v in list {
            check_block_vector(v, HeaderVersion::V2, doc);
        }
    }
}
