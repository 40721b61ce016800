//! The client's Prometheus metrics, all under `destination_client_`.

use std::sync::Arc;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::Counter, family::Family, gauge::Gauge, histogram::Histogram,
        histogram::exponential_buckets,
    },
    registry::{Registry, Unit},
};

use super::{endpoints::UpdateKind, faults::Class, fleet::Fleet, truth::Latencies};
pub use super::{
    fleet::{ServiceStreams, StreamSlot},
    label::ServiceLabel,
};

/// `{reason, class}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why: a gRPC code name, `transport`, `lifetime`, `end_of_stream`,
    /// `reset_storm`, `connection_churn`.
    pub reason: String,
    /// The stream's class: `healthy`, `slow`, `stuck`.
    pub class: &'static str,
}

impl ReasonLabels {
    fn new(reason: &str, class: Class) -> Self {
        Self {
            reason: reason.to_string(),
            class: class.as_str(),
        }
    }
}

/// `{service, kind, class}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpdateLabels {
    /// The destination authority.
    pub service: String,
    /// `add`, `remove`, `no_endpoints`.
    pub kind: &'static str,
    /// The stream's class: `healthy`, `slow`, `stuck`.
    pub class: &'static str,
}

/// `{service, stat}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointsLabels {
    service: String,
    stat: &'static str,
}

/// Counters, gauges and histograms of one client process.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Streams open (a `Get` sent and not yet ended).
    pub streams_active: Gauge,
    /// `Get` calls made.
    pub streams_created: Counter,
    /// Streams that ended and were re-opened, by reason.
    pub streams_reset: Family<ReasonLabels, Counter>,
    /// Streams that ended for good (`InvalidArgument`, `FailedPrecondition`).
    pub streams_failed: Family<ReasonLabels, Counter>,
    /// Updates received.
    pub updates_received: Family<UpdateLabels, Counter>,
    /// Addresses in the updates received (added plus removed), all services.
    pub endpoint_updates_received: Counter,
    /// Errors from `Get` or a stream, by gRPC code or `transport`.
    pub connection_errors: Family<ReasonLabels, Counter>,
    /// Streams whose first update did not come within `--initial-timeout`.
    pub initial_timeouts: Counter,
    /// Addresses in updates that could not be decoded.
    pub invalid_addresses: Counter,
    /// How long streams lived.
    pub stream_lifetime: Histogram,
    /// From sending `Get` to the first update.
    pub time_to_first_update: Histogram,
    /// Change-to-observation latencies.
    pub latencies: Latencies,
    /// Streams that disagree with the ground truth.
    pub staleness: super::staleness::Metrics,
    /// All errors, for the summary (families cannot be summed).
    pub errors_total: Counter,
    /// All streams ended for good, for the summary.
    pub failed_total: Counter,
    /// All resets, for the summary.
    pub resets_total: Counter,
    /// Resets by class, for the report.
    resets_by_class: [Counter; 3],
    /// The `GetProfile` streams'.
    pub profiles: ProfileMetrics,
    /// The report's timeline: one sample a second while the client runs.
    pub timeline: Arc<std::sync::Mutex<Vec<crate::measurements::TimelineSample>>>,
    /// The `Get` streams' errors, told at warn (rate-limited).
    pub error_log: Arc<super::error_log::ErrorLog>,
}

impl Metrics {
    /// Registers the client's metrics under `destination_client_`, plus the
    /// per-service endpoint gauges computed at scrape time from `services`.
    pub fn register(registry: &mut Registry, services: Arc<Fleet>) -> Self {
        let reg = registry.sub_registry_with_prefix("destination_client");
        let m = Self {
            streams_active: Gauge::default(),
            streams_created: Counter::default(),
            streams_reset: Family::default(),
            streams_failed: Family::default(),
            updates_received: Family::default(),
            endpoint_updates_received: Counter::default(),
            connection_errors: Family::default(),
            initial_timeouts: Counter::default(),
            invalid_addresses: Counter::default(),
            // Streams live from milliseconds (a reset storm) to hours.
            stream_lifetime: Histogram::new(exponential_buckets(0.01, 2.0, 20)),
            // 1 ms to ~65 s: a first update takes a round trip when healthy and
            // up to the full backoff when the controller is overloaded.
            time_to_first_update: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            latencies: Latencies::register(reg),
            staleness: super::staleness::Metrics::register(reg),
            errors_total: Counter::default(),
            failed_total: Counter::default(),
            resets_total: Counter::default(),
            resets_by_class: Default::default(),
            profiles: ProfileMetrics::register(reg),
            timeline: Arc::default(),
            error_log: Arc::default(),
        };
        reg.register(
            "streams_active",
            "Destination.Get streams open",
            m.streams_active.clone(),
        );
        reg.register(
            "streams_created",
            "Destination.Get calls made",
            m.streams_created.clone(),
        );
        reg.register(
            "streams_reset",
            "Streams that ended and were re-opened, by reason",
            m.streams_reset.clone(),
        );
        reg.register(
            "streams_failed",
            "Streams that ended for good (InvalidArgument, FailedPrecondition)",
            m.streams_failed.clone(),
        );
        reg.register(
            "updates_received",
            "Destination updates received, by service and kind",
            m.updates_received.clone(),
        );
        reg.register(
            "endpoint_updates_received",
            "Endpoint addresses in the updates received (added plus removed), all services",
            m.endpoint_updates_received.clone(),
        );
        reg.register(
            "connection_errors",
            "Errors from Get or a stream, by gRPC code or transport",
            m.connection_errors.clone(),
        );
        reg.register(
            "initial_timeouts",
            "Streams whose first update took longer than --initial-timeout",
            m.initial_timeouts.clone(),
        );
        reg.register(
            "invalid_addresses",
            "Addresses in updates that could not be decoded",
            m.invalid_addresses.clone(),
        );
        reg.register_with_unit(
            "stream_lifetime",
            "How long streams lived",
            Unit::Seconds,
            m.stream_lifetime.clone(),
        );
        reg.register_with_unit(
            "time_to_first_update",
            "From sending Get to the first update",
            Unit::Seconds,
            m.time_to_first_update.clone(),
        );
        reg.register_collector(Box::new(EndpointGauges(services)));
        m
    }

    /// The counter for one service and kind, resolved once per stream so the
    /// hot path does not hash labels.
    pub fn update_counter(&self, service: &str, kind: UpdateKind, class: Class) -> Counter {
        self.updates_received
            .get_or_create(&UpdateLabels {
                service: service.to_string(),
                kind: kind.as_str(),
                class: class.as_str(),
            })
            .clone()
    }

    /// Counts one reset of a stream of `class`.
    pub fn reset(&self, reason: &str, class: Class) {
        self.streams_reset
            .get_or_create(&ReasonLabels::new(reason, class))
            .inc();
        self.resets_total.inc();
        self.resets_by_class[class as usize].inc();
    }

    /// Counts one error on a stream of `class`.
    pub fn error(&self, reason: &str, class: Class) {
        self.connection_errors
            .get_or_create(&ReasonLabels::new(reason, class))
            .inc();
        self.errors_total.inc();
    }

    /// Counts one stream of `class` that ended for good.
    pub fn failed(&self, reason: &str, class: Class) {
        self.streams_failed
            .get_or_create(&ReasonLabels::new(reason, class))
            .inc();
        self.failed_total.inc();
    }

    /// Updates received by `service`'s streams so far, every kind and class.
    pub fn updates_of(&self, service: &str) -> u64 {
        // Read, not created: a class without streams gets no series.
        let of = |kind: UpdateKind, class: Class| {
            self.updates_received
                .get(&UpdateLabels {
                    service: service.to_string(),
                    kind: kind.as_str(),
                    class: class.as_str(),
                })
                .map_or(0, |c| c.get())
        };
        UpdateKind::ALL
            .iter()
            .flat_map(|k| Class::ALL.map(|c| of(*k, c)))
            .sum()
    }

    /// Resets of streams of `class` so far.
    pub fn resets_of(&self, class: Class) -> u64 {
        self.resets_by_class[class as usize].get()
    }
}

/// `destination_client_endpoints{service,stat=min|max}`, computed at scrape time.
#[derive(Debug)]
struct EndpointGauges(Arc<Fleet>);

impl Collector for EndpointGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let family = Family::<EndpointsLabels, Gauge>::default();
        for svc in self.0.services().iter().filter(|s| !s.is_empty()) {
            let (lo, hi) = svc.min_max();
            for (stat, v) in [("min", lo), ("max", hi)] {
                family
                    .get_or_create(&EndpointsLabels {
                        service: svc.service.clone(),
                        stat,
                    })
                    .set(v as i64);
            }
        }
        let metric = encoder.encode_descriptor(
            "endpoints",
            "Smallest and largest endpoint set across a service's streams",
            None,
            family.metric_type(),
        )?;
        family.encode(metric)?;
        let unconverged = Family::<ServiceLabel, Gauge>::default();
        for svc in self.0.services() {
            unconverged
                .get_or_create(&ServiceLabel::new(&svc.service))
                .set(svc.truth.pending() as i64);
        }
        let metric = encoder.encode_descriptor(
            "unconverged_streams",
            "Streams whose set does not yet equal the service's latest ground truth",
            None,
            unconverged.metric_type(),
        )?;
        unconverged.encode(metric)
    }
}

/// `{reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProfileReasonLabels {
    reason: String,
}

/// `{target}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target: String,
}

/// The profile streams' metrics, under `destination_client_profile_`.
#[derive(Clone, Debug)]
pub struct ProfileMetrics {
    /// Streams open.
    pub streams_active: Gauge,
    /// `GetProfile` calls made.
    pub streams_created: Counter,
    /// Profiles received, all targets.
    pub updates_total: Counter,
    /// Errors, all reasons.
    pub errors_total: Counter,
    /// Resets, all reasons.
    pub resets_total: Counter,
    /// Streams ended for good.
    pub failed_total: Counter,
    /// From each `GetProfile` call to its first profile.
    pub time_to_first_update: Histogram,
    /// Streams differing from the ground truth for longer than the grace.
    pub stale_streams: Gauge,
    /// Times a stream became stale.
    pub stale_episodes: Counter,
    /// Streams open that read once and never again (`--stuck-percent`).
    pub stuck_streams: Gauge,
    /// From a ServiceProfile change (its stamp) to a stream showing it.
    pub update_latency: crate::latency::Timings,
    updates: Family<TargetLabels, Counter>,
    errors: Family<ProfileReasonLabels, Counter>,
    resets: Family<ProfileReasonLabels, Counter>,
    /// The profile streams' errors, told at warn (rate-limited).
    pub error_log: Arc<super::error_log::ErrorLog>,
}

impl ProfileMetrics {
    /// Registers them under `prefix_profile_` of `reg`.
    pub fn register(reg: &mut Registry) -> Self {
        let m = Self {
            streams_active: Gauge::default(),
            streams_created: Counter::default(),
            updates_total: Counter::default(),
            errors_total: Counter::default(),
            resets_total: Counter::default(),
            failed_total: Counter::default(),
            // 1 ms to ~65 s, as the Get streams': a storm's last answers
            // wait behind every subscription before them.
            time_to_first_update: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            stale_streams: Gauge::default(),
            stale_episodes: Counter::default(),
            stuck_streams: Gauge::default(),
            // 1 ms to ~65 s, as the endpoints' latencies.
            update_latency: crate::latency::Timings::new(Histogram::new(exponential_buckets(
                0.001, 2.0, 17,
            ))),
            updates: Family::default(),
            errors: Family::default(),
            resets: Family::default(),
            error_log: Arc::default(),
        };
        let reg = reg.sub_registry_with_prefix("profile");
        reg.register(
            "streams_active",
            "Destination.GetProfile streams open",
            m.streams_active.clone(),
        );
        reg.register(
            "streams_created",
            "Destination.GetProfile calls made",
            m.streams_created.clone(),
        );
        reg.register(
            "updates_received",
            "Profiles received, by target",
            m.updates.clone(),
        );
        reg.register(
            "errors",
            "Errors from GetProfile or its stream, by gRPC code or transport",
            m.errors.clone(),
        );
        reg.register(
            "streams_reset",
            "Profile streams that ended and were re-opened, by reason",
            m.resets.clone(),
        );
        reg.register(
            "streams_failed",
            "Profile streams that ended for good (InvalidArgument, FailedPrecondition)",
            m.failed_total.clone(),
        );
        reg.register_with_unit(
            "time_to_first_update",
            "From sending GetProfile to its first profile",
            Unit::Seconds,
            m.time_to_first_update.clone(),
        );
        reg.register(
            "stale_streams",
            "Profile streams differing from the ground truth for longer than the grace",
            m.stale_streams.clone(),
        );
        reg.register(
            "stale_episodes",
            "Times a profile stream became stale",
            m.stale_episodes.clone(),
        );
        reg.register(
            "stuck_streams",
            "Profile streams open that read their first profile and never again (--stuck-percent); not counted in stale_streams",
            m.stuck_streams.clone(),
        );
        reg.register_with_unit(
            "update_latency",
            "From a ServiceProfile change (churn's stamp) to a stream showing its routes",
            Unit::Seconds,
            m.update_latency.histogram(),
        );
        m
    }

    /// Profiles received by `target`'s streams so far.
    pub fn updates_of(&self, target: &str) -> u64 {
        self.updates
            .get(&TargetLabels {
                target: target.to_string(),
            })
            .map_or(0, |c| c.get())
    }

    /// The counter of `target`'s profiles, resolved once per stream.
    pub(super) fn updates_counter(&self, target: &str) -> Counter {
        self.updates
            .get_or_create(&TargetLabels {
                target: target.to_string(),
            })
            .clone()
    }

    pub(super) fn reset(&self, reason: &str) {
        self.resets
            .get_or_create(&ProfileReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
        self.resets_total.inc();
    }

    pub(super) fn error(&self, reason: &str) {
        self.errors
            .get_or_create(&ProfileReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
        self.errors_total.inc();
    }
}
