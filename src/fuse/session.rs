//! The request loop: threads that each read requests from their own clone of the FUSE device,
//! decode them and hand them to a [`Handler`], until the kernel ends the connection (unmount).
//! With FUSE over io_uring ([`super::ring`]) the ring threads serve the requests and these
//! threads only what the kernel still sends through the device (FORGET, INTERRUPT).

use super::abi::InHeader;
use super::reply::{Channel, Reply, Sink};
use super::request::{Operation, Request};
use super::ring::Rings;
use crate::sys;
use std::fs::File;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::Arc;

/// The largest WRITE the kernel is allowed to send (negotiated at INIT).
pub const MAX_WRITE: u32 = 1 << 20;

/// Bytes of each thread's read buffer: the largest WRITE with its headers, with room to spare
/// for a 64 KiB extended attribute and its name.
pub(super) const BUFFER_LEN: usize = MAX_WRITE as usize + (128 << 10);

/// What serves decoded requests.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request through `reply`.
    fn handle(&self, request: &Request<'_>, reply: Reply<'_>);

    /// The kernel drops `nlookup` references to `node` (no reply).
    fn forget(&self, node: u64, nlookup: u64);
}

/// Who may use the mount beyond what the kernel already checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Every user the kernel lets in (`allow_other`, or the owner alone without it).
    All,
    /// The daemon's owner and root only (`allow_root`: the kernel lets everyone in).
    OwnerAndRoot {
        /// The owner's user id.
        owner: u32,
    },
}

impl Access {
    /// True when the caller of `header` may make the request. Requests the kernel makes on
    /// its own behalf (writeback, release, forget) pass whoever is named in them.
    fn allows(self, header: &InHeader, op: &Operation<'_>) -> bool {
        match self {
            Access::All => true,
            Access::OwnerAndRoot { owner } => {
                header.uid == owner
                    || header.uid == 0
                    || matches!(
                        op,
                        Operation::Read { .. }
                            | Operation::Write { .. }
                            | Operation::Readdir { .. }
                            | Operation::Readdirplus { .. }
                            | Operation::Fsync { .. }
                            | Operation::Fsyncdir
                            | Operation::Release { .. }
                            | Operation::Releasedir { .. }
                            | Operation::Forget { .. }
                            | Operation::BatchForget { .. }
                            | Operation::Destroy
                            | Operation::Interrupt
                    )
            }
        }
    }
}

/// Decodes and dispatches one request read into `bytes`, answering through `sink`.
pub(super) fn dispatch<H: Handler>(handler: &H, sink: Sink<'_>, access: Access, bytes: &[u8]) {
    let request = match Request::parse(bytes) {
        Ok(request) => request,
        Err(_) => {
            // Answer what can be answered: with a readable header the caller gets EIO.
            match InHeader::parse(bytes) {
                Ok(header) => {
                    tracing::warn!(
                        opcode = header.opcode,
                        len = bytes.len(),
                        "malformed request from the kernel"
                    );
                    sink.reply(header.unique).error(libc::EIO);
                }
                Err(_) => tracing::warn!(len = bytes.len(), "unreadable request from the kernel"),
            }
            return;
        }
    };
    let header = &request.header;
    tracing::trace!(
        opcode = header.opcode,
        unique = header.unique,
        node = header.nodeid,
        "request"
    );
    if !access.allows(header, &request.op) {
        sink.reply(header.unique).error(libc::EACCES);
        return;
    }
    match &request.op {
        Operation::Forget { nlookup } => handler.forget(header.nodeid, *nlookup),
        Operation::BatchForget { nodes } => {
            for &(node, nlookup) in nodes {
                handler.forget(node, nlookup);
            }
        }
        Operation::Interrupt => {}
        Operation::Destroy => sink.reply(header.unique).ok(),
        Operation::Unsupported(opcode) => {
            tracing::debug!(opcode, "not served");
            sink.reply(header.unique).error(libc::ENOSYS);
        }
        _ => handler.handle(&request, sink.reply(header.unique)),
    }
}

/// One thread's loop: read, dispatch, until the connection ends.
fn serve_channel<H: Handler>(handler: &H, channel: &Channel, access: Access) -> io::Result<()> {
    let mut buf = vec![0u8; BUFFER_LEN];
    loop {
        match channel.receive(&mut buf) {
            Ok(n) => dispatch(handler, Sink::Device(channel), access, &buf[..n]),
            // ENOENT: a request was interrupted before it was read; EINTR/EAGAIN: try again.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::EINTR | libc::EAGAIN)
                ) => {}
            // ENODEV: unmounted, or the connection was aborted.
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Serves the FUSE connection of `device` (already mounted and past INIT) with `threads`
/// threads, each on its own clone of the device, until the kernel ends the connection; with
/// `rings` (FUSE over io_uring negotiated at INIT), also with a thread per ring queue.
pub fn serve<H: Handler>(
    device: BorrowedFd<'_>,
    threads: usize,
    handler: Arc<H>,
    access: Access,
    rings: Option<Rings>,
) -> io::Result<()> {
    let ring_threads = match rings {
        Some(rings) => rings.start(device, handler.clone(), access)?,
        None => Vec::new(),
    };
    let mut channels = vec![Channel::new(File::from(device.try_clone_to_owned()?))];
    for _ in 1..threads.max(1) {
        channels.push(Channel::new(File::from(sys::clone_fuse_device(device)?)));
    }
    let mut workers = Vec::with_capacity(channels.len());
    for (i, channel) in channels.into_iter().enumerate() {
        let handler = handler.clone();
        workers.push(
            std::thread::Builder::new()
                .name(format!("kmsfs-fuse-{i}"))
                .spawn(move || serve_channel(&*handler, &channel, access))?,
        );
    }
    let mut result = Ok(());
    for worker in workers.into_iter().chain(ring_threads) {
        let outcome = worker
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("a request thread panicked")));
        if let Err(e) = outcome
            && result.is_ok()
        {
            result = Err(e);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(uid: u32) -> InHeader {
        InHeader {
            len: 40,
            opcode: 0,
            unique: 1,
            nodeid: 1,
            uid,
            gid: 0,
            pid: 0,
            total_extlen: 0,
        }
    }

    #[test]
    fn allow_root_lets_owner_and_root_in_and_others_only_for_kernel_requests() {
        let access = Access::OwnerAndRoot { owner: 1000 };
        assert!(access.allows(&header(1000), &Operation::Getattr));
        assert!(access.allows(&header(0), &Operation::Getattr));
        assert!(!access.allows(&header(1001), &Operation::Getattr));
        assert!(access.allows(&header(1001), &Operation::Release { fh: 1 }));
        assert!(Access::All.allows(&header(1001), &Operation::Getattr));
    }
}
