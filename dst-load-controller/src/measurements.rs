//! What the client measured over a run, as `client`, `run` and `report`
//! write it and `compare`, the pictures and the SLOs read it.

use serde::Serialize;

use crate::{
    latency::{PatternLatencies, Percentiles},
    slo::{Count, Latency, Measured},
};

/// What the client measured over a run. Read back (by `compare` and the
/// pictures) from reports written before a field existed, that field takes
/// its default.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Measurements {
    /// Streams: configured ones for `client` and `run`; those open at the
    /// end of the window (`destination_client_streams_active`) for `report`.
    pub streams: u64,
    /// Get calls made (more than `streams` after resets).
    pub streams_created: u64,
    /// Streams that ended and were re-opened (`destination_client_streams_reset_total`).
    pub streams_reset: u64,
    /// Updates received by the client.
    pub updates_received: u64,
    /// Errors the client saw.
    pub errors: u64,
    /// Changes that every stream converged to.
    pub fanouts_completed: u64,
    /// Changes replaced by the next before every stream converged.
    pub fanouts_superseded: u64,
    /// Streams not converged to the final truth at the end.
    pub streams_unconverged: u64,
    /// Convergences without a latency sample: a stream found holding a new
    /// truth with a set from before the change (it lagged behind a service
    /// that changed back, so it never observed the change in time).
    pub convergences_untimed: u64,
    /// Change to first update reflecting it, per stream.
    pub update_latency: Percentiles,
    /// Change to a stream's set equal to the truth, per stream.
    pub convergence_latency: Percentiles,
    /// Change to the last stream converged, per change.
    pub fanout_completion: Percentiles,
    /// Scale to EndpointSlice seen (Kubernetes ground truth only).
    pub kubernetes_leg: Percentiles,
    /// EndpointSlice seen to stream converged (Kubernetes ground truth only).
    pub destination_leg: Percentiles,
    /// Streams stale at the end (healthy ones; other classes in `by_class`).
    pub stale_streams: i64,
    /// Streams that were stale (differed from the truth past the grace
    /// period) and recovered: how long each episode lasted.
    pub staleness: Percentiles,
    /// Services whose streams never got an endpoint although the ground
    /// truth lists endpoints for them (always 0 without a ground truth).
    pub services_never_served: u64,
    /// `GetProfile` streams: calls made (0 without profile streams).
    #[serde(skip_serializing_if = "is_zero")]
    pub profile_streams_created: u64,
    /// Profiles received on them.
    #[serde(skip_serializing_if = "is_zero")]
    pub profile_updates_received: u64,
    /// ServiceProfile change to a `GetProfile` stream showing it (with the
    /// ground truth and churn's stamps).
    #[serde(skip_serializing_if = "no_samples")]
    pub profile_update_latency: Percentiles,
    /// Profile streams stale at the end, stuck ones left out (with the
    /// ground truth: ServiceProfiles for streams by name, pods for
    /// `--target-pods`).
    #[serde(skip_serializing_if = "is_zero")]
    pub profile_stale_streams: u64,
    /// Profile streams by name that read their first profile and never
    /// again (`--stuck-percent`): not in `profile_stale_streams`.
    #[serde(skip_serializing_if = "is_zero")]
    pub profile_stuck_streams: u64,
    /// Update, convergence and fan-out latencies by churn pattern (the
    /// `pattern` label), for the patterns that had samples.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub by_pattern: std::collections::BTreeMap<String, PatternLatencies>,
    /// With fault modes: update, convergence and fan-out latencies by
    /// stream class (`healthy`, `slow`, `stuck`; the figures above are the
    /// healthy streams'), and resets by class.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub by_class: std::collections::BTreeMap<String, ClassFigures>,
    /// The client's streams, updates, errors, resets and stale streams,
    /// sampled every second.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelineSample>,
    /// Every measured change and when its first and last (healthy) stream
    /// converged.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fanouts: Vec<ChangeRecord>,
    /// What the figures point to, in words (see [`Measurements::diagnose`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub diagnoses: Vec<String>,
}

fn no_samples(p: &Percentiles) -> bool {
    p.count == 0
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One run of `run --repeat`: its figures as `compare` names them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RunFigures {
    /// Its place, from 1.
    pub run: usize,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it ended (RFC 3339).
    pub ended_at: String,
    /// Whether every SLO held.
    pub passed: bool,
    /// `update_latency.p50` (seconds), `errors`...
    pub figures: std::collections::BTreeMap<String, f64>,
}

/// One second of a run, as the client saw it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TimelineSample {
    /// When (seconds since the Unix epoch).
    pub at: f64,
    /// Streams open.
    pub streams_active: i64,
    /// Updates received so far.
    pub updates: u64,
    /// Errors so far.
    pub errors: u64,
    /// Resets so far.
    pub resets: u64,
    /// Streams stale now.
    pub stale: i64,
    /// The update latencies of the healthy streams observed since the
    /// previous sample (none when there were none); from `report`, every
    /// stream's over the trailing `--latency-window`, as Prometheus's
    /// buckets have them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_latency: Option<WindowLatency>,
}

/// Percentiles of the latencies observed in one timeline interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct WindowLatency {
    /// Samples in the interval (read from Prometheus: the buckets' increase
    /// over the trailing window, rounded).
    pub count: u64,
    /// Median, in seconds.
    pub p50: f64,
    /// 95th percentile, in seconds.
    pub p95: f64,
    /// 99th percentile, in seconds.
    pub p99: f64,
}

/// One change and its fan-out.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ChangeRecord {
    /// The service (authority) that changed.
    pub service: String,
    /// When it changed (seconds since the Unix epoch).
    pub at: f64,
    /// Seconds from the change to its first stream converged.
    pub first_converged: Option<f64>,
    /// Seconds from the change to its last stream converged; none when the
    /// next change came first (superseded).
    pub last_converged: Option<f64>,
    /// Endpoints the service had after the change (absent in reports
    /// written before it was recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<u64>,
}

/// One stream class's figures.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ClassFigures {
    /// Streams of the class.
    pub streams: u64,
    /// Their resets (the server ending them included).
    pub resets: u64,
    /// Of them, stale at the end.
    pub stale: i64,
    /// Their latencies.
    #[serde(flatten)]
    pub latencies: PatternLatencies,
}

impl Measurements {
    /// What the figures point to. Today one pattern, on either path:
    /// healthy streams left stale or unconverged at the end while stuck
    /// streams (read once, then never) were open. A controller that sends
    /// from its informer blocks every stream behind one whose HTTP/2 window
    /// is full, as Linkerd's did for endpoints before stable-2.14.2
    /// (linkerd/linkerd2#11279) and for ServiceProfiles before edge-23.11.2
    /// (linkerd/linkerd2#11546); one that queues per stream does not.
    pub fn diagnose(&self) -> Vec<String> {
        let stuck = self.by_class.get("stuck").map_or(0, |c| c.streams);
        let behind = self
            .stale_streams
            .max(0)
            .unsigned_abs()
            .max(self.streams_unconverged);
        let mut out = Vec::new();
        if stuck > 0 && behind > 0 {
            out.push(format!(
                "{behind} healthy stream(s) stale or unconverged at the end while {stuck} stuck stream(s) were open: the stuck streams are the likely cause (their full HTTP/2 windows block a controller that sends from its informer, linkerd/linkerd2#11279, fixed in stable-2.14.2)"
            ));
        }
        let (stuck, behind) = (self.profile_stuck_streams, self.profile_stale_streams);
        if stuck > 0 && behind > 0 {
            out.push(format!(
                "{behind} healthy profile stream(s) stale at the end while {stuck} stuck profile stream(s) were open: the stuck streams are the likely cause (their full HTTP/2 windows block a controller that sends profiles from its ServiceProfile informer, linkerd/linkerd2#11546, fixed in edge-23.11.2)"
            ));
        }
        out
    }

    /// The latency rows of a summary table, then any diagnosis.
    pub fn latency_table(&self) -> String {
        let ms = |s: f64| format!("{:.1}", s * 1e3);
        let row = |name: &str, p: &Percentiles| {
            format!(
                "  {name:<24} {:>8} {:>9} {:>9} {:>9} {:>9}\n",
                p.count,
                ms(p.p50),
                ms(p.p95),
                ms(p.p99),
                ms(p.max)
            )
        };
        let mut t = format!(
            "  {:<24} {:>8} {:>9} {:>9} {:>9} {:>9}\n",
            "latency (ms)", "samples", "p50", "p95", "p99", "max"
        );
        t += &row("change -> update", &self.update_latency);
        t += &row("change -> converged", &self.convergence_latency);
        t += &row("fan-out complete", &self.fanout_completion);
        if self.kubernetes_leg.count > 0 {
            t += &row("scale -> slice seen", &self.kubernetes_leg);
            t += &row("slice seen -> converged", &self.destination_leg);
        }
        if self.staleness.count > 0 {
            t += &row("stale episodes (ended)", &self.staleness);
        }
        if self.profile_update_latency.count > 0 {
            t += &row("profile change -> shown", &self.profile_update_latency);
        }
        for (class, c) in &self.by_class {
            t += &row(
                &format!("{class}: change -> update"),
                &c.latencies.update_latency,
            );
            t += &row(
                &format!("{class}: converged"),
                &c.latencies.convergence_latency,
            );
            t += &row(&format!("{class}: fan-out"), &c.latencies.fanout_completion);
        }
        if self.by_pattern.len() > 1 {
            for (pattern, p) in &self.by_pattern {
                t += &row(&format!("{pattern}: change -> update"), &p.update_latency);
                t += &row(&format!("{pattern}: converged"), &p.convergence_latency);
                t += &row(&format!("{pattern}: fan-out"), &p.fanout_completion);
            }
        }
        for d in &self.diagnoses {
            t += &format!("  likely cause: {d}\n");
        }
        t
    }
}

impl Measured for Measurements {
    fn latency(&self, l: Latency) -> &Percentiles {
        match l {
            Latency::UpdateLatency => &self.update_latency,
            Latency::ConvergenceLatency => &self.convergence_latency,
            Latency::FanoutCompletion => &self.fanout_completion,
            Latency::KubernetesLeg => &self.kubernetes_leg,
            Latency::DestinationLeg => &self.destination_leg,
            Latency::ProfileUpdateLatency => &self.profile_update_latency,
        }
    }

    fn count(&self, c: Count) -> u64 {
        match c {
            Count::StaleStreams => self.stale_streams.max(0) as u64,
            Count::Errors => self.errors,
            Count::Resets => self.streams_reset,
            Count::UnconvergedStreams => self.streams_unconverged,
            Count::UntimedConvergences => self.convergences_untimed,
            Count::ProfileStaleStreams => self.profile_stale_streams,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_streams_behind_stuck_ones_are_diagnosed_and_nothing_else_is() {
        let stuck = |n| {
            std::collections::BTreeMap::from([(
                "stuck".to_string(),
                ClassFigures {
                    streams: n,
                    ..Default::default()
                },
            )])
        };
        let m = Measurements {
            stale_streams: 18,
            streams_unconverged: 3,
            by_class: stuck(2),
            ..Default::default()
        };
        let d = m.diagnose();
        assert_eq!(d.len(), 1);
        assert!(
            d[0].starts_with("18 healthy stream(s) stale or unconverged at the end while 2 stuck stream(s) were open: the stuck streams are the likely cause"),
            "{}",
            d[0]
        );
        assert!(d[0].contains("linkerd/linkerd2#11279"));
        // Healthy streams converged, or behind with no stuck stream: nothing.
        let converged = Measurements {
            by_class: stuck(2),
            ..Default::default()
        };
        assert!(converged.diagnose().is_empty());
        let behind = Measurements {
            streams_unconverged: 4,
            ..Default::default()
        };
        assert!(behind.diagnose().is_empty());
        // The table says it.
        let m = Measurements { diagnoses: d, ..m };
        assert!(
            m.latency_table()
                .contains("  likely cause: 18 healthy stream(s)")
        );
    }

    #[test]
    fn healthy_profile_streams_behind_stuck_ones_are_diagnosed_apart() {
        let m = Measurements {
            profile_stale_streams: 8,
            profile_stuck_streams: 2,
            ..Default::default()
        };
        let d = m.diagnose();
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(
            d[0].starts_with("8 healthy profile stream(s) stale at the end while 2 stuck profile stream(s) were open"),
            "{}",
            d[0]
        );
        assert!(d[0].contains("linkerd/linkerd2#11546"), "{}", d[0]);
        // Stuck profile streams alone, or stale ones without stuck ones: nothing.
        for (stale, stuck) in [(0, 2), (8, 0)] {
            let m = Measurements {
                profile_stale_streams: stale,
                profile_stuck_streams: stuck,
                ..Default::default()
            };
            assert!(m.diagnose().is_empty(), "{stale} {stuck}");
        }
        // Stuck streams of the other path do not explain stale profiles.
        let m = Measurements {
            profile_stale_streams: 8,
            by_class: std::collections::BTreeMap::from([(
                "stuck".to_string(),
                ClassFigures {
                    streams: 2,
                    ..Default::default()
                },
            )]),
            ..Default::default()
        };
        assert!(m.diagnose().is_empty());
    }
}
