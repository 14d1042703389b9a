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
/// fewer) are corrupt; [`CipherExtent::of`] reads the complete blocks of the latter.
pub fn plain_size(cipher_size: u64) -> Result<u64, FormatError> {
    match CipherExtent::of(cipher_size)? {
        extent if extent.torn_len > 0 => Err(FormatError::BadCipherSize(cipher_size)),
        extent => Ok(extent.plain_size),
    }
}

/// What the size of a cipher file says about its blocks: the plaintext held by its complete
/// blocks, and the bytes after them that are too few to be a block (1 to 28: a *torn tail*,
/// left when a write was cut short, e.g. by a killed daemon).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CipherExtent {
    /// Plaintext bytes of the complete blocks (a short last block counts as complete).
    pub plain_size: u64,
    /// Bytes after the complete blocks that make no block; 0 for a valid size.
    pub torn_len: u64,
}

impl CipherExtent {
    /// The extent of a cipher file of `cipher_size` bytes. A header with no blocks (512 bytes)
    /// is an empty file; a partial header (1 to 511 bytes) has no extent.
    pub fn of(cipher_size: u64) -> Result<CipherExtent, FormatError> {
        let header = HEADER_LEN as u64;
        if cipher_size == 0 || cipher_size == header {
            return Ok(CipherExtent {
                plain_size: 0,
                torn_len: 0,
            });
        }
        if cipher_size < header {
            return Err(FormatError::BadCipherSize(cipher_size));
        }
        let body = cipher_size - header;
        let full = body / BLOCK_CIPHER_LEN;
        let rest = body % BLOCK_CIPHER_LEN;
        Ok(if rest <= BLOCK_OVERHEAD {
            CipherExtent {
                plain_size: full * BLOCK_PLAIN_LEN,
                torn_len: rest,
            }
        } else {
            CipherExtent {
                plain_size: full * BLOCK_PLAIN_LEN + rest - BLOCK_OVERHEAD,
                torn_len: 0,
            }
        })
    }

    /// The index of the torn block, when there is a torn tail (the block right after the
    /// complete ones, which are then all full).
    pub fn torn_block(&self) -> Option<u64> {
        (self.torn_len > 0).then_some(self.plain_size / BLOCK_PLAIN_LEN)
    }

    /// The cipher size without the torn tail: the header and the complete blocks. A file whose
    /// only block is torn keeps its header (512 bytes: an empty file).
    pub fn complete_cipher_size(&self) -> u64 {
        match self.torn_block() {
            Some(index) => block_cipher_offset(index),
            None => cipher_size(self.plain_size),
        }
    }

    /// The error a read of the torn block answers, when there is one.
    pub fn torn_error(&self) -> Option<FormatError> {
        self.torn_block().map(|index| FormatError::TornBlock {
            index,
            len: self.torn_len,
        })
    }
}

/// The plaintext size to report in `stat`: that of the complete blocks (a torn tail is left
/// out), and 1 for a partial header, so that readers try and get EIO rather than see an empty
/// file.
pub fn plain_size_lenient(cipher_size: u64) -> u64 {
    CipherExtent::of(cipher_size).map_or(1, |extent| extent.plain_size)
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
        }
        assert_eq!(plain_size(512), Ok(0));
    }

    #[test]
    fn a_torn_tail_leaves_the_complete_blocks() {
        for (cipher, plain, torn) in [
            (513, 0, 1),
            (512 + 28, 0, 28),
            (512 + BLOCK_CIPHER_LEN + 1, BLOCK_PLAIN_LEN, 1),
            (512 + 3 * BLOCK_CIPHER_LEN + 28, 3 * BLOCK_PLAIN_LEN, 28),
        ] {
            let extent = CipherExtent::of(cipher).expect("a header is there");
            assert_eq!(
                (extent.plain_size, extent.torn_len),
                (plain, torn),
                "{cipher}"
            );
            let index = plain / BLOCK_PLAIN_LEN;
            assert_eq!(extent.torn_block(), Some(index), "{cipher}");
            assert_eq!(extent.complete_cipher_size(), block_cipher_offset(index));
            assert_eq!(extent.complete_cipher_size(), cipher - torn);
            assert_eq!(
                extent.torn_error(),
                Some(FormatError::TornBlock { index, len: torn })
            );
            assert_eq!(
                plain_size_lenient(cipher),
                plain,
                "stat leaves the tail out"
            );
        }
    }

    #[test]
    fn a_valid_size_has_no_torn_tail() {
        for plain in (0..3 * BLOCK_PLAIN_LEN + 5)
            .step_by(7)
            .chain([BLOCK_PLAIN_LEN])
        {
            let cipher = cipher_size(plain);
            let extent = CipherExtent::of(cipher).expect("valid");
            assert_eq!((extent.plain_size, extent.torn_len), (plain, 0));
            assert_eq!(extent.torn_block(), None);
            assert_eq!(extent.torn_error(), None);
            assert_eq!(extent.complete_cipher_size(), cipher);
            assert_eq!(plain_size_lenient(cipher), plain);
        }
        assert_eq!(
            CipherExtent::of(512).map(|e| e.complete_cipher_size()),
            Ok(0)
        );
    }

    #[test]
    fn a_partial_header_has_no_extent() {
        for bad in [1, 100, 511] {
            assert_eq!(CipherExtent::of(bad), Err(FormatError::BadCipherSize(bad)));
            assert_eq!(plain_size_lenient(bad), 1, "readers try, and get EIO");
        }
    }

    #[test]
    fn block_offsets() {
        assert_eq!(block_cipher_offset(0), 512);
        assert_eq!(block_cipher_offset(3), 512 + 3 * 4124);
    }
}
