//! The admin port (`--admin 127.0.0.1:9090`): the proxy's own state, for operators and
//! their tools, never for the public.
//!
//! | request | answer |
//! |---|---|
//! | `GET /health` | 200 JSON: this worker serves; which upstreams the health checks found down |
//! | `GET /metrics` | Prometheus text ([`super::metrics`]) |
//! | `GET /config` | the configuration in force, as it was read |
//!
//! The master binds it before forking, and refuses an address that is not loopback unless
//! `--admin-allow-remote` says so: `/config` shows the upstreams' addresses and `/metrics`
//! the traffic, which are nobody else's business. Every worker accepts from it, and each
//! answers for all (the counters are shared, see [`super::zone`]).

use std::fmt;
use std::net::SocketAddr;

use common::parse::RequestHead;
use common::{Reply, Response};

use super::metrics;
use crate::proxy::Proxy;

/// An `--admin` address that is not loopback, without `--admin-allow-remote`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminAddressError(pub SocketAddr);

impl fmt::Display for AdminAddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "--admin {}: not a loopback address; the admin port shows the configuration \
             and the traffic, so it listens on 127.0.0.1 or ::1 unless --admin-allow-remote is given",
            self.0
        )
    }
}

impl std::error::Error for AdminAddressError {}

/// Checks an `--admin` address.
///
/// # Errors
///
/// When the address is not a loopback address and `allow_remote` is not set.
pub fn check_address(address: SocketAddr, allow_remote: bool) -> Result<(), AdminAddressError> {
    if address.ip().is_loopback() || allow_remote {
        Ok(())
    } else {
        Err(AdminAddressError(address))
    }
}

/// The answer to an admin request.
pub(crate) fn reply(head: &RequestHead<'_>, proxy: &Proxy) -> Reply {
    let (get, head_method) = (head.method == "GET", head.method == "HEAD");
    let mut response = match head.path() {
        "/health" | "/metrics" | "/config" if !(get || head_method) => Response {
            allow: Some("GET, HEAD"),
            ..Response::text(405, &b"405 Method Not Allowed\n"[..])
        },
        "/health" => Response::new(200, "application/json", health(proxy).into_bytes()),
        "/metrics" => Response::new(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics::render(&proxy.config, &proxy.zone, proxy.worker.workers).into_bytes(),
        ),
        "/config" => {
            let text = format!("# source: {}\n{}", proxy.config.source, proxy.config.text);
            Response::new(200, "application/toml", text.into_bytes())
        }
        _ => Response::text(
            404,
            &b"404 Not Found: try /health, /metrics or /config\n"[..],
        ),
    };
    response.head_only |= head_method;
    Reply {
        response,
        delay: std::time::Duration::ZERO,
    }
}

/// `{"status":"ok","pid":..,"worker":..,"generation":..,"upstreams":N,"down":["IP:port",..]}`.
/// Upstream names are `IP:port` or `name:port` (letters, digits, `-` and `.`: see `resolve` in
/// `config.rs`), which need no JSON escaping.
fn health(proxy: &Proxy) -> String {
    let config = &proxy.config;
    let down: Vec<String> = (0..config.upstreams.len())
        .filter(|&u| !proxy.upstreams.available(u))
        .map(|u| format!("\"{}\"", config.upstreams[u].name))
        .collect();
    format!(
        "{{\"status\":\"ok\",\"pid\":{},\"worker\":{},\"generation\":{},\"upstreams\":{},\"down\":[{}]}}\n",
        std::process::id(),
        proxy.worker.index,
        proxy.worker.generation,
        config.upstreams.len(),
        down.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_unless_allowed() {
        assert!(check_address("127.0.0.1:9090".parse().unwrap(), false).is_ok());
        assert!(check_address("[::1]:9090".parse().unwrap(), false).is_ok());
        let error = check_address("0.0.0.0:9090".parse().unwrap(), false)
            .unwrap_err()
            .to_string();
        assert!(error.contains("--admin-allow-remote"), "{error}");
        assert!(check_address("0.0.0.0:9090".parse().unwrap(), true).is_ok());
    }
}
