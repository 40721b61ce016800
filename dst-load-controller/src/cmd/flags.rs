//! Flags shared by several front doors, and the clap side of the engines'
//! value types.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use serde::Serialize;

use crate::{
    client::faults::Faults,
    gates::exit_status,
    logging::{self, InvalidFilter, LogFormat},
    red_line::Dimension,
    schedule::{Jitter, Oscillation},
    slo::{self, Slo, Verdict},
};

use super::output::{self, Console};

/// A count that must be at least 1; `why` (may be empty) follows the
/// message.
pub fn at_least_one(flag: &str, n: impl Into<u64>, why: &str) -> Result<(), String> {
    if n.into() == 0 {
        return Err(format!("{flag} must be at least 1{why}"));
    }
    Ok(())
}

/// A duration that must be above zero: `example` (e.g. `60s`) and `why`
/// (may be empty) follow the message.
pub fn above_zero(
    flag: &str,
    d: impl Into<Duration>,
    example: &str,
    why: &str,
) -> Result<(), String> {
    if d.into().is_zero() {
        return Err(format!("{flag} must be above zero (e.g. {example}){why}"));
    }
    Ok(())
}

/// The ground truth's cluster, as `client` and `run` take it: a link
/// name that can be one, a kubeconfig that exists.
pub fn check_ground_truth_target(
    link: Option<&str>,
    kubeconfig: Option<&std::path::Path>,
) -> Result<(), String> {
    if let Some(link) = link {
        crate::labels::check_link("--ground-truth-link", link).map_err(|e| e.to_string())?;
    }
    if let Some(file) = kubeconfig.filter(|f| !f.is_file()) {
        return Err(format!(
            "--ground-truth-kubeconfig {}: no such file; give the kubeconfig of the cluster where the endpoints live",
            file.display()
        ));
    }
    Ok(())
}

/// `--log-level` and `--log-format`.
#[derive(Clone, Debug, clap::Args)]
pub struct LogArgs {
    /// Log filter in RUST_LOG syntax, e.g. `info` or `dst_load_controller=debug,warn`.
    #[arg(long, env = "RUST_LOG", default_value = "info", global = true)]
    log_level: String,

    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Plain, global = true)]
    log_format: LogFormat,
}

impl LogArgs {
    /// Installs the global subscriber (see [`logging::init`]).
    pub fn init(&self) -> Result<(), InvalidFilter> {
        logging::init(&self.log_level, self.log_format)
    }
}

impl clap::ValueEnum for LogFormat {
    fn value_variants<'a>() -> &'a [Self] {
        &[LogFormat::Plain, LogFormat::Json]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        use clap::builder::PossibleValue;
        Some(match self {
            LogFormat::Plain => PossibleValue::new("plain").help("Human-readable lines"),
            LogFormat::Json => PossibleValue::new("json").help("One JSON object per line"),
        })
    }
}

/// Flags of `run --find-red-line`.
#[derive(Clone, Debug, clap::Args)]
pub struct RedLineArgs {
    /// Find the red line (see `run`).
    #[arg(long)]
    pub find_red_line: bool,

    /// What grows: `streams` (streams per service, one connection each) or
    /// `services` (the scenario's first group; the others keep their share).
    #[arg(long, value_enum, default_value_t = Dimension::Streams, requires = "find_red_line")]
    pub red_line_dimension: Dimension,

    /// The largest load tried (default: 64 times the scenario's).
    #[arg(long, requires = "find_red_line")]
    pub red_line_max: Option<u32>,

    /// Stop bisecting when the last pass and the first fail are this close:
    /// `10%` or `0.1`.
    #[arg(long, default_value = "10%", value_parser = crate::verdicts::parse_fraction, requires = "find_red_line")]
    pub red_line_precision: f64,
}

impl RedLineArgs {
    /// Checks the flags.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(max) = self.red_line_max {
            at_least_one("--red-line-max", max, "")?;
        }
        if !(self.red_line_precision > 0.0 && self.red_line_precision < 1.0) {
            return Err(format!(
                "--red-line-precision must be above 0% and below 100%, got {}",
                self.red_line_precision
            ));
        }
        Ok(())
    }
}

impl clap::ValueEnum for Dimension {
    fn value_variants<'a>() -> &'a [Self] {
        &[Dimension::Streams, Dimension::Services]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        use clap::builder::PossibleValue;
        Some(match self {
            Dimension::Streams => PossibleValue::new("streams")
                .help("Streams per service (and connections with them)"),
            Dimension::Services => {
                PossibleValue::new("services").help("Services of the scenario's first group")
            }
        })
    }
}

/// Oscillation timing flags, shared by `churn` and `mock-dst`.
#[derive(Clone, Debug, clap::Args)]
pub struct OscillationArgs {
    /// Hold at both ends (the two holds add up to at least 1ms).
    #[arg(long, default_value = "30s")]
    pub oscillate_hold_duration: humantime::Duration,

    /// Hold at min, overriding --oscillate-hold-duration.
    #[arg(long)]
    pub oscillate_min_hold: Option<humantime::Duration>,

    /// Hold at max, overriding --oscillate-hold-duration.
    #[arg(long)]
    pub oscillate_max_hold: Option<humantime::Duration>,

    /// Random delay before each scale, up to this percentage (0-100) of the
    /// hold that precedes it.
    #[arg(long, default_value_t = 0, conflicts_with = "oscillate_jitter")]
    pub oscillate_jitter_percent: u8,

    /// Random delay before each scale, up to this absolute bound (e.g. `5s`).
    #[arg(long)]
    pub oscillate_jitter: Option<humantime::Duration>,

    /// Full min -> max -> min cycles per service; 0 = until stopped. When
    /// every service has done its cycles, the run ends.
    #[arg(long, default_value_t = 0)]
    pub cycles: u64,

    /// Seed of the jitter schedule (default: random; the seed used is logged).
    #[arg(long)]
    pub seed: Option<u64>,
}

impl OscillationArgs {
    /// Checks the jitter bound.
    pub fn validate(&self) -> Result<(), String> {
        if self.oscillate_jitter_percent > 100 {
            return Err(format!(
                "--oscillate-jitter-percent must be between 0 and 100, got {}",
                self.oscillate_jitter_percent
            ));
        }
        Ok(())
    }

    /// The parameters for oscillating between `min` and `max`.
    pub fn oscillation(&self, min: u32, max: u32) -> Oscillation {
        let hold: Duration = self.oscillate_hold_duration.into();
        Oscillation {
            min,
            max,
            min_hold: self.oscillate_min_hold.map_or(hold, Into::into),
            max_hold: self.oscillate_max_hold.map_or(hold, Into::into),
            jitter: match self.oscillate_jitter {
                Some(d) => Jitter::Upto(d.into()),
                None => Jitter::Percent(self.oscillate_jitter_percent),
            },
            cycles: self.cycles,
        }
    }

    /// The seed given, or a random one.
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or_else(rand::random)
    }
}

/// The gate and report flags.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct GateArgs {
    /// A pass/fail gate, e.g. `update_latency.p95<500ms`, `fanout_completion.max<10s`,
    /// `stale_streams==0`, `errors==0`. Repeatable. Exit status 3 when one fails.
    #[arg(long)]
    pub slo: Vec<Slo>,

    /// A latency SLO judged on fewer samples than this fails.
    #[arg(long, default_value_t = 1)]
    pub min_samples: u64,

    /// Write a JSON report here (configuration, times, every percentile,
    /// every SLO with its measured value and verdict); `-` for standard
    /// output (the summary then goes to standard error).
    #[arg(long)]
    pub report: Option<PathBuf>,

    /// Write the SLO verdicts as JUnit XML here; `-` for standard output.
    #[arg(long)]
    pub junit: Option<PathBuf>,

    /// Draw the run as one self-contained HTML page here: latency
    /// distributions, every change's fan-out, streams, errors, resets and
    /// stale streams over time, and the SLO verdicts. `-` for standard output.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,

    /// Also write the report as kube-burner's documents into this folder
    /// (made if missing; its files of the same names are replaced): one
    /// `{metricName}.json` array per metric, as kube-burner's `local`
    /// indexer lays them out: `jobSummary`, `destinationLatencyQuantilesMeasurement`
    /// (a document per latency, P50/P95/P99/P999/max in ms), and a value per
    /// count (`errors`, `resets`, `staleStreams`, `unconvergedStreams`,
    /// `profileStaleStreams`); each run of `--repeat` has its own `uuid`.
    #[arg(long, value_name = "DIR")]
    pub kube_burner_dir: Option<PathBuf>,
}

impl GateArgs {
    /// The SLOs given, or `defaults` when none were.
    pub fn slos_or(&self, defaults: &[Slo]) -> Vec<Slo> {
        if self.slo.is_empty() {
            defaults.to_vec()
        } else {
            self.slo.clone()
        }
    }

    /// `--report`, `--junit` and `--html` with their paths.
    fn files(&self) -> [(&'static str, Option<&PathBuf>); 3] {
        [
            ("--report", self.report.as_ref()),
            ("--junit", self.junit.as_ref()),
            ("--html", self.html.as_ref()),
        ]
    }

    /// At most one of `--report`, `--junit` and `--html` is `-`, each can
    /// be written, and `--kube-burner-dir` is a folder or can be made one.
    pub fn check_outputs(&self) -> Result<(), String> {
        output::check_files(&self.files())?;
        if let Some(dir) = &self.kube_burner_dir {
            output::check_dir("--kube-burner-dir", dir)?;
        }
        Ok(())
    }

    /// Where the text for people goes: standard error when a file flag is `-`.
    pub fn console(&self) -> Console {
        Console::beside(&self.files())
    }

    /// Writes the JUnit file and the JSON report (when asked) and returns
    /// the exit status: 0 when every verdict passed, 3 otherwise.
    pub fn finish(
        &self,
        suite: &str,
        verdicts: &[Verdict],
        report: &impl Serialize,
        page: impl FnOnce() -> String,
    ) -> anyhow::Result<ExitCode> {
        if let Some(path) = &self.html {
            output::write("--html", path, page())?;
            output::written("pictures drawn in", path);
        }
        if let Some(path) = &self.junit {
            output::write("--junit", path, slo::junit(suite, verdicts))?;
        }
        if let Some(path) = &self.report {
            output::write(
                "--report",
                path,
                serde_json::to_string_pretty(&output::Stamped::new(report))?,
            )?;
            output::written("report written to", path);
        }
        if let Some(dir) = &self.kube_burner_dir {
            super::kube_burner::export(dir, &serde_json::to_value(output::Stamped::new(report))?)?;
        }
        Ok(exit_status(verdicts))
    }
}

/// The fault-mode flags, shared by `client` and `run`. Each one given
/// overrides a scenario file's `clients.faults` (defaults: no faults, a slow
/// reader takes 1s per update).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct FaultArgs {
    /// Percentage (0-100) of streams that take --slow-reader-delay to handle
    /// each update: they read the next one only that long after the
    /// previous (HTTP/2 flow control then pushes back on the server, as on
    /// a proxy of a starved node). Default 0.
    #[arg(long)]
    pub slow_reader_percent: Option<u8>,

    /// How long a slow reader takes per update. Default 1s.
    #[arg(long)]
    pub slow_reader_delay: Option<humantime::Duration>,

    /// Percentage (0-100) of streams that read their first update and then
    /// never read again, keeping the stream open. Default 0. Profile streams
    /// by name take the class of the connection slot they open on (beside
    /// their `Get` stream: its class), `--target-pods` streams stay healthy;
    /// stuck streams are reported apart and never counted as stale.
    #[arg(long)]
    pub stuck_percent: Option<u8>,

    /// Every this long, every stream of the process is reset at once and
    /// re-Gets, as all proxies do after a controller restart.
    #[arg(long)]
    pub reset_storm_interval: Option<humantime::Duration>,

    /// Random delay up to this added to each reset storm's interval. Default 0s.
    #[arg(long)]
    pub reset_storm_jitter: Option<humantime::Duration>,

    /// Every this long (plus up to half of it, per connection) each
    /// connection is closed and reopened, and its streams with it.
    #[arg(long)]
    pub connection_churn_interval: Option<humantime::Duration>,
}

impl FaultArgs {
    /// The fault modes from the flags alone.
    pub fn faults(&self) -> Faults {
        self.over(Faults::default())
    }

    /// `base` (a scenario's) with every flag given laid over it.
    pub fn over(&self, base: Faults) -> Faults {
        Faults {
            slow_reader_percent: self.slow_reader_percent.unwrap_or(base.slow_reader_percent),
            slow_reader_delay: self
                .slow_reader_delay
                .map_or(base.slow_reader_delay, Into::into),
            stuck_percent: self.stuck_percent.unwrap_or(base.stuck_percent),
            reset_storm_interval: self
                .reset_storm_interval
                .map(Into::into)
                .or(base.reset_storm_interval),
            reset_storm_jitter: self
                .reset_storm_jitter
                .map_or(base.reset_storm_jitter, Into::into),
            connection_churn_interval: self
                .connection_churn_interval
                .map(Into::into)
                .or(base.connection_churn_interval),
        }
    }
}

// The engines' value enums as clap takes them: each value named in kebab
// case, its help the variant's doc (as clap's derive would write it).

impl clap::ValueEnum for crate::churn::objects::ProxyInjection {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            crate::churn::objects::ProxyInjection::Synthetic,
            crate::churn::objects::ProxyInjection::Webhook,
        ]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        use clap::builder::PossibleValue;
        Some(match self {
            crate::churn::objects::ProxyInjection::Synthetic => PossibleValue::new("synthetic").help("Churn writes the pod shape Linkerd's proxy injector produces: the `linkerd-proxy` container with its listen-address env vars and ports, and the injector's labels and annotations. Needs no injector webhook"),
            crate::churn::objects::ProxyInjection::Webhook => PossibleValue::new("webhook").help("Churn annotates the pod template with `linkerd.io/inject: enabled` and leaves the rest to the cluster's proxy injector webhook"),
        })
    }
}

impl clap::ValueEnum for crate::churn::objects::Export {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            crate::churn::objects::Export::None,
            crate::churn::objects::Export::RemoteDiscovery,
            crate::churn::objects::Export::Federated,
            crate::churn::objects::Export::Gateway,
        ]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        use clap::builder::PossibleValue;
        Some(match self {
            crate::churn::objects::Export::None => PossibleValue::new("none").help("Not exported"),
            crate::churn::objects::Export::RemoteDiscovery => PossibleValue::new("remote-discovery").help("`mirror.linkerd.io/exported=remote-discovery`: a linked cluster mirrors the Service and its destination controller reads the endpoints from this cluster's API server (no gateway in the data path)"),
            crate::churn::objects::Export::Federated => PossibleValue::new("federated").help("`mirror.linkerd.io/federated=member`: the Service joins the federated Service `{name}-federated` in linked clusters"),
            crate::churn::objects::Export::Gateway => PossibleValue::new("gateway").help("`mirror.linkerd.io/exported=true`: a gateway-mode link mirrors the Service with this cluster's gateway as its endpoints (a headless one, when the service mirror runs with `-enable-headless-services`, as one mirror `{pod}-{link}` per pod)"),
        })
    }
}

impl clap::ValueEnum for crate::scenario::Scenario {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            crate::scenario::Scenario::Baseline,
            crate::scenario::Scenario::SmallOscillation,
            crate::scenario::Scenario::LargeRollout,
            crate::scenario::Scenario::ManyServices,
            crate::scenario::Scenario::RedLine,
            crate::scenario::Scenario::RollingRestart,
            crate::scenario::Scenario::Statefulset,
        ]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        use clap::builder::PossibleValue;
        Some(match self {
            crate::scenario::Scenario::Baseline => PossibleValue::new("baseline").help("10 services x 100 endpoints, 100 proxies each, no churn"),
            crate::scenario::Scenario::SmallOscillation => PossibleValue::new("small-oscillation").help("10 services oscillating 10 <-> 200, 100 proxies each"),
            crate::scenario::Scenario::LargeRollout => PossibleValue::new("large-rollout").help("1 service oscillating 500 <-> 1000, 1000 proxies"),
            crate::scenario::Scenario::ManyServices => PossibleValue::new("many-services").help("100 services oscillating 50 <-> 100, 100 proxies each"),
            crate::scenario::Scenario::RedLine => PossibleValue::new("red-line").help("50 services oscillating 100 <-> 200, 500 proxies each"),
            crate::scenario::Scenario::RollingRestart => PossibleValue::new("rolling-restart").help("10 services of 20 endpoints, each rolled (every address replaced) every 10 s, and 2 services of 20 deleted and re-created (20 s alive, 5 s gone); 100 proxies each"),
            crate::scenario::Scenario::Statefulset => PossibleValue::new("statefulset").help("5 StatefulSets oscillating 3 <-> 6 pods behind headless Services; 20 proxies watch each service and each of its first 3 pods by name"),
        })
    }
}

/// The admin server's shutdown flag, shared by every subcommand.
#[derive(Clone, Copy, Debug, Default, clap::Args)]
pub struct ControlArgs {
    /// Let any peer, not only loopback ones, call `POST /shutdown` and
    /// `POST /abort` on the admin server (when it listens beyond loopback,
    /// for Prometheus).
    #[arg(long)]
    pub admin_allow_remote_shutdown: bool,
}

/// Flags for the Kubernetes client.
#[derive(Clone, Debug, clap::Args)]
pub struct KubeArgs {
    /// The kubeconfig file (default: `KUBECONFIG`, then `~/.kube/config`,
    /// then the in-cluster service account), as kubectl's `--kubeconfig`.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use (default: the current context, or the
    /// in-cluster service account), as kubectl's `--context`.
    #[arg(long = "context", visible_alias = "kube-context", value_name = "NAME")]
    pub kube_context: Option<String>,

    /// Sustained Kubernetes API requests per second.
    #[arg(long, default_value_t = 20.0)]
    pub qps: f64,

    /// Requests allowed in a burst above --qps.
    #[arg(long, default_value_t = 40)]
    pub burst: u32,
}

impl KubeArgs {
    /// Checks the kubeconfig file and the rate limit flags.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(file) = &self.kubeconfig
            && !file.is_file()
        {
            return Err(format!(
                "--kubeconfig {}: no such file; give a kubeconfig file, or leave the flag out to use KUBECONFIG",
                file.display()
            ));
        }
        self.settings().validate().map_err(|e| e.to_string())
    }

    /// The client settings these flags give (the environment's kubeconfig).
    pub fn settings(&self) -> crate::kube_api::KubeSettings {
        crate::kube_api::KubeSettings {
            kube_context: self.kube_context.clone(),
            qps: self.qps,
            burst: self.burst,
            kubeconfig: self.kubeconfig.clone(),
        }
    }
}
