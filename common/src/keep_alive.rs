//! What a connection does once an answer is written: serve the next request, close, or close
//! lingering. One decision, without I/O, for every step: the blocking loop, the event loop and
//! the proxy only carry it out, each in its own way of waiting.
//!
//! Keeping a connection open is the client's wish (its version and `Connection` field, see
//! [`crate::parse::keeps_alive`]) that the server may refuse: after an error that leaves the
//! end of the request unknown, at shutdown, or when it did not read the whole body. Closing
//! has its own trap (RFC 9112 §9.6): closing a socket that still holds unread input makes the
//! kernel send a reset, which can destroy the answer before the client has read it. So when
//! the client may still be sending, the server closes *lingering*, as nginx does: it stops
//! sending, then reads and drops what still comes until the client closes too, or [`LINGER`]
//! passes.

use std::time::Duration;

/// How long a lingering close reads and drops what the client still sends (nginx's
/// `lingering_time` is 30 s, with a 5 s `lingering_timeout` between reads; a client that reads
/// its answer closes within a round trip, so ours is short).
pub const LINGER: Duration = Duration::from_secs(2);

/// What the connection does after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Read the next request (it may be in the buffer already: pipelining).
    KeepAlive,
    /// Close. A driver that finds input waiting after all (a request sent after a
    /// `Connection: close` one) lingers instead.
    Close,
    /// Stop sending, read and drop what the client still sends until it closes, or [`LINGER`]
    /// passes; then close.
    Linger,
}

/// What decides [`After`] for one answer; [`Answered::after`] decides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Answered {
    /// The client asked to keep the connection open (`RequestHead::keep_alive`).
    pub wanted: bool,
    /// The answer ends the connection whatever was asked: an error after which where the next
    /// request starts is unknown (`Response::close`), a body not read whole, a body that ends
    /// when we close.
    pub closes: bool,
    /// The server is shutting down: answer what is in flight, then close.
    pub shutting_down: bool,
    /// The client may still be sending: bytes of it wait unread (after the request, or a body
    /// not read whole), or an error left the end of its request unknown.
    pub unread: bool,
}

impl Answered {
    /// Keep-alive when the client wants it and nothing stops it; otherwise close, lingering
    /// when the client may still be sending.
    pub fn after(&self) -> After {
        if self.wanted && !self.closes && !self.shutting_down {
            After::KeepAlive
        } else if self.unread {
            After::Linger
        } else {
            After::Close
        }
    }

    /// Whether the answer says `Connection: keep-alive` (else `close`).
    pub fn keeps_alive(&self) -> bool {
        self.after() == After::KeepAlive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_kept_only_when_asked_and_nothing_stops_it() {
        let asked = Answered {
            wanted: true,
            ..Answered::default()
        };
        assert_eq!(asked.after(), After::KeepAlive);
        // Pipelined bytes are the next request, not a reason to close.
        let pipelined = Answered {
            unread: true,
            ..asked
        };
        assert_eq!(pipelined.after(), After::KeepAlive);
        assert!(pipelined.keeps_alive());
        assert_eq!(Answered::default().after(), After::Close);
        let shutting_down = Answered {
            shutting_down: true,
            ..asked
        };
        assert_eq!(shutting_down.after(), After::Close);
    }

    #[test]
    fn a_close_lingers_when_the_client_may_still_be_sending() {
        let error = Answered {
            wanted: true,
            closes: true,
            unread: true,
            ..Answered::default()
        };
        assert_eq!(error.after(), After::Linger);
        assert!(!error.keeps_alive());
        let bytes_after_a_close = Answered {
            unread: true,
            ..Answered::default()
        };
        assert_eq!(bytes_after_a_close.after(), After::Linger);
        let closing_answer = Answered {
            wanted: true,
            closes: true,
            ..Answered::default()
        };
        assert_eq!(closing_answer.after(), After::Close);
    }
}
