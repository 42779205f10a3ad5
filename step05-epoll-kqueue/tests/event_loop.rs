//! Step 05's own experiments: one thread answers a thousand slow requests at once; a blocking
//! call inside the loop stalls everyone; slow or stuck clients do not hold the others up; the
//! connection limit, a shortage of descriptors and SIGTERM are handled without spinning or
//! dropping a request in flight.

use std::io::{ErrorKind, Write};
use std::thread;
use std::time::{Duration, Instant};

use nix::libc::rlim_t;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use testkit::load::sleepers;
use testkit::{Client, Server, procfs, tools, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_step05-epoll-kqueue");

/// Makes sure this test process may hold `wanted` descriptors (its clients' sockets).
fn allow_open_files(wanted: rlim_t) {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft < wanted {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, wanted.min(hard), hard);
    }
}

/// The step's point: a thousand clients each wait a second for their answer, and one thread
/// answers them all in about one second, because each wait is a timer, not a sleep.
#[test]
fn a_thousand_slow_requests_take_about_a_second_on_one_thread() {
    allow_open_files(4096);
    let server = Server::start(BIN, &["--quiet"]);
    let pid = server.pid();
    let watcher = thread::spawn(move || {
        let mut most = 0;
        let deadline = Instant::now() + Duration::from_millis(2500);
        while Instant::now() < deadline {
            most = most.max(procfs::thread_count(pid).unwrap_or(0));
            thread::sleep(Duration::from_millis(20));
        }
        most
    });
    let wall = sleepers(server.addr(), 1000, 1000);
    assert!(wall < Duration::from_secs(3), "took {wall:?}");
    let threads = watcher.join().unwrap_or(0);
    if tools::has_procfs("a_thousand_slow_requests_take_about_a_second_on_one_thread") {
        assert_eq!(threads, 1, "the server had {threads} threads");
    }
}

/// With `--blocking-sleep`, `/sleep` sleeps inside the loop: five requests of 300 ms are
/// answered one after the other, 1.5 s in all.
#[test]
fn a_blocking_call_in_the_loop_stalls_everyone() {
    let server = Server::start(BIN, &["--quiet", "--blocking-sleep"]);
    let wall = sleepers(server.addr(), 300, 5);
    assert!(wall > Duration::from_millis(1400), "took only {wall:?}");
}

/// A client that sends half a head and stops gets 408 after the header timeout; meanwhile
/// another client is served as if nothing happened.
#[test]
fn a_slow_head_gets_408_while_others_are_served() {
    let server = Server::start(BIN, &["--quiet", "--header-timeout-ms", "2000"]);
    let mut slow = Client::connect(server.addr());
    let started = Instant::now();
    slow.send(b"GET / HTTP/1.1\r\nHost: t\r\n");

    let mut other = Client::connect(server.addr());
    for _ in 0..20 {
        assert_eq!(other.get("/").status, 200);
    }
    let others_took = started.elapsed();
    assert!(others_took < Duration::from_secs(1), "took {others_took:?}");

    let response = slow.read_response();
    let waited = started.elapsed();
    assert_eq!(response.status, 408);
    assert!(
        waited >= Duration::from_millis(1900),
        "408 came early: {waited:?}"
    );
    assert!(slow.closes_within(Duration::from_secs(5)));
}

/// A client pipelines requests without end and never reads an answer. The server stops reading
/// from it once its answers fill the socket, so it neither blocks other clients nor piles up
/// answers in memory.
#[test]
fn a_client_that_never_reads_does_not_block_others() {
    let server = Server::start(BIN, &["--quiet"]);
    let hog = Client::connect(server.addr());
    hog.stream()
        .set_nonblocking(true)
        .expect("non-blocking client");
    let request: Vec<u8> = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n".repeat(1000);
    let mut sent = 0usize;
    let mut last_progress = Instant::now();
    // Until both directions are full: the server no longer reads, we can no longer write.
    while last_progress.elapsed() < Duration::from_millis(300) && sent < 64 << 20 {
        let mut stream = hog.stream();
        match stream.write(&request) {
            Ok(written) => {
                sent += written;
                last_progress = Instant::now();
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(error) => panic!("the server dropped the client: {error}"),
        }
    }
    assert!(sent < 64 << 20, "the server read {sent} bytes of requests");

    let started = Instant::now();
    let mut other = Client::connect(server.addr());
    for _ in 0..20 {
        assert_eq!(other.get("/").status, 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    if tools::has_procfs("a_client_that_never_reads_does_not_block_others: its memory") {
        let rss = procfs::rss_kib(server.pid()).expect("/proc");
        assert!(rss < 48 * 1024, "server RSS {rss} KiB after {sent} bytes");
    }
    drop(hog);
}

/// `/stats` reports the loop's figures: connections open now, timers, accepted, iterations.
#[test]
fn stats_counts_connections_and_timers() {
    let server = Server::start(BIN, &["--quiet"]);
    let mut idle: Vec<Client> = (0..3).map(|_| Client::connect(server.addr())).collect();
    for client in &mut idle {
        assert_eq!(client.get("/").status, 200);
    }
    let stats = server.get("/stats").json();
    assert_eq!(stats["connections"].as_u64(), Some(4), "{stats}");
    assert_eq!(stats["accepted"].as_u64(), Some(4), "{stats}");
    assert!(stats["timers"].as_u64().is_some_and(|t| t >= 3), "{stats}");
    assert!(
        stats["loop_iterations"].as_u64().is_some_and(|n| n > 0),
        "{stats}"
    );
    assert_eq!(stats["served"].as_u64(), Some(3), "{stats}");

    drop(idle);
    let stats = wait_for(Duration::from_secs(5), || {
        Some(server.get("/stats").json()).filter(|stats| stats["connections"] == 1)
    });
    let stats = stats.unwrap_or_else(|| panic!("{}", server.get("/stats").json()));
    assert!(
        stats["accepted"].as_u64().is_some_and(|n| n >= 5),
        "{stats}"
    );
}

/// Linux defers accepts (`TCP_DEFER_ACCEPT`): clients that connected but have said nothing
/// wait in the kernel, not in the loop. They queued before the `/stats` client, and a loop that
/// took them would have accepted them first; it accepted only the one that spoke. Once a silent
/// one speaks, it is served.
#[test]
fn a_silent_client_waits_in_the_kernel() {
    if !cfg!(target_os = "linux") {
        eprintln!("skipped: a_silent_client_waits_in_the_kernel: deferred accepts are Linux's");
        return;
    }
    let server = Server::start(BIN, &["--quiet"]);
    // The loop defers accepts as it starts, just after the `listening on` line: once it has
    // answered a first request, it has.
    assert_eq!(server.get("/").status, 200);
    let mut silent: Vec<Client> = (0..3).map(|_| Client::connect(server.addr())).collect();
    let stats = server.get("/stats").json();
    assert_eq!(stats["accepted"].as_u64(), Some(2), "{stats}");
    assert_eq!(silent[0].get("/").status, 200);
}

/// At `--max-connections 2` a third client waits, unanswered, until one of the two leaves.
#[test]
fn max_connections_holds_the_next_client_back() {
    let server = Server::start(BIN, &["--quiet", "--max-connections", "2"]);
    let mut first = Client::connect(server.addr());
    let mut second = Client::connect(server.addr());
    assert_eq!(first.get("/").status, 200);
    assert_eq!(second.get("/").status, 200);

    let mut third = Client::connect(server.addr());
    third.send(b"GET /stats HTTP/1.1\r\nHost: t\r\n\r\n");
    let _ = third
        .stream()
        .set_read_timeout(Some(Duration::from_millis(500)));
    assert!(
        third.try_read_response(false).is_err(),
        "answered over the limit"
    );

    drop(first);
    let _ = third
        .stream()
        .set_read_timeout(Some(Duration::from_secs(5)));
    let stats = third.read_response().json();
    assert_eq!(stats["connections"].as_u64(), Some(2), "{stats}");
}

/// Out of descriptors (`EMFILE`), the loop pauses accepting instead of spinning on the
/// listener, and serves the clients waiting in the backlog once descriptors are free again.
#[test]
fn running_out_of_descriptors_pauses_accepting() {
    if !tools::has_procfs("running_out_of_descriptors_pauses_accepting") {
        return;
    }
    let server = Server::start(BIN, &["--quiet", "--max-open-files", "32"]);
    let mut clients: Vec<Client> = (0..40).map(|_| Client::connect(server.addr())).collect();
    for client in &mut clients {
        client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    thread::sleep(Duration::from_millis(300));

    let cpu_time = || procfs::cpu_time(server.pid()).expect("/proc");
    let cpu_before = cpu_time();
    thread::sleep(Duration::from_secs(1));
    let cpu = cpu_time() - cpu_before;
    assert!(
        cpu < Duration::from_millis(300),
        "spinning: {cpu:?} of CPU in 1 s"
    );

    let (answered, waiting) = split_answered(clients);
    assert!(
        !answered.is_empty() && !waiting.is_empty(),
        "{} answered, {} waiting",
        answered.len(),
        waiting.len()
    );
    drop(answered);
    for mut client in waiting {
        let _ = client
            .stream()
            .set_read_timeout(Some(Duration::from_secs(5)));
        assert_eq!(client.read_response().status, 200);
    }
    server.assert_no_panic();
}

/// Splits clients into those that got their answer within a moment and those still waiting.
fn split_answered(clients: Vec<Client>) -> (Vec<Client>, Vec<Client>) {
    clients.into_iter().partition(|client| {
        let _ = client
            .stream()
            .set_read_timeout(Some(Duration::from_millis(50)));
        let mut first_byte = [0u8; 1];
        client
            .stream()
            .peek(&mut first_byte)
            .is_ok_and(|read| read > 0)
    })
}

/// SIGTERM while a request is in flight: it is answered in full with `Connection: close`,
/// then the server exits 0.
#[test]
fn sigterm_lets_the_request_in_flight_finish() {
    testkit::shutdown::sigterm_lets_the_request_in_flight_finish(BIN);
}

/// A shutdown that outlasts the grace period still ends, with exit status 0.
#[test]
fn the_grace_period_bounds_the_shutdown() {
    testkit::shutdown::the_grace_period_bounds_the_shutdown(BIN);
}
