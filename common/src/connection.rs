//! The blocking connection loop of steps 01–04.
//!
//! One thread (or process) owns one connection: it reads until a request head is complete,
//! reads the body (if any), waits the request's delay, writes the answer, and goes back to
//! reading, until the client or a timeout ends the connection. Each step differs only in *who*
//! runs [`serve_connection`]: a forked child, a new thread, a worker taking connections from a
//! queue or a pool.
//!
//! What the bytes mean (where a head and a body end, what to answer, whether the connection
//! stays open) is [`crate::exchange`]'s part; this loop only waits, the blocking way: one
//! `poll` with a deadline, then one `read`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use crate::exchange::{Exchange, Refusal};
use crate::keep_alive::{After, LINGER};
use crate::parse::parse_head;
use crate::response::Response;
use crate::signals::Signals;
use crate::site::{Reply, Site};
use crate::wait::wait_readable;

/// How much one `read` takes from the socket.
const READ_CHUNK: usize = 8 * 1024;

/// The per-connection settings, from [`crate::CommonArgs::conn_config`].
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// A request head must be complete this long after its first byte (on a new connection:
    /// after the connection opened). Also the longest pause while reading a body, and the
    /// longest a write may block on a client that does not read.
    pub header_timeout: Duration,
    /// How long a keep-alive connection may sit idle between requests.
    pub idle_timeout: Duration,
    /// Print an access log line per request.
    pub log: bool,
}

/// Serves requests on `stream` until the connection ends. Never panics on anything the client
/// does; I/O errors end this connection only.
///
/// The first request's head must be complete within the header timeout; after each answer the
/// connection may wait up to the idle timeout for the next one. During that idle wait a
/// shutdown (see [`Signals`]) closes the connection at once; a request already in flight is
/// answered first, with `Connection: close`.
pub fn serve_connection(stream: TcpStream, site: &Site, config: &ConnConfig, signals: Signals) {
    let Some(mut connection) = Connection::new(stream, config, signals) else {
        return;
    };
    let mut head_deadline = Instant::now() + config.header_timeout;
    while connection.serve_request(site, head_deadline) == Next::KeepAlive {
        if connection.buf.is_empty() {
            let idle_deadline = Instant::now() + config.idle_timeout;
            if connection.wait_and_read(idle_deadline, Watch::Shutdown) != Outcome::Data {
                // Idle too long, client gone, or shutting down: close without an answer.
                return;
            }
        }
        head_deadline = Instant::now() + config.header_timeout;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
}

/// What waiting for more bytes ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Data,
    Closed,
    TimedOut,
    Shutdown,
}

/// Whether a wait also ends when a shutdown is requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watch {
    Shutdown,
    DataOnly,
}

/// Why a request ended without being answered the usual way.
enum Ended {
    /// An error answer, then the connection closes.
    Refused(Refusal),
    /// The client closed (or a shutdown came while waiting for a head): nothing to answer.
    Closed,
}

struct Connection<'c> {
    stream: TcpStream,
    config: &'c ConnConfig,
    signals: Signals,
    /// `ip:port` of the client, for the log (empty when not logging).
    peer: String,
    /// Bytes read but not yet consumed: part of a head, or the next pipelined request.
    buf: Vec<u8>,
    /// The response being written, kept to reuse its allocation.
    out: Vec<u8>,
}

impl<'c> Connection<'c> {
    fn new(stream: TcpStream, config: &'c ConnConfig, signals: Signals) -> Option<Self> {
        // An accepted socket inherits O_NONBLOCK from the listener on BSD and macOS; this loop
        // wants plain blocking reads after `poll` says there is data.
        stream.set_nonblocking(false).ok()?;
        stream.set_write_timeout(Some(config.header_timeout)).ok()?;
        // Small responses go out at once instead of waiting for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let peer = match (config.log, stream.peer_addr()) {
            (true, Ok(address)) => address.to_string(),
            _ => String::new(),
        };
        Some(Connection {
            stream,
            config,
            signals,
            peer,
            buf: Vec::with_capacity(READ_CHUNK),
            out: Vec::with_capacity(1024),
        })
    }

    /// Reads one request (head and body), waits its delay and answers it.
    fn serve_request(&mut self, site: &Site, head_deadline: Instant) -> Next {
        let (exchange, reply) = match self.read_request(site, head_deadline) {
            Ok(request) => request,
            Err(Ended::Refused(refusal)) => return self.refuse(site, refusal),
            Err(Ended::Closed) => return Next::Close,
        };

        // The blocking steps' whole cost model is this line: the thread (or process) is
        // taken for the full delay, whatever else is waiting.
        if !reply.delay.is_zero() {
            std::thread::sleep(reply.delay);
        }

        self.out.clear();
        let after = exchange.answer(
            site,
            &reply.response,
            // A request in flight when a shutdown arrives is answered, then the connection
            // closes.
            self.signals.shutdown_requested(),
            !self.buf.is_empty(),
            &mut self.out,
            &self.peer,
        );
        if self.stream.write_all(&self.out).is_err() {
            return Next::Close;
        }
        self.end_with(after)
    }

    /// Reads a request head, then its body (dropped, so that the next request starts at the
    /// right byte).
    fn read_request(
        &mut self,
        site: &Site,
        head_deadline: Instant,
    ) -> Result<(Exchange, Reply), Ended> {
        let (mut exchange, reply) = loop {
            match parse_head(&self.buf) {
                Ok(Some(head)) => {
                    let reply = site.reply(&head);
                    let exchange = Exchange::new(&head, self.config.log, Instant::now());
                    self.buf.drain(..head.len);
                    break (exchange, reply);
                }
                Ok(None) => self.read_more(head_deadline, Refusal::HeadTimedOut)?,
                Err(error) => return Err(Ended::Refused(Refusal::Head(error))),
            }
        };
        if let Some(interim) = exchange.go_ahead(&self.buf) {
            // The client waits for it before it sends the body.
            self.stream.write_all(interim).map_err(|_| Ended::Closed)?;
        }
        loop {
            let used = exchange.read_body(&self.buf).map_err(Ended::Refused)?;
            self.buf.drain(..used);
            if exchange.body_done() {
                return Ok((exchange, reply));
            }
            // A pause longer than the header timeout ends the request.
            let deadline = Instant::now() + self.config.header_timeout;
            self.read_more(deadline, Refusal::BodyTimedOut)?;
        }
    }

    /// Waits for more of a request: `timed_out` when `deadline` passes first.
    fn read_more(&mut self, deadline: Instant, timed_out: Refusal) -> Result<(), Ended> {
        match self.wait_and_read(deadline, Watch::DataOnly) {
            Outcome::Data => Ok(()),
            Outcome::TimedOut => Err(Ended::Refused(timed_out)),
            Outcome::Closed | Outcome::Shutdown => Err(Ended::Closed),
        }
    }

    /// Carries out what the exchange decided.
    fn end_with(&mut self, after: After) -> Next {
        match after {
            After::KeepAlive => return Next::KeepAlive,
            // A client that says `Connection: close` and then sends more is still sending.
            After::Close
                if self.wait_and_read(Instant::now(), Watch::DataOnly) != Outcome::Data => {}
            After::Close | After::Linger => self.linger_and_close(),
        }
        Next::Close
    }

    /// Answers an error and closes: the head could not be parsed, or the client was too slow.
    fn refuse(&mut self, site: &Site, refusal: Refusal) -> Next {
        self.out.clear();
        let after = refusal.answer(site, self.config.log, &mut self.out, &self.peer);
        if self.stream.write_all(&self.out).is_err() {
            return Next::Close;
        }
        self.end_with(after)
    }

    /// Closes gently, like nginx's lingering close (RFC 9112 §9.6): stop sending, then read and
    /// drop what the client still sends until it closes too (or [`LINGER`] passes). Closing a
    /// socket that still has unread input is an abortive close: the kernel sends a reset and
    /// discards whatever of our answer it has not sent yet, so on a slow network the client
    /// would see "connection reset" instead of our 400.
    fn linger_and_close(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + LINGER;
        loop {
            self.buf.clear();
            if self.wait_and_read(deadline, Watch::DataOnly) != Outcome::Data {
                return;
            }
        }
    }

    /// Waits until the socket has data (or `deadline`, or a shutdown when watched) and
    /// appends what one `read` returns to `buf`.
    fn wait_and_read(&mut self, deadline: Instant, watch: Watch) -> Outcome {
        let shutdown = self.signals.shutdown_fd();
        let both = [self.stream.as_fd(), shutdown];
        let fds = if watch == Watch::Shutdown {
            &both[..]
        } else {
            &both[..1]
        };
        match wait_readable(fds, Some(deadline)) {
            Err(_) => return Outcome::Closed,
            Ok(ready) if ready.timed_out() => return Outcome::TimedOut,
            // Data first: a request that already arrived is still served.
            Ok(ready) if !ready.is_ready(0) => return Outcome::Shutdown,
            Ok(_) => {}
        }
        let mut chunk = [0u8; READ_CHUNK];
        match self.stream.read(&mut chunk) {
            Ok(0) => Outcome::Closed,
            Ok(read) => {
                self.buf.extend_from_slice(&chunk[..read]);
                Outcome::Data
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => Outcome::Data,
            // ECONNRESET and friends: the client is gone.
            Err(_) => Outcome::Closed,
        }
    }
}

/// Answers `503 Service Unavailable` on a connection that will not be served after all (no
/// thread, no process, no room, shutting down) and closes it, without ever blocking: the
/// answer fits in the socket's send buffer, and only what has already arrived is read before
/// closing, so that the close does not reset the connection and destroy the 503.
pub fn refuse(mut stream: TcpStream, server: &str) {
    let mut out = Vec::with_capacity(256);
    Response::error(503).render(server, false, None, &mut out);
    if stream.write_all(&out).is_err() {
        return;
    }
    let _ = stream.shutdown(Shutdown::Write);
    if stream.set_nonblocking(true).is_ok() {
        let mut sink = [0u8; 4096];
        while matches!(stream.read(&mut sink), Ok(read) if read > 0) {}
    }
}
