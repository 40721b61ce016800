//! The ground truth from the Kubernetes API: EndpointSlices give each
//! Service's expected set (and, by endpoint hostname, each per-pod
//! authority's); churn's `scaled-at` / `replicas` / `change` annotations on
//! Deployments and StatefulSets say when the change that produced it was made.
//!
//! A slice change is attributed to the latest change stamped on its
//! workload until the set first reaches what that change leads to: the
//! stamped count of endpoints and, for a restart, none of the addresses
//! held when the restart was seen. Later changes (pod restarts, evictions)
//! are timed from when our watch saw them.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    sync::Arc,
    time::SystemTime,
};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api,
    runtime::{WatchStreamExt, watcher},
};
use tokio_util::sync::CancellationToken;

use super::fleet::Fleet;
use crate::{
    labels,
    lean::{self, Lean, MetaOnly},
    slices::SliceSets,
    watch::{Batch, Change, Driver},
};

/// The latest change stamped on one service's workload.
#[derive(Clone, Debug, PartialEq)]
struct Scale {
    at: SystemTime,
    replicas: usize,
    /// For a restart: the addresses the service held when it was seen.
    replaced: Option<BTreeSet<SocketAddr>>,
    reached: bool,
}

/// Attributes slice changes to churn's changes. Pure: the watcher loop feeds it.
#[derive(Debug, Default)]
pub struct Attribution {
    scales: HashMap<String, Scale>,
    /// Each service's scale before its latest, while it was still in progress.
    previous: HashMap<String, Scale>,
    /// Each service's size at its last slice change.
    sizes: HashMap<String, usize>,
}

impl Attribution {
    /// Records a workload's stamp (a newer `scaled-at` starts a new change).
    /// `current` is the service's set now, which a restart must replace.
    /// The stamp names its Service in `dst-load.linkerd.io/service`, or the
    /// workload has the Service's name.
    pub fn workload(
        &mut self,
        meta: &ObjectMeta,
        current: impl FnOnce(&str) -> BTreeSet<SocketAddr>,
    ) {
        let Some(ann) = meta.annotations.as_ref() else {
            return;
        };
        let Some(service) = ann.get(labels::SERVICE).or(meta.name.as_ref()).cloned() else {
            return;
        };
        let (Some(at), Some(replicas)) = (ann.get(labels::SCALED_AT), ann.get(labels::REPLICAS))
        else {
            return;
        };
        let (Ok(at), Ok(replicas)) = (at.parse::<jiff::Timestamp>(), replicas.parse::<usize>())
        else {
            return;
        };
        let at = SystemTime::from(at);
        if self.scales.get(&service).is_some_and(|s| s.at >= at) {
            return;
        }
        let restart = ann.get(labels::CHANGE).map(String::as_str) == Some("restart");
        let replaced = restart.then(|| current(&service));
        let before = self.scales.insert(
            service.clone(),
            Scale {
                at,
                replicas,
                replaced,
                reached: false,
            },
        );
        // A scale still in progress keeps causing slice changes after the
        // next one is stamped (pods finishing their start or termination).
        match before.filter(|b| !b.reached) {
            Some(b) => self.previous.insert(service, b),
            None => self.previous.remove(&service),
        };
    }

    /// When the change that led a Service to `addrs` was made, given that
    /// our watch saw it at `seen_at`.
    pub fn changed_at(
        &mut self,
        service: &str,
        addrs: &BTreeSet<SocketAddr>,
        seen_at: SystemTime,
    ) -> SystemTime {
        let size = addrs.len();
        let before = self.sizes.insert(service.to_string(), size);
        let away =
            |target: usize| before.is_some_and(|b| size.abs_diff(target) > b.abs_diff(target));
        match self.scales.get_mut(service) {
            // A size moving away from the latest scale's target was not
            // caused by it: it is the previous scale still in progress (a
            // scale-down's last pods leaving after a scale-up was stamped).
            Some(s) if !s.reached && s.replaced.is_none() && away(s.replicas) => {
                match self.previous.get_mut(service) {
                    Some(p) if !p.reached => {
                        p.reached = size == p.replicas;
                        p.at
                    }
                    _ => seen_at,
                }
            }
            Some(s) if !s.reached => {
                s.reached = size == s.replicas
                    && s.replaced.as_ref().is_none_or(|old| old.is_disjoint(addrs));
                s.at
            }
            _ => seen_at,
        }
    }
}

/// A service's truth computed before the fleet watches it (discovery may
/// add it later): applied on the next tick.
#[derive(Debug)]
struct Pending {
    /// Ready addresses with their endpoints' hostnames.
    addrs: Vec<(SocketAddr, Option<String>)>,
    /// When the change was made and when our watch saw it; `None` for a
    /// change found by a re-list, which is not timed.
    timing: Option<(SystemTime, SystemTime)>,
}

/// The ground truth of one namespace, from its EndpointSlices and churn's
/// stamps on its Deployments. Its state outlives any one watch: calling
/// [`Follower::follow`] again resumes with a fresh watch, whose re-list
/// yields only what changed meanwhile (see [`crate::watch`]).
#[derive(Debug)]
pub struct Follower {
    namespace: String,
    cluster_domain: String,
    link: Option<String>,
    fleet: Arc<Fleet>,
    slices: Driver<EndpointSlice>,
    deployments: Driver<MetaOnly<Deployment>>,
    statefulsets: Driver<MetaOnly<StatefulSet>>,
    sets: SliceSets,
    attribution: Attribution,
    pending: HashMap<String, Pending>,
}

impl Follower {
    /// Sets the truth of every watched service in `namespace`
    /// (`{service}.{namespace}.svc.{cluster_domain}:*`), and of every
    /// per-pod authority (`{hostname}.{service}.{namespace}.svc.{cluster_domain}:*`:
    /// the endpoint with that hostname).
    pub fn new(namespace: String, cluster_domain: String, fleet: Arc<Fleet>) -> Self {
        Self {
            namespace,
            cluster_domain,
            link: None,
            fleet,
            slices: Driver::new(),
            deployments: Driver::new(),
            statefulsets: Driver::new(),
            sets: SliceSets::new(None),
            attribution: Attribution::default(),
            pending: HashMap::new(),
        }
    }

    /// Follows a linked (target) cluster: its services are watched under
    /// their mirrored names in the source, `{service}-{link}` (remote
    /// discovery) and `{service}-federated`, as well as their own.
    pub fn mirrored_by(mut self, link: Option<String>) -> Self {
        self.link = link;
        self
    }

    /// Watches until `stop`.
    pub async fn follow(&mut self, kube: kube::Client, stop: CancellationToken) {
        // Churn's stamps are the workloads' annotations: their metadata
        // alone is asked for. Nothing is decoded that is not read (see
        // `crate::lean`).
        let deployments: Api<MetaOnly<Deployment>> = Api::namespaced(kube.clone(), &self.namespace);
        let statefulsets: Api<MetaOnly<StatefulSet>> =
            Api::namespaced(kube.clone(), &self.namespace);
        let slices: Api<Lean<EndpointSlice>> = Api::namespaced(kube, &self.namespace);
        let mut deploy_events =
            std::pin::pin!(watcher(deployments, crate::kube_api::watch_config()).default_backoff());
        let mut sts_events = std::pin::pin!(
            watcher(statefulsets, crate::kube_api::watch_config()).default_backoff()
        );
        let mut slice_events = std::pin::pin!(
            watcher(slices, crate::kube_api::watch_config())
                .map_ok(lean::unwrap)
                .default_backoff()
        );
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        loop {
            // Stamps before slices: a workload event and the slice changes
            // it causes may be ready together, and a restart must know the
            // addresses it replaces before its first new pod is seen.
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                e = deploy_events.next() => match e {
                    Some(Ok(e)) => {
                        for c in self.deployments.event(e).map(|b| b.changes).unwrap_or_default() {
                            // A deleted workload's last stamp (an ephemeral
                            // service's deletion) still explains the slice
                            // changes that follow; a new stamp replaces it.
                            if let Change::Apply(d) = c {
                                self.attribution.workload(&d.metadata, |s| self.sets.addrs(s));
                            }
                        }
                        continue;
                    }
                    Some(Err(error)) => tracing::warn!(%error, "deployment watch failed; retrying"),
                    None => return,
                },
                e = sts_events.next() => match e {
                    Some(Ok(e)) => {
                        for c in self.statefulsets.event(e).map(|b| b.changes).unwrap_or_default() {
                            if let Change::Apply(s) = c {
                                self.attribution.workload(&s.metadata, |svc| self.sets.addrs(svc));
                            }
                        }
                        continue;
                    }
                    Some(Err(error)) => tracing::warn!(%error, "statefulset watch failed; retrying"),
                    None => return,
                },
                e = slice_events.next() => match e {
                    Some(Ok(e)) => if let Some(batch) = self.slices.event(e) {
                        self.slices_changed(batch);
                    },
                    Some(Err(error)) => tracing::warn!(%error, "endpointslice watch failed; retrying"),
                    None => return,
                },
                _ = tick.tick() => {}
            }
            self.publish();
        }
    }

    /// Recomputes the truth of each service a batch touched, once.
    fn slices_changed(&mut self, batch: Batch<EndpointSlice>) {
        let services: BTreeSet<String> = batch
            .changes
            .iter()
            .filter_map(|c| self.sets.change(c))
            .collect();
        let seen_at = SystemTime::now();
        for service in services {
            let hosts = self.sets.hosts(&service);
            let timing = (!batch.relist).then(|| {
                let addrs = hosts.keys().copied().collect();
                let changed_at = self.attribution.changed_at(&service, &addrs, seen_at);
                (changed_at, seen_at)
            });
            let addrs = hosts.into_iter().collect();
            self.pending.insert(service, Pending { addrs, timing });
        }
    }

    /// Hands computed truths to the services the fleet watches.
    fn publish(&mut self) {
        let services = self.fleet.services();
        let (namespace, domain) = (&self.namespace, &self.cluster_domain);
        let link = self.link.as_deref();
        self.pending.retain(|service, p| {
            let mut watched = false;
            for s in &services {
                let Some(host) = authority_of(&s.service, service, namespace, domain, link) else {
                    continue;
                };
                watched = true;
                let addrs = p
                    .addrs
                    .iter()
                    .filter(|(_, h)| host.is_none() || h.as_deref() == host)
                    .map(|(a, _)| *a);
                match p.timing {
                    Some((changed_at, seen_at)) => {
                        s.set_truth_seen(addrs, changed_at, Some(seen_at))
                    }
                    None => s.set_truth_unmeasured(addrs),
                }
            }
            !watched
        });
    }
}

/// Whether `authority` names `service` (`Some(None)`) or one of its pods by
/// hostname (`Some(Some(hostname))`) in `namespace`; `None` otherwise. With
/// a `link`, the service's mirrors in the source name it too:
/// `{service}-{link}` and `{service}-federated`.
fn authority_of<'a>(
    authority: &'a str,
    service: &str,
    namespace: &str,
    domain: &str,
    link: Option<&str>,
) -> Option<Option<&'a str>> {
    let (host, _port) = authority.rsplit_once(':')?;
    let name = host.strip_suffix(&format!(".{namespace}.svc.{domain}"))?;
    let names_service = |n: &str| {
        n == service
            || link.is_some_and(|link| {
                n.strip_prefix(service)
                    .and_then(|m| m.strip_prefix('-'))
                    .is_some_and(|mirror| mirror == link || mirror == "federated")
            })
    };
    if names_service(name) {
        return Some(None);
    }
    let (hostname, rest) = name.split_once('.')?;
    names_service(rest).then_some(Some(hostname))
}

/// Follows `namespace` until `stop`: [`Follower::follow`] on a new follower.
pub async fn follow(
    kube: kube::Client,
    namespace: String,
    cluster_domain: String,
    link: Option<String>,
    fleet: Arc<Fleet>,
    stop: CancellationToken,
) {
    Follower::new(namespace, cluster_domain, fleet)
        .mirrored_by(link)
        .follow(kube, stop)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_deployment(name: &str, at: &str, replicas: u32) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "annotations": {labels::SCALED_AT: at, labels::REPLICAS: replicas.to_string()}},
        }))
        .unwrap()
    }

    fn t(s: &str) -> SystemTime {
        SystemTime::from(s.parse::<jiff::Timestamp>().unwrap())
    }

    fn addrs(n: &[u8]) -> BTreeSet<SocketAddr> {
        n.iter()
            .map(|i| SocketAddr::from(([10, 0, 0, *i], 80)))
            .collect()
    }

    #[test]
    fn attributes_slice_changes_to_the_scale_until_it_is_reached() {
        let mut a = Attribution::default();
        let none = |_: &str| BTreeSet::new();
        a.workload(
            &mk_deployment("svc", "2026-11-21T00:00:10.000000000Z", 3).metadata,
            none,
        );
        let seen = t("2026-11-21T00:00:11Z");
        // Pods become ready one by one: each intermediate set is from the scale.
        assert_eq!(
            a.changed_at("svc", &addrs(&[1, 2]), seen),
            t("2026-11-21T00:00:10Z")
        );
        assert_eq!(
            a.changed_at("svc", &addrs(&[1, 2, 3]), seen),
            t("2026-11-21T00:00:10Z")
        );
        // After the scale was reached, a change is not churn's: timed from when it was seen.
        assert_eq!(a.changed_at("svc", &addrs(&[1, 2]), seen), seen);
        // An older annotation (a stale watch event) does not reopen a scale.
        a.workload(
            &mk_deployment("svc", "2026-11-21T00:00:05Z", 1).metadata,
            none,
        );
        assert_eq!(a.changed_at("svc", &addrs(&[1]), seen), seen);
        // Services churn does not scale are always timed from the watch.
        assert_eq!(a.changed_at("other", &addrs(&[1]), seen), seen);
    }

    /// Found by the red-line search against Linkerd's controller: a
    /// scale-down's last pod left just after the next scale-up was stamped,
    /// Linkerd's streams had it before our watch, and the slice change was
    /// timed from the scale-up (which it moves away from).
    #[test]
    fn a_previous_scale_still_in_progress_keeps_its_own_stamp() {
        let mut a = Attribution::default();
        let none = |_: &str| BTreeSet::new();
        let (down, up) = ("2026-11-21T00:00:10Z", "2026-11-21T00:00:15Z");
        let seen = t("2026-11-21T00:00:16Z");
        a.workload(
            &mk_deployment("svc", "2026-11-21T00:00:00Z", 4).metadata,
            none,
        );
        assert_eq!(
            a.changed_at("svc", &addrs(&[1, 2, 3, 4]), seen),
            t("2026-11-21T00:00:00Z")
        );
        // Down to 1: one pod left before the scale-up was stamped...
        a.workload(&mk_deployment("svc", down, 1).metadata, none);
        assert_eq!(a.changed_at("svc", &addrs(&[1, 2, 3]), seen), t(down));
        // ...the next two after: they are the scale-down's.
        a.workload(&mk_deployment("svc", up, 5).metadata, none);
        assert_eq!(a.changed_at("svc", &addrs(&[1, 2]), seen), t(down));
        assert_eq!(a.changed_at("svc", &addrs(&[1]), seen), t(down));
        // Then the scale-up's pods: the scale-up's.
        assert_eq!(a.changed_at("svc", &addrs(&[1, 6]), seen), t(up));
        assert_eq!(a.changed_at("svc", &addrs(&[1, 6, 7, 8, 9]), seen), t(up));
        // Reached: anything after is timed from the watch.
        assert_eq!(a.changed_at("svc", &addrs(&[1, 6, 7, 8]), seen), seen);
        // A shrink with no scale-down in progress, against a scale-up: not churn's.
        a.workload(
            &mk_deployment("svc", "2026-11-21T00:00:20Z", 6).metadata,
            none,
        );
        assert_eq!(a.changed_at("svc", &addrs(&[1, 6, 7]), seen), seen);
    }

    #[test]
    fn a_restart_is_reached_only_when_no_old_address_is_left() {
        let mut a = Attribution::default();
        let mut d = mk_deployment("svc", "2026-11-21T00:00:10Z", 2);
        d.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(labels::CHANGE.into(), "restart".into());
        a.workload(&d.metadata, |s| {
            assert_eq!(s, "svc");
            addrs(&[1, 2])
        });
        let (at, seen) = (t("2026-11-21T00:00:10Z"), t("2026-11-21T00:00:12Z"));
        // A surge, then one old pod gone: the count is back, an old one lingers.
        assert_eq!(a.changed_at("svc", &addrs(&[1, 2, 3]), seen), at);
        assert_eq!(a.changed_at("svc", &addrs(&[2, 3]), seen), at);
        // Every address replaced: reached.
        assert_eq!(a.changed_at("svc", &addrs(&[3, 4]), seen), at);
        assert_eq!(a.changed_at("svc", &addrs(&[3]), seen), seen);
    }

    #[test]
    fn statefulset_stamps_name_their_service() {
        let mut a = Attribution::default();
        let mut d = mk_deployment("sts-0", "2026-11-21T00:00:10Z", 1);
        d.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(labels::SERVICE.into(), "sts-svc-0".into());
        a.workload(&d.metadata, |_| BTreeSet::new());
        let seen = t("2026-11-21T00:00:12Z");
        assert_eq!(
            a.changed_at("sts-svc-0", &addrs(&[1]), seen),
            t("2026-11-21T00:00:10Z")
        );
    }

    #[test]
    fn authorities_name_a_service_or_one_of_its_pods() {
        let of = |a| authority_of(a, "sts-svc-0", "ns", "cluster.local", None);
        assert_eq!(of("sts-svc-0.ns.svc.cluster.local:8080"), Some(None));
        assert_eq!(
            of("sts-0-1.sts-svc-0.ns.svc.cluster.local:8080"),
            Some(Some("sts-0-1"))
        );
        assert_eq!(of("sts-svc-01.ns.svc.cluster.local:8080"), None);
        assert_eq!(of("x.sts-svc-1.ns.svc.cluster.local:8080"), None);
        assert_eq!(of("sts-svc-0.other.svc.cluster.local:8080"), None);
        assert_eq!(of("a.b.sts-svc-0.ns.svc.cluster.local:8080"), None);
        // Mirrors name it only when following a linked cluster.
        assert_eq!(of("sts-svc-0-target.ns.svc.cluster.local:8080"), None);
    }

    #[test]
    fn a_linked_clusters_services_are_named_by_their_mirrors() {
        let of = |a| authority_of(a, "web", "ns", "source.local", Some("target"));
        assert_eq!(of("web-target.ns.svc.source.local:8080"), Some(None));
        assert_eq!(of("web-federated.ns.svc.source.local:8080"), Some(None));
        assert_eq!(of("web.ns.svc.source.local:8080"), Some(None));
        assert_eq!(of("web-other.ns.svc.source.local:8080"), None);
        assert_eq!(of("web-target.ns.svc.target.local:8080"), None);
        assert_eq!(of("webx-target.ns.svc.source.local:8080"), None);
        assert_eq!(of("web-target.other.svc.source.local:8080"), None);
        // A pod of a headless service, resolved through the service's
        // remote-discovery mirror (the destination filters by hostname).
        assert_eq!(
            of("web-0.web-target.ns.svc.source.local:8080"),
            Some(Some("web-0"))
        );
        assert_eq!(of("web-0.web-other.ns.svc.source.local:8080"), None);
    }
}
