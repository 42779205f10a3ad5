//! Every check, as data: what it measures, the hint a student gets when it fails, and the
//! section of the book that explains it. `cargo test` ([`crate::contract_suite!`]) and the
//! grader (`scripts/grade`) both run the checks from these tables, so that they cannot drift
//! apart.
//!
//! - [`CONTRACT`]: the contract every step honours, then what a robust server withstands.
//! - [`STEPS`]: per step, the model it must follow ([`crate::model`]).

use crate::contract;
use crate::model::{self, Effort};
use crate::target::Target;

/// What kind of check, which decides whether it is required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The contract's routes, statuses and HTTP behaviour: required.
    Contract,
    /// Bad input, vanishing clients, exhaustion: scored, required only with `--strict`.
    Robustness,
    /// The step's concurrency model: required.
    Model,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Contract => "contract",
            Kind::Robustness => "robustness",
            Kind::Model => "model",
        }
    }
}

/// How a check runs: a contract check passes by returning; a model check returns what it
/// measured. Both fail by panicking with what they saw.
#[derive(Clone, Copy)]
pub enum Run {
    Plain(fn(&Target)),
    Measured(fn(&Target, Effort) -> String),
}

/// One check.
#[derive(Clone, Copy)]
pub struct Check {
    /// The function's name, which is also the test's name in `cargo test`.
    pub name: &'static str,
    pub kind: Kind,
    /// What it sends and what it expects, in one line.
    pub measures: &'static str,
    /// On failure, what to do about it, in one line.
    pub hint: &'static str,
    /// The book's section that explains it: `docs/FILE.md#anchor`.
    pub section: &'static str,
    /// It asks only for the static pages (`/`, `/hello.html`, `/script.js`, the 404 page) and
    /// the protocol, nothing a file server lacks (`/sleep`, `/stats`, `/live`, the step's name,
    /// our error lines), so a plain file server such as nginx can pass it. The grader's test
    /// grades nginx and expects exactly these checks to pass, but for the few where nginx
    /// chooses another answer (`grader/tests/grade.rs` names them and why).
    pub static_pages: bool,
    /// It takes seconds: `--quick` leaves it out.
    pub slow: bool,
    pub run: Run,
}

impl Check {
    /// The same check, marked as one a plain file server can pass ([`Check::static_pages`]):
    /// [`robustness`] takes no such flag, as most of those checks need more.
    const fn on_static_pages(mut self) -> Check {
        self.static_pages = true;
        self
    }
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Check").field("name", &self.name).finish()
    }
}

const fn contract(
    name: &'static str,
    measures: &'static str,
    hint: &'static str,
    section: &'static str,
    static_pages: bool,
    run: fn(&Target),
) -> Check {
    Check {
        name,
        kind: Kind::Contract,
        measures,
        hint,
        section,
        static_pages,
        slow: false,
        run: Run::Plain(run),
    }
}

const fn robustness(
    name: &'static str,
    measures: &'static str,
    hint: &'static str,
    section: &'static str,
    slow: bool,
    run: fn(&Target),
) -> Check {
    Check {
        name,
        kind: Kind::Robustness,
        measures,
        hint,
        section,
        static_pages: false,
        slow,
        run: Run::Plain(run),
    }
}

const fn model(
    name: &'static str,
    measures: &'static str,
    hint: &'static str,
    section: &'static str,
    run: fn(&Target, Effort) -> String,
) -> Check {
    Check {
        name,
        kind: Kind::Model,
        measures,
        hint,
        section,
        static_pages: false,
        slow: false,
        run: Run::Measured(run),
    }
}

const ROUTES: &str = "docs/contract.md#routes";
const HTTP: &str = "docs/contract.md#http11-behaviour";
const BAD_INPUT: &str = "docs/contract.md#bad-input";

/// The contract, in the order the grader reports it.
pub const CONTRACT: &[Check] = &[
    contract(
        "routes_answer_as_the_contract_says",
        "GET /, /hello.html, /script.js, /sleep?ms=20 (and 3 bad ms), a 404: status, type, body",
        "serve the site: / and /hello.html text/html, /script.js application/javascript, \
         /sleep?ms=N `slept N ms` (400 outside 0..=60000), anything else 404 text/html",
        ROUTES,
        false,
        contract::routes_answer_as_the_contract_says,
    ),
    contract(
        "every_answer_carries_a_date",
        "Date on a 200, a 404 and a HEAD: an IMF-fixdate within a minute of the clock",
        "send `Date: Sun, 06 Nov 1994 08:49:37 GMT` (strftime \"%a, %d %b %Y %H:%M:%S GMT\" \
         of gmtime) on every answer",
        ROUTES,
        true,
        contract::every_answer_carries_a_date,
    ),
    contract(
        "every_answer_names_the_step",
        "Server on /, /script.js and a 404: the step's crate name",
        "send `Server: <crate name>` (such as step01-fork) on every answer",
        ROUTES,
        false,
        contract::every_answer_names_the_step,
    ),
    contract(
        "head_is_get_without_body",
        "HEAD /, /stats, a 404: no body; HEAD / has GET /'s Content-Length",
        "answer HEAD as GET, the same head with its Content-Length, and no body",
        ROUTES,
        true,
        contract::head_is_get_without_body,
    ),
    contract(
        "matching_etag_gets_304",
        "ETag on /, /script.js, the 404 page; If-None-Match with it: 304, no body",
        "give each page a strong ETag (\"...\") computed from its bytes; a matching \
         If-None-Match gets 304 without a body",
        ROUTES,
        true,
        contract::matching_etag_gets_304,
    ),
    contract(
        "other_methods_get_405_with_allow",
        "POST /, DELETE /stats, PUT /script.js: 405 with Allow: GET, HEAD; the connection goes on",
        "another method on a known route: 405 with `Allow: GET, HEAD`, and read its body",
        ROUTES,
        true,
        contract::other_methods_get_405_with_allow,
    ),
    contract(
        "keep_alive_serves_several_requests",
        "five GET / on one HTTP/1.1 connection: five 200s with Connection: keep-alive",
        "loop: read a request, answer it, read the next on the same connection; say \
         `Connection: keep-alive`",
        HTTP,
        true,
        contract::keep_alive_serves_several_requests,
    ),
    contract(
        "pipelined_requests_are_answered_in_order",
        "four requests in one write: four answers, in order",
        "keep what follows a request's head in your buffer: it is the next request (one read \
         is not one request)",
        "docs/00-socket-server.md#why-one-read-is-not-one-request",
        true,
        contract::pipelined_requests_are_answered_in_order,
    ),
    contract(
        "a_slow_pipelined_request_is_not_overtaken",
        "/sleep?ms=100 then two quick requests in one write: answered in that order",
        "answer a connection's requests one after the other, even when the first is slow",
        HTTP,
        false,
        contract::a_slow_pipelined_request_is_not_overtaken,
    ),
    contract(
        "connection_close_is_honoured",
        "Connection: close: answered with Connection: close, then closed",
        "after answering a request that says `Connection: close`, say so and close",
        HTTP,
        true,
        contract::connection_close_is_honoured,
    ),
    contract(
        "http_1_0_closes_unless_kept_alive",
        "HTTP/1.0: closed after the answer; with Connection: keep-alive, kept",
        "HTTP/1.0 closes by default, unless the request says `Connection: keep-alive`",
        HTTP,
        true,
        contract::http_1_0_closes_unless_kept_alive,
    ),
    contract(
        "garbage_gets_400_and_close",
        "a TLS hello, a header without a colon, no Host, `HELLO`: 400, Connection: close",
        "reject a malformed request line or header, or a missing Host, with 400, then close",
        BAD_INPUT,
        true,
        contract::garbage_gets_400_and_close,
    ),
    contract(
        "oversized_head_gets_431_and_close",
        "a 9 KiB header: 431 and close; a 10 KiB target: 414; the server still serves",
        "stop reading a head at 8 KiB: 431 (414 when the request line alone is too long), \
         then close",
        BAD_INPUT,
        true,
        contract::oversized_head_gets_431_and_close,
    ),
    contract(
        "slow_head_gets_408",
        "half a head then silence, --header-timeout-ms 300: 408 after 0.3 s, then close",
        "bound the wait for a head (poll with a timeout, or SO_RCVTIMEO): after \
         --header-timeout-ms, 408 and close",
        BAD_INPUT,
        true,
        contract::slow_head_gets_408,
    ),
    contract(
        "idle_keep_alive_connection_is_closed",
        "--idle-timeout-ms 300: an idle kept-alive connection closed after 0.3 s, silently",
        "bound the wait for the next request: after --idle-timeout-ms, close without an answer",
        BAD_INPUT,
        true,
        contract::idle_keep_alive_connection_is_closed,
    ),
    contract(
        "stats_is_json",
        "GET /stats: 200 application/json with `step` (the crate name) and `pid`",
        "answer /stats with a JSON object: {\"step\": \"<crate name>\", \"pid\": <getpid()>, ...}",
        ROUTES,
        false,
        contract::stats_is_json,
    ),
    contract(
        "live_page_is_served",
        "GET /live: 200 text/html, a page that polls /stats",
        "serve the live page (common/site/live.html) at /live as text/html; it draws what \
         /stats says",
        ROUTES,
        false,
        contract::live_page_is_served,
    ),
    contract(
        "bad_options_fail_with_one_line",
        "--port not-a-port, --no-such-option, --delay-ms -5: exit 1, one stderr line `error: ...`",
        "check every option; on a bad one print one line `error: ...` on stderr and exit(1)",
        "docs/contract.md#options",
        false,
        contract::bad_options_fail_with_one_line,
    ),
    contract(
        "port_in_use_fails_with_one_line",
        "a port already in use: exit 1 and `error: cannot listen on 127.0.0.1:PORT: Address \
         already in use`",
        "when bind fails, print `error: cannot listen on HOST:PORT: <strerror(errno)>` and \
         exit(1)",
        "docs/contract.md#options",
        false,
        contract::port_in_use_fails_with_one_line,
    ),
    contract(
        "sigterm_when_idle_exits_0",
        "SIGTERM with an idle keep-alive client: exit 0 within 3 s, that client closed",
        "on SIGTERM stop accepting, close idle connections, finish requests in flight, exit(0)",
        "docs/contract.md#signals",
        true,
        contract::sigterm_when_idle_exits_0,
    ),
    robustness(
        "framing_conflicts_get_400",
        "Content-Length with Transfer-Encoding, two lengths: 400 and close; gzip, chunked: 501",
        "a request whose body length is ambiguous is refused (400, close): request smuggling",
        BAD_INPUT,
        false,
        contract::framing_conflicts_get_400,
    )
    .on_static_pages(),
    robustness(
        "request_bodies_are_read_and_discarded",
        "bodies (Content-Length, chunked, 300 KiB in pieces) skipped, never read as a request",
        "read a request's body to its end (Content-Length bytes, or the chunks) before the \
         next request",
        HTTP,
        false,
        contract::request_bodies_are_read_and_discarded,
    ),
    robustness(
        "expect_100_continue_is_answered",
        "Expect: 100-continue: `100 Continue` before the body, then the answer",
        "on `Expect: 100-continue` send `HTTP/1.1 100 Continue` before reading the body",
        HTTP,
        false,
        contract::expect_100_continue_is_answered,
    ),
    robustness(
        "client_disconnects_do_not_hurt_others",
        "clients gone before, during a head, a body, a delayed answer: the others served",
        "an error on one connection ends that connection only: no exit, no crash",
        BAD_INPUT,
        false,
        contract::client_disconnects_do_not_hurt_others,
    )
    .on_static_pages(),
    robustness(
        "bad_input_corpus",
        "every case of testkit/corpus/bad-input.toml on its own connection, / served after each",
        "each failed case names what was sent and what was expected (RFC 9112's rules, as \
         nginx applies them)",
        "docs/hardening.md#bad-input-one-corpus-every-step",
        false,
        contract::bad_input_corpus,
    ),
    robustness(
        "client_resets_do_not_hurt_others",
        "resets mid-request, mid-answer and while delayed, writes after a close (EPIPE)",
        "ignore SIGPIPE (or use MSG_NOSIGNAL) and end only the connection whose write failed",
        BAD_INPUT,
        false,
        contract::client_resets_do_not_hurt_others,
    )
    .on_static_pages(),
    robustness(
        "a_client_that_never_reads_is_dropped",
        "a long pipeline of requests never read: others served, the stuck client dropped",
        "bound the time a write may block (SO_SNDTIMEO, or a poll deadline), then drop the \
         connection",
        "docs/hardening.md#slow-clients-descriptors-storms-measured",
        true,
        contract::a_client_that_never_reads_is_dropped,
    ),
    robustness(
        "a_connection_storm_leaks_nothing",
        "2 × 2 s of connections opened and closed: processes, threads, fds, memory back",
        "close every descriptor and end every thread or child when its connection ends",
        "docs/hardening.md#slow-clients-descriptors-storms-measured",
        true,
        contract::a_connection_storm_leaks_nothing,
    ),
    robustness(
        "running_out_of_descriptors_neither_spins_nor_sticks",
        "ulimit -n 64 and 200 clients: under 25 % of a core while stuck, served again within 3 s",
        "on EMFILE from accept, pause accepting a moment instead of retrying at once",
        "docs/05-event-loop.md#accepting-and-running-out-of-descriptors",
        true,
        contract::running_out_of_descriptors_neither_spins_nor_sticks,
    ),
    robustness(
        "a_half_closed_client_gets_its_answer_and_the_end",
        "a request then shutdown(SHUT_WR): the answer, then the close within 1 s",
        "a read of 0 bytes after a complete request: answer it, then close",
        HTTP,
        false,
        contract::a_half_closed_client_gets_its_answer_and_the_end,
    )
    .on_static_pages(),
];

const SIDE_BY_SIDE: Check = model(
    "slow_requests_are_served_side_by_side",
    "20 × /sleep?ms=1000 at once (10 × 500 ms when quick): under 2.5 times one request",
    "serve each connection in its own process or thread, so that the next accept does not \
     wait for this answer",
    "docs/01-fork.md#experiment",
    model::slow_requests_are_served_side_by_side,
);

/// A step: its number, crate, model in a few words, and model checks.
#[derive(Debug)]
pub struct Step {
    pub number: u8,
    pub crate_name: &'static str,
    pub model: &'static str,
    pub checks: &'static [Check],
}

/// The seven steps and what each one's model must show.
pub const STEPS: &[Step] = &[
    Step {
        number: 1,
        crate_name: "step01-fork",
        model: "a process per connection",
        checks: &[
            SIDE_BY_SIDE,
            model(
                "a_process_per_connection",
                "10 × /sleep?ms=500 in flight: at least 10 child processes",
                "fork after accept; the child serves the connection and exits, the parent \
                 closes its copy and accepts again",
                "docs/01-fork.md#the-code",
                model::a_process_per_connection,
            ),
            model(
                "no_zombie_is_left",
                "200 connections (100 when quick): within 5 s no child left, zombie or not",
                "reap every child: on SIGCHLD, waitpid(-1, &status, WNOHANG) until it returns \
                 0 (the course's server left zombies)",
                "docs/01-fork.md#what-the-c-version-got-wrong-and-what-this-step-does-instead",
                model::no_zombie_is_left,
            ),
        ],
    },
    Step {
        number: 2,
        crate_name: "step02-threads",
        model: "a thread per connection",
        checks: &[
            SIDE_BY_SIDE,
            model(
                "a_thread_per_connection",
                "10 × /sleep?ms=500 in flight: 10 more threads, no child; then back to idle",
                "start a thread per accepted connection, and let it end with its connection",
                "docs/02-threads.md#experiment",
                model::a_thread_per_connection,
            ),
        ],
    },
    Step {
        number: 3,
        crate_name: "step03-queue-autoscale",
        model: "a bounded queue and workers that grow at 80 % full and shrink back",
        checks: &[model(
            "workers_grow_under_a_burst_and_return_to_the_floor",
            "40 × /sleep?ms=300 at once (20 when quick): workers (/stats, or /proc threads) \
             above the idle count, then back to it",
            "add a worker when a connection leaves the queue at least 80 % full, let one go \
             after a calm spell (at most 20 %), never the last",
            "docs/03-queue-autoscale.md#experiment",
            model::workers_grow_under_a_burst_and_return_to_the_floor,
        )],
    },
    Step {
        number: 4,
        crate_name: "step04-threadpool",
        model: "a fixed pool of threads fed by a channel",
        checks: &[model(
            "a_fixed_number_of_threads",
            "threads idle, during 32 × /sleep?ms=300 (16 when quick) and after: all the same; \
             faster than one at a time",
            "start the pool's threads once, at start-up, and hand them connections through a \
             channel; never start a thread per connection",
            "docs/04-threadpool.md#experiment",
            model::a_fixed_number_of_threads,
        )],
    },
    Step {
        number: 5,
        crate_name: "step05-epoll-kqueue",
        model: "one thread, non-blocking sockets, an event loop",
        checks: &[model(
            "one_thread_holds_a_thousand_slow_requests",
            "1000 × /sleep?ms=1000 at once: all answered within 3 s by one thread",
            "non-blocking sockets and one epoll/kqueue loop; /sleep is a timer in the loop, \
             never a sleep()",
            "docs/05-event-loop.md#timers-the-heap-that-bounds-the-wait",
            model::one_thread_holds_a_thousand_slow_requests,
        )],
    },
    Step {
        number: 6,
        crate_name: "step06-master-worker",
        model: "a master process and a worker process per core",
        checks: &[
            model(
                "a_worker_process_per_core",
                "the master's child processes, once started: one per core",
                "bind, then fork one worker per core (the cores this process may use); the \
                 master only supervises",
                "docs/06-master-worker.md#the-master-fork-then-only-supervise",
                model::a_worker_process_per_core,
            ),
            model(
                "a_killed_worker_is_replaced",
                "kill -9 a worker under a steady load: a new one within 1 s",
                "the master reaps its workers (SIGCHLD, waitpid) and forks a new one for each \
                 that died",
                "docs/06-master-worker.md#the-master-fork-then-only-supervise",
                model::a_killed_worker_is_replaced,
            ),
            model(
                "a_reload_fails_no_request",
                "SIGHUP under 8 clients: every worker replaced, no request failed",
                "on SIGHUP start the new workers first, then let the old ones finish what they \
                 serve and exit",
                "docs/06-master-worker.md#signals-are-the-control-interface",
                model::a_reload_fails_no_request,
            ),
        ],
    },
    Step {
        number: 7,
        crate_name: "step07-reverse-proxy",
        model: "a reverse proxy balancing over upstreams",
        checks: &[model(
            "requests_spread_over_its_upstreams",
            "60 requests, no configuration: spread over the upstreams it started (X-Upstream)",
            "with no --config, start a few upstreams, take them in turn, and name the one that \
             answered in `X-Upstream`",
            "docs/07-reverse-proxy.md#balancing-measured",
            model::requests_spread_over_its_upstreams,
        )],
    },
];

/// The step numbered `number`.
pub fn step(number: u8) -> Option<&'static Step> {
    STEPS.iter().find(|step| step.number == number)
}

/// Runs the contract check called `name` against `bin` started with `args`: what each
/// `#[test]` of [`crate::contract_suite!`] does.
///
/// # Panics
///
/// When the check fails, or there is no contract check of that name.
pub fn run_contract_check(name: &str, bin: &str, args: &[&str]) {
    let check = CONTRACT
        .iter()
        .find(|check| check.name == name)
        .unwrap_or_else(|| panic!("no contract check called {name} in testkit::checks"));
    let target = Target::binary(bin, args);
    match check.run {
        Run::Plain(run) => run(&target),
        Run::Measured(run) => {
            run(&target, Effort::Full);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names `contract_suite!` makes tests of.
    const SUITE: &[&str] = &crate::contract_check_names!();

    #[test]
    fn the_suite_and_the_table_list_the_same_checks() {
        let table: Vec<&str> = CONTRACT.iter().map(|check| check.name).collect();
        assert_eq!(SUITE, table.as_slice());
    }

    #[test]
    fn every_check_has_a_name_a_hint_and_a_section() {
        let all = CONTRACT
            .iter()
            .chain(STEPS.iter().flat_map(|step| step.checks));
        for check in all {
            assert!(!check.measures.is_empty() && !check.hint.is_empty());
            assert!(
                check.section.starts_with("docs/") && check.section.contains(".md#"),
                "{}: {}",
                check.name,
                check.section
            );
        }
        for (number, step) in (1..).zip(STEPS) {
            assert_eq!(step.number, number);
        }
    }
}
