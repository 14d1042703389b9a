//! The mount daemon's counters: FUSE requests by operation and EIO answers
//! ([`RequestCounters`]), KMS calls by operation with their errors and latency ([`KmsMeter`],
//! filled by [`MeteredKms`] around the daemon's KMS). Atomics only: counting takes no lock.
//! `kmsfs status` and the Prometheus endpoint read them through snapshots.

mod metered;

pub use metered::MeteredKms;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Upper bounds of the latency buckets, in seconds (the last bucket, +Inf, is implicit).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A latency histogram of fixed buckets ([`LATENCY_BUCKETS`]).
#[derive(Debug, Default)]
pub struct Latency {
    /// Observations per bucket (not cumulative); the last one is +Inf.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Sum of every observation, in nanoseconds.
    sum_nanos: AtomicU64,
}

/// What a [`Latency`] held at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct LatencySnapshot {
    /// Observations.
    pub count: u64,
    /// Sum of every observation, in seconds.
    pub sum_seconds: f64,
    /// (upper bound in seconds, observations above the previous bound and at or below this
    /// one), without the last bucket (+Inf), which holds `count` less the others.
    pub buckets: Vec<(f64, u64)>,
}

impl Latency {
    /// Counts one observation of `elapsed`.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let slot = LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The histogram now.
    pub fn snapshot(&self) -> LatencySnapshot {
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(bound, count)| (*bound, count.load(Ordering::Relaxed)))
            .collect();
        let slowest = self.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
        LatencySnapshot {
            count: buckets.iter().map(|(_, n)| n).sum::<u64>() + slowest,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            buckets,
        }
    }
}

/// Requests served by a mount: a counter per operation (named by the adapter), the EIO
/// answers among them, and when the mount started.
#[derive(Debug)]
pub struct RequestCounters {
    names: &'static [&'static str],
    counts: Box<[AtomicU64]>,
    eio: AtomicU64,
    started: Instant,
}

/// What [`RequestCounters`] held at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RequestSnapshot {
    /// Requests by operation (operations never requested are left out).
    pub by_operation: BTreeMap<String, u64>,
    /// All requests.
    pub total: u64,
    /// Requests answered EIO.
    pub eio: u64,
}

impl RequestCounters {
    /// Counters for the operations `names` (an operation is counted by its index there).
    pub fn new(names: &'static [&'static str]) -> Self {
        RequestCounters {
            names,
            counts: names.iter().map(|_| AtomicU64::new(0)).collect(),
            eio: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// Counts one request of operation `index` (an index past the names is ignored).
    pub fn count(&self, index: usize) {
        if let Some(counter) = self.counts.get(index) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one request answered EIO.
    pub fn count_eio(&self) {
        self.eio.fetch_add(1, Ordering::Relaxed);
    }

    /// Time since the counters were made (the mount's uptime).
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The counters now.
    pub fn snapshot(&self) -> RequestSnapshot {
        let by_operation: BTreeMap<String, u64> = self
            .names
            .iter()
            .zip(self.counts.iter())
            .map(|(name, count)| (name.to_string(), count.load(Ordering::Relaxed)))
            .filter(|(_, count)| *count > 0)
            .collect();
        RequestSnapshot {
            total: by_operation.values().sum(),
            by_operation,
            eio: self.eio.load(Ordering::Relaxed),
        }
    }
}

/// The KMS operations the daemon's meter tells apart: the spec's operation ids, and the
/// backend's own `housekeeping`.
pub const KMS_OPERATIONS: [&str; 16] = [
    "create-kms-key",
    "list-kms-keys",
    "get-kms-key",
    "rotate-kms-key",
    "enable-kms-key",
    "disable-kms-key",
    "enable-kms-key-rotation",
    "disable-kms-key-rotation",
    "schedule-kms-key-deletion",
    "cancel-kms-key-deletion",
    "list-kms-key-rotations",
    "encrypt",
    "decrypt",
    "generate-data-key",
    "re-encrypt",
    "housekeeping",
];

/// Calls of one KMS operation.
#[derive(Debug, Default)]
struct OperationMeter {
    calls: AtomicU64,
    errors: AtomicU64,
    latency: Latency,
}

/// KMS calls by operation: how many, how many failed, how long they took.
#[derive(Debug, Default)]
pub struct KmsMeter {
    operations: [OperationMeter; KMS_OPERATIONS.len()],
}

/// What the meter held for one operation at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct KmsOperationSnapshot {
    /// The operation id.
    pub operation: String,
    /// Calls made.
    pub calls: u64,
    /// Calls that failed (refused or not answered).
    pub errors: u64,
    /// Their latency.
    pub latency: LatencySnapshot,
}

impl KmsMeter {
    /// Records one call of `operation` (one of [`KMS_OPERATIONS`]; another is ignored).
    pub fn record(&self, operation: &str, elapsed: Duration, failed: bool) {
        let Some(meter) = KMS_OPERATIONS
            .iter()
            .position(|o| *o == operation)
            .and_then(|index| self.operations.get(index))
        else {
            return;
        };
        meter.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            meter.errors.fetch_add(1, Ordering::Relaxed);
        }
        meter.latency.observe(elapsed);
    }

    /// The operations called so far.
    pub fn snapshot(&self) -> Vec<KmsOperationSnapshot> {
        KMS_OPERATIONS
            .iter()
            .zip(&self.operations)
            .filter(|(_, meter)| meter.calls.load(Ordering::Relaxed) > 0)
            .map(|(name, meter)| KmsOperationSnapshot {
                operation: name.to_string(),
                calls: meter.calls.load(Ordering::Relaxed),
                errors: meter.errors.load(Ordering::Relaxed),
                latency: meter.latency.snapshot(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_count_each_observation_once_and_the_slowest_only_in_the_count() {
        let latency = Latency::default();
        latency.observe(Duration::from_micros(50));
        latency.observe(Duration::from_millis(3));
        latency.observe(Duration::from_secs(60));
        let snap = latency.snapshot();
        assert_eq!(snap.count, 3);
        assert_eq!(snap.buckets[0], (0.0001, 1));
        let at_5ms = snap
            .buckets
            .iter()
            .find(|(b, _)| *b == 0.005)
            .expect("5 ms");
        assert_eq!(at_5ms.1, 1);
        assert_eq!(snap.buckets.iter().map(|b| b.1).sum::<u64>(), 2);
        assert!(
            (snap.sum_seconds - 60.00305).abs() < 1e-6,
            "{}",
            snap.sum_seconds
        );
    }

    #[test]
    fn requests_count_by_operation_and_eio_apart() {
        static NAMES: [&str; 3] = ["lookup", "read", "write"];
        let counters = RequestCounters::new(&NAMES);
        counters.count(1);
        counters.count(1);
        counters.count(0);
        counters.count(99);
        counters.count_eio();
        let snap = counters.snapshot();
        let by_operation: Vec<(&str, u64)> = snap
            .by_operation
            .iter()
            .map(|(name, count)| (name.as_str(), *count))
            .collect();
        assert_eq!(by_operation, vec![("lookup", 1), ("read", 2)]);
        assert_eq!((snap.total, snap.eio), (3, 1));
    }

    #[test]
    fn the_kms_meter_keeps_calls_errors_and_latency_per_operation() {
        let meter = KmsMeter::default();
        meter.record("decrypt", Duration::from_millis(2), false);
        meter.record("decrypt", Duration::from_millis(4), true);
        meter.record("frobnicate", Duration::from_millis(4), true);
        let snap = meter.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].operation, "decrypt");
        assert_eq!((snap[0].calls, snap[0].errors), (2, 1));
        assert_eq!(snap[0].latency.count, 2);
    }
}
