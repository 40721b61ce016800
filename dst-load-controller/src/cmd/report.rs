//! `report`'s front door: its flags, their checks, and the run that reads
//! the clients' figures from Prometheus (`crate::report`) and judges them.

use std::{process::ExitCode, str::FromStr, time::Duration};

use serde::Serialize;

use crate::{
    cmd::flags::GateArgs,
    gates::verdict_table,
    measurements::Measurements,
    report::{Access, Prometheus, read, redact, timeline},
};

/// `report` flags.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Prometheus base URL, e.g. `http://localhost:9090`.
    #[arg(long)]
    pub prometheus: String,

    /// Start of the judged window: a duration before --until (`15m`) or an
    /// RFC 3339 time (`2026-11-21T10:00:00Z`).
    #[arg(long, default_value = "15m")]
    pub since: Since,

    /// End of the judged window (RFC 3339). Default: now.
    #[arg(long)]
    pub until: Option<jiff::Timestamp>,

    /// PromQL label matchers selecting the clients' series, without braces,
    /// e.g. `namespace="dst-load-test",container="client"`.
    #[arg(long, default_value = "")]
    pub selector: String,

    /// Judge by this scenario's success criteria when no --slo is given.
    #[arg(long, value_enum)]
    pub scenario: Option<crate::scenario::Scenario>,

    /// Timeout of each Prometheus query.
    #[arg(long, default_value = "30s")]
    pub timeout: humantime::Duration,

    /// With --html: each point of the update latency over time covers the
    /// window ending there, from the buckets' increase (give at least four
    /// scrape intervals; a point whose percentile lies past the last bucket
    /// is left out).
    #[arg(long, default_value = "1m", value_name = "DURATION")]
    pub latency_window: humantime::Duration,

    /// A file whose first line is a token sent as `Authorization: Bearer`
    /// with every query (a Prometheus behind an authenticating proxy, or
    /// a ServiceAccount's token: `/var/run/secrets/kubernetes.io/serviceaccount/token`).
    #[arg(long, value_name = "FILE")]
    pub bearer_token_file: Option<std::path::PathBuf>,

    /// PEM certificates of the authorities that sign an https:// Prometheus's
    /// certificate, trusted beside the system's.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub gates: GateArgs,
}

/// `--since`: a duration back from the end, or a point in time.
#[derive(Clone, Debug)]
pub enum Since {
    /// This long before the end.
    Ago(Duration),
    /// From this time.
    At(jiff::Timestamp),
}

impl FromStr for Since {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(d) = humantime::parse_duration(s) {
            return Ok(Since::Ago(d));
        }
        s.parse().map(Since::At).map_err(|_| {
            format!("invalid --since '{s}': expected a duration such as 15m or an RFC 3339 time such as 2026-11-21T10:00:00Z")
        })
    }
}

impl Args {
    /// Checks the flags.
    pub fn validate(&self) -> Result<(), String> {
        self.gates.check_outputs()?;
        if self.latency_window.is_zero() {
            return Err(
                "--latency-window must be longer than 0s (e.g. 1m: four scrape intervals or more)"
                    .into(),
            );
        }
        let url: reqwest::Url = self.prometheus.parse().map_err(|e| {
            format!(
                "invalid --prometheus '{}': {e}; expected a URL such as http://localhost:9090",
                redact(&self.prometheus)
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "--prometheus '{}' must be an http:// or https:// URL",
                redact(&self.prometheus)
            ));
        }
        self.access()?;
        super::flags::above_zero("--timeout", self.timeout, "30s", "")?;
        let (start, end) = self.window(jiff::Timestamp::now());
        if start >= end {
            return Err(format!("--since ({start}) is not before --until ({end})"));
        }
        if self.selector.contains(['{', '}']) {
            return Err(format!(
                "--selector '{}' must be label matchers without braces, e.g. namespace=\"dst-load-test\"",
                self.selector
            ));
        }
        Ok(())
    }

    /// The token and authorities read from their files.
    fn access(&self) -> Result<Access, String> {
        Access::from_files(self.bearer_token_file.as_deref(), self.ca_file.as_deref())
            .map_err(|e| e.to_string())
    }

    fn window(&self, now: jiff::Timestamp) -> (jiff::Timestamp, jiff::Timestamp) {
        let end = self.until.unwrap_or(now);
        let start = match &self.since {
            Since::Ago(d) => end
                .checked_sub(
                    jiff::SignedDuration::try_from(*d).unwrap_or(jiff::SignedDuration::MAX),
                )
                .unwrap_or(jiff::Timestamp::MIN),
            Since::At(t) => *t,
        };
        (start, end)
    }

    /// Queries Prometheus, prints the table, writes the reports.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let (start, end) = self.window(jiff::Timestamp::now());
        let access = self.access().map_err(anyhow::Error::msg)?;
        let prom = Prometheus::new(&self.prometheus, self.timeout.into(), &access)?;
        let mut measured = read(&prom, &self.selector, start, end).await?;
        if self.gates.html.is_some() {
            measured.timeline = timeline(
                &prom,
                &self.selector,
                start,
                end,
                self.latency_window.into(),
            )
            .await?;
        }
        let slos = self
            .gates
            .slos_or(&self.scenario.map(|s| s.default_slos()).unwrap_or_default());
        let slos = crate::slo::judge(&slos, &measured, self.gates.min_samples);
        let console = self.gates.console();
        console.println(format_args!(
            "report from {} between {start} and {end}{}",
            redact(&self.prometheus),
            if self.selector.is_empty() {
                String::new()
            } else {
                format!(" for {{{}}}", self.selector)
            }
        ));
        console.println(format_args!(
            "  streams {}  streams created {}  updates {}  errors {}  stale {}  unconverged {}",
            measured.streams,
            measured.streams_created,
            measured.updates_received,
            measured.errors,
            measured.stale_streams,
            measured.streams_unconverged
        ));
        console.print(measured.latency_table());
        console.print(verdict_table(&slos));
        let report = Report {
            command: "report",
            prometheus: redact(&self.prometheus),
            selector: self.selector.clone(),
            started_at: start.to_string(),
            ended_at: end.to_string(),
            percentiles: "bucket upper bound",
            measured,
            slos,
        };
        self.gates.finish("report", &report.slos, &report, || {
            crate::html::run_page(
                &format!(
                    "report from {} ({start} to {end})",
                    redact(&self.prometheus)
                ),
                &crate::html::Run::new("clients", &report.measured)
                    .meta("version", crate::VERSION)
                    .meta("command line", super::output::command_line())
                    .meta("prometheus", &report.prometheus)
                    .meta("selector", &report.selector)
                    .meta("from", &report.started_at)
                    .meta("to", &report.ended_at)
                    .meta("percentiles", report.percentiles),
                &report.slos,
            )
        })
    }
}

/// The `--report` JSON of `report`.
#[derive(Debug, Serialize)]
struct Report {
    command: &'static str,
    prometheus: String,
    selector: String,
    started_at: String,
    ended_at: String,
    /// How latency percentiles were derived.
    percentiles: &'static str,
    #[serde(flatten)]
    measured: Measurements,
    slos: Vec<crate::slo::Verdict>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_duration_or_a_time() {
        assert!(matches!("15m".parse(), Ok(Since::Ago(d)) if d == Duration::from_secs(900)));
        assert!(matches!("2026-11-21T10:00:00Z".parse(), Ok(Since::At(_))));
        let e = "yesterday".parse::<Since>().unwrap_err();
        assert!(e.contains("--since 'yesterday'"), "{e}");
    }
}
