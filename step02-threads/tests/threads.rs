//! Step 02's own experiments: a thread per connection serves slow clients side by side,
//! `/stats` counts the threads, the cap holds, no thread outlives its connection, and SIGTERM
//! lets the request in flight finish.

use std::thread;
use std::time::Duration;

use testkit::load::{concurrent_gets, sleepers};
use testkit::{Server, procfs, tools, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_step02-threads");

/// The course's experiment: 20 clients each asking for a one-second answer take about one
/// second, not twenty.
#[test]
fn twenty_slow_requests_take_about_one() {
    let server = Server::start(BIN, &["--quiet"]);
    let wall = sleepers(server.addr(), 1000, 20);
    assert!(wall < Duration::from_millis(2500), "took {wall:?}");
}

/// While five slow requests are in flight, `/stats` sees their threads (and its own).
#[test]
fn stats_counts_live_threads_and_connections() {
    let server = Server::start(BIN, &["--quiet"]);
    let addr = server.addr();
    let slow = thread::spawn(move || concurrent_gets(addr, "/sleep?ms=2000", 5));
    // The five connect one by one, and each earlier /stats thread ends a moment after its
    // answer: ask until all five are in (`connections` counts every connection accepted, this
    // one too) and their threads are the only others (within the slow requests' two seconds).
    let mut asked = 0;
    let stats = wait_for(Duration::from_millis(1500), || {
        asked += 1;
        let stats = server.get("/stats").json();
        (stats["threads"] == 6 && stats["connections"] == 5 + asked).then_some(stats)
    });
    assert!(
        stats.is_some(),
        "never 5 + 1 threads: {}",
        server.get("/stats").json()
    );
    assert_eq!(slow.join().expect("clients").count_status(200), 5);
    // A slow request's thread ends a moment after its client has the answer: the connection
    // is closed (and its close lingers) after the last byte is sent. So ask again for a while.
    let stats = wait_for(Duration::from_secs(5), || {
        asked += 1;
        let stats = server.get("/stats").json();
        (stats["threads"] == 1).then_some(stats)
    });
    let stats = stats.unwrap_or_else(|| panic!("threads left: {}", server.get("/stats").json()));
    // Served before this answer: the five slow requests and every /stats asked before it.
    assert_eq!(stats["served"].as_u64(), Some(5 + asked - 1), "{stats}");
}

/// At `--max-threads 2` the third client waits for a thread to end: six requests of 300 ms
/// take three rounds, and all are answered.
#[test]
fn max_threads_caps_the_threads() {
    let server = Server::start(BIN, &["--quiet", "--max-threads", "2"]);
    let wall = sleepers(server.addr(), 300, 6);
    assert!(wall > Duration::from_millis(850), "took only {wall:?}");
}

/// Connection threads end with their connections: after 100 connections the process is back
/// to its one main thread.
#[test]
fn no_thread_outlives_its_connection() {
    if !tools::has_procfs("no_thread_outlives_its_connection") {
        return;
    }
    let server = Server::start(BIN, &["--quiet"]);
    for _ in 0..5 {
        assert_eq!(
            concurrent_gets(server.addr(), "/", 20).count_status(200),
            20
        );
    }
    let threads = || procfs::thread_count(server.pid());
    let back_to_one = wait_for(Duration::from_secs(5), || {
        (threads() == Some(1)).then_some(())
    });
    assert!(back_to_one.is_some(), "threads: {:?}", threads());
}

/// SIGTERM while a request is in flight: it is answered in full, then the server exits 0.
#[test]
fn sigterm_lets_the_request_in_flight_finish() {
    testkit::shutdown::sigterm_lets_the_request_in_flight_finish(BIN);
}

/// A shutdown that outlasts the grace period still ends, with exit status 0.
#[test]
fn the_grace_period_bounds_the_shutdown() {
    testkit::shutdown::the_grace_period_bounds_the_shutdown(BIN);
}
