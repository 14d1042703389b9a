//! The pauses between tries of something that failed: the first pause, a factor by which each
//! next pause grows, a cap, and optionally a number of retries after which to give up. Used by
//! the remote client's retry loop and by the server's replication tasks; plain arithmetic, so
//! it serves blocking and async callers alike.

use std::time::Duration;

/// A schedule of pauses between tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The pause before the first retry.
    pub first: Duration,
    /// Each next pause is the previous one times this.
    pub factor: u32,
    /// No pause is longer.
    pub max: Duration,
    /// How many retries there are at most; `None` for no limit.
    pub retries: Option<u32>,
}

impl Backoff {
    /// The pause before retry number `retry` (0 for the first), or `None` when the schedule
    /// has no more retries.
    pub fn pause(&self, retry: u32) -> Option<Duration> {
        if self.retries.is_some_and(|limit| retry >= limit) {
            return None;
        }
        let growth = self.factor.checked_pow(retry).unwrap_or(u32::MAX);
        Some(self.first.saturating_mul(growth).min(self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn pauses_grow_to_the_cap_and_end_with_the_retries() {
        let limited = Backoff {
            first: MS(100),
            factor: 3,
            max: MS(300),
            retries: Some(2),
        };
        assert_eq!(limited.pause(0), Some(MS(100)));
        assert_eq!(limited.pause(1), Some(MS(300)));
        assert_eq!(limited.pause(2), None);
        assert_eq!(limited.pause(u32::MAX), None);
        let endless = Backoff {
            first: MS(250),
            factor: 2,
            max: Duration::from_secs(2),
            retries: None,
        };
        let pauses: Vec<_> = (0..6).filter_map(|n| endless.pause(n)).collect();
        assert_eq!(
            pauses,
            [MS(250), MS(500), MS(1000), MS(2000), MS(2000), MS(2000)]
        );
        assert_eq!(
            endless.pause(200),
            Some(Duration::from_secs(2)),
            "no overflow"
        );
    }
}
