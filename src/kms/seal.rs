//! Secrets at rest, shared by the embedded keystore and the KMS server: Argon2id of a
//! passphrase into a root key, and atomic, durable file writes (temporary file, fsync, rename
//! or link, fsync of the directory), so a crash at any moment leaves the old file or the new
//! one, never a mix.

use crate::crypto::{Key256, SecretBytes};
use crate::sys::durable;
use std::path::Path;
use zeroize::Zeroize;

/// Argon2id cost parameters of a passphrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB (default 65536 = 64 MiB).
    pub m_cost_kib: u32,
    /// Passes (default 3).
    pub t_cost: u32,
    /// Lanes (default 1).
    pub p_cost: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams {
            m_cost_kib: 65536,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

impl KdfParams {
    /// The most memory a stored parameter set may ask for (1 GiB), so a tampered file cannot
    /// exhaust memory.
    pub const MAX_M_COST_KIB: u32 = 1 << 20;
    /// The most passes a stored parameter set may ask for.
    pub const MAX_T_COST: u32 = 64;
    /// The most lanes a stored parameter set may ask for.
    pub const MAX_P_COST: u32 = 64;

    fn argon2(&self) -> Option<argon2::Params> {
        if self.m_cost_kib > Self::MAX_M_COST_KIB
            || self.t_cost > Self::MAX_T_COST
            || self.p_cost > Self::MAX_P_COST
        {
            return None;
        }
        argon2::Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32)).ok()
    }
}

/// The shortest salt [`argon2id`] accepts.
pub const MIN_SALT_LEN: usize = 16;
/// The longest salt [`argon2id`] accepts.
pub const MAX_SALT_LEN: usize = 64;

/// Argon2id of `passphrase` with `salt` into a 32-byte root key; its working memory is zeroized.
/// `None` when the parameters are out of range or the salt is not 16 to 64 bytes.
pub fn argon2id(passphrase: &SecretBytes, params: KdfParams, salt: &[u8]) -> Option<Key256> {
    let argon_params = params.argon2()?;
    if !(MIN_SALT_LEN..=MAX_SALT_LEN).contains(&salt.len()) {
        return None;
    }
    let mut blocks = vec![argon2::Block::default(); argon_params.block_count()];
    let argon = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon_params,
    );
    let mut root = Key256::zero();
    let hashed = argon.hash_password_into_with_memory(
        passphrase.expose_secret(),
        salt,
        root.expose_secret_mut(),
        &mut blocks,
    );
    for block in &mut blocks {
        block.as_mut().zeroize();
    }
    hashed.ok()?;
    Some(root)
}

pub use crate::sys::durable::parent_dir;

/// Replaces the file at `path` with `bytes` atomically and durably (mode 0600): temporary file,
/// fsync, rename, fsync of the directory ([`crate::sys::durable`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    durable::replace(path, bytes, durable::Staging::Unique)
}

/// Creates the file at `path` with `bytes` atomically and durably, only if nothing is there yet
/// (temporary file, fsync, rename without replacing, fsync of the directory). `Ok(false)` when a
/// file existed.
pub fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    durable::create_new(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_new_refuses_to_replace_and_write_atomic_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        assert!(write_new(&path, b"one").expect("creates"));
        assert!(!write_new(&path, b"two").expect("answers"));
        assert_eq!(std::fs::read(&path).expect("reads"), b"one");
        write_atomic(&path, b"three").expect("replaces");
        assert_eq!(std::fs::read(&path).expect("reads"), b"three");
        let leftovers = std::fs::read_dir(dir.path()).expect("lists").count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }

    #[test]
    fn argon2id_refuses_bad_parameters() {
        let pass = SecretBytes::new(b"pass".to_vec());
        let small = KdfParams {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        };
        assert!(argon2id(&pass, small, &[0u8; 8]).is_none(), "short salt");
        let huge = KdfParams {
            m_cost_kib: KdfParams::MAX_M_COST_KIB + 1,
            ..small
        };
        assert!(argon2id(&pass, huge, &[0u8; 16]).is_none());
        let a = argon2id(&pass, small, &[1u8; 16]).expect("derives");
        let b = argon2id(&pass, small, &[1u8; 16]).expect("derives");
        assert_eq!(a.expose_secret(), b.expose_secret());
    }
}
