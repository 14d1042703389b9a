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
///
/// `ring` cannot zeroize its expanded key, so it lives in one heap allocation that never moves
/// and is overwritten when the key is dropped; only the copies made on the
/// stack while it is expanded are left to be overwritten by the thread's later calls.
pub struct AeadKey(Box<LessSafeKey>);

impl std::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AeadKey([redacted])")
    }
}

/// The expanded form of `key`.
fn expand(key: &[u8; 32]) -> LessSafeKey {
    let unbound = UnboundKey::new(&AES_256_GCM, key)
        .expect("BUG: a 32-byte key is always a valid AES-256 key");
    LessSafeKey::new(unbound)
}

impl Drop for AeadKey {
    /// Overwrites the expanded key in place with the expansion of the all-zero key (the same
    /// algorithm on the same CPU fills the same bytes), and keeps the compiler from removing
    /// that store as dead before the memory is freed. Costs one key expansion.
    fn drop(&mut self) {
        *self.0 = expand(&[0u8; 32]);
        std::hint::black_box(&*self.0);
    }
}

impl AeadKey {
    /// Expands `key` for AES-256-GCM.
    pub fn new(key: &Key256) -> Self {
        AeadKey(Box::new(expand(key.expose_secret())))
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

    /// The bytes of this process's memory at `addr`, read through `/proc/self/mem` (which
    /// reaches freed memory without dereferencing it).
    fn memory_at(mem: &std::fs::File, addr: usize, buf: &mut [u8]) {
        use std::os::unix::fs::FileExt;
        mem.read_exact_at(buf, addr as u64)
            .expect("reads own memory");
    }

    fn holds_a_half_of(bytes: &[u8], key: &[u8; 32]) -> bool {
        bytes
            .windows(16)
            .any(|w| w == &key[..16] || w == &key[16..])
    }

    #[test]
    fn a_dropped_key_leaves_no_copy_of_its_bytes_where_it_was_expanded() {
        let secret = Key256::random();
        let raw = *secret.expose_secret();
        let key = AeadKey::new(&secret);
        let addr = &*key.0 as *const LessSafeKey as usize;
        let len = std::mem::size_of::<LessSafeKey>();
        // Opened and sized before the drop, so that nothing allocates between it and the read.
        let mem = std::fs::File::open("/proc/self/mem").expect("opens /proc/self/mem");
        let mut before = vec![0u8; len];
        let mut after = vec![0u8; len];
        memory_at(&mem, addr, &mut before);
        // AES-256's first two round keys are the key itself (AES-NI keeps them as they are):
        // the test sees the key where it lives, or it proves nothing.
        assert!(
            holds_a_half_of(&before, &raw),
            "the expanded key holds the raw key bytes"
        );
        drop(key);
        memory_at(&mem, addr, &mut after);
        assert!(
            !holds_a_half_of(&after, &raw),
            "the freed expanded key still holds the key"
        );
    }
}
