//! `--target-pods`: `GetProfile` streams to the `IP:port` of every pod a
//! label selector picks, as the proxy of a meshed scraper (a Prometheus
//! scraping pods) holds them: opened as pods appear, closed as they go, and,
//! in a storm, all re-opened at once as when the scraper restarts.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;

use super::{
    metrics::Metrics,
    profile::{ProfileFleet, ProfileStream, ProfileStreams},
    stream::{Link, StreamConfig},
};
use crate::watch::{Change, Driver};

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
    pub fleet: &'a ProfileFleet,
    /// The Kubernetes client's settings.
    pub kube: &'a crate::kube_api::KubeSettings,
}

impl Context<'_> {
    /// Follows the selected pods until `stop`, holding their streams.
    pub async fn follow(&self, pods: &TargetPods, stop: CancellationToken) -> anyhow::Result<()> {
        let kube = self
            .kube
            .client()
            .await
            .context("cannot build a Kubernetes client for --target-pods")?;
        let storms = tokio::sync::watch::Sender::new(0u64);
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(every) = pods.storm_interval {
            let (storms, stop) = (storms.clone(), stop.clone());
            tasks.spawn(async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    tracing::info!("target-pod storm: every pod's GetProfile streams re-open");
                    storms.send_modify(|n| *n += 1);
                }
            });
        }
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
            for change in batch.changes {
                let (name, target) = match change {
                    Change::Apply(pod) => {
                        let Some(name) = pod.metadata.name.clone() else {
                            continue;
                        };
                        (name, pod_target(&pod, pods.port))
                    }
                    Change::Delete(key) => (key.name, None),
                };
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
                    };
                    tasks.spawn(s.run(
                        self.stream.clone(),
                        self.metrics.profiles.clone(),
                        token.clone(),
                    ));
                }
                open.insert(name, (target, streams, token));
            }
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
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
}
