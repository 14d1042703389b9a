//! Self-describing file content for the fsstress tool: a file is either empty or starts with a
//! 48-byte stamp that says which content it must hold, so a file can be checked without knowing
//! its history, its path or who wrote it last.
//!
//! ```text
//! offset  len  field
//!      0    8  magic "KFSXSTMP"
//!      8    8  file id, u64 LE: the writer thread and a serial, independent of the path
//!     16    8  generation, u64 LE: bumped at every whole rewrite
//!     24    8  stream length, u64 LE: bytes [0, stream length) follow the stream of
//!              (id, generation), the stamp itself standing over its first 48 bytes
//!     32    8  size, u64 LE: bytes [stream length, size) are zeros (a truncate up)
//!     40    8  check, u64 LE: a hash of the fields above
//! ```

/// The length of the stamp; a non-empty file is at least this long.
pub const STAMP_LEN: u64 = 48;

const MAGIC: [u8; 8] = *b"KFSXSTMP";

/// What a file must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp {
    pub id: u64,
    pub generation: u64,
    pub stream_len: u64,
    pub size: u64,
}

/// A 64-bit mixing function (splitmix64's finaliser).
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("BUG: 8 bytes"))
}

impl Stamp {
    fn check(&self) -> u64 {
        mix(mix(mix(mix(self.id) ^ self.generation) ^ self.stream_len) ^ self.size)
    }

    /// The stamp's 48 bytes.
    pub fn encode(&self) -> [u8; STAMP_LEN as usize] {
        let mut out = [0u8; STAMP_LEN as usize];
        out[..8].copy_from_slice(&MAGIC);
        for (i, field) in [
            self.id,
            self.generation,
            self.stream_len,
            self.size,
            self.check(),
        ]
        .into_iter()
        .enumerate()
        {
            out[8 + 8 * i..16 + 8 * i].copy_from_slice(&field.to_le_bytes());
        }
        out
    }

    /// Parses a stamp; says what is wrong with it otherwise.
    pub fn decode(bytes: &[u8]) -> Result<Stamp, String> {
        if bytes.len() < STAMP_LEN as usize {
            return Err(format!(
                "{} bytes: too short for a stamp ({STAMP_LEN})",
                bytes.len()
            ));
        }
        if bytes[..8] != MAGIC {
            return Err(format!("no stamp magic: found {:02x?}", &bytes[..8]));
        }
        let stamp = Stamp {
            id: u64_at(bytes, 8),
            generation: u64_at(bytes, 16),
            stream_len: u64_at(bytes, 24),
            size: u64_at(bytes, 32),
        };
        let check = u64_at(bytes, 40);
        if check != stamp.check() {
            return Err(format!(
                "stamp {stamp:?}: check {check:#x}, expected {:#x}",
                stamp.check()
            ));
        }
        if stamp.stream_len < STAMP_LEN || stamp.stream_len > stamp.size {
            return Err(format!("stamp {stamp:?}: lengths out of order"));
        }
        Ok(stamp)
    }

    /// Bytes `[from, to)` of the stream of (id, generation).
    pub fn stream(&self, from: u64, to: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity((to - from) as usize);
        let seed = mix(self.id) ^ mix(!self.generation);
        let mut word_no = from / 8;
        while (out.len() as u64) < to - from {
            let word = mix(seed ^ word_no).to_le_bytes();
            let skip = if word_no == from / 8 { from % 8 } else { 0 } as usize;
            let want = (to - from) as usize - out.len();
            let take = (8 - skip).min(want);
            out.extend_from_slice(&word[skip..skip + take]);
            word_no += 1;
        }
        out
    }

    /// The whole content the stamp describes.
    pub fn content(&self) -> Vec<u8> {
        let mut out = self.stream(0, self.stream_len);
        out[..STAMP_LEN as usize].copy_from_slice(&self.encode());
        out.resize(self.size as usize, 0);
        out
    }
}

/// Checks that `bytes` is a self-consistent file: empty (`None`), or a stamp and exactly the
/// content it describes. The error says where it first differs.
pub fn verify(bytes: &[u8]) -> Result<Option<Stamp>, String> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let stamp = Stamp::decode(bytes)?;
    let expected = stamp.content();
    match super::oplog::first_difference(0, &expected, bytes) {
        None => Ok(Some(stamp)),
        Some(diff) => Err(format!("content of {stamp:?}: {diff}")),
    }
}

#[test]
fn a_stamped_content_verifies_and_any_changed_byte_does_not() {
    let stamp = Stamp {
        id: 3 << 32 | 7,
        generation: 2,
        stream_len: 5000,
        size: 9001,
    };
    let content = stamp.content();
    assert_eq!(content.len(), 9001);
    assert_eq!(verify(&content), Ok(Some(stamp)));
    assert_eq!(verify(&[]), Ok(None));
    assert_eq!(stamp.stream(13, 40), stamp.stream(0, 40)[13..]);
    for at in [0, 8, 40, 47, 48, 4999, 5000, 9000] {
        let mut bad = content.clone();
        bad[at] ^= 1;
        assert!(verify(&bad).is_err(), "a flipped byte at {at} passes");
    }
    assert!(verify(&content[..9000]).is_err(), "a short file passes");
    let mut long = content.clone();
    long.push(0);
    assert!(verify(&long).is_err(), "a long file passes");
    assert!(verify(&content[..20]).is_err(), "a cut stamp passes");
}
