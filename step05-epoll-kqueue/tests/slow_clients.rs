//! Five hundred slow clients (a byte of request head per second, never finished) against the
//! one thread: normal clients are still answered quickly all along, and every slow one gets
//! 408 when the header timeout ends its wait (`scripts/slow_clients.py`, chapter 05).

use testkit::{Server, tools};

const BIN: &str = env!("CARGO_BIN_EXE_step05-epoll-kqueue");

#[test]
fn five_hundred_slow_clients_do_not_slow_the_others() {
    let server = Server::start(BIN, &["--quiet", "--header-timeout-ms", "3000"]);
    let args = [
        "--url",
        &server.url(""),
        "-n",
        "500",
        "--header-timeout-ms",
        "3000",
    ];
    let Some((status, report)) = tools::python_report("slow_clients.py", &args, "slow_clients")
    else {
        return;
    };
    assert_eq!(status, 0, "{report}");
    assert_eq!(report["slow_opened"], 500, "{report}");
    assert_eq!(
        report["slow_answers"]["HTTP/1.1 408 Request Timeout"], 500,
        "{report}"
    );
    let p99 = report["normal_p99_ms"].as_f64().unwrap_or(f64::MAX);
    assert!(p99 < 100.0, "normal clients' p99 was {p99} ms: {report}");
    assert!(report["normal_ok"].as_u64().unwrap_or(0) >= 20, "{report}");
    server.assert_no_panic();
}
