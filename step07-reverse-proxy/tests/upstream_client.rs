//! The proxy's own upstream client, as a client and an upstream see it: header names and
//! values pass byte for byte both ways (no lower-casing, no field of its own); trailers reach a
//! client that reads chunks; interim answers are skipped; `Expect: 100-continue` is answered
//! by the proxy and not passed on; 204 and 304 carry no body and leave both connections
//! usable; an answer with `Connection: close` is not pooled; a pooled connection that the
//! upstream closed as it was reused is retried on a fresh one when that is safe, and an
//! upstream that closes idle connections at random moments fails no request; a WebSocket
//! passes through, and a silent one is closed after the read timeout; and `--upstream-client
//! reqwest` forwards too, the simple way (names lower-cased).

mod support;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use support::{Proxy, one_group};
use testkit::Client;
use testkit::recorder::{Answer, Recorded, Recorder};
use tokio_tungstenite::tungstenite::Message;

/// Sends `raw` with `Connection: close` semantics and returns every byte the proxy sent back.
fn exchange(proxy: &Proxy, raw: &str) -> String {
    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(raw.as_bytes()).unwrap();
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received);
    String::from_utf8_lossy(&received).into_owned()
}

fn keep_alive(bytes: &str) -> Answer {
    Answer {
        bytes: bytes.as_bytes().to_vec(),
        close: false,
    }
}

#[test]
fn names_and_values_pass_byte_for_byte_both_ways() {
    let recorder = Recorder::start_with(|_: &Recorded| {
        keep_alive(
            "HTTP/1.1 200 Fine, Thanks\r\nx-lower-answer: a\r\nX-UPPER-ANSWER: B  C\r\n\
             Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
        )
    });
    let proxy = Proxy::start(&one_group("", &[recorder.addr()]), 1, &["--quiet"]);
    let mut client = Client::connect(proxy.addr());
    client.send(
        b"GET /case HTTP/1.1\r\nHost: site.test\r\nX-MiXeD-CaSe: Value  With  Spaces\r\n\
          x-lower: v\r\nCOOKIE: a=1\r\n\r\n",
    );
    let response = client.read_response();
    let recorded = &recorder.requests()[0];
    let sent: Vec<&str> = recorded.head.split("\r\n").collect();
    for line in [
        "GET /case HTTP/1.1",
        "X-MiXeD-CaSe: Value  With  Spaces",
        "x-lower: v",
        "COOKIE: a=1",
    ] {
        assert!(sent.contains(&line), "{line:?} not as sent: {sent:?}");
    }
    assert!(
        !recorded.head.to_ascii_lowercase().contains("\r\naccept:"),
        "a field the client did not send: {sent:?}"
    );
    assert_eq!(response.status, 200);
    for (name, value) in [("x-lower-answer", "a"), ("X-UPPER-ANSWER", "B  C")] {
        assert!(
            response
                .headers
                .iter()
                .any(|(n, v)| n.as_str() == name && v.as_str() == value),
            "{name}: {value} not as the upstream wrote it: {:?}",
            response.headers
        );
    }
    // The status line keeps the upstream's reason phrase, as nginx does.
    let raw = exchange(
        &proxy,
        "GET /again HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n",
    );
    assert!(raw.starts_with("HTTP/1.1 200 Fine, Thanks\r\n"), "{raw:?}");
    proxy.server.assert_no_panic();
}

#[test]
fn trailers_reach_a_client_that_reads_chunks_and_interim_answers_are_skipped() {
    let recorder = Recorder::start_with(|request: &Recorded| match request.target.as_str() {
        "/hints" => keep_alive(
            "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n\
             HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
        ),
        _ => keep_alive(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n\
             5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\nTransfer-Encoding: x\r\n\r\n",
        ),
    });
    let proxy = Proxy::start(&one_group("", &[recorder.addr()]), 1, &["--quiet"]);
    let raw = exchange(
        &proxy,
        "GET /sum HTTP/1.1\r\nHost: t\r\nTE: trailers\r\nConnection: close\r\n\r\n",
    );
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_default();
    assert!(head.contains("\r\nTransfer-Encoding: chunked"), "{raw:?}");
    assert!(head.contains("\r\nTrailer: X-Checksum"), "{raw:?}");
    assert_eq!(
        body,
        "5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n"
    );
    // An HTTP/1.0 client has no chunks, so no trailers: the body ends with the connection.
    let raw = exchange(&proxy, "GET /sum HTTP/1.0\r\nHost: t\r\n\r\n");
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_default();
    assert!(
        !head.contains("Trailer") && !head.contains("chunked"),
        "{raw:?}"
    );
    assert_eq!(body, "hello world");
    // A 103 before the answer is the upstream's business: the client gets the 200.
    let raw = exchange(
        &proxy,
        "GET /hints HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(raw.starts_with("HTTP/1.1 200 OK\r\n"), "{raw:?}");
    assert!(raw.ends_with("\r\n\r\nfinal"), "{raw:?}");
    proxy.server.assert_no_panic();
}

/// A client that waits for a go-ahead before its body (`Expect: 100-continue`) gets it from the
/// proxy, which reads the body itself, as nginx does: the upstream never sees the `Expect`
/// (the proxy has answered it), and gets the body whole. A client that sent its body with the
/// head has nothing to wait for: no `100`.
#[test]
fn expect_100_continue_is_answered_by_the_proxy_and_not_passed_on() {
    let recorder = Recorder::start();
    let proxy = Proxy::start(&one_group("", &[recorder.addr()]), 1, &["--quiet"]);
    let mut client = Client::connect(proxy.addr());
    client
        .stream()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client.send(
        b"POST /form HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    let interim = client.read_response();
    assert_eq!(interim.status, 100, "no go-ahead before the body");
    client.send(b"hello");
    let answer = client.read_response();
    assert_eq!(
        (answer.status, answer.text().as_str()),
        (200, "seen POST /form 5\n")
    );
    // The body came with the head: the answer comes first, no 100.
    client.send(
        b"POST /along HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
    );
    let answer = client.read_response();
    assert_eq!(
        (answer.status, answer.text().as_str()),
        (200, "seen POST /along 5\n")
    );
    // The connection goes on.
    assert_eq!(client.get("/after").text(), "seen GET /after 0\n");
    let requests = recorder.requests();
    let seen: Vec<(&str, &[u8])> = requests
        .iter()
        .map(|r| (r.target.as_str(), r.body.as_slice()))
        .collect();
    assert_eq!(
        seen,
        [
            ("/form", &b"hello"[..]),
            ("/along", &b"hello"[..]),
            ("/after", &b""[..])
        ]
    );
    for raw in recorder.raw() {
        assert!(
            !raw.to_ascii_lowercase().contains("\r\nexpect:"),
            "the upstream was sent an Expect: {raw:?}"
        );
    }
    proxy.server.assert_no_panic();
}

/// Answers without a body: a 204 reaches the client with no body and no framing of ours (no
/// `Content-Length`, no chunks), a 304 with its `Content-Length` (the size of what it did not
/// send) and no body; the client's connection carries the next request, and the upstream's
/// too: the proxy waited for no body that was never coming.
#[test]
fn a_204_and_a_304_reach_the_client_without_a_body_and_both_connections_go_on() {
    let recorder = Recorder::start_with(|request: &Recorded| match request.target.as_str() {
        "/empty" => keep_alive("HTTP/1.1 204 No Content\r\nX-Kind: empty\r\n\r\n"),
        "/cached" => {
            keep_alive("HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 5\r\n\r\n")
        }
        _ => {
            let body = format!("seen {}", request.target);
            keep_alive(&format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ))
        }
    });
    let proxy = Proxy::start(&one_group("", &[recorder.addr()]), 1, &["--quiet"]);
    let mut client = Client::connect(proxy.addr());
    // A proxy that waited for a body would answer after its read timeout, or never.
    client
        .stream()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for round in 0..2 {
        let empty = client.get("/empty");
        assert_eq!(empty.status, 204, "round {round}");
        assert_eq!(empty.header("x-kind"), Some("empty"), "{empty:?}");
        assert_eq!(empty.header("content-length"), None, "{empty:?}");
        assert_eq!(empty.header("transfer-encoding"), None, "{empty:?}");
        // Any byte after the 204's head would be read as the start of this answer, and fail.
        let next = client.get("/after-204");
        assert_eq!(
            (next.status, next.text().as_str()),
            (200, "seen /after-204"),
            "round {round}"
        );
        let cached = client.get("/cached");
        assert_eq!(cached.status, 304, "round {round}");
        assert_eq!(cached.header("etag"), Some("\"v1\""), "{cached:?}");
        assert_eq!(cached.header("content-length"), Some("5"), "{cached:?}");
        assert_eq!(cached.header("transfer-encoding"), None, "{cached:?}");
        let next = client.get("/after-304");
        assert_eq!(
            (next.status, next.text().as_str()),
            (200, "seen /after-304"),
            "round {round}"
        );
    }
    // Every answer ended cleanly, so one upstream connection carried them all.
    let connections: Vec<usize> = recorder.requests().iter().map(|r| r.connection).collect();
    assert_eq!(
        connections, [0; 8],
        "the upstream connection of each request"
    );
    proxy.server.assert_no_panic();
}

/// An upstream that says `Connection: close` has said it will not read another request on
/// that connection: the proxy does not pool it, even when the upstream is slow to close it
/// (this one never does), and the next request opens a new one. The client's own connection is
/// not the upstream's business (the field is hop-by-hop): it stays open.
#[test]
fn an_answer_with_connection_close_is_not_pooled() {
    let recorder = Recorder::start_with(|request: &Recorded| {
        let closing = request.target == "/last";
        let body = format!("{} on connection {}", request.target, request.connection);
        keep_alive(&format!(
            "HTTP/1.1 200 OK\r\n{}Content-Length: {}\r\n\r\n{body}",
            if closing { "Connection: close\r\n" } else { "" },
            body.len()
        ))
    });
    let proxy = Proxy::start(&one_group("", &[recorder.addr()]), 1, &["--quiet"]);
    let mut client = Client::connect(proxy.addr());
    client
        .stream()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // Without the field, the connection is kept and reused.
    assert_eq!(client.get("/1").text(), "/1 on connection 0");
    assert_eq!(client.get("/2").text(), "/2 on connection 0");
    let last = client.get("/last");
    assert_eq!(
        (last.status, last.text().as_str()),
        (200, "/last on connection 0")
    );
    assert_ne!(last.header("connection"), Some("close"), "{last:?}");
    // On the same client connection: a new upstream connection, and it is kept in turn.
    assert_eq!(client.get("/3").text(), "/3 on connection 1");
    assert_eq!(client.get("/4").text(), "/4 on connection 1");
    assert_eq!(recorder.connections(), 2, "{:?}", recorder.raw());
    proxy.server.assert_no_panic();
}

#[test]
fn a_pooled_connection_closed_as_it_is_reused_is_retried_when_that_is_safe() {
    // Each connection answers its first request and closes at the second, unanswered: the
    // upstream's idle close crossing the proxy's reuse, made deterministic.
    let nth: Mutex<HashMap<usize, usize>> = Mutex::default();
    let recorder = Recorder::start_with(move |request: &Recorded| {
        let count = {
            let mut nth = nth.lock().unwrap();
            let count = nth.entry(request.connection).or_default();
            *count += 1;
            *count
        };
        if count == 2 {
            return Answer {
                bytes: Vec::new(),
                close: true,
            };
        }
        let body = format!("{} on connection {}", request.target, request.connection);
        keep_alive(&format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    });
    // One upstream: there is no other to try, as in the case nginx handles.
    let proxy = Proxy::start(&one_group("", &[recorder.addr()]), 1, &["--quiet"]);
    let mut client = Client::connect(proxy.addr());
    assert_eq!(client.get("/1").text(), "/1 on connection 0");
    // Sent on the pooled connection 0, which closes: sent again on a new one.
    let response = client.get("/2");
    assert_eq!(
        (response.status, response.text().as_str()),
        (200, "/2 on connection 1")
    );
    // A POST is not sent twice: it may have done its work before the connection broke.
    client.send(b"POST /3 HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi");
    let response = client.read_response();
    assert_eq!(response.status, 502, "{}", response.text());
    let targets: Vec<(usize, String)> = recorder
        .requests()
        .into_iter()
        .map(|r| (r.connection, r.target))
        .collect();
    let expected = [(0, "/1"), (0, "/2"), (1, "/2"), (1, "/3")];
    assert_eq!(
        targets,
        expected.map(|(c, t)| (c, t.to_string())),
        "what the upstream read, on which connection"
    );
    proxy.server.assert_no_panic();
}

/// A tiny generator for the closing upstream's random moments (no crate for so little).
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// An upstream that keeps connections alive but closes each one at a random moment: right
/// after an answer (one time in four), or once it has been idle for a random 0.1 to 3 ms.
/// Returns its address and the count of connections it closed while idle.
fn closing_upstream(stop: Arc<AtomicBool>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let closed = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&closed);
    thread::spawn(move || {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((stream, _)) => {
                    let (counter, seed) = (Arc::clone(&counter), next_random(&mut seed));
                    thread::spawn(move || serve_then_close(stream, seed, &counter));
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return,
            }
        }
    });
    (addr, closed)
}

fn serve_then_close(mut stream: TcpStream, mut seed: u64, closed: &AtomicUsize) {
    let _ = stream.set_nonblocking(false);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let idle = Duration::from_micros(100 + next_random(&mut seed) % 2900);
        let _ = stream.set_read_timeout(Some(idle));
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(read) => buf.extend_from_slice(&chunk[..read]),
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if buf.is_empty() {
                    closed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
            Err(_) => return,
        }
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            if stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                .is_err()
            {
                return;
            }
            if next_random(&mut seed) % 4 == 0 {
                closed.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
    }
}

/// One round of traffic through the proxy at `addr`: 4 clients, each 200 requests (a `HEAD`
/// in five) on one keep-alive connection, with random pauses of up to 2 ms. The requests
/// that did not get a 200.
fn random_round(addr: SocketAddr, round: u64) -> Vec<(u64, usize, u16, String)> {
    let clients: Vec<_> = (0..4)
        .map(|c| {
            thread::spawn(move || {
                let mut client = Client::connect(addr);
                let mut failures = Vec::new();
                let mut seed = 0x2545_f491_4f6c_dd1d_u64 + c + (round << 8);
                for i in 0..200 {
                    let method = if i % 5 == 0 { "HEAD" } else { "GET" };
                    client.send(format!("{method} /{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
                    let response = if method == "HEAD" {
                        client.read_head_response()
                    } else {
                        client.read_response()
                    };
                    if response.status != 200 {
                        failures.push((round, i, response.status, response.text()));
                    }
                    // Now and then a pause, for the upstream's idle closes to land.
                    thread::sleep(Duration::from_micros(next_random(&mut seed) % 2000));
                }
                failures
            })
        })
        .collect();
    clients
        .into_iter()
        .flat_map(|client| client.join().unwrap())
        .collect()
}

/// The most rounds of [`random_round`] the test below runs to see the retry exercised. A round
/// brings a retry about one time in three or four here (a close must cross a request on the
/// wire), so this is a wide margin: a test whose retry never ran, not a slow machine, fails.
const MAX_ROUNDS: u64 = 40;

#[test]
fn an_upstream_that_closes_idle_connections_at_random_fails_no_request() {
    let stop = Arc::new(AtomicBool::new(false));
    let (upstream, closed) = closing_upstream(Arc::clone(&stop));
    let proxy = Proxy::start(&one_group("", &[upstream]), 1, &[]);
    let retried = || {
        proxy
            .server
            .stderr_lines()
            .iter()
            .filter(|line| line.contains("sending it again on a new connection"))
            .count()
    };
    // Most closes are seen before a reuse (`UpstreamConn::still_idle`), and cost nothing; only
    // one that crosses the request on the wire makes the proxy send it again. So rounds of
    // traffic until that has happened: 0 failures from a test whose retry never ran would
    // prove nothing.
    let started = Instant::now();
    let (mut failures, mut rounds) = (Vec::new(), 0);
    while rounds < MAX_ROUNDS && (rounds == 0 || retried() == 0) {
        failures.extend(random_round(proxy.addr(), rounds));
        rounds += 1;
        // The proxy's log lines reach us through a pipe: a moment for the round's last ones.
        thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    let (retried, closed) = (retried(), closed.load(Ordering::SeqCst));
    let measured = format!(
        "{rounds} round(s) of 800 requests in {:.1} s: the upstream closed {closed} connections, \
         {retried} requests were sent again on a new connection, {} failed",
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    println!("{measured}");
    assert!(failures.is_empty(), "{measured}: {failures:?}");
    // The upstream did close connections under the proxy's feet, many times...
    assert!(closed > 50, "{measured}: too few closes");
    // ...and some of those closes crossed a request, which the proxy sent again.
    assert!(
        retried > 0,
        "{measured}: the stale-connection retry never ran"
    );
    proxy.server.assert_no_panic();
}

/// A WebSocket echo server on a free port, on `runtime`.
async fn websocket_echo() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    if (message.is_text() || message.is_binary())
                        && socket.send(message).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn a_websocket_passes_through_and_a_silent_one_is_closed() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let upstream = websocket_echo().await;
        let config = format!(
            "[proxy]\nread_timeout_ms = 1500\n{}",
            one_group("", &[upstream])
        );
        let proxy = tokio::task::spawn_blocking(move || Proxy::start(&config, 1, &["--quiet"]))
            .await
            .unwrap();
        let url = format!("ws://{}/chat", proxy.addr());
        let (mut socket, response) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap_or_else(|error| panic!("no WebSocket through the proxy: {error}"));
        assert_eq!(response.status().as_u16(), 101);
        for i in 0..20 {
            let text = format!("hello {i}");
            socket.send(Message::text(text.clone())).await.unwrap();
            let echo = socket.next().await.unwrap().unwrap();
            assert_eq!(echo.into_text().unwrap().as_str(), text);
        }
        // A big binary message, in many TCP segments each way.
        let big: Vec<u8> = (0..300_000).map(|i| (i % 251) as u8).collect();
        socket.send(Message::binary(big.clone())).await.unwrap();
        let echo = socket.next().await.unwrap().unwrap();
        assert_eq!(echo.into_data().as_ref(), &big[..]);
        // Silent for longer than the read timeout: the proxy closes the tunnel.
        let started = Instant::now();
        let end = tokio::time::timeout(Duration::from_secs(10), socket.next()).await;
        let waited = started.elapsed();
        assert!(
            matches!(end, Ok(None | Some(Err(_)))),
            "the tunnel is still open after {waited:?}: {end:?}"
        );
        assert!(
            waited >= Duration::from_millis(1300) && waited < Duration::from_secs(6),
            "closed after {waited:?}, for a read timeout of 1.5 s"
        );
        // The worker goes on serving plain requests.
        let plain = tokio::task::spawn_blocking(move || {
            let answer = proxy.get("/");
            proxy.server.assert_no_panic();
            answer.status
        })
        .await
        .unwrap();
        // The echo server speaks only WebSocket: it closes on a plain request, and the client
        // gets our 502 for that; the point is that the worker still answers after its tunnels.
        assert_eq!(plain, 502);
    });
}

#[test]
fn a_101_that_nobody_asked_for_is_refused() {
    let recorder = Recorder::start_with(|_: &Recorded| {
        keep_alive(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        )
    });
    let proxy = Proxy::start(&one_group("", &[recorder.addr()]), 1, &["--quiet"]);
    let response = proxy.get("/");
    assert_eq!(response.status, 502, "{}", response.text());
}

#[test]
fn the_reqwest_client_forwards_too_the_simple_way() {
    let upstream = testkit::upstream::Upstream::start("a");
    let proxy = Proxy::start(
        &one_group("", &[upstream.addr()]),
        1,
        &["--quiet", "--upstream-client", "reqwest"],
    );
    let mut client = Client::connect(proxy.addr());
    let response = client.get("/");
    assert_eq!((response.status, response.text().as_str()), (200, "a\n"));
    // What a general client does to the head: names as its map keeps them, lower case.
    assert!(
        response
            .headers
            .iter()
            .any(|(name, _)| name == "x-served-by"),
        "{:?}",
        response.headers
    );
    client.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    let response = client.read_response();
    assert_eq!(response.status, 200);
    assert!(
        response.text().starts_with("bytes=5 "),
        "{}",
        response.text()
    );
    let raw = exchange(
        &proxy,
        "GET /trickle?chunks=2&gap_ms=10 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(
        raw.contains("\r\nTransfer-Encoding: chunked\r\n"),
        "{raw:?}"
    );
    assert!(raw.ends_with("tick 1\n\r\n0\r\n\r\n"), "{raw:?}");
    proxy.server.assert_no_panic();
}
