//! A worker must not outlive its master.
//!
//! If the master dies (a crash, `kill -9`), nobody is left to restart, reload or stop the
//! workers: they would serve on as orphans, and a new master could not even bind the port,
//! which they still hold. So every worker watches a *lifeline*: a pipe whose write end only
//! the master keeps open. Nothing is ever written to it. When the master's process ends, for
//! whatever reason, the kernel closes that end, and the read end reports end of file in every
//! worker at once. A small thread in each worker waits for that moment and asks the worker to
//! shut down gracefully, exactly as `SIGTERM` would.
//!
//! Linux offers a one-call alternative, `prctl(PR_SET_PDEATHSIG, SIGTERM)`: the kernel signals a
//! child when its parent dies. It is Linux-only, and it fires when the parent *thread* that
//! forked ends, not the process. The pipe works the same on every Unix.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::thread;

use common::wait::wait_readable;
use common::{Signals, log};
use nix::fcntl::{FcntlArg, FdFlag, fcntl};

/// Both ends of the lifeline: the master holds them; each worker keeps only the read end.
pub struct Lifeline {
    read: Option<OwnedFd>,
    write: Option<OwnedFd>,
}

impl Lifeline {
    /// # Errors
    ///
    /// When the pipe cannot be created (out of descriptors).
    pub fn new() -> io::Result<Lifeline> {
        let (read, write) = nix::unistd::pipe()?;
        for end in [&read, &write] {
            fcntl(end, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        }
        Ok(Lifeline {
            read: Some(read),
            write: Some(write),
        })
    }

    // EXERCISE: lifeline - let go of the write end; a thread waits for end of file, then asks to stop
    /// In a worker just forked: lets go of the master's end, and starts a thread that requests
    /// this worker's graceful shutdown once the master is gone.
    ///
    /// # Errors
    ///
    /// When the watching thread cannot be started.
    pub fn watch(&mut self, signals: Signals) -> io::Result<()> {
        // The worker inherited a copy of the write end. End of file comes only when *every* copy
        // is closed, so a worker keeping its own would keep its lifeline alive forever.
        drop(self.write.take());
        let read = self
            .read
            .take()
            .ok_or_else(|| io::Error::other("the lifeline is already watched"))?;
        thread::Builder::new()
            .name("lifeline".into())
            .spawn(move || {
                match wait_readable(&[read.as_fd()], None) {
                    Ok(_) => log::error(format_args!(
                        "the master is gone: finishing the requests in flight, then exiting"
                    )),
                    // We cannot tell whether the master lives; a worker it does not know about
                    // is worse than one it restarts.
                    Err(error) => {
                        log::error(format_args!("cannot watch the master ({error}): stopping"))
                    }
                }
                signals.request_shutdown();
            })?;
        Ok(())
    }
    // EXERCISE END
}
