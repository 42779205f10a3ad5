//! One request and its answer over loopback to each step's release binary: on a connection
//! kept alive across requests, and on a new connection per request (what accesses.py does by
//! default, and where step 01 pays a fork and step 02 a thread per request).

use std::time::Duration;

use benches::{STEPS, step_binary};
use criterion::{Criterion, criterion_group, criterion_main};
use testkit::{Client, Server};

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
const REQUEST_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";

fn end_to_end(c: &mut Criterion) {
    let mut group = c.benchmark_group("end to end");
    group.measurement_time(Duration::from_secs(3));
    for (step, options) in STEPS {
        let binary = step_binary(step);
        let binary = binary.to_string_lossy();
        let mut args = vec!["--quiet"];
        args.extend_from_slice(options);
        let server = Server::start(&binary, &args);
        let name = format!("{step} {}", options.join(" "))
            .trim_end()
            .to_string();

        let mut client = Client::connect(server.addr());
        group.bench_function(format!("{name}: keep-alive"), |b| {
            b.iter(|| {
                client.send(REQUEST);
                client.read_response().status
            });
        });
        drop(client);

        group.bench_function(format!("{name}: new connection"), |b| {
            b.iter(|| {
                let mut client = Client::connect(server.addr());
                client.send(REQUEST_CLOSE);
                client.read_response().status
            });
        });
    }
    group.finish();
}

criterion_group!(benches, end_to_end);
criterion_main!(benches);
