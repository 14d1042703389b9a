//! Secret containers: zeroized on drop, `[redacted]` in `Debug`, no `Display` or `Serialize`.

use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A 256-bit secret key (a DEK, a KMS key material version, a keystore key).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Key256([u8; 32]);

impl Key256 {
    /// A fresh random key.
    pub fn random() -> Self {
        let mut key = Self::zero();
        super::fill_random(&mut key.0);
        key
    }

    /// An all-zero key, to be filled through [`Key256::expose_secret_mut`].
    pub fn zero() -> Self {
        Key256([0u8; 32])
    }

    /// Takes a key from a slice of exactly 32 bytes; `None` for any other length.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let mut key = Self::zero();
        if bytes.len() != key.0.len() {
            return None;
        }
        key.0.copy_from_slice(bytes);
        Some(key)
    }

    /// The raw key bytes. Every caller is a place where the secret leaves its box.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }

    /// The raw key bytes, writable.
    pub fn expose_secret_mut(&mut self) -> &mut [u8; 32] {
        &mut self.0
    }
}

impl fmt::Debug for Key256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key256([redacted])")
    }
}

/// Secret bytes of any length (a passphrase, a decrypted payload, a sealed keystore's plaintext).
#[derive(Clone, Default, Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Wraps `bytes`; they are zeroized when this value is dropped.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(bytes)
    }

    /// The raw bytes. Every caller is a place where the secret leaves its box.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    /// Number of secret bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no secret bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The secret kept in the file at `path` (a passphrase file, a systemd credential), without
    /// the line ends an editor or `echo` leaves at its end.
    ///
    /// # Errors
    /// The file cannot be read.
    pub fn read_file(path: &std::path::Path) -> std::io::Result<Self> {
        let mut secret = SecretBytes::new(std::fs::read(path)?);
        while secret.0.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
            secret.0.pop();
        }
        Ok(secret)
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(bytes: Vec<u8>) -> Self {
        SecretBytes(bytes)
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_bytes() {
        let key = Key256::from_slice(&[0x41; 32]).expect("32 bytes");
        assert_eq!(format!("{key:?}"), "Key256([redacted])");
        let secret = SecretBytes::new(b"hunter2".to_vec());
        assert_eq!(format!("{secret:?}"), "[redacted]");
    }

    #[test]
    fn from_slice_checks_length() {
        assert!(Key256::from_slice(&[0; 31]).is_none());
        assert!(Key256::from_slice(&[0; 33]).is_none());
    }
}
