//! The `service`, `pattern` and `class` labels of the client's metrics.

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

/// `{service, pattern, class}`: a service's streams of one class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabel {
    /// The authority watched.
    pub service: String,
    /// Its churn pattern (see [`ServiceLabel`]).
    pub pattern: &'static str,
    /// How its streams read: `healthy`, `slow`, `stuck`.
    pub class: &'static str,
}

impl StreamLabel {
    /// The labels of `service`'s streams of `class`.
    pub fn new(service: &str, class: super::faults::Class) -> Self {
        Self {
            service: service.to_string(),
            pattern: crate::labels::pattern_of_authority(service),
            class: class.as_str(),
        }
    }
}
