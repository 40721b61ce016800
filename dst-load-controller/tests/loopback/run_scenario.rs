//! `run` end to end, as a user runs it: a short scenario against the
//! embedded mock, with the report's numbers checked against what the mock sent.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_dst-load-controller");

#[test]
fn a_short_scenario_reports_what_the_mock_sent() {
    let dir = std::env::temp_dir().join(format!("dst-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("report.json");
    let out = Command::new(BIN)
        .args([
            "run",
            "--scenario",
            "small-oscillation",
            "--services",
            "3",
            "--min-endpoints",
            "2",
            "--max-endpoints",
            "6",
            "--streams-per-service",
            "4",
            "--connections",
            "2",
            "--min-hold",
            "300ms",
            "--max-hold",
            "400ms",
            "--jitter",
            "50ms",
            "--duration",
            "3s",
            "--seed",
            "7",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("change -> converged"), "{stdout}");

    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} in {r}"));
    // Seeds are strings: exact for every u64 in any JSON reader.
    assert_eq!(r["seed"], "7");
    assert_eq!(n("streams"), 12);
    assert_eq!(n("streams_created"), 12);
    assert_eq!(n("errors"), 0);
    // Every update the mock sent was received and counted.
    assert_eq!(n("updates_received"), n("updates_sent"));
    // 3 s of 300-400 ms holds: every service changed several times.
    let changes = n("changes");
    assert!(changes >= 6, "{changes} changes");
    // Changes of one service are at least 300 ms apart: each one reached all
    // 4 streams before the next, and the settle period let the last finish.
    assert_eq!(n("streams_unconverged"), 0);
    assert_eq!(n("fanouts_superseded"), 0);
    assert_eq!(n("fanouts_completed"), changes);
    let conv = &r["convergence_latency"];
    assert_eq!(conv["count"].as_u64().unwrap(), changes * 4);
    assert_eq!(r["update_latency"]["count"].as_u64().unwrap(), changes * 4);
    assert_eq!(
        r["fanout_completion"]["count"].as_u64().unwrap(),
        n("fanouts_completed")
    );
    let (p50, max) = (conv["p50"].as_f64().unwrap(), conv["max"].as_f64().unwrap());
    assert!(p50 > 0.0 && p50 <= max, "{conv}");
    // A change on 4 streams takes far less than a hold on loopback; anything
    // near the hold means the measurement is broken, not slow.
    assert!(
        r["fanout_completion"]["max"].as_f64().unwrap() < 0.3,
        "{}",
        r["fanout_completion"]
    );
    // The scenario's default SLOs (the plan's success criteria) were judged and held.
    let slos = r["slos"].as_array().unwrap();
    assert_eq!(slos.len(), 5, "{}", r["slos"]);
    assert!(slos.iter().all(|v| v["pass"] == true), "{}", r["slos"]);
    assert!(
        stdout.contains("SLO PASS update_latency.p95<500ms"),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn short_run(max_endpoints: &str, extra: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args([
            "run",
            "--services",
            "1",
            "--min-endpoints",
            "1",
            "--max-endpoints",
            max_endpoints,
            "--streams-per-service",
            "2",
            "--min-hold",
            "200ms",
            "--max-hold",
            "200ms",
            "--jitter",
            "0s",
            "--duration",
            "1s",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn a_failed_slo_exits_3_with_a_junit_failure() {
    let junit = std::env::temp_dir().join(format!("dst-run-junit-{}.xml", std::process::id()));
    let out = short_run(
        "3",
        &[
            "--slo",
            "update_latency.p95<1us",
            "--slo",
            "errors==0",
            "--junit",
            junit.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("SLO FAIL update_latency.p95<1us (measured"),
        "{stdout}"
    );
    assert!(stdout.contains("SLO PASS errors==0"), "{stdout}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("tests=\"2\" failures=\"1\""), "{xml}");
    std::fs::remove_file(&junit).unwrap();
}

#[test]
fn a_run_without_samples_fails_loudly() {
    // No churn: nothing to time, so a latency SLO cannot pass.
    let out = short_run(
        "1",
        &["--scenario", "baseline", "--slo", "update_latency.p95<1s"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("too few samples to judge: 0"), "{stdout}");
}

/// The status line of `GET path` on `addr`, or None when nothing listens.
fn http_status(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).ok()?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    conn.read_to_string(&mut response).ok()?;
    response.lines().next().map(str::to_string)
}

#[test]
fn run_is_ready_once_every_stream_is_answered() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--services",
            "2",
            "--min-endpoints",
            "1",
            "--max-endpoints",
            "3",
            "--streams-per-service",
            "2",
            "--duration",
            "6s",
            "--admin-addr",
            &addr,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut statuses = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline && child.try_wait().unwrap().is_none() {
        if let Some(s) = http_status(&addr, "/ready") {
            let ok = s.contains(" 200 ");
            statuses.push(s);
            if ok {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let status = child.wait().unwrap();
    assert!(
        statuses.last().is_some_and(|s| s.contains(" 200 ")),
        "/ready never answered 200 during the run: {statuses:?}"
    );
    assert!(status.success());
}

/// `run --scenario X` on the mock with short holds; returns the report.
fn mock_run(scenario: &str, flags: &[&str]) -> serde_json::Value {
    let report =
        std::env::temp_dir().join(format!("dst-run-{scenario}-{}.json", std::process::id()));
    let out = Command::new(BIN)
        .args(["run", "--scenario", scenario])
        .args(flags)
        .args([
            "--connections",
            "1",
            "--min-hold",
            "300ms",
            "--max-hold",
            "300ms",
            "--jitter",
            "0s",
            "--duration",
            "2s",
            "--seed",
            "1",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    std::fs::remove_file(&report).unwrap();
    r
}

#[test]
fn the_rolling_restart_scenario_replaces_every_address_on_the_mock() {
    let r = mock_run(
        "rolling-restart",
        &[
            "--services",
            "2",
            "--min-endpoints",
            "3",
            "--streams-per-service",
            "3",
        ],
    );
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} in {r}"));
    // 2 rolled services and 1 ephemeral one (the scenario's 10 and 2, the
    // ephemeral keeping its share of the rolled), 3 streams each.
    assert_eq!(r["plan"]["services"]["restart"]["count"], 2);
    assert_eq!(r["plan"]["services"]["ephemeral"]["count"], 1);
    assert_eq!(n("streams"), 9);
    let fanouts = |pattern: &str| {
        r["by_pattern"][pattern]["fanout_completion"]["count"]
            .as_u64()
            .unwrap_or_else(|| panic!("{pattern} in {r}"))
    };
    let (rolls, lifecycle) = (fanouts("restart"), fanouts("ephemeral"));
    // Rolls every 300 ms from 300 ms in, for 2 s: several per service; the
    // ephemeral service was deleted 600 ms in and back 150 ms later, at least.
    assert!(rolls >= 4, "{rolls} rolls");
    assert!(lifecycle >= 2, "{lifecycle} deletions and returns");
    assert_eq!(n("changes"), rolls + lifecycle);
    // Every roll is one Add of 3 new addresses and one Remove of the 3 old
    // ones on each of the service's 3 streams; a deletion is one Remove of
    // everything and a return one Add, on each of 3 streams; after one
    // first answer per stream.
    assert_eq!(n("updates_sent"), 9 + rolls * 2 * 3 + lifecycle * 3, "{r}");
    assert_eq!(n("updates_received"), n("updates_sent"));
    assert_eq!(n("fanouts_completed"), n("changes"));
    assert_eq!(
        r["convergence_latency"]["count"].as_u64(),
        Some(n("changes") * 3)
    );
    assert_eq!(n("streams_unconverged"), 0);
    assert_eq!(n("streams_reset"), 0);
    assert_eq!(r["stale_streams"], 0);
    let slos = r["slos"].as_array().unwrap();
    assert_eq!(slos.len(), 5);
    assert!(slos.iter().all(|v| v["pass"] == true), "{}", r["slos"]);
}

#[test]
fn the_statefulset_scenario_watches_each_pod_by_name_on_the_mock() {
    let r = mock_run(
        "statefulset",
        &[
            "--services",
            "2",
            "--min-endpoints",
            "2",
            "--max-endpoints",
            "3",
            "--streams-per-service",
            "2",
        ],
    );
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} in {r}"));
    assert_eq!(
        r["plan"]["services"]["statefulset"],
        serde_json::json!({"count": 2, "min-endpoints": 2, "max-endpoints": 3})
    );
    // Each service and its first 2 pods by name: 6 authorities, 2 streams each.
    assert_eq!(n("streams"), 12);
    assert_eq!(n("streams_created"), 12);
    let changes = n("changes");
    assert!(changes >= 4, "{changes} scales");
    // Only the services scale: the pods watched by name stay, and every
    // change reached both of its service's streams.
    assert_eq!(n("updates_received"), n("updates_sent"));
    assert_eq!(n("fanouts_completed"), changes);
    assert_eq!(n("streams_unconverged"), 0);
    assert_eq!(r["stale_streams"], 0);
    assert_eq!(n("services_never_served"), 0);
    assert_eq!(
        r["by_pattern"]["statefulset"]["fanout_completion"]["count"].as_u64(),
        Some(changes)
    );
}

#[test]
fn run_takes_the_clients_fault_modes_and_judges_the_healthy_streams() {
    let r = mock_run(
        "small-oscillation",
        &[
            "--services",
            "2",
            "--min-endpoints",
            "2",
            "--max-endpoints",
            "6",
            "--streams-per-service",
            "10",
            "--stuck-percent",
            "20",
        ],
    );
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} in {r}"));
    assert_eq!(n("streams"), 20);
    // 2 stuck streams in every 10.
    assert_eq!(r["by_class"]["stuck"]["streams"], 4, "{r}");
    assert_eq!(r["by_class"]["healthy"]["streams"], 16, "{r}");
    // The healthy streams converged to every change; the top-level figures
    // (and so the SLOs) are theirs.
    assert_eq!(n("streams_unconverged"), 0);
    assert_eq!(r["stale_streams"], 0);
    assert_eq!(
        r["update_latency"]["count"],
        r["by_class"]["healthy"]["update_latency"]["count"]
    );
    assert!(n("fanouts_completed") >= 4, "{r}");
    let slos = r["slos"].as_array().unwrap();
    assert!(slos.iter().all(|v| v["pass"] == true), "{}", r["slos"]);
}

#[test]
fn report_dash_writes_the_report_alone_on_standard_output() {
    let junit = std::env::temp_dir().join(format!("dst-run-dash-{}.xml", std::process::id()));
    let out = Command::new(BIN)
        .args(["run", "--scenario", "small-oscillation", "--services", "2"])
        .args(["--min-endpoints", "2", "--max-endpoints", "4"])
        .args(["--streams-per-service", "2", "--connections", "1"])
        .args([
            "--min-hold",
            "300ms",
            "--max-hold",
            "300ms",
            "--jitter",
            "0s",
        ])
        // A seed above 2^53, which a JSON number would round.
        .args([
            "--duration",
            "2s",
            "--seed",
            "18446744073709551557",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .args(["--slo", "errors==0", "--report", "-", "--junit"])
        .arg(&junit)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Standard output is the JSON report and nothing else; the summary a
    // person reads went to standard error.
    let r: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(r["streams"], 4, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["updates_received"], r["updates_sent"], "{r}");
    assert_eq!(r["seed"], "18446744073709551557", "{r}");
    assert_eq!(r["plan"]["seed"], "18446744073709551557", "{r}");
    assert!(stderr.contains("change -> converged"), "{stderr}");
    assert!(!stderr.contains("report written to"), "{stderr}");
    // Log lines into a pipe carry no colour codes.
    assert!(stderr.contains(" INFO "), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
    assert!(
        std::fs::read_to_string(&junit)
            .unwrap()
            .contains("errors==0")
    );
    assert!(
        !std::path::Path::new("-").exists(),
        "a file named `-` was made"
    );
    std::fs::remove_file(&junit).unwrap();
}

/// A report says which build made it and how (`version`, `args`), and its
/// plan replays the run: a run slowed with --mock-delay, replayed from the
/// report's plan alone, is as slow (it used to replay fast).
#[test]
fn a_reports_plan_replays_the_mock_delay_and_the_report_names_its_build() {
    let dir = std::env::temp_dir().join(format!("dst-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (first, plan, second) = (
        dir.join("first.json"),
        dir.join("plan.json"),
        dir.join("second.json"),
    );
    // Holds longer than the delay, so that changes are not superseded.
    let out = Command::new(BIN)
        .args([
            "run",
            "--services",
            "1",
            "--min-endpoints",
            "1",
            "--max-endpoints",
            "3",
        ])
        .args([
            "--streams-per-service",
            "2",
            "--min-hold",
            "600ms",
            "--max-hold",
            "600ms",
        ])
        .args([
            "--jitter",
            "0s",
            "--duration",
            "2s",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .args(["--mock-delay", "300ms", "--report", first.to_str().unwrap()])
        .output()
        .unwrap();
    let r = judged_report(&out, &first);
    assert_eq!(r["plan"]["mock"]["delay"], "300ms", "{}", r["plan"]);
    // The build and the command line.
    let version = Command::new(BIN).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout);
    assert_eq!(
        format!("dst-load-controller {}\n", r["version"].as_str().unwrap()),
        version
    );
    assert!(
        r["version"]
            .as_str()
            .unwrap()
            .starts_with(env!("CARGO_PKG_VERSION"))
    );
    let args: Vec<&str> = r["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(&args[..2], ["run", "--services"]);
    assert!(
        args.windows(2).any(|w| w == ["--mock-delay", "300ms"]),
        "{args:?}"
    );
    // The plan alone, as a scenario file (JSON is YAML).
    std::fs::write(&plan, serde_json::to_string(&r["plan"]).unwrap()).unwrap();
    let out = Command::new(BIN)
        .args([
            "run",
            "--scenario-file",
            plan.to_str().unwrap(),
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .args(["--report", second.to_str().unwrap()])
        .output()
        .unwrap();
    let r2 = judged_report(&out, &second);
    assert_eq!(r2["plan"]["mock"], r["plan"]["mock"]);
    assert_eq!(r2["seed"], r["seed"]);
    // Never early: every update waited out the delay.
    for report in [&r, &r2] {
        let lat = &report["update_latency"];
        assert!(lat["count"].as_u64().unwrap() > 0, "{lat}");
        assert!(lat["p50"].as_f64().unwrap() >= 0.3, "{lat}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The report of a run that ended judged (0 or 3).
fn judged_report(out: &std::process::Output, report: &std::path::Path) -> serde_json::Value {
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap()
}
