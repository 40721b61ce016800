//! `run`'s front door: its flags, their checks, and the [`Plan`] they make
//! (the scenario with its overrides, and its target). The harness
//! (`crate::harness`) runs it; this prints the summary, judges the gates and
//! writes the outputs.

use std::{net::SocketAddr, process::ExitCode};

use crate::harness::{
    self, Admin, Plan, Target,
    cluster::{Cluster, Multicluster},
    mock::Mock,
    red_line::RedLine,
};
use crate::mock::server::Delay;

use crate::scenario::{Overrides, ScenarioFile};

use super::output;
pub use crate::scenario::{Scenario, Spec};

/// `run --help`'s headings, in order.
const SCENARIO: &str = "Scenario";
const LOAD: &str = "Load (overrides of the scenario)";
const FAULTS: &str = "Faults";
const RED_LINE: &str = "Red line";
const GATES: &str = "Gates and reports";
const ADMIN: &str = "Admin server";
const TARGET: &str = "Target (a cluster instead of the mock)";

/// Flags of `run`.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The built-in scenario to run; every number can be overridden.
    #[arg(long, value_enum, default_value_t = Scenario::SmallOscillation, help_heading = SCENARIO)]
    pub scenario: Scenario,

    /// Run the scenario of this file instead (`--print-scenario NAME`
    /// prints one to start from); the flags below still override its numbers.
    #[arg(long, value_name = "FILE", conflicts_with = "scenario", help_heading = SCENARIO)]
    pub scenario_file: Option<ScenarioFile>,

    /// Print a built-in scenario's file and exit.
    #[arg(long, value_name = "NAME", value_enum, help_heading = SCENARIO)]
    pub print_scenario: Option<Scenario>,

    /// Print the JSON Schema of scenario files and exit.
    #[arg(long, conflicts_with = "print_scenario", help_heading = SCENARIO)]
    pub print_scenario_schema: bool,

    /// Multiplies the number of simulated proxies (streams per service and
    /// connections), so a scenario fits the machine.
    #[arg(long, default_value_t = 1.0, help_heading = LOAD)]
    pub scale: f64,

    /// Services of the scenario's first group; the other groups keep their
    /// share of it (overrides the scenario).
    #[arg(long, help_heading = LOAD)]
    pub services: Option<u32>,

    /// Endpoints at start and at the low end, of every group (overrides the scenario).
    #[arg(long, help_heading = LOAD)]
    pub min_endpoints: Option<u32>,

    /// Endpoints at the high end of scaling groups (overrides the scenario).
    #[arg(long, help_heading = LOAD)]
    pub max_endpoints: Option<u32>,

    /// Streams per service, before --scale (overrides the scenario; its
    /// profile streams keep their share of them). One client holds at most
    /// 1,000,000 streams in all (about 8 KB each).
    #[arg(long, help_heading = LOAD)]
    pub streams_per_service: Option<u32>,

    /// Connections, before --scale (overrides the scenario): at most 65,535
    /// and at most the streams.
    #[arg(long, help_heading = LOAD)]
    pub connections: Option<u32>,

    /// The schedule's hold at min (overrides the scenario).
    #[arg(long, help_heading = LOAD)]
    pub min_hold: Option<humantime::Duration>,

    /// The schedule's hold at max (overrides the scenario).
    #[arg(long, help_heading = LOAD)]
    pub max_hold: Option<humantime::Duration>,

    /// Random delay before each change, up to this (overrides the scenario).
    #[arg(long, help_heading = LOAD)]
    pub jitter: Option<humantime::Duration>,

    /// How long the scenario runs (overrides the scenario's).
    #[arg(long, help_heading = LOAD)]
    pub duration: Option<humantime::Duration>,

    /// After churn stops, how long to wait for every stream to converge
    /// (overrides the scenario's; built-in scenarios wait 10s).
    #[arg(long, help_heading = LOAD)]
    pub settle: Option<humantime::Duration>,

    /// Seed of the churn schedule (overrides the scenario's; default
    /// random, printed in the summary).
    #[arg(long, help_heading = LOAD)]
    pub seed: Option<u64>,

    /// Misbehaving streams, reset storms and connection churn of the
    /// run's client (see `client`); each flag given overrides the scenario's.
    #[command(flatten, next_help_heading = FAULTS)]
    pub faults: super::flags::FaultArgs,

    /// Delay the mock injects before each update on each stream: `50ms` or
    /// `10ms..200ms` (overrides the scenario's `mock.delay`; default none).
    /// Recorded in the report's plan.
    #[arg(long, help_heading = FAULTS)]
    pub mock_delay: Option<Delay>,

    /// Added to --mock-delay: this much per stream open on the mock, so
    /// that latency grows with the load (a red line known in advance).
    /// Overrides the scenario's `mock.delay-per-stream` (default 0s).
    #[arg(long, help_heading = FAULTS)]
    pub mock_delay_per_stream: Option<humantime::Duration>,

    /// Find the red line: run the scenario at growing loads until its SLOs
    /// fail (or --red-line-max), then bisect to --red-line-precision. Prints
    /// each step and the largest load that held; --report and --html get
    /// every step.
    #[command(flatten, next_help_heading = RED_LINE)]
    pub red_line: super::flags::RedLineArgs,

    /// Gates (default: the scenario's SLOs), the JSON report and JUnit output.
    #[command(flatten, next_help_heading = GATES)]
    pub gates: super::flags::GateArgs,

    /// Run the scenario this many times with one seed (at most 30): the
    /// report is the first run's, with every run's figures in `repeats`,
    /// and `compare` of two such reports tests each figure over the runs
    /// (a rank test: 4 runs a side at least for 95% confidence). Fails
    /// (exit 3) when any run fails an SLO. With --find-red-line, every
    /// step runs N times and holds when more than half of its runs held.
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=30),
          help_heading = GATES)]
    pub repeat: u16,

    /// Admin server of the run (the client's metrics and the mock's or
    /// churn's; POST /shutdown ends the run as a signal does).
    ///
    /// Loopback by default: a local run need not be reachable from the
    /// network (give `0.0.0.0:9993` for a Prometheus elsewhere).
    #[arg(long, default_value = "127.0.0.1:9993", help_heading = ADMIN)]
    pub admin_addr: SocketAddr,

    #[command(flatten, next_help_heading = ADMIN)]
    pub admin_control: super::flags::ControlArgs,

    /// Run against a cluster instead of the mock: churn creates the
    /// scenario's services in --namespace through the current kube context,
    /// and the client watches this Destination service (host:port), timing
    /// changes against the Kubernetes ground truth.
    #[arg(long, help_heading = TARGET)]
    pub destination_addr: Option<String>,

    /// With --destination-addr: the version of the destination controller,
    /// recorded in the report (a local control plane's env file sets it:
    /// `hack/local-cluster.sh up --linkerd VERSION`).
    #[arg(long, env = "DST_LOCAL_LINKERD_VERSION", value_name = "VERSION", help_heading = TARGET)]
    pub destination_version: Option<String>,

    /// The namespace churn uses with --destination-addr.
    #[arg(
        help_heading = TARGET,
        short = 'n',
        long,
        default_value = "dst-load-test",
        requires = "destination_addr"
    )]
    pub namespace: String,

    /// With --destination-addr, leave the services in place at the end
    /// (default: delete what churn created).
    #[arg(long, requires = "destination_addr", help_heading = TARGET)]
    pub keep: bool,

    /// The cluster domain of --destination-addr's cluster (in multicluster,
    /// the source's): the client watches `{svc}.{ns}.svc.{domain}`.
    #[arg(long, default_value = "cluster.local", requires = "destination_addr", help_heading = TARGET)]
    pub cluster_domain: String,

    /// Multicluster: the cluster where the endpoints live (the target of a
    /// Linkerd link), through this kubeconfig. churn creates the scenario's
    /// services there, exported (--export), and the ground truth is read
    /// there; the client watches their mirrors through --destination-addr
    /// (the source's destination controller), and --namespace is created in
    /// the source (the current kube context), where the mirrors appear.
    #[arg(long, value_name = "FILE", requires = "destination_addr", help_heading = TARGET)]
    pub ground_truth_kubeconfig: Option<std::path::PathBuf>,

    /// The context of --ground-truth-kubeconfig (default: its current one).
    #[arg(long, requires = "ground_truth_kubeconfig", help_heading = TARGET)]
    pub ground_truth_context: Option<String>,

    /// The link's name (`linkerd multicluster link-gen --cluster-name`):
    /// remote-discovery mirrors are named `{svc}-{link}` [default: target].
    #[arg(long, value_name = "NAME", requires = "ground_truth_kubeconfig", help_heading = TARGET)]
    pub ground_truth_link: Option<String>,

    /// How churn exports its services in the target: `remote-discovery`
    /// (the client watches the mirrors `{svc}-{link}`) or `federated` (the
    /// client watches `{svc}-federated`) [default: remote-discovery].
    #[arg(long, value_enum, requires = "ground_truth_kubeconfig", help_heading = TARGET)]
    pub export: Option<crate::churn::objects::Export>,

    #[command(flatten, next_help_heading = TARGET)]
    pub kube: super::flags::KubeArgs,
}

impl Args {
    /// Checks the overrides.
    pub fn validate(&self) -> Result<(), String> {
        self.gates.check_outputs()?;
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
        if self.destination_addr.is_some() {
            crate::labels::check_namespace("--namespace", &self.namespace)
                .and_then(|()| {
                    crate::labels::check_domain("--cluster-domain", &self.cluster_domain)
                })
                .map_err(|e| e.to_string())?;
        }
        self.kube.validate()?;
        if let Some(mc) = self.multicluster() {
            check_multicluster(&mc, &spec)?;
        }
        self.red_line.validate()?;
        if self.red_line.find_red_line && self.gates.kube_burner_dir.is_some() {
            return Err("--kube-burner-dir writes the runs of a plan, not a red-line search's steps: leave it out of --find-red-line, or run the step's load with --repeat".into());
        }
        self.faults
            .over(spec.clients.faults)
            .validate()
            .map_err(|e| e.to_string())
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
        let base = self.base();
        let faults = self.faults.over(base.clients.faults);
        let mut spec = base.with(&self.overrides()).map_err(|e| e.to_string())?;
        spec.clients.faults = faults;
        Ok(spec)
    }

    /// The scenario before the overrides: the file's, or the built-in one,
    /// with the mock's delivery flags in it (so that the report's plan
    /// replays them).
    fn base(&self) -> Spec {
        let mut spec = match &self.scenario_file {
            Some(file) => file.spec.clone(),
            None => self.scenario.spec(),
        };
        if self.mock_delay.is_some() || self.mock_delay_per_stream.is_some() {
            let mock = spec.mock.get_or_insert_with(Default::default);
            if let Some(d) = self.mock_delay {
                mock.delay = d;
            }
            if let Some(d) = self.mock_delay_per_stream {
                mock.delay_per_stream = d.into();
            }
        }
        spec
    }

    /// The flags that override the scenario's numbers.
    fn overrides(&self) -> Overrides {
        Overrides {
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
        }
    }

    /// What the scenario runs against: the mock without
    /// `--destination-addr`, else a cluster (two with
    /// `--ground-truth-kubeconfig`).
    pub fn target(&self) -> Target {
        let Some(destination) = self.destination_addr.clone() else {
            let mock = self.base().mock.unwrap_or_default();
            return Target::Mock(Mock {
                delay: mock.delay,
                delay_per_stream: mock.delay_per_stream,
            });
        };
        let source = Cluster {
            destination,
            namespace: self.namespace.clone(),
            cluster_domain: self.cluster_domain.clone(),
            keep: self.keep,
            kube: self.kube.settings(),
        };
        match self.multicluster() {
            Some(target) => Target::Multicluster { source, target },
            None => Target::Cluster(source),
        }
    }

    /// The scenario and its target.
    pub fn plan(&self) -> Result<Plan, String> {
        Ok(Plan {
            spec: self.spec()?,
            target: self.target(),
        })
    }

    /// Fails before anything starts when the admin address is taken (the
    /// harness binds it once the components have registered their metrics).
    async fn check_admin_addr(&self) -> anyhow::Result<()> {
        drop(crate::admin::bind(self.admin_addr).await?);
        Ok(())
    }

    fn admin(&self) -> Admin {
        Admin {
            addr: self.admin_addr,
            allow_remote_shutdown: self.admin_control.admin_allow_remote_shutdown,
            root: None,
        }
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
        let gates = self.gates.clone();
        let mut plan = self.plan().map_err(anyhow::Error::msg)?;
        self.check_admin_addr().await?;
        let slos = gates.slos_or(&plan.spec.slos);
        // Every run of --repeat replays one schedule.
        plan.spec.seed.get_or_insert_with(rand::random);
        let shutdown = crate::shutdown::on_signal();
        let mut outcomes = Vec::new();
        for i in 1..=self.repeat {
            if self.repeat > 1 {
                gates
                    .console()
                    .println(format!("run {i} of {}", self.repeat));
            }
            let admin = Admin {
                root: Some(shutdown.clone()),
                ..self.admin()
            };
            let mut outcome = match harness::run(&plan, shutdown.child_token(), Some(admin)).await {
                Ok(outcome) => outcome,
                // Stopped before it measured anything: the runs before it stand.
                Err(e) if shutdown.is_cancelled() && !outcomes.is_empty() => {
                    tracing::warn!(
                        "run {i} of {} stopped before it measured: {:#}",
                        self.repeat,
                        anyhow::Error::from(e)
                    );
                    break;
                }
                Err(e) => return Err(e.into()),
            };
            outcome.slos = crate::slo::judge(&slos, &outcome.measured, gates.min_samples);
            if self.destination_addr.is_some() {
                outcome.destination_version = self.destination_version.clone();
            }
            gates.console().println(outcome.table());
            // A signal or POST /shutdown ends the repeats too.
            let stop = outcome.interrupted || shutdown.is_cancelled();
            outcomes.push(outcome);
            if stop {
                break;
            }
        }
        let outcome = repeated(outcomes, self.repeat > 1);
        if self.repeat > 1 {
            gates.console().println(repeats_table(&outcome.repeats));
        }
        let suite = outcome.scenario.clone();
        gates.finish(&suite, &outcome.slos, &outcome, || {
            crate::html::run_page(
                &format!("run {} (seed {})", outcome.scenario, outcome.seed),
                &crate::html::Run::new(&outcome.scenario, &outcome.measured)
                    .meta("version", crate::VERSION)
                    .meta("command line", output::command_line())
                    .meta("scenario", &outcome.scenario)
                    .meta("seed", outcome.seed)
                    .meta("target", &outcome.destination)
                    .meta(
                        "controller",
                        outcome.destination_version.as_deref().unwrap_or_default(),
                    )
                    .meta("started", &outcome.started_at)
                    .meta("ended", &outcome.ended_at)
                    .meta(
                        "runs",
                        match outcome.repeats.len() {
                            0 => String::new(),
                            n => format!(
                                "{n} complete, one seed; this page draws the first that failed an SLO, else the first; the report's `repeats` has every complete run's figures"
                            ),
                        },
                    )
                    .meta(
                        "plan",
                        serde_json::to_string_pretty(&outcome.plan).unwrap_or_default(),
                    ),
                &outcome.slos,
            )
        })
    }

    /// `--find-red-line`: the harness runs the scenario at the loads the
    /// search asks for, each judged by the scenario's SLOs (or --slo); the
    /// verdict is printed and every step written to --report and --html.
    async fn find_red_line(self) -> anyhow::Result<ExitCode> {
        let mut base = self.base();
        // Every step and every run of --repeat replays one schedule.
        base.seed.get_or_insert_with(rand::random);
        let search = RedLine {
            faults: self.faults.over(base.clients.faults),
            slos: self.gates.slos_or(&base.slos),
            base,
            overrides: self.overrides(),
            target: self.target(),
            dimension: self.red_line.red_line_dimension,
            max: self.red_line.red_line_max,
            precision: self.red_line.red_line_precision,
            min_samples: self.gates.min_samples,
            steps_to_stderr: self.gates.console().on_stderr(),
            repeat: self.repeat,
        };
        let name = search.base.name().to_string();
        let (report, html) = (self.gates.report.clone(), self.gates.html.clone());
        let console = self.gates.console();
        self.check_admin_addr().await?;
        let admin = self.admin();
        search
            .find(crate::shutdown::on_signal(), admin, |found| {
                console.println(found.verdict());
                if let Some(path) = &report {
                    let json = serde_json::json!({
                        "command": "run",
                        "scenario": name,
                        "find_red_line": found,
                    });
                    let json = output::Stamped::new(&json);
                    output::write("--report", path, serde_json::to_string_pretty(&json)?)?;
                    output::written("report written to", path);
                }
                if let Some(path) = &html {
                    output::write("--html", path, crate::html::red_line_page(&name, &found))?;
                    output::written("pictures drawn in", path);
                }
                Ok(if found.search.pass.is_some() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(crate::slo::EXIT_SLO_FAILED)
                })
            })
            .await
    }
}

/// What the link cannot carry: unexported services, and headless
/// (StatefulSet) services in a federated service.
fn check_multicluster(mc: &Multicluster, spec: &Spec) -> Result<(), String> {
    super::flags::check_ground_truth_target(Some(&mc.link), mc.kube.kubeconfig.as_deref())?;
    match mc.export {
        crate::churn::objects::Export::None => {
            return Err("--export none with --ground-truth-kubeconfig: nothing would be mirrored into the source; give --export remote-discovery or federated".into());
        }
        crate::churn::objects::Export::Gateway => {
            return Err("--export gateway: a gateway mirror serves the gateway's address, not the target's pods, so run cannot compare it with the target's truth; give --export remote-discovery or federated (churn --export gateway labels services for a gateway link)".into());
        }
        _ => {}
    }
    if spec.services.statefulset.is_some() && mc.export == crate::churn::objects::Export::Federated
    {
        return Err("the scenario has StatefulSet (headless) services, which Linkerd's service mirror does not federate; use --export remote-discovery, or drop them from the scenario".into());
    }
    Ok(())
}

/// The report of `runs` (one or more of one plan): the first run that
/// failed an SLO, else the first, with every complete run's figures when
/// `repeat` was asked (a run cut short by a signal is not one of them, so
/// a stop during the second run leaves one).
fn repeated(runs: Vec<harness::Outcome>, repeat: bool) -> harness::Outcome {
    let figures: Vec<crate::measurements::RunFigures> = runs
        .iter()
        .enumerate()
        .filter(|(_, o)| !o.interrupted)
        .map(|(i, o)| o.run_figures(i + 1))
        .collect();
    let shown = runs.iter().position(|o| !o.passed()).unwrap_or(0);
    let mut outcome = runs.into_iter().nth(shown).expect("at least one run");
    if repeat {
        outcome.repeats = figures;
    }
    outcome
}

/// The main figures over repeated runs: median, least and most.
fn repeats_table(runs: &[crate::measurements::RunFigures]) -> String {
    let mut t = format!(
        "  {:<35} {:>11} {:>11} {:>11}\n",
        format!("over {} runs", runs.len()),
        "median",
        "least",
        "most"
    );
    let names = [
        "update_latency.p50",
        "update_latency.p99",
        "convergence_latency.p99",
        "fanout_completion.max",
        "errors",
        "resets",
        "stale_streams",
    ];
    for name in names {
        let mut v: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.figures.get(name).copied())
            .collect();
        if v.len() != runs.len() {
            continue;
        }
        v.sort_by(f64::total_cmp);
        let median = crate::verdicts::median(&v);
        let show = |x: f64| {
            if name.contains('.') {
                format!("{:.1} ms", x * 1e3)
            } else {
                format!("{x}")
            }
        };
        t += &format!(
            "  {name:<35} {:>11} {:>11} {:>11}\n",
            show(median),
            show(v[0]),
            show(v[v.len() - 1])
        );
    }
    let failed: Vec<String> = runs
        .iter()
        .filter(|r| !r.passed)
        .map(|r| r.run.to_string())
        .collect();
    if !failed.is_empty() {
        t += &format!("  runs that failed an SLO: {}\n", failed.join(", "));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::parse_flags;
    use std::time::Duration;

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
        let e = mk_args(&["--find-red-line", "--kube-burner-dir", "kb"])
            .validate()
            .unwrap_err();
        assert!(
            e.starts_with("--kube-burner-dir writes the runs of a plan"),
            "{e}"
        );
        assert!(mk_args(&["--kube-burner-dir", "kb"]).validate().is_ok());
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
        assert!(err(&["--cluster-domain", "bad..domain"]).contains("is not a domain"));
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
