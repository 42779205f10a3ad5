//! From a parsed request head to a decision: answer it here, or forward it to which group,
//! with which URL and header fields.
//!
//! The decision is made while the head is still borrowed from the connection's buffer, and
//! everything it needs later is copied out, so that the buffer is free again for the body and
//! the next pipelined request.
//!
//! Two decisions keep this a *reverse* proxy, never an open one. The upstream's address comes
//! only from the configuration: an absolute-form target (`GET http://elsewhere/ HTTP/1.1`) is
//! routed by its path and host like any other request, and forwarded in origin form to one of
//! our upstreams, never to `elsewhere`. And the path is normalised (`/a/../b` becomes `/b`)
//! *before* routing, so that the route chosen and the path the upstream sees are the same: a
//! proxy that routes on the raw path and forwards a normalised one lets `/public/../admin`
//! through a route meant for `/public/`.

use std::net::SocketAddr;
use std::time::Instant;

use common::parse::{BodyFraming, RequestHead, Version, for_each_field};
use common::{Reply, Response};
use reqwest::header::HeaderMap;
use reqwest::{Method, Url};

use crate::admin;
use crate::config::{HashKey, HostHeader};
use crate::headers::{Forwarding, upstream_request};
use crate::proxy::Proxy;

/// Which listener a connection came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A client of the proxy.
    Client,
    /// The admin listener (`--admin`).
    Admin,
}

/// What the connection needs to know about a request once its head has left the buffer.
pub struct Request {
    pub method: Method,
    pub version: Version,
    /// The client wants the connection kept open.
    pub keep_alive: bool,
    pub body: BodyFraming,
    pub expect_continue: bool,
    /// `GET / HTTP/1.1`, for the access log (only when logging).
    pub line: Option<String>,
    pub started: Instant,
}

impl Request {
    pub fn is_head(&self) -> bool {
        self.method == Method::HEAD
    }
}

/// What to do with a request.
pub enum Action {
    /// The proxy answers itself: `/stats`, the admin routes, 404 for no route, 400.
    Answer(Reply),
    Forward(Forward),
}

/// A request to forward.
pub struct Forward {
    pub group: usize,
    /// `http://UPSTREAM/path?query`; the upstream's address is filled in per attempt.
    pub url: Url,
    pub headers: HeaderMap,
    /// The `Host` sent is the chosen upstream's address (set per attempt).
    pub host_is_upstream: bool,
    /// What consistent hashing hashes.
    pub key: Vec<u8>,
}

/// Decides what to do with the request whose head is `head` (`raw` is its bytes).
pub fn decide(
    head: &RequestHead<'_>,
    raw: &[u8],
    peer: SocketAddr,
    proxy: &Proxy,
    role: Role,
) -> (Request, Action) {
    let request = Request {
        method: Method::from_bytes(head.method.as_bytes()).unwrap_or(Method::GET),
        version: head.version,
        keep_alive: head.keep_alive,
        body: head.body,
        expect_continue: head.expect_continue,
        line: proxy.log.then(|| head.request_line()),
        started: Instant::now(),
    };
    let action = match role {
        Role::Admin => Action::Answer(admin::reply(head, proxy)),
        Role::Client if proxy.config.proxy.stats && head.path() == "/stats" => {
            Action::Answer(proxy.site.reply(head))
        }
        Role::Client => match forward(head, raw, peer, proxy) {
            Ok(Some(forward)) => Action::Forward(forward),
            Ok(None) => Action::Answer(answer(Response::text(
                404,
                &b"404 Not Found: no route for this host and path\n"[..],
            ))),
            Err(why) => {
                let mut response = Response::error(400);
                response.body = format!("400 Bad Request: {why}\n").into_bytes().into();
                Action::Answer(answer(response))
            }
        },
    };
    (request, action)
}

fn answer(response: Response) -> Reply {
    Reply {
        response,
        delay: std::time::Duration::ZERO,
    }
}

/// The forwarding of a client's request; `Ok(None)` when no route takes it.
fn forward(
    head: &RequestHead<'_>,
    raw: &[u8],
    peer: SocketAddr,
    proxy: &Proxy,
) -> Result<Option<Forward>, String> {
    let (origin, authority) = split_target(head);
    // The authority of an absolute-form target replaces `Host` (RFC 9112 §3.2.2).
    let client_host = match authority {
        Some(authority) => Some(authority.to_string()),
        None => head
            .host
            .map(|host| String::from_utf8_lossy(host).into_owned()),
    };
    let Some(origin) = origin else {
        // `*` or `host:port` (OPTIONS, CONNECT): not a path, so no route can take it.
        return Ok(None);
    };
    // The host part is a placeholder: the upstream's address is set per attempt. Parsing
    // normalises the path (dot segments, percent-encoding), and routing uses the result.
    let url = Url::parse(&format!("http://0.0.0.0{origin}"))
        .map_err(|error| format!("invalid request target ({error})"))?;
    let route_host = client_host.as_deref().map(host_without_port);
    let Some(group_index) = proxy.config.route(route_host.as_deref(), url.path()) else {
        return Ok(None);
    };
    let group = &proxy.config.groups[group_index];
    let host = match &group.host_header {
        HostHeader::Pass => client_host.as_deref(),
        HostHeader::Fixed(name) => Some(name.as_str()),
        HostHeader::Upstream => None,
    };
    let forwarding = Forwarding {
        client_ip: peer.ip(),
        client_host: client_host.as_deref(),
        host,
        version: head.version,
    };
    let headers = upstream_request(&raw[..head.len], &forwarding)?;
    let key = match &group.hash_key {
        HashKey::Header(name) => header_value(&raw[..head.len], name),
        HashKey::ClientIp => None,
    }
    .unwrap_or_else(|| peer.ip().to_string().into_bytes());
    Ok(Some(Forward {
        group: group_index,
        url,
        headers,
        host_is_upstream: host.is_none(),
        key,
    }))
}

/// The target in origin form (`/path?query`), if it has one, and the authority of an
/// absolute-form target.
fn split_target<'h>(head: &RequestHead<'h>) -> (Option<String>, Option<&'h str>) {
    let target = head.target;
    if target.starts_with('/') {
        return (Some(target.to_string()), None);
    }
    let Some(rest) = ["http://", "https://"].iter().find_map(|scheme| {
        target
            .get(..scheme.len())
            .filter(|prefix| prefix.eq_ignore_ascii_case(scheme))
            .map(|_| &target[scheme.len()..])
    }) else {
        return (None, None);
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let origin = match head.query() {
        Some(query) => format!("{}?{query}", head.path()),
        None => head.path().to_string(),
    };
    (Some(origin), Some(authority))
}

/// `Example.COM:8080` → `example.com`; `[::1]:80` → `[::1]`.
fn host_without_port(host: &str) -> String {
    let name = match host.rfind(':') {
        Some(colon) if !host[colon..].contains(']') => &host[..colon],
        _ => host,
    };
    name.to_ascii_lowercase()
}

/// The value of the first header field called `name` (lower case).
fn header_value(head: &[u8], name: &str) -> Option<Vec<u8>> {
    let mut found = None;
    for_each_field(head, |field, value| {
        if found.is_none() && field.eq_ignore_ascii_case(name) {
            found = Some(value.to_vec());
        }
    });
    found
}

#[cfg(test)]
mod tests {
    use common::parse::parse_head;

    use super::*;

    fn split(raw: &str) -> (Option<String>, Option<String>) {
        let head = parse_head(raw.as_bytes()).unwrap().unwrap();
        let (origin, authority) = split_target(&head);
        (origin, authority.map(str::to_string))
    }

    #[test]
    fn targets_become_origin_form() {
        assert_eq!(
            split("GET /a?b HTTP/1.1\r\nHost: h\r\n\r\n"),
            (Some("/a?b".into()), None)
        );
        assert_eq!(
            split("GET http://Else.Test:81/x/y?q=1 HTTP/1.1\r\nHost: h\r\n\r\n"),
            (Some("/x/y?q=1".into()), Some("Else.Test:81".into()))
        );
        assert_eq!(
            split("GET http://else.test HTTP/1.1\r\nHost: h\r\n\r\n"),
            (Some("/".into()), Some("else.test".into()))
        );
        assert_eq!(
            split("CONNECT else.test:443 HTTP/1.1\r\nHost: else.test:443\r\n\r\n"),
            (None, None)
        );
        assert_eq!(split("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"), (None, None));
    }

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(host_without_port("Example.COM:8080"), "example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
    }

    #[test]
    fn paths_are_normalised_before_routing() {
        let url = Url::parse("http://0.0.0.0/public/../admin/%2e%2e/x").unwrap();
        assert_eq!(url.path(), "/x");
    }
}
