//! Targets of the on-disk format: the file header, a content block with the size math around
//! it, and the decoders of cipher names, symlink targets, xattrs and directory ids.

use super::{fixed_key, split_selector};
use crate::format::{
    BLOCK_OVERHEAD, CipherExtent, DirId, FileCipher, FileHeader, FileId, FsKey, HEADER_LEN,
    HeaderVersion, Keying, NameCipher, Place, cipher_size, dir_id_target, parse_dir_id,
    parse_dir_id_target, plain_size,
};
use crate::kms::blob;
use std::sync::LazyLock;

/// The DEK of every header and block a corpus file holds.
pub(super) const DEK_BYTE: u8 = 0x42;
/// The file id of every block a corpus file holds.
pub(super) const FILE_ID: FileId = [0x17; 16];
/// The filesystem key of every name a corpus file holds.
pub(super) const FS_KEY_BYTE: u8 = 0x5a;
/// The directory id of every cipher name a corpus file holds.
pub(super) const DIR_ID: DirId = [0x0d; 16];

/// The file header (both versions): parse; a header that parses re-encodes to the bytes it came
/// from (the parse is canonical: every byte outside the tag is either a field or zero), its tag
/// is checked under the fixed DEK, and a re-wrap with the bytes after the header keeps
/// everything but the wrap slot.
pub fn header(data: &[u8]) {
    let Ok(parsed) = FileHeader::parse(data) else {
        return;
    };
    let mut bytes = [0u8; HEADER_LEN];
    bytes.copy_from_slice(&data[..HEADER_LEN]);
    assert!(!parsed.wrapped_dek.is_empty() && parsed.wrapped_dek.len() <= HEADER_LEN);
    assert!(parsed.version == HeaderVersion::V2 || parsed.keying == Keying::default());
    let cipher = FileCipher::new(&fixed_key(DEK_BYTE), parsed.file_id, parsed.version)
        .with_keying(parsed.keying);
    let encoded = parsed.encode(&cipher).expect("BUG: a parsed header fits");
    assert_eq!(
        encoded[..HEADER_LEN - 16],
        bytes[..HEADER_LEN - 16],
        "a parsed header encodes to other bytes"
    );
    let verified = cipher.verify_header(&bytes);
    assert_eq!(
        verified.is_ok(),
        encoded == bytes,
        "the tag check disagrees with the tag"
    );
    let wrapped = &data[HEADER_LEN..];
    let key_id = uuid::Uuid::from_bytes([0x33; 16]);
    if let Ok(rewrapped) = FileHeader::rewrap(&bytes, key_id, wrapped) {
        let again = FileHeader::parse(&rewrapped).expect("BUG: a re-wrapped header parses");
        assert_eq!(
            (again.key_id, again.wrapped_dek.as_slice()),
            (key_id, wrapped)
        );
        assert_eq!(
            (again.version, again.file_id, again.keying),
            (parsed.version, parsed.file_id, parsed.keying)
        );
        assert_eq!(rewrapped[HEADER_LEN - 16..], bytes[HEADER_LEN - 16..]);
        assert_eq!(cipher.verify_header(&rewrapped).is_ok(), verified.is_ok());
    }
    // The wrap slot holds a KMS blob: its header parses without the KMS.
    let _ = blob::blob_key_version(&parsed.wrapped_dek);
}

/// How the first byte of a block input picks the cipher and the block.
pub(super) struct BlockCase {
    /// The header version.
    pub(super) version: HeaderVersion,
    /// Where the block sits.
    pub(super) place: Place,
    /// Version 2: the file is being re-keyed from epoch 0 to 1 (two keys open a block).
    pub(super) rekeying: bool,
    /// The block's index (0 to 31).
    pub(super) index: u64,
}

impl BlockCase {
    /// The case a selector byte names.
    pub(super) fn of(selector: u8) -> BlockCase {
        let version = if selector & 1 == 0 {
            HeaderVersion::V1
        } else {
            HeaderVersion::V2
        };
        BlockCase {
            version,
            place: if selector & 2 == 0 {
                Place::Inner
            } else {
                Place::Last
            },
            rekeying: version == HeaderVersion::V2 && selector & 4 != 0,
            index: u64::from(selector >> 3),
        }
    }

    /// The selector byte of this case.
    #[cfg(test)]
    pub(super) fn selector(&self) -> u8 {
        let bits = u8::from(self.version == HeaderVersion::V2)
            | u8::from(self.place == Place::Last) << 1
            | u8::from(self.rekeying) << 2;
        bits | u8::try_from(self.index & 31).expect("BUG: masked to 5 bits") << 3
    }

    /// The cipher of this case, under the fixed DEK and file id.
    pub(super) fn cipher(&self) -> FileCipher {
        let cipher = FileCipher::new(&fixed_key(DEK_BYTE), FILE_ID, self.version);
        if self.rekeying {
            cipher.with_keying(Keying {
                epoch: 1,
                rekeying: true,
                seals: 0,
            })
        } else {
            cipher
        }
    }
}

/// A content block: byte 0 picks version, place, re-keying and index ([`BlockCase`]), the rest
/// is the block as read from disk. Opening it fails or gives a plaintext 28 bytes shorter that
/// seals back to the same bytes (or is a hole); a failure is diagnosed without panicking. The
/// size math runs on the first 8 bytes as a cipher file size.
pub fn block(data: &[u8]) {
    let (selector, block) = split_selector(data);
    let case = BlockCase::of(selector);
    let cipher = case.cipher();
    let mut buf = block.to_vec();
    match cipher.open_block_to_front(case.index, case.place, &mut buf, 0) {
        Ok(n) => {
            assert_eq!(n + BLOCK_OVERHEAD as usize, block.len());
            let plain = &buf[..n];
            if block.iter().all(|&b| b == 0) {
                assert!(plain.iter().all(|&b| b == 0), "a hole reads as zeros");
            } else if !case.rekeying {
                let mut nonce = [0u8; 12];
                nonce.copy_from_slice(&block[..12]);
                let mut sealed = vec![0u8; block.len()];
                cipher.seal_block_with_nonce(case.index, case.place, nonce, plain, &mut sealed);
                assert_eq!(sealed, block, "an opened block seals back to other bytes");
            }
            let mut again = block.to_vec();
            let m = cipher
                .open_block_in_place(case.index, case.place, &mut again)
                .expect("BUG: what opens to the front opens in place");
            assert_eq!(&again[12..12 + m], plain);
        }
        Err(_) => {
            let _ = cipher.diagnose(case.index, case.place, &mut block.to_vec());
        }
    }
    // The same block behind some bytes of a previous block in one read buffer.
    let mut shifted = vec![0xee; 7];
    shifted.extend_from_slice(block);
    let _ = cipher.open_block_to_front(case.index, case.place, &mut shifted, 7);
    if block.len() >= 8 {
        let mut size = [0u8; 8];
        size.copy_from_slice(&block[..8]);
        sizes(u64::from_be_bytes(size));
    }
}

/// The size math on a cipher file size from `stat`: a valid size maps to a plaintext size that
/// maps back to it; any size splits into complete blocks and a torn tail.
fn sizes(cipher: u64) {
    let Ok(extent) = CipherExtent::of(cipher) else {
        assert!(cipher > 0 && cipher < HEADER_LEN as u64);
        return;
    };
    assert!(extent.plain_size <= cipher);
    assert!(extent.complete_cipher_size() <= cipher.max(HEADER_LEN as u64));
    let _ = extent.torn_error();
    if let Ok(plain) = plain_size(cipher) {
        assert_eq!(plain, extent.plain_size);
        if cipher != HEADER_LEN as u64 {
            assert_eq!(cipher_size(plain), cipher, "a size maps back to itself");
        }
    }
}

/// The name cipher of every corpus file.
pub(super) static NAME_CIPHER: LazyLock<NameCipher> = LazyLock::new(|| {
    let key = FsKey::from_bytes(&[FS_KEY_BYTE; 32]).expect("BUG: 32 bytes make a key");
    NameCipher::new(&key)
});

/// The selectors of the name target: which decoder byte 0 picks.
pub(super) mod name_kind {
    /// A cipher name in [`super::DIR_ID`].
    pub const NAME: u8 = 0;
    /// A cipher symlink target.
    pub const TARGET: u8 = 1;
    /// The cipher part of a `user.` xattr name.
    pub const XATTR_NAME: u8 = 2;
    /// A sealed xattr value: the stored name, a NUL, the sealed bytes.
    pub const XATTR_VALUE: u8 = 3;
    /// The target of a directory's id link, or the raw id of its xattr copy.
    pub const DIR_ID: u8 = 4;
    /// A name as listed in a cipher directory (long names, internal files).
    pub const DISK_NAME: u8 = 5;
    /// How many there are.
    pub const COUNT: u8 = 6;
}

/// The decoders of names, symlink targets, xattr names and values and directory ids, as read
/// from a cipher directory: byte 0 picks one ([`name_kind`]). What decrypts re-encrypts to the
/// same text (cipher names are canonical), and lengths predicted without decrypting match.
pub fn names(data: &[u8]) {
    let (selector, rest) = split_selector(data);
    let cipher = &*NAME_CIPHER;
    match selector % name_kind::COUNT {
        name_kind::NAME => {
            if let Ok(plain) = cipher.decrypt_name(&DIR_ID, rest) {
                crate::format::check_plain_name(&plain).expect("BUG: a decrypted name is valid");
                assert_eq!(cipher.encrypt_name(&DIR_ID, &plain).as_bytes(), rest);
            }
            if crate::format::check_plain_name(rest).is_ok() {
                let text = cipher.encrypt_name(&DIR_ID, rest);
                let back = cipher.decrypt_name(&DIR_ID, text.as_bytes());
                assert_eq!(back.as_deref(), Ok(rest), "a name round-trips");
            }
        }
        name_kind::TARGET => {
            let predicted = NameCipher::target_plain_len(rest.len() as u64);
            if let Ok(plain) = cipher.decrypt_target(rest) {
                assert_eq!(predicted, Some(plain.len() as u64));
                assert!(!plain.contains(&0));
            }
        }
        name_kind::XATTR_NAME => {
            if let Ok(plain) = cipher.decrypt_xattr_name(rest) {
                assert_eq!(cipher.encrypt_xattr_name(&plain).as_bytes(), rest);
            }
        }
        name_kind::XATTR_VALUE => {
            let (stored, sealed) = match rest.iter().position(|&b| b == 0) {
                Some(at) => (&rest[..at], &rest[at + 1..]),
                None => (rest, &[][..]),
            };
            let predicted = NameCipher::xattr_value_plain_len(sealed.len());
            if let Ok(value) = cipher.open_xattr_value(stored, sealed) {
                assert_eq!(predicted, Some(value.len()));
            }
        }
        name_kind::DIR_ID => {
            if let Ok(id) = parse_dir_id_target(rest) {
                assert_eq!(
                    dir_id_target(&id).as_bytes(),
                    rest,
                    "an id link is canonical"
                );
            }
            if let Ok(id) = parse_dir_id(rest) {
                assert_eq!(id.as_slice(), rest);
            }
        }
        name_kind::DISK_NAME => {
            let internal = crate::format::is_internal(rest);
            let long = crate::format::is_long(rest);
            assert!(!(internal && long));
            if let Ok(text) = std::str::from_utf8(rest)
                && let Some(short) = crate::format::long_name(text)
            {
                assert!(crate::format::is_long(short.as_bytes()));
                let side = crate::format::long_side_name(&short);
                assert!(crate::format::is_internal(side.as_bytes()));
            }
        }
        _ => unreachable!("BUG: a selector modulo COUNT names a kind"),
    }
}
