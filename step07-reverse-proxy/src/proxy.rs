//! What every connection of a worker shares: the configuration, the upstreams' state, the
//! pools of upstream connections, and the worker's own settings.

use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;
use common::site::StatsJson;
use common::{CommonArgs, Site};
use step06_master_worker::Scoreboard;
use tokio::sync::watch;

use crate::config::Config;
use crate::operations::zone::{CLASSES, Zone};
use crate::upstream::pool::Pools;
use crate::upstreams::Upstreams;

/// Which HTTP client forwards the requests (`--upstream-client`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum UpstreamClient {
    /// The proxy's own HTTP/1.1 client (`src/upstream/`): its pool, the head bytes as
    /// received, upgrades, trailers. What production proxies do.
    #[default]
    Own,
    /// `reqwest`, a general-purpose client, used the simple way (`src/simple_client.rs`): to
    /// measure what owning the upstream connections buys.
    Reqwest,
}

/// Who this worker is, for `/stats` and the metrics' `worker` label.
#[derive(Debug, Clone, Copy)]
pub struct WorkerInfo {
    pub index: usize,
    pub workers: usize,
    pub generation: u64,
    pub restarts: u64,
    pub master_pid: u32,
    /// Binary upgrades (`SIGUSR2`) of the master so far, plus one.
    pub master_generation: u64,
    /// Step 06's scoreboard and this worker's lane on it (see
    /// [`step06_master_worker::scoreboard`]).
    pub scoreboard: &'static Scoreboard,
    pub lane: Option<usize>,
}

/// One worker's proxy.
pub(crate) struct Proxy {
    pub config: Arc<Config>,
    /// The counters and health verdicts shared by the generation's workers.
    pub zone: Arc<Zone>,
    pub upstreams: Upstreams,
    /// Idle keep-alive connections to each upstream, for the own client.
    pub pools: Pools,
    /// The general-purpose client, with `--upstream-client reqwest` only.
    pub reqwest: Option<reqwest::Client>,
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
    /// A worker's proxy; `reqwest`: the general-purpose client, with `--upstream-client
    /// reqwest` only.
    pub fn new(
        config: Arc<Config>,
        zone: Arc<Zone>,
        common: &CommonArgs,
        worker: WorkerInfo,
        reqwest: Option<reqwest::Client>,
        shutdown: watch::Receiver<bool>,
    ) -> Proxy {
        let upstreams = Upstreams::new(Arc::clone(&config), Arc::clone(&zone), worker.index);
        let pools = Pools::new(
            config.upstreams.len(),
            config.proxy.keepalive,
            config.proxy.keepalive_timeout(),
        );
        let site = Site::new("step07-reverse-proxy", common.delay()).with_stats({
            let (config, zone) = (Arc::clone(&config), Arc::clone(&zone));
            move |json| {
                let up = (0..config.upstreams.len())
                    .filter(|&u| !zone.is_down(u))
                    .count();
                json.number("master_pid", worker.master_pid)
                    .number("master_generation", worker.master_generation)
                    .number("worker_index", worker.index as u64)
                    .number("workers", worker.workers as u64)
                    .number("generation", worker.generation)
                    .number("restarts", worker.restarts)
                    .text("config", &config.source)
                    .number("active_connections", zone.active_connections(worker.index))
                    .number("upstreams", config.upstreams.len() as u64)
                    .number("upstreams_up", up as u64);
                live_stats(json, &config, &zone, &worker);
            }
        });
        let conn = common.conn_config();
        Proxy {
            config,
            zone,
            upstreams,
            pools,
            reqwest,
            site,
            worker,
            header_timeout: conn.header_timeout,
            idle_timeout: conn.idle_timeout,
            delay: common.delay(),
            log: conn.log,
            shutdown,
        }
    }

    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// What the live page draws for step 07, from the zone every worker of the generation counts in:
/// `answered` (every worker's responses), `upstream_list` (each upstream's health, answers and
/// ejections, summed over the workers) and step 06's `lanes`, this worker's brought up to date.
fn live_stats(json: &mut StatsJson, config: &Config, zone: &Zone, worker: &WorkerInfo) {
    let answers = |index: usize, upstream: Option<usize>| -> u64 {
        (0..CLASSES)
            .map(|class| zone.answers(index, upstream, class))
            .sum()
    };
    let upstreams = config.upstreams.len();
    let workers = 0..worker.workers;
    let mine: u64 = (0..upstreams)
        .map(Some)
        .chain([None])
        .map(|upstream| answers(worker.index, upstream))
        .sum();
    let all: u64 = workers
        .clone()
        .flat_map(|index| {
            (0..upstreams)
                .map(Some)
                .chain([None])
                .map(move |upstream| (index, upstream))
        })
        .map(|(index, upstream)| answers(index, upstream))
        .sum();
    if let Some(lane) = worker.lane {
        let board = worker.scoreboard;
        board
            .served(lane)
            .store(mine, std::sync::atomic::Ordering::Relaxed);
        board.set_connections(lane, zone.active_connections(worker.index));
    }
    let list = config.upstreams.iter().enumerate().map(|(u, upstream)| {
        let mut item = StatsJson::new();
        item.text("name", &upstream.name)
            .boolean("down", zone.is_down(u))
            .number(
                "answers",
                workers.clone().map(|w| answers(w, Some(u))).sum::<u64>(),
            )
            .number(
                "ejections",
                workers.clone().map(|w| zone.ejections(w, u)).sum::<u64>(),
            );
        item
    });
    json.number("answered", all)
        .list("upstream_list", list)
        .list("lanes", worker.scoreboard.lanes());
}
