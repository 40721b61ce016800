//! What Linkerd's destination controller should answer to `GetProfile` of
//! a pod's `IP:port`, from the pod and the namespace's Servers: the ground
//! truth of `--target-pods` streams. Pure: the watches are `pods`'.
//!
//! The rules are edge-26.8.3's (`endpoint_profile_translator.go`,
//! `endpoint_translator.go`, `workload_watcher.go`): a running pod's
//! endpoint carries a TLS identity when the pod is meshed into the control
//! plane and the port is not skipped; the profile is opaque when the port is
//! in the pod's `config.linkerd.io/opaque-ports` (the controller's default
//! opaque ports without the annotation) or an `opaque` Server selects the
//! pod on that port. A pod that is not running is answered with a bare
//! endpoint.

use std::{collections::BTreeSet, net::SocketAddr};

use k8s_openapi::{
    api::core::v1::Pod,
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};

use crate::{
    crds::{ProxyProtocol, Server},
    labels,
};

/// The pod annotation listing opaque ports.
pub const OPAQUE_PORTS: &str = "config.linkerd.io/opaque-ports";
/// The pod annotation listing inbound ports the proxy skips.
pub const SKIP_INBOUND_PORTS: &str = "config.linkerd.io/skip-inbound-ports";

/// The parts of a pod-address profile the client checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expected {
    /// The endpoint's address: the target.
    pub endpoint: SocketAddr,
    /// The endpoint carries a TLS identity.
    pub identity: bool,
    /// The profile says opaque.
    pub opaque: bool,
}

impl Expected {
    /// What differs in `seen` (the endpoint, identity and opaque flag a
    /// stream last received), worded for a log line; empty when nothing.
    pub fn differences(
        &self,
        endpoint: Option<SocketAddr>,
        identity: bool,
        opaque: bool,
    ) -> Vec<String> {
        let mut out = Vec::new();
        if endpoint != Some(self.endpoint) {
            out.push(format!(
                "endpoint {} (want {})",
                endpoint.map_or_else(|| "none".to_string(), |e| e.to_string()),
                self.endpoint
            ));
        }
        if identity != self.identity {
            out.push(format!("identity {identity} (want {})", self.identity));
        }
        if opaque != self.opaque {
            out.push(format!("opaque {opaque} (want {})", self.opaque));
        }
        out
    }
}

/// The controller's settings the answer depends on.
#[derive(Clone, Debug)]
pub struct Rules {
    /// `--controller-namespace`: meshed pods carry it in
    /// `linkerd.io/control-plane-ns`.
    pub control_plane_ns: String,
    /// `--default-opaque-ports` (empty by the controller's flag default;
    /// Linkerd's chart sets 25,587,3306,4444,5432,6379,9300,11211).
    pub default_opaque_ports: BTreeSet<u16>,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            control_plane_ns: "linkerd".to_string(),
            default_opaque_ports: BTreeSet::new(),
        }
    }
}

/// Whether the pod is running and not being deleted.
fn running(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// The answer for `target` (an address of `pod`, or of a pod no longer
/// there: `None`), with the namespace's `servers`.
pub fn expected(
    pod: Option<&Pod>,
    target: SocketAddr,
    servers: &[&Server],
    rules: &Rules,
) -> Expected {
    let port = target.port();
    let Some(pod) = pod.filter(|p| running(p)) else {
        return Expected {
            endpoint: target,
            identity: false,
            opaque: rules.default_opaque_ports.contains(&port),
        };
    };
    let annotation = |k: &str| pod.metadata.annotations.as_ref().and_then(|a| a.get(k));
    let skipped =
        annotation(SKIP_INBOUND_PORTS).is_some_and(|list| parse_ports(list, pod).contains(&port));
    // Meshed into this control plane (the label names its namespace).
    let identity = !skipped
        && !rules.control_plane_ns.is_empty()
        && pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::CONTROL_PLANE_NS))
            == Some(&rules.control_plane_ns);
    let annotated = match annotation(OPAQUE_PORTS) {
        Some(list) => parse_ports(list, pod).contains(&port),
        None => rules.default_opaque_ports.contains(&port),
    };
    let by_server = servers.iter().any(|s| {
        s.spec.proxy_protocol == Some(ProxyProtocol::Opaque)
            && selects(&s.spec.pod_selector, pod)
            && port_matches(&s.spec.port, pod, port)
    });
    Expected {
        endpoint: target,
        identity,
        opaque: annotated || by_server,
    }
}

/// Ports of a Linkerd port list: `80`, `8000-8100`, or a container port's
/// name, comma-separated. Entries that are none of these are skipped, as
/// the controller skips them.
pub fn parse_ports(list: &str, pod: &Pod) -> BTreeSet<u16> {
    let mut out = BTreeSet::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if let Some((lo, hi)) = entry.split_once('-') {
            if let (Ok(lo), Ok(hi)) = (lo.trim().parse::<u16>(), hi.trim().parse::<u16>()) {
                out.extend(lo..=hi);
            }
        } else if let Ok(p) = entry.parse::<u16>() {
            out.insert(p);
        } else {
            out.extend(
                container_ports(pod)
                    .filter(|(name, ..)| *name == Some(entry))
                    .filter_map(|(_, port, _)| u16::try_from(port).ok()),
            );
        }
    }
    out
}

/// Every container's ports (init containers too): (name, containerPort, hostPort).
fn container_ports(pod: &Pod) -> impl Iterator<Item = (Option<&str>, i32, Option<i32>)> {
    pod.spec.iter().flat_map(|spec| {
        spec.init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .map(|p| (p.name.as_deref(), p.container_port, p.host_port))
    })
}

/// A Server's port against the asked port: its number, or a container port
/// of that name whose container or host port is the asked one.
fn port_matches(server_port: &IntOrString, pod: &Pod, port: u16) -> bool {
    match server_port {
        IntOrString::Int(n) => *n == i32::from(port),
        IntOrString::String(name) => container_ports(pod).any(|(n, container, host)| {
            n == Some(name.as_str())
                && (container == i32::from(port) || host == Some(i32::from(port)))
        }),
    }
}

/// Whether a label selector (Kubernetes' semantics: all of matchLabels and
/// matchExpressions; empty selects all) selects the pod.
pub fn selects(selector: &LabelSelector, pod: &Pod) -> bool {
    let empty = Default::default();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::{
        api::core::v1::{Container, ContainerPort, PodSpec, PodStatus},
        apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement,
    };

    use super::*;
    use crate::crds::ServerSpec;

    fn pod(labels: &[(&str, &str)], annotations: &[(&str, &str)], phase: &str) -> Pod {
        let map = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let mut p = Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    ports: Some(vec![
                        ContainerPort {
                            name: Some("http".into()),
                            container_port: 8080,
                            ..Default::default()
                        },
                        ContainerPort {
                            name: Some("db".into()),
                            container_port: 5432,
                            host_port: Some(15432),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        p.metadata.labels = Some(map(labels));
        p.metadata.annotations = Some(map(annotations));
        p
    }

    fn server(selector: LabelSelector, port: IntOrString, protocol: ProxyProtocol) -> Server {
        Server::new(
            "s",
            ServerSpec {
                pod_selector: selector,
                port,
                proxy_protocol: Some(protocol),
            },
        )
    }

    fn match_labels(kv: &[(&str, &str)]) -> LabelSelector {
        LabelSelector {
            match_labels: Some(
                kv.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    const MESHED: (&str, &str) = (labels::CONTROL_PLANE_NS, "linkerd");

    fn refs(servers: &[Server]) -> Vec<&Server> {
        servers.iter().collect()
    }

    #[test]
    fn a_meshed_running_pod_has_an_identity_and_a_stopped_one_a_bare_endpoint() {
        let target: SocketAddr = "10.0.0.1:8080".parse().unwrap();
        let rules = Rules::default();
        let e = expected(Some(&pod(&[MESHED], &[], "Running")), target, &[], &rules);
        assert_eq!(
            e,
            Expected {
                endpoint: target,
                identity: true,
                opaque: false
            }
        );
        let bare = Expected {
            endpoint: target,
            identity: false,
            opaque: false,
        };
        assert_eq!(
            expected(Some(&pod(&[MESHED], &[], "Pending")), target, &[], &rules),
            bare
        );
        assert_eq!(expected(None, target, &[], &rules), bare);
        // Unmeshed, another control plane, or a skipped port: no identity.
        assert!(!expected(Some(&pod(&[], &[], "Running")), target, &[], &rules).identity);
        let other = (labels::CONTROL_PLANE_NS, "other");
        assert!(!expected(Some(&pod(&[other], &[], "Running")), target, &[], &rules).identity);
        let skip = pod(
            &[MESHED],
            &[(SKIP_INBOUND_PORTS, "80,8000-8100")],
            "Running",
        );
        assert!(!expected(Some(&skip), target, &[], &rules).identity);
    }

    #[test]
    fn opaque_comes_from_the_annotation_else_the_defaults_or_from_an_opaque_server() {
        let rules = Rules {
            default_opaque_ports: [5432].into(),
            ..Rules::default()
        };
        let at = |port: u16| SocketAddr::new("10.0.0.1".parse().unwrap(), port);
        let plain = pod(&[MESHED, ("app", "web")], &[], "Running");
        assert!(expected(Some(&plain), at(5432), &[], &rules).opaque);
        assert!(!expected(Some(&plain), at(8080), &[], &rules).opaque);
        // An annotation replaces the defaults; names resolve to container ports.
        let annotated = pod(&[MESHED], &[(OPAQUE_PORTS, "http, 9000-9001,")], "Running");
        assert!(expected(Some(&annotated), at(8080), &[], &rules).opaque);
        assert!(expected(Some(&annotated), at(9001), &[], &rules).opaque);
        assert!(!expected(Some(&annotated), at(5432), &[], &rules).opaque);
        // A bare endpoint: the defaults only.
        assert!(expected(None, at(5432), &[], &rules).opaque);

        let opaque = |sel, port| server(sel, port, ProxyProtocol::Opaque);
        let web = match_labels(&[("app", "web")]);
        let servers = [opaque(web.clone(), IntOrString::String("http".into()))];
        assert!(expected(Some(&plain), at(8080), &refs(&servers), &rules).opaque);
        // Another protocol, another pod, another port: not opaque.
        let http1 = [server(
            web.clone(),
            IntOrString::Int(8080),
            ProxyProtocol::Http1,
        )];
        assert!(!expected(Some(&plain), at(8080), &refs(&http1), &rules).opaque);
        let db = [opaque(
            match_labels(&[("app", "db")]),
            IntOrString::Int(8080),
        )];
        assert!(!expected(Some(&plain), at(8080), &refs(&db), &rules).opaque);
        let by_number = [opaque(web.clone(), IntOrString::Int(9090))];
        assert!(!expected(Some(&plain), at(8080), &refs(&by_number), &rules).opaque);
        // A name matches the host port too.
        let by_name = [opaque(
            LabelSelector::default(),
            IntOrString::String("db".into()),
        )];
        assert!(expected(Some(&plain), at(15432), &refs(&by_name), &rules).opaque);
    }

    #[test]
    fn selectors_select_as_kubernetes_does() {
        let p = pod(&[("app", "web"), ("tier", "front")], &[], "Running");
        let req = |key: &str, op: &str, values: &[&str]| LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        };
        let with = |reqs: Vec<LabelSelectorRequirement>| LabelSelector {
            match_expressions: Some(reqs),
            ..Default::default()
        };
        assert!(selects(&LabelSelector::default(), &p));
        assert!(selects(&match_labels(&[("app", "web")]), &p));
        assert!(!selects(
            &match_labels(&[("app", "web"), ("tier", "back")]),
            &p
        ));
        assert!(selects(&with(vec![req("app", "In", &["web", "api"])]), &p));
        assert!(!selects(&with(vec![req("app", "NotIn", &["web"])]), &p));
        assert!(selects(&with(vec![req("zone", "NotIn", &["a"])]), &p));
        assert!(selects(&with(vec![req("tier", "Exists", &[])]), &p));
        assert!(!selects(&with(vec![req("tier", "DoesNotExist", &[])]), &p));
        assert!(!selects(&with(vec![req("tier", "Bogus", &[])]), &p));
    }
}
