//! Idle keep-alive connections to each upstream, one pool per upstream and per worker, as
//! nginx's `keepalive` keeps them (a worker's connections are its own: they cannot cross a
//! process boundary, and must not, see chapter 07 on the fork).
//!
//! A connection goes back to its pool only after its answer was read to the end, the upstream
//! did not say `Connection: close`, and nothing was left over; it comes out newest first
//! (LIFO): the connection used last is the one least likely to have been closed by the
//! upstream's own idle timeout, and the old ones at the bottom age out. At most `keepalive`
//! wait per upstream; a connection freed when the pool is full takes the place of the oldest.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::conn::UpstreamConn;

/// The most buffer an idle connection keeps (the usual answer head and body fit).
const IDLE_BUFFER: usize = 16 * 1024;

/// One idle connection and since when.
struct Idle {
    conn: UpstreamConn,
    since: Instant,
}

/// The idle connections of every upstream, for one worker.
pub(crate) struct Pools {
    /// Per upstream, oldest at the front. A lock only because tasks must be `Send` for
    /// `tokio::spawn`: the worker has one thread, so it is never contended.
    idle: Vec<Mutex<VecDeque<Idle>>>,
    /// The most idle connections per upstream (`keepalive`).
    keep: usize,
    /// An idle connection older than this is closed (`keepalive_timeout_ms`).
    timeout: Duration,
}

impl Pools {
    pub fn new(upstreams: usize, keep: usize, timeout: Duration) -> Pools {
        Pools {
            idle: (0..upstreams).map(|_| Mutex::default()).collect(),
            keep,
            timeout,
        }
    }

    /// The most recently used idle connection to `upstream` that is still good, if any.
    pub fn take(&self, upstream: usize) -> Option<UpstreamConn> {
        let mut idle = self.lock(upstream)?;
        while let Some(entry) = idle.pop_back() {
            if entry.since.elapsed() >= self.timeout {
                // The newest is too old: the others, older still, are closed with it.
                idle.clear();
                return None;
            }
            if entry.conn.still_idle() {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Keeps `conn` for the next request to its upstream.
    pub fn put(&self, mut conn: UpstreamConn) {
        if self.keep == 0 {
            return;
        }
        // A long answer grew the buffer: an idle connection keeps only the usual size.
        conn.buf.shrink_to(IDLE_BUFFER);
        let Some(mut idle) = self.lock(conn.upstream) else {
            return;
        };
        if idle.len() >= self.keep {
            idle.pop_front();
        }
        idle.push_back(Idle {
            conn,
            since: Instant::now(),
        });
    }

    /// Closes the connections idle for longer than the timeout (called every second).
    pub fn close_expired(&self) {
        for upstream in 0..self.idle.len() {
            if let Some(mut idle) = self.lock(upstream) {
                while idle
                    .front()
                    .is_some_and(|entry| entry.since.elapsed() >= self.timeout)
                {
                    idle.pop_front();
                }
            }
        }
    }

    /// Idle connections to `upstream` now.
    #[cfg(test)]
    pub fn idle(&self, upstream: usize) -> usize {
        self.lock(upstream).map_or(0, |idle| idle.len())
    }

    fn lock(&self, upstream: usize) -> Option<MutexGuard<'_, VecDeque<Idle>>> {
        // A panic while the lock was held cannot leave a list of sockets half changed.
        Some(
            self.idle
                .get(upstream)?
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::net::TcpListener;

    use super::*;
    use crate::upstream::conn::connect;

    fn run<T>(future: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    async fn connections(count: usize) -> (TcpListener, Vec<UpstreamConn>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let mut conns = Vec::new();
        for _ in 0..count {
            conns.push(connect(addr, 0, Duration::from_secs(1)).await.unwrap());
        }
        (listener, conns)
    }

    #[test]
    fn newest_first_at_most_keep_and_closed_ones_skipped() {
        run(async {
            let (listener, conns) = connections(3).await;
            let ports: Vec<u16> = conns
                .iter()
                .map(|c| c.stream.local_addr().unwrap().port())
                .collect();
            let pools = Pools::new(1, 2, Duration::from_secs(60));
            for conn in conns {
                pools.put(conn);
            }
            assert_eq!(pools.idle(0), 2, "the oldest made room");
            let newest = pools.take(0).unwrap();
            assert_eq!(newest.stream.local_addr().unwrap().port(), ports[2]);
            // The upstream closes the other one: it is skipped, not handed out.
            let mut accepted = Vec::new();
            for _ in 0..3 {
                accepted.push(listener.accept().await.unwrap().0);
            }
            drop(accepted);
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(
                pools.take(0).is_none(),
                "a closed connection was handed out"
            );
            assert!(pools.take(7).is_none());
        });
    }

    #[test]
    fn idle_too_long_is_closed() {
        run(async {
            let (_listener, conns) = connections(2).await;
            let pools = Pools::new(1, 8, Duration::from_millis(30));
            for conn in conns {
                pools.put(conn);
            }
            tokio::time::sleep(Duration::from_millis(60)).await;
            pools.close_expired();
            assert_eq!(pools.idle(0), 0);
        });
    }
}
