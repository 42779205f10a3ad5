//! Slow clients ("slowloris") against a step: `scripts/slow_clients.py` opens five hundred
//! connections that send their request head a byte per second and never finish it, while a
//! normal client sends ordinary requests one after the other on fresh connections.
//!
//! What a step must show (issue 10): the normal client is answered quickly all along (p99
//! under [`NORMAL_P99_LIMIT_MS`]), and every slow client gets 408 when the header timeout ends
//! its wait. A step whose connections each cost a thread or a process cannot: the slow ones
//! hold them all. Steps 05 to 07 multiplex connections, so a slow one costs a few hundred bytes.

use crate::server::Server;
use crate::tools;

/// The slow connections opened: more than a thread-per-connection step would serve at once,
/// and well below any descriptor limit (the steps raise their soft limit to the hard one; the
/// script, a child of the test, inherits the test's, and 1024 would still do).
pub const SLOW_CLIENTS: u64 = 500;

/// The header timeout the server runs with: long enough that the slow heads are still
/// trickling when the normal requests are measured, short enough for a test.
pub const HEADER_TIMEOUT_MS: &str = "3000";

/// The bound on the normal client's p99, in milliseconds: a debug build on two shared cores,
/// with the rest of the suite running beside it, answers in a few milliseconds; a server held
/// up by its slow clients takes seconds.
pub const NORMAL_P99_LIMIT_MS: f64 = 100.0;

/// Starts `bin` with `--quiet`, the short header timeout and `args`, runs the slow clients
/// against it, and asserts that nobody was held up and that every slow client got 408. The
/// script's report, for the caller to print or check further; `None` when python3 is missing
/// (see [`tools::available`]).
///
/// # Panics
///
/// When a check fails (this is a test): the message holds the script's whole report.
pub fn slow_clients_hold_no_one_up(bin: &str, args: &[&str]) -> Option<serde_json::Value> {
    let mut all = vec!["--quiet", "--header-timeout-ms", HEADER_TIMEOUT_MS];
    all.extend_from_slice(args);
    let server = Server::start(bin, &all);
    let slow = SLOW_CLIENTS.to_string();
    let url = server.url("");
    let script_args = [
        "--url",
        &url,
        "-n",
        &slow,
        "--header-timeout-ms",
        HEADER_TIMEOUT_MS,
    ];
    let (status, report) = tools::python_report(
        "slow_clients.py",
        &script_args,
        "slow_clients_hold_no_one_up",
    )?;
    eprintln!("{}: {report}", server.name());
    assert_eq!(status, 0, "{report}");
    assert_eq!(report["slow_opened"], SLOW_CLIENTS, "{report}");
    assert_eq!(
        report["slow_answers"]["HTTP/1.1 408 Request Timeout"], SLOW_CLIENTS,
        "every slow client gets 408 at the header timeout: {report}"
    );
    let p99 = report["normal_p99_ms"].as_f64().unwrap_or(f64::MAX);
    assert!(
        p99 < NORMAL_P99_LIMIT_MS,
        "normal clients' p99 was {p99} ms: {report}"
    );
    assert!(report["normal_ok"].as_u64().unwrap_or(0) >= 20, "{report}");
    server.assert_no_panic();
    Some(report)
}
