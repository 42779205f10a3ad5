//! Broken and hostile upstream answers, and what the client sees of them through the real
//! binary: a head over 8 KiB (`MAX_UPSTREAM_HEAD_BYTES`), too many fields or a megabyte of
//! head, a garbage status line, a header line without a colon, no head at all (HTTP/0.9
//! style), no answer at all, an unreadable `Content-Length`: 502, with the client's connection
//! kept, and the proxy goes on serving that upstream's good answers and the other groups.
//!
//! And the answer side of smuggling: CR or NUL inside a field value, or a folded line, never
//! reach the client as a header line of their own (502); an answer with both `Content-Length`
//! and `Transfer-Encoding` is a 502, never passed on with a length that is not its body's; an
//! upstream that sends two answers for one request never gets its second one delivered to the
//! next request.
//!
//! The upstreams are `testkit::recorder::Recorder`s answering raw bytes chosen by the path.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::Proxy;
use testkit::Client;
use testkit::recorder::{Answer, Recorded, Recorder};
use testkit::upstream::Upstream;

/// An answer that closes the connection after these bytes. Those that parse say so with
/// `Connection: close` (see [`ok_with`]), as a server does: otherwise the proxy would keep
/// the connection for the next request, and lose the race with our close.
fn closing(bytes: impl Into<Vec<u8>>) -> Answer {
    Answer {
        bytes: bytes.into(),
        close: true,
    }
}

/// A `200` with `fields` and the body `ok`, `Connection: close`.
fn ok_with(fields: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\n{fields}Connection: close\r\nContent-Length: 2\r\n\r\nok")
        .into_bytes()
}

/// What the hostile upstream sends, by the request's path.
fn hostile(request: &Recorded) -> Answer {
    let path = request.target.as_str();
    match path {
        "/oversized" => closing(ok_with(&format!("X-Big: {}\r\n", "a".repeat(9 * 1024)))),
        "/just-under" => closing(ok_with(&format!("X-Big: {}\r\n", "a".repeat(7 * 1024)))),
        "/many-fields" => closing(ok_with(
            &(0..150)
                .map(|i| format!("X-Field-{i}: {i}\r\n"))
                .collect::<String>(),
        )),
        "/megabyte-head" => closing(ok_with(&format!("X-Big: {}\r\n", "a".repeat(1 << 20)))),
        "/garbage-status" => closing("HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\nok"),
        "/not-http" => closing("SSH-2.0-OpenSSH_9.6\r\n"),
        "/bad-field" => closing(ok_with("No colon here\r\n")),
        "/http09" => closing("hello, no head at all\n"),
        "/nothing" => closing(""),
        "/bad-length" => closing("HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nok"),
        "/two-lengths" => {
            closing("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok")
        }
        "/cr-in-value" => closing(ok_with("X-Bad: a\rSet-Cookie: evil=1\r\n")),
        "/nul-in-value" => closing(ok_with("X-Bad: a\0Set-Cookie: evil=1\r\n")),
        "/folded" => closing(ok_with("X-Bad: a\r\n Set-Cookie: evil=1\r\n")),
        "/both-framings" => closing(
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\n\
             2\r\nok\r\n0\r\n\r\n",
        ),
        "/two-answers" => Answer {
            bytes: [
                &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"[..],
                b"HTTP/1.1 200 OK\r\nX-Second: smuggled\r\nContent-Length: 2\r\n\r\nok",
            ]
            .concat(),
            close: false,
        },
        _ => Answer {
            bytes: format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\nfine {path}",
                5 + path.len()
            )
            .into_bytes(),
            close: false,
        },
    }
}

/// The hostile upstream behind `/`, and a good one behind `/good/`. No ejection: every bad
/// answer must be judged on its own, not hidden behind "no upstream available".
fn config(hostile: SocketAddr, good: &Upstream) -> String {
    format!(
        "[[route]]\nprefix = \"/\"\ngroup = \"hostile\"\n\n\
         [[route]]\nprefix = \"/good/\"\ngroup = \"good\"\n\n\
         [group.hostile]\nupstreams = [\"{hostile}\"]\n\
         outlier = {{ consecutive_failures = 1000 }}\n\n\
         [group.good]\nupstreams = [\"{}\"]\n",
        good.addr()
    )
}

/// Sends `GET path` with `Connection: close` and returns everything the proxy sent.
fn raw_get(proxy: &Proxy, path: &str) -> String {
    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw).into_owned()
}

/// Checks that the proxy goes on serving: the hostile upstream's good answers, and the good
/// group.
fn still_serving(proxy: &Proxy, after: &str) {
    let response = proxy.get("/fine");
    assert_eq!(response.status, 200, "after {after}");
    assert_eq!(response.text(), "fine /fine", "after {after}");
    let response = proxy.get("/good/page");
    assert_eq!(response.status, 200, "after {after}");
}

#[test]
fn a_broken_answer_head_is_a_502_and_the_proxy_carries_on() {
    let recorder = Recorder::start_with(hostile);
    let good = Upstream::start("good");
    let proxy = Proxy::start(&config(recorder.addr(), &good), 1, &["--quiet"]);
    for path in [
        "/oversized",
        "/many-fields",
        "/megabyte-head",
        "/garbage-status",
        "/not-http",
        "/bad-field",
        "/http09",
        "/nothing",
        "/bad-length",
        "/two-lengths",
        // The chunks would decide, but a Content-Length beside them, passed on, would tell the
        // client a length that is not the body's (nginx: 502 too).
        "/both-framings",
    ] {
        // On a kept-alive connection: the 502 is the proxy's own answer, and the client may
        // go on using the connection.
        let mut client = Client::connect(proxy.addr());
        client.send(format!("GET {path} HTTP/1.1\r\nHost: site.test\r\n\r\n").as_bytes());
        let response = client.read_response();
        assert_eq!(response.status, 502, "{path}: {}", response.text());
        assert!(
            response.text().starts_with("502 Bad Gateway"),
            "{path}: {}",
            response.text()
        );
        let next = client.get("/fine");
        assert_eq!(
            (next.status, next.text().as_str()),
            (200, "fine /fine"),
            "{path}"
        );
        still_serving(&proxy, path);
    }
    // The limit is 8 KiB of head, not less: a 7 KiB field passes.
    let response = proxy.get("/just-under");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-big").map(str::len), Some(7 * 1024));
    proxy.server.assert_no_panic();
}

#[test]
fn injected_lines_and_second_answers_never_reach_the_client() {
    let recorder = Recorder::start_with(hostile);
    let good = Upstream::start("good");
    let proxy = Proxy::start(&config(recorder.addr(), &good), 1, &["--quiet"]);
    for path in ["/cr-in-value", "/nul-in-value", "/folded"] {
        let raw = raw_get(&proxy, path);
        let head = raw.split("\r\n\r\n").next().unwrap_or_default();
        assert!(head.starts_with("HTTP/1.1 502 "), "{path}: {raw:?}");
        for line in head.split("\r\n") {
            assert!(
                !line.to_ascii_lowercase().starts_with("set-cookie")
                    && !line.contains(['\r', '\n', '\0']),
                "{path}: a line of its own reached the client: {raw:?}"
            );
        }
        still_serving(&proxy, path);
    }

    // Two answers to one request: the second one is never taken for the next request's.
    for _ in 0..3 {
        let mut client = Client::connect(proxy.addr());
        let response = client.get("/two-answers");
        assert_eq!((response.status, response.text().as_str()), (200, "ok"));
        assert_eq!(response.header("x-second"), None);
        for path in ["/after-two", "/fine"] {
            let next = client.get(path);
            assert_eq!(next.status, 200, "{path}");
            assert_eq!(next.text(), format!("fine {path}"), "{path}: {next:?}");
            assert_eq!(next.header("x-second"), None, "{path}: {next:?}");
        }
    }
    proxy.server.assert_no_panic();
}
