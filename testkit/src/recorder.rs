//! An upstream that records what a proxy sends it, byte for byte, and reads it as strictly as
//! a careful server would, to catch a proxy that desynchronises its upstream connections.
//!
//! Request smuggling works when the proxy and the upstream disagree on where a request ends:
//! bytes the proxy forwarded as one request's body become, at the upstream, the head of
//! another (a `GET /admin` the proxy never routed). So [`Recorder`] keeps every connection's
//! bytes, splits them into requests with its own strict framing, and records each request
//! whole (head and decoded body), every framing it could not accept ([`Recorder::errors`]),
//! and every request that a closed connection cut short ([`Recorder::cut_short`]). A test
//! then compares the requests the upstream saw with the ones the client sent as its own.
//!
//! Its reading is strict where upstreams differ, so that a proxy passing on something
//! ambiguous shows up here rather than at some upstream in production:
//!
//! - a field name with `_` counts as the same field with `-`, as CGI-style servers read it
//!   (`Transfer_Encoding` becomes `HTTP_TRANSFER_ENCODING`);
//! - both `Content-Length` and `Transfer-Encoding`, two `Content-Length` fields, a
//!   `Transfer-Encoding` other than `chunked`, a bad chunk: a framing error, 400 and close;
//! - CR, LF or NUL inside a field value: a framing error.
//!
//! By default every request gets `200` with the body `seen METHOD TARGET BODY-LENGTH`;
//! [`Recorder::start_with`] answers with any bytes at all (a malformed answer, a huge head).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use crate::acceptor::Acceptor;

/// One request as the upstream read it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Which of the upstream's connections carried it (0 for the first accepted).
    pub connection: usize,
    pub method: String,
    pub target: String,
    /// The head as received, request line to blank line.
    pub head: String,
    /// The body, decoded from chunks when it was chunked.
    pub body: Vec<u8>,
}

impl Recorded {
    /// The values of the fields called `name` (any case), in order.
    pub fn fields(&self, name: &str) -> Vec<String> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .filter(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim().to_string())
            .collect()
    }
}

/// What to send back for a request.
pub struct Answer {
    pub bytes: Vec<u8>,
    /// Close the connection after sending it.
    pub close: bool,
}

type Answering = dyn Fn(&Recorded) -> Answer + Send + Sync;

/// A running recorder. Dropping it kills it.
pub struct Recorder {
    acceptor: Acceptor,
    state: Arc<State>,
}

struct State {
    answer: Box<Answering>,
    log: Mutex<Log>,
}

#[derive(Default)]
struct Log {
    /// Every byte received, one entry per connection.
    raw: Vec<Vec<u8>>,
    requests: Vec<Recorded>,
    errors: Vec<String>,
    cut_short: Vec<String>,
}

impl Recorder {
    /// Starts a recorder that answers every request `200 seen METHOD TARGET BODY-LENGTH`.
    pub fn start() -> Recorder {
        Recorder::start_with(seen)
    }

    /// Starts a recorder that answers each request with what `answer` says.
    ///
    /// # Panics
    ///
    /// When it cannot listen on a loopback port.
    pub fn start_with(answer: impl Fn(&Recorded) -> Answer + Send + Sync + 'static) -> Recorder {
        let state = Arc::new(State {
            answer: Box::new(answer),
            log: Mutex::new(Log::default()),
        });
        let serving = Arc::clone(&state);
        let acceptor = Acceptor::start(
            "recorder",
            Arc::new(AtomicBool::new(false)),
            move |stream, connection| serve(stream, connection, &serving),
        );
        Recorder { acceptor, state }
    }

    pub fn addr(&self) -> SocketAddr {
        self.acceptor.addr()
    }

    /// The requests read whole so far, in the order they arrived.
    pub fn requests(&self) -> Vec<Recorded> {
        self.with_log(|log| log.requests.clone())
    }

    /// The framings this recorder refused (each with the connection's bytes at that point).
    pub fn errors(&self) -> Vec<String> {
        self.with_log(|log| log.errors.clone())
    }

    /// Requests whose connection closed before they were whole (a head or body cut off).
    pub fn cut_short(&self) -> Vec<String> {
        self.with_log(|log| log.cut_short.clone())
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.acceptor.accepted()
    }

    /// Every byte received on every connection, as text (for failure messages).
    pub fn raw(&self) -> Vec<String> {
        self.with_log(|log| {
            log.raw
                .iter()
                .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
                .collect()
        })
    }

    fn with_log<T: Default>(&self, read: impl FnOnce(&Log) -> T) -> T {
        self.state
            .log
            .lock()
            .map(|log| read(&log))
            .unwrap_or_default()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.acceptor.kill();
    }
}

/// The default answer: `200 seen METHOD TARGET BODY-LENGTH`, kept alive.
fn seen(request: &Recorded) -> Answer {
    let body = format!(
        "seen {} {} {}\n",
        request.method,
        request.target,
        request.body.len()
    );
    let mut bytes = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if request.method != "HEAD" {
        bytes.extend_from_slice(body.as_bytes());
    }
    Answer {
        bytes,
        close: false,
    }
}

/// Why reading a connection stopped.
enum Stop {
    /// The peer closed; the text says what was left unfinished, if anything.
    Closed(Option<String>),
    /// Bytes that no careful server would accept.
    Refused(String),
}

/// Reads requests from one connection until it closes or sends something unacceptable, and
/// then closes it (a shutdown: the acceptor holds a clone of the socket, so dropping ours
/// would not close it).
fn serve(stream: TcpStream, connection: usize, state: &State) {
    if let Ok(mut log) = state.log.lock() {
        // Connections are numbered as accepted, but their threads may start in any order.
        if log.raw.len() <= connection {
            log.raw.resize(connection + 1, Vec::new());
        }
    }
    serve_until_done(&stream, connection, state);
    let _ = stream.shutdown(Shutdown::Both);
}

fn serve_until_done(mut stream: &TcpStream, connection: usize, state: &State) {
    let mut reader = Reader {
        stream: stream.try_clone().ok(),
        buf: Vec::new(),
        connection,
        state,
    };
    loop {
        match reader.request() {
            Ok(request) => {
                let answer = (state.answer)(&request);
                if let Ok(mut log) = state.log.lock() {
                    log.requests.push(request);
                }
                if stream.write_all(&answer.bytes).is_err() || answer.close {
                    return;
                }
            }
            Err(Stop::Closed(None)) => return,
            Err(Stop::Closed(Some(what))) => {
                if let Ok(mut log) = state.log.lock() {
                    log.cut_short
                        .push(format!("connection {connection}: {what}"));
                }
                return;
            }
            Err(Stop::Refused(why)) => {
                if let Ok(mut log) = state.log.lock() {
                    let raw = String::from_utf8_lossy(&log.raw[connection]).into_owned();
                    log.errors
                        .push(format!("connection {connection}: {why}; received {raw:?}"));
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                return;
            }
        }
    }
}

struct Reader<'s> {
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    connection: usize,
    state: &'s State,
}

impl Reader<'_> {
    /// Reads more bytes into `buf` (and the connection's log); `false` at the end.
    fn fill(&mut self) -> bool {
        let Some(stream) = self.stream.as_mut() else {
            return false;
        };
        let mut chunk = [0u8; 16 * 1024];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(read) => {
                self.buf.extend_from_slice(&chunk[..read]);
                if let Ok(mut log) = self.state.log.lock() {
                    log.raw[self.connection].extend_from_slice(&chunk[..read]);
                }
                true
            }
        }
    }

    /// Reads one whole request: head, then the body its framing says.
    fn request(&mut self) -> Result<Recorded, Stop> {
        let (mut request, framing) = loop {
            match parse_head(&self.buf, self.connection)? {
                Some((request, framing, len)) => {
                    self.buf.drain(..len);
                    break (request, framing);
                }
                None if self.fill() => {}
                None if self.buf.is_empty() => return Err(Stop::Closed(None)),
                None => {
                    let partial = String::from_utf8_lossy(&self.buf).into_owned();
                    return Err(Stop::Closed(Some(format!("a head cut off: {partial:?}"))));
                }
            }
        };
        let cut = |what: &str, request: &Recorded| {
            Stop::Closed(Some(format!(
                "{} {}: {what}",
                request.method, request.target
            )))
        };
        match framing {
            Framing::Length(length) => {
                while self.buf.len() < length {
                    if !self.fill() {
                        return Err(cut("the body cut off", &request));
                    }
                }
                request.body = self.buf.drain(..length).collect();
            }
            Framing::Chunked => loop {
                let line = self
                    .line()
                    .ok_or_else(|| cut("a chunk size cut off", &request))?;
                let size = line.split(';').next().unwrap_or_default();
                let size = (!size.is_empty() && size.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then(|| usize::from_str_radix(size, 16).ok())
                    .flatten()
                    .ok_or_else(|| Stop::Refused(format!("bad chunk size line {line:?}")))?;
                if size == 0 {
                    // Trailer fields, then the blank line.
                    loop {
                        let trailer = self
                            .line()
                            .ok_or_else(|| cut("the trailers cut off", &request))?;
                        if trailer.is_empty() {
                            return Ok(request);
                        }
                    }
                }
                while self.buf.len() < size + 2 {
                    if !self.fill() {
                        return Err(cut("a chunk cut off", &request));
                    }
                }
                if &self.buf[size..size + 2] != b"\r\n" {
                    return Err(Stop::Refused("a chunk not followed by CRLF".into()));
                }
                request.body.extend(self.buf.drain(..size));
                self.buf.drain(..2);
            },
        }
        Ok(request)
    }

    /// One CRLF-terminated line, without its CRLF; `None` when the connection ends first.
    fn line(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 2);
                return Some(line);
            }
            if !self.fill() {
                return None;
            }
        }
    }
}

enum Framing {
    Length(usize),
    Chunked,
}

/// A whole head at the start of `buf`: the request, its framing and the head's length.
fn parse_head(buf: &[u8], connection: usize) -> Result<Option<(Recorded, Framing, usize)>, Stop> {
    let mut storage = [httparse::EMPTY_HEADER; 128];
    let mut parsed = httparse::Request::new(&mut storage);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(Stop::Refused(format!("bad head ({error})"))),
    };
    let head = &buf[..len];
    // httparse accepts a bare LF as a line end; a careful server does not, and no proxy
    // has a reason to send one.
    let bare_lf = head
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'));
    if bare_lf {
        return Err(Stop::Refused("a bare LF in the head".into()));
    }
    let mut lengths = Vec::new();
    let mut codings = Vec::new();
    for header in parsed.headers.iter() {
        if header.value.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(Stop::Refused(format!(
                "CR, LF or NUL in the value of {}",
                header.name
            )));
        }
        let name = header.name.replace('_', "-");
        let value = String::from_utf8_lossy(header.value).trim().to_string();
        if name.eq_ignore_ascii_case("content-length") {
            lengths.push(value);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            codings.push(value);
        }
    }
    let framing =
        match (lengths.as_slice(), codings.as_slice()) {
            ([], []) => Framing::Length(0),
            ([length], []) => Framing::Length(length.parse().map_err(|_| {
                Stop::Refused(format!("Content-Length {length:?} is not a number"))
            })?),
            ([], [coding]) if coding.eq_ignore_ascii_case("chunked") => Framing::Chunked,
            _ => {
                return Err(Stop::Refused(format!(
                    "ambiguous framing: Content-Length {lengths:?}, Transfer-Encoding {codings:?}"
                )));
            }
        };
    let request = Recorded {
        connection,
        method: parsed.method.unwrap_or_default().to_string(),
        target: parsed.path.unwrap_or_default().to_string(),
        head: String::from_utf8_lossy(head).into_owned(),
        body: Vec::new(),
    };
    Ok(Some((request, framing, len)))
}
