//! Signals turned into file descriptors that a loop can wait on (the self-pipe trick).
//!
//! A signal handler may only do async-signal-safe things: it cannot lock, allocate or wake a
//! Condvar. Ours does two: it sets an atomic flag and `write`s one byte to a pipe. Loops then
//! `poll` the pipe's read end next to their sockets, so a signal wakes them like data would.
//!
//! Two pipes, for two kinds of signal:
//!
//! - **shutdown** (`SIGINT`, `SIGTERM`): the pipe is written and *never read*, so once a
//!   shutdown is requested its read end stays readable for everyone who polls it: the accept
//!   loop, every idle keep-alive connection on every thread. One signal wakes them all.
//! - **wake** (whatever else a step asks for: `SIGCHLD`, `SIGHUP`): each signal sets a bit
//!   and writes a byte; the one loop that owns it drains the pipe with [`Signals::take`].
//!
//! `SIGPIPE` needs nothing here, twice over. Writing to a connection the client has closed
//! fails with `EPIPE`, and by default also raises `SIGPIPE`, which kills the process: the
//! classic death of a C server whose client hung up. Rust programs start with `SIGPIPE`
//! ignored (forked children inherit that), and std's `TcpStream` sends with `MSG_NOSIGNAL` on
//! Linux (`SO_NOSIGPIPE` on macOS), so the write just returns the error and the connection
//! ends. `testkit::contract::client_resets_do_not_hurt_others` makes every step meet `EPIPE`.

use std::io;
use std::os::fd::{BorrowedFd, IntoRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal, sigaction};
use nix::unistd::ForkResult;

static SHUTDOWN_REQUESTED: AtomicBool = AtomicBool::new(false);
/// One bit per signal number that arrived since the last [`Signals::take`].
static PENDING: AtomicU64 = AtomicU64::new(0);
/// The signals we handle, as a bit set, so that `fork` can hold them back.
static INSTALLED: AtomicU64 = AtomicU64::new(0);
static SHUTDOWN_READ: AtomicI32 = AtomicI32::new(-1);
static SHUTDOWN_WRITE: AtomicI32 = AtomicI32::new(-1);
static WAKE_READ: AtomicI32 = AtomicI32::new(-1);
static WAKE_WRITE: AtomicI32 = AtomicI32::new(-1);

/// A handle on this process's signal pipes. It is `Copy`: every thread may hold one.
#[derive(Debug, Clone, Copy)]
pub struct Signals {
    _installed: (),
}

/// The wake signals that arrived since the last [`Signals::take`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending(u64);

impl Pending {
    pub fn contains(self, signal: Signal) -> bool {
        self.0 & bit(signal) != 0
    }
}

fn bit(signal: Signal) -> u64 {
    1 << (signal as i32 as u64 % 64)
}

extern "C" fn on_signal(signo: libc::c_int) {
    // The interrupted code may be about to read errno; `write` below could change it.
    let saved_errno = Errno::last_raw();
    let pipe = if signo == libc::SIGINT || signo == libc::SIGTERM {
        SHUTDOWN_REQUESTED.store(true, Ordering::SeqCst);
        &SHUTDOWN_WRITE
    } else {
        PENDING.fetch_or(1 << (signo as u64 % 64), Ordering::SeqCst);
        &WAKE_WRITE
    };
    let fd = pipe.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; `fd` is the non-blocking write end of our own
        // pipe and the buffer is a live one-byte static. A full pipe (EAGAIN) is fine: the
        // reader is already due to wake up.
        unsafe { libc::write(fd, b"!".as_ptr().cast(), 1) };
    }
    Errno::set_raw(saved_errno);
}

impl Signals {
    /// Installs the handlers: `SIGINT` and `SIGTERM` request a shutdown; each signal of
    /// `wake_on` is recorded and wakes [`Signals::wake_fd`]. Call once, at start-up.
    ///
    /// # Errors
    ///
    /// When the pipes cannot be created or a handler cannot be installed.
    pub fn install(wake_on: &[Signal]) -> io::Result<Signals> {
        make_pipes()?;
        let action = SigAction::new(
            SigHandler::Handler(on_signal),
            // SA_RESTART: calls in the middle of their work (a blocking write, a std read)
            // resume instead of failing with EINTR; `poll` is never restarted, so loops that
            // wait on our pipes still see the signal at once.
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        for &signal in [Signal::SIGINT, Signal::SIGTERM].iter().chain(wake_on) {
            INSTALLED.fetch_or(bit(signal), Ordering::SeqCst);
            // SAFETY: `on_signal` only touches atomics and calls write(2), all async-signal-safe.
            unsafe { sigaction(signal, &action) }.map_err(io::Error::from)?;
        }
        Ok(Signals { _installed: () })
    }

    /// Whether `SIGINT` or `SIGTERM` arrived (or [`Signals::request_shutdown`] was called).
    pub fn shutdown_requested(self) -> bool {
        SHUTDOWN_REQUESTED.load(Ordering::SeqCst)
    }

    /// Requests a shutdown from code, exactly as `SIGTERM` would.
    pub fn request_shutdown(self) {
        on_signal(libc::SIGTERM);
    }

    /// Readable once a shutdown has been requested, and from then on forever.
    pub fn shutdown_fd(self) -> BorrowedFd<'static> {
        borrow(&SHUTDOWN_READ)
    }

    /// Readable when a wake signal is pending; [`Signals::take`] drains it.
    pub fn wake_fd(self) -> BorrowedFd<'static> {
        borrow(&WAKE_READ)
    }

    /// The wake signals that arrived since the last call, draining the wake pipe.
    pub fn take(self) -> Pending {
        let mut sink = [0u8; 64];
        let fd = WAKE_READ.load(Ordering::SeqCst);
        // SAFETY: `fd` is our non-blocking pipe's read end and `sink` a writable buffer of the
        // length passed; the loop ends at EAGAIN (empty) or on any error.
        while unsafe { libc::read(fd, sink.as_mut_ptr().cast(), sink.len()) } > 0 {}
        Pending(PENDING.swap(0, Ordering::SeqCst))
    }

    /// `fork(2)`, done so that signals reach the right process.
    ///
    /// The child gets fresh pipes and a cleared shutdown flag, so that `SIGTERM` sent to one
    /// child stops that child only, not its parent and siblings that share the inherited pipes.
    /// Our signals are blocked across the call, so one arriving in between waits until the
    /// child's pipes exist instead of being lost in the parent's.
    ///
    /// # Safety
    ///
    /// As for `fork(2)`: the caller must be single-threaded, or the child must restrict itself
    /// to async-signal-safe calls until it execs or exits. A forked child has only the thread
    /// that called fork; a lock another thread held stays locked in the child forever.
    ///
    /// # Errors
    ///
    /// `fork` failing (`EAGAIN` at the process limit, `ENOMEM`).
    pub unsafe fn fork(self) -> nix::Result<ForkResult> {
        let mut ours = SigSet::empty();
        let installed = INSTALLED.load(Ordering::SeqCst);
        for signal in Signal::iterator().filter(|s| installed & bit(*s) != 0) {
            ours.add(signal);
        }
        let mut previous = SigSet::empty();
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&ours), Some(&mut previous))?;
        // SAFETY: the caller guarantees what fork requires (see `# Safety`).
        let result = unsafe { nix::unistd::fork() };
        if let Ok(ForkResult::Child) = result {
            SHUTDOWN_REQUESTED.store(false, Ordering::SeqCst);
            PENDING.store(0, Ordering::SeqCst);
            // Without pipes of its own the child could not be told to stop; give up on it.
            if make_pipes().is_err() {
                crate::process::exit_child(1);
            }
        }
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&previous), None)?;
        result
    }
}

/// Creates both pipes and publishes their fds, closing any pair they replace (a forked child
/// replaces its parent's).
fn make_pipes() -> io::Result<()> {
    for (read, write) in [(&SHUTDOWN_READ, &SHUTDOWN_WRITE), (&WAKE_READ, &WAKE_WRITE)] {
        // pipe() and fcntl rather than pipe2(), which macOS lacks. Nothing here runs between
        // the two calls that could exec and leak the descriptors.
        let (new_read, new_write) = nix::unistd::pipe().map_err(io::Error::from)?;
        for end in [&new_read, &new_write] {
            fcntl(end, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(io::Error::from)?;
            fcntl(end, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(io::Error::from)?;
        }
        for (slot, fd) in [
            (read, new_read.into_raw_fd()),
            (write, new_write.into_raw_fd()),
        ] {
            let old = slot.swap(fd, Ordering::SeqCst);
            if old >= 0 {
                // SAFETY: `old` was a pipe end we created and published; it has just been
                // replaced, so nothing borrows it from now on (see `borrow`).
                unsafe { libc::close(old) };
            }
        }
    }
    Ok(())
}

fn borrow(slot: &AtomicI32) -> BorrowedFd<'static> {
    let fd: RawFd = slot.load(Ordering::SeqCst);
    // SAFETY: the pipes are created by `Signals::install` before any `Signals` value exists
    // and are only replaced in a freshly forked child, before its code borrows them again.
    // An fd borrowed here is therefore open for the life of the process.
    unsafe { BorrowedFd::borrow_raw(fd) }
}
