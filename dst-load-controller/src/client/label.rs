//! The `service` label of the client's per-service metrics.

use prometheus_client::encoding::EncodeLabelSet;

/// `{service}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabel {
    /// The authority watched.
    pub service: String,
}
