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
    Pattern::of_service(service).map_or("other", Pattern::as_str)
}

/// Which churn pattern a service follows.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pattern {
    /// Fixed size.
    Stable,
    /// Scales between min and max.
    Oscillate,
    /// Rolled every interval: every address replaced, the count kept.
    Restart,
    /// Created, deleted after its lifetime, created again after a gap.
    Ephemeral,
    /// A headless Service in front of a StatefulSet (stable pod hostnames).
    StatefulSet,
}

impl Pattern {
    /// Every pattern, in the order churn creates them.
    pub const ALL: [Pattern; 5] = [
        Pattern::Stable,
        Pattern::Oscillate,
        Pattern::Restart,
        Pattern::Ephemeral,
        Pattern::StatefulSet,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Pattern::Stable => "stable",
            Pattern::Oscillate => "oscillate",
            Pattern::Restart => "restart",
            Pattern::Ephemeral => "ephemeral",
            Pattern::StatefulSet => "statefulset",
        }
    }

    /// The Service name prefix.
    fn prefix(self) -> &'static str {
        match self {
            Pattern::StatefulSet => "sts",
            p => p.as_str(),
        }
    }

    /// The name of service `i`: `stable-svc-3`, `oscillate-svc-0`, `sts-svc-1`.
    pub fn service_name(self, i: u32) -> String {
        format!("{}-svc-{i}", self.prefix())
    }

    /// The name of service `i`'s workload: the service's name, except
    /// StatefulSets (`sts-{i}`).
    pub fn workload_name(self, i: u32) -> String {
        match self {
            Pattern::StatefulSet => format!("sts-{i}"),
            p => p.service_name(i),
        }
    }

    /// The pattern of a Service churn names (`None` for any other name).
    pub fn of_service(name: &str) -> Option<Pattern> {
        let (prefix, index) = name.rsplit_once("-svc-")?;
        index.parse::<u32>().ok()?;
        Pattern::ALL.into_iter().find(|p| p.prefix() == prefix)
    }
}

/// A valid DNS label (a namespace's or a link's name).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}
