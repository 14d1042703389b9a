//! A property test of the content layer: random sequences of writes, truncates, allocations
//! (with keep-size, punched holes and zeroed ranges) and reads at offsets around block
//! boundaries, through `CryptFs` without a mount, against a model (a `Vec<u8>`). After every
//! step the file reads as the model and `getattr` gives its size; at the end a fresh `CryptFs`
//! (new DEK cache) over the same directory reads the same bytes. Files start empty (a version 2
//! header is made at the first write) or as a version 1 file written by hand, as earlier builds
//! left them. proptest shrinks a failure to a minimal sequence.
//!
//! `PROPTEST_CASES=N` runs N cases instead of proptest's 256.

use super::tests::ME;
use super::*;
use crate::cache::DekCache;
use crate::format::{self, Place};
use crate::kms::embedded::{self, EmbeddedKms};
use proptest::prelude::*;
use std::ffi::OsStr;
use std::os::unix::fs::FileExt;
use std::time::Duration;
use uuid::Uuid;

const BLOCK: u64 = format::BLOCK_PLAIN_LEN;
/// Files stay under this size (10 blocks).
const MAX_SIZE: u64 = 10 * BLOCK;
const FS_ID: format::FsId = [7; 16];

/// One step of a sequence.
#[derive(Debug, Clone)]
enum Op {
    /// Writes `len` bytes of a pattern made from `seed` at `offset`.
    Write { offset: u64, len: u64, seed: u8 },
    /// Sets the size (`setattr`).
    Truncate { size: u64 },
    /// `fallocate` of `[offset, offset + len)` with `mode` (none when `len` is 0: the kernel
    /// refuses it).
    Fallocate { offset: u64, len: u64, mode: i32 },
    /// Reads `len` bytes at `offset` and compares them with the model.
    Read { offset: u64, len: u64 },
    /// Closes the handle and opens the file again.
    Reopen,
}

/// The modes `fallocate` supports.
const MODES: [i32; 5] = [
    0,
    libc::FALLOC_FL_KEEP_SIZE,
    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
    libc::FALLOC_FL_ZERO_RANGE,
    libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
];

/// An offset, mostly a few bytes from a block boundary.
fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => (0..=MAX_SIZE / BLOCK, -3i64..=3).prop_map(|(block, delta)| {
            (block * BLOCK).saturating_add_signed(delta).min(MAX_SIZE)
        }),
        1 => 0..=MAX_SIZE,
    ]
}

/// A length: 0, a few bytes, about a block, or up to a few blocks.
fn length() -> impl Strategy<Value = u64> {
    prop_oneof![
        1 => Just(0u64),
        2 => 1..16u64,
        2 => (0..=2u64, -2i64..=2).prop_map(|(blocks, delta)| {
            (blocks * BLOCK).saturating_add_signed(delta)
        }),
        2 => 1..=3 * BLOCK,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (offset(), length(), any::<u8>())
            .prop_map(|(offset, len, seed)| Op::Write { offset, len: len.min(MAX_SIZE - offset), seed }),
        2 => offset().prop_map(|size| Op::Truncate { size }),
        3 => (offset(), length(), 0..MODES.len()).prop_map(|(offset, len, mode)| Op::Fallocate {
            offset,
            len: len.min(MAX_SIZE - offset),
            mode: MODES[mode],
        }),
        2 => (offset(), length()).prop_map(|(offset, len)| Op::Read { offset, len }),
        1 => Just(Op::Reopen),
    ]
}

/// The bytes a write of `len` at `offset` with `seed` writes: never all zeros, so a block that
/// should hold them cannot pass for a hole.
fn pattern(offset: u64, len: u64, seed: u8) -> Vec<u8> {
    (offset..offset + len)
        .map(|i| ((i % 251) as u8 ^ seed) | 1)
        .collect()
}

/// What the file should hold.
#[derive(Debug, Default)]
struct Model(Vec<u8>);

impl Model {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn grow_to(&mut self, size: u64) {
        if size > self.len() {
            self.0.resize(size as usize, 0);
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Write { offset, len, seed } if len > 0 => {
                self.grow_to(offset + len);
                self.0[offset as usize..(offset + len) as usize]
                    .copy_from_slice(&pattern(offset, len, seed));
            }
            Op::Truncate { size } => self.0.resize(size as usize, 0),
            Op::Fallocate { offset, len, mode } => {
                let end = offset + len;
                if mode & libc::FALLOC_FL_PUNCH_HOLE != 0 || mode & libc::FALLOC_FL_ZERO_RANGE != 0
                {
                    let zero_end = end.min(self.len());
                    if offset < zero_end {
                        self.0[offset as usize..zero_end as usize].fill(0);
                    }
                }
                if mode & libc::FALLOC_FL_KEEP_SIZE == 0 {
                    self.grow_to(end);
                }
            }
            Op::Write { .. } | Op::Read { .. } | Op::Reopen => {}
        }
    }

    fn read(&self, offset: u64, len: u64) -> &[u8] {
        let from = offset.min(self.len()) as usize;
        let to = offset.saturating_add(len).min(self.len()) as usize;
        &self.0[from..to]
    }
}

/// A cipher directory with its KMS, and a file in it.
struct World {
    dir: tempfile::TempDir,
    kms: Arc<EmbeddedKms>,
    key: Uuid,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let kms = embedded::for_tests(dir.path());
        let key = embedded::test_key(&kms, "k");
        std::fs::create_dir(dir.path().join("cipher")).expect("mkdir");
        World {
            dir,
            kms: Arc::new(kms),
            key,
        }
    }

    fn cipher_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("cipher")
    }

    /// A filesystem over the directory, with a DEK cache of its own.
    fn fs(&self) -> CryptFs {
        let keys = KeyPath::new(
            self.kms.clone(),
            DekCache::new(16, Duration::from_secs(60)),
            FS_ID,
            self.key,
        );
        CryptFs::new(&self.cipher_dir(), keys).expect("fs")
    }

    /// Writes file `name` holding `plain` (not empty) with a version 1 header, as earlier
    /// builds wrote it: every block sealed as an inner one.
    fn write_v1_file(&self, name: &str, plain: &[u8]) {
        let (header, cipher) = crate::fs::keys::v1_header_for_tests(&*self.kms, self.key, &FS_ID);
        let mut bytes = header.to_vec();
        for (index, block) in (0u64..).zip(plain.chunks(BLOCK as usize)) {
            let start = bytes.len();
            bytes.resize(start + block.len() + format::BLOCK_OVERHEAD as usize, 0);
            cipher.seal_block(index, Place::Inner, block, &mut bytes[start..]);
        }
        let file = std::fs::File::create(self.cipher_dir().join(name)).expect("create");
        file.write_all_at(&bytes, 0).expect("write");
    }
}

/// Opens `name` in the root of `fs` for reading and writing: (inode, handle).
fn open(fs: &CryptFs, name: &str) -> (u64, u64) {
    let ino = fs.lookup(ROOT_INO, OsStr::new(name)).expect("lookup").ino;
    (ino, fs.open(ino, libc::O_RDWR).expect("open"))
}

/// The whole file as `fs` reads it through `fh`.
fn read_all(fs: &CryptFs, fh: u64) -> Result<Vec<u8>, FsError> {
    fs.read(fh, 0, (MAX_SIZE + 2 * BLOCK) as u32)
}

/// Runs `ops` on a file that starts as `initial` (empty: a new file, else a version 1 file),
/// checking the file against the model after each, and at the end through a fresh `CryptFs`.
fn run(initial: &[u8], ops: &[Op]) -> Result<(), TestCaseError> {
    let world = World::new();
    let fs = world.fs();
    let (ino, mut fh) = if initial.is_empty() {
        let (attr, fh) = fs
            .create(ROOT_INO, OsStr::new("f"), 0o644, 0, libc::O_RDWR, ME)
            .expect("create");
        (attr.ino, fh)
    } else {
        world.write_v1_file("f", initial);
        open(&fs, "f")
    };
    let mut model = Model(initial.to_vec());
    for (step, op) in ops.iter().enumerate() {
        let done = match *op {
            Op::Write { offset, len, seed } => {
                fs.write(fh, offset, &pattern(offset, len, seed)).map(|n| {
                    prop_assert_eq!(u64::from(n), len, "step {}: short write", step);
                    Ok(())
                })
            }
            Op::Truncate { size } => {
                let change = SetAttr {
                    size: Some(size),
                    ..SetAttr::default()
                };
                fs.setattr(ino, change, Some(fh), ME).map(|_| Ok(()))
            }
            Op::Fallocate { offset, len, mode } => {
                if len == 0 {
                    // The kernel answers EINVAL itself: the filesystem never sees it.
                    continue;
                }
                fs.fallocate(fh, offset, len, mode, ME).map(|()| Ok(()))
            }
            Op::Read { offset, len } => fs.read(fh, offset, len as u32).map(|read| {
                prop_assert_eq!(
                    read.as_slice(),
                    model.read(offset, len),
                    "step {}: a read differs",
                    step
                );
                Ok(())
            }),
            Op::Reopen => {
                fs.release(fh);
                fs.open(ino, libc::O_RDWR).map(|new| {
                    fh = new;
                    Ok(())
                })
            }
        };
        match done {
            Ok(checked) => checked?,
            Err(e) => return Err(TestCaseError::fail(format!("step {step}: {op:?}: {e}"))),
        }
        model.apply(op);
        let size = fs.getattr(ino).map(|a| a.size);
        prop_assert_eq!(size, Ok(model.len()), "step {}: size after {:?}", step, op);
        let read = read_all(&fs, fh);
        prop_assert!(
            read.as_deref() == Ok(model.0.as_slice()),
            "step {}: content after {:?} differs from the model at byte {:?}",
            step,
            op,
            read.as_ref().map(|r| r
                .iter()
                .zip(&model.0)
                .position(|(a, b)| a != b)
                .unwrap_or(r.len().min(model.0.len())))
        );
    }
    fs.release(fh);
    drop(fs);
    let fresh = world.fs();
    let (_, fh) = open(&fresh, "f");
    let read = read_all(&fresh, fh);
    prop_assert!(
        read.as_deref() == Ok(model.0.as_slice()),
        "a fresh mount reads other bytes: {:?}",
        read.map(|r| r.len())
    );
    fresh.release(fh);
    Ok(())
}

/// The content of a version 1 file to start from (none: a new file), around block sizes.
fn initial() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => Just(Vec::new()),
        1 => (1..=2 * BLOCK + 3, any::<u8>()).prop_map(|(len, seed)| pattern(0, len, seed)),
    ]
}

// proptest's default of 256 cases (about 4 s in a debug build); `PROPTEST_CASES` sets more.
proptest! {
    #[test]
    fn content_matches_a_model(initial in initial(), ops in proptest::collection::vec(op(), 1..24)) {
        run(&initial, &ops)?;
    }
}

#[test]
fn the_model_punches_zeroes_and_keeps_sizes() {
    let mut model = Model(vec![1; 10]);
    model.apply(&Op::Fallocate {
        offset: 2,
        len: 20,
        mode: MODES[2],
    });
    assert_eq!(model.0, [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    model.apply(&Op::Fallocate {
        offset: 12,
        len: 3,
        mode: 0,
    });
    assert_eq!(model.len(), 15);
    model.apply(&Op::Fallocate {
        offset: 20,
        len: 3,
        mode: MODES[4],
    });
    assert_eq!(model.len(), 15);
    assert_eq!(model.read(14, 10), [0]);
    assert_eq!(model.read(40, 10), [] as [u8; 0]);
}
