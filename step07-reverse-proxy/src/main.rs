//! # Step 07: a reverse proxy
//!
//! Step 06 serves a site built into the binary. Real sites live in other servers (an
//! application, several copies of it), and the server in front of them is a *reverse proxy*:
//! it takes the clients' connections, and forwards each request to one of the upstream servers
//! behind it, chosen by the path and a balancing strategy, skipping the ones that are down.
//! nginx is used this way far more often than as a file server.
//!
//! This step keeps step 06's process model unchanged: the same master forks the same workers,
//! restarts them, reloads them on `SIGHUP` and stops them on `SIGTERM`. Only the worker's
//! body changes. Each worker builds a tokio runtime (after the fork: a runtime does not
//! survive one), accepts clients, parses their requests with `common`'s parser, and forwards
//! them with an HTTP/1.1 client of its own: a pool of kept-alive connections per upstream,
//! heads passed as received, bodies streamed both ways by their framing, WebSockets tunnelled.
//! Timeouts turn into 504, unreachable upstreams into 502; a TOML file (`--config`) names the
//! routes, the upstream groups and their health checks, and `SIGHUP` reads it again, keeping
//! the old one if the new one is wrong. (`--upstream-client reqwest` forwards with a
//! general-purpose client instead, to measure what owning the connections buys.)
//!
//! The limit: the proxy only knows the upstreams its file lists, by address, and speaks plain
//! HTTP/1.1 to everyone. `docs/07-reverse-proxy.md` sketches what the cloud-native proxies add
//! (service discovery, HTTP/2 and 3, gRPC, filters, upgrades without a restart) on this base.
//!
//! Try it (one terminal each):
//!
//! ```text
//! cargo run --release -p step07-reverse-proxy                    # a demo: 3 upstreams behind it
//! python3 scripts/accesses.py http://127.0.0.1:8090/ -n 300 -c 10  # spread over the 3 (X-Upstream)
//! cargo run --release -p step07-reverse-proxy -- --config step07-reverse-proxy/examples/proxy.toml --admin 127.0.0.1:9090
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use common::CommonArgs;
use common::args::{fail, parse};
use common::listen::{ListenOptions, bind_listener};
use common::log;
use step06_master_worker::MasterArgs;
use step07_reverse_proxy::{
    Config, DemoUpstreams, ProxyWorker, UpstreamClient, Zone, check_address, serve_upstream,
};

/// A reverse proxy: step 06's master and workers, forwarding to upstream servers.
#[derive(Parser, Debug)]
#[command(name = "step07-reverse-proxy", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    /// The configuration: routes, upstream groups, health checks (read again on SIGHUP).
    /// Without it, a demo: the proxy starts --demo-upstreams upstreams itself.
    #[arg(long, value_name = "PATH")]
    config: Option<String>,

    /// Step 06's master: --workers, --listen, --max-open-files (a proxy holds two descriptors
    /// per request).
    #[command(flatten)]
    master: MasterArgs,

    /// At this many open client connections, a worker stops accepting until one closes.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,

    /// own: the proxy's own HTTP/1.1 client; reqwest: a general-purpose one, the simple way
    /// (chapter 07 measures both).
    #[arg(long, value_enum, default_value_t = UpstreamClient::Own)]
    upstream_client: UpstreamClient,

    /// The admin port (GET /health, /metrics, /config), such as 127.0.0.1:9090.
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,

    /// Let --admin listen on an address that is not loopback (anyone who can reach it sees
    /// the configuration and the traffic figures).
    #[arg(long)]
    admin_allow_remote: bool,

    /// How many upstreams the demo starts, without --config.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=16))]
    demo_upstreams: u8,

    /// Internal: be one of the demo's upstreams.
    #[arg(long, hide = true)]
    demo_upstream: bool,
}

fn main() {
    let args: Args = parse();
    if args.demo_upstream {
        let status = match serve_upstream(&args.common) {
            Ok(()) => 0,
            Err(error) => {
                log::error(format_args!("demo upstream: {error}"));
                1
            }
        };
        std::process::exit(status);
    }
    // A configuration file is read before anything is bound: a wrong file fails at once.
    let from_file = args
        .config
        .as_deref()
        .map(|path| ProxyWorker::load(path).unwrap_or_else(|error| fail(error)));
    let admin = args.admin.map(|address| {
        check_address(address, args.admin_allow_remote).unwrap_or_else(|error| fail(error));
        let options = ListenOptions {
            nonblocking: true,
            ..ListenOptions::default()
        };
        bind_listener(&address.ip().to_string(), address.port(), options)
            .unwrap_or_else(|error| fail(format_args!("--admin: {error}")))
    });
    let master = args
        .master
        .start(&args.common)
        .unwrap_or_else(|error| fail(error));
    let (config, zone, demo) = match from_file {
        Some((config, zone)) => (config, zone, None),
        None => {
            let demo = DemoUpstreams::start(usize::from(args.demo_upstreams))
                .unwrap_or_else(|error| fail(error));
            let config = Config::demo(&demo.addrs).unwrap_or_else(|error| fail(error));
            let zone = Zone::new(config.upstreams.len()).unwrap_or_else(|error| {
                fail(format_args!("cannot map the shared counters: {error}"))
            });
            (config, zone, Some(demo))
        }
    };
    // After the contract's `listening on` line, which must come first. With `--admin
    // 127.0.0.1:0` this is where the port the kernel chose can be read.
    if let Some(address) = admin.as_ref().and_then(|admin| admin.local_addr().ok()) {
        log::event(format_args!(
            "admin: listening on http://{address} (/health, /metrics, /config)"
        ));
    }
    if let Some(demo) = &demo {
        let addrs: Vec<String> = demo.addrs.iter().map(ToString::to_string).collect();
        log::event(format_args!(
            "demo: no --config, so proxying to {} upstreams started for the purpose: {} \
             (answers name theirs in X-Upstream)",
            addrs.len(),
            addrs.join(", ")
        ));
    }
    let mut body = ProxyWorker {
        common: args.common,
        config_path: args.config,
        config: Arc::new(config),
        zone: Arc::new(zone),
        admin,
        max_connections: args.max_connections as usize,
        upstream_client: args.upstream_client,
    };
    let status = master.run(&mut body);
    if let Some(demo) = demo {
        demo.stop();
    }
    std::process::exit(status);
}
