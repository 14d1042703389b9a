//! The filesystem without a mount over a KMS that fails, hangs, is slow, or refuses a key:
//! `CryptFs` over [`FaultyKms`] around [`MemoryKms`], with the DEK cache end to end.

use super::tests::ME;
use super::*;
use crate::cache::DekCache;
use crate::format::{FileHeader, HEADER_LEN};
use crate::kms::KeyService;
use crate::kms::testing::{Call, Fault, FaultyKms, Gate, MemoryKms, Op};
use std::ffi::OsStr;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use uuid::Uuid;

const FS_ID: crate::format::FsId = [7; 16];

/// How long a test waits for work that must not stall before it calls it a stall.
const STALL: Duration = Duration::from_secs(10);

/// A cipher directory and the KMS behind it; each [`KmsWorld::fs`] is a fresh mount of it.
pub(super) struct KmsWorld {
    dir: tempfile::TempDir,
    pub(super) kms: Arc<FaultyKms<MemoryKms>>,
    pub(super) key: Uuid,
}

impl KmsWorld {
    pub(super) fn new() -> KmsWorld {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("cipher")).expect("mkdir");
        let memory = MemoryKms::new();
        let key = memory.test_key("k");
        KmsWorld {
            dir,
            kms: Arc::new(FaultyKms::new(memory)),
            key,
        }
    }

    pub(super) fn cipher_dir(&self) -> PathBuf {
        self.dir.path().join("cipher")
    }

    /// A key path with a DEK cache of `capacity` entries kept `ttl`.
    pub(super) fn keys(&self, capacity: usize, ttl: Duration) -> KeyPath {
        KeyPath::new(
            self.kms.clone(),
            DekCache::new(capacity, ttl),
            FS_ID,
            self.key,
        )
    }

    /// The filesystem with a cold DEK cache of 16 entries kept a minute.
    pub(super) fn fs(&self) -> CryptFs {
        self.fs_with(16, Duration::from_secs(60))
    }

    pub(super) fn fs_with(&self, capacity: usize, ttl: Duration) -> CryptFs {
        CryptFs::new(&self.cipher_dir(), self.keys(capacity, ttl)).expect("fs")
    }
}

/// Creates file `name` in directory `parent` holding `data`; returns its inode.
pub(super) fn write_file(fs: &CryptFs, parent: u64, name: &str, data: &[u8]) -> u64 {
    let (attr, fh) = fs
        .create(parent, OsStr::new(name), 0o644, 0o022, libc::O_RDWR, ME)
        .expect("create");
    fs.write(fh, 0, data).expect("write");
    fs.release(fh);
    attr.ino
}

fn ino(fs: &CryptFs, name: &str) -> u64 {
    fs.lookup(ROOT_INO, OsStr::new(name)).expect("lookup").ino
}

/// Opens file `name` of the root, reads it whole and closes it.
fn read_file(fs: &CryptFs, name: &str) -> FsResult<Vec<u8>> {
    let fh = fs.open(ino(fs, name), libc::O_RDWR)?;
    let data = fs.read(fh, 0, 1 << 20);
    fs.release(fh);
    data
}

/// The wrapped DEK in the header of the cipher file at `path`.
pub(super) fn wrapped_dek(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).expect("read the cipher file");
    let header: &[u8; HEADER_LEN] = bytes[..HEADER_LEN].try_into().expect("a whole header");
    FileHeader::parse(header).expect("a header").wrapped_dek
}

/// A predicate catching the `decrypt` of the DEK of the cipher file at `path`.
pub(super) fn unwrap_of(path: &Path) -> impl Fn(&Call<'_>) -> bool + Send + Sync + 'static {
    let wrapped = wrapped_dek(path);
    move |call| call.op == Op::Decrypt && call.ciphertext == Some(&wrapped[..])
}

/// The lines logged while running `f` on this thread.
type Log = crate::captured_log::CapturedLog;

/// Runs `work` on another thread and gives its result, or panics when it takes longer than
/// [`STALL`] (the thread is left behind: the test fails rather than hangs).
fn within_stall<T: Send + 'static>(what: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(work());
    });
    receive
        .recv_timeout(STALL)
        .unwrap_or_else(|_| panic!("{what} stalled for {STALL:?}"))
}

/// Releases a gate when dropped, so that a failing test leaves no call held.
struct ReleaseOnDrop(Arc<Gate>);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.0.release();
    }
}

fn sleep_until(instant: Instant) {
    std::thread::sleep(instant.saturating_duration_since(Instant::now()));
}

#[test]
fn files_open_from_a_cold_cache_with_one_unwrap_each() {
    let world = KmsWorld::new();
    let fs = world.fs();
    write_file(&fs, ROOT_INO, "one", b"first");
    write_file(&fs, ROOT_INO, "two", b"second");
    assert_eq!(read_file(&fs, "one").expect("reopen"), b"first");
    assert_eq!(world.kms.calls(Op::GenerateDataKey), 2);
    assert_eq!(
        world.kms.calls(Op::Decrypt),
        0,
        "new files' keys are cached"
    );
    let fs = world.fs();
    assert_eq!(read_file(&fs, "one").expect("read"), b"first");
    assert_eq!(read_file(&fs, "two").expect("read"), b"second");
    assert_eq!(world.kms.calls(Op::Decrypt), 2);
}

#[test]
fn an_unwrap_that_fails_is_eio_with_one_log_line_and_cached_files_still_work() {
    let world = KmsWorld::new();
    let writer = world.fs();
    write_file(&writer, ROOT_INO, "refused.txt", b"locked away");
    write_file(&writer, ROOT_INO, "cached.txt", b"still here");
    let refused_path = world.cipher_dir().join("refused.txt");
    for fault in [
        Fault::Unavailable,
        Fault::KeyDisabled,
        Fault::KeyNotFound,
        Fault::InvalidCiphertext,
        Fault::Forbidden,
    ] {
        let fs = world.fs();
        assert_eq!(read_file(&fs, "cached.txt").expect("warm"), b"still here");
        world.kms.fail(Op::Decrypt, fault);
        let log = Log::default();
        let refused = ino(&fs, "refused.txt");
        let opened = log.capture(|| fs.open(refused, libc::O_RDONLY));
        assert_eq!(opened, Err(FsError(libc::EIO)), "{fault:?}");
        let lines = log.lines_with(&refused_path.display().to_string());
        assert_eq!(
            lines.len(),
            1,
            "{fault:?}: one line naming the file: {lines:?}"
        );
        let fh = fs
            .open(ino(&fs, "cached.txt"), libc::O_RDWR)
            .expect("cached");
        fs.write(fh, 10, b", and more")
            .expect("write with a cached key");
        assert_eq!(fs.read(fh, 0, 100).expect("read"), b"still here, and more");
        fs.setattr(
            ino(&fs, "cached.txt"),
            SetAttr {
                size: Some(10),
                ..SetAttr::default()
            },
            Some(fh),
            ME,
        )
        .expect("truncate with a cached key");
        fs.release(fh);
        world.kms.heal();
    }
    let fs = world.fs();
    assert_eq!(
        read_file(&fs, "refused.txt").expect("healed"),
        b"locked away"
    );
}

#[test]
fn a_write_that_gets_no_data_key_is_eio_and_leaves_only_an_empty_file() {
    let world = KmsWorld::new();
    let fs = world.fs();
    world.kms.fail(Op::GenerateDataKey, Fault::Unavailable);
    let log = Log::default();
    // Creating takes no key: an empty file has no header. The first write makes one.
    let (attr, fh) = fs
        .create(ROOT_INO, OsStr::new("new.txt"), 0o644, 0, libc::O_RDWR, ME)
        .expect("create");
    let written = log.capture(|| fs.write(fh, 0, b"data"));
    assert_eq!(written, Err(FsError(libc::EIO)));
    let grown = SetAttr {
        size: Some(100),
        ..SetAttr::default()
    };
    assert_eq!(
        fs.setattr(attr.ino, grown, Some(fh), ME).map(|a| a.size),
        Err(FsError(libc::EIO)),
        "growing an empty file needs a header too"
    );
    let cipher_file = world.cipher_dir().join("new.txt");
    let lines = log.lines_with(&cipher_file.display().to_string());
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].contains("cannot make a key for the new file"),
        "says what failed: {}",
        lines[0]
    );
    let listed: Vec<_> = std::fs::read_dir(world.cipher_dir())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(listed, ["new.txt"], "nothing half-made beside it");
    assert_eq!(std::fs::metadata(&cipher_file).expect("stat").len(), 0);
    assert_eq!(fs.getattr(attr.ino).expect("attr").size, 0);
    assert_eq!(fs.read(fh, 0, 100).expect("read"), b"");
    world.kms.heal();
    fs.write(fh, 0, b"data")
        .expect("write once the KMS answers");
    fs.release(fh);
    assert_eq!(read_file(&world.fs(), "new.txt").expect("read"), b"data");
}

#[test]
fn a_hung_unwrap_stalls_no_other_file() {
    let world = KmsWorld::new();
    let writer = world.fs();
    for name in ["hung", "cached", "uncached"] {
        write_file(&writer, ROOT_INO, name, name.as_bytes());
    }
    let fs = Arc::new(world.fs());
    assert_eq!(read_file(&fs, "cached").expect("warm"), b"cached");
    let gate = world
        .kms
        .hang_when(unwrap_of(&world.cipher_dir().join("hung")));
    let _release = ReleaseOnDrop(gate.clone());
    let hung_ino = ino(&fs, "hung");
    let hung = {
        let fs = fs.clone();
        std::thread::spawn(move || fs.open(hung_ino, libc::O_RDONLY))
    };
    assert!(
        gate.wait_held(1, STALL),
        "the hung file's unwrap reached the KMS"
    );
    let others = fs.clone();
    within_stall("other files while one unwrap hangs", move || {
        let fs = others;
        for name in ["cached", "uncached"] {
            let fh = fs.open(ino(&fs, name), libc::O_RDWR).expect("open");
            assert_eq!(fs.read(fh, 0, 100).expect("read"), name.as_bytes());
            fs.write(fh, 0, b"changed").expect("write");
            fs.release(fh);
        }
        write_file(&fs, ROOT_INO, "made meanwhile", b"new");
        assert_eq!(fs.getattr(hung_ino).expect("stat the hung file").size, 4);
        fs.lookup(ROOT_INO, OsStr::new("hung"))
            .expect("look the hung file up");
    });
    assert!(!hung.is_finished(), "the hung unwrap is still held");
    gate.release();
    let fh = hung.join().expect("no panic").expect("opens once released");
    assert_eq!(fs.read(fh, 0, 100).expect("read"), b"hung");
    fs.release(fh);
}

#[test]
fn a_slow_kms_slows_only_the_opens_that_need_it() {
    let world = KmsWorld::new();
    let writer = world.fs();
    write_file(&writer, ROOT_INO, "slow", b"slow");
    write_file(&writer, ROOT_INO, "fast", b"fast");
    let fs = Arc::new(world.fs());
    assert_eq!(read_file(&fs, "fast").expect("warm"), b"fast");
    world.kms.set_delay(Duration::from_secs(2));
    let start = Instant::now();
    let slow = {
        let fs = fs.clone();
        std::thread::spawn(move || read_file(&fs, "slow"))
    };
    for _ in 0..10 {
        assert_eq!(read_file(&fs, "fast").expect("read"), b"fast");
    }
    assert!(
        !slow.is_finished(),
        "the cached file was served while the slow unwrap was under way"
    );
    assert_eq!(slow.join().expect("no panic").expect("read"), b"slow");
    assert!(start.elapsed() >= Duration::from_secs(2));
    assert_eq!(world.kms.calls(Op::Decrypt), 2, "one unwrap per file");
}

#[test]
fn a_kms_failing_every_other_call_fails_only_those_opens_and_caches_no_failure() {
    let world = KmsWorld::new();
    write_file(&world.fs(), ROOT_INO, "flaky", b"flaky");
    let fs = world.fs_with(0, Duration::ZERO);
    world.kms.fail_every(2, Fault::Unavailable);
    let before = world.kms.total_calls();
    let results: Vec<bool> = (0..4).map(|_| read_file(&fs, "flaky").is_ok()).collect();
    let expected: Vec<bool> = (1..=4).map(|n| (before + n) % 2 == 1).collect();
    assert_eq!(results, expected);
    assert_eq!(world.kms.calls(Op::Decrypt), 4, "every open asked again");
}

#[test]
fn a_disabled_key_refuses_uncached_files_and_cached_ones_until_the_ttl() {
    let world = KmsWorld::new();
    let writer = world.fs();
    write_file(&writer, ROOT_INO, "cached", b"cached");
    write_file(&writer, ROOT_INO, "cold", b"cold");
    let ttl = Duration::from_secs(1);
    let fs = world.fs_with(16, ttl);
    assert_eq!(read_file(&fs, "cached").expect("warm"), b"cached");
    let warmed = Instant::now();
    world.kms.inner().disable_key(world.key).expect("disable");
    assert_eq!(read_file(&fs, "cold"), Err(FsError(libc::EIO)));
    assert_eq!(read_file(&fs, "cached").expect("cached"), b"cached");
    sleep_until(warmed + ttl + Duration::from_millis(100));
    assert_eq!(
        read_file(&fs, "cached"),
        Err(FsError(libc::EIO)),
        "past the TTL the KMS is asked, and refuses"
    );
    world.kms.inner().enable_key(world.key).expect("enable");
    assert_eq!(read_file(&fs, "cold").expect("enabled again"), b"cold");
}

#[test]
fn the_dek_cache_spares_the_kms_within_its_ttl_and_asks_after_it() {
    let world = KmsWorld::new();
    write_file(&world.fs(), ROOT_INO, "file", b"data");
    let ttl = Duration::from_secs(1);
    let fs = world.fs_with(16, ttl);
    assert_eq!(read_file(&fs, "file").expect("first open"), b"data");
    let cached_at = Instant::now();
    assert_eq!(world.kms.calls(Op::Decrypt), 1);
    assert_eq!(read_file(&fs, "file").expect("second open"), b"data");
    assert!(
        cached_at.elapsed() < ttl,
        "the second open came within the TTL"
    );
    assert_eq!(world.kms.calls(Op::Decrypt), 1, "a hit within the TTL");
    sleep_until(cached_at + ttl + Duration::from_millis(100));
    assert_eq!(read_file(&fs, "file").expect("third open"), b"data");
    assert_eq!(world.kms.calls(Op::Decrypt), 2, "expired: asked again");
    assert_eq!(fs.keys().cache().stats().expirations, 1);
}

#[test]
fn a_key_evicted_by_size_is_asked_for_again() {
    let world = KmsWorld::new();
    let writer = world.fs();
    write_file(&writer, ROOT_INO, "a", b"a");
    write_file(&writer, ROOT_INO, "b", b"b");
    let fs = world.fs_with(1, Duration::from_secs(60));
    read_file(&fs, "a").expect("a");
    read_file(&fs, "a").expect("a again");
    assert_eq!(world.kms.calls(Op::Decrypt), 1, "a hit");
    read_file(&fs, "b").expect("b evicts a");
    read_file(&fs, "a").expect("a evicts b");
    assert_eq!(world.kms.calls(Op::Decrypt), 3);
    assert_eq!(fs.keys().cache().stats().evictions, 2);
}

#[test]
fn with_data_keys_made_ahead_a_kms_that_makes_none_still_fails_cleanly() {
    let world = KmsWorld::new();
    world.kms.fail(Op::GenerateDataKey, Fault::Unavailable);
    let keys = world.keys(16, Duration::from_secs(60)).with_pool(4, 1);
    let fs = CryptFs::new(&world.cipher_dir(), keys).expect("fs");
    let (attr, fh) = fs
        .create(ROOT_INO, OsStr::new("new"), 0o644, 0, libc::O_RDWR, ME)
        .expect("create");
    assert_eq!(fs.write(fh, 0, b"data"), Err(FsError(libc::EIO)));
    let cipher_file = world.cipher_dir().join("new");
    assert_eq!(std::fs::metadata(&cipher_file).expect("stat").len(), 0);
    assert_eq!(fs.getattr(attr.ino).expect("attr").size, 0);
    world.kms.heal();
    fs.write(fh, 0, b"data")
        .expect("write once the KMS answers");
    fs.release(fh);
    assert_eq!(read_file(&world.fs(), "new").expect("read"), b"data");
}
