//! # Step 04: a fixed thread pool
//!
//! Step 03 grew and shrank its workers with the queue, and paid for it in rules, thresholds
//! and lag. Here the number of workers is decided once, at start-up (`--workers`, by default
//! four per core), and the threads live as long as the server. The main thread accepts and
//! hands each connection to the pool as a job, a closure that serves it; whichever worker is
//! free runs it. The pool itself knows nothing about HTTP: it runs boxed closures from a
//! channel, the classic design of the Rust Book's final chapter, without its trap (holding
//! the receiver's lock while the job runs, which lets only one worker work at a time).
//!
//! With W workers and requests that each wait D, N requests take about ⌈N/W⌉ × D: the pool
//! serves W at a time, and the rest wait their turn in the channel.
//!
//! Its limit is the one step 03 had, without the scaler to hide it: a worker is held by a
//! connection for as long as that connection lasts. W keep-alive clients that stay connected
//! occupy every worker, and client W+1 waits, although all W are idle. Step 05 stops giving
//! each connection a thread at all: one thread, non-blocking sockets, and an event loop.
//!
//! Try it:
//!
//! ```text
//! cargo run --release -p step04-threadpool -- --workers 4
//! python3 scripts/accesses.py http://127.0.0.1:8090/sleep?ms=500 -n 8 -c 8   # about 1 s
//! curl http://127.0.0.1:8090/stats
//! ```

use std::sync::{Arc, mpsc};
use std::thread;

use clap::Parser;
use common::args::{fail, parse};
use common::listen::{announce, next_connection};
use common::{CommonArgs, Site, log, serve_connection};
use step04_threadpool::ThreadPool;

/// A fixed pool of worker threads.
#[derive(Parser, Debug)]
#[command(name = "step04-threadpool", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    /// Worker threads in the pool [default: four per core].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    workers: Option<u32>,
}

/// Four workers per core. A worker here mostly waits (on a slow request's delay, on a client's
/// next request), and a waiting thread uses no core; the rule of thumb for such work is
/// cores × (1 + wait time / compute time) threads to keep every core busy. We cannot know that
/// ratio for the reader's load, so we assume requests wait about three times as long as they
/// compute, and make the pool easy to resize: `--workers`.
fn default_workers() -> usize {
    thread::available_parallelism().map_or(1, usize::from) * 4
}

fn main() {
    let args: Args = parse();
    let workers = args.workers.map_or_else(default_workers, |n| n as usize);
    let (listener, signals) = args.common.listen_and_install_signals();

    let pool = ThreadPool::new(workers).unwrap_or_else(|error| fail(error));
    let site = Site::new("step04-threadpool", args.common.delay()).with_stats({
        let status = pool.status();
        move |json| {
            // A job is a whole connection: the busy threads' and the queued ones are the
            // open connections.
            json.number("workers", status.workers() as u64)
                .number("connections", (status.busy() + status.queued()) as u64)
                .number("busy", status.busy() as u64)
                .number("queued", status.queued() as u64)
                .number("panicked", status.panicked());
        }
    });
    let site = Arc::new(site);
    let config = Arc::new(args.common.conn_config());

    if let Err(error) = announce(&listener) {
        fail(format_args!("cannot print the start-up line: {error}"));
    }
    while let Some(stream) = next_connection(&listener, signals) {
        // The job owns the connection (moved into the closure) and shares the site and the
        // settings. It waits in the pool's channel until a worker is free.
        let (job_site, job_config) = (Arc::clone(&site), Arc::clone(&config));
        pool.execute(move || serve_connection(stream, &job_site, &job_config, signals));
    }

    // Shutting down: dropping the pool runs every queued connection (each answered with
    // `Connection: close`), lets the ones in flight finish and joins the workers. Idle
    // keep-alive connections close at once. The drop runs on a helper thread so that the
    // grace period can bound it: whatever is still running or queued then is cut off by the
    // exit. (Should the helper fail to start, the pool is dropped with the closure that owns
    // it, on this thread, without the bound.)
    let (finished, pool_dropped) = mpsc::channel();
    let dropper = thread::Builder::new()
        .name("pool-shutdown".into())
        .spawn(move || {
            drop(pool);
            let _ = finished.send(());
        });
    if dropper.is_ok() && pool_dropped.recv_timeout(args.common.grace()).is_err() {
        log::error(format_args!(
            "pool still busy after the grace period: exiting anyway"
        ));
    }
    std::process::exit(0);
}
