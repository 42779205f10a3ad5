//! Readiness notification: which of many sockets can be read or written *now*.
//!
//! The blocking steps asked one socket at a time ("read, and wait until there is something").
//! An event loop asks the kernel once for all of them: register each socket with a token, then
//! [`Poller::wait`] returns the tokens of the sockets that became ready. Linux answers with
//! `epoll`, macOS and the BSDs with `kqueue`; both keep the interest list inside the kernel, so
//! a wait costs in proportion to the sockets that are ready, not to the sockets registered
//! (which is what `select` and `poll` cost: the whole list is copied in and scanned on every
//! call).
//!
//! # Edge-triggered, and what that asks of the caller
//!
//! Every registration here is *edge-triggered* (`EPOLLET`, kqueue's `EV_CLEAR`): the kernel
//! reports a socket when it *becomes* readable or writable, once, not on every wait while it
//! stays so. We chose it because a socket is registered once, for reading and writing, and never
//! touched again: no `epoll_ctl` per request to turn write interest on and off, and a socket we
//! deliberately leave unread (a client whose answers it does not read, a request waiting on a
//! timer) does not wake the loop again and again. The price is a rule the rest of the step
//! follows: an event is a hint that is *not repeated*, so the connection remembers "readable" and
//! "writable" itself and clears a flag only when the socket has nothing more for it now. A `read` that
//! returns fewer bytes than it had room for emptied the receive queue (a TCP read takes all that
//! is queued, up to the room given), and so did one that fails with `EWOULDBLOCK`; either clears
//! "readable", unless the peer also closed its side ([`Event::read_closed`]: then it reads on to
//! the 0). Writes go on until the answer is out or a `write` fails with `EWOULDBLOCK` (the send
//! buffer is full), which clears "writable". Bytes or room that come later make a new edge,
//! reported again. Stop before that, and no new event will come to remind you.
//!
//! The platform code is fenced in `epoll.rs` (Linux) and `kqueue.rs` (macOS, the BSDs) behind
//! the small `Backend` trait; the rest of the step only sees [`Poller`], [`Token`],
//! [`Interest`] and [`Event`].

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

#[cfg(any(target_os = "linux", target_os = "android"))]
mod epoll;
#[cfg(any(target_os = "linux", target_os = "android"))]
use epoll::Epoll as Platform;

#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
))]
mod kqueue;
#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
))]
use kqueue::Kqueue as Platform;

/// How many events one [`Poller::wait`] returns at most; more stay queued for the next wait.
pub const EVENTS_PER_WAIT: usize = 1024;

/// Names a registered descriptor in the events that [`Poller::wait`] returns: the word of ours
/// that epoll and kqueue hand back with an event. The event loop uses a connection's slot
/// number, and a few reserved values for its own descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub usize);

/// What to be told about a descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interest {
    readable: bool,
    writable: bool,
}

impl Interest {
    /// Tell me when it can be read (or accepted from, for a listening socket).
    pub const READABLE: Interest = Interest {
        readable: true,
        writable: false,
    };

    /// Tell me when it can be read and when it can be written.
    pub const READABLE_WRITABLE: Interest = Interest {
        readable: true,
        writable: true,
    };

    pub const fn is_readable(self) -> bool {
        self.readable
    }

    pub const fn is_writable(self) -> bool {
        self.writable
    }
}

/// One descriptor became ready. Errors and hang-ups are reported as readable and writable: the
/// next `read` or `write` on it tells what happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub token: Token,
    pub readable: bool,
    pub writable: bool,
    /// The peer has closed its sending side (`EPOLLRDHUP`, kqueue's `EV_EOF`): after the bytes
    /// already queued, a read will return 0. A connection that stops reading at a short read
    /// (see `crate::buffers`) needs this to learn of a close that came with the last bytes.
    pub read_closed: bool,
}

/// What each platform provides. Only one implementation is compiled on a given system. Its
/// descriptor is the epoll or kqueue instance.
trait Backend: AsFd + Sized {
    fn new() -> io::Result<Self>;
    fn register(&self, fd: BorrowedFd<'_>, token: Token, interest: Interest) -> io::Result<()>;
    fn deregister(&self, fd: BorrowedFd<'_>) -> io::Result<()>;
    /// Waits for events and appends them to `events`; a signal interrupting the wait is not an
    /// error, just a wait that returns nothing.
    fn wait(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()>;
}

/// The kernel's readiness notification for this process: `epoll` on Linux, `kqueue` on macOS
/// and the BSDs. Edge-triggered (see the module documentation).
pub struct Poller {
    backend: Platform,
}

impl Poller {
    /// # Errors
    ///
    /// When the kernel refuses a new epoll or kqueue instance (out of descriptors or memory).
    pub fn new() -> io::Result<Poller> {
        Ok(Poller {
            backend: Platform::new()?,
        })
    }

    /// Starts watching `fd`; its events carry `token`.
    ///
    /// Closing a socket that is the only descriptor of its open file removes it from the
    /// poller. A descriptor shared with another process (a listening socket inherited across
    /// `fork`) must be [deregistered](Poller::deregister) before it is closed, because the
    /// kernel watches the open file, which lives on in the other process.
    ///
    /// # Errors
    ///
    /// When `fd` is already registered, is not pollable, or the kernel is out of memory.
    pub fn register(&self, fd: &impl AsFd, token: Token, interest: Interest) -> io::Result<()> {
        self.backend.register(fd.as_fd(), token, interest)
    }

    /// Stops watching `fd`.
    ///
    /// # Errors
    ///
    /// When `fd` is not registered.
    pub fn deregister(&self, fd: &impl AsFd) -> io::Result<()> {
        self.backend.deregister(fd.as_fd())
    }

    /// Waits until at least one registered descriptor is ready or `timeout` passes (`None`:
    /// no limit), and replaces the contents of `events` with what happened (at most
    /// [`EVENTS_PER_WAIT`]). An empty `events` means the timeout passed or a signal arrived.
    ///
    /// # Errors
    ///
    /// What the kernel reports other than `EINTR`; none of them is expected in a working loop.
    pub fn wait(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        events.clear();
        self.backend.wait(events, timeout)
    }
}

/// The epoll or kqueue instance itself, for a program that needs a flag this interface leaves
/// out (step 06: `EPOLLEXCLUSIVE`, for a listener several processes share).
impl AsFd for Poller {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.backend.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (client, server)
    }

    fn wait(poller: &mut Poller, ms: u64) -> Vec<Event> {
        let mut events = Vec::new();
        poller
            .wait(&mut events, Some(Duration::from_millis(ms)))
            .unwrap();
        events
    }

    #[test]
    fn a_timeout_returns_no_events() {
        let mut poller = Poller::new().unwrap();
        let started = std::time::Instant::now();
        assert!(wait(&mut poller, 50).is_empty());
        assert!(started.elapsed() >= Duration::from_millis(45));
    }

    #[test]
    fn reports_readiness_once_per_edge() {
        let mut poller = Poller::new().unwrap();
        let (mut client, mut server) = pair();
        poller
            .register(&server, Token(7), Interest::READABLE_WRITABLE)
            .unwrap();
        // A fresh socket can be written at once.
        let events = wait(&mut poller, 1000);
        assert!(events.iter().any(|e| e.token == Token(7) && e.writable));

        client.write_all(b"hello").unwrap();
        let events = wait(&mut poller, 1000);
        assert!(events.iter().any(|e| e.token == Token(7) && e.readable));
        // Edge-triggered: the bytes are still unread, but nothing new happened.
        assert!(wait(&mut poller, 50).is_empty());

        let mut buf = [0u8; 16];
        assert_eq!(server.read(&mut buf).unwrap(), 5);
        client.write_all(b"again").unwrap();
        assert!(wait(&mut poller, 1000).iter().any(|e| e.readable));
    }

    #[test]
    fn deregister_and_register_change_what_is_reported() {
        let mut poller = Poller::new().unwrap();
        let (mut client, server) = pair();
        poller
            .register(&server, Token(1), Interest::READABLE)
            .unwrap();
        client.write_all(b"x").unwrap();
        assert!(!wait(&mut poller, 1000).is_empty());

        poller.deregister(&server).unwrap();
        client.write_all(b"y").unwrap();
        assert!(wait(&mut poller, 50).is_empty());

        poller
            .register(&server, Token(3), Interest::READABLE_WRITABLE)
            .unwrap();
        let events = wait(&mut poller, 1000);
        assert!(events.iter().all(|e| e.token == Token(3)), "{events:?}");
        assert!(events.iter().any(|e| e.writable), "{events:?}");
    }
}
