//! Request smuggling through the proxy: the classic framing tricks (CL.TE, TE.CL, obfuscated
//! `Transfer-Encoding`, duplicate `Content-Length`, a body cut short, a request hidden in a
//! body) and CR, LF or NUL in field values, sent by a client through the real binary to an
//! upstream that records every byte and reads it strictly (`testkit::recorder`).
//!
//! What it proves: each trick gets the proxy's 400 (or 501), or is forwarded as one
//! well-framed request; the upstream never reads a request that the client did not send as a
//! request of its own (no `/smuggled` ever reaches it), never a field value with a line break
//! or NUL in it, never an ambiguous framing; and the next request, on the same client
//! connection where the proxy keeps it and on a fresh one, reaches the upstream whole, on the
//! pooled upstream connection when the last exchange left it usable.

mod support;

use std::net::Shutdown;
use std::time::Duration;

use support::{Proxy, one_group};
use testkit::Client;
use testkit::recorder::{Recorded, Recorder};

/// The request every trick tries to slip past the proxy.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: site.test\r\n\r\n";

/// What the client sees first.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Seen {
    /// This status; the connection stays open only for a status below 400.
    Status(u16),
    /// The connection closes without an answer.
    Closed,
}

/// One trick: the bytes a client sends, what it sees, and what the upstream must receive.
struct Case {
    name: &'static str,
    send: String,
    /// Close our sending side after `send` (a client that leaves mid-body).
    half_close: bool,
    seen: Seen,
    /// The requests the upstream reads whole: method, target, body.
    forwarded: Vec<(&'static str, &'static str, Vec<u8>)>,
}

fn case(name: &'static str, send: String, seen: Seen) -> Case {
    Case {
        name,
        send,
        half_close: false,
        seen,
        forwarded: Vec::new(),
    }
}

impl Case {
    fn forwards(mut self, method: &'static str, target: &'static str, body: &str) -> Case {
        self.forwarded
            .push((method, target, body.as_bytes().to_vec()));
        self
    }

    fn then_leaves(mut self) -> Case {
        self.half_close = true;
        self
    }
}

/// `POST target` with these fields and body, as a client would write it by hand.
fn post(target: &str, fields: &str, body: &str) -> String {
    format!("POST {target} HTTP/1.1\r\nHost: site.test\r\n{fields}\r\n{body}")
}

fn chunk(data: &str) -> String {
    format!("{:x}\r\n{data}\r\n", data.len())
}

fn framing_tricks() -> Vec<Case> {
    let hidden = format!("0\r\n\r\n{SMUGGLED}");
    let length = |body: &str| format!("Content-Length: {}\r\n", body.len());
    vec![
        case(
            "CL.TE: Content-Length first, then Transfer-Encoding",
            post(
                "/cl-te",
                &format!("{}Transfer-Encoding: chunked\r\n", length(&hidden)),
                &hidden,
            ),
            Seen::Status(400),
        ),
        case(
            "TE.CL: Transfer-Encoding first, then a short Content-Length",
            post(
                "/te-cl",
                "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
                &format!("{}0\r\n\r\n", chunk(SMUGGLED)),
            ),
            Seen::Status(400),
        ),
        case(
            "TE.TE: a second Transfer-Encoding that is not chunked",
            post(
                "/te-te",
                &format!(
                    "Transfer-Encoding: chunked\r\nTransfer-Encoding: cow\r\n{}",
                    length(&hidden)
                ),
                &hidden,
            ),
            Seen::Status(400),
        ),
        case(
            "TE.TE: xchunked",
            post(
                "/te-x",
                &format!("Transfer-Encoding: xchunked\r\n{}", length(&hidden)),
                &hidden,
            ),
            Seen::Status(400),
        ),
        case(
            "TE.TE: white space before the colon",
            post(
                "/te-space",
                &format!("Transfer-Encoding : chunked\r\n{}", length(&hidden)),
                &hidden,
            ),
            Seen::Status(400),
        ),
        case(
            "TE.TE: a vertical tab before the value",
            post(
                "/te-vt",
                &format!("Transfer-Encoding:\x0bchunked\r\n{}", length(&hidden)),
                &hidden,
            ),
            Seen::Status(400),
        ),
        case(
            "TE.TE: Transfer-Encoding folded onto the previous line",
            post(
                "/te-fold",
                &format!(
                    "X-Pad: x\r\n Transfer-Encoding: chunked\r\n{}",
                    length(&hidden)
                ),
                &hidden,
            ),
            Seen::Status(400),
        ),
        case(
            "TE.TE: chunked twice",
            post(
                "/te-twice",
                "Transfer-Encoding: chunked, chunked\r\n",
                &hidden,
            ),
            Seen::Status(400),
        ),
        case(
            "TE: a coding before chunked, which the proxy does not decode",
            post("/te-gzip", "Transfer-Encoding: gzip, chunked\r\n", &hidden),
            Seen::Status(501),
        ),
        case(
            "TE in an HTTP/1.0 request",
            format!(
                "POST /te-10 HTTP/1.0\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\r\n{hidden}"
            ),
            Seen::Status(400),
        ),
        // Not a Transfer-Encoding to us, but one to any upstream that reads `_` as `-` (CGI,
        // WSGI): forwarded, it would frame the body as chunked there, and `/smuggled` would
        // become a request. nginx drops such fields (`underscores_in_headers off`).
        case(
            "Transfer_Encoding with an underscore",
            post(
                "/te-underscore",
                &format!("Transfer_Encoding: chunked\r\n{}", length(&hidden)),
                &hidden,
            ),
            Seen::Status(200),
        )
        .forwards("POST", "/te-underscore", &hidden),
        case(
            "TE: CHUNKED in capitals is chunked",
            post(
                "/te-caps",
                "Transfer-Encoding: CHUNKED\r\n",
                &format!("{}0\r\n\r\n", chunk("hello")),
            ),
            Seen::Status(200),
        )
        .forwards("POST", "/te-caps", "hello"),
        case(
            "two different Content-Lengths",
            post(
                "/cl-cl",
                &format!("Content-Length: 5\r\n{}", length(&hidden)),
                &hidden,
            ),
            Seen::Status(400),
        ),
        case(
            "a Content-Length list",
            post("/cl-list", "Content-Length: 5, 5\r\n", "hello"),
            Seen::Status(400),
        ),
        case(
            "a signed Content-Length",
            post("/cl-sign", "Content-Length: +5\r\n", "hello"),
            Seen::Status(400),
        ),
        case(
            "the same Content-Length twice is one length",
            post(
                "/cl-twice",
                "Content-Length: 5\r\nContent-Length: 5\r\n",
                "hello",
            ),
            Seen::Status(200),
        )
        .forwards("POST", "/cl-twice", "hello"),
        case(
            "a request hidden in a Content-Length body stays a body",
            post("/carrier", &length(SMUGGLED), SMUGGLED),
            Seen::Status(200),
        )
        .forwards("POST", "/carrier", SMUGGLED),
        case(
            "a request hidden in a chunked body stays a body",
            post(
                "/chunked-carrier",
                "Transfer-Encoding: chunked\r\n",
                &format!("{}0\r\n\r\n", chunk(SMUGGLED)),
            ),
            Seen::Status(200),
        )
        .forwards("POST", "/chunked-carrier", SMUGGLED),
        case(
            "trailer fields are not forwarded as fields",
            post(
                "/trailers",
                "Transfer-Encoding: chunked\r\n",
                &format!("{}0\r\nTransfer-Encoding: identity\r\n\r\n", chunk("hello")),
            ),
            Seen::Status(200),
        )
        .forwards("POST", "/trailers", "hello"),
        case(
            "a chunk not followed by CRLF",
            post(
                "/bad-chunk",
                "Transfer-Encoding: chunked\r\n",
                &format!("5\r\nhelloXX\r\n{hidden}"),
            ),
            Seen::Status(400),
        ),
        case(
            "a chunk size that overflows",
            post(
                "/huge-chunk",
                "Transfer-Encoding: chunked\r\n",
                &format!("10000000000000005\r\nhello\r\n{hidden}"),
            ),
            Seen::Status(400),
        ),
        case(
            "a negative chunk size",
            post(
                "/negative-chunk",
                "Transfer-Encoding: chunked\r\n",
                "-5\r\nhello\r\n",
            ),
            Seen::Status(400),
        ),
        case(
            "a body shorter than announced, then the client leaves",
            post("/short", "Content-Length: 100\r\n", "only ten b"),
            Seen::Closed,
        )
        .then_leaves(),
        case(
            "a chunked body without its last chunk, then the client leaves",
            post(
                "/short-chunked",
                "Transfer-Encoding: chunked\r\n",
                &chunk("hello"),
            ),
            Seen::Closed,
        )
        .then_leaves(),
        // Framed as the proxy reads it, this is two requests, the second the client's own:
        // both are forwarded, in order, each whole.
        case(
            "a chunked POST and a pipelined GET in one write",
            format!(
                "{}GET /piped HTTP/1.1\r\nHost: site.test\r\n\r\n",
                post(
                    "/before-piped",
                    "Transfer-Encoding: chunked\r\n",
                    &format!("{}0\r\n\r\n", chunk("hello"))
                )
            ),
            Seen::Status(200),
        )
        .forwards("POST", "/before-piped", "hello")
        .forwards("GET", "/piped", ""),
    ]
}

fn value_tricks() -> Vec<Case> {
    let get = |target: &str, field: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: site.test\r\n{field}\r\n\r\n")
    };
    vec![
        case(
            "a bare CR inside a value",
            get("/bare-cr", &format!("X-Note: a\r{SMUGGLED}")),
            Seen::Status(400),
        ),
        case(
            "an obs-fold continuation line",
            get("/obs-fold", "X-Note: a\r\n GET /smuggled HTTP/1.1"),
            Seen::Status(400),
        ),
        case(
            "NUL inside a value",
            get("/nul", "X-Note: a\0b"),
            Seen::Status(400),
        ),
        case(
            "a control byte inside a value",
            get("/control", "X-Note: a\x01b"),
            Seen::Status(400),
        ),
        // A bare LF ends a line, as nginx reads it: two fields, each forwarded on a line of
        // its own, ending in CRLF (the recorder refuses a bare LF).
        case(
            "a bare LF between two fields",
            get("/bare-lf", "X-Note: a\nX-Second: b"),
            Seen::Status(200),
        )
        .forwards("GET", "/bare-lf", ""),
    ]
}

/// Sends `case` on a fresh connection, checks what the client sees, and, where the connection
/// stays open, sends `GET /after` on it. The upstream must read exactly what `case` forwards,
/// then that `GET`.
fn run(proxy: &Proxy, recorder: &Recorder, case: &Case, number: usize) {
    let name = case.name;
    let before = recorder.requests().len();
    let mut client = Client::connect(proxy.addr());
    client.send(case.send.as_bytes());
    if case.half_close {
        let _ = client.stream().shutdown(Shutdown::Write);
    }
    let mut expected: Vec<(String, String, Vec<u8>)> = case
        .forwarded
        .iter()
        .map(|(method, target, body)| (method.to_string(), target.to_string(), body.clone()))
        .collect();
    match case.seen {
        Seen::Closed => assert!(
            client.closes_within(Duration::from_secs(10)),
            "{name}: expected a close without an answer"
        ),
        Seen::Status(status) => {
            for _ in 0..case.forwarded.len().max(1) {
                let response = client
                    .try_read_response(false)
                    .unwrap_or_else(|error| panic!("{name}: no answer: {error}"));
                assert_eq!(response.status, status, "{name}: {}", response.text());
            }
            if status >= 400 {
                assert!(
                    client.closes_within(Duration::from_secs(10)),
                    "{name}: the connection stays open after {status}"
                );
            } else {
                let after = format!("/after-{number}");
                let response = client.get(&after);
                assert_eq!(response.status, 200, "{name}: then {after}");
                assert_eq!(response.text(), format!("seen GET {after} 0\n"), "{name}");
                expected.push(("GET".into(), after, Vec::new()));
            }
        }
    }
    let seen: Vec<Recorded> = recorder.requests()[before..].to_vec();
    let summary: Vec<(String, String, Vec<u8>)> = seen
        .iter()
        .map(|r| (r.method.clone(), r.target.clone(), r.body.clone()))
        .collect();
    assert_eq!(
        summary,
        expected,
        "{name}: what the upstream read; raw: {:#?}",
        recorder.raw()
    );
    // A well-framed exchange leaves the upstream connection in the pool, and the next request
    // travels on it: the upstream read the next request where the last one ended.
    if case.seen == Seen::Status(200) {
        let connections: Vec<usize> = seen.iter().map(|r| r.connection).collect();
        assert!(
            connections.windows(2).all(|w| w[0] == w[1]),
            "{name}: a fresh upstream connection for the next request: {connections:?}"
        );
    }
    for request in &seen {
        assert_eq!(
            request.fields("content-length").len() + request.fields("transfer-encoding").len(),
            usize::from(!request.body.is_empty() || request.method == "POST"),
            "{name}: one framing field: {}",
            request.head
        );
    }
}

/// Checks the upstream's view after every case: nothing smuggled, nothing refused, and a
/// fresh client connection still gets through.
fn check_upstream(proxy: &Proxy, recorder: &Recorder, cases: &[Case]) {
    for (number, case) in cases.iter().enumerate() {
        run(proxy, recorder, case, number);
        assert!(
            recorder.errors().is_empty(),
            "{}: the upstream could not read what it got: {:#?}",
            case.name,
            recorder.errors()
        );
        let fresh = format!("/fresh-{number}");
        let response = proxy.get(&fresh);
        assert_eq!(response.status, 200, "{}: then {fresh}", case.name);
        assert_eq!(response.text(), format!("seen GET {fresh} 0\n"));
    }
    // A request the proxy gave up on mid-body (the client left, or sent a bad chunk) may
    // have reached the upstream in part; then its connection was closed, so that the part
    // never looks whole. Only such requests may be cut short.
    for cut in recorder.cut_short() {
        let refused = cases.iter().any(|case| {
            case.forwarded.is_empty() && cut.contains(&format!(" {}: ", target_of(&case.send)))
        });
        assert!(refused, "cut short: {cut}");
    }
    let requests = recorder.requests();
    assert!(
        !requests.iter().any(|r| r.target.contains("smuggled")),
        "a smuggled request reached the upstream: {requests:#?}"
    );
    for request in &requests {
        assert!(
            request
                .head
                .split("\r\n")
                .all(|line| !line.contains('\r') && !line.contains('\n') && !line.contains('\0')),
            "a line break inside a forwarded line: {:?}",
            request.head
        );
    }
    proxy.server.assert_no_panic();
}

/// The target on a request line.
fn target_of(request: &str) -> &str {
    request.split(' ').nth(1).unwrap_or_default()
}

/// One worker, so that every request shares one pool of upstream connections.
fn start(recorder: &Recorder) -> Proxy {
    Proxy::start(&one_group("", &[recorder.addr()]), 1, &["--quiet"])
}

#[test]
fn framing_tricks_never_desynchronise_the_upstream() {
    let recorder = Recorder::start();
    let proxy = start(&recorder);
    check_upstream(&proxy, &recorder, &framing_tricks());
}

#[test]
fn line_breaks_and_nul_in_values_are_never_forwarded() {
    let recorder = Recorder::start();
    let proxy = start(&recorder);
    check_upstream(&proxy, &recorder, &value_tricks());
}
