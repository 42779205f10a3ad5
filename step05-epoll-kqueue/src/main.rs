//! # Step 05: one thread, thousands of connections
//!
//! Steps 01 to 04 gave every connection a worker, a process or a thread, that blocks in `read`
//! until its client speaks. Workers cost memory and scheduling even while they wait, and most
//! of the time they wait: ten thousand idle keep-alive clients are ten thousand sleeping
//! threads (the C10K problem). This step has one thread and no blocking calls. Every socket is
//! non-blocking; the thread asks the kernel which sockets are ready (`epoll` on Linux, `kqueue`
//! on macOS and the BSDs), serves each as far as it can without waiting, and keeps each
//! connection's progress in a small state machine. A slow `/sleep` is a timer, not a sleep.
//!
//! The model's limit is its one thread: anything that blocks blocks everyone. Run with
//! `--blocking-sleep` and `/sleep` calls `thread::sleep` inside the loop, as careless code
//! would: five clients asking for 300 ms each wait 1.5 s in turn, and every other client
//! freezes meanwhile. The loop also uses one core only. Step 06 runs one loop per core in
//! worker processes, nginx-style, and sends blocking work to a thread pool.
//!
//! The loop lives in this crate's library (`lib.rs`), so that step 06 can reuse it; this file
//! only reads the options, opens the listening socket and starts the loop.
//!
//! Try it:
//!
//! ```text
//! cargo run --release -p step05-epoll-kqueue
//! python3 scripts/accesses.py http://127.0.0.1:8090/sleep?ms=1000 -n 1000 -c 1000   # about 1 s
//! cargo run --release -p step05-epoll-kqueue -- --blocking-sleep
//! python3 scripts/accesses.py http://127.0.0.1:8090/sleep?ms=300 -n 5 -c 5          # about 1.5 s
//! ```

use std::sync::Arc;

use clap::Parser;
use common::args::{fail, parse};
use common::limits::set_open_files_limit;
use common::listen::announce;
use common::{CommonArgs, Site, log};
use step05_epoll_kqueue::{EventLoop, LoopConfig, LoopStats};

/// One thread, non-blocking sockets, epoll / kqueue.
#[derive(Parser, Debug)]
#[command(name = "step05-epoll-kqueue", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    /// At this many open connections, stop accepting until one closes.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,

    /// Teaching switch: `/sleep` calls thread::sleep inside the event loop, so one slow
    /// request freezes every client.
    #[arg(long)]
    blocking_sleep: bool,

    /// Limit on open descriptors (RLIMIT_NOFILE) to set at start, like nginx's
    /// worker_rlimit_nofile [default: the hard limit].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(16..))]
    max_open_files: Option<u32>,
}

fn main() {
    let args: Args = parse();
    // Every connection is a descriptor: a soft limit of 1024 would cap the loop far below its
    // --max-connections.
    if let Err(error) = set_open_files_limit(args.max_open_files.map(Into::into)) {
        log::error(format_args!("cannot set the open-files limit: {error}"));
    }
    let (listener, signals) = args.common.listen_and_install_signals();

    let stats = Arc::new(LoopStats::default());
    let site = Site::new("step05-epoll-kqueue", args.common.delay()).with_stats({
        let stats = Arc::clone(&stats);
        move |json| stats.write_json(json)
    });
    let config = LoopConfig {
        max_connections: args.max_connections as usize,
        blocking_sleep: args.blocking_sleep,
        ..LoopConfig::new(&args.common)
    };
    let event_loop = EventLoop::new(&site, config, signals, stats)
        .unwrap_or_else(|error| fail(format_args!("cannot start the event loop: {error}")));

    if let Err(error) = announce(&listener) {
        fail(format_args!("cannot print the start-up line: {error}"));
    }
    if let Err(error) = event_loop.run(listener) {
        fail(format_args!("the event loop failed: {error}"));
    }
}
