//! The header vectors of docs/FORMAT.md, computed independently with Python's `cryptography`:
//! version 1 in `testdata/format-v1-vectors.json`, version 2 (with its DEK context and the
//! change at each field that a reader must catch) in `testdata/format-v2-vectors.json`.

use super::super::super::{hex, unhex};
use super::super::*;
use crate::crypto::Key256;

fn field(v: &serde_json::Value, name: &str) -> Vec<u8> {
    unhex(v[name].as_str().expect("hex field"))
}

fn header_of(v: &serde_json::Value, version: HeaderVersion) -> (FileHeader, FileCipher) {
    let dek = Key256::from_slice(&field(v, "dek")).expect("32 bytes");
    let file_id: FileId = field(v, "file_id").try_into().expect("16 bytes");
    let keying = match version {
        HeaderVersion::V1 => Keying::default(),
        HeaderVersion::V2 => Keying {
            epoch: v["epoch"].as_u64().expect("epoch") as u32,
            rekeying: v["rekeying"].as_bool().expect("rekeying"),
            seals: v["seals"].as_u64().expect("seals"),
        },
    };
    let header = FileHeader {
        version,
        file_id,
        key_id: v["key_id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .expect("uuid"),
        wrapped_dek: field(v, "wrapped_dek"),
        keying,
    };
    let cipher = FileCipher::new(&dek, file_id, version);
    let cipher = match version {
        HeaderVersion::V1 => cipher,
        HeaderVersion::V2 => cipher.with_keying(keying),
    };
    (header, cipher)
}

/// Encoding the version 1 vector gives exactly its 512 bytes.
#[test]
fn header_test_vector() {
    let vectors: serde_json::Value =
        serde_json::from_str(include_str!("../../../../testdata/format-v1-vectors.json"))
            .expect("vector file is JSON");
    let v = &vectors["header"];
    let (header, cipher) = header_of(v, HeaderVersion::V1);
    let encoded = header.encode(&cipher).expect("fits");
    assert_eq!(encoded.to_vec(), field(v, "header"));
    let doc = include_str!("../../../../docs/FORMAT.md");
    assert!(
        doc.contains(v["tag"].as_str().expect("tag")),
        "docs/FORMAT.md lacks the header tag"
    );
}

/// Encoding the version 2 vector gives exactly its 512 bytes, its DEK context exactly its
/// bytes; each mutation is caught where the vector says.
#[test]
fn header_v2_test_vector() {
    let vectors: serde_json::Value =
        serde_json::from_str(include_str!("../../../../testdata/format-v2-vectors.json"))
            .expect("vector file is JSON");
    let v = &vectors["header"];
    let (header, cipher) = header_of(v, HeaderVersion::V2);
    let fs_id: FsId = field(v, "fs_id").try_into().expect("16 bytes");
    assert_eq!(
        hex(&header.dek_context(&fs_id)),
        hex(&field(v, "dek_context"))
    );
    let encoded = header.encode(&cipher).expect("fits");
    assert_eq!(hex(&encoded), hex(&field(v, "header")));
    assert_eq!(FileHeader::parse(&encoded), Ok(header.clone()));
    assert_eq!(cipher.verify_header(&encoded), Ok(()));
    let doc = include_str!("../../../../docs/FORMAT.md");
    for name in ["tag", "dek_context"] {
        assert!(
            doc.contains(v[name].as_str().expect("hex")),
            "docs/FORMAT.md lacks the version 2 header's {name}"
        );
    }

    let mutations = v["mutations"].as_array().expect("mutations");
    assert!(mutations.len() >= 15);
    for m in mutations {
        let label = &m["name"];
        let offset = m["offset"].as_u64().expect("offset") as usize;
        let mut bad = encoded;
        let new = field(m, "bytes");
        bad[offset..offset + new.len()].copy_from_slice(&new);
        assert_ne!(bad, encoded, "mutation {label} changes nothing");
        let got = super::tests::caught_by(&bad, &header, &cipher, &fs_id);
        assert_eq!(
            got,
            m["expect"].as_str().expect("expect"),
            "mutation {label}"
        );
    }
}
