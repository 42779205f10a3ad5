//! The header fields a proxy changes on the way through, and the upstream request's head
//! written as bytes.
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
//! hop). Everything else passes *as received*: names in their case, values as they were, in
//! their order, as nginx passes them. The bytes come from `common`'s parser, which refused CR,
//! LF and NUL in them; the configured ones were checked when the file was read. So no value
//! can start a header line of its own, and the head is written straight into a buffer that
//! the connection keeps from one request to the next: no map of owned names and values.

use std::io::Write;
use std::net::IpAddr;

use common::parse::{BodyFraming, ConnectionOptions, Version, trimmed};
use common::response::HeadWriter;

/// This hop, as `Via` and `Server` name it (RFC 9110 §7.6.3).
pub(crate) const VIA_NAME: &str = "step07-reverse-proxy";

/// Whether a field is hop-by-hop whatever `Connection` says.
pub(crate) fn is_hop_by_hop(name: &str) -> bool {
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

/// Whether `name` is one of the field names listed in the `Connection` fields among `fields`
/// (RFC 9110 §7.6.1: those fields are hop-by-hop too). Scans the values each time: a
/// `Connection` field naming others is rare, and a list would cost an allocation per message.
pub(crate) fn named_by_connection<'f>(
    fields: impl Iterator<Item = (&'f str, &'f [u8])>,
    name: &str,
) -> bool {
    fields
        .filter(|(field, _)| field.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, value)| value.split(|&b| b == b','))
        .any(|token| trimmed(token).eq_ignore_ascii_case(name.as_bytes()))
}

/// A parsed field as a name and a value.
pub(crate) fn pair<'b>(field: &httparse::Header<'b>) -> (&'b str, &'b [u8]) {
    (field.name, field.value)
}

/// The `Connection` options of a message's fields.
pub(crate) fn connection_options(fields: &[httparse::Header<'_>]) -> ConnectionOptions {
    let mut options = ConnectionOptions::default();
    for field in fields {
        if field.name.eq_ignore_ascii_case("connection") {
            options.add(field.value);
        }
    }
    options
}

/// `HTTP/1.0` → `1.0`: the protocol a hop received, as `Via` writes it.
pub(crate) fn via_version(version: Version) -> &'static str {
    match version {
        Version::Http10 => "1.0",
        Version::Http11 => "1.1",
    }
}

/// What the upstream request's fields depend on, besides the client's fields.
pub(crate) struct Forwarding<'a> {
    pub client_ip: IpAddr,
    /// The host the client asked for (`Host`, or an absolute-form target's authority).
    pub client_host: Option<&'a [u8]>,
    /// The `Host` to send; `None` when it is the upstream's address, written per attempt.
    pub host: Option<&'a [u8]>,
    /// The client's protocol version, for `Via`.
    pub version: Version,
    /// The body's framing: the upstream gets our `Content-Length` or chunks.
    pub body: BodyFraming,
    /// The client's `Upgrade` value, when it asks to switch protocols: passed on with
    /// `Connection: upgrade`, so that the upstream may answer 101.
    pub upgrade: Option<&'a [u8]>,
}

/// Writes the upstream request's head into `out`: the request line (always HTTP/1.1, whatever
/// the client spoke, as nginx's `proxy_http_version 1.1`), `Host`, the client's end-to-end
/// fields as received, ours, and the framing; everything but the blank line that ends it, so
/// that a per-upstream `Host` can still follow (see [`end_head`]).
pub(crate) fn write_request_head(
    out: &mut Vec<u8>,
    method: &str,
    target: &str,
    fields: &[httparse::Header<'_>],
    forwarding: &Forwarding<'_>,
) {
    out.clear();
    // Room for the client's head and our fields at once, rather than growth by steps.
    out.reserve(fields.len() * 64 + 512);
    let mut head = HeadWriter::request(out, method.as_bytes(), target.as_bytes());
    if let Some(host) = forwarding.host {
        head.field(b"Host", host);
    }
    for field in fields {
        let (name, value) = (field.name, trimmed(field.value));
        // Lists that each hop extends: written below, with our entry last.
        if name.eq_ignore_ascii_case("x-forwarded-for") || name.eq_ignore_ascii_case("via") {
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
            || named_by_connection(fields.iter().map(pair), name)
        {
            continue;
        }
        head.field(name.as_bytes(), value);
    }
    // `X-Forwarded-For: <what the client sent>, <the client>`. Writing to a Vec cannot fail.
    push_extended(&mut head, b"X-Forwarded-For", fields, |out| {
        let _ = write!(out, "{}", forwarding.client_ip);
    });
    if let Some(host) = forwarding.client_host {
        head.field(b"X-Forwarded-Host", host);
    }
    head.field(b"X-Forwarded-Proto", b"http");
    push_extended(&mut head, b"Via", fields, |out| {
        out.extend_from_slice(via_version(forwarding.version).as_bytes());
        out.push(b' ');
        out.extend_from_slice(VIA_NAME.as_bytes());
    });
    match forwarding.body {
        BodyFraming::None => {}
        BodyFraming::Length(length) => {
            head.content_length(length);
        }
        BodyFraming::Chunked => {
            head.chunked();
        }
    }
    if let Some(protocol) = forwarding.upgrade {
        head.field(b"Upgrade", protocol);
        head.field(b"Connection", b"upgrade");
    }
}

/// Ends a head that [`write_request_head`] wrote (truncated to `len` first, its length then,
/// so that a retry can end it again): the upstream's own address as `Host` if that is the
/// host to send, then the blank line.
pub(crate) fn end_head(out: &mut Vec<u8>, len: usize, upstream_host: Option<&str>) {
    out.truncate(len);
    let mut head = HeadWriter::resume(out);
    if let Some(host) = upstream_host {
        head.field(b"Host", host.as_bytes());
    }
    head.end();
}

/// A list field that each hop extends: `name: <the values of the client's fields called
/// name, in order>, <ours>`, as one line.
fn push_extended(
    head: &mut HeadWriter<'_>,
    name: &[u8],
    fields: &[httparse::Header<'_>],
    ours: impl FnOnce(&mut Vec<u8>),
) {
    head.field_with(name, |out| {
        for field in fields
            .iter()
            .filter(|field| field.name.as_bytes().eq_ignore_ascii_case(name))
        {
            out.extend_from_slice(trimmed(field.value));
            out.extend_from_slice(b", ");
        }
        ours(out);
    });
}

#[cfg(test)]
mod tests {
    use common::parse::{field_slots, fields};

    use super::*;

    /// The head sent upstream for the request `raw`, with `host` as the `Host` to send.
    fn forwarded(raw: &str, host: Option<&str>) -> String {
        let mut slots = field_slots();
        let fields = fields(raw.as_bytes(), &mut slots);
        let forwarding = Forwarding {
            client_ip: "10.0.0.7".parse().unwrap(),
            client_host: Some(b"site.test"),
            host: host.map(str::as_bytes),
            version: Version::Http11,
            body: BodyFraming::None,
            upgrade: None,
        };
        let mut out = Vec::new();
        write_request_head(&mut out, "GET", "/x", fields, &forwarding);
        let len = out.len();
        end_head(&mut out, len, None);
        String::from_utf8(out).unwrap()
    }

    fn lines(head: &str) -> Vec<&str> {
        head.trim_end().split("\r\n").collect()
    }

    #[test]
    fn hop_by_hop_fields_stop_here_and_the_rest_pass_as_received() {
        let head = forwarded(
            "GET / HTTP/1.1\r\nHost: site.test\r\nConnection: keep-alive, X-Secret\r\n\
             Keep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X\r\nUpgrade: websocket\r\n\
             Proxy-Authorization: Basic x\r\nProxy-Connection: close\r\nX-Secret: 1\r\n\
             accept: text/html\r\nCookie: a=1\r\nCookie: b=2\r\nX-MiXeD-Case:  v  \r\n\r\n",
            Some("site.test"),
        );
        let lines = lines(&head);
        assert_eq!(lines[0], "GET /x HTTP/1.1");
        assert_eq!(lines[1], "Host: site.test");
        for kept in [
            "accept: text/html",
            "Cookie: a=1",
            "Cookie: b=2",
            "X-MiXeD-Case: v",
        ] {
            assert!(lines.contains(&kept), "{kept} missing: {lines:?}");
        }
        for gone in [
            "connection:",
            "keep-alive",
            "te:",
            "trailer",
            "upgrade",
            "proxy-",
            "x-secret",
        ] {
            assert!(
                !lines
                    .iter()
                    .any(|l| l.to_ascii_lowercase().starts_with(gone)),
                "{gone} passed: {lines:?}"
            );
        }
        assert!(head.ends_with("\r\n\r\n") && !head.ends_with("\r\n\r\n\r\n"));
    }

    #[test]
    fn forwarding_fields_are_ours() {
        let head = forwarded(
            "GET / HTTP/1.1\r\nHost: site.test\r\nX-Forwarded-For: 1.2.3.4\r\n\
             X-Forwarded-For: 5.6.7.8\r\nX-Forwarded-Host: evil.test\r\n\
             X-Forwarded-Proto: https\r\nVia: 1.0 other\r\nContent-Length: 5\r\n\
             Expect: 100-continue\r\n\r\n",
            Some("internal:8080"),
        );
        let lines = lines(&head);
        for expected in [
            "Host: internal:8080",
            "X-Forwarded-For: 1.2.3.4, 5.6.7.8, 10.0.0.7",
            "X-Forwarded-Host: site.test",
            "X-Forwarded-Proto: http",
            "Via: 1.0 other, 1.1 step07-reverse-proxy",
        ] {
            assert!(lines.contains(&expected), "{expected} missing: {lines:?}");
        }
        for gone in ["evil.test", "https", "Content-Length", "Expect"] {
            assert!(!head.contains(gone), "{gone} passed: {head}");
        }
    }

    #[test]
    fn fields_with_an_underscore_stop_here() {
        let head = forwarded(
            "POST / HTTP/1.1\r\nHost: site.test\r\nTransfer_Encoding: chunked\r\n\
             X_Api_Key: 1\r\nX-Api-Key: 2\r\nContent-Length: 5\r\n\r\n",
            Some("site.test"),
        );
        assert!(
            !head.contains("Transfer_Encoding") && !head.contains("X_Api_Key"),
            "{head}"
        );
        assert!(head.contains("\r\nX-Api-Key: 2\r\n"), "{head}");
    }

    #[test]
    fn the_framing_and_an_upgrade_are_ours_and_host_can_come_last() {
        let forwarding = Forwarding {
            client_ip: "::1".parse().unwrap(),
            client_host: None,
            host: None,
            version: Version::Http10,
            body: BodyFraming::Chunked,
            upgrade: Some(b"websocket"),
        };
        let mut out = Vec::new();
        write_request_head(&mut out, "POST", "/up", &[], &forwarding);
        let len = out.len();
        end_head(&mut out, len, Some("127.0.0.1:9001"));
        // A retry ends it again, for another upstream.
        end_head(&mut out, len, Some("127.0.0.1:9002"));
        let head = String::from_utf8(out).unwrap();
        let lines = lines(&head);
        for expected in [
            "POST /up HTTP/1.1",
            "X-Forwarded-For: ::1",
            "Via: 1.0 step07-reverse-proxy",
            "Transfer-Encoding: chunked",
            "Upgrade: websocket",
            "Connection: upgrade",
            "Host: 127.0.0.1:9002",
        ] {
            assert!(lines.contains(&expected), "{expected} missing: {lines:?}");
        }
        assert!(!head.contains("9001"), "{head}");
    }
}
