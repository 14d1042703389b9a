//! Encrypted names: sealing a name for a lookup, unlink or create, and opening one for a
//! directory listing (AES-SIV with the directory's id as associated data).

use criterion::{Criterion, criterion_group, criterion_main};
use kmsfs::format::{FsKey, NameCipher, random_dir_id};
use std::hint::black_box;

fn names(c: &mut Criterion) {
    let cipher = NameCipher::new(&FsKey::random());
    let dir = random_dir_id();
    // A typical file name (the median name of a source tree is about 12 bytes).
    let plain = b"kmsfs-bench.rs";
    c.bench_function("name_encrypt", |b| {
        b.iter(|| cipher.encrypt_name(black_box(&dir), black_box(plain)));
    });
    let sealed = cipher.encrypt_name(&dir, plain);
    c.bench_function("name_decrypt", |b| {
        b.iter(|| {
            cipher
                .decrypt_name(black_box(&dir), black_box(sealed.as_bytes()))
                .expect("BUG: sealed here, opens")
        });
    });
}

criterion_group!(benches, names);
criterion_main!(benches);
