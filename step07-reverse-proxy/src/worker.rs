//! The proxy's worker body, plugged into step 06's master: [`ProxyWorker::reload`] reads the
//! configuration in the master on `SIGHUP`, [`ProxyWorker::run`] is the life of one worker
//! process.

use std::net::TcpListener as StdListener;
use std::sync::Arc;
use std::time::Duration;

use common::listen::ACCEPT_PAUSE;
use common::{CommonArgs, log};
use step06_master_worker::{Worker, WorkerBody};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, timeout};

use crate::config::Config;
use crate::connection::serve;
use crate::health;
use crate::proxy::{Proxy, WorkerInfo};
use crate::request::Role;
use crate::zone::Zone;

/// What the master holds for its workers, and hands to each generation by forking.
pub struct ProxyWorker {
    pub common: CommonArgs,
    /// The file read again on `SIGHUP`; `None` for the built-in demo, whose configuration
    /// cannot change.
    pub config_path: Option<String>,
    pub config: Arc<Config>,
    /// This generation's shared counters; a reload maps a new zone with the new configuration.
    pub zone: Arc<Zone>,
    /// `--admin`: bound by the master, accepted from by every worker.
    pub admin: Option<StdListener>,
}

impl ProxyWorker {
    /// Reads the configuration at `path` and maps its zone.
    ///
    /// # Errors
    ///
    /// One line: why the file cannot be used, or the zone cannot be mapped.
    pub fn load(path: &str) -> Result<(Config, Zone), String> {
        let config = Config::load(path)?;
        let zone = Zone::new(config.upstreams.len())
            .map_err(|error| format!("cannot map the shared counters: {error}"))?;
        Ok((config, zone))
    }
}

impl WorkerBody for ProxyWorker {
    /// Runs in the master, before the new generation is forked. An invalid file leaves
    /// everything as it was: the master keeps the workers in service (step 06's rollback).
    fn reload(&mut self) -> Result<(), String> {
        let Some(path) = &self.config_path else {
            return Ok(());
        };
        let (config, zone) = ProxyWorker::load(path)?;
        log::event(format_args!(
            "master: {path}: {} routes, {} groups, {} upstreams",
            config.routes.len(),
            config.groups.len(),
            config.upstreams.len()
        ));
        self.config = Arc::new(config);
        self.zone = Arc::new(zone);
        Ok(())
    }

    /// The life of a worker: build the runtime, serve until asked to stop, let the requests in
    /// flight finish within the grace period, exit.
    fn run(&self, worker: Worker) -> i32 {
        // The runtime is built here, in the worker, after the fork, and never in the master. A
        // tokio runtime is threads, an epoll instance and timers belonging to the process that
        // built it. `fork` copies only the calling thread: a runtime built before it would
        // reach the worker without its threads, with locks that vanished threads may hold, and
        // with an epoll descriptor shared with the master and every sibling, whose
        // registrations would wake the wrong processes. One thread per worker, like an nginx
        // worker: the processes are the parallelism, each runs one event loop.
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                log::error(format_args!(
                    "worker {}: cannot start the runtime: {error}",
                    worker.index
                ));
                return 1;
            }
        };
        let result = runtime.block_on(self.serve(worker));
        // Connections still open after the grace period are dropped with their tasks here.
        runtime.shutdown_timeout(Duration::from_millis(100));
        match result {
            Ok(()) => 0,
            Err(error) => {
                log::error(format_args!("worker stopped: {error}"));
                1
            }
        }
    }
}

impl ProxyWorker {
    async fn serve(&self, worker: Worker) -> Result<(), String> {
        let info = WorkerInfo {
            index: worker.index,
            workers: worker.workers,
            generation: worker.generation,
            restarts: worker.restarts,
            master_pid: worker.master_pid,
        };
        self.zone.worker_started(worker.index);
        // Step 06's shutdown pipe turns readable on SIGTERM, or when the master dies; the
        // watch channel passes the news to every task of this worker.
        // SAFETY: the shutdown pipe is opened by `Signals` (in this process, at the fork) and
        // stays open, the same descriptor, for the life of the process: longer than `stopping`.
        let stopping = unsafe {
            AsyncFd::register_with_interest(worker.signals.shutdown_fd(), Interest::READABLE)
        }
        .map_err(|error| format!("cannot watch the shutdown pipe: {error}"))?;
        let (stop, shutdown) = watch::channel(false);
        let proxy = Arc::new(Proxy::new(
            Arc::clone(&self.config),
            Arc::clone(&self.zone),
            &self.common,
            info,
            shutdown,
        )?);
        let listener = TcpListener::from_std(worker.listener)
            .map_err(|error| format!("cannot use the listening socket: {error}"))?;
        let admin = match &self.admin {
            Some(admin) => Some(
                admin
                    .try_clone()
                    .and_then(TcpListener::from_std)
                    .map_err(|error| format!("cannot use the admin socket: {error}"))?,
            ),
            None => None,
        };
        if worker.index == 0 {
            health::start(&proxy)?;
        }
        // Every connection task holds a clone of `alive`; once all are dropped, `recv` ends:
        // the way to know that every connection has finished.
        let (alive, mut all_finished) = mpsc::channel::<()>(1);
        loop {
            let (accepted, role) = tokio::select! {
                accepted = listener.accept() => (accepted, Role::Client),
                accepted = accept(admin.as_ref()) => (accepted, Role::Admin),
                _ = stopping.readable() => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let (proxy, alive) = (Arc::clone(&proxy), alive.clone());
                    tokio::spawn(async move {
                        serve(stream, peer, proxy, role).await;
                        drop(alive);
                    });
                }
                Err(error) => accept_failed(&error).await,
            }
        }
        let _ = stop.send(true);
        // Stop accepting: new clients wait in the backlog for the next generation's workers.
        drop((listener, admin));
        drop(alive);
        if timeout(self.common.grace(), all_finished.recv())
            .await
            .is_err()
        {
            log::error(format_args!(
                "worker {}: requests still in flight after the grace period: closing them",
                worker.index
            ));
        }
        Ok(())
    }
}

/// The admin listener's next connection; never, without one.
async fn accept(
    listener: Option<&TcpListener>,
) -> std::io::Result<(TcpStream, std::net::SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// An `accept` failure costs one client, never the worker; out of descriptors, we pause.
async fn accept_failed(error: &std::io::Error) {
    if matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
        log::error(format_args!("accept failed: {error}; pausing"));
        sleep(ACCEPT_PAUSE).await;
    }
}
