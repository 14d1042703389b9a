//! Which request thread reads the FUSE device next.
//!
//! The kernel hands each request to the reader that has waited longest, so threads that all
//! block in `read(2)` take requests in turn: every request wakes a thread that has been asleep,
//! on a CPU chosen anew, and on a busy machine that wake costs more than most requests. (4 KiB
//! random reads through a mount on tmpfs, load average 3: 20,000-23,000 IOPS with 2, 4 or 8
//! threads in `read(2)`, 40,000-55,000 with one.) So one thread reads at a time and keeps
//! reading while the requests it gets are quick; before it serves one that may block (large
//! reads and writes, fsync, a remote KMS, anything that waits for other requests) it passes
//! the reading to an idle thread, so that other callers are not held up behind it.

use super::request::Operation;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// Reads and writes from this size on are large enough to serve beside other requests.
const LARGE_IO: usize = 64 << 10;

/// Whether serving `op` may take long enough, or wait for other requests, that the thread
/// should pass the reading on first: large reads and writes, syncs, preallocation and copies,
/// truncates, and `lseek` (which has the kernel write back dirty pages first, as requests that
/// another thread must read).
pub fn may_block(op: &Operation<'_>) -> bool {
    match op {
        Operation::Read { size, .. } => *size as usize >= LARGE_IO,
        Operation::Write { data, .. } => data.len() >= LARGE_IO,
        Operation::Setattr(change) => change.size.is_some(),
        Operation::Fsync { .. }
        | Operation::Fsyncdir
        | Operation::Fallocate { .. }
        | Operation::CopyFileRange { .. }
        | Operation::Lseek { .. } => true,
        _ => false,
    }
}

/// The right to read the device, held by one thread at a time.
#[derive(Default)]
pub struct Relay {
    state: Mutex<State>,
    idle: Condvar,
}

#[derive(Default)]
struct State {
    /// A thread holds the right to read.
    reading: bool,
    /// The connection has ended: no thread reads again.
    closed: bool,
}

impl Relay {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until this thread may read, then holds that right until the returned turn passes
    /// it on or is dropped (also on a panic). `None` once the connection has ended.
    pub fn take(&self) -> Option<Turn<'_>> {
        let mut state = self.state();
        while state.reading && !state.closed {
            state = self
                .idle
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if state.closed {
            return None;
        }
        state.reading = true;
        Some(Turn { relay: self })
    }

    /// The connection has ended: every waiting thread returns.
    pub fn close(&self) {
        self.state().closed = true;
        self.idle.notify_all();
    }
}

/// One thread's right to read the device.
pub struct Turn<'a> {
    relay: &'a Relay,
}

impl Turn<'_> {
    /// Gives the right to read to a thread waiting in [`Relay::take`].
    pub fn pass(self) {
        drop(self);
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.relay.state().reading = false;
        self.relay.idle.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn one_thread_reads_at_a_time_and_a_passed_turn_goes_to_a_waiting_thread() {
        let relay = Arc::new(Relay::default());
        let turn = relay.take().expect("open");
        let taken = Arc::new(AtomicUsize::new(0));
        let waiter = {
            let (relay, taken) = (relay.clone(), taken.clone());
            std::thread::spawn(move || {
                let turn = relay.take().expect("open");
                taken.fetch_add(1, Ordering::SeqCst);
                drop(turn);
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(taken.load(Ordering::SeqCst), 0, "waits while another reads");
        turn.pass();
        waiter.join().expect("waiter");
        assert_eq!(taken.load(Ordering::SeqCst), 1, "takes the passed turn");
        assert!(relay.take().is_some(), "free again once dropped");
    }

    #[test]
    fn closing_releases_every_waiting_thread() {
        let relay = Arc::new(Relay::default());
        let _turn = relay.take().expect("open");
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let relay = relay.clone();
                std::thread::spawn(move || relay.take().is_none())
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        relay.close();
        for waiter in waiters {
            assert!(waiter.join().expect("waiter"), "no turn after close");
        }
    }

    #[test]
    fn a_panic_while_reading_passes_the_turn() {
        let relay = Arc::new(Relay::default());
        let panicker = {
            let relay = relay.clone();
            std::thread::spawn(move || {
                let _turn = relay.take().expect("open");
                panic!("a request handler panicked");
            })
        };
        assert!(panicker.join().is_err());
        assert!(relay.take().is_some(), "the turn came back");
    }
}
