//! External tools that some tests need.
//!
//! A test never passes silently for want of a tool. Where `FTP_REQUIRE_TOOLS` is set (`.ci/run`
//! sets it, after installing what the tests need), a missing tool fails the test; elsewhere
//! the test prints why it skips.

use std::process::{Command, Stdio};

/// Whether `tool --version` runs. If not, fails under `FTP_REQUIRE_TOOLS`, else prints
/// `skipped: <test>: <tool> not found` and returns `false`.
///
/// # Panics
///
/// When the tool is missing and `FTP_REQUIRE_TOOLS` is set.
pub fn available(tool: &str, test: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        assert!(
            std::env::var_os("FTP_REQUIRE_TOOLS").is_none(),
            "{test} needs {tool}, which is not installed (FTP_REQUIRE_TOOLS is set)"
        );
        eprintln!("skipped: {test}: {tool} not found");
    }
    found
}

/// Whether Linux's `/proc` can be read, which tells us about processes and threads. If not,
/// prints why `test` (or the part of it that needs `/proc`) skips.
///
/// # Panics
///
/// On Linux without a readable `/proc` when `FTP_REQUIRE_TOOLS` is set.
pub fn has_procfs(test: &str) -> bool {
    let readable = std::fs::metadata("/proc/self/stat").is_ok();
    if !readable {
        assert!(
            !cfg!(target_os = "linux") || std::env::var_os("FTP_REQUIRE_TOOLS").is_none(),
            "{test} needs /proc, which is not mounted (FTP_REQUIRE_TOOLS is set)"
        );
        eprintln!("skipped: {test}: needs Linux's /proc");
    }
    readable
}

/// Runs `python3 scripts/<script> --json <args>` from the workspace root and returns its JSON
/// report and exit status; `None` (after printing why) when python3 is missing and
/// `FTP_REQUIRE_TOOLS` is not set.
///
/// # Panics
///
/// When the script prints no JSON (its stderr is in the message), or python3 is missing under
/// `FTP_REQUIRE_TOOLS`.
pub fn python_report(script: &str, args: &[&str], test: &str) -> Option<(i32, serde_json::Value)> {
    if !available("python3", test) {
        return None;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| std::path::Path::new("."));
    let output = Command::new("python3")
        .arg(root.join("scripts").join(script))
        // First, so that it stays the script's option even when `args` end with `-- ...`
        // options for the server.
        .arg("--json")
        .args(args)
        .current_dir(root)
        .output()
        .unwrap_or_else(|error| panic!("cannot run python3: {error}"));
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "{script} printed no JSON ({error}); stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    Some((output.status.code().unwrap_or(-1), report))
}
