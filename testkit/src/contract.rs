//! The contract conformance checks (`shared/CONTRACT.md`), one function per check.
//!
//! Each check starts its own servers from a [`Target`] (a step's binary in `cargo test`, any
//! command in the grader), so that checks run in parallel and one failing check cannot
//! disturb another. A check passes by returning and fails by panicking with what it saw.
//! [`crate::contract_suite!`] turns them into `#[test]`s; [`crate::checks`] lists them with
//! what each measures and where the book explains it, for `scripts/grade`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;

use crate::client::{Client, Response};
use crate::target::Target;

/// Every response carries `Content-Length`.
fn assert_length(response: &Response) {
    assert!(
        response.header("content-length").is_some(),
        "no Content-Length: {response:?}"
    );
}

pub fn routes_answer_as_the_contract_says(target: &Target) {
    let server = target.start(&[]);
    let mut client = Client::connect(server.addr());

    let hello = client.get("/");
    assert_eq!(hello.status, 200);
    assert!(
        hello
            .header("content-type")
            .unwrap_or_default()
            .starts_with("text/html")
    );
    assert!(
        hello.text().contains("/script.js"),
        "the hello page loads /script.js"
    );
    assert_length(&hello);
    assert_eq!(client.get("/hello.html").body, hello.body);

    let script = client.get("/script.js");
    assert_eq!(script.status, 200);
    assert_eq!(
        script.header("content-type"),
        Some("application/javascript")
    );

    let slept = client.get("/sleep?ms=20");
    assert_eq!(
        (slept.status, slept.text().as_str()),
        (200, "slept 20 ms\n")
    );
    assert!(
        slept
            .header("content-type")
            .unwrap_or_default()
            .starts_with("text/plain")
    );
    for bad in ["/sleep?ms=60001", "/sleep?ms=abc", "/sleep"] {
        assert_eq!(client.get(bad).status, 400, "{bad}");
    }

    let missing = client.get("/no/such/page");
    assert_eq!(missing.status, 404);
    assert!(
        missing
            .header("content-type")
            .unwrap_or_default()
            .starts_with("text/html")
    );
    assert_length(&missing);
    server.assert_no_panic();
}

/// `Date` on every answer, a 200, a 404 and a `HEAD`: an IMF-fixdate (RFC 9110 §5.6.7, the
/// only form a server may send) within a minute of this machine's clock.
pub fn every_answer_carries_a_date(target: &Target) {
    let server = target.start(&[]);
    let mut client = Client::connect(server.addr());
    let mut answers = vec![client.get("/"), client.get("/no/such/page")];
    client.send(b"HEAD /script.js HTTP/1.1\r\nHost: t\r\n\r\n");
    answers.push(client.read_head_response());
    for answer in answers {
        let date = answer.header("date").unwrap_or_default();
        let Some(seconds) = parse_imf_fixdate(date) else {
            panic!("Date is not an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`): {date:?}");
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        assert!(
            seconds.abs_diff(now) <= 60,
            "Date {date:?} is {} s away from this machine's clock",
            seconds.abs_diff(now)
        );
    }
}

/// The seconds since 1970 of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), or `None`
/// when `date` is not one (a wrong weekday included).
fn parse_imf_fixdate(date: &str) -> Option<u64> {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let bytes = date.as_bytes();
    if bytes.len() != 29 || &date[3..5] != ", " || !date.ends_with(" GMT") {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u64> {
        let digits = date.get(range)?;
        digits
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let day = number(5..7)?;
    let month = MONTHS.iter().position(|m| *m == &date[8..11])? as u64 + 1;
    let year = number(12..16)?;
    let (hour, minute, second) = (number(17..19)?, number(20..22)?, number(23..25)?);
    if bytes[7] != b' '
        || bytes[11] != b' '
        || bytes[16] != b' '
        || &date[19..20] != ":"
        || &date[22..23] != ":"
        || hour > 23
        || minute > 59
        || second > 60
        || day == 0
        || day > 31
    {
        return None;
    }
    // Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let year_of_era = y - era * 400;
    let day_of_year = (153 * m + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = (era * 146_097 + day_of_era).checked_sub(719_468)?;
    (DAYS[(days % 7) as usize] == &date[..3])
        .then_some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

/// `Server` names the step (its crate name) on every answer, as the contract asks.
pub fn every_answer_names_the_step(target: &Target) {
    let server = target.start(&[]);
    let mut client = Client::connect(server.addr());
    for path in ["/", "/script.js", "/no/such/page"] {
        let answer = client.get(path);
        assert_eq!(
            answer.header("server"),
            Some(target.name()),
            "GET {path}: Server should be the step's crate name"
        );
    }
}

pub fn head_is_get_without_body(target: &Target) {
    let server = target.start(&[]);
    let mut client = Client::connect(server.addr());
    let get = client.get("/");
    for path in ["/", "/stats", "/no/such/page"] {
        client.send(format!("HEAD {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let head = client.read_head_response();
        assert!(head.body.is_empty());
        if path == "/" {
            assert_eq!(
                (head.status, head.header("content-length")),
                (200, get.header("content-length"))
            );
        }
    }
    // Had the server sent a body after a HEAD, it would be read here instead of this answer.
    assert_eq!(client.get("/script.js").status, 200);
}

pub fn matching_etag_gets_304(target: &Target) {
    let server = target.start(&[]);
    let mut client = Client::connect(server.addr());
    for path in ["/", "/script.js"] {
        let first = client.get(path);
        let etag = first
            .header("etag")
            .unwrap_or_else(|| panic!("{path} has no ETag"))
            .to_string();
        assert!(
            etag.starts_with('"') && etag.ends_with('"'),
            "strong ETag: {etag}"
        );
        client.send(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nIf-None-Match: {etag}\r\n\r\n").as_bytes(),
        );
        let cached = client.read_response();
        assert_eq!(cached.status, 304);
        assert!(cached.body.is_empty());
        assert_eq!(cached.header("etag"), Some(etag.as_str()));
        client.send(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"stale\"\r\n\r\n")
                .as_bytes(),
        );
        assert_eq!(client.read_response().body, first.body);
    }
    assert!(
        client.get("/no/such/page").header("etag").is_some(),
        "the 404 page has an ETag"
    );
}

pub fn other_methods_get_405_with_allow(target: &Target) {
    let server = target.start(&[]);
    let mut client = Client::connect(server.addr());
    for request in [
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
        "DELETE /stats HTTP/1.1\r\nHost: t\r\n\r\n",
        "PUT /script.js HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc",
    ] {
        client.send(request.as_bytes());
        let response = client.read_response();
        assert_eq!(response.status, 405, "{request:?}");
        let allow = response.header("allow").unwrap_or_default();
        assert!(
            allow.contains("GET") && allow.contains("HEAD"),
            "Allow: {allow}"
        );
    }
    assert_eq!(client.get("/").status, 200, "the connection survives 405s");
}

pub fn keep_alive_serves_several_requests(target: &Target) {
    let server = target.start(&[]);
    let mut client = Client::connect(server.addr());
    for _ in 0..5 {
        let response = client.get("/");
        assert_eq!(response.status, 200);
        assert_eq!(response.header("connection"), Some("keep-alive"));
    }
}

/// Four requests in one write, answered in order: each answer is recognised by its status
/// and type. Only the static pages: a file server passes this too.
pub fn pipelined_requests_are_answered_in_order(target: &Target) {
    let server = target.start(&[]);
    let mut client = Client::connect(server.addr());
    client.send(
        b"GET /script.js HTTP/1.1\r\nHost: t\r\n\r\n\
          HEAD / HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /no/such/page HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /hello.html HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(
        client.read_response().header("content-type"),
        Some("application/javascript"),
        "first answer: /script.js"
    );
    let head = client.read_head_response();
    assert!(
        head.body.is_empty() && head.status == 200,
        "second answer: HEAD /"
    );
    assert_eq!(client.read_response().status, 404, "third answer: the 404");
    let hello = client.read_response();
    assert!(
        hello.status == 200 && hello.text().contains("/script.js"),
        "fourth answer: the hello page"
    );
}

/// A slow request first in a pipeline (`/sleep?ms=100`) is not overtaken by the quick ones
/// behind it: an event loop or a pool must still answer one connection in order.
pub fn a_slow_pipelined_request_is_not_overtaken(target: &Target) {
    let server = target.start(&[]);
    let mut client = Client::connect(server.addr());
    client.send(
        b"GET /sleep?ms=100 HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /script.js HTTP/1.1\r\nHost: t\r\n\r\n\
          HEAD / HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(client.read_response().text(), "slept 100 ms\n");
    assert_eq!(
        client.read_response().header("content-type"),
        Some("application/javascript")
    );
    let head = client.read_head_response();
    assert!(head.body.is_empty() && head.status == 200);
}

pub fn connection_close_is_honoured(target: &Target) {
    let server = target.start(&[]);
    let mut client = Client::connect(server.addr());
    client.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let response = client.read_response();
    assert_eq!(
        (response.status, response.header("connection")),
        (200, Some("close"))
    );
    assert!(client.closes_within(Duration::from_secs(5)));
}

pub fn http_1_0_closes_unless_kept_alive(target: &Target) {
    let server = target.start(&[]);
    let mut client = Client::connect(server.addr());
    client.send(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(client.read_response().status, 200);
    assert!(
        client.closes_within(Duration::from_secs(5)),
        "HTTP/1.0 closes by default"
    );

    let mut client = Client::connect(server.addr());
    for _ in 0..2 {
        client.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let response = client.read_response();
        assert_eq!(
            (response.status, response.header("connection")),
            (200, Some("keep-alive"))
        );
    }
}

pub fn garbage_gets_400_and_close(target: &Target) {
    let server = target.start(&[]);
    for garbage in [
        &b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"[..],
        b"GET / HTTP/1.1\r\nHost: t\r\nNo colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"HELLO\r\n\r\n",
    ] {
        let mut client = Client::connect(server.addr());
        client.send(garbage);
        let response = client.read_response();
        assert_eq!(
            response.status,
            400,
            "{:?}",
            String::from_utf8_lossy(garbage)
        );
        assert_eq!(response.header("connection"), Some("close"));
        assert!(client.closes_within(Duration::from_secs(5)));
    }
    assert_eq!(
        server.get("/").status,
        200,
        "the server still serves others"
    );
    server.assert_no_panic();
}

pub fn oversized_head_gets_431_and_close(target: &Target) {
    let server = target.start(&[]);
    let mut client = Client::connect(server.addr());
    let padding = "x".repeat(9 * 1024);
    client.send(format!("GET / HTTP/1.1\r\nHost: t\r\nX-Padding: {padding}\r\n\r\n").as_bytes());
    assert_eq!(client.read_response().status, 431);
    assert!(client.closes_within(Duration::from_secs(5)));

    let mut client = Client::connect(server.addr());
    let target = "a".repeat(10 * 1024);
    client.send(format!("GET /{target} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    assert_eq!(client.read_response().status, 414);
    assert_eq!(server.get("/").status, 200);
}

pub fn slow_head_gets_408(target: &Target) {
    let server = target.start(&["--header-timeout-ms", "300"]);
    let mut client = Client::connect(server.addr());
    let started = Instant::now();
    client.send(b"GET / HTTP/1.1\r\nHost: t\r\n");
    let response = client.read_response();
    let waited = started.elapsed();
    assert_eq!(response.status, 408);
    assert!(
        waited >= Duration::from_millis(250),
        "408 came too early: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "408 came too late: {waited:?}"
    );
    assert!(client.closes_within(Duration::from_secs(5)));
}

pub fn idle_keep_alive_connection_is_closed(target: &Target) {
    let server = target.start(&["--idle-timeout-ms", "300"]);
    let mut client = Client::connect(server.addr());
    assert_eq!(client.get("/").status, 200);
    let started = Instant::now();
    assert!(
        client.closes_within(Duration::from_secs(5)),
        "closed silently when idle"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "closed too early: {waited:?}"
    );
}

pub fn framing_conflicts_get_400(target: &Target) {
    let server = target.start(&[]);
    for request in [
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    ] {
        let mut client = Client::connect(server.addr());
        client.send(request.as_bytes());
        let response = client.read_response();
        assert_eq!(
            (response.status, response.header("connection")),
            (400, Some("close")),
            "{request:?}"
        );
        assert!(client.closes_within(Duration::from_secs(5)));
    }
    let mut client = Client::connect(server.addr());
    client.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
    assert_eq!(client.read_response().status, 501);
}

pub fn request_bodies_are_read_and_discarded(target: &Target) {
    let server = target.start(&[]);
    let mut client = Client::connect(server.addr());
    // If a body were not skipped, its bytes would be parsed as the next request.
    let smuggled = "GET /stats HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut requests = format!(
        "POST /no/such/page HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    requests.push_str(
        "POST /stats HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
         4\r\nGET \r\n6;ext=1\r\n/stats\r\n0\r\nTrailer: x\r\n\r\n\
         GET /script.js HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    client.send(requests.as_bytes());
    assert_eq!(client.read_response().status, 404);
    assert_eq!(client.read_response().status, 405);
    assert_eq!(
        client.read_response().header("content-type"),
        Some("application/javascript")
    );

    // A body longer than one read, sent in pieces.
    let body = vec![b'z'; 300 * 1024];
    client.send(
        format!(
            "PUT / HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    for piece in body.chunks(64 * 1024) {
        client.send(piece);
    }
    assert_eq!(client.read_response().status, 405);
    assert_eq!(client.get("/").status, 200);
}

pub fn expect_100_continue_is_answered(target: &Target) {
    let server = target.start(&[]);
    let mut client = Client::connect(server.addr());
    client.send(
        b"POST /stats HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    let interim = client.read_response();
    assert_eq!(interim.status, 100, "the server invites the body");
    client.send(b"hello");
    assert_eq!(client.read_response().status, 405);
    assert_eq!(client.get("/").status, 200);
}

pub fn client_disconnects_do_not_hurt_others(target: &Target) {
    let server = target.start(&[]);
    {
        // Gone before sending anything, gone in the middle of a head, gone in a body, gone
        // while its answer is being delayed.
        let _ = Client::connect(server.addr());
        Client::connect(server.addr()).send(b"GET / HTTP/1.1\r\nHo");
        Client::connect(server.addr())
            .send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc");
        Client::connect(server.addr()).send(b"GET /sleep?ms=200 HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    std::thread::sleep(Duration::from_millis(400));
    for _ in 0..3 {
        assert_eq!(server.get("/").status, 200);
    }
    server.assert_no_panic();
}

pub fn stats_is_json(target: &Target) {
    let server = target.start(&[]);
    let response = server.get("/stats");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let stats = response.json();
    assert_eq!(stats["step"].as_str(), Some(server.name()), "{stats}");
    assert!(stats["pid"].as_u64().is_some_and(|pid| pid > 0), "{stats}");
}

/// The live page: an HTML page that polls `/stats` (what it draws is tested in a browser, by
/// step 03's `tests/live.rs`).
pub fn live_page_is_served(target: &Target) {
    let server = target.start(&[]);
    let response = server.get("/live");
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|value| value.starts_with("text/html")),
        "{:?}",
        response.header("content-type")
    );
    assert!(
        response.text().contains("/stats"),
        "the page never asks /stats"
    );
}

pub fn bad_options_fail_with_one_line(target: &Target) {
    for bad in [
        &["--port", "not-a-port"][..],
        &["--no-such-option"],
        &["--delay-ms", "-5"],
    ] {
        let (status, stderr) = target.run_to_exit(None, bad, Duration::from_secs(10));
        assert_eq!(status.code(), Some(1), "{bad:?}: {stderr:?}");
        assert_eq!(stderr.len(), 1, "{bad:?}: one line, got {stderr:?}");
        assert!(stderr[0].starts_with("error: "), "{stderr:?}");
        assert!(!stderr[0].contains("panicked"));
    }
}

pub fn port_in_use_fails_with_one_line(target: &Target) {
    let server = target.start(&[]);
    let port = server.addr().port();
    let (status, stderr) = target.run_to_exit(Some(port), &[], Duration::from_secs(10));
    assert_eq!(status.code(), Some(1));
    assert_eq!(
        stderr,
        [format!(
            "error: cannot listen on 127.0.0.1:{port}: Address already in use"
        )]
    );
}

pub fn sigterm_when_idle_exits_0(target: &Target) {
    let mut server = target.start(&[]);
    assert_eq!(server.get("/").status, 200);
    // An idle keep-alive client must not hold the shutdown up.
    let mut idle = Client::connect(server.addr());
    assert_eq!(idle.get("/").status, 200);
    let started = Instant::now();
    server.signal(Signal::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(10));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit status after SIGTERM"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(idle.closes_within(Duration::from_secs(2)));
    server.assert_no_panic();
}

/// Every case of `testkit/corpus/bad-input.toml` gets its expected answer, the server still
/// serves a normal request after each, and nothing panics.
pub fn bad_input_corpus(target: &Target) {
    crate::corpus::run_all(target);
}

/// Clients that vanish in the middle of things: a reset (as a crashed client or a middlebox
/// sends) in the middle of a request, while its answer is delayed, in the middle of a stream
/// of answers; and a plain close while answers are still being written, after which the
/// server's next writes fail with `EPIPE`, the error that raises `SIGPIPE` and kills a process
/// that has not ignored it. Each must end that connection only: no death, no panic, everyone
/// else still served.
pub fn client_resets_do_not_hurt_others(target: &Target) {
    let server = target.start(&[]);
    let pipelined = "GET / HTTP/1.1\r\nHost: t\r\n\r\n".repeat(200);
    for _ in 0..3 {
        let mut mid_request = Client::connect(server.addr());
        mid_request.send(b"GET / HTTP/1.1\r\nHo");
        mid_request.reset();

        let mut while_delayed = Client::connect(server.addr());
        while_delayed.send(b"GET /sleep?ms=100 HTTP/1.1\r\nHost: t\r\n\r\n");
        while_delayed.reset();

        let mut mid_response = Client::connect(server.addr());
        mid_response.send(pipelined.as_bytes());
        assert_eq!(mid_response.read_response().status, 200);
        mid_response.reset();

        // A plain close before any answer: the first answer (after 100 ms) draws a reset from
        // the client's kernel, the second is written to a connection that is gone: EPIPE.
        let mut closes_early = Client::connect(server.addr());
        closes_early.send(
            b"GET /sleep?ms=100 HTTP/1.1\r\nHost: t\r\n\r\n\
              GET / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n",
        );
        drop(closes_early);
    }
    // Give the server time to meet the resets (the delayed answers are written after 100 ms).
    std::thread::sleep(Duration::from_millis(400));
    for _ in 0..3 {
        assert_eq!(server.get("/").status, 200);
    }
    server.assert_no_panic();
}

/// A client that asks for a lot and never reads the answers (17 MB of pipelined answers, far
/// more than the socket buffers hold) costs the server at most the send timeout (the header
/// timeout, here 1 s): other clients are served meanwhile or soon after, and the stuck
/// connection is dropped before all its answers were sent.
pub fn a_client_that_never_reads_is_dropped(target: &Target) {
    const REQUESTS: usize = 20_000;
    let server = target.start(&["--header-timeout-ms", "1000"]);
    let mut stuck = Client::connect(server.addr());
    let Ok(mut stream) = stuck.stream().try_clone() else {
        panic!("cannot clone the client's socket");
    };
    // The writes block once the server stops reading (it does while its answers cannot go
    // out), so they go on a thread of their own.
    std::thread::spawn(move || {
        let requests = "GET /script.js HTTP/1.1\r\nHost: t\r\n\r\n".repeat(REQUESTS);
        let _ = std::io::Write::write_all(&mut stream, requests.as_bytes());
    });
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    assert_eq!(server.get("/").status, 200);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(6),
        "a normal client waited {waited:?}"
    );

    // Wait until the server has given up on the connection: its end is closed, or its send
    // queue has not moved for twice the send timeout. A fast server got there long ago; a slow
    // one (the debug-built proxy) may still be filling the socket buffers, which grow as they
    // fill. Then read what the stuck connection holds: a server that dropped it ends the
    // stream early; one that did not delivers all the answers.
    let server_port = server.addr().port();
    let client_port = stuck.stream().local_addr().map_or(0, |a| a.port());
    let queue = || crate::procfs::tcp_send_queue(server_port, client_port);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut last, mut since) = (queue(), Instant::now());
    while matches!(last, Some(Some(_)))
        && since.elapsed() < Duration::from_secs(2)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
        let now = queue();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    if last.is_none() {
        // No /proc to watch: past the send timeout, a fast server has dropped it.
        std::thread::sleep(Duration::from_secs(3));
    }
    let mut answers = 0;
    while stuck.try_read_response(false).is_ok() {
        answers += 1;
    }
    assert!(
        answers < REQUESTS,
        "all {answers} answers arrived: the client was never dropped"
    );
    server.assert_no_panic();
}

/// Connections opened and closed at full speed for two seconds (half of them making a
/// request) leave nothing behind: once the storm is over (and a pool that grew with it has
/// shrunk back), the server's process tree is back to the processes, threads and descriptors
/// it had before, and its memory within 8 MiB of
/// what it was after a first, identical storm (a leak of a few hundred bytes per connection
/// would exceed that). Memory is compared between storms because an allocator keeps what a
/// burst of connections needed at once: a high-water mark, reached again by the next burst
/// but not exceeded, where a leak grows with every storm.
pub fn a_connection_storm_leaks_nothing(target: &Target) {
    if !crate::tools::has_procfs("a_connection_storm_leaks_nothing") {
        return;
    }
    let server = target.start(&[]);
    for _ in 0..20 {
        assert_eq!(server.get("/").status, 200);
    }
    std::thread::sleep(Duration::from_millis(300));
    let usage = || crate::procfs::tree_usage(server.pid()).unwrap_or_else(|| panic!("no /proc"));
    let before = usage();
    let settled = |now: &crate::procfs::TreeUsage| {
        now.processes <= before.processes && now.threads <= before.threads && now.fds <= before.fds
    };
    // A leak stays; a pool that grew with the storm shrinks back at its own pace (step 03
    // lets one worker go every half second). So wait while the tree keeps shrinking: until 3 s
    // pass without progress, or 90 s in all.
    let settle = || {
        let give_up = Instant::now() + Duration::from_secs(90);
        let mut deadline = Instant::now() + Duration::from_secs(10);
        let mut now = usage();
        while !settled(&now) && Instant::now() < deadline.min(give_up) {
            std::thread::sleep(Duration::from_millis(100));
            let next = usage();
            if next.threads < now.threads || next.processes < now.processes || next.fds < now.fds {
                deadline = deadline.max(Instant::now() + Duration::from_secs(3));
            }
            now = next;
        }
        now
    };

    let warm = storm(server.addr());
    let warmed = settle();
    assert!(
        settled(&warmed),
        "after {warm} connections: {warmed:?}, before: {before:?}"
    );
    let connections = storm(server.addr());
    let after = settle();
    assert!(
        settled(&after),
        "after {connections} connections: {after:?}, before: {before:?}"
    );
    assert!(
        after.rss_kib <= warmed.rss_kib + 8 * 1024,
        "memory grew from {} to {} KiB over {connections} connections (after a first storm \
         of {warm})",
        warmed.rss_kib,
        after.rss_kib
    );
    assert_eq!(server.get("/").status, 200);
}

/// Opens and closes connections to `addr` from four threads for two seconds, half of them
/// making a request. Returns how many it opened.
fn storm(addr: std::net::SocketAddr) -> usize {
    let until = Instant::now() + Duration::from_secs(2);
    let storms: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let mut count = 0;
                while Instant::now() < until {
                    let Ok(mut client) = std::net::TcpStream::connect(addr) else {
                        continue;
                    };
                    if i % 2 == 1 {
                        let request = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
                        let _ = std::io::Write::write_all(&mut client, request);
                        let _ = std::io::Read::read(&mut client, &mut [0u8; 4096]);
                    }
                    count += 1;
                }
                count
            })
        })
        .collect();
    let connections: usize = storms.into_iter().map(|s| s.join().unwrap_or(0)).sum();
    assert!(
        connections > 100,
        "the storm made only {connections} connections"
    );
    connections
}

/// Out of descriptors (`ulimit -n 64`, 200 clients holding kept-alive connections): the server
/// neither spins retrying `accept` (under a quarter of a core while stuck) nor stays stuck
/// (once the crowd leaves, a normal request is served, within 3 s). `scripts/exhaustion.py`
/// runs the same experiment with bigger numbers.
pub fn running_out_of_descriptors_neither_spins_nor_sticks(target: &Target) {
    const OPEN_FILES: u64 = 64;
    const ATTEMPTS: usize = 200;
    if !crate::tools::has_procfs("running_out_of_descriptors_neither_spins_nor_sticks") {
        return;
    }
    let server = target
        .try_start_limited(&["--quiet"], Some(OPEN_FILES))
        .unwrap_or_else(|error| panic!("{error}"));
    // A crowd of idle browsers: each makes one request and keeps its connection (a descriptor
    // of the server's) until it leaves.
    let mut crowd = Vec::new();
    for _ in 0..ATTEMPTS {
        let Ok(mut client) = std::net::TcpStream::connect(server.addr()) else {
            continue;
        };
        let _ = std::io::Write::write_all(&mut client, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        crowd.push(client);
    }
    // Let the server reach its limit, then watch what it does there.
    std::thread::sleep(Duration::from_millis(500));
    let tree_cpu = || {
        crate::procfs::tree(server.pid())
            .into_iter()
            .filter_map(crate::procfs::cpu_time)
            .sum::<Duration>()
    };
    let (before, started) = (tree_cpu(), Instant::now());
    std::thread::sleep(Duration::from_millis(1500));
    let share = (tree_cpu().saturating_sub(before)).as_secs_f64() / started.elapsed().as_secs_f64();
    drop(crowd);
    let released = Instant::now();
    let served_again = loop {
        let answered = Client::try_connect(server.addr()).is_ok_and(|mut client| {
            let _ = client
                .stream()
                .set_read_timeout(Some(Duration::from_secs(1)));
            let _ = std::io::Write::write_all(
                &mut client.stream(),
                b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            );
            client
                .try_read_response(false)
                .is_ok_and(|r| r.status == 200)
        });
        if answered {
            break Some(released.elapsed());
        }
        if released.elapsed() > Duration::from_secs(15) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        share < 0.25,
        "out of descriptors, the server used {:.0} % of a core (it spins on accept)",
        share * 100.0
    );
    // Soon, too: the steps take well under a second. (A proxy that blamed its upstreams for
    // its own EMFILE marked them all down, and served again only when its health checks
    // brought them back, 6.6 s later.)
    match served_again {
        Some(after) => assert!(
            after < Duration::from_secs(3),
            "served again only {after:?} after the crowd left"
        ),
        None => panic!("not served again within 15 s after the crowd left: stuck"),
    }
    server.assert_no_panic();
}

/// A client that sends its request and closes its sending side at once (`shutdown(SHUT_WR)`,
/// as `nc -N` or some HTTP/1.0 clients do) gets its answer, and then the end of the
/// connection right away, not after the idle timeout. The close arrives with the request's
/// bytes: a server that stops reading at a short read must learn of it from the poller.
pub fn a_half_closed_client_gets_its_answer_and_the_end(target: &Target) {
    let server = target.start(&[]);
    for _ in 0..3 {
        let mut client = Client::connect(server.addr());
        client.send(b"GET /script.js HTTP/1.1\r\nHost: t\r\n\r\n");
        let _ = client.stream().shutdown(std::net::Shutdown::Write);
        assert_eq!(client.read_response().status, 200);
        let started = Instant::now();
        assert!(
            client.closes_within(Duration::from_secs(4)),
            "the connection stayed open"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "closed only after {:?}",
            started.elapsed()
        );
    }
}
