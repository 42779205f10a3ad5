//! One connection to an upstream.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::timeout;

use super::UpstreamError;
use crate::deadline::Deadline;

/// A connection to one upstream, with the bytes read from it and not used yet.
pub(crate) struct UpstreamConn {
    pub stream: TcpStream,
    /// The answer's head and the first bytes of its body, as they arrive; empty between
    /// exchanges (bytes left over after an answer mean the connection is not reused).
    pub buf: Vec<u8>,
    /// Which upstream (an index into the configuration's upstreams).
    pub upstream: usize,
    /// The read timeout of the wait in progress (see [`Deadline`]).
    pub deadline: Deadline,
}

/// Opens a connection to `addr`, upstream number `upstream`, within `within`.
///
/// # Errors
///
/// [`UpstreamError::Connect`] or [`UpstreamError::ConnectTimedOut`].
pub(crate) async fn connect(
    addr: SocketAddr,
    upstream: usize,
    within: Duration,
) -> Result<UpstreamConn, UpstreamError> {
    let stream = match timeout(within, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Err(UpstreamError::Connect(error)),
        Err(_) => return Err(UpstreamError::ConnectTimedOut),
    };
    // A request goes out in one write, and an answer is awaited: Nagle's algorithm would hold
    // back the last segment of a head written in two parts for nothing.
    let _ = stream.set_nodelay(true);
    Ok(UpstreamConn {
        stream,
        buf: Vec::with_capacity(16 * 1024),
        upstream,
        deadline: Deadline::new(),
    })
}

impl UpstreamConn {
    /// Whether an idle connection still looks usable: nothing arrived on it while it was idle.
    /// An upstream that closed it sent a FIN (end of stream), one that misbehaves may have
    /// sent bytes nobody asked for; either way it must not carry a request.
    ///
    /// Usually free: tokio remembers whether the socket became readable since its last short
    /// read, and `try_read` asks the kernel only if it did. A close that lands in the instant
    /// of reuse still gets through; [`crate::forward`] retries those.
    pub fn still_idle(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(error) if error.kind() == ErrorKind::WouldBlock)
    }
}
