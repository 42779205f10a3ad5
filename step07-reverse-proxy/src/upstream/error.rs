//! What can go wrong with an upstream before its answer reaches the client, and what the
//! client is told: 504 for what took too long, 502 for the rest, 500 when the proxy itself
//! is out of descriptors.

use std::error::Error;
use std::fmt;
use std::io;

use common::response_head::ResponseHeadError;

/// Why an exchange with an upstream failed.
#[derive(Debug)]
pub(crate) enum UpstreamError {
    /// Connecting failed: refused, unreachable, or no socket (out of descriptors).
    Connect(io::Error),
    /// No connection within `connect_timeout_ms`.
    ConnectTimedOut,
    /// Writing the request failed: the connection was reset or closed.
    Send(io::Error),
    /// The upstream took none of the request for `read_timeout_ms`.
    SendTimedOut,
    /// Reading the answer failed: the connection was reset.
    Receive(io::Error),
    /// The connection closed before a whole answer head arrived.
    Closed,
    /// No answer for `read_timeout_ms`.
    TimedOut,
    /// An answer head we do not pass on (malformed, oversized, ambiguous framing).
    Head(ResponseHeadError),
    /// `101 Switching Protocols` to a request that asked for no upgrade.
    UnaskedUpgrade,
    /// An answer body that is not what its head announced (bad chunks, cut short).
    Body(common::body::BodyError),
    /// `--upstream-client reqwest`: the general-purpose client's error.
    Reqwest(reqwest::Error),
}

impl UpstreamError {
    /// Took too long (504), rather than broke (502).
    pub fn is_timeout(&self) -> bool {
        match self {
            UpstreamError::ConnectTimedOut
            | UpstreamError::SendTimedOut
            | UpstreamError::TimedOut => true,
            UpstreamError::Reqwest(error) => error.is_timeout(),
            _ => false,
        }
    }

    /// No connection could be made: the request never left.
    pub fn is_connect(&self) -> bool {
        match self {
            UpstreamError::Connect(_) | UpstreamError::ConnectTimedOut => true,
            UpstreamError::Reqwest(error) => error.is_connect(),
            _ => false,
        }
    }

    /// What an idle connection that the upstream closed looks like when it is used: the write
    /// or the read fails, or the read finds the end, before any byte of an answer.
    pub fn is_stale_connection(&self) -> bool {
        matches!(
            self,
            UpstreamError::Send(_) | UpstreamError::Receive(_) | UpstreamError::Closed
        )
    }

    /// Ours, not the upstream's: the proxy ran out of file descriptors (`EMFILE`, `ENFILE`)
    /// and could not even create the socket. Blaming the upstream would eject a healthy one,
    /// and every other with it, until the checks bring them back seconds later. nginx does
    /// not count a failed `socket()` against the peer either.
    pub fn is_out_of_descriptors(&self) -> bool {
        out_of_descriptors(self)
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Connect(error) => write!(f, "cannot connect: {error}"),
            UpstreamError::ConnectTimedOut => {
                f.write_str("no connection within the connect timeout")
            }
            UpstreamError::Send(error) => write!(f, "cannot send the request: {error}"),
            UpstreamError::SendTimedOut => {
                f.write_str("took none of the request within the read timeout")
            }
            UpstreamError::Receive(error) => write!(f, "cannot read the answer: {error}"),
            UpstreamError::Closed => f.write_str("closed the connection before answering"),
            UpstreamError::TimedOut => f.write_str("no answer within the read timeout"),
            UpstreamError::Head(error) => write!(f, "{error}: refused"),
            UpstreamError::UnaskedUpgrade => {
                f.write_str("status 101 to a request without Upgrade: refused")
            }
            UpstreamError::Body(error) => write!(f, "answer cut off: {error}"),
            // reqwest's own message is only the outermost layer ("error sending request"): the
            // causes say what happened ("connection refused"), on the same line.
            UpstreamError::Reqwest(error) => {
                write!(f, "{error}")?;
                let mut source = error.source();
                while let Some(cause) = source {
                    write!(f, ": {cause}")?;
                    source = cause.source();
                }
                Ok(())
            }
        }
    }
}

impl Error for UpstreamError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            UpstreamError::Connect(error)
            | UpstreamError::Send(error)
            | UpstreamError::Receive(error) => Some(error),
            UpstreamError::Head(error) => Some(error),
            UpstreamError::Body(error) => Some(error),
            UpstreamError::Reqwest(error) => Some(error),
            _ => None,
        }
    }
}

/// Whether `error` or one of its causes is `EMFILE` or `ENFILE`.
pub(crate) fn out_of_descriptors(error: &(dyn Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(cause) = next {
        if let Some(io) = cause.downcast_ref::<io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
        {
            return true;
        }
        next = cause.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_one_line_and_keep_their_cause() {
        let error = UpstreamError::Connect(io::Error::from_raw_os_error(libc::EMFILE));
        assert!(error.is_out_of_descriptors() && error.is_connect() && !error.is_timeout());
        assert!(error.source().is_some());
        assert!(!error.to_string().contains('\n'));
        let refused = UpstreamError::Connect(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(!refused.is_out_of_descriptors());
        assert!(UpstreamError::TimedOut.is_timeout());
        assert!(UpstreamError::Closed.is_stale_connection());
        assert!(!UpstreamError::TimedOut.is_stale_connection());
    }
}
