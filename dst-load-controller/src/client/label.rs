//! The `service` and `pattern` labels of the client's per-service metrics.

use prometheus_client::encoding::EncodeLabelSet;

/// `{service, pattern}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabel {
    /// The authority watched.
    pub service: String,
    /// Its churn pattern (`stable`, `oscillate`, `restart`, `ephemeral`,
    /// `statefulset`), from churn's naming; `other` for any other service.
    pub pattern: &'static str,
}

impl ServiceLabel {
    /// The labels of `service`.
    pub fn new(service: &str) -> Self {
        Self {
            service: service.to_string(),
            pattern: crate::labels::pattern_of_authority(service),
        }
    }
}
