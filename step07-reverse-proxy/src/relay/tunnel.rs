//! After `101 Switching Protocols`: the client's connection and the upstream's become one
//! two-way byte stream, a tunnel, for a WebSocket or any protocol the two ends agreed on. The
//! proxy no longer reads HTTP on either; it copies bytes both ways
//! (`tokio::io::copy_bidirectional`) until one side closes, as nginx does for a request with
//! `Upgrade` (`proxy_http_version 1.1` and the `Upgrade` and `Connection` fields passed on).
//!
//! A tunnel still has a timeout: when neither side sends a byte for the read timeout, it is
//! closed, as nginx's `proxy_read_timeout` closes a silent WebSocket. Applications that keep a
//! quiet WebSocket open send pings for that reason.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, copy_bidirectional};
use tokio::time::sleep;

use crate::client::{Client, write_within};
use crate::proxy::Proxy;
use crate::upstream::conn::UpstreamConn;

/// Joins the client and `conn` after the `101` head waiting in the client's output buffer,
/// until either closes or the tunnel is silent for `idle`. Returns the bytes sent to the
/// client after the head.
pub(crate) async fn tunnel(
    client: &mut Client,
    proxy: &Proxy,
    mut conn: UpstreamConn,
    idle: Duration,
) -> u64 {
    // What each side sent after its head already belongs to the other protocol.
    let early = conn.buf.len() as u64;
    client.out.extend_from_slice(&conn.buf);
    if !client.flush(proxy).await {
        return 0;
    }
    if !client.buf.is_empty() {
        if !write_within(&mut conn.stream, &client.buf, idle).await {
            return early;
        }
        client.buf.clear();
    }
    // Many small writes both ways from here on (see `Client::before_write`).
    client.before_write();
    let epoch = Instant::now();
    let last = AtomicU64::new(0);
    let mut down = Active::new(&mut client.stream, &last, epoch);
    let mut up = Active::new(&mut conn.stream, &last, epoch);
    let copying = copy_bidirectional(&mut down, &mut up);
    let silence = async {
        loop {
            let quiet = epoch
                .elapsed()
                .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
            if quiet >= idle {
                return;
            }
            sleep(idle - quiet).await;
        }
    };
    tokio::select! {
        copied = copying => early + copied.map_or(0, |(_, to_client)| to_client),
        () = silence => early,
    }
}

/// A stream that notes when bytes last moved through it, in milliseconds since `epoch`.
struct Active<'a, S> {
    io: &'a mut S,
    last: &'a AtomicU64,
    epoch: Instant,
}

impl<'a, S> Active<'a, S> {
    fn new(io: &'a mut S, last: &'a AtomicU64, epoch: Instant) -> Active<'a, S> {
        Active { io, last, epoch }
    }

    fn moved(&self, count: usize) {
        if count > 0 {
            let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last.store(now, Ordering::Relaxed);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Active<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut *self.io).poll_read(cx, buf);
        self.moved(buf.filled().len() - before);
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Active<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut *self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(count)) = polled {
            self.moved(count);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_shutdown(cx)
    }
}
