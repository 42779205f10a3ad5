//! What every step of fork-to-proxy shares, written once.
//!
//! The seven steps differ in one thing: how they hand connections to the code that serves them
//! (a process each, a thread each, a queue, a pool, an event loop, processes running event
//! loops, a proxy). Everything else lives here, so that the source of a step is that one idea,
//! and `diff` between two steps shows the lesson.
//!
//! # Layout
//!
//! - [`args`]: the options every step has ([`CommonArgs`]), and one-line start-up errors.
//! - [`listen`]: binding with a real backlog, the `listening on` start-up line, and the
//!   blocking steps' accept loop (which never spins when descriptors run out).
//! - [`limits`]: raising the limit on open descriptors, which is the limit on connections.
//! - [`parse`]: incremental request-head parsing with `httparse`, body framing rules, and the
//!   client's keep-alive wish ([`parse::keeps_alive`]).
//! - [`chunked`]: an incremental decoder for chunked bodies, and the chunk writers.
//! - [`body`]: [`body::BodyDecoder`], a body decoded by its framing (length, chunks, until
//!   close), without I/O.
//! - [`response_head`]: response heads parsed with `httparse`, for a proxy's upstream side.
//! - [`site`]: the routes ([`Site`]); a request becomes a [`Reply`], a response plus a delay,
//!   never a sleep, so that an event loop can serve the same site with timers.
//! - [`response`]: status line, headers and body on the wire ([`response::HeadWriter`]), and
//!   the `100 Continue` line.
//! - [`exchange`]: one request from its head to its answer ([`exchange::Exchange`]), and why
//!   one is refused ([`exchange::Refusal`]): what the blocking loop and the event loop drive.
//! - [`keep_alive`]: what a connection does after an answer ([`keep_alive::After`]): keep
//!   alive, close, or close lingering.
//! - [`date`]: the `Date` header, formatted at most once a second.
//! - [`connection`]: the blocking loop of steps 01–04 ([`serve_connection`]): [`exchange`]
//!   driven with blocking reads, the timeouts and the lingering close; and [`refuse`], a 503
//!   for a connection nobody can serve.
//! - [`signals`]: `SIGINT`/`SIGTERM` and friends as pipes that loops can `poll`.
//! - [`wait`]: waiting on a few descriptors with a deadline.
//! - [`process`]: ending a forked child.
//! - [`log`]: the access log and error lines.

pub mod args;
pub mod body;
pub mod chunked;
pub mod connection;
pub mod date;
pub mod exchange;
pub mod keep_alive;
pub mod limits;
pub mod listen;
pub mod log;
pub mod parse;
pub mod process;
pub mod response;
pub mod response_head;
pub mod signals;
pub mod site;
pub mod wait;

pub use args::CommonArgs;
pub use connection::{ConnConfig, refuse, serve_connection};
pub use response::Response;
pub use signals::Signals;
pub use site::{Reply, Site};
