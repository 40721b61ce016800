//! The ground truth from the Kubernetes API: EndpointSlices give each
//! Service's expected set; churn's `scaled-at` / `replicas` annotations on
//! Deployments say when the change that produced it was made.
//!
//! A slice change is attributed to the latest scale of its Deployment until
//! the set first reaches that scale's replica count; later changes (pod
//! restarts, evictions) are timed from when our watch saw them.

use std::{collections::HashMap, sync::Arc, time::SystemTime};

use futures::StreamExt;
use k8s_openapi::api::{apps::v1::Deployment, discovery::v1::EndpointSlice};
use kube::{
    Api,
    runtime::{WatchStreamExt, watcher},
};
use tokio_util::sync::CancellationToken;

use super::Fleet;
use crate::{labels, slices::SliceSets};

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

/// Follows `namespace` until `stop`, setting the truth of every watched
/// service there (`{service}.{namespace}.svc.{cluster_domain}:*`).
pub async fn follow(
    kube: kube::Client,
    namespace: String,
    cluster_domain: String,
    fleet: Arc<Fleet>,
    stop: CancellationToken,
) {
    let deployments: Api<Deployment> = Api::namespaced(kube.clone(), &namespace);
    let slices: Api<EndpointSlice> = Api::namespaced(kube, &namespace);
    let mut deploy_events =
        std::pin::pin!(watcher(deployments, watcher::Config::default()).default_backoff());
    let mut slice_events =
        std::pin::pin!(watcher(slices, watcher::Config::default()).default_backoff());
    let mut sets = SliceSets::new(None);
    let mut attribution = Attribution::default();
    // Truths computed for services the fleet does not watch yet (discovery
    // may add them later): applied on the next tick.
    let mut pending: HashMap<String, (Vec<std::net::SocketAddr>, SystemTime, SystemTime)> =
        HashMap::new();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    let host = |svc: &str| format!("{svc}.{namespace}.svc.{cluster_domain}:");
    loop {
        let changed = tokio::select! {
            _ = stop.cancelled() => return,
            e = deploy_events.next() => {
                match e {
                    Some(Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d))) => attribution.deployment(&d),
                    Some(Ok(_)) => {}
                    Some(Err(error)) => tracing::warn!(%error, "deployment watch failed; retrying"),
                    None => return,
                }
                continue;
            }
            e = slice_events.next() => match e {
                Some(Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s))) => sets.apply(&s),
                Some(Ok(watcher::Event::Delete(s))) => sets.delete(&s),
                Some(Ok(watcher::Event::Init)) => { sets.clear(); None }
                Some(Ok(watcher::Event::InitDone)) => None,
                Some(Err(error)) => { tracing::warn!(%error, "endpointslice watch failed; retrying"); None }
                None => return,
            },
            _ = tick.tick() => None,
        };
        if let Some(service) = changed {
            let seen_at = SystemTime::now();
            let addrs: Vec<_> = sets.addrs(&service).into_iter().collect();
            let changed_at = attribution.changed_at(&service, addrs.len(), seen_at);
            pending.insert(service, (addrs, changed_at, seen_at));
        }
        pending.retain(|service, (addrs, changed_at, seen_at)| {
            let prefix = host(service);
            let watched: Vec<_> = fleet
                .services()
                .into_iter()
                .filter(|s| s.service.starts_with(&prefix))
                .collect();
            for s in &watched {
                s.set_truth_seen(addrs.iter().copied(), *changed_at, Some(*seen_at));
            }
            watched.is_empty()
        });
    }
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
