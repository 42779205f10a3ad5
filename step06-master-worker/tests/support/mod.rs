//! What step 06's tests share: finding the workers of a master, and waiting for something to
//! happen without sleeping longer than needed.

#![allow(dead_code)] // Each test file uses its own part of this module.

use std::thread;
use std::time::{Duration, Instant};

use testkit::{Server, procfs};

pub const BIN: &str = env!("CARGO_BIN_EXE_step06-master-worker");

/// The master's worker processes that are running (zombies, already dead, do not count).
pub fn workers_of(server: &Server) -> Vec<u32> {
    let mut pids: Vec<u32> = procfs::children_of(server.pid())
        .unwrap_or_default()
        .into_iter()
        .filter(|child| child.state != 'Z')
        .map(|child| child.pid)
        .collect();
    pids.sort_unstable();
    pids
}

/// Calls `probe` every few milliseconds until it returns `Some`, or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until the master has exactly `count` running workers; their pids.
///
/// # Panics
///
/// When that does not happen within 5 s.
pub fn wait_for_workers(server: &Server, count: usize) -> Vec<u32> {
    wait_for(Duration::from_secs(5), || {
        let workers = workers_of(server);
        (workers.len() == count).then_some(workers)
    })
    .unwrap_or_else(|| panic!("expected {count} workers, found {:?}", workers_of(server)))
}
