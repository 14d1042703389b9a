//! Symlink targets and `user.*` xattrs: round trips, lengths, and altered bytes.

use super::super::*;
use super::{DIR, cipher};

#[test]
fn targets_round_trip_with_fresh_nonces_and_known_lengths() {
    let c = cipher();
    let target = b"../../some where/file.txt";
    let a = c.encrypt_target(target);
    assert_ne!(a, c.encrypt_target(target));
    assert_eq!(c.decrypt_target(a.as_bytes()).as_deref(), Ok(&target[..]));
    for n in [1, 2, 3, 4, 100, MAX_PLAIN_TARGET] {
        let cipher = c.encrypt_target(&vec![b'/'; n]);
        assert_eq!(
            NameCipher::target_plain_len(cipher.len() as u64),
            Some(n as u64)
        );
        assert!(cipher.len() <= MAX_CIPHER_TARGET);
    }
    assert_eq!(MAX_PLAIN_TARGET, 3039);
    assert_eq!(
        c.encrypt_target(&[b'/'; MAX_PLAIN_TARGET]).len(),
        MAX_CIPHER_TARGET
    );
    assert!(c.encrypt_target(&[b'/'; MAX_PLAIN_TARGET + 1]).len() > MAX_CIPHER_TARGET);
    // No target is empty, no base64 is 1 character past a multiple of 4, none exceeds PATH_MAX.
    for len in [0, 43, 45, 4096, u64::MAX] {
        assert_eq!(NameCipher::target_plain_len(len), None, "{len}");
    }
}

#[test]
fn altered_targets_fail() {
    let c = cipher();
    let target = c.encrypt_target(b"/etc/passwd");
    let sealed = URL_SAFE_NO_PAD.decode(&target).expect("base64");
    for i in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 0x01;
        let bad = URL_SAFE_NO_PAD.encode(&bad);
        assert_eq!(
            c.decrypt_target(bad.as_bytes()),
            Err(NameError::Auth),
            "byte {i}"
        );
    }
    let stranger = NameCipher::new(&FsKey::random());
    assert_eq!(
        stranger.decrypt_target(target.as_bytes()),
        Err(NameError::Auth)
    );
    assert!(
        c.decrypt_target(&target.as_bytes()[..target.len() - 1])
            .is_err()
    );
    assert!(c.decrypt_target(format!("{target}=").as_bytes()).is_err());
    assert_eq!(
        c.decrypt_target(b""),
        Err(NameError::TooShort { min: 33, found: 0 })
    );
    let huge = "A".repeat(MAX_CIPHER_TARGET + 1);
    assert!(matches!(
        c.decrypt_target(huge.as_bytes()),
        Err(NameError::TooLong { .. })
    ));
    // A cipher name is no cipher target, even of the same plaintext.
    let name = c.encrypt_name(&DIR, b"passwd-and-a-bit-more-than-a-nonce");
    assert_eq!(c.decrypt_target(name.as_bytes()), Err(NameError::Auth));
    let nul = c.encrypt_target(b"a\0b");
    assert_eq!(
        c.decrypt_target(nul.as_bytes()),
        Err(NameError::InvalidPlain("contains NUL"))
    );
}

#[test]
fn xattrs_round_trip_and_values_are_bound_to_their_name() {
    let c = cipher();
    let name = c.encrypt_xattr_name(b"mime_type");
    assert_eq!(name, c.encrypt_xattr_name(b"mime_type"));
    assert_eq!(
        c.decrypt_xattr_name(name.as_bytes()).as_deref(),
        Ok(&b"mime_type"[..])
    );
    let sealed = c.seal_xattr_value(name.as_bytes(), b"text/plain");
    assert_ne!(sealed, c.seal_xattr_value(name.as_bytes(), b"text/plain"));
    assert_eq!(NameCipher::xattr_value_plain_len(sealed.len()), Some(10));
    assert_eq!(
        c.open_xattr_value(name.as_bytes(), &sealed).as_deref(),
        Ok(&b"text/plain"[..])
    );
    let empty = c.seal_xattr_value(name.as_bytes(), b"");
    assert_eq!(empty.len(), 32);
    assert_eq!(c.open_xattr_value(name.as_bytes(), &empty), Ok(vec![]));
    assert_eq!(MAX_PLAIN_XATTR_NAME, 171);
    assert_eq!(
        c.encrypt_xattr_name(&[b'x'; 171]).len(),
        MAX_CIPHER_XATTR_NAME
    );
    assert!(c.encrypt_xattr_name(&[b'x'; 172]).len() > MAX_CIPHER_XATTR_NAME);
    assert_eq!(MAX_PLAIN_XATTR_VALUE + 32, 65536);
}

#[test]
fn altered_xattrs_fail() {
    let c = cipher();
    let name = c.encrypt_xattr_name(b"comment");
    let other = c.encrypt_xattr_name(b"checksum");
    let sealed = c.seal_xattr_value(name.as_bytes(), b"hello");
    assert_eq!(
        c.open_xattr_value(other.as_bytes(), &sealed),
        Err(NameError::Auth)
    );
    for i in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 0x01;
        assert_eq!(
            c.open_xattr_value(name.as_bytes(), &bad),
            Err(NameError::Auth),
            "byte {i}"
        );
    }
    assert_eq!(
        c.open_xattr_value(name.as_bytes(), &sealed[..31]),
        Err(NameError::TooShort { min: 32, found: 31 })
    );
    assert_eq!(NameCipher::xattr_value_plain_len(31), None);
    let stranger = NameCipher::new(&FsKey::random());
    assert_eq!(
        stranger.open_xattr_value(name.as_bytes(), &sealed),
        Err(NameError::Auth)
    );
    assert_eq!(
        stranger.decrypt_xattr_name(name.as_bytes()),
        Err(NameError::Auth)
    );
    // An xattr name is not a file name in any directory, nor the reverse.
    let file = c.encrypt_name(&DIR, b"comment");
    assert_eq!(c.decrypt_xattr_name(file.as_bytes()), Err(NameError::Auth));
    assert_eq!(c.decrypt_xattr_name(b"comment="), Err(NameError::NotBase64));
    assert_eq!(
        c.decrypt_xattr_name(b""),
        Err(NameError::TooShort { min: 17, found: 0 })
    );
    let long = "A".repeat(MAX_CIPHER_XATTR_NAME + 1);
    assert!(matches!(
        c.decrypt_xattr_name(long.as_bytes()),
        Err(NameError::TooLong { .. })
    ));
    let nul = c.encrypt_xattr_name(b"a\0");
    assert_eq!(
        c.decrypt_xattr_name(nul.as_bytes()),
        Err(NameError::InvalidPlain("contains NUL"))
    );
}
