//! The pool's promises, each shown by a test that fails when the promise is broken.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, ThreadId};
use std::time::Duration;

use super::*;

/// Jobs that each wait (at most `patience`) for all `expected` to be running at once.
struct Rendezvous {
    arrived: Mutex<usize>,
    all_here: Condvar,
    expected: usize,
}

impl Rendezvous {
    fn new(expected: usize) -> Arc<Rendezvous> {
        Arc::new(Rendezvous {
            arrived: Mutex::new(0),
            all_here: Condvar::new(),
            expected,
        })
    }

    /// Arrives and waits for the others; how many had arrived when the wait ended.
    fn meet(&self, patience: Duration) -> usize {
        let mut arrived = self.arrived.lock().unwrap();
        *arrived += 1;
        self.all_here.notify_all();
        let (arrived, _) = self
            .all_here
            .wait_timeout_while(arrived, patience, |n| *n < self.expected)
            .unwrap();
        *arrived
    }
}

/// Runs `n` rendezvous jobs on `pool`; how many jobs each saw running at once.
fn meet_on(pool: &ThreadPool, n: usize) -> Vec<usize> {
    let rendezvous = Rendezvous::new(n);
    let (seen, results) = mpsc::channel();
    for _ in 0..n {
        let (rendezvous, seen) = (Arc::clone(&rendezvous), seen.clone());
        pool.execute(move || {
            let _ = seen.send(rendezvous.meet(Duration::from_secs(2)));
        });
    }
    (0..n)
        .map(|_| results.recv_timeout(Duration::from_secs(20)).unwrap())
        .collect()
}

#[test]
fn zero_workers_is_an_error_not_a_panic() {
    let error = ThreadPool::new(0).err().expect("refused");
    assert!(matches!(error, PoolError::NoWorkers));
    assert_eq!(error.to_string(), "a thread pool needs at least one worker");
}

/// The lock around the receiver is held only to receive: four jobs on four workers are all
/// running at the same moment. (Held across the job, they would run one at a time, and each
/// would see only itself.)
#[test]
fn n_jobs_on_n_workers_run_side_by_side() {
    let pool = ThreadPool::new(4).unwrap();
    assert_eq!(meet_on(&pool, 4), [4, 4, 4, 4]);
}

#[test]
fn a_panicking_job_leaves_the_pool_at_full_size() {
    let pool = ThreadPool::new(2).unwrap();
    for _ in 0..3 {
        pool.execute(|| panic!("a job that fails"));
    }
    // Both workers are still there: two jobs can run at once.
    assert_eq!(meet_on(&pool, 2), [2, 2]);
    let status = pool.status();
    assert_eq!((status.workers(), status.panicked()), (2, 3));
}

#[test]
fn jobs_start_in_the_order_they_were_given() {
    let order = Arc::new(Mutex::new(Vec::new()));
    let pool = ThreadPool::new(1).unwrap();
    for index in 0..5 {
        let order = Arc::clone(&order);
        pool.execute(move || order.lock().unwrap().push(index));
    }
    drop(pool);
    assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4]);
}

#[test]
fn busy_and_queued_are_counted() {
    let pool = ThreadPool::new(1).unwrap();
    let status = pool.status();
    let (started, has_started) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    pool.execute(move || {
        let _ = started.send(());
        let _ = released.recv_timeout(Duration::from_secs(10));
    });
    has_started.recv_timeout(Duration::from_secs(10)).unwrap();
    pool.execute(|| {});
    pool.execute(|| {});
    assert_eq!(
        (status.workers(), status.busy(), status.queued()),
        (1, 1, 2)
    );
    drop(release);
    drop(pool);
    assert_eq!(
        (status.busy(), status.queued(), status.completed()),
        (0, 0, 3)
    );
    assert_eq!(status.workers(), 0, "every worker ended");
}

static THREADS_ENDED: AtomicUsize = AtomicUsize::new(0);

/// Counts, when its thread ends, that the thread ended.
struct EndWatch;

impl Drop for EndWatch {
    fn drop(&mut self) {
        THREADS_ENDED.fetch_add(1, Ordering::SeqCst);
    }
}

thread_local! {
    static END_WATCH: EndWatch = const { EndWatch };
}

/// `drop` runs what is still queued, then joins every worker: when it returns, all jobs have
/// run and every thread that ran one has ended (its thread-locals were destroyed).
#[test]
fn drop_runs_queued_jobs_and_joins_every_worker() {
    let done = Arc::new(AtomicUsize::new(0));
    let threads = Arc::new(Mutex::new(HashSet::<ThreadId>::new()));
    let pool = ThreadPool::new(2).unwrap();
    for _ in 0..6 {
        let (done, threads) = (Arc::clone(&done), Arc::clone(&threads));
        pool.execute(move || {
            END_WATCH.with(|_| {});
            threads.lock().unwrap().insert(thread::current().id());
            thread::sleep(Duration::from_millis(30));
            done.fetch_add(1, Ordering::SeqCst);
        });
    }
    drop(pool);
    assert_eq!(done.load(Ordering::SeqCst), 6, "queued jobs ran");
    let ran = threads.lock().unwrap().len();
    assert!(ran >= 1);
    assert_eq!(THREADS_ENDED.load(Ordering::SeqCst), ran, "threads joined");
}
