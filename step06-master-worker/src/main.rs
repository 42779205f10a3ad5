//! # Step 06: a master and a worker per core
//!
//! Step 05's event loop serves ten thousand connections on one thread, so on one core; and
//! anything that blocks inside it freezes every client. This step is nginx's answer to both. A
//! *master* process binds the port and forks one *worker* process per core; each worker runs
//! step 05's loop unchanged (the crate is used as a library) on the listening socket, and gives
//! blocking work to a small pool of step 04's threads, created in the worker after the fork. The
//! master serves nothing: it restarts a worker that crashes or is killed, starts a new
//! generation of workers on `SIGHUP` and retires the old ones without failing a request, and on
//! `SIGTERM` stops them all gracefully. Workers are processes, not threads, so that one crash
//! takes down one worker's connections and nothing else, and so that a worker can be replaced.
//!
//! The workers share one listening socket by default (`--listen shared`); `--listen reuseport`
//! gives each its own, as Rustify does. `docs/06-master-worker.md` measures the difference.
//!
//! The limit: the workers share nothing but the socket. Each has its own counters, its own
//! caches, its own connections, and the site they serve is built in. Step 07 keeps this
//! process model and puts it in front of other servers: a reverse proxy.
//!
//! Try it (one terminal each):
//!
//! ```text
//! cargo run --release -p step06-master-worker -- --workers 2
//! python3 scripts/accesses.py http://127.0.0.1:8090/stats -n 200 -c 20   # 2 pids, 2 workers
//! pkill -9 -n step06-master   # the newest process: a worker. The master starts another at once.
//! pkill -HUP -o step06-master # the oldest: the master. Generation 2, old workers retired.
//! ```

use clap::Parser;
use common::CommonArgs;
use common::args::{fail, parse};
use step06_master_worker::{MasterArgs, SiteWorker};

/// A master process and one worker process per core, each running step 05's event loop.
#[derive(Parser, Debug)]
#[command(name = "step06-master-worker", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    #[command(flatten)]
    master: MasterArgs,

    /// At this many open connections, a worker stops accepting until one closes.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,

    /// /sleep is blocking work (it calls thread::sleep), run on each worker's thread pool
    /// instead of in its event loop.
    #[arg(long)]
    blocking_sleep: bool,

    /// Threads in each worker's pool for blocking work (nginx's thread pools have 32).
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    blocking_threads: u32,
}

fn main() {
    let args: Args = parse();
    let master = args
        .master
        .start(&args.common)
        .unwrap_or_else(|error| fail(error));
    let mut body = SiteWorker {
        max_connections: args.max_connections as usize,
        blocking_sleep: args.blocking_sleep,
        blocking_threads: args.blocking_threads as usize,
        common: args.common,
    };
    std::process::exit(master.run(&mut body));
}
