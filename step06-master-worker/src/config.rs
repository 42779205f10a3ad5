//! What the master decides: how many workers, and how long a worker may take to stop.

use std::num::NonZeroUsize;
use std::str::FromStr;
use std::time::Duration;

/// The most workers `--workers` accepts: a typo must not fork ten thousand processes.
pub const MAX_WORKERS: usize = 256;

/// How many workers a generation has (`--workers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerCount {
    /// One per core this process may use, as nginx's `worker_processes auto`.
    Auto,
    Fixed(NonZeroUsize),
}

impl WorkerCount {
    /// The count for the next generation. `Auto` asks the system now, so a reload follows a
    /// change of the cores the master may run on (`taskset -p`, a container's CPU limit).
    pub fn resolve(self) -> usize {
        match self {
            WorkerCount::Auto => std::thread::available_parallelism()
                .map_or(1, NonZeroUsize::get)
                .min(MAX_WORKERS),
            WorkerCount::Fixed(count) => count.get(),
        }
    }
}

impl FromStr for WorkerCount {
    type Err = String;

    fn from_str(text: &str) -> Result<WorkerCount, String> {
        if text == "auto" {
            return Ok(WorkerCount::Auto);
        }
        match text.parse::<usize>() {
            Ok(count @ 1..=MAX_WORKERS) => NonZeroUsize::new(count)
                .map(WorkerCount::Fixed)
                .ok_or_else(|| "zero workers".into()),
            _ => Err(format!("expected auto or a number from 1 to {MAX_WORKERS}")),
        }
    }
}

/// What the master decides.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    pub workers: WorkerCount,
    /// How long a worker asked to stop may take before it is killed: its own grace period for
    /// the requests in flight, and a margin.
    pub stop_timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_counts_parse() {
        assert_eq!("auto".parse(), Ok(WorkerCount::Auto));
        assert_eq!("3".parse::<WorkerCount>().map(WorkerCount::resolve), Ok(3));
        for bad in ["0", "-1", "257", "two", ""] {
            assert!(bad.parse::<WorkerCount>().is_err(), "{bad}");
        }
        assert!(WorkerCount::Auto.resolve() >= 1);
    }
}
