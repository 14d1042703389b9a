//! AES-256-SIV (RFC 5297, CMAC-based) behind a small interface of our own: deterministic
//! authenticated encryption, for file names whose cipher form must be the same every time.
//!
//! The `aes-siv` crate needs `&mut self` to encrypt, so a cipher is built per call from the key
//! (two AES key expansions, well under a microsecond); a [`SivKey`] can then be shared between
//! threads without a lock.

use super::AuthError;
use aes_siv::KeyInit;
use aes_siv::siv::Aes256Siv;
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of an AES-256-SIV key: the CMAC key (first 32 bytes), then the CTR key.
pub const SIV_KEY_LEN: usize = 64;
/// Length of the synthetic IV, which is also the authentication tag, in front of the ciphertext.
pub const SIV_TAG_LEN: usize = 16;

/// A 512-bit AES-256-SIV key, zeroized on drop, `[redacted]` in `Debug`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SivKey([u8; SIV_KEY_LEN]);

impl fmt::Debug for SivKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SivKey([redacted])")
    }
}

impl SivKey {
    /// Derives a key from `ikm` with HKDF-SHA256 (`salt` may be empty: HKDF's default salt).
    pub fn derive(ikm: &[u8], salt: &[u8], info: &[u8]) -> Self {
        let mut key = SivKey([0u8; SIV_KEY_LEN]);
        super::hkdf_sha256_fill(ikm, salt, info, &mut key.0);
        key
    }

    /// The raw key bytes. Every caller is a place where the secret leaves its box.
    pub fn expose_secret(&self) -> &[u8; SIV_KEY_LEN] {
        &self.0
    }

    fn cipher(&self) -> Aes256Siv {
        Aes256Siv::new(&self.0.into())
    }

    /// Encrypts `plain` under the associated data components `ad` (each authenticated as a
    /// separate string, so no two different lists collide) and appends `tag || ciphertext`,
    /// `plain.len() + 16` bytes, to `out`. The same key, `ad` and `plain` always give the same
    /// bytes: put a random nonce in `ad` where equal plaintexts must not show.
    pub fn seal_append(&self, ad: &[&[u8]], plain: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0u8; SIV_TAG_LEN]);
        out.extend_from_slice(plain);
        let tag = self
            .cipher()
            .encrypt_inout_detached(ad, (&mut out[start + SIV_TAG_LEN..]).into())
            .expect("BUG: AES-SIV fails only with more than 126 associated data components");
        out[start..start + SIV_TAG_LEN].copy_from_slice(&tag);
    }

    /// Checks and decrypts `sealed` (`tag || ciphertext`) under the associated data components
    /// `ad`; returns the plaintext.
    ///
    /// # Errors
    ///
    /// [`AuthError`] when `sealed` is shorter than the tag or does not authenticate under this
    /// key and exactly these components, in this order.
    pub fn open(&self, ad: &[&[u8]], sealed: &[u8]) -> Result<Vec<u8>, AuthError> {
        self.cipher().decrypt(ad, sealed).map_err(|_| AuthError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SivKey {
        SivKey([byte; SIV_KEY_LEN])
    }

    fn seal(key: &SivKey, ad: &[&[u8]], plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        key.seal_append(ad, plain, &mut out);
        out
    }

    /// Known-answer vectors computed by another implementation are in
    /// `testdata/format-v2-vectors.json` (checked by `format::names`); here, the shape.
    #[test]
    fn deterministic_and_round_trips() {
        let k = key(7);
        let a = seal(&k, &[b"one", b"two"], b"plain");
        assert_eq!(a, seal(&k, &[b"one", b"two"], b"plain"));
        assert_eq!(a.len(), 5 + SIV_TAG_LEN);
        assert_eq!(k.open(&[b"one", b"two"], &a).as_deref(), Ok(&b"plain"[..]));
        assert_eq!(
            k.open(&[b"one", b"two"], &seal(&k, &[b"one", b"two"], b"")),
            Ok(vec![])
        );
    }

    #[test]
    fn components_are_not_concatenated() {
        let k = key(7);
        let a = seal(&k, &[b"ab", b"c"], b"plain");
        assert_ne!(a, seal(&k, &[b"a", b"bc"], b"plain"));
        assert_eq!(k.open(&[b"a", b"bc"], &a), Err(AuthError));
        assert_eq!(k.open(&[b"abc"], &a), Err(AuthError));
        assert_eq!(k.open(&[b"c", b"ab"], &a), Err(AuthError));
    }

    #[test]
    fn wrong_key_short_input_and_flipped_bits_fail() {
        let k = key(7);
        let a = seal(&k, &[b"ad"], b"plain");
        assert_eq!(key(8).open(&[b"ad"], &a), Err(AuthError));
        assert_eq!(k.open(&[b"ad"], &a[..SIV_TAG_LEN - 1]), Err(AuthError));
        assert_eq!(k.open(&[b"ad"], &[]), Err(AuthError));
        for i in 0..a.len() {
            let mut bad = a.clone();
            bad[i] ^= 0x01;
            assert_eq!(k.open(&[b"ad"], &bad), Err(AuthError), "bit flip at {i}");
        }
    }

    #[test]
    fn debug_is_redacted() {
        assert_eq!(format!("{:?}", key(0x41)), "SivKey([redacted])");
    }
}
