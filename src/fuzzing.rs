//! Fuzz targets: one function per parser of bytes that come from disk or the network. Each
//! takes arbitrary bytes and must return without panicking; where a parse succeeds it also
//! checks what must then hold (a header re-encodes to the bytes it came from, a name decrypts
//! to a plaintext that encrypts back to it, ...), so a lenient parser fails as loudly as a
//! crashing one.
//!
//! The same functions run under `cargo fuzz` (the `fuzz/` crate, feature `fuzzing`) and in the
//! replay test of every checked-in corpus file (`fuzz/corpus/<target>/`) beside this module, so
//! both run identical code. Keys and ids are fixed, so a corpus file sealed under them opens in
//! every run and the fuzzer starts from inputs that reach past authentication.

mod config;
mod format;
mod kms;
mod server;
#[cfg(test)]
mod tests;

pub use config::conf;
pub use format::{block, header, names};
pub use kms::{blob, keystore, sign};
pub use server::server_body;

/// A fuzz target: takes any bytes, panics only on a bug.
pub type Target = fn(&[u8]);

/// Every target by name, as `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/` name it.
pub const TARGETS: &[(&str, Target)] = &[
    ("header", header),
    ("block", block),
    ("blob", blob),
    ("keystore", keystore),
    ("conf", conf),
    ("sign", sign),
    ("server_body", server_body),
    ("names", names),
];

/// The first byte of `data` (0 when empty) and the rest: how targets with several entry points
/// pick one.
fn split_selector(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((&first, rest)) => (first, rest),
        None => (0, &[]),
    }
}

/// A fixed 256-bit key made of `byte`: test keys, never secret.
fn fixed_key(byte: u8) -> crate::crypto::Key256 {
    crate::crypto::Key256::from_slice(&[byte; 32]).expect("BUG: 32 bytes make a key")
}

/// A scratch directory for targets whose parser reads a file: one per thread, removed when the
/// thread ends.
fn scratch_dir() -> std::path::PathBuf {
    thread_local! {
        static DIR: tempfile::TempDir = tempfile::Builder::new()
            .prefix("kmsfs-fuzz")
            .tempdir()
            .expect("BUG: the temporary directory is writable");
    }
    DIR.with(|dir| dir.path().to_path_buf())
}
