//! Where the client's ground truth comes from: one interface, two sources.
//! The Kubernetes API (EndpointSlices and churn's stamps, [`Kubernetes`])
//! and a mock Destination server's change feed ([`MockFeed`]). Either sets
//! each watched service's truth on the fleet as changes happen; the fleet
//! times its streams against it.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::fleet::Fleet;

/// A source of ground truth.
pub trait GroundTruth: Send + Sync + 'static {
    /// Sets the truth of the fleet's services (including those that appear
    /// later) as it changes, until `stop`.
    fn follow(
        self: Box<Self>,
        fleet: Arc<Fleet>,
        stop: CancellationToken,
    ) -> BoxFuture<'static, ()>;
}

/// The Kubernetes API: EndpointSlices and churn's stamps in `namespaces`.
pub struct Kubernetes {
    /// The API client.
    pub client: kube::Client,
    /// The namespaces followed.
    pub namespaces: BTreeSet<String>,
    /// The cluster domain of the services' authorities.
    pub cluster_domain: String,
    /// The link whose mirrors name these services in the watched cluster
    /// (the API is then the linked target's): `{svc}-{link}` and
    /// `{svc}-federated` map to `{svc}`.
    pub link: Option<String>,
}

impl GroundTruth for Kubernetes {
    fn follow(
        self: Box<Self>,
        fleet: Arc<Fleet>,
        stop: CancellationToken,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let each = self.namespaces.into_iter().map(|namespace| {
                tracing::info!(%namespace, "following the ground truth");
                super::kube_truth::follow(
                    self.client.clone(),
                    namespace,
                    self.cluster_domain.clone(),
                    self.link.clone(),
                    fleet.clone(),
                    stop.clone(),
                )
            });
            futures::future::join_all(each).await;
        })
    }
}

/// A mock Destination server's change feed: every destination's set when
/// the feed was subscribed, then every change with its timestamp.
pub struct MockFeed {
    feed: tokio::sync::broadcast::Receiver<(
        crate::target::Authority,
        Arc<crate::mock::store::Change>,
    )>,
    expected: HashMap<String, BTreeSet<SocketAddr>>,
}

impl MockFeed {
    /// Subscribes to `handle`'s feed now: no change made after this call is
    /// missed.
    pub fn new(handle: &crate::mock::Handle) -> Self {
        let feed = handle.changes();
        let expected = handle
            .list()
            .into_iter()
            .map(|(authority, endpoints)| (authority.to_string(), endpoints.into_iter().collect()))
            .collect();
        Self { feed, expected }
    }
}

impl GroundTruth for MockFeed {
    fn follow(
        mut self: Box<Self>,
        fleet: Arc<Fleet>,
        stop: CancellationToken,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            // A service the fleet starts watching gets the set as it stands
            // (its first truth, which times nothing); after that, each change.
            let seed = |expected: &HashMap<String, BTreeSet<SocketAddr>>| {
                for s in fleet.services().iter().filter(|s| !s.truth.is_known()) {
                    if let Some(set) = expected.get(&s.service) {
                        s.set_truth(set.iter().copied(), SystemTime::now());
                    }
                }
            };
            seed(&self.expected);
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => return,
                    event = self.feed.recv() => match event {
                        Ok((authority, change)) => {
                            let key = authority.to_string();
                            let set = self.expected.entry(key.clone()).or_default();
                            let service = fleet.get(&key);
                            if let Some(s) = service.as_ref().filter(|s| !s.truth.is_known()) {
                                // Watched since the last tick: its set before
                                // this change first.
                                s.set_truth(set.iter().copied(), SystemTime::now());
                            }
                            set.extend(change.added.iter().copied());
                            for a in &change.removed {
                                set.remove(a);
                            }
                            if let Some(s) = service {
                                s.set_truth(set.iter().copied(), change.at);
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(
                                missed = n,
                                "change feed lagged; latencies of those changes are not measured"
                            );
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                    _ = tick.tick() => seed(&self.expected),
                }
            }
        })
    }
}
