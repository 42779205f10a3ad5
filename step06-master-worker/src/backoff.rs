//! How soon the master restarts a worker that died.
//!
//! A worker that dies is restarted at once: its clients need it, and one crash says little. But
//! a worker that dies right after it started, twice in a row, will most likely die again (it
//! cannot bind its socket, it cannot start its threads, it crashes on its first request), and
//! restarting it at once, again and again, would only burn the CPU on `fork` (a fork storm) and
//! fill the log. So from the second quick death in a row on, the master waits before the next
//! try, 100 ms and then twice as long each time, up to 10 s; a worker that lives a second
//! resets the count.

use std::time::Duration;

/// A worker that dies sooner than this after it started "died at start".
pub const QUICK_DEATH: Duration = Duration::from_secs(1);
/// The wait after the second quick death in a row; it doubles with each one after.
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest wait between two tries.
pub const MAX_DELAY: Duration = Duration::from_secs(10);

/// The restart policy of one worker slot.
#[derive(Debug, Default, Clone)]
pub struct Backoff {
    /// Quick deaths in a row.
    quick_deaths: u32,
}

impl Backoff {
    // EXERCISE: restart-backoff - at once after one quick death; then 100 ms, doubling, up to 10 s
    /// The worker of this slot died after living `lived`: how long to wait before the next one.
    pub fn delay_after(&mut self, lived: Duration) -> Duration {
        if lived >= QUICK_DEATH {
            self.quick_deaths = 0;
            return Duration::ZERO;
        }
        self.quick_deaths = self.quick_deaths.saturating_add(1);
        if self.quick_deaths == 1 {
            return Duration::ZERO;
        }
        let doublings = (self.quick_deaths - 2).min(16);
        FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY)
    }
    // EXERCISE END

    /// Quick deaths in a row, for the log.
    pub fn quick_deaths(&self) -> u32 {
        self.quick_deaths
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_death_is_restarted_at_once() {
        let mut backoff = Backoff::default();
        assert_eq!(backoff.delay_after(Duration::ZERO), Duration::ZERO);
        assert_eq!(
            backoff.delay_after(Duration::from_secs(3600)),
            Duration::ZERO
        );
        assert_eq!(backoff.delay_after(QUICK_DEATH), Duration::ZERO);
    }

    #[test]
    fn quick_deaths_in_a_row_double_the_wait_up_to_the_cap() {
        let mut backoff = Backoff::default();
        let waits: Vec<u64> = (0..11)
            .map(|_| backoff.delay_after(Duration::from_millis(5)).as_millis() as u64)
            .collect();
        assert_eq!(
            waits,
            [
                0, 100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000
            ]
        );
        for _ in 0..100 {
            assert_eq!(backoff.delay_after(Duration::ZERO), MAX_DELAY);
        }
    }

    #[test]
    fn a_worker_that_lives_resets_the_count() {
        let mut backoff = Backoff::default();
        backoff.delay_after(Duration::ZERO);
        backoff.delay_after(Duration::ZERO);
        assert_eq!(backoff.quick_deaths(), 2);
        assert_eq!(backoff.delay_after(Duration::from_secs(5)), Duration::ZERO);
        assert_eq!(backoff.delay_after(Duration::ZERO), Duration::ZERO);
        assert_eq!(
            backoff.delay_after(Duration::ZERO),
            FIRST_DELAY,
            "the count started again"
        );
    }
}
