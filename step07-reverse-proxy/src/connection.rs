//! One client connection, on the proxy's port or the admin port: the contract's HTTP/1.1
//! behaviour (keep-alive, pipelining in order, the header and idle timeouts, 4xx for bad
//! heads, a graceful end at shutdown), written as one `async fn` per connection.
//!
//! It is step 05's state machine again, but the compiler writes it: every `.await` is a place
//! where the connection waits (for bytes, for the upstream, for a timer) and the worker's one
//! thread serves the others meanwhile. Requests on a connection are handled one after the
//! other, so pipelined answers leave in order by construction.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::parse::{BodyFraming, parse_head};
use common::{Reply, Response, log};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, sleep_until, timeout};

use crate::body::{BodyError, pump};
use crate::forward::{Outcome, forward};
use crate::proxy::Proxy;
use crate::request::{Action, Request, Role, decide};

/// How much a connection reads ahead (pipelined requests, while its request is being served)
/// before it stops reading and lets TCP hold the rest.
const READ_AHEAD_LIMIT: usize = 64 * 1024;

/// A client's end of stream that comes this soon after its request head is a *half-close*: the
/// client shut down its sending side once its request was out (`nc -N`, `shutdown(SHUT_WR)`)
/// and still waits for the answer. One that comes later, while the upstream works, is a
/// client that left. TCP cannot tell the two apart (a FIN is a FIN), so time does, and nginx
/// ends up with the same rule: it learns of a FIN that came with the request only when it
/// writes the answer, and cancels the upstream request for one that comes while it waits.
const HALF_CLOSE_WINDOW: Duration = Duration::from_millis(100);

/// How long a connection closing after an error answer keeps draining what the client still
/// sends, so that our answer is not destroyed by a reset (see [`Client::close_gently`]).
const LINGER: Duration = Duration::from_secs(1);

/// Serves one connection until it closes.
pub async fn serve(stream: TcpStream, peer: SocketAddr, proxy: Arc<Proxy>, role: Role) {
    // Answers are written whole; Nagle's algorithm would only delay the last segment.
    let _ = stream.set_nodelay(true);
    let worker = proxy.worker.index;
    if role == Role::Client {
        proxy.zone.connection_opened(worker);
    }
    let mut client = Client {
        stream,
        peer,
        role,
        buf: Vec::new(),
        head_at: Instant::now(),
        half_closed: false,
    };
    client.serve(&proxy, role).await;
    if role == Role::Client {
        proxy.zone.connection_closed(worker);
    }
}

/// The client's side of a connection: its socket and the bytes read but not used yet.
pub struct Client {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// Only a client's answers count in `/metrics`: the admin port's own (a scrape every few
    /// seconds) are not traffic.
    pub role: Role,
    /// Read, not consumed: the rest of a head, a body's first bytes, pipelined requests.
    pub buf: Vec<u8>,
    /// When the last request head was complete (or, with `--delay-ms`, when its forwarding
    /// began).
    pub head_at: Instant,
    /// The client half-closed (see [`HALF_CLOSE_WINDOW`]): it gets its answer, then the end.
    pub half_closed: bool,
}

/// How reading the next request head ended, when it did not produce a request.
enum NoRequest {
    /// The client closed, or a shutdown closed an idle connection: nothing to say.
    Closed,
    /// An answer (400, 408, 431, ...) and then close.
    Refuse(u16, &'static str),
}

impl Client {
    async fn serve(&mut self, proxy: &Proxy, role: Role) {
        let mut first = true;
        loop {
            let (request, action) = match self.next_request(first, proxy, role).await {
                Ok(next) => next,
                Err(NoRequest::Closed) => return,
                Err(NoRequest::Refuse(status, why)) => {
                    self.refuse(proxy, status, why, None).await;
                    return;
                }
            };
            first = false;
            let outcome = match action {
                Action::Answer(reply) => self.answer(proxy, &request, reply).await,
                Action::Forward(to) => {
                    if !proxy.delay.is_zero() {
                        sleep(proxy.delay).await;
                        // A FIN that came during the delay is read now: still a half-close.
                        self.head_at = Instant::now();
                    }
                    forward(self, proxy, &request, to).await
                }
            };
            self.log(proxy, &request, &outcome);
            if !outcome.keep_alive || self.half_closed {
                if outcome.linger {
                    self.close_gently().await;
                }
                return;
            }
        }
    }

    /// Reads until a whole request head is in the buffer and decides what to do with it.
    ///
    /// A new connection's first head must be complete within the header timeout; between
    /// requests, a kept-alive connection may be idle for the idle timeout, and its next head
    /// must then be complete within the header timeout of its first byte. At shutdown, a
    /// connection idle between requests closes at once.
    async fn next_request(
        &mut self,
        first: bool,
        proxy: &Proxy,
        role: Role,
    ) -> Result<(Request, Action), NoRequest> {
        let now = tokio::time::Instant::now();
        let mut head_deadline = first.then(|| now + proxy.header_timeout);
        let idle_deadline = now + proxy.idle_timeout;
        let mut shutdown = proxy.shutdown.clone();
        loop {
            if !self.buf.is_empty() {
                match parse_head(&self.buf) {
                    Ok(Some(head)) => {
                        self.head_at = Instant::now();
                        let decided = decide(&head, &self.buf, self.peer, proxy, role);
                        let len = head.len;
                        self.buf.drain(..len);
                        return Ok(decided);
                    }
                    Ok(None) => {}
                    Err(error) => {
                        return Err(NoRequest::Refuse(error.status(), "bad request head"));
                    }
                }
                head_deadline
                    .get_or_insert_with(|| tokio::time::Instant::now() + proxy.header_timeout);
            }
            let idle = head_deadline.is_none();
            let deadline = head_deadline.unwrap_or(idle_deadline);
            self.buf.reserve(4096);
            tokio::select! {
                read = self.stream.read_buf(&mut self.buf) => match read {
                    Ok(0) | Err(_) => return Err(NoRequest::Closed),
                    Ok(_) => {}
                },
                () = sleep_until(deadline) => {
                    return Err(if idle {
                        NoRequest::Closed
                    } else {
                        NoRequest::Refuse(408, "request head timed out")
                    });
                }
                _ = shutdown.wait_for(|stopping| *stopping), if idle && !first => {
                    return Err(NoRequest::Closed);
                }
            }
        }
    }

    /// A request the proxy answers itself: its body is read and dropped, then the answer.
    async fn answer(&mut self, proxy: &Proxy, request: &Request, reply: Reply) -> Outcome {
        if request.body != BodyFraming::None {
            if request.expect_continue && !self.write(proxy, b"HTTP/1.1 100 Continue\r\n\r\n").await
            {
                return Outcome::closed();
            }
            let within = proxy.header_timeout;
            if let Err(error) = pump(
                &mut self.stream,
                &mut self.buf,
                request.body,
                None,
                within,
                within,
            )
            .await
            {
                return self.body_failed(proxy, error).await;
            }
        }
        if !reply.delay.is_zero() {
            sleep(reply.delay).await;
        }
        let keep_alive = request.keep_alive && !reply.response.close && !proxy.shutting_down();
        self.respond(proxy, &reply.response, keep_alive).await
    }

    /// Writes one of the proxy's own responses and says what became of the connection.
    pub async fn respond(
        &mut self,
        proxy: &Proxy,
        response: &Response,
        keep_alive: bool,
    ) -> Outcome {
        self.respond_for(proxy, response, keep_alive, None).await
    }

    /// Writes one of the proxy's own responses about `upstream` (a 502 or 504 because of it):
    /// counted, and logged, under that upstream, so that `/metrics` shows whose errors they are.
    pub async fn respond_for(
        &mut self,
        proxy: &Proxy,
        response: &Response,
        keep_alive: bool,
        upstream: Option<usize>,
    ) -> Outcome {
        let mut out = Vec::new();
        proxy.site.render(response, keep_alive, &mut out);
        if self.role == Role::Client {
            proxy
                .zone
                .answered(proxy.worker.index, upstream, response.status);
        }
        let written = self.write(proxy, &out).await;
        Outcome {
            status: Some(response.status),
            bytes: if response.head_only {
                0
            } else {
                response.body.len() as u64
            },
            upstream,
            upstream_time: None,
            keep_alive: written && keep_alive && !response.close,
            linger: written && response.close,
        }
    }

    /// The answer to a body that could not be read whole; the connection closes after it.
    pub async fn body_failed(&mut self, proxy: &Proxy, error: BodyError) -> Outcome {
        let (status, why) = match error {
            // Nobody to answer; and a body cut short must never look whole to anyone.
            BodyError::ClientGone | BodyError::UpstreamGone => return Outcome::closed(),
            BodyError::ClientTimedOut => (408, "request body timed out"),
            BodyError::Malformed(_) => (400, "bad chunked body"),
            BodyError::UpstreamStalled => (504, "the upstream stopped taking the request body"),
        };
        self.refuse(proxy, status, why, None).await
    }

    /// An error answer, `Connection: close`, then a gentle close.
    pub async fn refuse(
        &mut self,
        proxy: &Proxy,
        status: u16,
        why: &str,
        body: Option<String>,
    ) -> Outcome {
        if proxy.log {
            log::error(format_args!("{}: {status}: {why}", self.peer));
        }
        let mut response = Response::error(status);
        if let Some(body) = body {
            response.body = body.into_bytes().into();
        }
        self.respond(proxy, &response, false).await
    }

    /// Writes `bytes` whole, or gives up after the header timeout: a client that does not
    /// read its answers must not hold the connection forever.
    pub async fn write(&mut self, proxy: &Proxy, bytes: &[u8]) -> bool {
        matches!(
            timeout(proxy.header_timeout, self.stream.write_all(bytes)).await,
            Ok(Ok(()))
        )
    }

    /// Resolves when the client closes or resets its side: while it waits for an answer, a
    /// client has nothing to send but pipelined requests, which are read ahead and kept. An
    /// end of stream right after the request is a half-close, not a departure: it never
    /// resolves then.
    pub async fn gone(&mut self) {
        loop {
            if self.buf.len() >= READ_AHEAD_LIMIT {
                // Enough read ahead; without reading we cannot tell, so we stop asking.
                std::future::pending::<()>().await;
            }
            self.buf.reserve(4096);
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) if self.head_at.elapsed() < HALF_CLOSE_WINDOW => {
                    // Half-closed: nothing more to read, and an answer still wanted.
                    self.half_closed = true;
                    std::future::pending::<()>().await;
                }
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// Closes after an error answer without destroying it. Closing a socket that still has
    /// unread input makes the kernel send a reset, and a reset can reach the client before it
    /// has read our answer, which it then loses. So: send our FIN, read and drop what the
    /// client still sends for a moment, and only then close.
    async fn close_gently(&mut self) {
        let _ = self.stream.shutdown().await;
        let mut sink = [0u8; 4096];
        let _ = timeout(LINGER, async {
            while matches!(self.stream.read(&mut sink).await, Ok(read) if read > 0) {}
        })
        .await;
    }

    /// One access log line: `pid peer "request line" status bytes time upstream upstream_time`.
    fn log(&self, proxy: &Proxy, request: &Request, outcome: &Outcome) {
        let Some(line) = &request.line else { return };
        let upstream = outcome
            .upstream
            .and_then(|u| proxy.config.upstreams.get(u))
            .map_or("-", |u| u.name.as_str());
        let upstream_time = outcome.upstream_time.map_or_else(
            || "-".to_string(),
            |time| format!("{:.1}ms", time.as_secs_f64() * 1000.0),
        );
        let status = outcome
            .status
            .map_or_else(|| "-".to_string(), |s| s.to_string());
        log::event(format_args!(
            "{} {} \"{line}\" {status} {} {:.1}ms upstream={upstream} upstream_time={upstream_time}",
            std::process::id(),
            self.peer,
            outcome.bytes,
            request.started.elapsed().as_secs_f64() * 1000.0,
        ));
    }
}

impl Outcome {
    /// The connection ended without an answer.
    pub fn closed() -> Outcome {
        Outcome {
            status: None,
            bytes: 0,
            upstream: None,
            upstream_time: None,
            keep_alive: false,
            linger: false,
        }
    }
}

/// How long since `started`, for figures that need a `Duration`.
pub fn since(started: Instant) -> Duration {
    started.elapsed()
}
