//! Five hundred slow clients (a byte of request head per second, never finished) against the
//! proxy's two workers, in front of the demo's three upstreams: normal requests are still
//! forwarded and answered quickly all along, and every slow client gets 408 from the proxy
//! when the header timeout ends its wait (`scripts/slow_clients.py`).

const BIN: &str = env!("CARGO_BIN_EXE_step07-reverse-proxy");

#[test]
fn five_hundred_slow_clients_do_not_slow_the_others() {
    testkit::slow::slow_clients_hold_no_one_up(BIN, &["--workers", "2"]);
}
