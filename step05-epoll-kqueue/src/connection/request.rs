//! What a connection does with a request: parse its head, drop its body, then answer it now,
//! after a timer, or after blocking work.

use std::mem;
use std::thread;
use std::time::Instant;

use common::body::BodyDecoder;
use common::keep_alive::{After, Answered};
use common::log;
use common::parse::parse_head;
use common::response::go_ahead;
use common::{Reply, Response};

use super::{Connection, Context, State, Step};
use crate::offload::Ticket;

/// What the connection keeps of a request until it is answered.
pub(super) struct Request {
    keep_alive: bool,
    /// `GET / HTTP/1.1`, for the access log (empty when not logging).
    line: String,
    /// When its head was complete, for the access log.
    started: Instant,
}

/// A request whose body is still arriving.
pub(super) struct Body {
    request: Request,
    reply: Reply,
    decoder: BodyDecoder,
    /// Its delay is blocking work (`/sleep` under `--blocking-sleep`).
    blocking: bool,
}

/// An answer waiting for its delay to pass.
pub(super) struct Delayed {
    pub(super) request: Request,
    pub(super) response: Response,
}

impl Connection {
    /// Parses the head that arrived, or reads more of it.
    pub(super) fn read_head(&mut self, cx: &mut Context) -> Step {
        let head = match parse_head(cx.input.data()) {
            Ok(Some(head)) => head,
            Ok(None) => return self.read_more(cx),
            Err(error) => return self.fail(cx.site.parse_error(error), &error.to_string(), cx),
        };
        // `head` borrows the read buffer: take what we need from it, then drop its bytes.
        let reply = cx.site.reply(&head);
        let request = Request {
            keep_alive: head.keep_alive,
            line: if cx.config.log {
                head.request_line()
            } else {
                String::new()
            },
            started: cx.now,
        };
        let blocking =
            cx.config.blocking_sleep && head.path() == "/sleep" && !reply.delay.is_zero();
        let (framing, expect_continue) = (head.body, head.expect_continue);
        cx.input.consume(head.len);

        let decoder = BodyDecoder::new(framing.into());
        if decoder.is_done() {
            return self.dispatch(request, reply, blocking, cx);
        }
        if let Some(interim) = go_ahead(expect_continue, cx.input.data()) {
            // The client waits for it before it sends the body.
            cx.output.extend_from_slice(interim);
        }
        let body = Box::new(Body {
            request,
            reply,
            decoder,
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
        let used = match body.decoder.decode(cx.input.data(), |_| {}) {
            Ok(used) => used,
            Err(_) => return self.fail(Response::error(400), "bad chunked body", cx),
        };
        cx.input.consume(used);
        if !body.decoder.is_done() {
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
        let until = if !blocking {
            // This is the whole step in one line: the delay is a deadline, and the loop serves
            // everyone else until it comes. The blocking steps slept here.
            Some(cx.now + delay)
        } else if let Some(offload) = &mut cx.offload {
            // Step 06: a thread pool sleeps instead of us, and the loop hears when it is done.
            let ticket = Ticket {
                token: self.token,
                serial: self.serial,
            };
            offload.start(ticket, Box::new(move || thread::sleep(delay)));
            None
        } else {
            // `--blocking-sleep`: a blocking call on the loop's one thread. Every other client
            // waits for it, and so does our clock.
            thread::sleep(delay);
            cx.now = Instant::now();
            return self.respond(&request, &response, cx);
        };
        let answer = Box::new(Delayed { request, response });
        self.state = State::Waiting { answer, until };
        Step::Continue
    }

    /// Renders the answer; keep-alive or close decides the next state.
    pub(super) fn respond(
        &mut self,
        request: &Request,
        response: &Response,
        cx: &mut Context,
    ) -> Step {
        let answered = Answered {
            wanted: request.keep_alive,
            closes: response.close,
            // A request in flight when a shutdown began is answered, then the connection closes.
            shutting_down: cx.shutting_down,
            unread: response.close || !cx.input.data().is_empty(),
        };
        let keep_alive = answered.keeps_alive();
        if keep_alive && !self.nodelay {
            // Nagle's algorithm holds back a small write while an earlier one is unacknowledged,
            // which can delay the answers of a connection that stays open. Like nginx, we turn it
            // off only then: a connection closed after one answer never needs the system call.
            let _ = self.stream.set_nodelay(true);
            self.nodelay = true;
        }
        let before = cx.output.len();
        cx.site.render(response, keep_alive, &mut cx.output);
        if cx.config.log {
            let elapsed = cx.now.saturating_duration_since(request.started);
            let bytes = cx.output.len() - before;
            log::access(&self.peer(), &request.line, response.status, bytes, elapsed);
        }
        self.state = match answered.after() {
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
    pub(super) fn fail(&mut self, response: Response, why: &str, cx: &mut Context) -> Step {
        let before = cx.output.len();
        cx.site.render(&response, false, &mut cx.output);
        if cx.config.log {
            let bytes = cx.output.len() - before;
            log::refused(&self.peer(), why, response.status, bytes);
        }
        // After a bad request we no longer know where a next one would start: drop the rest.
        cx.input.clear();
        self.state = State::Closing { linger: true };
        Step::Continue
    }

    /// The client's address, for the access log. Asked of the kernel when a line is written
    /// rather than kept: an idle connection carries nothing it does not need.
    fn peer(&self) -> String {
        self.stream
            .peer_addr()
            .map_or_else(|_| String::from("-"), |address| address.to_string())
    }
}
