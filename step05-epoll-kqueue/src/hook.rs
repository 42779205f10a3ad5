//! The loop's one seam, for a program that runs it somewhere bigger (step 06).
//!
//! Step 05's binary gives the loop no hook (`()`, every default below): it owns its listening
//! socket, so it watches it once and for good, and `--blocking-sleep` blocks the loop's own
//! thread, as the chapter measures. Step 06 runs this loop in worker processes that share one
//! listening socket and send blocking work to a thread pool; its `WorkerHook` implements
//! [`Hook`] in step 06's own crate.

use std::io;
use std::net::TcpListener;
use std::os::fd::BorrowedFd;

use crate::poller::{Interest, Poller, Token};

/// Blocking work: runs on another thread, blocks as long as it must.
pub type Work = Box<dyn FnOnce() + Send>;

/// The connection a piece of blocking work belongs to. By the time the work is done the client
/// may have gone and its slot serve another connection: same token, another serial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkId {
    pub token: Token,
    /// Unique per connection for the life of the loop.
    pub serial: u64,
}

/// What a program running the loop may change. The loop calls it from its own thread.
pub trait Hook {
    /// Starts watching the listening socket; its events must carry `token`.
    ///
    /// # Errors
    ///
    /// When the poller refuses it; the loop cannot run then.
    fn watch_listener(
        &mut self,
        poller: &Poller,
        listener: &TcpListener,
        token: Token,
    ) -> io::Result<()> {
        poller.register(listener, token, Interest::READABLE)
    }

    /// After each pass: whether the loop can accept now (not when it is full, or pausing after
    /// an accept error, or about to close the listener). Returns `true` when the listener is
    /// watched again after a pause, so that connections queued meanwhile, unreported, are
    /// accepted now.
    fn can_accept(&mut self, _poller: &Poller, _listener: &TcpListener, _can: bool) -> bool {
        false
    }

    /// Takes blocking work elsewhere and returns at once; or gives it back, for the loop to run
    /// on its own thread. Taken, its connection waits until [`Hook::finished`] reports it.
    ///
    /// # Errors
    ///
    /// `work` itself, not taken.
    fn offload(&mut self, _id: WorkId, work: Work) -> Result<(), Work> {
        Err(work)
    }

    /// A descriptor that turns readable when offloaded work is done, for the loop to watch
    /// (edge-triggered).
    fn wake_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// Moves the work that is over into `done`, with `true` for work that failed (panicked):
    /// its client gets a 500. Called when [`Hook::wake_fd`] was reported readable.
    fn finished(&mut self, _done: &mut Vec<(WorkId, bool)>) {}
}

impl Hook for () {}
