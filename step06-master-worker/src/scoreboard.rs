//! The scoreboard: every worker's figures, in memory that all of them share, so that `/stats`
//! on any worker can show them all (the live page draws a lane per worker from it).
//!
//! Workers are processes: a counter in one is invisible to the others, and `/stats` answers
//! from whichever worker accepted the connection. nginx solves this with shared memory: its
//! `stub_status` counters are atomics in a zone that the master maps before it forks, so every
//! worker adds to the same words (Apache calls its version the scoreboard). We do the same:
//! [`Scoreboard::map`] maps anonymous memory with `MAP_SHARED` in the master, before the first
//! fork; each worker inherits the same physical pages. An `AtomicU64` there is one counter for
//! every process, because an atomic add is a plain instruction on memory. Only numbers live
//! there, at fixed places: no pointers, no locks.
//!
//! The master hands each worker a lane (a row of the board) when it forks it, and takes it back
//! when it reaps it: it writes who holds the lane (pid, index, generation, restarts), the worker
//! writes how it is doing. Its `served` is the site's own response counter (see
//! [`common::Site::with_served_counter`]), live; its event loop's figures are copied in
//! whenever that worker answers `/stats`.

use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use common::site::StatsJson;
use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous};
use step05_epoll_kqueue::stats::LoopStats;

use crate::config::MAX_WORKERS;

/// Lanes on the board: a generation being retired and the new one, at the most workers each.
pub const LANES: usize = 2 * MAX_WORKERS;

/// The words of one lane, in order.
#[derive(Clone, Copy)]
enum Word {
    /// 0 while the lane is free.
    Pid,
    Index,
    Generation,
    Restarts,
    Served,
    Connections,
    Timers,
    LoopIterations,
}
const LANE_WORDS: usize = 8;

/// The board, mapped once by the master for its whole life and never unmapped: the master and
/// every worker use it until they exit, and the kernel frees it with the last of them.
pub struct Scoreboard {
    base: NonNull<AtomicU64>,
}

impl std::fmt::Debug for Scoreboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scoreboard")
            .field("lanes_in_use", &self.lanes().len())
            .finish()
    }
}

// SAFETY: the mapping is only ever accessed through `AtomicU64`s, which may be shared between
// threads (and processes), and it is never unmapped.
unsafe impl Send for Scoreboard {}
// SAFETY: as above: every access is atomic.
unsafe impl Sync for Scoreboard {}

impl Scoreboard {
    /// Maps the board, zeroed (every lane free). Call it in the master, before any fork.
    ///
    /// # Errors
    ///
    /// When `mmap` fails (out of memory or address space).
    pub fn map() -> Result<&'static Scoreboard, String> {
        let bytes = LANES * LANE_WORDS * size_of::<AtomicU64>();
        let length = NonZeroUsize::new(bytes).ok_or("an empty scoreboard")?;
        // SAFETY: a fresh anonymous mapping at an address the kernel picks: it aliases nothing.
        // MAP_SHARED makes forked children share its pages instead of copying them on write.
        let address = unsafe {
            mmap_anonymous(
                None,
                length,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }
        .map_err(|errno| format!("cannot map the scoreboard: {}", errno.desc()))?;
        // Anonymous pages start zeroed, and a zeroed AtomicU64 is a valid 0. Leaked on purpose:
        // the mapping lives as long as the process (see the type's doc).
        Ok(Box::leak(Box::new(Scoreboard {
            base: address.cast(),
        })))
    }

    fn word(&self, lane: usize, word: Word) -> &AtomicU64 {
        let index = lane.min(LANES - 1) * LANE_WORDS + word as usize;
        // SAFETY: `index < LANES * LANE_WORDS` keeps us inside the mapping, which is
        // page-aligned (so aligned for AtomicU64) and never unmapped.
        unsafe { &*self.base.as_ptr().add(index) }
    }

    fn get(&self, lane: usize, word: Word) -> u64 {
        self.word(lane, word).load(Ordering::Relaxed)
    }

    fn set(&self, lane: usize, word: Word, value: u64) {
        self.word(lane, word).store(value, Ordering::Relaxed);
    }

    /// In the master, before forking a worker: a free lane, not held by any of `held`, cleared
    /// and labelled for it. `None` when all are held (the worker then serves off the board).
    pub fn claim(
        &self,
        held: impl Iterator<Item = usize> + Clone,
        index: usize,
        generation: u64,
        restarts: u64,
    ) -> Option<usize> {
        let lane = (0..LANES).find(|lane| !held.clone().any(|h| h == *lane))?;
        self.set(lane, Word::Pid, 0);
        for word in [
            Word::Served,
            Word::Connections,
            Word::Timers,
            Word::LoopIterations,
        ] {
            self.set(lane, word, 0);
        }
        self.set(lane, Word::Index, index as u64);
        self.set(lane, Word::Generation, generation);
        self.set(lane, Word::Restarts, restarts);
        Some(lane)
    }

    /// In the master, once the fork told it the worker's pid: the lane is on the board.
    pub fn occupied(&self, lane: usize, pid: u32) {
        self.set(lane, Word::Pid, u64::from(pid));
    }

    /// In the master, when it reaped the worker of `lane`: off the board.
    pub fn release(&self, lane: usize) {
        self.set(lane, Word::Pid, 0);
    }

    /// The counter a worker's site counts its responses in.
    pub fn served(&self, lane: usize) -> &AtomicU64 {
        self.word(lane, Word::Served)
    }

    /// In a worker: copies its event loop's figures into its lane.
    pub fn publish(&self, lane: usize, stats: &LoopStats) {
        self.set(lane, Word::Connections, stats.connections());
        self.set(lane, Word::Timers, stats.timers());
        self.set(lane, Word::LoopIterations, stats.loop_iterations());
    }

    /// In a worker without step 05's loop (step 07's): its open connections.
    pub fn set_connections(&self, lane: usize, connections: u64) {
        self.set(lane, Word::Connections, connections);
    }

    /// Every lane on the board, as `/stats` lists them: `lanes: [{worker_index, pid, ...}]`.
    pub fn lanes(&self) -> Vec<StatsJson> {
        (0..LANES)
            .filter(|&lane| self.get(lane, Word::Pid) != 0)
            .map(|lane| {
                let mut json = StatsJson::new();
                json.number("worker_index", self.get(lane, Word::Index))
                    .number("pid", self.get(lane, Word::Pid))
                    .number("generation", self.get(lane, Word::Generation))
                    .number("restarts", self.get(lane, Word::Restarts))
                    .number("served", self.get(lane, Word::Served))
                    .number("connections", self.get(lane, Word::Connections))
                    .number("timers", self.get(lane, Word::Timers))
                    .number("loop_iterations", self.get(lane, Word::LoopIterations));
                json
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forked_child_counts_where_the_parent_reads() {
        let board = Scoreboard::map().unwrap();
        let lane = board.claim([1usize].into_iter(), 3, 2, 1).unwrap();
        assert_eq!(lane, 0);
        assert_eq!(board.claim([0usize, 1].into_iter(), 0, 1, 0), Some(2));
        board.occupied(lane, 4242);
        // SAFETY: the child only does atomic adds and _exit, both safe after fork even in a
        // multi-threaded test process.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                board.served(lane).fetch_add(5, Ordering::Relaxed);
                // SAFETY: _exit ends the child without running the test harness's code.
                unsafe { libc::_exit(0) };
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                let _ = nix::sys::wait::waitpid(child, None);
            }
            Err(error) => panic!("fork: {error}"),
        }
        let mut json = StatsJson::new();
        json.list("lanes", board.lanes());
        let text = json.finish();
        assert!(
            text.contains(
                "{\"worker_index\":3,\"pid\":4242,\"generation\":2,\"restarts\":1,\"served\":5,"
            ),
            "{text}"
        );
        board.release(lane);
        assert!(board.lanes().is_empty());
    }
}
