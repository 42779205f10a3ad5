//! Step 01's own experiments: a process per connection serves slow clients side by side, the
//! iterative server one after the other; children are reaped and capped; SIGTERM lets the
//! request in flight finish.

use std::collections::HashSet;
use std::thread;
use std::time::Duration;

use nix::sys::signal::Signal;
use testkit::load::{concurrent_gets, sleepers};
use testkit::{Client, Server, procfs, tools, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_step01-fork");

/// The course's experiment: 20 clients each asking for a one-second answer. A process per
/// connection answers them all in about one second.
#[test]
fn twenty_slow_requests_take_about_one_when_forking() {
    let server = Server::start(BIN, &["--quiet"]);
    let wall = sleepers(server.addr(), 1000, 20);
    assert!(wall < Duration::from_millis(2500), "took {wall:?}");
}

/// The server the course started from answers one connection at a time: five requests of
/// 300 ms take five times as long.
#[test]
fn the_iterative_server_answers_one_at_a_time() {
    let server = Server::start(BIN, &["--quiet", "--iterative"]);
    let wall = sleepers(server.addr(), 300, 5);
    assert!(wall > Duration::from_millis(1400), "took only {wall:?}");
}

/// Every connection is served by a child of its own: ten connections, ten pids, one parent.
#[test]
fn each_connection_has_its_own_process() {
    let server = Server::start(BIN, &["--quiet", "--delay-ms", "200"]);
    let burst = concurrent_gets(server.addr(), "/stats", 10);
    let mut pids = HashSet::new();
    for response in burst.responses.iter().flatten() {
        let stats = response.json();
        assert_eq!(stats["mode"], "fork");
        assert_eq!(stats["parent_pid"].as_u64(), Some(u64::from(server.pid())));
        assert!(stats["children"].as_u64().is_some_and(|n| n >= 1));
        pids.insert(stats["pid"].as_u64());
    }
    assert_eq!(pids.len(), 10, "{pids:?}");
    assert!(
        !pids.contains(&Some(u64::from(server.pid()))),
        "the parent serves nobody"
    );
}

/// Every child is reaped as it exits: after 200 connections no zombie is left.
#[test]
fn no_zombie_after_200_connections() {
    if !tools::has_procfs("no_zombie_after_200_connections") {
        return;
    }
    let server = Server::start(BIN, &["--quiet"]);
    for _ in 0..10 {
        let burst = concurrent_gets(server.addr(), "/", 20);
        assert_eq!(burst.count_status(200), 20, "{:?}", burst.failures());
    }
    let children = || procfs::children_of(server.pid()).expect("/proc");
    let reaped = wait_for(Duration::from_secs(5), || {
        children().is_empty().then_some(())
    });
    assert!(reaped.is_some(), "children left behind: {:?}", children());
}

/// At `--max-children 2` the third client waits for a child to exit: six requests of 300 ms
/// take three rounds, and never more than two children live at once.
#[test]
fn max_children_caps_the_forks() {
    let server = Server::start(BIN, &["--quiet", "--max-children", "2"]);
    let pid = server.pid();
    let count_children = tools::has_procfs("max_children_caps_the_forks: the children counted");
    let watcher = thread::spawn(move || {
        let mut most = 0;
        for _ in 0..60 {
            if let Some(children) = procfs::children_of(pid).filter(|_| count_children) {
                most = most.max(children.len());
            }
            thread::sleep(Duration::from_millis(20));
        }
        most
    });
    let wall = sleepers(server.addr(), 300, 6);
    assert!(wall > Duration::from_millis(850), "took only {wall:?}");
    let most = watcher.join().unwrap_or(usize::MAX);
    assert!(most <= 2, "{most} children at once");
}

/// SIGTERM while a request is in flight: it is answered in full, then the parent exits 0 and
/// leaves no child behind.
#[test]
fn sigterm_lets_the_request_in_flight_finish() {
    let mut server = Server::start(BIN, &["--quiet"]);
    let addr = server.addr();
    let in_flight = thread::spawn(move || {
        let mut client = Client::connect(addr);
        client.get("/sleep?ms=1000")
    });
    // Wait until the child serving it exists (off Linux, give it a moment).
    let child = if tools::has_procfs("sigterm_lets_the_request_in_flight_finish: the child") {
        let first_child = || procfs::children_of(server.pid())?.first().map(|c| c.pid);
        Some(wait_for(Duration::from_secs(5), first_child).expect("no child serving"))
    } else {
        thread::sleep(Duration::from_millis(300));
        None
    };
    server.signal(Signal::SIGTERM);
    let response = in_flight.join().expect("client thread");
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "slept 1000 ms\n");
    assert_eq!(response.header("connection"), Some("close"));
    let status = server.wait_exit(Duration::from_secs(5));
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    if let Some(child) = child {
        let gone = wait_for(Duration::from_secs(2), || {
            (!procfs::exists(child)).then_some(())
        });
        assert!(gone.is_some(), "child {child} outlived the server");
    }
}
