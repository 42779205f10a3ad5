//! Workers tell the master when they are ready to serve.
//!
//! A reload starts new workers and stops the old ones, and the order matters: stop the old
//! ones first and, for a moment, nobody serves the port. In reuseport mode it is worse: a new
//! worker's socket exists only once the worker has bound it, and a connection that arrives
//! while only the old sockets exist queues in one of them, which is about to close. So the
//! master retires the old workers only when every new one has said "ready", over this pipe.
//!
//! "Ready" means *able to accept*: the worker's body says so itself ([`Ready::announce`]), once
//! its event loop (or runtime) exists, not the master right after the fork. A new generation
//! whose workers fail while starting up never says it, and the old one goes on serving.
//!
//! A message is the worker's pid, four bytes in one `write`. The kernel never splits or
//! interleaves writes of up to `PIPE_BUF` bytes (at least 512) on a pipe, so messages from
//! several workers arrive whole, one after another, however they race.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::unistd::Pid;

const MESSAGE: usize = size_of::<i32>();

/// The master reads; every worker writes once.
pub struct ReadyPipe {
    read: OwnedFd,
    write: Option<OwnedFd>,
}

impl ReadyPipe {
    /// # Errors
    ///
    /// When the pipe cannot be created (out of descriptors).
    pub fn new() -> io::Result<ReadyPipe> {
        let (read, write) = nix::unistd::pipe()?;
        for end in [&read, &write] {
            fcntl(end, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        }
        // The master drains it until EAGAIN, in its loop; it must never block there.
        fcntl(&read, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        Ok(ReadyPipe {
            read,
            write: Some(write),
        })
    }

    /// Readable when a worker has said it is ready.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// In a worker, right after the fork: the handle its body announces with.
    pub fn for_worker(&mut self) -> Ready {
        Ready {
            write: self.write.take(),
        }
    }

    /// In the master: the workers that said they are ready since the last call.
    pub fn take_ready(&self) -> Vec<Pid> {
        let mut pids = Vec::new();
        // A multiple of the message size: every read returns whole messages (see above).
        let mut buffer = [0u8; 64 * MESSAGE];
        loop {
            match nix::unistd::read(&self.read, &mut buffer) {
                Ok(0) => return pids,
                Ok(read) => pids.extend(buffer[..read].chunks_exact(MESSAGE).map(|message| {
                    let mut pid = [0u8; MESSAGE];
                    pid.copy_from_slice(message);
                    Pid::from_raw(i32::from_ne_bytes(pid))
                })),
                Err(Errno::EINTR) => {}
                // EAGAIN: drained.
                Err(_) => return pids,
            }
        }
    }
}

/// A worker's way to say "this process can accept now", once. Dropped without announcing (a
/// start-up that failed), it says nothing.
pub struct Ready {
    write: Option<OwnedFd>,
}

impl Ready {
    /// Tells the master that this worker is ready. Once; the pipe's write end closes after.
    pub fn announce(mut self) {
        if let Some(write) = self.write.take() {
            let pid = std::process::id() as i32;
            // A failed write only delays the retirement of an older generation until the
            // master's next reload; nothing to do about it here.
            let _ = nix::unistd::write(&write, &pid.to_ne_bytes());
        }
    }
}
