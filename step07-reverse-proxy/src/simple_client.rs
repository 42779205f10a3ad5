//! `--upstream-client reqwest`: forwarding with a general-purpose HTTP client, the simple way,
//! for comparison with the proxy's own (`src/upstream/`). Chapter 07 measures both.
//!
//! It works, and it shows what a general client costs a proxy: the head we already have as
//! bytes is read back into a `Url` and a `HeaderMap`; names reach the client lower-cased;
//! `Accept: */*` is added; trailers are dropped; a `101` cannot become a tunnel; and a request
//! body is read whole before it is sent.

use std::time::Instant;

use common::body::{BodyDecoder, Framing};
use common::chunked::{write_chunk, write_last_chunk};
use common::keep_alive::After;
use common::log;
use common::parse::{BodyFraming, Version, field_slots};
use common::response_head::ResponseHeadError;
use reqwest::Url;
use reqwest::header::CONTENT_LENGTH;

use crate::client::{BodyError, Client, Outcome};
use crate::config::ProxySettings;
use crate::exchange::{Attempt, Failure};
use crate::headers::end_head;
use crate::proxy::Proxy;
use crate::relay::head::{UpstreamHead, rewrite};
use crate::request::{Forward, Request};
use crate::upstream::UpstreamError;

/// The client, configured on purpose rather than by default: no redirects (a 3xx is for the
/// client), no decompression, no system proxy (`HTTP_PROXY` must not reroute our traffic),
/// the connect and read timeouts, a pool of `keepalive` idle connections per upstream,
/// HTTP/1.1 only, `TCP_NODELAY`, no retries of its own.
///
/// # Errors
///
/// When the client cannot be built.
pub(crate) fn build(settings: &ProxySettings) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(settings.connect_timeout())
        .read_timeout(settings.read_timeout())
        .pool_idle_timeout(settings.keepalive_timeout())
        .pool_max_idle_per_host(settings.keepalive)
        .tcp_nodelay(true)
        .http1_only()
        .referer(false)
        .retry(reqwest::retry::never())
        .build()
}

/// Forwards `request` to `upstream` with `http`, and relays its answer.
pub(crate) async fn attempt(
    http: &reqwest::Client,
    client: &mut Client,
    proxy: &Proxy,
    request: &Request,
    forward: &mut Forward,
    upstream: usize,
) -> Attempt {
    let target = &proxy.config.upstreams[upstream];
    let failed = |error, sent| {
        Attempt::Failed(Failure {
            error,
            stale: false,
            sent,
        })
    };
    end_head(
        &mut forward.head,
        forward.head_len,
        forward.host_is_upstream.then_some(target.name.as_str()),
    );
    // Our head, read back into reqwest's types.
    let mut slots = field_slots();
    let mut head = httparse::Request::new(&mut []);
    let _ = head.parse_with_uninit_headers(&forward.head, &mut slots);
    let (Some(method), Some(path)) = (head.method, head.path) else {
        return failed(
            UpstreamError::Head(ResponseHeadError::Framing("no request line")),
            false,
        );
    };
    let (Ok(method), Ok(url)) = (
        reqwest::Method::from_bytes(method.as_bytes()),
        Url::parse(&format!("http://{}{path}", target.addr)),
    ) else {
        return failed(
            UpstreamError::Head(ResponseHeadError::Framing("no URL")),
            false,
        );
    };
    let mut builder = http.request(method, url);
    for field in head.headers.iter() {
        let framing = ["content-length", "transfer-encoding"]
            .iter()
            .any(|name| field.name.eq_ignore_ascii_case(name));
        if !framing {
            builder = builder.header(field.name, field.value);
        }
    }
    if request.body != BodyFraming::None {
        let mut body = Vec::new();
        let mut decoder = BodyDecoder::new(request.body.into());
        loop {
            match client
                .next_body_piece(&mut decoder, false, &mut body, proxy.header_timeout)
                .await
            {
                Ok(true) => break,
                Ok(false) => {}
                Err(error) => return Attempt::Client(error),
            }
        }
        builder = builder.body(body);
    }
    let sent_at = Instant::now();
    let sent = tokio::select! {
        sent = builder.send() => sent,
        () = client.gone() => return Attempt::Client(BodyError::ClientGone),
    };
    let mut response = match sent {
        Ok(response) if response.status().as_u16() == 101 => {
            return failed(
                UpstreamError::Head(ResponseHeadError::Framing("101: reqwest cannot tunnel")),
                true,
            );
        }
        Ok(response) => response,
        Err(error) => {
            let sent = !error.is_connect();
            return failed(UpstreamError::Reqwest(error), sent);
        }
    };
    let status = response.status().as_u16();
    let content_length = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    let framing =
        if request.is_head() || (100..200).contains(&status) || status == 204 || status == 304 {
            Framing::Empty
        } else {
            content_length.map_or(Framing::UntilClose, Framing::Length)
        };
    let headers = response.headers().clone();
    let head = UpstreamHead {
        status,
        reason: "",
        version: if response.version() == reqwest::Version::HTTP_10 {
            Version::Http10
        } else {
            Version::Http11
        },
        fields: || {
            headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_bytes()))
        },
        framing,
        content_length,
        keep_alive: true,
    };
    let answer = match rewrite(proxy, request, upstream, true, head, &mut client.out) {
        Ok(answer) => answer,
        Err(error) => return failed(error, true),
    };
    let upstream_time = sent_at.elapsed();
    let worker = proxy.worker.index;
    proxy.zone.upstream_time(worker, upstream, upstream_time);
    proxy.zone.answered(worker, Some(upstream), status);
    if status >= 500 {
        proxy.upstreams.failed(upstream);
    } else {
        proxy.upstreams.succeeded(upstream);
    }
    let mut outcome = Outcome {
        status: Some(status),
        bytes: 0,
        upstream: Some(upstream),
        upstream_time: Some(upstream_time),
        after: After::Close,
    };
    let chunked = answer.to_client == Framing::Chunked;
    loop {
        let chunk = tokio::select! {
            chunk = response.chunk() => chunk,
            // Gone: dropping the response closes the upstream connection mid-body.
            () = client.gone() => return Attempt::Answered(outcome),
        };
        match chunk {
            Ok(Some(bytes)) if answer.to_client != Framing::Empty => {
                outcome.bytes += bytes.len() as u64;
                if chunked {
                    write_chunk(&mut client.out, &bytes);
                } else {
                    client.out.extend_from_slice(&bytes);
                }
                if !client.flush(proxy).await {
                    return Attempt::Answered(outcome);
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                if chunked {
                    write_last_chunk(&mut client.out, b"");
                }
                if client.flush(proxy).await {
                    outcome.after = answer.after;
                }
                return Attempt::Answered(outcome);
            }
            Err(error) => {
                // Too late for a status: cutting the connection is the only way left to say so.
                log::error(format_args!(
                    "upstream {}: the answer was cut off: {}",
                    target.name,
                    UpstreamError::Reqwest(error)
                ));
                proxy.upstreams.failed(upstream);
                let _ = client.flush(proxy).await;
                return Attempt::Answered(outcome);
            }
        }
    }
}
