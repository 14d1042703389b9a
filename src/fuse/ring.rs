//! FUSE over io_uring: requests arrive as completions of commands on io_urings instead of reads
//! of the device, and replies go back in the same buffers, one system call per request.
//!
//! The kernel keeps one queue per possible CPU and hands a request to the queue of the CPU its
//! caller runs on; the ring serves only once every queue has an entry registered. Each queue
//! here has the request threads' share (at least one, pinned to its CPU), each with its own io_uring (128-byte SQEs)
//! and one entry: a 288-byte header buffer and a payload buffer that the kernel keeps pointers
//! to from REGISTER until the connection ends. A thread registers its entry, waits for a
//! request, decodes it with [`Request::parse`](super::Request::parse) and dispatches it as the
//! device threads do, then commits the answer and fetches the next request in one command
//! (COMMIT_AND_FETCH). At unmount the kernel ends the commands with ENOTCONN and the threads end.
//!
//! Not everything moves: INIT, FORGET, BATCH_FORGET and INTERRUPT still come through the device
//! (so its threads keep reading), and notifications are still written to it.
//!
//! The rings and buffers are made before INIT ([`Rings::prepare`]): FUSE_OVER_IO_URING is asked
//! only when that worked, because once it is granted every request waits for the rings.

use super::abi::{IN_HEADER_LEN, InHeader, OUT_HEADER_LEN, out_header, uring};
use super::reply::{Channel, RingReply, Sink};
use super::session::{Access, Handler, dispatch};
use crate::sys;
use io_uring::{IoUring, opcode, squeue::Entry128, types};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// Bytes of an entry's payload buffer: the largest WRITE (or READ answer) and room for a 64 KiB
/// extended attribute with its name, as the device threads' buffers.
const PAYLOAD_LEN: usize = super::session::BUFFER_LEN;

/// Bytes in front of the payload in the same allocation, where a request's `fuse_in_header` and
/// per-opcode header are copied so that the parser sees one contiguous request.
const SLACK: usize = 256;

/// The module parameter that lets daemons use FUSE over io_uring.
const ENABLE_PARAMETER: &str = "/sys/module/fuse/parameters/enable_uring";

/// `user_data` of a REGISTER; a COMMIT_AND_FETCH carries [`COMMIT`].
const REGISTER: u64 = 1;
const COMMIT: u64 = 2;

/// Why a mount that asked for FUSE over io_uring serves through the device.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// The module parameter is off.
    #[error("the kernel does not offer it: {ENABLE_PARAMETER} is N")]
    Disabled,
    /// The kernel does not know the feature.
    #[error(
        "the kernel does not offer it: it needs Linux 6.14 or later built with CONFIG_FUSE_IO_URING"
    )]
    NotOffered,
    /// An io_uring or its buffers could not be made.
    #[error("cannot set up an io_uring: {0}")]
    Setup(io::Error),
    /// The kernel refused to register a ring entry after INIT.
    #[error("the kernel refused a ring entry: {0}")]
    Register(io::Error),
}

/// Logs the one line that says the mount serves through the device, and why.
fn warn_unavailable(reason: &Unavailable) {
    tracing::warn!("FUSE over io_uring is not available ({reason}); serving through /dev/fuse");
}

/// The rings of a connection, made before INIT and started after it.
pub struct Rings {
    queues: Vec<Queue>,
}

impl std::fmt::Debug for Rings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rings")
            .field("rings", &self.queues.len())
            .finish()
    }
}

impl Rings {
    /// Makes the rings and their buffers for `threads` request threads spread over the
    /// kernel's queues (one queue per possible CPU, at least one ring each).
    pub fn prepare(threads: usize) -> Result<Rings, Unavailable> {
        let queues = possible_cpus().map_err(Unavailable::Setup)?;
        let per_queue = threads.div_ceil(queues).max(1);
        let qids = u16::try_from(queues)
            .map_err(|_| Unavailable::Setup(io::Error::other("too many CPUs")))?;
        let mut rings = Vec::with_capacity(queues * per_queue.max(1));
        for qid in 0..qids {
            for _ in 0..per_queue.max(1) {
                rings.push(Queue::new(qid).map_err(Unavailable::Setup)?);
            }
        }
        Ok(Rings { queues: rings })
    }

    /// The number of rings (threads).
    pub fn len(&self) -> usize {
        self.queues.len()
    }

    /// True when there is no ring (never after [`prepare`](Self::prepare)).
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Starts a thread per ring on the connection of `device` (past INIT, FUSE_OVER_IO_URING
    /// granted); each ends when the connection does.
    pub fn start<H: Handler>(
        self,
        device: BorrowedFd<'_>,
        handler: Arc<H>,
        access: Access,
    ) -> io::Result<Vec<JoinHandle<io::Result<()>>>> {
        let refused = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(self.queues.len());
        for (i, queue) in self.queues.into_iter().enumerate() {
            let channel = Channel::new(File::from(device.try_clone_to_owned()?));
            let handler = handler.clone();
            let refused = refused.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("kmsfs-ring-{}-{i}", queue.qid))
                    .spawn(move || run(queue, &channel, &*handler, access, &refused))?,
            );
        }
        Ok(threads)
    }
}

/// Decides whether a mount that asked for FUSE over io_uring gets it: its rings if they were
/// made and the kernel offered the feature at INIT; otherwise nothing, with one warning line.
pub fn choose(prepared: Result<Rings, Unavailable>, offered: bool) -> Option<Rings> {
    let parameter = std::fs::read_to_string(ENABLE_PARAMETER).ok();
    match verdict(prepared, offered, parameter.as_deref()) {
        Ok(rings) => Some(rings),
        Err(reason) => {
            warn_unavailable(&reason);
            None
        }
    }
}

/// The rule of [`choose`]: `parameter` is the content of the module parameter, if readable.
fn verdict<T>(
    prepared: Result<T, Unavailable>,
    offered: bool,
    parameter: Option<&str>,
) -> Result<T, Unavailable> {
    let prepared = prepared?;
    if offered {
        return Ok(prepared);
    }
    match parameter.map(str::trim) {
        Some("N" | "n" | "0") => Err(Unavailable::Disabled),
        _ => Err(Unavailable::NotOffered),
    }
}

/// The number of possible CPUs (the kernel's number of queues), from
/// /sys/devices/system/cpu/possible ("0-3", "0,2-5").
fn possible_cpus() -> io::Result<usize> {
    let list = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    count_cpu_list(&list).ok_or_else(|| {
        io::Error::other(format!(
            "unreadable list of possible CPUs: {:?}",
            list.trim()
        ))
    })
}

fn count_cpu_list(list: &str) -> Option<usize> {
    let mut count = 0;
    for part in list.trim().split(',') {
        count += match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?);
                b.checked_sub(a)? + 1
            }
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
    }
    (count > 0).then_some(count)
}

/// One ring with its entry. The ring is declared first so that it is dropped (its descriptor
/// closed, the kernel's commands on it cancelled) before the buffers it points to.
struct Queue {
    ring: IoUring<Entry128>,
    entry: RingEntry,
    qid: u16,
}

/// An entry's buffers: the kernel writes requests into them and reads replies from them.
struct RingEntry {
    header: Box<[u8; uring::HEADER_LEN]>,
    /// [`SLACK`] bytes, then the payload buffer the kernel knows.
    data: Box<[u8]>,
}

impl Queue {
    fn new(qid: u16) -> io::Result<Queue> {
        // Two submission slots: one command is outstanding at a time.
        let ring = IoUring::<Entry128>::builder().build(2)?;
        Ok(Queue {
            ring,
            entry: RingEntry {
                header: Box::new([0; uring::HEADER_LEN]),
                data: vec![0; SLACK + PAYLOAD_LEN].into_boxed_slice(),
            },
            qid,
        })
    }

    /// The command that gives the entry's buffers (described by `iovecs`) to the kernel.
    fn register(&self, device: types::Fd, iovecs: &[libc::iovec; 2]) -> Entry128 {
        let entry = opcode::UringCmd80::new(device, uring::CMD_REGISTER)
            .cmd(uring::cmd_req(0, self.qid))
            .addr(Some(iovecs.as_ptr() as u64))
            .build()
            .user_data(REGISTER);
        with_len(entry, uring::REGISTER_IOVECS)
    }

    /// The command that answers request `commit_id` and waits for the next.
    fn commit(&self, device: types::Fd, commit_id: u64) -> Entry128 {
        opcode::UringCmd80::new(device, uring::CMD_COMMIT_AND_FETCH)
            .cmd(uring::cmd_req(commit_id, self.qid))
            .build()
            .user_data(COMMIT)
    }

    /// Queues `entry` and waits for one completion: (its user data, its result).
    fn exchange(&mut self, entry: &Entry128) -> io::Result<(u64, i32)> {
        // SAFETY: the buffers the command names (the iovecs and through them the header and
        // payload buffers) outlive the ring: `run` drops the ring before them.
        unsafe { self.ring.submission().push(entry) }
            .map_err(|_| io::Error::other("the submission queue is full"))?;
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
            if let Some(cqe) = self.ring.completion().next() {
                return Ok((cqe.user_data(), cqe.result()));
            }
        }
    }
}

/// `entry` with its `len` field (bytes 24..28 of the SQE) set. The crate's `UringCmd80` builder
/// has no setter for it, and REGISTER must say that `addr` points to two iovecs.
fn with_len(entry: Entry128, len: u32) -> Entry128 {
    // SAFETY: `Entry128` is `#[repr(C)]` over the kernel's 64-byte `io_uring_sqe` (also
    // `#[repr(C)]`) followed by 64 bytes of command: 128 plain bytes with no invalid values,
    // and `len` is the u32 at offset 24 of `struct io_uring_sqe` (the stable uapi layout).
    let mut bytes: [u8; 128] = unsafe { std::mem::transmute(entry) };
    bytes[24..28].copy_from_slice(&len.to_ne_bytes());
    // SAFETY: as above: any 128 bytes are a valid `Entry128`.
    unsafe { std::mem::transmute::<[u8; 128], Entry128>(bytes) }
}

/// One ring thread: pins itself, registers its entry, serves requests until the connection
/// ends.
fn run<H: Handler>(
    mut queue: Queue,
    channel: &Channel,
    handler: &H,
    access: Access,
    refused: &AtomicBool,
) -> io::Result<()> {
    if let Err(e) = sys::pin_thread_to_cpu(usize::from(queue.qid)) {
        tracing::debug!(qid = queue.qid, "cannot pin a ring thread to its CPU: {e}");
    }
    let iovecs = [
        libc::iovec {
            iov_base: queue.entry.header.as_mut_ptr().cast(),
            iov_len: uring::HEADER_LEN,
        },
        libc::iovec {
            iov_base: queue.entry.data[SLACK..].as_mut_ptr().cast(),
            iov_len: PAYLOAD_LEN,
        },
    ];
    let result = serve_ring(&mut queue, &iovecs, channel, handler, access, refused);
    if let Err(e) = &result {
        // Its queue's callers now depend on the queue's other rings, if it has any.
        tracing::error!(qid = queue.qid, "a ring thread stops: {e}");
    }
    // The ring goes first (its commands are cancelled with it), then the buffers it named;
    // `iovecs` lives until the end of this function.
    drop(queue);
    result
}

fn serve_ring<H: Handler>(
    queue: &mut Queue,
    iovecs: &[libc::iovec; 2],
    channel: &Channel,
    handler: &H,
    access: Access,
    refused: &AtomicBool,
) -> io::Result<()> {
    let device = types::Fd(channel.as_fd().as_raw_fd());
    let answer = RingReply::default();
    let mut next = queue.register(device, iovecs);
    loop {
        let (kind, result) = queue.exchange(&next)?;
        match -result {
            0 => {}
            // Interrupted or not ready yet: ask again.
            libc::EINTR | libc::EAGAIN => continue,
            // The connection ended (unmount, abort) or the ring was closed.
            libc::ENOTCONN | libc::ECONNABORTED | libc::ECANCELED | libc::ENODEV => return Ok(()),
            errno if kind == REGISTER => {
                // The kernel turned the feature off for the connection and serves it through
                // the device; say so once for all the rings.
                if !refused.swap(true, Ordering::Relaxed) {
                    warn_unavailable(&Unavailable::Register(io::Error::from_raw_os_error(errno)));
                }
                return Ok(());
            }
            errno => {
                // A commit the kernel did not take (its request is gone): the entry is
                // registered anew so that the queue keeps serving.
                tracing::warn!(
                    qid = queue.qid,
                    "a ring entry's answer was refused: {}; registering it again",
                    io::Error::from_raw_os_error(errno)
                );
                next = queue.register(device, iovecs);
                continue;
            }
        }
        let commit_id = queue.entry.serve(handler, channel, access, &answer);
        next = queue.commit(device, commit_id);
    }
}

impl RingEntry {
    /// Decodes the request the kernel put in the buffers, dispatches it, and writes its answer
    /// back; returns the commit id the answer must name.
    fn serve<H: Handler>(
        &mut self,
        handler: &H,
        channel: &Channel,
        access: Access,
        answer: &RingReply,
    ) -> u64 {
        let header: &[u8] = &self.header[..];
        let commit_id = u64::from_ne_bytes(read(header, uring::COMMIT_ID));
        let payload_len = u32::from_ne_bytes(read(header, uring::PAYLOAD_SZ)) as usize;
        let unique = u64::from_ne_bytes(read(header, 8));
        let request_len = u32::from_ne_bytes(read(header, 0)) as usize;
        let op_in_len = request_len
            .checked_sub(IN_HEADER_LEN + payload_len)
            .filter(|&n| n <= uring::OP_IN_LEN && payload_len <= PAYLOAD_LEN);
        match op_in_len {
            Some(op_in_len) => {
                // fuse_in_header and the per-opcode header go right before the payload, so the
                // request is one slice as read from the device.
                let start = SLACK - IN_HEADER_LEN - op_in_len;
                self.data[start..start + IN_HEADER_LEN].copy_from_slice(&header[..IN_HEADER_LEN]);
                self.data[start + IN_HEADER_LEN..SLACK]
                    .copy_from_slice(&header[uring::OP_IN..uring::OP_IN + op_in_len]);
                let sink = Sink::Ring {
                    channel,
                    reply: answer,
                };
                dispatch(
                    handler,
                    sink,
                    access,
                    &self.data[start..SLACK + payload_len],
                );
            }
            None => {
                let opcode = InHeader::parse(&header[..IN_HEADER_LEN]).map(|h| h.opcode);
                tracing::warn!(
                    ?opcode,
                    request_len,
                    payload_len,
                    "malformed request from the kernel's ring"
                );
            }
        }
        // Requests the kernel expects no answer to (FORGET) never come through a ring; one
        // left unanswered here fails with EIO rather than leave the entry stuck.
        let (error, len) = answer
            .take_with(|error, payload| {
                if payload.len() > PAYLOAD_LEN {
                    tracing::error!(unique, len = payload.len(), "BUG: answer too large");
                    return (-libc::EIO, 0);
                }
                self.data[SLACK..SLACK + payload.len()].copy_from_slice(payload);
                (error, payload.len())
            })
            .unwrap_or((-libc::EIO, 0));
        let out = out_header(len, error, unique);
        self.header[..OUT_HEADER_LEN].copy_from_slice(&out);
        // len <= PAYLOAD_LEN, which fits in u32.
        self.header[uring::PAYLOAD_SZ..uring::PAYLOAD_SZ + 4]
            .copy_from_slice(&(len as u32).to_ne_bytes());
        commit_id
    }
}

/// The `N` bytes of `buf` at `at` (in bounds by the layout constants).
fn read<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&buf[at..at + N]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_that_does_not_offer_the_ring_gets_the_device_and_says_why() {
        let disabled = verdict(Ok(()), false, Some("N\n")).unwrap_err();
        assert!(matches!(disabled, Unavailable::Disabled));
        assert_eq!(
            disabled.to_string(),
            "the kernel does not offer it: /sys/module/fuse/parameters/enable_uring is N"
        );
        assert!(matches!(
            verdict(Ok(()), false, None),
            Err(Unavailable::NotOffered)
        ));
        assert!(matches!(
            verdict(Ok(()), false, Some("Y")),
            Err(Unavailable::NotOffered)
        ));
        let setup = verdict::<()>(
            Err(Unavailable::Setup(io::Error::from_raw_os_error(
                libc::EPERM,
            ))),
            true,
            Some("Y"),
        );
        assert!(matches!(setup, Err(Unavailable::Setup(_))));
        assert!(verdict(Ok(7), true, Some("N")).is_ok_and(|v| v == 7));
    }

    #[test]
    fn possible_cpu_lists_are_counted() {
        assert_eq!(count_cpu_list("0-1\n"), Some(2));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list("0,2-5"), Some(5));
        assert_eq!(count_cpu_list(""), None);
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list("x"), None);
    }

    #[test]
    fn register_says_two_iovecs_and_keeps_the_rest() {
        let cmd = opcode::UringCmd80::new(types::Fd(5), uring::CMD_REGISTER)
            .cmd(uring::cmd_req(0, 1))
            .addr(Some(0x1000))
            .build()
            .user_data(REGISTER);
        // SAFETY: an `Entry128` is 128 plain bytes (see `with_len`).
        let before: [u8; 128] = unsafe { std::mem::transmute(cmd.clone()) };
        // SAFETY: as above.
        let after: [u8; 128] = unsafe { std::mem::transmute(with_len(cmd, 2)) };
        assert_eq!(u32::from_ne_bytes(after[24..28].try_into().unwrap()), 2);
        assert_eq!(&before[..24], &after[..24]);
        assert_eq!(&before[28..], &after[28..]);
        // opcode IORING_OP_URING_CMD (46) and the fd are where the kernel reads them.
        assert_eq!(after[0], 46);
        assert_eq!(i32::from_ne_bytes(after[4..8].try_into().unwrap()), 5);
    }
}
