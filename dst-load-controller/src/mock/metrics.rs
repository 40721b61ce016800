//! The mock server's metrics, under `mock_dst_`.

use std::time::SystemTime;

use prometheus_client::{
    metrics::{
        counter::Counter,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};

use crate::latency::{Percentiles, Timings};

/// Counters of one mock server.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Streams open.
    pub streams_active: Gauge,
    /// Updates sent.
    pub updates_sent: Counter,
    /// Endpoints listed in updates sent.
    pub endpoints_sent: Counter,
    /// Streams ended because their queue was full.
    pub queue_overflows: Counter,
    /// Changes made to destinations.
    pub changes: Counter,
    /// GetProfile streams open.
    pub profile_streams_active: Gauge,
    /// Profiles sent on GetProfile streams.
    pub profile_updates_sent: Counter,
    /// From a change to its update handed to a stream's transport.
    delivery_latency: Timings,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            streams_active: Gauge::default(),
            updates_sent: Counter::default(),
            endpoints_sent: Counter::default(),
            queue_overflows: Counter::default(),
            changes: Counter::default(),
            profile_streams_active: Gauge::default(),
            profile_updates_sent: Counter::default(),
            // The client's latency buckets: 1 ms to ~65 s.
            delivery_latency: Timings::new(Histogram::new(exponential_buckets(0.001, 2.0, 17))),
        }
    }
}

/// Decrements `streams_active` when dropped.
pub struct ActiveGuard(Gauge);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// Registers the metrics under `mock_dst_`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let reg = registry.sub_registry_with_prefix("mock_dst");
        reg.register(
            "streams_active",
            "Get streams open",
            m.streams_active.clone(),
        );
        reg.register(
            "updates_sent",
            "Updates sent on Get streams",
            m.updates_sent.clone(),
        );
        reg.register(
            "endpoints_sent",
            "Endpoints listed in updates sent",
            m.endpoints_sent.clone(),
        );
        reg.register(
            "queue_overflows",
            "Streams ended because their queue was full",
            m.queue_overflows.clone(),
        );
        reg.register("changes", "Changes made to destinations", m.changes.clone());
        reg.register(
            "profile_streams_active",
            "GetProfile streams open",
            m.profile_streams_active.clone(),
        );
        reg.register(
            "profile_updates_sent",
            "Profiles sent on GetProfile streams",
            m.profile_updates_sent.clone(),
        );
        reg.register_with_unit(
            "delivery_latency",
            "From a change to its update handed to a stream's transport, per stream",
            Unit::Seconds,
            m.delivery_latency.histogram(),
        );
        m
    }

    /// Percentiles of every delivery latency so far: what a client
    /// measuring change-to-update latency should report, less the transport.
    pub fn delivery_percentiles(&self) -> Percentiles {
        self.delivery_latency.percentiles()
    }

    pub(super) fn delivered(&self, changed_at: SystemTime) {
        self.delivery_latency.record(
            SystemTime::now()
                .duration_since(changed_at)
                .unwrap_or_default(),
        );
    }

    pub(super) fn stream_opened(&self) -> ActiveGuard {
        self.streams_active.inc();
        ActiveGuard(self.streams_active.clone())
    }

    pub(super) fn profile_stream_opened(&self) -> ActiveGuard {
        self.profile_streams_active.inc();
        ActiveGuard(self.profile_streams_active.clone())
    }

    pub(super) fn sent(&self, endpoints: u64) {
        self.updates_sent.inc();
        self.endpoints_sent.inc_by(endpoints);
    }

    pub(super) fn overflow(&self) {
        self.queue_overflows.inc();
    }
}
