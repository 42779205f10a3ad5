//! Benchmarks of what each concurrency model pays, run with `cargo bench -p benches`.
//!
//! - `benches/primitives.rs`: one cost at a time: a process (`fork` + `_exit` + `waitpid`), a
//!   thread (spawn + join), an mpsc round trip, a Mutex + Condvar wake-up, step 03's queue
//!   handing a connection to a worker, step 04's pool running a job, and step 05's poller
//!   waking up for a ready socket.
//! - `benches/http.rs`: `common`'s request parsing and response rendering.
//! - `benches/end_to_end.rs`: one request and its answer over loopback to each step's release
//!   binary, on a kept-alive connection and on a new connection per request.
//!
//! Criterion prints the results and writes HTML reports under `target/criterion/`;
//! `python3 scripts/bench_report.py` turns the medians into the table in
//! `docs/benchmarks.md`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The steps the end-to-end benchmark starts, with the options that select their model.
pub const STEPS: &[(&str, &[&str])] = &[
    ("step01-fork", &["--iterative"]),
    ("step01-fork", &[]),
    ("step02-threads", &[]),
    ("step03-queue-autoscale", &[]),
    ("step04-threadpool", &[]),
    ("step05-epoll-kqueue", &[]),
    ("step06-master-worker", &[]),
    // Without --config, step 07 is its demo: the proxy in front of three upstreams it starts
    // itself (step 05's loop), so each request here also crosses a proxy-to-upstream hop.
    ("step07-reverse-proxy", &[]),
];

/// The workspace's root directory.
pub fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| Path::new("."))
}

/// Builds `step` in release mode and returns its binary's path.
///
/// A benchmark can only name its own package's binaries, so it asks cargo (the same one that
/// runs the benchmark) to build the step, into the same target directory.
///
/// # Panics
///
/// When the build fails: a benchmark of a step that does not build measures nothing.
pub fn step_binary(step: &str) -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "-p", step])
        .current_dir(workspace())
        .status()
        .unwrap_or_else(|error| panic!("cannot run cargo to build {step}: {error}"));
    assert!(status.success(), "cargo build --release -p {step} failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace().join("target"), PathBuf::from);
    target.join("release").join(step)
}
