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

/// Whether this is Linux, where `/proc` tells us about processes and threads. If not, prints
/// why `test` skips.
pub fn has_procfs(test: &str) -> bool {
    let linux = cfg!(target_os = "linux");
    if !linux {
        eprintln!("skipped: {test}: needs Linux's /proc");
    }
    linux
}
