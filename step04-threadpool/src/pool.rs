//! [`ThreadPool`]: a fixed number of worker threads taking boxed closures from one channel.

use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};

use common::log;

/// A unit of work: any closure that can move to another thread and run there once.
type Job = Box<dyn FnOnce() + Send + 'static>;

/// The receiving end of the job channel, shared by every worker. `mpsc` allows one receiver,
/// so the workers take turns holding it, through the lock.
type SharedReceiver = Arc<Mutex<Receiver<Job>>>;

/// A fixed set of worker threads running the jobs given to [`ThreadPool::execute`], in the
/// order they were given, each on whichever worker is free first.
///
/// Dropping the pool shuts it down gracefully: no new jobs, the queued ones run, and every
/// worker thread is joined before `drop` returns.
pub struct ThreadPool {
    /// Where jobs go in. `Option` only so that `drop` can close the channel before joining:
    /// a closed channel is how the workers learn there will be no more jobs.
    sender: Option<Sender<Job>>,
    /// The pool keeps a handle on the receiving end too, so that the channel stays open (and
    /// `execute` cannot fail) for as long as the pool exists, whatever its workers do.
    _receiver: SharedReceiver,
    threads: Vec<JoinHandle<()>>,
    status: PoolStatus,
}

/// Why a pool could not be built.
#[derive(Debug)]
pub enum PoolError {
    /// A pool of zero workers would accept jobs and never run them.
    NoWorkers,
    /// The operating system refused a thread (`EAGAIN`: a thread or memory limit).
    Spawn { worker: usize, error: io::Error },
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::NoWorkers => f.write_str("a thread pool needs at least one worker"),
            PoolError::Spawn { worker, error } => {
                write!(f, "cannot start pool worker {worker}: {error}")
            }
        }
    }
}

impl std::error::Error for PoolError {}

/// A cheap, cloneable view of a pool's live figures, for `/stats`. It can outlive the pool.
#[derive(Debug, Clone)]
pub struct PoolStatus {
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    /// Worker threads alive: counted when started, uncounted when their thread ends.
    workers: AtomicUsize,
    /// Workers running a job right now.
    busy: AtomicUsize,
    /// Jobs handed to `execute` that no worker has taken yet.
    queued: AtomicUsize,
    /// Jobs that returned, and jobs that panicked.
    completed: AtomicU64,
    panicked: AtomicU64,
}

impl PoolStatus {
    /// Worker threads alive. A panicking job does not lower it.
    pub fn workers(&self) -> usize {
        self.counters.workers.load(Ordering::Relaxed)
    }

    /// Workers running a job right now.
    pub fn busy(&self) -> usize {
        self.counters.busy.load(Ordering::Relaxed)
    }

    /// Jobs waiting for a free worker.
    pub fn queued(&self) -> usize {
        self.counters.queued.load(Ordering::Relaxed)
    }

    /// Jobs that ran to their end.
    pub fn completed(&self) -> u64 {
        self.counters.completed.load(Ordering::Relaxed)
    }

    /// Jobs that panicked (each was logged, and its worker carried on).
    pub fn panicked(&self) -> u64 {
        self.counters.panicked.load(Ordering::Relaxed)
    }
}

impl ThreadPool {
    /// Starts `workers` threads, named `pool-worker-1`, `pool-worker-2`, ...
    ///
    /// # Errors
    ///
    /// [`PoolError::NoWorkers`] for zero workers, and [`PoolError::Spawn`] when a thread
    /// cannot be started; the workers already started are then stopped and joined.
    pub fn new(workers: usize) -> Result<ThreadPool, PoolError> {
        if workers == 0 {
            return Err(PoolError::NoWorkers);
        }
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let mut pool = ThreadPool {
            sender: Some(sender),
            _receiver: Arc::clone(&receiver),
            threads: Vec::with_capacity(workers),
            status: PoolStatus {
                counters: Arc::new(Counters::default()),
            },
        };
        for id in 1..=workers {
            let (receiver, counters) = (Arc::clone(&receiver), Arc::clone(&pool.status.counters));
            counters.workers.fetch_add(1, Ordering::Relaxed);
            let spawned = thread::Builder::new()
                .name(format!("pool-worker-{id}"))
                .spawn(move || work(id, &receiver, &counters));
            match spawned {
                Ok(thread) => pool.threads.push(thread),
                Err(error) => {
                    pool.status.counters.workers.fetch_sub(1, Ordering::Relaxed);
                    // Dropping the partial pool stops and joins the workers already started.
                    return Err(PoolError::Spawn { worker: id, error });
                }
            }
        }
        Ok(pool)
    }

    /// Queues `job` to run on the next free worker, and returns at once: the channel has no
    /// bound, so a caller (an accept loop, an event loop) never waits here.
    pub fn execute<F>(&self, job: F)
    where
        F: FnOnce() + Send + 'static,
    {
        let counters = &self.status.counters;
        // Counted before sending, so that a worker's decrement never comes first.
        counters.queued.fetch_add(1, Ordering::Relaxed);
        let sent = match &self.sender {
            Some(sender) => sender.send(Box::new(job)).is_ok(),
            None => false,
        };
        if !sent {
            // Unreachable while `self` exists (the sender is only taken in `drop`, and the
            // pool holds the receiver open), but if it ever happened, say so.
            counters.queued.fetch_sub(1, Ordering::Relaxed);
            log::error(format_args!("thread pool: a job was dropped unrun"));
        }
    }

    /// The pool's live figures.
    pub fn status(&self) -> PoolStatus {
        self.status.clone()
    }
}

// EXERCISE: shutdown-by-drop - close the channel, let the queued jobs run, join every worker
impl Drop for ThreadPool {
    /// Closes the channel, lets the workers run every job still queued, and joins them all.
    fn drop(&mut self) {
        // With the only sender gone, `recv` keeps returning the queued jobs, then fails: that
        // failure is each worker's signal to return.
        drop(self.sender.take());
        for thread in self.threads.drain(..) {
            let name = thread.thread().name().unwrap_or("pool-worker").to_string();
            if thread.join().is_err() {
                // Jobs' panics are caught in `work`; only a bug in the pool itself lands here.
                log::error(format_args!("{name} ended with a panic"));
            }
        }
    }
}
// EXERCISE END

/// Uncounts a worker when its thread ends, however it ends.
struct Alive<'a>(&'a Counters);

impl Drop for Alive<'_> {
    fn drop(&mut self) {
        self.0.workers.fetch_sub(1, Ordering::Relaxed);
    }
}

// EXERCISE: worker-loop - receive with the lock held, run the job without it, survive a panic
/// One worker's life: receive a job, run it, repeat until the channel is closed and empty.
fn work(id: usize, receiver: &Mutex<Receiver<Job>>, counters: &Counters) {
    let _alive = Alive(counters);
    loop {
        // The guard is a temporary of this statement, so the lock is released as soon as
        // `recv` returns, *before* the job runs: the other workers can receive meanwhile.
        // (Written `while let Ok(job) = receiver.lock()...recv() { job() }`, the guard would
        // live through the loop body and the workers would run one job at a time.)
        // Only `recv` runs under this lock and it does not panic, so the lock cannot be
        // poisoned by a job; if it were, the receiver inside would still be sound.
        let message = receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv();
        let Ok(job) = message else {
            return;
        };
        counters.queued.fetch_sub(1, Ordering::Relaxed);
        counters.busy.fetch_add(1, Ordering::Relaxed);
        // A panicking job must not take its worker down with it, or every panic would shrink
        // the pool for good. (AssertUnwindSafe: the job is consumed either way, and the pool's
        // own state is only atomics, which a panic cannot leave half-written.)
        let outcome = catch_unwind(AssertUnwindSafe(job));
        counters.busy.fetch_sub(1, Ordering::Relaxed);
        match outcome {
            Ok(()) => {
                counters.completed.fetch_add(1, Ordering::Relaxed);
            }
            Err(payload) => {
                counters.panicked.fetch_add(1, Ordering::Relaxed);
                let message = payload
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("(no message)");
                log::error(format_args!(
                    "pool-worker-{id}: a job panicked ({message}); the worker carries on"
                ));
            }
        }
    }
}
// EXERCISE END

#[cfg(test)]
mod tests;
