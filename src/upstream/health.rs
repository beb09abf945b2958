//! Background work on a route's targets, started by the gateway for each configuration in
//! force: active health checks (`[routes.health]`: `GET path` every `interval`, a target
//! out after `unhealthy_after` consecutive failures and back after `healthy_after`
//! successes) and DNS re-resolution of targets named by host name (at start, then every
//! `dns_refresh`, 30 s by default: a changed address set makes every worker drop its pooled
//! connections to the target, so traffic follows DNS within a minute). Each task holds only
//! a weak reference to its targets and ends when a reload replaces them or the gateway stops.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::{Request, Uri};
use tokio::sync::watch;

use super::body::UpstreamBody;
use super::connect::Transport;
use super::target::{TargetSet, TargetState};
use crate::routing::HealthCheck;

/// Start the checks every set asks for. `stop` changes when the gateway shuts down.
pub fn spawn(sets: &[Arc<TargetSet>], stop: &watch::Receiver<Option<Duration>>) {
    for set in sets {
        if let Some(check) = &set.health {
            tokio::spawn(checks(Arc::downgrade(set), check.clone(), stop.clone()));
        }
        if set.targets.iter().any(|t| t.target.named) {
            tokio::spawn(resolve(Arc::downgrade(set), stop.clone()));
        }
    }
}

/// Wait `period`; false when the gateway is stopping.
async fn tick(period: Duration, stop: &mut watch::Receiver<Option<Duration>>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(period) => stop.borrow().is_none(),
        _ = stop.changed() => false,
    }
}

async fn checks(
    set: Weak<TargetSet>,
    check: HealthCheck,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    // The checker's own connections (health checks never borrow a worker's pool), each with
    // the DNS generation it was built for: like a worker's, they are rebuilt when the
    // target's name resolves elsewhere, so the checks probe what requests reach.
    let mut transports: Vec<(u64, Transport)> = match set.upgrade() {
        Some(s) => s
            .targets
            .iter()
            .map(|t| {
                let generation = t.dns_generation.load(Ordering::Relaxed);
                (generation, Transport::new(&t.target, &s.settings))
            })
            .collect(),
        None => return,
    };
    let mut streaks = vec![Streak::default(); transports.len()];
    // Checks start every `interval` (the first at once), however long the last one took: a
    // dead target is out within `unhealthy_after` intervals plus one timeout.
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        if stop.borrow().is_some() {
            return;
        }
        let Some(s) = set.upgrade() else { return };
        for (t, (built_for, transport)) in s.targets.iter().zip(&mut transports) {
            let generation = t.dns_generation.load(Ordering::Relaxed);
            if generation != *built_for {
                *transport = Transport::new(&t.target, &s.settings);
                *built_for = generation;
            }
        }
        let probes = s
            .targets
            .iter()
            .zip(&transports)
            .map(|(t, (_, tr))| probe(t, tr, &check));
        let results = futures_util::future::join_all(probes).await;
        for ((t, streak), result) in s.targets.iter().zip(&mut streaks).zip(results) {
            if let Some(healthy) = streak.record(result.is_ok(), t.healthy(), &check) {
                t.set_healthy(healthy);
                match (&result, healthy) {
                    (Err(e), false) => {
                        tracing::warn!(route = s.route, target = %t.target.origin, error = %e, "upstream target unhealthy")
                    }
                    _ => {
                        tracing::info!(route = s.route, target = %t.target.origin, "upstream target healthy again")
                    }
                }
            }
        }
    }
}

/// Consecutive results of one target's checks.
#[derive(Debug, Clone, Copy, Default)]
struct Streak {
    good: u32,
    bad: u32,
}

impl Streak {
    /// Count one result; `Some(new verdict)` when it flips the target's health.
    fn record(&mut self, ok: bool, healthy: bool, check: &HealthCheck) -> Option<bool> {
        if ok {
            self.good = self.good.saturating_add(1);
            self.bad = 0;
            (!healthy && self.good >= check.healthy_after).then_some(true)
        } else {
            self.bad = self.bad.saturating_add(1);
            self.good = 0;
            (healthy && self.bad >= check.unhealthy_after).then_some(false)
        }
    }
}

/// One check: `GET path` answered with a 2xx within the timeout.
async fn probe(t: &TargetState, transport: &Transport, check: &HealthCheck) -> Result<(), String> {
    let uri = Uri::builder()
        .scheme(t.target.scheme.clone())
        .authority(t.target.authority.clone())
        .path_and_query(check.path.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let mut req = Request::new(UpstreamBody::empty());
    *req.uri_mut() = uri;
    req.headers_mut().insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static("portcullis-health-check"),
    );
    match tokio::time::timeout(check.timeout, transport.request(req, false)).await {
        Err(_) => Err(format!("no answer within {:?}", check.timeout)),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
        Ok(Ok(resp)) => Err(format!("answered {}", resp.status())),
    }
}

/// Resolve the set's named targets at once (what the workers' first connections found),
/// then every `dns_refresh`: a target whose address set changed since the last lookup gets a
/// new DNS generation, and the workers reconnect. The baseline is taken at the start, not
/// one period later, so a change in the first period is seen too.
async fn resolve(set: Weak<TargetSet>, mut stop: watch::Receiver<Option<Duration>>) {
    let Some(period) = set.upgrade().map(|s| s.dns_refresh) else {
        return;
    };
    let mut known: Vec<Option<BTreeSet<SocketAddr>>> = Vec::new();
    loop {
        {
            let Some(s) = set.upgrade() else { return };
            refresh(&s, &mut known).await;
        }
        if !tick(period, &mut stop).await {
            return;
        }
    }
}

/// One lookup of every named target of `s`; `known` holds each target's last answer.
async fn refresh(s: &TargetSet, known: &mut Vec<Option<BTreeSet<SocketAddr>>>) {
    known.resize(s.targets.len(), None);
    for (t, last) in s.targets.iter().zip(known.iter_mut()) {
        if !t.target.named {
            continue;
        }
        let port = t
            .target
            .authority
            .port_u16()
            .unwrap_or(if t.target.is_tls() { 443 } else { 80 });
        let host = t.target.authority.host();
        let Ok(found) = tokio::net::lookup_host((host, port)).await else {
            // Unresolvable now: keep what the pools have; new connections will fail to
            // connect and eject the target.
            continue;
        };
        let found: BTreeSet<SocketAddr> = found.collect();
        if last.as_ref().is_some_and(|l| *l != found) {
            tracing::info!(route = s.route, target = %t.target.origin, addrs = ?found, "upstream target resolves to new addresses; reconnecting");
            t.dns_generation.fetch_add(1, Ordering::Relaxed);
        }
        *last = Some(found);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(unhealthy_after: u32, healthy_after: u32) -> HealthCheck {
        HealthCheck {
            path: http::uri::PathAndQuery::from_static("/healthz"),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            unhealthy_after,
            healthy_after,
        }
    }

    #[test]
    fn verdict_flips_only_after_the_thresholds() {
        let c = check(2, 3);
        let mut s = Streak::default();
        assert_eq!(s.record(false, true, &c), None);
        assert_eq!(s.record(false, true, &c), Some(false));
        assert_eq!(s.record(true, false, &c), None);
        assert_eq!(
            s.record(false, false, &c),
            None,
            "a failure resets the good streak"
        );
        assert_eq!(s.record(true, false, &c), None);
        assert_eq!(s.record(true, false, &c), None);
        assert_eq!(s.record(true, false, &c), Some(true));
        assert_eq!(s.record(true, true, &c), None);
    }
}
