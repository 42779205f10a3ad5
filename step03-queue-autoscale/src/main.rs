//! # Step 03: a queue of connections, and workers that grow and shrink with it
//!
//! Step 02 gave every client a thread of its own, however many clients came. Here the main
//! thread only accepts: each connection goes into a bounded queue (ten slots), and a few worker
//! threads take connections from it in arrival order. When a push leaves the queue at least
//! 80 % full, one more worker starts; when the queue has stayed at or under 20 % for half a
//! second, one worker leaves, never the first. When the queue is full, the main thread waits,
//! and new clients wait in the kernel's backlog instead of in threads.
//!
//! This is the course's assignment #3, done without its bugs: workers sleep on a Condvar
//! instead of spinning on the queue's length, the worker count lives under the queue's lock,
//! the queue has a real bound, and the backlog is not 10.
//!
//! Its limit: a worker belongs to one connection until that connection ends. A keep-alive
//! client that stays connected holds its worker for up to the idle timeout (5 s) while other
//! clients wait in the queue, and the scaler only sees that once the queue is 80 % full.
//! Step 04 keeps the workers and drops the scaling: a fixed pool, sized up front.
//!
//! Try it, and watch the trace lines `t_ms workers queue_len` in the first terminal:
//!
//! ```text
//! cargo run --release -p step03-queue-autoscale
//! python3 scripts/accesses.py http://127.0.0.1:8090/sleep?ms=200 --rate 100 --duration 5 -c 200
//! curl http://127.0.0.1:8090/stats
//! ```

use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use common::args::{fail, parse};
use common::listen::{announce, next_connection};
use common::wait::wait_readable;
use common::{CommonArgs, Signals, Site, log, refuse, serve_connection};
use step03_queue_autoscale::{Closed, Queue, ScalingPolicy, Trace, Workers};

/// A bounded queue of connections with workers that grow and shrink.
#[derive(Parser, Debug)]
#[command(name = "step03-queue-autoscale", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    /// How many accepted connections may wait for a worker; when the queue is full the server
    /// stops accepting, and new clients wait in the kernel's backlog.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    queue_capacity: u32,

    /// Add a worker when a new connection leaves the queue at least this full.
    #[arg(long, value_name = "PERCENT", default_value_t = 80, value_parser = clap::value_parser!(u8).range(1..=100))]
    grow_at: u8,

    /// Let one worker go when the queue has been at most this full for --shrink-after-ms.
    #[arg(long, value_name = "PERCENT", default_value_t = 20, value_parser = clap::value_parser!(u8).range(0..=99))]
    shrink_at: u8,

    /// How long the queue must stay calm before a worker leaves (and between two leaving).
    #[arg(long, value_name = "MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(..=3_600_000))]
    shrink_after_ms: u64,

    /// Workers started at once and never retired.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    min_workers: u32,

    /// The most workers there may be.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    max_workers: u32,

    /// Write each scaling event as a line `t_ms workers queue_len` to FILE instead of stdout
    /// (where they appear unless --quiet).
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
}

impl Args {
    fn policy(&self) -> ScalingPolicy {
        ScalingPolicy {
            capacity: self.queue_capacity as usize,
            grow_at_percent: self.grow_at,
            shrink_at_percent: self.shrink_at,
            shrink_after: Duration::from_millis(self.shrink_after_ms),
            min_workers: self.min_workers as usize,
            max_workers: self.max_workers as usize,
        }
    }

    fn trace(&self) -> Trace {
        match &self.trace {
            Some(path) => Trace::to_file(path).unwrap_or_else(|error| {
                fail(format_args!(
                    "cannot write the trace to {}: {error}",
                    path.display()
                ))
            }),
            None if self.common.quiet => Trace::off(),
            None => Trace::stdout(),
        }
    }
}

fn main() {
    let args: Args = parse();
    let queue = Arc::new(Queue::new(args.policy()).unwrap_or_else(|error| fail(error)));
    let trace = args.trace();
    let (listener, signals) = args.common.listen_and_install_signals();

    // Connections a worker is serving; with the queued ones, the open connections.
    let serving = Arc::new(AtomicU64::new(0));
    let site = Site::new("step03-queue-autoscale", args.common.delay()).with_stats({
        let (queue, serving) = (Arc::clone(&queue), Arc::clone(&serving));
        let policy = args.policy();
        move |json| {
            let now = queue.snapshot();
            let open = now.queue_len as u64 + serving.load(Ordering::Relaxed);
            json.number("workers", now.workers as u64)
                .number("connections", open)
                .number("queue_len", now.queue_len as u64)
                .number("queue_capacity", now.queue_capacity as u64)
                .number("peak_queue_len", now.peak_queue_len as u64)
                .number("peak_workers", now.peak_workers as u64)
                .number("grown", now.grown)
                .number("shrunk", now.shrunk)
                .number("grow_at_percent", policy.grow_at_percent)
                .number("shrink_at_percent", policy.shrink_at_percent)
                .number("min_workers", policy.min_workers as u64)
                .number("max_workers", policy.max_workers as u64);
        }
    });
    let site = Arc::new(site);
    let config = Arc::new(args.common.conn_config());

    if let Err(error) = announce(&listener) {
        fail(format_args!("cannot print the start-up line: {error}"));
    }
    let workers = Workers::start(Arc::clone(&queue), trace, {
        let site = Arc::clone(&site);
        move |stream| {
            serving.fetch_add(1, Ordering::Relaxed);
            serve_connection(stream, &site, &config, signals);
            serving.fetch_sub(1, Ordering::Relaxed);
        }
    })
    .unwrap_or_else(|error| fail(format_args!("cannot start the workers: {error}")));
    close_on_shutdown(&queue, signals);

    while let Some(stream) = next_connection(&listener, signals) {
        // When the queue is full this waits for a worker to take a connection. The client just
        // accepted waits connected meanwhile, and the ones behind it wait in the backlog.
        if let Err(Closed(stream)) = workers.submit(stream) {
            refuse(stream, site.step());
            break;
        }
    }

    // Shutting down: workers drain the queue (each queued request is answered, with
    // `Connection: close`), idle connections close at once, requests in flight finish. What
    // is still queued when the grace period ends is refused with a 503, not dropped.
    queue.close();
    let deadline = Instant::now() + args.common.grace();
    if !queue.wait_for_workers(deadline) {
        log::error(format_args!(
            "{} workers still busy after the grace period",
            queue.snapshot().workers
        ));
    }
    for stream in queue.take_remaining() {
        refuse(stream, site.step());
    }
    std::process::exit(0);
}

/// Closes the queue as soon as a shutdown is requested.
///
/// A signal handler cannot wake a Condvar (it may not take a lock), and the main thread may be
/// asleep on one, waiting for room in a full queue behind workers stuck in slow requests. This
/// thread sleeps on the shutdown pipe instead, and closing the queue wakes everyone.
fn close_on_shutdown(queue: &Arc<Queue<TcpStream>>, signals: Signals) {
    let queue = Arc::clone(queue);
    let watcher = thread::Builder::new()
        .name("shutdown-watch".into())
        .spawn(move || {
            if wait_readable(&[signals.shutdown_fd()], None).is_ok() {
                queue.close();
            }
        });
    if let Err(error) = watcher {
        fail(format_args!("cannot start the shutdown watcher: {error}"));
    }
}
