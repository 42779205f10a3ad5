//! The loop: wait for readiness, hand each event to its connection, fire the timers that are
//! due, accept new connections, and again, until a shutdown is complete.
//!
//! ```text
//! loop {
//!     wait for events, at most until the nearest timer      (Poller::wait)
//!     listener ready   -> accept until EWOULDBLOCK, serve    (accept_connections, open)
//!     connection ready -> drive its state machine           (Connection::on_ready)
//!     timers due       -> drive their connections           (Connection::on_timer)
//!     shutdown pipe    -> stop accepting, close the idle ones, let the rest finish
//! }
//! ```
//!
//! One thread does all of it, so nothing here is locked or shared: the price is that nothing
//! here may block either.

use std::io::{self, ErrorKind};
use std::mem;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::listen::{ACCEPT_PAUSE, defer_accept};
use common::{Signals, Site, log};

use crate::buffers::InputBuffer;
use crate::config::LoopConfig;
use crate::connection::{Connection, Context, Next};
use crate::hook::{Hook, WorkId};
use crate::poller::{EVENTS_PER_WAIT, Event, Interest, Poller, Token};
use crate::slab::Slab;
use crate::stats::LoopStats;
use crate::timers::Timers;

/// The listening socket's token. Connections use their slot numbers, which never get this high.
const LISTENER: Token = Token(usize::MAX);
/// The shutdown pipe of [`Signals`].
const SHUTDOWN: Token = Token(usize::MAX - 1);
/// The [`Hook`]'s wake-up descriptor (step 06).
const WAKE: Token = Token(usize::MAX - 2);

/// One thread serving every connection of a listening socket.
pub struct EventLoop<'s> {
    /// Tells us which sockets (and pipes) are ready.
    poller: Poller,
    /// Every open connection, by token: an event's token is the connection's slot.
    connections: Slab<Connection>,
    /// What connections share (the site, the timers, the buffers), lent to the one being driven.
    cx: Context<'s>,
    /// The figures `/stats` shows; the caller holds the other reference.
    stats: Arc<LoopStats>,
    /// The listening socket; `None` once shutting down.
    listener: Option<TcpListener>,
    /// The listener has reported connections we have not all accepted yet. Edge-triggered, so
    /// remembered, as a connection's readiness is.
    accept_ready: bool,
    /// After an `EMFILE`, no accepting before this (see [`ACCEPT_PAUSE`]).
    accept_paused_until: Option<Instant>,
    /// The last `accept` failed and said so: one log line per stretch of failures, not one
    /// per pause.
    accept_failing: bool,
    /// The kernel hands over a connection only once its request has arrived (see `run`).
    accepts_deferred: bool,
    /// Connections that used up their turn with work left, driven again next iteration, so that
    /// one busy client cannot keep the loop to itself.
    resume: Vec<Token>,
    /// Set when a shutdown begins: requests in flight must be done by then.
    grace_deadline: Option<Instant>,
    /// The serial number of the last connection accepted.
    serial: u64,
    /// Blocking work the hook has finished, and whether it failed.
    finished: Vec<(WorkId, bool)>,
}

impl<'s> EventLoop<'s> {
    /// A loop serving `site`. The shutdown pipe of `signals` ends it gracefully; `stats` gets
    /// its live figures (the caller shows them, typically through `site`'s `/stats`).
    ///
    /// # Errors
    ///
    /// When the poller cannot be created or cannot watch the shutdown pipe.
    pub fn new(
        site: &'s Site,
        config: LoopConfig,
        signals: Signals,
        stats: Arc<LoopStats>,
    ) -> io::Result<EventLoop<'s>> {
        let poller = Poller::new()?;
        poller.register(&signals.shutdown_fd(), SHUTDOWN, Interest::READABLE)?;
        let cx = Context {
            site,
            config,
            timers: Timers::new(),
            hook: Box::new(()),
            now: Instant::now(),
            shutting_down: false,
            input: InputBuffer::new(),
            output: Vec::new(),
            reads_left: 0,
        };
        Ok(EventLoop {
            poller,
            connections: Slab::new(),
            cx,
            stats,
            listener: None,
            accept_ready: false,
            accept_paused_until: None,
            accept_failing: false,
            accepts_deferred: false,
            resume: Vec::new(),
            grace_deadline: None,
            serial: 0,
            finished: Vec::new(),
        })
    }

    /// Step 06's seam: `hook` watches the listener and may take blocking work elsewhere (see
    /// [`crate::hook`]).
    ///
    /// # Errors
    ///
    /// When the poller cannot watch the hook's wake-up descriptor.
    pub fn with_hook(mut self, hook: Box<dyn Hook + 's>) -> io::Result<EventLoop<'s>> {
        if let Some(fd) = hook.wake_fd() {
            self.poller.register(&fd, WAKE, Interest::READABLE)?;
        }
        self.cx.hook = hook;
        Ok(self)
    }

    /// Serves the connections of `listener` until a shutdown is requested and the requests in
    /// flight are done (or the grace period is over). The listener is made non-blocking.
    ///
    /// # Errors
    ///
    /// When the listener cannot be watched, or waiting for events fails; the loop cannot go on
    /// then. Errors on one connection only close that connection.
    pub fn run(mut self, listener: TcpListener) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        // Linux: a client that connected but sent nothing yet waits in the kernel, not in our
        // loop, until its first bytes (or the header timeout); `open` then serves it at once.
        self.accepts_deferred = defer_accept(&listener, self.cx.config.header_timeout)
            .unwrap_or_else(|error| {
                log::error(format_args!("cannot defer accepts: {error}"));
                false
            });
        self.cx
            .hook
            .watch_listener(&self.poller, &listener, LISTENER)?;
        self.listener = Some(listener);

        let mut events = Vec::with_capacity(EVENTS_PER_WAIT);
        loop {
            let timeout = self.wait_timeout();
            self.poller.wait(&mut events, timeout)?;
            self.cx.now = Instant::now();
            self.stats.iteration(self.cx.timers.len());
            for event in &events {
                self.dispatch(*event);
            }
            for token in mem::take(&mut self.resume) {
                self.drive(token, |connection, cx| {
                    connection.on_ready(false, false, cx)
                });
            }
            while let Some(token) = self.cx.timers.pop_due(self.cx.now) {
                self.drive(token, Connection::on_timer);
            }
            // Slots may have freed up, or an accept pause may be over.
            self.accept_connections();
            if self.shutdown_complete() {
                return Ok(());
            }
        }
    }

    /// How long the next wait may last: until the nearest deadline, or not at all if some
    /// connection has work left.
    fn wait_timeout(&self) -> Option<Duration> {
        if !self.resume.is_empty() {
            return Some(Duration::ZERO);
        }
        let nearest = [
            self.cx.timers.next_due(),
            self.accept_paused_until,
            self.grace_deadline,
        ]
        .into_iter()
        .flatten()
        .min()?;
        Some(nearest.saturating_duration_since(Instant::now()))
    }

    fn dispatch(&mut self, event: Event) {
        match event.token {
            LISTENER => {
                self.accept_ready = true;
                self.accept_connections();
            }
            SHUTDOWN => self.begin_shutdown(),
            WAKE => self.finish_work(),
            token => self.drive(token, |connection, cx| {
                if event.read_closed {
                    connection.note_peer_closed();
                }
                connection.on_ready(event.readable, event.writable, cx)
            }),
        }
    }

    /// Lets the connection in slot `token` act, then does what it asks.
    fn drive(&mut self, token: Token, act: impl FnOnce(&mut Connection, &mut Context<'s>) -> Next) {
        // A closed connection may still have an event in this batch: nothing to do. If its slot
        // was reused meanwhile, the new connection gets a spurious event, and its read or write
        // simply ends in EWOULDBLOCK.
        let Some(connection) = self.connections.get_mut(token.0) else {
            return;
        };
        match act(connection, &mut self.cx) {
            Next::Wait => {}
            Next::Resume => self.resume.push(token),
            Next::Close => self.close(token),
        }
    }

    fn close(&mut self, token: Token) {
        // Dropping the connection closes its socket, which also takes it out of the poller: it
        // is the only descriptor of that socket.
        if self.connections.remove(token.0).is_some() {
            self.cx.timers.cancel(token);
            self.stats.closed();
        }
    }

    /// Accepts what it can, and tells the hook whether the loop can accept now (step 06 stops
    /// watching a listener it shares while it cannot).
    fn accept_connections(&mut self) {
        self.accept_until_blocked();
        let Some(listener) = &self.listener else {
            return;
        };
        let can_accept = self.connections.len() < self.cx.config.max_connections
            && self
                .accept_paused_until
                .is_none_or(|until| self.cx.now >= until);
        if self.cx.hook.can_accept(&self.poller, listener, can_accept) {
            // Connections may have queued meanwhile, unreported.
            self.accept_ready = true;
            self.accept_until_blocked();
        }
    }

    /// Accepts until `EWOULDBLOCK`, the connection limit, or a shortage of descriptors.
    fn accept_until_blocked(&mut self) {
        while self.accept_ready && self.connections.len() < self.cx.config.max_connections {
            if let Some(until) = self.accept_paused_until {
                if self.cx.now < until {
                    return;
                }
                self.accept_paused_until = None;
            }
            let Some(listener) = &self.listener else {
                return;
            };
            match accept_nonblocking(listener) {
                Ok(stream) => {
                    self.accept_failing = false;
                    self.open(stream);
                }
                // All accepted: the next connection will be reported.
                Err(error) if error.kind() == ErrorKind::WouldBlock => self.accept_ready = false,
                // A client that gave up before we accepted it; the others are still there.
                Err(error)
                    if matches!(
                        error.kind(),
                        ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                    ) => {}
                // EMFILE, ENFILE, ENOBUFS, ENOMEM (or anything unexpected): the connection stays
                // in the backlog, and retrying at once would fail again. Pause, never spin.
                // (libev and Node keep a spare descriptor instead: see the exercises.)
                Err(error) => {
                    if !self.accept_failing {
                        log::error(format_args!(
                            "accept failed: {error}; retrying every {} ms",
                            ACCEPT_PAUSE.as_millis()
                        ));
                    }
                    self.accept_failing = true;
                    self.accept_paused_until = Some(self.cx.now + ACCEPT_PAUSE);
                }
            }
        }
    }

    fn open(&mut self, stream: TcpStream) {
        let token = Token(self.connections.vacant_key());
        self.serial += 1;
        let mut connection = Connection::new(stream, token, self.serial, &self.cx);
        self.stats.opened(self.cx.timers.len());
        // With deferred accepts its request is here already: serve it now, before asking the
        // poller, as nginx does after a deferred accept. A connection answered and closed in
        // this very pass never meets the poller at all: a `Connection: close` request saves the
        // registration and its share of a wait. (Otherwise this only sets its header timeout.)
        let next = connection.on_ready(self.accepts_deferred, true, &mut self.cx);
        if next != Next::Close {
            // Registering reports what became ready meanwhile: nothing is missed.
            let watched =
                self.poller
                    .register(connection.stream(), token, Interest::READABLE_WRITABLE);
            if let Err(error) = watched {
                log::error(format_args!("cannot watch a connection: {error}"));
            } else {
                self.connections.insert(connection);
                if next == Next::Resume {
                    self.resume.push(token);
                }
                return;
            }
        }
        self.cx.timers.cancel(token);
        self.stats.closed();
    }

    /// `SIGINT`/`SIGTERM`: stop accepting, close the connections between requests, and let the
    /// requests in flight finish (they are answered with `Connection: close`).
    fn begin_shutdown(&mut self) {
        if self.cx.shutting_down {
            return;
        }
        self.cx.shutting_down = true;
        self.grace_deadline = Some(self.cx.now + self.cx.config.grace);
        // Closing a listening socket resets the connections the kernel completed but nobody
        // accepted yet (step 06's `--listen reuseport` workers each close their own): take
        // them first. They are served, and closed after their answer, as the ones already open.
        self.accept_ready = true;
        self.accept_until_blocked();
        if let Some(listener) = self.listener.take() {
            // It will not accept again: a hook that shares the listener stops watching it.
            self.cx.hook.can_accept(&self.poller, &listener, false);
        }
        let tokens: Vec<usize> = self.connections.keys().collect();
        for token in tokens {
            self.drive(Token(token), |connection, cx| {
                connection.on_ready(false, false, cx)
            });
        }
    }

    fn shutdown_complete(&self) -> bool {
        let Some(deadline) = self.grace_deadline else {
            return false;
        };
        if self.connections.is_empty() {
            return true;
        }
        if self.cx.now >= deadline {
            log::error(format_args!(
                "{} connections still busy after the grace period",
                self.connections.len()
            ));
            return true;
        }
        false
    }

    /// The hook says blocking work is done: end each connection's wait, if it is still the
    /// same connection.
    fn finish_work(&mut self) {
        let mut finished = mem::take(&mut self.finished);
        self.cx.hook.finished(&mut finished);
        for (WorkId { token, serial }, failed) in finished.drain(..) {
            let same = self
                .connections
                .get_mut(token.0)
                .is_some_and(|connection| connection.serial() == serial);
            if same {
                self.drive(token, |connection, cx| connection.on_work_done(failed, cx));
            }
        }
        self.finished = finished;
    }
}

/// Accepts one connection, non-blocking from birth: every socket of the loop must be, or one
/// read could stall everyone.
///
/// Linux and the BSDs have `accept4`, which sets the flags in the same call (std's `accept`
/// would need a second one, an `ioctl`, per connection).
#[cfg(not(target_vendor = "apple"))]
fn accept_nonblocking(listener: &TcpListener) -> io::Result<TcpStream> {
    use nix::sys::socket::{SockFlag, accept4};
    let fd = accept4(listener, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC)?;
    Ok(TcpStream::from(fd))
}

/// macOS has no `accept4`; its accepted sockets inherit the listener's `O_NONBLOCK`, but we say
/// so explicitly rather than rely on it.
#[cfg(target_vendor = "apple")]
fn accept_nonblocking(listener: &TcpListener) -> io::Result<TcpStream> {
    let (stream, _) = listener.accept()?;
    stream.set_nonblocking(true)?;
    Ok(stream)
}
