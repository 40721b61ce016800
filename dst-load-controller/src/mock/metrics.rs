//! The mock server's metrics, under `mock_dst_`.

use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};

/// Counters of one mock server.
#[derive(Clone, Debug, Default)]
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
        m
    }

    pub(super) fn stream_opened(&self) -> ActiveGuard {
        self.streams_active.inc();
        ActiveGuard(self.streams_active.clone())
    }

    pub(super) fn sent(&self, endpoints: u64) {
        self.updates_sent.inc();
        self.endpoints_sent.inc_by(endpoints);
    }

    pub(super) fn overflow(&self) {
        self.queue_overflows.inc();
    }
}
