//! Targets of the key service: the KMS ciphertext blob, the keystore file (the sealed envelope
//! and the keyring JSON inside it) and the request signature header, as the server reads it.

use super::{fixed_key, scratch_dir};
use crate::crypto::{AeadKey, SecretBytes};
use crate::kms::embedded::EmbeddedKms;
use crate::kms::keyring::{KeyRecord, Keyring};
use crate::kms::wire::CreateKeyRequest;
use crate::kms::{blob as kms_blob, sign as kms_sign};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use std::sync::LazyLock;
use time::OffsetDateTime;
use uuid::Uuid;

/// The material byte of the blob key every blob corpus file is sealed under.
pub(super) const BLOB_KEY_BYTE: u8 = 0x24;
/// The encryption context of the blob corpus files.
pub(super) const CONTEXT: &[u8] = b"kmsfs-fuzz-context";
/// The id of the one key of the fixed keyring.
pub(super) const KEY_ID: Uuid = Uuid::from_bytes([0x4b; 16]);
/// The passphrase of every keystore corpus file.
pub(super) const PASSPHRASE: &[u8] = b"fuzz";
/// The Argon2id costs of the keystore corpus files: the cheapest there are.
#[cfg(test)]
pub(super) const CHEAP_KDF: crate::kms::embedded::KdfParams = crate::kms::embedded::KdfParams {
    m_cost_kib: 8,
    t_cost: 1,
    p_cost: 1,
};
/// The API secret every signed corpus file is signed with.
pub(super) const API_SECRET: &[u8] = b"fuzz-api-secret";
/// The server's clock in the signature target: UNIX seconds.
pub(super) const NOW: i64 = 1_800_000_000;

/// The time the fixed keyring was made and is used at.
pub(super) fn keyring_now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(NOW).expect("BUG: a valid timestamp")
}

/// A keyring with one key ([`KEY_ID`], material versions 1 and 2) of fixed material, so blobs
/// sealed under it in one run open in the next.
pub(super) static KEYRING: LazyLock<Keyring> = LazyLock::new(|| {
    let now = keyring_now();
    let mut ring = Keyring::new("fuzz");
    let request = CreateKeyRequest {
        name: "fuzz".into(),
        description: None,
        usage: None,
        multi_zone: false,
    };
    let id = ring.create_key(&request, now).expect("BUG: a new key").id;
    ring.rotate_key(id, now).expect("BUG: a new key rotates");
    let text = ring.to_persisted().expect("BUG: a keyring serializes");
    let mut doc: serde_json::Value =
        serde_json::from_slice(text.expose_secret()).expect("BUG: the keyring is JSON");
    let key = &mut doc["keys"][0];
    key["id"] = KEY_ID.to_string().into();
    if let Some(versions) = key["versions"].as_array_mut() {
        for (n, version) in (1u8..).zip(versions) {
            version["material"] = BASE64.encode([0x60 + n; 32]).into();
        }
    }
    let fixed = serde_json::to_vec(&doc).expect("BUG: JSON serializes");
    Keyring::from_persisted(&fixed).expect("BUG: the fixed keyring loads")
});

/// The KMS ciphertext blob: its header parses canonically without a key; it opens under the
/// fixed blob key (with and without a context) and through the fixed keyring's `decrypt`, each
/// giving a plaintext 49 bytes shorter, or an error.
pub fn blob(data: &[u8]) {
    if let Some(header) = kms_blob::BlobHeader::parse(data) {
        assert_eq!(header.to_bytes(), data[..kms_blob::HEADER_LEN]);
        assert_eq!(
            kms_blob::blob_key_version(data),
            Some((header.key_id, header.version))
        );
    } else {
        assert_eq!(kms_blob::blob_key_version(data), None);
    }
    let key = AeadKey::new(&fixed_key(BLOB_KEY_BYTE));
    for context in [None, Some(CONTEXT)] {
        if let Ok(plain) = kms_blob::open(&key, data, context) {
            assert_eq!(plain.len() + kms_blob::OVERHEAD, data.len());
        }
    }
    if let Ok(plain) = KEYRING.decrypt(KEY_ID, data, Some(CONTEXT), keyring_now()) {
        assert_eq!(plain.len() + kms_blob::OVERHEAD, data.len());
        let version = kms_blob::blob_key_version(data).map(|(_, v)| v);
        assert!(matches!(version, Some(1 | 2)));
    }
}

/// True when the Argon2id costs a keystore file asks for are cheap enough for a fuzzer (at
/// most 256 KiB, 2 passes, 2 lanes), or the file is no keystore at all (it fails before the
/// key derivation). Costlier files are skipped: they test Argon2, not the parser, and would
/// only be slow.
pub(super) fn cheap_kdf(data: &[u8]) -> bool {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(data) else {
        return true;
    };
    let cost = |name: &str| doc["kdf"][name].as_u64().unwrap_or(0);
    cost("m-cost-kib") <= 256 && cost("t-cost") <= 2 && cost("p-cost") <= 2
}

/// The keystore file and the keyring inside it. The bytes are tried as (1) a keystore file,
/// opened with the corpus passphrase when its key derivation is cheap ([`cheap_kdf`]); (2) the
/// keyring JSON a keystore seals; (3) one key record as a zone sends it to another. What loads
/// writes out and loads again to the same bytes.
pub fn keystore(data: &[u8]) {
    if cheap_kdf(data) {
        let path = scratch_dir().join("keystore");
        std::fs::write(&path, data).expect("BUG: the scratch directory is writable");
        if let Ok(kms) = EmbeddedKms::open(&path, &SecretBytes::new(PASSPHRASE.to_vec())) {
            let _ = kms.default_key_id();
        }
    }
    if let Ok(ring) = Keyring::from_persisted(data) {
        let written = ring.to_persisted().expect("a loaded keyring serializes");
        let again = Keyring::from_persisted(written.expose_secret())
            .expect("a written keyring loads")
            .to_persisted()
            .expect("a loaded keyring serializes");
        assert_eq!(written.expose_secret(), again.expose_secret());
    }
    if let Ok(record) = KeyRecord::from_bytes(data) {
        let written = record.to_bytes().expect("a loaded record serializes");
        let again = KeyRecord::from_bytes(written.expose_secret())
            .expect("a written record loads")
            .to_bytes()
            .expect("a loaded record serializes");
        assert_eq!(written.expose_secret(), again.expose_secret());
    }
}

/// The request signature as the server reads it: line 1 is the `Authorization` header's raw
/// bytes, line 2 the request target (path and query), the rest the body. The header must be
/// text, parse, and verify under the fixed secret at [`NOW`] over the query the server parses
/// from the target. A header that parses gives back the same fields when the client writes it
/// again.
pub fn sign(data: &[u8]) {
    let mut lines = data.splitn(3, |&b| b == b'\n');
    let header = lines.next().unwrap_or_default();
    let target = lines.next().unwrap_or_default();
    let body = lines.next().unwrap_or_default();
    let Ok(value) = axum::http::HeaderValue::from_bytes(header) else {
        return;
    };
    let Ok(text) = value.to_str() else {
        return;
    };
    let Ok(auth) = kms_sign::parse_authorization(text) else {
        return;
    };
    let (path, query) = match std::str::from_utf8(target)
        .ok()
        .and_then(|t| t.parse::<axum::http::Uri>().ok())
    {
        Some(uri) => {
            let query: Vec<(String, String)> =
                axum::extract::Query::try_from_uri(&uri).map_or_else(|_| Vec::new(), |q| q.0);
            (uri.path().to_string(), query)
        }
        None => ("/".to_string(), Vec::new()),
    };
    let secret = SecretBytes::new(API_SECRET.to_vec());
    if kms_sign::verify(&secret, &auth, "POST", &path, body, &query, NOW).is_ok() {
        assert!(auth.expires >= NOW && auth.expires <= NOW + kms_sign::MAX_EXPIRY_AHEAD_SECS);
    }
    let credentials = kms_sign::Credentials {
        key: auth.credential.clone(),
        secret,
    };
    let pairs: Vec<(&str, &str)> = auth
        .signed_query_args
        .iter()
        .map(|name| (name.as_str(), ""))
        .collect();
    let written = kms_sign::authorization(&credentials, "POST", &path, body, &pairs, auth.expires);
    let again = kms_sign::parse_authorization(&written).expect("a written header parses");
    assert_eq!(
        (&again.credential, &again.signed_query_args, again.expires),
        (&auth.credential, &auth.signed_query_args, auth.expires),
        "a header written again says something else"
    );
}
