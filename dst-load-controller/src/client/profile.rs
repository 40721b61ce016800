//! `Destination.GetProfile` watches, held beside the `Get` watches as a
//! proxy holds them: re-opened after an error with the same backoff, at
//! once after a reset storm or on a new connection, and ended for good by
//! `InvalidArgument` or `FailedPrecondition`. Each stream's last profile is
//! kept exactly ([`Seen`]), as its endpoint set is for `Get`.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex, RwLock},
};

use linkerd2_proxy_api::destination::{
    DestinationProfile, GetDestination, destination_client::DestinationClient,
};
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::{
    faults::Class,
    metrics::ProfileMetrics,
    stream::{Link, StreamConfig, error_reason, is_final},
};

/// What a profile stream last received, as far as a proxy acts on it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Seen {
    /// Profiles received since the stream was first opened (every
    /// re-open's first one included).
    pub updates: u64,
    /// The resolved service name (empty for an address lookup).
    pub fully_qualified_name: String,
    /// The routes' `route` labels, in order.
    pub routes: Vec<String>,
    /// The endpoint of an address lookup.
    pub endpoint: Option<SocketAddr>,
    /// Whether the endpoint carries a TLS identity (a meshed pod's).
    pub endpoint_identity: bool,
    /// Connections are opaque TCP.
    pub opaque_protocol: bool,
    /// The retry budget's ratio.
    pub retry_ratio: Option<f32>,
    /// Traffic-split destinations and their weights.
    pub dst_overrides: Vec<(String, u32)>,
    /// When (wall clock) the routes or the retry ratio last changed on
    /// this stream.
    pub routes_changed: Option<std::time::SystemTime>,
    /// When (wall clock) the stream first had a profile.
    pub first_answered: Option<std::time::SystemTime>,
}

impl Seen {
    /// Whether the stream shows these routes and this retry ratio.
    fn shows(&self, routes: &[String], retry_ratio: f32) -> bool {
        self.routes == routes && self.retry_ratio == Some(retry_ratio)
    }

    fn update(&mut self, p: &DestinationProfile) {
        self.updates += 1;
        let routes: Vec<String> = p
            .routes
            .iter()
            .map(|r| r.metrics_labels.get("route").cloned().unwrap_or_default())
            .collect();
        let retry_ratio = p.retry_budget.as_ref().map(|b| b.retry_ratio);
        let now = std::time::SystemTime::now();
        self.first_answered.get_or_insert(now);
        if self.routes_changed.is_none() || routes != self.routes || retry_ratio != self.retry_ratio
        {
            self.routes_changed = Some(now);
        }
        self.fully_qualified_name
            .clone_from(&p.fully_qualified_name);
        self.routes = routes;
        self.endpoint = p
            .endpoint
            .as_ref()
            .and_then(|e| e.addr)
            .and_then(|a| SocketAddr::try_from(a).ok());
        self.endpoint_identity = p
            .endpoint
            .as_ref()
            .is_some_and(|e| e.tls_identity.is_some());
        self.opaque_protocol = p.opaque_protocol;
        self.retry_ratio = retry_ratio;
        self.dst_overrides = p
            .dst_overrides
            .iter()
            .map(|d| (d.authority.clone(), d.weight))
            .collect();
    }
}

/// What the ground truth says a target's streams should hold.
#[derive(Clone, Debug, PartialEq)]
pub enum Want {
    /// A pod address's endpoint, identity and opaque flag.
    Pod(super::pod_truth::Expected),
    /// A service's routes and retry ratio (its ServiceProfile's; none and
    /// the controller's default without one).
    Routes {
        /// The route names, in order.
        routes: Vec<String>,
        /// The retry budget's ratio.
        retry_ratio: f32,
        /// Counts the truth's changes.
        version: u64,
        /// When the change was made (its stamp), if known.
        at: Option<std::time::SystemTime>,
    },
}

/// One target's profile streams: each stream's last profile.
#[derive(Debug)]
pub struct ProfileStreams {
    /// The path asked for: `svc.ns.svc.domain:port` or `IP:port`.
    pub target: String,
    slots: Vec<Mutex<Option<Seen>>>,
    /// How each stream reads (`--stuck-percent`, `--slow-reader-percent`).
    classes: Vec<Class>,
    /// What the ground truth says the streams should hold.
    want: Mutex<Option<Want>>,
    /// Per stream: the changes it is timed on and has received.
    track: Vec<Mutex<Track>>,
}

/// How far one profile stream is along the truth's changes.
#[derive(Debug, Default)]
struct Track {
    /// The routes change it has yet to show (version, when made).
    pending: Option<(u64, std::time::SystemTime)>,
    /// The truth's version the stream last showed when it received a
    /// profile, and the profiles it has received since. The truth's changes
    /// beyond both are changes it missed: a stream that stopped reading is
    /// behind even while its last profile happens to equal the truth again
    /// (a profile changed back and forth).
    caught_up: Option<(u64, u64)>,
}

impl Track {
    /// The truth's changes after `version` the stream has not received
    /// (`None`: it never showed the truth).
    fn missed(&self, version: u64) -> Option<u64> {
        let (at, since) = self.caught_up?;
        Some(version.saturating_sub(at).saturating_sub(since))
    }
}

impl ProfileStreams {
    /// `streams` healthy streams of `target`, none answered yet.
    pub fn new(target: String, streams: usize) -> Self {
        Self::with_classes(target, vec![Class::Healthy; streams])
    }

    /// A stream of each class for `target`, none answered yet.
    pub fn with_classes(target: String, classes: Vec<Class>) -> Self {
        let streams = classes.len();
        Self {
            target,
            slots: (0..streams).map(|_| Mutex::new(None)).collect(),
            classes,
            want: Mutex::new(None),
            track: (0..streams).map(|_| Mutex::default()).collect(),
        }
    }

    /// How stream `index` reads.
    pub fn class(&self, index: usize) -> Class {
        self.classes[index]
    }

    /// The streams that read once and never again.
    pub fn stuck(&self) -> usize {
        self.classes.iter().filter(|c| **c == Class::Stuck).count()
    }

    /// What the ground truth says (`None`: no truth followed).
    pub fn want(&self) -> Option<Want> {
        self.want.lock().expect("profile truth").clone()
    }

    /// A pod address's expected profile (`None`: not a pod's, or no truth).
    pub fn expected(&self) -> Option<super::pod_truth::Expected> {
        match self.want() {
            Some(Want::Pod(e)) => Some(e),
            _ => None,
        }
    }

    /// Whether the truth expects these routes and this retry ratio.
    pub fn expects(&self, routes: &[String], retry_ratio: f32) -> bool {
        matches!(
            self.want(),
            Some(Want::Routes { routes: r, retry_ratio: q, .. }) if r == routes && q == retry_ratio
        )
    }

    pub(super) fn set_expected(&self, e: super::pod_truth::Expected) {
        *self.want.lock().expect("profile truth") = Some(Want::Pod(e));
    }

    /// Takes a service's routes and retry ratio from the truth (a change
    /// made `at`). A stream already showing them since `at` is timed now;
    /// the others are timed when they show them. Returns the latencies
    /// observed.
    pub(super) fn set_routes(
        &self,
        routes: Vec<String>,
        retry_ratio: f32,
        at: Option<std::time::SystemTime>,
    ) -> Vec<std::time::Duration> {
        let mut want = self.want.lock().expect("profile truth");
        let version = match &*want {
            Some(Want::Routes {
                routes: r,
                retry_ratio: q,
                ..
            }) if *r == routes && *q == retry_ratio => return Vec::new(),
            Some(Want::Routes { version, .. }) => version + 1,
            _ => 1,
        };
        *want = Some(Want::Routes {
            routes: routes.clone(),
            retry_ratio,
            version,
            at,
        });
        drop(want);
        let mut timed = Vec::new();
        for (slot, track) in self.slots.iter().zip(&self.track) {
            let slot = slot.lock().expect("profile slot");
            let mut track = track.lock().expect("profile track");
            track.pending = None;
            // The truth as first read is where the streams showing it stand.
            if version == 1 && slot.as_ref().is_some_and(|s| s.shows(&routes, retry_ratio)) {
                track.caught_up = Some((1, 0));
                continue;
            }
            let pending = &mut track.pending;
            // Only streams answered before the change are timed (version 1
            // is the truth as first read, not a change).
            let (Some(seen), Some(at)) = (slot.as_ref(), at) else {
                continue;
            };
            if version == 1 || seen.first_answered.is_none_or(|first| first >= at) {
                continue;
            }
            let shows = seen.shows(&routes, retry_ratio);
            match seen.routes_changed {
                Some(when) if shows && when >= at => {
                    timed.extend(when.duration_since(at).ok());
                }
                _ if shows => {}
                _ => *pending = Some((version, at)),
            }
        }
        timed
    }

    /// After stream `index` got a profile: the latency of the routes change
    /// it now shows, if it was waiting for one. Also counts the profile
    /// among the changes the stream received.
    fn shown(&self, index: usize) -> Option<std::time::Duration> {
        let Some(Want::Routes {
            routes,
            retry_ratio,
            version,
            ..
        }) = self.want()
        else {
            return None;
        };
        // Slot, then track: the order `set_routes` takes them in.
        let seen = self.slots[index].lock().expect("profile slot");
        let mut track = self.track[index].lock().expect("profile track");
        let shows = seen.as_ref().is_some_and(|s| s.shows(&routes, retry_ratio));
        track.caught_up = match track.caught_up {
            _ if shows => Some((version, 0)),
            Some((at, since)) => Some((at, since + 1)),
            None => None,
        };
        let (v, at) = track.pending?;
        if v != version || !shows {
            return None;
        }
        track.pending = None;
        std::time::SystemTime::now().duration_since(at).ok()
    }

    /// Stream `index`'s differences from the truth (empty: none, or no
    /// truth); a stream never answered differs in everything.
    pub fn differences(&self, index: usize) -> Vec<String> {
        let seen = self.slots[index].lock().expect("profile slot").clone();
        match (self.want(), seen) {
            (None, _) => Vec::new(),
            (Some(Want::Pod(want)), Some(s)) => {
                want.differences(s.endpoint, s.endpoint_identity, s.opaque_protocol)
            }
            (Some(Want::Pod(want)), None) => want.differences(None, want.identity, want.opaque),
            (Some(Want::Routes { .. }), None) => vec!["no profile yet".to_string()],
            (
                Some(Want::Routes {
                    routes,
                    retry_ratio,
                    version,
                    ..
                }),
                Some(seen),
            ) => {
                let mut out = Vec::new();
                let missed = self.track[index]
                    .lock()
                    .expect("profile track")
                    .missed(version);
                if seen.routes != routes {
                    out.push(format!("routes {:?} (want {routes:?})", seen.routes));
                }
                if seen.retry_ratio != Some(retry_ratio) {
                    out.push(format!(
                        "retry_ratio {} (want {retry_ratio})",
                        seen.retry_ratio
                            .map_or_else(|| "none".to_string(), |r| r.to_string())
                    ));
                }
                // A stream one change behind differs in content already; two
                // or more behind has stopped, whatever its last profile
                // shows (a profile changed back again).
                if let Some(missed @ 2..) = missed {
                    out.push(format!("{missed} changes not received"));
                }
                out
            }
        }
    }

    /// Each stream's last profile (`None`: none yet).
    pub fn seen(&self) -> Vec<Option<Seen>> {
        self.slots
            .iter()
            .map(|s| s.lock().expect("profile slot").clone())
            .collect()
    }

    /// Streams that have had a profile.
    pub fn answered(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.lock().expect("profile slot").is_some())
            .count()
    }

    /// The number of streams.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// Every target's profile streams, by path.
#[derive(Debug, Default)]
pub struct ProfileFleet(RwLock<BTreeMap<String, Arc<ProfileStreams>>>);

impl ProfileFleet {
    /// A target's streams.
    pub fn get(&self, target: &str) -> Option<Arc<ProfileStreams>> {
        self.0.read().expect("profile fleet").get(target).cloned()
    }

    /// Every target's streams, by path.
    pub fn all(&self) -> Vec<Arc<ProfileStreams>> {
        self.0
            .read()
            .expect("profile fleet")
            .values()
            .cloned()
            .collect()
    }

    /// Adds (or replaces) a target's streams: the client does as it opens
    /// them.
    pub fn insert(&self, s: Arc<ProfileStreams>) {
        self.0
            .write()
            .expect("profile fleet")
            .insert(s.target.clone(), s);
    }

    pub(super) fn remove(&self, target: &str) {
        self.0.write().expect("profile fleet").remove(target);
    }

    /// Removes `streams` if they are still their target's.
    pub(super) fn remove_these(&self, streams: &Arc<ProfileStreams>) {
        let mut all = self.0.write().expect("profile fleet");
        if all
            .get(&streams.target)
            .is_some_and(|s| Arc::ptr_eq(s, streams))
        {
            all.remove(&streams.target);
        }
    }
}

/// One profile stream.
pub struct ProfileStream {
    /// Its target's streams.
    pub streams: Arc<ProfileStreams>,
    /// Its index among them.
    pub index: usize,
    /// The connection it runs on.
    pub link: tokio::sync::watch::Receiver<Link>,
    /// Storms re-opening it at once (`--target-pods-storm-interval`).
    pub storms: Option<tokio::sync::watch::Receiver<u64>>,
    /// The `target` label of its updates.
    pub metric_target: String,
    /// How long a slow stream waits before reading each profile.
    pub slow_delay: std::time::Duration,
}

/// The next storm; never without storms.
async fn storm(storms: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    if let Some(rx) = storms
        && rx.changed().await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

/// Counts a stuck stream in `profile_stuck_streams` while its task runs.
struct StuckGuard(prometheus_client::metrics::gauge::Gauge);

impl StuckGuard {
    fn new(metrics: &ProfileMetrics) -> Self {
        metrics.stuck_streams.inc();
        Self(metrics.stuck_streams.clone())
    }
}

impl Drop for StuckGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Why a profile stream ended.
enum End {
    Shutdown,
    Reset(&'static str),
    Eos,
    Error(Status),
}

impl ProfileStream {
    /// Runs the watch until `shutdown` or a final error.
    pub async fn run(
        self,
        cfg: Arc<StreamConfig>,
        metrics: ProfileMetrics,
        shutdown: CancellationToken,
    ) {
        let Self {
            streams,
            index,
            mut link,
            mut storms,
            metric_target,
            slow_delay,
        } = self;
        // A stuck stream reads its first profile of each opening and then
        // never again (the stream stays open, its HTTP/2 window fills); a
        // slow one waits `slow_delay` before each read.
        let class = streams.class(index);
        let _stuck = (class == Class::Stuck).then(|| StuckGuard::new(&metrics));
        let slow_delay = (class == Class::Slow).then_some(slow_delay);
        let counter = metrics.updates_counter(&metric_target);
        let slot = &streams.slots[index];
        let mut failures = 0;
        loop {
            metrics.streams_created.inc();
            metrics.streams_active.inc();
            let (conn, storms_seen) = {
                let l = link.borrow_and_update();
                (l.channel.clone(), l.storms)
            };
            // A storm during a backoff is this opening.
            if let Some(s) = &mut storms {
                s.borrow_and_update();
            }
            let opened_at = tokio::time::Instant::now();
            let mut first = true;
            let request = GetDestination {
                scheme: "k8s".to_string(),
                path: streams.target.clone(),
                context_token: cfg.context_token.clone(),
            };
            let end = 'stream: {
                let mut client = DestinationClient::new(conn);
                let mut profiles = tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break 'stream End::Shutdown,
                    _ = link.changed() => break 'stream End::Reset(
                        if link.borrow().storms != storms_seen { "reset_storm" } else { "connection_churn" }
                    ),
                    _ = storm(&mut storms) => break 'stream End::Reset("target_storm"),
                    opened = client.get_profile(request) => match opened {
                        Ok(r) => r.into_inner(),
                        Err(status) => break 'stream End::Error(status),
                    },
                };
                let mut read_at = None;
                loop {
                    let paused = (class == Class::Stuck && !first) || read_at.is_some();
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => break 'stream End::Shutdown,
                        _ = link.changed() => break 'stream End::Reset(
                            if link.borrow().storms != storms_seen { "reset_storm" } else { "connection_churn" }
                        ),
                        _ = storm(&mut storms) => break 'stream End::Reset("target_storm"),
                        _ = tokio::time::sleep_until(read_at.unwrap_or_else(tokio::time::Instant::now)), if read_at.is_some() => {
                            read_at = None;
                        }
                        msg = profiles.message(), if !paused => match msg {
                            Ok(Some(profile)) => {
                                if std::mem::take(&mut first) {
                                    metrics
                                        .time_to_first_update
                                        .observe(opened_at.elapsed().as_secs_f64());
                                }
                                counter.inc();
                                metrics.updates_total.inc();
                                slot.lock()
                                    .expect("profile slot")
                                    .get_or_insert_with(Seen::default)
                                    .update(&profile);
                                if let Some(latency) = streams.shown(index) {
                                    metrics.update_latency.record(latency);
                                }
                                read_at = slow_delay
                                    .filter(|d| !d.is_zero())
                                    .map(|d| tokio::time::Instant::now() + d);
                                failures = 0;
                            }
                            Ok(None) => break 'stream End::Eos,
                            Err(status) => break 'stream End::Error(status),
                        },
                    }
                }
            };
            metrics.streams_active.dec();
            let delay = match end {
                End::Shutdown => return,
                End::Reset(reason) => {
                    metrics.reset(reason);
                    continue;
                }
                End::Eos => {
                    metrics.reset("end_of_stream");
                    cfg.backoff.delay(&mut failures)
                }
                End::Error(status) => {
                    let reason = error_reason(&status);
                    metrics.error(&reason);
                    if is_final(status.code()) {
                        metrics.failed_total.inc();
                        tracing::warn!(
                            target = %streams.target,
                            stream = index,
                            code = ?status.code(),
                            message = status.message(),
                            "profile stream ended for good"
                        );
                        return;
                    }
                    metrics
                        .error_log
                        .note("GetProfile", &streams.target, &reason, &status);
                    metrics.reset(&reason);
                    cfg.backoff.delay(&mut failures)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = sleep(delay.unwrap_or(cfg.backoff.max)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use linkerd2_proxy_api::destination::Route;

    use super::*;

    fn profile(routes: &[&str]) -> DestinationProfile {
        profile_with(routes, 0.2)
    }

    fn profile_with(routes: &[&str], retry_ratio: f32) -> DestinationProfile {
        DestinationProfile {
            retry_budget: Some(linkerd2_proxy_api::destination::RetryBudget {
                retry_ratio,
                ..Default::default()
            }),
            routes: routes
                .iter()
                .map(|r| Route {
                    metrics_labels: [("route".to_string(), r.to_string())].into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn receive(s: &ProfileStreams, k: usize, routes: &[&str]) -> Option<Duration> {
        s.slots[k]
            .lock()
            .unwrap()
            .get_or_insert_with(Seen::default)
            .update(&profile(routes));
        s.shown(k)
    }

    #[test]
    fn a_routes_change_is_timed_once_on_each_stream_open_before_it() {
        let s = ProfileStreams::new("web.ns.svc.cluster.local:80".into(), 3);
        let names = |r: &[&str]| r.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // The truth as first read is no change: nothing timed.
        assert_eq!(receive(&s, 0, &["a"]), None);
        assert!(
            s.set_routes(names(&["a"]), 0.2, Some(SystemTime::UNIX_EPOCH))
                .is_empty()
        );
        assert!(s.differences(0).is_empty());
        assert_eq!(s.differences(1), ["no profile yet"]);
        // A change: stream 0 (answered before it) shows it later and is
        // timed once; stream 1, first answered after it, is not timed.
        let pause = || std::thread::sleep(Duration::from_millis(20));
        pause();
        let at = SystemTime::now();
        assert!(s.set_routes(names(&["a", "b"]), 0.2, Some(at)).is_empty());
        assert_eq!(s.differences(0), ["routes [\"a\"] (want [\"a\", \"b\"])"]);
        assert_eq!(receive(&s, 1, &["a", "b"]), None);
        pause();
        let latency = receive(&s, 0, &["a", "b"]).expect("timed");
        assert!(
            latency >= Duration::from_millis(20),
            "never early: {latency:?}"
        );
        assert_eq!(receive(&s, 0, &["a", "b"]), None, "once");
        // The same truth again changes nothing.
        assert!(s.set_routes(names(&["a", "b"]), 0.2, Some(at)).is_empty());
        // A stream that showed the change before the truth was read is
        // timed when it is read, from the moment it showed it.
        receive(&s, 2, &["a"]);
        pause();
        let at = SystemTime::now();
        pause();
        receive(&s, 2, &["c"]);
        let timed = s.set_routes(names(&["c"]), 0.2, Some(at));
        assert_eq!(timed.len(), 1, "{timed:?}");
        assert!(timed[0] >= Duration::from_millis(20) && timed[0] < Duration::from_secs(5));
    }

    #[test]
    fn a_retry_budget_change_alone_is_a_change() {
        let s = ProfileStreams::new("web.ns.svc.cluster.local:80".into(), 1);
        let routes = vec!["a".to_string()];
        let receive = |ratio: f32| {
            s.slots[0]
                .lock()
                .unwrap()
                .get_or_insert_with(Seen::default)
                .update(&profile_with(&["a"], ratio));
            s.shown(0)
        };
        receive(0.2);
        assert!(s.set_routes(routes.clone(), 0.2, None).is_empty());
        std::thread::sleep(Duration::from_millis(20));
        let at = SystemTime::now();
        assert!(s.set_routes(routes.clone(), 0.25, Some(at)).is_empty());
        assert_eq!(s.differences(0), ["retry_ratio 0.2 (want 0.25)"]);
        let latency = receive(0.25).expect("timed");
        assert!(latency < Duration::from_secs(5), "{latency:?}");
        assert!(s.differences(0).is_empty());
    }

    /// A profile changed back and forth (churn's oscillation) shows the
    /// truth again on a stream that stopped an even number of changes
    /// behind: the changes it did not receive keep it differing.
    #[test]
    fn a_stream_that_stopped_reading_differs_even_when_the_profile_changes_back() {
        let s = ProfileStreams::new("web.ns.svc.cluster.local:80".into(), 3);
        let names = |r: &[&str]| r.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (a, b) = (["a"].as_slice(), ["a", "b"].as_slice());
        for k in 0..3 {
            receive(&s, k, a);
        }
        assert!(s.set_routes(names(a), 0.2, None).is_empty());
        // Stream 0 reads every change, stream 1 stops, stream 2 is faster
        // than the truth (it shows each change before the truth has it).
        for change in 0..6 {
            let next = if change % 2 == 0 { b } else { a };
            receive(&s, 2, next);
            s.set_routes(names(next), 0.2, Some(SystemTime::now()));
            receive(&s, 0, next);
            assert!(s.differences(0).is_empty(), "change {change}");
            assert!(s.differences(2).is_empty(), "change {change}");
            let behind = s.differences(1);
            match change {
                // One change behind: its content differs.
                0 => assert_eq!(behind, ["routes [\"a\"] (want [\"a\", \"b\"])"]),
                // Back to its content, two changes behind.
                1 => assert_eq!(behind, ["2 changes not received"]),
                _ => assert!(!behind.is_empty(), "change {change}: {behind:?}"),
            }
        }
        assert_eq!(s.differences(1), ["6 changes not received"]);
        // Reading the current profile catches it up.
        receive(&s, 1, a);
        assert!(s.differences(1).is_empty());
    }

    /// Streams the truth first meets in the same round as a change of their
    /// service (opened just before it) are timed too: the state before the
    /// change is their first truth.
    #[test]
    fn a_change_is_timed_on_streams_opened_just_before_it() {
        use crate::client::profile_truth::{Routes, RoutesTruth};
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = ProfileMetrics::register(&mut registry);
        let fleet = Arc::new(ProfileFleet::default());
        let mut truth = RoutesTruth::new(fleet.clone(), metrics.clone());
        let host = "web.ns.svc.cluster.local";
        let routes = |names: &[&str], at| Routes {
            names: names.iter().map(|n| n.to_string()).collect(),
            retry_ratio: 0.2,
            at,
        };
        truth.set(host.into(), Some(routes(&["a"], None)));
        truth.apply();
        // Opened and answered after that apply, before the change.
        let s = Arc::new(ProfileStreams::new(format!("{host}:80"), 1));
        fleet.insert(s.clone());
        receive(&s, 0, &["a"]);
        std::thread::sleep(Duration::from_millis(20));
        let at = SystemTime::now();
        truth.set(host.into(), Some(routes(&["a", "b"], Some(at))));
        truth.apply();
        assert!(
            matches!(s.want(), Some(Want::Routes { version: 2, .. })),
            "{:?}",
            s.want()
        );
        let latency = receive(&s, 0, &["a", "b"]).expect("timed");
        assert!(latency < Duration::from_secs(5), "{latency:?}");
        // A stream first met long after the change is not timed by it.
        let late = Arc::new(ProfileStreams::new(format!("{host}:8080"), 1));
        fleet.insert(late.clone());
        receive(&late, 0, &["a", "b"]);
        truth.apply();
        assert!(late.differences(0).is_empty());
        assert_eq!(receive(&late, 0, &["a", "b"]), None);
    }
}
