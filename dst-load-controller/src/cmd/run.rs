//! `run`: a whole scenario in one command. With no `--destination-addr` it
//! starts the embedded mock Destination server with simulated churn and a
//! client watching it, shows live progress, and ends with a summary (and an
//! optional JSON report).

use std::{net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use ipnet::IpNet;
use serde::Serialize;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::runtime::Runtime;

use crate::{
    churn::schedule::{Jitter, Oscillation},
    client::{self, Client, Fleet},
    latency::Kind,
    measurements::Measurements,
    mock::{
        MockDestination,
        generate::{self, GeneratedDst},
        server::{Behavior, Delay},
    },
};

pub use crate::scenario::{Scenario, Spec};
use crate::{labels::Pattern, scenario::ScenarioFile};

/// Flags of `run`.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The built-in scenario to run; every number can be overridden.
    #[arg(long, value_enum, default_value_t = Scenario::SmallOscillation)]
    pub scenario: Scenario,

    /// Run the scenario of this file instead (`--print-scenario NAME`
    /// prints one to start from); the flags below still override its numbers.
    #[arg(long, value_name = "FILE", conflicts_with = "scenario")]
    pub scenario_file: Option<ScenarioFile>,

    /// Print a built-in scenario's file and exit.
    #[arg(long, value_name = "NAME", value_enum)]
    pub print_scenario: Option<Scenario>,

    /// Print the JSON Schema of scenario files and exit.
    #[arg(long, conflicts_with = "print_scenario")]
    pub print_scenario_schema: bool,

    /// Multiplies the number of simulated proxies (streams per service and
    /// connections), so a scenario fits the machine.
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,

    /// Services of the scenario's first group; the other groups keep their
    /// share of it (overrides the scenario).
    #[arg(long)]
    pub services: Option<u32>,

    /// Endpoints at start and at the low end, of every group (overrides the scenario).
    #[arg(long)]
    pub min_endpoints: Option<u32>,

    /// Endpoints at the high end of scaling groups (overrides the scenario).
    #[arg(long)]
    pub max_endpoints: Option<u32>,

    /// Streams per service, before --scale (overrides the scenario).
    #[arg(long)]
    pub streams_per_service: Option<u32>,

    /// Connections, before --scale (overrides the scenario).
    #[arg(long)]
    pub connections: Option<u32>,

    /// The schedule's hold at min (overrides the scenario).
    #[arg(long)]
    pub min_hold: Option<humantime::Duration>,

    /// The schedule's hold at max (overrides the scenario).
    #[arg(long)]
    pub max_hold: Option<humantime::Duration>,

    /// Random delay before each change, up to this (overrides the scenario).
    #[arg(long)]
    pub jitter: Option<humantime::Duration>,

    /// How long the scenario runs (overrides the scenario's).
    #[arg(long)]
    pub duration: Option<humantime::Duration>,

    /// After churn stops, how long to wait for every stream to converge
    /// (overrides the scenario's; built-in scenarios wait 10s).
    #[arg(long)]
    pub settle: Option<humantime::Duration>,

    /// Seed of the churn schedule (overrides the scenario's; default
    /// random, printed in the summary).
    #[arg(long)]
    pub seed: Option<u64>,

    /// Misbehaving streams, reset storms and connection churn of the
    /// run's client (see `client`); each flag given overrides the scenario's.
    #[command(flatten)]
    pub faults: super::flags::FaultArgs,

    /// Delay the mock injects before each update on each stream: `50ms` or `10ms..200ms`.
    #[arg(long, default_value = "none")]
    pub mock_delay: Delay,

    /// Added to --mock-delay: this much per stream open on the mock, so
    /// that latency grows with the load (a red line known in advance).
    #[arg(long, default_value = "0s")]
    pub mock_delay_per_stream: humantime::Duration,

    /// Find the red line: run the scenario at growing loads until its SLOs
    /// fail (or --red-line-max), then bisect to --red-line-precision. Prints
    /// each step and the largest load that held; --report and --html get
    /// every step.
    #[command(flatten)]
    pub red_line: super::flags::RedLineArgs,

    /// Gates (default: the scenario's SLOs), the JSON report and JUnit output.
    #[command(flatten)]
    pub gates: super::flags::GateArgs,

    /// Admin server of the run (the client's metrics and the mock's or
    /// churn's; POST /shutdown ends the run as a signal does).
    #[arg(long, default_value = "0.0.0.0:9993")]
    pub admin_addr: SocketAddr,

    #[command(flatten)]
    pub admin_control: super::flags::ControlArgs,

    /// Run against a cluster instead of the mock: churn creates the
    /// scenario's services in --namespace through the current kube context,
    /// and the client watches this Destination service (host:port), timing
    /// changes against the Kubernetes ground truth.
    #[arg(long)]
    pub destination_addr: Option<String>,

    /// The namespace churn uses with --destination-addr.
    #[arg(long, default_value = "dst-load-test", requires = "destination_addr")]
    pub namespace: String,

    /// With --destination-addr, leave the services in place at the end
    /// (default: delete what churn created).
    #[arg(long, requires = "destination_addr")]
    pub keep: bool,

    /// The cluster domain of --destination-addr's cluster (in multicluster,
    /// the source's): the client watches `{svc}.{ns}.svc.{domain}`.
    #[arg(long, default_value = "cluster.local", requires = "destination_addr")]
    pub cluster_domain: String,

    /// Multicluster: the cluster where the endpoints live (the target of a
    /// Linkerd link), through this kubeconfig. churn creates the scenario's
    /// services there, exported (--export), and the ground truth is read
    /// there; the client watches their mirrors through --destination-addr
    /// (the source's destination controller), and --namespace is created in
    /// the source (the current kube context), where the mirrors appear.
    #[arg(long, value_name = "FILE", requires = "destination_addr")]
    pub ground_truth_kubeconfig: Option<std::path::PathBuf>,

    /// The context of --ground-truth-kubeconfig (default: its current one).
    #[arg(long, requires = "ground_truth_kubeconfig")]
    pub ground_truth_context: Option<String>,

    /// The link's name (`linkerd multicluster link-gen --cluster-name`):
    /// remote-discovery mirrors are named `{svc}-{link}` [default: target].
    #[arg(long, value_name = "NAME", requires = "ground_truth_kubeconfig")]
    pub ground_truth_link: Option<String>,

    /// How churn exports its services in the target: `remote-discovery`
    /// (the client watches the mirrors `{svc}-{link}`) or `federated` (the
    /// client watches `{svc}-federated`) [default: remote-discovery].
    #[arg(long, value_enum, requires = "ground_truth_kubeconfig")]
    pub export: Option<crate::churn::objects::Export>,

    #[command(flatten)]
    pub kube: super::flags::KubeArgs,
}

impl Args {
    /// Checks the overrides.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(format!(
                "--scale must be a positive number, got {}",
                self.scale
            ));
        }
        if let (Some(min), Some(max)) = (self.min_endpoints, self.max_endpoints)
            && min > max
        {
            return Err(format!(
                "--min-endpoints ({min}) is greater than --max-endpoints ({max})"
            ));
        }
        let spec = self.spec()?;
        if self.destination_addr.is_some() && !crate::churn::is_dns_label(&self.namespace) {
            return Err(format!(
                "--namespace '{}' is not a valid namespace name (lowercase letters, digits and '-', at most 63)",
                self.namespace
            ));
        }
        if self.destination_addr.is_some()
            && !self
                .cluster_domain
                .split('.')
                .all(crate::labels::is_dns_label)
        {
            return Err(format!(
                "--cluster-domain '{}' is not a DNS domain (e.g. cluster.local)",
                self.cluster_domain
            ));
        }
        self.kube.validate()?;
        if let Some(mc) = self.multicluster() {
            mc.validate(&spec)?;
        }
        self.red_line.validate()?;
        self.faults.over(spec.clients.faults).validate()
    }

    /// With --ground-truth-kubeconfig: the target cluster and how its
    /// services are exported to the source.
    pub fn multicluster(&self) -> Option<Multicluster> {
        let kubeconfig = self.ground_truth_kubeconfig.as_ref()?;
        Some(Multicluster {
            kube: self
                .kube
                .settings()
                .of_cluster(kubeconfig, self.ground_truth_context.clone()),
            link: self
                .ground_truth_link
                .clone()
                .unwrap_or_else(|| "target".to_string()),
            export: self
                .export
                .unwrap_or(crate::churn::objects::Export::RemoteDiscovery),
        })
    }

    /// The scenario (the file's, or the built-in one) with the overrides
    /// and the scale applied.
    pub fn spec(&self) -> Result<Spec, String> {
        let base = match &self.scenario_file {
            Some(file) => file.spec.clone(),
            None => self.scenario.spec(),
        };
        let mut spec = base.with(&crate::scenario::Overrides {
            services: self.services,
            min_endpoints: self.min_endpoints,
            max_endpoints: self.max_endpoints,
            streams_per_service: self.streams_per_service,
            connections: self.connections,
            scale: self.scale,
            min_hold: self.min_hold.map(Into::into),
            max_hold: self.max_hold.map(Into::into),
            jitter: self.jitter.map(Into::into),
            duration: self.duration.map(Into::into),
            settle: self.settle.map(Into::into),
            seed: self.seed,
        })?;
        spec.clients.faults = self.faults.over(spec.clients.faults);
        Ok(spec)
    }

    /// Runs the scenario, prints the summary, writes the report (or prints
    /// a scenario file or the schema).
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        if let Some(s) = self.print_scenario {
            print!("{}", s.text());
            return Ok(ExitCode::SUCCESS);
        }
        if self.print_scenario_schema {
            print!("{}", crate::scenario::schema());
            return Ok(ExitCode::SUCCESS);
        }
        if self.red_line.find_red_line {
            return self.find_red_line().await;
        }
        let shutdown = crate::shutdown::on_signal();
        let admin_addr = self.admin_addr;
        let gates = self.gates.clone();
        let spec = self.spec().map_err(anyhow::Error::msg)?;
        let slos = gates.slos_or(&spec.slos);
        let mut outcome = if self.destination_addr.is_some() {
            run_cluster_scenario(self, shutdown, Some(admin_addr)).await?
        } else {
            run_mock_scenario(self, shutdown, Some(admin_addr)).await?
        };
        outcome.slos = crate::slo::judge(&slos, &outcome.measured, gates.min_samples);
        println!("{}", outcome.table());
        let suite = outcome.scenario.clone();
        gates.finish(&suite, &outcome.slos, &outcome, || {
            crate::html::run_page(
                &format!("run {} (seed {})", outcome.scenario, outcome.seed),
                &crate::html::Run::new(&outcome.scenario, &outcome.measured),
                &outcome.slos,
            )
        })
    }
}

impl Args {
    /// `--find-red-line`: runs the scenario at the loads the search asks
    /// for, each judged by the scenario's SLOs (or --slo), until it is done.
    async fn find_red_line(self) -> anyhow::Result<ExitCode> {
        use crate::red_line::{
            Dimension, Found, Search, Step, client_bound, cpu_share, process_cpu_seconds,
        };
        let shutdown = crate::shutdown::on_signal();
        let spec = self.spec().map_err(anyhow::Error::msg)?;
        let dimension = self.red_line.red_line_dimension;
        let start = match dimension {
            Dimension::Streams => spec.clients.streams_per_service,
            Dimension::Services => spec.services.groups().next().map_or(1, |g| g.count),
        };
        let max = self
            .red_line
            .red_line_max
            .unwrap_or_else(|| start.saturating_mul(64));
        let mut search = Search::new(start, max, self.red_line.red_line_precision);
        let mut slos = self.gates.slos_or(&spec.slos);
        // On the mock, a stream that lags by more than a service's hold can
        // find the service changed back and hold the right set without
        // having seen the change: its lag cannot be timed, so a step with
        // such streams has not kept up. (Against a cluster the count is
        // reported, not gated: there the truth's attribution of slice
        // changes to churn's stamps is a heuristic.)
        if self.destination_addr.is_none()
            && !slos
                .iter()
                .any(|s| s.expr.starts_with("untimed_convergences"))
        {
            slos.push("untimed_convergences==0".parse().expect("a valid SLO"));
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // One admin server for the whole search (/shutdown ends it; each
        // step's metrics live only as long as the step, under its own
        // runtime).
        let mut rt = Runtime::with_shutdown(shutdown.clone());
        rt.readiness().set(true);
        if let Err(e) = rt
            .serve_admin(
                self.admin_addr,
                self.admin_control.admin_allow_remote_shutdown,
            )
            .await
        {
            return finish(rt, Err(e)).await;
        }
        let searched: anyhow::Result<ExitCode> = async {
        println!(
            "finding the red line of {} by {}: from {start} up to {max}, to {:.0}%",
            spec.name(),
            match dimension {
                Dimension::Streams => "streams per service",
                Dimension::Services => "services",
            },
            self.red_line.red_line_precision * 100.0
        );
        let mut steps = Vec::new();
        let mut client_bound_at = None;
        while let Some(load) = search.next() {
            if shutdown.is_cancelled() {
                break;
            }
            let mut args = self.clone();
            match dimension {
                Dimension::Streams => {
                    args.streams_per_service = Some(load);
                    args.connections = Some(self.connections.unwrap_or(load));
                    args.scale = 1.0;
                }
                Dimension::Services => args.services = Some(load),
            }
            // Long enough for --min-samples: a step judged on too few
            // samples runs again, twice as long (at most twice).
            let (outcome, cpu) = loop {
                let cpu_before = process_cpu_seconds();
                let began = std::time::Instant::now();
                let mut outcome = if args.destination_addr.is_some() {
                    run_cluster_scenario(args.clone(), shutdown.child_token(), None).await?
                } else {
                    run_mock_scenario(args.clone(), shutdown.child_token(), None).await?
                };
                let wall = began.elapsed().as_secs_f64();
                let cpu = match (cpu_before, process_cpu_seconds()) {
                    (Some(a), Some(b)) => cpu_share(b - a, wall, cores),
                    _ => 0.0,
                };
                outcome.slos = crate::slo::judge(&slos, &outcome.measured, self.gates.min_samples);
                let too_few = outcome.slos.iter().filter(|v| !v.pass).all(|v| {
                    v.reason
                        .as_deref()
                        .is_some_and(|r| r.starts_with("too few samples"))
                });
                let extended = args.duration.map_or(spec.duration, Into::into);
                if outcome.slos.iter().all(|v| v.pass)
                    || !too_few
                    || extended >= spec.duration * 4
                    || shutdown.is_cancelled()
                {
                    break (outcome, cpu);
                }
                args.duration = Some((extended * 2).into());
                println!("  {load}: too few samples; again for {:?}", extended * 2);
            };
            let passed = outcome.slos.iter().all(|v| v.pass);
            let bound = client_bound(cpu);
            let m = &outcome.measured;
            println!(
                "  {load:>7}: {} streams  {}  update p50 {:.1} ms p99 {:.1} ms  convergence p99 {:.1} ms  fan-out max {:.1} ms  untimed {}  cpu {:.0}%{}",
                m.streams,
                if passed { "PASS" } else { "FAIL" },
                m.update_latency.p50 * 1e3,
                m.update_latency.p99 * 1e3,
                m.convergence_latency.p99 * 1e3,
                m.fanout_completion.max * 1e3,
                m.convergences_untimed,
                cpu * 100.0,
                if bound {
                    "  CLIENT-BOUND (not counted)"
                } else {
                    ""
                }
            );
            for v in outcome.slos.iter().filter(|v| !v.pass) {
                println!(
                    "           failed {}: {}",
                    v.slo,
                    v.reason.as_deref().unwrap_or("")
                );
            }
            steps.push(Step {
                load,
                streams: m.streams,
                passed,
                client_bound: bound,
                cpu,
                outcome: serde_json::to_value(&outcome)?,
            });
            if bound {
                // Higher loads would measure this process, not the server.
                client_bound_at = Some(load);
                if passed {
                    search.record(load, true);
                }
                break;
            }
            search.record(load, passed);
        }
        let found = Found {
            dimension,
            search,
            client_bound_at,
            steps,
        };
        println!("{}", found.verdict());
        if let Some(path) = &self.gates.report {
            let json = serde_json::json!({
                "command": "run",
                "scenario": spec.name(),
                "find_red_line": found,
            });
            std::fs::write(path, serde_json::to_string_pretty(&json)?)
                .map_err(|e| anyhow::anyhow!("cannot write --report {}: {e}", path.display()))?;
            eprintln!("report written to {}", path.display());
        }
        if let Some(path) = &self.gates.html {
            std::fs::write(path, crate::html::red_line_page(spec.name(), &found))
                .map_err(|e| anyhow::anyhow!("cannot write --html {}: {e}", path.display()))?;
            eprintln!("pictures drawn in {}", path.display());
        }
        Ok(if found.search.pass.is_some() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(crate::slo::EXIT_SLO_FAILED)
        })
        }
        .await;
        finish(rt, searched).await
    }
}

/// What differs between a mock run and a cluster run.
struct Mode {
    plan: Spec,
    seed: u64,
    started_at: jiff::Timestamp,
    ended_at: jiff::Timestamp,
    destination: String,
    updates_sent: Option<u64>,
    changes: u64,
}

impl Outcome {
    /// Everything the client measured, plus what differs by mode. SLOs are
    /// judged afterwards.
    fn collect(
        mode: Mode,
        fleet: &Fleet,
        metrics: &client::metrics::Metrics,
        summary: &client::Summary,
    ) -> Self {
        Outcome {
            scenario: mode.plan.name().to_string(),
            plan: mode.plan,
            seed: mode.seed,
            started_at: mode.started_at.to_string(),
            ended_at: mode.ended_at.to_string(),
            updates_sent: mode.updates_sent,
            destination: mode.destination,
            changes: mode.changes,
            measured: client::measure(fleet, metrics, summary),
            slos: Vec::new(),
        }
    }
}

/// After churn stops, waits up to `settle` for every stream to converge.
async fn settle(fleet: &Fleet, settle: Duration) {
    let until = tokio::time::Instant::now() + settle;
    while tokio::time::Instant::now() < until
        && fleet.services().iter().any(|s| s.truth.pending() > 0)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// The scenario's name.
    pub scenario: String,
    /// Its document, with the overrides applied.
    pub plan: Spec,
    /// The churn seed.
    pub seed: u64,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it ended (RFC 3339).
    pub ended_at: String,
    /// Updates the mock sent (unknown against a cluster).
    pub updates_sent: Option<u64>,
    /// Where the run's destinations came from: `mock` or the destination address.
    pub destination: String,
    /// Changes made to destinations after the initial sets.
    pub changes: u64,
    /// What the client measured.
    #[serde(flatten)]
    pub measured: Measurements,
    /// Every SLO with its measured value and verdict.
    pub slos: Vec<crate::slo::Verdict>,
}

impl Outcome {
    /// The summary table.
    pub fn table(&self) -> String {
        let m = &self.measured;
        let mut t = format!(
            "scenario {} seed {} ({} endpoints; {} streams over {} connections)\n",
            self.scenario,
            self.seed,
            self.plan.services,
            m.streams,
            self.plan.clients.connections()
        );
        let sent = self.updates_sent.map_or("?".to_string(), |n| n.to_string());
        t += &format!(
            "  destination {}  streams created {}  updates {} received / {} sent  errors {}  stale {}\n",
            self.destination,
            m.streams_created,
            m.updates_received,
            sent,
            m.errors,
            m.stale_streams
        );
        t += &format!(
            "  changes {}  fan-outs completed {}  superseded {}  streams unconverged at end {}\n",
            self.changes, m.fanouts_completed, m.fanouts_superseded, m.streams_unconverged
        );
        if m.services_never_served > 0 {
            t += &format!(
                "  !!! {} service(s) NEVER got an endpoint although the ground truth lists endpoints: \
                 the destination server is not serving them (see the client summary above)\n",
                m.services_never_served
            );
        }
        t += &m.latency_table();
        t + &crate::gates::verdict_table(&self.slos)
    }
}

/// Each service draws its endpoints from its own /20 of 10.0.0.0/8.
fn service_cidr(i: u32) -> IpNet {
    let base = u32::from(std::net::Ipv4Addr::new(10, 0, 0, 0)) + i * 4096;
    IpNet::new(std::net::Ipv4Addr::from(base).into(), 20).expect("valid prefix")
}

/// One service of a mock run: its destination and the StatefulSet pods
/// watched by name.
struct MockService {
    pattern: Pattern,
    /// Its schedule's seed index (and /20): services are numbered across groups.
    index: u32,
    dst: GeneratedDst,
    pods: Vec<crate::target::Authority>,
}

/// Every service of `plan` in `ns`, in the order of [`Spec::authorities`].
fn mock_services(plan: &Spec, ns: &str) -> Vec<MockService> {
    let mut index = 0;
    let mut out = Vec::new();
    for g in plan.services.groups() {
        for i in 0..g.count {
            let mut names = g
                .authorities(ns, "cluster.local", i)
                .into_iter()
                .map(|a| a.parse().expect("valid authority"));
            let authority = names.next().expect("a service's own authority");
            out.push(MockService {
                pattern: g.pattern,
                index,
                dst: GeneratedDst {
                    authority,
                    cidr: service_cidr(index),
                    min: g.min,
                    max: g.max,
                },
                pods: names.collect(),
            });
            index += 1;
        }
    }
    out
}

/// Runs a scenario against the embedded mock; `admin` serves both
/// components' metrics when given. Its tasks run under one [`Runtime`]
/// whose root is `shutdown`: a failed critical task (the mock, the client,
/// the admin server) ends the measurement as a signal does, and is the
/// error returned.
pub async fn run_mock_scenario(
    args: Args,
    shutdown: CancellationToken,
    admin: Option<SocketAddr>,
) -> anyhow::Result<Outcome> {
    let mut rt = Runtime::with_shutdown(shutdown);
    let measured = mock_scenario(&args, &mut rt, admin).await;
    finish(rt, measured).await
}

/// Waits for every task of `rt`; its first critical failure is the cause of
/// any error `measured` has, and is returned first.
async fn finish<T>(rt: Runtime, measured: anyhow::Result<T>) -> anyhow::Result<T> {
    match (rt.finish().await, measured) {
        (Err(cause), _) => Err(cause),
        (Ok(()), measured) => measured,
    }
}

/// A scenario's client, running as a critical task of its runtime.
struct RunningClient {
    fleet: Arc<Fleet>,
    metrics: client::metrics::Metrics,
    stop: CancellationToken,
    /// Stops the client on any return.
    _stop: tokio_util::sync::DropGuard,
    summary: tokio::sync::oneshot::Receiver<client::Summary>,
}

impl RunningClient {
    /// Starts `client` under `rt`, then the admin server (at `admin`, with
    /// every metric registered so far), once every component registered.
    async fn start(
        rt: &mut Runtime,
        client: Client,
        admin: Option<SocketAddr>,
        allow_remote_shutdown: bool,
    ) -> anyhow::Result<Self> {
        let (fleet, metrics) = (client.fleet(), client.metrics().clone());
        let stop = CancellationToken::new();
        let (tx, summary) = tokio::sync::oneshot::channel();
        let task_stop = stop.clone();
        rt.spawn_critical("client", async move {
            let _ = tx.send(client.run(task_stop).await?);
            Ok(())
        });
        let running = Self {
            fleet,
            metrics,
            _stop: stop.clone().drop_guard(),
            stop,
            summary,
        };
        if let Some(addr) = admin {
            rt.serve_admin(addr, allow_remote_shutdown).await?;
        }
        Ok(running)
    }

    /// Stops the client and takes its summary (none when it failed: the
    /// runtime has the cause).
    async fn summary(self) -> anyhow::Result<client::Summary> {
        self.stop.cancel();
        self.summary
            .await
            .map_err(|_| anyhow::anyhow!("the client ended without a summary"))
    }
}

async fn mock_scenario(
    args: &Args,
    rt: &mut Runtime,
    admin: Option<SocketAddr>,
) -> anyhow::Result<Outcome> {
    let shutdown = rt.shutdown();
    let mut plan = args.spec().map_err(anyhow::Error::msg)?;
    let seed = plan.seed.unwrap_or_else(rand::random);
    plan.seed = Some(seed);
    let started_at = jiff::Timestamp::now();

    let mock = MockDestination::new(
        Behavior {
            delay: args.mock_delay,
            delay_per_stream: args.mock_delay_per_stream.into(),
            ..Default::default()
        },
        rt.registry(),
    );
    let handle = mock.handle();
    let listener = crate::mock::bind(([127, 0, 0, 1], 0).into())?;
    let dst_addr = listener.local_addr()?;
    // Stopped last, after the client; on any return.
    let mock_stop = CancellationToken::new();
    let _mock_stop = mock_stop.clone().drop_guard();
    let stop = mock_stop.clone();
    rt.spawn_critical("mock destination", async move {
        Ok(mock.serve(listener, stop).await?)
    });

    let ns = "dst-load-test";
    let authorities = plan.authorities(ns);
    let services = mock_services(&plan, ns);
    for s in &services {
        handle.set(&s.dst.authority, s.dst.endpoints(s.dst.min));
        // A StatefulSet pod's own name resolves to its address alone: pod
        // k holds the service's k-th address.
        for (k, pod) in s.pods.iter().enumerate() {
            let addr = generate::nth_endpoint(&s.dst.cidr, k as u64, s.dst.authority.port());
            handle.set(pod, addr.into_iter().collect::<Vec<_>>());
        }
    }
    let initial_changes = handle.metrics().changes.get();

    let targets = authorities
        .iter()
        .map(|a| a.parse().expect("valid authority"))
        .collect();
    let mut client_config =
        client::Config::new(&dst_addr.to_string(), client::Watch::Targets(targets))
            .map_err(anyhow::Error::msg)?;
    client_config.streams_per_service = plan.clients.streams_per_service;
    client_config.faults = plan.clients.faults;
    client_config.connections = plan.clients.connections();
    // The truth: the initial sets, then the changes from the mock's feed.
    let client = Client::new(client_config, rt.registry())?
        .with_truth(crate::harness::mock_feed::MockFeed::new(&handle));
    let running = RunningClient::start(
        rt,
        client,
        admin,
        args.admin_control.admin_allow_remote_shutdown,
    )
    .await?;
    let (fleet, client_metrics) = (running.fleet.clone(), running.metrics.clone());

    // Every service watched (and given its first truth) before churn starts.
    tokio::select! {
        _ = wait_for_truth(&fleet, authorities.len()) => {}
        _ = shutdown.cancelled() => anyhow::bail!("stopped before every service had its first truth"),
    }
    // Ready once every stream has had its first answer.
    rt.spawn(client::track_readiness(
        fleet.clone(),
        rt.readiness(),
        shutdown.clone(),
    ));

    let churn_stop = shutdown.child_token();
    let _churn_stop = churn_stop.clone().drop_guard();
    let schedule = Oscillation {
        min: 0,
        max: 0,
        min_hold: plan.schedule.min_hold,
        max_hold: plan.schedule.max_hold,
        jitter: Jitter::Upto(plan.schedule.jitter),
        cycles: 0,
    };
    let interval = plan.restart_interval();
    let restarts = Oscillation {
        min_hold: interval,
        max_hold: interval,
        ..schedule
    };
    let (lifetime, gap) = plan.ephemeral_lifetime_and_gap();
    let lifecycles = Oscillation {
        min_hold: lifetime,
        max_hold: gap,
        ..schedule
    };
    // The simulated churn, awaited as a group before the settle.
    let generators = TaskTracker::new();
    for s in services {
        let (handle, stop, index) = (handle.clone(), churn_stop.clone(), s.index);
        match s.pattern {
            Pattern::Stable => {}
            Pattern::Oscillate | Pattern::StatefulSet if !s.dst.oscillates() => {}
            Pattern::Oscillate | Pattern::StatefulSet => {
                generators.spawn(generate::oscillate(
                    handle, s.dst, schedule, seed, index, stop,
                ));
            }
            Pattern::Restart => {
                generators.spawn(generate::restart(
                    handle, s.dst, restarts, seed, index, stop,
                ));
            }
            Pattern::Ephemeral => {
                generators.spawn(generate::lifecycle(
                    handle, s.dst, lifecycles, seed, index, stop,
                ));
            }
        }
    }
    generators.close();

    let progress = Progress::start(fleet.clone(), client_metrics.clone(), plan.streams(ns));
    tokio::select! {
        _ = tokio::time::sleep(plan.duration) => {}
        _ = shutdown.cancelled() => {}
    }
    churn_stop.cancel();
    generators.wait().await;
    // The truth has every change the mock made (its feed is read by
    // another task), then the last changes fan out before judging (not
    // after a critical failure: its error is the outcome).
    let settle_for = if rt.failed() {
        Duration::ZERO
    } else {
        plan.settle
    };
    let until = tokio::time::Instant::now() + settle_for;
    while tokio::time::Instant::now() < until
        && handle.list().into_iter().any(|(authority, mut endpoints)| {
            endpoints.sort();
            fleet
                .get(&authority.to_string())
                .is_some_and(|s| s.truth.expected() != endpoints)
        })
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    settle(
        &fleet,
        until.saturating_duration_since(tokio::time::Instant::now()),
    )
    .await;
    progress.finish();
    let summary = running.summary().await?;
    let ended_at = jiff::Timestamp::now();

    Ok(Outcome::collect(
        Mode {
            plan,
            seed,
            started_at,
            ended_at,
            destination: "mock".to_string(),
            updates_sent: Some(handle.metrics().updates_sent.get()),
            changes: handle.metrics().changes.get() - initial_changes,
        },
        &fleet,
        &client_metrics,
        &summary,
    ))
}

/// Runs a scenario against a cluster: churn makes the changes, the client
/// watches `--destination-addr`, the Kubernetes API is the ground truth.
/// Its tasks run under one [`Runtime`] whose root is `shutdown`, as the
/// mock's do; whatever happens once churn may have created objects, they
/// are cleaned up (unless --keep) before the outcome, or the error, is
/// returned.
pub async fn run_cluster_scenario(
    args: Args,
    shutdown: CancellationToken,
    admin: Option<SocketAddr>,
) -> anyhow::Result<Outcome> {
    let mut plan = args.spec().map_err(anyhow::Error::msg)?;
    let seed = plan.seed.unwrap_or_else(rand::random);
    plan.seed = Some(seed);
    let multicluster = args.multicluster();
    let churn_kube = multicluster
        .as_ref()
        .map_or_else(|| args.kube.settings(), |mc| mc.kube.clone());
    let source_kube = args.kube.settings();
    let mut rt = Runtime::with_shutdown(shutdown);
    let measured = cluster_scenario(
        &args,
        &plan,
        &churn_kube,
        multicluster.as_ref(),
        &mut rt,
        admin,
    )
    .await;
    // Every task has stopped (churn too) before the cleanup.
    let measured = finish(rt, measured).await;
    if !args.keep {
        // The target first (its deletions remove the mirrors), then the
        // source's namespace of the mirrors.
        let clusters =
            std::iter::once(&churn_kube).chain(multicluster.as_ref().map(|_| &source_kube));
        let mut failed = None;
        for kube in clusters {
            let cleaned = crate::cleanup::connect_and_cleanup(
                kube,
                &args.namespace,
                None,
                Duration::from_secs(120),
                CancellationToken::new(),
            )
            .await;
            match (&measured, cleaned) {
                (_, Ok((_, report))) => tracing::info!(%report, "cleaned up"),
                // Both clusters are cleaned; the first failure is returned.
                (Ok(_), Err(e)) => {
                    failed.get_or_insert(e);
                }
                (Err(_), Err(e)) => {
                    tracing::error!(error = %e, namespace = %args.namespace, "cleanup after a failed run failed too")
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
    }
    let (fleet, client_metrics, summary, ended_at, churn_metrics, started_at) = measured?;
    Ok(Outcome::collect(
        Mode {
            plan,
            seed,
            started_at,
            ended_at,
            destination: args
                .destination_addr
                .clone()
                .expect("cluster mode has a destination"),
            updates_sent: None,
            changes: churn_metrics.scale_events_total.get()
                + churn_metrics.changes(crate::churn::objects::ChangeKind::Restart)
                + churn_metrics.changes(crate::churn::objects::ChangeKind::Create)
                + churn_metrics.changes(crate::churn::objects::ChangeKind::Delete),
        },
        &fleet,
        &client_metrics,
        &summary,
    ))
}

/// What a cluster scenario measured: the fleet, the client's metrics and
/// summary, when it ended, churn's metrics, when it started.
type ClusterMeasured = (
    Arc<Fleet>,
    client::metrics::Metrics,
    client::Summary,
    jiff::Timestamp,
    crate::churn::metrics::Metrics,
    jiff::Timestamp,
);

async fn cluster_scenario(
    args: &Args,
    plan: &Spec,
    churn_kube: &crate::kube_api::KubeSettings,
    multicluster: Option<&Multicluster>,
    rt: &mut Runtime,
    admin: Option<SocketAddr>,
) -> anyhow::Result<ClusterMeasured> {
    let shutdown = rt.shutdown();
    let seed = plan.seed.expect("the seed is chosen");
    let ns = &args.namespace;
    let started_at = jiff::Timestamp::now();

    let mut churn_config = crate::churn::Config::new(ns);
    churn_config.seed = seed;
    churn_config.kube = churn_kube.clone();
    churn_config.apply(plan);
    let churn_stop = shutdown.child_token();
    let _churn_stop = churn_stop.clone().drop_guard();
    if let Some(mc) = multicluster {
        churn_config.template.export = mc.export;
        // The mirrors appear in the same namespace of the source.
        crate::churn::connect_and_ensure_namespace(&args.kube.settings(), ns, &churn_stop).await?;
    }
    let churn_metrics = crate::churn::metrics::Metrics::register(rt.registry());
    let churn = crate::churn::Churn::new(churn_config, churn_metrics.clone()).await?;
    let churn_ready = crate::admin::Readiness::default();
    // Churn's end, awaited before the settle (its last changes are in).
    let (churn_done, mut churn_ended) = tokio::sync::oneshot::channel::<()>();
    let (stop, ready) = (churn_stop.clone(), churn_ready.clone());
    rt.spawn_critical("churn", async move {
        let ran = churn.run(stop, ready).await;
        let _ = churn_done.send(());
        ran
    });
    while !churn_ready.get() {
        if shutdown.is_cancelled() || churn_ended.try_recv().is_ok() {
            anyhow::bail!("stopped before churn's services existed");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let authorities = plan.authorities_in(ns, &args.cluster_domain);
    let authorities: Vec<String> = match multicluster {
        Some(mc) => {
            let mirrored: Vec<String> = authorities.iter().map(|a| mc.mirrored(a, ns)).collect();
            // A stream opened before its mirror exists is refused
            // (NotFound): open them once the service mirror has
            // made every one.
            let services = plan
                .services
                .groups()
                .flat_map(|g| (0..g.count).map(move |i| g.pattern.service_name(i)));
            let mirrors = services.map(|s| mc.mirrored_service(&s)).collect();
            wait_for_mirrors(&args.kube.settings(), ns, mirrors, &churn_stop).await?;
            mirrored
        }
        None => authorities,
    };
    let targets = authorities
        .iter()
        .map(|a| a.parse::<crate::target::Authority>())
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    let destination = args
        .destination_addr
        .as_deref()
        .expect("cluster mode has a destination");
    let mut client_config = client::Config::new(destination, client::Watch::Targets(targets))
        .map_err(anyhow::Error::msg)?;
    client_config.streams_per_service = plan.clients.streams_per_service;
    client_config.faults = plan.clients.faults;
    client_config.connections = plan.clients.connections();
    client_config.ground_truth = true;
    client_config.cluster_domain = args.cluster_domain.clone();
    client_config.namespace = Some(ns.clone());
    // The ground truth through the same Kubernetes client settings as
    // churn (the target's, across clusters).
    client_config.kube = args.kube.settings();
    if let Some(mc) = multicluster {
        let kubeconfig = mc.kube.kubeconfig.clone().expect("a target kubeconfig");
        client_config.truth_cluster = Some((kubeconfig, mc.kube.kube_context.clone()));
        client_config.truth_link = Some(mc.link.clone());
    }
    let client = Client::new(client_config, rt.registry())?;
    let running = RunningClient::start(
        rt,
        client,
        admin,
        args.admin_control.admin_allow_remote_shutdown,
    )
    .await?;
    let (fleet, client_metrics) = (running.fleet.clone(), running.metrics.clone());
    // Ready once every stream has had its first answer.
    rt.spawn(client::track_readiness(
        fleet.clone(),
        rt.readiness(),
        shutdown.clone(),
    ));
    let progress = Progress::start(fleet.clone(), client_metrics.clone(), plan.streams(ns));
    tokio::select! {
        _ = tokio::time::sleep(plan.duration) => {}
        _ = shutdown.cancelled() => {}
    }
    churn_stop.cancel();
    let _ = churn_ended.await;
    if !rt.failed() {
        settle(&fleet, plan.settle).await;
    }
    progress.finish();
    let summary = running.summary().await?;
    let ended_at = jiff::Timestamp::now();
    Ok((
        fleet,
        client_metrics,
        summary,
        ended_at,
        churn_metrics,
        started_at,
    ))
}

/// A scenario across two linked clusters: churn and the ground truth in the
/// target, the streams on the source's mirrors.
#[derive(Clone, Debug)]
pub struct Multicluster {
    /// The target's Kubernetes client settings.
    pub kube: crate::kube_api::KubeSettings,
    /// The link's name: mirrors are `{svc}-{link}`.
    pub link: String,
    /// How churn's services are exported.
    pub export: crate::churn::objects::Export,
}

impl Multicluster {
    /// What the link cannot carry: unexported services, and headless
    /// (StatefulSet) services in a federated service.
    fn validate(&self, spec: &Spec) -> Result<(), String> {
        if !crate::labels::is_dns_label(&self.link) {
            return Err(format!(
                "--ground-truth-link '{}' is not a link name: give the --cluster-name the link was made with (a DNS label, e.g. target)",
                self.link
            ));
        }
        if let Some(file) = self.kube.kubeconfig.as_ref().filter(|f| !f.is_file()) {
            return Err(format!(
                "--ground-truth-kubeconfig {}: no such file; give the kubeconfig of the cluster where the endpoints live",
                file.display()
            ));
        }
        match self.export {
            crate::churn::objects::Export::None => {
                return Err("--export none with --ground-truth-kubeconfig: nothing would be mirrored into the source; give --export remote-discovery or federated".into());
            }
            crate::churn::objects::Export::Gateway => {
                return Err("--export gateway: a gateway mirror serves the gateway's address, not the target's pods, so run cannot compare it with the target's truth; give --export remote-discovery or federated (churn --export gateway labels services for a gateway link)".into());
            }
            _ => {}
        }
        if spec.services.statefulset.is_some()
            && self.export == crate::churn::objects::Export::Federated
        {
            return Err("the scenario has StatefulSet (headless) services, which Linkerd's service mirror does not federate; use --export remote-discovery, or drop them from the scenario".into());
        }
        Ok(())
    }

    /// The name of a target service's mirror in the source.
    fn mirrored_service(&self, service: &str) -> String {
        match self.export {
            crate::churn::objects::Export::Federated => format!("{service}-federated"),
            _ => format!("{service}-{}", self.link),
        }
    }

    /// The name the source serves a target authority of `namespace` under:
    /// the service's mirror, and a StatefulSet pod's hostname under it
    /// (remote discovery resolves `{pod}.{svc}-{link}` to that pod).
    fn mirrored(&self, authority: &str, namespace: &str) -> String {
        let marker = format!(".{namespace}.svc.");
        match authority.split_once(&marker) {
            Some((name, rest)) => match name.split_once('.') {
                Some((pod, service)) => {
                    format!("{pod}.{}{marker}{rest}", self.mirrored_service(service))
                }
                None => format!("{}{marker}{rest}", self.mirrored_service(name)),
            },
            None => authority.to_string(),
        }
    }
}

/// How long the service mirror may take to mirror a new service into the
/// source (seconds when it is up; a loaded machine gets a wide bound).
const MIRROR_TIMEOUT: Duration = Duration::from_secs(120);

/// Waits until every one of `mirrors` exists in the source's `ns`.
async fn wait_for_mirrors(
    kube: &crate::kube_api::KubeSettings,
    ns: &str,
    mirrors: std::collections::BTreeSet<String>,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Service;
    let services: kube::Api<Service> = kube::Api::namespaced(kube.client().await?, ns);
    let lp = kube::api::ListParams::default().labels("mirror.linkerd.io/mirrored-service=true");
    let deadline = tokio::time::Instant::now() + MIRROR_TIMEOUT;
    loop {
        // A failed list (an apiserver restarting) is tried again.
        let missing: Vec<&String> = match services.list_metadata(&lp).await {
            Ok(list) => {
                let seen: std::collections::BTreeSet<String> = list
                    .items
                    .into_iter()
                    .filter_map(|s| s.metadata.name)
                    .collect();
                mirrors.iter().filter(|m| !seen.contains(*m)).collect()
            }
            Err(e) => {
                tracing::debug!(error = %e, "listing the mirrors");
                mirrors.iter().collect()
            }
        };
        if missing.is_empty() {
            tracing::info!(
                mirrors = mirrors.len(),
                "every service is mirrored in the source"
            );
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "{} of {} services were not mirrored into the source's namespace {ns} within {}s (first: {}): is the link up, its service mirror running, and --ground-truth-link the link's name?",
                missing.len(),
                mirrors.len(),
                MIRROR_TIMEOUT.as_secs(),
                missing[0]
            );
        }
        tokio::select! {
            _ = stop.cancelled() => anyhow::bail!("interrupted while waiting for the mirrors"),
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// Waits until the fleet watches `services` services, each with a truth.
async fn wait_for_truth(fleet: &Fleet, services: usize) {
    loop {
        let all = fleet.services();
        if all.len() >= services && all.iter().all(|s| s.truth.is_known()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Live progress on stderr (hidden when stderr is not a terminal).
struct Progress {
    bar: indicatif::ProgressBar,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn start(fleet: Arc<Fleet>, metrics: client::metrics::Metrics, streams: u64) -> Self {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                .expect("valid template"),
        );
        let b = bar.clone();
        let task = tokio::spawn(async move {
            let mut last = (tokio::time::Instant::now(), 0u64);
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let services = fleet.services();
                let up: u64 = services
                    .iter()
                    .map(|s| s.slots().iter().filter(|x| x.answered()).count() as u64)
                    .sum();
                let updates: u64 = services
                    .iter()
                    .map(|s| metrics.updates_of(&s.service))
                    .sum();
                let rate = (updates - last.1) as f64 / last.0.elapsed().as_secs_f64();
                last = (tokio::time::Instant::now(), updates);
                let c = metrics.latencies.percentiles(Kind::Convergence);
                b.set_message(format!(
                    "streams up {up}/{streams} | updates {updates} ({rate:.0}/s) | convergence p50 {:.1} ms p99 {:.1} ms ({} samples)",
                    c.p50 * 1e3,
                    c.p99 * 1e3,
                    c.count
                ));
                b.tick();
            }
        });
        Self { bar, task }
    }

    fn finish(self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::parse_flags;

    fn mk_args(flags: &[&str]) -> Args {
        let argv: Vec<&str> = std::iter::once("run")
            .chain(flags.iter().copied())
            .collect();
        parse_flags(&argv).unwrap()
    }

    #[test]
    fn scale_multiplies_proxies_and_flags_override() {
        let a = mk_args(&[
            "--scenario",
            "red-line",
            "--scale",
            "0.1",
            "--services",
            "5",
        ]);
        let p = a.spec().unwrap();
        let o = p.services.oscillate.unwrap();
        assert_eq!(
            (
                o.count,
                p.clients.streams_per_service,
                p.clients.connections(),
                o.max_endpoints
            ),
            (5, 50, 50, 200)
        );
        assert!(mk_args(&["--scale", "0"]).validate().is_err());
        assert!(
            mk_args(&["--min-endpoints", "9", "--max-endpoints", "3"])
                .validate()
                .is_err()
        );
        // Fault flags override the scenario's (none in the built-ins).
        let f = mk_args(&["--stuck-percent", "10"]).spec().unwrap();
        assert_eq!(f.clients.faults.stuck_percent, 10);
        assert!(mk_args(&["--stuck-percent", "101"]).validate().is_err());
    }

    #[test]
    fn across_clusters_the_client_watches_the_mirrors_and_bad_flags_are_named() {
        let kubeconfig = std::env::temp_dir().join(format!("run-kc-{}", std::process::id()));
        std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\n").unwrap();
        let kc = kubeconfig.to_str().unwrap();
        let base = [
            "--destination-addr",
            "127.0.0.1:8086",
            "--ground-truth-kubeconfig",
            kc,
        ];
        let with = |more: &[&str]| mk_args(&[&base[..], more].concat());
        let a = with(&["--cluster-domain", "source.local"]);
        a.validate().unwrap();
        let mc = a.multicluster().unwrap();
        assert_eq!(
            (mc.link.as_str(), mc.export, mc.kube.kubeconfig.as_deref()),
            (
                "target",
                crate::churn::objects::Export::RemoteDiscovery,
                Some(kubeconfig.as_path())
            )
        );
        assert_eq!(
            mc.mirrored("oscillate-svc-3.ns.svc.source.local:8080", "ns"),
            "oscillate-svc-3-target.ns.svc.source.local:8080"
        );
        assert_eq!(
            mc.mirrored("sts-0-1.sts-svc-0.ns.svc.source.local:8080", "ns"),
            "sts-0-1.sts-svc-0-target.ns.svc.source.local:8080"
        );
        let fed = with(&["--export", "federated", "--ground-truth-link", "east"]);
        assert_eq!(
            fed.multicluster()
                .unwrap()
                .mirrored("stable-svc-0.ns.svc.cluster.local:8080", "ns"),
            "stable-svc-0-federated.ns.svc.cluster.local:8080"
        );
        let err = |more: &[&str]| with(more).validate().unwrap_err();
        assert!(err(&["--export", "none"]).contains("nothing would be mirrored"));
        assert!(err(&["--export", "gateway"]).contains("gateway's address"));
        assert!(err(&["--ground-truth-link", "No_Link"]).contains("not a link name"));
        assert!(err(&["--cluster-domain", "bad..domain"]).contains("not a DNS domain"));
        with(&["--scenario", "statefulset"]).validate().unwrap();
        assert!(
            err(&["--scenario", "statefulset", "--export", "federated"]).contains("not federate")
        );
        std::fs::remove_file(&kubeconfig).unwrap();
        let missing = mk_args(&[
            "--destination-addr",
            "127.0.0.1:8086",
            "--ground-truth-kubeconfig",
            "/nonexistent/kubeconfig",
        ]);
        assert!(missing.validate().unwrap_err().contains("no such file"));
        // Multicluster flags need a cluster to run against.
        assert!(parse_flags::<Args>(&["run", "--ground-truth-kubeconfig", kc]).is_err());
        assert!(parse_flags::<Args>(&["run", "--export", "federated"]).is_err());
        assert!(mk_args(&[]).multicluster().is_none());
    }

    #[tokio::test]
    async fn a_critical_failure_is_the_error_a_scenario_returns() {
        let rt = Runtime::with_shutdown(CancellationToken::new());
        rt.spawn_critical("client", async { anyhow::bail!("connection refused") });
        // The scenario sees its root cancelled and fails on its own terms.
        rt.shutdown().cancelled().await;
        let r: anyhow::Result<()> = finish(
            rt,
            Err(anyhow::anyhow!("the client ended without a summary")),
        )
        .await;
        let e = format!("{:#}", r.unwrap_err());
        assert!(
            e.contains("client failed") && e.contains("connection refused"),
            "{e}"
        );
        let rt = Runtime::with_shutdown(CancellationToken::new());
        assert_eq!(finish(rt, Ok(7)).await.unwrap(), 7);
    }

    #[test]
    fn services_get_disjoint_cidrs() {
        assert_eq!(service_cidr(0).to_string(), "10.0.0.0/20");
        assert_eq!(service_cidr(1).to_string(), "10.0.16.0/20");
        assert_eq!(service_cidr(4095).to_string(), "10.255.240.0/20");
    }

    #[test]
    fn mock_services_are_numbered_across_groups_in_watch_order() {
        let p = crate::scenario::parse(
            "t.yaml",
            "duration: 1s\nservices:\n  restart: {count: 2, endpoints: 3}\n  \
             ephemeral: {count: 1, endpoints: 3}\n  statefulset: {count: 1, min-endpoints: 2, max-endpoints: 4}\n",
        )
        .unwrap();
        let services = mock_services(&p, "ns");
        let names: Vec<String> = services
            .iter()
            .flat_map(|s| {
                std::iter::once(s.dst.authority.to_string())
                    .chain(s.pods.iter().map(ToString::to_string))
            })
            .collect();
        assert_eq!(names, p.authorities("ns"));
        let indices: Vec<_> = services.iter().map(|s| (s.pattern, s.index)).collect();
        assert_eq!(
            indices,
            [
                (Pattern::Restart, 0),
                (Pattern::Restart, 1),
                (Pattern::Ephemeral, 2),
                (Pattern::StatefulSet, 3)
            ]
        );
        assert_eq!(services[3].dst.cidr, service_cidr(3));
        assert_eq!((services[3].dst.min, services[3].dst.max), (2, 4));
    }

    #[test]
    fn a_scenario_file_replaces_the_built_in_and_flags_still_override() {
        let path = std::env::temp_dir().join(format!("run-spec-{}.yaml", std::process::id()));
        std::fs::write(
            &path,
            "duration: 5s\nseed: 9\nservices:\n  stable: {count: 3, endpoints: 2}\nclients:\n  \
             streams-per-service: 4\n  faults: {stuck-percent: 20}\nslos: [errors==0]\n",
        )
        .unwrap();
        let a = mk_args(&["--scenario-file", path.to_str().unwrap(), "--services", "1"]);
        let p = a.spec().unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(p.name(), path.file_stem().unwrap().to_str().unwrap());
        assert_eq!(p.services.stable.unwrap().count, 1);
        assert_eq!((p.seed, p.duration), (Some(9), Duration::from_secs(5)));
        assert_eq!(p.clients.faults.stuck_percent, 20);
        assert_eq!(p.slos, ["errors==0".parse().unwrap()]);
        // A file and a built-in scenario are one or the other.
        let both =
            parse_flags::<Args>(&["run", "--scenario-file", "x.yaml", "--scenario", "baseline"]);
        assert!(both.is_err());
    }
}
