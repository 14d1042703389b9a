//! The FUSE transport: the kernel's wire format and the request loop, knowing nothing of what
//! the filesystem means. `fuser` mounts and negotiates INIT; from then on requests are read,
//! decoded and answered here, so every operation the kernel has (`O_TMPFILE` among them) is
//! ours to serve, and the transport can change (FUSE over io_uring) without touching the
//! filesystem.
//!
//! [`abi`] holds the byte layouts, [`request`] decodes, [`reply`] encodes and writes,
//! [`session`] runs the threads, [`ring`] the FUSE-over-io_uring queues.

pub mod abi;
pub mod reply;
pub mod request;
pub mod ring;
pub mod session;

pub use reply::{Channel, DirEntries, Entry, NodeAttr, Reply, StatfsOut};
pub use request::{NewNode, Operation, Request, SetattrArgs, TimeArg};
pub use session::{Access, Handler, MAX_WRITE, serve};
