//! Message bodies, decoded without I/O: [`BodyDecoder`] takes whatever bytes arrived, hands
//! on the body's data, and says where the body ends and whether it has.
//!
//! A body ends in one of three ways (RFC 9112 §6.3): after `Content-Length` bytes, after the
//! last chunk of a `chunked` body (and its trailer section), or, for a response with neither,
//! when the sender closes the connection. Which one is the [`Framing`], decided from the head
//! ([`crate::parse`] for requests, [`crate::response_head`] for responses). The decoder never
//! consumes a byte past the end of its body: what follows is the next message on the
//! connection, and where that starts is exactly what two parties must agree on.
//!
//! The same decoder serves a blocking loop, an event loop and an `async` task: each reads in
//! its own way and feeds the bytes here.

use std::fmt;

use crate::chunked::{ChunkedDecoder, ChunkedError};
use crate::parse::{self, MAX_HEADERS};

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: a request without one, an answer to `HEAD`, a 1xx, 204 or 304.
    Empty,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the sender closes the connection: a response with neither of the above.
    UntilClose,
}

impl From<parse::BodyFraming> for Framing {
    fn from(framing: parse::BodyFraming) -> Framing {
        match framing {
            parse::BodyFraming::None => Framing::Empty,
            parse::BodyFraming::Length(length) => Framing::Length(length),
            parse::BodyFraming::Chunked => Framing::Chunked,
        }
    }
}

/// Why a body cannot be read whole. Either way the connection must close: where the next
/// message starts is no longer known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Not valid chunked framing.
    Chunked(ChunkedError),
    /// The connection ended before the body did.
    CutShort,
    /// More body than the decoder's limit ([`BodyDecoder::with_limit`]).
    TooLarge,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Chunked(error) => error.fmt(f),
            BodyError::CutShort => f.write_str("the body was cut short"),
            BodyError::TooLarge => f.write_str("the body is too large"),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::Chunked(error) => Some(error),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
enum State {
    Length { left: u64 },
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// Decodes one body; make a new one per message.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    state: State,
    /// Data bytes handed on so far.
    seen: u64,
    limit: Option<u64>,
}

impl BodyDecoder {
    pub fn new(framing: Framing) -> BodyDecoder {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(left) => State::Length { left },
            Framing::Chunked => State::Chunked(ChunkedDecoder::new()),
            Framing::UntilClose => State::UntilClose,
        };
        BodyDecoder {
            state,
            seen: 0,
            limit: None,
        }
    }

    /// At most `limit` bytes of data: more is [`BodyError::TooLarge`] (nginx's
    /// `client_max_body_size`, checked as the data arrives, whatever the framing).
    pub fn with_limit(mut self, limit: u64) -> BodyDecoder {
        self.limit = Some(limit);
        self
    }

    /// Consumes what it can of `input`, hands each piece of body data to `data`, and returns
    /// how many bytes of `input` belonged to the body; the rest, if any, is the next message.
    ///
    /// # Errors
    ///
    /// [`BodyError`] on bad chunked framing or data past the limit.
    pub fn decode(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<usize, BodyError> {
        let (limit, seen) = (self.limit, &mut self.seen);
        let mut pass = |piece: &[u8]| {
            *seen += piece.len() as u64;
            data(piece);
        };
        let used = match &mut self.state {
            State::Done => 0,
            State::Length { left } => {
                let take = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                *left -= take as u64;
                pass(&input[..take]);
                take
            }
            State::UntilClose => {
                pass(input);
                input.len()
            }
            State::Chunked(decoder) => decoder.feed(input, pass).map_err(BodyError::Chunked)?,
        };
        // Checked after the fact: the data handed on is at most one read past the limit.
        if limit.is_some_and(|limit| self.seen > limit) {
            return Err(BodyError::TooLarge);
        }
        if matches!(self.state, State::Length { left: 0 }) {
            self.state = State::Done;
        }
        Ok(used)
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        match &self.state {
            State::Done => true,
            State::Chunked(decoder) => decoder.is_done(),
            State::Length { .. } | State::UntilClose => false,
        }
    }

    /// The connection ended (its peer closed). That ends an until-close body; any other one
    /// is cut short.
    ///
    /// # Errors
    ///
    /// [`BodyError::CutShort`] when the body was not complete.
    pub fn end_of_input(&mut self) -> Result<(), BodyError> {
        if matches!(self.state, State::UntilClose) {
            self.state = State::Done;
        }
        if self.is_done() {
            Ok(())
        } else {
            Err(BodyError::CutShort)
        }
    }

    /// Data bytes decoded so far.
    pub fn data_bytes(&self) -> u64 {
        self.seen
    }

    /// The trailer section of a chunked body once it is done, field lines each ending in
    /// CRLF, as received; empty otherwise.
    pub fn trailers(&self) -> &[u8] {
        match &self.state {
            State::Chunked(decoder) => decoder.trailers(),
            _ => &[],
        }
    }
}

/// Calls `field(name, value)` for each field of a trailer section as
/// [`BodyDecoder::trailers`] returns it.
///
/// # Errors
///
/// When a line is not a valid field line (`httparse`'s judgement, as for heads): the whole
/// section must then be dropped, not passed on in part.
pub fn for_each_trailer(
    trailers: &[u8],
    mut field: impl FnMut(&str, &[u8]),
) -> Result<(), httparse::Error> {
    if trailers.is_empty() {
        return Ok(());
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    // httparse wants the blank line that ends a header section.
    let mut whole = Vec::with_capacity(trailers.len() + 2);
    whole.extend_from_slice(trailers);
    whole.extend_from_slice(b"\r\n");
    match httparse::parse_headers(&whole, &mut headers)? {
        httparse::Status::Complete((_, fields)) => {
            for header in fields {
                field(header.name, header.value);
            }
            Ok(())
        }
        httparse::Status::Partial => Err(httparse::Error::NewLine),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` in pieces of `step` bytes: the data, the bytes used, done or not.
    fn decode(framing: Framing, input: &[u8], step: usize) -> (Vec<u8>, usize, bool) {
        let mut decoder = BodyDecoder::new(framing);
        let (mut data, mut used) = (Vec::new(), 0);
        while used < input.len() && !decoder.is_done() {
            let end = (used + step).min(input.len());
            used += decoder
                .decode(&input[used..end], |piece| data.extend_from_slice(piece))
                .unwrap();
        }
        (data, used, decoder.is_done())
    }

    #[test]
    fn each_framing_ends_where_it_should() {
        for step in [1, 3, 1000] {
            let input = b"helloGET /next";
            assert_eq!(
                decode(Framing::Length(5), input, step),
                (b"hello".to_vec(), 5, true)
            );
            let input = b"5\r\nhello\r\n0\r\n\r\nGET /next";
            assert_eq!(
                decode(Framing::Chunked, input, step),
                (b"hello".to_vec(), 15, true)
            );
            assert_eq!(
                decode(Framing::UntilClose, b"all of it", step),
                (b"all of it".to_vec(), 9, false)
            );
        }
        assert!(BodyDecoder::new(Framing::Empty).is_done());
        assert!(BodyDecoder::new(Framing::Length(0)).is_done());
    }

    #[test]
    fn the_end_of_input_ends_only_an_until_close_body() {
        let mut until_close = BodyDecoder::new(Framing::UntilClose);
        until_close.decode(b"abc", |_| {}).unwrap();
        assert_eq!(until_close.end_of_input(), Ok(()));
        assert!(until_close.is_done());
        assert_eq!(until_close.data_bytes(), 3);
        let mut short = BodyDecoder::new(Framing::Length(10));
        short.decode(b"abc", |_| {}).unwrap();
        assert_eq!(short.end_of_input(), Err(BodyError::CutShort));
        let mut chunked = BodyDecoder::new(Framing::Chunked);
        chunked.decode(b"3\r\nabc\r\n", |_| {}).unwrap();
        assert_eq!(chunked.end_of_input(), Err(BodyError::CutShort));
    }

    #[test]
    fn limits_and_bad_chunks_are_errors() {
        let mut limited = BodyDecoder::new(Framing::UntilClose).with_limit(4);
        assert_eq!(limited.decode(b"abcd", |_| {}), Ok(4));
        assert_eq!(limited.decode(b"e", |_| {}), Err(BodyError::TooLarge));
        let mut chunked = BodyDecoder::new(Framing::Chunked);
        assert!(matches!(
            chunked.decode(b"zz\r\n", |_| {}),
            Err(BodyError::Chunked(_))
        ));
    }

    #[test]
    fn trailers_are_kept_and_read_as_fields() {
        let mut decoder = BodyDecoder::new(Framing::Chunked);
        let input = b"0\r\nX-Sum: 42\r\nX-Empty:\r\n\r\n";
        assert_eq!(decoder.decode(input, |_| {}), Ok(input.len()));
        assert!(decoder.is_done());
        let mut fields = Vec::new();
        for_each_trailer(decoder.trailers(), |name, value| {
            fields.push((name.to_string(), value.to_vec()))
        })
        .unwrap();
        assert_eq!(
            fields,
            [
                ("X-Sum".to_string(), b"42".to_vec()),
                ("X-Empty".to_string(), Vec::new())
            ]
        );
        assert!(for_each_trailer(b"No colon\r\n", |_, _| {}).is_err());
        assert!(for_each_trailer(b"", |_, _| panic!("no fields")).is_ok());
    }
}
