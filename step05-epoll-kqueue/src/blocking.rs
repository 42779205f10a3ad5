//! Blocking work, and where it runs.
//!
//! An event loop must never block: while its one thread sleeps or waits for a disk, every other
//! connection waits too. Some work blocks anyway (`/sleep` under `--blocking-sleep` stands for a
//! slow file read or a heavy computation). The loop hands such work to a [`BlockingRunner`]:
//!
//! - Step 05 uses [`InlineRunner`], which runs the work right there on the loop's thread. That
//!   is the teaching stall: one `/sleep?ms=1000` freezes every client for a second.
//! - Step 06 plugs in a runner that sends the work to a thread pool and returns at once. When
//!   the work is done, the pool makes the runner's [`wake_fd`](BlockingRunner::wake_fd)
//!   readable; the loop, which watches that descriptor with its other ones, then collects the
//!   answers with [`finished`](BlockingRunner::finished) and sends them. This is nginx's thread
//!   pools (`aio threads`).

use std::os::fd::BorrowedFd;

use common::Response;

use crate::poller::Token;

/// The work: runs somewhere, blocks as long as it must, and produces the answer.
pub type Work = Box<dyn FnOnce() -> Response + Send>;

/// Says which request a piece of work belongs to. The loop checks it when the answer comes
/// back: the client may have gone meanwhile, and its slot may serve another connection now
/// (same token, different serial).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub token: Token,
    /// Unique per connection for the life of the loop.
    pub serial: u64,
}

/// Where the loop runs blocking work. The loop calls it from its own thread only.
pub trait BlockingRunner {
    /// Runs `work` for `ticket`: either now, returning its answer (`Some`), or later elsewhere,
    /// returning `None` and delivering the answer through [`BlockingRunner::finished`].
    fn run(&mut self, ticket: Ticket, work: Work) -> Option<Response>;

    /// A descriptor that turns readable when finished work is waiting, for the loop to watch
    /// (edge-triggered). `None` if this runner never defers work.
    fn wake_fd(&self) -> Option<BorrowedFd<'_>>;

    /// Moves the answers of finished work into `done`. Called when [`wake_fd`] was reported
    /// readable. Because the loop is told only of *new* readiness, drain the descriptor first
    /// and take the answers after: an answer finished in between then either is taken now or
    /// makes the descriptor readable again, and none is left waiting unnoticed.
    ///
    /// [`wake_fd`]: BlockingRunner::wake_fd
    fn finished(&mut self, done: &mut Vec<(Ticket, Response)>);
}

/// Runs blocking work on the loop's own thread: the stall `--blocking-sleep` demonstrates.
#[derive(Debug, Default, Clone, Copy)]
pub struct InlineRunner;

impl BlockingRunner for InlineRunner {
    fn run(&mut self, _ticket: Ticket, work: Work) -> Option<Response> {
        // Every other connection waits while this runs. Step 06 moves it to a pool.
        Some(work())
    }

    fn wake_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    fn finished(&mut self, _done: &mut Vec<(Ticket, Response)>) {}
}
