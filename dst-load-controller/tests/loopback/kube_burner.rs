//! `--kube-burner-dir`: a report's runs as kube-burner's documents, checked
//! against the report written beside them by the same command.

use std::{collections::BTreeSet, path::PathBuf, process::Command};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_dst-load-controller");

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("dst-kb-{}-{name}", std::process::id()))
}

fn docs(dir: &std::path::Path, metric: &str) -> Vec<Value> {
    let path = dir.join(format!("{metric}.json"));
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap()
}

/// `run --repeat 2 --kube-burner-dir`: a summary per run with its own UUID
/// and times, and every run's figures as in the report's `repeats`
/// (latencies in milliseconds), in kube-burner's `local` layout.
#[test]
fn each_repeated_run_is_a_kube_burner_job_with_the_reports_figures() {
    let (report, dir) = (temp("rep.json"), temp("docs"));
    let out = crate::support::short_run("5", "500ms", "2s")
        .args(["--admin-addr", "127.0.0.1:0", "--repeat", "2"])
        .arg("--report")
        .arg(&report)
        .arg("--kube-burner-dir")
        .arg(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "kube-burner documents of 2 run(s) written to {}",
            dir.display()
        )),
        "{stderr}"
    );
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let repeats = r["repeats"].as_array().unwrap();
    assert_eq!(repeats.len(), 2);

    let files: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for f in [
        "jobSummary.json",
        "destinationLatencyQuantilesMeasurement.json",
        "errors.json",
        "staleStreams.json",
    ] {
        assert!(files.contains(f), "{f} missing: {files:?}");
    }

    let summaries = docs(&dir, "jobSummary");
    assert_eq!(summaries.len(), 2);
    let uuids: BTreeSet<&str> = summaries
        .iter()
        .map(|s| s["uuid"].as_str().unwrap())
        .collect();
    assert_eq!(uuids.len(), 2, "one UUID per run");
    let latencies = docs(&dir, "destinationLatencyQuantilesMeasurement");
    let errors = docs(&dir, "errors");
    for (run, (s, rep)) in summaries.iter().zip(repeats).enumerate() {
        assert_eq!(s["metricName"], "jobSummary");
        assert_eq!(s["jobName"], "small-oscillation");
        assert_eq!(s["timestamp"], rep["started_at"]);
        assert_eq!(s["endTimestamp"], rep["ended_at"]);
        assert_eq!(s["passed"], rep["passed"]);
        assert_eq!(s["labels"]["run"], (run + 1).to_string());
        assert!(s["elapsedTime"].as_f64().unwrap() >= 2.0, "{s}");
        assert_eq!(s["jobConfig"], r["plan"]);
        let uuid = &s["uuid"];
        // Every latency figure of the run, once, in milliseconds.
        let figures = rep["figures"].as_object().unwrap();
        let mine: Vec<&Value> = latencies.iter().filter(|d| d["uuid"] == *uuid).collect();
        let names: BTreeSet<&str> = figures
            .keys()
            .filter_map(|k| k.rsplit_once('.').map(|(n, _)| n))
            .collect();
        assert_eq!(mine.len(), names.len(), "{names:?}");
        let update = mine
            .iter()
            .find(|d| d["quantileName"] == "update_latency")
            .expect("update latency");
        for (stat, key) in [("p50", "P50"), ("p99", "P99"), ("max", "max")] {
            let want = figures[&format!("update_latency.{stat}")].as_f64().unwrap() * 1e3;
            let got = update[key].as_f64().unwrap();
            assert!((got - want).abs() < 1e-9, "{key}: {got} != {want}");
        }
        let e: Vec<&Value> = errors.iter().filter(|d| d["uuid"] == *uuid).collect();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0]["value"], figures["errors"]);
    }
    std::fs::remove_file(&report).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A file where the folder should be: exit 2 before anything runs, naming
/// the flag and the fix; no report written.
#[test]
fn a_kube_burner_dir_that_is_a_file_is_refused_before_the_run() {
    let (report, file) = (temp("never.json"), temp("a-file"));
    std::fs::write(&file, "x").unwrap();
    let out = Command::new(BIN)
        .args(["run", "--scenario", "small-oscillation", "--duration", "1s"])
        .arg("--report")
        .arg(&report)
        .arg("--kube-burner-dir")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "--kube-burner-dir {}: is a file; give a folder",
            file.display()
        )),
        "{stderr}"
    );
    assert!(!report.exists());
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
    std::fs::remove_file(&file).unwrap();
}
