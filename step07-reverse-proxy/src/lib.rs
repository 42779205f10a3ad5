//! Step 07's reverse proxy, as a library: `main.rs` runs step 06's master with
//! [`ProxyWorker`]s, which forward requests to upstream servers.
//!
//! # Layout
//!
//! The request's path, in order:
//!
//! - `worker`: [`ProxyWorker`], the body step 06's master runs in each worker: it builds the
//!   tokio runtime after the fork, says it is ready, accepts (at most `--max-connections` at
//!   once), and stops gracefully; in the master, it reads the configuration again on `SIGHUP`.
//! - `connection`: one client connection: keep-alive, pipelining, timeouts, bad heads.
//! - `client`: the client's side of it: answers of the proxy's own, request bodies, noticing
//!   that the client left, closing gently.
//! - `request`: from a parsed head to a decision: answer here, or forward to which group,
//!   with the upstream request's head written as bytes (`headers`: hop-by-hop fields out,
//!   `X-Forwarded-*` and `Via` in).
//! - `forward`: choosing an upstream, retrying (a stale connection, another upstream), 502,
//!   504 and 500.
//! - `exchange`: one attempt with the proxy's own client, which lives in `upstream`
//!   (connections, their pool, sending, reading the answer's head) and hands the answer to
//!   `relay` (its head rewritten, its body streamed by its framing, or a tunnel after `101`).
//! - `simple_client`: the same attempt with `reqwest` (`--upstream-client reqwest`), for
//!   comparison.
//!
//! Around it:
//!
//! - `config`: the TOML configuration, checked whole before it is used ([`Config`]).
//! - `balance`: round robin, least connections, consistent hashing on a ring.
//! - `upstreams`: one worker's view of the upstreams: turns, requests in flight, ejections.
//! - `health`: active health checks, run by worker 0 (with `reqwest`).
//! - `proxy`: what a worker's connections share.
//! - `deadline`: timeouts that move with every request without a timer each time.
//! - `operations`: the admin port, its metrics, the shared counters ([`Zone`]) and the
//!   built-in demo's upstreams.
//!
//! The HTTP/1 protocol itself (heads, bodies and their framing, the keep-alive decision, the
//! access log line) is `common`'s, without I/O, as every step uses it.

mod balance;
mod client;
mod config;
mod connection;
mod deadline;
mod exchange;
mod forward;
mod headers;
mod health;
mod operations;
mod proxy;
mod relay;
mod request;
mod simple_client;
mod upstream;
mod upstreams;
mod worker;

pub use config::{Config, ConfigError};
pub use operations::admin::{AdminAddressError, check_address};
pub use operations::demo::{DemoError, DemoUpstreams, serve_upstream};
pub use operations::zone::Zone;
pub use proxy::UpstreamClient;
pub use worker::{ADMIN_LISTENER, LoadError, ProxyWorker};
