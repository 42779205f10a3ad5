//! Five hundred slow clients (a byte of request head per second, never finished) against two
//! workers, each an event loop like step 05's: normal clients are still answered quickly all
//! along, and every slow one gets 408 when the header timeout ends its wait, whichever worker
//! holds it (`scripts/slow_clients.py`).

const BIN: &str = env!("CARGO_BIN_EXE_step06-master-worker");

#[test]
fn five_hundred_slow_clients_do_not_slow_the_others() {
    testkit::slow::slow_clients_hold_no_one_up(BIN, &["--workers", "2"]);
}
