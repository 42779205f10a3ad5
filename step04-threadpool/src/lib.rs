//! A fixed pool of worker threads fed by a channel of jobs.
//!
//! [`ThreadPool::new`] starts the workers once; [`ThreadPool::execute`] hands one a boxed
//! closure; dropping the pool finishes the queued jobs and joins every worker. The pool knows
//! nothing about connections: `step04-threadpool`'s `main.rs` makes "serve this connection"
//! a job, and step 06 uses the same pool to keep blocking work off its event loop.
//!
//! # Layout
//!
//! - [`pool`]: [`ThreadPool`], its errors ([`PoolError`]) and its live figures
//!   ([`PoolStatus`]: workers, busy, queued).

pub mod pool;

pub use pool::{PoolError, PoolStatus, ThreadPool};
