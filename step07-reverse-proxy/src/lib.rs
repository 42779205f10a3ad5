//! Step 07's reverse proxy, as a library: `main.rs` runs step 06's master with
//! [`ProxyWorker`]s, which forward requests to upstream servers.
//!
//! # Layout
//!
//! The request's path, in order:
//!
//! - [`worker`]: [`ProxyWorker`], the body step 06's master runs in each worker: it builds the
//!   tokio runtime after the fork, accepts, and stops gracefully; in the master, it reads the
//!   configuration again on `SIGHUP`.
//! - [`connection`]: one client connection: keep-alive, pipelining, timeouts, bad heads.
//! - [`request`]: from a parsed head to a decision: answer here, or forward to which group.
//! - [`headers`]: hop-by-hop fields out, `X-Forwarded-*` and `Via` in, both ways.
//! - [`forward`]: choosing, sending, retrying, relaying the answer; 502 and 504.
//! - [`body`]: request bodies streamed upstream with back-pressure.
//!
//! Around it:
//!
//! - [`config`]: the TOML configuration, checked whole before it is used.
//! - [`balance`]: round robin, least connections, consistent hashing on a ring.
//! - [`upstreams`]: one worker's view of the upstreams: turns, requests in flight, ejections.
//! - [`health`]: active health checks, run by worker 0.
//! - [`zone`]: counters and health shared by the workers in `MAP_SHARED` memory.
//! - [`metrics`], [`admin`]: the admin port's `/metrics`, `/health` and `/config`.
//! - [`proxy`]: what a worker's connections share, and the deliberately configured HTTP client.
//! - [`demo`]: the built-in demo's upstreams, when there is no `--config`.

pub mod admin;
pub mod balance;
pub mod body;
pub mod config;
pub mod connection;
pub mod demo;
pub mod forward;
pub mod headers;
pub mod health;
pub mod metrics;
pub mod proxy;
pub mod request;
pub mod upstreams;
pub mod worker;
pub mod zone;

pub use config::Config;
pub use worker::ProxyWorker;
pub use zone::Zone;
