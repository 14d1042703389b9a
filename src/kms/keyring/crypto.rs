//! The cryptographic operations of a keyring: `encrypt`, `decrypt`, `generate-data-key` and
//! `re-encrypt`, all through the blob format of [`crate::kms::blob`]. Every one needs an enabled
//! key; a failed authentication of any kind is the one opaque [`KmsError::InvalidCiphertext`].

use super::{DATA_KEY_BYTES, KeyRecord, Keyring, MAX_PLAINTEXT_LEN, bad_request, refused};
use crate::crypto::{AeadKey, SecretBytes, fill_random};
use crate::kms::wire::KeyStatus;
use crate::kms::{DataKey, DataKeySpec, KmsError, Refusal, blob};
use time::OffsetDateTime;
use uuid::Uuid;

impl KeyRecord {
    /// Cryptography needs an enabled key.
    fn usable(&self) -> Result<&Self, KmsError> {
        match self.status {
            KeyStatus::Enabled => Ok(self),
            KeyStatus::Disabled => self.refuse_disabled().map(|()| self),
            KeyStatus::PendingDeletion => Err(refused(
                Refusal::KeyDisabled,
                format!(
                    "key {} is pending deletion and serves no cryptography",
                    self.id
                ),
            )),
        }
    }

    fn seal(&self, plaintext: &[u8], context: Option<&[u8]>) -> Vec<u8> {
        let newest = self.newest();
        blob::seal(
            &AeadKey::new(&newest.key),
            self.id,
            newest.version,
            plaintext,
            context,
        )
    }

    fn open(&self, ciphertext: &[u8], context: Option<&[u8]>) -> Result<SecretBytes, KmsError> {
        let header = blob::BlobHeader::parse(ciphertext).ok_or(KmsError::InvalidCiphertext)?;
        if header.key_id != self.id {
            return Err(KmsError::InvalidCiphertext);
        }
        let material = self
            .versions
            .iter()
            .find(|v| v.version == header.version)
            .ok_or(KmsError::InvalidCiphertext)?;
        blob::open(&AeadKey::new(&material.key), ciphertext, context)
            .map_err(|_| KmsError::InvalidCiphertext)
    }
}

impl Keyring {
    /// `encrypt`: seals at most 4096 bytes under the key's newest material.
    ///
    /// # Errors
    /// "Key Not Found", "Bad Request" (too long), "Key is Disabled" (also when pending deletion).
    pub fn encrypt(
        &self,
        id: Uuid,
        plaintext: &[u8],
        context: Option<&[u8]>,
        now: OffsetDateTime,
    ) -> Result<Vec<u8>, KmsError> {
        let key = self.record(id, now)?;
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(bad_request(format!(
                "`plaintext` is {} bytes; at most {MAX_PLAINTEXT_LEN} may be encrypted",
                plaintext.len()
            )));
        }
        Ok(key.usable()?.seal(plaintext, context))
    }

    /// `decrypt`: opens a blob made under any material version of the key.
    ///
    /// # Errors
    /// "Key Not Found", "Key is Disabled"; [`KmsError::InvalidCiphertext`] for a blob of another
    /// key, another context, an unknown version, or altered or truncated bytes.
    pub fn decrypt(
        &self,
        id: Uuid,
        ciphertext: &[u8],
        context: Option<&[u8]>,
        now: OffsetDateTime,
    ) -> Result<SecretBytes, KmsError> {
        self.record(id, now)?.usable()?.open(ciphertext, context)
    }

    /// `generate-data-key`: fresh random bytes, and the same sealed under the newest material.
    ///
    /// # Errors
    /// "Key Not Found", "Bad Request" (`bytes-count` outside 1–1024), "Key is Disabled".
    pub fn generate_data_key(
        &self,
        id: Uuid,
        spec: DataKeySpec,
        context: Option<&[u8]>,
        now: OffsetDateTime,
    ) -> Result<DataKey, KmsError> {
        let key = self.record(id, now)?;
        let len = match spec {
            DataKeySpec::Aes256 => 32,
            DataKeySpec::Bytes(n) if DATA_KEY_BYTES.contains(&n) => n,
            DataKeySpec::Bytes(n) => {
                return Err(bad_request(format!(
                    "`bytes-count` must be {} to {}, not {n}",
                    DATA_KEY_BYTES.start(),
                    DATA_KEY_BYTES.end()
                )));
            }
        };
        let key = key.usable()?;
        let mut bytes = vec![0u8; len as usize];
        fill_random(&mut bytes);
        let plaintext = SecretBytes::new(bytes);
        let ciphertext = key.seal(plaintext.expose_secret(), context);
        Ok(DataKey {
            plaintext,
            ciphertext,
        })
    }

    /// `re-encrypt`: opens under `source` and its context, seals under the newest material of
    /// `destination` and its context. The plaintext stays inside and is zeroized.
    ///
    /// # Errors
    /// "Key Not Found" or "Key is Disabled" for either key; [`KmsError::InvalidCiphertext`].
    pub fn re_encrypt(
        &self,
        source: Uuid,
        ciphertext: &[u8],
        source_context: Option<&[u8]>,
        destination: Uuid,
        destination_context: Option<&[u8]>,
        now: OffsetDateTime,
    ) -> Result<Vec<u8>, KmsError> {
        let source = self.record(source, now)?;
        let destination = self.record(destination, now)?;
        let plaintext = source.usable()?.open(ciphertext, source_context)?;
        Ok(destination
            .usable()?
            .seal(plaintext.expose_secret(), destination_context))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::wire::CreateKeyRequest;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

    fn ring_with(names: &[&str]) -> (Keyring, Vec<Uuid>) {
        let mut ring = Keyring::new("ch-gva-2");
        let ids = names
            .iter()
            .map(|name| {
                let request = CreateKeyRequest {
                    name: name.to_string(),
                    description: None,
                    usage: None,
                    multi_zone: false,
                };
                ring.create_key(&request, T0).expect("creates").id
            })
            .collect();
        (ring, ids)
    }

    fn invalid<T: std::fmt::Debug>(result: Result<T, KmsError>) -> bool {
        matches!(result, Err(KmsError::InvalidCiphertext))
    }

    #[test]
    fn encrypt_decrypt_round_trips_with_and_without_context() {
        let (ring, ids) = ring_with(&["a"]);
        for (plain, context) in [
            (&b""[..], None),
            (&b"x"[..], Some(&b"ctx"[..])),
            (&[9u8; MAX_PLAINTEXT_LEN][..], Some(&b""[..])),
        ] {
            let blob = ring.encrypt(ids[0], plain, context, T0).expect("encrypts");
            let got = ring.decrypt(ids[0], &blob, context, T0).expect("decrypts");
            assert_eq!(got.expose_secret(), plain);
        }
        let blob = ring.encrypt(ids[0], b"x", None, T0).expect("encrypts");
        assert!(
            ring.decrypt(ids[0], &blob, Some(b""), T0).is_ok(),
            "absent = empty context"
        );
    }

    #[test]
    fn decrypt_fails_opaquely_for_every_wrong_input() {
        let (ring, ids) = ring_with(&["a", "b"]);
        let (a, b) = (ids[0], ids[1]);
        let blob = ring
            .encrypt(a, b"secret", Some(b"ctx"), T0)
            .expect("encrypts");
        let other = ring
            .encrypt(b, b"secret", Some(b"ctx"), T0)
            .expect("encrypts");
        let mut relabeled = other.clone();
        relabeled[1..17].copy_from_slice(a.as_bytes());
        let mut version_9 = blob.clone();
        version_9[20] = 9;
        let mut format_2 = blob.clone();
        format_2[0] = 2;
        type Case<'a> = (&'a str, Uuid, Vec<u8>, Option<&'a [u8]>);
        let cases: Vec<Case> = vec![
            ("wrong context", a, blob.clone(), Some(b"ctX")),
            ("missing context", a, blob.clone(), None),
            ("other key's blob", a, other.clone(), Some(b"ctx")),
            ("blob asked of the other key", b, blob.clone(), Some(b"ctx")),
            ("other key's blob relabeled", a, relabeled, Some(b"ctx")),
            ("unknown material version", a, version_9, Some(b"ctx")),
            ("unknown format", a, format_2, Some(b"ctx")),
            (
                "truncated",
                a,
                blob[..blob.len() - 1].to_vec(),
                Some(b"ctx"),
            ),
            (
                "header only",
                a,
                blob[..blob::HEADER_LEN].to_vec(),
                Some(b"ctx"),
            ),
            ("empty", a, Vec::new(), Some(b"ctx")),
            ("extended", a, [&blob[..], &[0]].concat(), Some(b"ctx")),
        ];
        for (name, id, bytes, context) in cases {
            assert!(invalid(ring.decrypt(id, &bytes, context, T0)), "{name}");
        }
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x80;
            assert!(
                invalid(ring.decrypt(a, &bad, Some(b"ctx"), T0)),
                "byte {i} flipped"
            );
        }
    }

    #[test]
    fn data_keys_have_the_asked_size_and_unwrap_with_their_context() {
        let (ring, ids) = ring_with(&["a"]);
        for (spec, len) in [
            (DataKeySpec::Aes256, 32),
            (DataKeySpec::Bytes(1), 1),
            (DataKeySpec::Bytes(1024), 1024),
        ] {
            let key = ring
                .generate_data_key(ids[0], spec, Some(b"file"), T0)
                .expect("generates");
            assert_eq!(key.plaintext.len(), len);
            assert_eq!(key.ciphertext.len(), len + blob::OVERHEAD);
            let unwrapped = ring
                .decrypt(ids[0], &key.ciphertext, Some(b"file"), T0)
                .expect("unwraps");
            assert_eq!(unwrapped.expose_secret(), key.plaintext.expose_secret());
            assert!(invalid(ring.decrypt(ids[0], &key.ciphertext, None, T0)));
        }
        let one = ring
            .generate_data_key(ids[0], DataKeySpec::Aes256, None, T0)
            .expect("generates");
        let two = ring
            .generate_data_key(ids[0], DataKeySpec::Aes256, None, T0)
            .expect("generates");
        assert_ne!(one.plaintext.expose_secret(), two.plaintext.expose_secret());
        assert!(!format!("{one:?}").contains(&format!("{:?}", one.plaintext.expose_secret())));
    }

    #[test]
    fn re_encrypt_moves_a_blob_to_the_newest_destination_material() {
        let (mut ring, ids) = ring_with(&["a", "b"]);
        let (a, b) = (ids[0], ids[1]);
        let old = ring
            .encrypt(a, b"payload", Some(b"src"), T0)
            .expect("encrypts");
        ring.rotate_key(a, T0).expect("rotates");
        ring.rotate_key(b, T0).expect("rotates");
        let moved = ring
            .re_encrypt(a, &old, Some(b"src"), b, Some(b"dst"), T0)
            .expect("moves");
        assert_eq!(blob::blob_key_version(&moved), Some((b, 2)));
        let got = ring.decrypt(b, &moved, Some(b"dst"), T0).expect("decrypts");
        assert_eq!(got.expose_secret(), b"payload");
        assert!(invalid(ring.decrypt(b, &moved, Some(b"src"), T0)));
        let rewrapped = ring
            .re_encrypt(a, &old, Some(b"src"), a, Some(b"src"), T0)
            .expect("rewraps");
        assert_eq!(blob::blob_key_version(&rewrapped), Some((a, 2)));
        let wrong_context = ring.re_encrypt(a, &old, Some(b"dst"), b, Some(b"dst"), T0);
        assert!(invalid(wrong_context));
        assert!(
            invalid(ring.re_encrypt(b, &old, Some(b"src"), b, None, T0)),
            "source key mismatch"
        );
    }
}
