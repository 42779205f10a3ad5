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
use std::time::Instant;

use common::Reply;
use common::body::BodyDecoder;
use common::keep_alive::After;
use common::log::Access;
use common::parse::{BodyFraming, parse_head};
use common::response::go_ahead;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::sleep;

use crate::client::{Client, Outcome, Role};
use crate::forward::forward;
use crate::proxy::Proxy;
use crate::request::{Action, Request, decide};

/// The most buffer a connection keeps between requests.
const KEPT_BUFFER: usize = 16 * 1024;

/// Serves one connection until it closes.
pub(crate) async fn serve(stream: TcpStream, peer: SocketAddr, proxy: Arc<Proxy>, role: Role) {
    let worker = proxy.worker.index;
    if role == Role::Client {
        proxy.zone.connection_opened(worker);
    }
    let mut client = Client::new(stream, peer, role, proxy.shutdown.clone());
    serve_requests(&mut client, &proxy).await;
    if role == Role::Client {
        proxy.zone.connection_closed(worker);
    }
}

/// How reading the next request head ended, when it did not produce a request.
enum NoRequest {
    /// The client closed, or a shutdown closed an idle connection: nothing to say.
    Closed,
    /// An answer (400, 408, 431, ...) and then close.
    Refuse(u16, &'static str),
}

async fn serve_requests(client: &mut Client, proxy: &Proxy) {
    let mut first = true;
    // The upstream request head, written once per request into the same allocation.
    let mut upstream_head = Vec::with_capacity(1024);
    loop {
        let (request, action) = match next_request(client, first, proxy, &mut upstream_head).await {
            Ok(next) => next,
            Err(NoRequest::Closed) => return,
            Err(NoRequest::Refuse(status, why)) => {
                if client.refuse(proxy, status, why).await.after == After::Linger {
                    client.close_gently().await;
                }
                return;
            }
        };
        first = false;
        let outcome = match action {
            Action::Answer(reply) => answer(client, proxy, &request, reply).await,
            Action::Forward(mut to) => {
                if !proxy.delay.is_zero() {
                    sleep(proxy.delay).await;
                    // A FIN that came during the delay is read now: still a half-close.
                    client.head_at = Instant::now();
                }
                let outcome = forward(client, proxy, &request, &mut to).await;
                upstream_head = to.head;
                outcome
            }
        };
        log(client, proxy, &request, &outcome);
        // A body or a long answer grew the buffers: between requests, keep the usual size.
        client.buf.shrink_to(KEPT_BUFFER);
        client.out.shrink_to(KEPT_BUFFER);
        match outcome.after {
            // A half-closed client has sent its last request.
            After::KeepAlive if !client.half_closed => {}
            After::Linger => return client.close_gently().await,
            After::KeepAlive | After::Close => return,
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
    client: &mut Client,
    first: bool,
    proxy: &Proxy,
    upstream_head: &mut Vec<u8>,
) -> Result<(Request, Action), NoRequest> {
    // The first head must be complete within the header timeout; later ones may keep the
    // connection idle for the idle timeout first.
    let mut waiting_for_head = first;
    client.deadline.set_in(if first {
        proxy.header_timeout
    } else {
        proxy.idle_timeout
    });
    loop {
        if !client.buf.is_empty() {
            match parse_head(&client.buf) {
                Ok(Some(head)) => {
                    client.head_at = Instant::now();
                    let from = (client.peer, client.role);
                    let decided = decide(
                        &head,
                        &client.buf,
                        from,
                        client.head_at,
                        proxy,
                        upstream_head,
                    );
                    let len = head.len;
                    client.buf.drain(..len);
                    client.notice_half_close();
                    return Ok(decided);
                }
                Ok(None) => {}
                Err(error) => {
                    return Err(NoRequest::Refuse(error.status(), "bad request head"));
                }
            }
            if !waiting_for_head {
                // The head's first bytes: now it must be complete within the header timeout.
                waiting_for_head = true;
                client.deadline.set_in(proxy.header_timeout);
            }
        }
        let idle = !waiting_for_head;
        client.buf.reserve(4096);
        tokio::select! {
            read = client.stream.read_buf(&mut client.buf) => match read {
                Ok(0) | Err(_) => return Err(NoRequest::Closed),
                Ok(_) => {}
            },
            () = client.deadline.passed() => {
                return Err(if idle {
                    NoRequest::Closed
                } else {
                    NoRequest::Refuse(408, "request head timed out")
                });
            }
            _ = client.shutdown.wait_for(|stopping| *stopping), if idle => {
                return Err(NoRequest::Closed);
            }
        }
    }
}

/// A request the proxy answers itself: its body is read and dropped, then the answer.
async fn answer(client: &mut Client, proxy: &Proxy, request: &Request, reply: Reply) -> Outcome {
    if request.body != BodyFraming::None {
        if let Some(interim) = go_ahead(request.expect_continue, &client.buf)
            && !client.write(proxy, interim).await
        {
            return Outcome::closed();
        }
        let mut decoder = BodyDecoder::new(request.body.into());
        let mut sink = Vec::new();
        loop {
            sink.clear();
            match client
                .next_body_piece(&mut decoder, false, &mut sink, proxy.header_timeout)
                .await
            {
                Ok(true) => break,
                Ok(false) => {}
                Err(error) => return client.body_failed(proxy, error).await,
            }
        }
    }
    if !reply.delay.is_zero() {
        sleep(reply.delay).await;
    }
    client
        .respond(proxy, &reply.response, request.keep_alive)
        .await
}

/// One access log line: `pid peer "request line" status bytes time upstream upstream_time`.
fn log(client: &Client, proxy: &Proxy, request: &Request, outcome: &Outcome) {
    let Some(line) = &request.line else { return };
    let upstream = outcome
        .upstream
        .and_then(|u| proxy.config.upstreams.get(u))
        .map_or("-", |u| u.name.as_str());
    Access {
        peer: &client.peer,
        request_line: line,
        status: outcome.status,
        bytes: outcome.bytes,
        elapsed: request.started.elapsed(),
        upstream: Some((upstream, outcome.upstream_time)),
    }
    .write();
}
