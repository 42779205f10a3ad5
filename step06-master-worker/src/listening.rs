//! Where the workers' connections come from: one listening socket they all share, or one each.
//!
//! - **shared** (the default): the master binds the port once, before it forks. Every worker
//!   inherits that socket and accepts from it, so there is one queue of waiting connections
//!   (the backlog) for all of them. A worker that dies takes only the connections it had
//!   already accepted; the ones still queued wait for the others. The cost: every worker waits
//!   on the same socket, so a new connection would wake them all (the *thundering herd*);
//!   the workers register it with `EPOLLEXCLUSIVE` so that the kernel wakes one, and only
//!   while they can accept ([`ListenerWatch`]).
//! - **reuseport**: every worker binds a socket of its own to the same port with
//!   `SO_REUSEPORT`, and the kernel spreads new connections over the sockets by a hash of the
//!   client's address and port. No shared queue and no herd; but each socket has its own
//!   backlog, and when a worker dies or is retired its socket closes with the connections
//!   queued in it, which are reset. (Linux 5.14's `net.ipv4.tcp_migrate_req = 1` moves them
//!   to another socket of the group instead.)
//!
//! Shared is the default because it loses nothing when a worker dies or a reload retires
//! the old workers, which is what a master process is for.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};

use common::listen::{ListenOptions, bind_listener, bind_unlistened, inherited, start_listening};
use common::log;
use step05_epoll_kqueue::{Poller, Token};

/// The main listening socket's name in [`common::listen::INHERITED_VARIABLE`].
pub const MAIN_LISTENER: &str = "main";

/// How the workers get their listening socket (`--listen`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListenMode {
    /// One socket, bound by the master before it forks, inherited by every worker.
    Shared,
    /// A socket per worker, each bound with `SO_REUSEPORT` to the same port.
    Reuseport,
}

impl fmt::Display for ListenMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ListenMode::Shared => "shared",
            ListenMode::Reuseport => "reuseport",
        })
    }
}

/// The master's side of the listening sockets.
pub struct Listening {
    mode: ListenMode,
    /// The address actually bound: with `--port 0`, the port the kernel picked, which every
    /// reuseport worker must bind too.
    address: SocketAddr,
    /// Shared: the socket every worker inherits; the master keeps it open (without ever
    /// accepting) for the workers it will fork later. Reuseport: the first socket, bound by the
    /// master to learn the port and to fail at start-up rather than in a worker; the first
    /// worker inherits it, and the master then closes its copy.
    socket: Option<TcpListener>,
}

impl Listening {
    /// Binds `host:port` for `mode`.
    ///
    /// # Errors
    ///
    /// The contract's one line, `cannot listen on ADDR: why`.
    pub fn open(host: &str, port: u16, mode: ListenMode) -> Result<Listening, String> {
        let options = ListenOptions {
            reuse_port: mode == ListenMode::Reuseport,
            nonblocking: true,
        };
        // A master started by `SIGUSR2` (see [`crate::upgrade`]) adopts the socket its
        // predecessor hands over instead of binding: the port never closes. (In reuseport mode
        // it is a socket of the group, bound for it by the old master.)
        if let Some(socket) = inherited(MAIN_LISTENER, options) {
            let socket = socket?;
            let address = socket
                .local_addr()
                .map_err(|error| format!("cannot listen on {host}:{port}: {error}"))?;
            return Ok(Listening {
                mode,
                address,
                socket: Some(socket),
            });
        }
        if mode == ListenMode::Reuseport && port != 0 {
            // SO_REUSEPORT lets any process of the same user bind a port that is in use: a
            // second copy of the server would silently share this one's port instead of failing.
            // A plain bind first tells us whether anyone listens there already. (Port 0 needs no
            // check: the kernel picks a port nobody uses, reuseport or not.)
            drop(bind_listener(host, port, ListenOptions::default())?);
        }
        let socket = bind_listener(host, port, options)?;
        let address = socket
            .local_addr()
            .map_err(|error| format!("cannot listen on {host}:{port}: {error}"))?;
        Ok(Listening {
            mode,
            address,
            socket: Some(socket),
        })
    }

    pub fn mode(&self) -> ListenMode {
        self.mode
    }

    /// The socket bound at start-up, for the `listening on` line; `None` once a reuseport master
    /// has handed it over.
    pub fn first_socket(&self) -> Option<&TcpListener> {
        self.socket.as_ref()
    }

    /// In the master, after it forked a worker: a reuseport master must not keep a socket of
    /// the group open, because the kernel would queue connections in it that nobody accepts.
    pub(crate) fn forked_a_worker(&mut self) {
        if self.mode == ListenMode::Reuseport {
            self.socket = None;
        }
    }

    /// In a worker just forked: its listening socket, inherited or bound now.
    ///
    /// # Errors
    ///
    /// When a reuseport worker cannot bind its socket, or make the inherited one listen.
    pub(crate) fn for_worker(&mut self) -> Result<TcpListener, String> {
        match (self.socket.take(), self.mode) {
            (Some(socket), ListenMode::Reuseport) => {
                // A successor's first worker: its socket was bound for it, and listens only now
                // that a worker will accept from it (see `for_successor`). Otherwise it listens
                // already, and this changes nothing.
                start_listening(&socket).map_err(|errno| {
                    format!("cannot listen on {}: {}", self.address, errno.desc())
                })?;
                Ok(socket)
            }
            (Some(socket), ListenMode::Shared) => Ok(socket),
            (None, ListenMode::Reuseport) => {
                let options = ListenOptions {
                    reuse_port: true,
                    nonblocking: true,
                };
                bind_listener(&self.address.ip().to_string(), self.address.port(), options)
            }
            // The master keeps the shared socket for as long as it forks workers.
            (None, ListenMode::Shared) => Err("the shared listening socket is gone".into()),
        }
    }

    /// In the child that is about to exec a new master (see [`crate::upgrade`]): the socket to
    /// hand over. Shared: the socket itself. Reuseport: a fresh socket of the group, bound but
    /// not listening, which its first worker makes listen. A listening one would get its share
    /// of new connections from the moment it is bound; if the new binary failed or hung, they
    /// would wait there, never accepted, and then be reset.
    ///
    /// # Errors
    ///
    /// When the reuseport socket cannot be bound.
    pub(crate) fn for_successor(&mut self) -> Result<TcpListener, String> {
        match self.mode {
            ListenMode::Shared => self.for_worker(),
            ListenMode::Reuseport => {
                let options = ListenOptions {
                    reuse_port: true,
                    nonblocking: true,
                };
                bind_unlistened(&self.address.ip().to_string(), self.address.port(), options)
            }
        }
    }
}

/// How a worker's event loop watches its listening socket (through the loop's hook, see
/// [`crate::worker`]); step 05's loop, alone with its socket, registers it once and for all.
///
/// - **One worker wakes, not all.** On Linux the socket is registered with `EPOLLEXCLUSIVE`,
///   so a new connection wakes one of the pollers waiting on it. kqueue has no such flag:
///   there every worker is told.
/// - **Only while it can accept.** A worker at its connection limit, or pausing after
///   `EMFILE`, takes the socket out of its poller until it can again, as nginx disables its
///   accept events: the kernel gives each new connection's wake-up to *one* waiting loop, and
///   a loop that cannot accept would take wake-ups it cannot use while the other loops sit
///   idle and the client waits.
/// - **Out before it closes.** A worker that shuts down deregisters the socket first: it stays
///   open in the other workers, and the kernel watches the open socket, not our descriptor, so
///   it would go on reporting it here, taking the wake-up from a worker that would accept.
#[derive(Debug, Default)]
pub struct ListenerWatch {
    /// The token the loop gave the socket; `None` until it is watched.
    token: Option<Token>,
    /// The socket is in the poller.
    watched: bool,
}

impl ListenerWatch {
    /// Starts watching `listener`, with `token`.
    ///
    /// # Errors
    ///
    /// When the poller refuses it.
    pub fn watch(
        &mut self,
        poller: &Poller,
        listener: &TcpListener,
        token: Token,
    ) -> io::Result<()> {
        watch_exclusively(poller, listener, token)?;
        (self.token, self.watched) = (Some(token), true);
        Ok(())
    }

    /// Watches the socket while the loop `can` accept, and not otherwise. `true` when it is
    /// watched again: connections may have queued meanwhile, unreported.
    pub fn can_accept(&mut self, poller: &Poller, listener: &TcpListener, can: bool) -> bool {
        let Some(token) = self.token else {
            return false;
        };
        if can == self.watched {
            return false;
        }
        let changed = if can {
            watch_exclusively(poller, listener, token)
        } else {
            poller.deregister(listener)
        };
        match changed {
            Ok(()) => self.watched = can,
            Err(error) => log::error(format_args!("cannot change the listener's watch: {error}")),
        }
        can
    }
}

/// Registers `listener` in `poller` as step 05's epoll backend registers a socket
/// (edge-triggered, the token as the event's data word), plus `EPOLLEXCLUSIVE` (Linux 4.5+),
/// which step 05's `Interest` leaves out: a socket of one process's own needs no such flag.
/// Only IN, OUT, ET and WAKEUP may go with it, so no `EPOLLRDHUP`; a listener needs none.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn watch_exclusively(poller: &Poller, listener: &TcpListener, token: Token) -> io::Result<()> {
    use std::os::fd::AsFd;

    use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};

    // A second descriptor of the poller's epoll instance: `epoll_ctl` on it changes the same
    // interest list. It is closed on return; the instance lives on in the poller.
    let epoll = Epoll(poller.as_fd().try_clone_to_owned()?);
    let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLET | EpollFlags::EPOLLEXCLUSIVE;
    Ok(epoll.add(listener, EpollEvent::new(flags, token.0 as u64))?)
}

/// kqueue has no counterpart of `EPOLLEXCLUSIVE`: every waiting kqueue is told.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn watch_exclusively(poller: &Poller, listener: &TcpListener, token: Token) -> io::Result<()> {
    poller.register(listener, token, step05_epoll_kqueue::Interest::READABLE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;
    use std::time::Duration;

    use step05_epoll_kqueue::Event;

    fn wait(poller: &mut Poller, ms: u64) -> Vec<Event> {
        let mut events = Vec::new();
        poller
            .wait(&mut events, Some(Duration::from_millis(ms)))
            .unwrap();
        events
    }

    #[test]
    fn the_shared_listener_is_watched_only_while_the_loop_can_accept() {
        let mut poller = Poller::new().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let mut watch = ListenerWatch::default();
        watch.watch(&poller, &listener, Token(9)).unwrap();
        // Registered in the poller's own epoll instance, with its token.
        let _first = TcpStream::connect(address).unwrap();
        let events = wait(&mut poller, 1000);
        assert_eq!(
            events.first().map(|e| (e.token, e.readable)),
            Some((Token(9), true)),
            "{events:?}"
        );
        assert!(!watch.can_accept(&poller, &listener, true), "no change");

        // Full: out of the poller, so a new client wakes nobody here.
        assert!(!watch.can_accept(&poller, &listener, false));
        let _second = TcpStream::connect(address).unwrap();
        assert!(wait(&mut poller, 100).is_empty());

        // Back: watched again, and the loop is told to accept what queued meanwhile.
        assert!(watch.can_accept(&poller, &listener, true));
        let _third = TcpStream::connect(address).unwrap();
        assert!(wait(&mut poller, 1000).iter().any(|e| e.token == Token(9)));
    }
}
