//! Many requests at once, for the tests that prove concurrency by timing ratios.

use std::net::SocketAddr;
use std::sync::{Arc, Barrier, mpsc};
use std::thread;
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
