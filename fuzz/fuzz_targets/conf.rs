//! Fuzz target `conf`: [`kmsfs::fuzzing::conf`], the same function the replay test runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kmsfs::fuzzing::conf(data));
