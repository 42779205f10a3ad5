//! The answer's body, from the upstream to the client, as it arrives.
//!
//! Bytes are decoded by their framing with `common`'s decoder and written in the client's
//! framing ([`super::head`]): a length passes as it is, chunks are written as chunks of our
//! own (with the trailers after the last one), and an answer that ends when the upstream
//! closes goes to an HTTP/1.1 client in chunks, so that the client's connection can stay open.
//! What arrived with the head leaves with it, in one write; after that, each read of the
//! upstream is written to the client before the next read, so that the client's pace is the
//! upstream's: a slow client fills its socket, our write waits, we stop reading, and the
//! upstream's socket fills in turn.

use std::io::ErrorKind;

use common::body::{BodyDecoder, Framing, for_each_trailer};
use common::chunked::{write_chunk, write_last_chunk};
use common::log;
use tokio::io::AsyncReadExt;

use super::head::Answer;
use crate::client::Client;
use crate::headers::is_hop_by_hop;
use crate::proxy::Proxy;
use crate::upstream::UpstreamError;
use crate::upstream::conn::UpstreamConn;

/// Answer bytes gathered before a write, when the upstream sends faster than one read.
const FLUSH_AT: usize = 64 * 1024;

/// How much one read of an answer's body asks for.
const READ: usize = 64 * 1024;

/// How relaying a body ended.
pub(crate) enum BodyEnd {
    /// All of it reached the client. `clean`: and the upstream's connection is at the end of
    /// the answer, with nothing left over, ready for another request if the answer allows.
    Whole { clean: bool },
    /// The upstream failed mid-body: too late for a status, the client's connection closes.
    Cut(UpstreamError),
    /// The client left, or stopped reading.
    ClientGone,
}

/// Streams the body of `answer` from `conn` (its first bytes already in `conn.buf`) to the
/// client, after the head waiting in the client's output buffer. Returns how it ended and the
/// body bytes the client got.
pub(crate) async fn relay_body(
    client: &mut Client,
    proxy: &Proxy,
    conn: &mut UpstreamConn,
    answer: &Answer,
) -> (BodyEnd, u64) {
    let chunked = answer.to_client == Framing::Chunked;
    let mut decoder = BodyDecoder::new(answer.from_upstream);
    let mut bytes = 0u64;
    let within = proxy.config.proxy.read_timeout();
    loop {
        let out = &mut client.out;
        let used = decoder.decode(&conn.buf, |data| {
            bytes += data.len() as u64;
            if chunked {
                write_chunk(out, data);
            } else {
                out.extend_from_slice(data);
            }
        });
        let used = match used {
            Ok(used) => used,
            Err(error) => return cut(client, proxy, UpstreamError::Body(error), bytes).await,
        };
        conn.buf.drain(..used);
        if decoder.is_done() {
            if chunked {
                let trailers = if answer.trailers {
                    decoder.trailers()
                } else {
                    &[]
                };
                write_trailers(&mut client.out, trailers);
            }
            if !client.flush(proxy).await {
                return (BodyEnd::ClientGone, bytes);
            }
            return (
                BodyEnd::Whole {
                    clean: conn.buf.is_empty(),
                },
                bytes,
            );
        }
        if client.out.len() >= FLUSH_AT && !client.flush(proxy).await {
            return (BodyEnd::ClientGone, bytes);
        }
        conn.buf.reserve(READ);
        // More already here? (Usually free: see `UpstreamConn::still_idle`.)
        let read = match conn.stream.try_read_buf(&mut conn.buf) {
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                // Nothing yet: what we have goes to the client before we wait.
                if !client.out.is_empty() && !client.flush(proxy).await {
                    return (BodyEnd::ClientGone, bytes);
                }
                conn.deadline.set_in(within);
                tokio::select! {
                    read = conn.stream.read_buf(&mut conn.buf) => read,
                    () = conn.deadline.passed() => {
                        return cut(client, proxy, UpstreamError::TimedOut, bytes).await;
                    }
                    // Gone: dropping the upstream connection closes it mid-body.
                    () = client.gone() => return (BodyEnd::ClientGone, bytes),
                }
            }
            read => read,
        };
        match read {
            Ok(0) => {
                if let Err(error) = decoder.end_of_input() {
                    return cut(client, proxy, UpstreamError::Body(error), bytes).await;
                }
                // An until-close body ended: in chunks, the client gets the last one.
                if chunked {
                    write_last_chunk(&mut client.out, b"");
                }
                if !client.flush(proxy).await {
                    return (BodyEnd::ClientGone, bytes);
                }
                return (BodyEnd::Whole { clean: false }, bytes);
            }
            Ok(_) => {}
            Err(error) => return cut(client, proxy, UpstreamError::Receive(error), bytes).await,
        }
    }
}

/// The answer was cut off: what we have goes to the client, and its connection will close
/// without the end of the body, the only way left to say that the answer is incomplete.
async fn cut(
    client: &mut Client,
    proxy: &Proxy,
    error: UpstreamError,
    bytes: u64,
) -> (BodyEnd, u64) {
    let _ = client.flush(proxy).await;
    (BodyEnd::Cut(error), bytes)
}

/// The last chunk, with the upstream's trailer fields when they are well-formed (all or
/// none) and end-to-end: framing and hop-by-hop fields have no business in a trailer.
fn write_trailers(out: &mut Vec<u8>, trailers: &[u8]) {
    if trailers.is_empty() {
        write_last_chunk(out, b"");
        return;
    }
    let mut passed = Vec::with_capacity(trailers.len());
    let checked = for_each_trailer(trailers, |name, value| {
        let framing = ["content-length", "host"]
            .iter()
            .any(|field| name.eq_ignore_ascii_case(field));
        if !framing && !is_hop_by_hop(name) {
            passed.extend_from_slice(name.as_bytes());
            passed.extend_from_slice(b": ");
            passed.extend_from_slice(value);
            passed.extend_from_slice(b"\r\n");
        }
    });
    if let Err(error) = checked {
        log::error(format_args!("upstream trailers dropped: {error}"));
        passed.clear();
    }
    write_last_chunk(out, &passed);
}
