//! File content through the format: read, write (read-modify-write of partial blocks) and
//! truncate of one cipher file with its [`FileCipher`]. Positional I/O only; the caller holds
//! the file's lock.

use crate::format::{
    BLOCK_CIPHER_LEN, BLOCK_OVERHEAD, BLOCK_PLAIN_LEN, CipherExtent, FileCipher, FormatError,
    block_cipher_offset, cipher_size,
};
use std::cell::RefCell;
use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

thread_local! {
    /// One I/O buffer per request thread, kept across requests: a fresh buffer of up to 1 MiB
    /// per request costs page faults and zeroing on every read and write.
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's reusable I/O buffer (a fresh one if it is already in use).
pub fn with_buffer<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    BUFFER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => f(&mut buf),
        Err(_) => f(&mut Vec::new()),
    })
}

/// State shared by every open handle of one regular file: its cipher once known, behind the
/// lock that orders reads (shared) against writes and truncates (exclusive).
#[derive(Default)]
pub struct FileState {
    /// `None` while the file is empty and has no header.
    pub cipher: RwLock<Option<Arc<FileCipher>>>,
    /// Damaged blocks already logged while the file is open: the kernel retries a failed read
    /// (readahead, then page by page), and one damaged block deserves one log line.
    reported: Mutex<HashSet<u64>>,
}

impl FileState {
    /// True the first time `block` is reported while this file is open.
    pub fn first_report(&self, block: u64) -> bool {
        self.reported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(block)
    }
}

/// Why a content operation failed.
#[derive(Debug)]
pub enum ContentError {
    /// The backing file failed.
    Io(io::Error),
    /// The bytes on disk are not a valid cipher file (bad size, failed block).
    Corrupt(FormatError),
}

impl From<io::Error> for ContentError {
    fn from(e: io::Error) -> Self {
        ContentError::Io(e)
    }
}

impl From<FormatError> for ContentError {
    fn from(e: FormatError) -> Self {
        ContentError::Corrupt(e)
    }
}

/// Empties a cipher file (its header goes too), under the file's advisory lock so that a
/// concurrent `kmsfs rewrap` never writes an old header over a new one.
pub fn make_empty(file: &File) -> io::Result<()> {
    file.lock()?;
    let result = file.set_len(0);
    file.unlock()?;
    result
}

/// The complete blocks of the open cipher file, and its torn tail if it has one.
pub fn extent(file: &File) -> Result<CipherExtent, ContentError> {
    Ok(CipherExtent::of(file.metadata()?.len())?)
}

/// The plaintext size of the open cipher file, for a change of its content or size: a file
/// with a torn tail is refused ([`FormatError::TornBlock`]) until [`cut_torn_tail`] cut it, so
/// that no write leaves the torn bytes inside the file, where they would fail as a block.
pub fn plain_len(file: &File) -> Result<u64, ContentError> {
    let extent = extent(file)?;
    match extent.torn_error() {
        Some(torn) => Err(torn.into()),
        None => Ok(extent.plain_size),
    }
}

/// Cuts a torn tail off the open cipher file (the bytes after its complete blocks that make no
/// block; they hold nothing that could ever be authenticated), so that it can be written again.
/// Returns the extent the file had when it had a torn tail, `None` when it had none.
pub fn cut_torn_tail(file: &File) -> Result<Option<CipherExtent>, ContentError> {
    let extent = extent(file)?;
    if extent.torn_len == 0 {
        return Ok(None);
    }
    file.set_len(extent.complete_cipher_size())?;
    Ok(Some(extent))
}

/// Reads `buf.len()` bytes at `offset`; a file shorter than that is corrupt.
pub(super) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> Result<(), ContentError> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => {
                // The file shrank under us or is shorter than its size said: not a valid file.
                return Err(FormatError::BadCipherSize(offset + done as u64).into());
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Reads and opens block `index` holding `plain_len` bytes; returns its plaintext.
fn read_block(
    file: &File,
    cipher: &FileCipher,
    index: u64,
    plain_len: usize,
) -> Result<Vec<u8>, ContentError> {
    let mut block = vec![0u8; plain_len + BLOCK_OVERHEAD as usize];
    read_exact_at(file, &mut block, block_cipher_offset(index))?;
    let n = cipher.open_block_to_front(index, &mut block, 0)?;
    block.truncate(n);
    Ok(block)
}

/// Reads up to `size` plaintext bytes at `offset` into `buf` and returns the range of `buf`
/// that holds them. `buf` is a reused buffer: it only ever grows.
///
/// A file with a torn tail reads as its complete blocks, and a read at or past their end
/// answers the torn block's error ([`FormatError::TornBlock`]) where a whole file would answer
/// the end of the file, so that a reader learns the file is cut short.
pub fn read_into(
    file: &File,
    cipher: &FileCipher,
    offset: u64,
    size: u32,
    buf: &mut Vec<u8>,
) -> Result<Range<usize>, ContentError> {
    let extent = extent(file)?;
    let plain = extent.plain_size;
    if size == 0 {
        return Ok(0..0);
    }
    if offset >= plain {
        return match extent.torn_error() {
            Some(torn) => Err(torn.into()),
            None => Ok(0..0),
        };
    }
    let end = plain.min(offset + u64::from(size));
    let first = offset / BLOCK_PLAIN_LEN;
    let last = (end - 1) / BLOCK_PLAIN_LEN;
    let cipher_start = block_cipher_offset(first);
    let cipher_end = block_cipher_offset(last + 1).min(cipher_size(plain));
    let len = (cipher_end - cipher_start) as usize;
    if buf.len() < len {
        buf.resize(len, 0);
    }
    let buf = &mut buf[..len];
    read_exact_at(file, buf, cipher_start)?;
    // Each block is opened towards the front of the buffer, right behind the plaintext of the
    // block before it.
    let (mut src, mut dst) = (0, 0);
    for index in first..=last {
        let block_len = (len - src).min(BLOCK_CIPHER_LEN as usize);
        dst += cipher.open_block_to_front(index, &mut buf[dst..src + block_len], src - dst)?;
        src += block_len;
    }
    let skip = (offset - first * BLOCK_PLAIN_LEN) as usize;
    Ok(skip..skip + (end - offset) as usize)
}

/// Re-seals the last block of a file of `plain` bytes zero-extended to `new_len` bytes (used
/// before the file grows past it, so that only the last block is ever short).
fn extend_last_block(
    file: &File,
    cipher: &FileCipher,
    plain: u64,
    new_len: usize,
) -> Result<(), ContentError> {
    let index = plain / BLOCK_PLAIN_LEN;
    let old_len = (plain % BLOCK_PLAIN_LEN) as usize;
    if old_len == 0 {
        return Ok(());
    }
    let mut block = read_block(file, cipher, index, old_len)?;
    block.resize(new_len, 0);
    let mut out = vec![0u8; new_len + BLOCK_OVERHEAD as usize];
    cipher.seal_block(index, &block, &mut out);
    file.write_all_at(&out, block_cipher_offset(index))?;
    Ok(())
}

/// Before a write at `offset`, past the block that holds the end of a file of `old` bytes:
/// re-seals that block whole, so that only the last block is ever short.
fn complete_last_block_before(
    file: &File,
    cipher: &FileCipher,
    old: u64,
    offset: u64,
) -> Result<(), ContentError> {
    if offset > old && old / BLOCK_PLAIN_LEN < offset / BLOCK_PLAIN_LEN {
        extend_last_block(file, cipher, old, BLOCK_PLAIN_LEN as usize)?;
    }
    Ok(())
}

/// Seals `data`, whole blocks starting at block `first`, and appends them to `out`. This part of
/// a block-aligned write depends on nothing in the file, so it runs before the file's lock is
/// taken, and the sealing of several requests proceeds in parallel.
pub fn seal_blocks(cipher: &FileCipher, first: u64, data: &[u8], out: &mut Vec<u8>) {
    out.reserve(
        data.len().div_ceil(BLOCK_PLAIN_LEN as usize) * BLOCK_OVERHEAD as usize + data.len(),
    );
    for (i, plain) in data.chunks(BLOCK_PLAIN_LEN as usize).enumerate() {
        cipher.seal_block_append(first + i as u64, plain, out);
    }
}

/// Writes whole blocks sealed by [`seal_blocks`] at block `first`, first re-sealing a short
/// last block it would leave behind.
pub fn write_sealed(
    file: &File,
    cipher: &FileCipher,
    first: u64,
    sealed: &[u8],
) -> Result<(), ContentError> {
    if sealed.is_empty() {
        return Ok(());
    }
    let old = plain_len(file)?;
    complete_last_block_before(file, cipher, old, first * BLOCK_PLAIN_LEN)?;
    file.write_all_at(sealed, block_cipher_offset(first))?;
    if sealed.len() >= WRITE_BEHIND_MIN {
        // Best effort: failing to start writeback early loses nothing.
        let _ = crate::sys::start_writeback(
            std::os::fd::AsFd::as_fd(file),
            block_cipher_offset(first),
            sealed.len() as u64,
        );
    }
    Ok(())
}

/// Large aligned writes start the backing file's writeback at once (`sync_file_range`), so a
/// large file streams to disk while it is written instead of all at its fsync.
const WRITE_BEHIND_MIN: usize = 512 * 1024;

/// Writes `data` at plaintext `offset`, reading and re-sealing partly covered blocks; `out` is
/// a reused buffer for the sealed blocks.
pub fn write(
    file: &File,
    cipher: &FileCipher,
    offset: u64,
    data: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), ContentError> {
    if data.is_empty() {
        return Ok(());
    }
    let old = plain_len(file)?;
    let end = offset + data.len() as u64;
    let first = offset / BLOCK_PLAIN_LEN;
    let last = (end - 1) / BLOCK_PLAIN_LEN;
    complete_last_block_before(file, cipher, old, offset)?;
    out.clear();
    let mut plain_block = Vec::with_capacity(BLOCK_PLAIN_LEN as usize);
    for index in first..=last {
        let block_start = index * BLOCK_PLAIN_LEN;
        let from = (offset.max(block_start) - block_start) as usize;
        let to = (end.min(block_start + BLOCK_PLAIN_LEN) - block_start) as usize;
        let src_from = (block_start + from as u64 - offset) as usize;
        let src = &data[src_from..src_from + (to - from)];
        let existing = if block_start < old {
            ((old - block_start).min(BLOCK_PLAIN_LEN)) as usize
        } else {
            0
        };
        if from == 0 && to >= existing {
            // Covered from its start to at least its old end: nothing of it to keep.
            cipher.seal_block_append(index, src, out);
            continue;
        }
        plain_block.clear();
        if existing > 0 {
            plain_block.extend_from_slice(&read_block(file, cipher, index, existing)?);
        }
        plain_block.resize(existing.max(to), 0);
        plain_block[from..to].copy_from_slice(src);
        cipher.seal_block_append(index, &plain_block, out);
    }
    file.write_all_at(out, block_cipher_offset(first))?;
    Ok(())
}

/// Sets the plaintext size to `new`. Shrinking re-seals a cut last block; growing re-seals a
/// short last block to its new length and leaves the rest as holes (sparse). `cipher` is needed
/// whenever a block must be re-sealed; growing an empty file needs the header written first.
pub fn truncate(file: &File, cipher: Option<&FileCipher>, new: u64) -> Result<(), ContentError> {
    if new == 0 {
        make_empty(file)?;
        return Ok(());
    }
    let old = plain_len(file)?;
    if new == old {
        return Ok(());
    }
    let needs_cipher = || ContentError::Corrupt(FormatError::HeaderAuth);
    if new < old {
        let cut = (new % BLOCK_PLAIN_LEN) as usize;
        if cut != 0 {
            let cipher = cipher.ok_or_else(needs_cipher)?;
            let index = new / BLOCK_PLAIN_LEN;
            let existing = ((old - index * BLOCK_PLAIN_LEN).min(BLOCK_PLAIN_LEN)) as usize;
            let mut block = read_block(file, cipher, index, existing)?;
            block.truncate(cut);
            let mut out = vec![0u8; cut + BLOCK_OVERHEAD as usize];
            cipher.seal_block(index, &block, &mut out);
            file.write_all_at(&out, block_cipher_offset(index))?;
        }
    } else if old % BLOCK_PLAIN_LEN != 0 {
        let cipher = cipher.ok_or_else(needs_cipher)?;
        let last_start = (old / BLOCK_PLAIN_LEN) * BLOCK_PLAIN_LEN;
        let new_len = (new - last_start).min(BLOCK_PLAIN_LEN) as usize;
        extend_last_block(file, cipher, old, new_len)?;
    }
    file.set_len(cipher_size(new))?;
    Ok(())
}

/// Makes plaintext `[from, to)` of a file read as zeros (`to` at most its size): whole blocks
/// through `clear(cipher_offset, cipher_len)`, which leaves them all-zero on disk (a punched
/// hole or zeroed range: a hole, which reads as zeros), the partly covered blocks at the two
/// ends re-sealed with zeros in their part of the range.
pub fn zero_range(
    file: &File,
    cipher: &FileCipher,
    from: u64,
    to: u64,
    clear: impl FnOnce(u64, u64) -> io::Result<()>,
) -> Result<(), ContentError> {
    if from >= to {
        return Ok(());
    }
    let plain = plain_len(file)?;
    let whole_from = from.div_ceil(BLOCK_PLAIN_LEN);
    // The last block counts as whole when the range reaches the end of the file.
    let whole_to = if to >= plain {
        plain.div_ceil(BLOCK_PLAIN_LEN)
    } else {
        to / BLOCK_PLAIN_LEN
    };
    let zeros = [0u8; BLOCK_PLAIN_LEN as usize];
    let mut out = Vec::new();
    let mut zero_part = |start: u64, end: u64| -> Result<(), ContentError> {
        if start < end {
            write(
                file,
                cipher,
                start,
                &zeros[..(end - start) as usize],
                &mut out,
            )?;
        }
        Ok(())
    };
    if whole_from >= whole_to {
        // Within one block, or two partial ones.
        let boundary = (from / BLOCK_PLAIN_LEN + 1) * BLOCK_PLAIN_LEN;
        zero_part(from, to.min(boundary))?;
        zero_part(boundary.max(from), to)?;
        return Ok(());
    }
    zero_part(from, whole_from * BLOCK_PLAIN_LEN)?;
    zero_part(whole_to * BLOCK_PLAIN_LEN, to)?;
    let start = block_cipher_offset(whole_from);
    let end = block_cipher_offset(whole_to).min(cipher_size(plain));
    clear(start, end - start)?;
    Ok(())
}

/// Whether cipher block `index` of a file whose cipher size is `cipher_end` is a hole (all its
/// bytes zero; a hole reads as zeros).
pub fn block_is_hole(file: &File, index: u64, cipher_end: u64) -> Result<bool, ContentError> {
    let start = block_cipher_offset(index);
    let len = (cipher_end.saturating_sub(start)).min(BLOCK_CIPHER_LEN) as usize;
    let mut block = [0u8; BLOCK_CIPHER_LEN as usize];
    read_exact_at(file, &mut block[..len], start)?;
    Ok(block[..len].iter().all(|&b| b == 0))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::crypto::Key256;

    /// A cipher file of `plain` pattern bytes (no header: blocks do not depend on it).
    pub(crate) fn cipher_file(plain: &[u8]) -> (tempfile::TempDir, File, FileCipher) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .expect("create");
        let cipher = FileCipher::new(&Key256::random(), [9; 16], crate::format::HeaderVersion::V2);
        file.set_len(512).expect("header room");
        write(&file, &cipher, 0, plain, &mut Vec::new()).expect("write");
        assert_eq!(
            file.metadata().expect("stat").len(),
            cipher_size(plain.len() as u64)
        );
        (dir, file, cipher)
    }

    pub(crate) fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    pub(crate) fn read(
        file: &File,
        cipher: &FileCipher,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>, String> {
        let mut buf = Vec::new();
        read_into(file, cipher, offset, size, &mut buf)
            .map(|range| buf[range].to_vec())
            .map_err(|e| format!("{e:?}"))
    }

    fn torn(index: u64, len: u64) -> String {
        format!(
            "{:?}",
            ContentError::Corrupt(FormatError::TornBlock { index, len })
        )
    }

    pub(crate) const FULL: usize = BLOCK_PLAIN_LEN as usize;

    #[test]
    fn a_torn_tail_reads_as_the_complete_blocks_then_eio() {
        let plain = pattern(3 * FULL + 100);
        for torn_len in [1, 13, 28] {
            let (_dir, file, cipher) = cipher_file(&plain);
            file.set_len(block_cipher_offset(3) + torn_len)
                .expect("tear");
            assert_eq!(
                read(&file, &cipher, 0, 1 << 20).expect("complete blocks"),
                plain[..3 * FULL]
            );
            assert_eq!(
                read(&file, &cipher, FULL as u64 + 5, 10).expect("inside"),
                plain[FULL + 5..FULL + 15]
            );
            // A read across the end of the complete blocks stops there, the next one fails.
            assert_eq!(
                read(&file, &cipher, 3 * FULL as u64 - 10, 100).expect("up to the tail"),
                plain[3 * FULL - 10..3 * FULL]
            );
            for offset in [3 * FULL as u64, 3 * FULL as u64 + 1, 10 * FULL as u64] {
                assert_eq!(read(&file, &cipher, offset, 4096), Err(torn(3, torn_len)));
            }
            assert_eq!(read(&file, &cipher, 3 * FULL as u64, 0), Ok(Vec::new()));
        }
    }

    #[test]
    fn a_file_whose_only_block_is_torn_reads_eio_from_the_start() {
        let (_dir, file, cipher) = cipher_file(&pattern(100));
        file.set_len(512 + 20).expect("tear");
        assert_eq!(read(&file, &cipher, 0, 4096), Err(torn(0, 20)));
        assert_eq!(extent(&file).expect("extent").plain_size, 0);
    }

    #[test]
    fn changes_are_refused_until_the_torn_tail_is_cut() {
        let plain = pattern(2 * FULL + 1);
        let (_dir, file, cipher) = cipher_file(&plain);
        file.set_len(block_cipher_offset(2) + 5).expect("tear");
        let refused = |r: Result<(), ContentError>| format!("{:?}", r.expect_err("refused"));
        assert_eq!(
            refused(write(
                &file,
                &cipher,
                2 * FULL as u64,
                b"x",
                &mut Vec::new()
            )),
            torn(2, 5)
        );
        assert_eq!(
            refused(truncate(&file, Some(&cipher), 5 * FULL as u64)),
            torn(2, 5)
        );
        let sealed = {
            let mut out = Vec::new();
            seal_blocks(&cipher, 3, &[1u8; FULL], &mut out);
            out
        };
        assert_eq!(
            refused(write_sealed(&file, &cipher, 3, &sealed)),
            torn(2, 5)
        );
        assert_eq!(
            file.metadata().expect("stat").len(),
            block_cipher_offset(2) + 5,
            "nothing written"
        );

        let cut = cut_torn_tail(&file)
            .expect("cut")
            .expect("there was a tail");
        assert_eq!((cut.plain_size, cut.torn_len), (2 * FULL as u64, 5));
        assert_eq!(file.metadata().expect("stat").len(), block_cipher_offset(2));
        assert_eq!(cut_torn_tail(&file).expect("cut"), None, "once");
        // Now a file of its complete blocks: it grows, and every block authenticates.
        write(
            &file,
            &cipher,
            4 * FULL as u64,
            b"after a hole",
            &mut Vec::new(),
        )
        .expect("write");
        let mut expected = plain[..2 * FULL].to_vec();
        expected.resize(4 * FULL, 0);
        expected.extend_from_slice(b"after a hole");
        // Every block opens: no torn byte is left inside the file.
        assert_eq!(read(&file, &cipher, 0, 1 << 20).expect("read"), expected);
    }
}
