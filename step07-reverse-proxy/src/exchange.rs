//! One attempt at forwarding a request with the proxy's own client: a connection (from the
//! pool, or a new one), the request, the answer's head, the answer relayed, and the connection
//! back to the pool if it is still good.
//!
//! ```text
//! client ──head──▶ Forward.head ─────────────▶ upstream::send ──▶ upstream (pooled connection)
//!        ──body──▶ decoded, re-framed ────────▶
//!        ◀─ relay::head (rewritten) ◀──────── upstream::answer (httparse) ◀──
//!        ◀─ relay::body (its framing) ◀──────────────────────────────────────
//! ```

use std::time::Instant;

use common::keep_alive::After;
use common::log;

use crate::client::{BodyError, Client, Outcome};
use crate::headers::end_head;
use crate::proxy::Proxy;
use crate::relay::body::{BodyEnd, relay_body};
use crate::relay::head::{parsed, rewrite};
use crate::relay::tunnel::tunnel;
use crate::request::{Forward, Request};
use crate::upstream::UpstreamError;
use crate::upstream::answer::{NoAnswer, read_answer_head};
use crate::upstream::conn::connect;
use crate::upstream::send::{SendFailure, send_request};

/// How one attempt ended.
pub(crate) enum Attempt {
    /// An answer went to the client, whole or not.
    Answered(Outcome),
    /// No answer: nothing has gone to the client yet, so another attempt, or an error page of
    /// our own, is still possible.
    Failed(Failure),
    /// The client broke off (left, stalled, or sent a bad body).
    Client(BodyError),
}

/// An attempt that produced no answer.
pub(crate) struct Failure {
    pub error: UpstreamError,
    /// The connection had served requests before, and the upstream had closed it by the
    /// time we used it: the failure came before any byte of an answer, on a pooled
    /// connection (see `UpstreamConn::still_idle`).
    pub stale: bool,
    /// Some of the request went out: the upstream may have read it, and acted on it.
    pub sent: bool,
}

/// Forwards `request` to `upstream` and relays its answer; `fresh`: on a new connection, not
/// one from the pool.
pub(crate) async fn attempt(
    client: &mut Client,
    proxy: &Proxy,
    request: &Request,
    forward: &mut Forward,
    upstream: usize,
    fresh: bool,
) -> Attempt {
    let target = &proxy.config.upstreams[upstream];
    let pooled = if fresh {
        None
    } else {
        proxy.pools.take(upstream)
    };
    let reused = pooled.is_some();
    let mut conn = match pooled {
        Some(conn) => conn,
        None => {
            let within = proxy.config.proxy.connect_timeout();
            let connected = tokio::select! {
                connected = connect(target.addr, upstream, within) => connected,
                () = client.gone() => return Attempt::Client(BodyError::ClientGone),
            };
            match connected {
                Ok(conn) => conn,
                Err(error) => {
                    let (stale, sent) = (false, false);
                    return Attempt::Failed(Failure { error, stale, sent });
                }
            }
        }
    };
    let host = forward.host_is_upstream.then_some(target.name.as_str());
    end_head(&mut forward.head, forward.head_len, host);
    let sent_at = Instant::now();
    let read_timeout = proxy.config.proxy.read_timeout();
    let sending = send_request(
        &mut conn,
        &forward.head,
        client,
        request.body,
        read_timeout,
        proxy.header_timeout,
    );
    let body_sent = match sending.await {
        Ok(whole) => whole,
        Err(SendFailure::Client(error)) => return Attempt::Client(error),
        Err(SendFailure::Upstream { error, wrote_any }) => {
            let stale = reused && error.is_stale_connection();
            return Attempt::Failed(Failure {
                error,
                stale,
                sent: wrote_any,
            });
        }
    };
    let waited = read_answer_head(
        &mut conn,
        client,
        request.is_head(),
        read_timeout,
        |head, out| rewrite(proxy, request, upstream, body_sent, parsed(head), out),
    )
    .await;
    let answer = match waited {
        Ok((Ok(answer), head_len)) => {
            conn.buf.drain(..head_len);
            answer
        }
        Ok((Err(error), _)) | Err(NoAnswer::Upstream(error)) => {
            let stale = reused && conn.buf.is_empty() && error.is_stale_connection();
            return Attempt::Failed(Failure {
                error,
                stale,
                sent: true,
            });
        }
        Err(NoAnswer::ClientGone) => return Attempt::Client(BodyError::ClientGone),
    };
    let upstream_time = sent_at.elapsed();
    let worker = proxy.worker.index;
    proxy.zone.upstream_time(worker, upstream, upstream_time);
    proxy.zone.answered(worker, Some(upstream), answer.status);
    if answer.status >= 500 {
        proxy.upstreams.failed(upstream);
    } else {
        proxy.upstreams.succeeded(upstream);
    }
    let mut outcome = Outcome {
        status: Some(answer.status),
        bytes: 0,
        upstream: Some(upstream),
        upstream_time: Some(upstream_time),
        after: After::Close,
    };
    if answer.switching {
        outcome.bytes = tunnel(client, proxy, conn, read_timeout).await;
        return Attempt::Answered(outcome);
    }
    let (end, bytes) = relay_body(client, proxy, &mut conn, &answer).await;
    outcome.bytes = bytes;
    match end {
        BodyEnd::Whole { clean } => {
            outcome.after = answer.after;
            if clean && answer.upstream_keep_alive && !proxy.shutting_down() {
                proxy.pools.put(conn);
            }
        }
        BodyEnd::Cut(error) => {
            log::error(format_args!(
                "upstream {}: the answer was cut off: {error}",
                target.name
            ));
            proxy.upstreams.failed(upstream);
        }
        BodyEnd::ClientGone => {}
    }
    Attempt::Answered(outcome)
}
