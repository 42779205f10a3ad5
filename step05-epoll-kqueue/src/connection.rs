//! One connection's state machine.
//!
//! The blocking steps keep a connection's progress on its thread's stack: "I am inside
//! `discard_body`, waiting for bytes". Here no thread belongs to a connection, so its progress
//! is a value, [`State`]. Each time the poller or a timer says something happened, the loop
//! drives the connection: it moves as far as the socket allows without waiting, and returns.
//!
//! ```text
//!   accepted ─▶ ReadingHead ─head─▶ ReadingBody ─body read─▶ Waiting ─delay over─▶ answer
//!                    ▲                    (no body) ───────────┘ (no delay) ──────┘   │
//!                    │                                                                │
//!                    └─ first byte ── Idle ◀──────────── keep-alive ──────────────────┤
//!                                                                                     │ close
//!                                                                   Closing ─▶ Lingering ─▶ closed
//! ```
//!
//! It is the behaviour of `common::connection` (steps 01–04) without blocking: keep-alive,
//! pipelined requests answered in order, bodies read and dropped, the header and idle
//! timeouts, error answers with a lingering close. Three rules keep it honest:
//!
//! - Readiness is edge-triggered (see [`crate::poller`]): the connection remembers `readable`
//!   and `writable`, and only `EWOULDBLOCK` clears them.
//! - What we owe the client goes out before we read more from it. A client that does not read
//!   its answers stops being read from, so it costs at most one buffer of answers, and its next
//!   requests wait in its own socket, not in our memory.
//! - Nothing waits: where the blocking loop slept or blocked, this one sets a deadline
//!   ([`crate::timers`]) and returns.

use std::io::ErrorKind;
use std::mem;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::chunked::ChunkedDecoder;
use common::log;
use common::parse::{BodyFraming, parse_head};
use common::{Reply, Response, Site};

use crate::blocking::{BlockingRunner, Ticket, Work};
use crate::buffers::{InputBuffer, write_some};
use crate::config::LoopConfig;
use crate::poller::Token;
use crate::timers::Timers;

/// How long a lingering close reads and drops what the client still sends (as
/// `common::connection` does).
const LINGER: Duration = Duration::from_secs(2);

/// Answers to pipelined requests are gathered up to this size, then written with one call.
const OUTPUT_HIGH_WATER: usize = 64 * 1024;

/// Reads one connection may do before the others get their turn.
const READS_PER_TURN: u32 = 16;

/// Everything connections share: owned by the loop, lent to the connection being driven.
pub(crate) struct Context<'s> {
    pub site: &'s Site,
    pub config: LoopConfig,
    pub timers: Timers,
    pub runner: Box<dyn BlockingRunner + 's>,
    /// The time, read once per loop iteration: every deadline set in one iteration starts here.
    pub now: Instant,
    pub shutting_down: bool,
    pub input: InputBuffer,
    /// Answers rendered and not yet written; empty between two drives.
    pub output: Vec<u8>,
    /// How many more reads the connection being driven may do in this turn.
    pub reads_left: u32,
}

/// What the loop does with a connection after driving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Wait for its next event or timer.
    Wait,
    /// It used up its turn with work left: drive it again in the next loop iteration.
    Resume,
    /// It is over: close it.
    Close,
}

/// The outcome of one move of the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Moved on; go again (answers may be gathered before writing).
    Continue,
    /// Write what is gathered, then go again.
    Flush,
    /// Nothing more to do until an event or a timer.
    Wait,
    /// The turn is used up; write what is gathered and come back next iteration.
    Yield,
    /// Close now, dropping anything unsent.
    Close,
}

/// What a write attempt achieved.
enum Flushed {
    All,
    Blocked,
    Failed,
}

enum State {
    /// Reading a request head. New connections start here; the deadline is the header timeout.
    ReadingHead { deadline: Instant },
    /// Keep-alive: the last answer is written and nothing of the next request has arrived.
    Idle { deadline: Instant },
    /// Reading and dropping a request body. The deadline limits a pause, not the whole body.
    ReadingBody { body: Box<Body>, deadline: Instant },
    /// The answer is ready but its delay (`/sleep`, `--delay-ms`) has not passed: a timer.
    Waiting {
        answer: Box<Delayed>,
        until: Instant,
    },
    /// The request's blocking work runs elsewhere (step06's pool); no deadline.
    Blocked { request: Box<Request> },
    /// The last answer is being written; then the connection closes, lingering if asked.
    Closing { linger: bool },
    /// Our side is shut down; reading and dropping what the client still sends.
    Lingering { until: Instant },
}

/// What the connection keeps of a request until it is answered.
struct Request {
    keep_alive: bool,
    /// `GET / HTTP/1.1`, for the access log (empty when not logging).
    line: String,
    /// When its head was complete, for the access log.
    started: Instant,
}

/// A request whose body is still arriving.
struct Body {
    request: Request,
    reply: Reply,
    left: BodyLeft,
    /// Its delay is blocking work (`/sleep` under `--blocking-sleep`).
    blocking: bool,
}

enum BodyLeft {
    Length(u64),
    Chunked(ChunkedDecoder),
}

/// An answer waiting for its delay to pass.
struct Delayed {
    request: Request,
    response: Response,
}

pub(crate) struct Connection {
    stream: TcpStream,
    token: Token,
    /// Tells this connection apart from a later one in the same slot.
    serial: u64,
    peer: SocketAddr,
    state: State,
    /// Bytes read and not yet used, kept between drives: part of a request, or pipelined
    /// requests waiting for their turn. Empty, and unallocated, when there are none.
    input: Vec<u8>,
    /// Answer bytes the socket has not taken yet. Empty, and unallocated, when there are none.
    output: Vec<u8>,
    /// How much of `output` is written.
    written: usize,
    /// While `output` waits, when we give up on a client that does not read.
    write_deadline: Instant,
    /// Readiness reported and not used up yet (edge-triggered: it will not be reported again).
    readable: bool,
    writable: bool,
}

impl Connection {
    /// A connection just accepted: its head must arrive within the header timeout.
    pub(crate) fn new(
        stream: TcpStream,
        peer: SocketAddr,
        token: Token,
        serial: u64,
        cx: &mut Context<'_>,
    ) -> Connection {
        let deadline = cx.now + cx.config.header_timeout;
        cx.timers.wake_by(token, deadline);
        Connection {
            stream,
            token,
            serial,
            peer,
            state: State::ReadingHead { deadline },
            input: Vec::new(),
            output: Vec::new(),
            written: 0,
            write_deadline: deadline,
            readable: false,
            // A new socket's send buffer is empty.
            writable: true,
        }
    }

    pub(crate) fn serial(&self) -> u64 {
        self.serial
    }

    /// The poller reported readiness (or the loop resumes this connection, or a shutdown began).
    pub(crate) fn on_ready(&mut self, readable: bool, writable: bool, cx: &mut Context) -> Next {
        self.readable |= readable;
        self.writable |= writable;
        self.drive(cx, |_, _| Step::Continue)
    }

    /// This connection's timer fired.
    pub(crate) fn on_timer(&mut self, cx: &mut Context) -> Next {
        self.drive(cx, Connection::time_up)
    }

    /// Its blocking work came back with `response`.
    pub(crate) fn on_work_done(&mut self, response: Response, cx: &mut Context) -> Next {
        self.drive(cx, |connection, cx| {
            if !matches!(connection.state, State::Blocked { .. }) {
                return Step::Wait;
            }
            match mem::replace(&mut connection.state, State::Closing { linger: false }) {
                State::Blocked { request } => connection.respond(&request, &response, cx),
                _ => Step::Close,
            }
        })
    }

    /// Takes the first step with `first`, then moves on until the connection must wait.
    fn drive(
        &mut self,
        cx: &mut Context,
        first: impl FnOnce(&mut Self, &mut Context) -> Step,
    ) -> Next {
        cx.input.lend(&mut self.input);
        cx.reads_left = READS_PER_TURN;
        let step = first(self, cx);
        let next = self.run(step, cx);
        cx.output.clear();
        if next == Next::Close {
            cx.input.clear();
        } else {
            self.input = cx.input.give_back();
            match self.deadline() {
                Some(deadline) => cx.timers.wake_by(self.token, deadline),
                None => cx.timers.cancel(self.token),
            }
        }
        next
    }

    fn run(&mut self, mut step: Step, cx: &mut Context) -> Next {
        loop {
            match step {
                Step::Close => return Next::Close,
                // Keep gathering answers to pipelined requests while there is room.
                Step::Continue if self.output.is_empty() && cx.output.len() < OUTPUT_HIGH_WATER => {
                }
                _ => match self.flush(cx) {
                    Flushed::All => {}
                    Flushed::Blocked => return Next::Wait,
                    Flushed::Failed => return Next::Close,
                },
            }
            match step {
                Step::Wait => return Next::Wait,
                Step::Yield => return Next::Resume,
                _ => step = self.advance(cx),
            }
        }
    }

    fn advance(&mut self, cx: &mut Context) -> Step {
        match self.state {
            State::ReadingHead { .. } | State::Idle { .. } => self.read_head(cx),
            State::ReadingBody { .. } => self.read_body(cx),
            State::Waiting { .. } | State::Blocked { .. } => Step::Wait,
            State::Closing { linger } => self.close_gently(linger, cx),
            State::Lingering { .. } => self.drain(cx),
        }
    }

    fn read_head(&mut self, cx: &mut Context) -> Step {
        let (request, reply, framing, expect_continue, blocking) = match parse_head(cx.input.data())
        {
            Ok(Some(head)) => {
                let reply = cx.site.reply(&head);
                let line = if cx.config.log {
                    head.request_line()
                } else {
                    String::new()
                };
                let request = Request {
                    keep_alive: head.keep_alive,
                    line,
                    started: cx.now,
                };
                let blocking =
                    cx.config.blocking_sleep && head.path() == "/sleep" && !reply.delay.is_zero();
                let parts = (request, reply, head.body, head.expect_continue, blocking);
                cx.input.consume(head.len);
                parts
            }
            Ok(None) => return self.read_more(cx),
            Err(error) => return self.fail(cx.site.parse_error(error), &error.to_string(), cx),
        };
        let left = match framing {
            BodyFraming::None => return self.dispatch(request, reply, blocking, cx),
            BodyFraming::Length(length) => BodyLeft::Length(length),
            BodyFraming::Chunked => BodyLeft::Chunked(ChunkedDecoder::new()),
        };
        if expect_continue && cx.input.data().is_empty() {
            // The client waits for our go-ahead before it sends the body (RFC 9110 §10.1.1).
            cx.output
                .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let body = Box::new(Body {
            request,
            reply,
            left,
            blocking,
        });
        let deadline = cx.now + cx.config.header_timeout;
        self.state = State::ReadingBody { body, deadline };
        Step::Continue
    }

    /// Uses the body bytes that arrived; the answer is due once the body has ended.
    fn read_body(&mut self, cx: &mut Context) -> Step {
        let State::ReadingBody { body, deadline } = &mut self.state else {
            return Step::Wait;
        };
        let data = cx.input.data();
        let used = match &mut body.left {
            BodyLeft::Length(left) => {
                let used = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
                *left -= used as u64;
                used
            }
            BodyLeft::Chunked(decoder) => match decoder.feed(data, |_| {}) {
                Ok(used) => used,
                Err(_) => return self.fail(Response::error(400), "bad chunked body", cx),
            },
        };
        cx.input.consume(used);
        let done = match &body.left {
            BodyLeft::Length(left) => *left == 0,
            BodyLeft::Chunked(decoder) => decoder.is_done(),
        };
        if !done {
            if used > 0 {
                *deadline = cx.now + cx.config.header_timeout;
            }
            return self.read_more(cx);
        }
        match mem::replace(&mut self.state, State::Closing { linger: false }) {
            State::ReadingBody { body, .. } => {
                let Body {
                    request,
                    reply,
                    blocking,
                    ..
                } = *body;
                self.dispatch(request, reply, blocking, cx)
            }
            _ => Step::Close,
        }
    }

    /// The request is read: answer now, after a timer, or after blocking work.
    fn dispatch(
        &mut self,
        request: Request,
        reply: Reply,
        blocking: bool,
        cx: &mut Context,
    ) -> Step {
        let Reply { response, delay } = reply;
        if delay.is_zero() {
            return self.respond(&request, &response, cx);
        }
        if !blocking {
            // This is the whole step in one line: the delay is a deadline, and the loop serves
            // everyone else until it comes. The blocking steps slept here.
            let until = cx.now + delay;
            let answer = Box::new(Delayed { request, response });
            self.state = State::Waiting { answer, until };
            return Step::Continue;
        }
        let ticket = Ticket {
            token: self.token,
            serial: self.serial,
        };
        let work: Work = Box::new(move || {
            std::thread::sleep(delay);
            response
        });
        match cx.runner.run(ticket, work) {
            Some(response) => {
                // It ran on this thread: the loop stood still meanwhile, and so did our clock.
                cx.now = Instant::now();
                self.respond(&request, &response, cx)
            }
            None => {
                self.state = State::Blocked {
                    request: Box::new(request),
                };
                Step::Continue
            }
        }
    }

    /// Renders the answer; keep-alive or close decides the next state.
    fn respond(&mut self, request: &Request, response: &Response, cx: &mut Context) -> Step {
        // A request in flight when a shutdown began is answered, then the connection closes.
        let keep_alive = request.keep_alive && !response.close && !cx.shutting_down;
        let before = cx.output.len();
        cx.site.render(response, keep_alive, &mut cx.output);
        if cx.config.log {
            let elapsed = cx.now.saturating_duration_since(request.started);
            let bytes = cx.output.len() - before;
            log::access(
                &self.peer.to_string(),
                &request.line,
                response.status,
                bytes,
                elapsed,
            );
        }
        self.state = if !keep_alive {
            // Bytes after the request mean the client is still sending: linger for them.
            let linger = response.close || !cx.input.data().is_empty();
            State::Closing { linger }
        } else if cx.input.data().is_empty() {
            State::Idle {
                deadline: cx.now + cx.config.idle_timeout,
            }
        } else {
            // The next pipelined request is already here.
            State::ReadingHead {
                deadline: cx.now + cx.config.header_timeout,
            }
        };
        Step::Continue
    }

    /// Answers an error and closes: the head could not be parsed, or the client was too slow.
    fn fail(&mut self, response: Response, why: &str, cx: &mut Context) -> Step {
        let before = cx.output.len();
        cx.site.render(&response, false, &mut cx.output);
        if cx.config.log {
            let bytes = cx.output.len() - before;
            let line = format!("<{why}>");
            log::access(
                &self.peer.to_string(),
                &line,
                response.status,
                bytes,
                Duration::ZERO,
            );
        }
        // After a bad request we no longer know where a next one would start: drop the rest.
        cx.input.clear();
        self.state = State::Closing { linger: true };
        Step::Continue
    }

    /// A timer fired: see what this connection's deadline meant.
    fn time_up(&mut self, cx: &mut Context) -> Step {
        // The heap may wake us early (see `crate::timers`): act only on a deadline that passed.
        if self.deadline().is_none_or(|deadline| deadline > cx.now) {
            return Step::Wait;
        }
        if !self.output.is_empty() {
            // The client has not read our answer for a whole header timeout: give up on it.
            return Step::Close;
        }
        match self.state {
            State::ReadingHead { .. } => {
                self.fail(Response::error(408), "request head timed out", cx)
            }
            State::ReadingBody { .. } => {
                self.fail(Response::error(408), "request body timed out", cx)
            }
            // Idle too long: close without an answer, as the contract says.
            State::Idle { .. } | State::Lingering { .. } => Step::Close,
            State::Waiting { .. } => {
                match mem::replace(&mut self.state, State::Closing { linger: false }) {
                    State::Waiting { answer, .. } => {
                        self.respond(&answer.request, &answer.response, cx)
                    }
                    _ => Step::Close,
                }
            }
            State::Blocked { .. } | State::Closing { .. } => Step::Wait,
        }
    }

    /// The deadline of the current state; while answers wait to be written, the write deadline.
    fn deadline(&self) -> Option<Instant> {
        if !self.output.is_empty() {
            return Some(self.write_deadline);
        }
        match &self.state {
            State::ReadingHead { deadline }
            | State::Idle { deadline }
            | State::ReadingBody { deadline, .. } => Some(*deadline),
            State::Waiting { until, .. } | State::Lingering { until } => Some(*until),
            State::Blocked { .. } | State::Closing { .. } => None,
        }
    }

    /// Reads more of the request; `Wait` when the socket has nothing now.
    fn read_more(&mut self, cx: &mut Context) -> Step {
        loop {
            if !self.readable {
                return self.wait_for_input(cx);
            }
            if cx.reads_left == 0 {
                return Step::Yield;
            }
            cx.reads_left -= 1;
            match cx.input.read_from(&self.stream) {
                // The client closed its side: nothing more will come.
                Ok(0) => return self.close_after_output(cx),
                Ok(_) => {
                    if let State::Idle { .. } = self.state {
                        // The first byte of the next request starts its header timeout.
                        let deadline = cx.now + cx.config.header_timeout;
                        self.state = State::ReadingHead { deadline };
                    }
                    return Step::Continue;
                }
                // Edge-triggered: only this tells us we have read everything there is.
                Err(error) if error.kind() == ErrorKind::WouldBlock => self.readable = false,
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                // ECONNRESET and friends: the client is gone.
                Err(_) => return Step::Close,
            }
        }
    }

    fn wait_for_input(&mut self, cx: &mut Context) -> Step {
        let between_requests = matches!(self.state, State::Idle { .. } | State::ReadingHead { .. })
            && cx.input.data().is_empty();
        if cx.shutting_down && between_requests {
            // Shutting down: a connection with no request in flight closes now.
            return self.close_after_output(cx);
        }
        Step::Wait
    }

    /// Closes, after writing the answers already rendered (to pipelined requests).
    fn close_after_output(&mut self, cx: &mut Context) -> Step {
        if cx.output.is_empty() {
            return Step::Close;
        }
        self.state = State::Closing { linger: false };
        Step::Continue
    }

    /// The last answer is rendered: send it, then close or linger.
    fn close_gently(&mut self, linger: bool, cx: &mut Context) -> Step {
        if !cx.output.is_empty() {
            return Step::Flush;
        }
        if !linger && self.client_is_quiet(cx) {
            return Step::Close;
        }
        // Lingering close, like nginx's and `common::connection`'s (RFC 9112 §9.6): closing a
        // socket with unread input makes the kernel send a reset, which can destroy our answer
        // before the client reads it. So send our FIN, then read and drop what the client still
        // sends until it closes too, or `LINGER` passes.
        let _ = self.stream.shutdown(Shutdown::Write);
        self.state = State::Lingering {
            until: cx.now + LINGER,
        };
        Step::Continue
    }

    /// Whether the client has sent nothing we did not read, so that closing at once is safe.
    fn client_is_quiet(&mut self, cx: &mut Context) -> bool {
        if !self.readable {
            return true;
        }
        cx.input.clear();
        match cx.input.read_from(&self.stream) {
            Ok(0) => true,
            Ok(_) => false,
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                self.readable = false;
                true
            }
            Err(error) => error.kind() != ErrorKind::Interrupted,
        }
    }

    /// Lingering: reads and drops input until the client closes.
    fn drain(&mut self, cx: &mut Context) -> Step {
        loop {
            if !self.readable {
                return Step::Wait;
            }
            if cx.reads_left == 0 {
                return Step::Yield;
            }
            cx.reads_left -= 1;
            cx.input.clear();
            match cx.input.read_from(&self.stream) {
                Ok(0) => return Step::Close,
                Ok(_) => {}
                Err(error) if error.kind() == ErrorKind::WouldBlock => self.readable = false,
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Step::Close,
            }
        }
    }

    /// Writes what is owed: first what earlier writes left over, then what was just rendered.
    fn flush(&mut self, cx: &mut Context) -> Flushed {
        if !self.output.is_empty() {
            let unwritten = &self.output[self.written..];
            match write_some(&self.stream, &mut self.writable, unwritten) {
                Ok(written) if written > 0 => {
                    self.written += written;
                    self.write_deadline = cx.now + cx.config.header_timeout;
                }
                Ok(_) => {}
                Err(_) => return Flushed::Failed,
            }
            if self.written < self.output.len() {
                return Flushed::Blocked;
            }
            // All sent: give the memory back, an idle connection keeps no buffer.
            self.output = Vec::new();
            self.written = 0;
        }
        if cx.output.is_empty() {
            return Flushed::All;
        }
        let written = match write_some(&self.stream, &mut self.writable, &cx.output) {
            Ok(written) => written,
            Err(_) => return Flushed::Failed,
        };
        if written == cx.output.len() {
            cx.output.clear();
            return Flushed::All;
        }
        // The client reads slower than we write: keep the rest until the socket drains.
        self.output = cx.output[written..].to_vec();
        self.write_deadline = cx.now + cx.config.header_timeout;
        cx.output.clear();
        Flushed::Blocked
    }
}
