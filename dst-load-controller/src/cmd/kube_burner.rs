//! `--kube-burner-dir`: a report's runs written as kube-burner's documents
//! ([`crate::kube_burner`]), read from the report as written, so that every
//! command with `--report` exports the same way.

use std::{collections::BTreeMap, path::Path};

use serde_json::Value;

use crate::kube_burner::{Documents, Job, run_uuid};

/// The runs of `report` (the JSON a command writes with `--report`) as
/// kube-burner jobs: each run of `run --repeat`, or the one run.
pub fn jobs(report: &Value) -> Result<Vec<Job>, String> {
    let parsed = super::compare::Report::from_value("the report", report)?;
    let str_of = |k: &str| report.get(k).and_then(Value::as_str).map(str::to_string);
    let args: Vec<String> = report
        .get("args")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let started_at = str_of("started_at").unwrap_or_default();
    let name = str_of("scenario")
        .or_else(|| str_of("command"))
        .unwrap_or_else(|| "run".to_string());
    let version = str_of("version").unwrap_or_default();
    let config = report
        .get("config")
        .or_else(|| report.get("plan"))
        .cloned()
        .unwrap_or(Value::Null);
    let mut labels = BTreeMap::from([("job".to_string(), name.clone())]);
    let destination_version = str_of("destination_version").or_else(|| {
        report
            .pointer("/config/destination_version")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    if let Some(v) = destination_version {
        labels.insert("destination_version".to_string(), v);
    }
    let job = |run: usize, started: String, ended: String, passed, figures, samples| {
        let mut labels = labels.clone();
        labels.insert("run".to_string(), run.to_string());
        Job {
            name: name.clone(),
            uuid: run_uuid(&started_at, &args, run),
            started_at: started,
            ended_at: ended,
            passed,
            version: version.clone(),
            figures,
            samples,
            labels,
            config: config.clone(),
        }
    };
    Ok(match &parsed.repeats {
        Some(runs) => runs
            .iter()
            .map(|r| {
                job(
                    r.run,
                    r.started_at.clone(),
                    r.ended_at.clone(),
                    Some(r.passed),
                    r.figures.clone(),
                    BTreeMap::new(),
                )
            })
            .collect(),
        None => {
            let passed = report
                .get("slos")
                .and_then(Value::as_array)
                .filter(|v| !v.is_empty())
                .map(|v| v.iter().all(|s| s["pass"] == Value::Bool(true)));
            let samples = crate::verdicts::latencies(&parsed.measured)
                .into_iter()
                .filter(|(_, p)| p.count > 0)
                .map(|(name, p)| (name.to_string(), p.count))
                .collect();
            vec![job(
                1,
                started_at.clone(),
                str_of("ended_at").unwrap_or_default(),
                passed,
                crate::verdicts::figures(&parsed.measured),
                samples,
            )]
        }
    })
}

/// Writes `report`'s documents into `dir`; says where on standard error.
pub fn export(dir: &Path, report: &Value) -> anyhow::Result<()> {
    let jobs = jobs(report).map_err(anyhow::Error::msg)?;
    let written = Documents::of(&jobs)
        .write(dir)
        .map_err(|e| anyhow::anyhow!("cannot write --kube-burner-dir {}: {e}", dir.display()))?;
    eprintln!(
        "kube-burner documents of {} run(s) written to {} ({} files)",
        jobs.len(),
        dir.display(),
        written.len()
    );
    Ok(())
}
