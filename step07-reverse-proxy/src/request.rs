//! From a parsed request head to a decision: answer it here, or forward it to which group,
//! with which head.
//!
//! The decision is made while the head is still borrowed from the connection's buffer, and
//! everything it needs later is copied out (the upstream request's head is written, as bytes,
//! right here), so that the buffer is free again for the body and the next pipelined request.
//!
//! Two decisions keep this a *reverse* proxy, never an open one. The upstream's address comes
//! only from the configuration: an absolute-form target (`GET http://elsewhere/ HTTP/1.1`) is
//! routed by its path and host like any other request, and forwarded in origin form to one of
//! our upstreams, never to `elsewhere`. And the path is normalised (`/a/../b` becomes `/b`)
//! *before* routing, so that the route chosen and the path the upstream sees are the same: a
//! proxy that routes on the raw path and forwards a normalised one lets `/public/../admin`
//! through a route meant for `/public/`.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use common::parse::{BodyFraming, RequestHead, Version, field_slots, fields, trimmed};
use common::{Reply, Response};
use reqwest::Url;

use crate::balance::hash64;
use crate::client::Role;
use crate::config::{HashKey, HostHeader, Strategy};
use crate::headers::{Forwarding, connection_options, write_request_head};
use crate::operations::admin;
use crate::proxy::Proxy;

/// A request's method, as far as the proxy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Trace,
    /// Any other (`PATCH`, `CONNECT`, an extension): passed on as written.
    Other,
}

impl Method {
    fn parse(method: &str) -> Method {
        match method {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "TRACE" => Method::Trace,
            _ => Method::Other,
        }
    }

    /// Sending it twice has the effect of sending it once (RFC 9110 §9.2.2).
    pub fn is_idempotent(self) -> bool {
        !matches!(self, Method::Post | Method::Other)
    }
}

/// What the connection needs to know about a request once its head has left the buffer.
pub(crate) struct Request {
    pub method: Method,
    pub version: Version,
    /// The client wants the connection kept open.
    pub keep_alive: bool,
    pub body: BodyFraming,
    pub expect_continue: bool,
    /// The client asks to switch protocols (`Connection: upgrade`, `Upgrade: websocket`): a
    /// `101` from the upstream turns the connection into a tunnel.
    pub upgrade: bool,
    /// `GET / HTTP/1.1`, for the access log (only when logging).
    pub line: Option<String>,
    pub started: Instant,
}

impl Request {
    pub fn is_head(&self) -> bool {
        self.method == Method::Head
    }

    /// Whether the request may be sent again after a failure: idempotent, and nothing of it
    /// lost with the first attempt (a body read from the client cannot be read again).
    pub fn can_be_repeated(&self) -> bool {
        self.method.is_idempotent() && self.body == BodyFraming::None
    }
}

/// What to do with a request.
pub(crate) enum Action {
    /// The proxy answers itself: `/stats`, the admin routes, 404 for no route, 400.
    Answer(Reply),
    Forward(Forward),
}

/// A request to forward.
pub(crate) struct Forward {
    pub group: usize,
    /// The upstream request's head, without the blank line that ends it (see
    /// [`crate::headers::end_head`]); `head_len` long once written.
    pub head: Vec<u8>,
    pub head_len: usize,
    /// The `Host` sent is the chosen upstream's address (written per attempt).
    pub host_is_upstream: bool,
    /// The hash of what consistent hashing hashes.
    pub key: u64,
}

/// Decides what to do with the request whose head is `head` (`raw` is its bytes), complete
/// at `started`; writes the upstream head into `upstream_head`, whose allocation the
/// [`Forward`] takes over.
pub(crate) fn decide(
    head: &RequestHead<'_>,
    raw: &[u8],
    (peer, role): (SocketAddr, Role),
    started: Instant,
    proxy: &Proxy,
    upstream_head: &mut Vec<u8>,
) -> (Request, Action) {
    let mut request = Request {
        method: Method::parse(head.method),
        version: head.version,
        keep_alive: head.keep_alive,
        body: head.body,
        expect_continue: head.expect_continue,
        upgrade: false,
        line: proxy.log.then(|| head.request_line()),
        started,
    };
    let action = match role {
        Role::Admin => Action::Answer(admin::reply(head, proxy)),
        // `/live` too: the page that draws this proxy's `/stats`, not an upstream's.
        Role::Client if proxy.config.proxy.stats && matches!(head.path(), "/stats" | "/live") => {
            Action::Answer(proxy.site.reply(head))
        }
        Role::Client => match plan(head, &raw[..head.len], peer, proxy, upstream_head) {
            Ok(Some((forward, upgrade))) => {
                request.upgrade = upgrade;
                Action::Forward(forward)
            }
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

/// The forwarding of a client's request, and whether it asks for an upgrade; `Ok(None)` when
/// no route takes it.
fn plan(
    head: &RequestHead<'_>,
    raw: &[u8],
    peer: SocketAddr,
    proxy: &Proxy,
    upstream_head: &mut Vec<u8>,
) -> Result<Option<(Forward, bool)>, String> {
    let (origin, authority) = split_target(head);
    // The authority of an absolute-form target replaces `Host` (RFC 9112 §3.2.2).
    let client_host = authority.map(str::as_bytes).or(head.host);
    let Some(origin) = origin else {
        // `*` or `host:port` (OPTIONS, CONNECT): not a path, so no route can take it.
        return Ok(None);
    };
    let target = normalise(&origin)?;
    let path = target.split_once('?').map_or(&*target, |(path, _)| path);
    let route_host = client_host
        .and_then(|host| std::str::from_utf8(host).ok())
        .map(host_without_port);
    let Some(group_index) = proxy.config.route(route_host, path) else {
        return Ok(None);
    };
    let group = &proxy.config.groups[group_index];
    let host = match &group.host_header {
        HostHeader::Pass => client_host,
        HostHeader::Fixed(name) => Some(name.as_bytes()),
        HostHeader::Upstream => None,
    };
    let mut slots = field_slots();
    let fields = fields(raw, &mut slots);
    // An upgrade without a body, on HTTP/1.1 (RFC 9110 §7.8); anything else is a plain
    // request whose `Upgrade` stops here, like every hop-by-hop field.
    let upgrade = (head.version == Version::Http11
        && head.body == BodyFraming::None
        && connection_options(fields).upgrade)
        .then(|| field_value(fields, "upgrade"))
        .flatten();
    let forwarding = Forwarding {
        client_ip: peer.ip(),
        client_host,
        host,
        version: head.version,
        body: head.body,
        upgrade,
    };
    let mut head_bytes = std::mem::take(upstream_head);
    write_request_head(&mut head_bytes, head.method, &target, fields, &forwarding);
    let key = match (group.strategy, &group.hash_key) {
        (Strategy::ConsistentHash, HashKey::Header(name)) => field_value(fields, name)
            .map(hash64)
            .unwrap_or_else(|| ip_hash(peer.ip())),
        (Strategy::ConsistentHash, HashKey::ClientIp) => ip_hash(peer.ip()),
        _ => 0,
    };
    let forward = Forward {
        group: group_index,
        head_len: head_bytes.len(),
        head: head_bytes,
        host_is_upstream: host.is_none(),
        key,
    };
    Ok(Some((forward, upgrade.is_some())))
}

/// The hash of a client address (`hash $remote_addr consistent`).
fn ip_hash(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => hash64(&v4.octets()),
        IpAddr::V6(v6) => hash64(&v6.octets()),
    }
}

/// The target in origin form (`/path?query`), if it has one, and the authority of an
/// absolute-form target.
fn split_target<'h>(head: &RequestHead<'h>) -> (Option<Cow<'h, str>>, Option<&'h str>) {
    let target = head.target;
    if target.starts_with('/') {
        return (Some(Cow::Borrowed(target)), None);
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
    (Some(Cow::Owned(origin)), Some(authority))
}

/// `target` (origin form) as it is routed and forwarded: dot segments resolved and bytes
/// outside the URL grammar percent-encoded, as the `url` crate (the WHATWG URL standard)
/// does. Most targets are already in that form, and are passed as they are after a check of
/// their bytes: parsing each into a `Url` would cost allocations per request for nothing.
///
/// # Errors
///
/// A target that is not a URL path (one line, for the 400 page).
pub(crate) fn normalise(target: &str) -> Result<Cow<'_, str>, String> {
    if is_normal(target) {
        return Ok(Cow::Borrowed(target));
    }
    // The host part is a placeholder: parsing normalises the path, and routing uses the result.
    let url = Url::parse(&format!("http://0.0.0.0{target}"))
        .map_err(|error| format!("invalid request target ({error})"))?;
    Ok(Cow::Owned(match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_string(),
    }))
}

/// Whether `Url` would leave `target` as it is: only bytes that no part of a URL
/// percent-encodes, `%` only before two hex digits and never as an encoded dot (`%2e`, which
/// the URL standard reads as `.`), and no `.` or `..` segment in the path.
fn is_normal(target: &str) -> bool {
    let bytes = target.as_bytes();
    if bytes.first() != Some(&b'/') {
        return false;
    }
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&()*+,;=:@/?".contains(&b);
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'%' => match bytes.get(at + 1..at + 3) {
                Some([high, low]) if high.is_ascii_hexdigit() && low.is_ascii_hexdigit() => {
                    if *high == b'2' && low.eq_ignore_ascii_case(&b'e') {
                        return false;
                    }
                    at += 2;
                }
                _ => return false,
            },
            byte if plain(byte) => {}
            _ => return false,
        }
        at += 1;
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    !path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
}

/// `Example.COM:8080` → `Example.COM`; `[::1]:80` → `[::1]`.
fn host_without_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(colon) if !host[colon..].contains(']') => &host[..colon],
        _ => host,
    }
}

/// The value of the first field called `name`.
fn field_value<'b>(fields: &[httparse::Header<'b>], name: &str) -> Option<&'b [u8]> {
    fields
        .iter()
        .find(|field| field.name.eq_ignore_ascii_case(name))
        .map(|field| trimmed(field.value))
}

#[cfg(test)]
mod tests {
    use common::parse::parse_head;
    use proptest::prelude::*;

    use super::*;

    fn split(raw: &str) -> (Option<String>, Option<String>) {
        let head = parse_head(raw.as_bytes()).unwrap().unwrap();
        let (origin, authority) = split_target(&head);
        (origin.map(Cow::into_owned), authority.map(str::to_string))
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
        assert_eq!(host_without_port("Example.COM:8080"), "Example.COM");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
    }

    #[test]
    fn paths_are_normalised_before_routing() {
        for (target, normal) in [
            ("/public/../admin/%2e%2e/x", "/x"),
            ("/a/./b/../c?q=1", "/a/c?q=1"),
            ("/a\\..\\b", "/b"),
            ("/a b", "/a%20b"),
        ] {
            assert_eq!(normalise(target).unwrap(), normal, "{target}");
        }
        // The usual target is passed as it is, without an allocation.
        assert!(matches!(
            normalise("/api/v1/users?id=7&x=%41"),
            Ok(Cow::Borrowed(_))
        ));
    }

    proptest! {
        /// The shortcut agrees with the `url` crate on every target it takes.
        #[test]
        fn the_shortcut_agrees_with_url(target in "/[a-z./%2eE?'\\\\#&= ]{0,12}") {
            let slow = Url::parse(&format!("http://0.0.0.0{target}")).ok().map(|url| {
                match url.query() {
                    Some(query) => format!("{}?{query}", url.path()),
                    None => url.path().to_string(),
                }
            });
            if is_normal(&target) {
                prop_assert_eq!(Some(target.clone()), slow);
            }
        }
    }
}
