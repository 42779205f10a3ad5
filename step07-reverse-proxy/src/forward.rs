//! Forwarding one request: choose an upstream, send the head and stream the body, wait for
//! the answer while watching the client, and stream the answer back.
//!
//! ```text
//! client ──head──▶ choose upstream ──▶ reqwest (pooled connection) ──▶ upstream
//!        ──body──▶ pump ──channel──▶ RequestBody ─────────────────────▶
//!        ◀─────── relay ◀── response head, then chunk by chunk ◀──────
//! ```
//!
//! What can go wrong, and what the client sees:
//!
//! | what | answer |
//! |---|---|
//! | no upstream of the group is up | 502, "no upstream available" |
//! | connection refused, reset, malformed or oversized answer head, or one with both framings | 502 |
//! | no byte from the upstream for `read_timeout_ms` (or no connection in `connect_timeout_ms`) | 504 |
//! | the client leaves while we wait | nothing; the upstream request is dropped, which closes its connection |
//! | the upstream fails mid-body | the answer is cut off and the connection closed: too late for a status |
//! | the proxy is out of file descriptors (no socket for the upstream) | 500, and no mark against the upstream |
//!
//! A `GET` or `HEAD` without a body that fails before any answer arrived (except by a read
//! timeout) is tried once more on another upstream of the group: these methods are idempotent
//! (RFC 9110 §9.2.2), so sending one twice is harmless. A `POST` is never sent twice: the first
//! one may have done its work before the connection broke. This is nginx's
//! `proxy_next_upstream error` default. A slow upstream is not retried: it is more likely
//! overloaded than broken, and retrying would double the load on the others just when they
//! need it least (a retry storm), and double the client's wait.

use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use common::Response;
use common::log;
use common::parse::{BodyFraming as RequestFraming, Version};
use reqwest::header::{CONTENT_LENGTH, HOST, HeaderValue, TRANSFER_ENCODING};
use reqwest::{Method, StatusCode};

use crate::body::{BodyError, RequestBody, pump};
use crate::connection::Client;
use crate::headers::{BodyFraming, ResponseHead, write_response_head};
use crate::proxy::Proxy;
use crate::request::{Forward, Request};

/// The largest response head we pass on, as nginx's `proxy_buffer_size` (one page): a bigger
/// one is more likely a broken or hostile upstream than a real answer, and costs memory per
/// connection. 502.
pub const MAX_UPSTREAM_HEAD_BYTES: usize = 8 * 1024;

/// Answer bytes gathered before a write, when the upstream sends faster than one read.
const FLUSH_AT: usize = 64 * 1024;

/// What became of a request, for the access log and the connection.
#[derive(Debug)]
pub struct Outcome {
    /// `None`: no answer was sent.
    pub status: Option<u16>,
    /// Body bytes sent to the client.
    pub bytes: u64,
    pub upstream: Option<usize>,
    /// How long the upstream took to send its answer's head.
    pub upstream_time: Option<Duration>,
    /// The connection may serve the next request.
    pub keep_alive: bool,
    /// The connection closes after an error answer: close it gently.
    pub linger: bool,
}

/// How one exchange with an upstream ended.
enum Exchange {
    /// Its answer's head arrived; `body_sent`: the whole request body went out.
    Answered(reqwest::Response, bool),
    Failed(reqwest::Error),
    /// The client broke off (left, stalled, or sent a bad body).
    Client(BodyError),
}

/// Forwards `request` according to `forward`, and answers the client.
pub async fn forward(
    client: &mut Client,
    proxy: &Proxy,
    request: &Request,
    forward: Forward,
) -> Outcome {
    let group = &proxy.config.groups[forward.group];
    let body_sent_already = request.body == RequestFraming::None;
    let Some(mut upstream) = proxy.upstreams.choose(forward.group, &forward.key, None) else {
        let page = format!(
            "502 Bad Gateway: no upstream of group \"{}\" is available right now; try again later\n",
            group.name
        );
        return gateway_error(client, proxy, request, 502, page, body_sent_already, None).await;
    };
    if request.expect_continue && !client.write(proxy, b"HTTP/1.1 100 Continue\r\n\r\n").await {
        return Outcome::closed();
    }
    let idempotent = matches!(request.method, Method::GET | Method::HEAD) && body_sent_already;
    let mut retried = false;
    loop {
        let in_flight = proxy.upstreams.start(upstream);
        let sent_at = Instant::now();
        let exchange = exchange(client, proxy, request, &forward, upstream).await;
        drop(in_flight);
        let name = &proxy.config.upstreams[upstream].name;
        match exchange {
            Exchange::Answered(response, body_sent) => {
                let upstream_time = sent_at.elapsed();
                proxy
                    .zone
                    .upstream_time(proxy.worker.index, upstream, upstream_time);
                if response.status().is_server_error() {
                    proxy.upstreams.failed(upstream);
                } else {
                    proxy.upstreams.succeeded(upstream);
                }
                let mut outcome =
                    relay(client, proxy, request, response, upstream, body_sent).await;
                outcome.upstream_time = Some(upstream_time);
                return outcome;
            }
            Exchange::Failed(error) if out_of_descriptors(&error) => {
                // Our fault, not the upstream's: as nginx, a 500, and no mark against it.
                log::error(format_args!("upstream {name}: {}", describe(&error)));
                let page = "500 Internal Server Error: the proxy is out of file descriptors; try again shortly\n";
                return gateway_error(
                    client,
                    proxy,
                    request,
                    500,
                    page.into(),
                    body_sent_already,
                    None,
                )
                .await;
            }
            Exchange::Failed(error) => {
                proxy.upstreams.failed(upstream);
                let why = describe(&error);
                let retry = idempotent && !retried && (error.is_connect() || !error.is_timeout());
                if let Some(next) = retry
                    .then(|| {
                        proxy
                            .upstreams
                            .choose(forward.group, &forward.key, Some(upstream))
                    })
                    .flatten()
                {
                    log::error(format_args!(
                        "upstream {name}: {why}; trying {}",
                        proxy.config.upstreams[next].name
                    ));
                    upstream = next;
                    retried = true;
                    continue;
                }
                log::error(format_args!("upstream {name}: {why}"));
                let (status, page) = if error.is_timeout() {
                    (
                        504,
                        "504 Gateway Timeout: the upstream did not answer in time\n",
                    )
                } else {
                    (
                        502,
                        "502 Bad Gateway: the upstream could not be reached or sent a bad answer\n",
                    )
                };
                return gateway_error(
                    client,
                    proxy,
                    request,
                    status,
                    page.into(),
                    body_sent_already,
                    Some(upstream),
                )
                .await;
            }
            Exchange::Client(error) => return client.body_failed(proxy, error).await,
        }
    }
}

/// Sends the request to `upstream` and waits for its answer's head, streaming the request
/// body meanwhile and watching the client. Dropping the reqwest future (when the client
/// leaves) drops the request, and the connection to the upstream is closed: the upstream
/// sees its client go, as we saw ours.
async fn exchange(
    client: &mut Client,
    proxy: &Proxy,
    request: &Request,
    forward: &Forward,
    upstream: usize,
) -> Exchange {
    let target = &proxy.config.upstreams[upstream];
    let mut url = forward.url.clone();
    // Both only fail for URLs that cannot have a host, which ours (http://...) always has.
    let _ = url.set_ip_host(target.addr.ip());
    let _ = url.set_port(Some(target.addr.port()));
    let mut headers = forward.headers.clone();
    if forward.host_is_upstream {
        if let Ok(host) = HeaderValue::from_str(&target.name) {
            headers.insert(HOST, host);
        }
    }
    let mut builder = proxy
        .client
        .request(request.method.clone(), url)
        .headers(headers);
    let mut sender = None;
    if request.body != RequestFraming::None {
        let length = match request.body {
            RequestFraming::Length(length) => Some(length),
            _ => None,
        };
        let (chunks, body) = RequestBody::channel(length);
        builder = builder.body(reqwest::Body::wrap(body));
        sender = Some(chunks);
    }
    let mut send = pin!(builder.send());
    let mut body_sent = sender.is_none();
    if let Some(sender) = &sender {
        let read_timeout = proxy.config.proxy.read_timeout();
        let mut pumping = pin!(pump(
            &mut client.stream,
            &mut client.buf,
            request.body,
            Some(sender),
            proxy.header_timeout,
            read_timeout
        ));
        tokio::select! {
            // Answered before the body was all sent (an early 413, say): the rest of the body
            // is never read, so this connection cannot serve another request.
            result = &mut send => return match result {
                Ok(response) => Exchange::Answered(response, false),
                Err(error) => Exchange::Failed(error),
            },
            pumped = &mut pumping => match pumped {
                Ok(()) => body_sent = true,
                // The request failed or was answered without its whole body: `send` says which.
                Err(BodyError::UpstreamGone) => {}
                Err(error) => return Exchange::Client(error),
            },
        }
    }
    drop(sender);
    tokio::select! {
        result = &mut send => match result {
            Ok(response) => Exchange::Answered(response, body_sent),
            Err(error) => Exchange::Failed(error),
        },
        () = client.gone() => Exchange::Client(BodyError::ClientGone),
    }
}

/// Streams the upstream's answer to the client.
async fn relay(
    client: &mut Client,
    proxy: &Proxy,
    request: &Request,
    mut response: reqwest::Response,
    upstream: usize,
    body_sent: bool,
) -> Outcome {
    let status = response.status();
    let head_bytes: usize = response
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    // Both framings: the chunks decide where the answer ends (RFC 9112 §6.3), but a
    // `Content-Length` beside them is a response-splitting attempt or a broken upstream, and
    // passed on it would tell the client a length that is not the body's. nginx refuses it.
    let both_framings = response.headers().contains_key(TRANSFER_ENCODING)
        && response.headers().contains_key(CONTENT_LENGTH);
    let refused = if head_bytes > MAX_UPSTREAM_HEAD_BYTES {
        Some(format!("an answer head of {head_bytes} bytes"))
    } else if status == StatusCode::SWITCHING_PROTOCOLS {
        Some(format!("status {status}"))
    } else if both_framings {
        Some("both Content-Length and Transfer-Encoding".to_string())
    } else {
        None
    };
    if let Some(why) = refused {
        log::error(format_args!(
            "upstream {}: {why}: refused",
            proxy.config.upstreams[upstream].name
        ));
        proxy.upstreams.failed(upstream);
        let page = "502 Bad Gateway: the upstream sent an answer we cannot pass on\n";
        return gateway_error(
            client,
            proxy,
            request,
            502,
            page.into(),
            body_sent,
            Some(upstream),
        )
        .await;
    }
    let content_length = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    let bodiless = request.is_head()
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = match (bodiless, content_length) {
        (true, _) if status == StatusCode::NO_CONTENT => BodyFraming::None(None),
        (true, length) => BodyFraming::None(length),
        (false, Some(length)) => BodyFraming::Length(length),
        (false, None) if request.version == Version::Http11 => BodyFraming::Chunked,
        (false, None) => BodyFraming::UntilClose,
    };
    let keep_alive = request.keep_alive
        && body_sent
        && framing != BodyFraming::UntilClose
        && !proxy.shutting_down();
    let mut out = Vec::with_capacity(1024);
    let head = ResponseHead {
        status,
        version: response.version(),
        framing,
        keep_alive,
        upstream: proxy
            .config
            .proxy
            .upstream_header
            .then(|| proxy.config.upstreams[upstream].name.as_str()),
    };
    write_response_head(&head, response.headers(), &mut out);
    proxy
        .zone
        .answered(proxy.worker.index, Some(upstream), status.as_u16());
    let mut outcome = Outcome {
        status: Some(status.as_u16()),
        bytes: 0,
        upstream: Some(upstream),
        upstream_time: None,
        keep_alive: false,
        linger: false,
    };
    if matches!(framing, BodyFraming::None(_)) {
        outcome.keep_alive = client.write(proxy, &out).await && keep_alive;
        return outcome;
    }
    loop {
        let mut next = pin!(response.chunk());
        // Already here (it usually came with the head): send it with what we have, in one write.
        let chunk = match ready_now(next.as_mut()) {
            Some(chunk) => chunk,
            None => {
                if !out.is_empty() && !client.write(proxy, &out).await {
                    return outcome;
                }
                out.clear();
                tokio::select! {
                    chunk = &mut next => chunk,
                    // Gone: dropping the response closes the upstream connection mid-body.
                    () = client.gone() => return outcome,
                }
            }
        };
        match chunk {
            Ok(Some(bytes)) => {
                outcome.bytes += bytes.len() as u64;
                if framing == BodyFraming::Chunked {
                    out.extend_from_slice(format!("{:x}\r\n", bytes.len()).as_bytes());
                    out.extend_from_slice(&bytes);
                    out.extend_from_slice(b"\r\n");
                } else {
                    out.extend_from_slice(&bytes);
                }
                if out.len() >= FLUSH_AT {
                    if !client.write(proxy, &out).await {
                        return outcome;
                    }
                    out.clear();
                }
            }
            Ok(None) => {
                if framing == BodyFraming::Chunked {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                outcome.keep_alive = client.write(proxy, &out).await && keep_alive;
                return outcome;
            }
            Err(error) => {
                // Too late for a status: the head is gone. Cutting the connection is the only
                // way left to tell the client that this answer is incomplete.
                log::error(format_args!(
                    "upstream {}: answer cut off: {}",
                    proxy.config.upstreams[upstream].name,
                    describe(&error)
                ));
                proxy.upstreams.failed(upstream);
                let _ = client.write(proxy, &out).await;
                return outcome;
            }
        }
    }
}

/// The proxy's own 500, 502 or 504, because of `upstream` (`None`: none was available). The
/// connection stays open if the request's body was read whole, and the client wants it open.
async fn gateway_error(
    client: &mut Client,
    proxy: &Proxy,
    request: &Request,
    status: u16,
    page: String,
    body_read: bool,
    upstream: Option<usize>,
) -> Outcome {
    let response = Response {
        close: !body_read,
        ..Response::text(status, page.into_bytes())
    };
    let keep_alive = request.keep_alive && body_read && !proxy.shutting_down();
    client
        .respond_for(proxy, &response, keep_alive, upstream)
        .await
}

/// Polls `future` once: its output if it is ready now, without waiting.
fn ready_now<F: Future>(future: std::pin::Pin<&mut F>) -> Option<F::Output> {
    match future.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// Whether `error` is ours, not the upstream's: the proxy ran out of file descriptors
/// (`EMFILE`, `ENFILE`) and could not even create the socket. Blaming the upstream would eject
/// a healthy one, and every other with it, until the checks bring them back seconds later.
/// nginx does not count a failed `socket()` against the peer either.
pub fn out_of_descriptors(error: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// An error with its causes, on one line: reqwest's own message is only the outermost layer
/// ("error sending request"); the cause says "connection refused".
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
