//! The 512-byte file header: parsing (every open of a file) and encoding (every create).

use criterion::{Criterion, criterion_group, criterion_main};
use kmsfs::crypto::Key256;
use kmsfs::format::{FileCipher, FileHeader, HeaderVersion, Keying};
use std::hint::black_box;

/// A header shaped like the embedded KMS's: its wrapped DEK blob is 81 bytes (format, key id,
/// version, nonce, 32-byte ciphertext, tag; see docs/KMS.md).
fn header() -> (FileHeader, FileCipher) {
    let file_id = [9; 16];
    let cipher = FileCipher::new(&Key256::random(), file_id, HeaderVersion::V2);
    let header = FileHeader {
        version: HeaderVersion::V2,
        file_id,
        key_id: uuid::Uuid::from_bytes([4; 16]),
        wrapped_dek: vec![0xa5; 81],
        keying: Keying::default(),
    };
    (header, cipher)
}

fn parse(c: &mut Criterion) {
    let (header, cipher) = header();
    let bytes = header
        .encode(&cipher)
        .expect("BUG: 81 bytes fit the header");
    c.bench_function("header_parse", |b| {
        b.iter(|| FileHeader::parse(black_box(&bytes)).expect("BUG: encoded here, parses"));
    });
    c.bench_function("header_parse_and_verify", |b| {
        b.iter(|| {
            cipher
                .verify_header(black_box(&bytes))
                .expect("BUG: encoded here, verifies")
        });
    });
}

fn encode(c: &mut Criterion) {
    let (header, cipher) = header();
    c.bench_function("header_encode", |b| {
        b.iter(|| {
            black_box(&header)
                .encode(&cipher)
                .expect("BUG: 81 bytes fit the header")
        });
    });
}

criterion_group!(benches, parse, encode);
criterion_main!(benches);
