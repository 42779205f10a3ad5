//! Request heads, parsed incrementally with `httparse`.
//!
//! [`parse_head`] looks at the bytes a connection has read so far and answers one of three
//! things: "not complete yet, read more" (`Ok(None)`), "here is a complete head of `len` bytes"
//! (`Ok(Some(head))`), or a [`ParseError`] that maps to a status code. It never touches a
//! socket, so the blocking steps and the event loop of step05 drive it the same way: read
//! whatever arrived, call it again. One `read` is not one request: a head may arrive a byte at a
//! time, or together with the next pipelined request.

use std::fmt;
use std::mem::MaybeUninit;

/// The largest request head we accept (request line plus headers), like nginx's default
/// `large_client_header_buffers` of 8 KiB. A longer head is answered 414 or 431.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// The most header lines we accept in one request; more is answered 431.
pub const MAX_HEADERS: usize = 100;

/// How the body after the head is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: the next byte starts the next request.
    None,
    /// Exactly this many bytes, from `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`: see [`crate::chunked`].
    Chunked,
}

/// The protocol version of a request. Only HTTP/1.0 and HTTP/1.1 get this far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// What the steps need to know about one request, borrowed from the read buffer.
#[derive(Debug, Clone)]
pub struct RequestHead<'b> {
    pub method: &'b str,
    /// The request target as sent: `/path?query`, or absolute form `http://host/path`.
    pub target: &'b str,
    pub version: Version,
    /// Whether the client wants the connection kept open after the answer: the version's
    /// default (1.1: yes, 1.0: no) unless a `Connection` header says otherwise.
    pub keep_alive: bool,
    pub body: BodyFraming,
    /// The client sent `Expect: 100-continue` and waits for an interim answer before its body.
    pub expect_continue: bool,
    pub if_none_match: Option<&'b [u8]>,
    pub host: Option<&'b [u8]>,
    /// Length of the head in bytes, blank line included: the body (or the next request) starts here.
    pub len: usize,
}

impl<'b> RequestHead<'b> {
    /// The path of the target, without query, with an absolute-form target's scheme and
    /// authority removed (`http://example.com/a?b` has path `/a`).
    pub fn path(&self) -> &'b str {
        let origin = origin_form(self.target);
        origin.split_once('?').map_or(origin, |(path, _)| path)
    }

    /// The query string after `?`, if any.
    pub fn query(&self) -> Option<&'b str> {
        origin_form(self.target)
            .split_once('?')
            .map(|(_, query)| query)
    }

    /// `GET / HTTP/1.1`, for the access log.
    pub fn request_line(&self) -> String {
        format!("{} {} {}", self.method, self.target, self.version.as_str())
    }
}

/// Strips `scheme://authority` from an absolute-form target; other forms are returned as they are.
fn origin_form(target: &str) -> &str {
    let lower_starts = |prefix: &str| {
        target.len() >= prefix.len() && target[..prefix.len()].eq_ignore_ascii_case(prefix)
    };
    let rest = if lower_starts("http://") {
        &target[7..]
    } else if lower_starts("https://") {
        &target[8..]
    } else {
        return target;
    };
    match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => &rest[i..],
        // `http://host?q` has an empty path, which means `/`.
        _ => "/",
    }
}

/// Why a request head cannot be served. Each maps to one status code; all of them end the
/// connection, because after a framing error we no longer know where the next request starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not HTTP/1.x syntax, or contradictory framing (400). The text says what, for the log.
    Malformed(&'static str),
    /// The request line alone is longer than [`MAX_HEAD_BYTES`] (414).
    UriTooLong,
    /// The head is longer than [`MAX_HEAD_BYTES`] or has more than [`MAX_HEADERS`] lines (431).
    HeadTooLarge,
    /// `HTTP/2.0` and later on a request line (505).
    VersionNotSupported,
    /// A transfer coding other than `chunked` (501).
    UnsupportedTransferCoding,
    /// An `Expect` other than `100-continue` (417).
    ExpectationFailed,
}

impl ParseError {
    pub fn status(self) -> u16 {
        match self {
            ParseError::Malformed(_) => 400,
            ParseError::UriTooLong => 414,
            ParseError::HeadTooLarge => 431,
            ParseError::VersionNotSupported => 505,
            ParseError::UnsupportedTransferCoding => 501,
            ParseError::ExpectationFailed => 417,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Malformed(what) => f.write_str(what),
            ParseError::UriTooLong => f.write_str("request line too long"),
            ParseError::HeadTooLarge => f.write_str("request head too large"),
            ParseError::VersionNotSupported => f.write_str("HTTP version not supported"),
            ParseError::UnsupportedTransferCoding => f.write_str("unsupported transfer coding"),
            ParseError::ExpectationFailed => f.write_str("unsupported expectation"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Parses the request head at the start of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete (read more and call again with all the
/// bytes), `Ok(Some(head))` once it is complete; `head.len` bytes belong to it.
///
/// # Errors
///
/// A [`ParseError`] when the bytes cannot be the start of an acceptable request, as early as
/// that can be known: garbage is refused on its first bytes, not after 8 KiB.
pub fn parse_head(buf: &[u8]) -> Result<Option<RequestHead<'_>>, ParseError> {
    // Uninitialised slots: httparse writes the headers it finds and we read only those. Zeroing
    // 100 slots (3.2 KiB) on every call was a quarter of a keep-alive request's instructions in
    // user space (callgrind, see docs/performance.md).
    let mut headers = field_slots();
    let mut request = httparse::Request::new(&mut []);
    let len = match request.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD_BYTES => len,
        Ok(httparse::Status::Complete(_)) => return Err(too_large(buf)),
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => return Err(too_large(buf)),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(from_httparse(error, buf)),
    };
    // httparse fills these in on `Complete`.
    let (Some(method), Some(target), Some(minor)) = (request.method, request.path, request.version)
    else {
        return Err(ParseError::Malformed("incomplete request line"));
    };
    if !valid_target(method, target) {
        return Err(ParseError::Malformed("invalid request target"));
    }
    let version = if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    };

    let mut framing = Framing::default();
    let mut connection = ConnectionOptions::default();
    let mut expect_continue = false;
    let mut if_none_match = None;
    let mut host = None;
    for header in request.headers.iter() {
        let name = header.name;
        let value = trim_ows(header.value);
        if name.eq_ignore_ascii_case("content-length") {
            framing.content_length(value)?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            framing.transfer_encoding(value);
        } else if name.eq_ignore_ascii_case("connection") {
            connection.add(value);
        } else if name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return Err(ParseError::Malformed("more than one Host header"));
            }
            if !value.iter().all(|&b| is_host_byte(b)) {
                return Err(ParseError::Malformed("invalid Host header"));
            }
            host = Some(value);
        } else if name.eq_ignore_ascii_case("expect") {
            // RFC 9110 §10.1.1: 100-continue is the only expectation; an HTTP/1.0 client
            // cannot have meant it, so it is ignored there.
            if !value.eq_ignore_ascii_case(b"100-continue") {
                return Err(ParseError::ExpectationFailed);
            }
            expect_continue = version == Version::Http11;
        } else if name.eq_ignore_ascii_case("if-none-match") {
            if_none_match = Some(value);
        }
    }
    // Like nginx: an HTTP/1.1 request must name its host (RFC 9112 §3.2).
    if version == Version::Http11 && host.is_none() {
        return Err(ParseError::Malformed(
            "HTTP/1.1 request without Host header",
        ));
    }
    let body = framing.finish(version)?;
    Ok(Some(RequestHead {
        method,
        target,
        version,
        keep_alive: keeps_alive(version, connection),
        body,
        expect_continue: expect_continue && body != BodyFraming::None,
        if_none_match,
        host,
        len,
    }))
}

/// What the `Connection` fields of a message said (RFC 9110 §7.6.1), for the decisions a
/// server or proxy makes from them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionOptions {
    pub close: bool,
    pub keep_alive: bool,
    /// `upgrade`: the message asks for (or, in a 101, agrees to) another protocol.
    pub upgrade: bool,
}

impl ConnectionOptions {
    /// Notes the tokens of one `Connection` value (a field may appear more than once).
    pub fn add(&mut self, value: &[u8]) {
        for token in list_tokens(value) {
            self.close |= token.eq_ignore_ascii_case(b"close");
            self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            self.upgrade |= token.eq_ignore_ascii_case(b"upgrade");
        }
    }
}

/// The keep-alive decision for one message (RFC 9112 §9.3): an HTTP/1.1 connection stays open
/// unless the message says `Connection: close`; an HTTP/1.0 one closes unless it says
/// `Connection: keep-alive`. Requests and responses alike: each side may end it.
pub fn keeps_alive(version: Version, connection: ConnectionOptions) -> bool {
    !connection.close && (version == Version::Http11 || connection.keep_alive)
}

/// Room for a head's fields, filled by `httparse`: on the stack and never zeroed (see
/// [`parse_head`] for why that matters).
pub type FieldSlots<'b> = [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS];

/// Empty room for a head's fields.
pub fn field_slots<'b>() -> FieldSlots<'b> {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// The header fields of a head that [`parse_head`] accepted, in order, names and values as
/// received (values untrimmed: see [`trimmed`]). The reverse proxy (step07) forwards the
/// fields, so it needs all of them, not only the few [`RequestHead`] keeps.
///
/// The same `httparse` call reads them again, so they are exactly the fields `parse_head`
/// judged: no second parser with its own idea of where a header ends. A buffer `parse_head`
/// did not accept yields no fields.
pub fn fields<'b, 'h>(head: &'b [u8], slots: &'h mut FieldSlots<'b>) -> &'h [httparse::Header<'b>] {
    let mut request = httparse::Request::new(&mut []);
    match request.parse_with_uninit_headers(head, slots) {
        Ok(httparse::Status::Complete(_)) => request.headers,
        _ => &[],
    }
}

/// Calls `field(name, value)` for each header line of a head that [`parse_head`] accepted, in
/// order, with the value's surrounding white space trimmed (see [`fields`]).
pub fn for_each_field<'b>(head: &'b [u8], mut field: impl FnMut(&'b str, &'b [u8])) {
    let mut slots = field_slots();
    for header in fields(head, &mut slots) {
        field(header.name, trim_ows(header.value));
    }
}

/// A field value without the optional white space around it.
pub fn trimmed(value: &[u8]) -> &[u8] {
    trim_ows(value)
}

/// What the framing headers said, collected over all header lines before deciding (for
/// requests here, for responses in [`crate::response_head`]).
#[derive(Default)]
pub(crate) struct Framing {
    pub(crate) content_length: Option<u64>,
    /// Whether any `Transfer-Encoding` line was present, even an empty one.
    pub(crate) transfer_encoding: bool,
    codings: usize,
    chunked_seen: usize,
    last_is_chunked: bool,
}

impl Framing {
    /// Whether `Transfer-Encoding` is exactly `chunked`: one coding, chunked, said once.
    pub(crate) fn only_chunked(&self) -> bool {
        self.codings == 1 && self.chunked_seen == 1 && self.last_is_chunked
    }

    pub(crate) fn content_length(&mut self, value: &[u8]) -> Result<(), ParseError> {
        let length =
            parse_content_length(value).ok_or(ParseError::Malformed("invalid Content-Length"))?;
        match self.content_length {
            // Two different lengths: one of them is a lie, and which one decides where the next
            // request starts. That ambiguity is how request smuggling works, so refuse.
            Some(previous) if previous != length => {
                Err(ParseError::Malformed("conflicting Content-Length headers"))
            }
            _ => {
                self.content_length = Some(length);
                Ok(())
            }
        }
    }

    pub(crate) fn transfer_encoding(&mut self, value: &[u8]) {
        self.transfer_encoding = true;
        for coding in list_tokens(value) {
            self.codings += 1;
            self.last_is_chunked = coding.eq_ignore_ascii_case(b"chunked");
            if self.last_is_chunked {
                self.chunked_seen += 1;
            }
        }
    }

    fn finish(self, version: Version) -> Result<BodyFraming, ParseError> {
        if !self.transfer_encoding {
            return Ok(match self.content_length {
                None | Some(0) => BodyFraming::None,
                Some(length) => BodyFraming::Length(length),
            });
        }
        if self.content_length.is_some() {
            // RFC 9112 §6.1 lets a server drop Content-Length here; we refuse instead, as the
            // contract says: a message with both is either a mistake or an attack.
            return Err(ParseError::Malformed(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if version == Version::Http10 {
            // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
            return Err(ParseError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        if !self.last_is_chunked || self.chunked_seen > 1 {
            // Without chunked as the final (and only) framing coding the body's end cannot be
            // found (RFC 9112 §6.3): 400, not a guess.
            return Err(ParseError::Malformed(
                "Transfer-Encoding does not end in a single chunked",
            ));
        }
        if self.codings > 1 {
            // gzip, chunked and the like: well-formed, but we decode no content codings.
            return Err(ParseError::UnsupportedTransferCoding);
        }
        Ok(BodyFraming::Chunked)
    }
}

/// The four request-target forms of RFC 9112 §3.2: origin (`/path`), absolute
/// (`http://host/path`), asterisk (`*`, for `OPTIONS` only) and authority (`host:port`, for
/// `CONNECT` only). Anything else, such as `index.html`, is refused as nginx does.
fn valid_target(method: &str, target: &str) -> bool {
    let absolute = |scheme: &str| {
        target.len() > scheme.len() && target[..scheme.len()].eq_ignore_ascii_case(scheme)
    };
    target.starts_with('/')
        || absolute("http://")
        || absolute("https://")
        || (target == "*" && method == "OPTIONS")
        || (method == "CONNECT" && !target.contains('/'))
}

/// The bytes a `Host` value may hold: a registered name or IP literal and a port (RFC 3986
/// §3.2.2). White space, `/`, `@`, `\` and non-ASCII bytes have no business there, and a
/// proxy that routes by host (step07) must not be handed them.
fn is_host_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'%'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'['
                | b']'
        )
}

/// `Content-Length` is 1*DIGIT (RFC 9110 §8.6): no sign, no spaces inside, no list, no overflow.
pub(crate) fn parse_content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 {
        return None;
    }
    value.iter().try_fold(0u64, |length, &byte| {
        byte.is_ascii_digit()
            .then(|| length.checked_mul(10)?.checked_add(u64::from(byte - b'0')))
            .flatten()
    })
}

/// The non-empty, trimmed elements of a comma-separated header value.
pub(crate) fn list_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&byte| byte == b',')
        .map(trim_ows)
        .filter(|token| !token.is_empty())
}

/// Removes optional white space (spaces and tabs) from both ends.
pub(crate) fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ows = |byte: &u8| *byte == b' ' || *byte == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// Too long: 414 if the request line itself has not ended yet, 431 otherwise (as nginx does).
fn too_large(buf: &[u8]) -> ParseError {
    let window = &buf[..buf.len().min(MAX_HEAD_BYTES)];
    // Leading blank lines before the request line are allowed (RFC 9112 §2.2); skip them.
    let start = window
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(window.len());
    if window[start..].contains(&b'\n') {
        ParseError::HeadTooLarge
    } else {
        ParseError::UriTooLong
    }
}

fn from_httparse(error: httparse::Error, buf: &[u8]) -> ParseError {
    match error {
        httparse::Error::TooManyHeaders => ParseError::HeadTooLarge,
        httparse::Error::Version if names_later_version(buf) => ParseError::VersionNotSupported,
        httparse::Error::Version => ParseError::Malformed("invalid HTTP version"),
        httparse::Error::HeaderName => ParseError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => ParseError::Malformed("invalid header value"),
        httparse::Error::NewLine => ParseError::Malformed("invalid line ending"),
        httparse::Error::Token => ParseError::Malformed("invalid request line"),
        httparse::Error::Status => ParseError::Malformed("invalid request line"),
    }
}

/// Whether the request line ends in `HTTP/<major>.<minor>` with a major version of 2 or more,
/// such as HTTP/2's connection preface `PRI * HTTP/2.0`.
fn names_later_version(buf: &[u8]) -> bool {
    let line_end = buf.iter().position(|&b| b == b'\r' || b == b'\n');
    let line = &buf[..line_end.unwrap_or(buf.len())];
    let Some(slash) = line.windows(5).rposition(|w| w == b"HTTP/") else {
        return false;
    };
    match &line[slash + 5..] {
        [major, b'.', minor] => major.is_ascii_digit() && *major >= b'2' && minor.is_ascii_digit(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(raw: &str) -> RequestHead<'_> {
        match parse_head(raw.as_bytes()) {
            Ok(Some(head)) => head,
            other => panic!("expected a complete head for {raw:?}, got {other:?}"),
        }
    }

    fn error(raw: &[u8]) -> ParseError {
        match parse_head(raw) {
            Err(error) => error,
            other => panic!("expected an error for {raw:?}, got {other:?}"),
        }
    }

    #[test]
    fn a_simple_get_is_complete_and_keeps_alive() {
        let raw = "GET /hello.html?x=1 HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n";
        let head = complete(raw);
        assert_eq!(head.method, "GET");
        assert_eq!(head.path(), "/hello.html");
        assert_eq!(head.query(), Some("x=1"));
        assert!(head.keep_alive);
        assert_eq!(head.body, BodyFraming::None);
        assert_eq!(&raw[head.len..], "GET / HTTP/1.1\r\n");
    }

    #[test]
    fn every_prefix_of_a_head_asks_for_more() {
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        for end in 0..raw.len() {
            assert!(matches!(parse_head(&raw[..end]), Ok(None)), "prefix {end}");
        }
        assert!(!complete(std::str::from_utf8(raw).unwrap()).keep_alive);
    }

    #[test]
    fn http_1_0_closes_unless_asked_to_keep_alive() {
        assert!(!complete("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(complete("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(
            !complete("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n")
                .keep_alive
        );
    }

    #[test]
    fn absolute_form_targets_route_by_their_path() {
        assert_eq!(
            complete("GET http://x.test/stats?a HTTP/1.1\r\nHost: x\r\n\r\n").path(),
            "/stats"
        );
        assert_eq!(
            complete("GET HTTP://x.test HTTP/1.1\r\nHost: x\r\n\r\n").path(),
            "/"
        );
        assert_eq!(
            complete("GET http://x.test?q=1 HTTP/1.1\r\nHost: x\r\n\r\n").path(),
            "/"
        );
    }

    #[test]
    fn content_length_frames_the_body() {
        let head = complete("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n\r\n");
        assert_eq!(head.body, BodyFraming::Length(42));
        let head = complete(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
        );
        assert_eq!(head.body, BodyFraming::Length(5));
    }

    #[test]
    fn bad_content_lengths_are_400() {
        for value in [
            "-1",
            "+5",
            "abc",
            "5 5",
            "5, 5",
            "",
            "99999999999999999999",
            "0x10",
        ] {
            let raw = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {value}\r\n\r\n");
            assert_eq!(
                error(raw.as_bytes()).status(),
                400,
                "Content-Length: {value}"
            );
        }
        let raw = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert_eq!(
            error(raw),
            ParseError::Malformed("conflicting Content-Length headers")
        );
    }

    #[test]
    fn transfer_encoding_is_chunked_or_refused() {
        let chunked = complete("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(chunked.body, BodyFraming::Chunked);
        let cases: [(&str, u16); 6] = [
            ("Transfer-Encoding: gzip, chunked", 501),
            ("Transfer-Encoding: chunked, identity", 400),
            ("Transfer-Encoding: xchunked", 400),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
                400,
            ),
            ("Transfer-Encoding: chunked\r\nContent-Length: 3", 400),
            ("Transfer-Encoding:", 400),
        ];
        for (headers, status) in cases {
            let raw = format!("POST / HTTP/1.1\r\nHost: a\r\n{headers}\r\n\r\n");
            assert_eq!(error(raw.as_bytes()).status(), status, "{headers}");
        }
        let raw = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(error(raw).status(), 400);
    }

    #[test]
    fn garbage_is_refused_early() {
        assert_eq!(error(b"\x16\x03\x01\x02\x00\x01").status(), 400);
        assert_eq!(
            error(b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n").status(),
            400
        );
        assert_eq!(
            error(b"GET / HTTP/1.1\r\nHost: a\r\nName : x\r\n\r\n").status(),
            400
        );
        assert_eq!(
            error(b"GET / HTTP/1.1\r\n\r\n").status(),
            400,
            "missing Host"
        );
        assert_eq!(
            error(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").status(),
            400
        );
        assert_eq!(error(b"GET / FTP/1.1\r\n\r\n").status(), 400);
        assert_eq!(
            error(b"GET index.html HTTP/1.1\r\nHost: a\r\n\r\n").status(),
            400
        );
        assert_eq!(error(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n").status(), 400);
        assert_eq!(error(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n").status(), 400);
        assert_eq!(
            error(b"GET / HTTP/1.1\r\nHost: evil.test/x\r\n\r\n").status(),
            400
        );
    }

    #[test]
    fn every_target_form_in_its_place() {
        assert_eq!(
            complete("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").target,
            "*"
        );
        assert_eq!(
            complete("CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n").target,
            "a.test:443"
        );
        assert_eq!(
            complete("GET / HTTP/1.1\r\nHost: [::1]:8090\r\n\r\n").host,
            Some(&b"[::1]:8090"[..])
        );
        assert_eq!(
            complete("GET / HTTP/1.1\r\nHost:\r\n\r\n").host,
            Some(&b""[..])
        );
    }

    #[test]
    fn later_http_versions_are_505() {
        assert_eq!(error(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").status(), 505);
        assert_eq!(error(b"GET / HTTP/3.0\r\n\r\n").status(), 505);
        assert_eq!(error(b"GET / HTTP/1.2\r\n\r\n").status(), 400);
    }

    #[test]
    fn oversized_heads_are_414_or_431() {
        let long_target = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(error(long_target.as_bytes()), ParseError::UriTooLong);
        let long_header = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n", "a".repeat(9000));
        assert_eq!(error(long_header.as_bytes()), ParseError::HeadTooLarge);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        assert_eq!(error(raw.as_bytes()), ParseError::HeadTooLarge);
    }

    #[test]
    fn fields_are_those_parse_head_accepted() {
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-One:  1 \r\nx-two:\r\n\r\nGET /next";
        let head = complete(std::str::from_utf8(raw).unwrap());
        let mut fields = Vec::new();
        for_each_field(&raw[..head.len], |name, value| {
            fields.push((name.to_string(), value.to_vec()))
        });
        assert_eq!(
            fields,
            [
                ("Host".to_string(), b"a".to_vec()),
                ("X-One".to_string(), b"1".to_vec()),
                ("x-two".to_string(), Vec::new()),
            ]
        );
        let mut count = 0;
        for_each_field(b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", |_, _| {
            count += 1
        });
        assert_eq!(count, 0);
    }

    #[test]
    fn expectations() {
        let head = complete(
            "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        );
        assert!(head.expect_continue);
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n";
        assert_eq!(error(raw).status(), 417);
    }
}
