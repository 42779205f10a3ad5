//! The macOS and BSD backend: `kqueue`.
//!
//! A kqueue watches *filters*: reading and writing are two separate ones (`EVFILT_READ`,
//! `EVFILT_WRITE`) on the same descriptor, each added, changed or deleted by a `kevent` call
//! that carries a word of ours (the token) back with its events. One readiness of a socket may
//! therefore come back as two events, one per filter; the event loop handles each alike.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::event::{EvFlags, EventFilter, FilterFlag, KEvent, Kqueue as Instance};
use nix::sys::time::TimeSpec;

use super::{Backend, EVENTS_PER_WAIT, Event, Interest, Token};

pub(super) struct Kqueue {
    instance: Instance,
    /// Where `kevent` writes; allocated once.
    buffer: Vec<KEvent>,
}

/// One change to one filter of `fd`.
fn change(fd: BorrowedFd<'_>, filter: EventFilter, flags: EvFlags, token: Token) -> KEvent {
    KEvent::new(
        fd.as_raw_fd() as usize,
        filter,
        flags,
        FilterFlag::empty(),
        0,
        token.0 as isize,
    )
}

/// Adds (or updates) both filters: the wanted ones enabled, the others added but disabled, so
/// that [`Kqueue::modify`] and [`Kqueue::deregister`] always find both.
fn add_both(fd: BorrowedFd<'_>, token: Token, interest: Interest) -> [KEvent; 2] {
    // EV_CLEAR makes a filter edge-triggered: its state is reset once it has been reported.
    let flags = |wanted: bool| {
        let on_off = if wanted {
            EvFlags::EV_ENABLE
        } else {
            EvFlags::EV_DISABLE
        };
        EvFlags::EV_ADD | EvFlags::EV_CLEAR | on_off
    };
    [
        change(
            fd,
            EventFilter::EVFILT_READ,
            flags(interest.is_readable()),
            token,
        ),
        change(
            fd,
            EventFilter::EVFILT_WRITE,
            flags(interest.is_writable()),
            token,
        ),
    ]
}

impl Kqueue {
    fn apply(&self, changes: &[KEvent]) -> io::Result<()> {
        // No room for events: kevent applies the changes and returns the first error, if any.
        self.instance.kevent(changes, &mut [], None)?;
        Ok(())
    }
}

impl AsFd for Kqueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.instance.as_fd()
    }
}

impl Backend for Kqueue {
    fn new() -> io::Result<Self> {
        let instance = Instance::new()?;
        // A forked child does not inherit a kqueue, but a program we exec would keep the
        // descriptor open; macOS has no `kqueue` flag for that, so set it afterwards.
        fcntl(&instance, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        let empty = KEvent::new(
            0,
            EventFilter::EVFILT_READ,
            EvFlags::empty(),
            FilterFlag::empty(),
            0,
            0,
        );
        Ok(Kqueue {
            instance,
            buffer: vec![empty; EVENTS_PER_WAIT],
        })
    }

    fn register(&self, fd: BorrowedFd<'_>, token: Token, interest: Interest) -> io::Result<()> {
        self.apply(&add_both(fd, token, interest))
    }

    fn deregister(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let delete = |filter| change(fd, filter, EvFlags::EV_DELETE, Token(0));
        self.apply(&[
            delete(EventFilter::EVFILT_READ),
            delete(EventFilter::EVFILT_WRITE),
        ])
    }

    fn wait(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        let timeout = timeout.map(|timeout| *TimeSpec::from_duration(timeout).as_ref());
        let ready = match self.instance.kevent(&[], &mut self.buffer, timeout) {
            Ok(ready) => ready,
            Err(Errno::EINTR) => return Ok(()),
            Err(errno) => return Err(errno.into()),
        };
        events.extend(self.buffer[..ready].iter().map(|raw| {
            // EV_EOF comes with the filter it concerns: on the read filter, the peer closed its
            // sending side. EV_ERROR may concern either direction; report both.
            let error = raw.flags().contains(EvFlags::EV_ERROR);
            let filter = raw.filter().ok();
            let read = filter == Some(EventFilter::EVFILT_READ);
            Event {
                token: Token(raw.udata() as usize),
                readable: error || read,
                writable: error || filter == Some(EventFilter::EVFILT_WRITE),
                read_closed: error || (read && raw.flags().contains(EvFlags::EV_EOF)),
            }
        }));
        Ok(())
    }
}
