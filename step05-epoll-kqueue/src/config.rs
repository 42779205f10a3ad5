//! What the caller decides about a loop: timeouts, limits, logging.

use std::time::Duration;

use common::CommonArgs;

/// The settings of one [`EventLoop`](crate::EventLoop).
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// A request head must be complete this long after its first byte (on a new connection:
    /// after it was accepted), or it is answered 408. Also the longest pause inside a request
    /// body, and the longest a client may leave our answer unread before we give up on it.
    pub header_timeout: Duration,
    /// How long a keep-alive connection may sit idle between requests.
    pub idle_timeout: Duration,
    /// After a shutdown request, how long requests in flight get to finish.
    pub grace: Duration,
    /// At this many open connections the loop stops accepting until one closes; the next
    /// clients wait in the listening socket's backlog.
    pub max_connections: usize,
    /// Print an access log line per request.
    pub log: bool,
    /// `/sleep` is a blocking call instead of a timer (`--blocking-sleep`): made on the loop's
    /// thread, unless the loop's [`Hook`](crate::Hook) takes it elsewhere (step 06).
    pub blocking_sleep: bool,
}

impl LoopConfig {
    /// The contract's timeouts and logging from `common`, with the loop's own defaults: 10 000
    /// connections, `/sleep` on a timer.
    pub fn new(common: &CommonArgs) -> LoopConfig {
        let conn = common.conn_config();
        LoopConfig {
            header_timeout: conn.header_timeout,
            idle_timeout: conn.idle_timeout,
            grace: common.grace(),
            max_connections: 10_000,
            log: conn.log,
            blocking_sleep: false,
        }
    }
}
