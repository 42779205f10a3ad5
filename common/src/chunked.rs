//! `Transfer-Encoding: chunked` (RFC 9112 §7.1): an incremental decoder, and the two writers
//! that frame data the same way.
//!
//! Like the head parser the decoder is pure: feed it whatever bytes arrived and it says how
//! many it consumed and whether the body has ended. The bytes after the last chunk belong to
//! the next message, so the decoder never consumes past the end of its body. Framing is strict
//! (CRLF line ends, bounded sizes and extensions): a lenient chunk parser is how request
//! smuggling slips a second request past a front end. The trailer section after the last chunk
//! is kept as received ([`ChunkedDecoder::trailers`]), for a proxy that passes it on.

use std::fmt;

/// The most hex digits a chunk size may have: 16 digits already reach `u64::MAX`.
const MAX_SIZE_DIGITS: u32 = 16;
/// The most bytes of chunk extensions on one size line.
const MAX_EXTENSION_BYTES: usize = 4096;
/// The most bytes of trailer fields after the last chunk.
const MAX_TRAILER_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex size of the next chunk.
    Size {
        size: u64,
        digits: u32,
    },
    /// Skipping `;name=value` extensions up to the CR of the size line.
    Extension {
        size: u64,
        bytes: usize,
    },
    /// Expecting the LF that ends the size line.
    SizeLf {
        size: u64,
    },
    /// Inside a chunk's data, this many bytes left.
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    TrailerLine,
    TrailerLf,
    FinalLf,
    Done,
}

/// Decodes one chunked body; make a new one per message.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// The trailer fields' lines, each ending in CRLF (empty without trailers: no allocation).
    trailers: Vec<u8>,
}

/// The body is not valid chunked framing. The connection must close: we no longer know where
/// the next request starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkedError(&'static str);

impl fmt::Display for ChunkedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad chunked body: {}", self.0)
    }
}

impl std::error::Error for ChunkedError {}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size { size: 0, digits: 0 },
            trailers: Vec::new(),
        }
    }

    /// Whether the last chunk and the trailer section have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The trailer section, field lines as received, each ending in CRLF; empty when the body
    /// had none. Only field lines' framing is checked here: see
    /// [`crate::body::for_each_trailer`] for their syntax.
    pub fn trailers(&self) -> &[u8] {
        &self.trailers
    }

    /// Consumes framing and data from `input`, handing chunk data to `on_data`, and returns how
    /// many bytes of `input` it consumed. It stops early only at the end of the body.
    ///
    /// # Errors
    ///
    /// [`ChunkedError`] on the first byte that cannot be chunked framing.
    pub fn feed(
        &mut self,
        input: &[u8],
        mut on_data: impl FnMut(&[u8]),
    ) -> Result<usize, ChunkedError> {
        let mut at = 0;
        while at < input.len() && self.state != State::Done {
            if let State::Data { left } = self.state {
                // Chunk data is handed on in bulk, not byte by byte.
                let take = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(input.len() - at);
                on_data(&input[at..at + take]);
                at += take;
                let left = left - take as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data { left }
                };
                continue;
            }
            self.state = self.step(input[at])?;
            at += 1;
        }
        Ok(at)
    }

    /// One byte of framing (everything except chunk data).
    fn step(&mut self, byte: u8) -> Result<State, ChunkedError> {
        Ok(match (self.state, byte) {
            (State::Size { size, digits }, _) if byte.is_ascii_hexdigit() => {
                if digits == MAX_SIZE_DIGITS {
                    return Err(ChunkedError("chunk size too large"));
                }
                let digit = u64::from((byte as char).to_digit(16).unwrap_or(0));
                State::Size {
                    size: size << 4 | digit,
                    digits: digits + 1,
                }
            }
            (State::Size { digits: 0, .. }, _) => return Err(ChunkedError("missing chunk size")),
            (State::Size { size, .. }, b';' | b' ' | b'\t') => State::Extension { size, bytes: 1 },
            (State::Size { size, .. }, b'\r') => State::SizeLf { size },
            (State::Size { .. }, _) => return Err(ChunkedError("invalid chunk size")),
            (State::Extension { size, .. }, b'\r') => State::SizeLf { size },
            (State::Extension { .. }, b'\n') => return Err(ChunkedError("bare LF")),
            (State::Extension { bytes, .. }, _) if bytes >= MAX_EXTENSION_BYTES => {
                return Err(ChunkedError("chunk extension too long"));
            }
            (State::Extension { size, bytes }, _) => State::Extension {
                size,
                bytes: bytes + 1,
            },
            (State::SizeLf { size: 0 }, b'\n') => State::TrailerStart,
            (State::SizeLf { size }, b'\n') => State::Data { left: size },
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataCr, _) => return Err(ChunkedError("chunk longer than its size")),
            (State::DataLf, b'\n') => State::Size { size: 0, digits: 0 },
            (State::TrailerStart, b'\r') => State::FinalLf,
            (State::TrailerLine, b'\r') => State::TrailerLf,
            (State::TrailerStart | State::TrailerLine, b'\n') => {
                return Err(ChunkedError("bare LF"));
            }
            (State::TrailerStart | State::TrailerLine, _) => {
                if self.trailers.len() >= MAX_TRAILER_BYTES {
                    return Err(ChunkedError("trailer section too large"));
                }
                self.trailers.push(byte);
                State::TrailerLine
            }
            (State::TrailerLf, b'\n') => {
                self.trailers.extend_from_slice(b"\r\n");
                State::TrailerStart
            }
            (State::FinalLf, b'\n') => State::Done,
            _ => return Err(ChunkedError("expected CRLF")),
        })
    }
}

/// Appends `data` as one chunk. Empty data writes nothing: an empty chunk would be the last.
pub fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut size = data.len();
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[size % 16];
        size /= 16;
        if size == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends the last chunk, the `trailers` (field lines each ending in CRLF, as
/// [`ChunkedDecoder::trailers`] keeps them) and the blank line that ends the body.
pub fn write_last_chunk(out: &mut Vec<u8>, trailers: &[u8]) {
    out.extend_from_slice(b"0\r\n");
    out.extend_from_slice(trailers);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8]) -> Result<(Vec<u8>, usize, bool), ChunkedError> {
        let mut decoder = ChunkedDecoder::new();
        let mut data = Vec::new();
        let used = decoder.feed(input, |bytes| data.extend_from_slice(bytes))?;
        Ok((data, used, decoder.is_done()))
    }

    #[test]
    fn decodes_chunks_and_stops_at_the_end_of_the_body() {
        let input = b"5\r\nhello\r\n7;name=v\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\nGET / HTTP/1.1";
        let (data, used, done) = decode(input).unwrap();
        assert_eq!(data, b"hello, world");
        assert!(done);
        assert_eq!(&input[used..], b"GET / HTTP/1.1");
    }

    #[test]
    fn keeps_the_trailers_as_received() {
        let input = b"2\r\nhi\r\n0\r\nX-Sum: 1\r\nX-Two: b c\r\n\r\n";
        let mut decoder = ChunkedDecoder::new();
        let used = decoder.feed(input, |_| {}).unwrap();
        assert_eq!(used, input.len());
        assert_eq!(decoder.trailers(), b"X-Sum: 1\r\nX-Two: b c\r\n");
        let (_, _, done) = decode(b"0\r\n\r\n").unwrap();
        assert!(done);
        assert!(ChunkedDecoder::new().trailers().is_empty());
    }

    #[test]
    fn what_the_writers_write_the_decoder_reads() {
        let mut out = Vec::new();
        write_chunk(&mut out, b"hello");
        write_chunk(&mut out, &[7u8; 300]);
        write_chunk(&mut out, b"");
        write_last_chunk(&mut out, b"X-Sum: 9\r\n");
        assert!(out.starts_with(b"5\r\nhello\r\n12c\r\n"));
        let mut decoder = ChunkedDecoder::new();
        let mut data = Vec::new();
        assert_eq!(
            decoder.feed(&out, |d| data.extend_from_slice(d)),
            Ok(out.len())
        );
        assert!(decoder.is_done());
        assert_eq!(data.len(), 305);
        assert_eq!(decoder.trailers(), b"X-Sum: 9\r\n");
    }

    #[test]
    fn decodes_the_same_byte_by_byte() {
        let input = b"A\r\n0123456789\r\n0\r\n\r\n";
        let mut decoder = ChunkedDecoder::new();
        let mut data = Vec::new();
        for byte in input.chunks(1) {
            assert_eq!(
                decoder.feed(byte, |b| data.extend_from_slice(b)).unwrap(),
                1
            );
        }
        assert!(decoder.is_done());
        assert_eq!(data, b"0123456789");
    }

    #[test]
    fn an_unfinished_body_is_not_done() {
        let (_, used, done) = decode(b"5\r\nhel").unwrap();
        assert_eq!(used, 6);
        assert!(!done);
    }

    #[test]
    fn refuses_bad_framing() {
        for bad in [
            &b"\r\n"[..],
            b"x\r\n",
            b"5\nhello\r\n",
            b"5\r\nhello!\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"-1\r\n",
            b"0\r\n\n",
        ] {
            assert!(decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let long_extension = format!("1;{}\r\n", "e".repeat(MAX_EXTENSION_BYTES));
        assert!(decode(long_extension.as_bytes()).is_err());
    }
}
