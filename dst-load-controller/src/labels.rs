//! Label and annotation keys shared by churn, cleanup and the client.

/// Marks every object churn creates; cleanup deletes only objects carrying it.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY`].
pub const MANAGER: &str = "dst-load-controller";
/// `stable`, `oscillate`, `restart`, `ephemeral` or `statefulset`.
pub const PATTERN: &str = "dst-load.linkerd.io/pattern";
/// Selects a service's pods.
pub const NAME: &str = "app.kubernetes.io/name";
/// When churn last changed a Deployment's replicas (RFC 3339, nanoseconds).
pub const SCALED_AT: &str = "dst-load.linkerd.io/scaled-at";
/// The endpoint count the change stamped in [`SCALED_AT`] leads to (0 for
/// a deleted service).
pub const REPLICAS: &str = "dst-load.linkerd.io/replicas";
/// The kind of the change stamped in [`SCALED_AT`]: `create`, `scale`,
/// `restart` or `delete`.
pub const CHANGE: &str = "dst-load.linkerd.io/change";
/// The Service a workload's pods back, when its name differs from the
/// workload's (a StatefulSet `sts-{i}` behind `sts-svc-{i}`).
pub const SERVICE: &str = "dst-load.linkerd.io/service";
/// The pod-template annotation a rolling restart bumps (RFC 3339).
pub const RESTARTED_AT: &str = "dst-load.linkerd.io/restarted-at";
/// The label that makes the destination controller treat a pod as meshed.
pub const CONTROL_PLANE_NS: &str = "linkerd.io/control-plane-ns";
/// The pod-template annotation that asks Linkerd's proxy injector to inject.
pub const INJECT: &str = "linkerd.io/inject";
/// The injector's label naming the pod's Deployment.
pub const PROXY_DEPLOYMENT: &str = "linkerd.io/proxy-deployment";
/// The injector's label naming the pod's StatefulSet.
pub const PROXY_STATEFULSET: &str = "linkerd.io/proxy-statefulset";
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

/// The service name prefixes churn uses, with their patterns' names.
const PATTERN_PREFIXES: [(&str, &str); 5] = [
    ("stable", "stable"),
    ("oscillate", "oscillate"),
    ("restart", "restart"),
    ("ephemeral", "ephemeral"),
    ("sts", "statefulset"),
];

/// The churn pattern of a watched authority, from churn's naming
/// (`{prefix}-svc-{i}.ns...`, or `{pod}.sts-svc-{i}.ns...` for a pod of a
/// StatefulSet); `other` for any other service.
pub fn pattern_of_authority(authority: &str) -> &'static str {
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    let mut parts = host.split('.');
    let first = parts.next().unwrap_or_default();
    let service = if first.contains("-svc-") {
        first
    } else {
        parts.next().unwrap_or_default()
    };
    service
        .rsplit_once("-svc-")
        .filter(|(_, i)| i.parse::<u32>().is_ok())
        .and_then(|(prefix, _)| PATTERN_PREFIXES.iter().find(|(p, _)| *p == prefix))
        .map_or("other", |(_, pattern)| pattern)
}
