//! `GET /metrics` on the admin port: the shared counters in Prometheus's text format
//! (version 0.0.4), one series per worker, labelled `worker="N"`.
//!
//! ```text
//! # TYPE proxy_requests_total counter
//! proxy_requests_total{worker="0",group="demo",upstream="127.0.0.1:9001",code="2xx"} 1042
//! ```
//!
//! Each worker counts its own work in its own slot of the [`Zone`]; whichever worker accepts
//! the scrape reads every slot, so any of them gives the same complete answer. Prometheus adds
//! the workers up in a query (`sum without (worker) (rate(proxy_requests_total[1m]))`).

use std::fmt::Write;

use super::zone::{BUCKETS_US, CLASSES, Zone};
use crate::config::Config;

/// The text of `/metrics` for a generation of `workers` workers.
pub fn render(config: &Config, zone: &Zone, workers: usize) -> String {
    let mut out = String::with_capacity(4096);
    // Writing to a String cannot fail: the results are ignored below for that reason.
    let upstream_labels = |u: usize| {
        let upstream = &config.upstreams[u];
        format!(
            "group=\"{}\",upstream=\"{}\"",
            escape(&config.groups[upstream.group].name),
            upstream.name
        )
    };

    family(
        &mut out,
        "proxy_requests_total",
        "counter",
        "Responses sent to clients, by status class and by the upstream that answered or caused the 502 or 504 (none: the proxy answered by itself).",
    );
    for worker in 0..workers {
        let mut series = |labels: &str, upstream: Option<usize>| {
            for class in 0..CLASSES {
                let count = zone.answers(worker, upstream, class);
                let _ = writeln!(
                    out,
                    "proxy_requests_total{{worker=\"{worker}\",{labels},code=\"{}xx\"}} {count}",
                    class + 1
                );
            }
        };
        for upstream in 0..config.upstreams.len() {
            series(&upstream_labels(upstream), Some(upstream));
        }
        series("group=\"\",upstream=\"none\"", None);
    }

    family(
        &mut out,
        "proxy_upstream_header_seconds",
        "histogram",
        "Time from sending a request upstream to receiving its answer's head.",
    );
    for worker in 0..workers {
        for upstream in 0..config.upstreams.len() {
            let labels = format!("worker=\"{worker}\",{}", upstream_labels(upstream));
            let histogram = zone.latency(worker, upstream);
            let mut cumulative = 0;
            for (bound, count) in BUCKETS_US.iter().zip(histogram.buckets) {
                cumulative += count;
                let _ = writeln!(
                    out,
                    "proxy_upstream_header_seconds_bucket{{{labels},le=\"{}\"}} {cumulative}",
                    *bound as f64 / 1e6
                );
            }
            let _ = writeln!(
                out,
                "proxy_upstream_header_seconds_bucket{{{labels},le=\"+Inf\"}} {}\n\
                 proxy_upstream_header_seconds_sum{{{labels}}} {}\n\
                 proxy_upstream_header_seconds_count{{{labels}}} {}",
                histogram.count,
                histogram.sum_us as f64 / 1e6,
                histogram.count
            );
        }
    }

    family(
        &mut out,
        "proxy_active_connections",
        "gauge",
        "Client connections open now.",
    );
    for worker in 0..workers {
        let _ = writeln!(
            out,
            "proxy_active_connections{{worker=\"{worker}\"}} {}",
            zone.active_connections(worker)
        );
    }

    family(
        &mut out,
        "proxy_upstream_up",
        "gauge",
        "1 while the active health checks find the upstream up.",
    );
    for upstream in 0..config.upstreams.len() {
        let _ = writeln!(
            out,
            "proxy_upstream_up{{{}}} {}",
            upstream_labels(upstream),
            u8::from(!zone.is_down(upstream))
        );
    }

    family(
        &mut out,
        "proxy_upstream_ejections_total",
        "counter",
        "Times a worker stopped sending to the upstream after failures in a row (passive checks).",
    );
    for worker in 0..workers {
        for upstream in 0..config.upstreams.len() {
            let _ = writeln!(
                out,
                "proxy_upstream_ejections_total{{worker=\"{worker}\",{}}} {}",
                upstream_labels(upstream),
                zone.ejections(worker, upstream)
            );
        }
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value as the format wants it: backslash, double quote and line feed escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_series_is_there_with_its_labels() {
        let text =
            "[[route]]\ngroup = \"g\"\n[group.g]\nupstreams = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n";
        let config = Config::parse("test", text).unwrap();
        let zone = Zone::new(2).unwrap();
        zone.answered(1, Some(0), 200);
        zone.upstream_time(1, 0, Duration::from_millis(2));
        zone.set_down(1, true);
        let out = render(&config, &zone, 2);
        for line in [
            "proxy_requests_total{worker=\"1\",group=\"g\",upstream=\"127.0.0.1:1\",code=\"2xx\"} 1",
            "proxy_requests_total{worker=\"0\",group=\"\",upstream=\"none\",code=\"5xx\"} 0",
            "proxy_upstream_header_seconds_bucket{worker=\"1\",group=\"g\",upstream=\"127.0.0.1:1\",le=\"0.001\"} 0",
            "proxy_upstream_header_seconds_bucket{worker=\"1\",group=\"g\",upstream=\"127.0.0.1:1\",le=\"0.0025\"} 1",
            "proxy_upstream_header_seconds_bucket{worker=\"1\",group=\"g\",upstream=\"127.0.0.1:1\",le=\"+Inf\"} 1",
            "proxy_upstream_up{group=\"g\",upstream=\"127.0.0.1:2\"} 0",
            "proxy_active_connections{worker=\"1\"} 0",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line}\n{out}");
        }
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
