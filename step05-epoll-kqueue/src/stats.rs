//! The loop's live figures, for `/stats`.
//!
//! The loop's thread updates them and the site reads them while it answers `/stats`, on the
//! same thread here; atomics make them shareable all the same (step06's workers put them in
//! their own `/stats`, and [`common::Site`] asks for `Send + Sync`). Relaxed ordering is
//! enough: each figure is read on its own, and nothing else is inferred from it.

use std::sync::atomic::{AtomicU64, Ordering};

use common::site::StatsJson;

/// Counters and gauges of one event loop.
#[derive(Debug, Default)]
pub struct LoopStats {
    /// Connections open now.
    connections: AtomicU64,
    /// Connections accepted since the start.
    accepted: AtomicU64,
    /// Timers set (in the heap) when the current loop iteration began, or, since a connection
    /// is served as it is accepted, when the last one was.
    timers: AtomicU64,
    /// Times the loop came back from waiting for events.
    loop_iterations: AtomicU64,
}

impl LoopStats {
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn timers(&self) -> u64 {
        self.timers.load(Ordering::Relaxed)
    }

    /// Read by step06's scoreboard, which the live page draws loops per second from.
    pub fn loop_iterations(&self) -> u64 {
        self.loop_iterations.load(Ordering::Relaxed)
    }

    /// Adds `connections`, `timers`, `accepted` and `loop_iterations` to a `/stats` answer
    /// (`served` is the site's own).
    pub fn write_json(&self, json: &mut StatsJson) {
        let read = |figure: &AtomicU64| figure.load(Ordering::Relaxed);
        json.number("connections", read(&self.connections))
            .number("timers", read(&self.timers))
            .number("accepted", read(&self.accepted))
            .number("loop_iterations", read(&self.loop_iterations));
    }

    pub(crate) fn opened(&self, timers: usize) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.timers.store(timers as u64, Ordering::Relaxed);
    }

    pub(crate) fn closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn iteration(&self, timers: usize) {
        self.loop_iterations.fetch_add(1, Ordering::Relaxed);
        self.timers.store(timers as u64, Ordering::Relaxed);
    }
}
