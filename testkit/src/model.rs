//! The model checks: does a server work the way a step asks, measured from outside as the
//! chapters measure it (timing ratios, processes and threads in `/proc`, `/stats` where the
//! server has one), whatever language it is written in.
//!
//! Each check starts its own server from a [`Target`], returns one line saying what it
//! measured, and fails by panicking with that line and what was wrong. [`crate::checks`]
//! lists them per step for `scripts/grade`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::client;
use crate::load::{SteadyLoad, concurrent_gets};
use crate::procfs;
use crate::server::Server;
use crate::target::Target;
use crate::wait::wait_for;

/// How hard a model check pushes: the full experiment, or a smaller one for CI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    Quick,
    Full,
}

/// Samples `measure` every 5 ms on a thread of its own until the returned flag is set; the
/// thread's result is every sample taken.
fn sample<T: Send + 'static>(
    measure: impl Fn() -> T + Send + 'static,
) -> (Arc<AtomicBool>, thread::JoinHandle<Vec<T>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let sampler = thread::spawn(move || {
        let mut samples = Vec::new();
        while !flag.load(Ordering::Relaxed) {
            samples.push(measure());
            thread::sleep(Duration::from_millis(5));
        }
        samples
    });
    (stop, sampler)
}

fn stop_sampling<T>(sampling: (Arc<AtomicBool>, thread::JoinHandle<Vec<T>>)) -> Vec<T> {
    sampling.0.store(true, Ordering::Relaxed);
    sampling.1.join().unwrap_or_default()
}

/// Needs `/proc`: off Linux, the check cannot measure, and says so by failing.
fn require_procfs() {
    if !cfg!(target_os = "linux") {
        panic!("this check reads processes and threads from Linux's /proc");
    }
}

/// Makes sure this process may hold `wanted` descriptors (its clients' sockets); the servers
/// it starts inherit the limit.
pub fn allow_open_files(wanted: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < wanted
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, wanted.min(hard), hard);
    }
}

/// The course's experiment: many slow requests at once (20 of 1 s; 10 of 0.5 s when quick)
/// take about as long as one, not as long as all of them one after the other.
pub fn slow_requests_are_served_side_by_side(target: &Target, effort: Effort) -> String {
    let (count, ms) = match effort {
        Effort::Quick => (10, 500),
        Effort::Full => (20, 1000),
    };
    let server = target.start(&["--quiet"]);
    let burst = concurrent_gets(server.addr(), &format!("/sleep?ms={ms}"), count);
    let one = Duration::from_millis(ms);
    let serial = one * count as u32;
    let measured = format!(
        "{count} × /sleep?ms={ms} at once: {:.2} s, {:.2} of the {:.0} s they take one at a time",
        burst.wall.as_secs_f64(),
        burst.wall.as_secs_f64() / serial.as_secs_f64(),
        serial.as_secs_f64()
    );
    assert_eq!(
        burst.count_status(200),
        count,
        "{measured}; failed: {:?}",
        burst.failures()
    );
    assert!(burst.wall < one * 5 / 2, "{measured}");
    measured
}

/// While 10 slow requests are in flight, each has a process of its own: the server has at
/// least 10 children.
pub fn a_process_per_connection(target: &Target, _effort: Effort) -> String {
    require_procfs();
    let server = target.start(&["--quiet"]);
    let pid = server.pid();
    let sampling = sample(move || {
        procfs::children_of(pid)
            .unwrap_or_default()
            .iter()
            .filter(|child| child.state != 'Z')
            .count()
    });
    let burst = concurrent_gets(server.addr(), "/sleep?ms=500", 10);
    let most = stop_sampling(sampling).into_iter().max().unwrap_or(0);
    let measured =
        format!("10 × /sleep?ms=500 in flight: a peak of {most} child processes at once");
    assert_eq!(
        burst.count_status(200),
        10,
        "{measured}; {:?}",
        burst.failures()
    );
    assert!(most >= 10, "{measured}");
    measured
}

/// Every child is reaped as it exits: after 200 connections (100 when quick), no zombie and
/// no child is left.
pub fn no_zombie_is_left(target: &Target, effort: Effort) -> String {
    require_procfs();
    let rounds = match effort {
        Effort::Quick => 5,
        Effort::Full => 10,
    };
    let server = target.start(&["--quiet"]);
    for _ in 0..rounds {
        let burst = concurrent_gets(server.addr(), "/", 20);
        assert_eq!(burst.count_status(200), 20, "{:?}", burst.failures());
    }
    let finished = Instant::now();
    let gone = wait_for(Duration::from_secs(5), || {
        procfs::children_of(server.pid())
            .unwrap_or_default()
            .is_empty()
            .then(|| finished.elapsed())
    });
    let children = procfs::children_of(server.pid()).unwrap_or_default();
    let zombies = children.iter().filter(|child| child.state == 'Z').count();
    match gone {
        Some(after) => format!(
            "{} connections: every child gone {:.2} s after the last answer, no zombie",
            rounds * 20,
            after.as_secs_f64()
        ),
        None => panic!(
            "{} connections: 5 s after the last answer, {} children left, {zombies} of them \
             zombies",
            rounds * 20,
            children.len()
        ),
    }
}

/// While 10 slow requests are in flight, one process holds a thread for each: at least 10
/// more threads than when idle, no child process; afterwards, back to the idle count.
pub fn a_thread_per_connection(target: &Target, _effort: Effort) -> String {
    require_procfs();
    let server = target.start(&["--quiet"]);
    let pid = server.pid();
    let idle = procfs::thread_count(pid).unwrap_or(0);
    let sampling = sample(move || {
        let children = procfs::children_of(pid).unwrap_or_default().len();
        (procfs::thread_count(pid).unwrap_or(0), children)
    });
    let burst = concurrent_gets(server.addr(), "/sleep?ms=500", 10);
    let samples = stop_sampling(sampling);
    let most = samples.iter().map(|s| s.0).max().unwrap_or(0);
    let children = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let back = wait_for(Duration::from_secs(5), || {
        (procfs::thread_count(pid) == Some(idle)).then_some(())
    });
    let measured = format!(
        "10 × /sleep?ms=500 in flight: {most} threads ({idle} idle), {children} child \
         processes; {} afterwards",
        if back.is_some() {
            "back to the idle count"
        } else {
            "NOT back to the idle count"
        }
    );
    assert_eq!(
        burst.count_status(200),
        10,
        "{measured}; {:?}",
        burst.failures()
    );
    assert!(
        most >= idle + 10 && children == 0 && back.is_some(),
        "{measured}"
    );
    measured
}

/// `/stats`'s `workers`, when the server reports it.
fn stats_workers(server: &Server) -> Option<u64> {
    let stats = client::try_get(server.addr(), "/stats").ok()?;
    let json: serde_json::Value = serde_json::from_slice(&stats.body).ok()?;
    json["workers"].as_u64()
}

/// A burst of slow requests (40 of 300 ms; 20 when quick) fills the queue past 80 %: workers
/// are added; once the burst is over they leave until the floor (the idle count) is reached.
/// Counted from `/stats`'s `workers` where the server reports it, else from the threads in
/// `/proc`.
pub fn workers_grow_under_a_burst_and_return_to_the_floor(
    target: &Target,
    effort: Effort,
) -> String {
    let (count, within) = match effort {
        Effort::Quick => (20, Duration::from_secs(30)),
        Effort::Full => (40, Duration::from_secs(60)),
    };
    let server = target.start(&["--quiet"]);
    let pid = server.pid();
    let from_stats = stats_workers(&server).is_some();
    if !from_stats {
        require_procfs();
    }
    let addr = server.addr();
    let count_now = move || -> Option<u64> {
        if from_stats {
            let stats = client::try_get(addr, "/stats").ok()?;
            serde_json::from_slice::<serde_json::Value>(&stats.body).ok()?["workers"].as_u64()
        } else {
            procfs::thread_count(pid).map(|threads| threads as u64)
        }
    };
    let source = if from_stats {
        "/stats workers"
    } else {
        "/proc threads"
    };
    let floor = count_now().unwrap_or(0);
    // Sampling /stats during the burst waits in the queue like any request: the samples come
    // late, but they come.
    let sampling = sample(count_now);
    let burst = concurrent_gets(server.addr(), "/sleep?ms=300", count);
    let mut peak = stop_sampling(sampling)
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0);
    if from_stats
        && let Some(reported) = client::try_get(addr, "/stats")
            .ok()
            .and_then(|stats| serde_json::from_slice::<serde_json::Value>(&stats.body).ok())
            .and_then(|json| json["peak_workers"].as_u64())
    {
        peak = peak.max(reported);
    }
    let ended = Instant::now();
    let back = wait_for(within, || {
        let now = count_now()?;
        thread::sleep(Duration::from_millis(40));
        (now <= floor).then(|| ended.elapsed())
    });
    let measured = format!(
        "{source}: {floor} idle, {peak} at the peak of {count} × /sleep?ms=300 at once, {}",
        match back {
            Some(after) => format!(
                "back to {floor} {:.1} s after the burst",
                after.as_secs_f64()
            ),
            None => format!("not back to {floor} {} s after the burst", within.as_secs()),
        }
    );
    assert_eq!(
        burst.count_status(200),
        count,
        "{measured}; {:?}",
        burst.failures()
    );
    assert!(peak > floor, "{measured}: no worker was added");
    assert!(back.is_some(), "{measured}");
    measured
}

/// A pool is made once: the server's thread count is the same idle, all through a burst of
/// slow requests (32 of 300 ms; 16 when quick), and after it; and the pool serves several at
/// once (faster than one at a time).
pub fn a_fixed_number_of_threads(target: &Target, effort: Effort) -> String {
    require_procfs();
    let count = match effort {
        Effort::Quick => 16,
        Effort::Full => 32,
    };
    let server = target.start(&["--quiet"]);
    let pid = server.pid();
    let idle = procfs::thread_count(pid).unwrap_or(0);
    let sampling = sample(move || procfs::thread_count(pid).unwrap_or(0));
    let burst = concurrent_gets(server.addr(), "/sleep?ms=300", count);
    let samples = stop_sampling(sampling);
    let (least, most) = (
        samples.iter().copied().min().unwrap_or(0),
        samples.iter().copied().max().unwrap_or(0),
    );
    let after = procfs::thread_count(pid).unwrap_or(0);
    let serial = Duration::from_millis(300) * count as u32;
    let measured = format!(
        "threads: {idle} idle, {least} to {most} during {count} × /sleep?ms=300 at once \
         ({:.2} s; {:.1} s one at a time), {after} after",
        burst.wall.as_secs_f64(),
        serial.as_secs_f64()
    );
    assert_eq!(
        burst.count_status(200),
        count,
        "{measured}; {:?}",
        burst.failures()
    );
    assert!(least == idle && most == idle && after == idle, "{measured}");
    assert!(
        burst.wall < serial / 2,
        "{measured}: the pool serves one at a time"
    );
    measured
}

/// The event loop's point: a thousand clients each wait a second, and one thread answers them
/// all in about one second.
pub fn one_thread_holds_a_thousand_slow_requests(target: &Target, _effort: Effort) -> String {
    require_procfs();
    allow_open_files(4096);
    let server = target.start(&["--quiet"]);
    let pid = server.pid();
    let sampling = sample(move || procfs::thread_count(pid).unwrap_or(0));
    let burst = concurrent_gets(server.addr(), "/sleep?ms=1000", 1000);
    let most = stop_sampling(sampling).into_iter().max().unwrap_or(0);
    let measured = format!(
        "1000 × /sleep?ms=1000 at once: {} answered in {:.2} s, by at most {most} thread(s)",
        burst.count_status(200),
        burst.wall.as_secs_f64()
    );
    assert_eq!(
        burst.count_status(200),
        1000,
        "{measured}; first failures: {:?}",
        {
            let mut failures = burst.failures();
            failures.truncate(3);
            failures
        }
    );
    assert!(burst.wall < Duration::from_secs(3), "{measured}");
    assert_eq!(most, 1, "{measured}");
    measured
}

/// Waits up to 5 s until the server has `count` running children (its workers); their pids.
fn wait_for_workers(server: &Server, count: usize) -> Option<Vec<u32>> {
    wait_for(Duration::from_secs(5), || {
        let workers = server.workers();
        (workers.len() == count).then_some(workers)
    })
}

/// The cores this process may run on (and the servers it starts, which inherit it).
fn cores() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// A master and one worker process per core: the server's running children, once started.
pub fn a_worker_process_per_core(target: &Target, _effort: Effort) -> String {
    require_procfs();
    let server = target.start(&["--quiet"]);
    let cores = cores();
    let workers = wait_for_workers(&server, cores);
    let seen = server.workers();
    match workers {
        Some(workers) => format!(
            "{cores} cores: {} worker processes under the master ({workers:?})",
            workers.len()
        ),
        None => panic!(
            "{cores} cores: {} processes under the master ({seen:?}), not one per core",
            seen.len()
        ),
    }
}

/// `kill -9` one worker (after it has served for a second) while 4 clients keep asking: the
/// master starts a new one within a second.
pub fn a_killed_worker_is_replaced(target: &Target, _effort: Effort) -> String {
    require_procfs();
    let server = target.start(&["--quiet"]);
    let cores = cores();
    let Some(before) = wait_for_workers(&server, cores) else {
        panic!("not {cores} workers to start with: {:?}", server.workers());
    };
    let load = SteadyLoad::start(server.addr(), "/", 4, Duration::from_millis(2), None);
    // A worker that dies within a second of its start may be one that cannot start (a master
    // may wait before restarting it): this one has served for a while.
    thread::sleep(Duration::from_millis(1100));
    let victim = before[0];
    let _ = kill(Pid::from_raw(victim as i32), Signal::SIGKILL);
    let killed = Instant::now();
    let replaced = wait_for(Duration::from_secs(3), || {
        let now = server.workers();
        (now.len() == cores && !now.contains(&victim)).then(|| (killed.elapsed(), now))
    });
    thread::sleep(Duration::from_millis(200));
    let report = load.stop();
    match replaced {
        Some((after, now)) => {
            let measured = format!(
                "kill -9 worker {victim}: {cores} workers again after {:.0} ms ({now:?}); \
                 {} of {} requests failed meanwhile",
                after.as_secs_f64() * 1000.0,
                report.failures.len(),
                report.ok + report.failures.len()
            );
            assert!(after < Duration::from_secs(1), "{measured}");
            measured
        }
        None => panic!(
            "kill -9 worker {victim}: no replacement within 3 s (workers: {:?})",
            server.workers()
        ),
    }
}

/// `SIGHUP` to the master while 8 clients keep asking: a new generation of workers replaces
/// the old one, and no request fails.
pub fn a_reload_fails_no_request(target: &Target, _effort: Effort) -> String {
    require_procfs();
    let server = target.start(&["--quiet"]);
    let cores = cores();
    let Some(old) = wait_for_workers(&server, cores) else {
        panic!("not {cores} workers to start with: {:?}", server.workers());
    };
    let load = SteadyLoad::start(server.addr(), "/", 8, Duration::from_millis(2), None);
    thread::sleep(Duration::from_millis(300));
    server.signal(Signal::SIGHUP);
    let signalled = Instant::now();
    let replaced = wait_for(Duration::from_secs(5), || {
        let now = server.workers();
        (now.len() == cores && now.iter().all(|pid| !old.contains(pid)))
            .then(|| (signalled.elapsed(), now))
    });
    thread::sleep(Duration::from_millis(300));
    let report = load.stop();
    let Some((after, new)) = replaced else {
        panic!(
            "SIGHUP: the workers {old:?} were not replaced within 5 s (now {:?}); {} requests \
             failed",
            server.workers(),
            report.failures.len()
        );
    };
    let measured = format!(
        "SIGHUP under 8 clients: workers {old:?} replaced by {new:?} in {:.2} s; {} of {} \
         requests failed",
        after.as_secs_f64(),
        report.failures.len(),
        report.ok + report.failures.len()
    );
    assert!(report.ok > 50, "{measured}: too few requests answered");
    assert!(
        report.failures.is_empty(),
        "{measured}: {:?}",
        report.failures.iter().take(3).collect::<Vec<_>>()
    );
    measured
}

/// A proxy with no configuration stands in front of upstreams it starts itself: 60 requests
/// on new connections spread over them, as `X-Upstream` says, none getting less than a third
/// of its fair share.
pub fn requests_spread_over_its_upstreams(target: &Target, _effort: Effort) -> String {
    const REQUESTS: usize = 60;
    let server = target.start(&["--quiet"]);
    let mut counts = BTreeMap::<String, usize>::new();
    let mut failures = Vec::new();
    for _ in 0..REQUESTS {
        match client::try_get(server.addr(), "/") {
            Ok(answer) if answer.status == 200 => {
                let upstream = answer.header("x-upstream").unwrap_or("(none)").to_string();
                *counts.entry(upstream).or_default() += 1;
            }
            Ok(answer) => failures.push(format!("status {}", answer.status)),
            Err(error) => failures.push(error.to_string()),
        }
    }
    let spread: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let measured = format!(
        "{REQUESTS} requests over {} upstreams (X-Upstream): {}",
        counts.len(),
        spread.join(", ")
    );
    assert!(failures.is_empty(), "{measured}; failed: {failures:?}");
    assert!(
        !counts.contains_key("(none)"),
        "{measured}: answers without X-Upstream"
    );
    assert!(counts.len() >= 2, "{measured}: not spread");
    let fair = REQUESTS / counts.len();
    assert!(
        counts.values().all(|&count| count * 3 >= fair),
        "{measured}: uneven"
    );
    measured
}
