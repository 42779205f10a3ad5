//! Many requests at once, for the tests that prove concurrency by timing ratios, and a steady
//! stream of requests, for the tests that kill, reload or stop a server under load.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::client::{Client, Response};

/// The outcome of [`concurrent_gets`].
pub struct Burst {
    /// From the moment all clients were released until the last response arrived.
    pub wall: Duration,
    pub responses: Vec<Result<Response, String>>,
}

impl Burst {
    /// How many requests got status `status`.
    pub fn count_status(&self, status: u16) -> usize {
        self.responses
            .iter()
            .filter(|r| r.as_ref().is_ok_and(|r| r.status == status))
            .count()
    }

    /// The failures, for assertion messages.
    pub fn failures(&self) -> Vec<&String> {
        self.responses
            .iter()
            .filter_map(|r| r.as_ref().err())
            .collect()
    }
}

/// The chapters' timing experiment: `n` requests for `/sleep?ms={ms}` at the same moment, each
/// on its own connection; returns how long they took in all. A test compares that wall time
/// with one request's `ms`: about the same when they are served side by side, `n` times more
/// when one at a time.
///
/// # Panics
///
/// When any request is not answered `200` (the failures are in the message).
pub fn sleepers(addr: SocketAddr, ms: u64, n: usize) -> Duration {
    let burst = concurrent_gets(addr, &format!("/sleep?ms={ms}"), n);
    assert_eq!(burst.count_status(200), n, "{:?}", burst.failures());
    burst.wall
}

/// The blocking steps' limit, measured: `holders` keep-alive clients each get an answer and
/// stay connected, idle; then `/stats` is asked on a new connection. When the idle clients
/// hold every worker, that request waits until the idle timeout (`idle`) closes one. Returns
/// the `/stats` JSON once checked that it waited most of `idle` (and not 5 s).
///
/// # Panics
///
/// When `/stats` came much sooner than `idle`, or too late.
pub fn stats_behind_idle_clients(
    addr: SocketAddr,
    holders: usize,
    idle: Duration,
) -> serde_json::Value {
    let mut clients: Vec<Client> = (0..holders).map(|_| Client::connect(addr)).collect();
    for client in &mut clients {
        assert_eq!(client.get("/").status, 200);
    }
    let started = Instant::now();
    let stats = crate::client::get(addr, "/stats").json();
    let waited = started.elapsed();
    assert!(
        waited >= idle * 3 / 4,
        "answered after {waited:?}, before the idle timeout ({idle:?})"
    );
    assert!(waited < Duration::from_secs(5), "took {waited:?}");
    stats
}

/// Sends `n` `GET path` requests at the same moment, each on its own connection
/// (`Connection: close`), and waits for all answers.
pub fn concurrent_gets(addr: SocketAddr, path: &str, n: usize) -> Burst {
    let start = Arc::new(Barrier::new(n + 1));
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (start, request) = (Arc::clone(&start), request.clone());
            thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || {
                    start.wait();
                    let mut client = Client::connect(addr);
                    client.send(request.as_bytes());
                    client
                        .try_read_response(false)
                        .map_err(|error| error.to_string())
                })
                .unwrap_or_else(|error| panic!("cannot start a client thread: {error}"))
        })
        .collect();
    start.wait();
    let started = Instant::now();
    let responses = handles
        .into_iter()
        .map(|handle| {
            handle
                .join()
                .unwrap_or_else(|_| Err("client thread panicked".into()))
        })
        .collect();
    Burst {
        wall: started.elapsed(),
        responses,
    }
}

/// Connects and sends one `GET path` now, so that connections arrive in the order of the
/// calls; the response (or the error) is read on a thread of its own and arrives on the
/// returned channel.
pub fn get_in_background(
    addr: SocketAddr,
    path: &str,
) -> mpsc::Receiver<std::io::Result<Response>> {
    let mut client = Client::connect(addr);
    client.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes());
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let _ = sender.send(client.try_read_response(false));
    });
    receiver
}

/// `clients` threads that each send `GET path` on a new connection, wait for the answer, pause,
/// and again, until [`SteadyLoad::stop`]: a steady stream of short requests, which a test
/// keeps up while it kills, reloads or stops the server, then counts what failed.
pub struct SteadyLoad {
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<LoadReport>>,
}

/// What a [`SteadyLoad`] saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Requests answered 200.
    pub ok: usize,
    /// Every other outcome (a refused or reset connection, a timeout, another status), with
    /// the time since the load started.
    pub failures: Vec<String>,
    /// For the 200s: how many carried each value of the header the load was asked to watch
    /// (step 06's `X-Worker`).
    pub by_header: BTreeMap<String, usize>,
}

impl SteadyLoad {
    /// Starts the clients. `watch`: a response header to count the values of.
    pub fn start(
        addr: SocketAddr,
        path: &str,
        clients: usize,
        pause: Duration,
        watch: Option<&'static str>,
    ) -> SteadyLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        let started = Instant::now();
        let clients = (0..clients)
            .map(|_| {
                let (stop, request) = (Arc::clone(&stop), request.clone());
                thread::Builder::new()
                    .stack_size(128 * 1024)
                    .spawn(move || {
                        let mut report = LoadReport::default();
                        while !stop.load(Ordering::Relaxed) {
                            match one_request(addr, &request) {
                                Ok(response) if response.status == 200 => {
                                    report.ok += 1;
                                    if let Some(value) =
                                        watch.and_then(|name| response.header(name))
                                    {
                                        *report.by_header.entry(value.to_string()).or_default() +=
                                            1;
                                    }
                                }
                                Ok(response) => report.failures.push(format!(
                                    "{:.3} s: status {}",
                                    started.elapsed().as_secs_f64(),
                                    response.status
                                )),
                                Err(error) => report.failures.push(format!(
                                    "{:.3} s: {error}",
                                    started.elapsed().as_secs_f64()
                                )),
                            }
                            thread::sleep(pause);
                        }
                        report
                    })
                    .unwrap_or_else(|error| panic!("cannot start a client thread: {error}"))
            })
            .collect();
        SteadyLoad { stop, clients }
    }

    /// Stops the clients (each finishes its request in flight) and adds up what they saw.
    pub fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = LoadReport::default();
        for client in self.clients {
            let report = client.join().unwrap_or_else(|_| LoadReport {
                failures: vec!["client thread panicked".into()],
                ..LoadReport::default()
            });
            total.ok += report.ok;
            total.failures.extend(report.failures);
            for (value, count) in report.by_header {
                *total.by_header.entry(value).or_default() += count;
            }
        }
        total
    }
}

fn one_request(addr: SocketAddr, request: &str) -> std::io::Result<Response> {
    let mut client = Client::try_connect(addr)?;
    // A short request: an answer that takes seconds is a failure, and the test must not hang.
    client
        .stream()
        .set_read_timeout(Some(Duration::from_secs(5)))?;
    client.stream().write_all(request.as_bytes())?;
    client.try_read_response(false)
}
