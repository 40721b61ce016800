//! `client`: many `Destination.Get` watches, the way proxies hold them.

pub mod endpoints;
pub mod faults;
pub mod fleet;
pub mod ground_truth;
pub mod kube_truth;
pub mod label;
pub mod metrics;
pub mod staleness;
pub mod stream;
pub use crate::target;
pub mod token;
pub mod truth;
pub mod wire;

pub use fleet::Fleet;

use std::{collections::BTreeMap, net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::runtime::{WatchStreamExt, watcher};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use self::{
    metrics::{Metrics, ServiceStreams},
    stream::{BackoffConfig, Link, Stream, StreamConfig},
    target::{Authority, Targets},
    token::ContextToken,
};
use crate::{
    admin::Readiness,
    gates::Measurements,
    latency::Kind,
    runtime::Runtime,
    watch::{Change, Driver},
};

/// Flags of `client`.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The Destination service to watch (host:port).
    #[arg(
        long,
        env = "DST_ADDR",
        default_value = "linkerd-dst-headless.linkerd.svc.cluster.local:8086"
    )]
    pub destination_addr: String,

    /// Comma-separated authorities to watch, with brace expansion:
    /// `stable-svc-{0..9}.dst-load-test.svc.cluster.local:8080`. Repeatable.
    #[arg(long, value_delimiter = None, conflicts_with = "service_label_selector")]
    pub target_services: Vec<Targets>,

    /// Discover Services with this label selector (in --namespace) and follow
    /// them as they come and go, instead of --target-services.
    #[arg(long, requires = "namespace")]
    pub service_label_selector: Option<String>,

    /// The namespace searched with --service-label-selector.
    #[arg(long)]
    pub namespace: Option<String>,

    /// The cluster domain of discovered Services' authorities.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,

    /// Concurrent Get streams per service.
    #[arg(long, visible_alias = "watchers-per-service", default_value_t = 1)]
    pub streams_per_service: u32,

    /// Independent HTTP/2 connections, each a simulated proxy; streams are
    /// spread across them round-robin.
    #[arg(long, default_value_t = 1)]
    pub connections: u32,

    /// The context token sent with every Get, verbatim. Default: built from
    /// POD_NAMESPACE / NODE_NAME / POD_NAME as the proxy injector does.
    #[arg(long)]
    pub context_token: Option<String>,

    /// The pod name put into the context token.
    #[arg(long, env = "POD_NAME", hide_env_values = true)]
    pub pod_name: Option<String>,

    /// The namespace put into the context token.
    #[arg(long, env = "POD_NAMESPACE", hide_env_values = true)]
    pub pod_namespace: Option<String>,

    /// The node name put into the context token.
    #[arg(long, env = "NODE_NAME", hide_env_values = true)]
    pub node_name: Option<String>,

    /// Shortest stream lifetime; each stream picks a random lifetime between
    /// the min and max and then re-Gets. Unset = streams live forever.
    #[arg(long, requires = "max_stream_lifetime")]
    pub min_stream_lifetime: Option<humantime::Duration>,

    /// Longest stream lifetime.
    #[arg(long)]
    pub max_stream_lifetime: Option<humantime::Duration>,

    /// First reconnect delay.
    #[arg(long, default_value = "100ms")]
    pub backoff_min: humantime::Duration,

    /// Largest reconnect delay.
    #[arg(long, default_value = "60s")]
    pub backoff_max: humantime::Duration,

    /// Fraction (0 to 1) of each delay added at random.
    #[arg(long, default_value_t = 0.1)]
    pub backoff_jitter: f64,

    /// HTTP/2 keep-alive ping interval per connection; `0s` sends none.
    /// Linkerd's destination controller keeps gRPC-Go's default enforcement
    /// (pings at most every 5 minutes): a connection that pings more often,
    /// reaching the controller without a proxy in front of it, is closed
    /// with GOAWAY `too_many_pings` and every stream on it is reset.
    #[arg(long, default_value = "5m")]
    pub keepalive_interval: humantime::Duration,

    /// How long a stream waits for its first update before it is counted
    /// in `destination_client_initial_timeouts_total` (it keeps waiting).
    #[arg(long, default_value = "3s")]
    pub initial_timeout: humantime::Duration,

    /// Stop after this long, print a summary and exit 0. Unset = until signalled.
    #[arg(long)]
    pub duration: Option<humantime::Duration>,

    /// Follow the ground truth through the Kubernetes API (EndpointSlices, and
    /// churn's scale annotations on Deployments) in the watched namespaces, to
    /// measure change-to-observation latency and staleness.
    #[arg(long)]
    pub ground_truth: bool,

    /// Multicluster: read the ground truth from the cluster where the
    /// endpoints live (the target), through this kubeconfig, while the streams
    /// watch the source's destination controller. Implies --ground-truth.
    #[arg(long, value_name = "FILE")]
    pub ground_truth_kubeconfig: Option<std::path::PathBuf>,

    /// The context of --ground-truth-kubeconfig (default: its current one).
    #[arg(long, requires = "ground_truth_kubeconfig")]
    pub ground_truth_context: Option<String>,

    /// The link's name (`linkerd multicluster link-gen --cluster-name`): the
    /// mirrored authorities `{svc}-{link}.{ns}.svc.{cluster-domain}` and the
    /// federated `{svc}-federated...` map to the ground truth's `{svc}`.
    #[arg(long, value_name = "NAME")]
    pub ground_truth_link: Option<String>,

    /// A stream whose set differs from the ground truth for longer than this is stale.
    #[arg(long, default_value = "10s")]
    pub staleness_grace: humantime::Duration,

    #[command(flatten)]
    pub faults: faults::FaultArgs,

    /// The HTTP/2 flow-control window of each stream, in bytes (default:
    /// the HTTP/2 library's, 2 MiB): how much a stream that does not read
    /// can take before the server must stop sending to it. 65535 is the
    /// protocol's initial window.
    #[arg(long)]
    pub http2_stream_window: Option<u32>,

    /// Admin server (metrics, /live, /ready, POST /shutdown and /abort).
    #[arg(long, default_value = "0.0.0.0:9991")]
    pub admin_addr: SocketAddr,

    #[command(flatten)]
    pub admin_control: crate::admin::ControlArgs,

    /// Judge the run by this scenario's success criteria (from the load-test
    /// plan) when no --slo is given. Without either, nothing is gated.
    #[arg(long, value_enum)]
    pub scenario: Option<crate::scenario::Scenario>,

    /// Take the streams per service, connections, fault modes and SLOs from
    /// this scenario file (`run --print-scenario NAME` prints one); without
    /// --target-services or --service-label-selector, watch its services in
    /// --namespace. Fault flags given override the file's.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["scenario", "streams_per_service", "connections"]
    )]
    pub scenario_file: Option<crate::scenario::ScenarioFile>,

    /// Gates, the JSON report and JUnit output, evaluated when the client stops.
    #[command(flatten)]
    pub gates: crate::gates::GateArgs,

    /// The Kubernetes API client of --ground-truth and --service-label-selector.
    #[command(flatten)]
    pub kube: crate::kube_api::KubeArgs,
}

impl Args {
    /// Cross-flag checks that clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        self.kube.validate()?;
        if let Some(link) = &self.ground_truth_link
            && !crate::labels::is_dns_label(link)
        {
            return Err(format!(
                "--ground-truth-link '{link}' is not a link name: give the --cluster-name the link was made with (a DNS label, e.g. target)"
            ));
        }
        if let Some(file) = &self.ground_truth_kubeconfig
            && !file.is_file()
        {
            return Err(format!(
                "--ground-truth-kubeconfig {}: no such file; give the kubeconfig of the cluster where the endpoints live",
                file.display()
            ));
        }
        if self.streams_per_service == 0 {
            return Err("--streams-per-service must be at least 1".into());
        }
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if self
            .http2_stream_window
            .is_some_and(|w| !(65_535..=MAX_WINDOW).contains(&w))
        {
            return Err(
                "--http2-stream-window must be from 65535 to 2147483647 bytes (HTTP/2's limits)"
                    .into(),
            );
        }
        let listed = !self.target_services.is_empty() || self.service_label_selector.is_some();
        match (&self.scenario_file, &self.namespace) {
            _ if listed => {}
            (Some(_), None) => {
                return Err(
                    "--scenario-file's services are watched in --namespace: give --namespace (or --target-services)"
                        .into(),
                );
            }
            (Some(_), Some(_)) => {}
            (None, _) => {
                return Err("nothing to watch: give --target-services or --service-label-selector with --namespace, or --scenario-file with --namespace".into());
            }
        }
        if let (Some(lo), Some(hi)) = (self.min_stream_lifetime, self.max_stream_lifetime)
            && *lo > *hi
        {
            return Err(format!(
                "--min-stream-lifetime ({lo}) is greater than --max-stream-lifetime ({hi})"
            ));
        }
        if self.max_stream_lifetime.is_some_and(|d| d.is_zero()) {
            return Err("--max-stream-lifetime must be greater than zero".into());
        }
        if *self.backoff_min > *self.backoff_max {
            return Err(format!(
                "--backoff-min ({}) is greater than --backoff-max ({})",
                self.backoff_min, self.backoff_max
            ));
        }
        if self.backoff_min.is_zero() {
            return Err("--backoff-min must be greater than zero".into());
        }
        self.faults().validate()?;
        if !(0.0..=1.0).contains(&self.backoff_jitter) {
            return Err(format!(
                "--backoff-jitter must be between 0 and 1, got {}",
                self.backoff_jitter
            ));
        }
        destination_uri(&self.destination_addr).map(|_| ())
    }

    /// Runs until `--duration` or a signal, then prints a summary, judges
    /// the gates and writes the reports.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let mut rt = Runtime::new();
        let stop = crate::shutdown::with_deadline(&rt.shutdown(), self.duration.map(Into::into));
        let admin_addr = self.admin_addr;
        let gates = self.gates.clone();
        let defaults = match (&self.scenario_file, self.scenario) {
            (Some(file), _) => file.spec.slos.clone(),
            (None, Some(s)) => s.default_slos(),
            (None, None) => Vec::new(),
        };
        let slos = gates.slos_or(&defaults);
        let config = ReportConfig::from(&self);
        let client = Client::new(
            Config::try_from(&self).map_err(anyhow::Error::msg)?,
            rt.registry(),
        )?
        .with_readiness(rt.readiness());
        let (fleet, metrics) = (client.fleet(), client.metrics().clone());
        rt.serve_admin(admin_addr, self.admin_control).await?;
        let started_at = jiff::Timestamp::now();
        let summary = client.run(stop).await;
        rt.finish().await?;
        let summary = summary?;
        let measured = measure(&fleet, &metrics, &summary);
        let slos = crate::slo::judge(&slos, &measured, gates.min_samples);
        print!("{summary}");
        print!("{}", measured.latency_table());
        print!("{}", crate::gates::verdict_table(&slos));
        let report = Report {
            command: "client",
            config,
            started_at: started_at.to_string(),
            ended_at: jiff::Timestamp::now().to_string(),
            measured,
            services: summary.services.iter().map(ServiceRow::from).collect(),
            slos,
        };
        gates.finish("client", &report.slos, &report, || {
            crate::html::run_page(
                &format!("client of {}", report.config.destination_addr),
                &crate::html::Run::new("client", &report.measured),
                &report.slos,
            )
        })
    }
}

/// The client's `--report` JSON.
#[derive(Debug, serde::Serialize)]
struct Report {
    command: &'static str,
    config: ReportConfig,
    started_at: String,
    ended_at: String,
    #[serde(flatten)]
    measured: crate::gates::Measurements,
    services: Vec<ServiceRow>,
    slos: Vec<crate::slo::Verdict>,
}

/// The flags that shape the load, as reported.
#[derive(Debug, serde::Serialize)]
struct ReportConfig {
    destination_addr: String,
    target_services: Vec<String>,
    service_label_selector: Option<String>,
    namespace: Option<String>,
    streams_per_service: u32,
    connections: u32,
    ground_truth: bool,
    staleness_grace: String,
    duration: Option<String>,
    scenario: Option<crate::scenario::Scenario>,
    scenario_file: Option<String>,
}

impl From<&Args> for ReportConfig {
    fn from(a: &Args) -> Self {
        Self {
            destination_addr: a.destination_addr.clone(),
            target_services: a
                .target_services
                .iter()
                .flat_map(|t| t.0.iter().map(ToString::to_string))
                .collect(),
            service_label_selector: a.service_label_selector.clone(),
            namespace: a.namespace.clone(),
            streams_per_service: a.load().0,
            connections: a.load().1,
            ground_truth: a.ground_truth,
            staleness_grace: a.staleness_grace.to_string(),
            duration: a.duration.map(|d| d.to_string()),
            scenario: a.scenario,
            scenario_file: a.scenario_file.as_ref().map(|f| f.path.clone()),
        }
    }
}

/// One service's row in the report.
#[derive(Debug, serde::Serialize)]
struct ServiceRow {
    service: String,
    streams: usize,
    min_endpoints: u64,
    max_endpoints: u64,
}

impl From<&(String, usize, u64, u64)> for ServiceRow {
    fn from((service, streams, lo, hi): &(String, usize, u64, u64)) -> Self {
        Self {
            service: service.clone(),
            streams: *streams,
            min_endpoints: *lo,
            max_endpoints: *hi,
        }
    }
}

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
    /// HTTP/2 connections the streams share.
    pub connections: u32,
    /// HTTP/2 keepalive pings on busy connections; `None` = none.
    pub keepalive: Option<Duration>,
    /// Each stream's HTTP/2 flow-control window; `None` = the library's.
    pub http2_stream_window: Option<u32>,
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
    pub kube: crate::kube_api::KubeArgs,
}

impl Config {
    /// One stream per target over one connection, with the flags' defaults
    /// otherwise (the context token from the POD_* and NODE_NAME environment,
    /// as the proxy injector sets it).
    pub fn new(destination: &str, watch: Watch) -> Result<Self, String> {
        let env = |k: &str| std::env::var(k).ok();
        Ok(Self {
            destination: destination_uri(destination)?,
            watch,
            namespace: None,
            cluster_domain: "cluster.local".to_string(),
            streams_per_service: 1,
            connections: 1,
            keepalive: Some(Duration::from_secs(300)),
            http2_stream_window: None,
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
            kube: crate::kube_api::KubeArgs::default(),
        })
    }
}

impl Args {
    /// The fault modes: the scenario file's, with the flags given over them.
    fn faults(&self) -> faults::Faults {
        let base = self
            .scenario_file
            .as_ref()
            .map_or_else(faults::Faults::default, |f| f.spec.clients.faults);
        self.faults.over(base)
    }

    /// Streams per service and connections: the scenario file's or the flags'.
    fn load(&self) -> (u32, u32) {
        match &self.scenario_file {
            Some(f) => (
                f.spec.clients.streams_per_service,
                f.spec.clients.connections(),
            ),
            None => (self.streams_per_service, self.connections),
        }
    }
}

impl TryFrom<&Args> for Config {
    type Error = String;

    fn try_from(args: &Args) -> Result<Self, String> {
        args.validate()?;
        let watch = match &args.service_label_selector {
            Some(selector) => Watch::Selector {
                namespace: args.namespace.clone().unwrap_or_default(),
                selector: selector.clone(),
            },
            None => match (&args.scenario_file, args.target_services.is_empty()) {
                (Some(file), true) => Watch::Targets(
                    file.spec
                        .authorities_in(
                            args.namespace.as_deref().unwrap_or_default(),
                            &args.cluster_domain,
                        )
                        .iter()
                        .map(|a| a.parse())
                        .collect::<Result<_, _>>()
                        .map_err(|e: crate::target::TargetError| e.to_string())?,
                ),
                _ => Watch::Targets(
                    args.target_services
                        .iter()
                        .flat_map(|t| t.0.iter().cloned())
                        .collect(),
                ),
            },
        };
        let (streams_per_service, connections) = args.load();
        let keepalive: Duration = args.keepalive_interval.into();
        let context_token = match &args.context_token {
            Some(token) => token.clone(),
            None => ContextToken::new(
                args.pod_namespace.clone(),
                args.node_name.clone(),
                args.pod_name.clone(),
            )
            .to_wire(),
        };
        let lifetime = match (args.min_stream_lifetime, args.max_stream_lifetime) {
            (lo, Some(hi)) => Some((lo.map(Into::into).unwrap_or(*hi), hi.into())),
            _ => None,
        };
        Ok(Self {
            destination: destination_uri(&args.destination_addr)?,
            watch,
            namespace: args.namespace.clone(),
            cluster_domain: args.cluster_domain.clone(),
            streams_per_service,
            connections,
            keepalive: (!keepalive.is_zero()).then_some(keepalive),
            http2_stream_window: args.http2_stream_window,
            stream: StreamConfig {
                context_token,
                initial_timeout: args.initial_timeout.into(),
                lifetime,
                backoff: BackoffConfig {
                    min: args.backoff_min.into(),
                    max: args.backoff_max.into(),
                    jitter: args.backoff_jitter,
                },
            },
            ground_truth: args.ground_truth || args.ground_truth_kubeconfig.is_some(),
            truth_cluster: args
                .ground_truth_kubeconfig
                .clone()
                .map(|k| (k, args.ground_truth_context.clone())),
            truth_link: args.ground_truth_link.clone(),
            staleness_grace: args.staleness_grace.into(),
            faults: args.faults(),
            kube: args.kube.clone(),
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

fn destination_uri(addr: &str) -> Result<http::Uri, String> {
    let with_scheme = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let uri: http::Uri = with_scheme
        .parse()
        .map_err(|e| format!("invalid --destination-addr '{addr}': {e}; expected host:port"))?;
    if uri.port_u16().is_none() {
        return Err(format!(
            "--destination-addr '{addr}' has no port; expected host:port, e.g. 127.0.0.1:8086"
        ));
    }
    Ok(uri)
}

/// Tasks aborted when dropped, whatever way the function holding them ends.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// HTTP/2's largest flow-control window.
const MAX_WINDOW: u32 = 2_147_483_647;

/// A new lazily connected channel to the destination (a new HTTP/2 connection).
fn connect(config: &Config) -> Channel {
    let mut endpoint = Endpoint::from(config.destination.clone())
        .tcp_nodelay(true)
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
    .connect_lazy()
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
    readiness: Readiness,
    /// Where the ground truth comes from, besides `--ground-truth`'s
    /// Kubernetes API (a mock's change feed).
    truth: Option<Box<dyn ground_truth::GroundTruth>>,
}

impl Client {
    /// Times the streams against `source` (a mock's change feed; the
    /// Kubernetes API is `Config::ground_truth`'s).
    pub fn with_truth(mut self, source: impl ground_truth::GroundTruth) -> Self {
        self.truth = Some(Box::new(source));
        self
    }

    /// Builds a client, registering its metrics. Connects lazily.
    pub fn new(config: Config, registry: &mut Registry) -> anyhow::Result<Self> {
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
            readiness: Readiness::default(),
            truth: None,
        })
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

    /// Runs every stream until `stop`; returns the summary.
    pub async fn run(mut self, stop: CancellationToken) -> anyhow::Result<Summary> {
        let started = tokio::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        let mut next_channel = 0usize;
        let readiness_task = tokio::spawn(track_readiness(
            self.services.clone(),
            self.readiness.clone(),
            stop.clone(),
        ));
        let staleness_task = tokio::spawn(staleness::watch(
            self.services.clone(),
            self.metrics.staleness.clone(),
            self.config.staleness_grace,
            Duration::from_secs(1),
            stop.clone(),
        ));
        let mut fault_tasks = AbortOnDrop(Vec::new());
        fault_tasks.0.push(tokio::spawn(sample_timeline(
            self.services.clone(),
            self.metrics.clone(),
            stop.clone(),
        )));
        if let Some(every) = self.config.faults.reset_storm_interval {
            let jitter = self.config.faults.reset_storm_jitter;
            let (links, stop) = (self.channels.clone(), stop.clone());
            fault_tasks.0.push(tokio::spawn(async move {
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
                fault_tasks.0.push(tokio::spawn(async move {
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
                    .context("cannot build a Kubernetes client for --ground-truth-kubeconfig")?,
                None => kube
                    .client()
                    .await
                    .context("cannot build a Kubernetes client for --ground-truth")?,
            };
            sources.push(Box::new(ground_truth::Kubernetes {
                client,
                namespaces: self.truth_namespaces(),
                cluster_domain: self.config.cluster_domain.clone(),
                link: self.config.truth_link.clone(),
            }) as Box<dyn ground_truth::GroundTruth>);
        }
        sources.extend(self.truth.take());
        for source in sources {
            truth_tasks.push(tokio::spawn(
                source.follow(self.services.clone(), stop.clone()),
            ));
        }

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
                .context("cannot build a Kubernetes client for --service-label-selector")?;
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
        while tasks.join_next().await.is_some() {}
        readiness_task.abort();
        staleness_task.abort();
        for t in truth_tasks {
            t.abort();
        }
        drop(fault_tasks);
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
            tasks.spawn(s.run(self.stream.clone(), metrics.clone(), stop.clone()));
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
    ) -> anyhow::Result<()> {
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
    Measurements {
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
        by_pattern: latencies.by_pattern(),
        by_class: by_class(fleet, &services, metrics),
        timeline: metrics.timeline.lock().expect("timeline lock").clone(),
        fanouts: latencies.changes(),
    }
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
        let sample = crate::gates::TimelineSample {
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
) -> std::collections::BTreeMap<String, crate::gates::ClassFigures> {
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
            let figures = crate::gates::ClassFigures {
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

/// Keeps `ready` true while every watched stream has had its first answer.
pub async fn track_readiness(fleet: Arc<Fleet>, ready: Readiness, stop: CancellationToken) {
    loop {
        let services = fleet.services();
        ready.set(!services.is_empty() && services.iter().all(|s| s.all_answered()));
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
    use crate::cmd::parse_flags;

    #[test]
    fn the_truth_watches_the_namespace_of_services_and_pods() {
        let of = |h| namespace_of(h, "source.local");
        assert_eq!(of("web.ns.svc.source.local"), Some("ns"));
        // A StatefulSet pod through its service's mirror: not the service.
        assert_eq!(of("web-0.web-target.ns.svc.source.local"), Some("ns"));
        assert_eq!(of("web.ns.svc.cluster.local"), Some("ns"));
        assert_eq!(of("ns.svc.source.local"), None);
    }

    #[test]
    fn config_new_has_the_flags_defaults() {
        let flags: Args = parse_flags(&[
            "client",
            "--destination-addr",
            "127.0.0.1:8086",
            "--target-services",
            "a.ns.svc.cluster.local:80",
        ])
        .unwrap();
        let from_flags = Config::try_from(&flags).unwrap();
        let direct = Config::new(
            "127.0.0.1:8086",
            Watch::Targets(vec![Authority::new("a.ns.svc.cluster.local", 80).unwrap()]),
        )
        .unwrap();
        assert_eq!(format!("{direct:?}"), format!("{from_flags:?}"));
    }

    #[test]
    fn config_from_flags_validates() {
        let flags: Args = parse_flags(&["client", "--destination-addr", "127.0.0.1:8086"]).unwrap();
        assert!(
            Config::try_from(&flags)
                .unwrap_err()
                .contains("nothing to watch")
        );
        assert!(
            Config::new("no-port", Watch::Targets(vec![]))
                .unwrap_err()
                .contains("has no port")
        );
    }
}
