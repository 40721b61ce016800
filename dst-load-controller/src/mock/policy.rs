//! Outbound policy on the mock: the `OutboundPolicies` service a Linkerd
//! proxy watches before it routes a request, answered as Linkerd's policy
//! controller answers it for plain Services with no policy resources
//! (edge-26.8.3, `policy-controller/grpc`).
//!
//! Outbound, a proxy asks by the connection's original destination
//! (`IP:port`) or by name. A service's [`ServicePolicy`] gives the addresses
//! that stand for it (as a ClusterIP does) and its protocol:
//!
//! - detect (the default): HTTP/1 and HTTP/2 each get one default route
//!   (`Default("http")`, path prefix `/`) and other TCP one opaque route
//!   (`Default("opaq")`), all to one balancer backend that discovers
//!   endpoints with `Destination.Get` of the service's authority; detection
//!   times out after 10 s;
//! - `http1`, `http2`: that protocol only, with the same route;
//! - `opaque`: the opaque route only.
//!
//! Every backend has a queue of 100 and a 3 s fail-fast timeout, and
//! balances by peak EWMA (30 ms default RTT, 10 s decay), as the
//! controller's defaults are. An address no service holds is `NotFound`
//! (the proxy then forwards to the address itself). Any name of the form
//! `name.ns.svc.domain[:port]` (port 80 when absent, a final dot dropped;
//! `name.ns.svc[:port]`, as `linkerd diagnostics policy` asks, is read in
//! the default domain, cluster.local)
//! gets its service's policy, or the detect default when it has none: the
//! controller answers so for a Service that does not exist, too. Another
//! name is `NotFound`; a name that does not parse, a port past 65535 or 0,
//! no target at all, and a source workload that is neither
//! `{"ns":..,"pod":..}` nor `ns:pod` are `InvalidArgument`.
//!
//! A watch is sent the policy at once and again whenever the service's
//! policy changes it. A watch by address ends when the service stops
//! holding the address (the proxy's next watch gets `NotFound`); a watch by
//! name stays open, and it and later lookups of the name keep the deleted
//! policy's protocol until the name's policy is set again: Linkerd's
//! controller keeps a deleted Service's policy so (edge-26.8.3).
//! An address no service holds is `NotFound` here; Linkerd's controller
//! answers so for addresses in its cluster networks, and outside them with
//! an `egress-fallback` policy, which the mock does not serve.
//!
//! Inbound policy (`InboundServerPolicies`) is the `inbound` module's.
//!
//! The e2e test `the_real_policy_controller_answers_as_the_mock_claims`
//! compares these answers with Linkerd's running policy controller.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use futures::{Stream, StreamExt as _};
use linkerd2_proxy_api::{
    http_route,
    meta::{Metadata, Resource, metadata},
    outbound::{self, outbound_policies_server::OutboundPolicies, traffic_spec},
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::target::Authority;

/// How a service's traffic is read, as a Service port's `appProtocol` sets it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AppProtocol {
    /// The proxy detects HTTP/1, HTTP/2 or opaque TCP (no `appProtocol`).
    #[default]
    Detect,
    /// HTTP/1 only (`appProtocol: http`).
    #[serde(alias = "http")]
    Http1,
    /// HTTP/2 only (`appProtocol: kubernetes.io/h2c`).
    #[serde(alias = "kubernetes.io/h2c")]
    Http2,
    /// Opaque TCP: no HTTP routing. Also read from `tcp` and from the
    /// `appProtocol` values `linkerd.io/opaque` and `linkerd.io/tcp`, which
    /// Linkerd's policy controller answers with this policy (as it answers
    /// any `appProtocol` it does not know).
    #[serde(alias = "tcp", alias = "linkerd.io/opaque", alias = "linkerd.io/tcp")]
    Opaque,
}

/// A protocol name [`AppProtocol`] has not.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("'{0}' is not a protocol: give detect, http1, http2 or opaque (or tcp)")]
pub struct UnknownProtocol(pub String);

impl std::str::FromStr for AppProtocol {
    type Err = UnknownProtocol;

    fn from_str(s: &str) -> Result<Self, UnknownProtocol> {
        match s {
            "detect" => Ok(Self::Detect),
            "http1" | "http" => Ok(Self::Http1),
            "http2" | "kubernetes.io/h2c" => Ok(Self::Http2),
            "opaque" | "tcp" | "linkerd.io/opaque" | "linkerd.io/tcp" => Ok(Self::Opaque),
            _ => Err(UnknownProtocol(s.to_string())),
        }
    }
}

/// What the policy controller knows of one service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicePolicy {
    /// Addresses that stand for the service (its ClusterIP and port).
    #[serde(default)]
    pub addresses: BTreeSet<SocketAddr>,
    /// How its traffic is read.
    #[serde(default)]
    pub protocol: AppProtocol,
}

/// A service policy that cannot be set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// The authority is not a service's name.
    #[error("'{0}' is not a service authority; expected name.namespace.svc.cluster.local:PORT")]
    NotAService(Authority),
    /// Another service holds one of the addresses.
    #[error("{addr} already stands for {holder}; delete it there first")]
    AddressTaken {
        /// The address.
        addr: SocketAddr,
        /// The service holding it.
        holder: Authority,
    },
}

/// Every service policy, by service, and which service each address stands
/// for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    services: BTreeMap<Authority, ServicePolicy>,
    by_addr: BTreeMap<SocketAddr, Authority>,
    /// The protocol of every deleted policy other than detection (which a
    /// name without one gets anyway), until its name's is set again:
    /// Linkerd's controller keeps a deleted Service's policy for lookups by
    /// name. So names come and go without the table growing, unless each
    /// had a protocol set.
    kept: BTreeMap<Authority, AppProtocol>,
}

impl Table {
    /// The service an address stands for, and its protocol.
    pub fn by_addr(&self, addr: SocketAddr) -> Option<(&Authority, AppProtocol)> {
        let authority = self.by_addr.get(&addr)?;
        Some((authority, self.services[authority].protocol))
    }

    /// A service's policy, if one is set.
    pub fn service(&self, authority: &Authority) -> Option<&ServicePolicy> {
        self.services.get(authority)
    }

    /// The protocol a lookup by name gets: its policy's, a deleted
    /// policy's, or detection.
    pub fn named(&self, authority: &Authority) -> AppProtocol {
        self.services
            .get(authority)
            .map(|p| p.protocol)
            .or_else(|| self.kept.get(authority).copied())
            .unwrap_or_default()
    }
}

/// The mock's service policies; every watch follows them. Cheap to clone;
/// clones share state.
#[derive(Clone, Debug)]
pub struct Policies(Arc<watch::Sender<Arc<Table>>>);

impl Default for Policies {
    fn default() -> Self {
        Self(Arc::new(watch::channel(Arc::default()).0))
    }
}

impl Policies {
    /// Sets a service's policy, replacing the one it had; an address held
    /// by another service is refused and nothing changes.
    pub fn set(&self, authority: &Authority, policy: ServicePolicy) -> Result<(), PolicyError> {
        if !super::profiles::is_service_name(authority.host()) {
            return Err(PolicyError::NotAService(authority.clone()));
        }
        let mut refused = None;
        self.0.send_if_modified(|table| {
            let taken = policy.addresses.iter().find_map(|addr| {
                let holder = table.by_addr.get(addr)?;
                (holder != authority).then(|| PolicyError::AddressTaken {
                    addr: *addr,
                    holder: holder.clone(),
                })
            });
            if let Some(error) = taken {
                refused = Some(error);
                return false;
            }
            if table.services.get(authority) == Some(&policy) {
                return false;
            }
            let next = Arc::make_mut(table);
            next.by_addr.retain(|_, holder| holder != authority);
            next.by_addr
                .extend(policy.addresses.iter().map(|a| (*a, authority.clone())));
            next.services.insert(authority.clone(), policy);
            next.kept.remove(authority);
            true
        });
        refused.map_or(Ok(()), Err)
    }

    /// Deletes a service's policy (its addresses stand for nothing after
    /// it); `false` if it had none.
    pub fn delete(&self, authority: &Authority) -> bool {
        self.0.send_if_modified(|table| {
            if !table.services.contains_key(authority) {
                return false;
            }
            let next = Arc::make_mut(table);
            if let Some(gone) = next.services.remove(authority)
                && gone.protocol != AppProtocol::default()
            {
                next.kept.insert(authority.clone(), gone.protocol);
            }
            next.by_addr.retain(|_, holder| holder != authority);
            true
        })
    }

    /// The table now.
    pub fn table(&self) -> Arc<Table> {
        self.0.borrow().clone()
    }

    /// A service's policy, if one is set.
    pub fn get(&self, authority: &Authority) -> Option<ServicePolicy> {
        self.table().services.get(authority).cloned()
    }

    /// Every service policy, by service.
    pub fn list(&self) -> Vec<(Authority, ServicePolicy)> {
        let table = self.0.borrow();
        table
            .services
            .iter()
            .map(|(a, p)| (a.clone(), p.clone()))
            .collect()
    }

    /// The table now, and every later one.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Table>> {
        self.0.subscribe()
    }
}

/// Controller defaults (edge-26.8.3): protocol detection's timeout.
pub(super) const DETECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A backend's queue capacity.
const QUEUE_CAPACITY: u32 = 100;
/// How long a request waits in a backend's queue for an endpoint.
const QUEUE_FAILFAST: Duration = Duration::from_secs(3);
/// The peak EWMA balancer's RTT before any is measured.
const EWMA_DEFAULT_RTT: Duration = Duration::from_millis(30);
/// The peak EWMA balancer's decay.
const EWMA_DECAY: Duration = Duration::from_secs(10);

pub(super) fn duration(d: Duration) -> Option<prost_types::Duration> {
    Some(d.try_into().expect("a constant duration fits"))
}

pub(super) fn default_meta(name: &str) -> Option<Metadata> {
    Some(Metadata {
        kind: Some(metadata::Kind::Default(name.to_string())),
    })
}

/// A service's `core/Service` resource metadata at its port.
fn service_meta(authority: &Authority) -> Option<Metadata> {
    let mut parts = authority.host().split('.');
    let name = parts.next().unwrap_or_default().to_string();
    let namespace = parts.next().unwrap_or_default().to_string();
    Some(Metadata {
        kind: Some(metadata::Kind::Resource(Resource {
            group: "core".to_string(),
            kind: "Service".to_string(),
            name,
            namespace,
            section: String::new(),
            port: authority.port().into(),
        })),
    })
}

/// The balancer backend every route of a service's policy goes to.
fn backend(authority: &Authority) -> outbound::Backend {
    use outbound::backend::{self, balance_p2c, endpoint_discovery};
    outbound::Backend {
        metadata: service_meta(authority),
        queue: Some(outbound::Queue {
            capacity: QUEUE_CAPACITY,
            failfast_timeout: duration(QUEUE_FAILFAST),
        }),
        kind: Some(backend::Kind::Balancer(backend::BalanceP2c {
            discovery: Some(backend::EndpointDiscovery {
                kind: Some(endpoint_discovery::Kind::Dst(
                    endpoint_discovery::DestinationGet {
                        path: authority.to_string(),
                    },
                )),
            }),
            load: Some(balance_p2c::Load::PeakEwma(balance_p2c::PeakEwma {
                default_rtt: duration(EWMA_DEFAULT_RTT),
                decay: duration(EWMA_DECAY),
            })),
        })),
    }
}

fn http_route(backend: outbound::Backend) -> outbound::HttpRoute {
    use outbound::http_route::{Distribution, RouteBackend, Rule, distribution};
    outbound::HttpRoute {
        metadata: default_meta("http"),
        hosts: Vec::new(),
        rules: vec![Rule {
            matches: vec![prefix_match()],
            backends: Some(Distribution {
                kind: Some(distribution::Kind::FirstAvailable(
                    distribution::FirstAvailable {
                        backends: vec![RouteBackend {
                            backend: Some(backend),
                            ..Default::default()
                        }],
                    },
                )),
            }),
            timeouts: Some(http_route::Timeouts::default()),
            ..Default::default()
        }],
    }
}

fn opaque_route(backend: outbound::Backend) -> outbound::OpaqueRoute {
    use outbound::opaque_route::{Distribution, RouteBackend, Rule, distribution};
    outbound::OpaqueRoute {
        metadata: default_meta("opaq"),
        rules: vec![Rule {
            backends: Some(Distribution {
                kind: Some(distribution::Kind::FirstAvailable(
                    distribution::FirstAvailable {
                        backends: vec![RouteBackend {
                            backend: Some(backend),
                            filters: Vec::new(),
                        }],
                    },
                )),
            }),
            filters: Vec::new(),
        }],
    }
}

pub(super) fn prefix_match() -> http_route::HttpRouteMatch {
    http_route::HttpRouteMatch {
        path: Some(http_route::PathMatch {
            kind: Some(http_route::path_match::Kind::Prefix("/".to_string())),
        }),
        ..Default::default()
    }
}

/// The outbound policy of a service with no routes of its own.
pub fn outbound_policy(authority: &Authority, protocol: AppProtocol) -> outbound::OutboundPolicy {
    use outbound::proxy_protocol::{Detect, Http1, Http2, Kind, Opaque};
    let backend = backend(authority);
    let http = || vec![http_route(backend.clone())];
    let kind = match protocol {
        AppProtocol::Detect => Kind::Detect(Detect {
            timeout: duration(DETECT_TIMEOUT),
            opaque: Some(Opaque {
                routes: vec![opaque_route(backend.clone())],
            }),
            http1: Some(Http1 {
                routes: http(),
                failure_accrual: None,
            }),
            http2: Some(Http2 {
                routes: http(),
                failure_accrual: None,
            }),
        }),
        AppProtocol::Http1 => Kind::Http1(Http1 {
            routes: http(),
            failure_accrual: None,
        }),
        AppProtocol::Http2 => Kind::Http2(Http2 {
            routes: http(),
            failure_accrual: None,
        }),
        AppProtocol::Opaque => Kind::Opaque(Opaque {
            routes: vec![opaque_route(backend.clone())],
        }),
    };
    outbound::OutboundPolicy {
        metadata: service_meta(authority),
        protocol: Some(outbound::ProxyProtocol { kind: Some(kind) }),
    }
}

/// What an outbound lookup is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A connection's original destination.
    Addr(SocketAddr),
    /// A service by name.
    Service(Authority),
}

impl Target {
    /// Reads a lookup's target, refusing what the controller refuses;
    /// `name.ns.svc` is the name in `cluster_domain`.
    pub fn from_spec(spec: outbound::TrafficSpec, cluster_domain: &str) -> Result<Self, Status> {
        let Some(target) = spec.target else {
            return Err(Status::invalid_argument("target is required"));
        };
        check_workload(&spec.source_workload)?;
        match target {
            traffic_spec::Target::Addr(addr) => {
                // The conversion below keeps the port's low 16 bits.
                if addr.port > u32::from(u16::MAX) {
                    return Err(Status::invalid_argument("port outside valid range"));
                }
                let addr = SocketAddr::try_from(addr).map_err(|e| {
                    Status::invalid_argument(format!("failed to parse target addr: {e}"))
                })?;
                if addr.port() == 0 {
                    return Err(Status::invalid_argument("port cannot be zero"));
                }
                Ok(Self::Addr(addr))
            }
            traffic_spec::Target::Authority(name) => {
                // A fully qualified name's final dot is no part of it, and
                // `name.ns.svc` (as `linkerd diagnostics policy` asks) is
                // the name in the cluster domain.
                let full = |host: &str| {
                    let host = host.trim_end_matches('.');
                    if host.split('.').count() == 3 && host.ends_with(".svc") {
                        format!("{host}.{cluster_domain}")
                    } else {
                        host.to_string()
                    }
                };
                let name = match name.split_once(':') {
                    Some((host, port)) => format!("{}:{port}", full(host)),
                    None => full(&name),
                };
                let with_port = if name
                    .rsplit_once(':')
                    .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                {
                    name.clone()
                } else {
                    format!("{name}:80")
                };
                match with_port.parse::<Authority>() {
                    Ok(a) if super::profiles::is_service_name(a.host()) => Ok(Self::Service(a)),
                    Ok(_) => Err(Status::not_found(
                        "authority must be of the form <name>.<namespace>.svc.<cluster-domain>",
                    )),
                    Err(_) => Err(Status::invalid_argument("invalid authority")),
                }
            }
        }
    }

    /// What of `table` its policy depends on: the service an address
    /// stands for and its protocol, or a name's own policy. A watch
    /// re-resolves only when this changes.
    fn view(&self, table: &Table) -> Option<(Authority, AppProtocol)> {
        match self {
            Self::Addr(addr) => table.by_addr(*addr).map(|(a, p)| (a.clone(), p)),
            Self::Service(a) => Some((a.clone(), table.named(a))),
        }
    }

    /// Its policy under `table`; `None` is `NotFound`.
    pub fn resolve(&self, table: &Table) -> Option<outbound::OutboundPolicy> {
        match self {
            Self::Addr(addr) => {
                let (authority, protocol) = table.by_addr(*addr)?;
                Some(outbound_policy(authority, protocol))
            }
            Self::Service(authority) => Some(outbound_policy(authority, table.named(authority))),
        }
    }
}

/// A stream of policies, as tonic serves it.
pub type PolicyStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The `OutboundPolicies` service over the mock's service policies.
#[derive(Clone)]
pub struct PolicyService {
    policies: Policies,
    cluster_domain: Arc<str>,
    shutdown: CancellationToken,
}

impl PolicyService {
    /// Serves `policies` (a lookup of `name.ns.svc` is the name in
    /// `cluster_domain`); every stream ends at `shutdown`.
    pub fn new(policies: Policies, cluster_domain: &str, shutdown: CancellationToken) -> Self {
        Self {
            policies,
            cluster_domain: cluster_domain.into(),
            shutdown,
        }
    }

    fn lookup(&self, spec: outbound::TrafficSpec) -> Result<Target, Status> {
        let target = Target::from_spec(spec, &self.cluster_domain)?;
        tracing::debug!(?target, "outbound policy lookup");
        Ok(target)
    }
}

/// An address no service holds (a name always resolves).
fn not_found(target: &Target) -> Status {
    tracing::debug!(?target, "no outbound policy");
    Status::not_found("No such service")
}

#[tonic::async_trait]
impl OutboundPolicies for PolicyService {
    async fn get(
        &self,
        request: Request<outbound::TrafficSpec>,
    ) -> Result<Response<outbound::OutboundPolicy>, Status> {
        let target = self.lookup(request.into_inner())?;
        let table = self.policies.table();
        target
            .resolve(&table)
            .map(Response::new)
            .ok_or_else(|| not_found(&target))
    }

    type WatchStream = PolicyStream<outbound::OutboundPolicy>;

    async fn watch(
        &self,
        request: Request<outbound::TrafficSpec>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let target = self.lookup(request.into_inner())?;
        let mut tables = self.policies.subscribe();
        let first = {
            let table = tables.borrow_and_update();
            target.resolve(&table).ok_or_else(|| not_found(&target))?
        };
        let shutdown = self.shutdown.clone();
        let seen = target.view(&tables.borrow());
        let later = futures::stream::unfold(
            (tables, seen, first.clone(), target),
            move |(mut tables, mut seen, last, target)| {
                let shutdown = shutdown.clone();
                async move {
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => return None,
                            changed = tables.changed() => changed.ok()?,
                        }
                        let table = tables.borrow_and_update().clone();
                        // Other services' changes are not this watch's.
                        let view = target.view(&table);
                        if view == seen {
                            continue;
                        }
                        seen = view;
                        // An address no service holds now ends the stream.
                        let next = target.resolve(&table)?;
                        if next != last {
                            return Some((Ok(next.clone()), (tables, seen, next, target)));
                        }
                    }
                }
            },
        );
        let stream = futures::stream::once(async move { Ok(first) }).chain(later);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// A proxy's workload, as the controller reads it: `{"ns":..,"pod":..}`
/// (or `"external_workload"` for the pod), or `ns:pod`.
#[derive(Deserialize)]
#[allow(dead_code)] // Read to be refused when malformed; not used.
struct Workload {
    ns: String,
    #[serde(flatten)]
    kind: WorkloadKind,
}

#[derive(Deserialize)]
#[allow(dead_code)]
enum WorkloadKind {
    #[serde(rename = "pod")]
    Pod(String),
    #[serde(rename = "external_workload")]
    External(String),
}

/// Whether `workload` is the JSON the controller reads:
/// `{"ns":..,"pod":..}` (or `"external_workload"`).
pub fn json_workload(workload: &str) -> bool {
    serde_json::from_str::<Workload>(workload).is_ok()
}

/// Whether the controller reads `workload`: its JSON, or `ns:pod`.
pub fn readable_workload(workload: &str) -> bool {
    if workload.starts_with('{') {
        json_workload(workload)
    } else {
        workload
            .split_once(':')
            .is_some_and(|(ns, pod)| !ns.is_empty() && !pod.is_empty())
    }
}

/// Refuses a workload the controller cannot read.
pub(super) fn check_workload(workload: &str) -> Result<(), Status> {
    if readable_workload(workload) {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "Invalid workload: {workload}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web(i: usize) -> Authority {
        format!("web-{i}.ns.svc.cluster.local:80").parse().unwrap()
    }

    #[test]
    fn protocols_are_read_by_their_names_and_as_a_services_app_protocol() {
        for (given, want) in [
            ("detect", AppProtocol::Detect),
            ("http1", AppProtocol::Http1),
            ("http", AppProtocol::Http1),
            ("http2", AppProtocol::Http2),
            ("kubernetes.io/h2c", AppProtocol::Http2),
            ("opaque", AppProtocol::Opaque),
            ("tcp", AppProtocol::Opaque),
            ("linkerd.io/opaque", AppProtocol::Opaque),
            ("linkerd.io/tcp", AppProtocol::Opaque),
        ] {
            assert_eq!(given.parse::<AppProtocol>(), Ok(want), "{given}");
            let json: AppProtocol = serde_json::from_str(&format!("\"{given}\"")).unwrap();
            assert_eq!(json, want, "{given} in JSON");
        }
        // Written by its own name.
        assert_eq!(
            serde_json::to_string(&AppProtocol::Opaque).unwrap(),
            "\"opaque\""
        );
        let refused = "udp".parse::<AppProtocol>().unwrap_err();
        assert_eq!(refused, UnknownProtocol("udp".into()));
        assert!(
            refused
                .to_string()
                .contains("give detect, http1, http2 or opaque")
        );
    }

    #[test]
    fn names_that_come_and_go_leave_the_table_as_it_was() {
        let policies = Policies::default();
        // A watcher holds the table, so every change copies it.
        let _held = policies.subscribe();
        for i in 0..100 {
            let policy = ServicePolicy {
                addresses: BTreeSet::from([format!("10.96.0.{i}:80").parse().unwrap()]),
                protocol: AppProtocol::Detect,
            };
            policies.set(&web(i), policy).unwrap();
            assert!(policies.delete(&web(i)));
        }
        assert_eq!(*policies.table(), Table::default());
    }

    #[test]
    fn a_deleted_protocol_answers_by_name_until_the_name_is_set_again() {
        let policies = Policies::default();
        let opaque = ServicePolicy {
            protocol: AppProtocol::Opaque,
            ..Default::default()
        };
        policies.set(&web(0), opaque).unwrap();
        assert!(policies.delete(&web(0)));
        assert!(!policies.delete(&web(0)));
        let table = policies.table();
        assert_eq!(table.service(&web(0)), None);
        assert_eq!(table.named(&web(0)), AppProtocol::Opaque);
        assert_eq!(table.named(&web(1)), AppProtocol::Detect);
        policies.set(&web(0), ServicePolicy::default()).unwrap();
        assert!(policies.delete(&web(0)));
        assert_eq!(*policies.table(), Table::default());
    }
}
