//! The options every step has, and how bad options end a step.

use std::fmt::Display;
use std::net::TcpListener;
use std::time::Duration;

use clap::error::ErrorKind;

use crate::Signals;
use crate::connection::ConnConfig;
use crate::listen::{ListenOptions, bind_listener};

/// The contract's options. Each step flattens this into its own options:
///
/// ```
/// #[derive(clap::Parser)]
/// struct Args {
///     #[command(flatten)]
///     common: common::CommonArgs,
///     /// An option only this step has.
///     #[arg(long, default_value_t = 4)]
///     workers: usize,
/// }
/// ```
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub host: String,

    /// Port to listen on; 0 lets the kernel pick a free one (the start-up line says which).
    #[arg(long, default_value_t = 8090)]
    pub port: u16,

    /// Every request waits this long before it is answered: the course's `sleep(5)` is
    /// --delay-ms 5000.
    #[arg(long, value_name = "MS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(..=600_000))]
    pub delay_ms: u64,

    /// No per-request log lines.
    #[arg(long)]
    pub quiet: bool,

    /// A request head must be complete this long after its first byte (or after the
    /// connection opened), or it is answered 408.
    #[arg(long, value_name = "MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_ms: u64,

    /// A keep-alive connection idle this long is closed without an answer.
    #[arg(long, value_name = "MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_ms: u64,

    /// After SIGINT or SIGTERM, requests in flight get this long to finish.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub grace_ms: u64,
}

impl CommonArgs {
    pub fn delay(&self) -> Duration {
        Duration::from_millis(self.delay_ms)
    }

    pub fn grace(&self) -> Duration {
        Duration::from_millis(self.grace_ms)
    }

    /// The per-connection settings of the blocking connection loop.
    pub fn conn_config(&self) -> ConnConfig {
        ConnConfig {
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            log: !self.quiet,
        }
    }

    /// The start-up of the steps whose loops wait in `poll` (02 to 05): the listening socket
    /// on `--host`/`--port`, non-blocking, and the signal handlers. Either failing ends the
    /// process with its one-line error, as the contract asks.
    pub fn listen_and_install_signals(&self) -> (TcpListener, Signals) {
        let options = ListenOptions {
            nonblocking: true,
            ..ListenOptions::default()
        };
        let listener =
            bind_listener(&self.host, self.port, options).unwrap_or_else(|error| fail(error));
        let signals = Signals::install(&[])
            .unwrap_or_else(|error| fail(format_args!("cannot install signal handlers: {error}")));
        (listener, signals)
    }
}

/// Parses the command line into a step's `Args`.
///
/// `--help` and `--version` print and exit 0. Anything wrong prints one line on stderr,
/// `error: ...` saying what and why, and exits 1, as the contract asks (clap's own default
/// is a usage screen and status 2).
pub fn parse<T: clap::Parser>() -> T {
    match T::try_parse() {
        Ok(args) => args,
        Err(error) => match error.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                let _ = error.print();
                std::process::exit(0)
            }
            _ => {
                let text = error.to_string();
                let first = text.lines().next().unwrap_or("error: invalid arguments");
                let first = first.strip_prefix("error: ").unwrap_or(first);
                fail(format_args!("{first} (try --help)"))
            }
        },
    }
}

/// Prints `error: <what>` on stderr and exits 1: how a step reports a start-up failure.
pub fn fail(what: impl Display) -> ! {
    eprintln!("error: {what}");
    std::process::exit(1)
}
