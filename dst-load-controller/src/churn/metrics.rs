//! Churn's metrics, under `churn_`.

use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};

use super::objects::{ChangeKind, Pattern};
use crate::{
    kube_api::ApiMetrics,
    latency::{Percentiles, Timings},
};

/// `{pattern, service}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    /// `stable`, `oscillate`, `restart`, `ephemeral` or `statefulset`.
    pub pattern: &'static str,
    /// The Service name.
    pub service: String,
}

impl ServiceLabels {
    /// Labels of one service.
    pub fn new(pattern: Pattern, service: &str) -> Self {
        Self {
            pattern: pattern.as_str(),
            service: service.to_string(),
        }
    }
}

/// `{pattern, kind}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// The service's pattern.
    pub pattern: &'static str,
    /// `create`, `scale`, `restart` or `delete`.
    pub kind: &'static str,
}

/// Churn's metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Services that did not exist and were created.
    pub services_created: Counter,
    /// Scale changes applied.
    pub scale_events: Family<ServiceLabels, Counter>,
    /// Replicas last applied.
    pub current_replicas: Family<ServiceLabels, Gauge>,
    /// Oscillation cycles (min -> max -> min) completed, all services.
    pub cycles_completed: Counter,
    /// ServiceProfile changes applied, all services.
    pub profile_changes: Counter,
    /// Kubernetes API calls.
    pub api: ApiMetrics,
    /// Scale events, all services (for the exit summary).
    pub scale_events_total: Counter,
    /// Every change, by pattern and kind.
    pub events: Family<EventLabels, Counter>,
    /// Changes of each kind, all services (for the exit summary), indexed
    /// by [`ChangeKind`].
    kinds_total: [Counter; 4],
    /// How late scale events were dispatched after their scheduled time.
    dispatch_lag: Timings,
}

impl Metrics {
    /// Registers under `churn_`.
    pub fn register(registry: &mut Registry) -> Self {
        let reg = registry.sub_registry_with_prefix("churn");
        let m = Self {
            services_created: Counter::default(),
            scale_events: Family::default(),
            current_replicas: Family::default(),
            cycles_completed: Counter::default(),
            profile_changes: Counter::default(),
            api: ApiMetrics::register(reg),
            scale_events_total: Counter::default(),
            events: Family::default(),
            kinds_total: Default::default(),
            // 100 µs to ~6.5 s.
            dispatch_lag: Timings::new(Histogram::new(exponential_buckets(0.0001, 2.0, 17))),
        };
        reg.register(
            "services_created",
            "Services that did not exist and were created",
            m.services_created.clone(),
        );
        reg.register(
            "scale_events",
            "Scale changes applied, by pattern and service",
            m.scale_events.clone(),
        );
        reg.register(
            "events",
            "Changes applied (create, scale, restart, delete), by pattern and kind",
            m.events.clone(),
        );
        reg.register(
            "current_replicas",
            "Replicas last applied, by pattern and service",
            m.current_replicas.clone(),
        );
        reg.register(
            "cycles_completed",
            "Oscillation cycles completed, all services",
            m.cycles_completed.clone(),
        );
        reg.register(
            "profile_changes",
            "ServiceProfile changes applied (routes and retry ratio), all services",
            m.profile_changes.clone(),
        );
        reg.register_with_unit(
            "dispatch_lag",
            "How late scale events were dispatched after their scheduled time",
            Unit::Seconds,
            m.dispatch_lag.histogram(),
        );
        m
    }

    /// Counts one change applied to a service of `pattern`.
    pub fn changed(&self, pattern: Pattern, kind: ChangeKind) {
        self.events
            .get_or_create(&EventLabels {
                pattern: pattern.as_str(),
                kind: kind.as_str(),
            })
            .inc();
        self.kinds_total[kind as usize].inc();
    }

    /// Changes of `kind` applied so far, all services.
    pub fn changes(&self, kind: ChangeKind) -> u64 {
        self.kinds_total[kind as usize].get()
    }

    /// Records one scale event's dispatch lag.
    pub fn dispatched(&self, lag: Duration) {
        self.dispatch_lag.record(lag);
    }

    /// Percentiles of every dispatch lag so far.
    pub fn dispatch_lag_percentiles(&self) -> Percentiles {
        self.dispatch_lag.percentiles()
    }
}
