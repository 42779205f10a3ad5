//! Operating the proxy: `SIGHUP` with a broken file changes nothing, a good one under load
//! fails no request, and one whose new workers fail while starting leaves the old ones
//! serving; a worker at `--max-connections` stops accepting until a connection closes, and a
//! client that has said nothing yet waits in the kernel (deferred accepts); the
//! admin port answers `/health`, `/config` and a `/metrics` that a
//! strict Prometheus text parser reads, with the figures the traffic should have produced,
//! and refuses to listen on an address that is not loopback unless `--admin-allow-remote` is
//! given; the access log has a line per request naming the upstream and both times; and
//! `SIGUSR2` replaces the binary under load without failing a request, while a broken or a hung
//! new binary leaves the old master serving.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use nix::sys::signal::Signal;
use openmetrics_parser::prometheus::parse_prometheus;
use openmetrics_parser::{MetricsExposition, PrometheusType, PrometheusValue};
use support::{Proxy, list, one_group, send, served_by, wait_for};
use testkit::load::SteadyLoad;
use testkit::server::run_to_exit;
use testkit::tools::has_procfs;
use testkit::upgrade;
use testkit::upstream::{Upstream, refused_addr};
use testkit::{Client, Response};

fn admin_get(admin: SocketAddr, path: &str) -> Response {
    testkit::get(admin, path)
}

#[test]
fn sighup_with_a_broken_file_keeps_the_configuration_in_force() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let proxy = Proxy::start(
        &one_group("", &[a.addr()]),
        2,
        &["--quiet", "--admin", "127.0.0.1:0"],
    );
    let admin = proxy.admin_addr();
    let config_before = admin_get(admin, "/config").text();
    let workers_before: BTreeSet<u32> = proxy.wait_for_workers(2).into_iter().collect();
    let refusals = || {
        proxy
            .server
            .stderr_lines()
            .iter()
            .filter(|line| line.contains("reload refused"))
            .count()
    };
    let broken = [
        "this is [not toml".to_string(),
        // Good TOML, but a route to a group that does not exist.
        format!(
            "[[route]]\ngroup = \"nope\"\n[group.g]\nupstreams = {}\n",
            list(&[b.addr()])
        ),
    ];
    for (i, text) in broken.iter().enumerate() {
        proxy.config.write(text);
        proxy.server.signal(Signal::SIGHUP);
        wait_for(Duration::from_secs(10), || {
            (refusals() == i + 1).then_some(())
        })
        .unwrap_or_else(|| panic!("no refusal: {:?}", proxy.server.stderr_lines()));
    }
    for _ in 0..6 {
        let response = proxy.get("/");
        assert_eq!((response.status, served_by(&response).as_str()), (200, "a"));
    }
    assert_eq!(b.requests(), 0);
    assert_eq!(admin_get(admin, "/config").text(), config_before);
    let workers_after: BTreeSet<u32> = proxy.server.workers().into_iter().collect();
    assert_eq!(workers_after, workers_before, "the workers were replaced");
    proxy.server.assert_no_panic();
}

#[test]
fn a_good_reload_under_load_fails_no_request() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let proxy = Proxy::start(&one_group("", &[a.addr()]), 2, &["--quiet"]);
    let load = SteadyLoad::start(
        proxy.addr(),
        "/",
        4,
        Duration::from_millis(5),
        Some("x-served-by"),
    );
    std::thread::sleep(Duration::from_millis(300));
    proxy.config.write(&one_group("", &[b.addr()]));
    proxy.server.signal(Signal::SIGHUP);
    let switched = wait_for(Duration::from_secs(15), || {
        (b.requests() > 50).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    let report = load.stop();
    assert!(
        switched.is_some(),
        "the new configuration is not in force: {report:?}"
    );
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(
        report.by_header.get("a").is_some_and(|&n| n > 0),
        "{report:?}"
    );
    let after: BTreeSet<String> = (0..6).map(|_| served_by(&proxy.get("/"))).collect();
    assert_eq!(after, BTreeSet::from(["b".to_string()]));
    proxy.server.assert_no_panic();
}

#[test]
fn a_reload_whose_workers_fail_to_start_leaves_the_old_ones_serving() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    // The workers of generation 2 fail at start-up, on purpose (see `worker.rs`).
    let proxy = Proxy::start_with_env(
        &one_group("", &[a.addr()]),
        2,
        &["--quiet"],
        &[("STEP07_TEST_FAIL_GENERATION", "2")],
    );
    let before: BTreeSet<u32> = proxy.wait_for_workers(2).into_iter().collect();
    proxy.config.write(&one_group("", &[b.addr()]));
    proxy.server.signal(Signal::SIGHUP);
    let failed_starts = || {
        proxy
            .server
            .stderr_lines()
            .iter()
            .filter(|line| line.contains("start-up failed on purpose"))
            .count()
    };
    wait_for(Duration::from_secs(10), || {
        (failed_starts() >= 2).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "generation 2 did not fail: {:?}",
            proxy.server.stderr_lines()
        )
    });
    // For a while (the master keeps restarting the failing ones), generation 1 serves, whole.
    let until = std::time::Instant::now() + Duration::from_millis(1500);
    while std::time::Instant::now() < until {
        let response = proxy.get("/");
        assert_eq!((response.status, served_by(&response).as_str()), (200, "a"));
        std::thread::sleep(Duration::from_millis(20));
    }
    let serving: BTreeSet<u32> = proxy.server.workers().into_iter().collect();
    assert!(
        serving.is_superset(&before),
        "generation 1 was retired for a generation that never started: {before:?} {serving:?}"
    );
    assert_eq!(b.requests(), 0);
    // The next reload (generation 3) starts, and replaces generation 1.
    proxy.server.signal(Signal::SIGHUP);
    wait_for(Duration::from_secs(15), || {
        (served_by(&proxy.get("/")) == "b").then_some(())
    })
    .expect("generation 3 never served");
    wait_for(Duration::from_secs(15), || {
        let now: BTreeSet<u32> = proxy.server.workers().into_iter().collect();
        now.is_disjoint(&before).then_some(())
    })
    .expect("generation 1 was never retired");
    proxy.server.assert_no_panic();
}

#[test]
fn a_worker_at_its_connection_cap_accepts_again_when_one_closes() {
    let upstream = Upstream::start("a");
    let proxy = Proxy::start(
        &one_group("", &[upstream.addr()]),
        1,
        &["--quiet", "--max-connections", "2"],
    );
    let mut first = Client::connect(proxy.addr());
    let mut second = Client::connect(proxy.addr());
    assert_eq!(first.get("/").status, 200);
    assert_eq!(second.get("/").status, 200);
    // The kernel completes the third connection (the backlog), but the worker does not take it.
    let mut third = Client::connect(proxy.addr());
    third.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    third
        .stream()
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let waiting = third.try_read_response(false);
    assert!(waiting.is_err(), "answered beyond the cap: {waiting:?}");
    drop(first);
    third
        .stream()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let response = third
        .try_read_response(false)
        .unwrap_or_else(|error| panic!("not served once a slot was free: {error}"));
    assert_eq!(response.status, 200);
    assert_eq!(second.get("/").status, 200, "the others go on");
    proxy.server.assert_no_panic();
}

/// Linux defers accepts (`TCP_DEFER_ACCEPT`): clients that connected but said nothing wait in
/// the kernel, not in a worker, and one that speaks is served at once.
#[test]
fn a_silent_client_waits_in_the_kernel() {
    if !cfg!(target_os = "linux") {
        eprintln!("skipped: a_silent_client_waits_in_the_kernel: deferred accepts are Linux's");
        return;
    }
    let upstream = Upstream::start("a");
    let proxy = Proxy::start(
        &one_group("", &[upstream.addr()]),
        1,
        &["--quiet", "--admin", "127.0.0.1:0"],
    );
    let admin = proxy.admin_addr();
    let open = || sum(&scrape(admin), "proxy_active_connections", &[]);
    // The worker answers the admin port once it is serving: its accepts are deferred by then
    // (a connection that came earlier, while it started, was queued as usual).
    assert_eq!(open(), 0.0);
    let mut silent: Vec<Client> = (0..3).map(|_| Client::connect(proxy.addr())).collect();
    // Time for the worker to accept them, were accepts not deferred.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(open(), 0.0, "silent clients were accepted");
    assert_eq!(silent[0].get("/").status, 200);
    assert_eq!(open(), 1.0, "only the client that spoke is accepted");
    proxy.server.assert_no_panic();
}

/// The sum, over every worker, of the samples of counter or gauge `family` whose labels
/// include `labels`.
fn sum(
    metrics: &MetricsExposition<PrometheusType, PrometheusValue>,
    family: &str,
    labels: &[(&str, &str)],
) -> f64 {
    let family = metrics
        .families
        .get(family)
        .unwrap_or_else(|| panic!("no {family}"));
    family
        .iter_samples()
        .filter(|sample| {
            let set = sample.get_labelset().unwrap();
            labels
                .iter()
                .all(|(name, value)| set.get_label_value(name) == Some(*value))
        })
        .map(|sample| match &sample.value {
            PrometheusValue::Counter(counter) => counter.value.as_f64(),
            PrometheusValue::Gauge(gauge) => gauge.as_f64(),
            other => panic!("not a counter or gauge: {other:?}"),
        })
        .sum()
}

fn scrape(admin: SocketAddr) -> MetricsExposition<PrometheusType, PrometheusValue> {
    let response = admin_get(admin, "/metrics");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    parse_prometheus(&response.text())
        .unwrap_or_else(|error| panic!("not Prometheus text ({error}):\n{}", response.text()))
}

/// Two upstreams behind `/`; behind `/dead/`, a refusing one whose health checks find it down
/// within a few hundred milliseconds; behind `/refused/`, a refusing one with no checks,
/// which each request tries.
fn three_groups(a: &Upstream, b: &Upstream, dead: SocketAddr, refused: SocketAddr) -> String {
    format!(
        "[[route]]\ngroup = \"web\"\n\
         [[route]]\nprefix = \"/dead/\"\ngroup = \"dead\"\n\
         [[route]]\nprefix = \"/refused/\"\ngroup = \"refused\"\n\
         [group.web]\nupstreams = {}\n\
         [group.dead]\nupstreams = {}\nhealth = {{ path = \"/\", interval_ms = 100, fails = 1 }}\n\
         [group.refused]\nupstreams = {}\n",
        list(&[a.addr(), b.addr()]),
        list(&[dead]),
        list(&[refused])
    )
}

#[test]
fn metrics_parse_as_prometheus_text_and_count_the_traffic() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let (dead, refused) = (refused_addr(), refused_addr());
    let proxy = Proxy::start(
        &three_groups(&a, &b, dead, refused),
        2,
        &["--quiet", "--admin", "127.0.0.1:0"],
    );
    let admin = proxy.admin_addr();
    for _ in 0..6 {
        assert_eq!(proxy.get("/").status, 200);
    }
    assert_eq!(proxy.get("/stats").status, 200);
    // One client stays connected, with one answer from upstream.
    let mut held = Client::connect(proxy.addr());
    assert_eq!(held.get("/").status, 200);
    let dead_name = dead.to_string();
    let dead_labels = [("group", "dead"), ("upstream", dead_name.as_str())];
    wait_for(Duration::from_secs(10), || {
        (sum(&scrape(admin), "proxy_upstream_up", &dead_labels) == 0.0).then_some(())
    })
    .expect("the health checks never found the dead upstream down");
    // No upstream available: the proxy's own 502. An upstream that refused: its 502.
    assert_eq!(proxy.get("/dead/x").status, 502);
    assert_eq!(proxy.get("/refused/x").status, 502);

    let metrics = scrape(admin);
    let kinds = [
        ("proxy_requests_total", PrometheusType::Counter),
        ("proxy_upstream_header_seconds", PrometheusType::Histogram),
        ("proxy_active_connections", PrometheusType::Gauge),
        ("proxy_upstream_up", PrometheusType::Gauge),
        ("proxy_upstream_ejections_total", PrometheusType::Counter),
    ];
    for (name, kind) in kinds {
        let family = metrics
            .families
            .get(name)
            .unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(family.family_type, kind, "{name}");
    }
    // Requests, by upstream and status class.
    let (a_name, b_name) = (a.addr().to_string(), b.addr().to_string());
    let answered = |upstream: &str, code: &str| {
        sum(
            &metrics,
            "proxy_requests_total",
            &[("upstream", upstream), ("code", code)],
        )
    };
    assert_eq!(answered(&a_name, "2xx") + answered(&b_name, "2xx"), 7.0);
    assert!(answered(&a_name, "2xx") >= 1.0 && answered(&b_name, "2xx") >= 1.0);
    assert_eq!(
        answered("none", "2xx"),
        1.0,
        "/stats; the admin port's answers do not count"
    );
    assert_eq!(answered("none", "5xx"), 1.0);
    assert_eq!(answered(&dead_name, "5xx"), 0.0);
    assert_eq!(answered(&refused.to_string(), "5xx"), 1.0);
    // The upstreams' latency: a histogram per worker and upstream, 7 answers in all.
    let mut observed = 0;
    for sample in metrics.families["proxy_upstream_header_seconds"].iter_samples() {
        let PrometheusValue::Histogram(histogram) = &sample.value else {
            panic!("not a histogram: {sample:?}");
        };
        let count = histogram
            .count
            .unwrap_or_else(|| panic!("no _count: {sample:?}"));
        let counts: Vec<f64> = histogram.buckets.iter().map(|b| b.count.as_f64()).collect();
        assert!(
            counts.windows(2).all(|w| w[0] <= w[1]),
            "not cumulative: {counts:?}"
        );
        assert_eq!(
            counts.last().copied(),
            Some(count as f64),
            "+Inf is the count"
        );
        assert!(histogram.sum.is_some_and(|sum| sum.as_f64() >= 0.0));
        observed += count;
    }
    assert_eq!(observed, 7);
    // Connections open now: the held one (once the others' closes have been noticed).
    wait_for(Duration::from_secs(5), || {
        (sum(&scrape(admin), "proxy_active_connections", &[]) == 1.0).then_some(())
    })
    .expect("the held connection is not counted, or closed ones still are");
    drop(held);
    wait_for(Duration::from_secs(5), || {
        (sum(&scrape(admin), "proxy_active_connections", &[]) == 0.0).then_some(())
    })
    .expect("a closed connection is still counted");
    assert_eq!(
        sum(&metrics, "proxy_upstream_up", &[("upstream", &a_name)]),
        1.0
    );
    proxy.server.assert_no_panic();
}

#[test]
fn the_admin_port_answers_health_and_config_and_nothing_else() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let (dead, refused) = (refused_addr(), refused_addr());
    let config = three_groups(&a, &b, dead, refused);
    let proxy = Proxy::start(&config, 1, &["--quiet", "--admin", "127.0.0.1:0"]);
    let admin = proxy.admin_addr();
    let health = wait_for(Duration::from_secs(10), || {
        let health = admin_get(admin, "/health").json();
        (health["down"]
            .as_array()
            .is_some_and(|down| !down.is_empty()))
        .then_some(health)
    })
    .expect("the dead upstream never showed as down");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["upstreams"], 4);
    assert_eq!(health["down"], serde_json::json!([dead.to_string()]));

    let response = admin_get(admin, "/config");
    assert_eq!(response.status, 200);
    assert!(response.text().ends_with(&config), "{}", response.text());

    let response = send(
        admin,
        "HEAD /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(
        response.status == 200 && response.body.is_empty(),
        "{response:?}"
    );
    let response = send(
        admin,
        "POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        (response.status, response.header("allow")),
        (405, Some("GET, HEAD"))
    );
    // The admin port forwards nothing, and the proxy's port serves no metrics.
    assert_eq!(admin_get(admin, "/").status, 404);
    assert_eq!(a.requests() + b.requests(), 0);
    let forwarded = served_by(&proxy.get("/metrics"));
    assert!(forwarded == "a" || forwarded == "b", "{forwarded}");
}

/// The admin port shows the configuration and the traffic: on an address that is not
/// loopback, the proxy refuses to start, with the contract's one line and status 1, unless
/// `--admin-allow-remote` says it is meant; then it starts, and answers there.
#[test]
fn the_admin_port_refuses_a_public_address_unless_forced() {
    let upstream = Upstream::start("a");
    let config = support::ConfigFile::new(&one_group("", &[upstream.addr()]));
    for address in ["0.0.0.0:0", "[::]:0"] {
        let args = ["--port", "0", "--config", config.path(), "--admin", address];
        let (status, stderr) = run_to_exit(support::BIN, &args, Duration::from_secs(10));
        assert_eq!(status.code(), Some(1), "--admin {address}: {stderr:?}");
        assert_eq!(stderr.len(), 1, "--admin {address}: one line: {stderr:?}");
        assert!(
            stderr[0].starts_with("error: --admin ") && stderr[0].contains("--admin-allow-remote"),
            "--admin {address}: {stderr:?}"
        );
    }
    // Forced, it starts, and the admin port answers on every address, loopback included.
    let proxy = Proxy::start(
        &one_group("", &[upstream.addr()]),
        1,
        &["--quiet", "--admin", "0.0.0.0:0", "--admin-allow-remote"],
    );
    let admin = proxy.admin_addr();
    assert!(admin.ip().is_unspecified(), "{admin}");
    let health = admin_get(SocketAddr::from(([127, 0, 0, 1], admin.port())), "/health");
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    assert_eq!(proxy.get("/").status, 200);
}

#[test]
fn the_access_log_has_a_line_per_request_with_upstream_status_and_times() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let (dead, refused) = (refused_addr(), refused_addr());
    let proxy = Proxy::start(&three_groups(&a, &b, dead, refused), 1, &[]);
    assert_eq!(proxy.get("/echo").status, 200);
    assert_eq!(proxy.get("/refused/x").status, 502);
    assert_eq!(proxy.get("/stats").status, 200);
    let line_for = |request: &str| {
        wait_for(Duration::from_secs(5), || {
            proxy
                .server
                .stdout_lines()
                .into_iter()
                .find(|line| line.contains(&format!("\"{request} HTTP/1.1\"")))
        })
        .unwrap_or_else(|| panic!("no line for {request}: {:?}", proxy.server.stdout_lines()))
    };
    // `pid peer "request line" status bytes total upstream=... upstream_time=...`
    let fields = |line: &str| -> Vec<String> {
        let (_, after) = line.rsplit_once('"').unwrap();
        after.split_whitespace().map(str::to_string).collect()
    };
    let milliseconds = |text: &str| {
        text.strip_suffix("ms")
            .and_then(|ms| ms.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("not a time: {text}"))
    };

    let echo = fields(&line_for("GET /echo"));
    assert_eq!(echo[0], "200", "{echo:?}");
    let upstream = echo[3].strip_prefix("upstream=").unwrap();
    assert!(
        upstream == a.addr().to_string() || upstream == b.addr().to_string(),
        "{echo:?}"
    );
    let total = milliseconds(&echo[2]);
    let upstream_time = milliseconds(echo[4].strip_prefix("upstream_time=").unwrap());
    assert!(upstream_time > 0.0 && upstream_time <= total, "{echo:?}");

    let failed = fields(&line_for("GET /refused/x"));
    assert_eq!(failed[0], "502", "{failed:?}");
    assert_eq!(failed[3], format!("upstream={refused}"), "{failed:?}");

    let own = fields(&line_for("GET /stats"));
    assert_eq!(own[0], "200");
    assert_eq!(&own[3..], ["upstream=-", "upstream_time=-"], "{own:?}");
}

/// `kill -USR2 <master>`, step 06's binary upgrade with a proxy's workers, in both listen
/// modes: under load no request fails; the new master adopts the admin port too (both masters
/// name the same address), and starts afresh with demo upstreams, pools and health checks of
/// its own (a different upstream address).
#[test]
fn an_upgrade_under_load_fails_no_request_in_both_modes() {
    if !has_procfs("an_upgrade_under_load_fails_no_request") {
        return;
    }
    let bin = env!("CARGO_BIN_EXE_step07-reverse-proxy");
    for mode in ["shared", "reuseport"] {
        let args = upgrade_args(mode, &["--admin", "127.0.0.1:0"]);
        // Two workers and the demo's upstream.
        let (measured, stdout) =
            upgrade::an_upgrade_under_load_fails_no_request(bin, &args, 3, "/");
        eprintln!("{mode}: {measured}");
        let lines = |prefix: &str| -> Vec<String> {
            stdout
                .iter()
                .filter(|line| line.starts_with(prefix))
                .cloned()
                .collect()
        };
        let admin = lines("admin: listening on");
        assert!(
            admin.len() == 2 && admin[0] == admin[1],
            "{mode}: the admin port was not handed over: {admin:?}"
        );
        let demo = lines("demo:");
        assert!(
            demo.len() == 2 && demo[0] != demo[1],
            "{mode}: the new master did not start upstreams of its own: {demo:?}"
        );
    }
}

/// A broken binary on `SIGUSR2`, in both listen modes: one log line, and the proxy goes on
/// serving as it was.
#[test]
fn a_failing_new_binary_leaves_the_old_master_serving_in_both_modes() {
    if !has_procfs("a_failing_new_binary_leaves_the_old_master_serving") {
        return;
    }
    let bin = env!("CARGO_BIN_EXE_step07-reverse-proxy");
    for mode in ["shared", "reuseport"] {
        let args = upgrade_args(mode, &[]);
        // Two workers and the demo's upstream.
        eprintln!(
            "{mode}: {}",
            upgrade::a_failing_new_binary_leaves_the_old_master_serving(bin, &args, 3)
        );
    }
}

/// A binary that hangs on `SIGUSR2`, in both listen modes: stopped after
/// `--upgrade-timeout-ms`, one log line, the proxy serving as it was; a good one then takes
/// over.
#[test]
fn a_hung_new_binary_is_stopped_after_the_timeout_in_both_modes() {
    if !has_procfs("a_hung_new_binary_is_stopped_after_the_timeout") {
        return;
    }
    let bin = env!("CARGO_BIN_EXE_step07-reverse-proxy");
    for mode in ["shared", "reuseport"] {
        let args = upgrade_args(mode, &[]);
        eprintln!(
            "{mode}: {}",
            upgrade::a_hung_new_binary_is_stopped_after_the_timeout(bin, &args, 3)
        );
    }
}

/// The proxy the upgrade tests replace: two workers in listen `mode` and one demo upstream (three
/// processes under the master), with `more` options.
fn upgrade_args<'a>(mode: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--quiet",
        "--workers",
        "2",
        "--listen",
        mode,
        "--demo-upstreams",
        "1",
    ];
    args.extend_from_slice(more);
    args
}
