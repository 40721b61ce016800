//! Profiles on the mock: what a service's profile is (a [`ProfileSpec`], set
//! by name in [`Profiles`]), how a `GetProfile` path is read, and the
//! message a service's profile makes. `profile_server` answers the streams,
//! as Linkerd's controller answers them where a proxy can tell:
//!
//! - by service name (`svc.ns.svc.domain[:port]`, port 80 when absent): the
//!   service's profile (its routes, retry budget, overrides and opaque flag,
//!   or the controller's default: no routes, a 20% / 10 per second / 10s
//!   retry budget), then the profile again whenever it is set or deleted; a
//!   service that exists without that port gets an empty profile; an unknown
//!   service is refused with `Unknown`, as the controller's lister error is;
//! - by a StatefulSet pod's name (`pod.svc.ns.svc.domain:port`): as by its
//!   address; an unknown pod is `NotFound`;
//! - by `IP:port` of a service (an address its policy gives, as a ClusterIP
//!   is): the service's profile, as by its name;
//! - by another `IP:port`: the endpoint with its pod's metadata (identity, protocol
//!   hint, labels) while a destination holds the address, a bare endpoint
//!   (weight 10000, no labels) when none does; the stream follows the
//!   address as it comes and goes, and a profile equal to the last one sent
//!   is not sent again.
//!
//! Every answer keeps the stream open until the client or the server ends
//! it; a full queue ends it with OK, as for `Get`.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use linkerd2_proxy_api::{
    destination::{
        DestinationProfile, PathMatch, RequestMatch, RetryBudget, Route, WeightedDst, request_match,
    },
    meta::{Metadata, Resource, metadata},
};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tonic::Status;

use crate::target::Authority;

/// A service's profile, as a ServiceProfile sets what a proxy sees of it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProfileSpec {
    /// Its routes, first match wins.
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// Its retry budget (default: the controller's).
    #[serde(default)]
    pub retry_budget: Option<RetryBudgetSpec>,
    /// Traffic split: requests go to these authorities by weight.
    #[serde(default)]
    pub dst_overrides: Vec<DstOverride>,
    /// Connections to it are opaque TCP.
    #[serde(default)]
    pub opaque_protocol: bool,
}

/// One route of a profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RouteSpec {
    /// Its name: the `route` metric label.
    pub name: String,
    /// The request method it matches, if any (`GET`, `POST`, ...).
    #[serde(default)]
    pub method: Option<String>,
    /// The request path it matches, a regular expression.
    pub path_regex: String,
    /// Failed requests on it may be retried.
    #[serde(default)]
    pub retryable: bool,
    /// Its timeout.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

/// How many retries a proxy may add.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RetryBudgetSpec {
    /// Retries as a share of requests.
    pub retry_ratio: f32,
    /// Retries allowed per second whatever the ratio.
    pub min_retries_per_second: u32,
    /// The window the ratio is computed over.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

impl Default for RetryBudgetSpec {
    /// The controller's budget for services without their own.
    fn default() -> Self {
        Self {
            retry_ratio: 0.2,
            min_retries_per_second: 10,
            ttl: Duration::from_secs(10),
        }
    }
}

impl RetryBudgetSpec {
    /// The budget as the controller sends it.
    pub fn message(&self) -> RetryBudget {
        RetryBudget {
            retry_ratio: self.retry_ratio,
            min_retries_per_second: self.min_retries_per_second,
            ttl: Some(self.ttl.try_into().unwrap_or_default()),
        }
    }
}

/// One destination of a traffic split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DstOverride {
    /// `host:port` (port 80 when absent).
    pub authority: String,
    /// Its weight (10000 is one).
    pub weight: u32,
}

impl ProfileSpec {
    /// A profile of `routes` routes: `route-K`, GET `/api/route-K/[^/]*`,
    /// retryable, with a 1s timeout.
    pub fn generated(routes: u32) -> Self {
        Self {
            routes: (0..routes)
                .map(|k| RouteSpec {
                    name: format!("route-{k}"),
                    method: Some("GET".into()),
                    path_regex: format!("/api/route-{k}/[^/]*"),
                    retryable: true,
                    timeout: Some(Duration::from_secs(1)),
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Checks what the controller would refuse (it drops such a profile
    /// whole): an empty route name or path, an unknown method, a bad budget.
    pub fn validate(&self) -> Result<(), ProfileError> {
        for r in &self.routes {
            if r.name.is_empty() || r.path_regex.is_empty() {
                return Err(ProfileError::Route);
            }
            if let Some(m) = &r.method {
                http::Method::from_bytes(m.as_bytes()).map_err(|_| ProfileError::Method {
                    route: r.name.clone(),
                    method: m.clone(),
                })?;
            }
        }
        if let Some(b) = &self.retry_budget
            && !(b.retry_ratio.is_finite() && b.retry_ratio >= 0.0)
        {
            return Err(ProfileError::RetryRatio);
        }
        Ok(())
    }
}

/// A profile the controller would drop.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// A route with no name or no path.
    #[error("every route needs a name and a path-regex")]
    Route,
    /// A method HTTP has no such.
    #[error("route {route}: '{method}' is not an HTTP method")]
    Method {
        /// The route's name.
        route: String,
        /// As given.
        method: String,
    },
    /// A retry ratio that is no ratio.
    #[error("retry-ratio must be a non-negative number")]
    RetryRatio,
}

/// Every service's profile, set by name (`svc.ns.svc.domain`, no port: a
/// ServiceProfile covers every port), and the feed of their changes. Cheap
/// to clone.
#[derive(Clone, Debug)]
pub struct Profiles {
    by_host: Arc<RwLock<HashMap<String, watch::Sender<Set>>>>,
    feed: broadcast::Sender<Arc<ProfileChange>>,
}

/// A service's profile as set (none: the default).
pub(super) type Set = Option<Arc<ProfileSpec>>;

/// A profile set or deleted, and when: what the feed of
/// [`Profiles::changes`] carries.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileChange {
    /// The service (`svc.ns.svc.domain`).
    pub host: String,
    /// Its profile from then on (`None`: deleted, the default).
    pub profile: Option<Arc<ProfileSpec>>,
    /// When it was made (wall clock).
    pub at: SystemTime,
}

/// Profile changes kept for a slow reader of [`Profiles::changes`]: many
/// rounds of changes to every service a scenario may have.
const FEED_CAPACITY: usize = 65_536;

impl Default for Profiles {
    fn default() -> Self {
        Self {
            by_host: Arc::default(),
            feed: broadcast::channel(FEED_CAPACITY).0,
        }
    }
}

impl Profiles {
    /// Sets (`Some`) or deletes (`None`) the profile of `host`, and puts
    /// the change on the feed (in the order the profiles were set).
    pub fn set(&self, host: &str, spec: Option<ProfileSpec>) {
        // Stamped before any stream can see it: a stream answered at once
        // must not seem to have shown the change before it was made.
        let at = SystemTime::now();
        let spec = spec.map(Arc::new);
        let mut all = self.by_host.write().expect("profiles lock");
        match all.get(host) {
            Some(tx) => {
                tx.send_replace(spec.clone());
            }
            None => {
                all.insert(host.to_string(), watch::channel(spec.clone()).0);
            }
        }
        // Nobody listening is fine.
        let _ = self.feed.send(Arc::new(ProfileChange {
            host: host.to_string(),
            profile: spec,
            at,
        }));
    }

    /// Every change from now on.
    pub fn changes(&self) -> broadcast::Receiver<Arc<ProfileChange>> {
        self.feed.subscribe()
    }

    /// The profile of `host`, if one is set.
    pub fn get(&self, host: &str) -> Option<ProfileSpec> {
        let all = self.by_host.read().expect("profiles lock");
        all.get(host)?.borrow().as_deref().cloned()
    }

    /// Every profile set.
    pub fn list(&self) -> Vec<(String, ProfileSpec)> {
        let all = self.by_host.read().expect("profiles lock");
        let mut out: Vec<_> = all
            .iter()
            .filter_map(|(h, tx)| Some((h.clone(), tx.borrow().as_deref()?.clone())))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The profile of `host` as it changes.
    pub(super) fn watch(&self, host: &str) -> watch::Receiver<Set> {
        if let Some(tx) = self.by_host.read().expect("profiles lock").get(host) {
            return tx.subscribe();
        }
        let mut all = self.by_host.write().expect("profiles lock");
        all.entry(host.to_string())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }
}

/// Whether `host` names a service (`svc.ns.svc.domain`): what a profile
/// is set for.
pub fn is_service_name(host: &str) -> bool {
    host.split_once(".svc.").is_some_and(|(before, domain)| {
        before.split('.').count() == 2 && !before.starts_with('.') && !domain.is_empty()
    })
}

/// What a `GetProfile` path asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Lookup {
    /// A service by name.
    Service(Authority),
    /// A StatefulSet pod by name: `pod.svc.ns.svc.domain:port`.
    Pod(Authority),
    /// An address.
    Ip(SocketAddr),
}

/// Parses a `GetProfile` path as the controller does: port 80 when absent,
/// an IP literal is an address lookup, a name has two labels (service and
/// namespace) or three (a pod's hostname first) before `svc.`.
pub fn parse_profile_path(path: &str) -> Result<Lookup, Status> {
    let shown = super::codec::echoed(path);
    let invalid =
        |why: &str| Status::invalid_argument(format!("invalid authority: {shown}: {why}"));
    if shown.len() != path.len() {
        return Err(invalid("longer than any name and port"));
    }
    let (host, port) = match path.strip_prefix('[') {
        Some(v6) => {
            let (ip, rest) = v6.split_once(']').ok_or_else(|| invalid("unclosed '['"))?;
            (ip, rest.strip_prefix(':').unwrap_or("80"))
        }
        None => match path.split_once(':') {
            Some((h, p)) => (h, p),
            None => (path, "80"),
        },
    };
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| invalid("the port is not a number from 1 to 65535"))?;
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(Lookup::Ip(SocketAddr::new(ip, port)));
    }
    let labels = host.split_once(".svc.").map(|(before, domain)| {
        (
            before.split('.').filter(|l| !l.is_empty()).count(),
            domain.is_empty(),
        )
    });
    let authority = || -> Result<Authority, Status> {
        format!("{host}:{port}")
            .parse()
            .map_err(|e| invalid(&format!("{e}")))
    };
    match labels {
        Some((2, false)) => Ok(Lookup::Service(authority()?)),
        Some((3, false)) => Ok(Lookup::Pod(authority()?)),
        _ => Err(Status::invalid_argument(format!(
            "invalid service {}: not a name of the form <svc>.<ns>.svc.<cluster-domain>",
            super::codec::echoed(host)
        ))),
    }
}

/// The profile of a service that exists with this port.
pub fn service_profile(authority: &Authority, spec: Option<&ProfileSpec>) -> DestinationProfile {
    let host = authority.host();
    let mut labels = host.split('.');
    let (name, namespace) = (
        labels.next().unwrap_or_default().to_string(),
        labels.next().unwrap_or_default().to_string(),
    );
    let default = ProfileSpec::default();
    let given = spec.unwrap_or(&default);
    DestinationProfile {
        fully_qualified_name: host.to_string(),
        opaque_protocol: given.opaque_protocol,
        routes: given.routes.iter().map(route).collect(),
        retry_budget: Some(given.retry_budget.unwrap_or_default().message()),
        dst_overrides: given
            .dst_overrides
            .iter()
            .map(|d| WeightedDst {
                authority: if d.authority.contains(':') {
                    d.authority.clone()
                } else {
                    format!("{}:80", d.authority)
                },
                weight: d.weight,
                backend_ref: None,
            })
            .collect(),
        endpoint: None,
        parent_ref: Some(resource(
            "core",
            "Service",
            &name,
            &namespace,
            authority.port(),
        )),
        // Set even without a ServiceProfile, its fields then empty (as the
        // controller does).
        profile_ref: Some(match spec {
            Some(_) => resource("linkerd.io", "ServiceProfile", host, &namespace, 0),
            None => resource("linkerd.io", "", "", "", 0),
        }),
    }
}

fn resource(group: &str, kind: &str, name: &str, namespace: &str, port: u16) -> Metadata {
    Metadata {
        kind: Some(metadata::Kind::Resource(Resource {
            group: group.into(),
            kind: kind.into(),
            name: name.into(),
            namespace: namespace.into(),
            section: String::new(),
            port: port.into(),
        })),
    }
}

fn route(r: &RouteSpec) -> Route {
    let path = RequestMatch {
        r#match: Some(request_match::Match::Path(PathMatch {
            regex: r.path_regex.clone(),
        })),
    };
    let method = r
        .method
        .as_deref()
        .and_then(|m| http::Method::from_bytes(m.as_bytes()).ok())
        .map(|m| RequestMatch {
            r#match: Some(request_match::Match::Method(m.into())),
        });
    // Several conditions are all required, the method's first.
    let condition = match method {
        Some(method) => RequestMatch {
            r#match: Some(request_match::Match::All(request_match::Seq {
                matches: vec![method, path],
            })),
        },
        None => path,
    };
    Route {
        condition: Some(condition),
        response_classes: Vec::new(),
        metrics_labels: HashMap::from([("route".to_string(), r.name.clone())]),
        is_retryable: r.retryable,
        timeout: r.timeout.and_then(|t| t.try_into().ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_as_the_controller_parses_them() {
        let svc = |s: &str| Lookup::Service(s.parse().unwrap());
        assert_eq!(
            parse_profile_path("web.ns.svc.cluster.local").unwrap(),
            svc("web.ns.svc.cluster.local:80")
        );
        assert_eq!(
            parse_profile_path("web.ns.svc.example.org:8080").unwrap(),
            svc("web.ns.svc.example.org:8080")
        );
        assert_eq!(
            parse_profile_path("web-0.web.ns.svc.cluster.local:8080").unwrap(),
            Lookup::Pod("web-0.web.ns.svc.cluster.local:8080".parse().unwrap())
        );
        assert_eq!(
            parse_profile_path("10.1.2.3:9090").unwrap(),
            Lookup::Ip("10.1.2.3:9090".parse().unwrap())
        );
        assert_eq!(
            parse_profile_path("10.1.2.3").unwrap(),
            Lookup::Ip("10.1.2.3:80".parse().unwrap())
        );
        assert_eq!(
            parse_profile_path("[fd00::1]:9090").unwrap(),
            Lookup::Ip("[fd00::1]:9090".parse().unwrap())
        );
        for bad in [
            "web.ns.svc.cluster.local:0",
            "web.ns.svc.cluster.local:99999",
            "web.ns.svc.cluster.local:",
            "web.svc.cluster.local:80",
            "a.b.c.d.svc.cluster.local:80",
            "web.ns.svc.:80",
            "example.com:443",
            "[fd00::1:80",
        ] {
            let e = parse_profile_path(bad).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn a_profile_spec_is_checked_as_the_controller_would() {
        let mut spec = ProfileSpec {
            routes: vec![RouteSpec {
                name: "r".into(),
                method: Some("GET".into()),
                path_regex: "/".into(),
                retryable: false,
                timeout: None,
            }],
            ..Default::default()
        };
        spec.validate().unwrap();
        spec.routes[0].method = Some("G E T".into());
        assert!(
            spec.validate()
                .unwrap_err()
                .to_string()
                .contains("not an HTTP method")
        );
        spec.routes[0].method = None;
        spec.routes[0].path_regex.clear();
        assert!(
            spec.validate()
                .unwrap_err()
                .to_string()
                .contains("path-regex")
        );
        let budget = ProfileSpec {
            retry_budget: Some(RetryBudgetSpec {
                retry_ratio: -1.0,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(budget.validate().is_err());
        // Without a profile: the parent, the controller's budget, an empty
        // profile reference.
        let p = service_profile(&"web.ns.svc.cluster.local:80".parse().unwrap(), None);
        assert_eq!(p.fully_qualified_name, "web.ns.svc.cluster.local");
        assert_eq!(p.retry_budget.unwrap().min_retries_per_second, 10);
        let Some(metadata::Kind::Resource(r)) = p.profile_ref.unwrap().kind else {
            panic!("a resource")
        };
        assert_eq!((r.group.as_str(), r.kind.as_str()), ("linkerd.io", ""));
    }
}
