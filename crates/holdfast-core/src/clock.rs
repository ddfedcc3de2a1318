//! Deadline arithmetic that cannot panic.
//!
//! `Instant + Duration` panics when the sum does not fit the clock. Durations reach the
//! core from the config (bounded by validation) and from services at run time
//! (`WATCHDOG_USEC=`, `EXTEND_TIMEOUT_USEC=`: any `u64` of microseconds), so every
//! deadline the daemon computes goes through [`later`] instead.

use std::time::{Duration, Instant};

/// Farther than any deadline can matter: a timer this far out is as good as never, and
/// a monotonic clock (which counts from boot in `i64` seconds) always has room for it.
pub const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// `now + d`, saturating at [`FAR_FUTURE`] from `now`.
pub fn later(now: Instant, d: Duration) -> Instant {
    // The fallback is unreachable for a real clock (see FAR_FUTURE); it only keeps a
    // panic out of the daemon.
    now.checked_add(d.min(FAR_FUTURE)).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_that_fits_is_added_exactly() {
        let now = Instant::now();
        assert_eq!(
            later(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
    }

    #[test]
    fn a_duration_too_long_for_the_clock_saturates_far_in_the_future() {
        let now = Instant::now();
        assert_eq!(later(now, Duration::MAX), now + FAR_FUTURE);
        assert_eq!(later(now, Duration::from_secs(u64::MAX)), now + FAR_FUTURE);
    }
}
