//! What a connection does with a request: parse its head, drop its body, then answer it now,
//! after a timer, or after blocking work.

use std::mem;
use std::thread;
use std::time::{Duration, Instant};

use common::chunked::ChunkedDecoder;
use common::log;
use common::parse::{BodyFraming, parse_head};
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
    left: BodyLeft,
    /// Its delay is blocking work (`/sleep` under `--blocking-sleep`).
    blocking: bool,
}

pub(super) enum BodyLeft {
    Length(u64),
    Chunked(ChunkedDecoder),
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
    pub(super) fn read_body(&mut self, cx: &mut Context) -> Step {
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
        // A request in flight when a shutdown began is answered, then the connection closes.
        let keep_alive = request.keep_alive && !response.close && !cx.shutting_down;
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
    pub(super) fn fail(&mut self, response: Response, why: &str, cx: &mut Context) -> Step {
        let before = cx.output.len();
        cx.site.render(&response, false, &mut cx.output);
        if cx.config.log {
            let bytes = cx.output.len() - before;
            let line = format!("<{why}>");
            log::access(&self.peer(), &line, response.status, bytes, Duration::ZERO);
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
