//! A report's figures as kube-burner's documents, so that tools built for
//! kube-burner's results (change-point detection over many runs, run
//! comparison, its Grafana dashboards) read ours.
//!
//! The layout is kube-burner's `local` indexer's: one file per `metricName`
//! (`{metricName}.json`), each a JSON array of documents, every document
//! carrying the run's `uuid`, its `metricName`, a `timestamp` and a
//! `jobName`. Per run ([`Job`], one per `run --repeat` run):
//!
//! - `jobSummary`: the run's start (`timestamp`), `endTimestamp`,
//!   `elapsedTime` (seconds), whether every SLO held (`passed`), the tool's
//!   `version`, and `jobConfig` (the report's configuration);
//! - `destinationLatencyQuantilesMeasurement`: one document per latency
//!   figure (`quantileName`: `update_latency`, `convergence_latency`,
//!   `fanout_completion`, `kubernetes_leg`, `destination_leg`,
//!   `profile_update_latency`) with `P50`, `P95`, `P99`, `P999` and `max` in
//!   milliseconds (kube-burner's latency unit) and the sample count when known;
//! - one metric per count figure (`errors`, `resets`, `staleStreams`,
//!   `unconvergedStreams`, `profileStaleStreams`): a `value`.
//!
//! Every measurement document has `labels`: the destination controller's
//! version, the scenario or command, and the run's place among repeats.
//! Pure: the caller writes the files ([`Documents::write`]).

use std::{collections::BTreeMap, path::Path};

use serde_json::{Value, json};

/// The `metricName` of the latency documents.
pub const LATENCY_METRIC: &str = "destinationLatencyQuantilesMeasurement";

/// The `metricName` of the run summaries.
pub const SUMMARY_METRIC: &str = "jobSummary";

/// The namespace of the runs' UUIDs (version 5: a report exported twice
/// gives the same UUIDs).
const UUID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6c1d_2f0e_8a3b_4c59_9e71_d5a0_42b8_f613);

/// One run of a report.
#[derive(Clone, Debug)]
pub struct Job {
    /// kube-burner's `jobName`: the scenario, or the command.
    pub name: String,
    /// The run's UUID ([`run_uuid`]).
    pub uuid: uuid::Uuid,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it ended (RFC 3339).
    pub ended_at: String,
    /// Whether every SLO held (`None`: none judged).
    pub passed: Option<bool>,
    /// The tool's version.
    pub version: String,
    /// The run's figures, as `compare` names them (`update_latency.p50` in
    /// seconds, `errors`...).
    pub figures: BTreeMap<String, f64>,
    /// Each latency's sample count, when known (a single run's report).
    pub samples: BTreeMap<String, u64>,
    /// Labels of every measurement document.
    pub labels: BTreeMap<String, String>,
    /// The report's configuration (`jobConfig`).
    pub config: Value,
}

/// The UUID of run `run` (from 1) of the report whose first run started at
/// `started_at` with `args`: the same report gives the same UUIDs, two
/// reports (two starts) different ones.
pub fn run_uuid(started_at: &str, args: &[String], run: usize) -> uuid::Uuid {
    let name = format!("{started_at}\u{0}{}\u{0}{run}", args.join("\u{0}"));
    uuid::Uuid::new_v5(&UUID_NAMESPACE, name.as_bytes())
}

/// Documents by `metricName`, each name's in the order of the runs.
#[derive(Debug, Default, PartialEq)]
pub struct Documents(pub BTreeMap<String, Vec<Value>>);

/// The statistics of a latency document: our name, then kube-burner's key.
const QUANTILES: [(&str, &str); 5] = [
    ("p50", "P50"),
    ("p95", "P95"),
    ("p99", "P99"),
    ("p999", "P999"),
    ("max", "max"),
];

/// A count figure's `metricName`: its name in camelCase
/// (`stale_streams` is `staleStreams`).
fn count_metric(figure: &str) -> String {
    let mut out = String::with_capacity(figure.len());
    let mut upper = false;
    for c in figure.chars() {
        match c {
            '_' => upper = true,
            c if upper => {
                out.push(c.to_ascii_uppercase());
                upper = false;
            }
            c => out.push(c),
        }
    }
    out
}

impl Documents {
    /// Every run's documents.
    pub fn of(jobs: &[Job]) -> Self {
        let mut out = Self::default();
        for job in jobs {
            out.add(job);
        }
        out
    }

    fn push(&mut self, metric: &str, doc: Value) {
        self.0.entry(metric.to_string()).or_default().push(doc);
    }

    fn add(&mut self, job: &Job) {
        let uuid = job.uuid.to_string();
        let elapsed = match (
            job.started_at.parse::<jiff::Timestamp>(),
            job.ended_at.parse::<jiff::Timestamp>(),
        ) {
            (Ok(a), Ok(b)) => (b - a).total(jiff::Unit::Second).ok(),
            _ => None,
        };
        let mut summary = json!({
            "timestamp": job.started_at,
            "endTimestamp": job.ended_at,
            "uuid": uuid,
            "metricName": SUMMARY_METRIC,
            "jobName": job.name,
            "version": job.version,
            "jobConfig": job.config,
            "labels": job.labels,
        });
        if let Some(s) = elapsed {
            summary["elapsedTime"] = json!(s);
        }
        if let Some(p) = job.passed {
            summary["passed"] = json!(p);
        }
        self.push(SUMMARY_METRIC, summary);

        // Latency names in the figures' order, each once.
        let mut latencies: Vec<&str> = job
            .figures
            .keys()
            .filter_map(|k| k.rsplit_once('.').map(|(name, _)| name))
            .collect();
        latencies.dedup();
        for name in latencies {
            let mut doc = json!({
                "timestamp": job.ended_at,
                "uuid": uuid,
                "metricName": LATENCY_METRIC,
                "jobName": job.name,
                "quantileName": name,
                "labels": job.labels,
            });
            for (ours, theirs) in QUANTILES {
                if let Some(s) = job.figures.get(&format!("{name}.{ours}")) {
                    doc[theirs] = json!(s * 1e3);
                }
            }
            if let Some(n) = job.samples.get(name) {
                doc["samples"] = json!(n);
            }
            self.push(LATENCY_METRIC, doc);
        }
        // The counts: the figures that are not a latency's statistic.
        for (figure, v) in job.figures.iter().filter(|(k, _)| !k.contains('.')) {
            let metric = count_metric(figure);
            let doc = json!({
                "timestamp": job.ended_at,
                "uuid": uuid,
                "metricName": metric,
                "jobName": job.name,
                "value": v,
                "labels": job.labels,
            });
            self.push(&metric, doc);
        }
    }

    /// Writes `{metricName}.json` for every metric into `dir` (made if
    /// missing); returns the files written.
    pub fn write(&self, dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut written = Vec::new();
        for (metric, docs) in &self.0 {
            let path = dir.join(format!("{metric}.json"));
            std::fs::write(&path, serde_json::to_vec_pretty(docs)?)?;
            written.push(path);
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(run: usize, p50: f64) -> Job {
        let figures = BTreeMap::from([
            ("update_latency.p50".to_string(), p50),
            ("update_latency.p95".to_string(), 0.02),
            ("update_latency.p99".to_string(), 0.03),
            ("update_latency.p999".to_string(), 0.04),
            ("update_latency.max".to_string(), 0.05),
            ("fanout_completion.p50".to_string(), 0.1),
            ("fanout_completion.max".to_string(), 0.2),
            ("errors".to_string(), 0.0),
            ("stale_streams".to_string(), 3.0),
        ]);
        Job {
            name: "steady".into(),
            uuid: run_uuid("2026-12-07T00:00:00Z", &["run".into()], run),
            started_at: "2026-12-07T00:00:00Z".into(),
            ended_at: "2026-12-07T00:01:30.5Z".into(),
            passed: Some(run == 1),
            version: "0.1.0".into(),
            figures,
            samples: BTreeMap::from([("update_latency".to_string(), 1200)]),
            labels: BTreeMap::from([("run".to_string(), run.to_string())]),
            config: json!({"seed": 7}),
        }
    }

    #[test]
    fn every_run_has_a_summary_a_quantile_document_per_latency_and_a_value_per_count() {
        let docs = Documents::of(&[job(1, 0.01), job(2, 0.012)]);
        let names: Vec<&str> = docs.0.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [LATENCY_METRIC, "errors", SUMMARY_METRIC, "staleStreams"]
        );
        let summaries = &docs.0[SUMMARY_METRIC];
        assert_eq!(summaries.len(), 2);
        assert_eq!(summaries[0]["elapsedTime"], json!(90.5));
        assert_eq!(summaries[0]["passed"], json!(true));
        assert_eq!(summaries[1]["passed"], json!(false));
        assert_eq!(summaries[0]["jobConfig"]["seed"], json!(7));
        assert_ne!(summaries[0]["uuid"], summaries[1]["uuid"]);

        // Two latencies a run, in milliseconds, their stats as given.
        let lat = &docs.0[LATENCY_METRIC];
        assert_eq!(lat.len(), 4);
        let update = &lat[1];
        assert_eq!(update["quantileName"], "update_latency");
        assert_eq!(update["uuid"], summaries[0]["uuid"]);
        for (key, ms) in [
            ("P50", 10.0),
            ("P95", 20.0),
            ("P99", 30.0),
            ("P999", 40.0),
            ("max", 50.0),
        ] {
            let v = update[key].as_f64().unwrap();
            assert!((v - ms).abs() < 1e-9, "{key}: {v}");
        }
        assert_eq!(update["samples"], json!(1200));
        assert_eq!(update["labels"]["run"], "1");
        let fanout = &lat[0];
        assert_eq!(fanout["quantileName"], "fanout_completion");
        assert!(fanout.get("P95").is_none() && fanout.get("samples").is_none());
        assert_eq!(lat[3]["P50"].as_f64().unwrap().round(), 12.0);

        let stale = &docs.0["staleStreams"];
        assert_eq!(stale[1]["value"], json!(3.0));
        assert_eq!(stale[1]["metricName"], "staleStreams");
        assert_eq!(stale[1]["uuid"], summaries[1]["uuid"]);
    }

    #[test]
    fn count_metrics_are_their_figures_in_camel_case() {
        for (figure, metric) in [
            ("errors", "errors"),
            ("resets", "resets"),
            ("stale_streams", "staleStreams"),
            ("unconverged_streams", "unconvergedStreams"),
            ("profile_stale_streams", "profileStaleStreams"),
        ] {
            assert_eq!(count_metric(figure), metric);
        }
    }

    #[test]
    fn a_report_exported_twice_gives_the_same_uuids_and_two_reports_different_ones() {
        let args = ["run".to_string(), "--seed".into(), "1".into()];
        let a = run_uuid("2026-12-07T00:00:00Z", &args, 1);
        assert_eq!(a, run_uuid("2026-12-07T00:00:00Z", &args, 1));
        assert_ne!(a, run_uuid("2026-12-07T00:00:00Z", &args, 2));
        assert_ne!(a, run_uuid("2026-12-07T00:05:00Z", &args, 1));
        assert_eq!(a.get_version_num(), 5);
    }

    #[test]
    fn the_files_are_named_after_their_metric_and_hold_json_arrays() {
        let dir = std::env::temp_dir().join(format!("kb-docs-{}", std::process::id()));
        let written = Documents::of(&[job(1, 0.01)]).write(&dir).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "destinationLatencyQuantilesMeasurement.json",
                "errors.json",
                "jobSummary.json",
                "staleStreams.json"
            ]
        );
        let docs: Vec<Value> =
            serde_json::from_slice(&std::fs::read(dir.join("jobSummary.json")).unwrap()).unwrap();
        assert_eq!(docs.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
