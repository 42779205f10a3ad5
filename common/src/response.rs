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
        out.extend_from_slice(b"HTTP/1.1 ");
        push_decimal(out, u64::from(self.status));
        out.push(b' ');
        out.extend_from_slice(reason_phrase(self.status).as_bytes());
        push_header(out, "Server", server.as_bytes());
        push_header(out, "Date", &date::now());
        // A 304 carries the validators but no representation metadata (RFC 9110 §15.4.5).
        if self.status != 304 {
            push_header(out, "Content-Type", self.content_type.as_bytes());
        }
        out.extend_from_slice(b"\r\nContent-Length: ");
        push_decimal(out, self.body.len() as u64);
        if let Some(etag) = self.etag {
            push_header(out, "ETag", etag.as_bytes());
        }
        if let Some(allow) = self.allow {
            push_header(out, "Allow", allow.as_bytes());
        }
        if let Some((name, value)) = extra {
            push_header(out, name, value.as_bytes());
        }
        let connection: &[u8] = if keep_alive { b"keep-alive" } else { b"close" };
        push_header(out, "Connection", connection);
        out.extend_from_slice(b"\r\n\r\n");
        if !self.head_only {
            out.extend_from_slice(&self.body);
        }
    }
}

/// Starts a new header line; the previous line's CRLF is written here, so the head can end
/// with a single `\r\n\r\n`.
fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
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
    fn errors_close_and_say_what_they_are() {
        let text = rendered(&Response::error(431), true);
        assert!(text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(text.ends_with("431 Request Header Fields Too Large\n"));
        assert!(Response::error(400).close);
    }
}
