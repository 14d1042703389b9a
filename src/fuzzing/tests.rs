//! The fuzz targets without a fuzzer: every checked-in corpus file, and a few thousand inputs
//! mutated from them with a seeded generator, through the same functions `cargo fuzz` runs.
//! `seeds` makes the corpus (`cargo test --lib fuzzing::tests::write_seed_corpus -- --ignored`
//! writes it to `fuzz/corpus/`).

use super::format::{BlockCase, DEK_BYTE, DIR_ID, FILE_ID, NAME_CIPHER, name_kind};
use super::kms::{API_SECRET, BLOB_KEY_BYTE, CHEAP_KDF, CONTEXT, KEY_ID, KEYRING, NOW, PASSPHRASE};
use super::*;
use crate::crypto::{AeadKey, SecretBytes};
use crate::format::{FileCipher, FileHeader, HeaderVersion, Keying, Place};
use crate::kms::{blob as kms_blob, sign as kms_sign};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

/// Mutated inputs per corpus file and target.
const MUTATIONS_PER_FILE: usize = 120;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn corpus_dir(target: &str) -> PathBuf {
    repo().join("fuzz").join("corpus").join(target)
}

/// The checked-in corpus of `target`: (file name, bytes), sorted by name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            let name = path.file_name().expect("a name").to_string_lossy().into();
            (name, std::fs::read(&path).expect("a corpus file reads"))
        })
        .collect();
    files.sort();
    files
}

fn target(name: &str) -> Target {
    TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .expect("a known target")
}

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(repo().join("testdata").join(path)).expect("a fixture file")
}

/// One mutation of `input`, as a fuzzer's first steps would make: flip, overwrite, insert,
/// delete or duplicate bytes, cut short, or splice with `other`.
fn mutate(rng: &mut StdRng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = out.len();
        let at = rng.random_range(0..=len);
        match rng.random_range(0..7) {
            0 if len > 0 => out[at.min(len - 1)] ^= 1 << rng.random_range(0..8),
            1 if len > 0 => out[at.min(len - 1)] = rng.random(),
            2 => out.insert(at, rng.random()),
            3 if len > 0 => {
                out.remove(at.min(len - 1));
            }
            4 => out.truncate(at),
            5 => {
                let end = rng.random_range(at..=len);
                let copy = out[at..end].to_vec();
                out.splice(at..at, copy);
            }
            _ => {
                let cut = rng.random_range(0..=other.len());
                out.truncate(at);
                out.extend_from_slice(&other[cut..]);
            }
        }
    }
    out
}

#[test]
fn every_target_has_a_corpus_and_runs_it() {
    for (name, run) in TARGETS {
        let files = corpus(name);
        assert!(files.len() >= 3, "{name} has {} corpus files", files.len());
        for (_, bytes) in &files {
            run(bytes);
        }
    }
}

#[test]
fn mutated_corpus_files_never_panic_a_target() {
    let mut rng = StdRng::seed_from_u64(0x6b6d_7366);
    for (name, run) in TARGETS {
        let files = corpus(name);
        for (i, (_, bytes)) in files.iter().enumerate() {
            let other = &files[(i + 1) % files.len()].1;
            for _ in 0..MUTATIONS_PER_FILE {
                run(&mutate(&mut rng, bytes, other));
            }
        }
        for len in [0, 1, 2, 33, 49, 511, 512, 513, 4124, 4125] {
            run(&vec![0u8; len]);
            run(&(0..len).map(|_| rng.random()).collect::<Vec<u8>>());
        }
    }
}

/// The corpus file `file` of `target`.
fn corpus_file(target: &str, file: &str) -> Vec<u8> {
    std::fs::read(corpus_dir(target).join(file)).expect("a corpus file")
}

/// The signed corpus file of the signature target: its header parsed, its path, its body.
fn signed_seed() -> (kms_sign::Authorization, String, Vec<u8>) {
    let signed = corpus_file("sign", "signed-body");
    let mut lines = signed.splitn(3, |&b| b == b'\n');
    let mut text = || String::from_utf8(lines.next().expect("a line").to_vec()).expect("text");
    let auth = kms_sign::parse_authorization(&text()).expect("parses");
    let path = text();
    (auth, path, text().into_bytes())
}

#[test]
fn checked_in_seeds_reach_past_authentication() {
    let header_bytes = corpus_file("header", "v2-rekeying");
    let header = FileHeader::parse(&header_bytes).expect("parses");
    let cipher = FileCipher::new(&fixed_key(DEK_BYTE), header.file_id, header.version)
        .with_keying(header.keying);
    let mut bytes = [0u8; crate::format::HEADER_LEN];
    bytes.copy_from_slice(&header_bytes[..crate::format::HEADER_LEN]);
    assert_eq!(cipher.verify_header(&bytes), Ok(()));

    let block = corpus_file("block", "v2-last-short");
    let case = BlockCase::of(block[0]);
    let mut buf = block[1..].to_vec();
    let opened = case
        .cipher()
        .open_block_in_place(case.index, case.place, &mut buf);
    assert_eq!(opened, Ok(block.len() - 1 - 28));

    let blob = corpus_file("blob", "keyring-v2");
    let plain = KEYRING
        .decrypt(KEY_ID, &blob, Some(CONTEXT), super::kms::keyring_now())
        .expect("opens");
    assert_eq!(plain.expose_secret(), b"a wrapped key");

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keystore");
    std::fs::write(&path, corpus_file("keystore", "cheap-keystore")).expect("write");
    let kms = crate::kms::embedded::EmbeddedKms::open(&path, &SecretBytes::new(PASSPHRASE.into()))
        .expect("the corpus keystore opens");
    assert!(kms.default_key_id().is_some());

    let (auth, path, body) = signed_seed();
    let (path, body) = (path.as_str(), body.as_slice());
    let secret = SecretBytes::new(API_SECRET.to_vec());
    assert_eq!(
        kms_sign::verify(&secret, &auth, "POST", path, body, &[], NOW),
        Ok(())
    );

    let name = corpus_file("names", "name");
    assert_eq!(
        NAME_CIPHER.decrypt_name(&DIR_ID, &name[1..]).as_deref(),
        Ok(&b"hello.txt"[..])
    );
}

#[test]
fn a_seed_changed_in_one_byte_fails_authentication_and_the_target_goes_on() {
    let mut header = corpus_file("header", "v2-rekeying");
    header[20] ^= 1;
    let parsed = FileHeader::parse(&header).expect("still parses");
    let cipher = FileCipher::new(&fixed_key(DEK_BYTE), parsed.file_id, parsed.version)
        .with_keying(parsed.keying);
    let mut bytes = [0u8; crate::format::HEADER_LEN];
    bytes.copy_from_slice(&header[..crate::format::HEADER_LEN]);
    assert!(cipher.verify_header(&bytes).is_err());
    super::header(&header);

    let mut blob = corpus_file("blob", "keyring-v2");
    let last = blob.len() - 1;
    blob[last] ^= 0x80;
    let opened = KEYRING.decrypt(KEY_ID, &blob, Some(CONTEXT), super::kms::keyring_now());
    assert!(opened.is_err());
    super::blob(&blob);

    let mut block = corpus_file("block", "v2-last-short");
    block[30] ^= 4;
    let case = BlockCase::of(block[0]);
    let mut buf = block[1..].to_vec();
    let opened = case
        .cipher()
        .open_block_in_place(case.index, case.place, &mut buf);
    assert!(opened.is_err());
    super::block(&block);
}

#[test]
fn a_signature_under_another_secret_or_out_of_its_window_is_refused() {
    let (auth, path, body) = signed_seed();
    let (path, body) = (path.as_str(), body.as_slice());
    let other = SecretBytes::new(b"another secret".to_vec());
    assert_eq!(
        kms_sign::verify(&other, &auth, "POST", path, body, &[], NOW),
        Err(kms_sign::SignError::BadSignature)
    );
    let secret = SecretBytes::new(API_SECRET.to_vec());
    assert!(matches!(
        kms_sign::verify(&secret, &auth, "POST", path, body, &[], NOW + 7200),
        Err(kms_sign::SignError::Expired { .. })
    ));
}

#[test]
fn costly_keystores_are_skipped_and_cheap_ones_opened() {
    let costly = fixture("v2-fixture/keystore");
    assert!(!super::kms::cheap_kdf(&costly));
    assert!(super::kms::cheap_kdf(&corpus_file(
        "keystore",
        "cheap-keystore"
    )));
    assert!(super::kms::cheap_kdf(b"not json"));
    let mut doc: serde_json::Value =
        serde_json::from_slice(&corpus_file("keystore", "cheap-keystore")).expect("JSON");
    doc["kdf"]["t-cost"] = 3.into();
    assert!(!super::kms::cheap_kdf(doc.to_string().as_bytes()));
}

#[test]
fn a_block_case_survives_its_selector_byte() {
    for selector in 0..=u8::MAX {
        let case = BlockCase::of(selector);
        if case.version == HeaderVersion::V1 && selector & 4 != 0 {
            continue; // version 1 has no re-keying: the bit is ignored
        }
        assert_eq!(case.selector(), selector);
    }
}

/// Every seed: (target, file name, bytes). Headers, blocks, blobs, keystores and signatures are
/// made under the fixed keys, so they pass authentication; the rest are real files of the
/// fixtures.
fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        out.push((target, name.to_string(), bytes));
    };

    // header: two real ones from the fixtures, two made under the fixed DEK with a wrap slot
    // to re-wrap with after them.
    for (name, path) in [
        ("v1-fixture", "v1-fixture/cipher/one-byte"),
        (
            "v2-fixture",
            "v2-fixture/cipher/ZXddXN4kStXIvNMnFc1sFlrEBsumshpO",
        ),
    ] {
        add(
            "header",
            name,
            fixture(path)[..crate::format::HEADER_LEN].to_vec(),
        );
    }
    let wrapped = kms_blob::seal(
        &AeadKey::new(&fixed_key(BLOB_KEY_BYTE)),
        KEY_ID,
        1,
        &[7; 32],
        Some(CONTEXT),
    );
    for (name, version, keying) in [
        ("v1", HeaderVersion::V1, Keying::default()),
        (
            "v2-rekeying",
            HeaderVersion::V2,
            Keying {
                epoch: 2,
                rekeying: true,
                seals: 40_000,
            },
        ),
    ] {
        let header = FileHeader {
            version,
            file_id: FILE_ID,
            key_id: KEY_ID,
            wrapped_dek: wrapped.clone(),
            keying,
        };
        let cipher = FileCipher::new(&fixed_key(DEK_BYTE), FILE_ID, version).with_keying(keying);
        let mut bytes = header.encode(&cipher).expect("fits").to_vec();
        bytes.extend_from_slice(&wrapped);
        add("header", name, bytes);
    }

    // block: a selector byte, then the block.
    let cases = [
        (
            "v1-inner-full",
            HeaderVersion::V1,
            Place::Inner,
            false,
            0,
            4096,
        ),
        (
            "v2-last-short",
            HeaderVersion::V2,
            Place::Last,
            false,
            3,
            100,
        ),
        (
            "v2-inner-rekeying",
            HeaderVersion::V2,
            Place::Inner,
            true,
            1,
            4096,
        ),
        (
            "v2-last-one-byte",
            HeaderVersion::V2,
            Place::Last,
            false,
            0,
            1,
        ),
    ];
    for (name, version, place, rekeying, index, len) in cases {
        let case = BlockCase {
            version,
            place,
            rekeying,
            index,
        };
        let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut bytes = vec![case.selector()];
        let mut sealed = vec![0u8; len + 28];
        case.cipher().seal_block(index, place, &plain, &mut sealed);
        bytes.extend_from_slice(&sealed);
        add("block", name, bytes);
    }
    let mut hole = vec![BlockCase::of(0).selector()];
    hole.extend_from_slice(&[0; 4124]);
    add("block", "v1-hole", hole);

    // blob: under the fixed keyring (both material versions) and the fixed blob key, and a
    // real wrapped filesystem key from a fixture's kmsfs.conf.
    let now = super::kms::keyring_now();
    let v2 = KEYRING
        .encrypt(KEY_ID, b"a wrapped key", Some(CONTEXT), now)
        .expect("encrypts");
    add("blob", "keyring-v2", v2);
    let key = AeadKey::new(&fixed_key(BLOB_KEY_BYTE));
    add(
        "blob",
        "blob-key-no-context",
        kms_blob::seal(&key, KEY_ID, 1, b"dek", None),
    );
    add("blob", "blob-key-context", wrapped.clone());
    let conf: serde_json::Value =
        serde_json::from_slice(&fixture("v2-fixture/cipher/kmsfs.conf")).expect("JSON");
    let fs_key = conf["fs-key"]["wrapped"].as_str().expect("a wrapped key");
    add(
        "blob",
        "v2-fixture-fs-key",
        BASE64.decode(fs_key).expect("base64"),
    );

    // keystore: a whole keystore of the cheapest costs, the keyring JSON, one key record, and a
    // real keystore (skipped by the target for its costs; its shape seeds mutations).
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keystore");
    crate::kms::embedded::EmbeddedKms::create_with_params(
        &path,
        &SecretBytes::new(PASSPHRASE.to_vec()),
        "fuzz",
        CHEAP_KDF,
        std::sync::Arc::new(crate::kms::embedded::SystemClock),
    )
    .expect("a keystore");
    add(
        "keystore",
        "cheap-keystore",
        std::fs::read(&path).expect("read"),
    );
    let ring = KEYRING.to_persisted().expect("serializes");
    add("keystore", "keyring", ring.expose_secret().to_vec());
    let doc: serde_json::Value = serde_json::from_slice(ring.expose_secret()).expect("JSON");
    add(
        "keystore",
        "key-record",
        doc["keys"][0].to_string().into_bytes(),
    );
    add(
        "keystore",
        "v1-fixture-keystore",
        fixture("v1-fixture/keystore"),
    );

    // conf: the fixtures' two, a remote one, a record of known endpoints.
    add(
        "conf",
        "v1-fixture",
        fixture("v1-fixture/cipher/kmsfs.conf"),
    );
    add(
        "conf",
        "v2-fixture",
        fixture("v2-fixture/cipher/kmsfs.conf"),
    );
    let remote = crate::config::CipherConfig::new(
        crate::config::KmsConfig::remote(vec!["https://kms.example:8443/v2".into()]),
        KEY_ID,
    );
    add(
        "conf",
        "remote",
        serde_json::to_vec_pretty(&remote).expect("serializes"),
    );
    let mut known = crate::config::known::KnownEndpoints::default();
    known.directories.insert(
        remote.fs_id.clone(),
        crate::config::known::KnownDirectory {
            endpoint: "https://kms.example:8443/v2".into(),
            path: "/srv/cipher".into(),
        },
    );
    add(
        "conf",
        "known-endpoints",
        serde_json::to_vec_pretty(&known).expect("serializes"),
    );

    // sign: header line, request target line, body; signed under the fixed secret at NOW.
    let credentials = kms_sign::Credentials {
        key: "EXOfuzz".into(),
        secret: SecretBytes::new(API_SECRET.to_vec()),
    };
    let path = format!("/v2/kms-key/{KEY_ID}/encrypt");
    let body = br#"{"plaintext":"aGVsbG8="}"#;
    let signed = |target: &str, path: &str, body: &[u8], query: &[(&str, &str)]| {
        let header = kms_sign::authorization(&credentials, "POST", path, body, query, NOW + 60);
        let mut bytes = format!("{header}\n{target}\n").into_bytes();
        bytes.extend_from_slice(body);
        bytes
    };
    add("sign", "signed-body", signed(&path, &path, body, &[]));
    add(
        "sign",
        "signed-query",
        signed(
            "/v2/kms-key?zone=ch-gva-2&limit=5",
            "/v2/kms-key",
            b"",
            &[("zone", "ch-gva-2"), ("limit", "5")],
        ),
    );
    add(
        "sign",
        "unsigned-peer",
        format!(
            "{} credential=peer:ch-dk-2,expires={},signature=AAAA=\n/v2/_peer/replica\n{{}}",
            kms_sign::SCHEME,
            NOW + 10
        )
        .into_bytes(),
    );

    // server_body: one valid body for each parser.
    let blob = BASE64.encode(&wrapped);
    let kms_key = serde_json::to_value(KEYRING.get_key(KEY_ID, now).expect("a key")).expect("JSON");
    let bodies: Vec<(&str, String)> = vec![
        ("create-kms-key", r#"{"name":"k","description":"d","usage":"encrypt-decrypt","multi-zone":true}"#.into()),
        ("encrypt", r#"{"plaintext":"aGVsbG8=","encryption-context":"Y3R4"}"#.into()),
        ("decrypt", format!(r#"{{"ciphertext":"{blob}","encryption-context":"Y3R4"}}"#)),
        ("generate-data-key", r#"{"key-spec":"AES-256","bytes-count":32,"encryption-context":"Y3R4"}"#.into()),
        ("re-encrypt", format!(r#"{{"source":{{"key":"{KEY_ID}","ciphertext":"{blob}","encryption-context":"Y3R4"}},"destination":{{"key":"{KEY_ID}"}}}}"#)),
        ("schedule-deletion", r#"{"delay-days":7}"#.into()),
        ("enable-rotation", r#"{"rotation-period":365}"#.into()),
        ("replicate", r#"{"zone":"ch-dk-2"}"#.into()),
        ("peer-replica", format!(r#"{{"org":"{KEY_ID}","source-zone":"ch-gva-2","target-zone":"ch-dk-2","key":"{KEY_ID}","watermark":3,"sealed":"{blob}"}}"#)),
        ("no-body", "{}".into()),
        ("path-key-id", KEY_ID.to_string()),
        ("answer-key", kms_key.to_string()),
        ("answer-key-list", serde_json::json!({ "kms-keys": [kms_key] }).to_string()),
        ("answer-rotation", serde_json::json!({ "rotation": kms_key["rotation"] }).to_string()),
        ("answer-rotation-list", r#"{"rotations":[{"version":1,"rotated-at":"2027-01-15T08:00:00Z","automatic":false}]}"#.into()),
        ("answer-deletion", r#"{"delete-at":"2027-01-15T08:00:00Z"}"#.into()),
        ("answer-success", r#"{"status":"already-applied"}"#.into()),
        ("answer-problem", r#"{"type":"about:blank","title":"Key Not Found","status":404,"detail":"no key"}"#.into()),
    ];
    for (name, text) in bodies {
        let at = super::server::BODIES
            .iter()
            .position(|(n, _)| *n == name)
            .expect("a parser of that name");
        let mut bytes = vec![u8::try_from(at).expect("few parsers")];
        bytes.extend_from_slice(text.as_bytes());
        add("server_body", name, bytes);
    }

    // names: a selector byte ([`name_kind`]), then the text as a cipher directory holds it.
    let cipher = &*NAME_CIPHER;
    let with = |kind: u8, bytes: &[u8]| {
        let mut out = vec![kind];
        out.extend_from_slice(bytes);
        out
    };
    add(
        "names",
        "name",
        with(
            name_kind::NAME,
            cipher.encrypt_name(&DIR_ID, b"hello.txt").as_bytes(),
        ),
    );
    let long = "ü".repeat(120);
    add(
        "names",
        "long-utf8-name",
        with(
            name_kind::NAME,
            cipher.encrypt_name(&DIR_ID, long.as_bytes()).as_bytes(),
        ),
    );
    add(
        "names",
        "target",
        with(
            name_kind::TARGET,
            cipher.encrypt_target(b"../dir/file").as_bytes(),
        ),
    );
    let xattr = cipher.encrypt_xattr_name(b"comment");
    add(
        "names",
        "xattr-name",
        with(name_kind::XATTR_NAME, xattr.as_bytes()),
    );
    let stored = format!("user.{xattr}");
    let mut value = with(name_kind::XATTR_VALUE, stored.as_bytes());
    value.push(0);
    value.extend_from_slice(&cipher.seal_xattr_value(stored.as_bytes(), b"a value"));
    add("names", "xattr-value", value);
    let link = std::fs::read_link(repo().join("testdata/v2-fixture/cipher/kmsfs.dirid"))
        .expect("the fixture's id link");
    add(
        "names",
        "dir-id-link",
        with(name_kind::DIR_ID, link.as_os_str().as_encoded_bytes()),
    );
    add(
        "names",
        "long-disk-name",
        with(
            name_kind::DISK_NAME,
            b"kmsfs.long.EokgVUKesXq3TPzsQJsoOxtvWq39zw3mKQ7WqqVBs3A.name",
        ),
    );
    out
}

#[test]
#[ignore = "writes the seed corpus into fuzz/corpus/: run it by hand to renew the seeds"]
fn write_seed_corpus() {
    for (target, name, bytes) in seeds() {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(name), bytes).expect("write");
    }
}

#[test]
fn fresh_seeds_run_through_their_targets() {
    for (name, file, bytes) in seeds() {
        let _ = file;
        target(name)(&bytes);
    }
}

#[test]
fn an_fs_id_that_is_not_hex_digits_is_refused() {
    let seed = String::from_utf8(corpus_file("conf", "v1-fixture")).expect("text");
    for fs_id in [
        "+f".repeat(16),
        "-0".repeat(16),
        format!("{}  ", "a".repeat(30)),
    ] {
        let text = seed.replace("5436f2a1b9a67229fb9475e35bd14949", &fs_id);
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(crate::config::CONF_NAME), &text).expect("write");
        let loaded = crate::config::CipherConfig::load(dir.path());
        assert!(loaded.is_err(), "fs-id {fs_id:?} loads: {loaded:?}");
        conf(text.as_bytes());
    }
}
