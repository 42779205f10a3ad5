//! What a connection does with a request: parse its head, drop its body, then answer it now,
//! after a timer, or after blocking work. What the bytes mean is `common::exchange`'s part, as
//! in the blocking loop of steps 01–04: only the waiting differs.

use std::mem;
use std::thread;
use std::time::Instant;

use common::exchange::{Exchange, Refusal};
use common::keep_alive::After;
use common::log::PeerOf;
use common::parse::parse_head;
use common::{Reply, Response};

use super::{Connection, Context, State, Step};
use crate::hook::{Work, WorkId};

/// A request whose body is still arriving.
pub(super) struct Body {
    exchange: Exchange,
    reply: Reply,
    /// Its delay is blocking work (`/sleep` under `--blocking-sleep`).
    blocking: bool,
}

/// An answer waiting for its delay to pass.
pub(super) struct Delayed {
    pub(super) exchange: Exchange,
    pub(super) response: Response,
}

impl Connection {
    /// Parses the head that arrived, or reads more of it.
    pub(super) fn read_head(&mut self, cx: &mut Context) -> Step {
        let head = match parse_head(cx.input.data()) {
            Ok(Some(head)) => head,
            Ok(None) => return self.read_more(cx),
            Err(error) => return self.refuse(Refusal::Head(error), cx),
        };
        // `head` borrows the read buffer: take what we need from it, then drop its bytes.
        let reply = cx.site.reply(&head);
        let mut exchange = Exchange::new(&head, cx.config.log, cx.now);
        let blocking =
            cx.config.blocking_sleep && head.path() == "/sleep" && !reply.delay.is_zero();
        cx.input.consume(head.len);

        if exchange.body_done() {
            return self.dispatch(exchange, reply, blocking, cx);
        }
        if let Some(interim) = exchange.go_ahead(cx.input.data()) {
            // The client waits for it before it sends the body.
            cx.output.extend_from_slice(interim);
        }
        let body = Box::new(Body {
            exchange,
            reply,
            blocking,
        });
        let deadline = cx.now + cx.config.header_timeout;
        self.state = State::ReadingBody { body, deadline };
        Step::Continue
    }

    /// Uses the body bytes that arrived; the answer is due once the body has ended.
    pub(super) fn read_body(&mut self, cx: &mut Context) -> Step {
        let State::ReadingBody { body, deadline } = &mut self.state else {
            return Step::Wait;
        };
        let used = match body.exchange.read_body(cx.input.data()) {
            Ok(used) => used,
            Err(refusal) => return self.refuse(refusal, cx),
        };
        cx.input.consume(used);
        if !body.exchange.body_done() {
            if used > 0 {
                *deadline = cx.now + cx.config.header_timeout;
            }
            return self.read_more(cx);
        }
        match mem::replace(&mut self.state, State::Closing { linger: false }) {
            State::ReadingBody { body, .. } => {
                let Body {
                    exchange,
                    reply,
                    blocking,
                } = *body;
                self.dispatch(exchange, reply, blocking, cx)
            }
            _ => Step::Close,
        }
    }

    /// The request is read: answer now, after a timer, or after blocking work.
    fn dispatch(
        &mut self,
        exchange: Exchange,
        reply: Reply,
        blocking: bool,
        cx: &mut Context,
    ) -> Step {
        let Reply { response, delay } = reply;
        if delay.is_zero() {
            return self.respond(&exchange, &response, cx);
        }
        let until = if !blocking {
            // This is the whole step in one line: the delay is a deadline, and the loop serves
            // everyone else until it comes. The blocking steps slept here.
            Some(cx.now + delay)
        } else {
            // `--blocking-sleep`: the delay is a blocking call.
            let sleep: Work = Box::new(move || thread::sleep(delay));
            let id = WorkId {
                token: self.token,
                serial: self.serial,
            };
            match cx.hook.offload(id, sleep) {
                // Step 06: a thread pool sleeps instead of us, and the loop hears when it is done.
                Ok(()) => None,
                // Here it is made on the loop's one thread. Every other client waits for it, and
                // so does our clock.
                Err(sleep) => {
                    sleep();
                    cx.now = Instant::now();
                    return self.respond(&exchange, &response, cx);
                }
            }
        };
        let answer = Box::new(Delayed { exchange, response });
        self.state = State::Waiting { answer, until };
        Step::Continue
    }

    /// Renders the answer; keep-alive or close decides the next state.
    pub(super) fn respond(
        &mut self,
        exchange: &Exchange,
        response: &Response,
        cx: &mut Context,
    ) -> Step {
        let after = exchange.answer(
            cx.site,
            response,
            // A request in flight when a shutdown began is answered, then the connection closes.
            cx.shutting_down,
            !cx.input.data().is_empty(),
            &mut cx.output,
            // The client's address is asked of the kernel only if a log line is written: an
            // idle connection carries nothing it does not need.
            &PeerOf(&self.stream),
        );
        if after == After::KeepAlive && !self.nodelay {
            // Nagle's algorithm holds back a small write while an earlier one is unacknowledged,
            // which can delay the answers of a connection that stays open. Like nginx, we turn it
            // off only then: a connection closed after one answer never needs the system call.
            let _ = self.stream.set_nodelay(true);
            self.nodelay = true;
        }
        self.state = match after {
            After::Close => State::Closing { linger: false },
            After::Linger => State::Closing { linger: true },
            After::KeepAlive if cx.input.data().is_empty() => State::Idle {
                deadline: cx.now + cx.config.idle_timeout,
            },
            // The next pipelined request is already here.
            After::KeepAlive => State::ReadingHead {
                deadline: cx.now + cx.config.header_timeout,
            },
        };
        Step::Continue
    }

    /// Answers an error and closes: the head could not be parsed, or the client was too slow.
    pub(super) fn refuse(&mut self, refusal: Refusal, cx: &mut Context) -> Step {
        let peer = PeerOf(&self.stream);
        let after = refusal.answer(cx.site, cx.config.log, &mut cx.output, &peer);
        // After a bad request we no longer know where a next one would start: drop the rest.
        cx.input.clear();
        self.state = State::Closing {
            linger: after == After::Linger,
        };
        Step::Continue
    }
}
