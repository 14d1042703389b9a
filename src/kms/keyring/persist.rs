//! A keyring as bytes: JSON with every key and every material version (base64), to be written
//! only sealed (the embedded keystore seals it). Reading checks every invariant the rules rely
//! on, so a keyring that loads is one the rules can work with.
//!
//! ```text
//! {"format":"kmsfs-keyring","version":1,"zone":"...","keys":[{"id":..., "name":...,
//!   ..., "versions":[{"version":1,"created-at":"...","automatic":false,"material":"<base64>"}]}]}
//! ```

use super::{KeyRecord, Keyring, MANUAL_ROTATION_LIMIT, MaterialVersion, ROTATION_DAYS};
use crate::crypto::{Key256, SecretBytes};
use crate::kms::wire::{KeyStatus, ReplicaState, Revision, RotationConfig, rfc3339};
use crate::kms::{KeystoreError, KmsError};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, BTreeSet};
use time::OffsetDateTime;
use uuid::Uuid;
use zeroize::Zeroizing;

const FORMAT: &str = "kmsfs-keyring";
pub const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PersistedKeyring<'a> {
    format: String,
    version: u32,
    zone: String,
    keys: Vec<PersistedKey<'a>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PersistedKey<'a> {
    id: Uuid,
    name: String,
    description: Option<String>,
    multi_zone: bool,
    origin_zone: String,
    status: KeyStatus,
    #[serde(with = "rfc3339")]
    status_since: OffsetDateTime,
    #[serde(with = "rfc3339")]
    created_at: OffsetDateTime,
    revision: Revision,
    rotation: RotationConfig,
    replicas: Vec<String>,
    replicas_status: Vec<ReplicaState>,
    #[serde(with = "time::serde::rfc3339::option")]
    delete_at: Option<OffsetDateTime>,
    replica: bool,
    default_key: bool,
    versions: Vec<PersistedVersion<'a>>,
    #[serde(default, skip_serializing_if = "is_zero")]
    primary_seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seed: Option<Material<'a>>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PersistedVersion<'a> {
    version: u32,
    #[serde(with = "rfc3339")]
    created_at: OffsetDateTime,
    automatic: bool,
    material: Material<'a>,
}

/// Material on its way out (borrowed) or in (owned); base64 in JSON, zeroized on every copy.
enum Material<'a> {
    Borrowed(&'a Key256),
    Owned(Key256),
}

impl Serialize for Material<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let key = match self {
            Material::Borrowed(key) => *key,
            Material::Owned(key) => key,
        };
        let text = Zeroizing::new(BASE64.encode(key.expose_secret()));
        serializer.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Material<'_> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Zeroizing::new(String::deserialize(deserializer)?);
        let bytes = Zeroizing::new(
            BASE64
                .decode(text.as_bytes())
                .map_err(|_| serde::de::Error::custom("key material is not base64"))?,
        );
        Key256::from_slice(&bytes)
            .map(Material::Owned)
            .ok_or_else(|| serde::de::Error::custom("key material is not 32 bytes"))
    }
}

/// Counts bytes, so the real output buffer is allocated once and never reallocated (a
/// reallocation would leave a copy of the material behind in freed memory).
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn invalid(what: impl std::fmt::Display) -> KmsError {
    KeystoreError::Invalid {
        why: what.to_string(),
        source: None,
    }
    .into()
}

fn not_json(e: serde_json::Error) -> KmsError {
    KeystoreError::Invalid {
        why: e.to_string(),
        source: Some(e),
    }
    .into()
}

fn unserializable(what: &'static str) -> impl Fn(serde_json::Error) -> KmsError + Copy {
    move |source| KeystoreError::Serialize { what, source }.into()
}

impl Keyring {
    /// The keyring as JSON bytes, material included: write it only sealed.
    ///
    /// # Errors
    /// [`KmsError::Keystore`] when a timestamp cannot be written as RFC 3339 (a clock far
    /// outside years 0–9999).
    pub fn to_persisted(&self) -> Result<SecretBytes, KmsError> {
        let doc = PersistedKeyring {
            format: FORMAT.to_string(),
            version: VERSION,
            zone: self.zone.clone(),
            keys: self.keys.values().map(persisted_key).collect(),
        };
        let fail = unserializable("the keyring");
        let mut counter = ByteCounter(0);
        serde_json::to_writer(&mut counter, &doc).map_err(fail)?;
        let mut out = Vec::with_capacity(counter.0);
        serde_json::to_writer(&mut out, &doc).map_err(fail)?;
        Ok(SecretBytes::new(out))
    }

    /// Reads bytes made by [`Keyring::to_persisted`]. Never panics.
    ///
    /// # Errors
    /// [`KmsError::Keystore`] naming the first problem: not JSON of this shape, another format
    /// or version, or a broken invariant (duplicate ids or names, version gaps, ...).
    pub fn from_persisted(bytes: &[u8]) -> Result<Self, KmsError> {
        let doc: PersistedKeyring = serde_json::from_slice(bytes).map_err(not_json)?;
        if doc.format != FORMAT {
            return Err(invalid(format!(
                "format {:?}, expected {FORMAT:?}",
                doc.format
            )));
        }
        if doc.version != VERSION {
            return Err(invalid(format!(
                "version {}, expected {VERSION}",
                doc.version
            )));
        }
        if doc.zone.is_empty() {
            return Err(invalid("the zone is empty"));
        }
        let mut keys = BTreeMap::new();
        let mut names = BTreeSet::new();
        let mut defaults = 0;
        for key in doc.keys {
            let record = record_from(key)?;
            if !names.insert(record.name.clone()) {
                return Err(invalid(format!("two keys are named {:?}", record.name)));
            }
            defaults += usize::from(record.default_key);
            if let Some(old) = keys.insert(record.id, record) {
                return Err(invalid(format!("key {} appears twice", old.id)));
            }
        }
        if defaults > 1 {
            return Err(invalid("it has more than one Default Organization Key"));
        }
        Ok(Keyring {
            zone: doc.zone,
            keys,
        })
    }
}

fn persisted_key(key: &KeyRecord) -> PersistedKey<'_> {
    PersistedKey {
        id: key.id,
        name: key.name.clone(),
        description: key.description.clone(),
        multi_zone: key.multi_zone,
        origin_zone: key.origin_zone.clone(),
        status: key.status,
        status_since: key.status_since,
        created_at: key.created_at,
        revision: key.revision.clone(),
        rotation: key.rotation.clone(),
        replicas: key.replicas.clone(),
        replicas_status: key.replicas_status.clone(),
        delete_at: key.delete_at,
        replica: key.replica,
        default_key: key.default_key,
        versions: key
            .versions
            .iter()
            .map(|v| PersistedVersion {
                version: v.version,
                created_at: v.created_at,
                automatic: v.automatic,
                material: Material::Borrowed(&v.key),
            })
            .collect(),
        primary_seq: key.primary_seq,
        seed: key.seed.as_ref().map(Material::Borrowed),
    }
}

impl KeyRecord {
    /// One key as JSON bytes, material included, to travel to another zone: send it only
    /// sealed.
    ///
    /// # Errors
    /// [`KmsError::Keystore`] when a timestamp cannot be written as RFC 3339.
    pub fn to_bytes(&self) -> Result<SecretBytes, KmsError> {
        let doc = persisted_key(self);
        let fail = unserializable("key");
        let mut counter = ByteCounter(0);
        serde_json::to_writer(&mut counter, &doc).map_err(fail)?;
        let mut out = Vec::with_capacity(counter.0);
        serde_json::to_writer(&mut out, &doc).map_err(fail)?;
        Ok(SecretBytes::new(out))
    }

    /// Reads bytes made by [`KeyRecord::to_bytes`], checking the same invariants as a whole
    /// keyring. Never panics.
    ///
    /// # Errors
    /// [`KmsError::Keystore`] naming the first problem.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KmsError> {
        let doc: PersistedKey = serde_json::from_slice(bytes).map_err(not_json)?;
        record_from(doc)
    }
}

fn record_from(key: PersistedKey<'_>) -> Result<KeyRecord, KmsError> {
    let id = key.id;
    let fail = |what: &str| Err(invalid(format!("key {id}: {what}")));
    if key.name.trim().is_empty() || key.origin_zone.is_empty() {
        return fail("empty name or origin zone");
    }
    if key.revision.seq == 0 {
        return fail("revision seq 0");
    }
    if !ROTATION_DAYS.contains(&i64::from(key.rotation.rotation_period)) {
        return fail("rotation period out of range");
    }
    if key.rotation.manual_count > MANUAL_ROTATION_LIMIT {
        return fail("more manual rotations than allowed");
    }
    if (key.status == KeyStatus::PendingDeletion) != key.delete_at.is_some() {
        return fail("delete-at does not match the status");
    }
    if key.default_key && (key.replica || key.status != KeyStatus::Enabled) {
        return fail("the Default Organization Key must be an enabled primary");
    }
    if key.versions.is_empty() {
        return fail("no material version");
    }
    if key.seed.is_some() && !key.default_key {
        return fail("only the Default Organization Key has a derivation seed");
    }
    let mut versions = Vec::with_capacity(key.versions.len());
    for (index, v) in key.versions.into_iter().enumerate() {
        if u32::try_from(index + 1).ok() != Some(v.version) {
            return fail("material versions are not numbered 1, 2, 3, ...");
        }
        let material = match v.material {
            Material::Owned(material) => material,
            Material::Borrowed(material) => material.clone(),
        };
        versions.push(MaterialVersion {
            version: v.version,
            created_at: v.created_at,
            automatic: v.automatic,
            key: material,
        });
    }
    Ok(KeyRecord {
        id,
        name: key.name,
        description: key.description,
        multi_zone: key.multi_zone,
        origin_zone: key.origin_zone,
        status: key.status,
        status_since: key.status_since,
        created_at: key.created_at,
        revision: key.revision,
        rotation: key.rotation,
        replicas: key.replicas,
        replicas_status: key.replicas_status,
        delete_at: key.delete_at,
        replica: key.replica,
        default_key: key.default_key,
        versions,
        primary_seq: key.primary_seq,
        seed: key.seed.map(|m| match m {
            Material::Owned(material) => material,
            Material::Borrowed(material) => material.clone(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::wire::CreateKeyRequest;
    use serde_json::Value;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

    /// A keyring with a default key, a rotated key, a disabled key and a pending one.
    fn sample() -> (Keyring, Uuid) {
        let mut ring = Keyring::new("ch-gva-2");
        ring.ensure_default_key(T0);
        let mut create = |name: &str| {
            let request = CreateKeyRequest {
                name: name.to_string(),
                description: Some(format!("the {name} key")),
                usage: None,
                multi_zone: true,
            };
            ring.create_key(&request, T0).expect("creates").id
        };
        let (rotated, disabled, pending) =
            (create("rotated"), create("disabled"), create("pending"));
        ring.rotate_key(rotated, T0).expect("rotates");
        ring.disable_key(disabled, T0).expect("disables");
        ring.schedule_deletion(pending, None, T0)
            .expect("schedules");
        let zones = ["ch-dk-2".to_string()];
        ring.register_replica(rotated, "ch-dk-2", &zones, T0)
            .expect("registers");
        (ring, rotated)
    }

    fn document(ring: &Keyring) -> Value {
        let bytes = ring.to_persisted().expect("serializes");
        serde_json::from_slice(bytes.expose_secret()).expect("JSON")
    }

    #[test]
    fn round_trip_keeps_every_key_and_every_material_version() {
        let (ring, rotated) = sample();
        let v1 = {
            let mut older = ring.clone();
            // A v1 blob: made before the rotation, so take it from material version 1 directly.
            older
                .keys
                .get_mut(&rotated)
                .expect("present")
                .versions
                .truncate(1);
            older
                .encrypt(rotated, b"v1", Some(b"ctx"), T0)
                .expect("encrypts")
        };
        let v2 = ring
            .encrypt(rotated, b"v2", Some(b"ctx"), T0)
            .expect("encrypts");
        let bytes = ring.to_persisted().expect("serializes");
        let back = Keyring::from_persisted(bytes.expose_secret()).expect("reads");
        assert_eq!(back.zone(), ring.zone());
        assert_eq!(back.default_key_id(), ring.default_key_id());
        assert_eq!(back.list_keys(T0), ring.list_keys(T0));
        for (blob, plain) in [(&v1, b"v1"), (&v2, b"v2")] {
            let got = back
                .decrypt(rotated, blob, Some(b"ctx"), T0)
                .expect("decrypts after reload");
            assert_eq!(got.expose_secret(), plain);
        }
        assert_eq!(
            back.to_persisted().expect("again").expose_secret(),
            bytes.expose_secret()
        );
    }

    #[test]
    fn garbage_and_broken_invariants_are_errors_not_panics() {
        let (ring, _) = sample();
        let good = document(&ring);
        let edit = |f: &dyn Fn(&mut Value)| {
            let mut doc = good.clone();
            f(&mut doc);
            serde_json::to_vec(&doc).expect("serializes")
        };
        let key0 = |doc: &mut Value| -> Value { doc["keys"][0].clone() };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("not JSON", b"\x00\xff garbage".to_vec()),
            ("null", b"null".to_vec()),
            ("empty object", b"{}".to_vec()),
            (
                "other format",
                edit(&|d| d["format"] = "kmsfs-keystore".into()),
            ),
            ("version 2", edit(&|d| d["version"] = 2.into())),
            ("empty zone", edit(&|d| d["zone"] = "".into())),
            ("unknown field", edit(&|d| d["extra"] = true.into())),
            (
                "duplicate key",
                edit(&|d| {
                    let k = key0(d);
                    d["keys"].as_array_mut().expect("array").push(k);
                }),
            ),
            (
                "duplicate name",
                edit(&|d| d["keys"][1]["name"] = d["keys"][0]["name"].clone()),
            ),
            (
                "two defaults",
                edit(&|d| {
                    for k in d["keys"].as_array_mut().expect("array") {
                        k["default-key"] = true.into();
                    }
                }),
            ),
            (
                "no versions",
                edit(&|d| d["keys"][0]["versions"] = Value::Array(vec![])),
            ),
            (
                "version gap",
                edit(&|d| d["keys"][0]["versions"][0]["version"] = 2.into()),
            ),
            (
                "short material",
                edit(&|d| d["keys"][0]["versions"][0]["material"] = "AAAA".into()),
            ),
            (
                "material not base64",
                edit(&|d| d["keys"][0]["versions"][0]["material"] = "!!".into()),
            ),
            (
                "bad time",
                edit(&|d| d["keys"][0]["created-at"] = "yesterday".into()),
            ),
            (
                "bad status",
                edit(&|d| d["keys"][0]["status"] = "lost".into()),
            ),
            (
                "seq 0",
                edit(&|d| d["keys"][0]["revision"]["seq"] = 0.into()),
            ),
            (
                "period 1",
                edit(&|d| d["keys"][0]["rotation"]["rotation-period"] = 1.into()),
            ),
            (
                "11 manual",
                edit(&|d| d["keys"][0]["rotation"]["manual-count"] = 11.into()),
            ),
            (
                "pending without date",
                edit(&|d| {
                    for k in d["keys"].as_array_mut().expect("array") {
                        k["delete-at"] = Value::Null;
                        k["status"] = "pending-deletion".into();
                    }
                }),
            ),
        ];
        for (name, bytes) in cases {
            let result = Keyring::from_persisted(&bytes);
            assert!(
                matches!(
                    result,
                    Err(KmsError::Keystore(KeystoreError::Invalid { .. }))
                ),
                "{name}"
            );
        }
        let bytes = ring.to_persisted().expect("serializes");
        let bytes = bytes.expose_secret();
        for len in (0..bytes.len()).step_by(13) {
            assert!(
                Keyring::from_persisted(&bytes[..len]).is_err(),
                "prefix of {len} bytes"
            );
        }
    }

    #[test]
    fn debug_never_prints_material() {
        let (ring, rotated) = sample();
        let shown = format!("{ring:?} {:?}", ring.keys.get(&rotated));
        assert!(shown.contains("[redacted]"));
        for version in [1, 2] {
            let material = ring.material_for_test(rotated, version).expect("present");
            let raw = material.expose_secret();
            let decimal = format!("{raw:?}");
            let hex = hex::encode(raw);
            let base64 = BASE64.encode(raw);
            for needle in [&decimal[1..20], &hex[..16], &base64[..16]] {
                assert!(!shown.contains(needle), "material version {version} leaked");
            }
            let persisted = ring.to_persisted().expect("serializes");
            assert!(String::from_utf8_lossy(persisted.expose_secret()).contains(&base64));
        }
    }
}
