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

/// The client flags of both known-bug loads: 10 proxies on their own
/// connections, 2 of them stuck after their first answers, every stream
/// with a 64 KiB window, for 45 s.
const TEN_PROXIES_TWO_STUCK: &[&str] = &[
    "--streams-per-service",
    "10",
    "--connections",
    "10",
    "--stuck-percent",
    "20",
    "--http2-stream-window",
    "65535",
    "--duration",
    "45s",
];

/// One load against the cluster of `version`: `churn` with `churn_args`
/// in namespace `ns` while `client` runs with `client_args` there (the
/// destination, the namespace, the ground truth and a report added); churn
/// stopped after. The client's report and its standard output.
fn load(
    version: &str,
    ns: &str,
    churn_args: &[&str],
    client_args: &[&str],
) -> (serde_json::Value, String) {
    let env = cluster(version);
    let domain = &env["DST_LOCAL_CLUSTER_DOMAIN"];
    let report = temp(&format!("{ns}-{version}.json"));
    let mut churn = Command::new(BIN)
        .envs(&env)
        .args(["churn", "--namespace", ns])
        .args(churn_args)
        .args(["--cleanup-on-exit", "--admin-addr", "127.0.0.1:0"])
        .spawn()
        .unwrap();
    let target = |arg: &str| arg.replace("{ns}", ns).replace("{domain}", domain);
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
        .args(client_args.iter().map(|a| target(a)))
        .args(["--node-name", "kwok-node-0"])
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
    (json, stdout)
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
        let (json, stdout) = load(
            version,
            "v11279",
            &[
                "--oscillate-services",
                "1",
                "--oscillate-min-endpoints",
                "10",
                "--oscillate-max-endpoints",
                "50",
                "--oscillate-hold-duration",
                "1s",
                "--oscillate-jitter",
                "0s",
                "--duration",
                "60s",
                "--seed",
                "11",
            ],
            &[
                &[
                    "--target-services",
                    "oscillate-svc-0.{ns}.svc.{domain}:8080",
                ],
                TEN_PROXIES_TWO_STUCK,
            ]
            .concat(),
        );
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

/// linkerd/linkerd2#11546 (fixed in edge-23.11.2, after stable-2.14.2): the
/// follow-up of #11279 on the profile path. Stable-2.14.2 queues endpoint
/// updates per stream but still sends ServiceProfile updates from the
/// profile informer's callback, under the profile's lock: one `GetProfile`
/// stream whose window is full stops every other profile stream. One
/// service's ServiceProfile (100 routes, some 7 KB a profile) changes every
/// 500 ms while 10 proxies hold a `Get` and a `GetProfile` stream each, 2 of
/// them stuck after their first answers with 64 KiB windows. On
/// stable-2.14.2 the healthy profile streams stop getting profiles (less
/// than half of edge-26.8.3's; all 8 judged stale, and the report names the
/// stuck ones as the likely cause) while its healthy `Get` streams
/// stay converged (#11279 fixed there); on edge-26.8.3 both paths keep up.
#[test]
#[ignore = "needs local control planes of Linkerd stable-2.14.2 and edge-26.8.3 (make e2e)"]
fn issue_11546_a_stuck_profile_stream_stalls_every_profile_stream_on_2_14_2_and_not_on_edge_26_8_3()
{
    let mut verdicts = BTreeMap::new();
    for version in ["stable-2.14.2", "edge-26.8.3"] {
        let domain = cluster(version)["DST_LOCAL_CLUSTER_DOMAIN"].clone();
        let (json, stdout) = load(
            version,
            "v11546",
            &[
                "--stable-services",
                "1",
                "--stable-endpoints",
                "2",
                "--service-profiles",
                "--profile-routes",
                "100",
                "--profile-change-interval",
                "500ms",
                "--cluster-domain",
                &domain,
                "--duration",
                "60s",
            ],
            &[
                &[
                    "--target-services",
                    "stable-svc-0.{ns}.svc.{domain}:8080",
                    "--proxy-discovery",
                ],
                TEN_PROXIES_TWO_STUCK,
            ]
            .concat(),
        );
        let n = |k: &str| json[k].as_u64().unwrap_or(0);
        assert_eq!(n("profile_stuck_streams"), 2, "{version}: {stdout}");
        assert_eq!(json["by_class"]["stuck"]["streams"].as_u64(), Some(2));
        // The endpoint path keeps up on both versions.
        let get_behind =
            json["stale_streams"].as_i64().unwrap().max(0) as u64 + n("streams_unconverged");
        assert_eq!(get_behind, 0, "{version}: Get streams behind: {stdout}");
        let diagnoses = json["diagnoses"].as_array().cloned().unwrap_or_default();
        eprintln!(
            "{version}: {} healthy profile streams stale, {} profiles received; diagnoses {diagnoses:?}\n{stdout}",
            n("profile_stale_streams"),
            n("profile_updates_received")
        );
        verdicts.insert(version, (json, diagnoses, stdout));
    }
    // What every healthy profile stream received, on average (the 2 stuck
    // ones got their first profile each).
    let per_healthy = |v: &str| {
        let received = verdicts[v].0["profile_updates_received"]
            .as_u64()
            .unwrap_or(0);
        received.saturating_sub(2) as f64 / 8.0
    };
    let (old, new) = (per_healthy("stable-2.14.2"), per_healthy("edge-26.8.3"));
    // On stable-2.14.2 every healthy profile stream stops once a stuck
    // stream's window is full (some 18 profiles of 7 KB fill 64 KiB and
    // gRPC's 64 KiB send quota); on edge-26.8.3 they get every change
    // (some 90 in 45 s).
    assert!(
        old * 2.0 < new,
        "profiles per healthy stream: stable-2.14.2 {old:.1}, edge-26.8.3 {new:.1}"
    );
    // Every stopped stream is stale (it missed the changes after it
    // stopped, whichever shape the oscillation left it showing), and the
    // report names the stuck streams as the likely cause.
    let (json, diagnoses, stdout) = &verdicts["stable-2.14.2"];
    assert_eq!(
        json["profile_stale_streams"].as_u64(),
        Some(8),
        "stable-2.14.2: every healthy profile stream stale: {stdout}"
    );
    assert_eq!(diagnoses.len(), 1, "{stdout}");
    let d = diagnoses[0].as_str().unwrap();
    assert!(
        d.contains("stuck profile stream(s) were open: the stuck streams are the likely cause")
            && d.contains("#11546"),
        "{d}"
    );
    let (json, diagnoses, stdout) = &verdicts["edge-26.8.3"];
    assert!(
        json.get("profile_stale_streams").is_none(),
        "edge-26.8.3: healthy profile streams stale: {stdout}"
    );
    assert!(diagnoses.is_empty(), "{diagnoses:?}");
}
