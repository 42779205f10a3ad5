//! Request bodies, streamed from the client to the upstream as they arrive.
//!
//! The proxy never holds a whole body: it reads what the client sent, hands it to the upstream
//! request through a small channel, and reads more only when there is room. When the upstream
//! is slow to take the body, the channel fills, we stop reading, the client's socket buffer
//! fills, and TCP slows the client down: back-pressure end to end, and a 100 MB upload costs a
//! few hundred KiB here. A chunked body is decoded with `common`'s strict decoder and sent on
//! in chunks of our own: the framing the upstream sees is never the client's bytes.
//!
//! One rule keeps a cut-off body from looking whole: the body ends cleanly only after an
//! explicit [`Chunk::End`]. If the client vanishes mid-body, the channel closes without it,
//! [`RequestBody`] reports an error, and the HTTP client aborts the request instead of
//! finishing it with a final chunk that would tell the upstream "that was all".

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::chunked::{ChunkedDecoder, ChunkedError};
use common::parse::BodyFraming;
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// How many chunks may wait between the client and the upstream request.
pub const CHANNEL_CHUNKS: usize = 4;

/// How much one read from a client asks for.
pub const READ_CHUNK: usize = 64 * 1024;

/// What travels from the client's connection to the upstream request.
#[derive(Debug)]
pub enum Chunk {
    Data(Bytes),
    /// The whole body arrived.
    End,
}

/// The upstream request's body: whatever [`pump`] sends, until [`Chunk::End`].
pub struct RequestBody {
    chunks: mpsc::Receiver<Chunk>,
    /// `Content-Length`, so that the upstream request is sent with the same framing.
    length: Option<u64>,
    ended: bool,
}

impl RequestBody {
    /// A body of `length` bytes (or unknown: sent chunked) and the sender that feeds it.
    pub fn channel(length: Option<u64>) -> (mpsc::Sender<Chunk>, RequestBody) {
        let (sender, chunks) = mpsc::channel(CHANNEL_CHUNKS);
        let body = RequestBody {
            chunks,
            length,
            ended: false,
        };
        (sender, body)
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        self.chunks.poll_recv(cx).map(|chunk| match chunk {
            Some(Chunk::Data(bytes)) => Some(Ok(Frame::data(bytes))),
            Some(Chunk::End) => {
                self.ended = true;
                None
            }
            None => Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client's body ended early",
            ))),
        })
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        self.length.map(SizeHint::with_exact).unwrap_or_default()
    }
}

/// Why a body could not be passed on whole.
#[derive(Debug)]
pub enum BodyError {
    /// The client closed or reset the connection mid-body.
    ClientGone,
    /// The client sent nothing for the timeout (408).
    ClientTimedOut,
    /// Not valid chunked framing (400).
    Malformed(ChunkedError),
    /// The upstream request is gone (it failed or already has its answer).
    UpstreamGone,
    /// The upstream took none of the body for the timeout (504).
    UpstreamStalled,
}

/// Reads a request body framed by `framing` from `client` (after the head, whose leftover
/// bytes are in `buf`) and sends it on to `sink`, or drops it when `sink` is `None` (a request
/// the proxy answers itself). On success `buf` holds what follows the body: the next
/// pipelined request.
///
/// `client_timeout` bounds each wait for the client's bytes, `upstream_timeout` each wait for
/// room in the channel.
///
/// # Errors
///
/// [`BodyError`]: the body cannot be passed on whole, and the connection must close.
pub async fn pump(
    client: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    framing: BodyFraming,
    sink: Option<&mpsc::Sender<Chunk>>,
    client_timeout: Duration,
    upstream_timeout: Duration,
) -> Result<(), BodyError> {
    let send = |chunk: Chunk| async move {
        let Some(sink) = sink else { return Ok(()) };
        match timeout(upstream_timeout, sink.send(chunk)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(BodyError::UpstreamGone),
            Err(_) => Err(BodyError::UpstreamStalled),
        }
    };
    match framing {
        BodyFraming::None => {}
        BodyFraming::Length(length) => {
            let mut left = length;
            loop {
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                if take > 0 {
                    let data = Bytes::copy_from_slice(&buf[..take]);
                    buf.drain(..take);
                    left -= take as u64;
                    send(Chunk::Data(data)).await?;
                }
                if left == 0 {
                    break;
                }
                read_more(client, buf, client_timeout).await?;
            }
        }
        BodyFraming::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            loop {
                let mut pieces = Vec::new();
                let used = decoder
                    .feed(buf, |data| pieces.push(Bytes::copy_from_slice(data)))
                    .map_err(BodyError::Malformed)?;
                buf.drain(..used);
                for piece in pieces {
                    send(Chunk::Data(piece)).await?;
                }
                if decoder.is_done() {
                    break;
                }
                read_more(client, buf, client_timeout).await?;
            }
        }
    }
    send(Chunk::End).await
}

/// Appends the client's next bytes to `buf`.
async fn read_more(
    client: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    within: Duration,
) -> Result<(), BodyError> {
    buf.reserve(READ_CHUNK);
    match timeout(within, client.read_buf(buf)).await {
        Ok(Ok(0) | Err(_)) => Err(BodyError::ClientGone),
        Ok(Ok(_)) => Ok(()),
        Err(_) => Err(BodyError::ClientTimedOut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body;

    async fn collect(mut body: RequestBody) -> Result<Vec<u8>, io::Error> {
        let mut out = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            if let Ok(data) = frame?.into_data() {
                out.extend_from_slice(&data);
            }
        }
        Ok(out)
    }

    fn run<T>(future: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn a_chunked_body_arrives_decoded_and_the_next_request_stays() {
        run(async {
            let (sender, body) = RequestBody::channel(None);
            let mut buf = b"5\r\nhello\r\n".to_vec();
            let mut client: &[u8] = b"6\r\n world\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
            let second = Duration::from_secs(1);
            let (pumped, data) = tokio::join!(
                pump(
                    &mut client,
                    &mut buf,
                    BodyFraming::Chunked,
                    Some(&sender),
                    second,
                    second
                ),
                collect(body)
            );
            assert!(pumped.is_ok());
            assert_eq!(data.unwrap(), b"hello world");
            assert_eq!(buf, b"GET / HTTP/1.1\r\n");
        });
    }

    #[test]
    fn a_body_cut_short_is_an_error_upstream_not_an_end() {
        run(async {
            let (sender, body) = RequestBody::channel(Some(100));
            assert_eq!(body.size_hint().exact(), Some(100));
            let mut buf = b"only a little".to_vec();
            let mut client: &[u8] = b"";
            let second = Duration::from_secs(1);
            let pumping = async {
                let result = pump(
                    &mut client,
                    &mut buf,
                    BodyFraming::Length(100),
                    Some(&sender),
                    second,
                    second,
                )
                .await;
                drop(sender);
                result
            };
            let (pumped, data) = tokio::join!(pumping, collect(body));
            assert!(matches!(pumped, Err(BodyError::ClientGone)));
            assert!(data.is_err());
        });
    }

    #[test]
    fn bad_chunks_are_malformed() {
        run(async {
            let mut buf = b"zz\r\n".to_vec();
            let mut client: &[u8] = b"";
            let second = Duration::from_secs(1);
            let pumped = pump(
                &mut client,
                &mut buf,
                BodyFraming::Chunked,
                None,
                second,
                second,
            )
            .await;
            assert!(matches!(pumped, Err(BodyError::Malformed(_))));
        });
    }
}
