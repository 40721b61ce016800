//! The load-test plan's five scenarios: their numbers and their success
//! criteria as SLOs.

use std::time::Duration;

use serde::Serialize;

/// The load-test plan's scenarios.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// 10 services x 100 endpoints, 100 proxies each, no churn.
    Baseline,
    /// 10 services oscillating 10 <-> 200, 100 proxies each.
    SmallOscillation,
    /// 1 service oscillating 500 <-> 1000, 1000 proxies.
    LargeRollout,
    /// 100 services oscillating 50 <-> 100, 100 proxies each.
    ManyServices,
    /// 50 services oscillating 100 <-> 200, 500 proxies each.
    RedLine,
    /// 10 services of 20 endpoints, each rolled (every address replaced)
    /// every 10 s, and 2 services of 20 deleted and re-created (20 s alive,
    /// 5 s gone); 100 proxies each.
    RollingRestart,
    /// 5 StatefulSets oscillating 3 <-> 6 pods behind headless Services;
    /// 20 proxies watch each service and each of its first 3 pods by name.
    Statefulset,
}

/// How a scenario's services change.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Churn {
    /// Deployments scaled between min and max (fixed when equal).
    Scale,
    /// Deployments of min endpoints rolled every min hold: every address
    /// replaced, the count kept.
    Restart,
    /// StatefulSets behind headless Services, scaled between min and max;
    /// each pod below min is also watched by its own name.
    #[serde(rename = "statefulset")]
    StatefulSet,
}

/// A scenario's numbers: the plan's, with holds shortened so a run fits in
/// about a minute.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    /// How the services change.
    pub churn: Churn,
    /// Services.
    pub services: u32,
    /// With restarts: services also deleted and re-created (`min_endpoints`
    /// each, alive for 2 min holds, gone for half a min hold).
    pub ephemeral_services: u32,
    /// Endpoints at start (and the low end).
    pub min_endpoints: u32,
    /// The high end; equal to min for no churn.
    pub max_endpoints: u32,
    /// Streams per service: one per simulated proxy.
    pub streams_per_service: u32,
    /// HTTP/2 connections (simulated proxies).
    pub connections: u32,
    /// Hold at min.
    #[serde(with = "humantime_serde_secs")]
    pub min_hold: Duration,
    /// Hold at max.
    #[serde(with = "humantime_serde_secs")]
    pub max_hold: Duration,
    /// Jitter upper bound before each scale.
    #[serde(with = "humantime_serde_secs")]
    pub jitter: Duration,
    /// How long the run lasts.
    #[serde(with = "humantime_serde_secs")]
    pub duration: Duration,
}

mod humantime_serde_secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

impl Scenario {
    /// The plan's success criteria, as SLOs.
    pub fn default_slos(self) -> &'static [&'static str] {
        match self {
            Scenario::Baseline => &["stale_streams==0", "errors==0", "resets==0"],
            Scenario::SmallOscillation => &[
                "update_latency.p95<500ms",
                "update_latency.p99<2s",
                "fanout_completion.max<10s",
                "resets==0",
                "stale_streams==0",
            ],
            Scenario::LargeRollout => &[
                "update_latency.p95<1s",
                "update_latency.p99<3s",
                "fanout_completion.max<15s",
                "stale_streams==0",
            ],
            Scenario::ManyServices => &[
                "update_latency.p95<1s",
                "update_latency.p99<3s",
                "fanout_completion.max<20s",
                "stale_streams==0",
            ],
            Scenario::RedLine => &["update_latency.p99<10s", "stale_streams==0"],
            // A roll is a burst of adds and removes: the same bounds as a
            // many-service oscillation, and no address may linger.
            Scenario::RollingRestart => &[
                "update_latency.p95<1s",
                "update_latency.p99<3s",
                "fanout_completion.max<10s",
                "resets==0",
                "stale_streams==0",
            ],
            Scenario::Statefulset => &[
                "update_latency.p95<500ms",
                "update_latency.p99<2s",
                "fanout_completion.max<10s",
                "resets==0",
                "stale_streams==0",
            ],
        }
    }

    /// The plan's numbers (holds of minutes are shortened to seconds).
    pub fn plan(self) -> Plan {
        let s = Duration::from_secs;
        let (services, min, max, proxies, jitter) = match self {
            Scenario::Baseline => (10, 100, 100, 100, s(0)),
            Scenario::SmallOscillation => (10, 10, 200, 100, s(2)),
            Scenario::LargeRollout => (1, 500, 1000, 1000, s(0)),
            Scenario::ManyServices => (100, 50, 100, 100, s(2)),
            Scenario::RedLine => (50, 100, 200, 500, s(2)),
            Scenario::RollingRestart => (10, 20, 20, 100, s(2)),
            Scenario::Statefulset => (5, 3, 6, 20, s(2)),
        };
        let churn = match self {
            Scenario::RollingRestart => Churn::Restart,
            Scenario::Statefulset => Churn::StatefulSet,
            _ => Churn::Scale,
        };
        let (min_hold, max_hold) = match churn {
            // Every service rolls every 10 s.
            Churn::Restart => (s(10), s(10)),
            // The plan holds 2 min at min and 5 min at max; the same ratio, shorter.
            Churn::Scale | Churn::StatefulSet => (s(4), s(10)),
        };
        Plan {
            churn,
            services,
            ephemeral_services: Plan::ephemeral_for(churn, services),
            min_endpoints: min,
            max_endpoints: max,
            streams_per_service: proxies,
            connections: proxies,
            min_hold,
            max_hold,
            jitter,
            duration: s(60),
        }
    }
}

impl Plan {
    /// The ephemeral services that go with `services` of `churn`: one per 5
    /// rolled services (at least one), none otherwise.
    pub fn ephemeral_for(churn: Churn, services: u32) -> u32 {
        match churn {
            Churn::Restart => services.div_ceil(5),
            Churn::Scale | Churn::StatefulSet => 0,
        }
    }

    /// How long an ephemeral service lives, and stays gone.
    pub fn ephemeral_lifetime_and_gap(&self) -> (Duration, Duration) {
        (self.min_hold * 2, self.min_hold / 2)
    }

    /// The ephemeral services' authorities in `namespace`.
    pub fn ephemeral_authorities(&self, namespace: &str) -> Vec<String> {
        (0..self.ephemeral_services)
            .map(|j| format!("ephemeral-svc-{j}.{namespace}.svc.cluster.local:8080"))
            .collect()
    }

    /// Every authority the client watches in `namespace`:
    /// [`Plan::service_authorities`] of each service, then the ephemeral ones.
    pub fn authorities(&self, namespace: &str) -> Vec<String> {
        (0..self.services)
            .flat_map(|i| self.service_authorities(namespace, i))
            .chain(self.ephemeral_authorities(namespace))
            .collect()
    }

    /// The authorities of service `i` in `namespace`: the service's
    /// and, for StatefulSets, each pod's below the minimum by name
    /// (`sts-{i}-{k}.sts-svc-{i}...`: pods that exist all along).
    pub fn service_authorities(&self, namespace: &str, i: u32) -> Vec<String> {
        let fqdn = |name: &str| format!("{name}.{namespace}.svc.cluster.local:8080");
        match self.churn {
            Churn::Scale => {
                let pattern = if self.min_endpoints == self.max_endpoints {
                    "stable"
                } else {
                    "oscillate"
                };
                vec![fqdn(&format!("{pattern}-svc-{i}"))]
            }
            Churn::Restart => vec![fqdn(&format!("restart-svc-{i}"))],
            Churn::StatefulSet => std::iter::once(fqdn(&format!("sts-svc-{i}")))
                .chain((0..self.min_endpoints).map(|k| fqdn(&format!("sts-{i}-{k}.sts-svc-{i}"))))
                .collect(),
        }
    }
}
