//! `scripts/accesses.py`, the course's tester: its own tests, and the course's experiment run
//! with it against step 01.

use std::path::Path;
use std::process::Command;

use testkit::{Server, tools};

const BIN: &str = env!("CARGO_BIN_EXE_step01-fork");

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in the workspace")
}

fn accesses(args: &[&str]) -> (i32, serde_json::Value) {
    let output = Command::new("python3")
        .arg(workspace().join("scripts/accesses.py"))
        .args(args)
        .arg("--json")
        .output()
        .expect("python3 runs");
    let summary = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "accesses.py printed no JSON ({error}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().unwrap_or(-1), summary)
}

/// The script's own unit tests (`scripts/tests`), which run it against a stand-in server.
#[test]
fn accesses_py_passes_its_own_tests() {
    if !tools::available("python3", "accesses_py_passes_its_own_tests") {
        return;
    }
    let output = Command::new("python3")
        .args(["-m", "unittest", "discover", "-s", "scripts/tests"])
        .current_dir(workspace())
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "accesses.py tests failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// What a student sees: ten slow requests at once take about one delay on the forking server,
/// answered by ten different processes, and ten delays on the iterative one, by one process.
#[test]
fn accesses_py_shows_the_course_experiment() {
    if !tools::available("python3", "accesses_py_shows_the_course_experiment") {
        return;
    }
    let forking = Server::start(BIN, &["--quiet", "--delay-ms", "300"]);
    let (code, summary) = accesses(&[&forking.url("/stats"), "-n", "10", "-c", "10"]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["ok"], 10);
    assert_eq!(summary["distinct_pids"], 10);
    assert_eq!(summary["server"], "step01-fork");
    let forking_wall = summary["wall_s"].as_f64().unwrap_or(f64::MAX);

    let iterative = Server::start(BIN, &["--quiet", "--delay-ms", "300", "--iterative"]);
    let (code, summary) = accesses(&[&iterative.url("/stats"), "-n", "10", "-c", "10"]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["distinct_pids"], 1);
    let iterative_wall = summary["wall_s"].as_f64().unwrap_or(0.0);
    assert!(
        iterative_wall >= 2.9,
        "iterative took only {iterative_wall} s"
    );
    assert!(
        iterative_wall > 3.0 * forking_wall,
        "forking {forking_wall} s vs iterative {iterative_wall} s"
    );
}
