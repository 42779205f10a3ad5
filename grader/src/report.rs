//! The report, three ways: a table for the terminal, JSON for scripts, JUnit XML for CI
//! platforms and course sites (GitHub Actions, GitLab, Jenkins read it).

use std::fmt::Write;

use serde_json::json;

use crate::run::{Outcome, Verdict};

/// What a report is about.
pub struct Header {
    pub step: u8,
    pub crate_name: &'static str,
    pub model: &'static str,
    pub command: String,
    pub quick: bool,
    pub strict: bool,
}

/// Counts of one group of checks.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Tally {
    fn of<'a>(outcomes: impl Iterator<Item = &'a Outcome>) -> Tally {
        let mut tally = Tally::default();
        for outcome in outcomes {
            match outcome.verdict {
                Verdict::Pass(_) => tally.passed += 1,
                Verdict::Fail(_) => tally.failed += 1,
                Verdict::Skip(_) => tally.skipped += 1,
            }
        }
        tally
    }

    fn run(&self) -> usize {
        self.passed + self.failed
    }
}

/// The required checks' tally and the others'.
pub fn tallies(outcomes: &[Outcome]) -> (Tally, Tally) {
    (
        Tally::of(outcomes.iter().filter(|o| o.required)),
        Tally::of(outcomes.iter().filter(|o| !o.required)),
    )
}

/// Whether the grade is a pass: every required check that ran passed, and none was skipped
/// for any reason but `--quick`/`--only`.
pub fn passed(outcomes: &[Outcome]) -> bool {
    let (required, _) = tallies(outcomes);
    required.failed == 0 && required.passed > 0
}

/// A failure's hint line, with the server's own panic first when there was one.
fn hints(outcome: &Outcome) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(first) = outcome.server_panics.first() {
        lines.push(format!("the server panicked: {first}"));
    }
    lines.push(format!(
        "hint: {} (see {})",
        outcome.check.hint, outcome.check.section
    ));
    lines
}

/// The table for a terminal.
pub fn table(header: &Header, outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "grade: step {:02} ({}): {}",
        header.step, header.crate_name, header.model
    );
    let _ = writeln!(out, "command: {}", header.command);
    let mode = match (header.quick, header.strict) {
        (true, true) => "quick, strict",
        (true, false) => "quick",
        (false, true) => "strict",
        (false, false) => "full",
    };
    let _ = writeln!(out, "mode: {mode}\n");
    let width = outcomes
        .iter()
        .map(|o| o.check.name.len())
        .max()
        .unwrap_or(10);
    let _ = writeln!(
        out,
        "{:<5} {:<11} {:<width$}  measured",
        "", "kind", "check"
    );
    for outcome in outcomes {
        let kind = if outcome.required {
            outcome.check.kind.label().to_string()
        } else {
            format!("{}*", outcome.check.kind.label())
        };
        let (mark, text) = match &outcome.verdict {
            Verdict::Pass(measured) => ("pass", measured.clone()),
            Verdict::Fail(failure) => ("FAIL", failure.clone()),
            Verdict::Skip(reason) => ("skip", reason.clone()),
        };
        let mut lines = text.lines();
        let _ = writeln!(
            out,
            "{mark:<5} {kind:<11} {:<width$}  {}",
            outcome.check.name,
            lines.next().unwrap_or_default()
        );
        if let Verdict::Fail(_) = outcome.verdict {
            let pad = " ".repeat(19 + width);
            let rest: Vec<&str> = lines.collect();
            for line in rest.iter().take(8) {
                let _ = writeln!(out, "{pad}{line}");
            }
            if rest.len() > 8 {
                let _ = writeln!(out, "{pad}... ({} more lines in --json)", rest.len() - 8);
            }
            for hint in hints(outcome) {
                let _ = writeln!(out, "{pad}{hint}");
            }
        }
    }
    let (required, other) = tallies(outcomes);
    let _ = writeln!(
        out,
        "\nrequired: {} of {} passed{}",
        required.passed,
        required.run(),
        skipped_note(required)
    );
    if other.run() + other.skipped > 0 {
        let _ = writeln!(
            out,
            "robustness (*, not required without --strict): {} of {} passed{}",
            other.passed,
            other.run(),
            skipped_note(other)
        );
    }
    let _ = writeln!(
        out,
        "grade: {}",
        if passed(outcomes) { "PASS" } else { "FAIL" }
    );
    out
}

fn skipped_note(tally: Tally) -> String {
    if tally.skipped == 0 {
        String::new()
    } else {
        format!(", {} skipped", tally.skipped)
    }
}

/// The report as JSON.
pub fn json(header: &Header, outcomes: &[Outcome]) -> serde_json::Value {
    let (required, other) = tallies(outcomes);
    let checks: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|outcome| {
            let (result, text) = match &outcome.verdict {
                Verdict::Pass(measured) => ("pass", measured),
                Verdict::Fail(failure) => ("fail", failure),
                Verdict::Skip(reason) => ("skip", reason),
            };
            let mut check = json!({
                "name": outcome.check.name,
                "kind": outcome.check.kind.label(),
                "required": outcome.required,
                "result": result,
                "measures": outcome.check.measures,
                "section": outcome.check.section,
                "seconds": (outcome.seconds * 1000.0).round() / 1000.0,
            });
            match result {
                "pass" => check["measured"] = json!(text),
                "skip" => check["reason"] = json!(text),
                _ => {
                    check["failure"] = json!(text);
                    check["hint"] = json!(outcome.check.hint);
                    check["server_panics"] = json!(outcome.server_panics);
                }
            }
            check
        })
        .collect();
    json!({
        "step": header.step,
        "crate": header.crate_name,
        "model": header.model,
        "command": header.command,
        "quick": header.quick,
        "strict": header.strict,
        "passed": passed(outcomes),
        "required": {"passed": required.passed, "failed": required.failed, "skipped": required.skipped},
        "robustness": {"passed": other.passed, "failed": other.failed, "skipped": other.skipped},
        "checks": checks,
    })
}

/// Text made safe for XML: markup escaped, and the characters XML 1.0 cannot hold at all
/// (most control characters, which a server's bytes may contain) replaced.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(ch),
            ch if (ch as u32) < 0x20 || ch == '\u{fffe}' || ch == '\u{ffff}' => {
                out.push('\u{fffd}');
            }
            ch => out.push(ch),
        }
    }
    out
}

/// The report as JUnit XML: one `testsuite` for the step, a `testcase` per check (the kind as
/// its class), `failure` with the hint as its message, `skipped` for checks left out.
pub fn junit(header: &Header, outcomes: &[Outcome]) -> String {
    let (required, other) = tallies(outcomes);
    let tests = outcomes.len();
    let failures = required.failed + other.failed;
    let skipped = required.skipped + other.skipped;
    let time: f64 = outcomes.iter().map(|o| o.seconds).sum();
    let suite = format!("step{:02} {}", header.step, header.crate_name);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" \
         skipped=\"{skipped}\" time=\"{time:.3}\">",
        xml(&format!("grade {suite}"))
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" \
         skipped=\"{skipped}\" time=\"{time:.3}\">",
        xml(&suite)
    );
    let _ = writeln!(out, "    <properties>");
    for (name, value) in [
        ("command", header.command.clone()),
        ("model", header.model.to_string()),
        ("quick", header.quick.to_string()),
        ("strict", header.strict.to_string()),
        ("passed", passed(outcomes).to_string()),
    ] {
        let _ = writeln!(
            out,
            "      <property name=\"{name}\" value=\"{}\"/>",
            xml(&value)
        );
    }
    let _ = writeln!(out, "    </properties>");
    for outcome in outcomes {
        let class = if outcome.required {
            outcome.check.kind.label().to_string()
        } else {
            format!("{} (not required)", outcome.check.kind.label())
        };
        let _ = write!(
            out,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
            xml(&format!("{}.{class}", header.crate_name)),
            outcome.check.name,
            outcome.seconds
        );
        match &outcome.verdict {
            Verdict::Pass(measured) => {
                let _ = writeln!(
                    out,
                    ">\n      <system-out>{}</system-out>\n    </testcase>",
                    xml(measured)
                );
            }
            Verdict::Skip(reason) => {
                let _ = writeln!(
                    out,
                    ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                    xml(reason)
                );
            }
            Verdict::Fail(failure) => {
                let hints = hints(outcome).join("\n");
                let _ = writeln!(
                    out,
                    ">\n      <failure message=\"{}\" type=\"{}\">{}\n{}</failure>\n    </testcase>",
                    xml(&format!(
                        "{} (see {})",
                        outcome.check.hint, outcome.check.section
                    )),
                    xml(&class),
                    xml(failure),
                    xml(&hints)
                );
            }
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}
