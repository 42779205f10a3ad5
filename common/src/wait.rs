//! Waiting until one of a few file descriptors is readable, or a deadline passes.
//!
//! The blocking steps wait this way instead of with socket timeouts, because a wait must also
//! end when a shutdown is requested: the shutdown pipe (see [`crate::signals`]) is simply one
//! more descriptor in the set.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// Which descriptors of the set passed to [`wait_readable`] are ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready(u32);

impl Ready {
    /// Whether `fds[index]` is readable (or at end of file, or in error: reading will tell).
    pub fn is_ready(self, index: usize) -> bool {
        self.0 & (1 << index) != 0
    }

    /// Whether the deadline passed with nothing ready.
    pub fn timed_out(self) -> bool {
        self.0 == 0
    }
}

/// Waits until at least one of `fds` (at most 32) is readable, or `deadline` passes
/// (`None`: no deadline). A signal interrupting the wait is not an error: the wait resumes,
/// and a signal that matters has written to a pipe in `fds`.
///
/// # Errors
///
/// What `poll(2)` reports other than `EINTR`: an invalid descriptor, no memory.
pub fn wait_readable(fds: &[BorrowedFd<'_>], deadline: Option<Instant>) -> io::Result<Ready> {
    debug_assert!(fds.len() <= 32);
    let mut set: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
        .collect();
    loop {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                // Round up, so that we never wake a hair early and spin on a zero timeout.
                let millis = left.as_micros().div_ceil(1000);
                PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX)
            }
        };
        match poll(&mut set, timeout) {
            Ok(0) if deadline.is_some_and(|d| Instant::now() >= d) => return Ok(Ready(0)),
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {
                let ready = set.iter().enumerate().fold(0, |bits, (index, fd)| {
                    let readable = fd.revents().is_some_and(|events| !events.is_empty());
                    bits | (u32::from(readable) << index)
                });
                return Ok(Ready(ready));
            }
            Err(errno) => return Err(errno.into()),
        }
    }
}
