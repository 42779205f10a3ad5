//! The proxy's worker body, plugged into step 06's master: [`ProxyWorker::reload`] reads the
//! configuration in the master on `SIGHUP`, [`ProxyWorker::run`] is the life of one worker
//! process.

use std::fmt;
use std::io;
use std::net::TcpListener as StdListener;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use common::listen::{ACCEPT_PAUSE, defer_accept};
use common::{CommonArgs, log};
use step06_master_worker::{Worker, WorkerBody};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::{MissedTickBehavior, interval, sleep, timeout};

use crate::client::Role;
use crate::config::{Config, ConfigError};
use crate::connection::serve;
use crate::health;
use crate::operations::zone::Zone;
use crate::proxy::{Proxy, UpstreamClient, WorkerInfo};
use crate::simple_client;

/// For tests only: a worker of the generation this variable names fails its start-up, just
/// before it would announce that it is ready (as one whose runtime or sockets could not be
/// set up would). It shows that such a generation never replaces the one in service.
const FAIL_START_VARIABLE: &str = "STEP07_TEST_FAIL_GENERATION";

/// The admin socket's name when a new master inherits it (see
/// [`common::listen::inherited`]).
pub const ADMIN_LISTENER: &str = "admin";

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
    /// Client connections one worker serves at once; at the cap it stops accepting until one
    /// closes (`--max-connections`, as steps 05 and 06).
    pub max_connections: usize,
    /// `--upstream-client`.
    pub upstream_client: UpstreamClient,
}

/// Why a configuration cannot be put in service.
#[derive(Debug)]
pub enum LoadError {
    Config(ConfigError),
    /// The shared counters cannot be mapped.
    Zone(io::Error),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Config(error) => error.fmt(f),
            LoadError::Zone(error) => write!(f, "cannot map the shared counters: {error}"),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Config(error) => Some(error),
            LoadError::Zone(error) => Some(error),
        }
    }
}

/// Why a worker could not start, or stopped.
#[derive(Debug)]
enum WorkerError {
    Runtime(io::Error),
    ShutdownPipe(io::Error),
    Listener(io::Error),
    Admin(io::Error),
    Client(reqwest::Error),
    HealthChecks(reqwest::Error),
    /// [`FAIL_START_VARIABLE`].
    Injected,
}

impl fmt::Display for WorkerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkerError::Runtime(error) => write!(f, "cannot start the runtime: {error}"),
            WorkerError::ShutdownPipe(error) => {
                write!(f, "cannot watch the shutdown pipe: {error}")
            }
            WorkerError::Listener(error) => write!(f, "cannot use the listening socket: {error}"),
            WorkerError::Admin(error) => write!(f, "cannot use the admin socket: {error}"),
            WorkerError::Client(error) => write!(f, "cannot build the HTTP client: {error}"),
            WorkerError::HealthChecks(error) => {
                write!(f, "cannot build the health checks' client: {error}")
            }
            WorkerError::Injected => {
                write!(f, "start-up failed on purpose ({FAIL_START_VARIABLE})")
            }
        }
    }
}

impl std::error::Error for WorkerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WorkerError::Runtime(error)
            | WorkerError::ShutdownPipe(error)
            | WorkerError::Listener(error)
            | WorkerError::Admin(error) => Some(error),
            WorkerError::Client(error) | WorkerError::HealthChecks(error) => Some(error),
            WorkerError::Injected => None,
        }
    }
}

impl ProxyWorker {
    /// Reads the configuration at `path` and maps its zone.
    ///
    /// # Errors
    ///
    /// [`LoadError`]: why the file cannot be used, or the zone cannot be mapped.
    pub fn load(path: &str) -> Result<(Config, Zone), LoadError> {
        let config = Config::load(path).map_err(LoadError::Config)?;
        let zone = Zone::new(config.upstreams.len()).map_err(LoadError::Zone)?;
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
        let (config, zone) = ProxyWorker::load(path).map_err(|error| error.to_string())?;
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
        let index = worker.index;
        let result = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(WorkerError::Runtime)
            .and_then(|runtime| {
                let served = runtime.block_on(self.serve(worker));
                // Connections still open after the grace period are dropped with their tasks.
                runtime.shutdown_timeout(Duration::from_millis(100));
                served
            });
        match result {
            Ok(()) => 0,
            Err(error) => {
                log::error(format_args!("worker {index} stopped: {error}"));
                1
            }
        }
    }

    /// The admin port: a new master started by `SIGUSR2` adopts it (see `main.rs`), as it
    /// adopts the main port.
    fn listeners_to_hand_over(&self) -> Vec<(&'static str, BorrowedFd<'_>)> {
        match &self.admin {
            Some(admin) => vec![(ADMIN_LISTENER, admin.as_fd())],
            None => Vec::new(),
        }
    }
}

impl ProxyWorker {
    async fn serve(&self, worker: Worker) -> Result<(), WorkerError> {
        let info = WorkerInfo {
            index: worker.index,
            workers: worker.workers,
            generation: worker.generation,
            restarts: worker.restarts,
            master_pid: worker.master_pid,
            master_generation: worker.master_generation,
            scoreboard: worker.scoreboard,
            lane: worker.lane,
        };
        self.zone.worker_started(worker.index);
        // Step 06's shutdown pipe turns readable on SIGTERM, or when the master dies; the
        // watch channel passes the news to every task of this worker.
        // SAFETY: the shutdown pipe is opened by `Signals` (in this process, at the fork) and
        // stays open, the same descriptor, for the life of the process: longer than `stopping`.
        let stopping = unsafe {
            AsyncFd::register_with_interest(worker.signals.shutdown_fd(), Interest::READABLE)
        }
        .map_err(|error| WorkerError::ShutdownPipe(error.into()))?;
        let (stop, shutdown) = watch::channel(false);
        let reqwest = match self.upstream_client {
            UpstreamClient::Own => None,
            UpstreamClient::Reqwest => {
                Some(simple_client::build(&self.config.proxy).map_err(WorkerError::Client)?)
            }
        };
        let proxy = Arc::new(Proxy::new(
            Arc::clone(&self.config),
            Arc::clone(&self.zone),
            &self.common,
            info,
            reqwest,
            shutdown,
        ));
        // Linux: a client that connected but sent nothing yet waits in the kernel, not in this
        // worker, until its first bytes (or the header timeout), as nginx's `listen ...
        // deferred`: an accepted connection has its request there, and one wake-up serves it.
        if let Err(error) = defer_accept(&worker.listener, proxy.header_timeout) {
            log::error(format_args!("cannot defer accepts: {error}"));
        }
        // Workers that share the listening socket are all woken by a new connection, and the
        // first to run takes it: step 05's loop asks the kernel to wake only one
        // (`EPOLLEXCLUSIVE`), which tokio cannot. Nor can an epoll set of ours holding the
        // listener with that flag, watched by tokio through `AsyncFd`: the kernel's
        // `ep_poll_callback` counts a wake-up as the exclusive one only when a thread sleeps in
        // `epoll_wait` on that set itself. The herd costs a failed `accept` now and then; and
        // with accepts deferred, a burst of clients (wrk's 100) reaches the workers as their
        // requests arrive, one at a time, which spreads it between them.
        let listener = TcpListener::from_std(worker.listener).map_err(WorkerError::Listener)?;
        let admin = match &self.admin {
            Some(admin) => Some(
                admin
                    .try_clone()
                    .and_then(TcpListener::from_std)
                    .map_err(WorkerError::Admin)?,
            ),
            None => None,
        };
        if worker.index == 0 {
            health::start(&proxy).map_err(WorkerError::HealthChecks)?;
        }
        tokio::spawn(close_idle_upstream_connections(Arc::clone(&proxy)));
        if std::env::var(FAIL_START_VARIABLE).is_ok_and(|g| g == worker.generation.to_string()) {
            return Err(WorkerError::Injected);
        }
        // Everything that can fail has been set up: from now on this worker accepts, and the
        // master may retire the generation it replaces.
        worker.ready.announce();

        // One permit per client connection: at the cap, accepting waits for a connection to
        // close, and new clients wait in the listen backlog (or go to another worker).
        let slots = Arc::new(Semaphore::new(self.max_connections));
        // Every connection task holds a clone of `alive`; once all are dropped, `recv` ends:
        // the way to know that every connection has finished.
        let (alive, mut all_finished) = mpsc::channel::<()>(1);
        // Each connection in a task of its own, holding `alive` (and its permit) to the end.
        let serve_in_a_task = |stream, peer, role, permit: Option<OwnedSemaphorePermit>| {
            let (proxy, alive) = (Arc::clone(&proxy), alive.clone());
            tokio::spawn(async move {
                serve(stream, peer, proxy, role).await;
                drop((alive, permit));
            });
        };
        loop {
            let next_client = async {
                let permit = Arc::clone(&slots).acquire_owned().await;
                (listener.accept().await, permit)
            };
            let (accepted, role, permit) = tokio::select! {
                (accepted, permit) = next_client => match permit {
                    Ok(permit) => (accepted, Role::Client, Some(permit)),
                    Err(_) => break,
                },
                accepted = accept(admin.as_ref()) => (accepted, Role::Admin, None),
                _ = stopping.readable() => break,
            };
            match accepted {
                Ok((stream, peer)) => serve_in_a_task(stream, peer, role, permit),
                Err(error) => accept_failed(&error).await,
            }
        }
        let _ = stop.send(true);
        // Closing a listening socket resets the connections the kernel completed but nobody
        // accepted yet (a `--listen reuseport` worker's socket is its own): take them first,
        // and serve them as the others, each closed after its answer.
        for (stream, peer) in accepted_by_the_kernel(&listener) {
            serve_in_a_task(stream, peer, Role::Client, None);
        }
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

/// Closes, every second, the upstream connections idle past `keepalive_timeout_ms`.
async fn close_idle_upstream_connections(proxy: Arc<Proxy>) {
    let mut ticks = interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut shutdown = proxy.shutdown.clone();
    loop {
        tokio::select! {
            _ = ticks.tick() => proxy.pools.close_expired(),
            _ = shutdown.wait_for(|stopping| *stopping) => return,
        }
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

/// The connections waiting in `listener`'s backlog now, accepted without waiting. Not with
/// tokio's `accept`: it tries only once its poller has reported the socket readable, and a
/// connection that arrived since the poller's last turn would be missed.
fn accepted_by_the_kernel(listener: &TcpListener) -> Vec<(TcpStream, std::net::SocketAddr)> {
    let Ok(listener) = listener.as_fd().try_clone_to_owned().map(StdListener::from) else {
        return Vec::new();
    };
    let mut taken = Vec::new();
    // Non-blocking already: the descriptor shares its open file with tokio's.
    while let Ok((stream, peer)) = listener.accept() {
        let stream = stream
            .set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(stream));
        if let Ok(stream) = stream {
            taken.push((stream, peer));
        }
    }
    taken
}

/// An `accept` failure costs one client, never the worker; out of descriptors, we pause.
async fn accept_failed(error: &std::io::Error) {
    if matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
        log::error(format_args!("accept failed: {error}; pausing"));
        sleep(ACCEPT_PAUSE).await;
    }
}
