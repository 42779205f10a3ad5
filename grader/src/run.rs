//! Running the checks: each on a thread of its own, its panic caught as its failure, its
//! verdict awaited for a bounded time; the contract's checks a few at a time, the model's one
//! after the other (they measure time and must not share the machine with each other).

use std::any::Any;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use testkit::Target;
use testkit::checks::{Check, Kind, Run};
use testkit::model::Effort;

/// What became of one check.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Passed; what it measured.
    Pass(String),
    /// Failed; what it saw.
    Fail(String),
    /// Not run; why.
    Skip(String),
}

/// One check and its verdict.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub check: Check,
    pub required: bool,
    pub verdict: Verdict,
    pub seconds: f64,
    /// The panics the server printed while this check ran (a starter's `todo!()`).
    pub server_panics: Vec<String>,
}

/// How to run the checks.
pub struct Plan {
    pub target: Target,
    pub effort: Effort,
    /// Robustness checks are required too.
    pub strict: bool,
    /// Contract checks run at once.
    pub jobs: usize,
    /// How long a check may take before it counts as hung.
    pub limit: Duration,
    /// Only these checks (by name), when not empty.
    pub only: Vec<String>,
}

impl Plan {
    fn required(&self, check: &Check) -> bool {
        check.kind != Kind::Robustness || self.strict
    }

    /// Why `check` is left out, if it is.
    fn skip_reason(&self, check: &Check) -> Option<String> {
        if !self.only.is_empty() && !self.only.iter().any(|name| name == check.name) {
            return Some("not among --only".into());
        }
        (check.slow && self.effort == Effort::Quick)
            .then(|| "left out by --quick (it takes seconds)".into())
    }
}

/// Runs `checks` by `plan`, calling `progress` as each verdict arrives; the outcomes in the
/// order of `checks`.
pub fn run_all(plan: &Plan, checks: &[Check], progress: &dyn Fn(&Outcome)) -> Vec<Outcome> {
    let mut outcomes: Vec<Option<Outcome>> = vec![None; checks.len()];
    let mut waiting: Vec<usize> = Vec::new();
    for (index, check) in checks.iter().enumerate() {
        match plan.skip_reason(check) {
            Some(reason) => {
                let outcome = Outcome {
                    check: *check,
                    required: plan.required(check),
                    verdict: Verdict::Skip(reason),
                    seconds: 0.0,
                    server_panics: Vec::new(),
                };
                progress(&outcome);
                outcomes[index] = Some(outcome);
            }
            None => waiting.push(index),
        }
    }
    let (parallel, serial): (Vec<usize>, Vec<usize>) = waiting
        .into_iter()
        .partition(|&index| checks[index].kind != Kind::Model);
    // The contract's checks, `jobs` at a time: each starts its own server.
    let queue = Arc::new(Mutex::new(parallel));
    let (done, results) = mpsc::channel();
    let runners: Vec<_> = (0..plan.jobs.max(1))
        .map(|_| {
            let (queue, done) = (Arc::clone(&queue), done.clone());
            let (target, effort, limit) = (plan.target.clone(), plan.effort, plan.limit);
            let checks = checks.to_vec();
            thread::spawn(move || {
                loop {
                    let next = queue.lock().ok().and_then(|mut queue| queue.pop());
                    let Some(index) = next else { break };
                    let outcome = run_one(&target, checks[index], effort, limit);
                    if done.send((index, outcome)).is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    drop(done);
    let mut record = |index: usize, (verdict, seconds, server_panics): Ran| {
        let outcome = Outcome {
            check: checks[index],
            required: plan.required(&checks[index]),
            verdict,
            seconds,
            server_panics,
        };
        progress(&outcome);
        outcomes[index] = Some(outcome);
    };
    for (index, ran) in results {
        record(index, ran);
    }
    for runner in runners {
        let _ = runner.join();
    }
    // The model's checks, one at a time.
    for index in serial {
        let (verdict, seconds, panics) =
            run_one(&plan.target, checks[index], plan.effort, plan.limit);
        let outcome = Outcome {
            check: checks[index],
            required: plan.required(&checks[index]),
            verdict,
            seconds,
            server_panics: panics,
        };
        progress(&outcome);
        outcomes[index] = Some(outcome);
    }
    outcomes.into_iter().flatten().collect()
}

/// A check's verdict, its seconds, and the panics its servers printed.
type Ran = (Verdict, f64, Vec<String>);

/// Runs one check on a thread of its own and waits at most `limit` for its verdict.
fn run_one(target: &Target, check: Check, effort: Effort, limit: Duration) -> Ran {
    let panics = Arc::new(Mutex::new(Vec::new()));
    let target = target.clone().with_panic_sink(Arc::clone(&panics));
    let (sender, receiver) = mpsc::channel();
    let started = Instant::now();
    let spawned = thread::Builder::new()
        .name(check.name.to_string())
        .spawn(move || {
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match check.run {
                    Run::Plain(run) => {
                        run(&target);
                        check.measures.to_string()
                    }
                    Run::Measured(run) => run(&target, effort),
                }));
            let _ = sender.send(result.map_err(panic_text));
        });
    let verdict = match spawned {
        Err(error) => Verdict::Fail(format!("the grader could not start a thread: {error}")),
        Ok(_) => match receiver.recv_timeout(limit) {
            Ok(Ok(measured)) => Verdict::Pass(measured),
            Ok(Err(failure)) => Verdict::Fail(failure),
            // The thread is left behind with its server; the grader kills every process it
            // started before it exits.
            Err(_) => Verdict::Fail(format!(
                "no verdict within {} s: the server hangs, or answers far too slowly",
                limit.as_secs()
            )),
        },
    };
    let seconds = started.elapsed().as_secs_f64();
    let panics = panics.lock().map(|p| p.clone()).unwrap_or_default();
    (verdict, seconds, panics)
}

/// A panic's message.
fn panic_text(payload: Box<dyn Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|text| text.to_string()))
        .unwrap_or_else(|| "the check failed".into())
}
