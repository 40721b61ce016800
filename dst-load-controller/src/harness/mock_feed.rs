//! The embedded mock's change feeds as a client's ground truth: every
//! destination's set when the feed was subscribed, then every change with
//! its timestamp ([`MockFeed`]); the same for the services' profiles
//! ([`MockProfiles`]). It lives in the harness, beside the mock it reads, so
//! that the client engine builds without the mock.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures::future::BoxFuture;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::{
    client::{
        Fleet,
        ground_truth::GroundTruth,
        profile_truth::{ProfileTruth, Routes, RoutesTruth},
    },
    mock::{Handle, profiles::ProfileSpec},
};

/// A mock Destination server's change feed, followed as a ground truth.
pub struct MockFeed {
    handle: Handle,
    feed: tokio::sync::broadcast::Receiver<(
        crate::target::Authority,
        Arc<crate::mock::store::Change>,
    )>,
    expected: HashMap<String, BTreeSet<SocketAddr>>,
}

impl MockFeed {
    /// Subscribes to `handle`'s feed now: no change made after this call is
    /// missed.
    pub fn new(handle: &Handle) -> Self {
        let feed = handle.changes();
        Self {
            expected: sets(handle),
            handle: handle.clone(),
            feed,
        }
    }
}

/// Every destination's set, as the mock holds it now.
fn sets(handle: &Handle) -> HashMap<String, BTreeSet<SocketAddr>> {
    handle
        .list()
        .into_iter()
        .map(|(authority, endpoints)| (authority.to_string(), endpoints.into_iter().collect()))
        .collect()
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
                        Err(RecvError::Lagged(n)) => {
                            // The missed changes would leave the sets wrong
                            // from here on: read them again from the mock
                            // (the feed resumes after what it now holds, so
                            // a change may be applied twice, harmlessly).
                            tracing::warn!(
                                missed = n,
                                "change feed lagged; the sets are read again, and the latencies of the missed changes are not measured"
                            );
                            self.expected = sets(&self.handle);
                            for s in fleet.services().iter().filter(|s| s.truth.is_known()) {
                                let now = self.expected.get(&s.service).cloned().unwrap_or_default();
                                let had: BTreeSet<SocketAddr> = s.truth.expected().into_iter().collect();
                                if now != had {
                                    s.set_truth_unmeasured(now);
                                }
                            }
                        }
                        Err(RecvError::Closed) => return,
                    },
                    _ = tick.tick() => seed(&self.expected),
                }
            }
        })
    }
}

/// A mock's profile feed, followed as the truth of the profile streams by
/// service name: every profile when the feed was subscribed (untimed), then
/// every change with its timestamp.
pub struct MockProfiles {
    handle: Handle,
    feed: tokio::sync::broadcast::Receiver<Arc<crate::mock::profiles::ProfileChange>>,
    initial: Vec<(String, ProfileSpec)>,
}

impl MockProfiles {
    /// Subscribes to `handle`'s profile feed now: no change made after this
    /// call is missed.
    pub fn new(handle: &Handle) -> Self {
        let feed = handle.profile_changes();
        Self {
            initial: handle.profiles(),
            handle: handle.clone(),
            feed,
        }
    }
}

/// The routes and retry ratio a profile shows, changed `at` (unknown:
/// untimed).
pub(super) fn routes(spec: &ProfileSpec, at: Option<SystemTime>) -> Routes {
    Routes {
        names: spec.routes.iter().map(|r| r.name.clone()).collect(),
        retry_ratio: spec.retry_budget.unwrap_or_default().retry_ratio,
        at,
    }
}

impl ProfileTruth for MockProfiles {
    fn follow(
        self: Box<Self>,
        mut truth: RoutesTruth,
        stop: CancellationToken,
    ) -> BoxFuture<'static, ()> {
        let Self {
            handle,
            mut feed,
            initial,
        } = *self;
        Box::pin(async move {
            let reset = |truth: &mut RoutesTruth, all: Vec<(String, ProfileSpec)>| {
                truth.clear();
                for (host, spec) in all {
                    truth.set(host, Some(routes(&spec, None)));
                }
            };
            reset(&mut truth, initial);
            truth.apply();
            // Streams opened since the last change are told on the tick.
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => return,
                    first = feed.recv() => {
                        // A round of changes (every service's at once) is
                        // applied once.
                        let mut next = Some(first);
                        while let Some(change) = next {
                            match change {
                                // A deleted profile shows the default one, timed too.
                                Ok(c) => truth.set(
                                    c.host.clone(),
                                    Some(routes(
                                        c.profile.as_deref().unwrap_or(&ProfileSpec::default()),
                                        Some(c.at),
                                    )),
                                ),
                                Err(RecvError::Lagged(missed)) => {
                                    tracing::warn!(
                                        missed,
                                        "profile feed lagged; the profiles are read again, and the latencies of the missed changes are not measured"
                                    );
                                    reset(&mut truth, handle.profiles());
                                }
                                Err(RecvError::Closed) => return,
                            }
                            next = match feed.try_recv() {
                                Ok(c) => Some(Ok(c)),
                                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => {
                                    Some(Err(RecvError::Lagged(n)))
                                }
                                Err(_) => None,
                            };
                        }
                        truth.apply();
                    }
                    _ = tick.tick() => truth.apply(),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        client::{fleet::ServiceStreams, truth::Latencies},
        mock::{MockDestination, server::Behavior},
        target::Authority,
    };
    use prometheus_client::registry::Registry;

    /// The changes the mock's feed keeps for a reader (`mock::handle`).
    const FEED_CAPACITY: usize = 65_536;

    fn addr(i: u32) -> SocketAddr {
        SocketAddr::from((std::net::Ipv4Addr::from(0x0a00_0000 + i), 8080))
    }

    /// More changes than the feed holds, made before the follower reads
    /// one: the follower lags past the first ones, and must end with the
    /// mock's set anyway.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_the_feed_lags_the_sets_are_the_mocks_again() {
        let mut registry = Registry::default();
        let mock = MockDestination::new(Behavior::default(), &mut registry);
        let handle = mock.handle();
        let foo: Authority = "foo.ns.svc.cluster.local:8080".parse().unwrap();
        handle.set(&foo, [addr(0)]);
        let fleet = Arc::new(Fleet::default());
        let latencies = Latencies::register(&mut registry);
        fleet.insert(Arc::new(ServiceStreams::new(
            foo.to_string(),
            vec![crate::client::faults::Class::Healthy],
            latencies,
        )));
        let feed = MockFeed::new(&handle);
        // Ten additions, then a full feed of changes that add and remove
        // one more address (an even number: it ends absent). The feed
        // drops the oldest: the follower misses exactly the additions.
        for i in 1..=10 {
            handle.patch(&foo, &[addr(i)], &[]);
        }
        for i in 0..FEED_CAPACITY {
            let toggled = [addr(99)];
            if i % 2 == 0 {
                handle.patch(&foo, &toggled, &[]);
            } else {
                handle.patch(&foo, &[], &toggled);
            }
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(Box::new(feed).follow(fleet.clone(), stop.clone()));
        let want = handle.get(&foo).unwrap().len();
        assert_eq!(want, 11);
        let service = fleet.get(&foo.to_string()).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let got = service.truth.expected().len();
            if got == want {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the truth holds {got} addresses, the mock {want}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // And it stays right: later changes apply on top of the re-read set.
        handle.patch(&foo, &[], &[addr(0)]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while service.truth.expected().len() != want - 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the removal after the lag"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!service.truth.expected().contains(&addr(0)));
        stop.cancel();
        task.await.unwrap();
    }

    /// The profiles' feed: the routes as the mock had them when followed
    /// (untimed), then each change with the moment the mock made it; a
    /// stream that never showed them differs.
    #[tokio::test]
    async fn the_profile_truth_follows_the_mocks_profiles_with_their_stamps() {
        use crate::client::{
            metrics::ProfileMetrics,
            profile::{ProfileFleet, ProfileStreams, Want},
        };
        let mut registry = Registry::default();
        let mock = MockDestination::new(Behavior::default(), &mut registry);
        let handle = mock.handle();
        let host = "web.ns.svc.cluster.local";
        handle.set_profile(host, ProfileSpec::generated(2));
        let fleet = Arc::new(ProfileFleet::default());
        let streams = Arc::new(ProfileStreams::new(format!("{host}:8080"), 1));
        fleet.insert(streams.clone());
        let truth = RoutesTruth::new(fleet, ProfileMetrics::register(&mut registry));
        let stop = CancellationToken::new();
        let task = tokio::spawn(Box::new(MockProfiles::new(&handle)).follow(truth, stop.clone()));
        let routes_of =
            |n: usize| -> Vec<String> { (0..n).map(|k| format!("route-{k}")).collect() };
        let wait_for = |n: usize| {
            let streams = streams.clone();
            let want = routes_of(n);
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                loop {
                    if let Some(Want::Routes { routes, at, .. }) = streams.want()
                        && routes == want
                    {
                        return at;
                    }
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "{:?}",
                        streams.want()
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        assert_eq!(wait_for(2).await, None, "the first read is not a change");
        let before = SystemTime::now();
        handle.set_profile(host, ProfileSpec::generated(3));
        let after = SystemTime::now();
        let at = wait_for(3).await.expect("a change is stamped");
        assert!(
            before <= at && at <= after,
            "{at:?} not in {before:?}..{after:?}"
        );
        assert_eq!(streams.differences(0).len(), 1, "never answered");
        // Deleted: the default profile, no routes.
        handle.delete_profile(host);
        wait_for(0).await.expect("a deletion is stamped");
        stop.cancel();
        task.await.unwrap();
    }
}
