//! The shutdown experiments that steps run alike: a request in flight when `SIGTERM` arrives
//! is answered in full, and the grace period bounds a shutdown that would wait too long.
//! Steps whose shutdown has more to show (step01's children, the queue and pool of steps 03
//! and 04, step06's workers) write their own.

use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::{Client, Server};

/// `SIGTERM` while a one-second request is in flight: it is answered in full with
/// `Connection: close`, then the server exits 0, well before a second request could have
/// been served after it.
///
/// # Panics
///
/// When the server does any of this otherwise.
pub fn sigterm_lets_the_request_in_flight_finish(bin: &str) {
    let mut server = Server::start(bin, &["--quiet"]);
    let addr = server.addr();
    // Connected here, before the signal: a client thread that a busy machine starts late would
    // find the listener already closed.
    let mut client = Client::connect(addr);
    let in_flight = thread::spawn(move || client.get("/sleep?ms=1000"));
    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    server.signal(Signal::SIGTERM);
    let response = in_flight.join().expect("client thread");
    assert_eq!(
        (response.status, response.text().as_str()),
        (200, "slept 1000 ms\n")
    );
    assert_eq!(response.header("connection"), Some("close"));
    let status = server.wait_exit(Duration::from_secs(5));
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// `--grace-ms 300`, then `SIGTERM` while a 5 s request is in flight and another client has
/// connected without sending anything: the server still exits 0 within 2 s, cutting the long
/// request off.
///
/// # Panics
///
/// When the server does any of this otherwise.
pub fn the_grace_period_bounds_the_shutdown(bin: &str) {
    let mut server = Server::start(bin, &["--quiet", "--grace-ms", "300"]);
    let addr = server.addr();
    let _stuck = thread::spawn(move || Client::connect(addr).try_read_response(false).ok());
    let in_flight = thread::spawn(move || {
        let mut client = Client::connect(addr);
        client.send(b"GET /sleep?ms=5000 HTTP/1.1\r\nHost: t\r\n\r\n");
        client.try_read_response(false).ok()
    });
    thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    server.signal(Signal::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(5));
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(
        in_flight.join().expect("client").is_none(),
        "the 5 s request was cut off"
    );
}
