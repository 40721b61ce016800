//! The ground truth from the Kubernetes API: EndpointSlices give each
//! Service's expected set; churn's `scaled-at` / `replicas` annotations on
//! Deployments say when the change that produced it was made.
//!
//! A slice change is attributed to the latest scale of its Deployment until
//! the set first reaches that scale's replica count; later changes (pod
//! restarts, evictions) are timed from when our watch saw them.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    sync::Arc,
    time::SystemTime,
};

use futures::StreamExt;
use k8s_openapi::api::{apps::v1::Deployment, discovery::v1::EndpointSlice};
use kube::{
    Api,
    runtime::{WatchStreamExt, watcher},
};
use tokio_util::sync::CancellationToken;

use super::fleet::Fleet;
use crate::{
    labels,
    slices::SliceSets,
    watch::{Batch, Change, Driver},
};

/// The latest scale of one Deployment.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Scale {
    at: SystemTime,
    replicas: usize,
    reached: bool,
}

/// Attributes slice changes to scales. Pure: the watcher loop feeds it.
#[derive(Debug, Default)]
pub struct Attribution {
    scales: HashMap<String, Scale>,
}

impl Attribution {
    /// Records a Deployment's annotations (a newer `scaled-at` starts a new scale).
    pub fn deployment(&mut self, d: &Deployment) {
        let Some(name) = d.metadata.name.clone() else {
            return;
        };
        let Some(ann) = d.metadata.annotations.as_ref() else {
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
        match self.scales.get(&name) {
            Some(s) if s.at >= at => {}
            _ => {
                self.scales.insert(
                    name,
                    Scale {
                        at,
                        replicas,
                        reached: false,
                    },
                );
            }
        }
    }

    /// Forgets a deleted Deployment's scale.
    pub fn forget(&mut self, name: &str) {
        self.scales.remove(name);
    }

    /// When the change that led a Service to `size` endpoints was made, given
    /// that our watch saw it at `seen_at`.
    pub fn changed_at(&mut self, service: &str, size: usize, seen_at: SystemTime) -> SystemTime {
        match self.scales.get_mut(service) {
            Some(s) if !s.reached => {
                s.reached = size == s.replicas;
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
    addrs: Vec<SocketAddr>,
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
    fleet: Arc<Fleet>,
    slices: Driver<EndpointSlice>,
    deployments: Driver<Deployment>,
    sets: SliceSets,
    attribution: Attribution,
    pending: HashMap<String, Pending>,
}

impl Follower {
    /// Sets the truth of every watched service in `namespace`
    /// (`{service}.{namespace}.svc.{cluster_domain}:*`).
    pub fn new(namespace: String, cluster_domain: String, fleet: Arc<Fleet>) -> Self {
        Self {
            namespace,
            cluster_domain,
            fleet,
            slices: Driver::new(),
            deployments: Driver::new(),
            sets: SliceSets::new(None),
            attribution: Attribution::default(),
            pending: HashMap::new(),
        }
    }

    /// Watches until `stop`.
    pub async fn follow(&mut self, kube: kube::Client, stop: CancellationToken) {
        let deployments: Api<Deployment> = Api::namespaced(kube.clone(), &self.namespace);
        let slices: Api<EndpointSlice> = Api::namespaced(kube, &self.namespace);
        let mut deploy_events =
            std::pin::pin!(watcher(deployments, watcher::Config::default()).default_backoff());
        let mut slice_events =
            std::pin::pin!(watcher(slices, watcher::Config::default()).default_backoff());
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                e = deploy_events.next() => match e {
                    Some(Ok(e)) => {
                        for c in self.deployments.event(e).map(|b| b.changes).unwrap_or_default() {
                            match c {
                                Change::Apply(d) => self.attribution.deployment(&d),
                                Change::Delete(k) => self.attribution.forget(&k.name),
                            }
                        }
                        continue;
                    }
                    Some(Err(error)) => tracing::warn!(%error, "deployment watch failed; retrying"),
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
            let addrs: Vec<_> = self.sets.addrs(&service).into_iter().collect();
            let timing = (!batch.relist).then(|| {
                let changed_at = self.attribution.changed_at(&service, addrs.len(), seen_at);
                (changed_at, seen_at)
            });
            self.pending.insert(service, Pending { addrs, timing });
        }
    }

    /// Hands computed truths to the services the fleet watches.
    fn publish(&mut self) {
        let services = self.fleet.services();
        let (namespace, domain) = (&self.namespace, &self.cluster_domain);
        self.pending.retain(|service, p| {
            let prefix = format!("{service}.{namespace}.svc.{domain}:");
            let mut watched = false;
            for s in services.iter().filter(|s| s.service.starts_with(&prefix)) {
                watched = true;
                match p.timing {
                    Some((changed_at, seen_at)) => {
                        s.set_truth_seen(p.addrs.iter().copied(), changed_at, Some(seen_at))
                    }
                    None => s.set_truth_unmeasured(p.addrs.iter().copied()),
                }
            }
            !watched
        });
    }
}

/// Follows `namespace` until `stop`: [`Follower::follow`] on a new follower.
pub async fn follow(
    kube: kube::Client,
    namespace: String,
    cluster_domain: String,
    fleet: Arc<Fleet>,
    stop: CancellationToken,
) {
    Follower::new(namespace, cluster_domain, fleet)
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

    #[test]
    fn attributes_slice_changes_to_the_scale_until_it_is_reached() {
        let mut a = Attribution::default();
        let t = |s: &str| SystemTime::from(s.parse::<jiff::Timestamp>().unwrap());
        a.deployment(&mk_deployment("svc", "2026-11-21T00:00:10.000000000Z", 3));
        let seen = t("2026-11-21T00:00:11Z");
        // Pods become ready one by one: each intermediate set is from the scale.
        assert_eq!(a.changed_at("svc", 2, seen), t("2026-11-21T00:00:10Z"));
        assert_eq!(a.changed_at("svc", 3, seen), t("2026-11-21T00:00:10Z"));
        // After the scale was reached, a change is not churn's: timed from when it was seen.
        assert_eq!(a.changed_at("svc", 2, seen), seen);
        // An older annotation (a stale watch event) does not reopen a scale.
        a.deployment(&mk_deployment("svc", "2026-11-21T00:00:05Z", 1));
        assert_eq!(a.changed_at("svc", 1, seen), seen);
        // Services churn does not scale are always timed from the watch.
        assert_eq!(a.changed_at("other", 1, seen), seen);
    }
}
