//! Step 06's process model, as a library: `main.rs` runs the master with step 06's workers, and
//! step 07 runs the same master with a reverse proxy's workers.
//!
//! A master process binds the port, forks one worker process per core and then only
//! supervises: it restarts a worker that dies, starts a fresh generation of workers on
//! `SIGHUP`, and stops them all gracefully on `SIGTERM`. Each worker runs step 05's event loop
//! on the listening socket, and sends blocking work to a pool of step 04's threads.
//!
//! # Layout
//!
//! - [`master`]: [`Master`]: forking, reaping, restarting, reloading, stopping; and why the
//!   master never starts a thread (fork safety). [`config`]: what it is told ([`MasterConfig`],
//!   [`WorkerCount`]), and the options steps 06 and 07 share to start it ([`MasterArgs`]).
//! - [`worker`]: what a worker is given ([`Worker`]), the seam a worker's body plugs into
//!   ([`WorkerBody`]), step 06's body ([`SiteWorker`]), and what it plugs into step 05's loop
//!   ([`WorkerHook`]).
//! - [`listening`]: one socket shared by every worker, or one each with `SO_REUSEPORT`
//!   ([`ListenMode`]), what each costs, and how a worker's loop watches it ([`ListenerWatch`]:
//!   `EPOLLEXCLUSIVE`, and only while it can accept).
//! - [`pool_runner`]: blocking work on step 04's pool, answers back through an `eventfd`
//!   (Linux) or a pipe.
//! - [`lifeline`]: workers exit when the master dies.
//! - [`ready`]: workers tell the master they are ready, so that a reload retires the old ones
//!   only then.
//! - [`upgrade`]: `SIGUSR2` starts the binary on disk as a new master, hands it the listening
//!   socket, and retires the old master once the new one's workers are ready.
//! - [`backoff`]: restarting at once, but not in a fork storm.
//! - [`scoreboard`]: every worker's figures in shared memory, so that `/stats` on any worker
//!   shows them all.

pub mod backoff;
pub mod config;
pub mod lifeline;
pub mod listening;
pub mod master;
pub mod pool_runner;
pub mod ready;
pub mod scoreboard;
pub mod upgrade;
pub mod worker;

pub use config::{MasterArgs, MasterConfig, WorkerCount};
pub use listening::{ListenMode, ListenerWatch, Listening};
pub use master::Master;
pub use pool_runner::PoolRunner;
pub use ready::Ready;
pub use scoreboard::Scoreboard;
pub use worker::{SiteWorker, Worker, WorkerBody, WorkerHook};
