//! Waiting for the upstream's answer head, while watching the client.

use std::time::Duration;

use common::parse::field_slots;
use common::response_head::{ResponseHead, ResponseHeadError, parse_response_head};
use tokio::io::AsyncReadExt;

use super::UpstreamError;
use super::conn::UpstreamConn;
use crate::client::Client;

/// Interim answers (100, 103) accepted before the real one: more is an upstream in a loop.
const MAX_INTERIM: usize = 8;

/// How long an answer's read asks for at once.
const READ: usize = 16 * 1024;

/// Why no answer head came.
pub(crate) enum NoAnswer {
    Upstream(UpstreamError),
    /// The client left while we waited: nobody to answer. Dropping the connection closes it,
    /// and the upstream sees its client go, as we saw ours.
    ClientGone,
}

/// Reads from `conn` until a whole final answer head is in its buffer (interim `1xx` answers
/// are skipped), each read waiting at most `within`, and hands the head to `on_head` with the
/// client's output buffer, for the answer's own head. Returns what `on_head` returned and the
/// length of the head in the buffer. `to_head`: the request was a `HEAD`, whose answer has no
/// body.
///
/// # Errors
///
/// [`NoAnswer`]: the upstream failed, was silent for `within`, or the client left.
pub(crate) async fn read_answer_head<T>(
    conn: &mut UpstreamConn,
    client: &mut Client,
    to_head: bool,
    within: Duration,
    mut on_head: impl FnMut(&ResponseHead<'_, '_>, &mut Vec<u8>) -> T,
) -> Result<(T, usize), NoAnswer> {
    let mut interim = 0;
    loop {
        if !conn.buf.is_empty() {
            let mut slots = field_slots();
            match parse_response_head(&conn.buf, &mut slots, to_head) {
                Ok(Some(head)) if head.is_interim() => {
                    interim += 1;
                    if interim > MAX_INTERIM {
                        let error = ResponseHeadError::Framing("too many interim answers");
                        return Err(NoAnswer::Upstream(UpstreamError::Head(error)));
                    }
                    let len = head.len;
                    conn.buf.drain(..len);
                    continue;
                }
                Ok(Some(head)) => {
                    let value = on_head(&head, &mut client.out);
                    return Ok((value, head.len));
                }
                Ok(None) => {}
                Err(error) => return Err(NoAnswer::Upstream(UpstreamError::Head(error))),
            }
        }
        conn.buf.reserve(READ);
        conn.deadline.set_in(within);
        tokio::select! {
            read = conn.stream.read_buf(&mut conn.buf) => match read {
                Ok(0) => return Err(NoAnswer::Upstream(UpstreamError::Closed)),
                Ok(_) => {}
                Err(error) => return Err(NoAnswer::Upstream(UpstreamError::Receive(error))),
            },
            () = conn.deadline.passed() => return Err(NoAnswer::Upstream(UpstreamError::TimedOut)),
            () = client.gone() => return Err(NoAnswer::ClientGone),
        }
    }
}
