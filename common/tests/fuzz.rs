//! Property tests of what the network feeds `common`: the head parser, the chunked decoder and
//! the router, with random bytes and with random request-shaped input.
//!
//! CI runs a bounded number of cases (seconds). For a longer hunt:
//!
//! ```text
//! FUZZ_CASES=1000000 cargo test --release -p common --test fuzz
//! ```
//!
//! A failure found here becomes a case in `testkit/corpus/bad-input.toml`, so that every step
//! is checked against it from then on.

use std::time::Duration;

use common::Site;
use common::chunked::ChunkedDecoder;
use common::parse::{MAX_HEAD_BYTES, parse_head};
use proptest::collection::vec;
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(3000);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// Request-shaped input: real methods, targets, versions and headers, spliced with odd bytes,
/// so that the parser is driven past its first line, where random bytes rarely get.
fn request_like() -> impl Strategy<Value = Vec<u8>> {
    let method = prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "get", "BREW", "PRI", ""]);
    let target = prop::sample::select(vec![
        "/",
        "/hello.html",
        "/script.js",
        "/stats",
        "/sleep?ms=0",
        "/sleep?ms=x",
        "/sleep?ms=99999",
        "*",
        "http://a/stats",
        "index.html",
        "/%00",
        "/a b",
    ]);
    let version = prop::sample::select(vec![
        "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.2", "http/1.1", "",
    ]);
    let header_name = prop::sample::select(vec![
        "Host",
        "Content-Length",
        "Transfer-Encoding",
        "Connection",
        "Expect",
        "If-None-Match",
        "X-Other",
        "Host ",
        "",
    ]);
    let header_value = prop::sample::select(vec![
        "t",
        "0",
        "5",
        "-1",
        "chunked",
        "gzip, chunked",
        "chunked, identity",
        "close",
        "keep-alive",
        "100-continue",
        "*",
        "W/\"x\"",
        "a\0b",
        "",
        " 7 ",
    ]);
    let header = (
        header_name,
        header_value,
        prop::sample::select(vec!["\r\n", "\n", "\r"]),
    )
        .prop_map(|(name, value, end)| format!("{name}: {value}{end}"));
    let tail = vec(any::<u8>(), 0..32);
    (method, target, version, vec(header, 0..8), tail).prop_map(
        |(method, target, version, headers, tail)| {
            let mut bytes =
                format!("{method} {target} {version}\r\n{}\r\n", headers.concat()).into_bytes();
            bytes.extend(tail);
            bytes
        },
    )
}

proptest! {
    #![proptest_config(config())]

    /// No input makes the parser panic, and a complete head lies within the input and the limit.
    #[test]
    fn the_parser_takes_any_bytes(bytes in vec(any::<u8>(), 0..12_000)) {
        if let Ok(Some(head)) = parse_head(&bytes) {
            prop_assert!(head.len <= bytes.len() && head.len <= MAX_HEAD_BYTES);
        }
    }

    /// Request-shaped input: the parser never panics, the router answers every head it accepts
    /// with a status from the contract, and the rendered answer's Content-Length is its body's.
    #[test]
    fn every_parsed_request_gets_a_contract_answer(bytes in request_like()) {
        let site = Site::new("fuzz", Duration::ZERO);
        match parse_head(&bytes) {
            Ok(Some(head)) => {
                let reply = site.reply(&head);
                let status = reply.response.status;
                prop_assert!([200, 304, 400, 404, 405].contains(&status), "status {}", status);
                let mut out = Vec::new();
                site.render(&reply.response, head.keep_alive, &mut out);
                let text = String::from_utf8_lossy(&out);
                let length = format!("Content-Length: {}\r\n", reply.response.body.len());
                prop_assert!(text.contains(&length));
            }
            Ok(None) => {}
            Err(error) => prop_assert!(error.status() >= 400 && error.status() < 600),
        }
    }

    /// A complete head is found the same way however it arrives: every shorter prefix asks
    /// for more, never errs, never completes early.
    #[test]
    fn a_head_cut_anywhere_asks_for_more(bytes in request_like(), cut in any::<prop::sample::Index>()) {
        if let Ok(Some(head)) = parse_head(&bytes) {
            let end = cut.index(head.len);
            prop_assert!(matches!(parse_head(&bytes[..end]), Ok(None)), "prefix of {} bytes", end);
        }
    }

    /// Chunked bodies decode the same whether they arrive whole or in random pieces, and random
    /// bytes never make the decoder panic or consume past what it was given.
    #[test]
    fn chunked_decoding_does_not_depend_on_how_bytes_arrive(
        chunks in vec(vec(any::<u8>(), 0..300), 0..6),
        cuts in vec(any::<prop::sample::Index>(), 0..8),
        junk in vec(any::<u8>(), 0..64),
    ) {
        let mut body = Vec::new();
        for chunk in chunks.iter().filter(|c| !c.is_empty()) {
            body.extend_from_slice(format!("{:x};ext=1\r\n", chunk.len()).as_bytes());
            body.extend_from_slice(chunk);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\nTrailer: t\r\n\r\n");
        let expected: Vec<u8> = chunks.concat();
        let end_of_body = body.len();
        body.extend_from_slice(&junk);

        // Feed the body in pieces, cut at random (sorted) points.
        let mut points: Vec<usize> = cuts.iter().map(|cut| cut.index(body.len() + 1)).collect();
        points.push(body.len());
        points.sort_unstable();
        let (mut decoder, mut data, mut consumed) = (ChunkedDecoder::new(), Vec::new(), 0);
        for point in points {
            if decoder.is_done() {
                break;
            }
            let piece = &body[consumed..point.max(consumed)];
            let used = decoder.feed(piece, |bytes| data.extend_from_slice(bytes));
            prop_assert!(matches!(used, Ok(n) if n <= piece.len()), "{:?}", used);
            consumed += used.unwrap_or(0);
        }
        prop_assert!(decoder.is_done());
        prop_assert_eq!(consumed, end_of_body, "stops exactly at the end of the body");
        prop_assert_eq!(data, expected);

        let mut random = ChunkedDecoder::new();
        if let Ok(used) = random.feed(&junk, |_| {}) {
            prop_assert!(used <= junk.len());
        }
    }
}
