//! Content blocks: sealing and opening one block with a file's DEK, at full (4 KiB) and partial
//! sizes. Throughput is in bytes of plaintext, so criterion reports it per KiB and as GiB/s.

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kmsfs::crypto::Key256;
use kmsfs::format::{BLOCK_OVERHEAD, FileCipher, HeaderVersion, Place};
use std::hint::black_box;

/// Plaintext sizes: a full block and two partial ones (a short tail, a 1 KiB write).
const SIZES: [usize; 3] = [4096, 1024, 100];

fn cipher() -> FileCipher {
    FileCipher::new(&Key256::random(), [7; 16], HeaderVersion::V2)
}

fn seal(c: &mut Criterion) {
    let cipher = cipher();
    let mut group = c.benchmark_group("block_seal");
    for size in SIZES {
        let plain = vec![0x5a_u8; size];
        let mut out = vec![0u8; size + BLOCK_OVERHEAD as usize];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &plain, |b, plain| {
            b.iter(|| cipher.seal_block(black_box(3), Place::Inner, black_box(plain), &mut out));
        });
    }
    group.finish();
}

fn open(c: &mut Criterion) {
    let cipher = cipher();
    let mut group = c.benchmark_group("block_open");
    for size in SIZES {
        let plain = vec![0x5a_u8; size];
        let mut sealed = vec![0u8; size + BLOCK_OVERHEAD as usize];
        cipher.seal_block(3, Place::Inner, &plain, &mut sealed);
        group.throughput(Throughput::Bytes(size as u64));
        // Opening works in place, so every iteration gets a fresh copy (not timed).
        group.bench_with_input(BenchmarkId::from_parameter(size), &sealed, |b, sealed| {
            b.iter_batched_ref(
                || sealed.clone(),
                |block| {
                    cipher
                        .open_block_to_front(black_box(3), Place::Inner, block, 0)
                        .expect("BUG: a block sealed here opens")
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

/// A new file's cipher: AES key expansion plus the HKDF of the header key, paid once per open
/// of a file whose DEK is not cached.
fn cipher_new(c: &mut Criterion) {
    let dek = Key256::random();
    c.bench_function("file_cipher_new", |b| {
        b.iter(|| FileCipher::new(black_box(&dek), black_box([7; 16]), HeaderVersion::V2));
    });
}

criterion_group!(benches, seal, open, cipher_new);
criterion_main!(benches);
