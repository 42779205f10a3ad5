//! Where the workers' connections come from: one listening socket they all share, or one each.
//!
//! - **shared** (the default): the master binds the port once, before it forks. Every worker
//!   inherits that socket and accepts from it, so there is one queue of waiting connections
//!   (the backlog) for all of them. A worker that dies takes only the connections it had
//!   already accepted; the ones still queued wait for the others. The cost: every worker waits
//!   on the same socket, so a new connection would wake them all (the *thundering herd*);
//!   the workers register it with `EPOLLEXCLUSIVE` so that the kernel wakes one.
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
use std::net::{SocketAddr, TcpListener};

use common::listen::{ListenOptions, bind_listener, bind_unlistened, inherited, start_listening};

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
