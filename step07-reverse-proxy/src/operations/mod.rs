//! Operating the proxy, beside the request path: what operators and their tools see and use.
//!
//! - `admin`: the admin port (`--admin`): `/health`, `/metrics`, `/config`.
//! - `metrics`: the shared counters in Prometheus's text format.
//! - `zone`: counters and health verdicts shared by a generation's workers in `MAP_SHARED`
//!   memory.
//! - `demo`: the built-in demo's upstreams, when there is no `--config`.

pub(crate) mod admin;
pub(crate) mod demo;
pub(crate) mod metrics;
pub(crate) mod zone;
