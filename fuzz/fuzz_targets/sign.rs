//! Fuzz target `sign`: [`kmsfs::fuzzing::sign`], the same function the replay test runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kmsfs::fuzzing::sign(data));
