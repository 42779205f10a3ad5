//! One request on a connection, from its head to its answer, without I/O: the HTTP/1 core that
//! the blocking loop of steps 01–04 ([`crate::connection`]) and the event loop of steps 05–06
//! drive, in the shape of Python's h11. A driver reads bytes in its own way (a blocking `read`,
//! a non-blocking one when the poller says so) and hands them here; the exchange says how many
//! it used, what to write, and what the connection does next. So the drivers differ only in
//! how they wait.
//!
//! ```text
//!   parse_head ─▶ Exchange::new ─▶ go_ahead ─▶ read_body … body_done ─▶ (delay) ─▶ answer ─▶ After
//!        │                                          │                    (timeout)
//!        └──────────── Refusal (400, 408, 431, …) ◀─┴────────────────────────┘
//! ```
//!
//! The request's body is read and dropped: no route of the site uses one, but its bytes must
//! be consumed, or they would be taken for the next request.

use std::fmt::{self, Display};
use std::time::{Duration, Instant};

use crate::body::{BodyDecoder, BodyError};
use crate::keep_alive::{After, Answered};
use crate::log::Access;
use crate::parse::{ParseError, RequestHead};
use crate::response::{Response, go_ahead};
use crate::site::Site;

/// What a connection keeps of a request once its head's bytes are dropped.
#[derive(Debug)]
pub struct Exchange {
    /// The client asked to keep the connection open.
    keep_alive: bool,
    /// The client waits for `100 Continue` before it sends the body (until we sent it).
    expect_continue: bool,
    body: BodyDecoder,
    /// `GET / HTTP/1.1`, for the access log; `None` when not logging.
    line: Option<String>,
    /// When the head was complete: the access log's time starts here.
    started: Instant,
}

impl Exchange {
    /// The exchange of the request whose head is `head`, complete at `started`; `log`: write
    /// an access log line when it is answered.
    pub fn new(head: &RequestHead<'_>, log: bool, started: Instant) -> Exchange {
        Exchange {
            keep_alive: head.keep_alive,
            expect_continue: head.expect_continue,
            body: BodyDecoder::new(head.body.into()),
            line: log.then(|| head.request_line()),
            started,
        }
    }

    /// What to write before reading the body, once: `100 Continue` when the client waits for
    /// it and nothing of the body has `arrived` (see [`go_ahead`]).
    pub fn go_ahead(&mut self, arrived: &[u8]) -> Option<&'static [u8]> {
        let interim = go_ahead(self.expect_continue && !self.body.is_done(), arrived);
        self.expect_continue = false;
        interim
    }

    /// Drops the body's bytes at the start of `input` and says how many they were; what
    /// follows them is the next request.
    ///
    /// # Errors
    ///
    /// [`Refusal::Body`] on bad chunked framing.
    pub fn read_body(&mut self, input: &[u8]) -> Result<usize, Refusal> {
        self.body.decode(input, |_| {}).map_err(Refusal::Body)
    }

    /// Whether the whole body has been read (at once for a request without one).
    pub fn body_done(&self) -> bool {
        self.body.is_done()
    }

    /// Renders the answer into `out` and writes its access log line (`peer` is the client's
    /// address, formatted only then). `unread`: bytes after the request wait in the buffer.
    /// Says what the connection does once `out` is written.
    pub fn answer(
        &self,
        site: &Site,
        response: &Response,
        shutting_down: bool,
        unread: bool,
        out: &mut Vec<u8>,
        peer: &dyn Display,
    ) -> After {
        let answered = Answered {
            wanted: self.keep_alive,
            closes: response.close,
            shutting_down,
            unread: unread || response.close,
        };
        let before = out.len();
        site.render(response, answered.keeps_alive(), out);
        if let Some(line) = &self.line {
            Access {
                peer,
                request_line: line,
                status: Some(response.status),
                bytes: (out.len() - before) as u64,
                elapsed: self.started.elapsed(),
                upstream: None,
            }
            .write();
        }
        answered.after()
    }
}

/// Why a request is not served: it gets an error answer, and the connection closes lingering
/// (where the request ends is no longer known).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The head cannot be parsed or is not acceptable (400, 414, 431, 501, 505, 417).
    Head(ParseError),
    /// The head was not complete within the header timeout (408).
    HeadTimedOut,
    /// The body paused longer than the header timeout (408).
    BodyTimedOut,
    /// The body's framing is broken (400).
    Body(BodyError),
}

impl Refusal {
    pub fn response(self) -> Response {
        Response::error(match self {
            Refusal::Head(error) => error.status(),
            Refusal::HeadTimedOut | Refusal::BodyTimedOut => 408,
            Refusal::Body(_) => 400,
        })
    }

    /// Renders the error answer into `out` and, if `log`, its access log line (`<why>` where
    /// the request line would be). The connection then closes lingering.
    pub fn answer(self, site: &Site, log: bool, out: &mut Vec<u8>, peer: &dyn Display) -> After {
        let response = self.response();
        let before = out.len();
        site.render(&response, false, out);
        if log {
            Access {
                peer,
                request_line: &format!("<{self}>"),
                status: Some(response.status),
                bytes: (out.len() - before) as u64,
                elapsed: Duration::ZERO,
                upstream: None,
            }
            .write();
        }
        After::Linger
    }
}

impl Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Head(error) => error.fmt(f),
            Refusal::HeadTimedOut => f.write_str("request head timed out"),
            Refusal::BodyTimedOut => f.write_str("request body timed out"),
            Refusal::Body(_) => f.write_str("bad chunked body"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_head;

    /// Runs one exchange over `input` as a driver would, handing it `step` bytes at a time;
    /// returns what was written and what follows.
    fn serve(input: &[u8], step: usize) -> Result<(String, After, usize), Refusal> {
        let site = Site::new("test", Duration::ZERO);
        let head = parse_head(input)
            .map_err(Refusal::Head)?
            .expect("a whole head");
        let reply = site.reply(&head);
        let mut exchange = Exchange::new(&head, false, Instant::now());
        let mut used = head.len;
        let mut out = Vec::new();
        // As a driver that has read only the head so far.
        if let Some(interim) = exchange.go_ahead(b"") {
            out.extend_from_slice(interim);
        }
        while !exchange.body_done() {
            let end = (used + step).min(input.len());
            used += exchange.read_body(&input[used..end])?;
        }
        let unread = used < input.len();
        let after = exchange.answer(&site, &reply.response, false, unread, &mut out, &"-");
        Ok((String::from_utf8_lossy(&out).into_owned(), after, used))
    }

    #[test]
    fn a_body_is_read_and_dropped_and_the_next_request_kept() {
        let input = b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
                      3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        for step in [1, 7, 1000] {
            let (out, after, used) = serve(input, step).unwrap();
            assert!(out.starts_with("HTTP/1.1 405 "), "{out}");
            assert_eq!(after, After::KeepAlive);
            assert_eq!(&input[used..], b"GET / HTTP/1.1\r\n");
        }
    }

    #[test]
    fn a_client_that_waits_gets_100_continue_once() {
        let input = b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\
                      Content-Length: 2\r\nConnection: close\r\n\r\nhi";
        let (out, after, _) = serve(input, 1).unwrap();
        assert!(
            out.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 405 "),
            "{out}"
        );
        assert!(out.contains("Connection: close\r\n"));
        assert_eq!(after, After::Close);
        let head = parse_head(input).unwrap().unwrap();
        let mut exchange = Exchange::new(&head, false, Instant::now());
        assert_eq!(exchange.go_ahead(b"h"), None, "the body is on its way");
        assert_eq!(exchange.go_ahead(b""), None, "asked once");
    }

    #[test]
    fn refusals_answer_with_their_status_and_linger() {
        let input = b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        let refusal = serve(input, 100).unwrap_err();
        assert!(matches!(refusal, Refusal::Body(_)));
        assert_eq!(refusal.to_string(), "bad chunked body");
        let site = Site::new("test", Duration::ZERO);
        let mut out = Vec::new();
        assert_eq!(
            Refusal::HeadTimedOut.answer(&site, false, &mut out, &"-"),
            After::Linger
        );
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{out}");
        assert!(out.contains("Connection: close\r\n"));
        let refusal = serve(b"GET / HTTP/2.0\r\n\r\n", 1).unwrap_err();
        assert_eq!(refusal.response().status, 505);
    }
}
