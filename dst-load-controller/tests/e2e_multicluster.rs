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

fn kubectl(kubeconfig: &str, args: &[&str]) -> std::process::Output {
    let kubectl = std::env::var("DST_LOCAL_KUBECTL").unwrap_or_else(|_| "kubectl".into());
    std::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap()
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
    let source_domain = var("SOURCE_CLUSTER_DOMAIN");
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

    let dst = var("DESTINATION_ADDR");
    let targets = format!(
        "oscillate-svc-{{0..1}}-{LINK}.{}.svc.{source_domain}:8080",
        ns.name
    );
    let running = support::start_client(support::client_args(&[
        "--destination-addr",
        &dst,
        "--target-services",
        &targets,
        "--namespace",
        &ns.name,
        "--cluster-domain",
        &source_domain,
        "--ground-truth-kubeconfig",
        &target_kc,
        "--ground-truth-link",
        LINK,
        "--streams-per-service",
        "3",
    ]));
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
    for (svc, mirror) in services.iter().zip(&mirrored) {
        let authority = format!("{mirror}.{}.svc.{source_domain}:8080", ns.name);
        support::eventually_async(
            &format!("{authority} equals the target's slices"),
            WAIT,
            || {
                let (target, ns, running, authority) = (&target, &ns.name, &running, &authority);
                async move {
                    let want = support::slice_addrs(target, ns, svc, 8080)
                        .await
                        .unwrap_or_default();
                    let sets = running.sets(authority);
                    !want.is_empty() && sets.len() == 3 && sets.iter().all(|s| *s == want)
                }
            },
        )
        .await;
    }

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
        let out = kubectl(
            &target_kc,
            &["-n", &ns.name, "label", "service", &services[0], label],
        );
        assert!(out.status.success(), "{out:?}");
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
