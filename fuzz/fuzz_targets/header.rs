//! Fuzz target `header`: [`kmsfs::fuzzing::header`], the same function the replay test runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kmsfs::fuzzing::header(data));
