//! What the master decides: how many workers, and how long a worker may take to stop; and the
//! options that say so, shared by steps 06 and 07.

use std::num::NonZeroUsize;
use std::str::FromStr;
use std::time::Duration;

use common::limits::set_open_files_limit;
use common::{CommonArgs, log};

use crate::listening::{ListenMode, Listening};
use crate::master::Master;

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
    /// How long a new master started by `SIGUSR2` may take to be ready (see
    /// [`crate::upgrade`]).
    pub upgrade_timeout: Duration,
}

/// The master's options, as steps 06 and 07 both have them (`#[command(flatten)]`).
#[derive(clap::Args, Debug, Clone)]
pub struct MasterArgs {
    /// Worker processes: a number, or auto for one per core (read again on SIGHUP).
    #[arg(long, value_name = "N|auto", default_value = "auto")]
    pub workers: WorkerCount,

    /// shared: the master binds the port once and every worker accepts from that socket;
    /// reuseport: each worker binds its own socket with SO_REUSEPORT.
    #[arg(long, value_enum, default_value_t = ListenMode::Shared)]
    pub listen: ListenMode,

    /// Limit on open descriptors (RLIMIT_NOFILE) to set at start, for every worker, like
    /// nginx's worker_rlimit_nofile [default: the hard limit].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(16..))]
    pub max_open_files: Option<u32>,

    /// How long the new binary started by SIGUSR2 may take to have its workers ready; then it
    /// is stopped, and this master goes on serving.
    #[arg(long, value_name = "MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub upgrade_timeout_ms: u64,
}

impl MasterArgs {
    /// The master's start-up: raises the open-files limit, binds the port as `--listen` says,
    /// and [starts](Master::start) the master, which prints the start-up line.
    ///
    /// # Errors
    ///
    /// The contract's one line: the port cannot be bound, or the master cannot start.
    pub fn start(&self, common: &CommonArgs) -> Result<Master, String> {
        // Set in the master, inherited by every worker it forks.
        if let Err(error) = set_open_files_limit(self.max_open_files.map(Into::into)) {
            log::error(format_args!("cannot set the open-files limit: {error}"));
        }
        let listening = Listening::open(&common.host, common.port, self.listen)?;
        let config = MasterConfig {
            workers: self.workers,
            // A worker gets its grace period for the requests in flight, and a margin to exit.
            stop_timeout: common.grace() + Duration::from_secs(2),
            upgrade_timeout: Duration::from_millis(self.upgrade_timeout_ms),
        };
        Master::start(config, listening)
    }
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
