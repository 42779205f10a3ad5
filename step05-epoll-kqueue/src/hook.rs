//! The loop's one seam, for a program that runs it somewhere bigger.
//!
//! Step 05 gives the loop no hook (`()`: every default below). It owns its listening socket, so
//! it watches it once and for good, and `--blocking-sleep` blocks the loop's own thread, as the
//! chapter measures. Step 06's workers share their listening socket and send blocking work to a
//! thread pool: their `WorkerHook`, in step 06's crate, implements [`Hook`] for both.

use std::io;
use std::net::TcpListener;
use std::os::fd::BorrowedFd;

use crate::poller::{Interest, Poller, Token};

/// Blocking work: runs on another thread, blocks as long as it must.
pub type Work = Box<dyn FnOnce() + Send>;

/// The connection a piece of blocking work belongs to. When the work is done, its slot may serve
/// another connection: same token, another serial (unique for the life of the loop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkId {
    pub token: Token,
    pub serial: u64,
}

/// What a program running the loop may change. The loop calls it from its own thread.
pub trait Hook {
    /// Starts watching the listening socket, whose events must carry `token`.
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

    /// After each pass, and before the listener closes: whether the loop can accept now. `true`
    /// back means the listener is watched again after a pause, so that connections queued
    /// meanwhile, unreported, are accepted now.
    fn can_accept(&mut self, _poller: &Poller, _listener: &TcpListener, _can: bool) -> bool {
        false
    }

    /// Takes blocking work elsewhere, or gives it back to be run on the loop's thread. Taken,
    /// its connection waits until [`Hook::finished`] reports it.
    ///
    /// # Errors
    ///
    /// `work`, not taken.
    fn offload(&mut self, _id: WorkId, work: Work) -> Result<(), Work> {
        Err(work)
    }

    /// Turns readable when offloaded work is done; the loop watches it (edge-triggered).
    fn wake_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// Moves the work that is over into `done`, `true` for work that failed (its client gets a
    /// 500). Called when [`Hook::wake_fd`] was reported readable.
    fn finished(&mut self, _done: &mut Vec<(WorkId, bool)>) {}
}

impl Hook for () {}
