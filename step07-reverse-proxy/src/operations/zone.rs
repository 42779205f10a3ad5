//! Counters the workers share: one anonymous shared memory mapping per generation, like the
//! `zone` of an nginx `upstream` block.
//!
//! Workers are processes, so each has its own memory; a counter in one is invisible to the
//! others, and `/metrics` would show whichever worker happened to accept the scrape. So the
//! master maps a block of memory with `MAP_SHARED` *before* it forks a generation: every
//! worker inherits the same physical pages, and an `AtomicU64` in them is one counter for all.
//! Atomics work across processes because they are plain instructions on memory (a locked
//! add), not calls into a library that keeps state per process. Nothing else goes there: no
//! pointers, no locks, no strings, only numbers at fixed places.
//!
//! Each worker writes only its own slot (its index), and series are labelled `worker="N"`:
//! honest, and `sum by (upstream)` in a query adds them up. Worker 0 writes the active health
//! checks' verdicts, which every worker reads (see [`crate::health`]).
//!
//! A reload maps a fresh zone for the new generation, sized for its upstreams: counters start
//! again from zero, which Prometheus's `rate()` takes in its stride as it does a restart.

use std::io;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};
use step06_master_worker::config::MAX_WORKERS;

/// Upper bounds of the upstream latency histogram's buckets, in microseconds (1 ms to 30 s).
pub const BUCKETS_US: [u64; 14] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000,
];

/// Status classes 1xx to 5xx.
pub const CLASSES: usize = 5;

// The words of one (worker, upstream) series, in order.
const ANSWERS: usize = 0;
const BUCKETS: usize = ANSWERS + CLASSES;
const SUM_US: usize = BUCKETS + BUCKETS_US.len();
const COUNT: usize = SUM_US + 1;
const EJECTIONS: usize = COUNT + 1;
const SERIES_WORDS: usize = EJECTIONS + 1;

/// The upstream latency histogram of one worker and upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Per bucket of [`BUCKETS_US`], not cumulative.
    pub buckets: [u64; BUCKETS_US.len()],
    pub sum_us: u64,
    pub count: u64,
}

/// The shared counters of one generation.
pub struct Zone {
    base: NonNull<AtomicU64>,
    words: usize,
    upstreams: usize,
}

// SAFETY: the mapping is only ever accessed through `AtomicU64`s, which may be shared between
// threads (and processes), and it stays mapped until the `Zone` is dropped.
unsafe impl Send for Zone {}
// SAFETY: as above: every access is atomic.
unsafe impl Sync for Zone {}

impl Zone {
    // EXERCISE: shared-zone - an anonymous shared mapping, made before the fork, for every worker
    /// Maps a zone for `upstreams` upstreams and [`MAX_WORKERS`] worker slots. The pages of
    /// slots that no worker uses are never touched, so they cost address space, not memory.
    ///
    /// # Errors
    ///
    /// When `mmap` fails (out of memory or address space).
    pub fn new(upstreams: usize) -> io::Result<Zone> {
        let words = upstreams + MAX_WORKERS * worker_words(upstreams);
        let length = NonZeroUsize::new(words * size_of::<AtomicU64>())
            .ok_or_else(|| io::Error::other("an empty zone"))?;
        // SAFETY: a fresh anonymous mapping at an address the kernel picks: it aliases nothing.
        // MAP_SHARED makes forked children share its pages instead of copying them on write.
        let address = unsafe {
            mmap_anonymous(
                None,
                length,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }?;
        // Anonymous pages start zeroed, and a zeroed AtomicU64 is a valid 0: no initialisation.
        Ok(Zone {
            base: address.cast(),
            words,
            upstreams,
        })
    }
    // EXERCISE END

    fn word(&self, index: usize) -> Option<&AtomicU64> {
        // SAFETY: `index < words` keeps us inside the mapping, which is page-aligned (so
        // aligned for AtomicU64) and lives as long as `self`.
        (index < self.words).then(|| unsafe { &*self.base.as_ptr().add(index) })
    }

    fn add(&self, index: usize, value: u64) {
        if let Some(word) = self.word(index) {
            word.fetch_add(value, Ordering::Relaxed);
        }
    }

    fn load(&self, index: usize) -> u64 {
        self.word(index)
            .map_or(0, |word| word.load(Ordering::Relaxed))
    }

    /// The first word of `worker`'s slot: its active-connections gauge.
    fn slot(&self, worker: usize) -> usize {
        self.upstreams + worker.min(MAX_WORKERS - 1) * worker_words(self.upstreams)
    }

    /// The first word of a series; `None` is the proxy's own answers (no upstream involved).
    fn series(&self, worker: usize, upstream: Option<usize>) -> usize {
        let position = upstream.map_or(self.upstreams, |u| u.min(self.upstreams));
        self.slot(worker) + 1 + position * SERIES_WORDS
    }

    /// A worker starts in `worker`'s slot: the gauges a dead predecessor left are reset.
    pub fn worker_started(&self, worker: usize) {
        if let Some(word) = self.word(self.slot(worker)) {
            word.store(0, Ordering::Relaxed);
        }
    }

    pub fn connection_opened(&self, worker: usize) {
        self.add(self.slot(worker), 1);
    }

    pub fn connection_closed(&self, worker: usize) {
        if let Some(word) = self.word(self.slot(worker)) {
            // Never below zero, even for a connection opened before a reset.
            let _ = word.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    /// Counts one response with `status`, sent to a client by `worker`, from `upstream`.
    pub fn answered(&self, worker: usize, upstream: Option<usize>, status: u16) {
        let class = usize::from(status / 100).clamp(1, CLASSES) - 1;
        self.add(self.series(worker, upstream) + ANSWERS + class, 1);
    }

    /// Records how long `upstream` took to send its response head.
    pub fn upstream_time(&self, worker: usize, upstream: usize, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let series = self.series(worker, Some(upstream));
        if let Some(bucket) = BUCKETS_US.iter().position(|&bound| micros <= bound) {
            self.add(series + BUCKETS + bucket, 1);
        }
        self.add(series + SUM_US, micros);
        self.add(series + COUNT, 1);
    }

    /// `worker` stopped sending requests to `upstream` for a while (see [`crate::upstreams`]).
    pub fn ejected(&self, worker: usize, upstream: usize) {
        self.add(self.series(worker, Some(upstream)) + EJECTIONS, 1);
    }

    /// The active checks' verdict on `upstream` (written by worker 0 only).
    pub fn set_down(&self, upstream: usize, down: bool) {
        if let Some(word) = self.word(upstream).filter(|_| upstream < self.upstreams) {
            word.store(u64::from(down), Ordering::Relaxed);
        }
    }

    /// Whether the active checks found `upstream` down. Up until proven otherwise.
    pub fn is_down(&self, upstream: usize) -> bool {
        upstream < self.upstreams && self.load(upstream) != 0
    }

    pub fn active_connections(&self, worker: usize) -> u64 {
        self.load(self.slot(worker))
    }

    /// Responses of status class `class` (0 for 1xx .. 4 for 5xx).
    pub fn answers(&self, worker: usize, upstream: Option<usize>, class: usize) -> u64 {
        self.load(self.series(worker, upstream) + ANSWERS + class.min(CLASSES - 1))
    }

    pub fn latency(&self, worker: usize, upstream: usize) -> Histogram {
        let series = self.series(worker, Some(upstream));
        let mut histogram = Histogram {
            sum_us: self.load(series + SUM_US),
            count: self.load(series + COUNT),
            ..Histogram::default()
        };
        for (bucket, value) in histogram.buckets.iter_mut().enumerate() {
            *value = self.load(series + BUCKETS + bucket);
        }
        histogram
    }

    pub fn ejections(&self, worker: usize, upstream: usize) -> u64 {
        self.load(self.series(worker, Some(upstream)) + EJECTIONS)
    }
}

impl Drop for Zone {
    fn drop(&mut self) {
        // SAFETY: the mapping we made in `new`, with its length; nothing borrows from it any
        // more (borrows of its words cannot outlive `self`). Children that inherited it keep
        // their own mapping: unmapping here affects this process only.
        let _ = unsafe { munmap(self.base.cast(), self.words * size_of::<AtomicU64>()) };
    }
}

/// The words of one worker's slot: its gauge, then a series per upstream and one for the
/// proxy's own answers.
fn worker_words(upstreams: usize) -> usize {
    1 + (upstreams + 1) * SERIES_WORDS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_land_in_their_own_places() {
        let zone = Zone::new(2).unwrap();
        zone.answered(0, Some(1), 200);
        zone.answered(0, Some(1), 503);
        zone.answered(1, None, 404);
        zone.upstream_time(0, 1, Duration::from_millis(3));
        zone.upstream_time(0, 1, Duration::from_secs(60));
        zone.connection_opened(1);
        zone.connection_opened(1);
        zone.connection_closed(1);
        assert_eq!(zone.answers(0, Some(1), 1), 1);
        assert_eq!(zone.answers(0, Some(1), 4), 1);
        assert_eq!(zone.answers(0, Some(0), 1), 0);
        assert_eq!(zone.answers(1, None, 3), 1);
        let latency = zone.latency(0, 1);
        assert_eq!((latency.count, latency.buckets[2]), (2, 1));
        assert_eq!(
            latency.buckets.iter().sum::<u64>(),
            1,
            "60 s is past the last bucket"
        );
        assert_eq!(zone.active_connections(1), 1);
        zone.worker_started(1);
        zone.connection_closed(1);
        assert_eq!(zone.active_connections(1), 0);
        assert!(!zone.is_down(0));
        zone.set_down(0, true);
        assert!(zone.is_down(0) && !zone.is_down(1));
    }

    #[test]
    fn a_forked_child_writes_where_the_parent_reads() {
        let zone = Zone::new(1).unwrap();
        // SAFETY: the child only does atomic adds and _exit, both safe after fork even in a
        // multi-threaded test process.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                zone.answered(3, Some(0), 200);
                // SAFETY: _exit ends the child without running the test harness's code.
                unsafe { libc::_exit(0) };
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                let _ = nix::sys::wait::waitpid(child, None);
                assert_eq!(zone.answers(3, Some(0), 1), 1);
            }
            Err(error) => panic!("fork: {error}"),
        }
    }
}
