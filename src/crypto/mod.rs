//! Key types that zeroize and never print, the AEAD and key derivation used by every other room,
//! and randomness.
//!
//! Nothing outside this room names `ring` or `aes-siv`: the rest of the code sees [`Key256`],
//! [`SecretBytes`], [`AeadKey`], [`SivKey`] and a handful of functions.

mod aead;
mod secret;
mod siv;

pub use aead::{AeadKey, AuthError, NONCE_LEN, TAG_LEN};
pub use secret::{Key256, SecretBytes};
pub use siv::{SIV_KEY_LEN, SIV_TAG_LEN, SivKey};

use ring::{hkdf, hmac};

/// Fills `buf` with bytes from a userspace CSPRNG seeded by the operating system
/// (`rand::rng()`); cheap enough to call per block for nonces.
pub fn fill_random(buf: &mut [u8]) {
    use rand::RngCore;
    rand::rng().fill_bytes(buf);
}

/// An array of `N` random bytes.
pub fn random_array<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    fill_random(&mut out);
    out
}

/// Derives a 256-bit key from `ikm` with HKDF-SHA256.
pub fn hkdf_sha256(ikm: &[u8], salt: &[u8], info: &[u8]) -> Key256 {
    let mut out = Key256::zero();
    hkdf_sha256_fill(ikm, salt, info, out.expose_secret_mut());
    out
}

/// Fills `out` (at most 8160 bytes) with HKDF-SHA256 output keying material from `ikm`. An empty
/// `salt` is HKDF's default: 32 zero bytes give the same result.
fn hkdf_sha256_fill(ikm: &[u8], salt: &[u8], info: &[u8], out: &mut [u8]) {
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    let info = [info];
    prk.expand(&info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .expect("BUG: HKDF-SHA256 output in this crate stays far below its 8160-byte limit");
}

/// HMAC-SHA256 of `msg` under `key`.
pub fn hmac_sha256(key: &[u8], msg: &[&[u8]]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    for part in msg {
        ctx.update(part);
    }
    let tag = ctx.sign();
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keep the compiler from short-circuiting the fold.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hkdf_is_deterministic_and_separates_info() {
        let a = hkdf_sha256(b"ikm", b"salt", b"one");
        let b = hkdf_sha256(b"ikm", b"salt", b"one");
        let c = hkdf_sha256(b"ikm", b"salt", b"two");
        assert_eq!(a.expose_secret(), b.expose_secret());
        assert_ne!(a.expose_secret(), c.expose_secret());
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn random_arrays_differ() {
        assert_ne!(random_array::<16>(), random_array::<16>());
    }
}
