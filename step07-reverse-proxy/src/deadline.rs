//! A deadline that moves with every request but seldom fires, without touching the runtime's
//! timer wheel each time it moves: nginx's "lazy" timers (`NGX_TIMER_LAZY_DELAY`).
//!
//! A kept-alive connection waits with a deadline for every request: the idle timeout, then the
//! upstream's read timeout. A fresh `tokio::time::timeout` per wait puts a timer in the wheel
//! and takes it out again, request after request, for timers that almost never go off. Here
//! the timer stays in the wheel: a later deadline only changes a field, and the timer, when it
//! goes off before the deadline, sets itself again for the rest. Only a deadline earlier than
//! the timer moves it.

use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep, sleep_until};

/// One connection's deadline.
pub(crate) struct Deadline {
    /// In the runtime's timer wheel; it may go off before `at`, never after.
    timer: Pin<Box<Sleep>>,
    at: Instant,
}

impl Deadline {
    /// A deadline far away, until [`Deadline::set`] says otherwise.
    pub fn new() -> Deadline {
        let far = Instant::now() + Duration::from_secs(24 * 3600);
        Deadline {
            timer: Box::pin(sleep_until(far)),
            at: far,
        }
    }

    /// From now on, [`Deadline::passed`] resolves at `at`.
    pub fn set(&mut self, at: Instant) {
        self.at = at;
        if at < self.timer.deadline() {
            self.timer.as_mut().reset(at);
        }
    }

    /// `within` from now.
    pub fn set_in(&mut self, within: Duration) {
        self.set(Instant::now() + within);
    }

    /// Resolves once the deadline has passed.
    pub async fn passed(&mut self) {
        loop {
            self.timer.as_mut().await;
            if Instant::now() >= self.at {
                return;
            }
            // It went off for an earlier deadline, since moved later: again, for the rest.
            let at = self.at;
            self.timer.as_mut().reset(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_moved_later_fires_later_and_one_moved_earlier_fires_earlier() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut deadline = Deadline::new();
            let started = Instant::now();
            deadline.set_in(Duration::from_millis(30));
            deadline.set_in(Duration::from_millis(90));
            deadline.passed().await;
            assert!(started.elapsed() >= Duration::from_millis(90));
            let started = Instant::now();
            deadline.set_in(Duration::from_secs(60));
            deadline.set_in(Duration::from_millis(50));
            deadline.passed().await;
            let waited = started.elapsed();
            assert!(waited >= Duration::from_millis(50) && waited < Duration::from_secs(1));
        });
    }
}
