//! Active health checks: every `interval_ms`, a `GET` of the group's health path on each
//! upstream; `fails` failures in a row mark it down, `passes` successes in a row bring it back.
//!
//! Worker 0 alone runs them and writes its verdicts in the shared [`Zone`], which every worker
//! reads before choosing an upstream: one check per upstream per interval however many workers
//! there are, and all workers agree on who is down. (If worker 0 dies, the verdicts stay as
//! they were until the master has started its replacement, a moment later.)
//!
//! Each check opens a fresh connection, not one from the pool: what it must prove is that a
//! new connection can be made and answered, which is what the next request may need.

use std::sync::Arc;
use std::time::Duration;

use common::log;
use tokio::sync::watch;
use tokio::time::{MissedTickBehavior, interval};

use crate::config::HealthCheck;
use crate::proxy::Proxy;
use crate::upstream::error::out_of_descriptors;

/// Starts the checks of every health-checked group on the current runtime; they stop when
/// `shutdown` turns `true`.
///
/// A check is a plain `GET` whose status is all that matters, made every few seconds: the
/// place for a general-purpose client, `reqwest`, rather than the proxy's own.
///
/// # Errors
///
/// When the checks' HTTP client cannot be built.
pub(crate) fn start(proxy: &Arc<Proxy>) -> Result<(), reqwest::Error> {
    let checker = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(0)
        .http1_only()
        .retry(reqwest::retry::never())
        .build()?;
    for (index, upstream) in proxy.config.upstreams.iter().enumerate() {
        let Some(check) = proxy.config.groups[upstream.group].health.clone() else {
            continue;
        };
        let url = format!("http://{}{}", upstream.addr, check.path);
        tokio::spawn(watch_upstream(
            Arc::clone(proxy),
            checker.clone(),
            index,
            url,
            check,
            proxy.shutdown.clone(),
        ));
    }
    Ok(())
}

async fn watch_upstream(
    proxy: Arc<Proxy>,
    checker: reqwest::Client,
    index: usize,
    url: String,
    check: HealthCheck,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = &proxy.config.upstreams[index].name;
    let group = &proxy.config.groups[proxy.config.upstreams[index].group].name;
    let mut ticks = interval(Duration::from_millis(check.interval_ms));
    // A check that overran its interval is followed by the next one, not by a burst.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (mut fails, mut passes) = (0, 0);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.wait_for(|stopping| *stopping) => return,
        }
        let result = checker
            .get(&url)
            .timeout(Duration::from_millis(check.timeout_ms))
            .send()
            .await;
        if let Err(error) = &result
            && out_of_descriptors(error)
        {
            // The proxy itself is out of descriptors: this check says nothing of the upstream.
            continue;
        }
        let failure = match result {
            Ok(response)
                if response.status().is_success() || response.status().is_redirection() =>
            {
                None
            }
            Ok(response) => Some(format!("status {}", response.status().as_u16())),
            Err(error) if error.is_timeout() => Some("timed out".to_string()),
            Err(error) if error.is_connect() => Some("cannot connect".to_string()),
            Err(error) => Some(error.to_string()),
        };
        let down = proxy.zone.is_down(index);
        match failure {
            None => {
                (fails, passes) = (0, passes + 1);
                if down && passes >= check.passes {
                    proxy.zone.set_down(index, false);
                    log::event(format_args!(
                        "health: upstream {name} (group {group}) is up again after {passes} good checks"
                    ));
                }
            }
            Some(why) => {
                (fails, passes) = (fails + 1, 0);
                if !down && fails >= check.fails {
                    proxy.zone.set_down(index, true);
                    log::event(format_args!(
                        "health: upstream {name} (group {group}) is down after {fails} failed checks ({why})"
                    ));
                }
            }
        }
    }
}
