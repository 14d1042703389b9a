//! Plaintext ⇄ ciphertext size and offset math. The plaintext size follows from the ciphertext
//! size alone, so `stat` needs no read and no KMS call.

use super::{FormatError, HEADER_LEN};
use crate::crypto::{NONCE_LEN, TAG_LEN};

/// Plaintext bytes per block.
pub const BLOCK_PLAIN_LEN: u64 = 4096;
/// Ciphertext bytes a block adds to its plaintext (nonce + tag).
pub const BLOCK_OVERHEAD: u64 = (NONCE_LEN + TAG_LEN) as u64;
/// Ciphertext bytes of a full block.
pub const BLOCK_CIPHER_LEN: u64 = BLOCK_PLAIN_LEN + BLOCK_OVERHEAD;

/// Offset of block `index` in the cipher file.
pub fn block_cipher_offset(index: u64) -> u64 {
    HEADER_LEN as u64 + index * BLOCK_CIPHER_LEN
}

/// Size on disk of a file of `plain_size` bytes: 0 for an empty file (no header), otherwise
/// `512 + plain_size + 28 * ceil(plain_size / 4096)`.
pub fn cipher_size(plain_size: u64) -> u64 {
    if plain_size == 0 {
        return 0;
    }
    HEADER_LEN as u64 + plain_size + BLOCK_OVERHEAD * plain_size.div_ceil(BLOCK_PLAIN_LEN)
}

/// Plaintext size of a cipher file of `cipher_size` bytes. A header with no blocks (512 bytes)
/// is an empty file. Sizes no plaintext maps to (a partial header, a last block of 28 bytes or
/// fewer) are corrupt.
pub fn plain_size(cipher_size: u64) -> Result<u64, FormatError> {
    let header = HEADER_LEN as u64;
    if cipher_size == 0 || cipher_size == header {
        return Ok(0);
    }
    if cipher_size < header {
        return Err(FormatError::BadCipherSize(cipher_size));
    }
    let body = cipher_size - header;
    let full = body / BLOCK_CIPHER_LEN;
    let rest = body % BLOCK_CIPHER_LEN;
    match rest {
        0 => Ok(full * BLOCK_PLAIN_LEN),
        r if r <= BLOCK_OVERHEAD => Err(FormatError::BadCipherSize(cipher_size)),
        r => Ok(full * BLOCK_PLAIN_LEN + r - BLOCK_OVERHEAD),
    }
}

/// The plaintext size to report in `stat` even for a corrupt size: never 0 when there is
/// content, so that readers try, and get EIO, rather than see an empty file.
pub fn plain_size_lenient(cipher_size: u64) -> u64 {
    plain_size(cipher_size).unwrap_or_else(|_| {
        let body = cipher_size.saturating_sub(HEADER_LEN as u64);
        let full = body / BLOCK_CIPHER_LEN;
        (full * BLOCK_PLAIN_LEN + body % BLOCK_CIPHER_LEN).max(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_documented_formula() {
        for (plain, cipher) in [
            (0u64, 0u64),
            (1, 512 + 1 + 28),
            (4095, 512 + 4095 + 28),
            (4096, 512 + 4096 + 28),
            (4097, 512 + 4097 + 56),
            (1 << 20, 512 + (1 << 20) + 28 * 256),
            ((1 << 20) + 1, 512 + (1 << 20) + 1 + 28 * 257),
        ] {
            assert_eq!(cipher_size(plain), cipher, "plain {plain}");
            assert_eq!(plain_size(cipher), Ok(plain), "cipher {cipher}");
        }
    }

    #[test]
    fn every_plain_size_round_trips() {
        for plain in 0..3 * BLOCK_PLAIN_LEN + 5 {
            assert_eq!(plain_size(cipher_size(plain)), Ok(plain));
        }
    }

    #[test]
    fn impossible_sizes_are_corrupt() {
        for bad in [
            1,
            100,
            511,
            513,
            512 + 28,
            512 + BLOCK_CIPHER_LEN + 1,
            512 + BLOCK_CIPHER_LEN + 28,
        ] {
            assert_eq!(
                plain_size(bad),
                Err(FormatError::BadCipherSize(bad)),
                "{bad}"
            );
            assert!(plain_size_lenient(bad) > 0);
        }
        assert_eq!(plain_size(512), Ok(0));
    }

    #[test]
    fn block_offsets() {
        assert_eq!(block_cipher_offset(0), 512);
        assert_eq!(block_cipher_offset(3), 512 + 3 * 4124);
    }
}
