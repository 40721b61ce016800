//! `client`: many `Destination.Get` watches, the way proxies hold them.
//! Its flags, and the run that reports on them, are `cmd::client`'s.

pub mod connector;
pub mod endpoints;
mod error;
pub mod error_log;
pub mod faults;
pub mod fleet;
pub mod ground_truth;
pub mod kube_truth;
pub mod label;
pub mod metrics;
pub mod pod_truth;
pub mod pods;
pub mod profile;
pub mod profile_truth;
pub mod staleness;
pub mod stream;
pub use crate::target;
pub mod token;
pub mod truth;
pub mod wire;

pub use error::Error;
pub use fleet::Fleet;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::runtime::{WatchStreamExt, watcher};
use prometheus_client::registry::Registry;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::transport::{Channel, Endpoint};

use self::{
    metrics::{Metrics, ServiceStreams},
    stream::{BackoffConfig, Link, Stream, StreamConfig},
    target::Authority,
    token::ContextToken,
};
use crate::{
    admin::Readiness,
    latency::Kind,
    measurements::Measurements,
    watch::{Change, Driver},
};

/// Which services a client watches.
#[derive(Clone, Debug)]
pub enum Watch {
    /// These authorities, for the whole run.
    Targets(Vec<Authority>),
    /// The Services of `namespace` matching `selector`, as they come and go.
    Selector {
        /// The namespace.
        namespace: String,
        /// A label selector.
        selector: String,
    },
}

/// What a client does, validated. Made from the flags with
/// [`TryFrom<Args>`] (where validation lives), or built directly by `run`
/// and tests from [`Config::new`].
#[derive(Clone, Debug)]
pub struct Config {
    /// The Destination service.
    pub destination: http::Uri,
    /// The services watched.
    pub watch: Watch,
    /// The namespace of the ground truth for targets (default: the
    /// namespaces the target authorities name).
    pub namespace: Option<String>,
    /// The cluster domain of discovered Services' authorities.
    pub cluster_domain: String,
    /// Streams per service.
    pub streams_per_service: u32,
    /// `GetProfile` streams per service, beside its `Get` streams.
    pub profile_streams_per_service: u32,
    /// Profile stream k of a service runs on the connection of its `Get`
    /// stream k, as a proxy resolves a target (else they are spread
    /// round-robin after the `Get` streams).
    pub profiles_beside_gets: bool,
    /// `GetProfile` streams to selected pods' addresses (`--target-pods`).
    pub target_pods: Option<pods::TargetPods>,
    /// HTTP/2 connections the streams share.
    pub connections: u32,
    /// HTTP/2 keepalive pings on busy connections; `None` = none.
    pub keepalive: Option<Duration>,
    /// Each stream's HTTP/2 flow-control window; `None` = the library's.
    pub http2_stream_window: Option<u32>,
    /// How long a TCP connection to the destination may take.
    pub connect_timeout: Duration,
    /// How long the destination may take to send anything on a new
    /// connection (its HTTP/2 SETTINGS); see [`connector`].
    pub handshake_timeout: Duration,
    /// Every stream's token, timeouts, lifetimes and backoff.
    pub stream: StreamConfig,
    /// Follow the ground truth through the Kubernetes API.
    pub ground_truth: bool,
    /// Read the ground truth from another cluster (multicluster: the
    /// target), through its kubeconfig and context.
    pub truth_cluster: Option<(std::path::PathBuf, Option<String>)>,
    /// The link whose mirrors name the truth's services (see
    /// `--ground-truth-link`).
    pub truth_link: Option<String>,
    /// How long a stream may differ from the truth before it is stale.
    pub staleness_grace: Duration,
    /// Misbehaving streams, reset storms and connection churn.
    pub faults: faults::Faults,
    /// The Kubernetes client of the ground truth and discovery.
    pub kube: crate::kube_api::KubeSettings,
}

impl Config {
    /// One stream per target over one connection, with the flags' defaults
    /// otherwise (the context token from the POD_* and NODE_NAME environment,
    /// as the proxy injector sets it).
    pub fn new(destination: &str, watch: Watch) -> Result<Self, AddrError> {
        let env = |k: &str| std::env::var(k).ok();
        Ok(Self {
            destination: destination_uri(destination)?,
            watch,
            namespace: None,
            cluster_domain: "cluster.local".to_string(),
            streams_per_service: 1,
            profile_streams_per_service: 0,
            profiles_beside_gets: false,
            target_pods: None,
            connections: 1,
            keepalive: Some(Duration::from_secs(300)),
            http2_stream_window: None,
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            stream: StreamConfig {
                context_token: ContextToken::new(
                    env("POD_NAMESPACE"),
                    env("NODE_NAME"),
                    env("POD_NAME"),
                )
                .to_wire(),
                initial_timeout: Duration::from_secs(3),
                lifetime: None,
                backoff: BackoffConfig {
                    min: Duration::from_millis(100),
                    max: Duration::from_secs(60),
                    jitter: 0.1,
                },
            },
            ground_truth: false,
            truth_cluster: None,
            truth_link: None,
            staleness_grace: Duration::from_secs(10),
            faults: faults::Faults::default(),
            kube: crate::kube_api::KubeSettings::default(),
        })
    }
}

/// The namespace of a service's or a pod's host name
/// (`[pod.]svc.ns.svc.{domain}`); in another domain, the second label.
fn namespace_of<'a>(host: &'a str, domain: &str) -> Option<&'a str> {
    match host
        .strip_suffix(domain)
        .and_then(|h| h.strip_suffix(".svc."))
    {
        Some(name) => name.rsplit_once('.').map(|(_, ns)| ns),
        None => host.split('.').nth(1),
    }
}

/// A `--destination-addr` that is no address to dial.
#[derive(Debug, thiserror::Error)]
pub enum AddrError {
    /// Not a URI.
    #[error("invalid --destination-addr '{addr}': {why}; expected host:port")]
    Invalid {
        /// As given.
        addr: String,
        /// Why.
        why: http::uri::InvalidUri,
    },
    /// No port.
    #[error("--destination-addr '{0}' has no port; expected host:port, e.g. 127.0.0.1:8086")]
    NoPort(String),
}

pub(crate) fn destination_uri(addr: &str) -> Result<http::Uri, AddrError> {
    let with_scheme = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let uri: http::Uri = with_scheme.parse().map_err(|why| AddrError::Invalid {
        addr: addr.to_string(),
        why,
    })?;
    if uri.port_u16().is_none() {
        return Err(AddrError::NoPort(addr.to_string()));
    }
    Ok(uri)
}

/// The connection (counted across the process, taken modulo the
/// connections) of a service's profile stream `index`: its `Get` stream
/// `index`'s when `beside` (the service's `Get` streams started at
/// `first`), else the next one after every stream started so far.
fn profile_channel(beside: bool, first: usize, index: usize, next: &mut usize) -> usize {
    if beside {
        first + index
    } else {
        *next += 1;
        *next - 1
    }
}

/// HTTP/2's largest flow-control window.
pub(crate) const MAX_WINDOW: u32 = 2_147_483_647;

/// A new lazily connected channel to the destination (a new HTTP/2 connection).
fn connect(config: &Config) -> Channel {
    let mut endpoint = Endpoint::from(config.destination.clone())
        .connect_timeout(config.connect_timeout)
        .initial_stream_window_size(config.http2_stream_window);
    if config.faults.slow_reader_percent > 0 || config.faults.stuck_percent > 0 {
        // Data a stream has received but not read holds the connection's
        // window too: without this, a few stuck streams would stall every
        // healthy stream on their connection, the client's own doing and
        // not the server's. Only stream windows limit then.
        endpoint = endpoint.initial_connection_window_size(Some(MAX_WINDOW));
    }
    match config.keepalive {
        // Not while idle: gRPC-Go also counts pings on a
        // connection without streams against the client.
        Some(interval) => endpoint.http2_keep_alive_interval(interval),
        None => endpoint,
    }
    .connect_with_connector_lazy(connector::connector(config.handshake_timeout))
}

/// A running client: its connections, streams and metrics. Usable as a
/// library (tests, `run`) as well as by the subcommand.
pub struct Client {
    config: Config,
    /// Each connection's current channel (replaced by connection churn)
    /// and count of reset storms.
    channels: Vec<tokio::sync::watch::Sender<Link>>,
    stream: Arc<StreamConfig>,
    metrics: Metrics,
    services: Arc<Fleet>,
    profiles: Arc<profile::ProfileFleet>,
    /// `--target-pods`' streams, by `IP:port`.
    pod_profiles: Arc<profile::ProfileFleet>,
    readiness: Readiness,
    /// Where the ground truth comes from, besides `--ground-truth`'s
    /// Kubernetes API (a mock's change feed).
    truth: Option<Box<dyn ground_truth::GroundTruth>>,
    /// Where the profiles' truth comes from, besides `--ground-truth`'s
    /// ServiceProfiles (a mock's profile feed).
    profile_truth: Option<Box<dyn profile_truth::ProfileTruth>>,
    /// Every task the client spawns is tracked here (the process's
    /// runtime's, see [`Client::with_tracker`]).
    tracker: TaskTracker,
}

impl Client {
    /// Times the streams against `source` (a mock's change feed; the
    /// Kubernetes API is `Config::ground_truth`'s).
    pub fn with_truth(mut self, source: impl ground_truth::GroundTruth) -> Self {
        self.truth = Some(Box::new(source));
        self
    }

    /// Judges and times the profile streams by service name against
    /// `source` (a mock's profile feed; ServiceProfiles are
    /// `Config::ground_truth`'s).
    pub fn with_profile_truth(mut self, source: impl profile_truth::ProfileTruth) -> Self {
        self.profile_truth = Some(Box::new(source));
        self
    }

    /// Builds a client, registering its metrics. Connects lazily.
    pub fn new(config: Config, registry: &mut Registry) -> Result<Self, Error> {
        let channels = (0..config.connections)
            .map(|_| {
                tokio::sync::watch::Sender::new(Link {
                    channel: connect(&config),
                    storms: 0,
                })
            })
            .collect();
        let services = Arc::new(Fleet::default());
        let metrics = Metrics::register(registry, services.clone());
        Ok(Self {
            stream: Arc::new(config.stream.clone()),
            config,
            channels,
            metrics,
            services,
            profiles: Arc::default(),
            pod_profiles: Arc::default(),
            readiness: Readiness::default(),
            truth: None,
            profile_truth: None,
            tracker: TaskTracker::new(),
        })
    }

    /// Spawns its tasks through `tracker` (the runtime's, whose `finish`
    /// then waits for them too).
    pub fn with_tracker(mut self, tracker: TaskTracker) -> Self {
        self.tracker = tracker;
        self
    }

    /// Reports readiness through `readiness` (the process's `/ready`).
    pub fn with_readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = readiness;
        self
    }

    /// Ready once every stream has had its first answer.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// The metrics handles (for tests and `run`).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The watched services.
    pub fn fleet(&self) -> Arc<Fleet> {
        self.services.clone()
    }

    /// The `GetProfile` streams, by target.
    pub fn profile_fleet(&self) -> Arc<profile::ProfileFleet> {
        self.profiles.clone()
    }

    /// The `--target-pods` streams, by `IP:port`.
    pub fn pod_fleet(&self) -> Arc<profile::ProfileFleet> {
        self.pod_profiles.clone()
    }

    /// Runs every stream until `stop`; returns the summary.
    pub async fn run(mut self, stop: CancellationToken) -> Result<Summary, Error> {
        // Ours to cancel at the end, whatever ended the streams: every task
        // below ends on it, on an early return too.
        let stop = stop.child_token();
        let _stop_on_return = stop.clone().drop_guard();
        let tracker = self.tracker.clone();
        let started = tokio::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        let mut next_channel = 0usize;
        let readiness_task = tracker.spawn(track_readiness(
            Watched {
                services: self.services.clone(),
                pods: self
                    .config
                    .target_pods
                    .is_some()
                    .then(|| self.pod_profiles.clone()),
            },
            self.readiness.clone(),
            stop.clone(),
        ));
        let staleness_task = tracker.spawn(staleness::watch(
            self.services.clone(),
            self.metrics.staleness.clone(),
            self.config.staleness_grace,
            Duration::from_secs(1),
            stop.clone(),
        ));
        let mut fault_tasks = vec![tracker.spawn(sample_timeline(
            self.services.clone(),
            self.metrics.clone(),
            stop.clone(),
        ))];
        if let Some(every) = self.config.faults.reset_storm_interval {
            let jitter = self.config.faults.reset_storm_jitter;
            let (links, stop) = (self.channels.clone(), stop.clone());
            fault_tasks.push(tracker.spawn(async move {
                for delay in faults::jittered(every, jitter, rand::random()) {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    tracing::info!("reset storm: every stream re-Gets");
                    for link in &links {
                        link.send_modify(|l| l.storms += 1);
                    }
                }
            }));
        }
        if let Some(every) = self.config.faults.connection_churn_interval {
            for channel in &self.channels {
                let (channel, stop, config) = (channel.clone(), stop.clone(), self.config.clone());
                fault_tasks.push(tracker.spawn(async move {
                    for delay in faults::jittered(every, every / 2, rand::random()) {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(delay) => {}
                        }
                        // The old connection closes once its streams moved.
                        let new = connect(&config);
                        channel.send_modify(|l| l.channel = new);
                    }
                }));
            }
        }
        let mut truth_tasks = Vec::new();
        let mut sources = Vec::new();
        if self.config.ground_truth {
            let kube = &self.config.kube;
            let client = match &self.config.truth_cluster {
                Some((kubeconfig, context)) => kube
                    .of_cluster(kubeconfig, context.clone())
                    .client()
                    .await
                    .map_err(Error::kube("--ground-truth-kubeconfig"))?,
                None => kube.client().await.map_err(Error::kube("--ground-truth"))?,
            };
            sources.push(Box::new(ground_truth::Kubernetes {
                client,
                namespaces: self.truth_namespaces(),
                cluster_domain: self.config.cluster_domain.clone(),
                link: self.config.truth_link.clone(),
            }) as Box<dyn ground_truth::GroundTruth>);
        }
        let mut profile_sources: Vec<Box<dyn profile_truth::ProfileTruth>> = Vec::new();
        if self.config.ground_truth && self.config.profile_streams_per_service > 0 {
            let client = self
                .config
                .kube
                .client()
                .await
                .map_err(Error::kube("the profiles' ground truth"))?;
            profile_sources.push(Box::new(profile_truth::Kubernetes {
                client,
                namespaces: self.truth_namespaces(),
            }));
        }
        profile_sources.extend(self.profile_truth.take());
        let profiles_judged = !profile_sources.is_empty();
        for source in profile_sources {
            let truth = profile_truth::RoutesTruth::new(
                self.profiles.clone(),
                self.metrics.profiles.clone(),
            );
            truth_tasks.push(tracker.spawn(source.follow(truth, stop.clone())));
        }
        // One judge of every profile stream with a truth (one gauge).
        let judged: Vec<_> = [
            profiles_judged.then(|| self.profiles.clone()),
            self.config
                .target_pods
                .as_ref()
                .and_then(|p| p.truth.as_ref())
                .map(|_| self.pod_profiles.clone()),
        ]
        .into_iter()
        .flatten()
        .collect();
        let profile_staleness = (!judged.is_empty()).then(|| {
            tracker.spawn(pods::watch_staleness(
                judged,
                self.metrics.profiles.clone(),
                self.config.staleness_grace,
                stop.clone(),
            ))
        });
        sources.extend(self.truth.take());
        for source in sources {
            truth_tasks.push(tracker.spawn(source.follow(self.services.clone(), stop.clone())));
        }

        let pods = async {
            match &self.config.target_pods {
                Some(pods) => {
                    let context = pods::Context {
                        channels: &self.channels,
                        stream: &self.stream,
                        metrics: &self.metrics,
                        fleet: &self.pod_profiles,
                        kube: &self.config.kube,
                        tracker: &tracker,
                    };
                    context.follow(pods, stop.clone()).await
                }
                None => Ok(()),
            }
        };
        let services = async {
            if let Watch::Selector {
                namespace,
                selector,
            } = &self.config.watch
            {
                let kube = self
                    .config
                    .kube
                    .client()
                    .await
                    .map_err(Error::kube("--service-label-selector"))?;
                self.discover(
                    kube,
                    namespace,
                    selector,
                    &mut next_channel,
                    &mut tasks,
                    stop.clone(),
                )
                .await?;
            } else {
                let targets: &[Authority] = match &self.config.watch {
                    Watch::Targets(t) => t,
                    Watch::Selector { .. } => &[],
                };
                for authority in targets {
                    self.spawn_service(
                        &authority.to_string(),
                        &mut next_channel,
                        &mut tasks,
                        stop.clone(),
                    );
                }
                tracing::info!(
                    services = self.services.services().len(),
                    streams_per_service = self.config.streams_per_service,
                    connections = self.channels.len(),
                    "streams started"
                );
                stop.cancelled().await;
            }
            Ok::<_, Error>(())
        };
        tokio::try_join!(services, pods)?;
        while tasks.join_next().await.is_some() {}
        readiness_task.abort();
        // The staleness checks end with a last pass: the summary's stale
        // counts are the end's.
        stop.cancel();
        let _ = staleness_task.await;
        if let Some(t) = profile_staleness {
            let _ = t.await;
        }
        for t in truth_tasks {
            t.abort();
        }
        for t in fault_tasks {
            let _ = t.await;
        }
        Ok(Summary::collect(&self, started.elapsed()))
    }

    /// The namespaces whose ground truth is followed: `--namespace`, or those
    /// named by the target authorities (`svc.NAMESPACE.svc...`).
    fn truth_namespaces(&self) -> std::collections::BTreeSet<String> {
        if let Some(ns) = &self.config.namespace {
            return [ns.clone()].into();
        }
        let targets: &[Authority] = match &self.config.watch {
            Watch::Targets(t) => t,
            Watch::Selector { namespace, .. } => return [namespace.clone()].into(),
        };
        targets
            .iter()
            .filter_map(|a| namespace_of(a.host(), &self.config.cluster_domain))
            .map(str::to_string)
            .collect()
    }

    fn spawn_service(
        &self,
        service: &str,
        next_channel: &mut usize,
        tasks: &mut tokio::task::JoinSet<()>,
        stop: CancellationToken,
    ) {
        // The process's n-th stream has the n-th class (see Faults::class).
        let classes = (0..self.config.streams_per_service as usize)
            .map(|k| self.config.faults.class(*next_channel + k))
            .collect();
        let streams = Arc::new(ServiceStreams::new(
            service.to_string(),
            classes,
            self.metrics.latencies.clone(),
        ));
        self.services.insert(streams.clone());
        // Shared by the service's streams: a copy in each would be part of
        // every stream's memory.
        let metrics = Arc::new(self.metrics.clone());
        let first_channel = *next_channel;
        for index in 0..streams.len() {
            let link = self.channels[*next_channel % self.channels.len()].subscribe();
            *next_channel += 1;
            let s = Stream {
                service: streams.clone(),
                index,
                link,
                slow_delay: self.config.faults.slow_reader_delay,
            };
            // Not instrumented with a span: its 40 bytes would be in every
            // stream's task (the stream's log lines name it themselves), and
            // they made the task outgrow tokio's next 128-byte size.
            tasks.spawn(self.tracker.track_future(s.run(
                self.stream.clone(),
                metrics.clone(),
                stop.clone(),
            )));
        }
        let profiles = self.config.profile_streams_per_service as usize;
        if profiles > 0 {
            // A profile stream's class is its connection ordinal's, as a
            // `Get` stream's: beside its `Get` stream, it reads as that one
            // does (one proxy reads both or neither).
            let channels: Vec<usize> = (0..profiles)
                .map(|index| {
                    profile_channel(
                        self.config.profiles_beside_gets,
                        first_channel,
                        index,
                        next_channel,
                    )
                })
                .collect();
            let classes = channels
                .iter()
                .map(|c| self.config.faults.class(*c))
                .collect();
            let streams = Arc::new(profile::ProfileStreams::with_classes(
                service.to_string(),
                classes,
            ));
            self.profiles.insert(streams.clone());
            for (index, channel) in channels.into_iter().enumerate() {
                let link = self.channels[channel % self.channels.len()].subscribe();
                let s = profile::ProfileStream {
                    streams: streams.clone(),
                    index,
                    link,
                    storms: None,
                    metric_target: service.to_string(),
                    slow_delay: self.config.faults.slow_reader_delay,
                };
                tasks.spawn(self.tracker.track_future(s.run(
                    self.stream.clone(),
                    self.metrics.profiles.clone(),
                    stop.clone(),
                )));
            }
        }
    }

    async fn discover(
        &self,
        kube: kube::Client,
        namespace: &str,
        selector: &str,
        next_channel: &mut usize,
        tasks: &mut tokio::task::JoinSet<()>,
        stop: CancellationToken,
    ) -> Result<(), Error> {
        let api: kube::Api<Service> = kube::Api::namespaced(kube, namespace);
        let cfg = crate::kube_api::watch_config().labels(selector);
        // The watcher retries with backoff by itself; a re-list (after a
        // long disconnection) yields the Services deleted meanwhile.
        let mut events = std::pin::pin!(watcher(api, cfg).default_backoff());
        let mut driver = Driver::<Service>::new();
        let mut per_service: BTreeMap<String, CancellationToken> = BTreeMap::new();
        // Service name -> authority, to close a deleted Service's streams.
        let mut authorities: BTreeMap<String, String> = BTreeMap::new();
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                e = events.next() => match e { Some(e) => e, None => return Ok(()) },
            };
            let batch = match event {
                Ok(e) => match driver.event(e) {
                    Some(batch) => batch,
                    None => continue,
                },
                Err(error) => {
                    self.metrics
                        .error("kubernetes_watch", faults::Class::Healthy);
                    tracing::warn!(%error, "service watch failed; retrying");
                    continue;
                }
            };
            for change in batch.changes {
                match change {
                    Change::Apply(svc) => {
                        let (Some(name), Some(authority)) = (
                            svc.metadata.name.clone(),
                            service_authority(&svc, namespace, &self.config.cluster_domain),
                        ) else {
                            continue;
                        };
                        if let Some(old) = authorities.insert(name, authority.clone())
                            && old != authority
                            && let Some(token) = per_service.remove(&old)
                        {
                            tracing::info!(service = %old, "service port changed; closing its streams");
                            token.cancel();
                            self.services.remove(&old);
                            self.profiles.remove(&old);
                        }
                        if let std::collections::btree_map::Entry::Vacant(entry) =
                            per_service.entry(authority)
                        {
                            tracing::info!(service = %entry.key(), "service discovered; opening streams");
                            let token = stop.child_token();
                            self.spawn_service(entry.key(), next_channel, tasks, token.clone());
                            entry.insert(token);
                        }
                    }
                    Change::Delete(key) => {
                        let Some(authority) = authorities.remove(&key.name) else {
                            continue;
                        };
                        if let Some(token) = per_service.remove(&authority) {
                            tracing::info!(service = %authority, "service deleted; closing its streams");
                            token.cancel();
                            self.services.remove(&authority);
                            self.profiles.remove(&authority);
                        }
                    }
                }
            }
        }
    }
}

/// Reads everything a gate or report needs off a finished client.
pub fn measure(fleet: &Fleet, metrics: &metrics::Metrics, summary: &Summary) -> Measurements {
    let services = fleet.services();
    let latencies = &metrics.latencies;
    let sum =
        |f: &dyn Fn(&metrics::ServiceStreams) -> u64| services.iter().map(|s| f(s)).sum::<u64>();
    let m = Measurements {
        streams: sum(&|s| s.len() as u64),
        streams_created: summary.streams_created,
        streams_reset: summary.resets,
        updates_received: summary.updates,
        errors: summary.errors,
        fanouts_completed: sum(&|s| s.truth.completed.get()),
        fanouts_superseded: sum(&|s| s.truth.superseded.get()),
        streams_unconverged: sum(&|s| s.truth.pending() as u64),
        convergences_untimed: sum(&|s| s.truth.untimed.get()),
        update_latency: latencies.percentiles(Kind::Update),
        convergence_latency: latencies.percentiles(Kind::Convergence),
        fanout_completion: latencies.percentiles(Kind::Fanout),
        kubernetes_leg: latencies.percentiles(Kind::KubernetesLeg),
        destination_leg: latencies.percentiles(Kind::DestinationLeg),
        stale_streams: metrics.staleness.stale_now(fleet),
        staleness: metrics.staleness.episodes(),
        services_never_served: summary.dropped().count() as u64,
        profile_streams_created: summary.profile_streams_created,
        profile_updates_received: summary.profile_updates,
        profile_stale_streams: summary.profile_stale.0,
        profile_stuck_streams: summary.profile_stuck,
        profile_update_latency: metrics.profiles.update_latency.percentiles(),
        by_pattern: latencies.by_pattern(),
        by_class: by_class(fleet, &services, metrics),
        timeline: metrics.timeline.lock().expect("timeline lock").clone(),
        fanouts: latencies.changes(),
        diagnoses: Vec::new(),
    };
    let diagnoses = m.diagnose();
    Measurements { diagnoses, ..m }
}

/// The most timeline samples a client keeps: a day of seconds.
const MAX_TIMELINE: usize = 86_400;

/// Samples the client's streams, updates, errors, resets and stale streams
/// every second into `metrics.timeline`, until `stop`.
async fn sample_timeline(fleet: Arc<Fleet>, metrics: Metrics, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let sample = crate::measurements::TimelineSample {
            at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            streams_active: metrics.streams_active.get(),
            updates: fleet
                .services()
                .iter()
                .map(|s| metrics.updates_of(&s.service))
                .sum(),
            errors: metrics.errors_total.get(),
            resets: metrics.resets_total.get(),
            stale: metrics.staleness.stale_now(&fleet),
            update_latency: metrics.latencies.take_window(),
        };
        let mut timeline = metrics.timeline.lock().expect("timeline lock");
        if timeline.len() < MAX_TIMELINE {
            timeline.push(sample);
        }
    }
}

/// Each class's figures, when any stream is not healthy.
fn by_class(
    fleet: &Fleet,
    services: &[Arc<ServiceStreams>],
    metrics: &metrics::Metrics,
) -> std::collections::BTreeMap<String, crate::measurements::ClassFigures> {
    use faults::Class;
    let count = |c: Class| -> u64 {
        services
            .iter()
            .map(|s| s.classes().iter().filter(|x| **x == c).count() as u64)
            .sum()
    };
    if Class::ALL[1..].iter().all(|c| count(*c) == 0) {
        return Default::default();
    }
    let mut latencies = metrics.latencies.by_class();
    Class::ALL
        .into_iter()
        .filter(|c| count(*c) > 0)
        .map(|c| {
            let figures = crate::measurements::ClassFigures {
                streams: count(c),
                resets: metrics.resets_of(c),
                stale: metrics.staleness.stale_of(fleet, c),
                latencies: latencies.remove(c.as_str()).unwrap_or_default(),
            };
            (c.as_str().to_string(), figures)
        })
        .collect()
}

/// The authority a proxy would resolve for a Service: its `http` port, else its first port.
pub fn service_authority(svc: &Service, namespace: &str, cluster_domain: &str) -> Option<String> {
    let name = svc.metadata.name.as_deref()?;
    let ports = svc.spec.as_ref()?.ports.as_ref()?;
    let port = ports
        .iter()
        .find(|p| p.name.as_deref() == Some("http"))
        .or(ports.first())?
        .port;
    Some(format!("{name}.{namespace}.svc.{cluster_domain}:{port}"))
}

/// What readiness waits for.
pub struct Watched {
    /// The services' `Get` streams.
    pub services: Arc<Fleet>,
    /// `--target-pods`' streams, when given.
    pub pods: Option<Arc<profile::ProfileFleet>>,
}

impl Watched {
    /// Services' `Get` streams only.
    pub fn services(services: Arc<Fleet>) -> Self {
        Self {
            services,
            pods: None,
        }
    }

    /// Something is watched and every stream has had its first answer.
    fn ready(&self) -> bool {
        let services = self.services.services();
        let pods = self.pods.as_ref().map(|p| p.all()).unwrap_or_default();
        (!services.is_empty() || !pods.is_empty())
            && services.iter().all(|s| s.all_answered())
            && pods.iter().all(|p| p.answered() == p.len())
    }
}

/// Keeps `ready` true while every watched stream has had its first answer.
pub async fn track_readiness(watched: Watched, ready: Readiness, stop: CancellationToken) {
    loop {
        ready.set(watched.ready());
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// What a client run saw, printed at the end.
#[derive(Clone, Debug)]
pub struct Summary {
    /// How long it ran.
    pub elapsed: Duration,
    /// Get calls made.
    pub streams_created: u64,
    /// Updates received, all services.
    pub updates: u64,
    /// Errors seen.
    pub errors: u64,
    /// Streams ended for good.
    pub failed_streams: u64,
    /// Streams that ended and were re-opened.
    pub resets: u64,
    /// `GetProfile` calls made.
    pub profile_streams_created: u64,
    /// Profiles received, all services and pods.
    pub profile_updates: u64,
    /// `--target-pods`: pods targeted at the end, and their streams
    /// (answered, all).
    pub target_pods: Option<(usize, usize, usize)>,
    /// Profile streams stale at the end, and times a stream turned stale
    /// (with the ground truth).
    pub profile_stale: (u64, u64),
    /// Profile streams that read once and never again (`--stuck-percent`).
    pub profile_stuck: u64,
    /// Per service: (authority, streams, min set, max set).
    pub services: Vec<(String, usize, u64, u64)>,
    /// Services none of whose streams ever held an endpoint (Linkerd answers
    /// a service whose endpoints it drops with an empty `add`), with the number of endpoints the ground truth lists for
    /// them (`None` when no truth is known).
    pub never_served: Vec<(String, Option<usize>)>,
}

impl Summary {
    /// The services that never got an endpoint although the ground truth
    /// lists endpoints for them: the destination server dropped them.
    pub fn dropped(&self) -> impl Iterator<Item = (&str, usize)> {
        self.never_served
            .iter()
            .filter_map(|(s, n)| n.filter(|n| *n > 0).map(|n| (s.as_str(), n)))
    }
}

impl Summary {
    fn collect(client: &Client, elapsed: Duration) -> Self {
        let m = &client.metrics;

        let services: Vec<_> = client
            .services
            .services()
            .iter()
            .map(|s| {
                let (lo, hi) = s.min_max();
                (s.service.clone(), s.len(), lo, hi)
            })
            .collect();
        let updates = services.iter().map(|(svc, ..)| m.updates_of(svc)).sum();
        let never_served = client
            .services
            .services()
            .iter()
            .filter(|s| !s.slots().iter().any(|slot| slot.served()))
            .map(|s| {
                let known = s.truth.is_known();
                (s.service.clone(), known.then(|| s.truth.expected().len()))
            })
            .collect();
        Self {
            elapsed,
            streams_created: m.streams_created.get(),
            updates,
            errors: m.errors_total.get(),
            failed_streams: m.failed_total.get(),
            resets: m.resets_total.get(),
            profile_streams_created: m.profiles.streams_created.get(),
            profile_updates: m.profiles.updates_total.get(),
            target_pods: client.config.target_pods.is_some().then(|| {
                let pods = client.pod_profiles.all();
                (
                    pods.len(),
                    pods.iter().map(|p| p.answered()).sum(),
                    pods.iter().map(|p| p.len()).sum(),
                )
            }),
            profile_stale: (
                m.profiles.stale_streams.get().max(0) as u64,
                m.profiles.stale_episodes.get(),
            ),
            profile_stuck: client.profiles.all().iter().map(|s| s.stuck() as u64).sum(),
            services,
            never_served,
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "client summary after {:.1}s", self.elapsed.as_secs_f64())?;
        writeln!(f, "  streams created: {}", self.streams_created)?;
        writeln!(f, "  updates:         {}", self.updates)?;
        writeln!(f, "  errors:          {}", self.errors)?;
        writeln!(f, "  failed streams:  {}", self.failed_streams)?;
        writeln!(f, "  resets:          {}", self.resets)?;
        if self.profile_streams_created > 0 {
            writeln!(
                f,
                "  profile streams created: {}  profiles received: {}",
                self.profile_streams_created, self.profile_updates
            )?;
        }
        if let Some((pods, answered, streams)) = self.target_pods {
            writeln!(
                f,
                "  target pods: {pods}  their streams answered: {answered} of {streams}"
            )?;
        }
        let (stale, episodes) = self.profile_stale;
        if episodes > 0 {
            writeln!(
                f,
                "  !!! profile streams stale now: {stale}; times a profile stream went stale: {episodes} (the log names each stream and what differs)"
            )?;
        }
        if self.profile_stuck > 0 {
            writeln!(
                f,
                "  stuck profile streams (read once, never again; not counted as stale): {}",
                self.profile_stuck
            )?;
        }
        writeln!(
            f,
            "  {:<60} {:>7} {:>9} {:>9}",
            "service", "streams", "min set", "max set"
        )?;
        for (svc, n, lo, hi) in &self.services {
            writeln!(f, "  {svc:<60} {n:>7} {lo:>9} {hi:>9}")?;
        }
        let dropped: Vec<_> = self.dropped().collect();
        if !dropped.is_empty() {
            writeln!(
                f,
                "  !!! {} service(s) NEVER got an endpoint although their EndpointSlices list endpoints:",
                dropped.len()
            )?;
            for (svc, n) in &dropped {
                writeln!(f, "  !!!   {svc} ({n} endpoints in the ground truth)")?;
            }
            writeln!(
                f,
                "  !!! The destination server is not serving these endpoints. Against Linkerd, check that the pods look meshed \
                 (a linkerd-proxy container with its LINKERD2_PROXY_*_LISTEN_ADDR env; churn --proxy-injection) and the controller's log."
            )?;
        }
        let silent = self
            .never_served
            .iter()
            .filter(|(_, n)| n.is_none())
            .count();
        if silent > 0 {
            writeln!(
                f,
                "  warning: {silent} service(s) never got an endpoint (give --ground-truth to check them against the EndpointSlices)"
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_streams_share_their_get_streams_connections_as_a_proxys_do() {
        // Service A's 3 Get streams took connections 0..3, B's 3..6.
        let mut next = 3;
        let beside: Vec<usize> = (0..3)
            .map(|k| profile_channel(true, 0, k, &mut next))
            .collect();
        assert_eq!((beside, next), (vec![0, 1, 2], 3));
        // Spread: after every stream started so far.
        let mut next = 6;
        let spread: Vec<usize> = (0..3)
            .map(|k| profile_channel(false, 3, k, &mut next))
            .collect();
        assert_eq!((spread, next), (vec![6, 7, 8], 9));
    }

    #[test]
    fn the_truth_watches_the_namespace_of_services_and_pods() {
        let of = |h| namespace_of(h, "source.local");
        assert_eq!(of("web.ns.svc.source.local"), Some("ns"));
        // A StatefulSet pod through its service's mirror: not the service.
        assert_eq!(of("web-0.web-target.ns.svc.source.local"), Some("ns"));
        assert_eq!(of("web.ns.svc.cluster.local"), Some("ns"));
        assert_eq!(of("ns.svc.source.local"), None);
    }
}
