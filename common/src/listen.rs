//! Opening the listening socket, announcing it, and accepting from it.

use std::io::{self, ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt, socket,
    sockopt,
};

use crate::log;
use crate::signals::Signals;
use crate::wait::wait_readable;

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

/// Linux: asks the kernel to hand over a connection of `listener` only once its first bytes have
/// arrived, or `timeout` has passed (`TCP_DEFER_ACCEPT`, nginx's `listen ... deferred`), so that
/// an event loop finds the request there as it accepts. Returns whether accepts are deferred
/// now: never elsewhere.
///
/// # Errors
///
/// When the kernel refuses the option.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn defer_accept(listener: &TcpListener, timeout: Duration) -> io::Result<bool> {
    // In whole seconds, at least one; the kernel rounds it to its SYN-ACK retransmissions.
    let seconds = libc::c_int::try_from(timeout.as_secs().max(1)).unwrap_or(libc::c_int::MAX);
    // SAFETY: `listener` is an open socket for the duration of the call, and the value is a
    // `c_int` passed with its exact size, as `setsockopt(2)` requires for TCP_DEFER_ACCEPT.
    // (nix has no wrapper for this option.)
    let result = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&raw const seconds).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    nix::errno::Errno::result(result)
        .map(|_| true)
        .map_err(io::Error::from)
}

/// Elsewhere accepts are not deferred (FreeBSD's accept filters would do it, as a kernel module).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn defer_accept(_listener: &TcpListener, _timeout: Duration) -> io::Result<bool> {
    Ok(false)
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

/// How long accepting pauses when `accept` fails for want of descriptors or memory: here (see
/// [`accept_ready`]), in step 05's event loop and in step 07's workers.
///
/// `EMFILE` leaves the connection in the backlog and the listener readable, so retrying at once
/// fails the same way, as fast as the loop can spin. Like nginx, which disables its accept
/// events for a moment, we stop accepting for a short while: the waiting clients stay in the
/// backlog, and connections that close meanwhile give descriptors back.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Waits for the next connection on a non-blocking `listener`; `None` once a shutdown has been
/// requested. The blocking steps' accept loop: `while let Some(stream) = next_connection(..)`.
pub fn next_connection(listener: &TcpListener, signals: Signals) -> Option<TcpStream> {
    loop {
        let ready = wait_readable(&[listener.as_fd(), signals.shutdown_fd()], None).ok()?;
        if ready.is_ready(1) {
            return None;
        }
        if let Some(stream) = accept_ready(listener, signals) {
            return Some(stream);
        }
    }
}

/// Accepts one connection from a non-blocking `listener` that `poll` reported ready; `None`
/// when there was none after all or `accept` failed.
///
/// `WouldBlock` is not an error: the client gave up between `poll` and `accept`. Other errors
/// are logged and cost this one client, not the server (the C course's loop called `exit`).
/// Running out of descriptors (`EMFILE`, `ENFILE`) needs more: the connection stays in the
/// backlog, `poll` reports it again at once, and the loop would spin at 100 % CPU without
/// making progress. So we pause for [`ACCEPT_PAUSE`] first (waking early for a shutdown), as
/// nginx stops accepting for a moment in the same case, while connections being served close
/// and give descriptors back.
pub fn accept_ready(listener: &TcpListener, signals: Signals) -> Option<TcpStream> {
    match listener.accept() {
        Ok((stream, _)) => Some(stream),
        Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
            None
        }
        Err(error) => {
            log::error(format_args!("accept failed: {error}"));
            if matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                let pause = Instant::now() + ACCEPT_PAUSE;
                let _ = wait_readable(&[signals.shutdown_fd()], Some(pause));
            }
            None
        }
    }
}
