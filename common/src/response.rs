//! Responses and how they are written on the wire.

use std::borrow::Cow;

use crate::date;

/// A response body: the site's pages are borrowed from the binary, generated bodies are owned.
pub type Body = Cow<'static, [u8]>;

/// One response, before it is rendered to bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Body,
    /// A strong validator for static pages, quoted as it goes on the wire.
    pub etag: Option<&'static str>,
    /// The `Allow` header of a 405.
    pub allow: Option<&'static str>,
    /// The server closes the connection after this response, whatever the client asked.
    pub close: bool,
    /// Send the head only, with the `Content-Length` the body would have (HEAD, 304).
    pub head_only: bool,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Body>) -> Response {
        Response {
            status,
            content_type,
            body: body.into(),
            etag: None,
            allow: None,
            close: false,
            head_only: false,
        }
    }

    /// A short `text/plain` answer.
    pub fn text(status: u16, body: impl Into<Body>) -> Response {
        Response::new(status, "text/plain; charset=utf-8", body)
    }

    /// An error answer after which the connection closes: `400 Bad Request` and the like.
    pub fn error(status: u16) -> Response {
        let body = format!("{status} {}\n", reason_phrase(status));
        Response {
            close: true,
            ..Response::text(status, body.into_bytes())
        }
    }

    /// Writes the status line, headers and (unless `head_only`) the body to `out`.
    ///
    /// `server` names the step (`Server:`); `keep_alive` is the final decision for this
    /// connection and becomes `Connection: keep-alive` or `close`; `extra` is one more header
    /// line, such as step06's `X-Worker`.
    pub fn render(
        &self,
        server: &str,
        keep_alive: bool,
        extra: Option<(&str, &str)>,
        out: &mut Vec<u8>,
    ) {
        out.reserve(160 + self.body.len());
        let mut head = HeadWriter::start(out, self.status, reason_phrase(self.status).as_bytes());
        head.server_and_date(server);
        // A 304 carries the validators but no representation metadata (RFC 9110 §15.4.5).
        if self.status != 304 {
            head.field(b"Content-Type", self.content_type.as_bytes());
        }
        head.content_length(self.body.len() as u64);
        if let Some(etag) = self.etag {
            head.field(b"ETag", etag.as_bytes());
        }
        if let Some(allow) = self.allow {
            head.field(b"Allow", allow.as_bytes());
        }
        if let Some((name, value)) = extra {
            head.field(name.as_bytes(), value.as_bytes());
        }
        head.connection(keep_alive);
        head.end();
        if !self.head_only {
            out.extend_from_slice(&self.body);
        }
    }
}

/// The interim answer to `Expect: 100-continue` (RFC 9110 §10.1.1): "send your body".
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// What to send before reading a request's body: [`CONTINUE`] when the client waits for it
/// (`RequestHead::expect_continue`, only ever set for an HTTP/1.1 request with a body) and
/// nothing of the body has `arrived`; `None` otherwise. A client that sent its body anyway needs
/// no go-ahead, and RFC 9110 §10.1.1 lets the server leave it out then.
pub fn go_ahead(expect_continue: bool, arrived: &[u8]) -> Option<&'static [u8]> {
    (expect_continue && arrived.is_empty()).then_some(CONTINUE)
}

/// Writes a head field by field: the one place where start lines and header lines are put on
/// the wire, for the site's own responses ([`Response::render`]), and for a proxy's requests to
/// its upstreams and the answers it passes on with the upstream's fields (step 07).
///
/// Each field line's CRLF is written before it, not after, so that [`HeadWriter::end`] closes
/// the head with a single blank line. Names and values go out as given: checking them is the
/// caller's part (our own are constants; a proxy's come from a parser that refused CR, LF and
/// NUL).
pub struct HeadWriter<'o> {
    out: &'o mut Vec<u8>,
}

impl<'o> HeadWriter<'o> {
    /// Starts a head with the status line `HTTP/1.1 status reason`.
    pub fn start(out: &'o mut Vec<u8>, status: u16, reason: &[u8]) -> HeadWriter<'o> {
        out.extend_from_slice(b"HTTP/1.1 ");
        push_decimal(out, u64::from(status));
        out.push(b' ');
        out.extend_from_slice(reason);
        HeadWriter { out }
    }

    /// Starts a request head with the request line `method target HTTP/1.1`.
    pub fn request(out: &'o mut Vec<u8>, method: &[u8], target: &[u8]) -> HeadWriter<'o> {
        out.extend_from_slice(method);
        out.push(b' ');
        out.extend_from_slice(target);
        out.extend_from_slice(b" HTTP/1.1");
        HeadWriter { out }
    }

    /// Goes on with a head that `out` holds unfinished: its start line and fields written, not
    /// ended (a proxy writes a request's head once, and ends it per attempt).
    pub fn resume(out: &'o mut Vec<u8>) -> HeadWriter<'o> {
        HeadWriter { out }
    }

    pub fn field(&mut self, name: &[u8], value: &[u8]) -> &mut Self {
        self.field_with(name, |out| out.extend_from_slice(value))
    }

    /// A field whose value `value` writes in place (a list that a proxy extends).
    pub fn field_with(&mut self, name: &[u8], value: impl FnOnce(&mut Vec<u8>)) -> &mut Self {
        self.out.extend_from_slice(b"\r\n");
        self.out.extend_from_slice(name);
        self.out.extend_from_slice(b": ");
        value(self.out);
        self
    }

    /// `Server: server` and `Date` (formatted at most once a second, see [`date`]).
    pub fn server_and_date(&mut self, server: &str) -> &mut Self {
        self.field(b"Server", server.as_bytes());
        self.field(b"Date", &date::now())
    }

    pub fn content_length(&mut self, length: u64) -> &mut Self {
        self.out.extend_from_slice(b"\r\nContent-Length: ");
        push_decimal(self.out, length);
        self
    }

    /// `Transfer-Encoding: chunked`: the body follows in chunks (see [`crate::chunked`]).
    pub fn chunked(&mut self) -> &mut Self {
        self.field(b"Transfer-Encoding", b"chunked")
    }

    /// `Connection: keep-alive` or `close`: the final decision for the connection.
    pub fn connection(&mut self, keep_alive: bool) -> &mut Self {
        let value: &[u8] = if keep_alive { b"keep-alive" } else { b"close" };
        self.field(b"Connection", value)
    }

    /// Ends the head with the blank line; the body may follow.
    pub fn end(self) {
        self.out.extend_from_slice(b"\r\n\r\n");
    }
}

fn push_decimal(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// The reason phrase of every status this project sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(response: &Response, keep_alive: bool) -> String {
        let mut out = Vec::new();
        response.render("step-test", keep_alive, Some(("X-Worker", "3")), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn renders_a_complete_response() {
        let text = rendered(&Response::text(200, &b"hi"[..]), true);
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let lines: Vec<&str> = head.split("\r\n").collect();
        assert_eq!(lines[0], "HTTP/1.1 200 OK");
        assert!(lines.contains(&"Server: step-test"));
        assert!(lines.contains(&"Content-Length: 2"));
        assert!(lines.contains(&"Content-Type: text/plain; charset=utf-8"));
        assert!(lines.contains(&"Connection: keep-alive"));
        assert!(lines.contains(&"X-Worker: 3"));
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("Date: ") && l.ends_with(" GMT"))
        );
        assert_eq!(body, "hi");
    }

    #[test]
    fn head_only_keeps_the_length_and_drops_the_body() {
        let response = Response {
            head_only: true,
            ..Response::text(200, &b"twelve bytes"[..])
        };
        let text = rendered(&response, false);
        assert!(text.contains("Content-Length: 12\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn the_head_writer_puts_fields_between_the_status_line_and_the_blank_line() {
        let mut out = Vec::new();
        let mut head = HeadWriter::start(&mut out, 502, b"Bad Gateway");
        head.field(b"x-Case", b"kept").content_length(0).chunked();
        head.connection(false);
        head.end();
        assert_eq!(
            out,
            b"HTTP/1.1 502 Bad Gateway\r\nx-Case: kept\r\nContent-Length: 0\r\n\
              Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        let mut out = Vec::new();
        HeadWriter::request(&mut out, b"GET", b"/a?b")
            .field_with(b"Via", |out| out.extend_from_slice(b"1.1 x"))
            .content_length(7);
        let mut resumed = HeadWriter::resume(&mut out);
        resumed.field(b"Host", b"h");
        resumed.end();
        assert_eq!(
            out,
            b"GET /a?b HTTP/1.1\r\nVia: 1.1 x\r\nContent-Length: 7\r\nHost: h\r\n\r\n"
        );
        assert_eq!(CONTINUE, b"HTTP/1.1 100 Continue\r\n\r\n");
        assert_eq!(go_ahead(true, b""), Some(CONTINUE));
        assert_eq!(go_ahead(true, b"5\r\nhe"), None);
        assert_eq!(go_ahead(false, b""), None);
    }

    #[test]
    fn errors_close_and_say_what_they_are() {
        let text = rendered(&Response::error(431), true);
        assert!(text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(text.ends_with("431 Request Header Fields Too Large\n"));
        assert!(Response::error(400).close);
    }
}
