//! The one hook step 06 plugs into: blocking work slept somewhere else.
//!
//! A request's delay (`/sleep`, `--delay-ms`) is a timer here. `--blocking-sleep` makes `/sleep`
//! a blocking call instead (standing for a slow disk read), which this step makes on the loop's
//! own thread: every client waits for it, as the chapter measures. Step 06 gives the loop an
//! [`Offload`], a thread pool: the connection then waits as it would for a timer, without a
//! deadline, and the loop ends the wait when the offload's descriptor says the work is done.
//! nginx's thread pools (`aio threads`) work this way.

use std::os::fd::BorrowedFd;

use crate::poller::Token;

/// Blocking work: runs on another thread, blocks as long as it must.
pub type Work = Box<dyn FnOnce() + Send>;

/// Names the connection a piece of work belongs to. The loop checks it when the work is done:
/// the client may have gone meanwhile, and its slot may serve another connection now (same
/// token, another serial).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub token: Token,
    /// Unique per connection for the life of the loop.
    pub serial: u64,
}

/// Where blocking work goes instead of the loop's thread. The loop calls it from its own thread.
pub trait Offload {
    /// Starts `work` for `ticket` elsewhere and returns at once.
    fn start(&mut self, ticket: Ticket, work: Work);

    /// A descriptor that turns readable when work is done, for the loop to watch
    /// (edge-triggered).
    fn wake_fd(&self) -> BorrowedFd<'_>;

    /// Moves the work that is over into `done`. Called when [`Offload::wake_fd`] was reported
    /// readable. The loop is told only of *new* readiness, so drain the descriptor first and
    /// take the work after: work finished in between is then either taken now or makes the
    /// descriptor readable again, and none waits unnoticed.
    fn finished(&mut self, done: &mut Vec<Done>);
}

/// Work that is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    pub ticket: Ticket,
    /// It panicked instead of completing: its client gets a 500, not the answer it waited for.
    pub failed: bool,
}
