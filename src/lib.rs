//! kmsfs: a FUSE filesystem for Linux that encrypts every file with its own data-encryption key
//! (DEK), wrapped by a KMS key (envelope encryption).
//!
//! Rooms (see `docs/` and DESIGN.md): [`format`] (bytes on disk, pure), [`crypto`] (secret types,
//! AEAD), [`kms`] (the key service and its backends), [`cache`] (unwrapped DEKs), [`server`] (the
//! HTTP KMS service), [`fs`] (the filesystem and its thin FUSE adapter), [`fuse`] (the FUSE
//! transport: the kernel's wire format and the request loop), [`cli`] (commands), [`config`] (a
//! cipher directory's `kmsfs.conf`), [`sys`] (the few system calls that need `unsafe`).

pub mod cache;
#[cfg(test)]
pub(crate) mod captured_log;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod format;
pub mod fs;
pub mod fuse;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod kms;
pub mod server;
pub mod sys;
