//! AES-256-GCM behind a small interface of our own (ring underneath: the fastest measured here).

use super::Key256;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

/// Length of an AES-GCM nonce.
pub const NONCE_LEN: usize = 12;
/// Length of an AES-GCM tag.
pub const TAG_LEN: usize = 16;

/// Authentication failed: the ciphertext, the nonce, the AAD or the key is not the one sealed.
/// Deliberately opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed")]
pub struct AuthError;

/// An AES-256-GCM key, expanded once and reused (building one costs ~200 ns).
pub struct AeadKey(LessSafeKey);

impl std::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AeadKey([redacted])")
    }
}

impl AeadKey {
    /// Expands `key` for AES-256-GCM.
    pub fn new(key: &Key256) -> Self {
        let unbound = UnboundKey::new(&AES_256_GCM, key.expose_secret())
            .expect("BUG: a 32-byte key is always a valid AES-256 key");
        AeadKey(LessSafeKey::new(unbound))
    }

    /// Encrypts `in_out` in place and returns the tag.
    pub fn seal_detached(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> [u8; TAG_LEN] {
        let tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), in_out)
            .expect("BUG: AES-GCM sealing fails only for inputs beyond 64 GiB");
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Decrypts `in_out` (ciphertext followed by the tag) in place; returns the plaintext part.
    pub fn open_in_place<'a>(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        in_out: &'a mut [u8],
    ) -> Result<&'a mut [u8], AuthError> {
        self.0
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), in_out)
            .map_err(|_| AuthError)
    }

    /// Decrypts `in_out[src..]` (ciphertext followed by the tag) and writes the plaintext to the
    /// front of `in_out`, moving it `src` bytes down in the same pass; returns its length.
    pub fn open_within(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        src: usize,
    ) -> Result<usize, AuthError> {
        self.0
            .open_within(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                in_out,
                src..,
            )
            .map(|plain| plain.len())
            .map_err(|_| AuthError)
    }

    /// Seals `plaintext` as `nonce || ciphertext || tag` with a fresh random nonce.
    pub fn seal_to_vec(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = super::random_array();
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self.seal_detached(nonce, aad, &mut out[NONCE_LEN..]);
        out.extend_from_slice(&tag);
        out
    }

    /// Opens a `nonce || ciphertext || tag` value made by [`AeadKey::seal_to_vec`].
    pub fn open_to_vec(&self, aad: &[u8], sealed: &[u8]) -> Result<super::SecretBytes, AuthError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(AuthError);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[..NONCE_LEN]);
        let mut buf = sealed[NONCE_LEN..].to_vec();
        let plain_len = self.open_in_place(nonce, aad, &mut buf)?.len();
        buf.truncate(plain_len);
        Ok(super::SecretBytes::new(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let key = AeadKey::new(&Key256::random());
        let sealed = key.seal_to_vec(b"aad", b"hello");
        assert_eq!(
            key.open_to_vec(b"aad", &sealed)
                .expect("opens")
                .expose_secret(),
            b"hello"
        );
        assert_eq!(key.open_to_vec(b"other", &sealed).unwrap_err(), AuthError);
        let mut flipped = sealed.clone();
        flipped[NONCE_LEN] ^= 1;
        assert!(key.open_to_vec(b"aad", &flipped).is_err());
        assert!(key.open_to_vec(b"aad", &sealed[..10]).is_err());
        let other = AeadKey::new(&Key256::random());
        assert!(other.open_to_vec(b"aad", &sealed).is_err());
    }
}
