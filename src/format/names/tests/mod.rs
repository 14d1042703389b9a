//! Names, targets and xattrs of format version 2: the vectors computed in Python (`vectors`),
//! symlink targets and xattrs (`targets`), and here names: round trips, the long-name
//! threshold, and every way a cipher name can be wrong.

use super::*;

mod targets;
mod vectors;

const DIR: DirId = [0xa0; 16];

fn cipher() -> NameCipher {
    NameCipher::new(&FsKey::from_bytes(&[7; 32]).expect("32 bytes"))
}

#[test]
fn names_round_trip_and_are_deterministic_per_directory() {
    let c = cipher();
    for plain in [
        &b"a"[..],
        b"...",
        b".hidden",
        "ünïcödé".as_bytes(),
        &[0xff, 0xfe],
    ] {
        let name = c.encrypt_name(&DIR, plain);
        assert_eq!(name, c.encrypt_name(&DIR, plain));
        assert_ne!(name, c.encrypt_name(&[0xa1; 16], plain));
        assert_eq!(c.decrypt_name(&DIR, name.as_bytes()).as_deref(), Ok(plain));
        assert!(!name.contains(['.', '/', '=', '+']), "{name}");
        assert!(!is_internal(name.as_bytes()) && !is_long(name.as_bytes()));
    }
}

/// 175 bytes is the longest plaintext name whose cipher name (255 characters) is stored as
/// itself; from 176 bytes (256 characters) to 255 bytes (362) names take the long form.
#[test]
fn long_form_threshold() {
    let c = cipher();
    assert_eq!(MAX_PLAIN_SHORT_NAME, 175);
    assert_eq!(MAX_CIPHER_NAME, 362);
    let at = |n: usize| c.encrypt_name(&DIR, &vec![b'x'; n]);
    assert_eq!(at(175).len(), 255);
    assert_eq!(long_name(&at(175)), None);
    assert_eq!(at(176).len(), 256);
    let longest = at(255);
    assert_eq!(longest.len(), 362);
    let short = long_name(&longest).expect("long form");
    assert_eq!(short.len(), LONG_PREFIX.len() + 43);
    assert!(long_side_name(&short).len() <= 255);
    for n in 1..=MAX_PLAIN_NAME {
        assert_eq!(
            long_name(&at(n)).is_some(),
            n > MAX_PLAIN_SHORT_NAME,
            "length {n}"
        );
    }
}

#[test]
fn internal_and_long_names_are_recognised() {
    assert!(is_internal(b"kmsfs.dirid"));
    assert!(is_internal(b"kmsfs.long.abc.name"));
    assert!(!is_internal(b"kmsfs.long.abc"));
    assert!(!is_internal(b"kmsfs.dirid2"));
    assert!(!is_internal(b"kmsfs.conf"));
    assert!(!is_internal(b"abc.name"));
    assert!(is_long(b"kmsfs.long.abc"));
    assert!(!is_long(b"kmsfs.long.abc.name"));
    assert!(!is_long(b"kmsfs.dirid"));
    assert!(!is_long(b"kmsfs.lon"));
}

#[test]
fn a_dir_id_link_target_is_22_characters_of_canonical_unpadded_base64url() {
    for id in [[0u8; 16], [0xff; 16], DIR, random_dir_id()] {
        let target = dir_id_target(&id);
        assert_eq!(target.len(), DIR_ID_TARGET_LEN);
        assert_eq!(DIR_ID_TARGET_LEN, 22);
        assert!(!target.contains(['=', '+', '/', '.']), "{target}");
        assert_eq!(parse_dir_id_target(target.as_bytes()), Ok(id));
    }
    assert_eq!(dir_id_target(&[0xff; 16]), "_____________________w");
    let wrong = |target: &[u8]| {
        assert_eq!(
            parse_dir_id_target(target),
            Err(NameError::DirIdTarget {
                found: target.len()
            }),
            "{:?}",
            String::from_utf8_lossy(target)
        );
    };
    let good = dir_id_target(&[0xff; 16]);
    // Padded, one short, one long, empty.
    wrong(format!("{good}==").as_bytes());
    wrong(&good.as_bytes()[..21]);
    wrong(format!("{good}A").as_bytes());
    wrong(b"");
    // Stray bits in the last character (decodes to the same bytes, yet is not canonical).
    wrong(b"_____________________x");
    // The standard alphabet, a character of neither, a NUL, raw id bytes.
    wrong(b"+++++++++++++++++++++w");
    wrong(b"_____________________.");
    wrong(b"__________\0__________w");
    wrong(&[0xff; 16]);
    wrong(&[0xff; 22]);
}

#[test]
fn dir_ids_and_keys_check_their_length() {
    assert_eq!(parse_dir_id(&[1; 16]), Ok([1; 16]));
    assert_eq!(
        parse_dir_id(&[1; 15]),
        Err(NameError::DirIdLength { found: 15 })
    );
    assert_eq!(
        parse_dir_id(&[1; 17]),
        Err(NameError::DirIdLength { found: 17 })
    );
    assert_eq!(parse_dir_id(&[]), Err(NameError::DirIdLength { found: 0 }));
    assert_ne!(random_dir_id(), random_dir_id());
    assert!(matches!(
        FsKey::from_bytes(&[0; 31]),
        Err(NameError::KeyLength { found: 31 })
    ));
    assert!(matches!(
        FsKey::from_bytes(&[0; 33]),
        Err(NameError::KeyLength { found: 33 })
    ));
}

#[test]
fn secrets_print_redacted() {
    let key = FsKey::from_bytes(&[0x41; 32]).expect("32 bytes");
    assert_eq!(format!("{key:?}"), "FsKey([redacted])");
    let c = NameCipher::new(&key);
    assert_eq!(format!("{c:?}"), "NameCipher([redacted])");
    assert_eq!(format!("{:#?}", FsKey::random()), "FsKey([redacted])");
}

#[test]
fn any_flipped_bit_fails() {
    let c = cipher();
    let sealed = URL_SAFE_NO_PAD
        .decode(c.encrypt_name(&DIR, b"report.pdf"))
        .expect("base64");
    for i in 0..sealed.len() {
        for bit in [0x01, 0x80] {
            let mut bad = sealed.clone();
            bad[i] ^= bit;
            let name = URL_SAFE_NO_PAD.encode(&bad);
            assert_eq!(
                c.decrypt_name(&DIR, name.as_bytes()),
                Err(NameError::Auth),
                "byte {i}"
            );
        }
    }
}

#[test]
fn wrong_directory_or_key_fails() {
    let c = cipher();
    let name = c.encrypt_name(&DIR, b"report.pdf");
    let mut other = DIR;
    other[15] ^= 1;
    assert_eq!(
        c.decrypt_name(&other, name.as_bytes()),
        Err(NameError::Auth)
    );
    let stranger = NameCipher::new(&FsKey::random());
    assert_eq!(
        stranger.decrypt_name(&DIR, name.as_bytes()),
        Err(NameError::Auth)
    );
    // The same plaintext under another purpose's key and label does not open as a name.
    let xattr = c.encrypt_xattr_name(b"report.pdf");
    assert_eq!(c.decrypt_name(&DIR, xattr.as_bytes()), Err(NameError::Auth));
}

#[test]
fn truncated_or_extended_names_fail() {
    let c = cipher();
    let name = c.encrypt_name(&DIR, b"report.pdf");
    for cut in 1..name.len() {
        let got = c.decrypt_name(&DIR, &name.as_bytes()[..name.len() - cut]);
        assert!(got.is_err(), "cut {cut}: {got:?}");
    }
    for tail in ["A", "AA", "AAA", "AAAA", "_-"] {
        let longer = format!("{name}{tail}");
        assert!(
            c.decrypt_name(&DIR, longer.as_bytes()).is_err(),
            "tail {tail}"
        );
    }
    let too_long = "A".repeat(MAX_CIPHER_NAME + 1);
    assert_eq!(
        c.decrypt_name(&DIR, too_long.as_bytes()),
        Err(NameError::TooLong {
            max: 362,
            found: 363
        })
    );
}

#[test]
fn non_canonical_base64_fails() {
    let c = cipher();
    // 10 bytes of plaintext: 26 SIV bytes, 35 characters, the last holding 2 unused bits.
    let name = c.encrypt_name(&DIR, b"report.pdf");
    assert_eq!(name.len(), 35);
    for bad in [
        format!("{name}="),
        format!("{name}=="),
        name.replace(['-', '_'], "+"),
        format!("{}/{}", &name[..10], &name[11..]),
        format!("{} ", &name[..34]),
        format!("{}\n", &name[..34]),
        format!("{}.", &name[..34]),
    ] {
        if bad != name {
            assert_eq!(
                c.decrypt_name(&DIR, bad.as_bytes()),
                Err(NameError::NotBase64),
                "{bad}"
            );
        }
    }
    // The same bytes with a non-zero unused bit: another spelling of one name is refused.
    let last = name.as_bytes()[34];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let pos = alphabet.iter().position(|&b| b == last).expect("base64url");
    let mut alias = name.clone().into_bytes();
    alias[34] = alphabet[pos ^ 1];
    assert_eq!(c.decrypt_name(&DIR, &alias), Err(NameError::NotBase64));
    let mut invalid = name.into_bytes();
    invalid[3] = 0xc3;
    assert_eq!(c.decrypt_name(&DIR, &invalid), Err(NameError::NotBase64));
}

#[test]
fn empty_and_too_short_names_fail() {
    let c = cipher();
    assert_eq!(
        c.decrypt_name(&DIR, b""),
        Err(NameError::TooShort { min: 17, found: 0 })
    );
    // 16 bytes: a tag and no name (what the empty name would encrypt to).
    let empty = c.encrypt_name(&DIR, b"");
    assert_eq!(
        c.decrypt_name(&DIR, empty.as_bytes()),
        Err(NameError::TooShort { min: 17, found: 16 })
    );
    assert_eq!(c.decrypt_name(&DIR, b"A"), Err(NameError::NotBase64));
}

/// Names that authenticate (whoever holds the key wrote them) but that no directory can hold.
#[test]
fn invalid_plaintext_names_fail() {
    let c = cipher();
    for (plain, why) in [
        (&b"."[..], "\".\""),
        (b"..", "\"..\""),
        (b"a/b", "contains '/'"),
        (b"/", "contains '/'"),
        (b"a\0", "contains NUL"),
    ] {
        let name = c.encrypt_name(&DIR, plain);
        assert_eq!(
            c.decrypt_name(&DIR, name.as_bytes()),
            Err(NameError::InvalidPlain(why))
        );
    }
    assert_eq!(
        check_plain_name(&[b'x'; 256]),
        Err(NameError::InvalidPlain("longer than 255 bytes"))
    );
    assert_eq!(check_plain_name(&[b'x'; 255]), Ok(()));
}
