//! The worker threads: started at the floor, added when the queue is busy, retired when it
//! has been calm, each taking connections from the [`Queue`] one at a time.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Instant;

use common::log;

use crate::queue::{Closed, Popped, Queue, Role, ScaleEvent};
use crate::trace::Trace;

/// What a worker does with each item it takes from the queue (the server: serve a connection).
type Serve<T> = dyn Fn(T) + Send + Sync;

/// Starts worker threads for a [`Queue`] and feeds it.
pub struct Workers<T> {
    queue: Arc<Queue<T>>,
    serve: Arc<Serve<T>>,
    trace: Arc<Trace>,
    /// Numbers the threads' names: `worker-1` is the first, and numbers are never reused.
    next_id: AtomicUsize,
}

impl<T: Send + 'static> Workers<T> {
    /// Starts the queue's `min_workers` as permanent workers, each running `serve` on every
    /// item it takes, and records the start as the trace's first line.
    ///
    /// # Errors
    ///
    /// When a thread cannot be started. The queue is then closed, so that the workers already
    /// started end once it is drained.
    pub fn start(
        queue: Arc<Queue<T>>,
        trace: Trace,
        serve: impl Fn(T) + Send + Sync + 'static,
    ) -> io::Result<Workers<T>> {
        let workers = Workers {
            queue,
            serve: Arc::new(serve),
            trace: Arc::new(trace),
            next_id: AtomicUsize::new(0),
        };
        // A fresh queue counts exactly its permanent workers.
        let permanent = workers.queue.snapshot().workers;
        for started in 0..permanent {
            if let Err(error) = workers.spawn(Role::Permanent) {
                workers.queue.close();
                for _ in started..permanent {
                    workers.queue.worker_not_started(Role::Permanent);
                }
                return Err(error);
            }
        }
        workers.trace.record(&ScaleEvent {
            at: Instant::now(),
            workers: permanent,
            queue_len: 0,
        });
        Ok(workers)
    }

    /// Queues `item`, waiting while the queue is full, and starts one more worker when the
    /// queue says it is busy.
    ///
    /// # Errors
    ///
    /// [`Closed`] with the item when the queue is closed: the caller answers it.
    pub fn submit(&self, item: T) -> Result<(), Closed<T>> {
        if let Some(event) = self.queue.push_blocking(item)? {
            match self.spawn(Role::Extra) {
                Ok(()) => self.trace.record(&event),
                Err(error) => {
                    // Serving goes on with the workers there are.
                    self.queue.worker_not_started(Role::Extra);
                    log::error(format_args!("cannot add a worker: {error}"));
                }
            }
        }
        Ok(())
    }

    fn spawn(&self, role: Role) -> io::Result<()> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (queue, serve, trace) = (
            Arc::clone(&self.queue),
            Arc::clone(&self.serve),
            Arc::clone(&self.trace),
        );
        // `id` is moved into the thread by value. The C original handed `pthread_create` the
        // address of a local `thread_id`, which was gone by the time the thread read it.
        thread::Builder::new()
            .name(format!("worker-{id}"))
            .spawn(move || work(id, role, &queue, &*serve, &trace))
            .map(drop)
    }
}

/// One worker's life: take a connection, serve it to the end, come back for the next, until
/// the queue says to retire or is closed and empty.
fn work<T>(id: usize, role: Role, queue: &Queue<T>, serve: &Serve<T>, trace: &Trace) {
    loop {
        match queue.pop_blocking(role) {
            Popped::Item(item) => {
                // The queue counts this worker until it returns from `pop_blocking`; were a
                // panic to end the thread, the count would lie and the queue could be left
                // with nobody to drain it. So a panic ends one connection, not the worker.
                // (AssertUnwindSafe: the item is dropped with the panic, and everything else
                // the closure touches is shared read-only or through atomics.)
                if catch_unwind(AssertUnwindSafe(|| serve(item))).is_err() {
                    log::error(format_args!(
                        "worker-{id}: serving a connection panicked; the worker carries on"
                    ));
                }
            }
            Popped::Retire(event) => {
                trace.record(&event);
                return;
            }
            Popped::Closed => return,
        }
    }
}
