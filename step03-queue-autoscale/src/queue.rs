//! The bounded queue between the thread that accepts and the workers that serve.
//!
//! One `Mutex` guards everything the acceptor and the workers share: the waiting connections,
//! whether the queue is closed, and the [`Scaler`]'s count of workers. Three `Condvar`s let a
//! thread sleep until the state it needs: a worker until there is a connection (or its time to
//! retire), the acceptor until there is room, the shutdown until the last worker is gone. No
//! thread ever spins on the length: a waiting thread uses no CPU at all.
//!
//! The C original kept its list in a plain linked list, let workers loop on its length
//! without the lock (`get_queue_size` walked the list while the acceptor was changing it), and
//! counted its threads in an unsynchronised `int`. Here there is no way to reach the items or
//! the count except through the lock: the compiler refuses it.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::scaler::{PolicyError, Scaler, ScalingPolicy};

/// A bounded first-in, first-out queue whose state includes the count of the workers that
/// drain it. Generic, so that tests and benchmarks can queue anything; the server queues
/// `TcpStream`s.
#[derive(Debug)]
pub struct Queue<T> {
    state: Mutex<State<T>>,
    /// Workers wait here for a connection; extra workers also for their time to retire.
    not_empty: Condvar,
    /// The acceptor waits here while the queue is full.
    not_full: Condvar,
    /// [`Queue::wait_for_workers`] waits here for the last worker to leave.
    worker_left: Condvar,
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    /// Set once, at shutdown: pushes are refused, pops drain what is left.
    closed: bool,
    scaler: Scaler,
    /// The longest the queue has been, for `/stats`: it can never exceed the capacity.
    peak_len: usize,
}

/// Whether a worker may be let go by the scaler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// One of the `min_workers` started with the queue (the first worker is one): never retired.
    Permanent,
    /// Added by the scaler when the queue was busy; leaves when it has been calm long enough.
    Extra,
}

/// What [`Queue::pop_blocking`] hands a worker.
#[derive(Debug)]
pub enum Popped<T> {
    /// The next connection, in arrival order.
    Item(T),
    /// The queue has been calm long enough: this worker should end (it is already uncounted).
    Retire(ScaleEvent),
    /// The queue is closed and empty: this worker should end (it is already uncounted).
    Closed,
}

/// The item a closed queue refused, handed back so the caller can answer it.
#[derive(Debug)]
pub struct Closed<T>(pub T);

/// A worker was added or let go: the line a trace records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleEvent {
    pub at: Instant,
    /// Workers after the change.
    pub workers: usize,
    /// Connections waiting at the moment of the change.
    pub queue_len: usize,
}

/// The queue's live figures, read under the lock in one go so that they agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub queue_len: usize,
    pub queue_capacity: usize,
    pub peak_queue_len: usize,
    pub workers: usize,
    pub peak_workers: usize,
    pub grown: u64,
    pub shrunk: u64,
}

impl<T> Queue<T> {
    /// An empty, open queue, counting the policy's `min_workers` as its workers already (start
    /// them as [`Role::Permanent`]).
    ///
    /// # Errors
    ///
    /// When the policy does not make sense (see [`ScalingPolicy::validate`]).
    pub fn new(policy: ScalingPolicy) -> Result<Queue<T>, PolicyError> {
        policy.validate()?;
        let state = State {
            items: VecDeque::with_capacity(policy.capacity),
            closed: false,
            scaler: Scaler::new(policy, Instant::now()),
            peak_len: 0,
        };
        Ok(Queue {
            state: Mutex::new(state),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            worker_left: Condvar::new(),
        })
    }

    /// Takes the lock. Every critical section below is a few lines of bookkeeping that cannot
    /// panic halfway (no user code runs under the lock), so a poisoned lock still guards
    /// consistent state: use it rather than spread the panic to every thread.
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    // EXERCISE: bounded-push - wait for room, add the item, ask the scaler whether to grow
    /// Adds `item` at the back, waiting while the queue is full.
    ///
    /// While the acceptor waits here it does not call `accept`, so new clients wait in the
    /// kernel's listen backlog: the queue's bound turns into backpressure instead of an
    /// unbounded pile of open connections.
    ///
    /// Returns `Some(event)` when this push made the queue busy enough to add a worker. The
    /// worker is already counted; the caller starts its thread as [`Role::Extra`] (or calls
    /// [`Queue::worker_not_started`] if it cannot).
    ///
    /// # Errors
    ///
    /// [`Closed`] with the item, when the queue is closed (before or while waiting).
    pub fn push_blocking(&self, item: T) -> Result<Option<ScaleEvent>, Closed<T>> {
        let mut state = self.lock();
        let capacity = state.scaler.policy().capacity;
        while state.items.len() >= capacity && !state.closed {
            state = self
                .not_full
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if state.closed {
            return Err(Closed(item));
        }
        state.items.push_back(item);
        let (len, now) = (state.items.len(), Instant::now());
        state.peak_len = state.peak_len.max(len);
        state.scaler.observe(len, now);
        // Growth is decided here, by the acceptor, because a push is the only moment the queue
        // can get busier: checking anywhere else would only see it later.
        let grow = state.scaler.grow_if_busy(len).then(|| ScaleEvent {
            at: now,
            workers: state.scaler.workers,
            queue_len: len,
        });
        drop(state);
        self.not_empty.notify_one();
        Ok(grow)
    }
    // EXERCISE END

    // EXERCISE: pop-or-retire - the oldest item, or retirement for an extra worker
    /// Takes the connection at the front, waiting while there is none. A worker that could
    /// retire instead is told so before it takes anything.
    ///
    /// Shrinking is decided here, by the workers, because a worker can only leave between
    /// connections: a busy worker finishes its connection, comes back here, and only then is
    /// let go. An idle [`Role::Extra`] worker waits no longer than until the queue will have
    /// been calm for `shrink_after`, so it leaves on time without anyone polling.
    ///
    /// Which waiting worker a push wakes is up to the operating system (`notify_one`); the
    /// connections themselves always leave in arrival order.
    pub fn pop_blocking(&self, role: Role) -> Popped<T> {
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            let retire_in = match role {
                Role::Extra if !state.closed => state.scaler.retire_in(now),
                _ => None,
            };
            if retire_in == Some(Duration::ZERO) {
                state.scaler.retire(now);
                return Popped::Retire(ScaleEvent {
                    at: now,
                    workers: state.scaler.workers,
                    queue_len: state.items.len(),
                });
            }
            if let Some(item) = state.items.pop_front() {
                let len = state.items.len();
                state.scaler.observe(len, now);
                drop(state);
                self.not_full.notify_one();
                return Popped::Item(item);
            }
            if state.closed {
                state.scaler.worker_gone(false);
                drop(state);
                self.worker_left.notify_all();
                return Popped::Closed;
            }
            state = match retire_in {
                Some(left) => {
                    self.not_empty
                        .wait_timeout(state, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .not_empty
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
    }
    // EXERCISE END

    /// Gives back the count of a worker whose thread could not be started.
    pub fn worker_not_started(&self, role: Role) {
        self.lock().scaler.worker_gone(role == Role::Extra);
        self.worker_left.notify_all();
    }

    /// Closes the queue: pushes are refused from now on (a waiting one returns at once), and
    /// workers drain what is queued, then get [`Popped::Closed`]. Idempotent.
    pub fn close(&self) {
        self.lock().closed = true;
        self.not_full.notify_all();
        self.not_empty.notify_all();
    }

    /// Waits until every worker has left (after [`Queue::close`]) or `deadline` passes;
    /// whether they all left.
    pub fn wait_for_workers(&self, deadline: Instant) -> bool {
        let mut state = self.lock();
        while state.scaler.workers > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .worker_left
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Empties the queue, returning what was waiting (in order), for a shutdown that ran out
    /// of time to serve it.
    pub fn take_remaining(&self) -> Vec<T> {
        let mut state = self.lock();
        let items = state.items.drain(..).collect();
        state.scaler.observe(0, Instant::now());
        drop(state);
        self.not_full.notify_all();
        items
    }

    /// The live figures, for `/stats`.
    pub fn snapshot(&self) -> Snapshot {
        let state = self.lock();
        Snapshot {
            queue_len: state.items.len(),
            queue_capacity: state.scaler.policy().capacity,
            peak_queue_len: state.peak_len,
            workers: state.scaler.workers,
            peak_workers: state.scaler.peak_workers,
            grown: state.scaler.grown,
            shrunk: state.scaler.shrunk,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::thread;

    fn queue(capacity: usize, max_workers: usize) -> Arc<Queue<u32>> {
        let policy = ScalingPolicy {
            capacity,
            max_workers,
            shrink_after: Duration::from_millis(50),
            ..ScalingPolicy::default()
        };
        Arc::new(Queue::new(policy).expect("valid policy"))
    }

    /// Waits (bounded) until `done` is set; false if it never was.
    fn eventually(done: &AtomicBool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done.load(Ordering::SeqCst) {
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
        true
    }

    #[test]
    fn items_leave_in_arrival_order() {
        let queue = queue(10, 1);
        for item in 1..=5 {
            assert!(queue.push_blocking(item).is_ok());
        }
        let popped: Vec<u32> = (0..5)
            .map(|_| match queue.pop_blocking(Role::Permanent) {
                Popped::Item(item) => item,
                other => panic!("expected an item, got {other:?}"),
            })
            .collect();
        assert_eq!(popped, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn push_waits_while_full_until_a_pop_makes_room() {
        let queue = queue(2, 1);
        assert!(queue.push_blocking(1).is_ok() && queue.push_blocking(2).is_ok());
        let pushed = Arc::new(AtomicBool::new(false));
        let pusher = {
            let (queue, pushed) = (Arc::clone(&queue), Arc::clone(&pushed));
            thread::spawn(move || {
                let result = queue.push_blocking(3).is_ok();
                pushed.store(true, Ordering::SeqCst);
                result
            })
        };
        thread::sleep(Duration::from_millis(100));
        assert!(!pushed.load(Ordering::SeqCst), "the push waits while full");
        assert!(matches!(
            queue.pop_blocking(Role::Permanent),
            Popped::Item(1)
        ));
        assert!(eventually(&pushed), "a pop lets the push through");
        assert!(pusher.join().expect("pusher"));
        assert_eq!(queue.snapshot().peak_queue_len, 2, "never above capacity");
    }

    #[test]
    fn pop_waits_while_empty_until_a_push() {
        let queue = queue(4, 1);
        let popper = {
            let queue = Arc::clone(&queue);
            thread::spawn(move || queue.pop_blocking(Role::Permanent))
        };
        thread::sleep(Duration::from_millis(50));
        assert!(!popper.is_finished(), "the pop waits while empty");
        assert!(queue.push_blocking(7).is_ok());
        assert!(matches!(popper.join().expect("popper"), Popped::Item(7)));
    }

    #[test]
    fn close_wakes_a_waiting_push_and_lets_workers_drain_first() {
        let queue = queue(1, 1);
        assert!(queue.push_blocking(1).is_ok());
        let pusher = {
            let queue = Arc::clone(&queue);
            thread::spawn(move || queue.push_blocking(2))
        };
        thread::sleep(Duration::from_millis(50));
        queue.close();
        match pusher.join().expect("pusher") {
            Err(Closed(2)) => {}
            other => panic!("expected the item back, got {other:?}"),
        }
        assert!(matches!(
            queue.pop_blocking(Role::Permanent),
            Popped::Item(1)
        ));
        assert!(matches!(
            queue.pop_blocking(Role::Permanent),
            Popped::Closed
        ));
        assert_eq!(queue.snapshot().workers, 0);
        assert!(queue.wait_for_workers(Instant::now()));
    }

    #[test]
    fn a_busy_push_asks_for_a_worker_and_a_calm_queue_lets_it_go() {
        let queue = queue(10, 2);
        for item in 0..7 {
            assert_eq!(queue.push_blocking(item).ok(), Some(None), "under 80 %");
        }
        let grow = queue
            .push_blocking(7)
            .ok()
            .flatten()
            .expect("8 of 10 grows");
        assert_eq!((grow.workers, grow.queue_len), (2, 8));
        assert_eq!(queue.push_blocking(8).ok(), Some(None), "2 is the ceiling");
        for _ in 0..9 {
            assert!(matches!(queue.pop_blocking(Role::Extra), Popped::Item(_)));
        }
        // Empty, so calm: the extra worker waits at most `shrink_after`, then retires.
        let started = Instant::now();
        match queue.pop_blocking(Role::Extra) {
            Popped::Retire(event) => assert_eq!((event.workers, event.queue_len), (1, 0)),
            other => panic!("expected retirement, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(2));
        let stats = queue.snapshot();
        assert_eq!((stats.workers, stats.grown, stats.shrunk), (1, 1, 1));
    }

    #[test]
    fn a_permanent_worker_is_never_retired() {
        let queue = queue(10, 2);
        for item in 0..8 {
            assert!(queue.push_blocking(item).is_ok());
        }
        assert_eq!(queue.snapshot().workers, 2, "one extra worker counted");
        for _ in 0..8 {
            assert!(matches!(
                queue.pop_blocking(Role::Permanent),
                Popped::Item(_)
            ));
        }
        // Calm for three times `shrink_after`, with a worker above the floor: an extra worker
        // would retire, the permanent one goes on waiting for work.
        let popper = {
            let queue = Arc::clone(&queue);
            thread::spawn(move || queue.pop_blocking(Role::Permanent))
        };
        thread::sleep(Duration::from_millis(150));
        assert!(!popper.is_finished(), "still waiting for work");
        queue.close();
        assert!(matches!(popper.join().expect("popper"), Popped::Closed));
    }
}
