//! Header encode, parse and tag, for both versions, and every field a reader rejects.

use super::*;
use crate::crypto::Key256;

const FS_ID: FsId = [4; 16];

fn sample(version: HeaderVersion) -> (FileHeader, FileCipher) {
    let file_id = [7u8; 16];
    let keying = match version {
        HeaderVersion::V1 => Keying::default(),
        HeaderVersion::V2 => Keying {
            epoch: 2,
            rekeying: true,
            seals: 70_000,
        },
    };
    let header = FileHeader {
        version,
        file_id,
        key_id: Uuid::from_bytes([9; 16]),
        wrapped_dek: vec![0xAB; 77],
        keying,
    };
    let cipher = FileCipher::new(&Key256::random(), file_id, version);
    let cipher = match version {
        HeaderVersion::V1 => cipher,
        HeaderVersion::V2 => cipher.with_keying(keying),
    };
    (header, cipher)
}

/// What catches `bad`, made from header `good` of a file whose cipher is `cipher`, in the order
/// a reader checks: the parse (the field it refuses), else the KMS (`"kms"`: asked to unwrap
/// under another context or another wrapped DEK, it refuses) and the tag; `"nothing"` when
/// nothing does.
pub(super) fn caught_by(
    bad: &[u8; HEADER_LEN],
    good: &FileHeader,
    cipher: &FileCipher,
    fs_id: &FsId,
) -> &'static str {
    let parsed = match FileHeader::parse(bad) {
        Err(FormatError::BadMagic { .. }) => return "magic",
        Err(FormatError::UnsupportedVersion(_)) => return "version",
        Err(FormatError::NonZeroReserved { field, .. }) => return field,
        Err(FormatError::BadWrappedLen(_)) => return "wrapped-len",
        Err(FormatError::BadPadding) => return "padding",
        Err(other) => panic!("BUG: parse of 512 bytes gave {other}"),
        Ok(parsed) => parsed,
    };
    let kms = parsed.dek_context(fs_id) != good.dek_context(fs_id)
        || parsed.wrapped_dek != good.wrapped_dek;
    match (kms, cipher.verify_header(bad).is_err()) {
        (true, true) => "kms+tag",
        (true, false) => "kms",
        (false, true) => "tag",
        (false, false) => "nothing",
    }
}

#[test]
fn encode_parse_verify_round_trip_in_both_versions() {
    for version in [HeaderVersion::V1, HeaderVersion::V2] {
        let (header, cipher) = sample(version);
        let bytes = header.encode(&cipher).expect("fits");
        assert_eq!(&bytes[6..8], &version.number().to_be_bytes());
        assert_eq!(FileHeader::parse(&bytes), Ok(header));
        assert_eq!(cipher.verify_header(&bytes), Ok(()));
    }
}

#[test]
fn every_flipped_byte_of_a_v2_header_is_caught() {
    let (header, cipher) = sample(HeaderVersion::V2);
    let bytes = header.encode(&cipher).expect("fits");
    for i in 0..HEADER_LEN {
        for bit in [0x01, 0x80] {
            let mut bad = bytes;
            bad[i] ^= bit;
            let by = caught_by(&bad, &header, &cipher, &FS_ID);
            assert_ne!(
                by, "nothing",
                "flipped bit {bit:#x} of byte {i} went unnoticed"
            );
            if (KEY_ID_OFFSET..WRAPPED_LEN_OFFSET).contains(&i) {
                assert_eq!(by, "kms", "the key id is in the context, not under the tag");
            }
            if (KEYING_OFFSET..KEYING_OFFSET + 4).contains(&i)
                || (KEYING_OFFSET + 8..TAG_OFFSET).contains(&i)
            {
                assert_eq!(by, "tag", "epoch and seals are under the tag");
            }
        }
    }
}

#[test]
fn a_v1_key_id_is_covered_by_neither_context_nor_tag() {
    // The hole version 2 closes: a version 1 reader relies on the KMS refusing a blob of another
    // key, which a KMS need not do.
    let (header, cipher) = sample(HeaderVersion::V1);
    let mut bad = header.encode(&cipher).expect("fits");
    bad[KEY_ID_OFFSET] ^= 0x01;
    assert_eq!(caught_by(&bad, &header, &cipher, &FS_ID), "nothing");
}

#[test]
fn a_header_of_one_version_fails_the_cipher_of_the_other() {
    let dek = Key256::random();
    let file_id = [7u8; 16];
    let v1 = FileCipher::new(&dek, file_id, HeaderVersion::V1);
    let (mut header, _) = sample(HeaderVersion::V2);
    let v2 = FileCipher::new(&dek, file_id, HeaderVersion::V2).with_keying(header.keying);
    let v2_bytes = header.encode(&v2).expect("fits");
    header.version = HeaderVersion::V1;
    header.keying = Keying::default();
    let v1_bytes = header.encode(&v1).expect("fits");
    assert_eq!(v1.verify_header(&v2_bytes), Err(FormatError::HeaderAuth));
    assert_eq!(v2.verify_header(&v1_bytes), Err(FormatError::HeaderAuth));
    // Same DEK, file id and fixed bytes but the version: the tag keys differ too.
    let mut relabelled = v1_bytes;
    relabelled[6..8].copy_from_slice(&2u16.to_be_bytes());
    assert_eq!(v2.verify_header(&relabelled), Err(FormatError::HeaderAuth));
}

#[test]
fn wrong_dek_or_file_id_fails_the_tag() {
    let (header, cipher) = sample(HeaderVersion::V2);
    let bytes = header.encode(&cipher).expect("fits");
    let other = FileCipher::new(&Key256::random(), header.file_id, HeaderVersion::V2)
        .with_keying(header.keying);
    assert_eq!(other.verify_header(&bytes), Err(FormatError::HeaderAuth));
    let mut moved = header.clone();
    moved.file_id = [8; 16];
    let elsewhere = FileCipher::new(&Key256::random(), moved.file_id, HeaderVersion::V2)
        .with_keying(header.keying);
    let moved_bytes = moved.encode(&elsewhere).expect("fits");
    assert_eq!(
        cipher.verify_header(&moved_bytes),
        Err(FormatError::HeaderAuth)
    );
}

#[test]
fn rewrap_keeps_version_and_tag_and_changes_the_v2_context() {
    for version in [HeaderVersion::V1, HeaderVersion::V2] {
        let (header, cipher) = sample(version);
        let bytes = header.encode(&cipher).expect("fits");
        let new_key = Uuid::from_bytes([3; 16]);
        let rewrapped = FileHeader::rewrap(&bytes, new_key, &[0x55; 12]).expect("fits");
        let parsed = FileHeader::parse(&rewrapped).expect("parses");
        assert_eq!(parsed.version, version);
        assert_eq!(parsed.key_id, new_key);
        assert_eq!(parsed.wrapped_dek, vec![0x55; 12]);
        assert_eq!(parsed.file_id, header.file_id);
        assert_eq!(cipher.verify_header(&rewrapped), Ok(()));
        assert_eq!(&rewrapped[..KEY_ID_OFFSET], &bytes[..KEY_ID_OFFSET]);
        assert_eq!(parsed.keying, header.keying, "the keying stays");
        assert_eq!(&rewrapped[KEYING_OFFSET..], &bytes[KEYING_OFFSET..]);
        assert_eq!(
            parsed.dek_context(&FS_ID) != header.dek_context(&FS_ID),
            version == HeaderVersion::V2,
            "{version:?}: a new key id is a new context in version 2 only"
        );
    }
}

#[test]
fn rejected_fields_say_what_was_expected_and_found() {
    let (header, cipher) = sample(HeaderVersion::V2);
    let good = header.encode(&cipher).expect("fits");
    let with = |offset: usize, new: &[u8]| {
        let mut bad = good;
        bad[offset..offset + new.len()].copy_from_slice(new);
        FileHeader::parse(&bad)
    };
    assert_eq!(
        with(0, b"KMSFT\0"),
        Err(FormatError::BadMagic {
            expected: *b"KMSFS\0",
            found: *b"KMSFT\0"
        })
    );
    for version in [0u16, 3, 0x0102, u16::MAX] {
        assert_eq!(
            with(6, &version.to_be_bytes()),
            Err(FormatError::UnsupportedVersion(version))
        );
    }
    assert_eq!(
        with(8, &[0x80, 0]),
        Err(FormatError::NonZeroReserved {
            field: "flags",
            found: 0x8000
        })
    );
    assert_eq!(
        with(10, &[0, 1]),
        Err(FormatError::NonZeroReserved {
            field: "reserved",
            found: 1
        })
    );
    for len in [0u16, MAX_WRAPPED_LEN as u16 + 1, u16::MAX] {
        assert_eq!(
            with(WRAPPED_LEN_OFFSET, &len.to_be_bytes()),
            Err(FormatError::BadWrappedLen(len.into()))
        );
    }
    // 77 -> 76: the last wrapped byte is read as padding, and it is not zero.
    assert_eq!(
        with(WRAPPED_LEN_OFFSET, &76u16.to_be_bytes()),
        Err(FormatError::BadPadding)
    );
    for offset in [WRAPPED_OFFSET + 77, 300, KEYING_OFFSET - 1] {
        assert_eq!(with(offset, &[1]), Err(FormatError::BadPadding), "{offset}");
    }
    for rekeying in [2u32, u32::MAX] {
        assert_eq!(
            with(KEYING_OFFSET + 4, &rekeying.to_be_bytes()),
            Err(FormatError::NonZeroReserved {
                field: "re-keying",
                found: rekeying
            })
        );
    }
    // Re-keying into epoch 0: there is no epoch before it.
    let mut epoch_zero = good;
    epoch_zero[KEYING_OFFSET..KEYING_OFFSET + 4].fill(0);
    assert!(FileHeader::parse(&epoch_zero).is_err());
    assert_eq!(
        FileHeader::parse(&good[..HEADER_LEN - 1]),
        Err(FormatError::ShortHeader(HEADER_LEN - 1))
    );
    assert_eq!(FileHeader::parse(&[]), Err(FormatError::ShortHeader(0)));
    assert!(matches!(
        FileHeader::parse(&[0u8; HEADER_LEN]),
        Err(FormatError::BadMagic { .. })
    ));
    // The tag: parses, fails verification.
    let mut bad = good;
    bad[HEADER_LEN - 1] ^= 1;
    assert!(FileHeader::parse(&bad).is_ok());
    assert_eq!(cipher.verify_header(&bad), Err(FormatError::HeaderAuth));
}

#[test]
fn wrapped_dek_lengths_that_do_not_fit_are_refused_on_encode() {
    let (mut header, cipher) = sample(HeaderVersion::V2);
    header.wrapped_dek = vec![];
    assert_eq!(header.encode(&cipher), Err(FormatError::BadWrappedLen(0)));
    header.wrapped_dek = vec![1; MAX_WRAPPED_LEN + 1];
    assert_eq!(
        header.encode(&cipher),
        Err(FormatError::BadWrappedLen(MAX_WRAPPED_LEN + 1))
    );
    let bytes = header.encode(&cipher);
    assert!(bytes.is_err());
    let full = FileHeader::rewrap(
        &sample(HeaderVersion::V2).0.encode(&cipher).expect("fits"),
        header.key_id,
        &[0; MAX_WRAPPED_LEN + 1],
    );
    assert_eq!(full, Err(FormatError::BadWrappedLen(MAX_WRAPPED_LEN + 1)));
    header.wrapped_dek = vec![1; MAX_WRAPPED_LEN];
    let bytes = header.encode(&cipher).expect("the largest fits");
    assert_eq!(FileHeader::parse(&bytes), Ok(header));
}

#[test]
#[should_panic(expected = "BUG: a header is encoded with another file's cipher")]
fn encoding_with_the_cipher_of_another_version_is_a_bug() {
    let (mut header, cipher) = sample(HeaderVersion::V2);
    header.version = HeaderVersion::V1;
    let _ = header.encode(&cipher);
}

#[test]
fn a_version_1_header_keeps_its_450_byte_slot_and_has_no_keying() {
    let (mut header, cipher) = sample(HeaderVersion::V1);
    header.wrapped_dek = vec![1; 450];
    let bytes = header
        .encode(&cipher)
        .expect("a version 1 slot holds 450 bytes");
    assert_eq!(FileHeader::parse(&bytes), Ok(header.clone()));
    assert_eq!(cipher.verify_header(&bytes), Ok(()));
    header.wrapped_dek = vec![1; 451];
    assert_eq!(header.encode(&cipher), Err(FormatError::BadWrappedLen(451)));
}

#[test]
fn the_keying_needs_the_cipher_made_for_it() {
    let (header, cipher) = sample(HeaderVersion::V2);
    let bytes = header.encode(&cipher).expect("fits");
    // The same DEK at another epoch: the tag authenticates, the keying does not match.
    let settled = cipher.with_keying(Keying {
        rekeying: false,
        ..header.keying
    });
    assert_eq!(settled.verify_header(&bytes), Err(FormatError::HeaderAuth));
    assert!(cipher.is_rekeying() && !settled.is_rekeying());
}

mod vectors;
