//! Scenario files through the binary: a built-in scenario printed with
//! `--print-scenario` runs as the built-in does, bad files exit 2 naming
//! the line and column before any side effect, and the client takes its
//! load and fault modes from a file.

use crate::support;

use std::{path::PathBuf, process::Command};

use dst_load_controller::mock::server::Behavior;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_dst-load-controller");

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("dst-scenario-{}-{name}", std::process::id()))
}

/// `run` on the mock with `flags` and short holds; returns the report.
fn run_report(flags: &[&str], name: &str) -> serde_json::Value {
    let report = temp(&format!("{name}.json"));
    let out = Command::new(BIN)
        .arg("run")
        .args(flags)
        .args([
            "--services",
            "2",
            "--streams-per-service",
            "2",
            "--connections",
            "1",
            "--min-hold",
            "300ms",
            "--max-hold",
            "300ms",
            "--jitter",
            "0s",
            "--duration",
            "1500ms",
            "--seed",
            "5",
            "--admin-addr",
            "127.0.0.1:0",
            "--slo",
            "errors==0",
        ])
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{flags:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    std::fs::remove_file(&report).unwrap();
    r
}

#[test]
fn a_printed_scenario_runs_as_the_built_in_does() {
    for name in ["rolling-restart", "statefulset"] {
        let out = Command::new(BIN)
            .args(["run", "--print-scenario", name])
            .output()
            .unwrap();
        assert!(out.status.success());
        let file = temp(&format!("{name}.yaml"));
        std::fs::write(&file, &out.stdout).unwrap();
        let built_in = run_report(&["--scenario", name], &format!("{name}-built-in"));
        let from_file = run_report(
            &["--scenario-file", file.to_str().unwrap()],
            &format!("{name}-file"),
        );
        std::fs::remove_file(&file).unwrap();
        // The same scenario, numbers and seed: the same plan and streams.
        // (How many changes fit in the duration depends on the machine's
        // timing, so each run is checked on its own.)
        assert_eq!(built_in["scenario"], name);
        assert_eq!(from_file["scenario"], name);
        assert_eq!(built_in["plan"], from_file["plan"], "{name}");
        assert_eq!(from_file["plan"]["seed"], "5");
        assert_eq!(built_in["streams"], from_file["streams"], "{name}");
        for r in [&built_in, &from_file] {
            assert!(r["changes"].as_u64().unwrap() >= 2, "{name}: {r}");
            assert_eq!(r["updates_sent"], r["updates_received"], "{name}");
            assert_eq!(r["streams_unconverged"], 0, "{name}");
        }
    }
}

#[test]
fn the_schema_printed_is_the_one_published() {
    let out = Command::new(BIN)
        .args(["run", "--print-scenario-schema"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let published = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/scenario.schema.json"
    ))
    .unwrap();
    assert_eq!(out.stdout, published);
    let schema: serde_json::Value = serde_json::from_slice(&published).unwrap();
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(
        schema["required"],
        serde_json::json!(["duration", "services"])
    );
}

#[test]
fn bad_files_exit_2_with_line_and_column_and_no_side_effects() {
    let cases: [(&str, &str, &str); 11] = [
        (
            "duration: 0s\nservices:\n  stable: {count: 1, endpoints: 2}\n",
            ": ",
            "duration must be above zero (e.g. 60s)",
        ),
        (
            "duration: 10s\nservices:\n  stable: {count: 1, endpoints: 2}\nclients:\n  streams-per-service: [1, 2]\n",
            ":5:",
            "expected one value (a number, a word or a duration such as 10s), not a list or a map",
        ),
        (
            "duration: 10s\nservices:\n  stable: {count: 1, endpoints: 2}\nclients:\n  streams-per-service: 100000000\n",
            ":5:",
            "streams-per-service 100000000 is more than one client holds: at most 1000000 streams",
        ),
        (
            "duration: 10s\nservices:\n  stable: {count: 1, endpoints: 2}\nclients:\n  streams-per-service: 2\n  connections: 1000000\n",
            ":5:",
            "connections 1000000 is more than one client can open: at most 65535",
        ),
        (
            "duration: 10s\nservices:\n  stable: {count: 4096, endpoints: 1}\nclients:\n  streams-per-service: 1000\n",
            ": ",
            "4096 services x 1000 streams is 4096000 streams, more than one client holds",
        ),
        (
            "duration: 10s\nservices:\n  stable: {count: 1, endpoints: 2}\n  oscilate: {count: 1}\n",
            ":4:3: ",
            "unknown field `oscilate`",
        ),
        (
            "duration: 10s\nservices:\n  stable: {count: 1, endpoints: 2}\nclients:\n  faults:\n    stuck-percent: 150\n",
            ":6:",
            "percentages (0-100)",
        ),
        (
            "duration: 10s\nservices:\n  stable: {count: 1, endpoints: 2}\nclients:\n  streams: 5\n",
            ":5:3: ",
            "unknown field `streams`",
        ),
        (
            "duration: 10s\nservices:\n  restart: {count: 1, endpoints: 0}\n",
            ":3:",
            "endpoints must be at least 1",
        ),
        (
            "duration: 10s\nservices:\n  stable: {count: 1, endpoints: 2}\nslos: [\"p95<1s\"]\n",
            ":4:",
            "invalid SLO 'p95<1s'",
        ),
        (
            "duration: soon\nservices:\n  stable: {count: 1, endpoints: 2}\n",
            ":1:",
            "duration",
        ),
    ];
    let report = temp("never.json");
    for (i, (doc, at, what)) in cases.into_iter().enumerate() {
        let file = temp(&format!("bad-{i}.yaml"));
        std::fs::write(&file, doc).unwrap();
        for cmd in ["run", "churn", "client"] {
            let mut c = Command::new(BIN);
            c.args([cmd, "--scenario-file", file.to_str().unwrap()]);
            if cmd == "run" {
                c.arg("--report").arg(&report);
            }
            let out = c.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd} {doc}: {stderr}");
            let want = format!("{}{at}", file.display());
            assert!(stderr.contains(&want), "{cmd}: no {want} in {stderr}");
            assert!(stderr.contains(what), "{cmd}: no {what} in {stderr}");
        }
        std::fs::remove_file(&file).unwrap();
    }
    assert!(!report.exists(), "a refused run wrote its report");
    // A file and the flags it replaces are one or the other.
    let file = temp("good.yaml");
    std::fs::write(
        &file,
        "duration: 1s\nservices:\n  stable: {count: 1, endpoints: 1}\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["churn", "--stable-services", "2", "--scenario-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be used with"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BIN)
        .args([
            "client",
            "--destination-addr",
            "127.0.0.1:1",
            "--scenario-file",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("give --namespace"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&file).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_takes_its_load_faults_and_slos_from_a_file() {
    let mock = Mock::start(Behavior::default()).await;
    // The file's services in namespace `ns`: 2 stable services, and the
    // first pod of a StatefulSet of 1..2 watched by its own name.
    let authorities = [
        "stable-svc-0.ns.svc.cluster.local:8080",
        "stable-svc-1.ns.svc.cluster.local:8080",
        "sts-svc-0.ns.svc.cluster.local:8080",
        "sts-0-0.sts-svc-0.ns.svc.cluster.local:8080",
    ];
    for (i, a) in authorities.iter().enumerate() {
        mock.handle
            .set(&a.parse().unwrap(), addrs(&[&format!("10.0.{i}.1:8080")]));
    }
    let file = temp("client.yaml");
    std::fs::write(
        &file,
        "duration: 1h\nservices:\n  stable: {count: 2, endpoints: 1}\n  \
         statefulset: {count: 1, min-endpoints: 1, max-endpoints: 2}\n\
         clients:\n  streams-per-service: 10\n  connections: 2\n  faults: {stuck-percent: 10}\n\
         slos: [errors==0, resets==0]\n",
    )
    .unwrap();
    let report = temp("client.json");
    let out = tokio::process::Command::new(BIN)
        .args(["client", "--destination-addr", &mock.addr.to_string()])
        .args(["--namespace", "ns", "--duration", "2s"])
        .args(["--admin-addr", "127.0.0.1:0", "--scenario-file"])
        .arg(&file)
        .arg("--report")
        .arg(&report)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The file's SLOs were judged (no --slo given).
    assert!(stdout.contains("SLO PASS errors==0"), "{stdout}");
    assert!(stdout.contains("SLO PASS resets==0"), "{stdout}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["config"]["streams_per_service"], 10);
    assert_eq!(r["config"]["connections"], 2);
    assert_eq!(r["config"]["scenario_file"], file.to_str().unwrap());
    let mut watched: Vec<&str> = r["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    watched.sort_unstable();
    let mut want = authorities.to_vec();
    want.sort_unstable();
    assert_eq!(watched, want);
    // 40 streams; every 10 consecutive has exactly one stuck.
    assert_eq!(r["by_class"]["stuck"]["streams"], 4, "{}", r["by_class"]);
    assert_eq!(r["by_class"]["healthy"]["streams"], 36, "{}", r["by_class"]);
    std::fs::remove_file(&report).unwrap();
    std::fs::remove_file(&file).unwrap();
    mock.stop().await;
}

#[test]
fn a_scenarios_profile_streams_run_beside_its_get_streams() {
    let file = temp("profiles.yaml");
    std::fs::write(
        &file,
        "duration: 2s\nservices:\n  stable: {count: 2, endpoints: 2}\nclients:\n  \
         streams-per-service: 2\n  profile-streams-per-service: 3\n",
    )
    .unwrap();
    let r = run_report(&["--scenario-file", file.to_str().unwrap()], "profiles");
    std::fs::remove_file(&file).unwrap();
    assert_eq!(r["plan"]["clients"]["profile-streams-per-service"], 3);
    // Two services, three profile streams each, one (default) profile on
    // each: the mock changes no profile.
    assert_eq!(r["profile_streams_created"], 6, "{r}");
    assert_eq!(r["profile_updates_received"], 6, "{r}");
    assert_eq!(r["errors"], 0);
}

/// A scenario's profile changes on the mock are its profile streams' truth:
/// every change is shown once on every stream, timed from the moment the
/// mock made it, and no stream is left stale.
#[test]
fn a_scenarios_profile_changes_reach_every_profile_stream_on_the_mock() {
    let file = temp("profile-changes.yaml");
    std::fs::write(
        &file,
        "duration: 5s\nsettle: 20s\nservices:\n  stable: {count: 2, endpoints: 2}\nclients:\n  \
         streams-per-service: 1\n  profile-streams-per-service: 3\n\
         profiles: {routes: 2, change-interval: 2s}\n",
    )
    .unwrap();
    let report = temp("profile-changes.json");
    let out = Command::new(BIN)
        .args(["run", "--scenario-file", file.to_str().unwrap()])
        .args(["--seed", "3", "--admin-addr", "127.0.0.1:0"])
        .args(["--slo", "profile_stale_streams==0", "--report"])
        .arg(&report)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    std::fs::remove_file(&report).unwrap();
    std::fs::remove_file(&file).unwrap();
    assert_eq!(r["plan"]["profiles"]["change-interval"], "2s", "{r}");
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} in {r}"));
    // Changes at 2 s and 4 s of a 5 s run: one round at least on a busy
    // machine, every round changing both services.
    let changes = n("profile_changes");
    assert!(
        changes >= 2 && changes % 2 == 0,
        "{changes} profile changes"
    );
    // Each stream got its first profile, then one per change of its service.
    assert_eq!(n("profile_streams_created"), 6);
    assert_eq!(n("profile_updates_received"), 6 + changes * 3, "{r}");
    // Every change timed exactly once on each of its service's 3 streams.
    let timed = &r["profile_update_latency"];
    assert_eq!(timed["count"].as_u64(), Some(changes * 3), "{timed}");
    assert!(timed["p50"].as_f64().unwrap() > 0.0, "{timed}");
    // Judged, and none stale (the report leaves out a zero count).
    assert_eq!(r["slos"][0]["slo"], "profile_stale_streams==0", "{r}");
    assert_eq!(r["slos"][0]["pass"], true, "{r}");
    assert!(r.get("profile_stale_streams").is_none(), "{r}");
    assert!(stdout.contains("profile change -> shown"), "{stdout}");
    assert!(
        stdout.contains(&format!("profile changes {changes}")),
        "{stdout}"
    );
}
