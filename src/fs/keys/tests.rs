//! The key path over an embedded KMS: headers of both versions open, cached and not; a header
//! changed anywhere, the key id included, fails on a cache hit as on a miss.

use super::*;
use crate::fs::{RewrapOutcome, RewrapTarget, rewrap_file};
use crate::kms::embedded::{self, EmbeddedKms};
use std::time::Duration;

const FS_ID: FsId = [7; 16];

struct World {
    dir: tempfile::TempDir,
    kms: Arc<EmbeddedKms>,
    key: Uuid,
    other_key: Uuid,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let kms = embedded::for_tests(dir.path());
        let make = |name: &str| embedded::test_key(&kms, name);
        let (key, other_key) = (make("k"), make("other"));
        World {
            dir,
            kms: Arc::new(kms),
            key,
            other_key,
        }
    }

    /// A key path with a DEK cache (`cached`) or without one, as fsck runs.
    fn keys(&self, cached: bool) -> KeyPath {
        let capacity = if cached { 16 } else { 0 };
        KeyPath::new(
            self.kms.clone(),
            DekCache::new(capacity, Duration::from_secs(60)),
            FS_ID,
            self.key,
        )
    }

    fn file(&self, name: &str) -> (std::path::PathBuf, File) {
        let path = self.dir.path().join(name);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("create");
        (path, file)
    }

    /// A version 1 header, as earlier builds wrote it.
    fn v1_header(&self) -> [u8; HEADER_LEN] {
        super::v1_header_for_tests(&*self.kms, self.key, &FS_ID).0
    }
}

fn read_header(file: &File) -> [u8; HEADER_LEN] {
    let mut bytes = [0u8; HEADER_LEN];
    file.read_exact_at(&mut bytes, 0).expect("read header");
    bytes
}

/// What opening `bytes` gives, in words a test compares.
fn outcome(keys: &KeyPath, bytes: &[u8; HEADER_LEN]) -> String {
    match keys.cipher_for(bytes) {
        Ok(cipher) => format!("ok {:?}", cipher.header_version()),
        Err(KeyError::Corrupt(e)) => format!("corrupt: {e}"),
        Err(KeyError::Refused(r)) => format!("refused: {}", r.refusal.title()),
        Err(e) => format!("other: {e}"),
    }
}

#[test]
fn a_new_file_gets_a_v2_header_that_opens_cached_and_not() {
    let world = World::new();
    let keys = world.keys(true);
    let (_, file) = world.file("new");
    keys.create_header(&file, 1 << 16).expect("create");
    let bytes = read_header(&file);
    let header = FileHeader::parse(&bytes).expect("parses");
    assert_eq!(
        (header.version, header.key_id),
        (HeaderVersion::V2, world.key)
    );
    assert_eq!(outcome(&keys, &bytes), "ok V2");
    assert_eq!(keys.cache().stats().hits, 1, "the create filled the cache");
    assert_eq!(outcome(&world.keys(false), &bytes), "ok V2");
}

#[test]
fn a_v1_header_opens_and_stays_v1() {
    let world = World::new();
    let bytes = world.v1_header();
    let keys = world.keys(true);
    assert_eq!(outcome(&keys, &bytes), "ok V1");
    assert_eq!(outcome(&keys, &bytes), "ok V1");
    assert_eq!(keys.cache().stats().hits, 1);
}

#[test]
fn a_changed_key_id_fails_on_a_cache_hit_as_on_a_miss() {
    let world = World::new();
    let cached = world.keys(true);
    let (_, file) = world.file("f");
    cached.create_header(&file, 1 << 16).expect("create");
    let v2 = read_header(&file);
    let v1 = world.v1_header();
    assert_eq!(outcome(&cached, &v1), "ok V1", "now cached");
    for (good, name) in [(v2, "v2"), (v1, "v1")] {
        let with_key = |key: Uuid| {
            let mut bad = good;
            bad[28..44].copy_from_slice(key.as_bytes());
            bad
        };
        let nowhere = with_key(Uuid::from_bytes([0x5a; 16]));
        let elsewhere = with_key(world.other_key);
        for keys in [&cached, &world.keys(false)] {
            assert_eq!(outcome(keys, &nowhere), "refused: Key Not Found", "{name}");
            assert_eq!(
                outcome(keys, &elsewhere),
                "corrupt: header authentication failed",
                "{name}"
            );
        }
    }
}

#[test]
fn every_changed_byte_of_a_cached_v2_header_fails() {
    let world = World::new();
    let keys = world.keys(true);
    let (_, file) = world.file("f");
    keys.create_header(&file, 1 << 16).expect("create");
    let good = read_header(&file);
    for i in 0..HEADER_LEN {
        let mut bad = good;
        bad[i] ^= 0x01;
        let got = outcome(&keys, &bad);
        assert!(!got.starts_with("ok"), "byte {i} changed, yet {got}");
    }
    assert_eq!(
        keys.cache().stats().hits,
        0,
        "no changed header hit the cache"
    );
    assert_eq!(outcome(&keys, &good), "ok V2");
}

#[test]
fn a_v2_dek_moved_to_another_key_opens_there_and_a_v1_dek_stays_v1() {
    let world = World::new();
    let keys = world.keys(true);
    let (v2_path, v2_file) = world.file("v2");
    keys.create_header(&v2_file, 1 << 16).expect("create");
    let (v1_path, v1_file) = world.file("v1");
    v1_file.write_all_at(&world.v1_header(), 0).expect("write");
    let newest = |_: Uuid| Ok(1);
    let target = RewrapTarget {
        kms: world.kms.as_ref(),
        fs_id: FS_ID,
        to_key: Some(world.other_key),
        newest_version: &newest,
        dry_run: false,
    };
    for (path, version) in [(&v2_path, HeaderVersion::V2), (&v1_path, HeaderVersion::V1)] {
        let before = read_header(&File::open(path).expect("open"));
        assert_eq!(outcome(&keys, &before), format!("ok {version:?}"));
        assert_eq!(
            rewrap_file(path, &target).expect("rewrap"),
            RewrapOutcome::Rewrapped
        );
        let after = read_header(&File::open(path).expect("open"));
        let header = FileHeader::parse(&after).expect("parses");
        assert_eq!((header.version, header.key_id), (version, world.other_key));
        assert_eq!(outcome(&keys, &after), format!("ok {version:?}"));
        assert_eq!(
            outcome(&world.keys(false), &after),
            format!("ok {version:?}")
        );
        // Put back under the old key id, the moved DEK does not open.
        let mut back = after;
        back[28..44].copy_from_slice(world.key.as_bytes());
        assert_eq!(
            outcome(&keys, &back),
            "corrupt: header authentication failed"
        );
    }
}

#[test]
fn a_v2_dek_wrapped_under_a_context_naming_another_key_does_not_open() {
    // What a re-wrap that passed the old context as the destination would write.
    let world = World::new();
    let keys = world.keys(false);
    let (_, file) = world.file("f");
    world
        .keys(false)
        .create_header(&file, 1 << 16)
        .expect("create");
    let bytes = read_header(&file);
    let header = FileHeader::parse(&bytes).expect("parses");
    let context = header.dek_context(&FS_ID);
    let wrapped = world
        .kms
        .re_encrypt(
            world.key,
            &header.wrapped_dek,
            Some(&context),
            world.other_key,
            Some(&context),
        )
        .expect("re-encrypt");
    let moved = FileHeader::rewrap(&bytes, world.other_key, &wrapped).expect("fits");
    assert_eq!(
        outcome(&keys, &moved),
        "corrupt: header authentication failed"
    );
}
