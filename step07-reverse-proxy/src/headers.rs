//! The header fields a proxy changes on the way through, both ways.
//!
//! Some fields describe one connection, not the message (*hop-by-hop*): `Connection` and every
//! field it names, `Keep-Alive`, `TE`, `Transfer-Encoding`, `Upgrade` and `Proxy-Connection`
//! (RFC 9110 §7.6.1), and, from RFC 2616's older list, `Trailer` and the other `Proxy-*`
//! fields. They are about the client's connection to us, or ours to
//! the upstream, so a proxy drops them and sets its own. Passing `Transfer-Encoding` or a
//! stale `Content-Length` along would be worse than wrong: the body's framing is how both
//! ends find where the next message starts, and disagreeing about it is request smuggling.
//! So the framing of every message we send is ours, from what we actually send; and a field
//! whose name has a `_` stays here too, because some upstreams read it as the same name with
//! a `-` (`Transfer_Encoding`).
//!
//! What a proxy adds: `X-Forwarded-For` (the client's address, after any the client sent),
//! `X-Forwarded-Host` and `X-Forwarded-Proto` (what the client asked for), and `Via` (this
//! hop). Every value we send goes through `HeaderValue`, which refuses CR, LF and other control
//! bytes, so no value, not even one from the configuration, can start a header line of its own.

use std::net::IpAddr;

use common::parse::{Version, for_each_field};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

/// This hop, as `Via` names it (RFC 9110 §7.6.3: the protocol version received, a name).
pub const VIA_NAME: &str = "step07-reverse-proxy";

/// Whether a field is hop-by-hop whatever `Connection` says.
fn is_hop_by_hop(name: &str) -> bool {
    const FIELDS: [&str; 6] = [
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    FIELDS.iter().any(|field| name.eq_ignore_ascii_case(field))
        || name
            .get(..6)
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case("proxy-"))
}

/// The field names a `Connection` header lists (RFC 9110 §7.6.1), lower case.
fn connection_options<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    values
        .flat_map(|value| value.split(|&b| b == b','))
        .map(|token| String::from_utf8_lossy(token.trim_ascii()).to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect()
}

/// What the upstream request's fields depend on, besides the client's fields.
pub struct Forwarding<'a> {
    pub client_ip: IpAddr,
    /// The host the client asked for (`Host`, or an absolute-form target's authority).
    pub client_host: Option<&'a str>,
    /// The `Host` to send; `None` when it is the upstream's address, set once it is chosen.
    pub host: Option<&'a str>,
    pub version: Version,
}

/// The fields to send upstream for a request whose head is `head` (which `parse_head`
/// accepted): the client's end-to-end fields, then ours.
///
/// # Errors
///
/// A field that cannot be sent (cannot happen after `parse_head`, which refuses what
/// `HeaderValue` refuses; kept as an error, not a panic, all the same).
pub fn upstream_request(head: &[u8], forwarding: &Forwarding<'_>) -> Result<HeaderMap, String> {
    let mut fields: Vec<(&str, &[u8])> = Vec::with_capacity(16);
    for_each_field(head, |name, value| fields.push((name, value)));
    let options = connection_options(
        fields
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
            .map(|(_, value)| *value),
    );
    let mut forwarded_for = Vec::new();
    let mut via = Vec::new();
    let mut headers = HeaderMap::with_capacity(fields.len() + 5);
    for (name, value) in fields {
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded_for.push(value);
            continue;
        }
        if name.eq_ignore_ascii_case("via") {
            via.push(value);
            continue;
        }
        // Ours to set: the host, the body's framing (and the `Expect` we answered ourselves),
        // and the X-Forwarded fields, which a client must not be able to choose.
        const REPLACED: [&str; 5] = [
            "host",
            "content-length",
            "expect",
            "x-forwarded-host",
            "x-forwarded-proto",
        ];
        // A `_` in a name is legal, but servers that map fields to variables (CGI's
        // `HTTP_TRANSFER_ENCODING`, WSGI, some frameworks) read `Transfer_Encoding` as
        // `Transfer-Encoding`: passed on, it would frame the body differently at the upstream
        // than here, which is request smuggling. nginx drops such fields too
        // (`underscores_in_headers off`).
        if name.contains('_')
            || is_hop_by_hop(name)
            || REPLACED.iter().any(|r| name.eq_ignore_ascii_case(r))
            || options
                .iter()
                .any(|option| name.eq_ignore_ascii_case(option))
        {
            continue;
        }
        headers.append(header_name(name)?, header_value(value)?);
    }
    if let Some(host) = forwarding.host {
        headers.insert("host", header_value(host.as_bytes())?);
    }
    let client = forwarding.client_ip.to_string();
    forwarded_for.push(client.as_bytes());
    headers.insert(
        "x-forwarded-for",
        header_value(&forwarded_for.join(&b", "[..]))?,
    );
    if let Some(host) = forwarding.client_host {
        headers.insert("x-forwarded-host", header_value(host.as_bytes())?);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    let hop = format!("{} {VIA_NAME}", via_version(forwarding.version));
    via.push(hop.as_bytes());
    headers.insert("via", header_value(&via.join(&b", "[..]))?);
    Ok(headers)
}

fn header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("invalid header name {name:?}"))
}

fn header_value(value: &[u8]) -> Result<HeaderValue, String> {
    HeaderValue::from_bytes(value).map_err(|_| "invalid header value".to_string())
}

fn via_version(version: Version) -> &'static str {
    match version {
        Version::Http10 => "1.0",
        Version::Http11 => "1.1",
    }
}

/// How the body of a response to the client is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (a `HEAD`, a 204 or 304): the `Content-Length` the body would have, if known.
    None(Option<u64>),
    Length(u64),
    /// Length unknown, HTTP/1.1 client: `Transfer-Encoding: chunked`.
    Chunked,
    /// Length unknown, HTTP/1.0 client: the body ends when we close the connection.
    UntilClose,
}

/// What goes into the response head besides the upstream's end-to-end fields.
pub struct ResponseHead<'a> {
    pub status: StatusCode,
    /// The version the upstream answered with, for `Via`.
    pub version: reqwest::Version,
    pub framing: BodyFraming,
    pub keep_alive: bool,
    /// `X-Upstream`, when the configuration asks for it.
    pub upstream: Option<&'a str>,
}

/// Writes the head of the response to the client: our status line, `Server` and `Date` (as
/// nginx replaces an upstream's), the upstream's end-to-end fields, `Via`, and our framing
/// and `Connection`.
pub fn write_response_head(head: &ResponseHead<'_>, upstream: &HeaderMap, out: &mut Vec<u8>) {
    let status = head.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\nServer: ");
    out.extend_from_slice(VIA_NAME.as_bytes());
    out.extend_from_slice(b"\r\nDate: ");
    out.extend_from_slice(&common::date::now());
    let options = connection_options(
        upstream
            .get_all("connection")
            .iter()
            .map(HeaderValue::as_bytes),
    );
    let mut via = Vec::new();
    for (name, value) in upstream {
        let name = name.as_str();
        if name == "via" {
            via.push(value.as_bytes());
            continue;
        }
        if is_hop_by_hop(name)
            || matches!(name, "server" | "date" | "content-length")
            || options.iter().any(|option| option == name)
        {
            continue;
        }
        push_field(out, name.as_bytes(), value.as_bytes());
    }
    let version = if head.version == reqwest::Version::HTTP_10 {
        "1.0"
    } else {
        "1.1"
    };
    let hop = format!("{version} {VIA_NAME}");
    via.push(hop.as_bytes());
    push_field(out, b"Via", &via.join(&b", "[..]));
    if let Some(upstream) = head.upstream {
        push_field(out, b"X-Upstream", upstream.as_bytes());
    }
    match head.framing {
        BodyFraming::None(Some(length)) | BodyFraming::Length(length) => {
            push_field(out, b"Content-Length", length.to_string().as_bytes());
        }
        BodyFraming::Chunked => push_field(out, b"Transfer-Encoding", b"chunked"),
        BodyFraming::None(None) | BodyFraming::UntilClose => {}
    }
    let connection: &[u8] = if head.keep_alive {
        b"keep-alive"
    } else {
        b"close"
    };
    push_field(out, b"Connection", connection);
    out.extend_from_slice(b"\r\n\r\n");
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(raw: &str, host: Option<&str>) -> HeaderMap {
        let forwarding = Forwarding {
            client_ip: "10.0.0.7".parse().unwrap(),
            client_host: Some("site.test"),
            host,
            version: Version::Http11,
        };
        upstream_request(raw.as_bytes(), &forwarding).unwrap()
    }

    #[test]
    fn hop_by_hop_fields_stop_here() {
        let headers = forwarded(
            "GET / HTTP/1.1\r\nHost: site.test\r\nConnection: keep-alive, X-Secret\r\n\
             Keep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X\r\nUpgrade: websocket\r\n\
             Proxy-Authorization: Basic x\r\nProxy-Connection: close\r\nX-Secret: 1\r\n\
             Accept: text/html\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
            Some("site.test"),
        );
        for gone in [
            "connection",
            "keep-alive",
            "te",
            "trailer",
            "upgrade",
            "proxy-authorization",
            "proxy-connection",
            "x-secret",
        ] {
            assert!(!headers.contains_key(gone), "{gone} passed: {headers:?}");
        }
        assert_eq!(headers["accept"], "text/html");
        assert_eq!(headers.get_all("cookie").iter().count(), 2);
    }

    #[test]
    fn forwarding_fields_are_ours() {
        let headers = forwarded(
            "GET / HTTP/1.1\r\nHost: site.test\r\nX-Forwarded-For: 1.2.3.4\r\n\
             X-Forwarded-Host: evil.test\r\nX-Forwarded-Proto: https\r\nVia: 1.0 other\r\n\
             Content-Length: 5\r\nExpect: 100-continue\r\n\r\n",
            Some("internal:8080"),
        );
        assert_eq!(headers["host"], "internal:8080");
        assert_eq!(headers["x-forwarded-for"], "1.2.3.4, 10.0.0.7");
        assert_eq!(headers["x-forwarded-host"], "site.test");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["via"], "1.0 other, 1.1 step07-reverse-proxy");
        assert!(!headers.contains_key("content-length") && !headers.contains_key("expect"));
    }

    #[test]
    fn fields_with_an_underscore_stop_here() {
        let headers = forwarded(
            "POST / HTTP/1.1\r\nHost: site.test\r\nTransfer_Encoding: chunked\r\n\
             X_Api_Key: 1\r\nX-Api-Key: 2\r\nContent-Length: 5\r\n\r\n",
            Some("site.test"),
        );
        assert!(!headers.contains_key("transfer_encoding"), "{headers:?}");
        assert!(!headers.contains_key("x_api_key"), "{headers:?}");
        assert_eq!(headers["x-api-key"], "2");
    }

    #[test]
    fn no_value_can_carry_a_line_break() {
        let forwarding = Forwarding {
            client_ip: "10.0.0.7".parse().unwrap(),
            client_host: None,
            host: Some("a\r\nX-Injected: 1"),
            version: Version::Http11,
        };
        assert!(upstream_request(b"GET / HTTP/1.0\r\n\r\n", &forwarding).is_err());
    }

    #[test]
    fn the_response_head_is_ours_around_the_upstreams_fields() {
        let mut upstream = HeaderMap::new();
        for (name, value) in [
            ("content-type", "text/plain"),
            ("server", "upstream/1.0"),
            ("date", "Thu, 01 Jan 1970 00:00:00 GMT"),
            ("transfer-encoding", "chunked"),
            ("connection", "close, x-hop"),
            ("x-hop", "1"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
        ] {
            upstream.append(name, HeaderValue::from_static(value));
        }
        let head = ResponseHead {
            status: StatusCode::NOT_FOUND,
            version: reqwest::Version::HTTP_11,
            framing: BodyFraming::Length(12),
            keep_alive: true,
            upstream: Some("127.0.0.1:9001"),
        };
        let mut out = Vec::new();
        write_response_head(&head, &upstream, &mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.trim_end().split("\r\n").collect();
        assert_eq!(lines[0], "HTTP/1.1 404 Not Found");
        for expected in [
            "Server: step07-reverse-proxy",
            "content-type: text/plain",
            "set-cookie: a=1",
            "set-cookie: b=2",
            "Via: 1.1 step07-reverse-proxy",
            "X-Upstream: 127.0.0.1:9001",
            "Content-Length: 12",
            "Connection: keep-alive",
        ] {
            assert!(lines.contains(&expected), "{expected} missing: {lines:?}");
        }
        for gone in ["upstream/1.0", "chunked", "x-hop", "1970"] {
            assert!(!text.contains(gone), "{gone} passed: {text}");
        }
        assert!(text.ends_with("\r\n\r\n"));
    }
}
