//! When to add a worker and when to let one go: the scaling rules as plain arithmetic.
//!
//! Nothing here locks, sleeps or starts a thread. The [`Scaler`] is told each new queue length
//! and the time, and answers with numbers; [`crate::queue::Queue`] keeps it under the same lock
//! as the connections, so a decision and the state it was made on never drift apart. That also
//! makes the rules testable with made-up instants instead of real waiting.

use std::fmt;
use std::time::{Duration, Instant};

/// The numbers that shape the queue and its workers.
///
/// [`ScalingPolicy::default`] is the course's assignment: ten slots, one more worker when the
/// queue is 80 % full, one fewer when it has stayed at or under 20 % for half a second, and
/// between 1 and 100 workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalingPolicy {
    /// How many accepted connections may wait for a worker.
    pub capacity: usize,
    /// Add a worker when a push leaves the queue at least this full, in percent.
    pub grow_at_percent: u8,
    /// The queue counts as calm while it is at most this full, in percent.
    pub shrink_at_percent: u8,
    /// How long the queue must stay calm before one worker leaves; the next one leaves after
    /// as long again. This hysteresis keeps the count from flapping on a ragged load.
    pub shrink_after: Duration,
    /// Workers started at once and never retired: the floor.
    pub min_workers: usize,
    /// The ceiling, however full the queue.
    pub max_workers: usize,
}

impl Default for ScalingPolicy {
    fn default() -> ScalingPolicy {
        ScalingPolicy {
            capacity: 10,
            grow_at_percent: 80,
            shrink_at_percent: 20,
            shrink_after: Duration::from_millis(500),
            min_workers: 1,
            max_workers: 100,
        }
    }
}

/// Why a [`ScalingPolicy`] cannot work, in words fit for a start-up error line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(String);

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PolicyError {}

impl ScalingPolicy {
    /// Checks that the numbers make sense together.
    ///
    /// # Errors
    ///
    /// A zero capacity or `min_workers`, `min_workers` above `max_workers`, a percentage above
    /// 100, or a shrink threshold not below the grow threshold (then one queue length could
    /// mean "grow" and "shrink" at once).
    pub fn validate(&self) -> Result<(), PolicyError> {
        let problem = if self.capacity == 0 {
            "the queue capacity must be at least 1".to_string()
        } else if self.min_workers == 0 {
            "at least one worker is needed (--min-workers 1 or more)".to_string()
        } else if self.min_workers > self.max_workers {
            format!(
                "--min-workers {} is above --max-workers {}",
                self.min_workers, self.max_workers
            )
        } else if self.grow_at_percent > 100 || self.shrink_at_percent > 100 {
            "thresholds are percentages, from 0 to 100".to_string()
        } else if self.shrink_at_percent >= self.grow_at_percent {
            format!(
                "--shrink-at {} must be below --grow-at {}",
                self.shrink_at_percent, self.grow_at_percent
            )
        } else {
            return Ok(());
        };
        Err(PolicyError(problem))
    }

    // EXERCISE: thresholds - the 80 % and 20 % rules, in integer arithmetic
    /// Whether `len` waiting connections are enough to add a worker. Integer arithmetic:
    /// `len / capacity >= grow_at / 100` without rounding, so 8 of 10 is exactly 80 %.
    pub fn is_busy(&self, len: usize) -> bool {
        len * 100 >= usize::from(self.grow_at_percent) * self.capacity
    }

    /// Whether `len` waiting connections are few enough to count as calm.
    pub fn is_calm(&self, len: usize) -> bool {
        len * 100 <= usize::from(self.shrink_at_percent) * self.capacity
    }
    // EXERCISE END
}

/// The worker count and the clock behind the shrink rule.
#[derive(Debug)]
pub(crate) struct Scaler {
    policy: ScalingPolicy,
    /// Workers counted by the scaler: started (or about to start) and not yet gone.
    pub(crate) workers: usize,
    pub(crate) peak_workers: usize,
    /// How many times a worker was added, and let go.
    pub(crate) grown: u64,
    pub(crate) shrunk: u64,
    /// Since when the queue has been calm (or since the last worker left, whichever is later);
    /// `None` while it is not calm.
    calm_since: Option<Instant>,
}

impl Scaler {
    /// A scaler for a fresh, empty queue served by the policy's `min_workers`.
    pub(crate) fn new(policy: ScalingPolicy, now: Instant) -> Scaler {
        let workers = policy.min_workers;
        Scaler {
            policy,
            workers,
            peak_workers: workers,
            grown: 0,
            shrunk: 0,
            // An empty queue is calm (0 % is at or under any threshold).
            calm_since: Some(now),
        }
    }

    pub(crate) fn policy(&self) -> &ScalingPolicy {
        &self.policy
    }

    /// Records that the queue now holds `len` connections. Called on every change.
    pub(crate) fn observe(&mut self, len: usize, now: Instant) {
        if self.policy.is_calm(len) {
            self.calm_since.get_or_insert(now);
        } else {
            self.calm_since = None;
        }
    }

    /// After a push left `len` connections waiting: whether to add a worker. A `true` counts
    /// the worker at once, so that the next push sees it even before its thread runs.
    pub(crate) fn grow_if_busy(&mut self, len: usize) -> bool {
        if !self.policy.is_busy(len) || self.workers >= self.policy.max_workers {
            return false;
        }
        self.workers += 1;
        self.grown += 1;
        self.peak_workers = self.peak_workers.max(self.workers);
        true
    }

    /// How long until one worker above the floor may leave: `None` when none may (the queue is
    /// not calm, or there is no worker above the floor), `Some(Duration::ZERO)` when one may
    /// leave now.
    pub(crate) fn retire_in(&self, now: Instant) -> Option<Duration> {
        if self.workers <= self.policy.min_workers {
            return None;
        }
        let due = self.calm_since? + self.policy.shrink_after;
        Some(due.saturating_duration_since(now))
    }

    /// One worker leaves because the queue stayed calm. The calm period starts over, so the
    /// next worker leaves only after another `shrink_after`: the count steps down gently.
    pub(crate) fn retire(&mut self, now: Instant) {
        self.workers -= 1;
        self.shrunk += 1;
        self.calm_since = Some(now);
    }

    /// A worker is gone for another reason: the queue closed, or its thread could not start
    /// (then `was_growth` undoes the count of the growth that asked for it).
    pub(crate) fn worker_gone(&mut self, was_growth: bool) {
        self.workers = self.workers.saturating_sub(1);
        if was_growth {
            self.grown = self.grown.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_default_is_the_course_assignment() {
        let policy = ScalingPolicy::default();
        assert_eq!(policy.validate(), Ok(()));
        let busy: Vec<usize> = (0..=10).filter(|&len| policy.is_busy(len)).collect();
        let calm: Vec<usize> = (0..=10).filter(|&len| policy.is_calm(len)).collect();
        assert_eq!(busy, [8, 9, 10], "80 % of ten slots");
        assert_eq!(calm, [0, 1, 2], "20 % of ten slots");
    }

    #[test]
    fn nonsense_policies_are_refused_with_a_reason() {
        let base = ScalingPolicy::default();
        let cases = [
            ScalingPolicy {
                capacity: 0,
                ..base.clone()
            },
            ScalingPolicy {
                min_workers: 0,
                ..base.clone()
            },
            ScalingPolicy {
                min_workers: 5,
                max_workers: 4,
                ..base.clone()
            },
            ScalingPolicy {
                grow_at_percent: 101,
                ..base.clone()
            },
            ScalingPolicy {
                grow_at_percent: 50,
                shrink_at_percent: 50,
                ..base.clone()
            },
        ];
        for policy in cases {
            let error = policy.validate().expect_err("refused");
            assert!(!error.to_string().is_empty());
        }
        assert!(
            ScalingPolicy {
                min_workers: 4,
                max_workers: 4,
                ..base
            }
            .validate()
            .is_ok()
        );
    }

    #[test]
    fn grows_one_worker_per_busy_push_up_to_the_ceiling() {
        let policy = ScalingPolicy {
            max_workers: 3,
            ..ScalingPolicy::default()
        };
        let mut scaler = Scaler::new(policy, Instant::now());
        assert!(!scaler.grow_if_busy(7), "7 of 10 is under 80 %");
        assert!(scaler.grow_if_busy(8));
        assert!(scaler.grow_if_busy(10));
        assert!(!scaler.grow_if_busy(10), "3 is the ceiling");
        assert_eq!(
            (scaler.workers, scaler.peak_workers, scaler.grown),
            (3, 3, 2)
        );
    }

    #[test]
    fn shrinks_one_worker_per_calm_period_down_to_the_floor() {
        let start = Instant::now();
        let mut scaler = Scaler::new(ScalingPolicy::default(), start);
        assert_eq!(scaler.retire_in(start), None, "nobody above the floor");
        scaler.observe(9, start);
        assert!(scaler.grow_if_busy(9) && scaler.grow_if_busy(9));
        assert_eq!(scaler.retire_in(start), None, "busy: nobody leaves");

        // The queue drains at 100 ms; it has been calm for 500 ms at 600 ms.
        scaler.observe(2, start + ms(100));
        assert_eq!(scaler.retire_in(start + ms(100)), Some(ms(500)));
        assert_eq!(scaler.retire_in(start + ms(400)), Some(ms(200)));
        scaler.observe(0, start + ms(400));
        assert_eq!(
            scaler.retire_in(start + ms(600)),
            Some(Duration::ZERO),
            "calm since 100 ms"
        );
        scaler.retire(start + ms(600));
        assert_eq!(
            scaler.retire_in(start + ms(600)),
            Some(ms(500)),
            "the calm period starts over"
        );
        scaler.retire(start + ms(1100));
        assert_eq!(scaler.retire_in(start + ms(9000)), None, "the floor holds");
        assert_eq!((scaler.workers, scaler.shrunk), (1, 2));
    }

    #[test]
    fn a_busy_moment_restarts_the_calm_period() {
        let start = Instant::now();
        let mut scaler = Scaler::new(ScalingPolicy::default(), start);
        scaler.observe(8, start);
        assert!(scaler.grow_if_busy(8));
        scaler.observe(1, start + ms(10));
        scaler.observe(3, start + ms(300));
        assert_eq!(
            scaler.retire_in(start + ms(600)),
            None,
            "3 of 10 is not calm"
        );
        scaler.observe(2, start + ms(700));
        assert_eq!(scaler.retire_in(start + ms(1000)), Some(ms(200)));
    }
}
