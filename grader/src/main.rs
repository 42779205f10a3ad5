//! `grade`: grades any server, written in any language, against the step contract and the
//! model a step asks for, with the very checks `cargo test` runs on our own steps
//! (`testkit::checks`).
//!
//! ```text
//! scripts/grade --step 01 -- ./server --port {port}
//! scripts/grade --step 03 --junit report.xml -- python3 server.py --port {port}
//! scripts/grade --step 05 --quick --json -- target/release/step05-epoll-kqueue --port {port}
//! ```
//!
//! Each check starts the command afresh (`{port}` filled with a free port; without `{port}`,
//! the command must print the contract's `listening on` line), talks to it over loopback, and
//! stops it as a user would: `SIGTERM`, then `SIGKILL` to its process group and to everything
//! it started once the grace period is over. The grader is the subreaper of everything it
//! starts, so that nothing a server forks can escape it, and it kills whatever is left before
//! it exits.
//!
//! Exit status: 0 when every required check passed, 1 when one failed, 2 on bad usage.
//!
//! # Layout
//!
//! - `main.rs`: the options, the run, and the cleanup of processes.
//! - [`run`]: each check on its own thread, its panic as its failure, a bounded wait.
//! - [`report`]: the terminal table, `--json` and `--junit`.

mod report;
mod run;

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use clap::Parser;
use testkit::Target;
use testkit::checks::{self, Check, Kind, Run};
use testkit::model::Effort;

use crate::report::Header;
use crate::run::{Outcome, Plan, Verdict};

/// Grades a server against the step contract and a step's model.
#[derive(Parser, Debug)]
#[command(
    name = "grade",
    version,
    after_help = "Exit status: 0 when every required check passed, 1 when one failed, 2 on bad usage.\n\
                  Example: scripts/grade --step 01 -- ./server --port {port}"
)]
struct Args {
    /// The step whose model to check (1 to 7, as 01 or 1).
    #[arg(long, value_name = "NN", value_parser = clap::value_parser!(u8).range(1..=7), required_unless_present = "list")]
    step: Option<u8>,

    /// Also write the report as JUnit XML to FILE.
    #[arg(long, value_name = "FILE")]
    junit: Option<String>,

    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,

    /// A shorter run for CI: smaller loads, and the checks that take seconds left out.
    #[arg(long)]
    quick: bool,

    /// Make the robustness checks required too (our own steps pass them all).
    #[arg(long)]
    strict: bool,

    /// Run only these checks (names as in the report, comma-separated).
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    only: Vec<String>,

    /// The name the server must answer as (Server, /stats's step) [default: the step's crate].
    #[arg(long, value_name = "NAME")]
    name: Option<String>,

    /// Contract checks run at once (each starts its own server).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,

    /// How long a server may take to exit after SIGTERM before it is killed.
    #[arg(long, value_name = "MS", default_value_t = 3000)]
    grace_ms: u64,

    /// List every check (Markdown) and exit.
    #[arg(long)]
    list: bool,

    /// Also write the report (or --list) into FILE, between the lines `<!-- NAME: begin -->`
    /// and `<!-- NAME: end -->` (how the book's sample report is made).
    #[arg(long, value_name = "FILE:NAME")]
    write_region: Option<String>,

    /// The server's command line; `{port}` is replaced by the port it must listen on.
    #[arg(last = true, value_name = "COMMAND", required_unless_present = "list")]
    command: Vec<String>,
}

/// The check the grader adds from what it saw when it stopped each server.
const STOPS: Check = Check {
    name: "stops_on_sigterm_leaving_no_process",
    kind: Kind::Contract,
    measures: "every server the grader started: SIGTERM, exit within the grace, nothing left",
    hint: "on SIGTERM stop accepting, let your children or threads finish, wait for every \
           child you forked, then exit",
    section: "docs/contract.md#signals",
    static_pages: true,
    slow: false,
    run: Run::Plain(|_| {}),
};

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list {
        let list = list_markdown();
        print!("{list}");
        return match &args.write_region {
            Some(region) => written(write_region(region, list.trim_end())),
            None => ExitCode::SUCCESS,
        };
    }
    let Some(step) = args.step.and_then(checks::step) else {
        eprintln!("error: --step must be 1 to 7");
        return ExitCode::from(2);
    };
    let name = args.name.clone().unwrap_or(step.crate_name.to_string());
    let target = match Target::command(&args.command, &name) {
        Ok(target) => target.with_stop_grace(Duration::from_millis(args.grace_ms)),
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let unknown: Vec<&String> = args
        .only
        .iter()
        .filter(|name| {
            !checks::CONTRACT
                .iter()
                .chain(step.checks)
                .any(|check| check.name == name.as_str())
        })
        .collect();
    if !unknown.is_empty() {
        eprintln!("error: no check called {unknown:?} (grade --list lists them)");
        return ExitCode::from(2);
    }
    prepare_process();
    // A server that hangs is told apart from a slow one sooner than in the tests: every check
    // waits a few seconds at most for an answer it expects at once.
    testkit::client::set_read_timeout(Duration::from_secs(if args.quick { 5 } else { 15 }));

    let effort = if args.quick {
        Effort::Quick
    } else {
        Effort::Full
    };
    let plan = Plan {
        target: target.clone(),
        effort,
        strict: args.strict,
        jobs: usize::from(args.jobs),
        limit: Duration::from_secs(if args.quick { 90 } else { 180 }),
        only: args.only.clone(),
    };
    let all: Vec<Check> = checks::CONTRACT
        .iter()
        .chain(step.checks)
        .copied()
        .collect();
    let header = Header {
        step: step.number,
        crate_name: step.crate_name,
        model: step.model,
        command: target.display(),
        quick: args.quick,
        strict: args.strict,
    };
    eprintln!(
        "grade: step {:02}: {} checks against {}",
        step.number,
        all.len(),
        header.command
    );
    let progress = |outcome: &Outcome| {
        let mark = match outcome.verdict {
            Verdict::Pass(_) => "pass",
            Verdict::Fail(_) => "FAIL",
            Verdict::Skip(_) => "skip",
        };
        if !matches!(outcome.verdict, Verdict::Skip(_)) {
            eprintln!("  {mark} {} ({:.1} s)", outcome.check.name, outcome.seconds);
        }
    };
    let mut outcomes = run::run_all(&plan, &all, &progress);
    let leftovers = stop_everything_left();
    if plan.only.is_empty() {
        outcomes.push(stops_outcome(leftovers));
    }

    if let Some(path) = &args.junit
        && let Err(error) = std::fs::write(path, report::junit(&header, &outcomes))
    {
        eprintln!("error: cannot write {path}: {error}");
        return ExitCode::from(2);
    }
    if let Some(region) = &args.write_region {
        let text = format!(
            "```text\n$ scripts/grade --step {:02}{} -- {}\n{}```",
            step.number,
            if args.quick { " --quick" } else { "" },
            header.command,
            report::table(&header, &outcomes)
        );
        if let Err(error) = write_region(region, &text) {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    }
    let mut stdout = std::io::stdout().lock();
    let written = if args.json {
        writeln!(
            stdout,
            "{}",
            serde_json::to_string_pretty(&report::json(&header, &outcomes)).unwrap_or_default()
        )
    } else {
        write!(stdout, "{}", report::table(&header, &outcomes))
    };
    if written.is_err() {
        return ExitCode::from(2);
    }
    if report::passed(&outcomes) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Before the first check: the grader adopts every orphan its servers leave (so that none
/// escapes the final cleanup), stops every server it started when it is interrupted, may hold
/// the sockets of a thousand clients, and keeps the checks' expected panics out of the
/// terminal.
fn prepare_process() {
    #[cfg(target_os = "linux")]
    if let Err(error) = nix::sys::prctl::set_child_subreaper(true) {
        eprintln!("grade: cannot become a subreaper ({error}): orphans may escape the cleanup");
    }
    // The servers run in process groups of their own, out of reach of the terminal's Ctrl-C:
    // the grader catches it and stops them before it exits. (A handler, not a blocked mask
    // and sigwait: the servers would inherit the mask, and ignore SIGTERM.)
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
        let _ = unsafe { sigaction(signal, &action) };
    }
    let _ = std::thread::Builder::new()
        .name("signals".into())
        .spawn(|| {
            loop {
                std::thread::sleep(Duration::from_millis(50));
                let signal = INTERRUPTED.load(Ordering::SeqCst);
                if signal != 0 {
                    let left = stop_everything_left();
                    eprintln!(
                        "grade: signal {signal}: stopped {} processes; no grade",
                        left.len()
                    );
                    std::process::exit(130);
                }
            }
        });
    testkit::model::allow_open_files(65_536);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // A check fails by panicking on its own thread: that is a verdict, not a crash.
        if std::thread::current().name() == Some("main") {
            default_hook(info);
        }
    }));
}

/// The signal that interrupted the grader, or 0.
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_stop_signal(signal: nix::libc::c_int) {
    INTERRUPTED.store(signal, Ordering::SeqCst);
}

/// What is still running among the processes the grader started (a hung check's server, an
/// escaped child): killed, reaped, and returned for the report.
fn stop_everything_left() -> Vec<u32> {
    let me = std::process::id();
    let left: Vec<u32> = testkit::procfs::tree(me)
        .into_iter()
        .filter(|&pid| pid != me)
        .collect();
    for &pid in &left {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    // Orphans adopted by the grader are its children now: reap them (the servers it started
    // itself were reaped when dropped).
    for child in testkit::procfs::children_of(me).unwrap_or_default() {
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child.pid as i32), None);
    }
    left
}

/// The verdict on how the servers stopped.
fn stops_outcome(left: Vec<u32>) -> Outcome {
    let stops = testkit::server::take_stop_records();
    let mut problems = Vec::new();
    let (mut clean, mut total) = (0, 0);
    for stop in &stops {
        total += 1;
        match (&stop.exit, stop.survivors.is_empty()) {
            (Some(_), true) => clean += 1,
            (None, _) => problems.push(format!(
                "server {} still running after SIGTERM and the grace period (killed)",
                stop.pid
            )),
            (Some(_), false) => problems.push(format!(
                "server {} exited, but left {:?} running (killed)",
                stop.pid, stop.survivors
            )),
        }
    }
    if !left.is_empty() {
        problems.push(format!(
            "{} processes still running at the end (killed): {left:?}",
            left.len()
        ));
    }
    let verdict = if total == 0 {
        Verdict::Fail("no server was started and stopped".into())
    } else if problems.is_empty() {
        Verdict::Pass(format!(
            "{total} servers stopped with SIGTERM: each exited within the grace, nothing left"
        ))
    } else {
        problems.truncate(5);
        Verdict::Fail(format!(
            "{clean} of {total} servers stopped cleanly; {}",
            problems.join("; ")
        ))
    };
    Outcome {
        check: STOPS,
        required: true,
        verdict,
        seconds: 0.0,
        server_panics: Vec::new(),
    }
}

/// Every check as Markdown tables: the contract's, then each step's model.
fn list_markdown() -> String {
    let row = |check: &Check| {
        let required = if check.kind == Kind::Robustness {
            "with --strict"
        } else {
            "yes"
        };
        let quick = if check.slow { "no" } else { "yes" };
        let (file, anchor) = check.section.split_once('#').unwrap_or((check.section, ""));
        let link = format!(
            "[{}]({}#{anchor})",
            file.trim_start_matches("docs/"),
            file.trim_start_matches("docs/")
        );
        format!(
            "| `{}` | {} | {required} | {quick} | {link} |\n",
            check.name,
            check.measures.replace('|', "\\|")
        )
    };
    let head = "| check | measures | required | in --quick | section |\n|---|---|---|---|---|\n";
    let mut out = format!("**Every step: the contract**\n\n{head}");
    for check in checks::CONTRACT.iter().chain([&STOPS]) {
        out.push_str(&row(check));
    }
    for step in checks::STEPS {
        out.push_str(&format!(
            "\n**Step {:02}, `{}`: {}**\n\n{head}",
            step.number, step.crate_name, step.model
        ));
        for check in step.checks {
            out.push_str(&row(check));
        }
    }
    out
}

/// Exit status 0, or 2 after printing the error.
fn written(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

/// Replaces what lies between `<!-- NAME: begin -->` and `<!-- NAME: end -->` in FILE (`region`
/// is `FILE:NAME`) with `text`, as `scripts/servers.py`'s `write_region` does.
fn write_region(region: &str, text: &str) -> Result<(), String> {
    let (path, name) = region
        .rsplit_once(':')
        .ok_or_else(|| format!("--write-region wants FILE:NAME, not {region:?}"))?;
    let whole = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let (begin, end) = (
        format!("<!-- {name}: begin -->"),
        format!("<!-- {name}: end -->"),
    );
    let (head, rest) = whole
        .split_once(&begin)
        .ok_or_else(|| format!("{path} has no {begin} line"))?;
    let (_, tail) = rest
        .split_once(&end)
        .ok_or_else(|| format!("{path} has no {end} line"))?;
    std::fs::write(path, format!("{head}{begin}\n{text}\n{end}{tail}"))
        .map_err(|e| format!("cannot write {path}: {e}"))?;
    eprintln!("grade: wrote the {name} region of {path}");
    Ok(())
}
