//! Sending a request upstream: its head in one write, then its body as the client sends it.
//!
//! The body is never held whole. A piece is read from the client (decoded, and re-framed as
//! chunks of our own when it came chunked), written to the upstream, and only then is the next
//! piece read: when the upstream is slow to take it, the write waits, we stop reading, the
//! client's socket buffer fills, and TCP slows the client down. Back-pressure end to end, and a
//! 100 MB upload costs a buffer of 64 KiB here.
//!
//! An upstream may answer before it has the whole body (a 413, a 401): while sending, we watch
//! the connection, and stop as soon as it has something to say.

use std::io::ErrorKind;
use std::time::Duration;

use common::body::BodyDecoder;
use common::parse::BodyFraming;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::UpstreamError;
use super::conn::UpstreamConn;
use crate::client::{BodyError, Client};

/// Why a request could not be sent.
pub(crate) enum SendFailure {
    /// The client broke off: it left, stalled, or sent bad chunks.
    Client(BodyError),
    /// The upstream did not take the request. `wrote_any`: some of it went out, so the
    /// upstream may have read it.
    Upstream {
        error: UpstreamError,
        wrote_any: bool,
    },
}

/// Sends `head` (the whole upstream request head), then the request's body, framed by
/// `body`, read from `client` within `client_within` per read. Each write to the upstream may
/// wait `within`. Returns whether the whole body went out: `false` when the upstream answered
/// first.
///
/// # Errors
///
/// [`SendFailure`]: who broke off.
pub(crate) async fn send_request(
    conn: &mut UpstreamConn,
    head: &[u8],
    client: &mut Client,
    body: BodyFraming,
    within: Duration,
    client_within: Duration,
) -> Result<bool, SendFailure> {
    // Usually the head goes in one `write` at once; a timer is armed only if it has to wait.
    let mut written = match conn.stream.try_write(head) {
        Ok(written) => written,
        Err(error) if error.kind() == ErrorKind::WouldBlock => 0,
        Err(error) => {
            let (error, wrote_any) = (UpstreamError::Send(error), false);
            return Err(SendFailure::Upstream { error, wrote_any });
        }
    };
    while written < head.len() {
        let failure = |error| SendFailure::Upstream {
            error,
            wrote_any: written > 0,
        };
        match timeout(within, conn.stream.write(&head[written..])).await {
            Ok(Ok(0)) => return Err(failure(UpstreamError::Send(ErrorKind::WriteZero.into()))),
            Ok(Ok(count)) => written += count,
            Ok(Err(error)) => return Err(failure(UpstreamError::Send(error))),
            Err(_) => return Err(failure(UpstreamError::SendTimedOut)),
        }
    }
    if body == BodyFraming::None {
        return Ok(true);
    }
    let chunked = body == BodyFraming::Chunked;
    let mut decoder = BodyDecoder::new(body.into());
    let mut piece = Vec::new();
    let UpstreamConn { stream, buf, .. } = conn;
    let (reader, mut writer) = stream.split();
    let upstream = |error| SendFailure::Upstream {
        error,
        wrote_any: true,
    };
    loop {
        piece.clear();
        let done = tokio::select! {
            next = client.next_body_piece(&mut decoder, chunked, &mut piece, client_within) => {
                next.map_err(SendFailure::Client)?
            }
            () = answered(reader.as_ref(), buf) => return Ok(false),
        };
        tokio::select! {
            sent = timeout(within, writer.write_all(&piece)) => match sent {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(upstream(UpstreamError::Send(error))),
                Err(_) => return Err(upstream(UpstreamError::SendTimedOut)),
            },
            () = answered(reader.as_ref(), buf) => return Ok(false),
        }
        if done {
            return Ok(true);
        }
    }
}

/// Resolves once the upstream has said something (bytes of an answer, kept in `buf` for the
/// answer's reader, or the end of its stream) while we were still sending.
async fn answered(stream: &TcpStream, buf: &mut Vec<u8>) {
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        buf.reserve(4096);
        match stream.try_read_buf(buf) {
            Err(error) if error.kind() == ErrorKind::WouldBlock => {}
            // Data, the end, or an error: the reader of the answer will find which.
            _ => return,
        }
    }
}
