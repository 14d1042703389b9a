//! Zone peers: the other zones' servers this one replicates with, and every key derived from the
//! peer secret they share.
//!
//! All derivations are HKDF-SHA256 with ikm = the peer secret file's bytes (trailing whitespace
//! removed), salt = `"kmsfs-peer-v1"`, and info = a label followed by length-prefixed parts
//! (`u32` big-endian length, bytes):
//!
//! | label | parts | use |
//! |---|---|---|
//! | `kmsfs-peer-auth-v1` | source zone | HMAC key of EXO2-HMAC-SHA256, credential `peer:ZONE` |
//! | `kmsfs-peer-transport-v1` | — | AES-256-GCM key of key records between zones |
//! | `kmsfs-default-key-id-v1` | org id (16 bytes) | Default Organization Key id (UUID v4 bits) |
//! | `kmsfs-default-key-seed-v1` | org id (16 bytes) | seed of its material versions |
//!
//! A key record travels as `nonce || ciphertext || tag` under the transport key, with AAD
//! `"kmsfs-peer-replica-v1"` followed by the length-prefixed source zone, target zone, org id,
//! key id and the 8-byte big-endian watermark: a record sealed for one zone, organization, key
//! or revision opens nowhere else.

use super::ServerError;
use crate::crypto::{AeadKey, AuthError, Key256, SecretBytes, hkdf_sha256};
use crate::kms::keyring::Keyring;
use crate::kms::sign::Credentials;
use crate::kms::wire::Applied;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use uuid::Uuid;

/// The path of the internal replication route, under `/v2`.
pub const REPLICA_PATH: &str = "/_peer/replica";
/// The credential prefix of peer requests (`peer:ZONE`).
pub const PEER_CREDENTIAL_PREFIX: &str = "peer:";
/// The shortest peer secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

const SALT: &[u8] = b"kmsfs-peer-v1";

fn info(label: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut out = label.to_vec();
    for part in parts {
        let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// The secret every zone server of a deployment shares. Never printed.
pub struct PeerSecret(SecretBytes);

impl std::fmt::Debug for PeerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerSecret([redacted])")
    }
}

impl PeerSecret {
    /// The secret from the bytes of a peer secret file (trailing whitespace removed).
    ///
    /// # Errors
    /// [`ServerError::Invalid`] when it is shorter than [`MIN_SECRET_LEN`] bytes.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Self, ServerError> {
        let end = bytes
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        if end < MIN_SECRET_LEN {
            return Err(ServerError::Invalid(format!(
                "the peer secret must hold at least {MIN_SECRET_LEN} bytes"
            )));
        }
        Ok(PeerSecret(SecretBytes::new(bytes[..end].to_vec())))
    }

    fn derive(&self, label: &[u8], parts: &[&[u8]]) -> Key256 {
        hkdf_sha256(self.0.expose_secret(), SALT, &info(label, parts))
    }

    /// The credential a server of `zone` signs its peer requests with.
    pub(crate) fn credentials(&self, zone: &str) -> Credentials {
        let key = self.derive(b"kmsfs-peer-auth-v1", &[zone.as_bytes()]);
        Credentials {
            key: format!("{PEER_CREDENTIAL_PREFIX}{zone}"),
            secret: SecretBytes::new(key.expose_secret().to_vec()),
        }
    }

    /// The Default Organization Key's id for organization `org`.
    pub(crate) fn default_key_id(&self, org: Uuid) -> Uuid {
        let key = self.derive(b"kmsfs-default-key-id-v1", &[org.as_bytes()]);
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&key.expose_secret()[..16]);
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }

    /// The seed of the Default Organization Key's material for organization `org`.
    pub(crate) fn default_key_seed(&self, org: Uuid) -> Key256 {
        self.derive(b"kmsfs-default-key-seed-v1", &[org.as_bytes()])
    }

    fn transport(&self) -> AeadKey {
        AeadKey::new(&self.derive(b"kmsfs-peer-transport-v1", &[]))
    }

    /// Seals key record bytes for the trip `route`.
    pub(crate) fn seal_record(&self, route: &RecordRoute<'_>, plain: &[u8]) -> Vec<u8> {
        self.transport().seal_to_vec(&route.aad(), plain)
    }

    /// Opens what [`PeerSecret::seal_record`] sealed for exactly `route`.
    pub(crate) fn open_record(
        &self,
        route: &RecordRoute<'_>,
        sealed: &[u8],
    ) -> Result<SecretBytes, AuthError> {
        self.transport().open_to_vec(&route.aad(), sealed)
    }
}

/// Where a sealed key record goes, and what it is: bound into its AAD.
pub(crate) struct RecordRoute<'a> {
    /// The primary's zone.
    pub(crate) source: &'a str,
    /// The replica's zone.
    pub(crate) target: &'a str,
    /// The organization.
    pub(crate) org: Uuid,
    /// The key.
    pub(crate) key: Uuid,
    /// The primary's revision seq the record carries.
    pub(crate) watermark: u64,
}

impl RecordRoute<'_> {
    fn aad(&self) -> Vec<u8> {
        info(
            b"kmsfs-peer-replica-v1",
            &[
                self.source.as_bytes(),
                self.target.as_bytes(),
                self.org.as_bytes(),
                self.key.as_bytes(),
                &self.watermark.to_be_bytes(),
            ],
        )
    }
}

/// The zones this server replicates with, and the secret they share.
pub(crate) struct Peers {
    /// This server's zone.
    pub(crate) own_zone: String,
    /// Zone → base URL ending in `/v2`.
    pub(crate) urls: BTreeMap<String, String>,
    /// The shared secret.
    pub(crate) secret: std::sync::Arc<PeerSecret>,
}

impl Peers {
    /// The configured peer zones.
    pub(crate) fn zones(&self) -> Vec<String> {
        self.urls.keys().cloned().collect()
    }
}

/// Body of a push of a key record to a replica zone.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct PushRequest {
    /// The organization.
    pub(crate) org: Uuid,
    /// The primary's zone.
    pub(crate) source_zone: String,
    /// The replica's zone.
    pub(crate) target_zone: String,
    /// The key.
    pub(crate) key: Uuid,
    /// The primary's revision seq the record carries.
    pub(crate) watermark: u64,
    /// The sealed record, base64.
    pub(crate) sealed: String,
}

/// Answer to a [`PushRequest`].
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct PushResponse {
    /// `success` or `already-applied`.
    pub(crate) status: Applied,
    /// The primary revision seq the replica now holds.
    pub(crate) applied_watermark: u64,
}

/// Gives an organization its Default Organization Key, if it has none. With a peer secret,
/// its id and material are derived from the secret and the org id, its schedule starts at the
/// organization's creation time (see the module doc and
/// [`crate::kms::keyring::Keyring::ensure_derived_default_key`]), so every zone computes the
/// same key on its own (an org without `created-at` starts the schedule `now`). Without a peer
/// secret, a random key, as before. Returns true when it created the key.
pub(crate) fn ensure_default_key(
    keyring: &mut Keyring,
    org: Uuid,
    created_at: Option<OffsetDateTime>,
    peer: Option<&PeerSecret>,
    now: OffsetDateTime,
) -> bool {
    let had = keyring.default_key_id().is_some();
    match peer {
        Some(peer) => {
            let start = created_at.filter(|at| *at <= now).unwrap_or(now);
            let id = peer.default_key_id(org);
            if !had && created_at.is_none() {
                tracing::warn!(
                    org = %org,
                    "the organization has no creation time; the default key's schedule starts now"
                );
            }
            let got =
                keyring.ensure_derived_default_key(id, peer.default_key_seed(org), start, now);
            if got != id {
                tracing::warn!(org = %org, key = %got, "the Default Organization Key predates the peer secret; it stays local to this zone");
            }
        }
        None => {
            keyring.ensure_default_key(now);
        }
    }
    !had
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> PeerSecret {
        PeerSecret::from_file_bytes(text.as_bytes()).expect("long enough")
    }

    fn route<'a>(target: &'a str, watermark: u64) -> RecordRoute<'a> {
        RecordRoute {
            source: "ch-gva-2",
            target,
            org: Uuid::from_u128(1),
            key: Uuid::from_u128(2),
            watermark,
        }
    }

    #[test]
    fn records_open_only_on_their_route_under_the_same_secret() {
        let s = secret("0123456789abcdef-shared\n");
        let sealed = s.seal_record(&route("de-fra-1", 3), b"record");
        let plain = s
            .open_record(&route("de-fra-1", 3), &sealed)
            .expect("opens");
        assert_eq!(plain.expose_secret(), b"record");
        assert!(s.open_record(&route("at-vie-1", 3), &sealed).is_err());
        assert!(s.open_record(&route("de-fra-1", 4), &sealed).is_err());
        let other = secret("another secret of 16+ bytes");
        assert!(other.open_record(&route("de-fra-1", 3), &sealed).is_err());
    }

    #[test]
    fn derivations_are_stable_and_separated() {
        let a = secret("0123456789abcdef-shared\n");
        let b = secret("0123456789abcdef-shared");
        let org = Uuid::from_u128(5);
        assert_eq!(a.default_key_id(org), b.default_key_id(org));
        assert_eq!(a.default_key_id(org).get_version_num(), 4);
        assert_ne!(a.default_key_id(org), a.default_key_id(Uuid::from_u128(6)));
        assert_eq!(
            a.default_key_seed(org).expose_secret(),
            b.default_key_seed(org).expose_secret()
        );
        let ga = a.credentials("ch-gva-2");
        let fr = a.credentials("de-fra-1");
        assert_eq!(ga.key, "peer:ch-gva-2");
        assert_ne!(ga.secret.expose_secret(), fr.secret.expose_secret());
        assert!(PeerSecret::from_file_bytes(b"short\n\n").is_err());
        assert!(!format!("{a:?}").contains("0123"));
    }
}
