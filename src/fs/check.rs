//! `fsck`'s view of one cipher file: authenticate its header and every block, name the damage,
//! and, on request, mend the damage at its end (a torn tail, a last block that fails
//! authentication, in header version 2 a last block sealed as an inner one: what a write cut
//! short leaves): cut back to the last authentic block and re-seal that block as the last.

use super::content::{self, ContentError};
use super::keys::{KeyError, KeyPath, KeyRefusal};
use crate::format::{
    BLOCK_CIPHER_LEN, BLOCK_OVERHEAD, BLOCK_PLAIN_LEN, CipherExtent, FileCipher, FormatError,
    block_cipher_offset,
};
use std::fmt;
use std::fs::File;
use std::path::Path;

/// What `fsck` found in one cipher file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileCheck {
    /// Every block authenticates.
    Clean,
    /// The file is damaged.
    Damaged(Damage),
}

/// What is wrong with a damaged cipher file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// The size fits no file (a partial header): nothing in the file can be read.
    Size(FormatError),
    /// The header does not parse or authenticate: nothing in the file can be read.
    Header(FormatError),
    /// The KMS refuses the key the header names (a changed key id, or a key that is gone or
    /// disabled): nothing in the file can be read.
    HeaderKey(KeyRefusal),
    /// Blocks fail authentication, or the file ends in a torn block; the others read.
    Blocks(BlockCheck),
    /// The file changed while it was read (it shrank under the check).
    Changed(FormatError),
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::Size(e) => write!(f, "size: {e}"),
            Damage::Header(e) => write!(f, "header: {e}"),
            Damage::HeaderKey(refusal) => write!(f, "header: {refusal}"),
            Damage::Changed(e) => write!(f, "changed while checked: {e}"),
            Damage::Blocks(found) => {
                let mut parts = Vec::new();
                if !found.failed.is_empty() {
                    let list: Vec<String> = found.failed.iter().map(u64::to_string).collect();
                    let (noun, verb) = if found.failed.len() == 1 {
                        ("block", "fails")
                    } else {
                        ("blocks", "fail")
                    };
                    parts.push(format!("{noun} {} {verb} authentication", list.join(", ")));
                }
                parts.extend(found.misplaced.iter().map(FormatError::to_string));
                if let Some(torn) = found.torn.as_ref().and_then(CipherExtent::torn_error) {
                    parts.push(format!("torn tail: {torn}"));
                }
                write!(f, "{}", parts.join("; "))
            }
        }
    }
}

/// What `fsck --repair` did to one cipher file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    /// What the check found before the repair.
    pub found: FileCheck,
    /// What was cut off the end of the file, if anything.
    pub cut: Option<TailCut>,
    /// The block re-sealed as the file's last one (header version 2), if any.
    pub resealed: Option<u64>,
    /// The damage a repair does not mend (before the last block, in the header, a partial
    /// header, blocks added after the end): `None` when the file is sound now.
    pub left: Option<Damage>,
}

/// Authenticates the header and every block of the cipher file at `path`. A KMS that refuses
/// this file's header (its key id names no key it will use, its wrapped DEK does not unwrap) is
/// damage of this file; a KMS that cannot be reached or refuses the credentials is an error,
/// since no file can be checked then.
pub fn check_file(path: &Path, keys: &KeyPath) -> Result<FileCheck, KeyError> {
    check_open(&File::open(path)?, keys)
}

/// Checks the cipher file at `path`, then mends the damage at its end: cuts a torn tail and a
/// last block that fails authentication, never a block before it, and (header version 2)
/// re-seals the block the file then ends with as the last one. The directory must not be
/// mounted (a mount caches what it read and wrote).
pub fn repair_file(path: &Path, keys: &KeyPath) -> Result<Repair, KeyError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let found = check_open(&file, keys)?;
    let FileCheck::Damaged(Damage::Blocks(blocks)) = &found else {
        let left = match &found {
            FileCheck::Clean => None,
            FileCheck::Damaged(other) => Some(other.clone()),
        };
        return Ok(Repair {
            found,
            cut: None,
            resealed: None,
            left,
        });
    };
    let cipher = keys.open_header(&file)?;
    let (cut, resealed) = mend_tail(&file, &cipher, blocks).map_err(content_to_key_error)?;
    file.sync_all()?;
    let left = match check_open(&file, keys)? {
        FileCheck::Clean => None,
        FileCheck::Damaged(damage) => Some(damage),
    };
    Ok(Repair {
        found,
        cut,
        resealed,
        left,
    })
}

fn content_to_key_error(e: ContentError) -> KeyError {
    match e {
        ContentError::Io(e) => KeyError::Io(e),
        ContentError::Corrupt(e) => KeyError::Corrupt(e),
    }
}

fn check_open(file: &File, keys: &KeyPath) -> Result<FileCheck, KeyError> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(FileCheck::Clean);
    }
    if let Err(e) = CipherExtent::of(len) {
        return Ok(FileCheck::Damaged(Damage::Size(e)));
    }
    let cipher = match keys.open_header(file) {
        Ok(cipher) => cipher,
        Err(KeyError::Corrupt(e)) => return Ok(FileCheck::Damaged(Damage::Header(e))),
        Err(KeyError::Refused(refusal)) => {
            return Ok(FileCheck::Damaged(Damage::HeaderKey(refusal)));
        }
        Err(e) => return Err(e),
    };
    match check(file, &cipher) {
        Ok(found) if found.is_clean() => Ok(FileCheck::Clean),
        Ok(found) => Ok(FileCheck::Damaged(Damage::Blocks(found))),
        Err(ContentError::Io(e)) => Err(e.into()),
        Err(ContentError::Corrupt(e)) => Ok(FileCheck::Damaged(Damage::Changed(e))),
    }
}

/// What [`check`] found in the blocks of a cipher file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockCheck {
    /// Complete blocks (a short last block counts).
    pub blocks: u64,
    /// Complete blocks that fail authentication, by index.
    pub failed: Vec<u64>,
    /// Header version 2: whole blocks in the wrong place, as
    /// [`FormatError::EndNotSealedLast`] (the file was cut short after it) or
    /// [`FormatError::LastBlockInside`] (blocks were added after it).
    pub misplaced: Vec<FormatError>,
    /// The file's extent when it ends in a torn block.
    pub torn: Option<CipherExtent>,
}

impl BlockCheck {
    /// True when every block authenticates at its place and there is no torn tail.
    pub fn is_clean(&self) -> bool {
        self.failed.is_empty() && self.misplaced.is_empty() && self.torn.is_none()
    }

    /// Blocks a repair keeps: all but a last block that fails authentication. The damage at
    /// the end (a torn tail, a failed last block) is what a crash in the middle of a write
    /// leaves; a failed block before the last is damage of another kind, never cut.
    pub fn blocks_to_keep(&self) -> u64 {
        match self.failed.last() {
            Some(&last) if last + 1 == self.blocks => last,
            _ => self.blocks,
        }
    }

    /// The failed blocks a repair leaves, all before the last kept one.
    pub fn failed_in_the_middle(&self) -> &[u64] {
        let keep = self.blocks_to_keep();
        let n = self.failed.iter().take_while(|&&i| i < keep).count();
        &self.failed[..n]
    }
}

/// Authenticates every complete block of a cipher file at its place and notes a torn tail.
pub fn check(file: &File, cipher: &FileCipher) -> Result<BlockCheck, ContentError> {
    let extent = content::extent(file)?;
    let plain = extent.plain_size;
    let blocks = plain.div_ceil(BLOCK_PLAIN_LEN);
    let mut failed = Vec::new();
    let mut misplaced = Vec::new();
    let mut buf = vec![0u8; BLOCK_CIPHER_LEN as usize];
    for index in 0..blocks {
        let len =
            ((plain - index * BLOCK_PLAIN_LEN).min(BLOCK_PLAIN_LEN) + BLOCK_OVERHEAD) as usize;
        let place = content::place_in(&extent, index);
        let block = &mut buf[..len];
        content::read_exact_at(file, block, block_cipher_offset(index))?;
        let error = match content::open_block(file, cipher, index, place, block, 0) {
            Ok(_) => continue,
            Err(ContentError::Corrupt(e)) => e,
            Err(ContentError::Io(e)) => return Err(e.into()),
        };
        match error {
            FormatError::EndNotSealedLast(_) | FormatError::LastBlockInside(_) => {
                misplaced.push(error)
            }
            _ => failed.push(index),
        }
    }
    Ok(BlockCheck {
        blocks,
        failed,
        misplaced,
        torn: (extent.torn_len > 0).then_some(extent),
    })
}

/// Mends the damage at the end of a cipher file that [`check`] found: cuts it back to its last
/// authentic block ([`cut_damaged_tail`]), then (header version 2) re-seals the block the file
/// ends with as the last one when it is sealed as an inner one. Returns what was cut and which
/// block was re-sealed.
pub fn mend_tail(
    file: &File,
    cipher: &FileCipher,
    found: &BlockCheck,
) -> Result<(Option<TailCut>, Option<u64>), ContentError> {
    let cut = cut_damaged_tail(file, found)?;
    let mended = content::mend_end(file, cipher, true)?;
    Ok((cut, mended.resealed))
}

/// What [`cut_damaged_tail`] cut off a cipher file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailCut {
    /// Cipher size before the cut.
    pub old_cipher_size: u64,
    /// Cipher size after it.
    pub new_cipher_size: u64,
    /// Plaintext size (as `stat` showed it) before the cut.
    pub old_plain_size: u64,
    /// Plaintext size after it.
    pub new_plain_size: u64,
}

/// Cuts the damage at the end of a cipher file found by `found` (a torn tail, a last block
/// that fails authentication) back to its last authentic block; never further. Returns what it
/// cut, `None` when the end of the file is sound.
pub fn cut_damaged_tail(file: &File, found: &BlockCheck) -> Result<Option<TailCut>, ContentError> {
    let old_cipher_size = file.metadata()?.len();
    let extent = CipherExtent::of(old_cipher_size)?;
    let keep = found.blocks_to_keep();
    if keep == found.blocks && extent.torn_len == 0 {
        return Ok(None);
    }
    let new_plain_size = if keep == found.blocks {
        extent.plain_size
    } else {
        keep * BLOCK_PLAIN_LEN
    };
    let new_cipher_size = if keep == found.blocks {
        extent.complete_cipher_size()
    } else {
        block_cipher_offset(keep)
    };
    file.set_len(new_cipher_size)?;
    Ok(Some(TailCut {
        old_cipher_size,
        new_cipher_size,
        old_plain_size: extent.plain_size,
        new_plain_size,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::cipher_size;
    use crate::fs::content::tests::{FULL, cipher_file, pattern, read};
    use std::os::unix::fs::FileExt;

    #[test]
    fn a_torn_complete_sized_last_block_fails_alone() {
        let plain = pattern(3 * FULL + 100);
        let (_dir, file, cipher) = cipher_file(&plain);
        // 60 bytes of block 3 are left: a valid size (a 32-byte block) that fails.
        file.set_len(block_cipher_offset(3) + 60).expect("tear");
        assert_eq!(
            read(&file, &cipher, 0, 3 * FULL as u32).expect("complete blocks"),
            plain[..3 * FULL]
        );
        assert_eq!(
            read(&file, &cipher, 3 * FULL as u64, 10),
            Err(format!(
                "{:?}",
                ContentError::Corrupt(FormatError::BlockAuth(3))
            ))
        );
        let found = check(&file, &cipher).expect("check");
        assert_eq!(
            (found.blocks, &found.failed[..], found.torn),
            (4, &[3][..], None)
        );
        assert_eq!(found.blocks_to_keep(), 3);
        let (cut, resealed) = mend_tail(&file, &cipher, &found).expect("mend");
        assert_eq!(
            cut,
            Some(TailCut {
                old_cipher_size: block_cipher_offset(3) + 60,
                new_cipher_size: block_cipher_offset(3),
                old_plain_size: 3 * BLOCK_PLAIN_LEN + 32,
                new_plain_size: 3 * BLOCK_PLAIN_LEN,
            })
        );
        assert_eq!(resealed, Some(2), "block 2 ends the file now");
        assert!(check(&file, &cipher).expect("check").is_clean());
    }

    #[test]
    fn a_repair_cuts_the_torn_tail_and_nothing_authentic() {
        let plain = pattern(4 * FULL);
        let (_dir, file, cipher) = cipher_file(&plain);
        file.set_len(block_cipher_offset(3) + 28).expect("tear");
        let found = check(&file, &cipher).expect("check");
        assert_eq!(found.failed, Vec::<u64>::new());
        assert_eq!(
            found.torn.map(|t| (t.plain_size, t.torn_len)),
            Some((3 * 4096, 28))
        );
        let (cut, resealed) = mend_tail(&file, &cipher, &found).expect("mend");
        let cut = cut.expect("cut");
        assert_eq!(resealed, Some(2));
        assert_eq!(
            (cut.new_cipher_size, cut.old_plain_size, cut.new_plain_size),
            (
                block_cipher_offset(3),
                3 * BLOCK_PLAIN_LEN,
                3 * BLOCK_PLAIN_LEN
            )
        );
        assert_eq!(
            read(&file, &cipher, 0, 1 << 20).expect("read"),
            plain[..3 * FULL]
        );
        let found = check(&file, &cipher).expect("check");
        assert!(found.is_clean());
        assert_eq!(
            mend_tail(&file, &cipher, &found).expect("mend"),
            (None, None),
            "a sound end stays"
        );
    }

    #[test]
    fn damage_before_the_last_block_is_never_cut() {
        let plain = pattern(4 * FULL + 10);
        let flip = |file: &File, index: u64| {
            let mut byte = [0u8];
            let at = block_cipher_offset(index) + 40;
            file.read_exact_at(&mut byte, at).expect("read");
            file.write_all_at(&[byte[0] ^ 1], at).expect("flip");
        };
        // A failed middle block alone: nothing is cut.
        let (_dir, file, cipher) = cipher_file(&plain);
        flip(&file, 1);
        let found = check(&file, &cipher).expect("check");
        assert_eq!((found.failed.clone(), found.blocks_to_keep()), (vec![1], 5));
        assert_eq!(found.failed_in_the_middle(), &[1]);
        assert_eq!(cut_damaged_tail(&file, &found).expect("cut"), None);
        assert_eq!(
            file.metadata().expect("stat").len(),
            cipher_size(plain.len() as u64)
        );

        // A failed middle block, a failed last block and then a torn tail: the tail and the
        // last block go, the middle one stays.
        let (_dir, file, cipher) = cipher_file(&pattern(5 * FULL));
        flip(&file, 1);
        flip(&file, 3);
        file.set_len(block_cipher_offset(4) + 3).expect("tear");
        let found = check(&file, &cipher).expect("check");
        assert_eq!((found.blocks, found.failed.clone()), (4, vec![1, 3]));
        assert_eq!(found.failed_in_the_middle(), &[1]);
        let (cut, resealed) = mend_tail(&file, &cipher, &found).expect("mend");
        assert_eq!(cut.expect("cut").new_cipher_size, block_cipher_offset(3));
        assert_eq!(resealed, Some(2));
        assert_eq!(
            check(&file, &cipher).expect("check").failed,
            vec![1],
            "the middle block is still there, still failing"
        );
    }

    /// Block indexes and sizes of a version 2 file of `n` plaintext bytes cut at a block
    /// boundary: every cut ends the file in an inner block, which fails as the end until a
    /// repair re-seals it.
    #[test]
    fn a_cut_at_every_block_boundary_is_named_and_repaired() {
        let plain = pattern(6 * FULL + 123);
        for keep in 1..=6u64 {
            let (_dir, file, cipher) = cipher_file(&plain);
            file.set_len(block_cipher_offset(keep)).expect("cut");
            let end = keep * BLOCK_PLAIN_LEN;
            // Every block before the cut reads; the one that now ends the file gives EIO.
            assert_eq!(
                read(&file, &cipher, 0, ((keep - 1) * BLOCK_PLAIN_LEN) as u32)
                    .expect("inner blocks"),
                plain[..((keep - 1) * BLOCK_PLAIN_LEN) as usize]
            );
            assert_eq!(
                read(&file, &cipher, end - 10, 10),
                Err(format!(
                    "{:?}",
                    ContentError::Corrupt(FormatError::EndNotSealedLast(keep - 1))
                ))
            );
            let found = check(&file, &cipher).expect("check");
            assert_eq!(
                found.misplaced,
                vec![FormatError::EndNotSealedLast(keep - 1)]
            );
            assert_eq!(
                Damage::Blocks(found.clone()).to_string(),
                format!(
                    "block {} ends the file but is not sealed as its last block: the file was cut short",
                    keep - 1
                )
            );
            assert_eq!(
                mend_tail(&file, &cipher, &found).expect("mend"),
                (None, Some(keep - 1))
            );
            assert!(check(&file, &cipher).expect("check").is_clean());
            assert_eq!(
                read(&file, &cipher, 0, 1 << 20).expect("read"),
                plain[..end as usize]
            );
        }
    }

    #[test]
    fn blocks_added_after_the_end_are_named_and_left() {
        // Two copies of one file (same DEK and file id): the shorter ends at block 2, the
        // longer goes on. The longer copy's block 3 appended to the shorter one.
        let long = pattern(4 * FULL + 50);
        let (_dir, file, cipher) = cipher_file(&long);
        let mut block3 = vec![0u8; 50 + BLOCK_OVERHEAD as usize];
        file.read_exact_at(&mut block3, block_cipher_offset(4))
            .expect("read the other copy's last block");
        crate::fs::content::truncate(&file, &cipher, 4 * BLOCK_PLAIN_LEN).expect("shorter copy");
        assert!(check(&file, &cipher).expect("check").is_clean());
        file.write_all_at(&block3, block_cipher_offset(4))
            .expect("append");
        assert_eq!(
            read(&file, &cipher, 3 * FULL as u64, 10),
            Err(format!(
                "{:?}",
                ContentError::Corrupt(FormatError::LastBlockInside(3))
            ))
        );
        assert_eq!(
            read(&file, &cipher, 4 * FULL as u64, 50).expect("the added block opens"),
            long[4 * FULL..]
        );
        let found = check(&file, &cipher).expect("check");
        assert_eq!(found.misplaced, vec![FormatError::LastBlockInside(3)]);
        assert!(found.failed.is_empty());
        // Nothing at the end to mend: the added block authenticates as a last block.
        assert_eq!(
            mend_tail(&file, &cipher, &found).expect("mend"),
            (None, None)
        );
        assert!(!check(&file, &cipher).expect("check").is_clean());
    }
}
