//! Label and annotation keys shared by churn, cleanup and the client.

/// Marks every object churn creates; cleanup deletes only objects carrying it.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY`].
pub const MANAGER: &str = "dst-load-controller";
/// `stable` or `oscillate`.
pub const PATTERN: &str = "dst-load.linkerd.io/pattern";
/// Selects a service's pods.
pub const NAME: &str = "app.kubernetes.io/name";
/// When churn last changed a Deployment's replicas (RFC 3339, nanoseconds).
pub const SCALED_AT: &str = "dst-load.linkerd.io/scaled-at";
/// The replica count written together with [`SCALED_AT`].
pub const REPLICAS: &str = "dst-load.linkerd.io/replicas";
/// The label that makes the destination controller treat a pod as meshed.
pub const CONTROL_PLANE_NS: &str = "linkerd.io/control-plane-ns";
/// The field manager for every server-side apply churn makes.
pub const FIELD_MANAGER: &str = "dst-load-controller";

/// The label selector matching everything churn owns.
pub fn owned_selector() -> String {
    format!("{MANAGED_BY}={MANAGER}")
}
