//! One line per request on stdout (the access log), one line per problem on stderr.
//!
//! Write errors are ignored on purpose: `println!` panics when stdout is gone (a closed pipe),
//! and a server must not die because nobody reads its log.

use std::fmt::Arguments;
use std::io::Write;
use std::time::Duration;

/// `pid peer "request line" status bytes time`, like a short nginx access log line.
pub fn access(peer: &str, request_line: &str, status: u16, bytes: usize, elapsed: Duration) {
    let millis = elapsed.as_secs_f64() * 1000.0;
    let pid = std::process::id();
    let _ = writeln!(
        std::io::stdout().lock(),
        "{pid} {peer} \"{request_line}\" {status} {bytes} {millis:.1}ms"
    );
}

/// A one-line message on stderr, prefixed with the pid that wrote it.
pub fn error(message: Arguments<'_>) {
    let pid = std::process::id();
    let _ = writeln!(std::io::stderr().lock(), "[{pid}] {message}");
}

/// A one-line event on stdout (a worker started, a scaling step): part of the story the
/// server tells, so it goes where the access log goes, and `--quiet` does not hide it.
pub fn event(message: Arguments<'_>) {
    let _ = writeln!(std::io::stdout().lock(), "{message}");
}
