//! Inbound policy on the mock: who may connect to a proxy's own ports, as
//! Linkerd's policy controller answers `InboundServerPolicies` for a port
//! that no Server selects (edge-26.8.3, `policy-controller/grpc` and the
//! index's `DefaultPolicy`).
//!
//! Every port gets one of the controller's default policies, by name:
//!
//! - `all-unauthenticated` (the mock's default, as the chart's): any client
//!   from any network;
//! - `all-authenticated`: meshed clients (mTLS with any identity) only;
//! - `cluster-unauthenticated`, `cluster-authenticated`: the same from the
//!   cluster networks only;
//! - `deny`: no client;
//! - `audit`: any client, from any network, under an authorization named
//!   `audit` (Linkerd's mode for trying a policy out before enforcing it).
//!
//! The policy of a port is the one set for it, or else the default. Both
//! change while the mock serves (flags at start, the control API after);
//! an open watch of a port is sent its policy again whenever that port's
//! changes (as it is when the stream is next polled: changes in quick
//! succession may arrive as the last one, as the controller's watches do).
//! The mock knows no pods: every workload gets the same answers, where the
//! controller reads a pod's `config.linkerd.io/default-inbound-policy`
//! annotation (and its `proxy-require-identity-inbound-ports`, which makes
//! an allowing policy authenticated), and answers `NotFound` for a pod it
//! does not know.
//!
//! Each policy is protocol detection (10 s), one default HTTP route
//! (`Default("default")`, path prefix `/`) and the policy's one
//! authorization (none for `deny`), labelled and named as the controller
//! names them. The e2e test `the_real_policy_controller_answers_as_the_mock_claims`
//! compares every one with Linkerd's running controller.

use std::{collections::BTreeMap, fmt, sync::Arc};

use futures::StreamExt as _;
use ipnet::IpNet;
use linkerd2_proxy_api::inbound::{
    self, Authn, Authz, Network, authn, inbound_server_policies_server::InboundServerPolicies,
    proxy_protocol,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::policy::{DETECT_TIMEOUT, PolicyStream, check_workload, default_meta, duration};

/// Linkerd's default inbound policies, by the names its chart, its
/// controller's `--default-policy` and the
/// `config.linkerd.io/default-inbound-policy` annotation give them.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum InboundPolicy {
    /// Any client, from any network.
    #[default]
    AllUnauthenticated,
    /// Meshed clients (mTLS, any identity), from any network.
    AllAuthenticated,
    /// Any client from the cluster networks.
    ClusterUnauthenticated,
    /// Meshed clients from the cluster networks.
    ClusterAuthenticated,
    /// No client.
    Deny,
    /// Any client, from any network, under an authorization named `audit`.
    Audit,
}

impl InboundPolicy {
    /// Every policy, in the order the help text names them.
    pub const ALL: [Self; 6] = [
        Self::AllUnauthenticated,
        Self::AllAuthenticated,
        Self::ClusterUnauthenticated,
        Self::ClusterAuthenticated,
        Self::Deny,
        Self::Audit,
    ];

    /// Its name, as Linkerd writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllUnauthenticated => "all-unauthenticated",
            Self::AllAuthenticated => "all-authenticated",
            Self::ClusterUnauthenticated => "cluster-unauthenticated",
            Self::ClusterAuthenticated => "cluster-authenticated",
            Self::Deny => "deny",
            Self::Audit => "audit",
        }
    }

    /// Who it lets in: whether a client must be meshed, and whether it
    /// must be in the cluster networks. `None` for `deny`.
    fn allows(self) -> Option<(bool, bool)> {
        match self {
            Self::AllUnauthenticated | Self::Audit => Some((false, false)),
            Self::AllAuthenticated => Some((true, false)),
            Self::ClusterUnauthenticated => Some((false, true)),
            Self::ClusterAuthenticated => Some((true, true)),
            Self::Deny => None,
        }
    }
}

impl fmt::Display for InboundPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An inbound policy name Linkerd has not.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "'{0}' is not an inbound policy: give all-unauthenticated, all-authenticated, cluster-unauthenticated, cluster-authenticated, deny or audit"
)]
pub struct UnknownInboundPolicy(pub String);

impl std::str::FromStr for InboundPolicy {
    type Err = UnknownInboundPolicy;

    fn from_str(s: &str) -> Result<Self, UnknownInboundPolicy> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownInboundPolicy(s.to_string()))
    }
}

/// The inbound policy of every port: a default, and ports of their own.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundPolicies {
    /// The policy of a port not in `ports`.
    #[serde(default)]
    pub default: InboundPolicy,
    /// Ports with a policy of their own (0 is no port).
    #[serde(default)]
    pub ports: BTreeMap<u16, InboundPolicy>,
}

impl InboundPolicies {
    /// The policy of `port`.
    pub fn at(&self, port: u16) -> InboundPolicy {
        self.ports.get(&port).copied().unwrap_or(self.default)
    }
}

/// A port that is none, as a flag or a path gave it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("'{0}' is not a port: give 1 to 65535")]
pub struct NotAPort(pub String);

/// A port given a policy: 1 to 65535.
pub fn parse_port(s: &str) -> Result<u16, NotAPort> {
    s.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| NotAPort(s.to_string()))
}

/// Port 0 given a policy.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("port 0 is no port: give a port from 1 to 65535")]
pub struct PortZero;

/// The mock's inbound policies; every watch follows them. Cheap to clone;
/// clones share state.
#[derive(Clone, Debug)]
pub struct Inbound(Arc<watch::Sender<InboundPolicies>>);

impl Default for Inbound {
    fn default() -> Self {
        Self(Arc::new(watch::channel(InboundPolicies::default()).0))
    }
}

impl Inbound {
    /// Replaces every policy; port 0 is refused and nothing changes.
    pub fn set(&self, policies: InboundPolicies) -> Result<(), PortZero> {
        if policies.ports.contains_key(&0) {
            return Err(PortZero);
        }
        self.0.send_if_modified(|now| {
            let changed = *now != policies;
            *now = policies;
            changed
        });
        Ok(())
    }

    /// Gives `port` a policy of its own.
    pub fn set_port(&self, port: u16, policy: InboundPolicy) -> Result<(), PortZero> {
        if port == 0 {
            return Err(PortZero);
        }
        self.0
            .send_if_modified(|now| now.ports.insert(port, policy) != Some(policy));
        Ok(())
    }

    /// Returns `port` to the default; `false` if it had no policy of its own.
    pub fn clear_port(&self, port: u16) -> bool {
        self.0
            .send_if_modified(|now| now.ports.remove(&port).is_some())
    }

    /// Every policy now.
    pub fn get(&self) -> InboundPolicies {
        self.0.borrow().clone()
    }
}

/// The cluster networks of Linkerd's chart (`clusterNetworks`), which
/// the `cluster-*` policies admit.
pub const CLUSTER_NETWORKS: &str = "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8";

/// The cluster networks of Linkerd's chart, parsed.
pub fn default_cluster_networks() -> Vec<IpNet> {
    CLUSTER_NETWORKS
        .split(',')
        .map(|n| n.parse().expect("a network"))
        .collect()
}

fn networks(nets: &[IpNet]) -> Vec<Network> {
    nets.iter()
        .map(|net| Network {
            net: Some((*net).into()),
            except: Vec::new(),
        })
        .collect()
}

fn labels(name: &str) -> std::collections::HashMap<String, String> {
    [("group", ""), ("kind", "default"), ("name", name)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The server a port with `policy` gets, the `cluster-*` policies
/// admitting `cluster_networks`.
pub fn server(policy: InboundPolicy, cluster_networks: &[IpNet]) -> inbound::Server {
    let name = policy.as_str();
    let authorizations = policy
        .allows()
        .map(|(meshed, cluster)| {
            let everywhere = ["0.0.0.0/0", "::/0"].map(|n| n.parse().expect("a network"));
            let permit = if meshed {
                // Any identity: one empty suffix.
                authn::Permit::MeshTls(authn::PermitMeshTls {
                    clients: Some(authn::permit_mesh_tls::Clients::Identities(
                        authn::permit_mesh_tls::PermitClientIdentities {
                            identities: Vec::new(),
                            suffixes: vec![inbound::IdentitySuffix { parts: Vec::new() }],
                        },
                    )),
                })
            } else {
                authn::Permit::Unauthenticated(authn::PermitUnauthenticated {})
            };
            Authz {
                networks: networks(if cluster {
                    cluster_networks
                } else {
                    &everywhere
                }),
                authentication: Some(Authn {
                    permit: Some(permit),
                }),
                labels: labels(name),
                metadata: default_meta(name),
            }
        })
        .into_iter()
        .collect();
    inbound::Server {
        protocol: Some(inbound::ProxyProtocol {
            kind: Some(proxy_protocol::Kind::Detect(proxy_protocol::Detect {
                timeout: duration(DETECT_TIMEOUT),
                http_routes: vec![inbound::HttpRoute {
                    metadata: default_meta("default"),
                    hosts: Vec::new(),
                    // The server's authorizations apply to a route with none.
                    authorizations: Vec::new(),
                    rules: vec![inbound::http_route::Rule {
                        matches: vec![super::policy::prefix_match()],
                        filters: Vec::new(),
                    }],
                }],
                http_local_rate_limit: None,
            })),
        }),
        server_ips: Vec::new(),
        authorizations,
        labels: labels(name),
    }
}

/// The `InboundServerPolicies` service over the mock's inbound policies.
#[derive(Clone)]
pub struct InboundService {
    inbound: Inbound,
    cluster_networks: Arc<[IpNet]>,
    shutdown: CancellationToken,
}

impl InboundService {
    /// Serves `inbound`, the `cluster-*` policies admitting
    /// `cluster_networks`; every stream ends at `shutdown`.
    pub fn new(inbound: Inbound, cluster_networks: &[IpNet], shutdown: CancellationToken) -> Self {
        Self {
            inbound,
            cluster_networks: cluster_networks.into(),
            shutdown,
        }
    }
}

/// The port of a lookup, refusing what the controller refuses.
fn port_of(spec: &inbound::PortSpec) -> Result<u16, Status> {
    check_workload(&spec.workload)?;
    let port = u16::try_from(spec.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| Status::invalid_argument(format!("Invalid port: {}", spec.port)))?;
    tracing::debug!(workload = %spec.workload, port, "inbound policy lookup");
    Ok(port)
}

#[tonic::async_trait]
impl InboundServerPolicies for InboundService {
    async fn get_port(
        &self,
        request: Request<inbound::PortSpec>,
    ) -> Result<Response<inbound::Server>, Status> {
        let port = port_of(&request.into_inner())?;
        let policy = self.inbound.0.borrow().at(port);
        Ok(Response::new(server(policy, &self.cluster_networks)))
    }

    type WatchPortStream = PolicyStream<inbound::Server>;

    async fn watch_port(
        &self,
        request: Request<inbound::PortSpec>,
    ) -> Result<Response<Self::WatchPortStream>, Status> {
        let port = port_of(&request.into_inner())?;
        let mut policies = self.inbound.0.subscribe();
        let first = policies.borrow_and_update().at(port);
        let networks = self.cluster_networks.clone();
        let shutdown = self.shutdown.clone();
        // The port's policy now, then each time it changes, until the
        // client goes or the mock shuts down.
        let stream = futures::stream::unfold(
            (policies, None::<InboundPolicy>, first),
            move |(mut policies, sent, mut now)| {
                let shutdown = shutdown.clone();
                async move {
                    while sent == Some(now) {
                        tokio::select! {
                            _ = shutdown.cancelled() => return None,
                            changed = policies.changed() => changed.ok()?,
                        }
                        now = policies.borrow_and_update().at(port);
                    }
                    Some((now, (policies, Some(now), now)))
                }
            },
        )
        .map(move |policy| Ok(server(policy, &networks)));
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_are_read_and_written_by_linkerds_names() {
        for (name, policy) in [
            ("all-unauthenticated", InboundPolicy::AllUnauthenticated),
            ("all-authenticated", InboundPolicy::AllAuthenticated),
            (
                "cluster-unauthenticated",
                InboundPolicy::ClusterUnauthenticated,
            ),
            ("cluster-authenticated", InboundPolicy::ClusterAuthenticated),
            ("deny", InboundPolicy::Deny),
            ("audit", InboundPolicy::Audit),
        ] {
            assert_eq!(name.parse::<InboundPolicy>(), Ok(policy));
            assert_eq!(policy.to_string(), name);
            assert_eq!(
                serde_json::to_string(&policy).unwrap(),
                format!("\"{name}\"")
            );
        }
        let refused = "allow".parse::<InboundPolicy>().unwrap_err();
        assert!(refused.to_string().contains("give all-unauthenticated"));
        let json: InboundPolicies =
            serde_json::from_str(r#"{"default":"deny","ports":{"9090":"audit"}}"#).unwrap();
        assert_eq!(json.at(9090), InboundPolicy::Audit);
        assert_eq!(json.at(8080), InboundPolicy::Deny);
        assert!(serde_json::from_str::<InboundPolicies>(r#"{"ports":{"x":"deny"}}"#).is_err());
        assert!(serde_json::from_str::<InboundPolicies>(r#"{"fallback":"deny"}"#).is_err());
    }

    #[test]
    fn each_policy_authorizes_whom_linkerds_default_does() {
        let cluster = default_cluster_networks();
        let nets = |s: &inbound::Server| -> Vec<IpNet> {
            s.authorizations[0]
                .networks
                .iter()
                .map(|n| n.net.unwrap().try_into().unwrap())
                .collect()
        };
        let meshed = |s: &inbound::Server| {
            matches!(
                s.authorizations[0].authentication.as_ref().unwrap().permit,
                Some(authn::Permit::MeshTls(_))
            )
        };
        let everywhere: Vec<IpNet> = vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
        // Linkerd's `DefaultPolicy::default_authzs`: whether a client must
        // be meshed, and whether it must come from the cluster networks.
        for (policy, allows) in [
            (InboundPolicy::AllUnauthenticated, Some((false, false))),
            (InboundPolicy::AllAuthenticated, Some((true, false))),
            (InboundPolicy::ClusterUnauthenticated, Some((false, true))),
            (InboundPolicy::ClusterAuthenticated, Some((true, true))),
            (InboundPolicy::Deny, None),
            (InboundPolicy::Audit, Some((false, false))),
        ] {
            let s = server(policy, &cluster);
            assert_eq!(s.labels["name"], policy.as_str());
            match allows {
                None => assert!(s.authorizations.is_empty()),
                Some((auth, in_cluster)) => {
                    assert_eq!(s.authorizations.len(), 1);
                    assert_eq!(s.authorizations[0].labels["name"], policy.as_str());
                    assert_eq!(meshed(&s), auth, "{policy}");
                    let want = if in_cluster { &cluster } else { &everywhere };
                    assert_eq!(&nets(&s), want, "{policy}");
                }
            }
        }
        assert_eq!(cluster.len(), 5);
    }

    #[tokio::test]
    async fn a_watch_gets_its_ports_changes_and_not_another_ports() {
        let inbound = Inbound::default();
        let service = InboundService::new(
            inbound.clone(),
            &default_cluster_networks(),
            CancellationToken::new(),
        );
        let spec = inbound::PortSpec {
            workload: "ns:web-0".into(),
            port: 9090,
        };
        let mut watch = service
            .watch_port(Request::new(spec))
            .await
            .unwrap()
            .into_inner();
        let mut next = async || {
            let next = tokio::time::timeout(std::time::Duration::from_secs(5), watch.next());
            let server = next.await.expect("in time").expect("open").unwrap();
            server.labels["name"].clone()
        };
        assert_eq!(next().await, "all-unauthenticated");
        inbound.set_port(8080, InboundPolicy::Audit).unwrap();
        inbound.set_port(9090, InboundPolicy::Deny).unwrap();
        assert_eq!(next().await, "deny");
        assert!(inbound.clear_port(9090));
        assert_eq!(next().await, "all-unauthenticated");
    }

    #[test]
    fn a_port_of_its_own_wins_until_cleared_and_port_zero_is_refused() {
        let inbound = Inbound::default();
        let mut seen = inbound.0.subscribe();
        inbound.set_port(9090, InboundPolicy::Deny).unwrap();
        assert!(seen.has_changed().unwrap());
        seen.mark_unchanged();
        // The same again is no change.
        inbound.set_port(9090, InboundPolicy::Deny).unwrap();
        assert!(!seen.has_changed().unwrap());
        assert_eq!(inbound.get().at(9090), InboundPolicy::Deny);
        assert_eq!(inbound.get().at(80), InboundPolicy::AllUnauthenticated);
        assert_eq!(inbound.set_port(0, InboundPolicy::Deny), Err(PortZero));
        let zero = InboundPolicies {
            ports: [(0, InboundPolicy::Deny)].into(),
            ..Default::default()
        };
        assert_eq!(inbound.set(zero), Err(PortZero));
        assert!(inbound.clear_port(9090));
        assert!(!inbound.clear_port(9090));
        assert_eq!(inbound.get(), InboundPolicies::default());
    }
}
