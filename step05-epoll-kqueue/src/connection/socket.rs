//! How a connection moves bytes: reading until the socket is drained, writing what it takes,
//! and closing, gently when the client may still be sending.

use std::io::ErrorKind;
use std::net::Shutdown;
use std::time::Instant;

use common::keep_alive::LINGER;

use super::{Connection, Context, State, Step};
use crate::buffers::write_some;

/// Answer bytes a slow reader has not taken yet.
pub(super) struct Unsent {
    bytes: Vec<u8>,
    /// How much of `bytes` is written.
    written: usize,
    /// When we give up on a client that does not read: a header timeout without progress.
    pub(super) deadline: Instant,
}

/// What a write attempt achieved.
pub(super) enum Flushed {
    All,
    Blocked,
    Failed,
}

impl Connection {
    // EXERCISE: read-until-drained - read until a short read or EWOULDBLOCK shows the socket empty
    /// Reads more of the request; `Wait` when the socket has nothing now.
    pub(super) fn read_more(&mut self, cx: &mut Context) -> Step {
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
                Ok(read) if read.bytes == 0 => return self.close_after_output(cx),
                Ok(read) => {
                    // Everything queued is read; unless the client also closed (then the next
                    // read returns 0 and says so), wait for the poller's next report.
                    self.readable = !read.drained || self.peer_closed;
                    if let State::Idle { .. } = self.state {
                        // The first byte of the next request starts its header timeout.
                        let deadline = cx.now + cx.config.header_timeout;
                        self.state = State::ReadingHead { deadline };
                    }
                    return Step::Continue;
                }
                // Nothing was queued after all (the last read filled the buffer exactly, or the
                // report was for bytes already read): wait for the next edge.
                Err(error) if error.kind() == ErrorKind::WouldBlock => self.readable = false,
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                // ECONNRESET and friends: the client is gone.
                Err(_) => return Step::Close,
            }
        }
    }
    // EXERCISE END

    fn wait_for_input(&mut self, cx: &mut Context) -> Step {
        if cx.shutting_down && matches!(self.state, State::Idle { .. }) {
            // Shutting down: a keep-alive connection waiting for its next request closes now.
            // A new connection waiting for its first one does not (nginx does the same): its
            // client connected to send a request, which may be on its way already. When a
            // step06 reload retires a worker just after it accepted, closing would reset that
            // client for nothing. The header timeout and the grace period bound the wait.
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
    pub(super) fn close_gently(&mut self, linger: bool, cx: &mut Context) -> Step {
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
            Ok(read) => read.bytes == 0,
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                self.readable = false;
                true
            }
            // A reset: nothing left to linger for. Interrupted: we do not know, so linger.
            Err(error) => error.kind() != ErrorKind::Interrupted,
        }
    }

    /// Lingering: reads and drops input until the client closes.
    pub(super) fn drain(&mut self, cx: &mut Context) -> Step {
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
                Ok(read) if read.bytes == 0 => return Step::Close,
                Ok(read) => self.readable = !read.drained || self.peer_closed,
                Err(error) if error.kind() == ErrorKind::WouldBlock => self.readable = false,
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Step::Close,
            }
        }
    }

    /// Writes what is owed: first what earlier writes left over, then what was just rendered.
    pub(super) fn flush(&mut self, cx: &mut Context) -> Flushed {
        if let Some(unsent) = &mut self.unsent {
            let rest = &unsent.bytes[unsent.written..];
            match write_some(&self.stream, &mut self.writable, rest) {
                Ok(0) => {}
                Ok(written) => {
                    unsent.written += written;
                    unsent.deadline = cx.now + cx.config.header_timeout;
                }
                Err(_) => return Flushed::Failed,
            }
            if unsent.written < unsent.bytes.len() {
                return Flushed::Blocked;
            }
            // All sent: give the memory back, an idle connection keeps no buffer.
            self.unsent = None;
        }
        if cx.output.is_empty() {
            return Flushed::All;
        }
        let written = match write_some(&self.stream, &mut self.writable, &cx.output) {
            Ok(written) => written,
            Err(_) => return Flushed::Failed,
        };
        if written < cx.output.len() {
            // The client reads slower than we write: keep the rest until the socket drains.
            self.unsent = Some(Box::new(Unsent {
                bytes: cx.output[written..].to_vec(),
                written: 0,
                deadline: cx.now + cx.config.header_timeout,
            }));
        }
        cx.output.clear();
        if self.unsent.is_some() {
            Flushed::Blocked
        } else {
            Flushed::All
        }
    }
}
