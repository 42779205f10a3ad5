//! The master: it forks the workers, then only watches over them. It serves no request.
//!
//! ```text
//! start: bind the port, print the start-up line, fork one worker per slot
//! loop {
//!     wait for a signal or a "ready" message, at most until the next deadline
//!     SIGCHLD -> reap every worker that exited; restart those that were serving
//!     SIGHUP  -> reload: fork a new generation; retire the old one once the new one is ready
//!     SIGUSR2 -> upgrade: exec the binary on disk as a new master, handing it the socket;
//!                once it says it is ready, stop as for SIGTERM (see crate::upgrade)
//!     SIGTERM -> ask every worker to finish and exit, reap them all, exit 0
//! }
//! ```
//!
//! Signals are the master's whole control interface, as they are nginx's: `kill -HUP` reloads,
//! `kill -USR2` upgrades, `kill -TERM` stops, and `SIGCHLD`, which the kernel sends when a
//! child exits, is how the master learns of a crash at once instead of checking every second.
//! All of them arrive through `common::signals`' pipes, so the loop is one `poll` and nothing
//! runs in a handler.
//!
//! # Fork safety
//!
//! The master never starts a thread. `fork` copies only the thread that calls it: a lock that
//! another thread held at that instant (the allocator's, stdout's, a pool's queue) stays locked
//! forever in the child, whose first attempt to take it hangs. A single-threaded parent holds
//! no lock while it forks, so its children are complete copies and may do anything. This is
//! why each worker creates its threads (its pool, its lifeline watcher) itself, after the fork.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use common::listen::announce;
use common::process::exit_child;
use common::wait::wait_readable;
use common::{Signals, log};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};

use crate::backoff::Backoff;
use crate::config::MasterConfig;
use crate::lifeline::Lifeline;
use crate::listening::{Listening, MAIN_LISTENER};
use crate::ready::ReadyPipe;
use crate::scoreboard::Scoreboard;
use crate::upgrade::{Predecessor, Progress, Upgrade, stay_as_init};
use crate::worker::{Worker, WorkerBody};

/// One worker process, alive or not yet reaped.
struct WorkerProcess {
    index: usize,
    generation: u64,
    started: Instant,
    /// It said it is ready (see [`crate::ready`]).
    ready: bool,
    /// When it was asked to stop (`SIGTERM`), if it was.
    stop_sent: Option<Instant>,
    /// It outlasted its stop timeout and was sent `SIGKILL`.
    killed: bool,
    /// Its lane on the scoreboard, if there was a free one.
    lane: Option<usize>,
}

/// One place in the current generation, and the history of the workers that held it.
#[derive(Default)]
struct Slot {
    /// Workers of this slot that died and were replaced.
    restarts: u64,
    backoff: Backoff,
    /// A replacement is due then.
    respawn_at: Option<Instant>,
}

/// The master process.
pub struct Master {
    config: MasterConfig,
    /// The listening socket(s): kept for the workers still to be forked (see
    /// [`crate::listening`]).
    listening: Listening,
    /// Wakes the loop on `SIGCHLD`, `SIGHUP`, `SIGUSR2`, `SIGTERM` and `SIGINT`; each worker gets
    /// pipes of its own when it is forked.
    signals: Signals,
    /// Its write end, open for as long as the master lives, keeps every worker serving.
    lifeline: Lifeline,
    /// Where workers say they are ready, so that a reload knows when to retire the old ones.
    ready: ReadyPipe,
    /// This process, as the workers' `/stats` name it.
    pid: u32,
    /// The master this one replaces, if `SIGUSR2` started it: told when the first generation
    /// of workers is ready. Its `generation` counts binary upgrades (`/stats`'
    /// `master_generation`).
    predecessor: Predecessor,
    /// The master started by `SIGUSR2`, until it is ready or has failed.
    successor: Option<Upgrade>,
    /// New masters that failed and were stopped, not reaped yet.
    given_up: Vec<Pid>,
    /// 1 at start, one more at every reload; workers of an older generation are being retired.
    generation: u64,
    /// The current generation's slots, by worker index.
    slots: Vec<Slot>,
    /// Every worker not reaped yet, of any generation.
    workers: HashMap<Pid, WorkerProcess>,
    /// The workers' figures, shared with them (see [`crate::scoreboard`]).
    scoreboard: &'static Scoreboard,
}

impl Master {
    /// Takes over the process as its master: installs the signal handlers, creates the pipes to
    /// the workers, and prints the start-up line for the socket `listening` bound.
    ///
    /// # Errors
    ///
    /// One line saying what failed.
    pub fn start(config: MasterConfig, listening: Listening) -> Result<Master, String> {
        let signals = Signals::install(&[Signal::SIGCHLD, Signal::SIGHUP, Signal::SIGUSR2])
            .map_err(|error| format!("cannot install signal handlers: {error}"))?;
        let predecessor = Predecessor::from_environment()?;
        let lifeline =
            Lifeline::new().map_err(|error| format!("cannot create the lifeline: {error}"))?;
        let ready =
            ReadyPipe::new().map_err(|error| format!("cannot create the ready pipe: {error}"))?;
        // Before the first fork, so that every worker shares it.
        let scoreboard = Scoreboard::map()?;
        let socket = listening
            .first_socket()
            .ok_or("the listening socket is gone")?;
        // Before the first fork: the line must come first on stdout, and a child would inherit
        // (and could print twice) anything still buffered.
        announce(socket).map_err(|error| format!("cannot print the start-up line: {error}"))?;
        Ok(Master {
            config,
            listening,
            signals,
            lifeline,
            ready,
            pid: std::process::id(),
            predecessor,
            successor: None,
            given_up: Vec::new(),
            generation: 1,
            slots: Vec::new(),
            workers: HashMap::new(),
            scoreboard,
        })
    }

    /// Forks the first generation running `body`, then supervises until `SIGTERM` or `SIGINT`,
    /// and returns the exit status once every worker is reaped.
    pub fn run(mut self, body: &mut impl WorkerBody) -> i32 {
        self.start_generation(body);
        let mut status = 0;
        let mut handed_over = None;
        while !self.signals.shutdown_requested() {
            let mut fds = vec![
                self.signals.shutdown_fd(),
                self.signals.wake_fd(),
                self.ready.fd(),
            ];
            fds.extend(self.successor.as_ref().map(Upgrade::fd));
            if let Err(error) = wait_readable(&fds, self.next_deadline()) {
                log::error(format_args!("master: cannot wait for events: {error}"));
                status = 1;
                break;
            }
            let pending = self.signals.take();
            self.note_ready();
            self.reap();
            if self.signals.shutdown_requested() {
                break;
            }
            if pending.contains(Signal::SIGHUP) {
                self.reload(body);
            }
            if pending.contains(Signal::SIGUSR2) {
                self.upgrade(body);
            }
            if self.successor_is_ready() {
                handed_over = self.successor.as_ref().map(|successor| successor.pid);
                break;
            }
            self.respawn_due(body);
            self.retire_replaced();
            self.kill_overdue();
        }
        if handed_over.is_none()
            && let Some(successor) = self.successor.take()
        {
            // Stopped while a new master was starting: "stop" means the server, so it stops
            // too, instead of being left to serve alone.
            log::event(format_args!(
                "master: stopping the new master (pid {}) too",
                successor.pid
            ));
            let _ = kill(successor.pid, Signal::SIGTERM);
        }
        self.stop_all();
        match handed_over {
            Some(successor) if self.pid == 1 => stay_as_init(self.signals, successor),
            _ => status,
        }
    }

    /// `SIGUSR2`: starts the binary on disk as a new master, handing it the listening sockets
    /// (see [`crate::upgrade`]). This master serves on until the new one is ready.
    fn upgrade(&mut self, body: &impl WorkerBody) {
        if let Some(successor) = &self.successor {
            log::error(format_args!(
                "master: upgrade already under way (new master pid {}): SIGUSR2 ignored",
                successor.pid
            ));
            return;
        }
        let listening = &mut self.listening;
        let (generation, timeout) = (self.predecessor.generation, self.config.upgrade_timeout);
        let start = Upgrade::start(self.signals, generation, timeout, || {
            // In the child, which execs next.
            let main = listening.for_successor()?;
            let mut listeners = vec![(MAIN_LISTENER, OwnedFd::from(main))];
            for (name, fd) in body.listeners_to_hand_over() {
                let fd = fd
                    .try_clone_to_owned()
                    .map_err(|error| format!("cannot hand over {name}: {error}"))?;
                listeners.push((name, fd));
            }
            Ok(listeners)
        });
        match start {
            Ok(successor) => {
                log::event(format_args!(
                    "master: upgrade: started a new master (pid {}); serving until it is ready",
                    successor.pid
                ));
                self.successor = Some(successor);
            }
            Err(why) => log::error(format_args!(
                "master: upgrade failed: {why}; this master goes on serving"
            )),
        }
    }

    /// Whether the new master started by `SIGUSR2` is ready, so that this one must retire. A
    /// failed one is stopped, and this master goes on serving.
    fn successor_is_ready(&mut self) -> bool {
        let Some(successor) = &mut self.successor else {
            return false;
        };
        match successor.progress() {
            Progress::Waiting => false,
            Progress::Ready => {
                log::event(format_args!(
                    "master: upgrade: the new master (pid {}) is ready; this one retires",
                    successor.pid
                ));
                true
            }
            Progress::Failed(why) => {
                // It may still be there (too slow): stop it and its workers.
                if successor.ended.is_none() {
                    let _ = kill(successor.pid, Signal::SIGTERM);
                    self.given_up.push(successor.pid);
                }
                log::error(format_args!(
                    "master: upgrade failed: {why}; this master goes on serving"
                ));
                self.successor = None;
                false
            }
        }
    }

    /// Forks a worker for every slot of a fresh generation.
    fn start_generation(&mut self, body: &impl WorkerBody) {
        let count = self.config.workers.resolve();
        self.slots = (0..count).map(|_| Slot::default()).collect();
        for index in 0..count {
            self.spawn(index, body);
        }
    }

    /// Forks the worker of slot `index`.
    fn spawn(&mut self, index: usize, body: &impl WorkerBody) {
        let held = self.workers.values().filter_map(|worker| worker.lane);
        let lane = self
            .scoreboard
            .claim(held, index, self.generation, self.slots[index].restarts);
        // SAFETY: the master is single-threaded (see "Fork safety" above), so the child is a
        // complete copy and may do anything, not only async-signal-safe calls.
        match unsafe { self.signals.fork() } {
            Ok(ForkResult::Child) => {
                let status = self.become_worker(index, lane, body);
                exit_child(status);
            }
            Ok(ForkResult::Parent { child }) => {
                self.listening.forked_a_worker();
                if let Some(lane) = lane {
                    self.scoreboard
                        .occupied(lane, child.as_raw().unsigned_abs());
                }
                let worker = WorkerProcess {
                    index,
                    generation: self.generation,
                    started: Instant::now(),
                    ready: false,
                    stop_sent: None,
                    killed: false,
                    lane,
                };
                self.workers.insert(child, worker);
                log::event(format_args!(
                    "master: worker {index} started (pid {child}, generation {})",
                    self.generation
                ));
            }
            Err(errno) => {
                // EAGAIN (the process limit) or ENOMEM: try again later, as for a worker that
                // died at once.
                let slot = &mut self.slots[index];
                let delay = slot.backoff.delay_after(Duration::ZERO);
                slot.respawn_at = Some(Instant::now() + delay);
                log::error(format_args!(
                    "master: cannot fork worker {index}: {}; trying again in {} ms",
                    errno.desc(),
                    delay.as_millis()
                ));
            }
        }
    }

    /// In the child, right after the fork: from here on this process is a worker, and it never
    /// returns to the master's loop.
    fn become_worker(&mut self, index: usize, lane: Option<usize>, body: &impl WorkerBody) -> i32 {
        self.predecessor.forget();
        self.successor = None;
        if let Err(error) = self.lifeline.watch(self.signals) {
            log::error(format_args!(
                "worker {index}: cannot watch the master: {error}"
            ));
            return 1;
        }
        let listener = match self.listening.for_worker() {
            Ok(listener) => listener,
            Err(why) => {
                log::error(format_args!("worker {index}: {why}"));
                return 1;
            }
        };
        let ready = self.ready.for_worker();
        body.run(Worker {
            index,
            workers: self.slots.len(),
            generation: self.generation,
            restarts: self.slots[index].restarts,
            master_pid: self.pid,
            master_generation: self.predecessor.generation,
            listener,
            listen_mode: self.listening.mode(),
            signals: self.signals,
            ready,
            scoreboard: self.scoreboard,
            lane,
        })
    }

    /// Marks the workers that said they are ready.
    fn note_ready(&mut self) {
        for pid in self.ready.take_ready() {
            if let Some(worker) = self.workers.get_mut(&pid) {
                worker.ready = true;
            }
        }
    }

    /// Collects every worker that exited, so that none stays a zombie, and schedules the
    /// replacement of those that were serving.
    fn reap(&mut self) {
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => status,
            };
            let Some(pid) = status.pid() else {
                return;
            };
            if let Some(worker) = self.workers.remove(&pid) {
                if let Some(lane) = worker.lane {
                    self.scoreboard.release(lane);
                }
                self.exited(pid, &worker, status);
            } else if let Some(successor) = self.successor.as_mut().filter(|s| s.pid == pid) {
                // The new master ended before it said it was ready: its pipe's end of file
                // tells `successor_is_ready`, whose one line says how it ended.
                successor.ended = Some(describe(status));
            } else if let Some(at) = self.given_up.iter().position(|&given_up| given_up == pid) {
                // A new master that failed and was stopped: already reported.
                self.given_up.swap_remove(at);
            } else {
                // Not a worker. In a container the master is PID 1, and the kernel gives PID 1
                // every orphan of the container (a process whose parent died): like init, it
                // must collect them, or each stays a zombie. `waitpid(None)` takes any child.
                log::event(format_args!(
                    "master: reaped pid {pid}, not one of its workers: it {}",
                    describe(status)
                ));
            }
        }
    }

    fn exited(&mut self, pid: Pid, worker: &WorkerProcess, status: WaitStatus) {
        let how = describe(status);
        let index = worker.index;
        if worker.generation != self.generation || worker.stop_sent.is_some() {
            log::event(format_args!(
                "master: worker {index} (pid {pid}, generation {}) {how}",
                worker.generation
            ));
            return;
        }
        // It was serving and nobody asked it to stop: it crashed, was killed, or gave up.
        let lived = worker.started.elapsed();
        let slot = &mut self.slots[index];
        slot.restarts += 1;
        let delay = slot.backoff.delay_after(lived);
        slot.respawn_at = Some(Instant::now() + delay);
        if delay.is_zero() {
            log::error(format_args!(
                "master: worker {index} (pid {pid}) {how}; starting a new one"
            ));
        } else {
            log::error(format_args!(
                "master: worker {index} (pid {pid}) {how} {:.2} s after it started (quick deaths \
                 in a row: {}); starting a new one in {} ms",
                lived.as_secs_f64(),
                slot.backoff.quick_deaths(),
                delay.as_millis()
            ));
        }
    }

    /// Forks the replacements that are due.
    fn respawn_due(&mut self, body: &impl WorkerBody) {
        let now = Instant::now();
        for index in 0..self.slots.len() {
            if self.slots[index].respawn_at.is_some_and(|at| at <= now) {
                self.slots[index].respawn_at = None;
                self.spawn(index, body);
            }
        }
    }

    /// `SIGHUP`: a new generation of workers, with the configuration read again.
    fn reload(&mut self, body: &mut impl WorkerBody) {
        if let Err(why) = body.reload() {
            log::error(format_args!(
                "master: reload refused: {why}; generation {} goes on serving",
                self.generation
            ));
            return;
        }
        self.generation += 1;
        log::event(format_args!(
            "master: reloading: starting generation {}",
            self.generation
        ));
        self.start_generation(body);
    }

    /// Once every slot of the current generation has a ready worker, asks the workers of older
    /// generations to finish their requests and exit. Until then they go on serving: a new
    /// generation that cannot start leaves the old one in service.
    fn retire_replaced(&mut self) {
        let current = self.generation;
        let all_ready = (0..self.slots.len()).all(|index| {
            self.workers
                .values()
                .any(|w| w.generation == current && w.index == index && w.ready)
        });
        if !all_ready {
            return;
        }
        // A master started by SIGUSR2 tells the old one, which retires in turn.
        self.predecessor.ready();
        for (pid, worker) in &mut self.workers {
            if worker.generation < current && worker.stop_sent.is_none() {
                ask_to_stop(*pid, worker);
            }
        }
    }

    /// Kills the workers that were asked to stop and are still there after the stop timeout.
    fn kill_overdue(&mut self) {
        let now = Instant::now();
        for (pid, worker) in &mut self.workers {
            let overdue = worker
                .stop_sent
                .is_some_and(|asked| now >= asked + self.config.stop_timeout);
            if overdue && !worker.killed {
                log::error(format_args!(
                    "master: worker {} (pid {pid}) did not stop within {} ms: killing it",
                    worker.index,
                    self.config.stop_timeout.as_millis()
                ));
                let _ = kill(*pid, Signal::SIGKILL);
                worker.killed = true;
            }
        }
    }

    /// The next moment the loop has something to do without being woken: a replacement due,
    /// or a stop timeout running out.
    fn next_deadline(&self) -> Option<Instant> {
        let respawns = self.slots.iter().filter_map(|slot| slot.respawn_at);
        let stops = self
            .workers
            .values()
            .filter(|worker| !worker.killed)
            .filter_map(|worker| worker.stop_sent)
            .map(|asked| asked + self.config.stop_timeout);
        let upgrade = self.successor.as_ref().map(|successor| successor.deadline);
        respawns.chain(stops).chain(upgrade).min()
    }

    /// `SIGTERM`/`SIGINT`: every worker finishes its requests in flight and exits; returns
    /// once all are reaped, so that the master leaves neither orphans nor zombies.
    fn stop_all(&mut self) {
        let count = self.workers.len();
        let plural = if count == 1 { "" } else { "s" };
        log::event(format_args!("master: stopping {count} worker{plural}"));
        for slot in &mut self.slots {
            slot.respawn_at = None;
        }
        for (pid, worker) in &mut self.workers {
            if worker.stop_sent.is_none() {
                ask_to_stop(*pid, worker);
            }
        }
        while !self.workers.is_empty() {
            // SIGCHLD wakes us as each worker exits; the deadline, for the stop timeout. (After
            // a SIGKILL there is no deadline left, but the SIGCHLD comes within a moment.)
            let deadline = self
                .next_deadline()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            let _ = wait_readable(&[self.signals.wake_fd()], Some(deadline));
            self.signals.take();
            self.reap();
            self.kill_overdue();
        }
        log::event(format_args!("master: all workers stopped"));
    }
}

/// `SIGTERM` to one worker: stop accepting, finish the requests in flight, exit.
fn ask_to_stop(pid: Pid, worker: &mut WorkerProcess) {
    let _ = kill(pid, Signal::SIGTERM);
    worker.stop_sent = Some(Instant::now());
}

fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with status {code}"),
        WaitStatus::Signaled(_, signal, _) => format!("was killed by {}", signal.as_str()),
        other => format!("ended ({other:?})"),
    }
}
