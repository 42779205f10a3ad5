//! What a worker process is given, and what step 06's workers do with it.
//!
//! The master does not know what its workers serve. It forks them, hands each a [`Worker`] (its
//! place in the tree, its listening socket, its signals) and runs a [`WorkerBody`] in it. Step
//! 06's body is [`SiteWorker`]: the site, served by step 05's event loop, with step 04's pool
//! for blocking work. Step 07 plugs in a reverse proxy's body and keeps the master as it is.
//!
//! Step 05's loop has one seam, its `Hook`; [`WorkerHook`] is what a worker plugs into it: a
//! listening socket shared with the other workers ([`ListenerWatch`]), and a pool that takes
//! the blocking work ([`PoolRunner`]).

use std::io;
use std::net::TcpListener;
use std::os::fd::BorrowedFd;
use std::sync::Arc;

use common::{CommonArgs, Signals, Site, log};
use step04_threadpool::PoolStatus;
use step05_epoll_kqueue::{EventLoop, Hook, LoopConfig, LoopStats, Poller, Token, Work, WorkId};

use crate::listening::{ListenMode, ListenerWatch};
use crate::pool_runner::PoolRunner;
use crate::ready::Ready;
use crate::scoreboard::Scoreboard;

/// What a worker process is handed by the master, right after the fork.
pub struct Worker {
    /// Its slot, `0..workers`: sent as `X-Worker`, and the slot a replacement takes over.
    pub index: usize,
    /// How many workers its generation has.
    pub workers: usize,
    /// 1 at start, one more at every reload (`SIGHUP`).
    pub generation: u64,
    /// How many workers of this slot died and were replaced before this one, in this generation.
    pub restarts: u64,
    pub master_pid: u32,
    /// 1 for a master started by hand, one more for each binary upgrade (`SIGUSR2`, see
    /// [`crate::upgrade`]).
    pub master_generation: u64,
    /// Ready to accept, non-blocking: shared with the other workers or its own (see
    /// [`crate::listening`]).
    pub listener: TcpListener,
    pub listen_mode: ListenMode,
    /// This process's own signal pipes (see [`Signals::fork`]). Its shutdown descriptor turns
    /// readable when the master asks this worker to stop (`SIGTERM`: a shutdown, or a reload
    /// retiring it) or when the master is gone (see [`crate::lifeline`]).
    pub signals: Signals,
    /// Announced by the body once it can accept: a reload retires the old generation only
    /// then (see [`crate::ready`]).
    pub ready: Ready,
    /// Every worker's figures, shared (see [`crate::scoreboard`]), and this worker's lane on
    /// it (`None` when the board was full).
    pub scoreboard: &'static Scoreboard,
    pub lane: Option<usize>,
}

/// What runs in the workers: the seam between the master and what it supervises.
pub trait WorkerBody {
    /// Re-reads the configuration, in the master, when `SIGHUP` asks for a reload; the new
    /// generation of workers is forked with what it leaves in `self`, so they inherit it
    /// without any message passing. An error cancels the reload: the workers in service stay.
    ///
    /// # Errors
    ///
    /// Why the new configuration cannot be used (one line, for the log).
    fn reload(&mut self) -> Result<(), String> {
        Ok(())
    }

    /// The life of one worker process: get ready, announce it (`worker.ready`), serve
    /// `worker.listener` until `worker.signals` asks for a shutdown, finish what is in flight,
    /// and return the exit status. Runs in the child, after the fork: create threads and
    /// runtimes here, never before.
    fn run(&self, worker: Worker) -> i32;

    /// Listening sockets of its own, besides the main one, that a new master started by
    /// `SIGUSR2` must inherit rather than bind again (step 07's admin port), by the name the new
    /// master adopts them with (see [`common::listen::inherited`]).
    fn listeners_to_hand_over(&self) -> Vec<(&'static str, BorrowedFd<'_>)> {
        Vec::new()
    }
}

/// Step 06's worker: the site, served by step 05's event loop.
#[derive(Debug, Clone)]
pub struct SiteWorker {
    pub common: CommonArgs,
    /// Connections one worker serves at most (step 05's `--max-connections`).
    pub max_connections: usize,
    /// `/sleep` is blocking work, given to a pool of `blocking_threads` threads.
    pub blocking_sleep: bool,
    pub blocking_threads: usize,
}

impl WorkerBody for SiteWorker {
    fn run(&self, worker: Worker) -> i32 {
        match self.serve(worker) {
            Ok(()) => 0,
            Err(error) => {
                log::error(format_args!("worker stopped: {error}"));
                1
            }
        }
    }
}

impl SiteWorker {
    fn serve(&self, worker: Worker) -> Result<(), String> {
        // A pool only when there is blocking work to give it, as nginx starts its thread pools
        // only for `aio threads`.
        let runner = if self.blocking_sleep {
            Some(PoolRunner::new(self.blocking_threads)?)
        } else {
            None
        };
        let pool: Option<PoolStatus> = runner.as_ref().map(PoolRunner::status);
        let stats = Arc::new(LoopStats::default());
        let (scoreboard, lane) = (worker.scoreboard, worker.lane);
        let mut site = Site::new("step06-master-worker", self.common.delay())
            .with_header("X-Worker", worker.index.to_string())
            .with_stats({
                let stats = Arc::clone(&stats);
                let (index, workers, generation, restarts, master_pid, mode) = (
                    worker.index as u64,
                    worker.workers as u64,
                    worker.generation,
                    worker.restarts,
                    worker.master_pid,
                    worker.listen_mode.to_string(),
                );
                let master_generation = worker.master_generation;
                move |json| {
                    json.number("master_pid", master_pid)
                        .number("master_generation", master_generation)
                        .number("worker_index", index)
                        .number("workers", workers)
                        .number("generation", generation)
                        .number("restarts", restarts)
                        .text("listen", &mode);
                    stats.write_json(json);
                    if let Some(pool) = &pool {
                        json.number("pool_threads", pool.workers() as u64)
                            .number("pool_busy", pool.busy() as u64)
                            .number("pool_queued", pool.queued() as u64);
                    }
                    // Every worker's lane, this one's brought up to date first.
                    if let Some(lane) = lane {
                        scoreboard.publish(lane, &stats);
                    }
                    json.list("lanes", scoreboard.lanes());
                }
            });
        if let Some(lane) = lane {
            site = site.with_served_counter(scoreboard.served(lane));
        }
        let config = LoopConfig {
            max_connections: self.max_connections,
            blocking_sleep: self.blocking_sleep,
            ..LoopConfig::new(&self.common)
        };
        let hook = WorkerHook {
            listener: ListenerWatch::default(),
            pool: runner,
        };
        let event_loop = EventLoop::new(&site, config, worker.signals, stats)
            .map_err(|error| format!("cannot start the event loop: {error}"))?
            .with_hook(Box::new(hook))
            .map_err(|error| format!("cannot watch the pool: {error}"))?;
        worker.ready.announce();
        event_loop
            .run(worker.listener)
            .map_err(|error| format!("the event loop failed: {error}"))
    }
}

/// What a worker adds to step 05's event loop: its listener is shared, so it is watched as
/// [`ListenerWatch`] says; and blocking work goes to the pool, when there is one.
pub struct WorkerHook {
    pub listener: ListenerWatch,
    pub pool: Option<PoolRunner>,
}

impl Hook for WorkerHook {
    fn watch_listener(
        &mut self,
        poller: &Poller,
        listener: &TcpListener,
        token: Token,
    ) -> io::Result<()> {
        self.listener.watch(poller, listener, token)
    }

    fn can_accept(&mut self, poller: &Poller, listener: &TcpListener, can: bool) -> bool {
        self.listener.can_accept(poller, listener, can)
    }

    fn offload(&mut self, id: WorkId, work: Work) -> Result<(), Work> {
        let Some(pool) = &mut self.pool else {
            return Err(work);
        };
        pool.start(id, work);
        Ok(())
    }

    fn wake_fd(&self) -> Option<BorrowedFd<'_>> {
        self.pool.as_ref().map(PoolRunner::wake_fd)
    }

    fn finished(&mut self, done: &mut Vec<(WorkId, bool)>) {
        if let Some(pool) = &mut self.pool {
            pool.finished(done);
        }
    }
}
