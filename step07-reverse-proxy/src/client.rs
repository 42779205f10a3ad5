//! The client's side of one connection: its socket, the bytes read from it and not used yet,
//! and what the proxy does with it besides forwarding: answer by itself, read a request body,
//! notice that the client left, close without destroying the last answer.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::body::BodyDecoder;
use common::chunked::{write_chunk, write_last_chunk};
use common::keep_alive::{After, Answered, LINGER};
use common::{Response, log};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::timeout;

use crate::deadline::Deadline;
use crate::proxy::Proxy;

/// How much a connection reads ahead (pipelined requests, while its request is being served)
/// before it stops reading and lets TCP hold the rest.
const READ_AHEAD_LIMIT: usize = 64 * 1024;

/// How much one read of a request body asks for.
const BODY_READ: usize = 64 * 1024;

/// A client's end of stream that comes this soon after its request head is a *half-close*: the
/// client shut down its sending side once its request was out (`nc -N`, `shutdown(SHUT_WR)`)
/// and still waits for the answer. One that comes later, while the upstream works, is a
/// client that left. TCP cannot tell the two apart (a FIN is a FIN), so time does, and nginx
/// ends up with the same rule: it learns of a FIN that came with the request only when it
/// writes the answer, and cancels the upstream request for one that comes while it waits.
const HALF_CLOSE_WINDOW: Duration = Duration::from_millis(100);

/// Which listener a connection came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// A client of the proxy.
    Client,
    /// The admin listener (`--admin`).
    Admin,
}

/// The client's side of a connection.
pub(crate) struct Client {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// Only a client's answers count in `/metrics`: the admin port's own (a scrape every few
    /// seconds) are not traffic.
    pub role: Role,
    /// Read, not consumed: the rest of a head, a body's first bytes, pipelined requests.
    pub buf: Vec<u8>,
    /// An answer on its way to the client, head and body; kept between requests for its
    /// allocation.
    pub out: Vec<u8>,
    /// When the last request head was complete (or, with `--delay-ms`, when its forwarding
    /// began).
    pub head_at: Instant,
    /// The client half-closed (see [`HALF_CLOSE_WINDOW`]): it gets its answer, then the end.
    pub half_closed: bool,
    /// Something was written on this connection already (see [`Client::before_write`]).
    wrote: bool,
    /// `TCP_NODELAY` is set.
    nodelay: bool,
    /// The header or idle timeout of the wait for the next request (see [`Deadline`]).
    pub deadline: Deadline,
    /// Turns `true` when the worker is asked to stop: an idle connection closes then.
    pub shutdown: watch::Receiver<bool>,
}

/// What became of a request, for the access log and the connection.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// `None`: no answer was sent.
    pub status: Option<u16>,
    /// Body bytes sent to the client.
    pub bytes: u64,
    pub upstream: Option<usize>,
    /// How long the upstream took to send its answer's head.
    pub upstream_time: Option<Duration>,
    /// What the connection does next: serve the next request, close, or close gently.
    pub after: After,
}

impl Outcome {
    /// The connection ended without an answer.
    pub fn closed() -> Outcome {
        Outcome {
            status: None,
            bytes: 0,
            upstream: None,
            upstream_time: None,
            after: After::Close,
        }
    }
}

/// Why a request body could not be passed on whole. The connection closes after any of them:
/// a body cut short must never look whole to anyone.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The client closed or reset the connection mid-body.
    ClientGone,
    /// The client sent nothing for the header timeout (408).
    ClientTimedOut,
    /// Not valid chunked framing (400).
    Malformed(common::body::BodyError),
}

/// Writes `bytes` whole within `within`, and says whether it could. Most writes fit in the
/// socket's send buffer and are done by the first `write`, without a timer; only a write that
/// has to wait for the peer to read arms one.
pub(crate) async fn write_within(stream: &mut TcpStream, bytes: &[u8], within: Duration) -> bool {
    let written = match stream.try_write(bytes) {
        Ok(written) => written,
        Err(error) if error.kind() == ErrorKind::WouldBlock => 0,
        Err(_) => return false,
    };
    written == bytes.len()
        || matches!(
            timeout(within, stream.write_all(&bytes[written..])).await,
            Ok(Ok(()))
        )
}

impl Client {
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        role: Role,
        shutdown: watch::Receiver<bool>,
    ) -> Client {
        Client {
            stream,
            peer,
            role,
            // Sized once for the usual head and answer, so that they never grow by steps.
            buf: Vec::with_capacity(4096),
            out: Vec::with_capacity(4096),
            head_at: Instant::now(),
            half_closed: false,
            wrote: false,
            nodelay: false,
            deadline: Deadline::new(),
            shutdown,
        }
    }

    /// Turns Nagle's algorithm off before the connection's second write. Nagle holds back a
    /// small segment while an earlier one is unacknowledged, and the client may delay its
    /// acknowledgement by up to 40 ms: the second answer on a kept-alive connection, or the
    /// second piece of a streamed one, would wait for it. The first write has nothing before
    /// it, so a connection that gets one answer and closes never needs the option, and never
    /// pays the system call, as nginx sets `tcp_nodelay` only on kept-alive connections.
    pub fn before_write(&mut self) {
        if self.wrote && !self.nodelay {
            let _ = self.stream.set_nodelay(true);
            self.nodelay = true;
        }
        self.wrote = true;
    }

    /// Writes `bytes` whole, or gives up after the header timeout: a client that does not
    /// read its answers must not hold the connection forever.
    pub async fn write(&mut self, proxy: &Proxy, bytes: &[u8]) -> bool {
        self.before_write();
        write_within(&mut self.stream, bytes, proxy.header_timeout).await
    }

    /// Writes what [`Client::out`] holds, and empties it.
    pub async fn flush(&mut self, proxy: &Proxy) -> bool {
        self.before_write();
        let written = write_within(&mut self.stream, &self.out, proxy.header_timeout).await;
        self.out.clear();
        written
    }

    /// Decodes what has arrived of a request body into `out`, as chunks of our own if
    /// `chunked` (the client's chunk sizes, extensions and trailers stay here), reading from
    /// the client when nothing of the body is in the buffer. `Ok(true)` once the body is
    /// whole: `buf` then holds what follows it, the next pipelined request.
    ///
    /// # Errors
    ///
    /// [`BodyError`]: the client left, stalled for `within`, or sent bad chunks.
    pub async fn next_body_piece(
        &mut self,
        decoder: &mut BodyDecoder,
        chunked: bool,
        out: &mut Vec<u8>,
        within: Duration,
    ) -> Result<bool, BodyError> {
        loop {
            let used = decoder
                .decode(&self.buf, |data| {
                    if chunked {
                        write_chunk(out, data);
                    } else {
                        out.extend_from_slice(data);
                    }
                })
                .map_err(BodyError::Malformed)?;
            self.buf.drain(..used);
            if decoder.is_done() {
                if chunked {
                    write_last_chunk(out, b"");
                }
                return Ok(true);
            }
            if !out.is_empty() {
                return Ok(false);
            }
            self.buf.reserve(BODY_READ);
            match timeout(within, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(0) | Err(_)) => return Err(BodyError::ClientGone),
                Ok(Ok(_)) => {}
                Err(_) => return Err(BodyError::ClientTimedOut),
            }
        }
    }

    /// Notes a FIN that came with the request (a half-close, `nc -N`), if it is here already:
    /// tokio keeps "the peer closed" once seen, so asking costs a system call only when there
    /// is something to read (the end, or a pipelined request, which is kept).
    pub fn notice_half_close(&mut self) {
        self.buf.reserve(1);
        if matches!(self.stream.try_read_buf(&mut self.buf), Ok(0)) {
            self.half_closed = true;
        }
    }

    /// Resolves when the client closes or resets its side: while it waits for an answer, a
    /// client has nothing to send but pipelined requests, which are read ahead and kept. An
    /// end of stream right after the request is a half-close, not a departure: it never
    /// resolves then.
    pub async fn gone(&mut self) {
        loop {
            if self.half_closed || self.buf.len() >= READ_AHEAD_LIMIT {
                // Half-closed: its end is known, and it still wants the answer. Or enough
                // read ahead: without reading we cannot tell, so we stop asking.
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

    /// Writes one of the proxy's own responses and says what became of the connection.
    /// `wanted`: the client asked to keep it open.
    pub async fn respond(&mut self, proxy: &Proxy, response: &Response, wanted: bool) -> Outcome {
        self.respond_for(proxy, response, wanted, None).await
    }

    /// Writes one of the proxy's own responses about `upstream` (a 502 or 504 because of it):
    /// counted, and logged, under that upstream, so that `/metrics` shows whose errors they are.
    pub async fn respond_for(
        &mut self,
        proxy: &Proxy,
        response: &Response,
        wanted: bool,
        upstream: Option<usize>,
    ) -> Outcome {
        let answered = Answered {
            wanted,
            closes: response.close,
            shutting_down: proxy.shutting_down(),
            unread: response.close || !self.buf.is_empty(),
        };
        self.out.clear();
        proxy
            .site
            .render(response, answered.keeps_alive(), &mut self.out);
        if self.role == Role::Client {
            proxy
                .zone
                .answered(proxy.worker.index, upstream, response.status);
        }
        let written = self.flush(proxy).await;
        Outcome {
            status: Some(response.status),
            bytes: if response.head_only {
                0
            } else {
                response.body.len() as u64
            },
            upstream,
            upstream_time: None,
            after: if written {
                answered.after()
            } else {
                After::Close
            },
        }
    }

    /// An error answer, `Connection: close`, then a gentle close.
    pub async fn refuse(&mut self, proxy: &Proxy, status: u16, why: &str) -> Outcome {
        if proxy.log {
            log::error(format_args!("{}: {status}: {why}", self.peer));
        }
        self.respond(proxy, &Response::error(status), false).await
    }

    /// The answer to a body that could not be read whole; the connection closes after it.
    pub async fn body_failed(&mut self, proxy: &Proxy, error: BodyError) -> Outcome {
        match error {
            // Nobody to answer.
            BodyError::ClientGone => Outcome::closed(),
            BodyError::ClientTimedOut => self.refuse(proxy, 408, "request body timed out").await,
            BodyError::Malformed(error) => self.refuse(proxy, 400, &error.to_string()).await,
        }
    }

    /// Closes after an error answer without destroying it. Closing a socket that still has
    /// unread input makes the kernel send a reset, and a reset can reach the client before it
    /// has read our answer, which it then loses. So: send our FIN, read and drop what the
    /// client still sends for a moment ([`LINGER`], every step's), and only then close.
    pub async fn close_gently(&mut self) {
        let _ = self.stream.shutdown().await;
        let mut sink = [0u8; 4096];
        let _ = timeout(LINGER, async {
            while matches!(self.stream.read(&mut sink).await, Ok(read) if read > 0) {}
        })
        .await;
    }
}
