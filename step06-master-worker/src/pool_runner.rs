//! Blocking work off the event loop: step 04's pool, and a wake-up descriptor for the way back.
//!
//! Step 05's loop offers blocking work (`/sleep` under `--blocking-sleep`, standing for a slow
//! disk read or a heavy computation) to its hook; step 05's hook declines, and the loop sleeps on
//! its own thread, freezing every client. A worker's hook (see [`crate::worker`]) takes it and
//! gives it to [`PoolRunner`], which hands it to a [`ThreadPool`] and returns at once: the
//! connection waits as it would for a timer, without a deadline. A pool thread runs the work,
//! says so in a channel and *wakes the loop* by making a descriptor readable ([`Wakeup`]),
//! which the loop watches with its sockets; the loop then answers the connections whose work is
//! done. This is what nginx's thread pools do for file reads (`aio threads`; 32 threads and a
//! queue of 65 536 tasks by default).
//!
//! The pool lives in the worker process and is created there, after the fork: threads do not
//! survive `fork` (see the fork-safety note in [`crate::master`]).

use std::mem::ManuallyDrop;
use std::os::fd::BorrowedFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};

use step04_threadpool::{PoolError, PoolStatus, ThreadPool};
use step05_epoll_kqueue::{Work, WorkId};

/// Runs blocking work on a thread pool and wakes the loop when some is done.
pub struct PoolRunner {
    /// Never dropped: dropping a step 04 pool waits for every queued job, and a worker that
    /// stops after its grace period must not wait for a minute-long `/sleep` nobody will read.
    /// The process ends right after the loop, and its threads with it.
    pool: ManuallyDrop<ThreadPool>,
    /// Work that is over, and whether it failed.
    done_tx: Sender<(WorkId, bool)>,
    done_rx: Receiver<(WorkId, bool)>,
    wakeup: Arc<Wakeup>,
}

impl PoolRunner {
    /// A runner with a pool of `threads` threads.
    ///
    /// # Errors
    ///
    /// When the pool's threads or the wake-up descriptor cannot be created.
    pub fn new(threads: usize) -> Result<PoolRunner, String> {
        let pool = ThreadPool::new(threads).map_err(|error: PoolError| error.to_string())?;
        let wakeup = Wakeup::new().map_err(|error| format!("cannot create a wake-up: {error}"))?;
        let (done_tx, done_rx) = mpsc::channel();
        Ok(PoolRunner {
            pool: ManuallyDrop::new(pool),
            done_tx,
            done_rx,
            wakeup: Arc::new(wakeup),
        })
    }

    /// The pool's live figures, for `/stats`.
    pub fn status(&self) -> PoolStatus {
        self.pool.status()
    }

    /// Starts `work`, for the connection `id`, on a pool thread and returns at once.
    pub fn start(&mut self, id: WorkId, work: Work) {
        let (done, wakeup) = (self.done_tx.clone(), Arc::clone(&self.wakeup));
        self.pool.execute(move || {
            // The pool survives a panicking job, but the client would wait for an answer that
            // never comes: it gets a 500 instead.
            let failed = catch_unwind(AssertUnwindSafe(work)).is_err();
            // The news first, then the wake-up: the loop reads the channel after the wake-up,
            // so it never finds the descriptor readable and the channel empty for good.
            let _ = done.send((id, failed));
            wakeup.notify();
        });
    }

    /// Turns readable when work is done (the loop watches it edge-triggered).
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wakeup.fd()
    }

    /// Moves the work that is over into `done`, with `true` for work that panicked. Called
    /// when [`PoolRunner::wake_fd`] was reported readable.
    pub fn finished(&mut self, done: &mut Vec<(WorkId, bool)>) {
        // The loop is told only of *new* readiness: drain first, then take. Work done in
        // between is then either taken now or makes the descriptor readable again.
        self.wakeup.drain();
        done.extend(self.done_rx.try_iter());
    }
}

pub use wakeup::Wakeup;

/// Linux: an `eventfd`, a counter in the kernel that is readable while it is not zero. One
/// descriptor, eight bytes, no buffer to fill.
#[cfg(any(target_os = "linux", target_os = "android"))]
mod wakeup {
    use std::io;
    use std::os::fd::{AsFd, BorrowedFd};

    use nix::sys::eventfd::{EfdFlags, EventFd};

    /// A descriptor that pool threads make readable and the loop drains.
    pub struct Wakeup(EventFd);

    impl Wakeup {
        pub fn new() -> io::Result<Wakeup> {
            let flags = EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK;
            Ok(Wakeup(EventFd::from_value_and_flags(0, flags)?))
        }

        /// Called from any thread: adds one to the counter, which wakes the loop.
        pub fn notify(&self) {
            // Fails only when the counter would overflow: it is readable then anyway.
            let _ = self.0.write(1);
        }

        /// Resets the counter to zero (EAGAIN when it already was).
        pub fn drain(&self) {
            let _ = self.0.read();
        }

        pub fn fd(&self) -> BorrowedFd<'_> {
            self.0.as_fd()
        }
    }
}

/// Elsewhere (macOS, the BSDs): a non-blocking pipe; a byte written is a wake-up.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod wakeup {
    use std::io;
    use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

    use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};

    /// A descriptor that pool threads make readable and the loop drains.
    pub struct Wakeup {
        read: OwnedFd,
        write: OwnedFd,
    }

    impl Wakeup {
        pub fn new() -> io::Result<Wakeup> {
            let (read, write) = nix::unistd::pipe()?;
            for end in [&read, &write] {
                fcntl(end, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
                fcntl(end, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
            }
            Ok(Wakeup { read, write })
        }

        /// Called from any thread: one byte, which wakes the loop.
        pub fn notify(&self) {
            // EAGAIN means the pipe is full, so it is readable already.
            let _ = nix::unistd::write(&self.write, b"!");
        }

        /// Reads until the pipe is empty.
        pub fn drain(&self) {
            let mut sink = [0u8; 64];
            while nix::unistd::read(&self.read, &mut sink).is_ok_and(|read| read > 0) {}
        }

        pub fn fd(&self) -> BorrowedFd<'_> {
            self.read.as_fd()
        }
    }
}
