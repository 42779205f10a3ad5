//! One worker's view of the upstreams: whose turn it is, how many requests each has in
//! flight, which ones it stopped trusting; and the choice of an upstream for a request.
//!
//! Two kinds of health decide whether an upstream may get a request:
//!
//! - **active**: worker 0 asks each upstream a `GET` every few seconds and writes its verdict
//!   in the shared [`Zone`], which every worker reads ([`crate::health`]);
//! - **passive**: each worker watches the answers to its own requests. After
//!   `consecutive_failures` connection errors or 5xx answers in a row, it *ejects* the upstream
//!   for `ejection_ms` (Envoy's outlier detection), then gives it another chance.
//!
//! Passive checks see a failure at once, on real traffic; active checks notice an upstream
//! that gets no traffic, and bring one back only when it answers again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use common::log;

use crate::balance::{Ring, least_conn, round_robin};
use crate::config::{Config, Strategy};
use crate::operations::zone::Zone;

/// The running state of one group.
struct GroupState {
    /// Round robin's (and least-conn's tie-breaking) turn.
    turn: AtomicUsize,
    /// Only for consistent hashing.
    ring: Option<Ring>,
}

/// The running state of one upstream, in this worker.
#[derive(Default)]
struct UpstreamState {
    in_flight: AtomicUsize,
    /// Connection errors and 5xx answers in a row.
    failures: AtomicU32,
    /// Ejected until this many milliseconds after `Upstreams::epoch`.
    ejected_until_ms: AtomicU64,
}

/// The upstreams of one configuration, as one worker uses them.
pub(crate) struct Upstreams {
    config: Arc<Config>,
    zone: Arc<Zone>,
    worker: usize,
    epoch: Instant,
    groups: Vec<GroupState>,
    upstreams: Vec<UpstreamState>,
}

/// A request in flight to an upstream, counted for least-conn until dropped.
pub(crate) struct InFlight<'u> {
    state: &'u UpstreamState,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Upstreams {
    pub fn new(config: Arc<Config>, zone: Arc<Zone>, worker: usize) -> Upstreams {
        let groups = config
            .groups
            .iter()
            .map(|group| GroupState {
                turn: AtomicUsize::new(worker),
                ring: (group.strategy == Strategy::ConsistentHash).then(|| {
                    let names: Vec<&str> = group
                        .members
                        .iter()
                        .map(|&u| config.upstreams[u].name.as_str())
                        .collect();
                    Ring::new(&names)
                }),
            })
            .collect();
        let upstreams = config
            .upstreams
            .iter()
            .map(|_| UpstreamState::default())
            .collect();
        Upstreams {
            config,
            zone,
            worker,
            epoch: Instant::now(),
            groups,
            upstreams,
        }
    }

    /// The upstream of `group` for a request whose hash key hashes to `key` (see
    /// [`crate::balance::hash64`]), other than `exclude` (the one that just failed, for a
    /// retry); `None` when no upstream of the group is available.
    pub fn choose(&self, group: usize, key: u64, exclude: Option<usize>) -> Option<usize> {
        let (config, state) = (self.config.groups.get(group)?, self.groups.get(group)?);
        let members = &config.members;
        let usable = |position: usize| {
            let upstream = members[position];
            Some(upstream) != exclude && self.available(upstream)
        };
        let position = match (config.strategy, &state.ring) {
            (Strategy::ConsistentHash, Some(ring)) => ring.walk(key).find(|&p| usable(p)),
            (Strategy::LeastConn, _) => least_conn(
                members.len(),
                state.turn.fetch_add(1, Ordering::Relaxed),
                |p| self.upstreams[members[p]].in_flight.load(Ordering::Relaxed),
                usable,
            ),
            _ => round_robin(
                members.len(),
                state.turn.fetch_add(1, Ordering::Relaxed),
                usable,
            ),
        }?;
        Some(members[position])
    }

    /// Whether `upstream` may get requests: not found down by the active checks, and not
    /// ejected by this worker.
    pub fn available(&self, upstream: usize) -> bool {
        let Some(state) = self.upstreams.get(upstream) else {
            return false;
        };
        !self.zone.is_down(upstream)
            && self.now_ms() >= state.ejected_until_ms.load(Ordering::Relaxed)
    }

    /// Counts a request in flight to `upstream` until the guard is dropped.
    pub fn start(&self, upstream: usize) -> Option<InFlight<'_>> {
        let state = self.upstreams.get(upstream)?;
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(InFlight { state })
    }

    /// `upstream` answered, with a status below 500.
    pub fn succeeded(&self, upstream: usize) {
        if let Some(state) = self.upstreams.get(upstream) {
            state.failures.store(0, Ordering::Relaxed);
        }
    }

    /// `upstream` could not be reached, or answered 5xx: one more failure in a row, and
    /// an ejection when there are enough of them.
    pub fn failed(&self, upstream: usize) {
        let (Some(state), Some(info)) = (
            self.upstreams.get(upstream),
            self.config.upstreams.get(upstream),
        ) else {
            return;
        };
        let outlier = &self.config.groups[info.group].outlier;
        let failures = state.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < outlier.consecutive_failures {
            return;
        }
        state.failures.store(0, Ordering::Relaxed);
        state
            .ejected_until_ms
            .store(self.now_ms() + outlier.ejection_ms, Ordering::Relaxed);
        self.zone.ejected(self.worker, upstream);
        log::event(format_args!(
            "worker {}: upstream {} ejected for {} ms after {failures} failures in a row",
            self.worker, info.name, outlier.ejection_ms
        ));
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::hash64;

    fn upstreams(strategy: &str) -> Upstreams {
        let text = format!(
            "[[route]]\ngroup = \"g\"\n[group.g]\nstrategy = \"{strategy}\"\n\
             upstreams = [\"127.0.0.1:1\", \"127.0.0.1:2\", \"127.0.0.1:3\"]\n\
             outlier = {{ consecutive_failures = 2, ejection_ms = 60000 }}\n"
        );
        let config = Arc::new(Config::parse("test", &text).unwrap());
        let zone = Arc::new(Zone::new(config.upstreams.len()).unwrap());
        Upstreams::new(config, zone, 0)
    }

    #[test]
    fn failures_in_a_row_eject_and_a_success_forgives() {
        let upstreams = upstreams("round_robin");
        upstreams.failed(1);
        upstreams.succeeded(1);
        upstreams.failed(1);
        assert!(upstreams.available(1), "not two in a row");
        upstreams.failed(1);
        assert!(!upstreams.available(1));
        let picks: Vec<_> = (0..6)
            .filter_map(|_| upstreams.choose(0, 0, None))
            .collect();
        assert!(!picks.contains(&1), "{picks:?}");
        assert_eq!((0..3).filter(|&u| upstreams.available(u)).count(), 2);
    }

    #[test]
    fn down_upstreams_get_nothing_and_all_down_is_none() {
        let upstreams = upstreams("least_conn");
        upstreams.zone.set_down(0, true);
        upstreams.zone.set_down(2, true);
        assert_eq!(upstreams.choose(0, 0, None), Some(1));
        assert_eq!(
            upstreams.choose(0, 0, Some(1)),
            None,
            "a retry needs another one"
        );
        upstreams.zone.set_down(1, true);
        assert_eq!(upstreams.choose(0, 0, None), None);
    }

    #[test]
    fn least_conn_avoids_the_busy_one() {
        let upstreams = upstreams("least_conn");
        let _busy = (upstreams.start(0), upstreams.start(0), upstreams.start(2));
        for _ in 0..3 {
            assert_eq!(upstreams.choose(0, 0, None), Some(1));
        }
    }

    #[test]
    fn consistent_hash_keeps_a_key_and_moves_it_only_when_its_home_is_out() {
        let upstreams = upstreams("consistent_hash");
        let home = upstreams.choose(0, hash64(b"user-42"), None).unwrap();
        for _ in 0..5 {
            assert_eq!(upstreams.choose(0, hash64(b"user-42"), None), Some(home));
        }
        let fallback = upstreams.choose(0, hash64(b"user-42"), Some(home)).unwrap();
        assert_ne!(fallback, home);
        upstreams.zone.set_down(home, true);
        assert_eq!(
            upstreams.choose(0, hash64(b"user-42"), None),
            Some(fallback)
        );
    }
}
