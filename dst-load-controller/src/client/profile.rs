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
}

impl Seen {
    fn update(&mut self, p: &DestinationProfile) {
        self.updates += 1;
        self.fully_qualified_name
            .clone_from(&p.fully_qualified_name);
        self.routes = p
            .routes
            .iter()
            .map(|r| r.metrics_labels.get("route").cloned().unwrap_or_default())
            .collect();
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
        self.retry_ratio = p.retry_budget.as_ref().map(|b| b.retry_ratio);
        self.dst_overrides = p
            .dst_overrides
            .iter()
            .map(|d| (d.authority.clone(), d.weight))
            .collect();
    }
}

/// One target's profile streams: each stream's last profile.
#[derive(Debug)]
pub struct ProfileStreams {
    /// The path asked for: `svc.ns.svc.domain:port` or `IP:port`.
    pub target: String,
    slots: Vec<Mutex<Option<Seen>>>,
    /// What the ground truth says a pod address's streams should hold.
    expected: Mutex<Option<super::pod_truth::Expected>>,
}

impl ProfileStreams {
    /// `streams` streams of `target`, none answered yet.
    pub fn new(target: String, streams: usize) -> Self {
        Self {
            target,
            slots: (0..streams).map(|_| Mutex::new(None)).collect(),
            expected: Mutex::new(None),
        }
    }

    /// What the ground truth says (`None`: no truth followed).
    pub fn expected(&self) -> Option<super::pod_truth::Expected> {
        *self.expected.lock().expect("profile truth")
    }

    pub(super) fn set_expected(&self, e: super::pod_truth::Expected) {
        *self.expected.lock().expect("profile truth") = Some(e);
    }

    /// Stream `index`'s differences from the truth (empty: none, or no
    /// truth); a stream never answered differs in its endpoint.
    pub fn differences(&self, index: usize) -> Vec<String> {
        let Some(want) = self.expected() else {
            return Vec::new();
        };
        let seen = self.slots[index].lock().expect("profile slot").clone();
        match seen {
            Some(s) => want.differences(s.endpoint, s.endpoint_identity, s.opaque_protocol),
            None => want.differences(None, want.identity, want.opaque),
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

    pub(super) fn insert(&self, s: Arc<ProfileStreams>) {
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
        } = self;
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
                loop {
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => break 'stream End::Shutdown,
                        _ = link.changed() => break 'stream End::Reset(
                            if link.borrow().storms != storms_seen { "reset_storm" } else { "connection_churn" }
                        ),
                        _ = storm(&mut storms) => break 'stream End::Reset("target_storm"),
                        msg = profiles.message() => match msg {
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
