//! File content through the format: read, write (read-modify-write of partial blocks) and
//! truncate of one cipher file with its [`FileCipher`]. Positional I/O only; the caller holds
//! the file's lock.

use crate::format::{
    BLOCK_CIPHER_LEN, BLOCK_OVERHEAD, BLOCK_PLAIN_LEN, CipherExtent, FileCipher, FormatError,
    Place, block_cipher_offset, cipher_size,
};
use std::cell::RefCell;
use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
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
    /// Set once the end of the file was checked before a first change ([`mend_end`]): damage
    /// at the end comes from before the mount, and the mount's own writes keep the end sound.
    end_checked: std::sync::atomic::AtomicBool,
    /// The seals of the file's content key (header version 2).
    pub seals: super::budget::SealCount,
}

impl FileState {
    /// True the first time it is asked while the file is loaded: whether a change must check
    /// the end of the file first.
    pub fn first_change(&self) -> bool {
        !self
            .end_checked
            .swap(true, std::sync::atomic::Ordering::Relaxed)
    }

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

/// What [`mend_end`] mended at the end of a cipher file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mended {
    /// The file's extent when it ended in a torn block, now cut off.
    pub torn: Option<CipherExtent>,
    /// The last block, re-sealed as the last one: it was whole but sealed as an inner block
    /// (or was a hole), as a crash between the two writes of an append or a truncate leaves it.
    pub resealed: Option<u64>,
}

/// Mends the damage a crash leaves at the end of a cipher file so that the file can be written
/// again, losing nothing a reader could get: cuts a torn tail, then (header version 2, when
/// `check_last` or when a tail was cut) re-seals the last block as the last one when it is whole
/// but sealed as an inner block. A block that does not authenticate is left alone.
pub fn mend_end(
    file: &File,
    cipher: &FileCipher,
    check_last: bool,
) -> Result<Mended, ContentError> {
    let torn = cut_torn_tail(file)?;
    let mut mended = Mended {
        torn,
        resealed: None,
    };
    if !cipher.marks_last() || !(check_last || torn.is_some()) {
        return Ok(mended);
    }
    let plain = plain_len(file)?;
    if plain == 0 {
        return Ok(mended);
    }
    let index = (plain - 1) / BLOCK_PLAIN_LEN;
    let len = (plain - index * BLOCK_PLAIN_LEN) as usize;
    match read_block(file, cipher, index, Place::Last, len) {
        Ok(_) | Err(ContentError::Corrupt(FormatError::BlockAuth(_))) => {}
        Err(ContentError::Corrupt(FormatError::EndNotSealedLast(_))) => {
            let block = read_block(file, cipher, index, Place::Inner, len)?;
            seal_and_write(file, cipher, index, Place::Last, &block)?;
            mended.resealed = Some(index);
        }
        Err(e) => return Err(e),
    }
    Ok(mended)
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

/// Opens block `index` at `place`, which fills `buf[src..]` as read from disk, to the front of
/// `buf` ([`FileCipher::open_block_to_front`]); a block that fails is read again and told apart
/// ([`FileCipher::diagnose`]: whole but in the wrong place, or damaged).
pub(super) fn open_block(
    file: &File,
    cipher: &FileCipher,
    index: u64,
    place: Place,
    buf: &mut [u8],
    src: usize,
) -> Result<usize, ContentError> {
    match cipher.open_block_to_front(index, place, buf, src) {
        Ok(n) => Ok(n),
        Err(FormatError::BlockAuth(_)) => {
            let mut block = vec![0u8; buf.len() - src];
            read_exact_at(file, &mut block, block_cipher_offset(index))?;
            Err(cipher.diagnose(index, place, &mut block).into())
        }
        Err(e) => Err(e.into()),
    }
}

/// The place of complete block `index` of a file of `extent`: with a torn tail, the torn block
/// was the last, so every complete block is an inner one.
pub(super) fn place_in(extent: &CipherExtent, index: u64) -> Place {
    if extent.torn_len > 0 {
        Place::Inner
    } else {
        Place::of(index, extent.plain_size)
    }
}

/// Reads and opens block `index` at `place`, holding `plain_len` bytes; returns its plaintext.
fn read_block(
    file: &File,
    cipher: &FileCipher,
    index: u64,
    place: Place,
    plain_len: usize,
) -> Result<Vec<u8>, ContentError> {
    let mut block = vec![0u8; plain_len + BLOCK_OVERHEAD as usize];
    read_exact_at(file, &mut block, block_cipher_offset(index))?;
    let n = open_block(file, cipher, index, place, &mut block, 0)?;
    block.truncate(n);
    Ok(block)
}

/// The plaintext of a file's last block `index` (`len` bytes) that a growing write or truncate
/// re-seals, or `None` when the block does not authenticate: a crash tore it, or it was changed.
/// Its bytes are lost either way, so it stays as it is, reading EIO where it is (`fsck` names
/// it), and the file grows past it: the damage stays in that block instead of failing every
/// later append of the file until it is repaired. Logged once, with the file and the block.
fn passed_last_block(
    file: &File,
    cipher: &FileCipher,
    index: u64,
    len: usize,
) -> Result<Option<Vec<u8>>, ContentError> {
    match read_block(file, cipher, index, Place::Last, len) {
        Ok(block) => Ok(Some(block)),
        Err(ContentError::Corrupt(FormatError::BlockAuth(_))) => {
            let proc_path = crate::sys::proc_fd_path(std::os::fd::AsFd::as_fd(file));
            let path = std::fs::read_link(std::ffi::OsStr::from_bytes(proc_path.to_bytes()))
                .map_or_else(|_| "?".to_string(), |p| p.display().to_string());
            tracing::error!(
                path,
                block = index,
                "block authentication failed: the file grows past it, and it stays as it is (reading it gives EIO)"
            );
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Seals `plain` as block `index` at `place` and writes it.
fn seal_and_write(
    file: &File,
    cipher: &FileCipher,
    index: u64,
    place: Place,
    plain: &[u8],
) -> Result<(), ContentError> {
    let mut out = vec![0u8; plain.len() + BLOCK_OVERHEAD as usize];
    cipher.seal_block(index, place, plain, &mut out);
    file.write_all_at(&out, block_cipher_offset(index))?;
    Ok(())
}

/// Reads up to `size` plaintext bytes at `offset` into `buf` and returns the range of `buf`
/// that holds them. `buf` is a reused buffer: it only ever grows.
///
/// A file with a torn tail reads as its complete blocks, and a read at or past their end
/// answers the torn block's error ([`FormatError::TornBlock`]) where a whole file would answer
/// the end of the file, so that a reader learns the file is cut short. (Its complete blocks
/// are then all inner ones: the torn block was the last.)
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
        let place = place_in(&extent, index);
        dst += open_block(
            file,
            cipher,
            index,
            place,
            &mut buf[dst..src + block_len],
            src - dst,
        )?;
        src += block_len;
    }
    let skip = (offset - first * BLOCK_PLAIN_LEN) as usize;
    Ok(skip..skip + (end - offset) as usize)
}

/// Before blocks from `first` on are written to a file of `old` bytes that then holds `new`:
/// the old last block, when the write does not cover it and the file grows past it, is
/// re-sealed whole (zero-extended when short) as an inner block. When it sits right before
/// `first` it is appended to `out`, so that one write covers it and the new blocks, and its
/// index is returned; otherwise it is written at once and `first` is returned.
///
/// Of the two writes a growing file gets, the old last block goes first: a crash between them
/// leaves a file that ends in an inner block, which [`mend_end`] and `fsck --repair` re-seal,
/// never a last block in the middle.
fn reseal_passed_end(
    file: &File,
    cipher: &FileCipher,
    old: u64,
    new: u64,
    first: u64,
    out: &mut Vec<u8>,
) -> Result<u64, ContentError> {
    if old == 0 {
        return Ok(first);
    }
    let index = (old - 1) / BLOCK_PLAIN_LEN;
    let len = (old - index * BLOCK_PLAIN_LEN) as usize;
    let passed = index < first && new > old && (new - 1) / BLOCK_PLAIN_LEN > index;
    let short = len < BLOCK_PLAIN_LEN as usize;
    if !passed || !(short || cipher.marks_last()) {
        return Ok(first);
    }
    let Some(mut block) = passed_last_block(file, cipher, index, len)? else {
        return Ok(first);
    };
    block.resize(BLOCK_PLAIN_LEN as usize, 0);
    if index + 1 == first {
        cipher.seal_block_append(index, Place::Inner, &block, out);
        return Ok(index);
    }
    seal_and_write(file, cipher, index, Place::Inner, &block)?;
    Ok(first)
}

/// Seals the whole blocks of `data` for a block-aligned write at block `first`, all but the
/// last, into `out`, after room for one block: this part depends on nothing in the file, so it
/// runs before the file's lock is taken, and the sealing of several requests proceeds in
/// parallel. [`write_sealed`] finishes the write under the lock.
pub fn seal_blocks(cipher: &FileCipher, first: u64, data: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(
        (data.len().div_ceil(BLOCK_PLAIN_LEN as usize) + 1) * BLOCK_OVERHEAD as usize
            + data.len()
            + BLOCK_PLAIN_LEN as usize,
    );
    out.resize(BLOCK_CIPHER_LEN as usize, 0);
    let blocks = data.len().div_ceil(BLOCK_PLAIN_LEN as usize);
    let inner = &data[..(blocks.saturating_sub(1) * BLOCK_PLAIN_LEN as usize)];
    for (i, plain) in inner.chunks(BLOCK_PLAIN_LEN as usize).enumerate() {
        cipher.seal_block_append(first + i as u64, Place::Inner, plain, out);
    }
}

/// Finishes a block-aligned write of `data` at block `first` whose blocks [`seal_blocks`]
/// sealed into `sealed`: seals the request's last block at its place in the file, re-seals the
/// old last block when the file grows past it, and writes.
pub fn write_sealed(
    file: &File,
    cipher: &FileCipher,
    first: u64,
    data: &[u8],
    sealed: &mut Vec<u8>,
) -> Result<(), ContentError> {
    if data.is_empty() {
        return Ok(());
    }
    let old = plain_len(file)?;
    let blocks = data.len().div_ceil(BLOCK_PLAIN_LEN as usize) as u64;
    let last = first + blocks - 1;
    let new = old.max(first * BLOCK_PLAIN_LEN + data.len() as u64);
    let tail = &data[((blocks - 1) * BLOCK_PLAIN_LEN) as usize..];
    cipher.seal_block_append(last, Place::of(last, new), tail, sealed);
    // The room before the sealed blocks takes the old last block when it must be re-sealed
    // right before them.
    let mut before = Vec::new();
    let start = reseal_passed_end(file, cipher, old, new, first, &mut before)?;
    let from = if start < first {
        let at = BLOCK_CIPHER_LEN as usize - before.len();
        sealed[at..BLOCK_CIPHER_LEN as usize].copy_from_slice(&before);
        at
    } else {
        BLOCK_CIPHER_LEN as usize
    };
    let bytes = &sealed[from..];
    file.write_all_at(bytes, block_cipher_offset(start))?;
    if bytes.len() >= WRITE_BEHIND_MIN {
        // Best effort: failing to start writeback early loses nothing.
        let _ = crate::sys::start_writeback(
            std::os::fd::AsFd::as_fd(file),
            block_cipher_offset(start),
            bytes.len() as u64,
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
    let new = old.max(end);
    let first = offset / BLOCK_PLAIN_LEN;
    let last = (end - 1) / BLOCK_PLAIN_LEN;
    out.clear();
    let start = reseal_passed_end(file, cipher, old, new, first, out)?;
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
        let place = Place::of(index, new);
        if from == 0 && to >= existing {
            // Covered from its start to at least its old end: nothing of it to keep.
            cipher.seal_block_append(index, place, src, out);
            continue;
        }
        plain_block.clear();
        if existing > 0 {
            let old_place = Place::of(index, old);
            plain_block.extend_from_slice(&read_block(file, cipher, index, old_place, existing)?);
        }
        plain_block.resize(existing.max(to), 0);
        plain_block[from..to].copy_from_slice(src);
        cipher.seal_block_append(index, place, &plain_block, out);
    }
    file.write_all_at(out, block_cipher_offset(start))?;
    Ok(())
}

/// Sets the plaintext size to `new` (not 0: [`make_empty`] empties a file). Shrinking re-seals
/// the new last block; growing re-seals the old last block to its new length (and place) and,
/// in header version 2, writes the new last block as sealed zeros; the blocks between are left
/// as holes (sparse).
pub fn truncate(file: &File, cipher: &FileCipher, new: u64) -> Result<(), ContentError> {
    if new == 0 {
        make_empty(file)?;
        return Ok(());
    }
    let old = plain_len(file)?;
    if new == old {
        return Ok(());
    }
    let new_last = (new - 1) / BLOCK_PLAIN_LEN;
    let new_last_len = (new - new_last * BLOCK_PLAIN_LEN) as usize;
    if new < old {
        let cut_inside = new_last_len < BLOCK_PLAIN_LEN as usize;
        if !cut_inside && !cipher.marks_last() {
            file.set_len(cipher_size(new))?;
            return Ok(());
        }
        let existing = ((old - new_last * BLOCK_PLAIN_LEN).min(BLOCK_PLAIN_LEN)) as usize;
        let mut block = read_block(file, cipher, new_last, Place::of(new_last, old), existing)?;
        block.truncate(new_last_len);
        // Cut first: a crash in between leaves damage at the end only.
        file.set_len(cipher_size(new))?;
        return seal_and_write(file, cipher, new_last, Place::Last, &block);
    }
    if old > 0 {
        let index = (old - 1) / BLOCK_PLAIN_LEN;
        let len = (old - index * BLOCK_PLAIN_LEN) as usize;
        let stays_last = index == new_last;
        if (stays_last || len < BLOCK_PLAIN_LEN as usize || cipher.marks_last())
            && let Some(mut block) = passed_last_block(file, cipher, index, len)?
        {
            let (new_len, place) = if stays_last {
                (new_last_len, Place::Last)
            } else {
                (BLOCK_PLAIN_LEN as usize, Place::Inner)
            };
            block.resize(new_len, 0);
            seal_and_write(file, cipher, index, place, &block)?;
        }
    }
    let made_new_last = old == 0 || new_last > (old - 1) / BLOCK_PLAIN_LEN;
    if cipher.marks_last() && made_new_last {
        seal_and_write(
            file,
            cipher,
            new_last,
            Place::Last,
            &vec![0u8; new_last_len],
        )?;
    }
    file.set_len(cipher_size(new))?;
    Ok(())
}

/// Makes plaintext `[from, to)` of a file read as zeros (`to` at most its size): whole blocks
/// through `clear(cipher_offset, cipher_len)`, which leaves them all-zero on disk (a punched
/// hole or zeroed range: a hole, which reads as zeros), the partly covered blocks at the two
/// ends re-sealed with zeros in their part of the range. In header version 2 the last block is
/// never made a hole: it is re-sealed with zeros.
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
    // The last block counts as whole when the range reaches the end of the file (unless it must
    // stay sealed as the last).
    let whole_to = if to >= plain && !cipher.marks_last() {
        plain.div_ceil(BLOCK_PLAIN_LEN)
    } else if to >= plain {
        (plain - 1) / BLOCK_PLAIN_LEN
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

/// Seals every block of the file that is not a hole again under `cipher`'s content key (a
/// re-keying cipher opens each under either epoch's key). Returns the blocks sealed.
pub fn reseal_all(file: &File, cipher: &FileCipher) -> Result<u64, ContentError> {
    let plain = plain_len(file)?;
    let blocks = plain.div_ceil(BLOCK_PLAIN_LEN);
    let mut raw = vec![0u8; BLOCK_CIPHER_LEN as usize];
    let mut out = vec![0u8; BLOCK_CIPHER_LEN as usize];
    let mut resealed = 0;
    for index in 0..blocks {
        let len = ((plain - index * BLOCK_PLAIN_LEN).min(BLOCK_PLAIN_LEN)) as usize;
        let raw = &mut raw[..len + BLOCK_OVERHEAD as usize];
        read_exact_at(file, raw, block_cipher_offset(index))?;
        let place = Place::of(index, plain);
        if place == Place::Inner && raw.iter().all(|&b| b == 0) {
            continue;
        }
        let n = open_block(file, cipher, index, place, raw, 0)?;
        let out = &mut out[..n + BLOCK_OVERHEAD as usize];
        cipher.seal_block(index, place, &raw[..n], out);
        file.write_all_at(out, block_cipher_offset(index))?;
        resealed += 1;
    }
    Ok(resealed)
}

/// Whether the last block of a file of `plain` bytes (not 0) opens to all zeros: a version 2
/// file's last block is sealed zeros where a version 1 file would have a hole.
pub fn last_block_is_zeros(
    file: &File,
    cipher: &FileCipher,
    plain: u64,
) -> Result<bool, ContentError> {
    let index = (plain - 1) / BLOCK_PLAIN_LEN;
    let len = (plain - index * BLOCK_PLAIN_LEN) as usize;
    let block = read_block(file, cipher, index, Place::Last, len)?;
    Ok(block.iter().all(|&b| b == 0))
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
            refused(truncate(&file, &cipher, 5 * FULL as u64)),
            torn(2, 5)
        );
        let data = [1u8; FULL];
        let mut sealed = Vec::new();
        seal_blocks(&cipher, 3, &data, &mut sealed);
        assert_eq!(
            refused(write_sealed(&file, &cipher, 3, &data, &mut sealed)),
            torn(2, 5)
        );
        assert_eq!(
            file.metadata().expect("stat").len(),
            block_cipher_offset(2) + 5,
            "nothing written"
        );

        let mended = mend_end(&file, &cipher, false).expect("mend");
        let cut = mended.torn.expect("there was a tail");
        assert_eq!((cut.plain_size, cut.torn_len), (2 * FULL as u64, 5));
        // The torn block was the last: the block the file now ends with is re-sealed as such.
        assert_eq!(mended.resealed, Some(1));
        assert_eq!(file.metadata().expect("stat").len(), block_cipher_offset(2));
        assert_eq!(
            mend_end(&file, &cipher, true).expect("mend"),
            Mended::default(),
            "once"
        );
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

    #[test]
    fn a_re_keying_file_reads_under_either_epoch_and_is_resealed_under_the_new_one() {
        use crate::format::Keying;
        let plain = pattern(5 * FULL + 77);
        let (_dir, file, epoch0) = cipher_file(&plain);
        let rekeying = epoch0.with_keying(Keying {
            epoch: 1,
            rekeying: true,
            seals: 0,
        });
        let epoch1 = epoch0.with_keying(Keying {
            epoch: 1,
            rekeying: false,
            seals: 0,
        });
        // A crash in the middle of a re-key: block 2 is under epoch 1, the others under 0.
        let mut out = Vec::new();
        write(
            &file,
            &rekeying,
            2 * FULL as u64,
            &plain[2 * FULL..3 * FULL],
            &mut out,
        )
        .expect("write under the new key");
        assert_eq!(
            read(&file, &rekeying, 0, 1 << 20).expect("either key"),
            plain
        );
        assert!(read(&file, &epoch0, 2 * FULL as u64, 10).is_err());
        assert!(read(&file, &epoch1, 0, 10).is_err());
        // Finishing the re-key: every block under epoch 1, holes left alone.
        zero_range(
            &file,
            &rekeying,
            FULL as u64,
            2 * FULL as u64,
            |from, len| file.write_all_at(&vec![0u8; len as usize], from),
        )
        .expect("a hole");
        assert_eq!(reseal_all(&file, &rekeying).expect("reseal"), 5);
        let mut expected = plain.clone();
        expected[FULL..2 * FULL].fill(0);
        assert_eq!(read(&file, &epoch1, 0, 1 << 20).expect("epoch 1"), expected);
        assert!(block_is_hole(&file, 1, cipher_size(plain.len() as u64)).expect("hole"));
        assert!(read(&file, &epoch0, 0, 10).is_err());
    }
}
