//! Step 04's own experiments: W workers serve N slow requests in ⌈N/W⌉ rounds, `/stats`
//! counts workers and busy ones, the default size follows the cores, a keep-alive client holds
//! a worker (the step's limit), and SIGTERM runs the queued connections before exiting.

use std::thread;
use std::time::Duration;

use nix::sys::signal::Signal;
use testkit::load::{get_in_background, sleepers, stats_behind_idle_clients};
use testkit::server::run_to_exit;
use testkit::{Server, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_step04-threadpool");

/// Eight requests of 500 ms on four workers take two rounds, about one second: not half a
/// second (that would be eight workers, or no limit) and not four (one at a time).
#[test]
fn eight_slow_requests_on_four_workers_take_two_rounds() {
    let server = Server::start(BIN, &["--quiet", "--workers", "4"]);
    let wall = sleepers(server.addr(), 500, 8);
    assert!(
        wall > Duration::from_millis(900),
        "took only {wall:?}: more than 4 at once"
    );
    assert!(
        wall < Duration::from_millis(1800),
        "took {wall:?}: fewer than 4 at once"
    );
}

/// While two slow requests run on a pool of three, `/stats` (served by the third worker)
/// sees all three busy, nothing queued and three open connections; afterwards only itself.
#[test]
fn stats_counts_workers_busy_and_queued() {
    let server = Server::start(BIN, &["--quiet", "--workers", "3"]);
    let slow: Vec<_> = (0..2)
        .map(|_| get_in_background(server.addr(), "/sleep?ms=2000"))
        .collect();
    // Ask until both slow requests have a worker (within their two seconds).
    let mut asked = 0;
    let stats = wait_for(Duration::from_millis(1500), || {
        asked += 1;
        let stats = server.get("/stats").json();
        (stats["busy"] == 3).then_some(stats)
    });
    let stats = stats.unwrap_or_else(|| panic!("never 3 busy: {}", server.get("/stats").json()));
    assert_eq!(
        (
            stats["workers"].as_u64(),
            stats["queued"].as_u64(),
            stats["connections"].as_u64()
        ),
        (Some(3), Some(0), Some(3)),
        "{stats}"
    );
    for response in slow {
        let response = response
            .recv_timeout(Duration::from_secs(10))
            .expect("client");
        assert_eq!(response.expect("answer").status, 200);
    }
    // A slow request's job ends a moment after its client has the answer: the connection is
    // closed (and its close lingers) after the last byte is sent. So ask again for a while.
    let stats = wait_for(Duration::from_secs(5), || {
        asked += 1;
        let stats = server.get("/stats").json();
        (stats["busy"] == 1).then_some(stats)
    });
    let stats = stats.unwrap_or_else(|| panic!("still busy: {}", server.get("/stats").json()));
    // Served before this answer: the two slow requests and every /stats asked before it.
    assert_eq!(stats["served"].as_u64(), Some(2 + asked - 1), "{stats}");
    assert_eq!(stats["connections"].as_u64(), Some(1), "{stats}");
}

/// Without `--workers`, the pool has four workers per core.
#[test]
fn the_default_pool_has_four_workers_per_core() {
    let cores = thread::available_parallelism().map_or(1, usize::from) as u64;
    let server = Server::start(BIN, &["--quiet"]);
    let stats = server.get("/stats").json();
    assert_eq!(stats["workers"].as_u64(), Some(4 * cores), "{stats}");
}

#[test]
fn zero_workers_is_a_clear_error() {
    let (status, stderr) = run_to_exit(BIN, &["--workers", "0"], Duration::from_secs(10));
    assert_eq!(status.code(), Some(1));
    assert_eq!(stderr.len(), 1, "{stderr:?}");
    assert!(stderr[0].starts_with("error: ") && stderr[0].contains("--workers"));
}

/// The step's limit, measured: two keep-alive clients that stay connected hold both workers,
/// and a third client waits until the idle timeout frees one.
#[test]
fn keep_alive_clients_hold_their_workers_until_the_idle_timeout() {
    let server = Server::start(
        BIN,
        &["--quiet", "--workers", "2", "--idle-timeout-ms", "800"],
    );
    let stats = stats_behind_idle_clients(server.addr(), 2, Duration::from_millis(800));
    assert_eq!(stats["workers"].as_u64(), Some(2), "{stats}");
}

/// SIGTERM while one connection is served and two wait in the channel: dropping the pool runs
/// the queued ones too, so all three are answered, then the server exits 0.
#[test]
fn sigterm_runs_the_queued_connections_then_exits() {
    let mut server = Server::start(BIN, &["--quiet", "--workers", "1"]);
    let in_flight = get_in_background(server.addr(), "/sleep?ms=500");
    thread::sleep(Duration::from_millis(100));
    let queued: Vec<_> = (0..2)
        .map(|_| get_in_background(server.addr(), "/sleep?ms=50"))
        .collect();
    thread::sleep(Duration::from_millis(100));
    server.signal(Signal::SIGTERM);
    for response in std::iter::once(in_flight).chain(queued) {
        let response = response
            .recv_timeout(Duration::from_secs(10))
            .expect("client thread")
            .expect("an answer");
        assert_eq!(
            (response.status, response.header("connection")),
            (200, Some("close"))
        );
    }
    let status = server.wait_exit(Duration::from_secs(5));
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    server.assert_no_panic();
}
