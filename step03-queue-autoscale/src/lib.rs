//! A bounded queue of accepted connections, drained by worker threads whose number follows
//! the queue: more when it fills, fewer when it stays calm.
//!
//! The acceptor [`Workers::submit`]s each connection; when the queue is full it waits, and new
//! clients wait in the kernel's backlog. Each worker takes the oldest connection and serves it
//! to its end. The rules of the course's assignment decide how many workers there are: one
//! more when a push leaves the queue at least 80 % full, one fewer when it has stayed at or
//! under 20 % for half a second, never fewer than the first and never more than 100.
//!
//! The library is what `step03-queue-autoscale`'s `main.rs` runs; the benchmarks use
//! [`Queue`]'s push and pop directly.
//!
//! # Layout
//!
//! - [`scaler`]: the rules, as arithmetic on queue lengths and instants ([`ScalingPolicy`]).
//! - [`queue`]: the bounded FIFO: one `Mutex` over the items and the worker count, and
//!   `Condvar`s to wait on, so nobody busy-waits ([`Queue`]).
//! - [`workers`]: the threads: started, added, retired, each running the server's `serve`
//!   ([`Workers`]).
//! - [`trace`]: one line `t_ms workers queue_len` per scaling event ([`Trace`]).

pub mod queue;
pub mod scaler;
pub mod trace;
pub mod workers;

pub use queue::{Closed, Popped, Queue, Role, ScaleEvent, Snapshot};
pub use scaler::{PolicyError, ScalingPolicy};
pub use trace::Trace;
pub use workers::Workers;
