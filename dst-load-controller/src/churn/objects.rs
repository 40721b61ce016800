//! The Kubernetes objects churn creates, built without I/O.

use std::{collections::BTreeMap, str::FromStr};

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        core::v1::{
            Container, ContainerPort, Namespace, PodSpec, PodTemplateSpec, Service, ServicePort,
            ServiceSpec, Toleration,
        },
    },
    apimachinery::pkg::{
        apis::meta::v1::LabelSelector, apis::meta::v1::ObjectMeta, util::intstr::IntOrString,
    },
};

use crate::labels;

/// Which churn pattern a service follows.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// Fixed size.
    Stable,
    /// Scales between min and max.
    Oscillate,
}

impl Pattern {
    /// The label value and name prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Pattern::Stable => "stable",
            Pattern::Oscillate => "oscillate",
        }
    }

    /// The name of service `i`: `stable-svc-3`, `oscillate-svc-0`.
    pub fn service_name(self, i: u32) -> String {
        format!("{}-svc-{i}", self.as_str())
    }
}

/// `key=value[,key=value...]`: where pods are scheduled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeSelector(pub BTreeMap<String, String>);

impl FromStr for NodeSelector {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut map = BTreeMap::new();
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| {
                    format!("invalid node selector '{pair}'; expected key=value, e.g. type=kwok")
                })?;
            map.insert(k.to_string(), v.to_string());
        }
        Ok(Self(map))
    }
}

/// `key[=value]:Effect`: a toleration the pods carry.
#[derive(Clone, Debug, PartialEq)]
pub struct TolerationSpec(pub Toleration);

impl FromStr for TolerationSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || {
            format!(
                "invalid toleration '{s}'; expected key[=value]:Effect, e.g. kwok.x-k8s.io/node=fake:NoSchedule"
            )
        };
        let (kv, effect) = s.rsplit_once(':').ok_or_else(err)?;
        if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            return Err(format!(
                "{}; the effect must be NoSchedule, PreferNoSchedule or NoExecute",
                err()
            ));
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

/// Everything that shapes a service's objects.
#[derive(Clone, Debug)]
pub struct ServiceTemplate {
    /// The namespace.
    pub namespace: String,
    /// The Service port (named `http`) and container port.
    pub port: u16,
    /// The container image (never pulled on KWOK nodes).
    pub image: String,
    /// `linkerd.io/control-plane-ns` on pods; `None` leaves pods unmeshed.
    pub control_plane_ns: Option<String>,
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
    /// The ClusterIP Service for `name`.
    pub fn service(&self, name: &str, pattern: Pattern) -> Service {
        let mut l = owned_labels(pattern);
        l.extend(selector(name));
        Service {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(self.namespace.clone()),
                labels: Some(l),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".to_string()),
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

    /// The Deployment for `name` at `replicas`, annotated with when that size was set.
    pub fn deployment(
        &self,
        name: &str,
        pattern: Pattern,
        replicas: u32,
        scaled_at: &str,
    ) -> Deployment {
        let mut l = owned_labels(pattern);
        l.extend(selector(name));
        let mut pod_labels = l.clone();
        if let Some(ns) = &self.control_plane_ns {
            pod_labels.insert(labels::CONTROL_PLANE_NS.to_string(), ns.clone());
        }
        Deployment {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(self.namespace.clone()),
                labels: Some(l),
                annotations: Some(BTreeMap::from([
                    (labels::SCALED_AT.to_string(), scaled_at.to_string()),
                    (labels::REPLICAS.to_string(), replicas.to_string()),
                ])),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas as i32),
                selector: LabelSelector {
                    match_labels: Some(selector(name)),
                    ..Default::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(pod_labels),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        node_selector: (!self.node_selector.0.is_empty())
                            .then(|| self.node_selector.0.clone()),
                        tolerations: (!self.tolerations.is_empty())
                            .then(|| self.tolerations.clone()),
                        // Fake pods: nothing to drain, so deletions are immediate.
                        termination_grace_period_seconds: Some(0),
                        automount_service_account_token: Some(false),
                        containers: vec![Container {
                            name: "app".to_string(),
                            image: Some(self.image.clone()),
                            ports: Some(vec![ContainerPort {
                                name: Some("http".to_string()),
                                container_port: self.port.into(),
                                protocol: Some("TCP".to_string()),
                                ..Default::default()
                            }]),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            ..Default::default()
        }
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
            7,
            "2026-11-21T00:00:00.000000001Z",
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
        assert_eq!(
            pod.containers[0].ports.as_ref().unwrap()[0].name.as_deref(),
            Some("http")
        );
    }

    #[test]
    fn unmeshed_pods_have_no_control_plane_label() {
        let mut t = mk_template();
        t.control_plane_ns = None;
        let d = t.deployment("x", Pattern::Stable, 1, "t");
        let pod_labels = d.spec.unwrap().template.metadata.unwrap().labels.unwrap();
        assert!(!pod_labels.contains_key(labels::CONTROL_PLANE_NS));
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
}
