//! The chapter's first experiment, run with `scripts/accesses.py`: requests on new connections
//! are answered by both workers, seen both from `/stats` (distinct pids) and from the
//! `X-Worker` header (distinct worker indexes).

use std::path::Path;
use std::process::Command;

use testkit::{Server, tools};

const BIN: &str = env!("CARGO_BIN_EXE_step06-master-worker");

#[test]
fn accesses_py_sees_every_worker_answer() {
    if !tools::available("python3", "accesses_py_sees_every_worker_answer") {
        return;
    }
    let server = Server::start(BIN, &["--quiet", "--workers", "2"]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/accesses.py");
    let output = Command::new("python3")
        .arg(script)
        .args([&server.url("/stats"), "-n", "200", "-c", "20", "--json"])
        .output()
        .expect("python3 runs");
    let summary: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
            panic!(
                "accesses.py printed no JSON ({error}): {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    assert_eq!(output.status.code(), Some(0), "{summary}");
    assert_eq!(summary["ok"], 200, "{summary}");
    assert_eq!(summary["server"], "step06-master-worker", "{summary}");
    assert_eq!(summary["distinct_pids"], 2, "{summary}");
    assert_eq!(summary["distinct_workers"], 2, "{summary}");
}
