//! Serve a namespace's Services from the Kubernetes API, as the destination
//! controller does in its simplest form: each Service's first port, with the
//! ready addresses of its EndpointSlices. A stand-in where Linkerd's own
//! controller is not available; no topology, profiles or policy.

use std::collections::HashMap;

use futures::StreamExt;
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{
    Api,
    runtime::{WatchStreamExt, watcher},
};
use tokio_util::sync::CancellationToken;

use super::Handle;
use crate::{client::target::Authority, slices::SliceSets};

/// Follows `namespace` until `stop`, keeping `handle`'s destinations equal to
/// its Services' ready endpoints.
pub async fn follow(
    kube: kube::Client,
    namespace: String,
    cluster_domain: String,
    handle: Handle,
    stop: CancellationToken,
) {
    let services: Api<Service> = Api::namespaced(kube.clone(), &namespace);
    let slices: Api<EndpointSlice> = Api::namespaced(kube, &namespace);
    let mut service_events =
        std::pin::pin!(watcher(services, watcher::Config::default()).default_backoff());
    let mut slice_events =
        std::pin::pin!(watcher(slices, watcher::Config::default()).default_backoff());
    let mut sets = SliceSets::new(None);
    let mut ports: HashMap<String, Authority> = HashMap::new();
    loop {
        let (name, deleted) = tokio::select! {
            _ = stop.cancelled() => return,
            e = service_events.next() => match e {
                Some(Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s))) => {
                    let Some(name) = s.metadata.name.clone() else { continue };
                    let port = s.spec.as_ref().and_then(|sp| sp.ports.as_ref()).and_then(|p| p.first()).map(|p| p.port);
                    let Some(port) = port.and_then(|p| u16::try_from(p).ok()) else { continue };
                    match Authority::new(&format!("{name}.{namespace}.svc.{cluster_domain}"), port) {
                        Ok(a) => { ports.insert(name.clone(), a); }
                        Err(error) => { tracing::warn!(%error, "skipping service"); continue; }
                    }
                    (name, false)
                }
                Some(Ok(watcher::Event::Delete(s))) => match s.metadata.name { Some(n) => (n, true), None => continue },
                Some(Ok(_)) => continue,
                Some(Err(error)) => { tracing::warn!(%error, "service watch failed; retrying"); continue }
                None => return,
            },
            e = slice_events.next() => match e {
                Some(Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s))) => match sets.apply(&s) { Some(n) => (n, false), None => continue },
                Some(Ok(watcher::Event::Delete(s))) => match sets.delete(&s) { Some(n) => (n, false), None => continue },
                Some(Ok(_)) => continue,
                Some(Err(error)) => { tracing::warn!(%error, "endpointslice watch failed; retrying"); continue }
                None => return,
            },
        };
        if deleted {
            if let Some(a) = ports.remove(&name) {
                handle.delete(&a);
            }
        } else if let Some(a) = ports.get(&name) {
            handle.set(a, sets.addrs(&name));
        }
    }
}
