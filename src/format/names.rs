//! Format version 2: encrypted file names, symlink targets and `user.*` extended attributes.
//! Pure: no file I/O, no FUSE.
//!
//! ```text
//! K_names, K_symlinks, K_xattrs = HKDF-SHA256(ikm = FsKey, no salt,
//!                                 info = "kmsfs-names-v2" | "kmsfs-symlinks-v2" | "kmsfs-xattrs-v2")
//! SIV(K; ad...; plain)  = AES-256-SIV tag (16) || ciphertext (plain.len())
//! name        = b64(SIV(K_names;    "kmsfs-name-v2", dir_id;                plain))
//! target      = b64(nonce || SIV(K_symlinks; "kmsfs-symlink-v2", nonce;    plain))
//! xattr name  = b64(SIV(K_xattrs;   "kmsfs-xattr-name-v2";                  plain))
//! xattr value = nonce || SIV(K_xattrs; "kmsfs-xattr-value-v2", "user." || cipher name, nonce; plain)
//! b64 = unpadded base64url; nonce = 16 random bytes
//! ```
//!
//! A cipher name longer than 255 characters is stored under a short name, `kmsfs.long.` followed
//! by b64(SHA-256(cipher name)), with the full cipher name in the side file `<short name>.name`.
//! `docs/FORMAT.md` ("Version 2: names") is the normative description; its test vectors are
//! checked in `names::tests`.

use crate::crypto::{self, Key256, SIV_TAG_LEN, SivKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::fmt;

#[cfg(test)]
mod tests;

/// A directory's random 128-bit identifier, bound into the names of its entries.
pub type DirId = [u8; 16];

/// The symlink in each cipher directory that holds its [`DirId`]: its target is the id in
/// unpadded base64url, [`DIR_ID_TARGET_LEN`] characters (see [`dir_id_target`]). A symlink this
/// short keeps its target in its inode: no data block to write, read or free.
pub const DIR_ID_FILE: &str = "kmsfs.dirid";
/// Characters of a [`DIR_ID_FILE`] link's target (22).
pub const DIR_ID_TARGET_LEN: usize = base64_len(std::mem::size_of::<DirId>());
/// The start of the short on-disk name of a cipher name longer than [`MAX_SHORT_CIPHER_NAME`].
pub const LONG_PREFIX: &str = "kmsfs.long.";
/// The end of the side file `<short name>.name` that holds a long name's full cipher name.
pub const LONG_SIDE_SUFFIX: &str = ".name";
/// The longest plaintext name, in bytes (Linux `NAME_MAX`).
pub const MAX_PLAIN_NAME: usize = 255;
/// The longest cipher name stored as itself; longer ones use the long form.
pub const MAX_SHORT_CIPHER_NAME: usize = 255;
/// The longest plaintext name whose cipher name is stored as itself (175 bytes).
pub const MAX_PLAIN_SHORT_NAME: usize = (MAX_SHORT_CIPHER_NAME * 3 / 4) - SIV_TAG_LEN;
/// The longest cipher name, in characters: that of a 255-byte plaintext name (362).
pub const MAX_CIPHER_NAME: usize = base64_len(SIV_TAG_LEN + MAX_PLAIN_NAME);
/// The longest cipher symlink target, in bytes (Linux `PATH_MAX` less the NUL).
pub const MAX_CIPHER_TARGET: usize = 4095;
/// The longest plaintext symlink target whose cipher form fits [`MAX_CIPHER_TARGET`] (3039).
pub const MAX_PLAIN_TARGET: usize = MAX_CIPHER_TARGET * 3 / 4 - NONCE_LEN - SIV_TAG_LEN;
/// The longest cipher xattr name after `user.` (Linux `XATTR_NAME_MAX` less `user.`).
pub const MAX_CIPHER_XATTR_NAME: usize = 255 - "user.".len();
/// The longest plaintext xattr name after `user.` whose cipher name fits (171 bytes).
pub const MAX_PLAIN_XATTR_NAME: usize = MAX_CIPHER_XATTR_NAME * 3 / 4 - SIV_TAG_LEN;
/// The longest plaintext xattr value whose sealed form fits Linux `XATTR_SIZE_MAX` (65504).
pub const MAX_PLAIN_XATTR_VALUE: usize = 65536 - XATTR_VALUE_OVERHEAD;

/// Length of the random nonce of a symlink target or an xattr value.
const NONCE_LEN: usize = 16;
/// Bytes a sealed xattr value adds to its plaintext: nonce and tag.
const XATTR_VALUE_OVERHEAD: usize = NONCE_LEN + SIV_TAG_LEN;

const NAMES_INFO: &[u8] = b"kmsfs-names-v2";
const SYMLINKS_INFO: &[u8] = b"kmsfs-symlinks-v2";
const XATTRS_INFO: &[u8] = b"kmsfs-xattrs-v2";
const NAME_AD: &[u8] = b"kmsfs-name-v2";
const SYMLINK_AD: &[u8] = b"kmsfs-symlink-v2";
const XATTR_NAME_AD: &[u8] = b"kmsfs-xattr-name-v2";
const XATTR_VALUE_AD: &[u8] = b"kmsfs-xattr-value-v2";

/// Why bytes from disk are not a valid encrypted name, target, xattr or key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// A filesystem key of the wrong length.
    #[error("filesystem key is {found} bytes, expected 32")]
    KeyLength {
        /// Its length.
        found: usize,
    },
    /// A directory id of the wrong length.
    #[error("directory id is {found} bytes, expected 16")]
    DirIdLength {
        /// Its length.
        found: usize,
    },
    /// A directory id link target that is not 22 characters of canonical unpadded base64url.
    #[error("directory id link target is not 22 characters of unpadded base64url ({found} bytes)")]
    DirIdTarget {
        /// Its length, in bytes.
        found: usize,
    },
    /// Longer than any cipher text of this kind (characters for base64, bytes for a value).
    #[error("cipher text is {found} bytes long, at most {max} allowed")]
    TooLong {
        /// The most allowed.
        max: usize,
        /// What was found.
        found: usize,
    },
    /// Not canonical unpadded base64url (another alphabet, padding, stray bits, bad length).
    #[error("cipher text is not unpadded base64url")]
    NotBase64,
    /// Too short to hold the nonce, tag and at least one byte that this kind needs.
    #[error("cipher text decodes to {found} bytes, at least {min} needed")]
    TooShort {
        /// The fewest allowed.
        min: usize,
        /// What was found.
        found: usize,
    },
    /// Does not authenticate: wrong key, wrong directory, wrong nonce or altered bytes.
    #[error("authentication failed")]
    Auth,
    /// Authenticates, but the plaintext is no valid name or target.
    #[error("decrypted name is invalid: {0}")]
    InvalidPlain(&'static str),
}

/// The 32-byte random secret from which every name key of a filesystem is derived.
/// Zeroized on drop, `[redacted]` in `Debug`.
#[derive(Clone)]
pub struct FsKey(Key256);

impl fmt::Debug for FsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FsKey([redacted])")
    }
}

impl FsKey {
    /// A fresh random key.
    pub fn random() -> FsKey {
        FsKey(Key256::random())
    }

    /// Takes a key from exactly 32 bytes.
    ///
    /// # Errors
    ///
    /// [`NameError::KeyLength`] for any other length.
    pub fn from_bytes(bytes: &[u8]) -> Result<FsKey, NameError> {
        Key256::from_slice(bytes)
            .map(FsKey)
            .ok_or(NameError::KeyLength { found: bytes.len() })
    }

    /// The raw key bytes. Every caller is a place where the secret leaves its box.
    pub fn expose_secret(&self) -> &[u8; 32] {
        self.0.expose_secret()
    }
}

/// A fresh random directory id, for a new directory's [`DIR_ID_FILE`].
pub fn random_dir_id() -> DirId {
    crypto::random_array()
}

/// Parses a directory id kept as raw bytes (the copy in a directory's extended attribute).
///
/// # Errors
///
/// [`NameError::DirIdLength`] unless `bytes` is exactly 16 bytes.
pub fn parse_dir_id(bytes: &[u8]) -> Result<DirId, NameError> {
    bytes
        .try_into()
        .map_err(|_| NameError::DirIdLength { found: bytes.len() })
}

/// The target of the [`DIR_ID_FILE`] link of a directory whose id is `id`: unpadded
/// base64url, [`DIR_ID_TARGET_LEN`] characters.
pub fn dir_id_target(id: &DirId) -> String {
    URL_SAFE_NO_PAD.encode(id)
}

/// Parses the target of a [`DIR_ID_FILE`] link.
///
/// # Errors
///
/// [`NameError::DirIdTarget`] unless `target` is 22 characters of canonical unpadded
/// base64url (no padding, no other alphabet, no stray bits in the last character).
pub fn parse_dir_id_target(target: &[u8]) -> Result<DirId, NameError> {
    let wrong = || NameError::DirIdTarget {
        found: target.len(),
    };
    if target.len() != DIR_ID_TARGET_LEN {
        return Err(wrong());
    }
    let bytes = URL_SAFE_NO_PAD.decode(target).map_err(|_| wrong())?;
    bytes.as_slice().try_into().map_err(|_| wrong())
}

/// The name keys of one filesystem: encrypts and decrypts names, symlink targets and `user.*`
/// xattrs. Cheap to share between threads. `[redacted]` in `Debug`.
pub struct NameCipher {
    names: SivKey,
    symlinks: SivKey,
    xattrs: SivKey,
}

impl fmt::Debug for NameCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NameCipher([redacted])")
    }
}

impl NameCipher {
    /// Derives the name, symlink and xattr keys from `key`.
    pub fn new(key: &FsKey) -> NameCipher {
        let derive = |info| SivKey::derive(key.expose_secret(), &[], info);
        NameCipher {
            names: derive(NAMES_INFO),
            symlinks: derive(SYMLINKS_INFO),
            xattrs: derive(XATTRS_INFO),
        }
    }

    /// The cipher name of `plain` in directory `dir`: deterministic, so a lookup encrypts the
    /// name it is given and opens the result. `plain` must be a valid name (see
    /// [`check_plain_name`]); the kernel sends no other. A result longer than
    /// [`MAX_SHORT_CIPHER_NAME`] is stored under its [`long_name`].
    pub fn encrypt_name(&self, dir: &DirId, plain: &[u8]) -> String {
        b64_sealed(&self.names, &[NAME_AD, dir], &[], plain)
    }

    /// The plaintext of cipher name `cipher` (the full one, for a long name) in directory `dir`.
    ///
    /// # Errors
    ///
    /// [`NameError::TooLong`], [`NameError::NotBase64`] or [`NameError::TooShort`] for text no
    /// name encrypts to; [`NameError::Auth`] when it does not authenticate in `dir` under this
    /// key; [`NameError::InvalidPlain`] when the plaintext is not a valid name.
    pub fn decrypt_name(&self, dir: &DirId, cipher: &[u8]) -> Result<Vec<u8>, NameError> {
        let sealed = decode(cipher, MAX_CIPHER_NAME, SIV_TAG_LEN + 1)?;
        let plain = self
            .names
            .open(&[NAME_AD, dir], &sealed)
            .map_err(|_| NameError::Auth)?;
        check_plain_name(&plain)?;
        Ok(plain)
    }

    /// The cipher form of symlink target `plain` (1 to [`MAX_PLAIN_TARGET`] bytes, no NUL), with
    /// a fresh random nonce: equal targets do not show as equal.
    pub fn encrypt_target(&self, plain: &[u8]) -> String {
        self.encrypt_target_with_nonce(crypto::random_array(), plain)
    }

    /// [`NameCipher::encrypt_target`] with a given nonce: for test vectors.
    pub(crate) fn encrypt_target_with_nonce(&self, nonce: [u8; NONCE_LEN], plain: &[u8]) -> String {
        b64_sealed(&self.symlinks, &[SYMLINK_AD, &nonce], &nonce, plain)
    }

    /// The plaintext of the cipher symlink target `cipher`.
    ///
    /// # Errors
    ///
    /// [`NameError::TooLong`], [`NameError::NotBase64`] or [`NameError::TooShort`] for text no
    /// target encrypts to; [`NameError::Auth`] when it does not authenticate under this key;
    /// [`NameError::InvalidPlain`] when the target holds a NUL.
    pub fn decrypt_target(&self, cipher: &[u8]) -> Result<Vec<u8>, NameError> {
        let sealed = decode(cipher, MAX_CIPHER_TARGET, NONCE_LEN + SIV_TAG_LEN + 1)?;
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let plain = self
            .symlinks
            .open(&[SYMLINK_AD, nonce], rest)
            .map_err(|_| NameError::Auth)?;
        if plain.contains(&0) {
            return Err(NameError::InvalidPlain("contains NUL"));
        }
        Ok(plain)
    }

    /// The length of a symlink target from the length of its cipher form (a symlink's
    /// `st_size`), without decrypting; `None` when no target encrypts to that length.
    pub fn target_plain_len(cipher_len: u64) -> Option<u64> {
        let cipher_len = usize::try_from(cipher_len).ok()?;
        if cipher_len > MAX_CIPHER_TARGET {
            return None;
        }
        let plain = base64_decoded_len(cipher_len)?.checked_sub(NONCE_LEN + SIV_TAG_LEN)?;
        (plain > 0).then_some(plain as u64)
    }

    /// The cipher name of xattr `user.<plain>`: what follows `user.` on disk. Deterministic.
    /// `plain` must be 1 to [`MAX_PLAIN_XATTR_NAME`] bytes with no NUL.
    pub fn encrypt_xattr_name(&self, plain: &[u8]) -> String {
        b64_sealed(&self.xattrs, &[XATTR_NAME_AD], &[], plain)
    }

    /// The plaintext of xattr name `user.<cipher>`, given `cipher`.
    ///
    /// # Errors
    ///
    /// [`NameError::TooLong`], [`NameError::NotBase64`] or [`NameError::TooShort`] for text no
    /// xattr name encrypts to; [`NameError::Auth`] when it does not authenticate under this
    /// key; [`NameError::InvalidPlain`] when the name holds a NUL.
    pub fn decrypt_xattr_name(&self, cipher: &[u8]) -> Result<Vec<u8>, NameError> {
        let sealed = decode(cipher, MAX_CIPHER_XATTR_NAME, SIV_TAG_LEN + 1)?;
        let plain = self
            .xattrs
            .open(&[XATTR_NAME_AD], &sealed)
            .map_err(|_| NameError::Auth)?;
        if plain.contains(&0) {
            return Err(NameError::InvalidPlain("contains NUL"));
        }
        Ok(plain)
    }

    /// The sealed form of xattr value `value` (raw bytes, 32 longer), bound to the xattr's name
    /// as stored, `stored_name`: `user.` followed by the cipher name
    /// [`NameCipher::encrypt_xattr_name`] returns; with a fresh random nonce.
    pub fn seal_xattr_value(&self, stored_name: &[u8], value: &[u8]) -> Vec<u8> {
        self.seal_xattr_value_with_nonce(crypto::random_array(), stored_name, value)
    }

    /// [`NameCipher::seal_xattr_value`] with a given nonce: for test vectors.
    pub(crate) fn seal_xattr_value_with_nonce(
        &self,
        nonce: [u8; NONCE_LEN],
        stored_name: &[u8],
        value: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(XATTR_VALUE_OVERHEAD + value.len());
        out.extend_from_slice(&nonce);
        self.xattrs
            .seal_append(&[XATTR_VALUE_AD, stored_name, &nonce], value, &mut out);
        out
    }

    /// The plaintext of the sealed xattr value `sealed` stored under the xattr name `stored_name`.
    ///
    /// # Errors
    ///
    /// [`NameError::TooShort`] when `sealed` cannot hold a nonce and a tag; [`NameError::Auth`]
    /// when it does not authenticate under this key and this stored name.
    pub fn open_xattr_value(
        &self,
        stored_name: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>, NameError> {
        if sealed.len() < XATTR_VALUE_OVERHEAD {
            return Err(NameError::TooShort {
                min: XATTR_VALUE_OVERHEAD,
                found: sealed.len(),
            });
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        self.xattrs
            .open(&[XATTR_VALUE_AD, stored_name, nonce], rest)
            .map_err(|_| NameError::Auth)
    }

    /// The length of an xattr value from the length of its sealed form, without opening it;
    /// `None` when it is too short to be one.
    pub fn xattr_value_plain_len(sealed_len: usize) -> Option<usize> {
        sealed_len.checked_sub(XATTR_VALUE_OVERHEAD)
    }
}

/// Checks that `plain` can be a file name: 1 to 255 bytes, not `.` or `..`, no `/` or NUL.
///
/// # Errors
///
/// [`NameError::InvalidPlain`] saying which rule it breaks.
pub fn check_plain_name(plain: &[u8]) -> Result<(), NameError> {
    let fault = match plain {
        [] => "empty",
        b"." => "\".\"",
        b".." => "\"..\"",
        _ if plain.len() > MAX_PLAIN_NAME => "longer than 255 bytes",
        _ if plain.contains(&b'/') => "contains '/'",
        _ if plain.contains(&0) => "contains NUL",
        _ => return Ok(()),
    };
    Err(NameError::InvalidPlain(fault))
}

/// The short on-disk name of cipher name `cipher` when it is longer than
/// [`MAX_SHORT_CIPHER_NAME`]: [`LONG_PREFIX`] + b64(SHA-256(`cipher`)), 54 characters; `None`
/// when `cipher` is stored as itself. A reader takes the full name from the side file
/// ([`long_side_name`]) and checks that it gives back this short name.
pub fn long_name(cipher: &str) -> Option<String> {
    (cipher.len() > MAX_SHORT_CIPHER_NAME).then(|| {
        let digest = crypto::sha256(cipher.as_bytes());
        format!("{LONG_PREFIX}{}", URL_SAFE_NO_PAD.encode(digest))
    })
}

/// The name of the side file that holds the full cipher name of long name `short`.
pub fn long_side_name(short: &str) -> String {
    format!("{short}{LONG_SIDE_SUFFIX}")
}

/// True for the names the filesystem keeps in a cipher directory and never lists:
/// [`DIR_ID_FILE`] and every long-name side file (`kmsfs.long.*.name`).
pub fn is_internal(name: &[u8]) -> bool {
    name == DIR_ID_FILE.as_bytes()
        || name
            .strip_prefix(LONG_PREFIX.as_bytes())
            .is_some_and(|rest| rest.ends_with(LONG_SIDE_SUFFIX.as_bytes()))
}

/// True for the short on-disk name of a long cipher name: it starts with [`LONG_PREFIX`] and is
/// not a side file. Its full cipher name is in the side file.
pub fn is_long(name: &[u8]) -> bool {
    name.starts_with(LONG_PREFIX.as_bytes()) && !is_internal(name)
}

/// Unpadded base64url of `prefix || SIV(key; ad; plain)`.
fn b64_sealed(key: &SivKey, ad: &[&[u8]], prefix: &[u8], plain: &[u8]) -> String {
    let mut sealed = Vec::with_capacity(prefix.len() + SIV_TAG_LEN + plain.len());
    sealed.extend_from_slice(prefix);
    key.seal_append(ad, plain, &mut sealed);
    URL_SAFE_NO_PAD.encode(sealed)
}

/// Decodes canonical unpadded base64url of at most `max_chars` characters into at least
/// `min_bytes` bytes.
fn decode(cipher: &[u8], max_chars: usize, min_bytes: usize) -> Result<Vec<u8>, NameError> {
    if cipher.len() > max_chars {
        return Err(NameError::TooLong {
            max: max_chars,
            found: cipher.len(),
        });
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(cipher)
        .map_err(|_| NameError::NotBase64)?;
    if bytes.len() < min_bytes {
        return Err(NameError::TooShort {
            min: min_bytes,
            found: bytes.len(),
        });
    }
    Ok(bytes)
}

/// Characters of unpadded base64 for `bytes` bytes.
const fn base64_len(bytes: usize) -> usize {
    (bytes * 4).div_ceil(3)
}

/// Bytes encoded by `chars` characters of unpadded base64; `None` for a length no encoding has.
fn base64_decoded_len(chars: usize) -> Option<usize> {
    match chars % 4 {
        1 => None,
        rest => Some(chars / 4 * 3 + rest.saturating_sub(1)),
    }
}
