//! The Linux backend: `epoll`.
//!
//! `epoll_create1` makes an interest list inside the kernel; `epoll_ctl` adds, changes or
//! removes one descriptor, with a 64-bit word of ours (the token) that comes back with its
//! events; `epoll_wait` returns only the descriptors that are ready.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll as Instance, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use super::{Backend, EVENTS_PER_WAIT, Event, Interest, Token};

pub(super) struct Epoll {
    instance: Instance,
    /// Where `epoll_wait` writes; allocated once.
    buffer: Vec<EpollEvent>,
}

/// The epoll flags for `interest`, always edge-triggered (`EPOLLET`: see the module
/// documentation of [`super`]).
fn flags(interest: Interest) -> EpollFlags {
    let mut flags = EpollFlags::EPOLLET;
    if interest.is_readable() {
        // EPOLLRDHUP: tell us when the peer closes its side, even when the close came with data.
        flags |= EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
    }
    if interest.is_writable() {
        flags |= EpollFlags::EPOLLOUT;
    }
    flags
}

impl AsFd for Epoll {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.instance.0.as_fd()
    }
}

impl Backend for Epoll {
    fn new() -> io::Result<Self> {
        // CLOEXEC: a program this process might exec must not inherit our interest list.
        let instance = Instance::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        Ok(Epoll {
            instance,
            buffer: vec![EpollEvent::empty(); EVENTS_PER_WAIT],
        })
    }

    fn register(&self, fd: BorrowedFd<'_>, token: Token, interest: Interest) -> io::Result<()> {
        let event = EpollEvent::new(flags(interest), token.0 as u64);
        Ok(self.instance.add(fd, event)?)
    }

    fn deregister(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        Ok(self.instance.delete(fd)?)
    }

    fn wait(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        let timeout = match timeout {
            None => EpollTimeout::NONE,
            // epoll counts in whole milliseconds. Round up: rounding down would wake us a hair
            // before the deadline, find nothing due, and wait again with a zero timeout.
            Some(timeout) => EpollTimeout::try_from(timeout.as_micros().div_ceil(1000))
                .unwrap_or(EpollTimeout::MAX),
        };
        let ready = match self.instance.wait(&mut self.buffer, timeout) {
            Ok(ready) => ready,
            Err(Errno::EINTR) => return Ok(()),
            Err(errno) => return Err(errno.into()),
        };
        let hangup = EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR;
        events.extend(self.buffer[..ready].iter().map(|raw| {
            let flags = raw.events();
            Event {
                token: Token(raw.data() as usize),
                readable: flags.intersects(EpollFlags::EPOLLIN | hangup),
                writable: flags.intersects(EpollFlags::EPOLLOUT | hangup),
                read_closed: flags.intersects(EpollFlags::EPOLLRDHUP | hangup),
            }
        }));
        Ok(())
    }
}
