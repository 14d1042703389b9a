//! The DEK cache on the open path: a hit (no KMS call), a miss, and an insert into a full cache.

use criterion::{Criterion, criterion_group, criterion_main};
use kmsfs::cache::DekCache;
use kmsfs::crypto::Key256;
use kmsfs::format::{FileCipher, HEADER_LEN, HeaderVersion};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

/// The mount's default size (`--cache-entries 4096`), filled.
const ENTRIES: usize = 4096;
/// The 512 bytes of a header standing for file `i` (its file id at offset 12; the cache keys on
/// the digest of all of them).
fn header(i: usize) -> [u8; HEADER_LEN] {
    let mut bytes = [0x3c; HEADER_LEN];
    bytes[12..20].copy_from_slice(&(i as u64).to_be_bytes());
    bytes
}

fn cipher() -> Arc<FileCipher> {
    Arc::new(FileCipher::new(
        &Key256::random(),
        [0; 16],
        HeaderVersion::V2,
    ))
}

fn full_cache() -> DekCache {
    let cache = DekCache::new(ENTRIES, Duration::from_secs(300));
    let cipher = cipher();
    for i in 0..ENTRIES {
        cache.insert(&header(i), cipher.clone());
    }
    cache
}

fn lookups(c: &mut Criterion) {
    let cache = full_cache();
    let present = header(ENTRIES / 2);
    let absent = header(ENTRIES + 1);
    c.bench_function("dek_cache_hit", |b| {
        b.iter(|| cache.get(black_box(&present)).expect("BUG: inserted above"));
    });
    c.bench_function("dek_cache_miss", |b| {
        b.iter(|| cache.get(black_box(&absent)));
    });
}

fn insert(c: &mut Criterion) {
    let cache = full_cache();
    let cipher = cipher();
    let mut next = ENTRIES;
    c.bench_function("dek_cache_insert_evicting", |b| {
        b.iter(|| {
            next += 1;
            cache.insert(black_box(&header(next)), cipher.clone());
        });
    });
}

criterion_group!(benches, lookups, insert);
criterion_main!(benches);
