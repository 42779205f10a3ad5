//! Step 05's event loop, as a library: `main.rs` runs one, and step06 runs one in every worker
//! process.
//!
//! One thread serves every connection. Its sockets are non-blocking, so no call ever waits for
//! one client; instead the thread asks the kernel which sockets are ready ([`Poller`]), does
//! what each allows, and moves on. A connection's progress lives in a small state machine
//! instead of a thread's stack, and every wait (a slow `/sleep`, the header and idle timeouts)
//! is a deadline in a timer heap that bounds how long the loop waits for readiness.
//!
//! # Layout
//!
//! - [`poller`]: readiness notification through one small interface: `epoll` on Linux,
//!   `kqueue` on macOS and the BSDs. Edge-triggered, and why.
//! - [`event_loop`]: [`EventLoop`]: accept, hand readiness and timers to connections, shut
//!   down gracefully.
//! - `connection`: one connection's state machine (reading the head, the body, waiting,
//!   writing, keep-alive or close).
//! - `buffers`: the loop's one read buffer, lent to the connection being served, and
//!   non-blocking writes.
//! - [`timers`]: a min-heap of deadlines, one per connection.
//! - [`slab`]: connections stored by number; the number is the poller's token.
//! - [`config`], [`stats`]: the loop's settings and its `/stats` figures.
//! - [`hook`]: the one seam step 06 uses ([`Hook`]); step 05 itself leaves it empty.

mod buffers;
pub mod config;
mod connection;
pub mod event_loop;
pub mod hook;
pub mod poller;
pub mod slab;
pub mod stats;
pub mod timers;

pub use config::LoopConfig;
pub use event_loop::EventLoop;
pub use hook::{Hook, Work, WorkId};
pub use poller::{Event, Interest, Poller, Token};
pub use stats::LoopStats;
