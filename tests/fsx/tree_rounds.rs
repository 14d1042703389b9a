//! The rounds of the fsstress tool: the threads run a round of operations each, then wait while
//! the tree is checked, the filesystem remounted and the tree checked again, so that a file that
//! differs from what reached the filesystem is found within a round of its cause, with the
//! history of its operations. No thread panics across a round: a failure is recorded, every
//! thread stops, and the run panics with the first failure once all are joined.

use super::check::{changes, check_tree, history_of};
use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, Mutex, PoisonError};

/// What the threads of a run share.
pub struct Shared {
    stop: AtomicBool,
    failure: Mutex<Option<String>>,
    /// Every thread's lines: (its operation number, line).
    history: Vec<Mutex<Vec<(u64, String)>>>,
    /// The threads and the coordinating thread.
    barrier: Barrier,
}

fn panic_text(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".to_string())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// For `threads` threads and one coordinating thread.
    pub fn new(threads: u32) -> Shared {
        Shared {
            stop: AtomicBool::new(false),
            failure: Mutex::new(None),
            history: (0..threads).map(|_| Mutex::new(Vec::new())).collect(),
            barrier: Barrier::new(threads as usize + 1),
        }
    }

    /// True once a failure is recorded.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Records a failure (the first one is reported) and stops every thread.
    pub fn fail(&self, report: String) {
        lock(&self.failure).get_or_insert(report);
        self.stop.store(true, Ordering::Relaxed);
    }

    /// The first failure, if any.
    pub fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    /// Adds a line to thread `tid`'s history.
    pub fn record(&self, tid: u32, op_no: u64, line: &str) {
        lock(&self.history[tid as usize]).push((op_no, line.to_string()));
    }

    /// A copy of every thread's history.
    pub fn history(&self) -> Vec<Vec<(u64, String)>> {
        self.history.iter().map(|h| lock(h).clone()).collect()
    }

    /// Runs `f`; a panic in it (a bug of the tool) becomes the run's failure.
    pub fn guard(&self, f: impl FnOnce()) {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(f)) {
            self.fail(format!("a thread panicked: {}", panic_text(&*panic)));
        }
    }

    /// A thread's end of a round: waits for the check between rounds to finish.
    pub fn end_round(&self) {
        self.barrier.wait();
        self.barrier.wait();
    }

    /// The coordinating thread's side of [`Shared::end_round`]: once every thread has ended
    /// its round, runs `check` (unless the run stopped), then lets the threads go on.
    pub fn between_rounds(&self, check: impl FnOnce() -> Result<(), String>) {
        self.barrier.wait();
        if !self.stopped() {
            match catch_unwind(AssertUnwindSafe(check)) {
                Ok(Ok(())) => {}
                Ok(Err(report)) => self.fail(report),
                Err(panic) => self.fail(panic_text(&*panic)),
            }
        }
        self.barrier.wait();
    }
}

/// Checks the tree, calls `remount`, checks it again and compares: the report of a problem
/// names the files and the operations on them.
pub fn check_and_remount(
    name: &str,
    at: &str,
    epoch: u64,
    root: &Path,
    shared: &Shared,
    remount: &mut dyn FnMut(),
) -> Result<(), String> {
    let report = |what: &str, problems: &[String]| {
        format!(
            "{name} FAILED {at}: {what}:\n{}\n{}",
            problems.join("\n"),
            history_of(problems, &shared.history())
        )
    };
    let (before, problems) = check_tree(name, root, epoch);
    if !problems.is_empty() {
        return Err(report("problem(s) in the tree", &problems));
    }
    if let Err(panic) = catch_unwind(AssertUnwindSafe(&mut *remount)) {
        return Err(format!(
            "{name} FAILED {at}: remount: {}",
            panic_text(&*panic)
        ));
    }
    let (after, problems) = check_tree(name, root, epoch + 1);
    if !problems.is_empty() {
        return Err(report("problem(s) in the tree after remount", &problems));
    }
    let changed = changes(&before, &after);
    if !changed.is_empty() {
        return Err(report("the tree changed across the remount", &changed));
    }
    Ok(())
}
