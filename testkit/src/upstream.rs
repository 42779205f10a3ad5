//! Small HTTP servers for the reverse proxy's tests to stand behind it: a thread per
//! connection on `127.0.0.1`, keep-alive, and a few routes that each play one kind of upstream.
//!
//! The route is the path's last segment (`/api/echo` is `/echo`), so that every route of a
//! proxy's configuration can reach every behaviour.
//!
//! Every answer carries `X-Served-By: NAME`, so that a test sees which upstream answered
//! through the proxy, and the upstream counts what reached it, so that a test can prove that
//! something did *not* reach it (an open-proxy request, a `POST` sent twice).
//!
//! | request | answer |
//! |---|---|
//! | `GET /echo` | 200, the request head as the upstream received it |
//! | `GET /sleep?ms=N` | 200 after N ms |
//! | `GET /hold` | nothing, ever; counts in [`Upstream::peer_closed`] when the proxy closes the connection |
//! | `POST /upload?pace_us=N` | reads the body (pausing N µs per 64 KiB read), 200 `bytes=N fnv=HEX` |
//! | `GET /download?bytes=N` | N bytes of [`pattern`] |
//! | `GET /trickle?chunks=N&gap_ms=M` | chunked: a line every M ms, N lines |
//! | `GET /redirect` | 302 to `/elsewhere` |
//! | `GET /gzip` | a gzip-encoded body, `Content-Encoding: gzip` |
//! | `GET /hop` | hop-by-hop fields that a proxy must not pass on |
//! | anything else | 200 `NAME` |

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::body::{BodyDecoder, Framing};

use crate::acceptor::Acceptor;

/// `GET /gzip`'s body: `gzip.compress(b"hello, gzip\n", mtime=0)`.
pub const GZIP_BODY: [u8; 32] = [
    31, 139, 8, 0, 0, 0, 0, 0, 2, 3, 203, 72, 205, 201, 201, 215, 81, 72, 175, 202, 44, 224, 2, 0,
    134, 31, 130, 164, 12, 0, 0, 0,
];

/// The longest a `/hold` request waits for the proxy to close before giving up.
const HOLD_LIMIT: Duration = Duration::from_secs(20);

/// A running test upstream. Dropping it kills it.
pub struct Upstream {
    name: String,
    acceptor: Acceptor,
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    /// Set when the upstream is killed.
    stop: Arc<AtomicBool>,
    requests: AtomicUsize,
    peer_closed: AtomicUsize,
    /// Every request head received, as text.
    heads: Mutex<Vec<String>>,
}

impl Upstream {
    /// Starts an upstream called `name` on a free loopback port.
    ///
    /// # Panics
    ///
    /// When it cannot listen.
    pub fn start(name: &str) -> Upstream {
        let state = Arc::new(State::default());
        let serving = (Arc::clone(&state), name.to_string());
        let acceptor = Acceptor::start(
            &format!("upstream {name}"),
            Arc::clone(&state.stop),
            move |stream, _| serve(stream, &serving.1, &serving.0),
        );
        Upstream {
            name: name.to_string(),
            acceptor,
            state,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.acceptor.addr()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.acceptor.accepted()
    }

    /// Request heads received so far.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// The request heads received so far, as text.
    pub fn heads(&self) -> Vec<String> {
        self.state
            .heads
            .lock()
            .map(|heads| heads.clone())
            .unwrap_or_default()
    }

    /// `/hold` requests whose connection the other side closed.
    pub fn peer_closed(&self) -> usize {
        self.state.peer_closed.load(Ordering::SeqCst)
    }

    /// Stops as a crashed server does: the port refuses connections from now on, and every
    /// open connection is reset.
    pub fn kill(&self) {
        self.acceptor.kill();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `SO_LINGER` 0, then close: the peer gets a reset, as from a process that died.
pub(crate) fn reset(stream: &TcpStream) {
    crate::client::linger_zero(stream);
    let _ = stream.shutdown(Shutdown::Both);
}

/// An address where nothing listens: connecting to it is refused.
pub fn refused_addr() -> SocketAddr {
    let listener =
        TcpListener::bind("127.0.0.1:0").unwrap_or_else(|error| panic!("cannot listen: {error}"));
    listener
        .local_addr()
        .unwrap_or_else(|error| panic!("{error}"))
}

/// A port that accepts no connection and refuses none: its listening socket has a backlog of
/// 0 and one connection already waits in it unaccepted, so the kernel drops every new `SYN` and
/// a connect hangs until its own timeout, as with a host that has vanished from the network.
pub struct Blackhole {
    addr: SocketAddr,
    _listener: TcpListener,
    _filler: Vec<TcpStream>,
}

impl Blackhole {
    /// # Panics
    ///
    /// When the socket cannot be made, or the backlog does not fill.
    pub fn start() -> Blackhole {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|error| panic!("cannot listen: {error}"));
        // SAFETY: `listen` on a socket we own; it only changes the backlog.
        let listened = unsafe { libc::listen(listener.as_raw_fd(), 0) };
        assert_eq!(listened, 0, "listen: {}", std::io::Error::last_os_error());
        let addr = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("{error}"));
        let mut filler = Vec::new();
        for _ in 0..8 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(stream) => filler.push(stream),
                Err(_) => {
                    return Blackhole {
                        addr,
                        _listener: listener,
                        _filler: filler,
                    };
                }
            }
        }
        panic!("the backlog of {addr} never filled");
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The byte at `offset` of every `/download` body, and of the test uploads.
pub fn pattern(offset: usize) -> u8 {
    (offset % 251) as u8
}

/// FNV-1a, 64 bits: the checksum `/upload` answers with.
pub fn fnv(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// FNV-1a's starting value.
pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// Serves one connection until it closes, the upstream is killed, or a request says to stop.
fn serve(mut stream: TcpStream, name: &str, state: &State) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    while !state.stop.load(Ordering::SeqCst) {
        let Some((head, framing)) = read_head(&mut stream, &mut buf) else {
            return;
        };
        state.requests.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut heads) = state.heads.lock() {
            heads.push(head.clone());
        }
        let target = head.split(' ').nth(1).unwrap_or("/").to_string();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let param = |key: &str| -> u64 {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
                .and_then(|value| value.parse().ok())
                .unwrap_or(0)
        };
        let pace = Duration::from_micros(param("pace_us"));
        let head_only = head.starts_with("HEAD ");
        let Some((bytes, hash)) = read_body(&mut stream, &mut buf, framing, pace) else {
            return;
        };
        // By the last segment, so that any route prefix reaches the same behaviour.
        let answered = match path.rsplit('/').next().unwrap_or_default() {
            "echo" => answer(&mut stream, head_only, name, "200 OK", "", head.as_bytes()),
            "sleep" => {
                thread::sleep(Duration::from_millis(param("ms")));
                answer(&mut stream, head_only, name, "200 OK", "", b"slept\n")
            }
            "hold" => {
                hold(&mut stream, state);
                return;
            }
            "upload" => {
                let body = format!("bytes={bytes} fnv={hash:016x}\n");
                answer(&mut stream, head_only, name, "200 OK", "", body.as_bytes())
            }
            "download" => download(&mut stream, name, param("bytes")),
            "trickle" => trickle(&mut stream, name, param("chunks"), param("gap_ms")),
            "redirect" => answer(
                &mut stream,
                head_only,
                name,
                "302 Found",
                "Location: /elsewhere\r\n",
                b"moved\n",
            ),
            "gzip" => answer(
                &mut stream,
                head_only,
                name,
                "200 OK",
                "Content-Type: text/plain\r\nContent-Encoding: gzip\r\n",
                &GZIP_BODY,
            ),
            "hop" => answer(
                &mut stream,
                head_only,
                name,
                "200 OK",
                "Connection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\
                 Proxy-Authenticate: Basic\r\nUpgrade: h2c\r\nTrailer: X-Sum\r\nX-End: 1\r\n",
                b"hop\n",
            ),
            _ => answer(
                &mut stream,
                head_only,
                name,
                "200 OK",
                "",
                format!("{name}\n").as_bytes(),
            ),
        };
        if !answered {
            return;
        }
    }
}

/// Reads one request head: its text and how its body is framed.
fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Framing)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            buf.drain(..end + 4);
            let field = |name: &str| {
                head.lines().find_map(|line| {
                    let (field, value) = line.split_once(':')?;
                    field
                        .eq_ignore_ascii_case(name)
                        .then(|| value.trim().to_string())
                })
            };
            let framing = if field("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
                Framing::Chunked
            } else {
                let length = field("content-length").and_then(|l| l.parse().ok());
                Framing::Length(length.unwrap_or(0))
            };
            return Some((head, framing));
        }
        fill(stream, buf)?;
    }
}

fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 64 * 1024];
    match stream.read(&mut chunk) {
        Ok(0) | Err(_) => None,
        Ok(read) => {
            buf.extend_from_slice(&chunk[..read]);
            Some(())
        }
    }
}

/// Reads a body framed as `framing`, pausing `pace` before each read; its length and
/// checksum. Decoded by `common`'s decoder, the one the servers use: this upstream plays a
/// server, not a judge (the strict, independent reading is [`crate::recorder`]'s).
fn read_body(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    framing: Framing,
    pace: Duration,
) -> Option<(u64, u64)> {
    let mut decoder = BodyDecoder::new(framing);
    let mut hash = FNV_START;
    loop {
        let used = decoder.decode(buf, |data| hash = fnv(hash, data)).ok()?;
        // What follows the body is the next request.
        buf.drain(..used);
        if decoder.is_done() {
            return Some((decoder.data_bytes(), hash));
        }
        if !pace.is_zero() {
            thread::sleep(pace);
        }
        fill(stream, buf)?;
    }
}

/// Writes an answer; `head_only` for a `HEAD` request, whose answer has no body.
fn answer(
    stream: &mut TcpStream,
    head_only: bool,
    name: &str,
    status: &str,
    extra: &str,
    body: &[u8],
) -> bool {
    let head = format!(
        "HTTP/1.1 {status}\r\nX-Served-By: {name}\r\nServer: test-upstream\r\n{extra}\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    let mut out = head.into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    stream.write_all(&out).is_ok()
}

fn download(stream: &mut TcpStream, name: &str, bytes: u64) -> bool {
    let head = format!(
        "HTTP/1.1 200 OK\r\nX-Served-By: {name}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {bytes}\r\n\r\n"
    );
    if stream.write_all(head.as_bytes()).is_err() {
        return false;
    }
    let mut sent = 0usize;
    let total = usize::try_from(bytes).unwrap_or(usize::MAX);
    let mut chunk = vec![0u8; 64 * 1024];
    while sent < total {
        let count = chunk.len().min(total - sent);
        for (i, byte) in chunk[..count].iter_mut().enumerate() {
            *byte = pattern(sent + i);
        }
        if stream.write_all(&chunk[..count]).is_err() {
            return false;
        }
        sent += count;
    }
    true
}

fn trickle(stream: &mut TcpStream, name: &str, chunks: u64, gap_ms: u64) -> bool {
    let head =
        format!("HTTP/1.1 200 OK\r\nX-Served-By: {name}\r\nTransfer-Encoding: chunked\r\n\r\n");
    if stream.write_all(head.as_bytes()).is_err() {
        return false;
    }
    for i in 0..chunks {
        thread::sleep(Duration::from_millis(gap_ms));
        let line = format!("tick {i}\n");
        let chunk = format!("{:x}\r\n{line}\r\n", line.len());
        if stream.write_all(chunk.as_bytes()).is_err() {
            return false;
        }
    }
    stream.write_all(b"0\r\n\r\n").is_ok()
}

/// Never answers; waits for the other side to close the connection, and counts it.
fn hold(stream: &mut TcpStream, state: &State) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let started = Instant::now();
    let mut sink = [0u8; 1024];
    while started.elapsed() < HOLD_LIMIT && !state.stop.load(Ordering::SeqCst) {
        match stream.read(&mut sink) {
            Ok(0) => {
                state.peer_closed.fetch_add(1, Ordering::SeqCst);
                return;
            }
            Ok(_) => {}
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                state.peer_closed.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
    }
}
