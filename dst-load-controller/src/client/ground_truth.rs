//! Where the client's ground truth comes from: one interface, [`GroundTruth`].
//! The client's own source is the Kubernetes API (EndpointSlices and churn's
//! stamps, [`Kubernetes`]); `run` against the embedded mock gives it the
//! mock's change feed (the harness's `MockFeed`). Either sets each watched
//! service's truth on the fleet as changes happen; the fleet times its
//! streams against it. `profile_truth::ProfileTruth` is the same for profile
//! streams by service name (ServiceProfiles, or the mock's profile feed).

use std::{collections::BTreeSet, sync::Arc};

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
