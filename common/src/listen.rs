//! Opening the listening socket, announcing it, and accepting from it.

use std::io::{self, ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, getsockopt, listen,
    setsockopt, socket, sockopt,
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
    let address = resolve(host, port)?;
    open(address, options, true)
        .map_err(|errno| format!("cannot listen on {address}: {}", errno.desc()))
}

/// Binds `host:port` as [`bind_listener`] does, but does not listen yet: the socket holds the
/// address, and no connection is queued in it until [`start_listening`]. For a socket of an
/// `SO_REUSEPORT` group made for a process that is not serving yet (step 06's successor on
/// `SIGUSR2`): a listening socket of the group gets its share of new connections at once, and
/// if nobody ever accepts them they wait there, then are reset.
///
/// # Errors
///
/// As [`bind_listener`].
pub fn bind_unlistened(
    host: &str,
    port: u16,
    options: ListenOptions,
) -> Result<TcpListener, String> {
    let address = resolve(host, port)?;
    open(address, options, false)
        .map_err(|errno| format!("cannot bind {address}: {}", errno.desc()))
}

/// Makes a socket from [`bind_unlistened`] listen, with [`bind_listener`]'s backlog. On a
/// socket that listens already it changes nothing.
///
/// # Errors
///
/// When `listen` fails.
pub fn start_listening(listener: &TcpListener) -> nix::Result<()> {
    listen(listener, Backlog::MAXCONN)
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|error| format!("cannot listen on {host}:{port}: {error}"))?
        .next()
        .ok_or_else(|| format!("cannot listen on {host}:{port}: no address found"))
}

fn open(address: SocketAddr, options: ListenOptions, listening: bool) -> nix::Result<TcpListener> {
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
    if listening {
        listen(&fd, Backlog::MAXCONN)?;
    }
    if options.nonblocking {
        fcntl(&fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    }
    Ok(TcpListener::from(fd))
}

/// The environment variable in which a master starting its successor names the listening
/// sockets the successor inherits, as `name=fd;name=fd` (`main=5;admin=6`): nginx's `NGINX`
/// variable (`NGINX=5;6;`), with names because our sockets are not all bound from one list.
pub const INHERITED_VARIABLE: &str = "FORK_TO_PROXY_LISTENERS";

/// The `name=fd;...` value of [`INHERITED_VARIABLE`] for `listeners`.
pub fn inherited_value(listeners: &[(&str, RawFd)]) -> String {
    let entries: Vec<String> = listeners
        .iter()
        .map(|(name, fd)| format!("{name}={fd}"))
        .collect();
    entries.join(";")
}

/// The `name=value` entries of a `;`-separated variable such as [`INHERITED_VARIABLE`]'s value
/// (or step 06's upgrade variable); entries without `=` are skipped.
pub fn named_values(value: &str) -> impl Iterator<Item = (&str, &str)> {
    value.split(';').filter_map(|entry| entry.split_once('='))
}

/// The listening socket named `name` that this process inherited from the master it replaces
/// (see [`INHERITED_VARIABLE`]), if it inherited one: the socket is adopted instead of bound,
/// so that it never closes and the connections in its backlog are not lost. Call it at most
/// once per name.
///
/// # Errors
///
/// When the variable names a descriptor that is not a listening TCP socket.
pub fn inherited(name: &str, options: ListenOptions) -> Option<Result<TcpListener, String>> {
    let value = std::env::var(INHERITED_VARIABLE).ok()?;
    let fd = named_values(&value)
        .find(|&(entry, _)| entry == name)
        .map(|(_, fd)| fd.parse::<RawFd>().ok())?;
    let Some(fd) = fd else {
        return Some(Err(format!(
            "{INHERITED_VARIABLE}: {name} is not a descriptor number: {value:?}"
        )));
    };
    Some(adopt(fd, options).map_err(|why| format!("{INHERITED_VARIABLE}: {name}={fd}: {why}")))
}

/// Closes the sockets named in [`INHERITED_VARIABLE`] that nobody adopted with [`inherited`]
/// (a listener the new configuration no longer has, as nginx closes the inherited sockets its
/// configuration does not list): left open, each would queue connections that nobody accepts.
/// Call it once every listener is adopted. An adopted socket is told apart by its
/// close-on-exec flag, which `inherited` set again and the old master had cleared.
pub fn close_unadopted() {
    let Ok(value) = std::env::var(INHERITED_VARIABLE) else {
        return;
    };
    let fds = named_values(&value).filter_map(|(_, fd)| fd.parse::<RawFd>().ok());
    for fd in fds.filter(|&fd| fd > 2) {
        if descriptor_flags(fd).is_some_and(|flags| flags & libc::FD_CLOEXEC == 0) {
            crate::log::error(format_args!(
                "{INHERITED_VARIABLE}: closing descriptor {fd}, which nothing here listens on"
            ));
            // SAFETY: `fd` is open, was handed to this process by the master it replaces, and
            // nothing adopted it (no close-on-exec flag), so nothing here owns or uses it.
            unsafe { libc::close(fd) };
        }
    }
}

/// Takes ownership of descriptor `fd`, which this process did not open, as a listening socket,
/// after checking that it is one: an open TCP socket in the listening state, or, with
/// `options.reuse_port`, one bound to a port that has yet to [listen](start_listening) (see
/// [`bind_unlistened`]).
fn adopt(fd: RawFd, options: ListenOptions) -> Result<TcpListener, String> {
    let owned = own_inherited(fd)?;
    let kind = getsockopt(&owned, sockopt::SockType).map_err(|errno| errno.desc().to_string())?;
    if kind != SockType::Stream {
        return Err("not a stream socket".into());
    }
    let listening =
        getsockopt(&owned, sockopt::AcceptConn).map_err(|errno| errno.desc().to_string())?;
    if !listening && !options.reuse_port {
        return Err("a socket that is not listening".into());
    }
    // The old master cleared close-on-exec so that the descriptor survived its `exec`; set it
    // again, so that nothing this process execs in turn inherits it unasked.
    fcntl(&owned, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| e.desc().to_string())?;
    if options.nonblocking {
        fcntl(&owned, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(|e| e.desc().to_string())?;
    }
    let listener = TcpListener::from(owned);
    // A Unix socket would pass the checks above; a TCP listener has an IP address.
    let address = listener
        .local_addr()
        .map_err(|error| format!("not a TCP socket: {error}"))?;
    if address.port() == 0 {
        return Err("a socket bound to no port".into());
    }
    Ok(listener)
}

/// Takes ownership of descriptor `fd`, inherited across `exec` from the process that named it
/// to us (in the environment), after checking that it is open. Call it once per descriptor.
///
/// # Errors
///
/// When `fd` is not an open descriptor above stderr's.
pub fn own_inherited(fd: RawFd) -> Result<OwnedFd, String> {
    if fd <= 2 || descriptor_flags(fd).is_none() {
        return Err(format!("{fd} is not an open descriptor"));
    }
    // SAFETY: `fd` is open (checked above) and was handed to this process to own: the process
    // that exec'd us keeps no claim on it here, and the caller takes each number once, so
    // nothing else in this process owns it. Dropping the `OwnedFd` on an error closes it,
    // which is right for a descriptor we cannot use.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The descriptor flags of `fd` (`F_GETFD`), or `None` when `fd` is not an open descriptor.
/// A raw call: the number is not yet owned by anything a `BorrowedFd` could borrow from.
fn descriptor_flags(fd: RawFd) -> Option<libc::c_int> {
    // SAFETY: fcntl(F_GETFD) reads a descriptor's flags and touches no memory; on a number
    // that is not an open descriptor it fails with EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    (flags >= 0).then_some(flags)
}

/// Lets the descriptor of `listener` survive an `exec`, for [`INHERITED_VARIABLE`]. Only in a
/// child about to exec: the flag is per descriptor, so anything else this process started
/// meanwhile would inherit it too.
///
/// # Errors
///
/// When `fcntl` fails.
pub fn keep_across_exec(fd: BorrowedFd<'_>) -> nix::Result<()> {
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty())).map(drop)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;

    #[test]
    fn a_listening_socket_is_adopted_and_anything_else_refused() {
        let bound = bind_listener("127.0.0.1", 0, ListenOptions::default()).expect("bind");
        let address = bound.local_addr().expect("address");
        let fd = bound.into_raw_fd();
        let adopted = adopt(fd, ListenOptions::default()).expect("a listening socket");
        assert_eq!(adopted.local_addr().expect("address"), address);
        // A TCP socket that is not listening, a pipe, and a number that is not open.
        let unbound = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )
        .expect("socket");
        let error = adopt(unbound.into_raw_fd(), ListenOptions::default()).unwrap_err();
        assert!(error.contains("not listening"), "{error}");
        let (read, _write) = nix::unistd::pipe().expect("pipe");
        assert!(adopt(read.into_raw_fd(), ListenOptions::default()).is_err());
        // Far above any descriptor a test opens (closing one of ours to reuse its number
        // would race with the tests running beside this one).
        assert!(adopt(1 << 20, ListenOptions::default()).is_err());
    }

    #[test]
    fn a_reuseport_socket_may_come_bound_and_listen_later() {
        let options = ListenOptions {
            reuse_port: true,
            nonblocking: false,
        };
        let bound = bind_unlistened("127.0.0.1", 0, options).expect("bind");
        let address = bound.local_addr().expect("address");
        assert!(!getsockopt(&bound, sockopt::AcceptConn).expect("SO_ACCEPTCONN"));
        // Nothing listens there yet: a connection is refused, not queued.
        assert!(TcpStream::connect(address).is_err());
        let adopted = adopt(bound.into_raw_fd(), options).expect("a bound reuseport socket");
        start_listening(&adopted).expect("listen");
        assert!(TcpStream::connect(address).is_ok());
        // Listening twice changes nothing.
        start_listening(&adopted).expect("listen again");
        // Not for a shared socket, which its workers accept from at once; and never unbound.
        let shared = bind_unlistened("127.0.0.1", 0, ListenOptions::default()).expect("bind");
        let error = adopt(shared.into_raw_fd(), ListenOptions::default()).unwrap_err();
        assert!(error.contains("not listening"), "{error}");
        let unbound = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )
        .expect("socket");
        let error = adopt(unbound.into_raw_fd(), options).unwrap_err();
        assert!(error.contains("no port"), "{error}");
    }

    #[test]
    fn the_variable_names_each_socket() {
        assert_eq!(
            inherited_value(&[("main", 5), ("admin", 7)]),
            "main=5;admin=7"
        );
    }
}
