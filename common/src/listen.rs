//! Opening the listening socket and announcing it.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::AsRawFd;

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt, socket,
    sockopt,
};

/// How to open the listening socket.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListenOptions {
    /// Set `SO_REUSEPORT`, so that several processes can each bind the same port and the
    /// kernel spreads connections between them (step06's `--listen reuseport`).
    pub reuse_port: bool,
    /// Make the socket non-blocking, for loops that `accept` until `EWOULDBLOCK`.
    pub nonblocking: bool,
}

/// Binds and listens on `host:port`.
///
/// The backlog is the system's maximum (`SOMAXCONN`, 4096 on current Linux), not the 10 of the
/// C course: the backlog is where the kernel keeps connections that completed the handshake
/// while the server was busy; when it is full, new clients wait or fail before we ever see them.
/// `SO_REUSEADDR` lets a restarted server bind again at once despite old connections in
/// `TIME_WAIT`.
///
/// # Errors
///
/// One line saying which address failed and why, ready for [`crate::args::fail`]:
/// `cannot listen on 127.0.0.1:8090: Address already in use`.
pub fn bind_listener(host: &str, port: u16, options: ListenOptions) -> Result<TcpListener, String> {
    let address = (host, port)
        .to_socket_addrs()
        .map_err(|error| format!("cannot listen on {host}:{port}: {error}"))?
        .next()
        .ok_or_else(|| format!("cannot listen on {host}:{port}: no address found"))?;
    open(address, options).map_err(|errno| format!("cannot listen on {address}: {}", errno.desc()))
}

fn open(address: SocketAddr, options: ListenOptions) -> nix::Result<TcpListener> {
    let family = if address.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    // No SOCK_CLOEXEC/SOCK_NONBLOCK flags here: macOS has neither, so both are set afterwards.
    let fd = socket(family, SockType::Stream, SockFlag::empty(), None)?;
    fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if options.reuse_port {
        setsockopt(&fd, sockopt::ReusePort, &true)?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(address))?;
    listen(&fd, Backlog::MAXCONN)?;
    if options.nonblocking {
        fcntl(&fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    }
    Ok(TcpListener::from(fd))
}

/// Prints the start-up line, `listening on http://HOST:PORT` with the port actually bound, and
/// flushes it: tests and scripts wait for this line before they connect.
///
/// # Errors
///
/// When the address cannot be read back or stdout cannot be written.
pub fn announce(listener: &TcpListener) -> io::Result<SocketAddr> {
    let address = listener.local_addr()?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on http://{address}")?;
    stdout.flush()?;
    Ok(address)
}
