//! Step 06's process model: a single-threaded master that serves nothing, workers that each
//! answer with their index and spread the load, a pool that keeps blocking work off the loop,
//! a graceful stop that leaves no process behind, workers that do not outlive their master, and
//! a restart policy that does not turn into a fork storm.

use std::collections::HashSet;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use testkit::load::{SteadyLoad, concurrent_gets, get_in_background};
use testkit::server::run_to_exit;
use testkit::{Server, procfs, tools, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_step06-master-worker");

/// The master forks the workers and serves nothing itself: every answer comes from a worker,
/// which names its master, its index and its generation. The master has one thread: it never
/// starts one, so forking is safe (see `master.rs`).
#[test]
fn the_master_forks_the_workers_and_serves_nothing() {
    if !tools::has_procfs("the_master_forks_the_workers_and_serves_nothing") {
        return;
    }
    let server = Server::start(BIN, &["--quiet", "--workers", "2"]);
    let workers = server.wait_for_workers(2);
    assert_eq!(
        procfs::thread_count(server.pid()),
        Some(1),
        "the master's threads"
    );

    let stats = server.get("/stats").json();
    let pid = stats["pid"].as_u64().unwrap_or(0) as u32;
    assert!(
        workers.contains(&pid),
        "answered by {pid}, workers {workers:?}"
    );
    assert_eq!(stats["master_pid"].as_u64(), Some(u64::from(server.pid())));
    assert!(
        stats["worker_index"].as_u64().is_some_and(|i| i < 2),
        "{stats}"
    );
    assert_eq!(stats["workers"].as_u64(), Some(2), "{stats}");
    assert_eq!(stats["generation"].as_u64(), Some(1), "{stats}");
    assert_eq!(stats["restarts"].as_u64(), Some(0), "{stats}");
    assert_eq!(stats["listen"].as_str(), Some("shared"), "{stats}");
    assert!(
        stats["accepted"].as_u64().is_some_and(|n| n >= 1),
        "step05's figures: {stats}"
    );

    let hello = server.get("/");
    let index = hello.header("x-worker").unwrap_or_default();
    assert!(index == "0" || index == "1", "X-Worker: {index:?}");
}

/// Under a steady load both workers serve, whichever way they listen.
#[test]
fn connections_spread_over_all_workers() {
    for mode in ["shared", "reuseport"] {
        let server = Server::start(BIN, &["--quiet", "--workers", "2", "--listen", mode]);
        let load = SteadyLoad::start(server.addr(), "/", 8, Duration::ZERO, Some("X-Worker"));
        thread::sleep(Duration::from_millis(1000));
        let report = load.stop();
        assert!(report.failures.is_empty(), "{mode}: {:?}", report.failures);
        let workers: HashSet<&String> = report.by_header.keys().collect();
        assert_eq!(workers.len(), 2, "{mode}: {:?}", report.by_header);
        eprintln!("{mode}: requests per worker {:?}", report.by_header);
    }
}

/// Blocking work runs on each worker's pool, not in its loop: twenty `/sleep?ms=500` on two
/// workers take about half a second (step 05 with `--blocking-sleep` takes ten), and a
/// bystander's page is not held up meanwhile.
#[test]
fn blocking_work_goes_to_each_workers_pool() {
    let server = Server::start(BIN, &["--quiet", "--workers", "2", "--blocking-sleep"]);
    let addr = server.addr();
    let bystander = thread::spawn(move || {
        thread::sleep(Duration::from_millis(150));
        let started = Instant::now();
        let status = testkit::get(addr, "/").status;
        (status, started.elapsed())
    });
    let burst = concurrent_gets(addr, "/sleep?ms=500", 20);
    assert_eq!(burst.count_status(200), 20, "{:?}", burst.failures());
    assert!(
        burst.wall < Duration::from_secs(2),
        "20 blocking sleeps took {:?}",
        burst.wall
    );
    let (status, waited) = bystander.join().expect("bystander");
    assert_eq!(status, 200);
    assert!(
        waited < Duration::from_millis(300),
        "the page took {waited:?}"
    );

    let stats = server.get("/stats").json();
    assert_eq!(stats["pool_threads"].as_u64(), Some(32), "{stats}");
}

/// `SIGTERM` to the master with requests in flight: every one is answered, the master exits 0
/// after reaping every worker, and no process of the tree is left, not even a zombie.
#[test]
fn sigterm_lets_requests_in_flight_finish_and_leaves_no_process() {
    let mut server = Server::start(BIN, &["--quiet", "--workers", "2"]);
    let workers = if tools::has_procfs("sigterm_leaves_no_process") {
        server.wait_for_workers(2)
    } else {
        Vec::new()
    };
    let in_flight: Vec<_> = (0..6)
        .map(|_| get_in_background(server.addr(), "/sleep?ms=800"))
        .collect();
    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    server.signal(Signal::SIGTERM);
    for answer in in_flight {
        let response = answer
            .recv_timeout(Duration::from_secs(5))
            .expect("an answer")
            .expect("a response");
        assert_eq!(
            (response.status, response.text().as_str()),
            (200, "slept 800 ms\n")
        );
    }
    let status = server.wait_exit(Duration::from_secs(5));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "the master's exit status"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    for pid in workers {
        assert_eq!(procfs::state(pid), None, "worker {pid} is left behind");
    }
    server.assert_no_panic();
}

/// `kill -9` the master: nobody would restart or stop the workers now, so they notice (their
/// lifeline pipe reaches end of file) and exit by themselves.
#[test]
fn workers_exit_when_the_master_dies() {
    if !tools::has_procfs("workers_exit_when_the_master_dies") {
        return;
    }
    let mut server = Server::start(BIN, &["--quiet", "--workers", "2"]);
    let workers = server.wait_for_workers(2);
    server.signal(Signal::SIGKILL);
    assert!(server.wait_exit(Duration::from_secs(5)).is_some());
    let gone = wait_for(Duration::from_secs(3), || {
        workers
            .iter()
            .all(|&pid| !procfs::is_running(pid))
            .then_some(())
    });
    let left: Vec<u32> = workers
        .into_iter()
        .filter(|&pid| procfs::is_running(pid))
        .collect();
    assert!(gone.is_some(), "orphaned workers still running: {left:?}");
}

/// A worker that dies right after it starts, again and again, is restarted after a wait that
/// doubles each time, not in a fork storm; once left alone, it serves again.
#[test]
fn a_worker_that_keeps_dying_is_restarted_with_backoff() {
    if !tools::has_procfs("a_worker_that_keeps_dying_is_restarted_with_backoff") {
        return;
    }
    let server = Server::start(BIN, &["--quiet", "--workers", "1"]);
    server.wait_for_workers(1);
    let mut killed = HashSet::new();
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        for pid in server.workers() {
            if killed.insert(pid) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        thread::sleep(Duration::from_millis(2));
    }
    eprintln!(
        "{} workers started in 2 s while each was killed on sight",
        killed.len()
    );
    // Restarted at once after the first quick death, then after 0.1, 0.2, 0.4 and 0.8 s: six or
    // seven workers in two seconds, where restarting at once would have made hundreds.
    assert!(
        (4..=10).contains(&killed.len()),
        "{} workers started in 2 s",
        killed.len()
    );
    let served = wait_for(Duration::from_secs(5), || {
        testkit::Client::try_connect(server.addr())
            .ok()
            .and_then(|mut client| {
                client.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
                client.try_read_response(false).ok()
            })
            .filter(|response| response.status == 200)
    });
    assert!(served.is_some(), "no worker serves again");
    let stderr = server.stderr_lines();
    assert!(
        stderr
            .iter()
            .any(|line| line.contains("quick deaths in a row: 3")),
        "{stderr:#?}"
    );
}

/// Step 06's own options, wrong: one line on stderr, status 1, nothing forked.
#[test]
fn bad_step06_options_fail_with_one_line() {
    for bad in [
        &["--workers", "0"][..],
        &["--workers", "many"],
        &["--workers", "100000"],
        &["--listen", "both"],
        &["--blocking-threads", "0"],
    ] {
        let (status, stderr) = run_to_exit(BIN, bad, Duration::from_secs(10));
        assert_eq!(status.code(), Some(1), "{bad:?}: {stderr:?}");
        assert_eq!(stderr.len(), 1, "{bad:?}: {stderr:?}");
        assert!(stderr[0].starts_with("error: "), "{stderr:?}");
    }
}

/// With `--workers auto`, a reload counts the cores the master may use again: pin the master
/// to one core (what `taskset -p -c 0 PID` does), send `SIGHUP`, and the new generation has one
/// worker.
#[cfg(target_os = "linux")]
#[test]
fn a_reload_counts_the_cores_again() {
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 {
        eprintln!("skipped: a_reload_counts_the_cores_again: needs 2 cores, has {cores}");
        return;
    }
    let server = Server::start(BIN, &["--quiet"]);
    server.wait_for_workers(cores);
    pin_to_one_core(server.pid());
    server.signal(Signal::SIGHUP);
    let stats = wait_for(Duration::from_secs(5), || {
        let stats = server.get("/stats").json();
        let settled = server.workers().len() == 1;
        (settled && stats["generation"].as_u64() == Some(2)).then_some(stats)
    });
    let stats = stats.unwrap_or_else(|| panic!("workers now: {:?}", server.workers()));
    assert_eq!(stats["workers"].as_u64(), Some(1), "{stats}");
}

/// Restricts process `pid` to the first core this test may run on.
#[cfg(target_os = "linux")]
fn pin_to_one_core(pid: u32) {
    let size = size_of::<libc::cpu_set_t>();
    // SAFETY: `cpu_set_t` is plain data, for which all zeroes is a valid (empty) set.
    let mut ours: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `ours` is a live, writable set of the size passed; pid 0 is this process.
    let read = unsafe { libc::sched_getaffinity(0, size, &mut ours) };
    assert_eq!(read, 0, "sched_getaffinity failed");
    // SAFETY: CPU_ISSET only reads the set, and `cpu` stays below CPU_SETSIZE.
    let first = (0..libc::CPU_SETSIZE as usize)
        .find(|&cpu| unsafe { libc::CPU_ISSET(cpu, &ours) })
        .expect("this process may run on some core");
    // SAFETY: as above, an all-zero set is valid, and CPU_SET writes inside it.
    let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `first` is below CPU_SETSIZE (it was found in a set of that size).
    unsafe { libc::CPU_SET(first, &mut one) };
    // SAFETY: `one` is a live set of the size passed; the kernel only reads it.
    let pinned = unsafe { libc::sched_setaffinity(pid as libc::pid_t, size, &one) };
    assert_eq!(pinned, 0, "sched_setaffinity({pid}) failed");
}

/// With a shared socket, a worker at its connection limit leaves new connections to the others:
/// it takes the socket out of its poller, instead of taking wake-ups (`EPOLLEXCLUSIVE` gives
/// each to one worker) that it cannot use while an idle worker waits.
#[test]
fn a_full_worker_leaves_new_connections_to_the_others() {
    let server = Server::start(
        BIN,
        &["--quiet", "--workers", "2", "--max-connections", "1"],
    );
    let mut held = testkit::Client::connect(server.addr());
    assert_eq!(held.get("/").status, 200);
    for _ in 0..5 {
        let started = Instant::now();
        let mut client = testkit::Client::connect(server.addr());
        let _ = client
            .stream()
            .set_read_timeout(Some(Duration::from_secs(3)));
        client.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let response = client.try_read_response(false);
        assert!(
            response.is_ok_and(|response| response.status == 200),
            "no answer while one worker was full and the other idle"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
    drop(held);
}

/// The scoreboard: `/stats` on any worker lists every worker's lane (what the live page draws),
/// each counting the responses its worker served; a killed worker's lane is taken over by its
/// replacement, with a new pid and one more restart.
#[test]
fn stats_lists_every_workers_lane_and_a_restart() {
    if !tools::has_procfs("stats_lists_every_workers_lane_and_a_restart") {
        return;
    }
    let server = Server::start(BIN, &["--quiet", "--workers", "2"]);
    let workers = server.wait_for_workers(2);
    let lanes = |server: &Server| -> Vec<serde_json::Value> {
        server.get("/stats?close").json()["lanes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let pids = |lanes: &[serde_json::Value]| -> Vec<u32> {
        let mut pids: Vec<u32> = lanes
            .iter()
            .filter_map(|lane| lane["pid"].as_u64())
            .map(|pid| pid as u32)
            .collect();
        pids.sort_unstable();
        pids
    };
    // Each worker's pid shows once it has started: the master writes it after the fork.
    let before = wait_for(Duration::from_secs(5), || {
        let now = lanes(&server);
        (pids(&now) == workers).then_some(now)
    })
    .unwrap_or_else(|| panic!("lanes {:?}, workers {workers:?}", lanes(&server)));
    for _ in 0..20 {
        server.get("/");
    }
    let served: u64 = lanes(&server)
        .iter()
        .filter_map(|lane| lane["served"].as_u64())
        .sum();
    assert!(
        served >= 20,
        "the lanes count {served} responses: {before:?}"
    );

    let victim = before[0]["pid"].as_u64().unwrap_or(0) as u32;
    let index = before[0]["worker_index"].clone();
    let _ = kill(Pid::from_raw(victim as i32), Signal::SIGKILL);
    let replaced = wait_for(Duration::from_secs(5), || {
        lanes(&server).into_iter().find(|lane| {
            lane["worker_index"] == index
                && lane["pid"]
                    .as_u64()
                    .is_some_and(|pid| pid != u64::from(victim))
        })
    })
    .unwrap_or_else(|| panic!("no replacement for worker {index} in {:?}", lanes(&server)));
    assert_eq!(replaced["restarts"].as_u64(), Some(1), "{replaced}");
    assert_eq!(pids(&lanes(&server)).len(), 2, "{:?}", lanes(&server));
}
