//! End-to-end tests against the local control plane (`hack/local-cluster.sh
//! up`): a real kube-apiserver, controller-manager, scheduler and KWOK.
//!
//! Ignored by a plain `cargo test`; `make e2e` brings the cluster up and runs
//! them with `--ignored --test-threads=1` (one test restarts the apiserver).
//! Each test works in its own namespace, deletes it, and dumps its state when
//! it fails.

mod support;

use support::free_port;

use std::{
    collections::BTreeSet,
    process::{Output, Stdio},
    time::Duration,
};

use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    core::v1::{Namespace, Node, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api,
    api::{DeleteParams, ListParams, PostParams},
};

const BIN: &str = env!("CARGO_BIN_EXE_dst-load-controller");
const WAIT: Duration = Duration::from_secs(90);

fn cluster_dir() -> String {
    std::env::var("DST_LOCAL_CLUSTER_DIR").expect(
        "DST_LOCAL_CLUSTER_DIR is not set: run `hack/local-cluster.sh up` and source .local-cluster/env, or use `make e2e`",
    )
}

/// A uniquely named namespace, deleted when the test ends; on failure its
/// objects are printed first.
struct TempNs {
    name: String,
}

impl TempNs {
    fn new(prefix: &str) -> Self {
        let name = format!("e2e-{prefix}-{:08x}", rand::random::<u32>());
        Self { name }
    }
}

impl Drop for TempNs {
    fn drop(&mut self) {
        let kubectl = std::env::var("DST_LOCAL_KUBECTL").unwrap_or_else(|_| "kubectl".into());
        if std::thread::panicking() {
            eprintln!("--- state of namespace {} ---", self.name);
            let _ = std::process::Command::new(&kubectl)
                .args(["get", "all,endpointslices", "-o", "wide", "-n", &self.name])
                .status();
            let _ = std::process::Command::new(&kubectl)
                .args(["get", "events", "-n", &self.name])
                .status();
        }
        let _ = std::process::Command::new(&kubectl)
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .stdout(Stdio::null())
            .status();
    }
}

async fn kube() -> kube::Client {
    cluster_dir();
    kube::Client::try_default()
        .await
        .expect("kube client from KUBECONFIG")
}

fn cmd(args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(BIN);
    c.args(args)
        .kill_on_drop(true)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

async fn run(args: &[&str]) -> Output {
    let out = tokio::time::timeout(Duration::from_secs(180), cmd(args).output())
        .await
        .expect("command finished within 180s")
        .unwrap();
    if !out.status.success() {
        panic!(
            "{args:?} exited with {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// `key=value` from churn's summary line.
fn summary_field(out: &Output, key: &str) -> u64 {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("churn summary:"))
        .expect("a summary line");
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} in {line}"))
        .parse()
        .unwrap()
}

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match f().await {
            Ok(()) => return,
            Err(why) if tokio::time::Instant::now() > deadline => panic!("{what}: {why}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Checks that `service` has `replicas` Running pods on KWOK nodes, each with
/// an IP, and that its EndpointSlices list exactly those IPs as ready.
async fn check_service(
    client: &kube::Client,
    ns: &str,
    service: &str,
    replicas: usize,
) -> Result<(), String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let nodes: Api<Node> = Api::all(client.clone());
    let kwok: BTreeSet<String> = nodes
        .list(&ListParams::default().labels("type=kwok"))
        .await
        .map_err(|e| e.to_string())?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    let selector = format!("app.kubernetes.io/name={service}");
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| e.to_string())?;
    let live: Vec<&Pod> = list
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    if live.len() != replicas {
        return Err(format!("{service}: {} pods, want {replicas}", live.len()));
    }
    let mut ips = BTreeSet::new();
    for p in &live {
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        if !kwok.contains(&node) {
            return Err(format!("{service}: pod on '{node}', not a KWOK node"));
        }
        let status = p.status.as_ref().ok_or("no status")?;
        if status.phase.as_deref() != Some("Running") {
            return Err(format!("{service}: pod phase {:?}", status.phase));
        }
        ips.insert(status.pod_ip.clone().ok_or("pod without IP")?);
        let labels = p.metadata.labels.as_ref().ok_or("pod without labels")?;
        if labels
            .get("linkerd.io/control-plane-ns")
            .map(String::as_str)
            != Some("linkerd")
        {
            return Err(format!("{service}: pod not labelled as meshed"));
        }
    }
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
    let ready: BTreeSet<String> = slices
        .list(&lp)
        .await
        .map_err(|e| e.to_string())?
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .flat_map(|e| e.addresses.iter().cloned())
        .collect();
    if ready != ips {
        return Err(format!(
            "{service}: EndpointSlices list {ready:?}, pods have {ips:?}"
        ));
    }
    Ok(())
}

fn owned(labels: Option<&std::collections::BTreeMap<String, String>>, pattern: &str) -> bool {
    labels.is_some_and(|l| {
        l.get("app.kubernetes.io/managed-by").map(String::as_str) == Some("dst-load-controller")
            && l.get("dst-load.linkerd.io/pattern").map(String::as_str) == Some(pattern)
    })
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn churn_creates_placed_meshed_services_with_matching_endpointslices() {
    let client = kube().await;
    let ns = TempNs::new("churn");
    let admin = format!("127.0.0.1:{}", free_port());
    let out = run(&[
        "churn",
        "--namespace",
        &ns.name,
        "--stable-services",
        "2",
        "--stable-endpoints",
        "3",
        "--oscillate-services",
        "2",
        "--oscillate-min-endpoints",
        "1",
        "--oscillate-max-endpoints",
        "4",
        "--oscillate-hold-duration",
        "2s",
        "--oscillate-jitter-percent",
        "20",
        "--cycles",
        "1",
        "--seed",
        "11",
        "--admin-addr",
        &admin,
    ])
    .await;
    assert_eq!(summary_field(&out, "services_created"), 4);
    assert_eq!(summary_field(&out, "scale_events"), 4);
    assert_eq!(summary_field(&out, "cycles_completed"), 2);

    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    for (pattern, name, replicas) in [
        ("stable", "stable-svc-0", 3),
        ("stable", "stable-svc-1", 3),
        ("oscillate", "oscillate-svc-0", 1),
        ("oscillate", "oscillate-svc-1", 1),
    ] {
        let svc = services.get(name).await.unwrap();
        assert!(
            owned(svc.metadata.labels.as_ref(), pattern),
            "{name} labels"
        );
        let port = &svc.spec.unwrap().ports.unwrap()[0];
        assert_eq!((port.name.as_deref(), port.port), (Some("http"), 8080));
        let d = deployments.get(name).await.unwrap();
        assert!(owned(d.metadata.labels.as_ref(), pattern), "{name} labels");
        let ann = d.metadata.annotations.unwrap();
        assert_eq!(ann["dst-load.linkerd.io/replicas"], replicas.to_string());
        let at = &ann["dst-load.linkerd.io/scaled-at"];
        let frac = at.split('.').nth(1).expect("fractional seconds");
        assert_eq!(frac.trim_end_matches('Z').len(), 9, "nanoseconds in {at}");
        at.parse::<jiff::Timestamp>().expect("RFC 3339");
        eventually(&format!("{name} pods and EndpointSlices"), || {
            check_service(&client, &ns.name, name, replicas)
        })
        .await;
    }
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn restarted_churn_adopts_and_cleanup_removes_only_what_churn_owns() {
    let client = kube().await;
    let ns = TempNs::new("adopt");
    let args = |admin: &str| {
        [
            "churn",
            "--namespace",
            &ns.name,
            "--stable-services",
            "2",
            "--stable-endpoints",
            "2",
            "--duration",
            "1s",
            "--admin-addr",
            admin,
        ]
        .map(str::to_string)
    };
    let first_admin = format!("127.0.0.1:{}", free_port());
    let first = run(&args(&first_admin).each_ref().map(String::as_str)).await;
    assert_eq!(summary_field(&first, "services_created"), 2);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let stamp =
        |d: Deployment| d.metadata.annotations.unwrap()["dst-load.linkerd.io/scaled-at"].clone();
    let before = stamp(deployments.get("stable-svc-0").await.unwrap());

    // A second churn with the same flags adopts what exists.
    let second_admin = format!("127.0.0.1:{}", free_port());
    let second = run(&args(&second_admin).each_ref().map(String::as_str)).await;
    assert_eq!(summary_field(&second, "services_created"), 0);
    assert_eq!(summary_field(&second, "api_errors"), 0);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    assert_eq!(
        services
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    assert_eq!(
        deployments
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    // Same size, so the same timestamp: no change is reported that did not happen.
    assert_eq!(
        stamp(deployments.get("stable-svc-0").await.unwrap()),
        before
    );
    // No rollout either: one ReplicaSet per Deployment.
    let rs: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns.name);
    assert_eq!(
        rs.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );
    for name in ["stable-svc-0", "stable-svc-1"] {
        eventually(name, || check_service(&client, &ns.name, name, 2)).await;
    }

    // Someone else's Service in the same namespace must survive cleanup.
    let bystander: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bystander", "labels": {"app": "bystander"}},
        "spec": {"selector": {"app": "bystander"}, "ports": [{"port": 80}]}
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &bystander)
        .await
        .unwrap();
    let out = run(&["cleanup", "--namespace", &ns.name]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("deleted 2 services and 2 deployments"));
    let names: Vec<String> = services
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect();
    assert_eq!(names, ["bystander"]);
    assert!(
        deployments
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // The namespace still holds the bystander, so it stays.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(namespaces.get_opt(&ns.name).await.unwrap().is_some());
    services
        .delete("bystander", &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn cleanup_on_exit_deletes_the_namespace_churn_created() {
    let client = kube().await;
    let ns = TempNs::new("exit");
    let admin = format!("127.0.0.1:{}", free_port());
    run(&[
        "churn",
        "--namespace",
        &ns.name,
        "--stable-services",
        "1",
        "--stable-endpoints",
        "2",
        "--duration",
        "2s",
        "--cleanup-on-exit",
        "--admin-addr",
        &admin,
    ])
    .await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    eventually("namespace gone", || async {
        match namespaces
            .get_opt(&ns.name)
            .await
            .map_err(|e| e.to_string())?
        {
            None => Ok(()),
            Some(n) if n.metadata.deletion_timestamp.is_some() => Ok(()),
            Some(_) => Err("namespace still there".into()),
        }
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn churn_survives_an_apiserver_restart() {
    let client = kube().await;
    let ns = TempNs::new("restart");
    let admin = format!("127.0.0.1:{}", free_port());
    let mut churn = cmd(&[
        "churn",
        "--namespace",
        &ns.name,
        "--oscillate-services",
        "2",
        "--oscillate-min-endpoints",
        "1",
        "--oscillate-max-endpoints",
        "3",
        "--oscillate-hold-duration",
        "1s",
        "--cycles",
        "6",
        "--seed",
        "3",
        "--admin-addr",
        &admin,
    ])
    .spawn()
    .unwrap();
    // Let it create its objects and start oscillating, then restart the apiserver.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    eventually("initial deployments", || async {
        let n = deployments
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .len();
        if n == 2 {
            Ok(())
        } else {
            Err(format!("{n} deployments"))
        }
    })
    .await;
    let script = format!("{}/../hack/local-cluster.sh", env!("CARGO_MANIFEST_DIR"));
    let status = std::process::Command::new(script)
        .args(["restart", "kube-apiserver"])
        .status()
        .unwrap();
    assert!(status.success(), "apiserver restart failed");

    let out = tokio::time::timeout(Duration::from_secs(180), async {
        let mut stdout = String::new();
        use tokio::io::AsyncReadExt;
        churn
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .await
            .unwrap();
        (churn.wait().await.unwrap(), stdout)
    })
    .await
    .expect("churn finished its cycles");
    assert!(out.0.success(), "churn failed after the restart: {}", out.1);
    let summary = out
        .1
        .lines()
        .find(|l| l.starts_with("churn summary:"))
        .unwrap()
        .to_string();
    let field = |k: &str| -> u64 {
        summary
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap()
            .parse()
            .unwrap()
    };
    // Every scale happened despite the outage, and the outage was retried, not fatal.
    assert_eq!(field("scale_events"), 2 * 2 * 6, "{summary}");
    assert_eq!(field("cycles_completed"), 2 * 6, "{summary}");
    assert!(
        field("api_retries") > 0,
        "the restart should have cost retries: {summary}"
    );
    let client = kube().await;
    for name in ["oscillate-svc-0", "oscillate-svc-1"] {
        eventually(name, || check_service(&client, &ns.name, name, 1)).await;
    }
}

async fn wait_ready(admin: &str) {
    let addr: std::net::SocketAddr = admin.parse().unwrap();
    eventually("churn /ready", || async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(b"GET /ready HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut rsp = String::new();
        s.read_to_string(&mut rsp)
            .await
            .map_err(|e| e.to_string())?;
        if rsp.starts_with("HTTP/1.1 200") {
            Ok(())
        } else {
            Err(rsp)
        }
    })
    .await;
}

fn signal(child: &tokio::process::Child, sig: &str) {
    let pid = child.id().expect("running").to_string();
    assert!(
        std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success()
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn sigterm_drains_and_cleans_up_and_a_second_signal_aborts() {
    let client = kube().await;
    let ns = TempNs::new("signal");
    let admin = format!("127.0.0.1:{}", free_port());
    let flags = [
        "churn",
        "--namespace",
        &ns.name,
        "--stable-services",
        "1",
        "--stable-endpoints",
        "2",
        "--oscillate-services",
        "1",
        "--oscillate-hold-duration",
        "1s",
        "--cleanup-on-exit",
        "--admin-addr",
        &admin,
    ];
    let mut churn = cmd(&flags).spawn().unwrap();
    wait_ready(&admin).await;
    signal(&churn, "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(120), churn.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        deployments
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // Again, but a second signal aborts at once, while cleanup waits.
    let admin = format!("127.0.0.1:{}", free_port());
    let flags = [
        "churn",
        "--namespace",
        &ns.name,
        "--stable-services",
        "3",
        "--stable-endpoints",
        "20",
        "--cleanup-on-exit",
        "--admin-addr",
        &admin,
    ];
    let mut churn = cmd(&flags).spawn().unwrap();
    wait_ready(&admin).await;
    signal(&churn, "-INT");
    tokio::time::sleep(Duration::from_millis(50)).await;
    signal(&churn, "-INT");
    let status = tokio::time::timeout(Duration::from_secs(60), churn.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(130), "{status}");
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn client_discovers_services_by_label_and_follows_them() {
    use dst_load_controller::mock::{MockDestination, server::Behavior};
    let client = kube().await;
    let ns = TempNs::new("discover");
    let admin = format!("127.0.0.1:{}", free_port());
    run(&[
        "churn",
        "--namespace",
        &ns.name,
        "--stable-services",
        "3",
        "--stable-endpoints",
        "2",
        "--duration",
        "1s",
        "--admin-addr",
        &admin,
    ])
    .await;
    for name in ["stable-svc-0", "stable-svc-1", "stable-svc-2"] {
        eventually("pods", || check_service(&client, &ns.name, name, 2)).await;
    }

    // A mock Destination fed with the cluster's EndpointSlices.
    let mut registry = prometheus_client::registry::Registry::default();
    let mock = MockDestination::new(Behavior::default(), &mut registry);
    let handle = mock.handle();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dst = listener.local_addr().unwrap().to_string();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(mock.serve(listener, stop.clone()));
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns.name);
    let mut truth = std::collections::BTreeMap::new();
    for i in 0..3 {
        let svc = format!("stable-svc-{i}");
        let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={svc}"));
        let mut addrs: Vec<std::net::SocketAddr> = slices
            .list(&lp)
            .await
            .unwrap()
            .items
            .iter()
            .flat_map(|s| s.endpoints.iter().flat_map(|e| e.addresses.iter()))
            .map(|ip| format!("{ip}:8080").parse().unwrap())
            .collect();
        addrs.sort();
        let authority = format!("{svc}.{}.svc.cluster.local:8080", ns.name);
        handle.set(&authority.parse().unwrap(), addrs.clone());
        truth.insert(authority, addrs);
    }

    let running = support::start_client(support::client_args(&[
        "--destination-addr",
        &dst,
        "--namespace",
        &ns.name,
        "--service-label-selector",
        "app.kubernetes.io/managed-by=dst-load-controller",
        "--streams-per-service",
        "3",
    ]));
    let fleet = running.fleet.clone();
    let (client_stop, task) = (running.stop, running.task);
    let sets_match = |truth: &std::collections::BTreeMap<String, Vec<std::net::SocketAddr>>| {
        let services = fleet.services();
        let watched: Vec<String> = services.iter().map(|s| s.service.clone()).collect();
        if watched != truth.keys().cloned().collect::<Vec<_>>() {
            return Err(format!("watching {watched:?}"));
        }
        for s in &services {
            for (i, slot) in s.slots().iter().enumerate() {
                if slot.addrs() != truth[&s.service] {
                    return Err(format!(
                        "{} stream {i}: {:?} != {:?}",
                        s.service,
                        slot.addrs(),
                        truth[&s.service]
                    ));
                }
            }
        }
        Ok(())
    };
    eventually(
        "every discovered stream holds its EndpointSlice addresses",
        || {
            let r = sets_match(&truth);
            async move { r }
        },
    )
    .await;

    // A Service that goes away stops being watched.
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    services
        .delete("stable-svc-2", &DeleteParams::default())
        .await
        .unwrap();
    truth.remove(&format!("stable-svc-2.{}.svc.cluster.local:8080", ns.name));
    eventually("the deleted service is dropped", || {
        let r = sets_match(&truth);
        async move { r }
    })
    .await;
    client_stop.cancel();
    let summary = task.await.unwrap().unwrap();
    assert_eq!(summary.failed_streams, 0);
    stop.cancel();
}

/// Starts `mock-dst` following `namespace`; returns the child and its gRPC address.
async fn kube_backed_mock(namespace: &str) -> (tokio::process::Child, String) {
    let (port, admin) = (free_port(), free_port());
    let addr = format!("127.0.0.1:{port}");
    let child = cmd(&[
        "mock-dst",
        "-a",
        &addr,
        "--admin-addr",
        &format!("127.0.0.1:{admin}"),
        "--kubernetes-namespace",
        namespace,
    ])
    .spawn()
    .unwrap();
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    (child, addr)
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn run_against_the_cluster_times_every_change_from_scale_to_stream() {
    let client = kube().await;
    let ns = TempNs::new("run");
    let (_mock, dst) = kube_backed_mock(&ns.name).await;
    let report = std::env::temp_dir().join(format!("{}.json", ns.name));
    let out = run(&[
        "run",
        "--destination-addr",
        &dst,
        "--namespace",
        &ns.name,
        "--services",
        "2",
        "--min-endpoints",
        "1",
        "--max-endpoints",
        "4",
        "--streams-per-service",
        "5",
        "--min-hold",
        "2s",
        "--max-hold",
        "2s",
        "--jitter",
        "200ms",
        "--duration",
        "9s",
        "--settle",
        "20s",
        "--seed",
        "5",
        "--admin-addr",
        "127.0.0.1:0",
        "--report",
        report.to_str().unwrap(),
    ])
    .await;
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} in {r}"));
    assert_eq!(n("streams"), 10, "{stdout}");
    assert_eq!(n("errors"), 0, "{stdout}");
    assert_eq!(r["stale_streams"], 0, "{stdout}");
    assert_eq!(n("streams_unconverged"), 0, "{stdout}");
    let changes = n("changes");
    assert!(changes >= 4, "{changes} scale events: {stdout}");
    // Every stream converged to every completed change, timed end to end.
    assert!(n("fanouts_completed") >= 2, "{stdout}");
    let conv = &r["convergence_latency"];
    assert!(
        conv["count"].as_u64().unwrap() >= 5 * n("fanouts_completed"),
        "{stdout}"
    );
    let k8s = &r["kubernetes_leg"];
    let dst_leg = &r["destination_leg"];
    assert!(k8s["count"].as_u64().unwrap() > 0, "{stdout}");
    // The destination leg is part of the end-to-end figure.
    assert!(
        dst_leg["max"].as_f64().unwrap() <= conv["max"].as_f64().unwrap(),
        "{stdout}"
    );
    assert!(
        dst_leg["p50"].as_f64().unwrap() <= conv["p50"].as_f64().unwrap(),
        "{stdout}"
    );
    // The run cleaned up after itself.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        deployments
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    eprintln!("{stdout}");
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn streams_reconnect_and_reconverge_after_the_destination_restarts() {
    let client = kube().await;
    let ns = TempNs::new("dstrestart");
    let admin = format!("127.0.0.1:{}", free_port());
    run(&[
        "churn",
        "--namespace",
        &ns.name,
        "--stable-services",
        "2",
        "--stable-endpoints",
        "3",
        "--duration",
        "1s",
        "--admin-addr",
        &admin,
    ])
    .await;
    for name in ["stable-svc-0", "stable-svc-1"] {
        eventually("pods", || check_service(&client, &ns.name, name, 3)).await;
    }
    let (mut mock, dst) = kube_backed_mock(&ns.name).await;

    let targets = format!("stable-svc-{{0..1}}.{}.svc.cluster.local:8080", ns.name);
    let running = support::start_client(support::client_args(&[
        "--destination-addr",
        &dst,
        "--target-services",
        &targets,
        "--streams-per-service",
        "4",
        "--connections",
        "2",
        "--ground-truth",
        "--backoff-max",
        "1s",
    ]));
    let fleet = running.fleet.clone();
    let metrics = running.metrics.clone();
    let (stop, task) = (running.stop, running.task);
    let converged = || {
        let services = fleet.services();
        let ok = services.len() == 2
            && services.iter().all(|s| {
                let want = s.truth.expected();
                want.len() == 3 && s.slots().iter().all(|slot| slot.addrs() == want)
            });
        async move {
            if ok {
                Ok(())
            } else {
                Err("streams differ from the EndpointSlices".to_string())
            }
        }
    };
    eventually("every stream holds its EndpointSlice addresses", converged).await;

    // Kill the destination, change the cluster while it is down, start it again.
    mock.kill().await.unwrap();
    let port = dst.rsplit_once(':').unwrap().1.to_string();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let patch = serde_json::json!({"spec": {"replicas": 5}});
    deployments
        .patch(
            "stable-svc-0",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    eventually("scaled pods", || {
        check_service(&client, &ns.name, "stable-svc-0", 5)
    })
    .await;
    let admin = free_port();
    let _mock = cmd(&[
        "mock-dst",
        "-a",
        &format!("127.0.0.1:{port}"),
        "--admin-addr",
        &format!("127.0.0.1:{admin}"),
        "--kubernetes-namespace",
        &ns.name,
    ])
    .spawn()
    .unwrap();
    let converged_after = || {
        let services = fleet.services();
        let ok = services.iter().all(|s| {
            let want = s.truth.expected();
            !want.is_empty() && s.slots().iter().all(|slot| slot.addrs() == want)
        }) && services.iter().any(|s| s.truth.expected().len() == 5);
        async move {
            if ok {
                Ok(())
            } else {
                Err("not re-converged".to_string())
            }
        }
    };
    eventually(
        "every stream re-converged after the restart",
        converged_after,
    )
    .await;
    assert!(
        metrics.streams_created.get() > 8,
        "streams should have reconnected"
    );
    stop.cancel();
    let summary = task.await.unwrap().unwrap();
    assert_eq!(summary.failed_streams, 0);
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn unknown_services_are_retried_and_malformed_authorities_end_for_good() {
    let _client = kube().await;
    let ns = TempNs::new("errors");
    let admin = format!("127.0.0.1:{}", free_port());
    run(&[
        "churn",
        "--namespace",
        &ns.name,
        "--stable-services",
        "1",
        "--duration",
        "1s",
        "--admin-addr",
        &admin,
    ])
    .await;
    let (_mock, dst) = kube_backed_mock(&ns.name).await;

    // An unknown Service in the namespace, and a name outside `*.svc.*`.
    let targets = format!(
        "nope.{0}.svc.cluster.local:8080,stable-svc-0.{0}.example.com:8080",
        ns.name
    );
    let running = support::start_client(support::client_args(&[
        "--destination-addr",
        &dst,
        "--target-services",
        &targets,
        "--streams-per-service",
        "2",
        "--backoff-min",
        "20ms",
        "--backoff-max",
        "200ms",
    ]));
    let metrics = running.metrics.clone();
    let (stop, task) = (running.stop, running.task);
    let reason = |r: &str| dst_load_controller::client::metrics::ReasonLabels {
        reason: r.to_string(),
    };
    let m = metrics.clone();
    eventually("NotFound retried, InvalidArgument final", || {
        let not_found = m
            .connection_errors
            .get(&reason("NotFound"))
            .map(|c| c.get())
            .unwrap_or(0);
        let failed = m
            .streams_failed
            .get(&reason("InvalidArgument"))
            .map(|c| c.get())
            .unwrap_or(0);
        let ok = not_found >= 6 && failed == 2;
        async move {
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "NotFound {not_found}, InvalidArgument failures {failed}"
                ))
            }
        }
    })
    .await;
    // Final errors are not retried: exactly one InvalidArgument per stream.
    assert_eq!(
        metrics
            .connection_errors
            .get(&reason("InvalidArgument"))
            .unwrap()
            .get(),
        2
    );
    assert!(
        metrics
            .streams_reset
            .get(&reason("NotFound"))
            .unwrap()
            .get()
            >= 4
    );
    stop.cancel();
    let summary = task.await.unwrap().unwrap();
    assert_eq!(summary.failed_streams, 2);
}
