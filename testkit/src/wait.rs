//! Waiting for something to happen, without sleeping longer than it takes.

use std::thread;
use std::time::{Duration, Instant};

/// Calls `probe` every 10 ms until it returns `Some`, or `timeout` passes (`None` then).
///
/// A test that needs a server to reach a state (two workers running, six threads busy) polls
/// for it with this, and fails only after a generous `timeout`: a fixed sleep followed by an
/// exact count fails on a busy machine and wastes time on an idle one.
pub fn wait_for<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}
