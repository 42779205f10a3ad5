//! What every connection of a worker shares: the configuration, the upstreams' state, the
//! HTTP client with its connection pools, and the worker's own settings.

use std::sync::Arc;
use std::time::Duration;

use common::{CommonArgs, Site};
use tokio::sync::watch;

use crate::config::{Config, ProxySettings};
use crate::upstreams::Upstreams;
use crate::zone::Zone;

/// Who this worker is, for `/stats` and the metrics' `worker` label.
#[derive(Debug, Clone, Copy)]
pub struct WorkerInfo {
    pub index: usize,
    pub workers: usize,
    pub generation: u64,
    pub restarts: u64,
    pub master_pid: u32,
}

/// One worker's proxy.
pub struct Proxy {
    pub config: Arc<Config>,
    /// The counters and health verdicts shared by the generation's workers.
    pub zone: Arc<Zone>,
    pub upstreams: Upstreams,
    /// Keeps idle connections to each upstream for the next requests.
    pub client: reqwest::Client,
    /// Answers `/stats` and renders the proxy's own responses.
    pub site: Site,
    pub worker: WorkerInfo,
    /// A request head must be complete this long after it started (or the connection opened).
    /// Also the longest wait inside a client's body, and for a client to read our answer.
    pub header_timeout: Duration,
    /// A kept-alive client connection idle this long is closed.
    pub idle_timeout: Duration,
    /// `--delay-ms`: every request waits this long first.
    pub delay: Duration,
    /// Access log lines.
    pub log: bool,
    /// Turns `true` when the worker is asked to stop.
    pub shutdown: watch::Receiver<bool>,
}

impl Proxy {
    /// # Errors
    ///
    /// When the HTTP client cannot be built.
    pub fn new(
        config: Arc<Config>,
        zone: Arc<Zone>,
        common: &CommonArgs,
        worker: WorkerInfo,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Proxy, String> {
        let client = http_client(&config.proxy)?;
        let upstreams = Upstreams::new(Arc::clone(&config), Arc::clone(&zone), worker.index);
        let site = Site::new("step07-reverse-proxy", common.delay()).with_stats({
            let (config, zone) = (Arc::clone(&config), Arc::clone(&zone));
            move |json| {
                let up = (0..config.upstreams.len())
                    .filter(|&u| !zone.is_down(u))
                    .count();
                json.number("master_pid", worker.master_pid)
                    .number("worker_index", worker.index as u64)
                    .number("workers", worker.workers as u64)
                    .number("generation", worker.generation)
                    .number("restarts", worker.restarts)
                    .text("config", &config.source)
                    .number("active_connections", zone.active_connections(worker.index))
                    .number("upstreams", config.upstreams.len() as u64)
                    .number("upstreams_up", up as u64);
            }
        });
        let conn = common.conn_config();
        Ok(Proxy {
            config,
            zone,
            upstreams,
            client,
            site,
            worker,
            header_timeout: conn.header_timeout,
            idle_timeout: conn.idle_timeout,
            delay: common.delay(),
            log: conn.log,
            shutdown,
        })
    }

    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// The HTTP client to the upstreams, configured on purpose rather than by default:
///
/// - no redirects: a 3xx is the upstream's answer for the client, not an instruction to us;
/// - no decompression and no `Accept-Encoding` of our own (reqwest's compression features are
///   not even compiled in): the bytes pass as the upstream sent them;
/// - no system proxy: `HTTP_PROXY` in the environment must not reroute our upstream traffic;
/// - `connect_timeout` for connecting, and a `read_timeout` on every read (the response head,
///   each piece of the body) rather than one total deadline, which would cut long downloads;
/// - a pool of idle keep-alive connections per upstream, closed after `keepalive_timeout`:
///   without it, every request would pay a TCP handshake and leave a socket in `TIME_WAIT`;
/// - HTTP/1.1 only, with `TCP_NODELAY`, as the proxy speaks to its clients.
///
/// reqwest adds one field: `Accept: */*` when the client sent no `Accept`, which means the same
/// thing (RFC 9110 §12.5.1).
///
/// # Errors
///
/// When the client cannot be built (one line).
pub fn http_client(settings: &ProxySettings) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(settings.connect_timeout())
        .read_timeout(settings.read_timeout())
        .pool_idle_timeout(settings.keepalive_timeout())
        .pool_max_idle_per_host(settings.keepalive_connections)
        .tcp_nodelay(true)
        .http1_only()
        .referer(false)
        .retry(reqwest::retry::never())
        .build()
        .map_err(|error| format!("cannot build the HTTP client: {error}"))
}
