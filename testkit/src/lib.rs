//! Test helpers shared by every step.
//!
//! Tests start the real binary ([`Server::start`], always on port 0, reading the
//! `listening on` line), talk to it over real TCP ([`Client`]) and assert on what a user would
//! see. The contract that every step honours is checked once, in [`contract`], and each step
//! runs it with [`contract_suite!`].
//!
//! # Layout
//!
//! - [`recorder`]: an upstream that records every byte a proxy sends it, read strictly.
//! - [`server`]: start a step, signal it, stop it (its whole process group, by pid), find a
//!   master's workers.
//! - [`client`]: a small HTTP/1.1 client over a raw `TcpStream`.
//! - [`checks`]: every check as data (what it measures, its hint, its chapter section), for
//!   `cargo test` and the grader alike.
//! - [`contract`]: the contract conformance checks, one function each.
//! - [`corpus`]: the bad-input corpus (`corpus/bad-input.toml`), run against a step.
//! - [`load`]: many requests at once, for the timing-ratio tests.
//! - [`model`]: each step's model, measured from outside (for `scripts/grade`).
//! - [`procfs`]: counting a server's children, zombies, threads and CPU time on Linux.
//! - [`target`]: what the checks start: a step's binary, or any command with `{port}`.
//! - [`shutdown`]: the `SIGTERM` experiments steps run alike (a request in flight, the grace
//!   period).
//! - [`slow`]: five hundred slow clients (`scripts/slow_clients.py`) against a step.
//! - [`tools`]: external tools a test needs (python3), skipped with a printed reason.
//! - [`upgrade`]: binary upgrades (`SIGUSR2`) under load, and with a broken new binary.
//! - [`upstream`]: small HTTP upstreams for the reverse proxy to stand in front of.
//! - [`wait`]: [`wait_for`], polling for a state instead of sleeping before a count.

mod acceptor;
pub mod checks;
pub mod client;
pub mod contract;
pub mod corpus;
pub mod load;
pub mod model;
pub mod procfs;
pub mod recorder;
pub mod server;
pub mod shutdown;
pub mod slow;
pub mod target;
pub mod tools;
pub mod upgrade;
pub mod upstream;
pub mod wait;

pub use client::{Client, Response, get};
pub use server::Server;
pub use target::Target;
pub use wait::wait_for;

/// Generates one `#[test]` per contract check (the list of [`checks::CONTRACT`]) for a step's
/// binary, with optional extra options for every server it starts:
///
/// ```ignore
/// mod contract {
///     testkit::contract_suite!(env!("CARGO_BIN_EXE_step01-fork"));
/// }
/// mod contract_iterative {
///     testkit::contract_suite!(env!("CARGO_BIN_EXE_step01-fork"), "--iterative");
/// }
/// ```
#[macro_export]
macro_rules! contract_suite {
    ($bin:expr $(, $arg:expr)* $(,)?) => {
        $crate::contract_check_names!(@suite $bin, [$($arg),*]);
    };
    (@tests $bin:expr, $args:tt; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                $crate::checks::run_contract_check(stringify!($name), $bin, &$args);
            }
        )*
    };
}

/// The contract checks' names, in the order of [`checks::CONTRACT`] (a unit test keeps the two
/// the same): as an array of strings, or handed to [`contract_suite!`].
#[doc(hidden)]
#[macro_export]
macro_rules! contract_check_names {
    (@with [@strings]; $($name:ident),*) => {
        [$(stringify!($name)),*]
    };
    (@with [@suite $bin:expr, $args:tt]; $($name:ident),*) => {
        $crate::contract_suite!(@tests $bin, $args; $($name),*);
    };
    () => {
        $crate::contract_check_names!(@strings)
    };
    ($($how:tt)*) => {
        $crate::contract_check_names! { @with [$($how)*];
            routes_answer_as_the_contract_says,
            every_answer_carries_a_date,
            every_answer_names_the_step,
            head_is_get_without_body,
            matching_etag_gets_304,
            other_methods_get_405_with_allow,
            keep_alive_serves_several_requests,
            pipelined_requests_are_answered_in_order,
            a_slow_pipelined_request_is_not_overtaken,
            connection_close_is_honoured,
            http_1_0_closes_unless_kept_alive,
            garbage_gets_400_and_close,
            oversized_head_gets_431_and_close,
            slow_head_gets_408,
            idle_keep_alive_connection_is_closed,
            stats_is_json,
            live_page_is_served,
            bad_options_fail_with_one_line,
            port_in_use_fails_with_one_line,
            sigterm_when_idle_exits_0,
            framing_conflicts_get_400,
            request_bodies_are_read_and_discarded,
            expect_100_continue_is_answered,
            client_disconnects_do_not_hurt_others,
            bad_input_corpus,
            client_resets_do_not_hurt_others,
            a_client_that_never_reads_is_dropped,
            a_connection_storm_leaks_nothing,
            running_out_of_descriptors_neither_spins_nor_sticks,
            a_half_closed_client_gets_its_answer_and_the_end
        }
    };
}
