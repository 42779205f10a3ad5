//! Forwarding one request: choose an upstream, make attempts, and when none gives an answer,
//! answer 502, 504 or 500 ourselves.
//!
//! What can go wrong, and what the client sees:
//!
//! | what | answer |
//! |---|---|
//! | no upstream of the group is up | 502, "no upstream available" |
//! | connection refused, reset, malformed or oversized answer head, or one with both framings | 502 |
//! | no byte from the upstream for `read_timeout_ms` (or no connection in `connect_timeout_ms`) | 504 |
//! | the client leaves while we wait | nothing; the upstream connection is closed, as the client closed ours |
//! | the upstream fails mid-body | the answer is cut off and the connection closed: too late for a status |
//! | the proxy is out of file descriptors (no socket for the upstream) | 500, and no mark against the upstream |
//!
//! Two kinds of retry, as nginx makes them:
//!
//! - **A stale connection.** An idle pooled connection may be closed by the upstream at any
//!   moment (its own idle timeout, a restart), and a close that crosses our request on the
//!   wire shows as a reset or an end of stream before any answer. The request is then sent
//!   once more on a fresh connection to the *same* upstream, without a mark against it,
//!   when that is safe: the request is idempotent, or provably never left (the first write
//!   failed). nginx does the same for its cached connections.
//! - **Another upstream.** A `GET` or `HEAD` without a body that fails before any answer
//!   arrived (except by a read timeout) is tried once more on another upstream of the group:
//!   these methods are idempotent (RFC 9110 §9.2.2), so sending one twice is harmless. A
//!   `POST` is never sent twice: the first one may have done its work before the connection
//!   broke. This is nginx's `proxy_next_upstream error` default. A slow upstream is not
//!   retried: it is more likely overloaded than broken, and retrying would double the load on
//!   the others just when they need it least (a retry storm), and double the client's wait.

use common::parse::BodyFraming;
use common::response::go_ahead;
use common::{Response, log};

use crate::client::{Client, Outcome};
use crate::exchange::{self, Attempt};
use crate::proxy::Proxy;
use crate::request::{Forward, Request};
use crate::simple_client;

/// Forwards `request` according to `forward`, and answers the client.
pub(crate) async fn forward(
    client: &mut Client,
    proxy: &Proxy,
    request: &Request,
    forward: &mut Forward,
) -> Outcome {
    let group = &proxy.config.groups[forward.group];
    // Without a body, a failure leaves the client's connection usable.
    let body_read = request.body == BodyFraming::None;
    let Some(mut upstream) = proxy.upstreams.choose(forward.group, forward.key, None) else {
        let page = format!(
            "502 Bad Gateway: no upstream of group \"{}\" is available right now; try again later\n",
            group.name
        );
        return gateway_error(client, proxy, request, 502, page, body_read, None).await;
    };
    // The client waits for a go-ahead before its body: we give it, as nginx does, and take the
    // body ourselves; the upstream never sees the `Expect`.
    if let Some(interim) = go_ahead(request.expect_continue, &client.buf)
        && !client.write(proxy, interim).await
    {
        return Outcome::closed();
    }
    let (mut fresh, mut moved_on) = (false, false);
    loop {
        let in_flight = proxy.upstreams.start(upstream);
        let attempt = match &proxy.reqwest {
            None => exchange::attempt(client, proxy, request, forward, upstream, fresh).await,
            Some(http) => {
                simple_client::attempt(http, client, proxy, request, forward, upstream).await
            }
        };
        drop(in_flight);
        let failure = match attempt {
            Attempt::Answered(outcome) => return outcome,
            Attempt::Client(error) => return client.body_failed(proxy, error).await,
            Attempt::Failed(failure) => failure,
        };
        let (error, name) = (&failure.error, &proxy.config.upstreams[upstream].name);
        if error.is_out_of_descriptors() {
            // Our fault, not the upstream's: as nginx, a 500, and no mark against it.
            log::error(format_args!("upstream {name}: {error}"));
            let page = "500 Internal Server Error: the proxy is out of file descriptors; try again shortly\n";
            return gateway_error(client, proxy, request, 500, page.into(), body_read, None).await;
        }
        if failure.stale && !fresh && (!failure.sent || request.can_be_repeated()) {
            log::error(format_args!(
                "upstream {name}: {error} (a kept-alive connection); sending it again on a new connection"
            ));
            fresh = true;
            continue;
        }
        proxy.upstreams.failed(upstream);
        let retry =
            !moved_on && request.can_be_repeated() && (error.is_connect() || !error.is_timeout());
        if let Some(next) = retry
            .then(|| {
                proxy
                    .upstreams
                    .choose(forward.group, forward.key, Some(upstream))
            })
            .flatten()
        {
            log::error(format_args!(
                "upstream {name}: {error}; trying {}",
                proxy.config.upstreams[next].name
            ));
            (upstream, moved_on, fresh) = (next, true, false);
            continue;
        }
        log::error(format_args!("upstream {name}: {error}"));
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
            body_read,
            Some(upstream),
        )
        .await;
    }
}

/// The proxy's own 500, 502 or 504, because of `upstream` (`None`: none was available). The
/// connection stays open if the request's body was read whole, and the client wants it open:
/// a body left unread makes the answer close it.
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
    client
        .respond_for(proxy, &response, request.keep_alive, upstream)
        .await
}
