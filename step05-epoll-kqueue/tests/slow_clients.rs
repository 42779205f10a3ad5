//! Five hundred slow clients (a byte of request head per second, never finished) against the
//! one thread: normal clients are still answered quickly all along, and every slow one gets
//! 408 when the header timeout ends its wait (`scripts/slow_clients.py`, chapter 05).

const BIN: &str = env!("CARGO_BIN_EXE_step05-epoll-kqueue");

#[test]
fn five_hundred_slow_clients_do_not_slow_the_others() {
    testkit::slow::slow_clients_hold_no_one_up(BIN, &[]);
}
