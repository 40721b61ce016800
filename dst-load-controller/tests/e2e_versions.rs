//! Linkerd's known, fixed bugs, reproduced on the versions that had them:
//! each test runs one load against local control planes of two Linkerd
//! versions (`hack/local-cluster.sh --name NAME up --linkerd VERSION`) and
//! asserts that the tool's verdict flips between them, not a timing.
//!
//! Ignored by a plain `cargo test`; `make e2e` brings the clusters up and
//! passes their env files in `DST_E2E_LINKERD_ENVS` (`VERSION=PATH ...`).

use std::{collections::BTreeMap, path::PathBuf, process::Command};

const BIN: &str = env!("CARGO_BIN_EXE_dst-load-controller");

/// The env file of the cluster running Linkerd `version`, as variables.
fn cluster(version: &str) -> BTreeMap<String, String> {
    let envs = std::env::var("DST_E2E_LINKERD_ENVS").unwrap_or_else(|_| {
        panic!(
            "DST_E2E_LINKERD_ENVS is not set: `hack/local-cluster.sh --name v NAME up --linkerd {version}` and give VERSION=PATH-of-its-env, or use `make e2e`"
        )
    });
    let path = envs
        .split_whitespace()
        .find_map(|e| e.strip_prefix(&format!("{version}=")))
        .unwrap_or_else(|| {
            panic!("no cluster of Linkerd {version} in DST_E2E_LINKERD_ENVS={envs}")
        });
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let vars: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        vars.get("DST_LOCAL_LINKERD_VERSION").map(String::as_str),
        Some(version),
        "{path} is not a cluster of Linkerd {version}"
    );
    vars
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("dst-versions-{}-{name}", std::process::id()))
}

/// linkerd/linkerd2#11279 (also #11480, #10590; fixed by #11491 in
/// stable-2.14.2): a proxy that stops reading fills its stream's HTTP/2
/// window, and a controller that sends from the EndpointSlice informer's
/// callback then blocks there: every other stream stops getting updates.
/// One service scales 10 <-> 50 pods (each update some 10 KB) while 10
/// streams watch it, 2 of them stuck after their first update with 64 KiB
/// windows. On stable-2.14.1 the healthy streams end stale and the report
/// names the stuck streams as the likely cause; on stable-2.14.2 every
/// healthy stream converges and nothing is diagnosed.
#[test]
#[ignore = "needs local control planes of Linkerd stable-2.14.1 and stable-2.14.2 (make e2e)"]
fn issue_11279_a_stuck_stream_stalls_every_stream_on_2_14_1_and_not_on_2_14_2() {
    let mut verdicts = BTreeMap::new();
    for version in ["stable-2.14.1", "stable-2.14.2"] {
        let env = cluster(version);
        let domain = &env["DST_LOCAL_CLUSTER_DOMAIN"];
        let ns = "v11279";
        let report = temp(&format!("{version}.json"));
        let mut churn = Command::new(BIN)
            .envs(&env)
            .args(["churn", "--namespace", ns, "--oscillate-services", "1"])
            .args([
                "--oscillate-min-endpoints",
                "10",
                "--oscillate-max-endpoints",
                "50",
            ])
            .args([
                "--oscillate-hold-duration",
                "1s",
                "--oscillate-jitter",
                "0s",
            ])
            .args(["--duration", "60s", "--seed", "11", "--cleanup-on-exit"])
            .args(["--admin-addr", "127.0.0.1:0"])
            .spawn()
            .unwrap();
        let out = Command::new(BIN)
            .envs(&env)
            .args(["client", "--destination-addr", &env["DESTINATION_ADDR"]])
            .args([
                "--namespace",
                ns,
                "--ground-truth",
                "--cluster-domain",
                domain,
            ])
            .arg("--target-services")
            .arg(format!("oscillate-svc-0.{ns}.svc.{domain}:8080"))
            .args(["--streams-per-service", "10", "--connections", "10"])
            .args(["--stuck-percent", "20", "--http2-stream-window", "65535"])
            .args(["--node-name", "kwok-node-0", "--duration", "45s"])
            .args(["--admin-addr", "127.0.0.1:0", "--report"])
            .arg(&report)
            .output()
            .unwrap();
        let _ = Command::new("kill")
            .args(["-TERM", &churn.id().to_string()])
            .status();
        assert!(churn.wait().unwrap().code().is_some());
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).unwrap_or_else(|e| {
                panic!(
                    "{version}: no report ({e}): {stdout}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            }))
            .unwrap();
        std::fs::remove_file(&report).unwrap();
        // The report names the controller it watched (from the env file).
        assert_eq!(json["config"]["destination_version"], version);
        let stuck = json["by_class"]["stuck"]["streams"].as_u64();
        assert_eq!(stuck, Some(2), "{version}: {stdout}");
        let behind = json["stale_streams"].as_i64().unwrap().max(0) as u64
            + json["streams_unconverged"].as_u64().unwrap();
        let diagnoses = json["diagnoses"].as_array().cloned().unwrap_or_default();
        eprintln!("{version}: {behind} healthy streams behind; diagnoses {diagnoses:?}\n{stdout}");
        verdicts.insert(version, (behind, diagnoses, stdout));
    }
    let (behind, diagnoses, stdout) = &verdicts["stable-2.14.1"];
    assert!(
        *behind > 0,
        "stable-2.14.1: every healthy stream kept up: {stdout}"
    );
    assert_eq!(diagnoses.len(), 1, "{stdout}");
    let d = diagnoses[0].as_str().unwrap();
    assert!(
        d.contains("while 2 stuck stream(s) were open: the stuck streams are the likely cause"),
        "{d}"
    );
    assert!(stdout.contains("likely cause:"), "{stdout}");
    let (behind, diagnoses, stdout) = &verdicts["stable-2.14.2"];
    assert_eq!(
        *behind, 0,
        "stable-2.14.2: healthy streams behind: {stdout}"
    );
    assert!(diagnoses.is_empty(), "{diagnoses:?}");
}
