//! One line per request on stdout (the access log), one line per problem on stderr.
//!
//! Write errors are ignored on purpose: `println!` panics when stdout is gone (a closed pipe),
//! and a server must not die because nobody reads its log.

use std::fmt::{self, Arguments};
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

/// A client's address as the access log writes it (`-` when the kernel no longer knows it),
/// asked of the kernel only when a line is written.
pub struct PeerOf<'s>(pub &'s TcpStream);

impl fmt::Display for PeerOf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.peer_addr() {
            Ok(address) => address.fmt(f),
            Err(_) => f.write_str("-"),
        }
    }
}

/// One access log line, `pid peer "request line" status bytes time`, like a short nginx
/// access log line: every step writes its lines with this. A proxy adds the upstream that
/// answered and how long it took, as nginx's `$upstream_addr` and `$upstream_header_time` do.
#[derive(Clone, Copy)]
pub struct Access<'a> {
    pub peer: &'a dyn fmt::Display,
    pub request_line: &'a str,
    /// `None`: no answer was sent (written `-`).
    pub status: Option<u16>,
    pub bytes: u64,
    pub elapsed: Duration,
    /// A proxy's `upstream=NAME upstream_time=T` (`-` for an answer of its own).
    pub upstream: Option<(&'a str, Option<Duration>)>,
}

impl Access<'_> {
    /// Writes the line on stdout.
    pub fn write(&self) {
        let _ = writeln!(std::io::stdout().lock(), "{} {self}", std::process::id());
    }
}

/// Without the pid: `peer "request line" status bytes time[ upstream=.. upstream_time=..]`.
impl fmt::Display for Access<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = |elapsed: Duration| elapsed.as_secs_f64() * 1000.0;
        write!(f, "{} \"{}\" ", self.peer, self.request_line)?;
        match self.status {
            Some(status) => write!(f, "{status}")?,
            None => f.write_str("-")?,
        }
        write!(f, " {} {:.1}ms", self.bytes, millis(self.elapsed))?;
        if let Some((upstream, time)) = self.upstream {
            write!(f, " upstream={upstream} upstream_time=")?;
            match time {
                Some(time) => write!(f, "{:.1}ms", millis(time))?,
                None => f.write_str("-")?,
            }
        }
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_access_line_has_its_fields_in_order() {
        let mut line = Access {
            peer: &"127.0.0.1:5000",
            request_line: "GET / HTTP/1.1",
            status: Some(200),
            bytes: 12,
            elapsed: Duration::from_micros(1500),
            upstream: None,
        };
        assert_eq!(
            line.to_string(),
            "127.0.0.1:5000 \"GET / HTTP/1.1\" 200 12 1.5ms"
        );
        line.status = None;
        line.upstream = Some(("10.0.0.1:80", Some(Duration::from_millis(1))));
        assert_eq!(
            line.to_string(),
            "127.0.0.1:5000 \"GET / HTTP/1.1\" - 12 1.5ms upstream=10.0.0.1:80 upstream_time=1.0ms"
        );
        line.upstream = Some(("-", None));
        assert!(line.to_string().ends_with("upstream=- upstream_time=-"));
    }
}
