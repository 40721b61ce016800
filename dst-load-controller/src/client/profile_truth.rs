//! The ground truth of `GetProfile` streams by service name: each service's
//! ServiceProfile (`{service}.{namespace}.svc.{domain}` in its namespace)
//! gives the routes its streams should show, none without one (the
//! default profile). A change stamped by churn
//! (`dst-load.linkerd.io/profile-changed-at`) is timed to each stream that
//! shows it.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;

use super::{metrics::ProfileMetrics, profile::ProfileFleet};
use crate::{
    crds::ServiceProfile,
    labels,
    watch::{Change, Driver},
};

/// The retry ratio of the controller's default budget (a service without a
/// ServiceProfile, or one without a budget).
pub const DEFAULT_RETRY_RATIO: f32 = 0.2;

/// A ServiceProfile as the truth keeps it: its routes, its retry ratio and
/// when they were last changed.
#[derive(Clone, Debug, PartialEq)]
pub struct Routes {
    /// The route names, in order.
    pub names: Vec<String>,
    /// The retry budget's ratio.
    pub retry_ratio: f32,
    /// The change's stamp, when churn made it.
    pub at: Option<SystemTime>,
}

impl Routes {
    /// A service without a profile: no routes, the default retry ratio.
    pub fn none() -> Self {
        Self {
            names: Vec::new(),
            retry_ratio: DEFAULT_RETRY_RATIO,
            at: None,
        }
    }

    /// From a ServiceProfile.
    pub fn of(sp: &ServiceProfile) -> Self {
        let at = sp
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(labels::PROFILE_CHANGED_AT))
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(SystemTime::from);
        Self {
            names: sp.spec.routes.iter().map(|r| r.name.clone()).collect(),
            retry_ratio: sp
                .spec
                .retry_budget
                .as_ref()
                // As the controller reads it.
                .map_or(DEFAULT_RETRY_RATIO, |b| b.retry_ratio as f32),
            at,
        }
    }
}

/// The host a profile target names (`svc.ns.svc.domain:port` without its port).
pub fn host_of(target: &str) -> &str {
    target.rsplit_once(':').map_or(target, |(host, _)| host)
}

/// The routes every service-name stream should show, by host, as a source
/// of truth tells them (the Kubernetes API's ServiceProfiles, a mock's
/// profile feed), and the streams of a fleet judged and timed against them.
pub struct RoutesTruth {
    fleet: Arc<ProfileFleet>,
    metrics: ProfileMetrics,
    /// Host (`svc.ns.svc.domain`) -> its routes; a host without an entry
    /// has the default profile (no routes).
    by_host: BTreeMap<String, Routes>,
    /// Host -> its routes before its last change: the first truth of
    /// streams the fleet gained since the last [`apply`](Self::apply), so
    /// that the change is timed on them too.
    before: BTreeMap<String, Routes>,
}

impl RoutesTruth {
    /// Nothing known yet about `fleet`'s services.
    pub fn new(fleet: Arc<ProfileFleet>, metrics: ProfileMetrics) -> Self {
        Self {
            fleet,
            metrics,
            by_host: BTreeMap::new(),
            before: BTreeMap::new(),
        }
    }

    /// Sets the routes of `host`'s profile (`None`: it has none, the
    /// default profile); [`apply`](Self::apply) hands them to the streams.
    pub fn set(&mut self, host: String, routes: Option<Routes>) {
        let was = match routes {
            Some(r) => self.by_host.insert(host.clone(), r),
            None => self.by_host.remove(&host),
        };
        self.before.insert(host, was.unwrap_or_else(Routes::none));
    }

    /// Forgets every host's routes (before reading them all again).
    pub fn clear(&mut self) {
        self.by_host.clear();
        self.before.clear();
    }

    /// Tells every stream what its service's profile should show now (a
    /// stream opened since the last call included), and records the
    /// latency of every stamped change a stream shows.
    pub fn apply(&self) {
        for streams in self.fleet.all() {
            let host = host_of(&streams.target);
            if streams.want().is_none()
                && let Some(b) = self.before.get(host)
            {
                // New since the last change of its service: what it was
                // before the change first (not a change), then the change.
                streams.set_routes(b.names.clone(), b.retry_ratio, None);
            }
            let want = self.by_host.get(host);
            let (names, ratio, at) = want.map_or((Vec::new(), DEFAULT_RETRY_RATIO, None), |r| {
                (r.names.clone(), r.retry_ratio, r.at)
            });
            for latency in streams.set_routes(names, ratio, at) {
                self.metrics.update_latency.record(latency);
            }
        }
    }
}

/// A source of truth for `GetProfile` streams by service name: what routes
/// each service's profile has, and when they changed.
pub trait ProfileTruth: Send + Sync + 'static {
    /// Sets the routes of `truth`'s services as they change (applying them
    /// to its streams, those opened later too), until `stop`.
    fn follow(
        self: Box<Self>,
        truth: RoutesTruth,
        stop: CancellationToken,
    ) -> futures::future::BoxFuture<'static, ()>;
}

/// The ServiceProfiles of `namespaces` through the Kubernetes API.
pub struct Kubernetes {
    /// The API client.
    pub client: kube::Client,
    /// The namespaces followed.
    pub namespaces: BTreeSet<String>,
}

impl ProfileTruth for Kubernetes {
    fn follow(
        self: Box<Self>,
        truth: RoutesTruth,
        stop: CancellationToken,
    ) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(follow(self.client, self.namespaces, truth, stop))
    }
}

/// Follows the ServiceProfiles of `namespaces` until `stop`, setting the
/// routes every service stream should show (re-applied every second for
/// streams opened since) and timing each change shown.
async fn follow(
    kube: kube::Client,
    namespaces: BTreeSet<String>,
    mut truth: RoutesTruth,
    stop: CancellationToken,
) {
    let streams = namespaces.iter().map(|ns| {
        let api: kube::Api<ServiceProfile> = kube::Api::namespaced(kube.clone(), ns);
        let ns = ns.clone();
        watcher(api, crate::kube_api::watch_config())
            .default_backoff()
            .map(move |e| (ns.clone(), e))
            .boxed()
    });
    let mut events = futures::stream::select_all(streams);
    let mut drivers: BTreeMap<String, Driver<ServiceProfile>> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut missing_crd_logged = false;
    // Namespaces whose profiles were listed: nothing is judged before all
    // were (a service would seem to have none, then to change).
    let mut listed: BTreeSet<String> = BTreeSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            Some((ns, event)) = events.next() => {
                let event = match event {
                    Ok(e) => e,
                    Err(error) => {
                        if !missing_crd_logged {
                            tracing::warn!(%error, "ServiceProfile watch failed (no Linkerd CRDs?); retrying");
                            missing_crd_logged = true;
                        }
                        continue;
                    }
                };
                let driver = drivers.entry(ns.clone()).or_default();
                let batch = driver.event(event);
                // An empty first list yields no batch, but is a list.
                if driver.lists() > 0 {
                    listed.insert(ns.clone());
                }
                let Some(batch) = batch else {
                    continue;
                };
                for change in batch.changes {
                    match change {
                        Change::Apply(sp) => {
                            let name = sp.metadata.name.clone().unwrap_or_default();
                            // Only a service's own profile (not another
                            // namespace's override of it).
                            if name.split('.').nth(1) == Some(ns.as_str()) {
                                truth.set(name, Some(Routes::of(&sp)));
                            }
                        }
                        Change::Delete(key) => truth.set(key.name, None),
                    }
                }
            }
        }
        if listed.len() == namespaces.len() {
            truth.apply();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_target_names_its_service_host() {
        assert_eq!(
            host_of("web.ns.svc.cluster.local:8080"),
            "web.ns.svc.cluster.local"
        );
        assert_eq!(
            host_of("web.ns.svc.cluster.local"),
            "web.ns.svc.cluster.local"
        );
    }

    #[test]
    fn routes_and_their_stamp_come_from_the_profile() {
        let route = |name: &str| crate::crds::RouteSpec {
            name: name.to_string(),
            ..Default::default()
        };
        let mut sp = ServiceProfile::new(
            "web.ns.svc.cluster.local",
            crate::crds::ServiceProfileSpec {
                routes: vec![route("route-0"), route("route-1")],
                retry_budget: None,
            },
        );
        sp.metadata.annotations = Some(
            [(
                labels::PROFILE_CHANGED_AT.to_string(),
                "2026-12-06T10:00:00.5Z".to_string(),
            )]
            .into(),
        );
        let r = Routes::of(&sp);
        assert_eq!(r.names, ["route-0", "route-1"]);
        assert_eq!(r.retry_ratio, DEFAULT_RETRY_RATIO);
        assert_eq!(
            r.at,
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_551_200_500))
        );
    }
}
