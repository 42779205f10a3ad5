//! The proxy's own HTTP/1.1 client: connections to the upstreams, kept in a pool per
//! upstream, with requests written as bytes and answers read with `httparse`.
//!
//! ```text
//! pool::Pools::take ─┐ (an idle connection, if one is still good)
//! conn::connect ─────┴▶ send::send_request ▶ answer::read_answer_head ▶ (the relay) ▶ Pools::put
//! ```
//!
//! Why not a general-purpose client? `reqwest` (still here, behind `--upstream-client
//! reqwest`, and for the health checks) builds a `Url`, a `HeaderMap` of owned names and
//! values and a boxed future for every request, and reads the answer back into another map:
//! names lower-cased, trailers dropped, no `101`. A proxy already has the request's bytes,
//! parsed; nginx, Envoy and Pingora each own their upstream connections for that reason, and
//! `docs/07-reverse-proxy.md` measures the difference.
//!
//! - [`conn`]: one connection to an upstream: connecting, and checking an idle one before
//!   reuse.
//! - [`pool`]: idle connections per upstream, newest first, closed after the idle timeout.
//! - [`send`]: the request head, then its body, streamed, while watching for an early answer.
//! - [`answer`]: waiting for the answer's head, interim `1xx` answers skipped.
//! - [`error`]: [`UpstreamError`], what went wrong and what the client is told.

pub(crate) mod answer;
pub(crate) mod conn;
pub(crate) mod error;
pub(crate) mod pool;
pub(crate) mod send;

pub(crate) use error::UpstreamError;
