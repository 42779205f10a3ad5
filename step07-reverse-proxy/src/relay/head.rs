//! The answer's head, judged and rewritten for the client: our status line (with the
//! upstream's status and reason), `Server` and `Date` (as nginx replaces an upstream's), the
//! upstream's end-to-end fields as received, `Via`, and our framing and `Connection`.
//!
//! How the body goes to the client depends on how it comes and on who asks:
//!
//! | from the upstream | to an HTTP/1.1 client | to an HTTP/1.0 client |
//! |---|---|---|
//! | no body (`HEAD`, 1xx, 204, 304) | none; its `Content-Length`, if any, passed on (not for 204) | same |
//! | `Content-Length: n` | `Content-Length: n` | same |
//! | chunked, with trailers | chunked, trailers passed on | until close (1.0 has no chunks) |
//! | until the upstream closes | chunked: the client's connection stays open | until close |

use common::body::Framing;
use common::keep_alive::{After, Answered};
use common::parse::Version;
use common::response::{HeadWriter, reason_phrase};
use common::response_head::ResponseHead;

use crate::headers::{VIA_NAME, is_hop_by_hop, named_by_connection, pair, via_version};
use crate::proxy::Proxy;
use crate::request::Request;
use crate::upstream::UpstreamError;

/// A parsed head's fields as names and values (a named type, for [`parsed`]'s signature).
type ParsedFields<'h> = std::iter::Map<
    std::slice::Iter<'h, httparse::Header<'h>>,
    fn(&'h httparse::Header<'h>) -> (&'h str, &'h [u8]),
>;

/// What the relay needs to know about an answer once its head has been written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Answer {
    pub status: u16,
    /// How its body arrives from the upstream.
    pub from_upstream: Framing,
    /// How it goes to the client.
    pub to_client: Framing,
    /// What the client's connection does once this answer is sent whole.
    pub after: After,
    /// The upstream's connection may carry the next request, once this answer is read whole.
    pub upstream_keep_alive: bool,
    /// `101 Switching Protocols`: the connections become a tunnel.
    pub switching: bool,
    /// The chunked body's trailer section goes on to the client.
    pub trailers: bool,
}

/// An answer head, from whichever client read it: ours (`httparse`) or `reqwest`'s.
pub(crate) struct UpstreamHead<'h, F: Fn() -> I, I> {
    pub status: u16,
    /// As sent; empty for the standard phrase.
    pub reason: &'h str,
    pub version: Version,
    /// Names and values as received, in order (each call, from the first).
    pub fields: F,
    pub framing: Framing,
    /// `Content-Length` as declared, also for an answer without a body.
    pub content_length: Option<u64>,
    /// The upstream will keep its connection open after this answer.
    pub keep_alive: bool,
}

/// The head the own client parsed, as [`rewrite`] takes it.
pub(crate) fn parsed<'h>(
    head: &'h ResponseHead<'_, 'h>,
) -> UpstreamHead<'h, impl Fn() -> ParsedFields<'h>, ParsedFields<'h>> {
    let fields: &'h [httparse::Header<'h>] = head.fields;
    UpstreamHead {
        status: head.status,
        reason: head.reason,
        version: head.version,
        fields: move || fields.iter().map(pair as fn(&'h httparse::Header<'h>) -> _),
        framing: head.framing,
        content_length: head.content_length,
        keep_alive: head.keep_alive,
    }
}

/// Judges `head`, the answer of `upstream` to `request`, and writes the client's head into
/// `out`. `body_sent`: the whole request body went upstream (if not, the client's connection
/// holds unread body bytes and must close after the answer).
///
/// # Errors
///
/// [`UpstreamError::UnaskedUpgrade`]: a `101` to a request that asked for no upgrade.
pub(crate) fn rewrite<'f, F, I>(
    proxy: &Proxy,
    request: &Request,
    upstream: usize,
    body_sent: bool,
    head: UpstreamHead<'f, F, I>,
    out: &mut Vec<u8>,
) -> Result<Answer, UpstreamError>
where
    F: Fn() -> I,
    I: Iterator<Item = (&'f str, &'f [u8])>,
{
    let switching = head.status == 101;
    if switching && !request.upgrade {
        return Err(UpstreamError::UnaskedUpgrade);
    }
    let to_client = match head.framing {
        Framing::Empty => Framing::Empty,
        Framing::Length(length) => Framing::Length(length),
        Framing::Chunked | Framing::UntilClose if request.version == Version::Http11 => {
            Framing::Chunked
        }
        Framing::Chunked | Framing::UntilClose => Framing::UntilClose,
    };
    let trailers = head.framing == Framing::Chunked && to_client == Framing::Chunked;
    let answered = Answered {
        wanted: request.keep_alive,
        closes: !body_sent || to_client == Framing::UntilClose || switching,
        shutting_down: proxy.shutting_down(),
        // Answered before the client's body was all read: what it still sends must be drained
        // a moment, or closing would reset the connection and destroy the answer.
        unread: !body_sent,
    };
    out.clear();
    let reason = if head.reason.is_empty() {
        reason_phrase(head.status)
    } else {
        head.reason
    };
    let mut writer = HeadWriter::start(out, head.status, reason.as_bytes());
    writer.server_and_date(VIA_NAME);
    for (name, value) in (head.fields)() {
        let passes = if name.eq_ignore_ascii_case("upgrade") {
            switching
        } else if name.eq_ignore_ascii_case("trailer") {
            trailers
        } else {
            !is_hop_by_hop(name)
                && !["server", "date", "content-length"]
                    .iter()
                    .any(|ours| name.eq_ignore_ascii_case(ours))
                && !named_by_connection((head.fields)(), name)
        };
        if passes {
            writer.field(name.as_bytes(), value);
        }
    }
    // After the upstream's own `Via` lines, if any: a list field may be split over lines.
    let mut via = [0u8; 32];
    let via = via_line(&mut via, head.version);
    writer.field(b"Via", via);
    if proxy.config.proxy.upstream_header {
        writer.field(
            b"X-Upstream",
            proxy.config.upstreams[upstream].name.as_bytes(),
        );
    }
    match to_client {
        Framing::Length(length) => {
            writer.content_length(length);
        }
        Framing::Empty => {
            // A `HEAD`'s or a 304's length is the body's it would have; a 204 has none.
            if let Some(length) = head
                .content_length
                .filter(|_| head.status >= 200 && head.status != 204)
            {
                writer.content_length(length);
            }
        }
        Framing::Chunked => {
            writer.chunked();
        }
        Framing::UntilClose => {}
    }
    if switching {
        writer.field(b"Connection", b"upgrade");
    } else {
        writer.connection(answered.keeps_alive());
    }
    writer.end();
    Ok(Answer {
        status: head.status,
        from_upstream: head.framing,
        to_client,
        after: answered.after(),
        upstream_keep_alive: head.keep_alive && body_sent && !switching,
        switching,
        trailers,
    })
}

/// `1.1 step07-reverse-proxy`, in `buf`.
fn via_line(buf: &mut [u8; 32], version: Version) -> &[u8] {
    let version = via_version(version).as_bytes();
    let name = VIA_NAME.as_bytes();
    let len = version.len() + 1 + name.len();
    buf[..version.len()].copy_from_slice(version);
    buf[version.len()] = b' ';
    buf[version.len() + 1..len].copy_from_slice(name);
    &buf[..len]
}
