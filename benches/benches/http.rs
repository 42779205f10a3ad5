//! What every step pays per request whatever its model: parsing the head and rendering the
//! answer (`common::parse` and `common::response`).

use std::hint::black_box;
use std::time::Duration;

use common::Site;
use common::parse::parse_head;
use criterion::{Criterion, criterion_group, criterion_main};

/// What `curl http://127.0.0.1:8090/hello.html` sends.
const HELLO_REQUEST: &[u8] =
    b"GET /hello.html HTTP/1.1\r\nHost: 127.0.0.1:8090\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n";

/// A browser-sized request: twenty header lines.
fn twenty_header_request() -> Vec<u8> {
    let mut request = b"GET /hello.html HTTP/1.1\r\nHost: 127.0.0.1:8090\r\n".to_vec();
    for i in 1..20 {
        request.extend_from_slice(
            format!("X-Header-{i:02}: value number {i} of this request\r\n").as_bytes(),
        );
    }
    request.extend_from_slice(b"\r\n");
    request
}

fn parsing(c: &mut Criterion) {
    c.bench_function("parse: hello request (4 headers)", |b| {
        b.iter(|| {
            parse_head(black_box(HELLO_REQUEST))
                .ok()
                .flatten()
                .map(|head| head.len)
        });
    });
    let twenty = twenty_header_request();
    c.bench_function("parse: 20-header request", |b| {
        b.iter(|| {
            parse_head(black_box(&twenty))
                .ok()
                .flatten()
                .map(|head| head.len)
        });
    });
}

fn rendering(c: &mut Criterion) {
    let site = Site::new("step-bench", Duration::ZERO);
    let Ok(Some(head)) = parse_head(HELLO_REQUEST) else {
        return;
    };
    let mut out = Vec::with_capacity(4096);
    c.bench_function("route + render: hello page", |b| {
        b.iter(|| {
            let reply = site.reply(black_box(&head));
            out.clear();
            site.render(&reply.response, true, &mut out);
            out.len()
        });
    });
}

criterion_group!(benches, parsing, rendering);
criterion_main!(benches);
