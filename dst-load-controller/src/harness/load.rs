//! What the plan's drive asks of a target: a [`Load`] serves the
//! destinations and changes them; the client and everything around it are
//! the same for every target.

use std::time::Duration;

use prometheus_client::registry::Registry;

use crate::{
    client::{self, Fleet},
    runtime::Runtime,
    scenario::Spec,
};

/// Who serves and changes the destinations of a run: the part of a scenario
/// that differs by [`Target`]. [`drive`] calls these in order.
pub(super) trait Load {
    /// Starts serving (the initial sets, no change yet); returns the
    /// client's configuration (its destination and targets) and its ground
    /// truth when the client does not read it from Kubernetes.
    /// Its metrics register into `registry`.
    async fn prepare(
        &mut self,
        rt: &mut Runtime,
        registry: &mut Registry,
        run: &Chosen<'_>,
    ) -> Result<Watched, super::error::Error>;

    /// With the client running: starts the changes.
    async fn begin(
        &mut self,
        rt: &Runtime,
        fleet: &Fleet,
        run: &Chosen<'_>,
    ) -> Result<(), super::error::Error>;

    /// Stops the changes and waits until the last one is made.
    async fn end(&mut self);

    /// Waits (until `until`) for the truth to hold every change made (the
    /// profiles' too).
    async fn caught_up(&self, _client: &Followed, _until: tokio::time::Instant) {}

    /// Where the destinations came from, as reported.
    fn destination(&self) -> String;

    /// Updates the server sent, when known.
    fn updates_sent(&self) -> Option<u64>;

    /// Changes made after the initial sets.
    fn changes(&self) -> u64;

    /// Profile changes made after the initial profiles.
    fn profile_changes(&self) -> u64;
}

/// The client's streams, as the truth follows them.
pub(super) struct Followed {
    /// `Get` streams, by service.
    pub(super) services: std::sync::Arc<Fleet>,
    /// `GetProfile` streams by service name.
    pub(super) profiles: std::sync::Arc<client::profile::ProfileFleet>,
}

/// A plan's scenario with its seed chosen.
pub(super) struct Chosen<'a> {
    pub(super) spec: &'a Spec,
    pub(super) seed: u64,
}

/// What a [`Load`] gives the client.
pub(super) struct Watched {
    pub(super) config: client::Config,
    pub(super) truth: Option<super::mock_feed::MockFeed>,
    pub(super) profile_truth: Option<super::mock_feed::MockProfiles>,
}

/// The namespace of a mock run's authorities (a cluster run's is its
/// target's; both count the same streams).
pub(super) const NAMESPACE: &str = "dst-load-test";

/// Waits until the fleet watches `services` services, each with a truth.
pub(super) async fn wait_for_truth(fleet: &Fleet, services: usize) {
    loop {
        let all = fleet.services();
        if all.len() >= services && all.iter().all(|s| s.truth.is_known()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
