//! Organizations: their credentials, and the sealed state file each one has.
//!
//! `DIR/orgs/ORG-UUID.org` is one JSON object:
//! `{"format":"kmsfs-server-org","version":1,"org":"UUID","sealed":"BASE64"}`, where `sealed`
//! is `nonce || AES-256-GCM ciphertext || tag` under the root key with AAD
//! `"kmsfs-server-org-v1" || the org's 16 UUID bytes` (so a file renamed to another org does
//! not open), and the plaintext is `u32 big-endian length || meta JSON || keyring JSON`:
//! meta = `{"name":..,"credentials":[{"api-key":..,"api-secret":..}],"created-at":..}`
//! (`created-at` is absent in files made before multi-zone); the keyring part is empty until a
//! server of some zone first loads the organization.

use super::ServerError;
use super::root::RootKey;
use crate::crypto::{SecretBytes, fill_random};
use crate::kms::keyring::Keyring;
use crate::kms::sign::Credentials;
use crate::kms::{KeystoreError, KmsError};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;
use uuid::Uuid;
use zeroize::Zeroizing;

const FORMAT: &str = "kmsfs-server-org";
const AAD_PREFIX: &[u8] = b"kmsfs-server-org-v1";
/// An org file larger than this is not one of ours.
const MAX_FILE_LEN: u64 = 64 << 20;

/// A new organization's identity and its first credential, as `kmsfs kms org create` prints it
/// and `kmsfs kms org import` reads it. Holds the API secret: print it once, never log it.
pub struct OrgCredentials {
    /// The organization id.
    pub org: Uuid,
    /// The organization's display name.
    pub name: String,
    /// The API key and its secret.
    pub credentials: Credentials,
    /// When the organization was created; the same in every zone it is imported in, it starts
    /// the schedule of the derived Default Organization Key. `None` for JSON made before
    /// multi-zone.
    pub created_at: Option<OffsetDateTime>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsJson {
    org: Uuid,
    name: String,
    #[serde(rename = "api-key")]
    api_key: String,
    #[serde(rename = "api-secret")]
    api_secret: String,
    #[serde(
        rename = "created-at",
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    created_at: Option<OffsetDateTime>,
}

impl OrgCredentials {
    /// A new organization named `name` with a fresh API key (`EXO` + 24 hex digits) and secret
    /// (32 random bytes, base64url; the HMAC key is the secret's text), created `now`.
    pub fn generate(name: &str, now: OffsetDateTime) -> Self {
        let mut id = [0u8; 12];
        fill_random(&mut id);
        let key = hex::encode(id);
        let mut raw = Zeroizing::new([0u8; 32]);
        fill_random(raw.as_mut());
        let secret = URL_SAFE_NO_PAD.encode(raw.as_ref());
        OrgCredentials {
            org: Uuid::new_v4(),
            name: name.to_string(),
            credentials: Credentials {
                key: format!("EXO{key}"),
                secret: SecretBytes::new(secret.into_bytes()),
            },
            created_at: Some(now.replace_nanosecond(0).unwrap_or(now)),
        }
    }

    /// The JSON `{"org","name","api-key","api-secret","created-at"}`. The text holds the
    /// secret.
    pub fn to_json(&self) -> Zeroizing<String> {
        let json = CredentialsJson {
            org: self.org,
            name: self.name.clone(),
            api_key: self.credentials.key.clone(),
            api_secret: String::from_utf8_lossy(self.credentials.secret.expose_secret())
                .into_owned(),
            created_at: self.created_at,
        };
        let text = serde_json::to_string(&json).expect("BUG: credentials always serialize");
        let _ = Zeroizing::new(json.api_secret);
        Zeroizing::new(text)
    }

    /// Reads what [`OrgCredentials::to_json`] wrote.
    ///
    /// # Errors
    /// [`ServerError::Invalid`] naming what is wrong.
    pub fn from_json(text: &[u8]) -> Result<Self, ServerError> {
        let json: CredentialsJson = serde_json::from_slice(text).map_err(|e| {
            ServerError::Invalid(format!("not the JSON of `kmsfs kms org create`: {e}"))
        })?;
        let secret = Zeroizing::new(json.api_secret);
        if json.name.trim().is_empty() || !valid_api_key(&json.api_key) || secret.len() < 32 {
            return Err(ServerError::Invalid(
                "the organization needs a name, an api-key like EXO + hex digits, and an \
                 api-secret of at least 32 characters"
                    .into(),
            ));
        }
        Ok(OrgCredentials {
            org: json.org,
            name: json.name,
            credentials: Credentials {
                key: json.api_key,
                secret: SecretBytes::new(secret.as_bytes().to_vec()),
            },
            created_at: json.created_at,
        })
    }
}

fn valid_api_key(key: &str) -> bool {
    key.strip_prefix("EXO").is_some_and(|rest| {
        !rest.is_empty() && rest.len() <= 64 && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrgFile {
    format: String,
    version: u32,
    org: Uuid,
    sealed: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    name: String,
    credentials: Vec<MetaCredential>,
    #[serde(
        rename = "created-at",
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    created_at: Option<OffsetDateTime>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaCredential {
    #[serde(rename = "api-key")]
    api_key: String,
    #[serde(rename = "api-secret")]
    api_secret: String,
}

/// An organization's whole persisted state.
pub(crate) struct OrgState {
    pub(crate) id: Uuid,
    pub(crate) name: String,
    pub(crate) credentials: Vec<Credentials>,
    /// When the organization was created (see [`OrgCredentials::created_at`]).
    pub(crate) created_at: Option<OffsetDateTime>,
    /// `None` until a server first loads the organization.
    pub(crate) keyring: Option<Keyring>,
}

/// The directory of the org files in data directory `dir`.
pub(crate) fn orgs_dir(dir: &Path) -> PathBuf {
    dir.join("orgs")
}

/// The org file of `org` in data directory `dir`.
pub(crate) fn org_path(dir: &Path, org: Uuid) -> PathBuf {
    orgs_dir(dir).join(format!("{org}.org"))
}

/// The org id a file name stands for (`UUID.org`), if it is one.
pub(crate) fn org_of_file_name(name: &str) -> Option<Uuid> {
    name.strip_suffix(".org")
        .and_then(|id| Uuid::parse_str(id).ok())
}

fn aad(org: Uuid) -> Vec<u8> {
    [AAD_PREFIX, org.as_bytes()].concat()
}

/// The sealed org file of organization `id`.
///
/// # Errors
/// [`KmsError::Keystore`] when the keyring cannot be serialized or the metadata is too large.
pub(crate) fn seal_org_file(
    root: &RootKey,
    id: Uuid,
    name: &str,
    credentials: &[Credentials],
    created_at: Option<OffsetDateTime>,
    keyring: Option<&Keyring>,
) -> Result<Vec<u8>, KmsError> {
    let meta = Meta {
        name: name.to_string(),
        credentials: credentials
            .iter()
            .map(|c| MetaCredential {
                api_key: c.key.clone(),
                api_secret: String::from_utf8_lossy(c.secret.expose_secret()).into_owned(),
            })
            .collect(),
        created_at,
    };
    let meta_bytes =
        Zeroizing::new(serde_json::to_vec(&meta).expect("BUG: org meta always serializes"));
    for c in meta.credentials {
        let _ = Zeroizing::new(c.api_secret);
    }
    let keyring = match keyring {
        Some(k) => k.to_persisted()?,
        None => SecretBytes::default(),
    };
    let meta_len = u32::try_from(meta_bytes.len()).map_err(|_| KeystoreError::TooLarge {
        what: "the organization metadata",
    })?;
    let mut plain = Zeroizing::new(Vec::with_capacity(4 + meta_bytes.len() + keyring.len()));
    plain.extend_from_slice(&meta_len.to_be_bytes());
    plain.extend_from_slice(&meta_bytes);
    plain.extend_from_slice(keyring.expose_secret());
    let file = OrgFile {
        format: FORMAT.into(),
        version: 1,
        org: id,
        sealed: BASE64.encode(root.seal(&aad(id), &plain)),
    };
    Ok(serde_json::to_vec(&file).expect("BUG: org files always serialize"))
}

impl OrgState {
    /// Opens the bytes of an org file (or of an org record in etcd: the same bytes), read from
    /// `path` (named in errors). All or nothing; never panics.
    pub(crate) fn open(text: &[u8], root: &RootKey, path: &Path) -> Result<Self, ServerError> {
        let damaged = |why: &str| ServerError::Damaged {
            what: "the org file",
            path: path.to_path_buf(),
            why: why.into(),
        };
        if text.len() as u64 > MAX_FILE_LEN {
            return Err(damaged("not an org file"));
        }
        let file: OrgFile =
            serde_json::from_slice(text).map_err(|_| damaged("not JSON of this shape"))?;
        if file.format != FORMAT || file.version != 1 {
            return Err(damaged("unknown format or version"));
        }
        let sealed = BASE64
            .decode(&file.sealed)
            .map_err(|_| damaged("not base64"))?;
        let plain = root
            .open(&aad(file.org), &sealed)
            .ok_or_else(|| damaged("authentication failed; another root key?"))?;
        let plain = plain.expose_secret();
        let (len, rest) = plain
            .split_at_checked(4)
            .ok_or_else(|| damaged("truncated"))?;
        let len = u32::from_be_bytes(len.try_into().expect("BUG: split at 4")) as usize;
        let (meta_bytes, keyring_bytes) = rest
            .split_at_checked(len)
            .ok_or_else(|| damaged("truncated"))?;
        let meta: Meta = serde_json::from_slice(meta_bytes).map_err(|_| damaged("metadata"))?;
        let keyring = if keyring_bytes.is_empty() {
            None
        } else {
            Some(Keyring::from_persisted(keyring_bytes).map_err(|e| damaged(&e.to_string()))?)
        };
        let credentials = meta
            .credentials
            .into_iter()
            .map(|c| Credentials {
                key: c.api_key,
                secret: SecretBytes::new(Zeroizing::new(c.api_secret).as_bytes().to_vec()),
            })
            .collect();
        Ok(OrgState {
            id: file.org,
            name: meta.name,
            credentials,
            created_at: meta.created_at,
            keyring,
        })
    }
}
