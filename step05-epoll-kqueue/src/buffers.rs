//! The loop's read buffer, and non-blocking writes.
//!
//! Reading into one buffer that belongs to the loop, rather than one per connection, is what
//! keeps an idle connection small: the connection being driven borrows the loop's buffer, and
//! keeps bytes of its own only when it must hold them across events (part of a head, or
//! pipelined requests waiting for their turn), and then only as many as it has.

use std::io::{self, ErrorKind, Read as _, Write};
use std::net::TcpStream;

/// Size of the loop's read buffer: how much one `read` may take from a socket.
pub(crate) const INPUT_BUFFER_BYTES: usize = 64 * 1024;

/// The loop's read buffer: `bytes[start..end]` are read and not yet used.
pub(crate) struct InputBuffer {
    bytes: Box<[u8]>,
    start: usize,
    end: usize,
}

impl InputBuffer {
    pub(crate) fn new() -> InputBuffer {
        InputBuffer {
            bytes: vec![0; INPUT_BUFFER_BYTES].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// Takes over the bytes a connection kept, leaving it no allocation.
    pub(crate) fn lend(&mut self, kept: &mut Vec<u8>) {
        // `kept` came from `give_back`, so it fits.
        let len = kept.len().min(self.bytes.len());
        self.bytes[..len].copy_from_slice(&kept[..len]);
        (self.start, self.end) = (0, len);
        *kept = Vec::new();
    }

    /// The unused bytes, exactly sized (and unallocated when there are none), for the
    /// connection to keep until it is driven again.
    pub(crate) fn give_back(&mut self) -> Vec<u8> {
        let kept = self.data().to_vec();
        self.clear();
        kept
    }

    pub(crate) fn data(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    pub(crate) fn consume(&mut self, used: usize) {
        self.start = (self.start + used).min(self.end);
    }

    pub(crate) fn clear(&mut self) {
        (self.start, self.end) = (0, 0);
    }

    /// One `read` from `stream` appended to the unused bytes.
    ///
    /// # Errors
    ///
    /// What `read` returns, `WouldBlock` included. The buffer is never full when a connection
    /// asks for more (a head is at most 8 KiB, body bytes are used as they come), but if it
    /// were, this would fail rather than read nothing and look like the end of the stream.
    pub(crate) fn read_from(&mut self, stream: &TcpStream) -> io::Result<Read> {
        if self.start == self.end {
            self.clear();
        } else if self.end == self.bytes.len() {
            self.bytes.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.end == self.bytes.len() {
            return Err(io::Error::other("input buffer full"));
        }
        let room = self.bytes.len() - self.end;
        let read = (&*stream).read(&mut self.bytes[self.end..])?;
        self.end += read;
        Ok(Read {
            bytes: read,
            drained: read < room,
        })
    }
}

/// What one `read` got.
pub(crate) struct Read {
    pub(crate) bytes: usize,
    /// It got less than there was room for, so it took everything the socket had queued.
    ///
    /// A TCP `read` returns what is queued, up to the room given; a short count means the queue
    /// is empty now. Bytes that arrive later make a new edge, so the poller reports the socket
    /// again: no need to call `read` once more just to see `EWOULDBLOCK`, as nginx does not
    /// either. This saves a system call per request. The one thing a short read does not say
    /// is whether the client also closed its side; the poller's `read_closed` does.
    pub(crate) drained: bool,
}

/// Writes as much of `bytes` as `stream` takes now and returns how much that was. A short
/// count means the socket's send buffer is full: `writable` is then cleared, and the poller
/// will report the socket when it drains.
///
/// # Errors
///
/// The client is gone (`EPIPE`, `ECONNRESET`). Rust ignores `SIGPIPE`, so a write to a closed
/// socket returns an error here instead of killing the process.
pub(crate) fn write_some(
    stream: &TcpStream,
    writable: &mut bool,
    bytes: &[u8],
) -> io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() && *writable {
        match (&*stream).write(&bytes[written..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(count) => written += count,
            Err(error) if error.kind() == ErrorKind::WouldBlock => *writable = false,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_bytes_go_back_exactly_sized() {
        let mut buffer = InputBuffer::new();
        let mut kept = b"GET / HT".to_vec();
        buffer.lend(&mut kept);
        assert!(kept.is_empty() && kept.capacity() == 0);
        assert_eq!(buffer.data(), b"GET / HT");
        buffer.consume(4);
        let kept = buffer.give_back();
        assert_eq!((kept.as_slice(), kept.capacity()), (&b"/ HT"[..], 4));
        assert!(buffer.data().is_empty());
        assert_eq!(buffer.give_back().capacity(), 0);
    }
}
