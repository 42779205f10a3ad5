//! The grader, graded: our seven steps score full marks on their own steps; the C server in
//! `examples/c-server` passes step 01; nginx passes the checks a file server can pass and
//! fails the rest, each with a hint; each exercise starter fails every check its `todo!()`s
//! break, with the exercise named; the JUnit file is valid XML; and the book lists the checks
//! the grader runs. Everything runs in `--quick` mode, one grading at a time (they measure
//! time), except the starters', which fail anyway.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;
use testkit::tools;

const GRADE: &str = env!("CARGO_BIN_EXE_grade");

/// Gradings measure time: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .to_path_buf()
}

/// Runs `grade --json OPTIONS -- COMMAND`; its exit status and report.
fn grade(options: &[&str], command: &[&str]) -> (i32, Value) {
    let output = Command::new(GRADE)
        .arg("--json")
        .args(options)
        .arg("--")
        .args(command)
        .current_dir(workspace())
        .output()
        .unwrap_or_else(|error| panic!("cannot run {GRADE}: {error}"));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "grade printed no JSON ({error}); stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().unwrap_or(-1), report)
}

/// The names of the checks whose result is `result` (`pass`, `fail`, `skip`).
fn with_result(report: &Value, result: &str) -> BTreeSet<String> {
    report["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|check| check["result"] == result)
        .filter_map(|check| check["name"].as_str().map(String::from))
        .collect()
}

/// A step's debug binary, built beside the grader by `cargo test --workspace`; `None` (after
/// saying why) when it is not there, which fails under `FTP_REQUIRE_TOOLS`.
fn step_binary(crate_name: &str) -> Option<String> {
    let path = Path::new(GRADE).with_file_name(crate_name);
    if path.exists() {
        return Some(path.to_string_lossy().into_owned());
    }
    let why = format!(
        "{} is not built (cargo test --workspace builds it; or cargo build -p {crate_name})",
        path.display()
    );
    assert!(std::env::var_os("FTP_REQUIRE_TOOLS").is_none(), "{why}");
    eprintln!("skipped: {why}");
    None
}

/// Grades our step `number` against itself, quick and strict: every check that runs passes.
fn full_marks(number: u8, crate_name: &str) {
    let Some(bin) = step_binary(crate_name) else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock();
    let step = format!("{number:02}");
    let (status, report) = grade(
        &["--step", &step, "--quick", "--strict"],
        &[&bin, "--port", "{port}"],
    );
    let failed = with_result(&report, "fail");
    assert!(
        status == 0 && failed.is_empty() && report["passed"] == true,
        "{crate_name}: exit {status}, failed {failed:?}:\n{report:#}"
    );
    // What --quick leaves out, and nothing else.
    let skipped = with_result(&report, "skip");
    let slow: BTreeSet<String> = testkit::checks::CONTRACT
        .iter()
        .filter(|check| check.slow)
        .map(|check| check.name.to_string())
        .collect();
    assert_eq!(skipped, slow, "{crate_name}");
}

#[test]
fn step01_scores_full_marks() {
    full_marks(1, "step01-fork");
}

#[test]
fn step02_scores_full_marks() {
    full_marks(2, "step02-threads");
}

#[test]
fn step03_scores_full_marks() {
    full_marks(3, "step03-queue-autoscale");
}

#[test]
fn step04_scores_full_marks() {
    full_marks(4, "step04-threadpool");
}

#[test]
fn step05_scores_full_marks() {
    full_marks(5, "step05-epoll-kqueue");
}

#[test]
fn step06_scores_full_marks() {
    full_marks(6, "step06-master-worker");
}

#[test]
fn step07_scores_full_marks() {
    full_marks(7, "step07-reverse-proxy");
}

/// The proof that the grader grades any language: the C fork server, built with `cc`, passes
/// every required check of step 01. It refuses chunked request bodies (501) to stay short, and
/// the report says so: the two robustness checks that send one fail, and only those.
#[test]
fn the_c_server_passes_step_01() {
    if !tools::available("cc", "the_c_server_passes_step_01") {
        return;
    }
    let binary = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c-server");
    let source = workspace().join("examples/c-server/server.c");
    let built = Command::new("cc")
        .args(["-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&binary)
        .arg(&source)
        .output()
        .unwrap_or_else(|error| panic!("cannot run cc: {error}"));
    assert!(
        built.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let _one = ONE_AT_A_TIME.lock();
    let binary = binary.to_string_lossy();
    let (status, report) = grade(
        &["--step", "01", "--quick"],
        &[&binary, "--port", "{port}", "--site", "common/site"],
    );
    assert_eq!(status, 0, "{report:#}");
    assert_eq!(report["required"]["failed"], 0, "{report:#}");
    assert_eq!(
        with_result(&report, "fail"),
        BTreeSet::from([
            "bad_input_corpus".to_string(),
            "request_bodies_are_read_and_discarded".to_string()
        ]),
        "{report:#}"
    );
    let corpus = report["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|check| check["name"] == "bad_input_corpus")
        .map(|check| check["failure"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    // Every case it fails is one with a chunked body (or a Transfer-Encoding it cannot judge
    // without decoding), answered 501.
    for case in corpus.lines().skip(1) {
        assert!(
            case.contains("got 501"),
            "a corpus case failed for another reason: {case}"
        );
    }
}

/// The checks a file server can pass (`Check::static_pages`) that nginx fails by choice:
/// its 405 has no `Allow`, a head over 8 KiB gets 400 (its `large_client_header_buffers`),
/// and a slow head a silent close rather than 408.
const NGINX_ANSWERS_OTHERWISE: [&str; 3] = [
    "other_methods_get_405_with_allow",
    "oversized_head_gets_431_and_close",
    "slow_head_gets_408",
];

/// nginx serving the site's files, graded as step 06 (a master and a worker per core: what it
/// is). It passes the protocol checks a file server can pass and step 06's model; it fails
/// the rest (no /sleep or /stats, its own Server, no Allow on 405, 400 for a head over 8 KiB,
/// no 408, its own error messages), each failure with a hint and a section of the book.
#[test]
fn nginx_passes_what_a_file_server_can_and_fails_the_rest_with_hints() {
    let found = Command::new("nginx")
        .arg("-v")
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        assert!(
            std::env::var_os("FTP_REQUIRE_TOOLS").is_none(),
            "nginx is not installed (FTP_REQUIRE_TOOLS is set)"
        );
        eprintln!("skipped: nginx_passes_...: nginx not found");
        return;
    }
    let workdir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("grade-nginx");
    let _ = std::fs::remove_dir_all(&workdir);
    let workdir_text = workdir.to_string_lossy().into_owned();
    let _one = ONE_AT_A_TIME.lock();
    let (status, report) = grade(
        &["--step", "06", "--quick"],
        &[
            "python3",
            "scripts/peer",
            "nginx",
            "--port",
            "{port}",
            "--workdir",
            &workdir_text,
        ],
    );
    let _ = std::fs::remove_dir_all(&workdir);
    assert_eq!(status, 1, "{report:#}");
    let passed = with_result(&report, "pass");
    // What a file server can pass (`Check::static_pages`), but where nginx answers otherwise;
    // step 06's model, which nginx follows; and how it stops.
    let static_pages: BTreeSet<String> = testkit::checks::CONTRACT
        .iter()
        .filter(|check| check.static_pages && !check.slow)
        .map(|check| check.name.to_string())
        .collect();
    for name in NGINX_ANSWERS_OTHERWISE {
        assert!(
            static_pages.contains(name),
            "{name} is not a static-pages check"
        );
    }
    let step06 = testkit::checks::step(6).map_or(&[][..], |step| step.checks);
    let expected: BTreeSet<String> = static_pages
        .iter()
        .filter(|name| !NGINX_ANSWERS_OTHERWISE.contains(&name.as_str()))
        .cloned()
        .chain(step06.iter().map(|check| check.name.to_string()))
        .chain(["stops_on_sigterm_leaving_no_process".to_string()])
        .collect();
    assert_eq!(passed, expected, "{report:#}");
    for check in report["checks"].as_array().into_iter().flatten() {
        if check["result"] == "fail" {
            assert!(
                check["hint"].as_str().is_some_and(|hint| !hint.is_empty())
                    && check["section"]
                        .as_str()
                        .is_some_and(|section| section.contains(".md#")),
                "{check:#}"
            );
        }
    }
}

/// Each exercise starter that `.ci/run` built (`FTP_STARTERS`: the directory of their
/// binaries) fails every check that needs its server to answer, each failure naming one of
/// that step's exercises (`make-exercise --list`), the one whose `todo!()` the server reached;
/// what needs no answer (option errors, a busy port) still passes. Step 07's model check
/// grades the proxy over the upstreams it starts itself (no `--config`): its starter's master
/// stops at the `shared-zone` exercise before it forks a worker.
#[test]
fn each_starter_fails_the_checks_its_exercises_break() {
    let Some(dir) = std::env::var_os("FTP_STARTERS") else {
        eprintln!(
            "skipped: each_starter_fails_...: set FTP_STARTERS to the directory of the built \
             starters (.ci/run does, after building them)"
        );
        return;
    };
    // Relative to the workspace, as .ci/run gives it.
    let dir = workspace().join(dir);
    let starters = [
        ("01", "step01-fork"),
        ("02", "step02-threads"),
        ("03", "step03-queue-autoscale"),
        ("04", "step04-threadpool"),
        ("05", "step05-epoll-kqueue"),
        ("06", "step06-master-worker"),
        ("07", "step07-reverse-proxy"),
    ];
    // They fail anyway: grade them side by side.
    let gradings: Vec<_> = starters
        .iter()
        .map(|&(step, crate_name)| {
            let bin = dir.join(crate_name);
            assert!(bin.exists(), "{} is not built", bin.display());
            let bin = bin.to_string_lossy().into_owned();
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                let (status, report) = grade(
                    &["--step", step, "--quick", "--jobs", "8"],
                    &[&bin, "--port", "{port}"],
                );
                (crate_name, status, report, started.elapsed())
            })
        })
        .collect();
    for grading in gradings {
        let Ok((crate_name, status, report, took)) = grading.join() else {
            panic!("a grading thread panicked");
        };
        let exercises = exercises_of(crate_name);
        assert_eq!(status, 1, "{crate_name}: {report:#}");
        let passed = with_result(&report, "pass");
        // What CI shows (`--nocapture`): the tally, and one failure as a student sees it.
        let first_failure = report["checks"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|check| check["result"] == "fail");
        eprintln!(
            "{crate_name} starter, graded in {:.1} s: {} passed, {} failed, {} skipped; first \
             failure: {}: {}\n  the server panicked: {}\n  hint: {}",
            took.as_secs_f64(),
            passed.len(),
            with_result(&report, "fail").len(),
            with_result(&report, "skip").len(),
            first_failure.map_or("", |c| c["name"].as_str().unwrap_or_default()),
            first_failure.map_or("", |c| c["failure"].as_str().unwrap_or_default()),
            first_failure.map_or("", |c| c["server_panics"][0].as_str().unwrap_or_default()),
            first_failure.map_or("", |c| c["hint"].as_str().unwrap_or_default()),
        );
        let needs_no_answer: BTreeSet<String> = [
            "bad_options_fail_with_one_line",
            "port_in_use_fails_with_one_line",
        ]
        .map(String::from)
        .into();
        // The last check also passes when the starter's SIGTERM path does not meet a todo!().
        let mut expected_or_stop = needs_no_answer.clone();
        expected_or_stop.insert("stops_on_sigterm_leaving_no_process".into());
        if crate_name == "step06-master-worker" {
            // Forking a worker per core is not an exercise: the starter's master does it, and
            // each worker then stops on the `lifeline` todo!() (and is forked again).
            expected_or_stop.insert("a_worker_process_per_core".into());
        }
        assert!(
            passed.is_superset(&needs_no_answer) && passed.is_subset(&expected_or_stop),
            "{crate_name} passed {passed:?}"
        );
        for check in report["checks"].as_array().into_iter().flatten() {
            if check["result"] != "fail" || check["name"] == "stops_on_sigterm_leaving_no_process" {
                continue;
            }
            let named = check["server_panics"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|panic| panic.as_str()?.split_once("not yet implemented: exercise "))
                .any(|(_, exercise)| {
                    exercises
                        .iter()
                        .any(|name| exercise.split_whitespace().next() == Some(name.as_str()))
                });
            assert!(
                named,
                "{crate_name}: none of its exercises {exercises:?} named in {check:#}"
            );
        }
    }
}

/// Bad usage exits 2, with one `error:` line and no report, before any server is started:
/// no command, a step out of range, a check that does not exist, no `--step`.
#[test]
fn bad_usage_exits_2_before_starting_anything() {
    let marker = Path::new(env!("CARGO_TARGET_TMPDIR")).join("grade-bad-usage-ran");
    let _ = std::fs::remove_file(&marker);
    let marker_text = marker.to_string_lossy().into_owned();
    // The command, were it started, would leave the marker behind.
    let command = ["touch", marker_text.as_str()];
    let cases: [&[&str]; 6] = [
        &[],
        &["--step", "01"],
        &["--step", "08", "--"],
        &["--step", "seven", "--"],
        &["--step", "01", "--only", "no_such_check", "--"],
        &["--"],
    ];
    for options in cases {
        let with_command = options.last() == Some(&"--");
        let output = Command::new(GRADE)
            .args(options)
            .args(if with_command { &command[..] } else { &[] })
            .current_dir(workspace())
            .output()
            .unwrap_or_else(|error| panic!("cannot run {GRADE}: {error}"));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{options:?}: {stderr}");
        assert!(
            stderr.lines().any(|line| line.starts_with("error: ")),
            "{options:?}: {stderr}"
        );
        assert!(output.stdout.is_empty(), "{options:?}: a report on stdout");
    }
    assert!(!marker.exists(), "a command was started despite bad usage");
}

/// The exercises of a step, by name: the first column of `scripts/make-exercise --list`.
fn exercises_of(crate_name: &str) -> Vec<String> {
    let output = Command::new("python3")
        .args(["scripts/make-exercise", "--list", crate_name])
        .current_dir(workspace())
        .output()
        .unwrap_or_else(|error| panic!("cannot run scripts/make-exercise: {error}"));
    assert!(
        output.status.success(),
        "make-exercise --list {crate_name}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let exercises: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(String::from))
        .collect();
    assert!(!exercises.is_empty(), "{crate_name} has no exercise");
    exercises
}

/// `--junit` writes JUnit XML that a strict parser reads: one suite, a test case per check, a
/// `failure` (with the hint as its message) for each failed check and `skipped` for each check
/// left out, and counts that agree.
#[test]
fn the_junit_file_is_valid_junit_xml() {
    let Some(bin) = step_binary("step04-threadpool") else {
        return;
    };
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("grade-junit.xml");
    let file_text = file.to_string_lossy().into_owned();
    let _one = ONE_AT_A_TIME.lock();
    // Step 04 graded as step 02: its pool is not a thread per connection; and a name it does
    // not answer as.
    let (status, report) = grade(
        &[
            "--step",
            "02",
            "--quick",
            "--name",
            "a \"quoted\" <name> & more",
            "--only",
            "every_answer_names_the_step,every_answer_carries_a_date,a_thread_per_connection",
            "--junit",
            &file_text,
        ],
        &[&bin, "--port", "{port}"],
    );
    assert_eq!(status, 1, "{report:#}");
    let xml = std::fs::read_to_string(&file).unwrap_or_else(|error| panic!("{error}"));
    let document = roxmltree::Document::parse(&xml)
        .unwrap_or_else(|error| panic!("not well-formed XML ({error}):\n{xml}"));
    let root = document.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let suites: Vec<_> = root
        .children()
        .filter(|node| node.has_tag_name("testsuite"))
        .collect();
    assert_eq!(suites.len(), 1, "{xml}");
    let suite = suites[0];
    let cases: Vec<_> = suite
        .children()
        .filter(|node| node.has_tag_name("testcase"))
        .collect();
    let count = |name: &str| {
        cases
            .iter()
            .filter(|case| case.children().any(|child| child.has_tag_name(name)))
            .count()
    };
    let number = |node: roxmltree::Node, attribute: &str| {
        node.attribute(attribute)
            .and_then(|value| value.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("no number in {attribute}: {xml}"))
    };
    assert_eq!(number(suite, "tests"), cases.len());
    assert_eq!(number(root, "tests"), cases.len());
    assert_eq!(number(suite, "failures"), count("failure"));
    assert_eq!(number(suite, "skipped"), count("skipped"));
    assert_eq!(count("failure"), 2, "{xml}");
    assert_eq!(
        cases.len(),
        report["checks"].as_array().map_or(0, Vec::len),
        "{xml}"
    );
    for case in &cases {
        assert!(case.attribute("classname").is_some() && case.attribute("time").is_some());
        if let Some(failure) = case.children().find(|child| child.has_tag_name("failure")) {
            assert!(
                failure
                    .attribute("message")
                    .is_some_and(|message| message.contains("(see docs/")),
                "{xml}"
            );
        }
    }
    // The name, with its quotes and brackets, came through the XML escaped, and back intact.
    assert!(
        xml.contains("&quot;quoted") && xml.contains("&lt;name&gt; &amp; more"),
        "{xml}"
    );
    let names_the_step = cases
        .iter()
        .find(|case| case.attribute("name") == Some("every_answer_names_the_step"))
        .and_then(|case| case.children().find(|child| child.has_tag_name("failure")))
        .and_then(|failure| failure.text())
        .unwrap_or_default();
    assert!(
        names_the_step.contains("quoted") && names_the_step.contains("<name> & more"),
        "{names_the_step}"
    );
}

/// The book's list of checks (docs/instructors.md) is the grader's own `--list`: written by
/// `scripts/grade --list --write-region docs/instructors.md:grade-checks`, never retyped. The
/// sample report there names the same checks, in the same order.
#[test]
fn the_book_lists_the_checks_the_grader_runs() {
    let output = Command::new(GRADE)
        .arg("--list")
        .output()
        .unwrap_or_else(|error| panic!("cannot run {GRADE}: {error}"));
    let list = String::from_utf8_lossy(&output.stdout)
        .trim_end()
        .to_string();
    let page = std::fs::read_to_string(workspace().join("docs/instructors.md"))
        .unwrap_or_else(|error| panic!("docs/instructors.md: {error}"));
    let region = |name: &str| {
        let begin = format!("<!-- {name}: begin -->\n");
        let end = format!("\n<!-- {name}: end -->");
        page.split_once(&begin)
            .and_then(|(_, rest)| rest.split_once(&end))
            .map(|(inside, _)| inside.to_string())
            .unwrap_or_else(|| panic!("docs/instructors.md has no {name} region"))
    };
    assert!(
        region("grade-checks") == list,
        "docs/instructors.md's list of checks is out of date: run\n  \
         scripts/grade --list --write-region docs/instructors.md:grade-checks"
    );
    let sample = region("grade-sample");
    let step01: Vec<&str> = testkit::checks::CONTRACT
        .iter()
        .chain(testkit::checks::step(1).map_or(&[][..], |step| step.checks))
        .map(|check| check.name)
        .collect();
    let reported: Vec<&str> = sample
        .lines()
        .filter(|line| {
            line.starts_with("pass ") || line.starts_with("FAIL ") || line.starts_with("skip ")
        })
        .filter_map(|line| line.split_whitespace().nth(2))
        .filter(|name| *name != "stops_on_sigterm_leaving_no_process")
        .collect();
    assert!(
        reported == step01,
        "docs/instructors.md's sample report is out of date: run the command at its top with \
         --write-region docs/instructors.md:grade-sample"
    );
}
