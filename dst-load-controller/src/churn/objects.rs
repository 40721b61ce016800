//! The Kubernetes objects churn creates, built without I/O.

use std::{collections::BTreeMap, str::FromStr};

use k8s_openapi::{
    api::{
        apps::v1::{
            Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment, StatefulSet,
            StatefulSetSpec,
        },
        core::v1::{
            Container, ContainerPort, EnvVar, Namespace, PodSpec, PodTemplateSpec, Service,
            ServicePort, ServiceSpec, Toleration,
        },
    },
    apimachinery::pkg::{
        apis::meta::v1::LabelSelector, apis::meta::v1::ObjectMeta, util::intstr::IntOrString,
    },
};

pub use crate::crds::ProxyProtocol;
use crate::{
    crds::{RequestMatch, RouteSpec, Server, ServerSpec, ServiceProfile, ServiceProfileSpec},
    labels,
};

pub use crate::labels::Pattern;

/// What a change did, recorded in [`labels::CHANGE`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangeKind {
    /// The service and its workload were created.
    Create,
    /// The replica count changed.
    Scale,
    /// Every pod was replaced (a rolling restart).
    Restart,
    /// The service and its workload were deleted.
    Delete,
}

impl ChangeKind {
    /// The annotation value.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Create => "create",
            ChangeKind::Scale => "scale",
            ChangeKind::Restart => "restart",
            ChangeKind::Delete => "delete",
        }
    }

    /// Parses an annotation value.
    pub fn parse(s: &str) -> Option<Self> {
        [
            ChangeKind::Create,
            ChangeKind::Scale,
            ChangeKind::Restart,
            ChangeKind::Delete,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A change's stamp on the workload it changes: when, to how many
/// endpoints, and what kind of change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// RFC 3339 with nanoseconds ([`timestamp`]).
    pub at: String,
    /// The endpoint count the change leads to.
    pub replicas: u32,
    /// What changed.
    pub kind: ChangeKind,
    /// The pod template's [`labels::RESTARTED_AT`] (kept on every apply so
    /// a later apply does not undo a restart).
    pub restarted_at: Option<String>,
}

impl Stamp {
    /// A scale (or a first apply) to `replicas` at `at`.
    pub fn scale(replicas: u32, at: &str) -> Self {
        Self {
            at: at.to_string(),
            replicas,
            kind: ChangeKind::Scale,
            restarted_at: None,
        }
    }

    fn annotations(&self, service: Option<&str>) -> BTreeMap<String, String> {
        let mut a = BTreeMap::from([
            (labels::SCALED_AT.to_string(), self.at.clone()),
            (labels::REPLICAS.to_string(), self.replicas.to_string()),
            (labels::CHANGE.to_string(), self.kind.as_str().to_string()),
        ]);
        if let Some(s) = service {
            a.insert(labels::SERVICE.to_string(), s.to_string());
        }
        a
    }
}

/// How a Deployment rolls: `maxSurge` and `maxUnavailable` (a count or a
/// percentage, as Kubernetes takes them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rollout {
    /// Pods above the desired count during a roll.
    pub max_surge: IntOrString,
    /// Pods below the desired count during a roll.
    pub max_unavailable: IntOrString,
}

impl Default for Rollout {
    /// Kubernetes' defaults (25% each).
    fn default() -> Self {
        Self {
            max_surge: IntOrString::String("25%".into()),
            max_unavailable: IntOrString::String("25%".into()),
        }
    }
}

/// Not an int-or-percent a rollout takes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IntOrPercentError {
    /// Neither a count nor a percentage.
    #[error("'{0}' is not a count or a percentage (e.g. 1 or 25%)")]
    Neither(String),
    /// A percentage past 100.
    #[error("'{0}': a percentage is at most 100%")]
    Percent(String),
}

/// Parses `N` or `N%` as Kubernetes' int-or-percent.
pub fn parse_int_or_percent(s: &str) -> Result<IntOrString, IntOrPercentError> {
    let bad = || IntOrPercentError::Neither(s.to_string());
    match s.strip_suffix('%') {
        Some(p) => {
            let n: u32 = p.parse().map_err(|_| bad())?;
            if n > 100 {
                return Err(IntOrPercentError::Percent(s.to_string()));
            }
            Ok(IntOrString::String(s.to_string()))
        }
        None => {
            let n: i32 = s.parse().map_err(|_| bad())?;
            if n < 0 {
                return Err(bad());
            }
            Ok(IntOrString::Int(n))
        }
    }
}

/// `key=value[,key=value...]`: where pods are scheduled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeSelector(pub BTreeMap<String, String>);

/// A node selector term that is no `key=value`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid node selector '{0}'; expected key=value, e.g. type=kwok")]
pub struct NodeSelectorError(pub String);

impl FromStr for NodeSelector {
    type Err = NodeSelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut map = BTreeMap::new();
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| NodeSelectorError(pair.to_string()))?;
            map.insert(k.to_string(), v.to_string());
        }
        Ok(Self(map))
    }
}

/// `key[=value]:Effect`: a toleration the pods carry.
#[derive(Clone, Debug, PartialEq)]
pub struct TolerationSpec(pub Toleration);

/// A toleration that is no `key[=value]:Effect`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TolerationError {
    /// Not of the form.
    #[error(
        "invalid toleration '{0}'; expected key[=value]:Effect, e.g. kwok.x-k8s.io/node=fake:NoSchedule"
    )]
    Form(String),
    /// An effect Kubernetes has not.
    #[error(
        "invalid toleration '{0}'; expected key[=value]:Effect, e.g. kwok.x-k8s.io/node=fake:NoSchedule; the effect must be NoSchedule, PreferNoSchedule or NoExecute"
    )]
    Effect(String),
}

impl FromStr for TolerationSpec {
    type Err = TolerationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || TolerationError::Form(s.to_string());
        let (kv, effect) = s.rsplit_once(':').ok_or_else(err)?;
        if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            return Err(TolerationError::Effect(s.to_string()));
        }
        let (key, value, operator) = match kv.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string()), "Equal"),
            None => (kv, None, "Exists"),
        };
        if key.is_empty() {
            return Err(err());
        }
        Ok(Self(Toleration {
            key: Some(key.to_string()),
            operator: Some(operator.to_string()),
            value,
            effect: Some(effect.to_string()),
            ..Default::default()
        }))
    }
}

/// How churn's pods come to look meshed to Linkerd's destination controller.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum ProxyInjection {
    /// Churn writes the pod shape Linkerd's proxy injector produces: the
    /// `linkerd-proxy` container with its listen-address env vars and ports,
    /// and the injector's labels and annotations. Needs no injector webhook.
    #[default]
    Synthetic,
    /// Churn annotates the pod template with `linkerd.io/inject: enabled` and
    /// leaves the rest to the cluster's proxy injector webhook.
    Webhook,
}

/// How churn's Services are offered to Linkerd multicluster's service mirror
/// in other clusters (the label a `Link`'s default selectors match).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Export {
    /// Not exported.
    #[default]
    None,
    /// `mirror.linkerd.io/exported=remote-discovery`: a linked cluster mirrors
    /// the Service and its destination controller reads the endpoints from
    /// this cluster's API server (no gateway in the data path).
    RemoteDiscovery,
    /// `mirror.linkerd.io/federated=member`: the Service joins the federated
    /// Service `{name}-federated` in linked clusters.
    Federated,
    /// `mirror.linkerd.io/exported=true`: a gateway-mode link mirrors the
    /// Service with this cluster's gateway as its endpoints (a headless one,
    /// when the service mirror runs with `-enable-headless-services`, as
    /// one mirror `{pod}-{link}` per pod).
    Gateway,
}

impl Export {
    /// The label that exports a Service this way, if any.
    pub fn label(self) -> Option<(&'static str, &'static str)> {
        match self {
            Self::None => None,
            Self::RemoteDiscovery => Some((labels::EXPORTED, "remote-discovery")),
            Self::Federated => Some((labels::FEDERATED, "member")),
            Self::Gateway => Some((labels::EXPORTED, "true")),
        }
    }
}

/// The proxy's ports, as Linkerd's chart defaults them.
pub mod proxy_ports {
    /// Inbound (`linkerd-proxy`).
    pub const INBOUND: u16 = 4143;
    /// Admin (`linkerd-admin`).
    pub const ADMIN: u16 = 4191;
    /// Control (tap).
    pub const CONTROL: u16 = 4190;
    /// Outbound (loopback only).
    pub const OUTBOUND: u16 = 4140;
}

/// What churn's ServiceProfiles show after some changes: every change
/// moves both the routes (a route added, then removed) and the retry ratio
/// (the controller's default 0.2, then 0.25, and back), so that a stream
/// showing either has seen the change.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProfileShape {
    /// Routes.
    pub routes: u32,
    /// The retry budget's ratio.
    pub retry_ratio: f64,
}

impl ProfileShape {
    /// After `changes` changes of a profile first made with `routes` routes.
    pub fn after(routes: u32, changes: u64) -> Self {
        let odd = changes % 2 == 1;
        Self {
            routes: routes + u32::from(odd),
            retry_ratio: if odd { 0.25 } else { 0.2 },
        }
    }
}

/// Everything that shapes a service's objects.
#[derive(Clone, Debug)]
pub struct ServiceTemplate {
    /// The namespace.
    pub namespace: String,
    /// The Service port (named `http`) and container port.
    pub port: u16,
    /// The container image (never pulled on KWOK nodes).
    pub image: String,
    /// The Linkerd control plane namespace the pods are meshed into; `None`
    /// leaves pods unmeshed.
    pub control_plane_ns: Option<String>,
    /// How meshed pods get their proxy (ignored when unmeshed).
    pub injection: ProxyInjection,
    /// The multicluster export label on Services.
    pub export: Export,
    /// `linkerd.io/proxy-version` on synthetically injected pods.
    pub proxy_version: String,
    /// Node selector for KWOK placement.
    pub node_selector: NodeSelector,
    /// Tolerations for KWOK placement.
    pub tolerations: Vec<Toleration>,
}

fn owned_labels(pattern: Pattern) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
        (labels::PATTERN.to_string(), pattern.as_str().to_string()),
    ])
}

fn selector(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(labels::NAME.to_string(), name.to_string())])
}

/// The namespace, labelled as churn's (only used when churn creates it).
pub fn namespace(name: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([(
                labels::MANAGED_BY.to_string(),
                labels::MANAGER.to_string(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    }
}

impl ServiceTemplate {
    /// The flags' defaults in `namespace`: pods on KWOK nodes (`type=kwok`,
    /// tolerating KWOK's taint), meshed into `linkerd` with the synthetic
    /// injected shape, port 8080, not exported.
    pub fn kwok(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            port: 8080,
            image: "registry.k8s.io/pause:3.10".to_string(),
            control_plane_ns: Some("linkerd".to_string()),
            injection: ProxyInjection::Synthetic,
            export: Export::None,
            proxy_version: "edge-26.8.3".to_string(),
            node_selector: "type=kwok".parse().expect("valid node selector"),
            tolerations: vec![
                "kwok.x-k8s.io/node=fake:NoSchedule"
                    .parse::<TolerationSpec>()
                    .expect("valid toleration")
                    .0,
            ],
        }
    }

    /// The ClusterIP Service for `name`.
    pub fn service(&self, name: &str, pattern: Pattern) -> Service {
        let mut l = owned_labels(pattern);
        l.extend(selector(name));
        if let Some((k, v)) = self.export.label() {
            l.insert(k.to_string(), v.to_string());
        }
        Service {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(self.namespace.clone()),
                labels: Some(l),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".to_string()),
                // StatefulSet pods get their DNS names (and EndpointSlice
                // hostnames) through a headless Service.
                cluster_ip: (pattern == Pattern::StatefulSet).then(|| "None".to_string()),
                selector: Some(selector(name)),
                ports: Some(vec![ServicePort {
                    name: Some("http".to_string()),
                    port: self.port.into(),
                    target_port: Some(IntOrString::String("http".to_string())),
                    protocol: Some("TCP".to_string()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The Deployment for `name`, stamped with the change that shaped it.
    pub fn deployment(&self, name: &str, pattern: Pattern, stamp: &Stamp) -> Deployment {
        self.deployment_rolling(name, pattern, stamp, None)
    }

    /// [`ServiceTemplate::deployment`] with a rolling-update strategy.
    pub fn deployment_rolling(
        &self,
        name: &str,
        pattern: Pattern,
        stamp: &Stamp,
        rollout: Option<&Rollout>,
    ) -> Deployment {
        let mut l = owned_labels(pattern);
        l.extend(selector(name));
        Deployment {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(self.namespace.clone()),
                labels: Some(l),
                annotations: Some(stamp.annotations(None)),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(stamp.replicas as i32),
                selector: LabelSelector {
                    match_labels: Some(selector(name)),
                    ..Default::default()
                },
                strategy: rollout.map(|r| DeploymentStrategy {
                    type_: Some("RollingUpdate".to_string()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(r.max_surge.clone()),
                        max_unavailable: Some(r.max_unavailable.clone()),
                    }),
                }),
                template: self.pod_template(name, name, pattern, stamp, labels::PROXY_DEPLOYMENT),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Server `name`: the `http` port of `service`'s pods, with `protocol`.
    /// Labelled as churn's, not as any pattern's: cleanup deletes it.
    pub fn server(&self, name: &str, service: &str, protocol: ProxyProtocol) -> Server {
        let mut server = Server::new(
            name,
            ServerSpec {
                pod_selector: LabelSelector {
                    match_labels: Some(selector(service)),
                    ..Default::default()
                },
                port: IntOrString::String("http".to_string()),
                proxy_protocol: Some(protocol),
            },
        );
        server.metadata.namespace = Some(self.namespace.clone());
        server.metadata.labels = Some(BTreeMap::from([(
            labels::MANAGED_BY.to_string(),
            labels::MANAGER.to_string(),
        )]));
        server
    }

    /// The name of `service`'s ServiceProfile: its FQDN.
    pub fn profile_name(&self, service: &str, domain: &str) -> String {
        format!("{service}.{}.svc.{domain}", self.namespace)
    }

    /// The ServiceProfile of `service` (`{service}.{namespace}.svc.{domain}`)
    /// shaped as `shape`: its routes `route-K`, GET `/api/route-K/[^/]*`,
    /// retryable, 1 s timeout (as `mock-dst --profile-routes` serves them),
    /// and its retry budget; stamped with the change that shaped it at `at`.
    pub fn service_profile(
        &self,
        service: &str,
        shape: ProfileShape,
        domain: &str,
        at: &str,
    ) -> ServiceProfile {
        let routes = shape.routes;
        let mut sp = ServiceProfile::new(
            &self.profile_name(service, domain),
            ServiceProfileSpec {
                retry_budget: Some(crate::crds::RetryBudget {
                    retry_ratio: shape.retry_ratio,
                    min_retries_per_second: 10,
                    ttl: "10s".to_string(),
                }),
                routes: (0..routes)
                    .map(|k| RouteSpec {
                        name: format!("route-{k}"),
                        condition: RequestMatch {
                            method: Some("GET".to_string()),
                            path_regex: Some(format!("/api/route-{k}/[^/]*")),
                        },
                        is_retryable: true,
                        timeout: Some("1s".to_string()),
                    })
                    .collect(),
            },
        );
        sp.metadata.namespace = Some(self.namespace.clone());
        sp.metadata.labels = Some(BTreeMap::from([
            (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
            (labels::NAME.to_string(), service.to_string()),
        ]));
        sp.metadata.annotations = Some(BTreeMap::from([
            (labels::PROFILE_CHANGED_AT.to_string(), at.to_string()),
            (labels::ROUTES.to_string(), routes.to_string()),
        ]));
        sp
    }

    /// StatefulSet `sts-{i}` behind the headless Service `sts-svc-{i}`: its
    /// pods are `sts-{i}-{k}`, with that hostname in the EndpointSlices.
    /// Pods start and stop in parallel, as churn scales them all at once.
    pub fn statefulset(&self, i: u32, stamp: &Stamp) -> StatefulSet {
        let pattern = Pattern::StatefulSet;
        let (name, service) = (pattern.workload_name(i), pattern.service_name(i));
        let mut l = owned_labels(pattern);
        l.extend(selector(&service));
        StatefulSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(l),
                annotations: Some(stamp.annotations(Some(&service))),
                ..Default::default()
            },
            spec: Some(StatefulSetSpec {
                replicas: Some(stamp.replicas as i32),
                service_name: Some(service.clone()),
                pod_management_policy: Some("Parallel".to_string()),
                selector: LabelSelector {
                    match_labels: Some(selector(&service)),
                    ..Default::default()
                },
                template: self.pod_template(
                    &name,
                    &service,
                    pattern,
                    stamp,
                    labels::PROXY_STATEFULSET,
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The pods of `workload`, selected by `service`; `owner_label` is the
    /// injector's label naming the workload.
    fn pod_template(
        &self,
        workload: &str,
        service: &str,
        pattern: Pattern,
        stamp: &Stamp,
        owner_label: &str,
    ) -> PodTemplateSpec {
        let mut pod_labels = owned_labels(pattern);
        pod_labels.extend(selector(service));
        let mut pod_annotations = BTreeMap::new();
        if let Some(at) = &stamp.restarted_at {
            pod_annotations.insert(labels::RESTARTED_AT.to_string(), at.clone());
        }
        let mut containers = vec![Container {
            name: "app".to_string(),
            image: Some(self.image.clone()),
            ports: Some(vec![container_port("http", self.port)]),
            ..Default::default()
        }];
        match (&self.control_plane_ns, self.injection) {
            (None, _) => {}
            (Some(_), ProxyInjection::Webhook) => {
                pod_annotations.insert(labels::INJECT.to_string(), "enabled".to_string());
            }
            (Some(cp), ProxyInjection::Synthetic) => {
                pod_labels.insert(labels::CONTROL_PLANE_NS.to_string(), cp.clone());
                pod_labels.insert(owner_label.to_string(), workload.to_string());
                pod_labels.insert(labels::WORKLOAD_NS.to_string(), self.namespace.clone());
                pod_annotations.insert(
                    labels::CREATED_BY.to_string(),
                    format!("{} {}", labels::MANAGER, env!("CARGO_PKG_VERSION")),
                );
                pod_annotations.insert(
                    labels::PROXY_VERSION.to_string(),
                    self.proxy_version.clone(),
                );
                pod_annotations.insert(labels::IDENTITY_MODE.to_string(), "default".to_string());
                containers.insert(0, self.proxy_container());
            }
        }
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(pod_labels),
                annotations: (!pod_annotations.is_empty()).then_some(pod_annotations),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                node_selector: (!self.node_selector.0.is_empty())
                    .then(|| self.node_selector.0.clone()),
                tolerations: (!self.tolerations.is_empty()).then(|| self.tolerations.clone()),
                // Fake pods: nothing to drain, so deletions are immediate.
                termination_grace_period_seconds: Some(0),
                automount_service_account_token: Some(false),
                containers,
                ..Default::default()
            }),
        }
    }
}

impl ServiceTemplate {
    /// The `linkerd-proxy` container as the injector writes it, as far as the
    /// destination controller reads it: the listen addresses in its env (it
    /// drops a meshed pod's endpoints without the admin and control ones) and
    /// the named inbound and admin ports. KWOK never runs it.
    fn proxy_container(&self) -> Container {
        let env = |name: &str, value: String| EnvVar {
            name: name.to_string(),
            value: Some(value),
            ..Default::default()
        };
        Container {
            name: "linkerd-proxy".to_string(),
            image: Some(format!("cr.l5d.io/linkerd/proxy:{}", self.proxy_version)),
            env: Some(vec![
                env(
                    "LINKERD2_PROXY_CONTROL_LISTEN_ADDR",
                    format!("0.0.0.0:{}", proxy_ports::CONTROL),
                ),
                env(
                    "LINKERD2_PROXY_ADMIN_LISTEN_ADDR",
                    format!("0.0.0.0:{}", proxy_ports::ADMIN),
                ),
                env(
                    "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR",
                    format!("127.0.0.1:{}", proxy_ports::OUTBOUND),
                ),
                env(
                    "LINKERD2_PROXY_INBOUND_LISTEN_ADDR",
                    format!("0.0.0.0:{}", proxy_ports::INBOUND),
                ),
            ]),
            ports: Some(vec![
                container_port("linkerd-proxy", proxy_ports::INBOUND),
                container_port("linkerd-admin", proxy_ports::ADMIN),
            ]),
            ..Default::default()
        }
    }
}

fn container_port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: port.into(),
        protocol: Some("TCP".to_string()),
        ..Default::default()
    }
}

/// An RFC 3339 timestamp with nanoseconds, as written to `scaled-at`.
pub fn timestamp(t: jiff::Timestamp) -> String {
    format!("{t:.9}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_template() -> ServiceTemplate {
        ServiceTemplate {
            namespace: "dst-load-test".into(),
            port: 8080,
            image: "registry.k8s.io/pause:3.10".into(),
            control_plane_ns: Some("linkerd".into()),
            injection: ProxyInjection::Synthetic,
            export: Export::None,
            proxy_version: "edge-26.8.3".into(),
            node_selector: "type=kwok".parse().unwrap(),
            tolerations: vec![
                "kwok.x-k8s.io/node=fake:NoSchedule"
                    .parse::<TolerationSpec>()
                    .unwrap()
                    .0,
            ],
        }
    }

    #[test]
    fn a_server_selects_its_services_pods_on_their_http_port_as_linkerd_spells_it() {
        let t = mk_template();
        let server = t.server("srv-3", "stable-svc-1", ProxyProtocol::Opaque);
        let json = serde_json::to_value(&server).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "apiVersion": "policy.linkerd.io/v1beta3",
                "kind": "Server",
                "metadata": {
                    "name": "srv-3",
                    "namespace": "dst-load-test",
                    "labels": {labels::MANAGED_BY: labels::MANAGER},
                },
                "spec": {
                    "podSelector": {"matchLabels": {labels::NAME: "stable-svc-1"}},
                    "port": "http",
                    "proxyProtocol": "opaque",
                },
            })
        );
        // The port it names is the app container's.
        let deploy = t.deployment("stable-svc-1", Pattern::Stable, &Stamp::scale(1, "t"));
        let pod = deploy.spec.unwrap().template;
        assert_eq!(
            pod.metadata.unwrap().labels.unwrap()[labels::NAME],
            "stable-svc-1"
        );
        let app = &pod.spec.unwrap().containers[1];
        assert_eq!(app.ports.as_ref().unwrap()[0].name.as_deref(), Some("http"));
    }

    #[test]
    fn a_service_profile_is_named_after_the_services_fqdn_with_its_routes_stamped() {
        let t = mk_template();
        let sp = t.service_profile(
            "stable-svc-0",
            ProfileShape::after(2, 0),
            "cluster.local",
            "2026-12-06T00:00:00Z",
        );
        let json = serde_json::to_value(&sp).unwrap();
        assert_eq!(json["apiVersion"], "linkerd.io/v1alpha2");
        assert_eq!(
            json["metadata"]["name"],
            "stable-svc-0.dst-load-test.svc.cluster.local"
        );
        assert_eq!(json["metadata"]["labels"][labels::NAME], "stable-svc-0");
        assert_eq!(json["metadata"]["annotations"][labels::ROUTES], "2");
        assert_eq!(
            json["spec"]["routes"][1],
            serde_json::json!({
                "name": "route-1",
                "condition": {"method": "GET", "pathRegex": "/api/route-1/[^/]*"},
                "isRetryable": true,
                "timeout": "1s",
            })
        );
        assert_eq!(
            json["spec"]["retryBudget"],
            serde_json::json!({"retryRatio": 0.2, "minRetriesPerSecond": 10, "ttl": "10s"})
        );
        let changed = t.service_profile("s", ProfileShape::after(2, 1), "cluster.local", "t");
        assert_eq!(changed.spec.routes.len(), 3);
        assert_eq!(
            changed.spec.retry_budget.as_ref().unwrap().retry_ratio,
            0.25
        );
        assert_eq!(
            serde_json::to_value(&changed).unwrap()["spec"]["retryBudget"]["retryRatio"],
            0.25
        );
        assert_eq!(ProfileShape::after(2, 2), ProfileShape::after(2, 0));
        assert!(
            t.service_profile("s", ProfileShape::after(0, 0), "cluster.local", "t")
                .spec
                .routes
                .is_empty()
        );
    }

    #[test]
    fn export_labels_match_link_gen_default_selectors() {
        let mut t = mk_template();
        let unexported = t.service("s", Pattern::Stable).metadata.labels.unwrap();
        assert!(!unexported.contains_key(labels::EXPORTED));
        assert!(!unexported.contains_key(labels::FEDERATED));
        for (export, key, value) in [
            (
                Export::RemoteDiscovery,
                "mirror.linkerd.io/exported",
                "remote-discovery",
            ),
            (Export::Federated, "mirror.linkerd.io/federated", "member"),
            (Export::Gateway, "mirror.linkerd.io/exported", "true"),
        ] {
            t.export = export;
            let l = t.service("s", Pattern::Oscillate).metadata.labels.unwrap();
            assert_eq!(l.get(key).map(String::as_str), Some(value), "{export:?}");
            assert_eq!(
                l.len(),
                unexported.len() + 1,
                "{export:?}: only the export label added"
            );
            // Pods are never labelled for export.
            let d = t.deployment("s", Pattern::Oscillate, &Stamp::scale(1, "t"));
            let pod = d.spec.unwrap().template.metadata.unwrap().labels.unwrap();
            assert!(!pod.contains_key(key));
        }
    }

    #[test]
    fn service_has_owner_labels_selector_and_named_port() {
        let svc = mk_template().service("stable-svc-0", Pattern::Stable);
        let l = svc.metadata.labels.unwrap();
        assert_eq!(l[labels::MANAGED_BY], "dst-load-controller");
        assert_eq!(l[labels::PATTERN], "stable");
        let spec = svc.spec.unwrap();
        assert_eq!(
            spec.selector.unwrap(),
            BTreeMap::from([(labels::NAME.to_string(), "stable-svc-0".to_string())])
        );
        let port = &spec.ports.unwrap()[0];
        assert_eq!((port.name.as_deref(), port.port), (Some("http"), 8080));
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    }

    #[test]
    fn deployment_places_meshed_pods_on_kwok_nodes() {
        let d = mk_template().deployment(
            "oscillate-svc-1",
            Pattern::Oscillate,
            &Stamp::scale(7, "2026-11-21T00:00:00.000000001Z"),
        );
        let ann = d.metadata.annotations.unwrap();
        assert_eq!(ann[labels::SCALED_AT], "2026-11-21T00:00:00.000000001Z");
        assert_eq!(ann[labels::REPLICAS], "7");
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(7));
        let pod_labels = spec.template.metadata.unwrap().labels.unwrap();
        assert_eq!(pod_labels[labels::CONTROL_PLANE_NS], "linkerd");
        assert_eq!(pod_labels[labels::NAME], "oscillate-svc-1");
        assert_eq!(pod_labels[labels::MANAGED_BY], "dst-load-controller");
        // The selector must match the template, or the apiserver refuses it.
        for (k, v) in spec.selector.match_labels.unwrap() {
            assert_eq!(pod_labels[&k], v);
        }
        let pod = spec.template.spec.unwrap();
        assert_eq!(
            pod.node_selector.unwrap(),
            BTreeMap::from([("type".to_string(), "kwok".to_string())])
        );
        let t = &pod.tolerations.unwrap()[0];
        assert_eq!(
            (
                t.key.as_deref(),
                t.operator.as_deref(),
                t.value.as_deref(),
                t.effect.as_deref()
            ),
            (
                Some("kwok.x-k8s.io/node"),
                Some("Equal"),
                Some("fake"),
                Some("NoSchedule")
            )
        );
        let app = pod.containers.iter().find(|c| c.name == "app").unwrap();
        assert_eq!(app.ports.as_ref().unwrap()[0].name.as_deref(), Some("http"));
    }

    #[test]
    fn synthetic_injection_gives_pods_the_injected_proxy_shape() {
        let d = mk_template().deployment("stable-svc-0", Pattern::Stable, &Stamp::scale(1, "t"));
        let tmpl = d.spec.unwrap().template;
        let meta = tmpl.metadata.unwrap();
        let l = meta.labels.unwrap();
        assert_eq!(l[labels::PROXY_DEPLOYMENT], "stable-svc-0");
        assert_eq!(l[labels::WORKLOAD_NS], "dst-load-test");
        let a = meta.annotations.unwrap();
        assert_eq!(a[labels::PROXY_VERSION], "edge-26.8.3");
        assert_eq!(a[labels::IDENTITY_MODE], "default");
        assert!(!a.contains_key(labels::INJECT));
        let pod = tmpl.spec.unwrap();
        let proxy = pod
            .containers
            .iter()
            .find(|c| c.name == "linkerd-proxy")
            .expect("a linkerd-proxy container");
        let env: BTreeMap<_, _> = proxy
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e.value.as_deref().unwrap()))
            .collect();
        assert_eq!(env["LINKERD2_PROXY_ADMIN_LISTEN_ADDR"], "0.0.0.0:4191");
        assert_eq!(env["LINKERD2_PROXY_CONTROL_LISTEN_ADDR"], "0.0.0.0:4190");
        assert_eq!(env["LINKERD2_PROXY_INBOUND_LISTEN_ADDR"], "0.0.0.0:4143");
        let ports: Vec<_> = proxy
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.as_deref().unwrap(), p.container_port))
            .collect();
        assert_eq!(ports, [("linkerd-proxy", 4143), ("linkerd-admin", 4191)]);
    }

    #[test]
    fn webhook_injection_only_asks_the_injector() {
        let mut t = mk_template();
        t.injection = ProxyInjection::Webhook;
        let tmpl = t
            .deployment("x", Pattern::Stable, &Stamp::scale(1, "t"))
            .spec
            .unwrap()
            .template;
        let meta = tmpl.metadata.unwrap();
        assert_eq!(meta.annotations.unwrap()[labels::INJECT], "enabled");
        assert!(!meta.labels.unwrap().contains_key(labels::CONTROL_PLANE_NS));
        let names: Vec<_> = tmpl
            .spec
            .unwrap()
            .containers
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["app"]);
    }

    #[test]
    fn unmeshed_pods_have_no_control_plane_label() {
        let mut t = mk_template();
        t.control_plane_ns = None;
        let d = t.deployment("x", Pattern::Stable, &Stamp::scale(1, "t"));
        let tmpl = d.spec.unwrap().template;
        let pod_labels = tmpl.metadata.unwrap().labels.unwrap();
        assert!(!pod_labels.contains_key(labels::CONTROL_PLANE_NS));
        assert_eq!(tmpl.spec.unwrap().containers.len(), 1);
    }

    #[test]
    fn parses_placement_flags() {
        assert!("type".parse::<NodeSelector>().is_err());
        assert_eq!("a=b, c=d".parse::<NodeSelector>().unwrap().0.len(), 2);
        let exists = "node.kubernetes.io/x:NoExecute"
            .parse::<TolerationSpec>()
            .unwrap()
            .0;
        assert_eq!(exists.operator.as_deref(), Some("Exists"));
        assert!("k=v:Sometimes".parse::<TolerationSpec>().is_err());
        assert!("k=v".parse::<TolerationSpec>().is_err());
    }

    #[test]
    fn timestamps_have_nanoseconds() {
        let t: jiff::Timestamp = "2026-11-21T04:00:00.5Z".parse().unwrap();
        assert_eq!(timestamp(t), "2026-11-21T04:00:00.500000000Z");
    }

    #[test]
    fn statefulset_pods_sit_behind_a_headless_service_named_in_the_stamp() {
        let t = mk_template();
        let svc = t.service("sts-svc-2", Pattern::StatefulSet);
        assert_eq!(svc.spec.unwrap().cluster_ip.as_deref(), Some("None"));
        assert_eq!(
            t.service("stable-svc-0", Pattern::Stable)
                .spec
                .unwrap()
                .cluster_ip,
            None
        );
        let sts = t.statefulset(2, &Stamp::scale(3, "t"));
        assert_eq!(sts.metadata.name.as_deref(), Some("sts-2"));
        let ann = sts.metadata.annotations.unwrap();
        assert_eq!(ann[labels::SERVICE], "sts-svc-2");
        assert_eq!(ann[labels::CHANGE], "scale");
        assert_eq!(ann[labels::REPLICAS], "3");
        let spec = sts.spec.unwrap();
        assert_eq!(spec.service_name.as_deref(), Some("sts-svc-2"));
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        let pod_labels = spec.template.metadata.unwrap().labels.unwrap();
        // The Service selects the pods; the injector's label names the StatefulSet.
        for (k, v) in spec.selector.match_labels.unwrap() {
            assert_eq!(pod_labels[&k], v);
        }
        assert_eq!(pod_labels[labels::NAME], "sts-svc-2");
        assert_eq!(pod_labels[labels::PROXY_STATEFULSET], "sts-2");
        assert!(!pod_labels.contains_key(labels::PROXY_DEPLOYMENT));
    }

    #[test]
    fn a_restart_stamps_the_deployment_and_bumps_the_pod_template() {
        let stamp = Stamp {
            at: "2026-11-22T00:00:00.000000000Z".into(),
            replicas: 4,
            kind: ChangeKind::Restart,
            restarted_at: Some("2026-11-22T00:00:00.000000000Z".into()),
        };
        let rollout = Rollout {
            max_surge: parse_int_or_percent("1").unwrap(),
            max_unavailable: parse_int_or_percent("0").unwrap(),
        };
        let d = mk_template().deployment_rolling(
            "restart-svc-0",
            Pattern::Restart,
            &stamp,
            Some(&rollout),
        );
        assert_eq!(d.metadata.annotations.unwrap()[labels::CHANGE], "restart");
        let spec = d.spec.unwrap();
        let ru = spec.strategy.unwrap().rolling_update.unwrap();
        assert_eq!(ru.max_surge, Some(IntOrString::Int(1)));
        assert_eq!(ru.max_unavailable, Some(IntOrString::Int(0)));
        let pod_ann = spec.template.metadata.unwrap().annotations.unwrap();
        assert_eq!(
            pod_ann[labels::RESTARTED_AT],
            "2026-11-22T00:00:00.000000000Z"
        );
        // Without a restart time the template carries none (no roll on apply).
        let plain = mk_template().deployment("x", Pattern::Stable, &Stamp::scale(1, "t"));
        let plain_ann = plain
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap();
        assert!(!plain_ann.contains_key(labels::RESTARTED_AT));
    }

    #[test]
    fn int_or_percent_flags() {
        assert_eq!(
            parse_int_or_percent("25%").unwrap(),
            IntOrString::String("25%".into())
        );
        assert_eq!(parse_int_or_percent("2").unwrap(), IntOrString::Int(2));
        for bad in ["-1", "x", "101%", "1.5"] {
            assert!(parse_int_or_percent(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_and_authorities_agree_on_the_pattern() {
        for p in Pattern::ALL {
            let svc = p.service_name(3);
            assert_eq!(
                labels::pattern_of_authority(&format!("{svc}.ns.svc.cluster.local:8080")),
                p.as_str()
            );
        }
        assert_eq!(Pattern::StatefulSet.workload_name(3), "sts-3");
        assert_eq!(
            labels::pattern_of_authority("sts-3-0.sts-svc-3.ns.svc.cluster.local:8080"),
            "statefulset"
        );
        assert_eq!(
            labels::pattern_of_authority("web.ns.svc.cluster.local:80"),
            "other"
        );
        assert_eq!(
            labels::pattern_of_authority("foo-svc-x.ns.svc.cluster.local:80"),
            "other"
        );
        for k in [
            ChangeKind::Create,
            ChangeKind::Scale,
            ChangeKind::Restart,
            ChangeKind::Delete,
        ] {
            assert_eq!(ChangeKind::parse(k.as_str()), Some(k));
        }
    }
}
