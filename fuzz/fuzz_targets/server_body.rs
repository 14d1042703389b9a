//! Fuzz target `server_body`: [`kmsfs::fuzzing::server_body`], the same function the replay test runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kmsfs::fuzzing::server_body(data));
