//! Forwarding, as a client and an upstream see it: the fields a proxy adds and the ones it
//! stops, the `Host` each group sends, 502 for an upstream that refuses and 504 for one that
//! stays silent, one retry of a `GET` (never of a `POST`), the upstream request cancelled
//! when its client leaves, no way to use the proxy as an open one, and 10 MB bodies streamed
//! both ways through a worker whose memory barely moves.
//!
//! The upstreams are `testkit::upstream`'s small servers, started by each test on loopback.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use support::{Proxy, list, one_group, served_by, wait_for};
use testkit::Client;
use testkit::upstream::{Blackhole, FNV_START, GZIP_BODY, Upstream, fnv, pattern, refused_addr};

/// The fields of a request head as the upstream received it (`/echo`'s body), lower-case names.
fn fields(head: &str) -> Vec<(String, String)> {
    head.lines()
        .skip(1)
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_string()))
        })
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, value)| value.as_str())
}

#[test]
fn forwarding_fields_are_added_and_hop_by_hop_fields_stop_at_the_proxy() {
    let upstream = Upstream::start("a");
    let proxy = Proxy::start(&one_group("", &[upstream.addr()]), 1, &["--quiet"]);
    let response = proxy.send(
        "GET /echo HTTP/1.1\r\nHost: site.test\r\nConnection: keep-alive, X-Secret\r\n\
         Keep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: websocket\r\n\
         Proxy-Authorization: Basic eDp5\r\nX-Secret: 1\r\nX-Forwarded-For: 203.0.113.9\r\n\
         X-Forwarded-Host: evil.test\r\nX-Forwarded-Proto: https\r\nVia: 1.0 edge\r\n\
         Accept: text/html\r\nCookie: a=1\r\n\r\n",
    );
    assert_eq!(response.status, 200, "{response:?}");
    let received = fields(&response.text());
    for gone in [
        "keep-alive",
        "te",
        "upgrade",
        "proxy-authorization",
        "x-secret",
    ] {
        assert_eq!(
            field(&received, gone),
            None,
            "{gone} reached the upstream: {received:?}"
        );
    }
    if let Some(connection) = field(&received, "connection") {
        assert!(
            !connection.to_ascii_lowercase().contains("secret"),
            "{connection}"
        );
    }
    assert_eq!(field(&received, "host"), Some("site.test"));
    assert_eq!(
        field(&received, "x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(field(&received, "x-forwarded-host"), Some("site.test"));
    assert_eq!(field(&received, "x-forwarded-proto"), Some("http"));
    assert_eq!(
        field(&received, "via"),
        Some("1.0 edge, 1.1 step07-reverse-proxy")
    );
    assert_eq!(field(&received, "accept"), Some("text/html"));
    assert_eq!(field(&received, "cookie"), Some("a=1"));

    // And on the way back.
    let response = proxy.get("/hop");
    assert_eq!(response.status, 200, "{response:?}");
    for gone in [
        "x-hop",
        "keep-alive",
        "proxy-authenticate",
        "upgrade",
        "trailer",
    ] {
        assert_eq!(
            response.header(gone),
            None,
            "{gone} reached the client: {response:?}"
        );
    }
    assert_eq!(response.header("x-end"), Some("1"));
    assert_eq!(response.header("server"), Some("step07-reverse-proxy"));
    assert_eq!(response.header("via"), Some("1.1 step07-reverse-proxy"));
    assert_eq!(response.text(), "hop\n");
    proxy.server.assert_no_panic();
}

#[test]
fn the_host_sent_upstream_is_the_clients_or_the_one_configured() {
    let upstream = Upstream::start("a");
    let addr = list(&[upstream.addr()]);
    let config = format!(
        "[[route]]\nprefix = \"/pass/\"\ngroup = \"pass\"\n\
         [[route]]\nprefix = \"/upstream/\"\ngroup = \"up\"\n\
         [[route]]\nprefix = \"/fixed/\"\ngroup = \"fixed\"\n\
         [group.pass]\nupstreams = {addr}\n\
         [group.up]\nupstreams = {addr}\nhost_header = \"upstream\"\n\
         [group.fixed]\nupstreams = {addr}\nhost_header = \"internal.test\"\n"
    );
    let proxy = Proxy::start(&config, 1, &["--quiet"]);
    let host = |path: &str| {
        let response = proxy.send(&format!(
            "GET {path} HTTP/1.1\r\nHost: Site.Test:8080\r\nConnection: close\r\n\r\n"
        ));
        assert_eq!(response.status, 200, "{path}: {response:?}");
        let received = fields(&response.text());
        assert_eq!(
            field(&received, "x-forwarded-host"),
            Some("Site.Test:8080"),
            "{path}"
        );
        field(&received, "host").map(str::to_string)
    };
    assert_eq!(host("/pass/echo").as_deref(), Some("Site.Test:8080"));
    assert_eq!(host("/upstream/echo"), Some(upstream.addr().to_string()));
    assert_eq!(host("/fixed/echo").as_deref(), Some("internal.test"));
}

#[test]
fn no_redirects_followed_no_decompression_and_no_encoding_of_our_own() {
    let upstream = Upstream::start("a");
    let proxy = Proxy::start(&one_group("", &[upstream.addr()]), 1, &["--quiet"]);

    let response = proxy.get("/redirect");
    assert_eq!(response.status, 302, "{response:?}");
    assert_eq!(response.header("location"), Some("/elsewhere"));
    assert_eq!(
        upstream.requests(),
        1,
        "the redirect was followed: {:?}",
        upstream.heads()
    );

    let response = proxy.send(
        "GET /gzip HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-encoding"), Some("gzip"));
    assert_eq!(response.body, GZIP_BODY, "the body was not passed as sent");

    let received = fields(&proxy.get("/echo").text());
    assert_eq!(
        field(&received, "accept-encoding"),
        None,
        "the proxy asked for an encoding the client did not: {received:?}"
    );
}

#[test]
fn the_environments_http_proxy_is_ignored() {
    let upstream = Upstream::start("a");
    let elsewhere = Upstream::start("elsewhere");
    let through = format!("http://{}", elsewhere.addr());
    let env = [
        ("HTTP_PROXY", through.as_str()),
        ("http_proxy", through.as_str()),
        ("ALL_PROXY", through.as_str()),
        ("all_proxy", through.as_str()),
    ];
    let proxy = Proxy::start_with_env(&one_group("", &[upstream.addr()]), 1, &["--quiet"], &env);
    let response = proxy.get("/");
    assert_eq!((response.status, served_by(&response).as_str()), (200, "a"));
    assert_eq!(elsewhere.connections(), 0, "HTTP_PROXY was used");
}

#[test]
fn a_refused_upstream_gets_502_and_when_all_are_out_a_clear_page() {
    let outlier = "outlier = { consecutive_failures = 1, ejection_ms = 60000 }";
    let proxy = Proxy::start(
        &one_group(outlier, &[refused_addr(), refused_addr()]),
        1,
        &["--quiet"],
    );
    // Asked to close, the proxy closes after its 502, as after any answer.
    let mut client = Client::connect(proxy.addr());
    client.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let response = client.read_response();
    assert_eq!(response.status, 502, "{response:?}");
    assert!(
        response.text().contains("could not be reached"),
        "{}",
        response.text()
    );
    assert_eq!(response.header("connection"), Some("close"));
    assert!(client.closes_within(Duration::from_secs(3)), "still open");
    // Both were tried (a GET is retried once) and both are now ejected.
    let response = proxy.get("/");
    assert_eq!(response.status, 502, "{response:?}");
    assert!(
        response
            .text()
            .contains("no upstream of group \"g\" is available"),
        "{}",
        response.text()
    );
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain"))
    );
    // Kept alive, a connection carries on after a 502.
    let mut client = Client::connect(proxy.addr());
    for _ in 0..2 {
        let response = client.get("/");
        assert_eq!(response.status, 502);
        assert_eq!(response.header("connection"), Some("keep-alive"));
    }
    // The proxy itself is fine.
    assert_eq!(proxy.get("/stats").status, 200);
    proxy.server.assert_no_panic();
}

#[test]
fn a_silent_upstream_gets_504_after_the_read_timeout_and_is_not_retried() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let config = format!(
        "[proxy]\nread_timeout_ms = 1000\n{}",
        one_group("", &[a.addr(), b.addr()])
    );
    let proxy = Proxy::start(&config, 1, &["--quiet"]);
    let started = Instant::now();
    let response = proxy.get("/sleep?ms=8000");
    let waited = started.elapsed();
    assert_eq!(response.status, 504, "{response:?}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "answered after {waited:?}, for a read timeout of 1 s"
    );
    assert_eq!(
        a.requests() + b.requests(),
        1,
        "a timed-out request was sent again"
    );
}

#[test]
fn an_upstream_that_cannot_be_reached_in_time_gets_504_after_the_connect_timeout() {
    let blackhole = Blackhole::start();
    let config = format!(
        "[proxy]\nconnect_timeout_ms = 500\n{}",
        one_group("", &[blackhole.addr()])
    );
    let proxy = Proxy::start(&config, 1, &["--quiet"]);
    let started = Instant::now();
    let response = proxy.get("/");
    let waited = started.elapsed();
    assert_eq!(response.status, 504, "{response:?}");
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(5),
        "answered after {waited:?}, for a connect timeout of 0.5 s"
    );
    // A connection that could not be made is a connection error: a GET goes to the next one.
    let good = Upstream::start("good");
    let config = format!(
        "[proxy]\nconnect_timeout_ms = 500\n{}",
        one_group("", &[blackhole.addr(), good.addr()])
    );
    let proxy = Proxy::start(&config, 1, &["--quiet"]);
    for _ in 0..2 {
        let response = proxy.get("/");
        assert_eq!(
            (response.status, served_by(&response).as_str()),
            (200, "good")
        );
    }
}

#[test]
fn the_read_timeout_limits_silence_not_the_whole_answer() {
    let upstream = Upstream::start("a");
    let config = format!(
        "[proxy]\nread_timeout_ms = 1000\n{}",
        one_group("", &[upstream.addr()])
    );
    let proxy = Proxy::start(&config, 1, &["--quiet"]);
    // 2 s in all, but never 1 s of silence: it arrives whole.
    let response = proxy.get("/trickle?chunks=5&gap_ms=400");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.header("transfer-encoding"), Some("chunked"));
    let text = response.text();
    assert!(
        text.contains("tick 4\n") && text.ends_with("0\r\n\r\n"),
        "{text:?}"
    );
    // The head, then 3 s of silence: cut off after 1 s, without the last chunk.
    let started = Instant::now();
    let response = proxy.get("/trickle?chunks=1&gap_ms=3000");
    let waited = started.elapsed();
    assert_eq!(
        response.status, 200,
        "the head had already left: {response:?}"
    );
    assert!(
        !response.text().ends_with("0\r\n\r\n"),
        "{:?}",
        response.text()
    );
    assert!(waited < Duration::from_millis(2800), "cut after {waited:?}");
}

#[test]
fn get_and_head_are_retried_on_another_upstream_but_post_never() {
    let good = Upstream::start("good");
    // No ejection: every request meets the refusing upstream in its turn.
    let outlier = "outlier = { consecutive_failures = 1000, ejection_ms = 1 }";
    let proxy = Proxy::start(
        &one_group(outlier, &[refused_addr(), good.addr()]),
        1,
        &["--quiet"],
    );
    for _ in 0..4 {
        let response = proxy.get("/");
        assert_eq!(
            (response.status, served_by(&response).as_str()),
            (200, "good")
        );
        let response = proxy.send("HEAD / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        assert_eq!(response.status, 200, "{response:?}");
    }
    let statuses: Vec<u16> = (0..4)
        .map(|_| {
            proxy
                .send("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
                .status
        })
        .collect();
    // Round robin: two of the four POSTs met the refusing upstream, and stayed failed.
    assert_eq!(
        statuses.iter().filter(|&&s| s == 502).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        2,
        "{statuses:?}"
    );
    let posts = good
        .heads()
        .iter()
        .filter(|head| head.starts_with("POST"))
        .count();
    assert_eq!(posts, 2);
}

#[test]
fn a_client_that_leaves_cancels_its_upstream_request() {
    let upstream = Upstream::start("a");
    let proxy = Proxy::start(&one_group("", &[upstream.addr()]), 1, &["--quiet"]);
    let mut client = Client::connect(proxy.addr());
    client.send(b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
    wait_for(Duration::from_secs(10), || {
        (upstream.requests() == 1).then_some(())
    })
    .expect("the request never reached the upstream");
    assert_eq!(upstream.peer_closed(), 0);
    // A client that waited, then left: its FIN comes well after its request. (One that comes
    // with the request is a half-close, answered: see `HALF_CLOSE_WINDOW` in client.rs,
    // and the contract's `a_half_closed_client_gets_its_answer_and_the_end`.)
    std::thread::sleep(Duration::from_millis(300));
    drop(client);
    let closed = wait_for(Duration::from_secs(3), || {
        (upstream.peer_closed() == 1).then_some(())
    });
    assert!(
        closed.is_some(),
        "the upstream still holds the request of a client that left"
    );
    // The worker goes on serving.
    assert_eq!(proxy.get("/").status, 200);
}

#[test]
fn absolute_targets_and_unknown_hosts_never_reach_an_arbitrary_host() {
    let site = Upstream::start("site");
    let elsewhere = Upstream::start("elsewhere");
    let config = format!(
        "[[route]]\nhost = \"site.test\"\ngroup = \"site\"\n[group.site]\nupstreams = {}\n",
        list(&[site.addr()])
    );
    let proxy = Proxy::start(&config, 1, &["--quiet"]);
    let other = elsewhere.addr();
    // An absolute-form target naming another host.
    let response = proxy.send(&format!(
        "GET http://{other}/secret HTTP/1.1\r\nHost: {other}\r\nConnection: close\r\n\r\n"
    ));
    assert_eq!(response.status, 404, "{response:?}");
    // A Host that no route names.
    let response = proxy.send("GET /echo HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n");
    assert_eq!(response.status, 404, "{response:?}");
    // A tunnel.
    let response = proxy.send(&format!(
        "CONNECT {other} HTTP/1.1\r\nHost: {other}\r\nConnection: close\r\n\r\n"
    ));
    assert!((400..500).contains(&response.status), "{response:?}");
    assert_eq!(
        elsewhere.connections(),
        0,
        "the proxy connected to a host it was told to"
    );
    assert_eq!(site.requests(), 0, "{:?}", site.heads());
    // An absolute-form target naming our site goes to our upstream, in origin form.
    let response = proxy.send(&format!(
        "GET http://site.test/echo HTTP/1.1\r\nHost: {other}\r\nConnection: close\r\n\r\n"
    ));
    assert_eq!(
        (response.status, served_by(&response).as_str()),
        (200, "site")
    );
    assert!(
        response.text().starts_with("GET /echo HTTP/1.1\r\n"),
        "{}",
        response.text()
    );
    assert_eq!(elsewhere.connections(), 0);
}

/// The peak resident memory of `pid` while `work` runs, sampled every 5 ms, over what it was
/// before; in KiB.
fn peak_growth_kib(pid: u32, work: impl FnOnce()) -> u64 {
    let rss = || testkit::procfs::rss_kib(pid).expect("no such worker");
    let baseline = rss();
    let peak = Arc::new(AtomicU64::new(baseline));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (Arc::clone(&peak), Arc::clone(&done));
        thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                if let Some(now) = testkit::procfs::rss_kib(pid) {
                    peak.fetch_max(now, Ordering::SeqCst);
                }
                thread::sleep(Duration::from_millis(5));
            }
        })
    };
    work();
    done.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    peak.load(Ordering::SeqCst).saturating_sub(baseline)
}

/// Uploads `bytes` through the proxy to an upstream reading at its own pace; the answer.
fn upload(proxy: &Proxy, bytes: usize, pace_us: u64) -> (String, u64) {
    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "POST /upload?pace_us={pace_us} HTTP/1.1\r\nHost: t\r\nContent-Length: {bytes}\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut hash = FNV_START;
    let mut block = vec![0u8; 64 * 1024];
    let mut sent = 0;
    while sent < bytes {
        let count = block.len().min(bytes - sent);
        for (i, byte) in block[..count].iter_mut().enumerate() {
            *byte = pattern(sent + i);
        }
        stream.write_all(&block[..count]).unwrap();
        hash = fnv(hash, &block[..count]);
        sent += count;
    }
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    (answer, hash)
}

/// Downloads `bytes` through the proxy, reading slowly; the bytes received and their checksum.
fn download(proxy: &Proxy, bytes: usize, pause: Duration) -> (usize, u64) {
    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "GET /download?bytes={bytes} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut received = Vec::new();
    let mut block = vec![0u8; 64 * 1024];
    let head_end = loop {
        let read = stream.read(&mut block).unwrap();
        assert!(read > 0, "closed before the head");
        received.extend_from_slice(&block[..read]);
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains(&format!("Content-Length: {bytes}")), "{head}");
    let mut hash = fnv(FNV_START, &received[head_end..]);
    let mut count = received.len() - head_end;
    loop {
        thread::sleep(pause);
        let read = stream.read(&mut block).unwrap();
        if read == 0 {
            break;
        }
        hash = fnv(hash, &block[..read]);
        count += read;
    }
    (count, hash)
}

#[test]
fn ten_megabytes_stream_both_ways_through_a_worker_whose_memory_barely_moves() {
    const TEN_MB: usize = 10 * 1024 * 1024;
    if !testkit::tools::has_procfs("ten_megabytes_stream_both_ways") {
        return;
    }
    let upstream = Upstream::start("a");
    let proxy = Proxy::start(&one_group("", &[upstream.addr()]), 1, &["--quiet"]);
    let workers = proxy.wait_for_workers(1);
    // Warm up: the first transfers fill the allocator's and the HTTP client's pools.
    upload(&proxy, 1024 * 1024, 0);
    download(&proxy, 1024 * 1024, Duration::ZERO);
    let expected_hash = (0..TEN_MB).fold(FNV_START, |hash, i| fnv(hash, &[pattern(i)]));

    // The upstream reads 64 KiB every 5 ms at most: a proxy that buffered would hold what
    // the client sends faster than that.
    let mut answer = (String::new(), 0);
    let growth = peak_growth_kib(workers[0], || answer = upload(&proxy, TEN_MB, 5_000));
    let (text, sent_hash) = answer;
    assert_eq!(sent_hash, expected_hash);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.ends_with(&format!("bytes={TEN_MB} fnv={expected_hash:016x}\n")),
        "{text}"
    );
    assert!(
        growth < 5 * 1024,
        "the worker grew by {growth} KiB for a 10 MB upload"
    );

    // The client reads 64 KiB every 5 ms at most; the upstream writes as fast as it can.
    let mut received = (0, 0);
    let growth = peak_growth_kib(workers[0], || {
        received = download(&proxy, TEN_MB, Duration::from_millis(5));
    });
    assert_eq!(received, (TEN_MB, expected_hash));
    assert!(
        growth < 5 * 1024,
        "the worker grew by {growth} KiB for a 10 MB download"
    );
    proxy.server.assert_no_panic();
}

#[test]
fn the_framing_of_each_hop_is_the_proxys_own() {
    let upstream = Upstream::start("a");
    let proxy = Proxy::start(&one_group("", &[upstream.addr()]), 1, &["--quiet"]);
    // A chunked upload arrives whole, whatever framing the upstream request uses.
    let response = proxy.send(
        "POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    let expected = fnv(FNV_START, b"hello world");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.text(), format!("bytes=11 fnv={expected:016x}\n"));
    // A chunked answer to an HTTP/1.0 client: no chunks (1.0 has none), the end is the close.
    let response = proxy.send("GET /trickle?chunks=2&gap_ms=10 HTTP/1.0\r\nHost: t\r\n\r\n");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.header("transfer-encoding"), None);
    assert_eq!(response.header("connection"), Some("close"));
    assert_eq!(response.text(), "tick 0\ntick 1\n");
}
