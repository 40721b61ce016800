//! `compare BASE.json NEW.json`: is the new run faster, slower or the same?
//! Reads two reports of `run` or `client`, tests every latency percentile
//! (bootstrap intervals over the reports' histograms) and the counts, and
//! exits 4 when something is worse beyond the threshold.

use std::{path::PathBuf, process::ExitCode};

use serde::Deserialize;

use crate::measurements::Measurements;

use super::output::{self, Console};

pub use crate::verdicts::{Row, Test, Verdict, parse_fraction};

/// Exit status when something is worse.
pub const EXIT_WORSE: u8 = 4;

/// Flags of `compare`.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The base report (`run --report` or `client --report`).
    pub base: PathBuf,

    /// The new report, compared with the base.
    pub new: PathBuf,

    /// A change within this is `same`: `10%` or `0.1`.
    #[arg(long, default_value = "10%", value_parser = parse_fraction)]
    pub threshold: f64,

    /// The confidence of the intervals behind each latency verdict.
    #[arg(long, default_value_t = 0.95)]
    pub confidence: f64,

    /// Compare reports of different scenarios, seeds or commands.
    #[arg(long)]
    pub allow_different: bool,

    /// Write the verdicts as JUnit XML (a failure per worse figure); `-` for
    /// standard output.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,

    /// Write the comparison as one self-contained HTML page (both runs'
    /// latency distributions overlaid, timelines, verdicts); `-` for
    /// standard output.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,

    /// Also write the comparison as JSON; `-` for standard output (the table
    /// then goes to standard error).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

impl Args {
    /// Checks the flags.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.confidence > 0.5 && self.confidence < 1.0) {
            return Err(format!(
                "--confidence must be between 0.5 and 1 (e.g. 0.95), got {}",
                self.confidence
            ));
        }
        output::check_files(&self.files())
    }

    /// `--report`, `--junit` and `--html` with their paths.
    fn files(&self) -> [(&'static str, Option<&PathBuf>); 3] {
        [
            ("--report", self.report.as_ref()),
            ("--junit", self.junit.as_ref()),
            ("--html", self.html.as_ref()),
        ]
    }

    /// Reads both reports, prints the comparison, writes the files asked.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let (base, new) = match (Report::read(&self.base), Report::read(&self.new)) {
            (Ok(b), Ok(n)) => (b, n),
            (Err(e), _) | (_, Err(e)) => return Ok(bad_input(&e)),
        };
        if !self.allow_different
            && let Err(e) = base.same_run_as(&new)
        {
            return Ok(bad_input(&format!(
                "{e}; give --allow-different to compare them anyway"
            )));
        }
        let test = Test {
            threshold: self.threshold,
            confidence: self.confidence,
            seed: 0,
        };
        let (mode, rows) = if base.repeats.is_none() && new.repeats.is_none() {
            let rows = crate::verdicts::compare(&base.measured, &new.measured, &test);
            (Mode::SingleRun, rows)
        } else {
            let (b, n) = (base.runs(), new.runs());
            let mode = Mode::Runs {
                base: b.len(),
                new: n.len(),
                needed: crate::verdicts::min_runs(test.confidence),
            };
            (mode, crate::verdicts::compare_runs(&b, &n, &test))
        };
        if rows.is_empty() {
            return Ok(bad_input(&format!(
                "{} and {} have no figure in common to compare (every run of a side must have it)",
                self.base.display(),
                self.new.display()
            )));
        }
        Console::beside(&self.files()).print(table(&self, &base, &new, &rows, mode));
        if let Some(path) = &self.junit {
            let verdicts: Vec<_> = rows.iter().map(junit_case).collect();
            output::write("--junit", path, crate::slo::junit("compare", &verdicts))?;
        }
        if let Some(path) = &self.report {
            let json = serde_json::json!({
                "command": "compare",
                "base": self.base,
                "new": self.new,
                "threshold": self.threshold,
                "confidence": self.confidence,
                "mode": mode.as_str(),
                "rows": rows,
            });
            output::write("--report", path, serde_json::to_string_pretty(&json)?)?;
        }
        if let Some(path) = &self.html {
            let page = crate::html::compare_page(
                &base.drawn(&self.base.display().to_string()),
                &new.drawn(&self.new.display().to_string()),
                &rows,
            );
            output::write("--html", path, page)?;
            output::written("comparison drawn in", path);
        }
        Ok(if rows.iter().any(Row::fails) {
            ExitCode::from(EXIT_WORSE)
        } else {
            ExitCode::SUCCESS
        })
    }
}

/// How `compare` judged: one run a side (a bootstrap over each run's
/// samples), or runs of `run --repeat` (a rank test over the runs).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    SingleRun,
    Runs {
        base: usize,
        new: usize,
        needed: usize,
    },
}

impl Mode {
    /// The table's line that says how the verdicts were reached.
    fn line(self, confidence: f64) -> String {
        match self {
            Mode::SingleRun => "mode: one run a side: a bootstrap over each run's samples (noise between runs is not seen; `run --repeat N` on both sides for a rank test over runs)\n".into(),
            Mode::Runs { base, new, needed } if base < needed || new < needed => format!(
                "mode: runs ({base} and {new}): too few runs for a rank test at {:.0}% confidence, which needs {needed} a side (`run --repeat {needed}`)\n",
                confidence * 100.0
            ),
            Mode::Runs { base, new, .. } => format!(
                "mode: runs ({base} and {new}): medians over the runs, a Mann-Whitney U test of each figure\n"
            ),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Mode::SingleRun => "single run",
            Mode::Runs { .. } => "runs",
        }
    }
}

/// Exit status of bad input (as of a usage error).
const EXIT_BAD_INPUT: u8 = 2;

/// Reports a report that cannot be compared, before anything is written.
fn bad_input(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(EXIT_BAD_INPUT)
}

/// A row as a JUnit test case: it fails when it is worse and counted.
fn junit_case(r: &Row) -> crate::slo::Verdict {
    crate::slo::Verdict {
        slo: r.metric.clone(),
        measured: Some(r.new),
        samples: None,
        pass: !r.fails(),
        reason: Some(describe(r)),
    }
}

/// `worse: 12.0 ms -> 24.1 ms (+101%, 95% interval +88%..+104%)`.
fn describe(r: &Row) -> String {
    let v = |x: f64| r.show(x);
    let mut s = format!("{}: {} -> {}", r.verdict.as_str(), v(r.base), v(r.new));
    let evidence = r.evidence();
    if !evidence.is_empty() {
        s += &format!(" ({evidence})");
    }
    s
}

fn table(args: &Args, base: &Report, new: &Report, rows: &[Row], mode: Mode) -> String {
    let what = if base.identity() == new.identity() {
        base.identity()
    } else {
        format!("{} vs {}", base.identity(), new.identity())
    };
    let mut t = format!(
        "compare {} -> {} ({what}; threshold {:.0}%, confidence {:.0}%)\n",
        args.base.display(),
        args.new.display(),
        args.threshold * 100.0,
        args.confidence * 100.0
    );
    t += &mode.line(args.confidence);
    t += &format!(
        "  {:<28} {:>11} {:>11} {:>11} {:>17}  verdict\n",
        "figure", "base", "new", "delta", "interval / test"
    );
    for r in rows {
        let latency = r.is_latency();
        let v = |x: f64| r.show(x);
        let delta = if latency {
            format!("{:+.1} ms", (r.new - r.base) * 1e3)
        } else {
            format!("{:+}", r.new - r.base)
        };
        let interval = r.evidence();
        let mut verdict = r.verdict.as_str().to_string();
        if r.fails() {
            verdict = verdict.to_uppercase();
        }
        if let Some(note) = r.note {
            verdict += &format!(" ({note})");
        }
        t += &format!(
            "  {:<28} {:>11} {:>11} {:>11} {:>17}  {verdict}\n",
            r.metric,
            v(r.base),
            v(r.new),
            delta,
            interval
        );
    }
    t += &verdict_line(rows);
    t
}

/// The table's last line: worse when a counted figure is worse, better when
/// none is and at least one is better, else nothing worse.
fn verdict_line(rows: &[Row]) -> String {
    if rows
        .iter()
        .any(|r| r.verdict == crate::verdicts::Verdict::TooFewRuns)
    {
        return "verdict: too few runs (nothing judged)\n".to_string();
    }
    let worse = rows.iter().filter(|r| r.fails()).count();
    let better = rows
        .iter()
        .filter(|r| r.counted && r.verdict == crate::verdicts::Verdict::Better)
        .count();
    match (worse, better) {
        (0, 0) => "verdict: nothing worse\n".to_string(),
        (0, better) => format!("verdict: better ({better} figure(s) better, none worse)\n"),
        (worse, _) => format!("verdict: {worse} figure(s) WORSE\n"),
    }
}

/// What a report says of the process that wrote it.
#[derive(Debug, Default)]
pub struct About {
    version: Option<String>,
    args: Option<Vec<String>>,
    destination: Option<String>,
    destination_version: Option<String>,
    started_at: Option<String>,
}

/// What `compare` needs of a report, whichever command wrote it.
#[derive(Debug)]
pub struct Report {
    /// `client` for client reports (run reports have no `command`).
    pub command: Option<String>,
    /// A run's scenario name.
    pub scenario: Option<String>,
    /// A run's seed (a string, or a number in older reports).
    pub seed: Option<u64>,
    /// A client's configuration.
    pub config: Option<serde_json::Value>,
    /// The version that wrote it, its arguments, its target and start
    /// (absent in older reports).
    pub about: About,
    /// What was measured (the first run's, with `--repeat`).
    pub measured: Measurements,
    /// With `run --repeat`: every run's figures.
    pub repeats: Option<Vec<crate::measurements::RunFigures>>,
}

/// A report's fields beside its measurements (read apart from them, so
/// that an error in the measurements says where it is).
#[derive(Deserialize)]
struct Head {
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    scenario: Option<String>,
    #[serde(default, with = "crate::seed::option")]
    seed: Option<u64>,
    #[serde(default)]
    config: Option<serde_json::Value>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    args: Option<Vec<String>>,
    #[serde(default)]
    destination: Option<String>,
    #[serde(default)]
    destination_version: Option<String>,
    #[serde(default)]
    started_at: Option<String>,
    #[serde(default)]
    repeats: Option<Vec<crate::measurements::RunFigures>>,
}

/// The largest report file read: a day's timeline and every change of a
/// long run are a few tens of MB.
const MAX_REPORT_BYTES: u64 = 256 << 20;

impl Report {
    /// Reads and checks a report file.
    pub fn read(path: &std::path::Path) -> Result<Self, String> {
        let cannot = |e: std::io::Error| format!("cannot read the report {}: {e}", path.display());
        let size = std::fs::metadata(path).map_err(cannot)?.len();
        if size > MAX_REPORT_BYTES {
            return Err(format!(
                "{} is {size} bytes, more than a report holds (at most {MAX_REPORT_BYTES}): give a report of `run --report` or `client --report`",
                path.display()
            ));
        }
        let text = std::fs::read_to_string(path).map_err(cannot)?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// Parses a report; `name` names it in errors.
    pub fn parse(name: &str, text: &str) -> Result<Self, String> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            format!(
                "{name} is not a JSON report (line {}, column {}): {e}",
                e.line(),
                e.column()
            )
        })?;
        Self::from_value(name, &value)
    }

    /// Checks a report already parsed as JSON; `name` names it in errors.
    pub fn from_value(name: &str, value: &serde_json::Value) -> Result<Self, String> {
        let obj = value
            .as_object()
            .ok_or_else(|| format!("{name} is not a report: expected a JSON object"))?;
        for key in ["streams", "update_latency", "errors"] {
            if !obj.contains_key(key) {
                return Err(format!(
                    "{name} is not a report of `run --report` or `client --report`: it has no `{key}`"
                ));
            }
        }
        let damaged = |e: &dyn std::fmt::Display| format!("{name} is a damaged report: {e}");
        let measured = serde_path_to_error::deserialize::<_, Measurements>(value)
            .map_err(|e| damaged(&format_args!("{}: {}", e.path(), e.inner())))?;
        let head = Head::deserialize(value).map_err(|e| damaged(&e))?;
        if let Some(runs) = &head.repeats
            && runs.len() > crate::verdicts::MAX_RUNS
        {
            return Err(damaged(&format_args!(
                "repeats: {} runs, more than `run --repeat` makes ({})",
                runs.len(),
                crate::verdicts::MAX_RUNS
            )));
        }
        Ok(Self {
            command: head.command,
            scenario: head.scenario,
            seed: head.seed,
            config: head.config,
            about: About {
                version: head.version,
                args: head.args,
                destination: head.destination,
                destination_version: head.destination_version,
                started_at: head.started_at,
            },
            measured,
            repeats: head.repeats.filter(|r| !r.is_empty()),
        })
    }

    /// Each run's figures: every run of `--repeat`, or the one run.
    fn runs(&self) -> Vec<std::collections::BTreeMap<String, f64>> {
        match &self.repeats {
            Some(runs) => runs.iter().map(|r| r.figures.clone()).collect(),
            None => vec![crate::verdicts::figures(&self.measured)],
        }
    }

    /// The report as the pictures draw it, labelled `label` and described.
    fn drawn(&self, label: &str) -> crate::html::Run<'_> {
        let a = &self.about;
        let target = a.destination.clone().or_else(|| {
            let c = self.config.as_ref()?;
            c.get("destination_addr")?.as_str().map(str::to_string)
        });
        crate::html::Run::new(label, &self.measured)
            .meta("version", a.version.as_deref().unwrap_or("not recorded"))
            .meta("command", self.identity())
            .meta(
                "arguments",
                a.args.as_ref().map(|v| v.join(" ")).unwrap_or_default(),
            )
            .meta("target", target.unwrap_or_default())
            .meta("controller", {
                let from_config = || {
                    let c = self.config.as_ref()?;
                    c.get("destination_version")?.as_str().map(str::to_string)
                };
                a.destination_version
                    .clone()
                    .or_else(from_config)
                    .unwrap_or_default()
            })
            .meta(
                "runs",
                self.repeats.as_ref().map_or(String::new(), |r| {
                    format!(
                        "{}: the verdicts are over every run, the charts draw the report's own",
                        r.len()
                    )
                }),
            )
            .meta("started", a.started_at.as_deref().unwrap_or_default())
    }

    /// What ran: `run`, or the command named in the report.
    fn command(&self) -> &str {
        self.command.as_deref().unwrap_or("run")
    }

    /// The client's scenario (built-in or file), when it named one.
    fn client_scenario(&self) -> Option<String> {
        let c = self.config.as_ref()?;
        c.get("scenario")
            .and_then(|v| v.as_str())
            .or_else(|| c.get("scenario_file").and_then(|v| v.as_str()))
            .map(str::to_string)
    }

    fn scenario_name(&self) -> Option<String> {
        self.scenario.clone().or_else(|| self.client_scenario())
    }

    /// `run small-oscillation seed 7`.
    fn identity(&self) -> String {
        let mut s = self.command().to_string();
        if let Some(n) = self.scenario_name() {
            s += &format!(" {n}");
        }
        if let Some(seed) = self.seed {
            s += &format!(" seed {seed}");
        }
        s
    }

    /// Whether the two reports measured the same thing.
    pub fn same_run_as(&self, other: &Report) -> Result<(), String> {
        if self.command() != other.command() {
            return Err(format!(
                "the reports come from different commands ({} and {})",
                self.command(),
                other.command()
            ));
        }
        if self.scenario_name() != other.scenario_name() {
            return Err(format!(
                "the reports are of different scenarios ({} and {})",
                self.scenario_name().as_deref().unwrap_or("none"),
                other.scenario_name().as_deref().unwrap_or("none")
            ));
        }
        if let (Some(a), Some(b)) = (self.seed, other.seed)
            && a != b
        {
            return Err(format!("the reports are of different seeds ({a} and {b})"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_take_percent_or_decimal() {
        assert_eq!(parse_fraction("10%").unwrap(), 0.1);
        assert_eq!(parse_fraction("0.25").unwrap(), 0.25);
        assert!(parse_fraction("ten").is_err());
        assert!(parse_fraction("-5%").is_err());
    }

    #[test]
    fn damaged_and_foreign_files_are_named_and_refused() {
        let e = Report::parse("a.json", "{\"streams\": 3,").unwrap_err();
        assert!(e.contains("a.json is not a JSON report (line 1"), "{e}");
        let e = Report::parse("b.json", "{\"hello\": 1}").unwrap_err();
        assert!(e.contains("b.json is not a report"), "{e}");
        let e = Report::parse(
            "c.json",
            "{\"streams\": 1, \"errors\": 0, \"update_latency\": {\"count\": \"x\"}}",
        )
        .unwrap_err();
        assert!(e.contains("c.json is a damaged report"), "{e}");
        // An old report (no histograms, no timeline) reads.
        let r = Report::parse(
            "old.json",
            "{\"scenario\": \"baseline\", \"seed\": 3, \"streams\": 1, \"errors\": 0, \
             \"update_latency\": {\"count\": 2, \"p50\": 0.01, \"p95\": 0.02, \"p99\": 0.02, \"p999\": 0.02, \"max\": 0.02}}",
        )
        .unwrap();
        assert_eq!(r.measured.update_latency.count, 2);
        assert_eq!(r.identity(), "run baseline seed 3");
    }

    #[test]
    fn different_scenarios_seeds_and_commands_are_refused() {
        let r = |s: &str| Report::parse("x", s).unwrap();
        let base = "\"streams\": 1, \"errors\": 0, \"update_latency\": {}";
        let a = r(&format!(
            "{{\"scenario\": \"baseline\", \"seed\": 1, {base}}}"
        ));
        let b = r(&format!(
            "{{\"scenario\": \"baseline\", \"seed\": 2, {base}}}"
        ));
        let c = r(&format!(
            "{{\"scenario\": \"red-line\", \"seed\": 1, {base}}}"
        ));
        let d = r(&format!("{{\"command\": \"client\", {base}}}"));
        assert!(a.same_run_as(&a).is_ok());
        assert!(a.same_run_as(&b).unwrap_err().contains("different seeds"));
        assert!(
            a.same_run_as(&c)
                .unwrap_err()
                .contains("different scenarios")
        );
        assert!(
            a.same_run_as(&d)
                .unwrap_err()
                .contains("different commands")
        );
    }
}
