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
//!   and `writable`, and clears one only when the socket has nothing more for it now: a short
//!   read (see `crate::buffers`) or `EWOULDBLOCK`.
//! - What we owe the client goes out before we read more from it. A client that does not read
//!   its answers stops being read from, so it costs at most one buffer of answers, and its next
//!   requests wait in its own socket, not in our memory.
//! - Nothing waits: where the blocking loop slept or blocked, this one sets a deadline
//!   ([`crate::timers`]) and returns.
//!
//! The machine is here; [`request`] holds what it does with requests (head, body, answer) and
//! [`socket`] how it moves bytes (reading, writing, closing).

mod request;
mod socket;

use std::mem;
use std::net::TcpStream;
use std::time::Instant;

use common::exchange::Refusal;
use common::{Response, Site};

use crate::buffers::InputBuffer;
use crate::config::LoopConfig;
use crate::hook::Hook;
use crate::poller::Token;
use crate::timers::Timers;

use request::{Body, Delayed};
use socket::{Flushed, Unsent};

/// Answers to pipelined requests are gathered up to this size, then written with one call.
const OUTPUT_HIGH_WATER: usize = 64 * 1024;

/// Reads one connection may do before the others get their turn.
const READS_PER_TURN: u32 = 16;

/// Everything connections share: owned by the loop, lent to the connection being driven.
pub(crate) struct Context<'s> {
    pub site: &'s Site,
    pub config: LoopConfig,
    pub timers: Timers,
    /// Where blocking work may go (step 06); step 05's, `()`, leaves it on this thread.
    pub hook: Box<dyn Hook + 's>,
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

enum State {
    /// Reading a request head. New connections start here; the deadline is the header timeout.
    ReadingHead { deadline: Instant },
    /// Keep-alive: the last answer is written and nothing of the next request has arrived.
    Idle { deadline: Instant },
    /// Reading and dropping a request body. The deadline limits a pause, not the whole body.
    ReadingBody { body: Box<Body>, deadline: Instant },
    /// The answer is ready but its delay (`/sleep`, `--delay-ms`) has not passed: a timer at
    /// `until`; `None` while the [`Hook`] sleeps it elsewhere (step 06), which ends the wait.
    Waiting {
        answer: Box<Delayed>,
        until: Option<Instant>,
    },
    /// The last answer is being written; then the connection closes, lingering if asked.
    Closing { linger: bool },
    /// Our side is shut down; reading and dropping what the client still sends.
    Lingering { until: Instant },
}

pub(crate) struct Connection {
    stream: TcpStream,
    token: Token,
    /// Tells this connection apart from a later one in the same slot.
    serial: u64,
    state: State,
    /// Bytes read and not yet used, kept between drives: part of a request, or pipelined
    /// requests waiting for their turn. Empty, and unallocated, when there are none.
    input: Vec<u8>,
    /// Answer bytes the socket has not taken yet; `None` unless a client reads slower than we
    /// write. (Boxed: most connections never need it, and an idle one should be small.)
    unsent: Option<Box<Unsent>>,
    /// Readiness reported and not used up yet (edge-triggered: it will not be reported again).
    readable: bool,
    writable: bool,
    /// The client has closed its sending side (the poller said so): read until the 0.
    peer_closed: bool,
    /// `TCP_NODELAY` is set (once the connection stays open for a second request).
    nodelay: bool,
}

impl Connection {
    /// A connection just accepted: its head must arrive within the header timeout. Drive it at
    /// once (see `EventLoop::open`), which also sets its timer.
    pub(crate) fn new(stream: TcpStream, token: Token, serial: u64, cx: &Context) -> Connection {
        Connection {
            stream,
            token,
            serial,
            state: State::ReadingHead {
                deadline: cx.now + cx.config.header_timeout,
            },
            input: Vec::new(),
            unsent: None,
            readable: false,
            // A new socket's send buffer is empty.
            writable: true,
            peer_closed: false,
            nodelay: false,
        }
    }

    pub(crate) fn serial(&self) -> u64 {
        self.serial
    }

    /// Its socket, for the poller.
    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The poller said the client closed its sending side: after what is queued, nothing more.
    pub(crate) fn note_peer_closed(&mut self) {
        self.peer_closed = true;
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

    /// The blocking work it gave the [`Hook`] is over: so is its wait.
    pub(crate) fn on_work_done(&mut self, failed: bool, cx: &mut Context) -> Next {
        if let State::Waiting { answer, until } = &mut self.state {
            *until = Some(cx.now);
            if failed {
                answer.response = Response::error(500);
            }
        }
        self.on_timer(cx)
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
                Step::Continue if self.unsent.is_none() && cx.output.len() < OUTPUT_HIGH_WATER => {}
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
            State::Waiting { .. } => Step::Wait,
            State::Closing { linger } => self.close_gently(linger, cx),
            State::Lingering { .. } => self.drain(cx),
        }
    }

    /// A timer fired: see what this connection's deadline meant.
    fn time_up(&mut self, cx: &mut Context) -> Step {
        // The heap may wake us early (see `crate::timers`): act only on a deadline that passed.
        if self.deadline().is_none_or(|deadline| deadline > cx.now) {
            return Step::Wait;
        }
        if self.unsent.is_some() {
            // The client has not read our answer for a whole header timeout: give up on it.
            return Step::Close;
        }
        match self.state {
            State::ReadingHead { .. } => self.refuse(Refusal::HeadTimedOut, cx),
            State::ReadingBody { .. } => self.refuse(Refusal::BodyTimedOut, cx),
            // Idle too long: close without an answer, as the contract says.
            State::Idle { .. } | State::Lingering { .. } => Step::Close,
            State::Waiting { .. } => {
                match mem::replace(&mut self.state, State::Closing { linger: false }) {
                    State::Waiting { answer, .. } => {
                        self.respond(&answer.exchange, &answer.response, cx)
                    }
                    _ => Step::Close,
                }
            }
            State::Closing { .. } => Step::Wait,
        }
    }

    /// The deadline of the current state; while answers wait to be written, the write deadline.
    fn deadline(&self) -> Option<Instant> {
        if let Some(unsent) = &self.unsent {
            return Some(unsent.deadline);
        }
        match &self.state {
            State::ReadingHead { deadline }
            | State::Idle { deadline }
            | State::ReadingBody { deadline, .. } => Some(*deadline),
            State::Lingering { until } => Some(*until),
            State::Waiting { until, .. } => *until,
            State::Closing { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Connection;

    /// An idle connection costs its slot in the slab and one timer entry, nothing else: no
    /// buffer, no peer address, no request. This keeps the slot small (see
    /// `scripts/memory.py idle` for the whole cost, measured).
    #[test]
    fn an_idle_connection_is_small() {
        let size = size_of::<Option<Connection>>();
        eprintln!("size of a connection slot: {size} bytes");
        assert!(size <= 96, "a connection slot takes {size} bytes");
    }
}
