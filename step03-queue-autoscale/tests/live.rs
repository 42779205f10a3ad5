//! The live page in a real browser: headless Chromium opens step 03's `/live`
//! (`scripts/live.py`) while `scripts/accesses.py` fires a burst of slow requests, and the
//! workers the page drew went above one and came back down to one, as the chapter's trace
//! does; so did the open connections. Skipped with a printed reason without python3 or
//! Chromium (failed under `FTP_REQUIRE_TOOLS`, where `.ci/run` installs them).

use std::thread;
use std::time::Duration;

use testkit::{Server, tools};

const BIN: &str = env!("CARGO_BIN_EXE_step03-queue-autoscale");

/// A number the page wrote into a `data-*` attribute of its body.
fn drawn(sample: &serde_json::Value, name: &str) -> u64 {
    sample[name]
        .as_str()
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_live_page_draws_the_workers_growing_and_coming_back() {
    let test = "the_live_page_draws_the_workers_growing_and_coming_back";
    if !tools::available("python3", test) || !tools::available("chromium", test) {
        return;
    }
    // Workers leave every 100 ms once the queue is calm, so that the way back takes seconds,
    // not the default's twenty.
    let server = Server::start(BIN, &["--quiet", "--shrink-after-ms", "100"]);
    let url = server.url("");
    let watcher = {
        let url = url.clone();
        thread::spawn(move || tools::python_report("live.py", &[&url, "--seconds", "11"], test))
    };
    // The browser starts and draws a few calm answers first.
    thread::sleep(Duration::from_secs(3));
    let burst = server.url("/sleep?ms=300");
    let load = tools::python_report("accesses.py", &[&burst, "-n", "40", "-c", "40"], test);
    let Some((status, summary)) = load else {
        return;
    };
    assert_eq!(
        (status, &summary["ok"]),
        (0, &serde_json::json!(40)),
        "{summary}"
    );
    let Ok(Some((status, report))) = watcher.join() else {
        panic!("live.py did not report");
    };
    assert_eq!(status, 0, "{report}");
    let samples = report["samples"].as_array().cloned().unwrap_or_default();
    let workers: Vec<u64> = samples.iter().map(|s| drawn(s, "workersNow")).collect();
    let peak = workers.iter().position(|&w| w > 1);
    let last = samples.last().cloned().unwrap_or_default();
    assert_eq!(last["step"], "step03-queue-autoscale", "{report}");
    assert!(
        peak.is_some_and(|peak| workers[peak..].contains(&1))
            && drawn(&last, "workersMax") > 1
            && workers.last() == Some(&1),
        "the page drew workers {workers:?}"
    );
    // The open connections: the burst's, queued or served, and at the end only the page's own
    // poll (`?close`), answered while it is open (one more at most, should the browser open a
    // spare connection).
    let connections: Vec<u64> = samples.iter().map(|s| drawn(s, "connectionsNow")).collect();
    assert!(
        drawn(&last, "connectionsMax") > 1 && connections.last().is_some_and(|&c| c <= 2),
        "the page drew open connections {connections:?}"
    );
}
