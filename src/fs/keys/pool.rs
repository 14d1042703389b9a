//! DEKs made ahead for new files: a create takes one that is ready instead of waiting for the
//! KMS (a round trip to a remote KMS per new file), and a background thread makes more.
//!
//! The pool fills on demand only: an idle mount makes no KMS call, and a ready DEK older than
//! [`MAX_AGE`] is dropped unused, so a rotated or disabled KMS key stops being used for new files
//! within that time, and plaintext DEKs do not wait in memory for long.

use crate::format::{FileCipher, FileId};
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a ready DEK may wait for a file.
pub const MAX_AGE: Duration = Duration::from_secs(60);

/// How long the refill waits after the KMS failed before it tries again.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// A DEK with its file id, made for a file not created yet.
pub struct Fresh {
    /// The file id the DEK is bound to.
    pub file_id: FileId,
    /// The file's cipher.
    pub cipher: Arc<FileCipher>,
    /// The DEK wrapped by the KMS under the file's context.
    pub wrapped: Vec<u8>,
    made: Instant,
}

impl Fresh {
    /// A fresh entry made now.
    pub fn new(file_id: FileId, cipher: Arc<FileCipher>, wrapped: Vec<u8>) -> Self {
        Fresh {
            file_id,
            cipher,
            wrapped,
            made: Instant::now(),
        }
    }

    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.made) > MAX_AGE
    }
}

struct State {
    ready: VecDeque<Fresh>,
    /// DEKs being made by the refill threads.
    making: usize,
    /// A create found the pool below its size: the refill thread has work.
    wanted: bool,
    stop: bool,
}

/// The ready DEKs, shared by the creates and the refill thread.
pub struct Pool {
    state: Mutex<State>,
    changed: Condvar,
    size: usize,
}

impl Pool {
    /// A pool of up to `size` DEKs and `threads` refill threads, which call `make` for each
    /// one (several, so that a remote KMS's round trips overlap). The threads end when the pool
    /// is stopped ([`Pool::stop`]).
    pub fn start<E: std::fmt::Display>(
        size: usize,
        threads: usize,
        make: impl Fn() -> Result<Fresh, E> + Send + Sync + 'static,
    ) -> std::io::Result<Arc<Pool>> {
        let pool = Arc::new(Pool {
            state: Mutex::new(State {
                ready: VecDeque::with_capacity(size),
                making: 0,
                wanted: false,
                stop: false,
            }),
            changed: Condvar::new(),
            size,
        });
        let make = Arc::new(make);
        for i in 0..threads.max(1) {
            let (worker, make) = (pool.clone(), make.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("dek-pool-{i}"))
                .spawn(move || worker.refill(&*make));
            if let Err(e) = spawned {
                pool.stop();
                return Err(e);
            }
        }
        Ok(pool)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A ready DEK, if one is. Below half full, the refill threads are asked to fill the pool
    /// again: one wake-up per half a pool of creates, not one per create.
    pub fn take(&self) -> Option<Fresh> {
        let now = Instant::now();
        let mut state = self.lock();
        state.ready.retain(|fresh| !fresh.expired(now));
        let fresh = state.ready.pop_front();
        if !state.wanted && state.ready.len() + state.making <= self.size / 2 {
            state.wanted = true;
            // All: one condition variable also holds threads pausing after a failure.
            self.changed.notify_all();
        }
        fresh
    }

    /// Ends the refill thread and drops the ready DEKs.
    pub fn stop(&self) {
        let mut state = self.lock();
        state.stop = true;
        state.ready.clear();
        self.changed.notify_all();
    }

    fn refill<E: std::fmt::Display>(&self, make: &dyn Fn() -> Result<Fresh, E>) {
        let mut failing = false;
        loop {
            {
                let mut state = self.lock();
                let has_work = |s: &State| s.wanted && s.ready.len() + s.making < self.size;
                while !state.stop && !has_work(&state) {
                    // Wakes up now and then to drop what waited too long.
                    state = self
                        .changed
                        .wait_timeout(state, MAX_AGE)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    let now = Instant::now();
                    state.ready.retain(|fresh| !fresh.expired(now));
                }
                if state.stop {
                    return;
                }
                state.making += 1;
                if state.ready.len() + state.making < self.size {
                    // More to make: another thread makes the next one at the same time.
                    self.changed.notify_all();
                }
            }
            let made = make();
            let mut state = self.lock();
            state.making -= 1;
            match made {
                Ok(fresh) => {
                    if failing {
                        tracing::info!("the KMS makes data keys again");
                        failing = false;
                    }
                    if state.stop {
                        return;
                    }
                    state.ready.push_back(fresh);
                    if state.ready.len() + state.making >= self.size {
                        state.wanted = false;
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(
                            "cannot make data keys ahead ({e}); new files ask the KMS directly"
                        );
                        failing = true;
                    }
                    // Tried again when a create next asks, and not before a pause.
                    state.wanted = false;
                    let (state, _) = self
                        .changed
                        .wait_timeout_while(state, RETRY_AFTER, |s| !s.stop)
                        .unwrap_or_else(PoisonError::into_inner);
                    if state.stop {
                        return;
                    }
                }
            }
        }
    }

    /// Number of ready DEKs.
    #[cfg(test)]
    pub fn ready(&self) -> usize {
        self.lock().ready.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Key256;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn fresh() -> Fresh {
        let id: FileId = crate::crypto::random_array();
        Fresh::new(
            id,
            Arc::new(FileCipher::new(
                &Key256::random(),
                id,
                crate::format::HeaderVersion::V2,
            )),
            vec![1; 8],
        )
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn fills_on_demand_and_stops() {
        let made = Arc::new(AtomicUsize::new(0));
        let counter = made.clone();
        let pool = Pool::start(4, 2, move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(fresh())
        })
        .expect("pool");
        // Idle: nothing is made until a create asks.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(made.load(Ordering::SeqCst), 0);
        assert!(pool.take().is_none(), "empty at first");
        wait_for("the pool to fill", || pool.ready() == 4);
        let ids: Vec<FileId> = (0..4)
            .filter_map(|_| pool.take())
            .map(|f| f.file_id)
            .collect();
        assert_eq!(ids.len(), 4);
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 4, "every DEK goes to one file only");
        wait_for("the pool to refill", || pool.ready() == 4);
        pool.stop();
        assert_eq!(pool.ready(), 0, "stopping drops the ready DEKs");
    }

    #[test]
    fn a_failing_kms_leaves_the_pool_empty_and_creates_fall_back() {
        let pool = Pool::start(4, 2, || Err::<Fresh, _>("KMS unreachable")).expect("pool");
        assert!(pool.take().is_none());
        std::thread::sleep(Duration::from_millis(50));
        assert!(pool.take().is_none());
        pool.stop();
    }
}
