//! The handle that changes the mock's destinations, and the feed of those
//! changes.

use std::{net::SocketAddr, sync::Arc};

use super::{
    inbound::{Inbound, InboundPolicies, InboundPolicy, PortZero},
    metrics::Metrics,
    policy::{Policies, PolicyError, ServicePolicy},
    profiles::{ProfileSpec, Profiles},
    store::{Change, Store},
};
use crate::target::Authority;

/// Changes the mock's destinations while it serves. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Handle {
    pub(super) store: Store,
    pub(super) metrics: Metrics,
    pub(super) profiles: Profiles,
    pub(super) policies: Policies,
    pub(super) inbound: Inbound,
    feed: tokio::sync::broadcast::Sender<(Authority, Arc<Change>)>,
}

/// Changes kept for a slow reader of [`Handle::changes`] before it lags.
const CHANGE_FEED_CAPACITY: usize = 65_536;

impl Handle {
    pub(super) fn new(metrics: Metrics) -> Self {
        Self {
            store: Store::default(),
            metrics,
            profiles: Profiles::default(),
            policies: Policies::default(),
            inbound: Inbound::default(),
            feed: tokio::sync::broadcast::channel(CHANGE_FEED_CAPACITY).0,
        }
    }

    /// Replaces a destination's endpoints, creating it if needed.
    pub fn set(
        &self,
        authority: &Authority,
        endpoints: impl IntoIterator<Item = SocketAddr>,
    ) -> Arc<Change> {
        self.publish(authority, self.store.set(authority, endpoints))
    }

    /// Adds and removes endpoints.
    pub fn patch(
        &self,
        authority: &Authority,
        add: &[SocketAddr],
        remove: &[SocketAddr],
    ) -> Arc<Change> {
        self.publish(authority, self.store.patch(authority, add, remove))
    }

    /// Deletes a destination; `None` if it never existed.
    pub fn delete(&self, authority: &Authority) -> Option<Arc<Change>> {
        let change = self.store.delete(authority)?;
        Some(self.publish(authority, change))
    }

    fn publish(&self, authority: &Authority, change: Arc<Change>) -> Arc<Change> {
        self.metrics.changes.inc();
        // Nobody listening is fine.
        let _ = self.feed.send((authority.clone(), change.clone()));
        change
    }

    /// Every change from now on, with its destination and timestamp.
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<(Authority, Arc<Change>)> {
        self.feed.subscribe()
    }

    /// Sets the profile of a service (`svc.ns.svc.domain`, every port):
    /// its `GetProfile` streams get it at once.
    pub fn set_profile(&self, host: &str, spec: ProfileSpec) {
        self.profiles.set(host, Some(spec));
    }

    /// Deletes a service's profile: its streams get the default one.
    pub fn delete_profile(&self, host: &str) {
        self.profiles.set(host, None);
    }

    /// Every profile change from now on (set or deleted), with its time.
    pub fn profile_changes(
        &self,
    ) -> tokio::sync::broadcast::Receiver<Arc<super::profiles::ProfileChange>> {
        self.profiles.changes()
    }

    /// A service's profile, if one is set.
    pub fn profile(&self, host: &str) -> Option<ProfileSpec> {
        self.profiles.get(host)
    }

    /// Every profile set, by service.
    pub fn profiles(&self) -> Vec<(String, ProfileSpec)> {
        self.profiles.list()
    }

    /// Sets a service's policy: the addresses that stand for it (as its
    /// ClusterIP does) and its protocol. Its outbound watches get it at once.
    pub fn set_policy(
        &self,
        authority: &Authority,
        policy: ServicePolicy,
    ) -> Result<(), PolicyError> {
        self.policies.set(authority, policy)
    }

    /// Deletes a service's policy; `false` if it had none.
    pub fn delete_policy(&self, authority: &Authority) -> bool {
        self.policies.delete(authority)
    }

    /// A service's policy, if one is set.
    pub fn policy(&self, authority: &Authority) -> Option<ServicePolicy> {
        self.policies.get(authority)
    }

    /// Replaces every inbound policy: the default and each port's own;
    /// port 0 is refused and nothing changes.
    pub fn set_inbound(&self, policies: InboundPolicies) -> Result<(), PortZero> {
        self.inbound.set(policies)
    }

    /// Gives a port an inbound policy of its own; port 0 is refused.
    pub fn set_inbound_port(&self, port: u16, policy: InboundPolicy) -> Result<(), PortZero> {
        self.inbound.set_port(port, policy)
    }

    /// Returns a port to the default inbound policy; `false` if it had
    /// none of its own.
    pub fn clear_inbound_port(&self, port: u16) -> bool {
        self.inbound.clear_port(port)
    }

    /// The inbound policies now.
    pub fn inbound(&self) -> InboundPolicies {
        self.inbound.get()
    }

    /// Every service policy set, by service.
    pub fn policies(&self) -> Vec<(Authority, ServicePolicy)> {
        self.policies.list()
    }

    /// A destination's endpoints, if it exists.
    pub fn get(&self, authority: &Authority) -> Option<Vec<SocketAddr>> {
        self.store.get(authority)
    }

    /// Every existing destination and its endpoints.
    pub fn list(&self) -> Vec<(Authority, Vec<SocketAddr>)> {
        self.store.list()
    }

    /// The metrics handles.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}
