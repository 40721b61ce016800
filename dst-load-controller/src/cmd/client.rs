//! `client`'s front door: its flags, their checks, the [`Config`] they make,
//! and the run that prints, judges and reports what the client measured.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use prometheus_client::registry::Registry;

use crate::{
    client::{
        Client, Config, MAX_WINDOW, Watch, destination_uri, faults, measure,
        stream::{BackoffConfig, StreamConfig},
        target::Targets,
        token::ContextToken,
    },
    runtime::Runtime,
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

    /// The version of the destination controller watched, recorded in the
    /// report (a local control plane's env file sets it: `hack/local-cluster.sh
    /// up --linkerd VERSION`).
    #[arg(long, env = "DST_LOCAL_LINKERD_VERSION", value_name = "VERSION")]
    pub destination_version: Option<String>,

    /// Comma-separated authorities to watch, with brace expansion:
    /// `stable-svc-{0..9}.dst-load-test.svc.cluster.local:8080`. Repeatable.
    #[arg(long, value_delimiter = None, conflicts_with = "service_label_selector")]
    pub target_services: Vec<Targets>,

    /// Discover Services with this label selector (in --namespace) and follow
    /// them as they come and go, instead of --target-services.
    #[arg(long, requires = "namespace")]
    pub service_label_selector: Option<String>,

    /// The namespace searched with --service-label-selector.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,

    /// The cluster domain of discovered Services' authorities.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,

    /// Concurrent Get streams per service. One client holds at most
    /// 1,000,000 streams in all (about 8 KB each).
    #[arg(long, visible_alias = "watchers-per-service", default_value_t = 1)]
    pub streams_per_service: u32,

    /// Concurrent GetProfile streams per service, beside its Get streams
    /// (a proxy holds one of each per target). Each stream's last profile
    /// is tracked; the summary and `destination_client_profile_*` count them.
    #[arg(long, default_value_t = 0)]
    pub profile_streams_per_service: u32,

    /// Open GetProfile streams to the `IP:port` of every pod this label
    /// selector picks in --namespace, as the proxy of a meshed scraper (a
    /// Prometheus scraping pods) does: opened as pods get an IP, closed as
    /// they finish or go. The controller resolves each through its workload
    /// watcher, scanning the namespace's Servers (Linkerd #15583).
    #[arg(long, value_name = "SELECTOR", requires = "namespace")]
    pub target_pods: Option<String>,

    /// The port asked for on each --target-pods pod (default: the proxy's
    /// admin port, which Linkerd's Prometheus scrapes on every meshed pod).
    #[arg(long, default_value_t = crate::churn::objects::proxy_ports::ADMIN, requires = "target_pods")]
    pub target_pods_port: u16,

    /// GetProfile streams per --target-pods pod (scrapers each hold one).
    #[arg(long, default_value_t = 1, requires = "target_pods")]
    pub profile_streams_per_pod: u32,

    /// Every this long, all --target-pods streams are re-opened at once, as
    /// when the scraper restarts: the controller gets a subscribe storm.
    /// Counted as `destination_client_profile_streams_reset_total{reason="target_storm"}`.
    #[arg(long, requires = "target_pods")]
    pub target_pods_storm_interval: Option<humantime::Duration>,

    /// Stop the --target-pods-storm-interval storms after this many (the
    /// streams then stay open): unset = until the end.
    #[arg(long, requires = "target_pods_storm_interval")]
    pub target_pods_storms: Option<u32>,

    /// The controller's namespace (its --controller-namespace): with
    /// --ground-truth, --target-pods pods labelled into it are expected
    /// with a TLS identity.
    #[arg(long, default_value = "linkerd")]
    pub control_plane_ns: String,

    /// The controller's --default-opaque-ports (Linkerd's chart sets this
    /// list): with --ground-truth, --target-pods ports in it are expected
    /// opaque unless the pod's `config.linkerd.io/opaque-ports` says
    /// otherwise. Numbers and ranges, comma-separated.
    #[arg(long, default_value = "25,587,3306,4444,5432,6379,9300,11211")]
    pub default_opaque_ports: String,

    /// The proxy's discovery pattern: every Get stream has a GetProfile
    /// stream of the same target on its connection (as a proxy resolves a
    /// target), i.e. --profile-streams-per-service equal to
    /// --streams-per-service, placed beside them.
    #[arg(long, conflicts_with = "profile_streams_per_service")]
    pub proxy_discovery: bool,

    /// Independent HTTP/2 connections, each a simulated proxy; streams are
    /// spread across them round-robin. At most 65,535 (one local port each)
    /// and at most the streams.
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

    /// How long a TCP connection to the destination may take; past it the
    /// connection's streams count an error (`reason="timeout"`) and retry
    /// with backoff.
    #[arg(long, default_value = "10s")]
    pub connect_timeout: humantime::Duration,

    /// How long the destination may take to send anything on a new
    /// connection (an HTTP/2 server sends its SETTINGS at once); past it the
    /// connection is dropped, its streams count an error
    /// (`reason="timeout"`) and retry with backoff. Catches a server that
    /// accepts connections and never answers.
    #[arg(long, default_value = "10s")]
    pub handshake_timeout: humantime::Duration,

    /// How long a stream waits for its first update before it is counted
    /// in `destination_client_initial_timeouts_total` (it keeps waiting).
    #[arg(long, default_value = "3s")]
    pub initial_timeout: humantime::Duration,

    /// Stop after this long, print a summary, judge the gates and exit: 0, or
    /// 3 when a gate (--slo, or --scenario's defaults) failed. Unset = until
    /// signalled (the same summary and exit status).
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
    pub faults: super::flags::FaultArgs,

    /// The HTTP/2 flow-control window of each stream, in bytes (default:
    /// the HTTP/2 library's, 2 MiB): how much a stream that does not read
    /// can take before the server must stop sending to it. 65535 is the
    /// protocol's initial window.
    #[arg(long)]
    pub http2_stream_window: Option<u32>,

    /// Admin server (metrics, /live, /ready, POST /shutdown and /abort).
    #[arg(long, default_value = "127.0.0.1:9991")]
    pub admin_addr: SocketAddr,

    #[command(flatten)]
    pub admin_control: super::flags::ControlArgs,

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
    pub gates: super::flags::GateArgs,

    /// The Kubernetes API client of --ground-truth and --service-label-selector.
    #[command(flatten)]
    pub kube: super::flags::KubeArgs,
}

impl Args {
    /// Cross-flag checks that clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        self.kube.validate()?;
        self.gates.check_outputs()?;
        super::flags::check_ground_truth_target(
            self.ground_truth_link.as_deref(),
            self.ground_truth_kubeconfig.as_deref(),
        )?;
        super::flags::at_least_one("--streams-per-service", self.streams_per_service, "")?;
        super::flags::at_least_one("--connections", self.connections, "")?;
        if let Some(d) = self.duration {
            super::flags::above_zero(
                "--duration",
                d,
                "60s",
                ", or left out to run until signalled",
            )?;
        }
        if self.ground_truth_link.is_some()
            && !self.ground_truth
            && self.ground_truth_kubeconfig.is_none()
        {
            return Err("--ground-truth-link maps mirrored services to the ground truth: give --ground-truth-kubeconfig (or --ground-truth) with it".into());
        }
        super::flags::above_zero("--connect-timeout", self.connect_timeout, "10s", "")?;
        super::flags::above_zero("--handshake-timeout", self.handshake_timeout, "10s", "")?;
        let (streams_per_service, connections) = self.load();
        // The services are known up front unless a selector finds them.
        let services = match &self.scenario_file {
            _ if self.service_label_selector.is_some() || self.target_pods.is_some() => None,
            Some(f) if self.target_services.is_empty() => Some(f.spec.authorities("").len()),
            _ => Some(self.target_services.iter().map(|t| t.0.len()).sum()),
        }
        .filter(|&n| n > 0);
        crate::limits::check_load(
            crate::limits::Load {
                streams_per_service: u64::from(streams_per_service)
                    + u64::from(self.profile_streams()),
                services: services.map(|n| n as u64),
                connections,
            },
            "--streams-per-service",
            "--connections",
        )
        .map_err(|e| e.to_string())?;
        if self
            .http2_stream_window
            .is_some_and(|w| !(65_535..=MAX_WINDOW).contains(&w))
        {
            return Err(
                "--http2-stream-window must be from 65535 to 2147483647 bytes (HTTP/2's limits)"
                    .into(),
            );
        }
        for (flag, selector) in [
            ("--service-label-selector", &self.service_label_selector),
            ("--target-pods", &self.target_pods),
        ] {
            if let Some(s) = selector {
                crate::labels::check_selector(s)
                    .map_err(|e| format!("{flag} '{s}' is not a label selector: {e}"))?;
            }
        }
        if self
            .default_opaque_ports
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .any(|p| {
                let (lo, hi) = p.split_once('-').unwrap_or((p, p));
                !matches!((lo.trim().parse::<u16>(), hi.trim().parse::<u16>()), (Ok(lo), Ok(hi)) if lo <= hi)
            })
        {
            return Err(format!(
                "--default-opaque-ports '{}' is not a port list: give numbers and ranges, e.g. 25,3306,9000-9100",
                self.default_opaque_ports
            ));
        }
        if self.target_pods.is_some() {
            if self.target_pods_port == 0 {
                return Err("--target-pods-port must be from 1 to 65535".into());
            }
            super::flags::at_least_one(
                "--profile-streams-per-pod",
                self.profile_streams_per_pod,
                "",
            )?;
            if u64::from(self.profile_streams_per_pod) > crate::limits::MAX_STREAMS {
                return Err(format!(
                    "--profile-streams-per-pod {} is more than one client holds: at most {} streams",
                    self.profile_streams_per_pod,
                    crate::limits::MAX_STREAMS
                ));
            }
            if let Some(d) = self.target_pods_storm_interval {
                super::flags::above_zero("--target-pods-storm-interval", d, "60s", "")?;
            }
        }
        let listed = !self.target_services.is_empty()
            || self.service_label_selector.is_some()
            || self.target_pods.is_some();
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
                return Err("nothing to watch: give --target-services, or --service-label-selector or --target-pods with --namespace, or --scenario-file with --namespace".into());
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
        self.faults().validate().map_err(|e| e.to_string())?;
        if !(0.0..=1.0).contains(&self.backoff_jitter) {
            return Err(format!(
                "--backoff-jitter must be between 0 and 1, got {}",
                self.backoff_jitter
            ));
        }
        destination_uri(&self.destination_addr)
            .map(|_| ())
            .map_err(|e| e.to_string())
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
        let mut registry = Registry::default();
        let client = Client::new(
            Config::try_from(&self).map_err(anyhow::Error::msg)?,
            &mut registry,
        )?
        .with_readiness(rt.readiness())
        .with_tracker(rt.tracker());
        let (fleet, metrics) = (client.fleet(), client.metrics().clone());
        rt.serve_admin(
            registry,
            admin_addr,
            self.admin_control.admin_allow_remote_shutdown,
        )
        .await?;
        let started_at = jiff::Timestamp::now();
        let progress = crate::harness::progress::Progress::start(
            fleet.clone(),
            metrics.clone(),
            None,
            self.duration.map(Into::into),
        );
        let summary = client.run(stop).await;
        progress.finish();
        rt.finish().await?;
        let summary = summary?;
        let measured = measure(&fleet, &metrics, &summary);
        let slos = crate::slo::judge(&slos, &measured, gates.min_samples);
        let console = gates.console();
        console.print(&summary);
        console.print(measured.latency_table());
        console.print(crate::gates::verdict_table(&slos));
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
                &crate::html::Run::new("client", &report.measured)
                    .meta("version", crate::VERSION)
                    .meta("command line", super::output::command_line())
                    .meta("target", &report.config.destination_addr)
                    .meta(
                        "controller",
                        report
                            .config
                            .destination_version
                            .as_deref()
                            .unwrap_or_default(),
                    )
                    .meta("started", &report.started_at)
                    .meta("ended", &report.ended_at)
                    .meta(
                        "configuration",
                        serde_json::to_string_pretty(&report.config).unwrap_or_default(),
                    ),
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
    measured: crate::measurements::Measurements,
    services: Vec<ServiceRow>,
    slos: Vec<crate::slo::Verdict>,
}

/// The flags that shape the load, as reported.
#[derive(Debug, serde::Serialize)]
struct ReportConfig {
    destination_addr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    destination_version: Option<String>,
    target_services: Vec<String>,
    service_label_selector: Option<String>,
    namespace: Option<String>,
    streams_per_service: u32,
    profile_streams_per_service: u32,
    proxy_discovery: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_pods: Option<String>,
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
            destination_version: a.destination_version.clone(),
            target_services: a
                .target_services
                .iter()
                .flat_map(|t| t.0.iter().map(ToString::to_string))
                .collect(),
            service_label_selector: a.service_label_selector.clone(),
            namespace: a.namespace.clone(),
            streams_per_service: a.load().0,
            profile_streams_per_service: a.profile_streams(),
            proxy_discovery: a.proxy_discovery,
            target_pods: a.target_pods.clone(),
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

impl Args {
    /// The fault modes: the scenario file's, with the flags given over them.
    fn faults(&self) -> faults::Faults {
        let base = self
            .scenario_file
            .as_ref()
            .map_or_else(faults::Faults::default, |f| f.spec.clients.faults);
        self.faults.over(base)
    }

    /// GetProfile streams per service: one per Get stream with
    /// --proxy-discovery, else the flag's, else the scenario file's.
    fn profile_streams(&self) -> u32 {
        match &self.scenario_file {
            _ if self.proxy_discovery => self.load().0,
            Some(f) if self.profile_streams_per_service == 0 => {
                f.spec.clients.profile_streams_per_service
            }
            _ => self.profile_streams_per_service,
        }
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
            destination: destination_uri(&args.destination_addr).map_err(|e| e.to_string())?,
            watch,
            namespace: args.namespace.clone(),
            cluster_domain: args.cluster_domain.clone(),
            streams_per_service,
            profile_streams_per_service: args.profile_streams(),
            profiles_beside_gets: args.proxy_discovery,
            target_pods: args.target_pods.as_ref().map(|selector| {
                crate::client::pods::TargetPods {
                    namespace: args.namespace.clone().unwrap_or_default(),
                    selector: selector.clone(),
                    port: args.target_pods_port,
                    streams_per_pod: args.profile_streams_per_pod,
                    storm_interval: args.target_pods_storm_interval.map(Into::into),
                    storms: args.target_pods_storms,
                    truth: (args.ground_truth || args.ground_truth_kubeconfig.is_some()).then(
                        || crate::client::pod_truth::Rules {
                            control_plane_ns: args.control_plane_ns.clone(),
                            default_opaque_ports: crate::client::pod_truth::parse_ports(
                                &args.default_opaque_ports,
                                &Default::default(),
                            ),
                        },
                    ),
                }
            }),
            connections,
            keepalive: (!keepalive.is_zero()).then_some(keepalive),
            http2_stream_window: args.http2_stream_window,
            connect_timeout: args.connect_timeout.into(),
            handshake_timeout: args.handshake_timeout.into(),
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
            kube: args.kube.settings(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{client::target::Authority, cmd::parse_flags};

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
                .to_string()
                .contains("has no port")
        );
    }
}
