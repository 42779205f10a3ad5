//! The built-in demo: with no `--config`, the proxy starts a few upstreams itself and proxies
//! to them, so that `cargo run` alone shows a proxy balancing real servers.
//!
//! Each demo upstream is this same binary run again with the hidden `--demo-upstream` option,
//! which serves the course's site with step 05's event loop on a free loopback port and
//! announces it with the contract's `listening on` line. Running a fresh copy of the binary
//! (not a forked copy of the master) means it inherits none of the master's sockets and pipes:
//! only its stdin, stdout and stderr.
//!
//! Its stdin is its lifeline. The master keeps the write end of that pipe and never writes to
//! it; when the master exits, however it exits, the pipe closes, and the upstream reads end of
//! file and shuts down gracefully, as step 06's workers watch their master.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::listen::{ListenOptions, announce, bind_listener};
use common::{CommonArgs, Signals, Site};
use step05_epoll_kqueue::{EventLoop, LoopConfig, LoopStats};

/// Why the demo's upstreams could not be started, or one could not serve.
#[derive(Debug)]
pub enum DemoError {
    /// A system call failed while doing `what`.
    Io {
        what: &'static str,
        source: io::Error,
    },
    /// A demo upstream cannot listen (`common::listen`'s one line).
    Listen(String),
    /// A demo upstream did not print its `listening on` line; what it printed instead.
    NoStartLine(Option<String>),
}

impl fmt::Display for DemoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DemoError::Io { what, source } => write!(f, "cannot {what}: {source}"),
            DemoError::Listen(why) => f.write_str(why),
            DemoError::NoStartLine(line) => {
                write!(f, "a demo upstream did not start (it said {line:?})")
            }
        }
    }
}

impl std::error::Error for DemoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DemoError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// `map_err` for a failed `what`.
fn failed(what: &'static str) -> impl FnOnce(io::Error) -> DemoError {
    move |source| DemoError::Io { what, source }
}

/// The demo's upstream processes.
pub struct DemoUpstreams {
    children: Vec<Child>,
    pub addrs: Vec<SocketAddr>,
}

impl DemoUpstreams {
    /// Starts `count` upstreams on free loopback ports and waits for each to announce itself.
    ///
    /// # Errors
    ///
    /// [`DemoError`], when one cannot be started; those already started are stopped.
    pub fn start(count: usize) -> Result<DemoUpstreams, DemoError> {
        let binary = std::env::current_exe()
            .map_err(failed("find this program to start the demo upstreams"))?;
        let mut demo = DemoUpstreams {
            children: Vec::new(),
            addrs: Vec::new(),
        };
        for _ in 0..count {
            let mut child = Command::new(&binary)
                .args([
                    "--demo-upstream",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--quiet",
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .map_err(failed("start a demo upstream"))?;
            let line = child.stdout.take().and_then(|stdout| {
                let mut line = String::new();
                BufReader::new(stdout).read_line(&mut line).ok()?;
                Some(line)
            });
            demo.children.push(child);
            let addr = line
                .as_deref()
                .and_then(|line| line.trim().strip_prefix("listening on http://"))
                .and_then(|addr| addr.parse().ok())
                .ok_or_else(|| DemoError::NoStartLine(line.clone()))?;
            demo.addrs.push(addr);
        }
        Ok(demo)
    }

    /// Closes every upstream's lifeline and waits for them to exit (killing any that take
    /// more than two seconds), so that the proxy leaves no process behind.
    pub fn stop(mut self) {
        for child in &mut self.children {
            drop(child.stdin.take());
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        for child in &mut self.children {
            // The master may have reaped it already (it reaps every child that exits): then
            // there is nothing left to wait for.
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The life of a demo upstream process (`--demo-upstream`): the site on step 05's event loop,
/// until `SIGTERM`, `SIGINT` or the end of its stdin.
///
/// # Errors
///
/// [`DemoError`], when it cannot listen or start its loop.
pub fn serve_upstream(common: &CommonArgs) -> Result<(), DemoError> {
    let options = ListenOptions {
        nonblocking: true,
        ..ListenOptions::default()
    };
    let listener = bind_listener(&common.host, common.port, options).map_err(DemoError::Listen)?;
    let signals = Signals::install(&[]).map_err(failed("install signal handlers"))?;
    announce(&listener).map_err(failed("print the start-up line"))?;
    thread::Builder::new()
        .name("lifeline".into())
        .spawn(move || {
            // Nothing is ever written: this returns at end of file, when the proxy is gone.
            let _ = std::io::stdin().lock().read_to_end(&mut Vec::new());
            signals.request_shutdown();
        })
        .map_err(failed("watch stdin"))?;
    let site = Site::new("step07-demo-upstream", common.delay());
    let config = LoopConfig::new(common);
    let event_loop = EventLoop::new(&site, config, signals, Arc::new(LoopStats::default()))
        .map_err(failed("start the event loop"))?;
    event_loop
        .run(listener)
        .map_err(failed("run the event loop"))
}
