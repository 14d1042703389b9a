//! The one source of wall-clock time for key lifecycles: the embedded KMS and the KMS server
//! take `now` from a [`Clock`] they are given, and the keyring takes it as a parameter. The
//! program passes [`SystemClock`]; tests pass a [`ManualClock`] and move it by hand, so that
//! rotations and deletions months away happen in a test.
//!
//! Monotonic time (`Instant`, for timeouts, backoff and rate limits) is not a clock of this
//! kind and stays where it is used.

use time::OffsetDateTime;

/// A source of the current time, injected so that tests can move it.
pub trait Clock: Send + Sync {
    /// The current time, in UTC.
    fn now(&self) -> OffsetDateTime;
}

/// The system's clock, in UTC.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that stands still until it is set or advanced (for tests; it may also be set back).
#[cfg(test)]
#[derive(Debug)]
pub struct ManualClock(std::sync::Mutex<OffsetDateTime>);

#[cfg(test)]
impl ManualClock {
    /// A clock showing `at`.
    pub fn new(at: OffsetDateTime) -> Self {
        ManualClock(std::sync::Mutex::new(at))
    }

    /// Shows `at` from now on.
    pub fn set(&self, at: OffsetDateTime) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = at;
    }

    /// Moves the clock by `by` (backwards when negative).
    pub fn advance(&self, by: time::Duration) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) += by;
    }

    /// Moves the clock by `days` days (backwards when negative).
    pub fn advance_days(&self, days: i64) {
        self.advance(time::Duration::days(days));
    }
}

#[cfg(test)]
impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_manual_clock_shows_what_it_was_set_to_and_moves_both_ways() {
        let clock = ManualClock::new(datetime!(2026-01-01 00:00 UTC));
        assert_eq!(clock.now(), datetime!(2026-01-01 00:00 UTC));
        clock.advance_days(90);
        assert_eq!(clock.now(), datetime!(2026-04-01 00:00 UTC));
        clock.advance(time::Duration::hours(-1));
        assert_eq!(clock.now(), datetime!(2026-03-31 23:00 UTC));
        clock.set(datetime!(2020-02-29 12:00 UTC));
        assert_eq!(clock.now(), datetime!(2020-02-29 12:00 UTC));
    }

    #[test]
    fn the_system_clock_is_the_wall_clock_in_utc() {
        let before = OffsetDateTime::now_utc();
        let now = SystemClock.now();
        assert!(before <= now && now <= OffsetDateTime::now_utc());
        assert_eq!(now.offset(), time::UtcOffset::UTC);
    }
}
