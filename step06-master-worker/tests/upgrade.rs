//! Replacing the binary without closing the port (`kill -USR2 <master>`): a rebuilt binary
//! takes over under load without failing a request, in both listen modes, and leaves no process
//! of either generation behind; a broken one leaves the old master serving, and so does one
//! that hangs, stopped after `--upgrade-timeout-ms`.

use testkit::tools::has_procfs;
use testkit::upgrade::{
    a_failing_new_binary_leaves_the_old_master_serving,
    a_hung_new_binary_is_stopped_after_the_timeout, an_upgrade_under_load_fails_no_request,
};

const BIN: &str = env!("CARGO_BIN_EXE_step06-master-worker");

/// The new master adopts the listening socket the old one hands over; the old one retires once
/// the new workers are ready.
#[test]
fn an_upgrade_under_load_fails_no_request_shared() {
    if !has_procfs("an_upgrade_under_load_fails_no_request_shared") {
        return;
    }
    let args = ["--quiet", "--workers", "2", "--listen", "shared"];
    eprintln!(
        "{}",
        an_upgrade_under_load_fails_no_request(BIN, &args, 2, "/").0
    );
}

/// With `--listen reuseport` the new workers bind sockets of their own beside the old ones;
/// the old ones close only once every new one is there.
#[test]
fn an_upgrade_under_load_fails_no_request_reuseport() {
    if !has_procfs("an_upgrade_under_load_fails_no_request_reuseport") {
        return;
    }
    let args = ["--quiet", "--workers", "2", "--listen", "reuseport"];
    eprintln!(
        "{}",
        an_upgrade_under_load_fails_no_request(BIN, &args, 2, "/").0
    );
}

/// A binary that exits at once: one log line, and the old master goes on serving.
#[test]
fn a_failing_new_binary_leaves_the_old_master_serving_in_both_modes() {
    if !has_procfs("a_failing_new_binary_leaves_the_old_master_serving") {
        return;
    }
    for mode in ["shared", "reuseport"] {
        let args = ["--quiet", "--workers", "2", "--listen", mode];
        eprintln!(
            "{mode}: {}",
            a_failing_new_binary_leaves_the_old_master_serving(BIN, &args, 2)
        );
    }
}

/// A binary that starts and never becomes ready: after `--upgrade-timeout-ms` the old master
/// stops it, reaps it, logs one line and goes on serving; a good binary then takes over.
#[test]
fn a_hung_new_binary_is_stopped_after_the_timeout_in_both_modes() {
    if !has_procfs("a_hung_new_binary_is_stopped_after_the_timeout") {
        return;
    }
    for mode in ["shared", "reuseport"] {
        let args = ["--quiet", "--workers", "2", "--listen", mode];
        eprintln!(
            "{mode}: {}",
            a_hung_new_binary_is_stopped_after_the_timeout(BIN, &args, 2)
        );
    }
}

/// As PID 1 (a container's master), the old master does not exit after the handover, which
/// would end the container: it stays as init for the new master and passes `SIGTERM` on.
#[test]
fn as_pid_1_the_old_master_stays_as_init() {
    if !has_procfs("as_pid_1_the_old_master_stays_as_init") {
        return;
    }
    match testkit::upgrade::as_pid_1_the_old_master_stays_as_init(BIN) {
        Some(measured) => eprintln!("{measured}"),
        None => eprintln!(
            "skipped: as_pid_1_the_old_master_stays_as_init: `unshare --pid --fork` cannot run \
             here (it needs root)"
        ),
    }
}
