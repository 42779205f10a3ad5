//! Response heads, parsed incrementally with `httparse`: the client side of HTTP/1.1, for a
//! proxy reading its upstream's answers (step 07).
//!
//! Like [`crate::parse::parse_head`] it looks at the bytes read so far and says "read more",
//! "here is a complete head", or why the bytes cannot be an acceptable answer. And it decides
//! how the body that follows is delimited (RFC 9112 §6.3), which, for a response, depends on
//! the request too: the answer to a `HEAD` has no body, whatever its `Content-Length` says.
//!
//! It is strict where a lenient reading would let an upstream desynchronise the proxy's
//! connections: both `Content-Length` and `Transfer-Encoding`, two different lengths, or a
//! transfer coding other than a single `chunked` are refused, as nginx refuses them (502).

use std::fmt;

use crate::body::Framing;
use crate::parse::{
    self, ConnectionOptions, FieldSlots, MAX_HEAD_BYTES, MAX_HEADERS, Version, keeps_alive,
};

/// One response head, borrowed from the read buffer.
#[derive(Debug)]
pub struct ResponseHead<'b, 'h> {
    pub version: Version,
    pub status: u16,
    /// The reason phrase as sent (may be empty).
    pub reason: &'b str,
    /// Every field, in order, names and values as received.
    pub fields: &'h [httparse::Header<'b>],
    /// How the body that follows is delimited, for this request.
    pub framing: Framing,
    /// `Content-Length` as declared, also where there is no body (a `HEAD`'s answer, a 304).
    pub content_length: Option<u64>,
    pub connection: ConnectionOptions,
    /// The sender will keep the connection open after this answer (if it is read whole).
    pub keep_alive: bool,
    /// Length of the head in bytes: the body starts here.
    pub len: usize,
}

impl ResponseHead<'_, '_> {
    /// An interim answer (100 Continue, 103 Early Hints): the real one follows it on the same
    /// connection. `101 Switching Protocols` is final: the connection changes protocol.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

/// Why bytes cannot be an answer head we accept. A proxy answers 502 for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseHeadError {
    /// Not HTTP/1.x response syntax (`httparse`'s verdict: a bad status line, a bad field).
    Malformed(httparse::Error),
    /// More than [`MAX_HEAD_BYTES`] or [`MAX_HEADERS`] fields.
    TooLarge,
    /// Framing fields that do not say one thing; the text says what.
    Framing(&'static str),
}

impl fmt::Display for ResponseHeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseHeadError::Malformed(error) => write!(f, "a malformed answer head ({error})"),
            ResponseHeadError::TooLarge => {
                write!(
                    f,
                    "an answer head over {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} fields"
                )
            }
            ResponseHeadError::Framing(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for ResponseHeadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ResponseHeadError::Malformed(error) => Some(error),
            _ => None,
        }
    }
}

/// Parses the response head at the start of `buf`, the answer to a request whose method was
/// `HEAD` if `to_head` (its answer has no body).
///
/// Returns `Ok(None)` while the head is incomplete, `Ok(Some(head))` once it is complete.
///
/// # Errors
///
/// [`ResponseHeadError`] when the bytes cannot be an acceptable answer head.
pub fn parse_response_head<'b, 'h>(
    buf: &'b [u8],
    slots: &'h mut FieldSlots<'b>,
    to_head: bool,
) -> Result<Option<ResponseHead<'b, 'h>>, ResponseHeadError> {
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        slots,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD_BYTES => len,
        Ok(httparse::Status::Complete(_)) => return Err(ResponseHeadError::TooLarge),
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
            return Err(ResponseHeadError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ResponseHeadError::TooLarge),
        Err(error) => return Err(ResponseHeadError::Malformed(error)),
    };
    let (Some(minor), Some(status)) = (response.version, response.code) else {
        return Err(ResponseHeadError::Malformed(httparse::Error::Status));
    };
    let version = if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    };
    let mut framing = parse::Framing::default();
    let mut connection = ConnectionOptions::default();
    for field in response.headers.iter() {
        let (name, value) = (field.name, parse::trim_ows(field.value));
        if name.eq_ignore_ascii_case("content-length") {
            framing
                .content_length(value)
                .map_err(|_| ResponseHeadError::Framing("an invalid or repeated Content-Length"))?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            framing.transfer_encoding(value);
        } else if name.eq_ignore_ascii_case("connection") {
            connection.add(value);
        }
    }
    if framing.transfer_encoding && framing.content_length.is_some() {
        // RFC 9112 §6.3 lets the chunks win, but the Content-Length beside them, passed on,
        // would tell the next hop a length that is not the body's.
        return Err(ResponseHeadError::Framing(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    if framing.transfer_encoding && !framing.only_chunked() {
        return Err(ResponseHeadError::Framing(
            "a Transfer-Encoding other than chunked",
        ));
    }
    let bodiless = to_head || (100..200).contains(&status) || status == 204 || status == 304;
    let body = if bodiless {
        Framing::Empty
    } else if framing.transfer_encoding {
        Framing::Chunked
    } else {
        match framing.content_length {
            Some(length) => Framing::Length(length),
            None => Framing::UntilClose,
        }
    };
    Ok(Some(ResponseHead {
        version,
        status,
        reason: response.reason.unwrap_or_default(),
        fields: response.headers,
        framing: body,
        content_length: framing.content_length,
        connection,
        // An answer whose end is its connection's close cannot leave the connection open.
        keep_alive: keeps_alive(version, connection) && body != Framing::UntilClose,
        len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::field_slots;

    fn parsed(raw: &str, to_head: bool) -> (u16, Framing, bool, usize) {
        let mut slots = field_slots();
        match parse_response_head(raw.as_bytes(), &mut slots, to_head) {
            Ok(Some(head)) => (head.status, head.framing, head.keep_alive, head.len),
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    fn error(raw: &str) -> ResponseHeadError {
        let mut slots = field_slots();
        match parse_response_head(raw.as_bytes(), &mut slots, false) {
            Err(error) => error,
            other => panic!("{raw:?}: expected an error, got {other:?}"),
        }
    }

    #[test]
    fn framing_follows_the_status_the_method_and_the_fields() {
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(
            parsed(ok, false),
            (200, Framing::Length(5), true, ok.len() - 5)
        );
        assert_eq!(parsed(ok, true).1, Framing::Empty);
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n";
        assert_eq!(parsed(chunked, false).1, Framing::Chunked);
        let neither = "HTTP/1.1 200 OK\r\n\r\n";
        assert_eq!(parsed(neither, false).1, Framing::UntilClose);
        assert!(
            !parsed(neither, false).2,
            "an until-close answer cannot keep alive"
        );
        for status in ["204 No Content", "304 Not Modified", "103 Early Hints"] {
            let raw = format!("HTTP/1.1 {status}\r\nContent-Length: 9\r\n\r\n");
            assert_eq!(parsed(&raw, false).1, Framing::Empty, "{status}");
        }
    }

    #[test]
    fn keep_alive_is_the_senders_decision() {
        assert!(
            !parsed(
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                false
            )
            .2
        );
        assert!(!parsed("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false).2);
        assert!(
            parsed(
                "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
                false
            )
            .2
        );
    }

    #[test]
    fn fields_and_reason_are_kept_as_received() {
        let raw = b"HTTP/1.1 404 Nope\r\ncontent-TYPE: text/plain\r\nX-A: 1\r\nX-A: 2\r\nContent-Length: 0\r\n\r\n";
        let mut slots = field_slots();
        let head = parse_response_head(raw, &mut slots, false)
            .unwrap()
            .unwrap();
        assert_eq!((head.status, head.reason), (404, "Nope"));
        let names: Vec<&str> = head.fields.iter().map(|f| f.name).collect();
        assert_eq!(names, ["content-TYPE", "X-A", "X-A", "Content-Length"]);
        assert!(!head.is_interim());
    }

    #[test]
    fn incomplete_heads_ask_for_more_and_bad_ones_are_refused() {
        let mut slots = field_slots();
        assert!(matches!(
            parse_response_head(b"HTTP/1.1 200 OK\r\nX-A:", &mut slots, false),
            Ok(None)
        ));
        assert!(matches!(
            error("HTTP/1.1 abc OK\r\n\r\n"),
            ResponseHeadError::Malformed(_)
        ));
        assert!(matches!(
            error("SSH-2.0-OpenSSH_9.6\r\n\r\n"),
            ResponseHeadError::Malformed(_)
        ));
        assert!(matches!(
            error("HTTP/1.1 200 OK\r\nX-Bad: a\rb\r\n\r\n"),
            ResponseHeadError::Malformed(_)
        ));
        assert!(matches!(
            error("HTTP/1.1 200 OK\r\nX-Bad: a\r\n folded\r\n\r\n"),
            ResponseHeadError::Malformed(_)
        ));
        for framing in [
            "Content-Length: 2\r\nContent-Length: 3\r\n",
            "Content-Length: abc\r\n",
            "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding: chunked, chunked\r\n",
        ] {
            let raw = format!("HTTP/1.1 200 OK\r\n{framing}\r\n");
            assert!(
                matches!(error(&raw), ResponseHeadError::Framing(_)),
                "{framing}"
            );
        }
        let huge = format!("HTTP/1.1 200 OK\r\nX-Big: {}\r\n\r\n", "a".repeat(9000));
        assert_eq!(error(&huge), ResponseHeadError::TooLarge);
        let many: String = (0..150).map(|i| format!("X-{i}: {i}\r\n")).collect();
        assert_eq!(
            error(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")),
            ResponseHeadError::TooLarge
        );
        // The same length twice is one length.
        let twice = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(parsed(twice, false).1, Framing::Length(2));
    }
}
