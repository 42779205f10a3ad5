//! # Step 01: a process per connection
//!
//! The server the C course starts from answers one connection at a time: while it sleeps
//! through one slow request, every other client waits in the kernel's backlog. Run it with
//! `--iterative` to see that. Without the flag, the server `fork`s a child process for every
//! connection it accepts: the child serves that connection and exits, and the parent goes
//! straight back to `accept`. Twenty slow requests now take as long as one.
//!
//! The price is a whole process per client. A process is isolated (a crash takes one
//! connection down, not the server), but creating it costs far more than a thread, each holds
//! its own memory, and the children cannot share anything without extra machinery: even a
//! request counter would need shared memory. A cap (`--max-children`) keeps a flood of clients
//! from fork-bombing the machine. Step 02 keeps the one-worker-per-client model but makes the
//! worker a thread.
//!
//! Try it (one terminal each):
//!
//! ```text
//! cargo run --release -p step01-fork -- --iterative --delay-ms 1000
//! python3 scripts/accesses.py http://127.0.0.1:8090/ -n 10 -c 10     # about 10 s
//! cargo run --release -p step01-fork -- --delay-ms 1000
//! python3 scripts/accesses.py http://127.0.0.1:8090/stats -n 10 -c 10  # about 1 s, 10 pids
//! ```

use std::collections::HashSet;
use std::net::TcpListener;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use clap::Parser;
use common::args::{fail, parse};
use common::listen::{ListenOptions, accept_ready, announce, bind_listener, next_connection};
use common::process::exit_child;
use common::wait::wait_readable;
use common::{CommonArgs, ConnConfig, Signals, Site, log, refuse, serve_connection};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};

/// A process per connection (fork), or with --iterative one connection at a time.
#[derive(Parser, Debug)]
#[command(name = "step01-fork", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    /// Serve one connection at a time in this process: the course's original server.
    #[arg(long)]
    iterative: bool,

    /// The most children alive at once; at the cap the server waits for one to exit before it
    /// accepts again (Apache's MaxRequestWorkers plays this role).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    max_children: u32,
}

fn main() {
    let args: Args = parse();
    let listener = bind_listener(
        &args.common.host,
        args.common.port,
        ListenOptions::default(),
    )
    .unwrap_or_else(|error| fail(error));
    let signals = Signals::install(&[Signal::SIGCHLD])
        .unwrap_or_else(|error| fail(format_args!("cannot install signal handlers: {error}")));
    // The accept loop below polls before it accepts; non-blocking, a client that gives up in
    // between makes `accept` return WouldBlock instead of hanging the loop.
    if let Err(error) = listener.set_nonblocking(!args.iterative) {
        fail(format_args!("cannot configure the listener: {error}"));
    }
    if let Err(error) = announce(&listener) {
        fail(format_args!("cannot print the start-up line: {error}"));
    }
    let config = args.common.conn_config();
    if args.iterative {
        serve_iteratively(&listener, &config, &args.common, signals);
    } else {
        serve_forking(listener, &config, &args, signals);
    }
}

/// The course's first server: accept, serve the whole connection, accept the next.
fn serve_iteratively(
    listener: &TcpListener,
    config: &ConnConfig,
    args: &CommonArgs,
    signals: Signals,
) {
    let site = Site::new("step01-fork", args.delay()).with_stats(|json| {
        json.text("mode", "iterative");
    });
    while let Some(stream) = next_connection(listener, signals) {
        serve_connection(stream, &site, config, signals);
    }
    // Nothing is in flight here: the one connection in progress was finished above.
    std::process::exit(0);
}

/// The forking server: the parent accepts and forks; each child serves one connection.
fn serve_forking(listener: TcpListener, config: &ConnConfig, args: &Args, signals: Signals) {
    let parent_pid = std::process::id();
    let mut children = Children::default();
    // Connections accepted so far: each child reports it, so that the live page can draw a
    // rate from whichever child answered.
    let mut accepted: u64 = 0;
    while !signals.shutdown_requested() {
        children.reap();
        // At the cap, stop watching the listener: new clients wait in the backlog until a
        // child exits (SIGCHLD wakes us) instead of costing one more process.
        let at_cap = children.len() >= args.max_children as usize;
        let fds = [signals.shutdown_fd(), signals.wake_fd(), listener.as_fd()];
        let watched = if at_cap { &fds[..2] } else { &fds[..] };
        let Ok(ready) = wait_readable(watched, None) else {
            break;
        };
        if ready.is_ready(1) {
            // SIGCHLD: children exited; `reap` at the top of the loop collects them.
            signals.take();
        }
        if at_cap || !ready.is_ready(2) || signals.shutdown_requested() {
            continue;
        }
        let Some(stream) = accept_ready(&listener, signals) else {
            continue;
        };
        let live = children.len() as u64 + 1;
        accepted += 1;
        // SAFETY: this parent is single-threaded (it never spawns a thread), so the child is a
        // complete copy and may do anything, not only async-signal-safe calls.
        match unsafe { signals.fork() } {
            Ok(ForkResult::Child) => {
                // The child serves one client and never comes back to `accept`. Without the
                // listener, a child that outlives a killed parent cannot keep the port open.
                drop(listener);
                let site = Site::new("step01-fork", args.common.delay()).with_stats(move |json| {
                    json.text("mode", "fork")
                        .number("parent_pid", parent_pid)
                        .number("children", live)
                        .number("accepted", accepted);
                });
                serve_connection(stream, &site, config, signals);
                exit_child(0);
            }
            Ok(ForkResult::Parent { child }) => {
                children.pids.insert(child);
                // The parent closes its copy of the connection at once. After fork both
                // processes hold the socket, and `close` ends the TCP connection only when the
                // *last* descriptor for it goes: if the parent kept its copy, a child that just
                // closes would leave its client waiting for the end, and the parent would run
                // out of descriptors after about a thousand clients.
                drop(stream);
            }
            Err(errno) => {
                log::error(format_args!("fork failed: {}", errno.desc()));
                refuse(stream, "step01-fork");
            }
        }
    }
    children.stop_all(args.common.grace(), signals);
    std::process::exit(0);
}

/// The live children of the parent, by pid.
#[derive(Default)]
struct Children {
    pids: HashSet<Pid>,
}

impl Children {
    fn len(&self) -> usize {
        self.pids.len()
    }

    // EXERCISE: reap-children - collect every exited child, never blocking the accept loop
    /// Collects every child that has exited, so that none stays a zombie. (The C course's
    /// server never called `wait`: each finished child stayed in the process table as a
    /// zombie until the parent exited.)
    fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => {
                    if let Some(pid) = status.pid() {
                        self.pids.remove(&pid);
                    }
                }
            }
        }
    }
    // EXERCISE END

    // EXERCISE: stop-children - SIGTERM the children, wait out the grace period, SIGKILL the rest
    /// Asks every child to finish its request and exit, waits up to `grace`, then kills the
    /// rest. Returns with no child left, dead or alive.
    fn stop_all(&mut self, grace: Duration, signals: Signals) {
        for &pid in &self.pids {
            let _ = kill(pid, Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        self.reap();
        while !self.pids.is_empty() && Instant::now() < deadline {
            // SIGCHLD wakes us as each child exits.
            let _ = wait_readable(&[signals.wake_fd()], Some(deadline));
            signals.take();
            self.reap();
        }
        for &pid in &self.pids {
            log::error(format_args!(
                "child {pid} did not finish within the grace period"
            ));
            let _ = kill(pid, Signal::SIGKILL);
        }
        for pid in self.pids.drain() {
            let _ = waitpid(pid, None);
        }
    }
    // EXERCISE END
}
