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
/// The pod-template annotation that asks Linkerd's proxy injector to inject.
pub const INJECT: &str = "linkerd.io/inject";
/// The injector's label naming the pod's Deployment.
pub const PROXY_DEPLOYMENT: &str = "linkerd.io/proxy-deployment";
/// The injector's label naming the pod's namespace.
pub const WORKLOAD_NS: &str = "linkerd.io/workload-ns";
/// The injector's annotation naming what injected the pod.
pub const CREATED_BY: &str = "linkerd.io/created-by";
/// The injector's annotation with the proxy's version.
pub const PROXY_VERSION: &str = "linkerd.io/proxy-version";
/// The injector's annotation with the identity mode.
pub const IDENTITY_MODE: &str = "linkerd.io/identity-mode";
/// Linkerd multicluster's export label (`true` = gateway mirroring,
/// `remote-discovery` = remote discovery, as `link-gen`'s default selectors).
pub const EXPORTED: &str = "mirror.linkerd.io/exported";
/// Linkerd multicluster's federated-service membership label (`member`).
pub const FEDERATED: &str = "mirror.linkerd.io/federated";
/// The field manager for every server-side apply churn makes.
pub const FIELD_MANAGER: &str = "dst-load-controller";

/// The label selector matching everything churn owns.
pub fn owned_selector() -> String {
    format!("{MANAGED_BY}={MANAGER}")
}
