//! Serve a namespace's Services from the Kubernetes API, as the destination
//! controller does in its simplest form: each Service's first port, with the
//! ready addresses of its EndpointSlices. A stand-in where Linkerd's own
//! controller is not available; no topology, profiles or policy.

use std::collections::{BTreeSet, HashMap};

use futures::StreamExt;
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{
    Api,
    runtime::{WatchStreamExt, watcher},
};
use tokio_util::sync::CancellationToken;

use super::handle::Handle;
use crate::{
    slices::SliceSets,
    target::Authority,
    watch::{Change, Driver},
};

/// A namespace's Services and EndpointSlices as the mock's destinations.
/// Its state outlives any one watch: [`Follower::follow`] again resumes with
/// a fresh watch, whose re-list yields only what changed meanwhile (see
/// [`crate::watch`]): a Service or slice deleted while the watch was away is
/// removed then.
#[derive(Debug)]
pub struct Follower {
    namespace: String,
    cluster_domain: String,
    handle: Handle,
    services: Driver<Service>,
    slices: Driver<EndpointSlice>,
    sets: SliceSets,
    ports: HashMap<String, Authority>,
}

impl Follower {
    /// Keeps `handle`'s destinations equal to `namespace`'s Services' ready endpoints.
    pub fn new(namespace: String, cluster_domain: String, handle: Handle) -> Self {
        Self {
            namespace,
            cluster_domain,
            handle,
            services: Driver::new(),
            slices: Driver::new(),
            sets: SliceSets::new(None),
            ports: HashMap::new(),
        }
    }

    /// Watches until `stop`.
    pub async fn follow(&mut self, kube: kube::Client, stop: CancellationToken) {
        let services: Api<Service> = Api::namespaced(kube.clone(), &self.namespace);
        let slices: Api<EndpointSlice> = Api::namespaced(kube, &self.namespace);
        let mut service_events =
            std::pin::pin!(watcher(services, crate::kube_api::watch_config()).default_backoff());
        let mut slice_events =
            std::pin::pin!(watcher(slices, crate::kube_api::watch_config()).default_backoff());
        loop {
            let touched: BTreeSet<String> = tokio::select! {
                _ = stop.cancelled() => return,
                e = service_events.next() => match e {
                    Some(Ok(e)) => match self.services.event(e) {
                        Some(batch) => batch.changes.iter().filter_map(|c| self.service(c)).collect(),
                        None => continue,
                    },
                    Some(Err(error)) => { tracing::warn!(%error, "service watch failed; retrying"); continue }
                    None => return,
                },
                e = slice_events.next() => match e {
                    Some(Ok(e)) => match self.slices.event(e) {
                        Some(batch) => batch.changes.iter().filter_map(|c| self.sets.change(c)).collect(),
                        None => continue,
                    },
                    Some(Err(error)) => { tracing::warn!(%error, "endpointslice watch failed; retrying"); continue }
                    None => return,
                },
            };
            for name in touched {
                if let Some(a) = self.ports.get(&name) {
                    self.handle.set(a, self.sets.addrs(&name));
                }
            }
        }
    }

    /// Applies a Service change; returns the name to (re)serve, if any.
    fn service(&mut self, change: &Change<Service>) -> Option<String> {
        match change {
            Change::Apply(s) => {
                let name = s.metadata.name.clone()?;
                let port = s
                    .spec
                    .as_ref()
                    .and_then(|sp| sp.ports.as_ref())
                    .and_then(|p| p.first())
                    .and_then(|p| u16::try_from(p.port).ok())?;
                let host = format!("{name}.{}.svc.{}", self.namespace, self.cluster_domain);
                match Authority::new(&host, port) {
                    Ok(a) => {
                        self.ports.insert(name.clone(), a);
                        Some(name)
                    }
                    Err(error) => {
                        tracing::warn!(%error, "skipping service");
                        None
                    }
                }
            }
            Change::Delete(key) => {
                if let Some(a) = self.ports.remove(&key.name) {
                    self.handle.delete(&a);
                }
                None
            }
        }
    }
}

/// Follows `namespace` until `stop`: [`Follower::follow`] on a new follower.
pub async fn follow(
    kube: kube::Client,
    namespace: String,
    cluster_domain: String,
    handle: Handle,
    stop: CancellationToken,
) {
    Follower::new(namespace, cluster_domain, handle)
        .follow(kube, stop)
        .await
}
