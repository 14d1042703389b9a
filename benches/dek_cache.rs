//! The DEK cache on the open path: a hit (no KMS call), a miss, and an insert into a full cache.

use criterion::{Criterion, criterion_group, criterion_main};
use kmsfs::cache::DekCache;
use kmsfs::crypto::Key256;
use kmsfs::format::FileCipher;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

/// The mount's default size (`--cache-entries 4096`), filled.
const ENTRIES: usize = 4096;
/// The embedded KMS's wrapped DEK length (docs/KMS.md).
const WRAPPED_LEN: usize = 81;

fn file_id(i: usize) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&(i as u64).to_be_bytes());
    id
}

fn full_cache() -> (DekCache, Vec<u8>) {
    let cache = DekCache::new(ENTRIES, Duration::from_secs(300));
    let wrapped = vec![0x3c; WRAPPED_LEN];
    let cipher = Arc::new(FileCipher::new(&Key256::random(), [0; 16]));
    for i in 0..ENTRIES {
        cache.insert(&file_id(i), &wrapped, cipher.clone());
    }
    (cache, wrapped)
}

fn lookups(c: &mut Criterion) {
    let (cache, wrapped) = full_cache();
    let present = file_id(ENTRIES / 2);
    let absent = file_id(ENTRIES + 1);
    c.bench_function("dek_cache_hit", |b| {
        b.iter(|| {
            cache
                .get(black_box(&present), black_box(&wrapped))
                .expect("BUG: inserted above")
        });
    });
    c.bench_function("dek_cache_miss", |b| {
        b.iter(|| cache.get(black_box(&absent), black_box(&wrapped)));
    });
}

fn insert(c: &mut Criterion) {
    let (cache, wrapped) = full_cache();
    let cipher = Arc::new(FileCipher::new(&Key256::random(), [0; 16]));
    let mut next = ENTRIES;
    c.bench_function("dek_cache_insert_evicting", |b| {
        b.iter(|| {
            next += 1;
            cache.insert(black_box(&file_id(next)), &wrapped, cipher.clone());
        });
    });
}

criterion_group!(benches, lookups, insert);
criterion_main!(benches);
