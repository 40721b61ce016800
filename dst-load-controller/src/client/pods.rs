//! `--target-pods`: `GetProfile` streams to the `IP:port` of every pod a
//! label selector picks, as the proxy of a meshed scraper (a Prometheus
//! scraping pods) holds them: opened as pods appear, closed as they go, and,
//! in a storm, all re-opened at once as when the scraper restarts.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;

use super::{
    metrics::Metrics,
    pod_truth::expected,
    profile::{ProfileFleet, ProfileStream, ProfileStreams},
    stream::{Link, StreamConfig},
};
use crate::{
    crds::Server,
    watch::{Change, Driver},
};

/// Which pods are targets, and how they are watched.
#[derive(Clone, Debug)]
pub struct TargetPods {
    /// Their namespace.
    pub namespace: String,
    /// A label selector.
    pub selector: String,
    /// The port asked for on each pod's IP.
    pub port: u16,
    /// `GetProfile` streams per pod.
    pub streams_per_pod: u32,
    /// Every this long, every pod's streams are re-opened at once.
    pub storm_interval: Option<Duration>,
    /// Storms made before they stop (`None`: until the end).
    pub storms: Option<u32>,
    /// Follow the pods' and Servers' ground truth with these rules.
    pub truth: Option<super::pod_truth::Rules>,
}

impl TargetPods {
    /// The metric label of every pod stream's updates (one series for all
    /// pods, not one per pod IP).
    pub fn metric_target(&self) -> String {
        format!("pods:{}", self.selector)
    }
}

/// The `IP:port` a scraper would ask for: a pod with an IP that is neither
/// finished nor being deleted.
pub fn pod_target(pod: &Pod, port: u16) -> Option<SocketAddr> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let ip = status.pod_ip.as_deref()?.parse().ok()?;
    Some(SocketAddr::new(ip, port))
}

/// What the pods' streams run on and report to: the client's.
pub struct Context<'a> {
    /// Each connection's current channel.
    pub channels: &'a [tokio::sync::watch::Sender<Link>],
    /// Every stream's token, timeouts and backoff.
    pub stream: &'a Arc<StreamConfig>,
    /// The client's metrics.
    pub metrics: &'a Metrics,
    /// Where the pods' streams are kept, by `IP:port`.
    pub fleet: &'a Arc<ProfileFleet>,
    /// The Kubernetes client's settings.
    pub kube: &'a crate::kube_api::KubeSettings,
    /// Where its tasks are tracked (the client's).
    pub tracker: &'a tokio_util::task::TaskTracker,
}

impl Context<'_> {
    /// Follows the selected pods until `stop`, holding their streams.
    pub async fn follow(
        &self,
        pods: &TargetPods,
        stop: CancellationToken,
    ) -> Result<(), super::error::Error> {
        let kube = self
            .kube
            .client()
            .await
            .map_err(super::error::Error::kube("--target-pods"))?;
        let storms = tokio::sync::watch::Sender::new(0u64);
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(every) = pods.storm_interval {
            let (storms, stop, limit) = (storms.clone(), stop.clone(), pods.storms);
            tasks.spawn(self.tracker.track_future(async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                for _ in 0..limit.unwrap_or(u32::MAX) {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    tracing::info!("target-pod storm: every pod's GetProfile streams re-open");
                    storms.send_modify(|n| *n += 1);
                }
            }));
        }
        let mut servers = match &pods.truth {
            Some(_) => Some(servers_of(&kube, &pods.namespace).await?),
            None => None,
        };
        let mut server_driver = Driver::<Server>::new();
        let mut known_servers: BTreeMap<String, Server> = BTreeMap::new();
        let mut known_pods: BTreeMap<String, Pod> = BTreeMap::new();
        let api: kube::Api<Pod> = kube::Api::namespaced(kube, &pods.namespace);
        let cfg = crate::kube_api::watch_config().labels(&pods.selector);
        let mut events = std::pin::pin!(watcher(api, cfg).default_backoff());
        let mut driver = Driver::<Pod>::new();
        // Pod name -> its target, streams and the token closing them.
        let mut open: BTreeMap<String, (SocketAddr, Arc<ProfileStreams>, CancellationToken)> =
            BTreeMap::new();
        let label = pods.metric_target();
        let mut next_channel = 0usize;
        loop {
            while tasks.try_join_next().is_some() {}
            let event = tokio::select! {
                _ = stop.cancelled() => break,
                e = events.next() => match e { Some(e) => e, None => break },
                Some(e) = next_server(&mut servers) => {
                    match e {
                        Ok(e) => {
                            if let Some(batch) = server_driver.event(e) {
                                for change in batch.changes {
                                    match change {
                                        Change::Apply(s) => {
                                            let name = s.metadata.name.clone().unwrap_or_default();
                                            known_servers.insert(name, s);
                                        }
                                        Change::Delete(key) => {
                                            known_servers.remove(&key.name);
                                        }
                                    }
                                }
                                self.judge(pods, &open, &known_pods, &known_servers, None);
                            }
                        }
                        Err(error) => {
                            self.metrics
                                .error("kubernetes_watch", super::faults::Class::Healthy);
                            tracing::warn!(%error, "server watch failed; retrying");
                        }
                    }
                    continue;
                }
            };
            let batch = match event {
                Ok(e) => match driver.event(e) {
                    Some(batch) => batch,
                    None => continue,
                },
                Err(error) => {
                    self.metrics
                        .error("kubernetes_watch", super::faults::Class::Healthy);
                    tracing::warn!(%error, "pod watch failed; retrying");
                    continue;
                }
            };
            // The pods this batch changed: only theirs need judging again.
            let mut changed = std::collections::BTreeSet::new();
            for change in batch.changes {
                let (name, target) = match change {
                    Change::Apply(pod) => {
                        let Some(name) = pod.metadata.name.clone() else {
                            continue;
                        };
                        let target = pod_target(&pod, pods.port);
                        if pods.truth.is_some() {
                            known_pods.insert(name.clone(), pod);
                        }
                        (name, target)
                    }
                    Change::Delete(key) => {
                        known_pods.remove(&key.name);
                        (key.name, None)
                    }
                };
                changed.insert(name.clone());
                if open.get(&name).map(|(t, ..)| *t) == target {
                    continue;
                }
                if let Some((old, streams, token)) = open.remove(&name) {
                    tracing::debug!(pod = %name, target = %old, "pod gone; closing its streams");
                    token.cancel();
                    // Not a new pod's that took the IP meanwhile.
                    self.fleet.remove_these(&streams);
                }
                let Some(target) = target else {
                    continue;
                };
                let token = stop.child_token();
                let streams = Arc::new(ProfileStreams::new(
                    target.to_string(),
                    pods.streams_per_pod as usize,
                ));
                self.fleet.insert(streams.clone());
                for index in 0..streams.len() {
                    let link = self.channels[next_channel % self.channels.len()].subscribe();
                    next_channel += 1;
                    let s = ProfileStream {
                        streams: streams.clone(),
                        index,
                        link,
                        storms: Some(storms.subscribe()),
                        metric_target: label.clone(),
                        slow_delay: std::time::Duration::ZERO,
                    };
                    tasks.spawn(self.tracker.track_future(s.run(
                        self.stream.clone(),
                        self.metrics.profiles.clone(),
                        token.clone(),
                    )));
                }
                open.insert(name, (target, streams, token));
            }
            self.judge(pods, &open, &known_pods, &known_servers, Some(&changed));
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

impl Context<'_> {
    /// Sets the expected profile of the open targets of the pods in `only`
    /// (every one when `None`: the Servers changed) from the pods and Servers.
    fn judge(
        &self,
        pods: &TargetPods,
        open: &BTreeMap<String, (SocketAddr, Arc<ProfileStreams>, CancellationToken)>,
        known_pods: &BTreeMap<String, Pod>,
        servers: &BTreeMap<String, Server>,
        only: Option<&std::collections::BTreeSet<String>>,
    ) {
        let Some(rules) = &pods.truth else {
            return;
        };
        let servers: Vec<&Server> = servers.values().collect();
        let targets = open
            .iter()
            .filter(|(name, _)| only.is_none_or(|names| names.contains(*name)));
        for (name, (target, streams, _)) in targets {
            streams.set_expected(expected(known_pods.get(name), *target, &servers, rules));
        }
    }
}

/// The namespace's Servers as a watch, or none where the cluster has no
/// Linkerd CRDs (a namespace without Servers, as far as the truth goes).
async fn servers_of(
    kube: &kube::Client,
    namespace: &str,
) -> Result<
    std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<watcher::Event<Server>, watcher::Error>> + Send>,
    >,
    super::error::Error,
> {
    let api: kube::Api<Server> = kube::Api::namespaced(kube.clone(), namespace);
    match api.list(&kube::api::ListParams::default().limit(1)).await {
        Err(kube::Error::Api(e)) if e.code == 404 => {
            tracing::info!("no Server CRD (policy.linkerd.io): the truth has no Servers");
            Ok(Box::pin(futures::stream::empty()))
        }
        Err(e) => Err(super::error::Error::Servers(e)),
        Ok(_) => Ok(Box::pin(
            watcher(api, crate::kube_api::watch_config()).default_backoff(),
        )),
    }
}

/// The next Server event; never without a Server watch.
async fn next_server<S>(servers: &mut Option<S>) -> Option<S::Item>
where
    S: futures::Stream + Unpin,
{
    match servers {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// Streams differing from the truth, and since when.
#[derive(Debug, Default)]
struct Staleness {
    /// (target, index) -> when it started to differ, and whether it was
    /// reported stale.
    differing: std::collections::HashMap<(String, usize), (tokio::time::Instant, bool)>,
}

/// A stream's change of state at a tick.
#[derive(Debug, PartialEq)]
enum Turned {
    Stale(String, usize, Vec<String>),
    Fresh(String, usize, Duration),
}

impl Staleness {
    /// Takes every stream's differences at `now`; returns the streams that
    /// turned stale (differing for longer than `grace`) or fresh again.
    fn tick(
        &mut self,
        now: tokio::time::Instant,
        grace: Duration,
        streams: impl IntoIterator<Item = (String, usize, Vec<String>)>,
    ) -> Vec<Turned> {
        let mut turned = Vec::new();
        let (mut differing, mut present) = (
            std::collections::HashSet::new(),
            std::collections::HashSet::new(),
        );
        for (target, index, diffs) in streams {
            let key = (target, index);
            present.insert(key.clone());
            if diffs.is_empty() {
                continue;
            }
            differing.insert(key.clone());
            let (since, reported) = self.differing.entry(key.clone()).or_insert((now, false));
            if !*reported && now.duration_since(*since) > grace {
                *reported = true;
                turned.push(Turned::Stale(key.0, key.1, diffs));
            }
        }
        // Matching again, or closed (a pod gone): forgotten.
        self.differing.retain(|key, (since, reported)| {
            let keep = differing.contains(key);
            if !keep && *reported && present.contains(key) {
                turned.push(Turned::Fresh(
                    key.0.clone(),
                    key.1,
                    now.duration_since(*since),
                ));
            }
            keep
        });
        turned
    }

    fn stale(&self) -> usize {
        self.differing.values().filter(|(_, r)| *r).count()
    }
}

/// Every second, compares every profile stream of `fleets` with its truth
/// until `stop`, and once more then: logs and counts the streams that turn
/// stale, and those that recover.
pub(super) async fn watch_staleness(
    fleets: Vec<Arc<ProfileFleet>>,
    metrics: super::metrics::ProfileMetrics,
    grace: Duration,
    stop: CancellationToken,
) {
    let mut state = Staleness::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let last = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tick.tick() => false,
        };
        // Stuck streams are stale by design: counted apart
        // (`profile_stuck_streams`), as the `Get` streams' are.
        let streams = fleets.iter().flat_map(|f| f.all()).flat_map(|s| {
            (0..s.len())
                .filter(|k| s.class(*k) != super::faults::Class::Stuck)
                .map(|k| (s.target.clone(), k, s.differences(k)))
                .collect::<Vec<_>>()
        });
        for turned in state.tick(tokio::time::Instant::now(), grace, streams) {
            match turned {
                Turned::Stale(target, stream, diffs) => {
                    metrics.stale_episodes.inc();
                    tracing::warn!(%target, stream, differs = %diffs.join(", "), "profile stream is stale");
                }
                Turned::Fresh(target, stream, after) => {
                    tracing::info!(%target, stream, after = ?after, "profile stream matches the truth again");
                }
            }
        }
        metrics.stale_streams.set(state.stale() as i64);
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{api::core::v1::PodStatus, apimachinery::pkg::apis::meta::v1::Time};

    use super::*;

    #[test]
    fn a_scraper_targets_pods_with_an_ip_until_they_finish_or_go() {
        let pod = |phase: &str, ip: Option<&str>| Pod {
            status: Some(PodStatus {
                phase: Some(phase.into()),
                pod_ip: ip.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            pod_target(&pod("Running", Some("10.0.0.7")), 4191),
            Some("10.0.0.7:4191".parse().unwrap())
        );
        assert_eq!(pod_target(&pod("Pending", None), 4191), None);
        assert_eq!(pod_target(&pod("Succeeded", Some("10.0.0.7")), 4191), None);
        assert_eq!(pod_target(&pod("Failed", Some("10.0.0.7")), 4191), None);
        let mut leaving = pod("Running", Some("fd00::7"));
        assert_eq!(
            pod_target(&leaving, 80),
            Some("[fd00::7]:80".parse().unwrap())
        );
        leaving.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        assert_eq!(pod_target(&leaving, 80), None);
    }

    #[test]
    fn a_stream_is_stale_once_it_differs_longer_than_the_grace_and_fresh_when_it_matches() {
        let grace = Duration::from_secs(10);
        let t0 = tokio::time::Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let differs = |k: usize| {
            vec![(
                "10.0.0.1:80".to_string(),
                k,
                vec!["opaque false (want true)".to_string()],
            )]
        };
        let matches = |k: usize| vec![("10.0.0.1:80".to_string(), k, Vec::new())];
        let mut s = Staleness::default();
        assert!(s.tick(at(0), grace, differs(0)).is_empty());
        assert!(
            s.tick(at(10), grace, differs(0)).is_empty(),
            "not before the grace"
        );
        assert_eq!(
            s.tick(at(11), grace, differs(0)),
            [Turned::Stale(
                "10.0.0.1:80".into(),
                0,
                vec!["opaque false (want true)".into()]
            )]
        );
        assert_eq!(s.stale(), 1);
        assert!(
            s.tick(at(12), grace, differs(0)).is_empty(),
            "reported once"
        );
        assert_eq!(
            s.tick(at(13), grace, matches(0)),
            [Turned::Fresh(
                "10.0.0.1:80".into(),
                0,
                Duration::from_secs(13)
            )]
        );
        assert_eq!(s.stale(), 0);
        // Differing within the grace, then matching: never stale.
        assert!(s.tick(at(20), grace, differs(1)).is_empty());
        assert!(s.tick(at(25), grace, matches(1)).is_empty());
        // A stream that went away is forgotten.
        s.tick(at(30), grace, differs(2));
        s.tick(at(41), grace, differs(2));
        assert_eq!(s.stale(), 1);
        s.tick(at(42), grace, Vec::new());
        assert_eq!(s.stale(), 0);
    }
}
