//! Balancing, as the upstreams see it: round robin spreads requests evenly, least connections
//! sends new requests away from a busy upstream, consistent hashing keeps each key on one
//! upstream (and moves only the keys of one that dies), and a killed upstream is ejected
//! while a steady stream of `GET`s goes on with no failure a client can see.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use support::{Proxy, one_group, send, served_by, wait_for};
use testkit::load::{SteadyLoad, get_in_background};
use testkit::upstream::Upstream;

fn start(names: &[&str]) -> Vec<Upstream> {
    names.iter().map(|name| Upstream::start(name)).collect()
}

fn addrs(upstreams: &[Upstream]) -> Vec<std::net::SocketAddr> {
    upstreams.iter().map(Upstream::addr).collect()
}

#[test]
fn round_robin_spreads_requests_evenly() {
    let upstreams = start(&["a", "b", "c"]);
    let proxy = Proxy::start(
        &format!(
            "[proxy]\nupstream_header = true\n{}",
            one_group("", &addrs(&upstreams))
        ),
        2,
        &["--quiet"],
    );
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..60 {
        let response = proxy.get("/");
        assert_eq!(response.status, 200, "{response:?}");
        let name = served_by(&response);
        // X-Upstream names the same upstream by its address.
        let upstream = upstreams.iter().find(|u| u.name() == name).unwrap();
        assert_eq!(
            response.header("x-upstream"),
            Some(upstream.addr().to_string().as_str())
        );
        *counts.entry(name).or_default() += 1;
    }
    // Each of the two workers takes its own turns, so each upstream gets a third of each
    // worker's requests, give or take one.
    assert_eq!(counts.len(), 3, "{counts:?}");
    let (min, max) = (counts.values().min(), counts.values().max());
    assert!(
        max.zip(min).is_some_and(|(max, min)| max - min <= 2),
        "{counts:?}"
    );
}

#[test]
fn least_conn_sends_new_requests_away_from_a_busy_upstream() {
    let upstreams = start(&["a", "b"]);
    let proxy = Proxy::start(
        &one_group("strategy = \"least_conn\"", &addrs(&upstreams)),
        1,
        &["--quiet"],
    );
    let slow = get_in_background(proxy.addr(), "/sleep?ms=3000");
    let busy = wait_for(Duration::from_secs(5), || {
        upstreams
            .iter()
            .find(|u| u.requests() == 1)
            .map(|u| u.name().to_string())
    })
    .expect("the slow request reached no upstream");
    for _ in 0..8 {
        let response = proxy.get("/");
        assert_eq!(response.status, 200);
        assert_ne!(
            served_by(&response),
            busy,
            "a request went to the busy upstream"
        );
    }
    let slow = slow.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
    assert_eq!((slow.status, served_by(&slow)), (200, busy));
    // Idle again: both get requests.
    let names: BTreeSet<String> = (0..4).map(|_| served_by(&proxy.get("/"))).collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

/// The upstream that answers a request with `X-User: key`.
fn home_of(proxy: &Proxy, key: &str) -> String {
    let response = send(
        proxy.addr(),
        &format!("GET / HTTP/1.1\r\nHost: t\r\nX-User: {key}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(response.status, 200, "{key}: {response:?}");
    served_by(&response)
}

#[test]
fn consistent_hashing_keeps_each_key_on_one_upstream_and_moves_only_a_dead_ones_keys() {
    let upstreams = start(&["a", "b", "c"]);
    let group = "strategy = \"consistent_hash\"\nhash_key = \"header:X-User\"";
    let proxy = Proxy::start(&one_group(group, &addrs(&upstreams)), 2, &["--quiet"]);
    let keys: Vec<String> = (0..30).map(|i| format!("user-{i}")).collect();
    let homes: BTreeMap<&String, String> = keys.iter().map(|k| (k, home_of(&proxy, k))).collect();
    // Again, on new connections that either worker may take: the same homes.
    for _ in 0..2 {
        for key in &keys {
            assert_eq!(home_of(&proxy, key), homes[key], "{key} moved");
        }
    }
    let used: BTreeSet<&String> = homes.values().collect();
    assert_eq!(used.len(), 3, "30 keys, not spread: {homes:?}");

    // One dies: its keys go elsewhere (each GET retried at once), the others stay put.
    upstreams[1].kill();
    for key in &keys {
        let now = home_of(&proxy, key);
        if homes[key] == "b" {
            assert_ne!(now, "b");
        } else {
            assert_eq!(now, homes[key], "{key} moved, though its home is up");
        }
    }
    proxy.server.assert_no_panic();
}

#[test]
fn a_killed_upstream_is_ejected_and_no_get_fails() {
    let upstreams = start(&["a", "b", "c"]);
    let group = "[group.g.health]\npath = \"/\"\ninterval_ms = 200\nfails = 1\n";
    let proxy = Proxy::start(
        &format!("{}{group}", one_group("", &addrs(&upstreams))),
        2,
        &["--quiet"],
    );
    let load = SteadyLoad::start(
        proxy.addr(),
        "/",
        4,
        Duration::from_millis(5),
        Some("x-served-by"),
    );
    std::thread::sleep(Duration::from_millis(500));
    upstreams[1].kill();
    std::thread::sleep(Duration::from_millis(1500));
    let report = load.stop();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(
        report.by_header.get("b").is_some_and(|&n| n > 0),
        "{report:?}"
    );
    assert!(report.ok > 100, "only {} requests", report.ok);
    // Requests met the dead upstream only until it was taken out: each such meeting is a
    // retry, logged; without ejection there would be one every third request.
    let dead = upstreams[1].addr().to_string();
    let stderr = proxy.server.stderr_lines();
    let retries = stderr
        .iter()
        .filter(|line| line.contains(&format!("upstream {dead}: ")) && line.contains("trying"))
        .count();
    assert!(
        retries < 30,
        "{retries} retries away from {dead}: {stderr:#?}"
    );
    // The proxy knows: the health checks found it down.
    let stats = proxy.get("/stats").json();
    assert_eq!(stats["upstreams_up"], 2, "{stats}");
    proxy.server.assert_no_panic();
}

/// What the live page draws for the proxy: `/stats` (on any worker) sums every worker's answers
/// per upstream from the zone they share, lists each worker's lane, and `/live` is the proxy's
/// own page, not forwarded.
#[test]
fn stats_shows_every_upstreams_share_and_every_worker() {
    let upstreams = start(&["a", "b"]);
    let proxy = Proxy::start(&one_group("", &addrs(&upstreams)), 2, &["--quiet"]);
    for _ in 0..20 {
        assert_eq!(proxy.get("/").status, 200);
    }
    let stats = proxy.get("/stats?close").json();
    let list = stats["upstream_list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(list.len(), 2, "{stats}");
    let answers: Vec<u64> = list.iter().filter_map(|u| u["answers"].as_u64()).collect();
    assert!(
        answers.iter().sum::<u64>() == 20 && answers.iter().all(|&n| n >= 5),
        "{stats}"
    );
    assert!(list.iter().all(|u| u["down"] == false), "{stats}");
    assert!(
        stats["answered"].as_u64().is_some_and(|n| n >= 20),
        "{stats}"
    );
    let lanes = stats["lanes"].as_array().map_or(0, Vec::len);
    assert_eq!(lanes, 2, "{stats}");
    let live = proxy.get("/live");
    assert_eq!(live.status, 200);
    assert_eq!(live.header("server"), Some("step07-reverse-proxy"));
    assert!(live.text().contains("/stats?close"));
}
