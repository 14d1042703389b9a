//! The vectors of docs/FORMAT.md ("Version 2: names"), kept as a data file.

use super::super::*;
use crate::format::{hex, unhex};

fn array<const N: usize>(text: &str) -> [u8; N] {
    unhex(text)
        .try_into()
        .expect("hex field of the right length")
}

fn field<'a>(v: &'a serde_json::Value, name: &str) -> &'a str {
    v[name].as_str().expect("string field")
}

/// The vectors of docs/FORMAT.md, computed by `testdata/format-v2-vectors.py` with Python's
/// `cryptography`: the same key and dir id give the same bytes here, and they decrypt back.
#[test]
fn format_v2_vectors() {
    let doc = include_str!("../../../../docs/FORMAT.md");
    let v: serde_json::Value =
        serde_json::from_str(include_str!("../../../../testdata/format-v2-vectors.json"))
            .expect("vector file is JSON");
    let c = NameCipher::new(&FsKey::from_bytes(&unhex(field(&v, "fs_key"))).expect("32 bytes"));
    let dir: DirId = array(field(&v, "dir_id"));
    assert_eq!(dir_id_target(&dir), field(&v, "dir_id_link"));
    assert_eq!(
        parse_dir_id_target(field(&v, "dir_id_link").as_bytes()),
        Ok(dir)
    );
    assert!(
        doc.contains(field(&v, "dir_id_link")),
        "docs/FORMAT.md lacks the directory id link vector"
    );
    let keys = &v["keys"];
    assert_eq!(hex(c.names.expose_secret()), field(keys, "names"));
    assert_eq!(hex(c.symlinks.expose_secret()), field(keys, "symlinks"));
    assert_eq!(hex(c.xattrs.expose_secret()), field(keys, "xattrs"));

    let names = v["names"].as_array().expect("names");
    assert_eq!(names.len(), 5);
    for n in names {
        let plain = unhex(field(n, "plaintext"));
        let expected = field(n, "cipher");
        let label = &n["name"];
        assert_eq!(c.encrypt_name(&dir, &plain), expected, "vector {label}");
        assert_eq!(
            c.decrypt_name(&dir, expected.as_bytes()),
            Ok(plain),
            "{label}"
        );
        assert_eq!(
            long_name(expected).as_deref(),
            n["long_name"].as_str(),
            "{label}"
        );
        if let Some(short) = long_name(expected) {
            assert_eq!(long_side_name(&short), field(n, "long_side_file"));
            assert!(is_long(short.as_bytes()) && !is_internal(short.as_bytes()));
            assert!(is_internal(long_side_name(&short).as_bytes()));
        }
        let shown = long_name(expected).unwrap_or_else(|| expected.to_string());
        assert!(doc.contains(&shown), "docs/FORMAT.md lacks vector {label}");
    }

    for f in v["failures"].as_array().expect("failures") {
        let label = &f["name"];
        let dir: DirId = array(field(f, "dir_id"));
        let got = c.decrypt_name(&dir, field(f, "cipher").as_bytes());
        let kind = match got {
            Err(NameError::Auth) => "auth",
            Err(NameError::InvalidPlain(_)) => "invalid",
            Err(NameError::TooShort { .. }) => "too-short",
            Err(NameError::TooLong { .. }) => "too-long",
            Err(NameError::NotBase64) => "not-base64",
            other => panic!("failure vector {label} gave {other:?}"),
        };
        assert_eq!(kind, field(f, "expect"), "failure vector {label}");
    }

    let s = &v["symlink"];
    let target = unhex(field(s, "plaintext"));
    let expected = field(s, "cipher");
    assert_eq!(
        c.encrypt_target_with_nonce(array(field(s, "nonce")), &target),
        expected
    );
    assert_eq!(c.decrypt_target(expected.as_bytes()), Ok(target.clone()));
    assert_eq!(
        NameCipher::target_plain_len(expected.len() as u64),
        Some(target.len() as u64)
    );
    assert!(
        doc.contains(expected),
        "docs/FORMAT.md lacks the symlink vector"
    );

    let x = &v["xattr"];
    let name = unhex(field(x, "name_plaintext"));
    let cipher_name = field(x, "name_cipher");
    assert_eq!(c.encrypt_xattr_name(&name), cipher_name);
    assert_eq!(c.decrypt_xattr_name(cipher_name.as_bytes()), Ok(name));
    let value = unhex(field(x, "value_plaintext"));
    // The value is bound to the name as stored, `user.` included, as the mount passes it.
    let stored = format!("user.{cipher_name}");
    let sealed = c.seal_xattr_value_with_nonce(array(field(x, "nonce")), stored.as_bytes(), &value);
    assert_eq!(hex(&sealed), field(x, "value_sealed"));
    assert_eq!(c.open_xattr_value(stored.as_bytes(), &sealed), Ok(value));
    assert!(c.open_xattr_value(cipher_name.as_bytes(), &sealed).is_err());
    assert!(doc.contains(cipher_name) && doc.contains(field(x, "value_sealed")));
}
