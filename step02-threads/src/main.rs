//! # Step 02: a thread per connection
//!
//! Step 01 gave every client a process. Here every client gets a thread: the main thread
//! accepts, spawns a thread that serves the connection, and goes straight back to `accept`.
//! A thread is much cheaper to start than a process, and all threads share one address space,
//! so the server can keep live figures (`/stats` counts threads and connections) with nothing
//! more than atomics. The price of sharing: a bug in one thread can take down every client, and
//! shared data needs synchronisation.
//!
//! The model still spends one thread per client for as long as the client stays connected,
//! busy or idle. A thousand idle keep-alive clients are a thousand threads, each with its own
//! stack. `--max-threads` caps them (at the cap, new clients wait in the backlog), and step 03
//! replaces the unbounded crowd with a queue and a pool of workers that grows and shrinks.
//!
//! Try it:
//!
//! ```text
//! cargo run --release -p step02-threads -- --delay-ms 1000
//! python3 scripts/accesses.py http://127.0.0.1:8090/ -n 20 -c 20   # about 1 s
//! curl http://127.0.0.1:8090/stats
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Instant;

use clap::Parser;
use common::args::{fail, parse};
use common::listen::{announce, next_connection};
use common::{CommonArgs, Signals, Site, log, refuse, serve_connection};

/// A thread per connection.
#[derive(Parser, Debug)]
#[command(name = "step02-threads", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    /// The most connection threads alive at once; at the cap the server waits for one to end
    /// before it accepts again.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    max_threads: u32,
}

fn main() {
    let args: Args = parse();
    let (listener, signals) = args.common.listen_and_install_signals();

    let slots = Arc::new(Slots::new(args.max_threads as usize));
    let connections = Arc::new(AtomicU64::new(0));
    let site = Site::new("step02-threads", args.common.delay()).with_stats({
        let (slots, connections) = (Arc::clone(&slots), Arc::clone(&connections));
        move |json| {
            json.number("threads", slots.in_use() as u64)
                .number("max_threads", slots.max as u64)
                .number("connections", connections.load(Ordering::Relaxed));
        }
    });
    let site = Arc::new(site);
    let config = Arc::new(args.common.conn_config());

    if let Err(error) = announce(&listener) {
        fail(format_args!("cannot print the start-up line: {error}"));
    }
    while let Some(stream) = next_connection(&listener, signals) {
        // At the cap this waits for a connection thread to end. The client just accepted waits
        // connected meanwhile, and the ones behind it wait in the kernel's backlog.
        let Some(slot) = slots.acquire(signals) else {
            break;
        };
        let id = connections.fetch_add(1, Ordering::Relaxed) + 1;
        // Kept only to answer 503 if the thread cannot be created (the closure that owns
        // `stream` is dropped with the failed spawn).
        let refusal = stream.try_clone();
        let (thread_site, thread_config) = (Arc::clone(&site), Arc::clone(&config));
        let spawned = thread::Builder::new()
            .name(format!("conn-{id}"))
            .spawn(move || {
                // The slot is released when this thread ends, however it ends.
                let _slot = slot;
                serve_connection(stream, &thread_site, &thread_config, signals);
            });
        if let Err(error) = spawned {
            log::error(format_args!("cannot start a thread: {error}"));
            if let Ok(stream) = refusal {
                refuse(stream, site.step());
            }
        }
    }

    // Shutting down: idle connections close as soon as they see the shutdown; requests in
    // flight finish and answer with `Connection: close`.
    let deadline = Instant::now() + args.common.grace();
    if !slots.wait_until_idle(deadline) {
        log::error(format_args!(
            "{} connection threads still busy after the grace period",
            slots.in_use()
        ));
    }
    std::process::exit(0);
}

/// A counting semaphore for connection threads: the accept loop takes a slot for each
/// connection it hands to a thread, and the thread gives it back when its connection ends.
struct Slots {
    in_use: Mutex<usize>,
    /// Signalled whenever a slot is given back.
    freed: Condvar,
    max: usize,
}

/// One taken slot; dropping it gives the slot back.
struct Slot(Arc<Slots>);

impl Slots {
    fn new(max: usize) -> Slots {
        Slots {
            in_use: Mutex::new(0),
            freed: Condvar::new(),
            max,
        }
    }

    /// The count is a plain number that every holder leaves consistent, so a thread that
    /// panicked while holding the lock cannot have broken it: use the value anyway.
    fn count(&self) -> MutexGuard<'_, usize> {
        self.in_use.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn in_use(&self) -> usize {
        *self.count()
    }

    // EXERCISE: take-a-slot - a counting semaphore: take a slot, or sleep on the Condvar
    /// Takes a slot, waiting while all are in use; `None` once a shutdown is requested.
    ///
    /// A shutdown cannot wake a Condvar (a signal handler may not touch locks), and it need
    /// not: at a shutdown every connection thread finishes its request or, if idle, closes at
    /// once, so slots come back within the grace period and this wait ends.
    fn acquire(self: &Arc<Self>, signals: Signals) -> Option<Slot> {
        let mut in_use = self.count();
        while *in_use >= self.max {
            in_use = self
                .freed
                .wait(in_use)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if signals.shutdown_requested() {
            return None;
        }
        *in_use += 1;
        Some(Slot(Arc::clone(self)))
    }

    /// Waits until no slot is in use or `deadline` passes; whether all came back.
    fn wait_until_idle(&self, deadline: Instant) -> bool {
        let mut in_use = self.count();
        while *in_use > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            in_use = self
                .freed
                .wait_timeout(in_use, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
    // EXERCISE END
}

// EXERCISE: give-back-a-slot - give the slot back and wake whoever waits for one
impl Drop for Slot {
    fn drop(&mut self) {
        *self.0.count() -= 1;
        self.0.freed.notify_all();
    }
}
// EXERCISE END
