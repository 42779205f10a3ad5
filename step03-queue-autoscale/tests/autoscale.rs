//! Step 03's own experiments: a burst of slow requests makes the workers grow and the load's
//! end makes them shrink back to one; the ceiling holds under a big burst and no request is
//! lost; connections are served in arrival order; nobody spins while waiting; a keep-alive
//! client holds its worker (the step's limit); and SIGTERM answers what is queued.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use testkit::load::{concurrent_gets, get_in_background, stats_behind_idle_clients};
use testkit::{Server, procfs, tools, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_step03-queue-autoscale");

/// The trace lines (`t_ms workers queue_len`) among what the server printed on stdout.
fn trace(server: &Server) -> Vec<[u64; 3]> {
    server
        .stdout_lines()
        .iter()
        .filter_map(|line| {
            let numbers: Vec<u64> = line
                .split(' ')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            <[u64; 3]>::try_from(numbers).ok()
        })
        .collect()
}

/// Polls `/stats` until `done` says yes or `within` passes; the last figures seen.
fn stats_until(
    server: &Server,
    within: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_for(within, || Some(server.get("/stats").json()).filter(&done))
        .unwrap_or_else(|| server.get("/stats").json())
}

/// The course's scenario: a burst of slow requests fills the queue past 80 %, workers are
/// added (and the queue never holds more than its ten slots); once the burst is over the queue
/// stays calm and the workers leave one by one until only the first is left.
#[test]
fn a_burst_grows_the_workers_then_they_shrink_back_to_one() {
    let server = Server::start(BIN, &["--shrink-after-ms", "100"]);
    let burst = concurrent_gets(server.addr(), "/sleep?ms=300", 40);
    assert_eq!(burst.count_status(200), 40, "{:?}", burst.failures());

    let stats = server.get("/stats").json();
    let peak = stats["peak_workers"].as_u64().unwrap_or(0);
    assert!(peak > 1, "the burst added workers: {stats}");
    assert_eq!(stats["queue_capacity"].as_u64(), Some(10), "{stats}");
    assert!(
        stats["peak_queue_len"]
            .as_u64()
            .is_some_and(|len| len <= 10),
        "the queue never held more than its capacity: {stats}"
    );

    // One worker leaves per 100 ms of calm: `peak` workers are gone in about peak × 0.1 s.
    let within = Duration::from_millis(100 * peak + 5000);
    let stats = stats_until(&server, within, |stats| stats["workers"] == 1);
    assert_eq!(stats["workers"].as_u64(), Some(1), "{stats}");
    assert_eq!(stats["grown"], stats["shrunk"], "{stats}");

    // The trace: a start line, then one line per worker added or let go.
    let events = 1 + stats["grown"].as_u64().unwrap_or(0) * 2;
    let trace = wait_for(Duration::from_secs(2), || {
        Some(trace(&server)).filter(|trace| trace.len() as u64 >= events)
    })
    .unwrap_or_else(|| trace(&server));
    assert_eq!(trace.len() as u64, events, "{trace:?}");
    assert_eq!(
        trace[0][1..],
        [1, 0],
        "starts with one worker, nothing queued"
    );
    assert!(
        trace
            .iter()
            .all(|&[_, workers, len]| workers >= 1 && len <= 10)
    );
    assert_eq!(
        trace.iter().map(|line| line[1]).max(),
        Some(peak),
        "{trace:?}"
    );
    assert!(
        trace.windows(2).all(|pair| pair[0][0] <= pair[1][0]),
        "t_ms never goes back: {trace:?}"
    );
}

/// The ceiling: 300 slow requests at once never make more than 100 workers (the process never
/// has more than 100 workers + the main thread + the shutdown watcher), and every request is
/// answered.
#[test]
fn a_burst_of_300_never_exceeds_100_workers_and_loses_nothing() {
    let server = Server::start(BIN, &["--quiet", "--shrink-after-ms", "200"]);
    let (pid, stop) = (server.pid(), Arc::new(AtomicBool::new(false)));
    let sampler = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut most = 0;
            while !stop.load(Ordering::Relaxed) {
                most = most.max(procfs::thread_count(pid).unwrap_or(0));
                thread::sleep(Duration::from_millis(5));
            }
            most
        })
    };
    let burst = concurrent_gets(server.addr(), "/sleep?ms=500", 300);
    stop.store(true, Ordering::Relaxed);
    let most_threads = sampler.join().expect("sampler");

    assert_eq!(burst.count_status(200), 300, "{:?}", burst.failures());
    let stats = server.get("/stats").json();
    let peak = stats["peak_workers"].as_u64().unwrap_or(0);
    assert!(
        (2..=100).contains(&peak),
        "grew, within the ceiling: {stats}"
    );
    if tools::has_procfs("a_burst_of_300_never_exceeds_100_workers_and_loses_nothing") {
        assert!(most_threads <= 102, "{most_threads} threads");
    }
}

/// "Round-robin" in the course means: whichever worker is free takes the oldest connection.
/// With one worker, connections are answered exactly in the order they arrived.
#[test]
fn connections_are_served_in_arrival_order() {
    let server = Server::start(BIN, &["--quiet", "--max-workers", "1"]);
    let (done, order) = mpsc::channel();
    let mut clients = Vec::new();
    for index in 0..4 {
        // 100 ms apart at the server: far more than the time to pass an answer on below.
        let path = if index == 0 {
            "/sleep?ms=300"
        } else {
            "/sleep?ms=100"
        };
        let response = get_in_background(server.addr(), path);
        let done = done.clone();
        clients.push(thread::spawn(move || {
            let ok = response
                .recv()
                .is_ok_and(|r| r.is_ok_and(|r| r.status == 200));
            let _ = done.send((index, ok));
        }));
    }
    let answered: Vec<(usize, bool)> = (0..4)
        .map(|_| order.recv_timeout(Duration::from_secs(10)).expect("answer"))
        .collect();
    assert_eq!(answered, [(0, true), (1, true), (2, true), (3, true)]);
}

/// The C original's workers spun on the queue's length. Here waiting costs nothing: four idle
/// workers, and then an acceptor waiting for room in a full queue, use (almost) no CPU.
#[test]
fn waiting_workers_and_a_waiting_acceptor_use_no_cpu() {
    if !tools::has_procfs("waiting_workers_and_a_waiting_acceptor_use_no_cpu") {
        return;
    }
    let cpu_over_a_second = |server: &Server| {
        let before = procfs::cpu_time(server.pid()).expect("cpu time");
        thread::sleep(Duration::from_secs(1));
        procfs::cpu_time(server.pid()).expect("cpu time") - before
    };

    let idle = Server::start(BIN, &["--quiet", "--min-workers", "4"]);
    thread::sleep(Duration::from_millis(100));
    let used = cpu_over_a_second(&idle);
    assert!(used < Duration::from_millis(100), "idle used {used:?}");

    let full = Server::start(
        BIN,
        &["--quiet", "--max-workers", "1", "--queue-capacity", "2"],
    );
    // One request in flight, two queued, one more accepted and waiting for room.
    let _waiting: Vec<_> = (0..4)
        .map(|_| get_in_background(full.addr(), "/sleep?ms=2000"))
        .collect();
    thread::sleep(Duration::from_millis(200));
    let used = cpu_over_a_second(&full);
    assert!(used < Duration::from_millis(100), "waiting used {used:?}");
}

/// The step's limit, measured: a keep-alive client that stays connected holds the only worker,
/// and the next client waits in the queue until the idle timeout ends that connection. One
/// waiting connection is 10 % of the queue: not enough for the scaler to add a worker.
#[test]
fn a_keep_alive_client_holds_its_worker_until_the_idle_timeout() {
    let server = Server::start(BIN, &["--quiet", "--idle-timeout-ms", "800"]);
    let stats = stats_behind_idle_clients(server.addr(), 1, Duration::from_millis(800));
    assert_eq!(stats["grown"].as_u64(), Some(0), "{stats}");
}

/// SIGTERM with a full queue: the request in flight and every queued one are answered (with
/// `Connection: close`); the connection the acceptor was holding for lack of room gets a 503;
/// the server exits 0.
#[test]
fn sigterm_with_a_full_queue_answers_every_queued_connection() {
    let mut server = Server::start(
        BIN,
        &["--quiet", "--max-workers", "1", "--queue-capacity", "4"],
    );
    let in_flight = get_in_background(server.addr(), "/sleep?ms=600");
    thread::sleep(Duration::from_millis(100));
    let queued: Vec<_> = (0..5)
        .map(|_| {
            let response = get_in_background(server.addr(), "/sleep?ms=50");
            thread::sleep(Duration::from_millis(20));
            response
        })
        .collect();
    thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    server.signal(Signal::SIGTERM);

    let mut statuses = Vec::new();
    for response in std::iter::once(in_flight).chain(queued) {
        let response = response
            .recv_timeout(Duration::from_secs(10))
            .expect("client thread")
            .expect("an answer, not a reset");
        assert_eq!(response.header("connection"), Some("close"));
        statuses.push(response.status);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 503]);
    let status = server.wait_exit(Duration::from_secs(5));
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    assert!(started.elapsed() < Duration::from_secs(4));
    server.assert_no_panic();
}

/// When the grace period ends before the queue is drained, what is still queued is refused
/// with a 503 rather than dropped, and the server exits 0 on time.
#[test]
fn the_grace_period_ends_a_full_queue_with_503s() {
    let mut server = Server::start(
        BIN,
        &[
            "--quiet",
            "--max-workers",
            "1",
            "--queue-capacity",
            "3",
            "--grace-ms",
            "300",
        ],
    );
    let _in_flight = get_in_background(server.addr(), "/sleep?ms=5000");
    thread::sleep(Duration::from_millis(100));
    let queued: Vec<_> = (0..3)
        .map(|_| get_in_background(server.addr(), "/sleep?ms=10"))
        .collect();
    thread::sleep(Duration::from_millis(150));
    let started = Instant::now();
    server.signal(Signal::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(5));
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    assert!(started.elapsed() < Duration::from_secs(2));
    for response in queued {
        let response = response
            .recv_timeout(Duration::from_secs(5))
            .expect("client thread")
            .expect("an answer, not a reset");
        assert_eq!(response.status, 503);
    }
}
