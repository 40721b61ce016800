//! End-to-end tests across two local control planes linked by Linkerd's own
//! service mirror (`hack/local-multicluster.sh up`): churn's services live in
//! the target, the client's streams watch the source's destination
//! controller (Linkerd's, built from source) under the mirrored names, and
//! the ground truth is read from the target.
//!
//! Ignored by a plain `cargo test`; `make e2e` brings both clusters up and
//! runs them.

mod support;

use std::{collections::BTreeSet, process::Stdio, time::Duration};

use k8s_openapi::api::core::v1::Service;
use kube::{Api, api::ListParams};

const BIN: &str = env!("CARGO_BIN_EXE_dst-load-controller");
/// Mirrors follow exports within seconds; a loaded machine gets a wide bound.
const WAIT: Duration = Duration::from_secs(120);
const LINK: &str = "target";
/// After an apiserver restart, informers back off before they re-list.
const AFTER_RESTART: Duration = Duration::from_secs(240);

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run `hack/local-multicluster.sh up` and source .local-clusters/env, or use `make e2e`")
    })
}

async fn kube_of(kubeconfig: &str) -> kube::Client {
    let file = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// `kubectl` of one of the two clusters, which must succeed.
fn kubectl_ok(kubeconfig: &str, args: &[&str]) {
    let out = kubectl(kubeconfig, args);
    assert!(out.status.success(), "{out:?}");
}

/// Scales the target's Deployment `name` in `ns` to `replicas` and waits,
/// up to `wait`, until its EndpointSlices list that many addresses.
async fn scale_target(
    target: &kube::Client,
    ns: &str,
    name: &str,
    replicas: usize,
    wait: Duration,
) {
    let n = replicas.to_string();
    kubectl_ok(
        &var("TARGET_KUBECONFIG"),
        &["-n", ns, "scale", "deployment", name, "--replicas", &n],
    );
    support::eventually_async(
        &format!("the target scaled to {replicas}"),
        wait,
        || async {
            support::slice_addrs(target, ns, name, 8080)
                .await
                .is_ok_and(|a| a.len() == replicas)
        },
    )
    .await;
}

/// Labels the EndpointSlices `which` names in `ns` (a name, or `-l` and a
/// selector): a change to the slice that Linkerd's controller acts on.
fn touch_slices(kubeconfig: &str, ns: &str, which: &[&str]) {
    let args: Vec<&str> = ["-n", ns, "label", "endpointslice"]
        .into_iter()
        .chain(which.iter().copied())
        .chain(["touched=yes"])
        .collect();
    kubectl_ok(kubeconfig, &args);
}

/// `kubectl` of one of the two clusters, whatever its status.
fn kubectl(kubeconfig: &str, args: &[&str]) -> std::process::Output {
    let all: Vec<&str> = ["--kubeconfig", kubeconfig]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    support::kubectl_output(&all, None)
}

/// The same namespace in both clusters (the mirror needs it in the source),
/// deleted from both when the test ends; on failure the mirror's view is
/// printed first.
struct BothNs {
    name: String,
    kubeconfigs: [String; 2],
}

impl BothNs {
    fn new(prefix: &str) -> Self {
        let name = format!("mc-{prefix}-{:06x}", rand::random::<u32>() >> 8);
        let kubeconfigs = [var("SOURCE_KUBECONFIG"), var("TARGET_KUBECONFIG")];
        for k in &kubeconfigs {
            let out = kubectl(k, &["create", "namespace", &name]);
            assert!(out.status.success(), "{out:?}");
        }
        Self { name, kubeconfigs }
    }
}

impl Drop for BothNs {
    fn drop(&mut self) {
        for k in &self.kubeconfigs {
            if std::thread::panicking() {
                let out = kubectl(
                    k,
                    &["get", "svc,endpointslices", "-o", "wide", "-n", &self.name],
                );
                eprintln!("--- {k}:\n{}", String::from_utf8_lossy(&out.stdout));
            }
            let _ = kubectl(
                k,
                &[
                    "delete",
                    "namespace",
                    &self.name,
                    "--wait=false",
                    "--ignore-not-found",
                ],
            );
        }
    }
}

/// Names of the mirrored Services in the source's `ns`.
async fn mirrors(source: &kube::Client, ns: &str) -> BTreeSet<String> {
    let svcs: Api<Service> = Api::namespaced(source.clone(), ns);
    let lp = ListParams::default().labels("mirror.linkerd.io/mirrored-service=true");
    match svcs.list(&lp).await {
        Ok(list) => list
            .items
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// A client of the source's destination controller watching `services`'
/// mirrors in `ns`, `streams` streams each, with the target's ground truth.
fn mirror_client(ns: &str, services: &[String], streams: usize) -> support::RunningClient {
    mirror_client_of(LINK, ns, services, streams)
}

/// [`mirror_client`] of the mirrors `{svc}-{suffix}` (`federated`, or the link).
fn mirror_client_of(
    suffix: &str,
    ns: &str,
    services: &[String],
    streams: usize,
) -> support::RunningClient {
    let (dst, target_kc, domain) = (
        var("DESTINATION_ADDR"),
        var("TARGET_KUBECONFIG"),
        var("SOURCE_CLUSTER_DOMAIN"),
    );
    let targets = services
        .iter()
        .map(|s| format!("{s}-{suffix}.{ns}.svc.{domain}:8080"))
        .collect::<Vec<_>>()
        .join(",");
    let streams = streams.to_string();
    support::start_client(support::client_args(&[
        "--destination-addr",
        &dst,
        "--target-services",
        &targets,
        "--namespace",
        ns,
        "--cluster-domain",
        &domain,
        "--ground-truth-kubeconfig",
        &target_kc,
        "--ground-truth-link",
        LINK,
        "--streams-per-service",
        &streams,
    ]))
}

/// Waits until each of `streams` streams of every service's mirror holds
/// exactly the target's EndpointSlice addresses of the service.
async fn streams_equal_target(
    running: &support::RunningClient,
    target: &kube::Client,
    ns: &str,
    services: &[String],
    streams: usize,
) {
    streams_of_equal_target(LINK, running, target, ns, services, streams).await
}

/// [`streams_equal_target`] for the mirrors `{svc}-{suffix}`: each of
/// `streams` streams of every mirror ends holding exactly the target's
/// EndpointSlice addresses of its service, once the target is done with it,
/// within [`WAIT`], but for the late-pod finding (see [`support::converge`]:
/// the source's controller logged leaving the missing pods out; the
/// target's slices are then touched and the streams must converge).
async fn streams_of_equal_target(
    suffix: &str,
    running: &support::RunningClient,
    target: &kube::Client,
    ns: &str,
    services: &[String],
    streams: usize,
) {
    let log = support::ControllerLog::whole(source_destination_log());
    let kubeconfig = var("TARGET_KUBECONFIG");
    let truth = support::SliceTruth {
        client: target,
        kubeconfig: Some(&kubeconfig),
        log: &log,
    };
    let domain = var("SOURCE_CLUSTER_DOMAIN");
    let what = format!("the mirrors {services:?}-{suffix} in {ns} equal the target's slices");
    support::converge(&what, &truth, WAIT, || {
        services
            .iter()
            .map(|svc| {
                let authority = format!("{svc}-{suffix}.{ns}.svc.{domain}:8080");
                let sets = running.sets(&authority);
                if sets.len() != streams {
                    return Err(format!(
                        "{authority}: {} streams, want {streams}",
                        sets.len()
                    ));
                }
                Ok(support::Watched {
                    ns: ns.to_string(),
                    service: svc.clone(),
                    port: 8080,
                    sets,
                })
            })
            .collect()
    })
    .await
}

/// The source cluster's destination controller's log.
fn source_destination_log() -> std::path::PathBuf {
    std::path::Path::new(&var("SERVICE_MIRROR_LOG")).with_file_name("destination.log")
}

fn set(names: &[String]) -> BTreeSet<String> {
    names.iter().cloned().collect()
}

/// The seed's first multicluster test, on loopback: the target's exported
/// services appear mirrored in the source, unexporting removes a mirror and
/// re-exporting brings it back, and while the target scales, every stream of
/// the source's destination controller ends holding exactly the target's
/// EndpointSlice addresses, with latencies from the target's scale to the
/// source's stream.
#[tokio::test]
#[ignore = "needs two linked local control planes: make e2e"]
async fn mirrors_follow_exports_and_source_streams_follow_target_scales() {
    let ns = BothNs::new("mirror");
    let (source_kc, target_kc) = (var("SOURCE_KUBECONFIG"), var("TARGET_KUBECONFIG"));
    let (source, target) = (kube_of(&source_kc).await, kube_of(&target_kc).await);

    let mut churn = tokio::process::Command::new(BIN)
        .args([
            "churn",
            "--namespace",
            &ns.name,
            "--oscillate-services",
            "2",
            "--oscillate-min-endpoints",
            "1",
            "--oscillate-max-endpoints",
            "4",
            "--oscillate-hold-duration",
            "2s",
            "--export",
            "remote-discovery",
            "--seed",
            "7",
            "--admin-addr",
            "127.0.0.1:0",
            "--log-level",
            "warn",
        ])
        .env("KUBECONFIG", &target_kc)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let services = ["oscillate-svc-0".to_string(), "oscillate-svc-1".to_string()];
    let mirrored: Vec<String> = services.iter().map(|s| format!("{s}-{LINK}")).collect();
    support::eventually_async("both services mirrored in the source", WAIT, || {
        let (source, ns, want) = (&source, &ns.name, set(&mirrored));
        async move { mirrors(source, ns).await == want }
    })
    .await;

    let running = mirror_client(&ns.name, &services, 3);
    // Several scales of the target seen end to end: at least three changes
    // on each of the 6 streams.
    support::eventually_async("target scales timed at the source's streams", WAIT, || {
        let samples: f64 = support::scrape(&running.registry)
            .lines()
            .filter(|l| l.starts_with("destination_client_update_latency_seconds_count"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        async move { samples >= 18.0 }
    })
    .await;
    // Stop churn; every stream ends holding exactly the target's addresses.
    churn.kill().await.unwrap();
    streams_equal_target(&running, &target, &ns.name, &services, 3).await;

    // Unexport one: its mirror goes; export it again: it comes back.
    for (label, want, what) in [
        (
            "mirror.linkerd.io/exported-",
            &mirrored[1..],
            "the unexported service's mirror removed",
        ),
        (
            "mirror.linkerd.io/exported=remote-discovery",
            &mirrored[..],
            "the re-exported service mirrored again",
        ),
    ] {
        kubectl_ok(
            &target_kc,
            &["-n", &ns.name, "label", "service", &services[0], label],
        );
        support::eventually_async(what, WAIT, || {
            let (source, ns, want) = (&source, &ns.name, set(want));
            async move { mirrors(source, ns).await == want }
        })
        .await;
    }

    let (summary, measured) = running.finish_measured().await;
    assert_eq!(summary.failed_streams, 0, "{summary:?}");
    let update = &measured.update_latency;
    eprintln!(
        "target scale -> source stream: {} samples, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        update.count,
        update.p50 * 1e3,
        update.p99 * 1e3,
        update.max * 1e3
    );
    assert!(update.count >= 6, "{update:?}");
    // Never early: a stream cannot see a scale before churn stamped it.
    assert!(
        update.p50 >= 0.0 && update.max < WAIT.as_secs_f64(),
        "{update:?}"
    );
}

/// `run` across the two clusters: churn scales oscillating services and a
/// StatefulSet in the target, exported for remote discovery; the client
/// watches their mirrors (and two of the StatefulSet's pods by hostname
/// under the mirror) through the source's destination controller, with the
/// target's ground truth. Every stream converges, every change is timed
/// end to end, the destination's leg is part of that figure, and both
/// clusters are cleaned up.
#[tokio::test]
#[ignore = "needs two linked local control planes: make e2e"]
async fn run_across_the_clusters_times_target_scales_at_the_sources_streams() {
    let ns = BothNs::new("run");
    let (source_kc, target_kc) = (var("SOURCE_KUBECONFIG"), var("TARGET_KUBECONFIG"));
    let source = kube_of(&source_kc).await;
    let dir = std::env::temp_dir();
    let scenario = dir.join(format!("{}.yaml", ns.name));
    std::fs::write(
        &scenario,
        "duration: 12s\nsettle: 60s\nseed: 11\nschedule: {min-hold: 2s, max-hold: 2s, jitter: 200ms}\n\
         services:\n  oscillate: {count: 2, min-endpoints: 1, max-endpoints: 4}\n  \
         statefulset: {count: 1, min-endpoints: 2, max-endpoints: 3}\n\
         clients:\n  streams-per-service: 3\n",
    )
    .unwrap();
    let report = dir.join(format!("{}.json", ns.name));
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new(BIN)
            .args([
                "run",
                "--scenario-file",
                scenario.to_str().unwrap(),
                "--destination-addr",
                &var("DESTINATION_ADDR"),
                "--cluster-domain",
                &var("SOURCE_CLUSTER_DOMAIN"),
                "--ground-truth-kubeconfig",
                &target_kc,
                "--ground-truth-link",
                LINK,
                "--namespace",
                &ns.name,
                "--admin-addr",
                "127.0.0.1:0",
                "--report",
                report.to_str().unwrap(),
                "--slo",
                "stale_streams==0",
                "--slo",
                "errors==0",
            ])
            .env("KUBECONFIG", &source_kc)
            .output(),
    )
    .await
    .expect("run finished within 300s")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let _ = std::fs::remove_file(&scenario);
    let _ = std::fs::remove_file(&report);
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} in {r}"));
    // 2 oscillating services, the headless service and 2 of its pods.
    assert_eq!(n("streams"), 15, "{stdout}");
    assert_eq!(n("errors"), 0, "{stdout}");
    assert_eq!(r["stale_streams"], 0, "{stdout}");
    assert_eq!(n("streams_unconverged"), 0, "{stdout}");
    assert_eq!(r["services_never_served"], 0, "{stdout}");
    assert!(n("changes") >= 4, "{stdout}");
    assert!(n("fanouts_completed") >= 2, "{stdout}");
    let conv = &r["convergence_latency"];
    assert!(
        conv["count"].as_u64().unwrap() + n("convergences_untimed") >= 3 * n("fanouts_completed"),
        "{stdout}"
    );
    // Target scale -> target slice, and target slice -> source stream.
    let (k8s, dst_leg) = (&r["kubernetes_leg"], &r["destination_leg"]);
    assert!(k8s["count"].as_u64().unwrap() > 0, "{stdout}");
    assert!(
        dst_leg["p50"].as_f64().unwrap() <= conv["p50"].as_f64().unwrap()
            && dst_leg["max"].as_f64().unwrap() <= conv["max"].as_f64().unwrap(),
        "{stdout}"
    );
    // Cleaned up: nothing of churn's in the target, no mirror in the source.
    let left = kubectl(
        &target_kc,
        &["-n", &ns.name, "get", "deploy,sts,svc", "-o", "name"],
    );
    assert!(left.stdout.is_empty(), "{left:?}");
    support::eventually_async("the mirrors removed", WAIT, || {
        let (source, ns) = (&source, &ns.name);
        async move { mirrors(source, ns).await.is_empty() }
    })
    .await;
    eprintln!("{stdout}");
}

/// Churn makes `services` stable services of `endpoints` endpoints in the
/// target's `ns`, exported as `export`, and leaves them there.
async fn exported_services(ns: &str, services: u32, endpoints: u32, export: &str) {
    let (services, endpoints) = (services.to_string(), endpoints.to_string());
    let out = tokio::process::Command::new(BIN)
        .args([
            "churn",
            "--namespace",
            ns,
            "--stable-services",
            &services,
            "--stable-endpoints",
            &endpoints,
            "--export",
            export,
            "--duration",
            "1s",
            "--admin-addr",
            "127.0.0.1:0",
            "--log-level",
            "warn",
        ])
        .env("KUBECONFIG", var("TARGET_KUBECONFIG"))
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// The federated mode (`churn --export federated`): each member in the
/// target gets `{svc}-federated` in the source, naming it in
/// `multicluster.linkerd.io/remote-discovery` (`{svc}@{link}`); streams on
/// the federated name follow the target's scales; when the service leaves
/// the federation, its federated service is deleted and new streams on it
/// are refused (NotFound), as Linkerd's destination controller does for a
/// service that does not exist.
#[tokio::test]
#[ignore = "needs two linked local control planes: make e2e"]
async fn federated_services_follow_their_target_member() {
    let ns = BothNs::new("fed");
    let (source_kc, target_kc) = (var("SOURCE_KUBECONFIG"), var("TARGET_KUBECONFIG"));
    let (source, target) = (kube_of(&source_kc).await, kube_of(&target_kc).await);
    exported_services(&ns.name, 2, 2, "federated").await;
    let services: Vec<String> = (0..2).map(|i| format!("stable-svc-{i}")).collect();
    let federated: Vec<String> = services.iter().map(|s| format!("{s}-federated")).collect();
    support::eventually_async("both federated services in the source", WAIT, || {
        let (source, ns, want) = (&source, &ns.name, set(&federated));
        async move { mirrors(source, ns).await == want }
    })
    .await;
    let svcs: Api<Service> = Api::namespaced(source.clone(), &ns.name);
    let fed = svcs.get(&federated[0]).await.unwrap();
    let annotations = fed.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations
            .get("multicluster.linkerd.io/remote-discovery")
            .map(String::as_str),
        Some(format!("{}@{LINK}", services[0]).as_str()),
        "{annotations:?}"
    );

    let running = mirror_client_of("federated", &ns.name, &services, 2);
    streams_of_equal_target("federated", &running, &target, &ns.name, &services, 2).await;
    // A scale in the target reaches the federated streams.
    scale_target(&target, &ns.name, &services[0], 4, WAIT).await;
    streams_of_equal_target("federated", &running, &target, &ns.name, &services[..1], 2).await;

    // Leaving the federation deletes the federated service.
    kubectl_ok(
        &target_kc,
        &[
            "-n",
            &ns.name,
            "label",
            "service",
            &services[1],
            "mirror.linkerd.io/federated-",
        ],
    );
    support::eventually_async("the federated service of the leaver deleted", WAIT, || {
        let (source, ns, want) = (&source, &ns.name, set(&federated[..1]));
        async move { mirrors(source, ns).await == want }
    })
    .await;
    // Its two streams are ended by the controller, and opened again are
    // refused.
    support::eventually(
        "streams on the deleted name ended and refused",
        WAIT,
        || {
            let text = support::scrape(&running.registry);
            let of = |name, reason| {
                support::sample(&text, name, &[("reason", reason), ("class", "healthy")])
                    .unwrap_or(0.0)
            };
            of("destination_client_streams_reset_total", "end_of_stream") >= 2.0
                && of("destination_client_connection_errors_total", "NotFound") >= 2.0
        },
    )
    .await;
    let text = support::scrape(&running.registry);
    let (summary, measured) = running.finish_measured().await;
    eprintln!(
        "federated: {summary:?}; update latency {:?}\n{}",
        measured.update_latency,
        text.lines()
            .filter(|l| l.contains("reset_total{") || l.contains("errors_total{"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        measured.update_latency.count >= 2,
        "{:?}",
        measured.update_latency
    );
}

/// A Secret deleted from the source for a while, created again (without
/// its server-set metadata) when dropped, whatever the test's outcome.
struct DeletedSecret {
    kubeconfig: String,
    json: String,
}

impl DeletedSecret {
    fn delete(kubeconfig: &str, namespace: &str, name: &str) -> Self {
        let out = kubectl(
            kubeconfig,
            &["-n", namespace, "get", "secret", name, "-o", "json"],
        );
        assert!(out.status.success(), "{out:?}");
        let mut secret: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        support::strip_server_fields(&mut secret);
        kubectl_ok(kubeconfig, &["-n", namespace, "delete", "secret", name]);
        Self {
            kubeconfig: kubeconfig.to_string(),
            json: secret.to_string(),
        }
    }
}

impl Drop for DeletedSecret {
    /// Never panics (a panic while unwinding would abort the test binary):
    /// a failed restore is printed.
    fn drop(&mut self) {
        let out = support::kubectl_output(
            &["--kubeconfig", &self.kubeconfig, "apply", "-f", "-"],
            Some(&self.json),
        );
        if !out.status.success() {
            eprintln!("could not restore the Secret: {out:?}");
        }
    }
}

/// The seed's second fault: the link's credentials are deleted from the
/// source's `linkerd` namespace (what its destination controller reads).
/// What Linkerd's controller then serves, as its code does it: it drops the
/// target cluster, but streams already open are neither updated nor ended:
/// they keep the last addresses while the target scales (and the client
/// reports them stale); new streams are refused (NotFound). With the
/// credentials back, new streams follow the target again; the old ones stay
/// stale until they are re-opened.
#[tokio::test]
#[ignore = "needs two linked local control planes: make e2e"]
async fn deleted_link_credentials_leave_open_streams_stale_and_refuse_new_ones() {
    let ns = BothNs::new("creds");
    let (source_kc, target_kc) = (var("SOURCE_KUBECONFIG"), var("TARGET_KUBECONFIG"));
    let (source, target) = (kube_of(&source_kc).await, kube_of(&target_kc).await);
    exported_services(&ns.name, 1, 2, "remote-discovery").await;
    let services = vec!["stable-svc-0".to_string()];
    support::eventually_async("the service mirrored", WAIT, || {
        let (source, ns) = (&source, &ns.name);
        async move { mirrors(source, ns).await == set(&[format!("stable-svc-0-{LINK}")]) }
    })
    .await;
    let authority = format!(
        "stable-svc-0-{LINK}.{}.svc.{}:8080",
        ns.name,
        var("SOURCE_CLUSTER_DOMAIN")
    );
    let old = mirror_client(&ns.name, &services, 2);
    streams_equal_target(&old, &target, &ns.name, &services, 2).await;
    let before = old.sets(&authority)[0].clone();
    assert_eq!(before.len(), 2);

    let secret = DeletedSecret::delete(
        &source_kc,
        "linkerd",
        &format!("cluster-credentials-{LINK}"),
    );
    // New streams are refused once the controller dropped the cluster (a
    // stream opened before that would be served, then frozen: probe with
    // short-lived clients until one is refused).
    let refused = |running: &support::RunningClient| {
        let text = support::scrape(&running.registry);
        support::sample(
            &text,
            "destination_client_connection_errors_total",
            &[("reason", "NotFound")],
        )
        .is_some_and(|v| v >= 1.0)
    };
    support::eventually_async("a new stream refused", WAIT, || {
        let probe = mirror_client(&ns.name, &services, 1);
        async move {
            let until = tokio::time::Instant::now() + Duration::from_secs(3);
            while tokio::time::Instant::now() < until && !refused(&probe) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let was = refused(&probe);
            probe.finish().await;
            was
        }
    })
    .await;
    let new = mirror_client(&ns.name, &services, 1);
    support::eventually("the new stream refused", WAIT, || refused(&new)).await;
    assert!(new.sets(&authority).iter().all(Vec::is_empty));
    // The target scales; the open streams are not told.
    scale_target(&target, &ns.name, "stable-svc-0", 3, WAIT).await;
    // Longer than the client's staleness grace (10 s).
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(old.sets(&authority), vec![before.clone(); 2]);

    // The credentials back: the new stream follows the target again.
    drop(secret);
    streams_equal_target(&new, &target, &ns.name, &services, 1).await;
    // The old streams still hold what they had.
    assert_eq!(old.sets(&authority), vec![before; 2]);
    let (summary, measured) = old.finish_measured().await;
    eprintln!(
        "open streams across the deletion: {summary:?}; stale {}",
        measured.stale_streams
    );
    assert_eq!(measured.stale_streams, 2, "{summary:?}");
    assert_eq!((summary.resets, summary.errors), (0, 0), "{summary:?}");
    let (summary, _) = new.finish_measured().await;
    assert_eq!(summary.failed_streams, 0, "{summary:?}");
}

/// The mechanism behind the endpoints lost after a target apiserver restart,
/// made deterministic. Linkerd's destination controller builds a remote
/// endpoint from the slice and the slice's pod; when its pod cache does not
/// have the pod yet, it logs `Unable to create new address` and leaves the
/// address out, and nothing brings it back when the pod arrives (its
/// endpoints watcher has no pod handler): only the slice's next change (or
/// the informers' 10-minute resync) does. After a restart the slice and pod
/// informers re-list independently, so a slice can be read before its pods.
///
/// Here a second EndpointSlice of an exported service names a pod that does
/// not exist yet; the pod is created after; the source's streams stay
/// without its address (the client reports them stale) until the slice is
/// touched, and then converge.
#[tokio::test]
#[ignore = "needs two linked local control planes: make e2e"]
async fn an_endpoint_whose_pod_comes_after_its_slice_is_served_only_when_the_slice_changes() {
    let ns = BothNs::new("late");
    let (source_kc, target_kc) = (var("SOURCE_KUBECONFIG"), var("TARGET_KUBECONFIG"));
    let (source, target) = (kube_of(&source_kc).await, kube_of(&target_kc).await);
    exported_services(&ns.name, 1, 1, "remote-discovery").await;
    let services = vec!["stable-svc-0".to_string()];
    support::eventually_async("the service mirrored", WAIT, || {
        let (source, ns) = (&source, &ns.name);
        async move { mirrors(source, ns).await == set(&[format!("stable-svc-0-{LINK}")]) }
    })
    .await;
    let running = mirror_client(&ns.name, &services, 2);
    streams_equal_target(&running, &target, &ns.name, &services, 2).await;

    // A slice of the service naming the pod `late-pod`, before it exists.
    let get_json = |what: &[&str]| -> serde_json::Value {
        let args: Vec<&str> = ["--kubeconfig", target_kc.as_str(), "-n", &ns.name, "get"]
            .into_iter()
            .chain(what.iter().copied())
            .chain(["-o", "json"])
            .collect();
        serde_json::from_str(&support::kubectl(&args, None)).unwrap()
    };
    let slices = get_json(&[
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=stable-svc-0",
    ]);
    let late = support::late_slice(
        &ns.name,
        "stable-svc-0",
        slices["items"][0]["ports"].clone(),
    );
    apply(&target_kc, &late.to_string());
    support::eventually_async("the target's truth has both slices", WAIT, || {
        let (target, ns) = (&target, &ns.name);
        async move {
            support::slice_addrs(target, ns, "stable-svc-0", 8080)
                .await
                .is_ok_and(|a| a.len() == 2)
        }
    })
    .await;
    // Then the pod: a copy of churn's meshed pod, out of its Deployment.
    let pods = get_json(&["pods", "-l", "app.kubernetes.io/name=stable-svc-0"]);
    let pod = support::late_pod(&pods["items"][0]);
    apply(&target_kc, &pod.to_string());
    let authority = format!(
        "stable-svc-0-{LINK}.{}.svc.{}:8080",
        ns.name,
        var("SOURCE_CLUSTER_DOMAIN")
    );
    // Past the client's staleness grace (10 s) both streams are reported
    // stale: the address is still missing from every stream.
    let stale_of = |running: &support::RunningClient| {
        let text = support::scrape(&running.registry);
        support::sample(&text, "destination_client_stale_streams", &[]).unwrap_or(0.0)
    };
    support::eventually("both streams reported stale", WAIT, || {
        stale_of(&running) == 2.0
    })
    .await;
    let sets = running.sets(&authority);
    assert!(
        sets.len() == 2 && sets.iter().all(|s| s.len() == 1),
        "{sets:?}"
    );
    let stale = stale_of(&running);
    // The slice changes: the controller builds the address again.
    touch_slices(&target_kc, &ns.name, &["stable-svc-0-late"]);
    streams_equal_target(&running, &target, &ns.name, &services, 2).await;
    let log = source_destination_log();
    let missed = format!("unable to fetch pod {}/late-pod", ns.name);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("Unable to create new address") && l.contains(&missed)),
        "no '{missed}' in {}",
        log.display()
    );
    let (summary, _) = running.finish_measured().await;
    eprintln!("late pod: stale streams before the touch {stale}; {summary:?}");
    assert_eq!(stale, 2.0);
    assert_eq!((summary.resets, summary.errors), (0, 0), "{summary:?}");
}

/// Services in the source's `ns` mirrored by the link `link` (per-pod
/// mirrors included), by name, with their ClusterIPs.
async fn mirrors_of_link(
    source: &kube::Client,
    ns: &str,
    link: &str,
) -> std::collections::BTreeMap<String, String> {
    let svcs: Api<Service> = Api::namespaced(source.clone(), ns);
    let lp = ListParams::default().labels(&format!("mirror.linkerd.io/cluster-name={link}"));
    match svcs.list(&lp).await {
        Ok(list) => list
            .items
            .into_iter()
            .filter_map(|s| Some((s.metadata.name?, s.spec?.cluster_ip?)))
            .collect(),
        Err(_) => Default::default(),
    }
}

/// Waits until `link` mirrors `sts-svc-0` in `ns` as a headless mirror and
/// one ClusterIP mirror per pod of `pods`, no more.
async fn wait_for_pod_mirrors(source: &kube::Client, ns: &str, link: &str, pods: u32) {
    let headless = format!("sts-svc-0-{link}");
    let want: BTreeSet<String> = std::iter::once(headless.clone())
        .chain((0..pods).map(|k| format!("sts-0-{k}-{link}")))
        .collect();
    support::eventually_async(
        &format!("a headless mirror and {pods} per-pod mirrors"),
        WAIT,
        || {
            let (want, headless) = (&want, &headless);
            async move {
                let got = mirrors_of_link(source, ns, link).await;
                got.keys().cloned().collect::<BTreeSet<_>>() == *want
                    && got
                        .iter()
                        .all(|(name, ip)| (ip == "None") == (name == headless))
            }
        },
    )
    .await;
}

/// The seed's headless case, in gateway mode (a Link with a gateway address,
/// the service mirror's `-enable-headless-services`; `hack/local-multicluster.sh`
/// makes the second link `target-gw` so): a headless exported service
/// (churn's StatefulSet, `--export gateway`) gets a headless mirror and one
/// ClusterIP mirror `{pod}-{link}` per pod, and follows the StatefulSet's
/// scale. Each pod's name under the headless mirror resolves, on the
/// source's destination controller, to exactly its own per-pod mirror's
/// address (the mirror's ClusterIP with the pod's port; the per-pod mirror
/// leads to the gateway, which nothing dials here).
#[tokio::test]
#[ignore = "needs two linked local control planes: make e2e"]
async fn a_headless_gateway_export_gets_one_mirror_per_pod_and_each_name_resolves_to_it() {
    let ns = BothNs::new("headless");
    let (source_kc, target_kc) = (var("SOURCE_KUBECONFIG"), var("TARGET_KUBECONFIG"));
    let source = kube_of(&source_kc).await;
    let link = var("GATEWAY_LINK");
    let out = tokio::process::Command::new(BIN)
        .args([
            "churn",
            "--namespace",
            &ns.name,
            "--statefulset-services",
            "1",
            "--statefulset-replicas",
            "2",
            "--export",
            "gateway",
            "--duration",
            "1s",
            "--admin-addr",
            "127.0.0.1:0",
            "--log-level",
            "warn",
        ])
        .env("KUBECONFIG", &target_kc)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    wait_for_pod_mirrors(&source, &ns.name, &link, 2).await;
    // The other link (remote discovery) does not take gateway exports.
    assert!(
        mirrors(&source, &ns.name)
            .await
            .iter()
            .all(|m| m.ends_with(&link))
    );

    let domain = var("SOURCE_CLUSTER_DOMAIN");
    let authority = |k: u32| format!("sts-0-{k}.sts-svc-0-{link}.{}.svc.{domain}:8080", ns.name);
    let resolve = |pods: u32| {
        let targets: Vec<String> = (0..pods).map(authority).collect();
        support::start_client(support::client_args(&[
            "--destination-addr",
            &var("DESTINATION_ADDR"),
            "--target-services",
            &targets.join(","),
            "--streams-per-service",
            "2",
        ]))
    };
    let each_pod_resolves_to_its_mirror = |running: &support::RunningClient, pods: u32| {
        let (source, ns, link) = (&source, &ns.name, &link);
        let sets: Vec<_> = (0..pods).map(|k| running.sets(&authority(k))).collect();
        async move {
            let ips = mirrors_of_link(source, ns, link).await;
            (0..pods as usize).all(|k| {
                let want: Vec<std::net::SocketAddr> = ips
                    .get(&format!("sts-0-{k}-{link}"))
                    .and_then(|ip| format!("{ip}:8080").parse().ok())
                    .into_iter()
                    .collect();
                sets[k].len() == 2 && sets[k].iter().all(|s| !want.is_empty() && *s == want)
            })
        }
    };
    let running = resolve(2);
    support::eventually_async("each pod's name resolves to its own mirror", WAIT, || {
        each_pod_resolves_to_its_mirror(&running, 2)
    })
    .await;
    running.finish().await;

    // The StatefulSet scales to 3: a third per-pod mirror, resolved too.
    kubectl_ok(
        &target_kc,
        &[
            "-n",
            &ns.name,
            "scale",
            "statefulset",
            "sts-0",
            "--replicas",
            "3",
        ],
    );
    wait_for_pod_mirrors(&source, &ns.name, &link, 3).await;
    let running = resolve(3);
    support::eventually_async("the new pod's name resolves to its mirror", WAIT, || {
        each_pod_resolves_to_its_mirror(&running, 3)
    })
    .await;
    let summary = running.finish().await;
    assert_eq!(summary.failed_streams, 0, "{summary:?}");
    // And back to 1: the per-pod mirrors of the pods gone are deleted.
    kubectl_ok(
        &target_kc,
        &[
            "-n",
            &ns.name,
            "scale",
            "statefulset",
            "sts-0",
            "--replicas",
            "1",
        ],
    );
    wait_for_pod_mirrors(&source, &ns.name, &link, 1).await;
    // All along, the other link (remote discovery) took none of it.
    assert!(
        mirrors(&source, &ns.name)
            .await
            .iter()
            .all(|m| m.ends_with(&link))
    );
    assert!(mirrors_of_link(&source, &ns.name, LINK).await.is_empty());
}

/// The seed's validation case, in gateway mode with headless mirrors on: a
/// headless Service whose endpoints have no hostnames (a Deployment's pods
/// behind `clusterIP: None`) is mirrored as one ClusterIP Service whose
/// endpoints are the gateway's, with no per-pod mirrors.
#[tokio::test]
#[ignore = "needs two linked local control planes: make e2e"]
async fn a_headless_gateway_export_without_named_addresses_is_mirrored_as_cluster_ip() {
    let ns = BothNs::new("nameless");
    let (source_kc, target_kc) = (var("SOURCE_KUBECONFIG"), var("TARGET_KUBECONFIG"));
    let (source, target) = (kube_of(&source_kc).await, kube_of(&target_kc).await);
    let link = var("GATEWAY_LINK");
    // Two pods of a Deployment (churn's, not exported), then a headless
    // Service over them, exported to the gateway link.
    exported_services(&ns.name, 1, 2, "none").await;
    support::eventually_async("the pods ready", WAIT, || {
        let (target, ns) = (&target, &ns.name);
        async move {
            support::slice_addrs(target, ns, "stable-svc-0", 8080)
                .await
                .is_ok_and(|a| a.len() == 2)
        }
    })
    .await;
    apply(
        &target_kc,
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: nameless\n  namespace: {}\n  \
             labels: {{mirror.linkerd.io/exported: \"true\"}}\nspec:\n  clusterIP: None\n  \
             selector: {{app.kubernetes.io/name: stable-svc-0}}\n  ports: [{{name: http, port: 8080}}]\n",
            ns.name
        ),
    );
    let mirror = format!("nameless-{link}");
    support::eventually_async("one ClusterIP mirror, no per-pod mirrors", WAIT, || {
        let (source, ns, link, mirror) = (&source, &ns.name, &link, &mirror);
        async move {
            let got = mirrors_of_link(source, ns, link).await;
            got.len() == 1
                && got
                    .get(mirror)
                    .is_some_and(|ip| ip.parse::<std::net::IpAddr>().is_ok())
        }
    })
    .await;
    // Its endpoints: the gateway's address and port.
    let gateway = format!("{}:4143", var("GATEWAY_ADDRESS"));
    support::eventually("the mirror's endpoints are the gateway", WAIT, || {
        let out = kubectl(
            &source_kc,
            &[
                "-n",
                &ns.name,
                "get",
                "endpoints",
                &mirror,
                "-o",
                "jsonpath={.subsets[*].addresses[*].ip}:{.subsets[*].ports[*].port}",
            ],
        );
        String::from_utf8_lossy(&out.stdout) == gateway
    })
    .await;
}

fn apply(kubeconfig: &str, yaml: &str) {
    support::kubectl(
        &["--kubeconfig", kubeconfig, "apply", "-f", "-"],
        Some(yaml),
    );
}

/// An exported headless Service, with or without ports.
fn headless(ns: &str, name: &str, ports: bool) -> String {
    let ports = if ports {
        "  ports: [{name: http, port: 80}]\n"
    } else {
        ""
    };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{mirror.linkerd.io/exported: remote-discovery}}\nspec:\n  clusterIP: None\n  selector: {{app: {name}}}\n{ports}---\n"
    )
}

/// What Linkerd's service mirror does with exports it cannot mirror as they
/// are (remote discovery, headless mirrors off, as link-gen sets it up): a
/// headless Service with ports is mirrored as a ClusterIP Service; one
/// without ports is not mirrored at all: the mirror's ClusterIP Service is
/// refused by the apiserver, and after its retries the service mirror logs
/// that it gave up (no Kubernetes event records it).
#[tokio::test]
#[ignore = "needs two linked local control planes: make e2e"]
async fn a_headless_export_is_mirrored_as_cluster_ip_and_one_without_ports_is_given_up() {
    let ns = BothNs::new("valid");
    let (source_kc, target_kc) = (var("SOURCE_KUBECONFIG"), var("TARGET_KUBECONFIG"));
    let source = kube_of(&source_kc).await;
    let log = var("SERVICE_MIRROR_LOG");
    apply(
        &target_kc,
        &(headless(&ns.name, "with-ports", true) + &headless(&ns.name, "no-ports", false)),
    );
    let refused = format!(
        "Error processing RemoteServiceExported: {{service: Service: {{name: no-ports, namespace: {}",
        ns.name
    );
    support::eventually_async(
        "the service mirror gives up on the export without ports",
        WAIT,
        || {
            let (log, refused) = (&log, &refused);
            async move {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                text.lines().any(|l| {
                    l.contains(refused.as_str())
                        && l.contains("(giving up)")
                        && l.contains("spec.ports: Required value")
                })
            }
        },
    )
    .await;
    // Given up after the mirror of the other was made: only that one exists.
    support::eventually_async("the headless export mirrored", WAIT, || {
        let (source, ns) = (&source, &ns.name);
        async move { mirrors(source, ns).await == set(&[format!("with-ports-{LINK}")]) }
    })
    .await;
    let svcs: Api<Service> = Api::namespaced(source, &ns.name);
    let mirror = svcs.get(&format!("with-ports-{LINK}")).await.unwrap();
    let spec = mirror.spec.unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    let ip = spec.cluster_ip.unwrap_or_default();
    assert!(
        ip != "None" && ip.parse::<std::net::IpAddr>().is_ok(),
        "{ip}"
    );
}

/// The seed's fault case: the target's apiserver restarts. Linkerd's service
/// mirror watches it: afterwards an unexport still removes its mirror, and
/// the source's streams re-converge with the target once it scales again,
/// or, when Linkerd's destination controller logged that it left the new
/// pod's endpoint out (its remote pod cache behind its slice cache after
/// the restart: seen once in CI), once the slice is touched. The mechanism
/// is reproduced deterministically by
/// `an_endpoint_whose_pod_comes_after_its_slice_is_served_only_when_the_slice_changes`.
#[tokio::test]
#[ignore = "needs two linked local control planes: make e2e"]
async fn the_mirror_follows_exports_after_the_targets_apiserver_restarts() {
    let ns = BothNs::new("restart");
    let (source_kc, target_kc) = (var("SOURCE_KUBECONFIG"), var("TARGET_KUBECONFIG"));
    let (source, target) = (kube_of(&source_kc).await, kube_of(&target_kc).await);
    // Two stable exported services; churn creates them and leaves.
    let out = tokio::process::Command::new(BIN)
        .args([
            "churn",
            "--namespace",
            &ns.name,
            "--stable-services",
            "2",
            "--stable-endpoints",
            "2",
            "--export",
            "remote-discovery",
            "--duration",
            "1s",
            "--admin-addr",
            "127.0.0.1:0",
            "--log-level",
            "warn",
        ])
        .env("KUBECONFIG", &target_kc)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mirrored: Vec<String> = (0..2).map(|i| format!("stable-svc-{i}-{LINK}")).collect();
    support::eventually_async("both services mirrored", WAIT, || {
        let (source, ns, want) = (&source, &ns.name, set(&mirrored));
        async move { mirrors(source, ns).await == want }
    })
    .await;
    let services: Vec<String> = (0..2).map(|i| format!("stable-svc-{i}")).collect();
    let running = mirror_client(&ns.name, &services, 2);
    streams_equal_target(&running, &target, &ns.name, &services, 2).await;

    let script = format!("{}/../hack/local-cluster.sh", env!("CARGO_MANIFEST_DIR"));
    let restarted = std::time::Instant::now();
    let status = std::process::Command::new(script)
        .args(["--name", "target", "restart", "kube-apiserver"])
        .status()
        .unwrap();
    assert!(status.success());
    let serving = restarted.elapsed();

    // And the mirror still follows exports.
    let unexported = std::time::Instant::now();
    kubectl_ok(
        &target_kc,
        &[
            "-n",
            &ns.name,
            "label",
            "service",
            "stable-svc-1",
            "mirror.linkerd.io/exported-",
        ],
    );
    support::eventually_async(
        "the unexported mirror removed after the restart",
        AFTER_RESTART,
        || {
            let (source, ns, want) = (&source, &ns.name, set(&mirrored[..1]));
            async move { mirrors(source, ns).await == want }
        },
    )
    .await;
    let unexported = unexported.elapsed();
    // A scale after the restart: the streams follow the target again, but
    // for the late-pod finding: when the controller's remote pod watch
    // resumes after its slice watch, it leaves the new pod's endpoint out
    // (logged) until the slice changes again (one CI run: 2 of 3 addresses
    // for 120 s). `streams_equal_target` then touches the slice, and the
    // streams must converge.
    let scaled = std::time::Instant::now();
    scale_target(&target, &ns.name, "stable-svc-0", 3, AFTER_RESTART).await;
    let sliced = scaled.elapsed();
    streams_equal_target(&running, &target, &ns.name, &services[..1], 2).await;
    let converged = scaled.elapsed();
    let (summary, measured) = running.finish_measured().await;
    eprintln!(
        "after the restart: {summary:?}; stale streams: {}",
        measured.stale_streams
    );
    // For BENCHMARKS: how long each step took after the restart.
    eprintln!(
        "restart timings: apiserver serving again {serving:?}; unexport -> mirror \
         removed {unexported:?}; scale -> target slice {sliced:?}; scale -> \
         source streams converged {converged:?}"
    );
    assert_eq!(summary.failed_streams, 0, "{summary:?}");
}
