//! Staleness: every stream's set compared with the ground truth; a stream
//! that disagrees for longer than a grace period is stale.

use super::{faults::Class, label::StreamLabel};
use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use prometheus_client::{
    metrics::{family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::fleet::Fleet;

/// Staleness metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    stale: Family<StreamLabel, Gauge>,
    durations: crate::latency::Timings,
}

impl Metrics {
    /// Registers `stale_streams` and `staleness_seconds` into `reg`.
    pub fn register(reg: &mut Registry) -> Self {
        let m = Self {
            stale: Family::default(),
            // 1 s to ~9 h: a stream is only stale after the grace period, and
            // the bug class this catches (stale endpoints) lasts until a restart.
            durations: crate::latency::Timings::new(Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 16),
            )),
        };
        reg.register(
            "stale_streams",
            "Streams whose set has differed from the ground truth for longer than the grace period",
            m.stale.clone(),
        );
        reg.register_with_unit(
            "staleness",
            "How long streams stayed stale (observed when they recover)",
            Unit::Seconds,
            m.durations.histogram(),
        );
        m
    }

    /// How long the streams that were stale (past the grace period) stayed
    /// so, for every episode that ended; one that lasts to the end is in
    /// [`Metrics::stale_now`] instead.
    pub fn episodes(&self) -> crate::latency::Percentiles {
        self.durations.percentiles()
    }

    /// Stale streams now, all services, of each service's counted class
    /// (the healthy streams when it has any: stuck ones are stale by
    /// design and reported apart, see [`Metrics::stale_of`]).
    pub fn stale_now(&self, fleet: &Fleet) -> i64 {
        fleet
            .services()
            .iter()
            .map(|s| self.stale_gauge(&s.service, s.truth.counted_class()))
            .sum()
    }

    /// Stale streams of `class` now, all services.
    pub fn stale_of(&self, fleet: &Fleet, class: Class) -> i64 {
        fleet
            .services()
            .iter()
            .map(|s| self.stale_gauge(&s.service, class))
            .sum()
    }

    fn stale_gauge(&self, service: &str, class: Class) -> i64 {
        self.stale
            .get(&StreamLabel::new(service, class))
            .map_or(0, |g| g.get())
    }
}

/// What differs between a stream's set and the truth.
#[derive(Debug, PartialEq, Eq)]
pub struct Diff {
    /// In the truth, not in the stream.
    pub missing: Vec<SocketAddr>,
    /// In the stream, not in the truth.
    pub extra: Vec<SocketAddr>,
}

/// The difference between `have` and `want` (both sorted), or None when equal.
pub fn diff(have: &[SocketAddr], want: &[SocketAddr]) -> Option<Diff> {
    if have == want {
        return None;
    }
    let (h, w): (BTreeSet<_>, BTreeSet<_>) = (have.iter().collect(), want.iter().collect());
    Some(Diff {
        missing: w.difference(&h).map(|a| **a).collect(),
        extra: h.difference(&w).map(|a| **a).collect(),
    })
}

/// Checks every stream every `interval` until `stop`, and once more then:
/// the count at the end is the streams stale at the end (a run that ends as
/// soon as every stream converged has none), not the last tick's.
pub async fn watch(
    fleet: Arc<Fleet>,
    metrics: Metrics,
    grace: Duration,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut differs_since: HashMap<(String, usize), Instant> = HashMap::new();
    let mut last_log: HashMap<String, Instant> = HashMap::new();
    loop {
        let last = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tokio::time::sleep(interval) => false,
        };
        let now = Instant::now();
        for svc in fleet.services() {
            if !svc.truth.is_known() {
                continue;
            }
            let want = svc.truth.expected();
            let mut stale = [0i64; 3];
            for (i, slot) in svc.slots().iter().enumerate() {
                let key = (svc.service.clone(), i);
                let have = slot.addrs();
                match diff(&have, &want) {
                    None => {
                        if let Some(since) = differs_since.remove(&key) {
                            let d = now - since;
                            if d > grace {
                                metrics.durations.record(d);
                            }
                        }
                    }
                    Some(d) => {
                        let since = *differs_since.entry(key).or_insert(now);
                        if now - since > grace {
                            stale[svc.classes()[i] as usize] += 1;
                            let quiet = last_log
                                .get(&svc.service)
                                .is_some_and(|t| now - *t < Duration::from_secs(30));
                            if !quiet {
                                last_log.insert(svc.service.clone(), now);
                                tracing::warn!(
                                    service = %svc.service,
                                    stream = i,
                                    stale_for = ?(now - since),
                                    missing = ?&d.missing[..d.missing.len().min(5)],
                                    extra = ?&d.extra[..d.extra.len().min(5)],
                                    missing_total = d.missing.len(),
                                    extra_total = d.extra.len(),
                                    "stream is stale (one line per service per 30s)"
                                );
                            }
                        }
                    }
                }
            }
            for c in Class::ALL {
                // Only the classes the service has streams of get a series.
                if svc.classes().contains(&c) {
                    metrics
                        .stale
                        .get_or_create(&StreamLabel::new(&svc.service, c))
                        .set(stale[c as usize]);
                }
            }
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn diff_names_missing_and_extra_addresses() {
        assert_eq!(diff(&[sa("10.0.0.1:80")], &[sa("10.0.0.1:80")]), None);
        assert_eq!(
            diff(
                &[sa("10.0.0.1:80"), sa("10.0.0.3:80")],
                &[sa("10.0.0.1:80"), sa("10.0.0.2:80")]
            ),
            Some(Diff {
                missing: vec![sa("10.0.0.2:80")],
                extra: vec![sa("10.0.0.3:80")]
            })
        );
    }
}
