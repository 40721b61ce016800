//! End-to-end tests against the local control plane (`hack/local-cluster.sh
//! up`): a real kube-apiserver, controller-manager, scheduler and KWOK, and
//! Linkerd's real destination controller (built from source). Every test that
//! talks to a destination server talks to that one.
//!
//! Ignored by a plain `cargo test`; `make e2e` brings the cluster up and runs
//! them with `--ignored --test-threads=1` (one test restarts the apiserver).
//! Each test works in its own namespace, deletes it, and dumps its state when
//! it fails.

mod support;

use support::{count, free_port, kubectl, names_of, slice_addrs};

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::PathBuf,
    process::{Output, Stdio},
    time::Duration,
};

use dst_load_controller::client::{self, Fleet};

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

/// Linkerd's real destination controller, started by `hack/local-cluster.sh up`.
fn destination() -> String {
    std::env::var("DESTINATION_ADDR").expect(
        "DESTINATION_ADDR is not set: source .local-cluster/env (hack/local-cluster.sh up starts Linkerd's destination controller)",
    )
}

/// Runs `hack/local-cluster.sh ARGS` (restart, stop or start a component).
fn local_cluster(args: &[&str]) {
    let script = format!("{}/../hack/local-cluster.sh", env!("CARGO_MANIFEST_DIR"));
    let status = std::process::Command::new(script)
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "hack/local-cluster.sh {args:?} failed");
}

/// The client's error counts by reason, other than `NotFound`: a Service
/// created just before the client starts can be unknown to the controller's
/// informers for a moment on a loaded machine, and the controller answers
/// `NotFound` (retried, as a proxy does). Any other error is a failure.
fn errors_but_not_found(registry: &prometheus_client::registry::Registry) -> Vec<String> {
    connection_errors(registry)
        .into_iter()
        .filter(|(line, _)| !line.contains("reason=\"NotFound\""))
        .map(|(line, _)| line)
        .collect()
}

/// The client's `NotFound` errors (see [`errors_but_not_found`]): each one
/// ended a stream, which the client then re-opened (a reset).
fn not_found_errors(registry: &prometheus_client::registry::Registry) -> u64 {
    connection_errors(registry)
        .iter()
        .filter(|(line, _)| line.contains("reason=\"NotFound\""))
        .map(|(_, v)| v)
        .sum::<f64>() as u64
}

/// The client's non-zero `connection_errors_total` samples, with their values.
fn connection_errors(registry: &prometheus_client::registry::Registry) -> Vec<(String, f64)> {
    support::scrape(registry)
        .lines()
        .filter(|l| l.starts_with("destination_client_connection_errors_total{"))
        .filter_map(|l| {
            let v = l.rsplit_once(' ')?.1.parse::<f64>().ok()?;
            (v > 0.0).then(|| (l.to_string(), v))
        })
        .collect()
}

/// A KWOK node's name: the context token names one, as a proxy's does.
const NODE: &str = "kwok-node-0";

/// Client flags of a proxy on a KWOK node: the context token names the node
/// (the controller looks up its topology zone) and a namespace.
fn proxy_client(flags: &[&str]) -> dst_load_controller::cmd::client::Args {
    let mut all = vec![
        "--node-name",
        NODE,
        "--pod-namespace",
        "default",
        "--pod-name",
        "e2e-proxy",
    ];
    all.extend_from_slice(flags);
    support::client_args(&all)
}

/// The fleet's `services` services as [`support::converge`] checks them
/// (an error when the fleet watches another number of services).
fn watched(fleet: &Fleet, services: usize) -> Result<Vec<support::Watched>, String> {
    let streams = fleet.services();
    if streams.len() != services {
        return Err(format!(
            "{} services watched, want {services}",
            streams.len()
        ));
    }
    streams
        .iter()
        .map(|s| {
            let (host, port) = s.service.rsplit_once(':').ok_or("authority without port")?;
            let mut parts = host.split('.');
            let (name, ns) = (parts.next().unwrap(), parts.next().ok_or("no namespace")?);
            Ok(support::Watched {
                ns: ns.to_string(),
                service: name.to_string(),
                port: port.parse().map_err(|_| "a port")?,
                sets: s.slots().iter().map(|slot| slot.addrs()).collect(),
            })
        })
        .collect()
}

/// Every stream of every service in `fleet` ends holding exactly the
/// addresses its Service's EndpointSlices list, once Kubernetes is done with
/// the service, and there are `services` services with endpoints; within
/// [`WAIT`], but for the late-pod finding (see [`support::converge`]).
async fn converged(what: &str, client: &kube::Client, fleet: &Fleet, services: usize) {
    converged_within(what, WAIT, client, fleet, services).await
}

/// [`converged`] within `wait`.
async fn converged_within(
    what: &str,
    wait: Duration,
    client: &kube::Client,
    fleet: &Fleet,
    services: usize,
) {
    let log = support::ControllerLog::whole(destination_log());
    let truth = support::SliceTruth {
        client,
        kubeconfig: None,
        log: &log,
    };
    support::converge(what, &truth, wait, || watched(fleet, services)).await
}

fn destination_log() -> PathBuf {
    PathBuf::from(cluster_dir()).join("logs/destination.log")
}

/// The destination controller's log from the moment `mark` was called.
struct DestinationLog(support::ControllerLog);

impl DestinationLog {
    fn mark() -> Self {
        Self(support::ControllerLog::mark(destination_log()))
    }

    fn lines(&self) -> Vec<String> {
        self.0.lines()
    }

    /// Lines where the controller dropped an endpoint or could not place a
    /// stream's node.
    fn problems(&self) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| {
                l.contains("Failed to translate")
                    || l.contains("failed to read pod meta ports")
                    || l.contains("Failed to get node topology zone")
            })
            .collect()
    }
}

async fn kube() -> kube::Client {
    cluster_dir();
    kube::Client::try_default()
        .await
        .expect("kube client from KUBECONFIG")
}

/// Our binary. Its clients' context tokens name a KWOK node, as a proxy's do.
fn cmd(args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(BIN);
    c.args(args)
        .env("NODE_NAME", NODE)
        .env("POD_NAMESPACE", "default")
        .env("POD_NAME", "e2e-proxy")
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

/// Runs churn once to create `services` stable services of `endpoints`
/// endpoints each in `ns`; the objects stay when it exits.
async fn stable_services(ns: &str, services: u32, endpoints: u32) {
    churn_stable(ns, services, endpoints, &["--duration", "1s"]).await;
}

/// Runs churn with `services` stable services of `endpoints` endpoints
/// each in `ns` and the flags `extra` (its `--duration` among them), on an
/// admin port of its own; returns its output.
async fn churn_stable(ns: &str, services: u32, endpoints: u32, extra: &[&str]) -> Output {
    let admin = format!("127.0.0.1:{}", free_port());
    let (services, endpoints) = (services.to_string(), endpoints.to_string());
    let mut args = vec![
        "churn",
        "--namespace",
        ns,
        "--stable-services",
        &services,
        "--stable-endpoints",
        &endpoints,
        "--admin-addr",
        &admin,
    ];
    args.extend_from_slice(extra);
    run(&args).await
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

async fn eventually<F, Fut>(what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    eventually_within(what, WAIT, f).await
}

/// After an apiserver restart the controllers' informers back off before
/// they re-list; on a loaded machine that takes longer than [`WAIT`].
const AFTER_RESTART: Duration = Duration::from_secs(240);

async fn eventually_within<F, Fut>(what: &str, wait: Duration, f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    if let Err(why) = support::poll_ok(wait, f).await {
        panic!("{what}: {why}")
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
    let report = std::env::temp_dir().join(format!("{}-churn.json", ns.name));
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
        "--report",
        report.to_str().unwrap(),
    ])
    .await;
    assert_eq!(summary_field(&out, "services_created"), 4);
    assert_eq!(summary_field(&out, "scale_events"), 4);
    assert_eq!(summary_field(&out, "cycles_completed"), 2);
    // --report has the summary line's figures.
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    for k in [
        "services_created",
        "scale_events",
        "cycles_completed",
        "api_errors",
    ] {
        assert_eq!(r[k].as_u64(), Some(summary_field(&out, k)), "{k} in {r}");
    }
    // The seed is a string in JSON (exact above 2^53).
    assert_eq!(r["seed"], "11", "{r}");
    assert_eq!(r["dispatch_lag"]["count"], 4, "{r}");
    let _ = std::fs::remove_file(&report);

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
    assert_eq!(count(&services).await, 2);
    assert_eq!(count(&deployments).await, 2);
    // Same size, so the same timestamp: no change is reported that did not happen.
    assert_eq!(
        stamp(deployments.get("stable-svc-0").await.unwrap()),
        before
    );
    // No rollout either: one ReplicaSet per Deployment.
    let rs: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns.name);
    assert_eq!(count(&rs).await, 2);
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
    // A dry run lists exactly churn's objects, and deletes nothing.
    let out = run(&["cleanup", "-n", &ns.name, "--dry-run"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "would delete 4 objects (dry run: nothing deleted)",
            "  service/stable-svc-0",
            "  service/stable-svc-1",
            "  deployment/stable-svc-0",
            "  deployment/stable-svc-1",
        ],
        "{stdout}"
    );
    assert_eq!(count(&services).await, 3);
    assert_eq!(count(&deployments).await, 2);
    let out = run(&["cleanup", "--namespace", &ns.name]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("deleted 2 services and 2 deployments"));
    assert_eq!(names_of(&services).await, ["bystander"]);
    assert_eq!(count(&deployments).await, 0);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    assert_eq!(count(&pods).await, 0);
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
    // Streams from Linkerd's destination controller, through the restart.
    let targets = format!("oscillate-svc-{{0..1}}.{}.svc.cluster.local:8080", ns.name);
    let running = support::start_client(proxy_client(&[
        "--destination-addr",
        &destination(),
        "--target-services",
        &targets,
        "--streams-per-service",
        "3",
        "--connections",
        "2",
        "--ground-truth",
        "--backoff-max",
        "1s",
    ]));
    local_cluster(&["restart", "kube-apiserver"]);

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
        eventually_within(name, AFTER_RESTART, || {
            check_service(&client, &ns.name, name, 1)
        })
        .await;
    }
    // Every stream ends on the set the EndpointSlices list.
    let fleet = running.fleet.clone();
    converged_within(
        "every stream ends on the right set",
        AFTER_RESTART,
        &client,
        &fleet,
        2,
    )
    .await;
    let summary = running.finish().await;
    assert_eq!(summary.failed_streams, 0);
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
    assert_eq!(count(&deployments).await, 0);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    assert_eq!(count(&pods).await, 0);

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
    let client = kube().await;
    let ns = TempNs::new("discover");
    let log = DestinationLog::mark();
    stable_services(&ns.name, 3, 2).await;
    for name in ["stable-svc-0", "stable-svc-1", "stable-svc-2"] {
        eventually("pods", || check_service(&client, &ns.name, name, 2)).await;
    }

    let dst = destination();
    let running = support::start_client(proxy_client(&[
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
    converged(
        "every discovered stream holds its EndpointSlice addresses",
        &client,
        &fleet,
        3,
    )
    .await;

    // A Service that goes away stops being watched.
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    services
        .delete("stable-svc-2", &DeleteParams::default())
        .await
        .unwrap();
    converged("the deleted service is dropped", &client, &fleet, 2).await;
    let summary = running.finish().await;
    assert_eq!(summary.failed_streams, 0);
    assert_eq!(log.problems(), Vec::<String>::new());
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn the_real_destination_serves_every_churn_pod_with_identity_and_protocol_hints() {
    use linkerd2_proxy_api::destination::{
        GetDestination, destination_client::DestinationClient, protocol_hint, tls_identity, update,
    };
    let client = kube().await;
    let ns = TempNs::new("meshed");
    let log = DestinationLog::mark();
    let admin = format!("127.0.0.1:{}", free_port());
    run(&[
        "churn",
        "--namespace",
        &ns.name,
        "--stable-services",
        "3",
        "--stable-endpoints",
        "3",
        "--oscillate-services",
        "2",
        "--oscillate-min-endpoints",
        "1",
        "--oscillate-max-endpoints",
        "4",
        "--oscillate-hold-duration",
        "1s",
        "--cycles",
        "2",
        "--seed",
        "17",
        "--admin-addr",
        &admin,
    ])
    .await;
    for (name, n) in [
        ("stable-svc-0", 3),
        ("stable-svc-1", 3),
        ("stable-svc-2", 3),
        ("oscillate-svc-0", 1),
        ("oscillate-svc-1", 1),
    ] {
        eventually("pods", || check_service(&client, &ns.name, name, n)).await;
    }
    let dst = destination();
    let targets = format!(
        "stable-svc-{{0..2}}.{0}.svc.cluster.local:8080,oscillate-svc-{{0..1}}.{0}.svc.cluster.local:8080",
        ns.name
    );
    let running = support::start_client(proxy_client(&[
        "--destination-addr",
        &dst,
        "--target-services",
        &targets,
        "--streams-per-service",
        "4",
        "--connections",
        "3",
        "--ground-truth",
    ]));
    let fleet = running.fleet.clone();
    converged(
        "every stream holds exactly its EndpointSlice addresses",
        &client,
        &fleet,
        5,
    )
    .await;

    // What a proxy gets for one of them: every endpoint with its pod's TLS
    // identity and a protocol hint, as for a proxy-injected workload.
    let authority = format!("stable-svc-0.{}.svc.cluster.local:8080", ns.name);
    let mut dst_client = DestinationClient::connect(format!("http://{dst}"))
        .await
        .unwrap();
    let token = format!(r#"{{"ns":"default","nodeName":"{NODE}","pod":"e2e-proxy"}}"#);
    let mut updates = dst_client
        .get(GetDestination {
            scheme: "k8s".into(),
            path: authority.clone(),
            context_token: token,
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(WAIT, updates.message())
        .await
        .expect("a first update")
        .unwrap()
        .expect("an open stream");
    let Some(update::Update::Add(add)) = first.update else {
        panic!("first update is not an Add: {first:?}");
    };
    assert_eq!(add.addrs.len(), 3, "{add:?}");
    let identity = format!(
        "default.{}.serviceaccount.identity.linkerd.cluster.local",
        ns.name
    );
    for a in &add.addrs {
        let tls = a.tls_identity.as_ref().expect("a TLS identity");
        match &tls.strategy {
            Some(tls_identity::Strategy::DnsLikeIdentity(id)) => assert_eq!(id.name, identity),
            other => panic!("identity strategy {other:?}"),
        }
        let hint = a.protocol_hint.as_ref().expect("a protocol hint");
        assert!(
            matches!(hint.protocol, Some(protocol_hint::Protocol::H2(_))),
            "{hint:?}"
        );
        assert_eq!(
            hint.opaque_transport.as_ref().map(|t| t.inbound_port),
            Some(4143),
            "transport-header mode names the proxy's inbound port"
        );
        assert_eq!(a.metric_labels["control_plane_ns"], "linkerd");
        assert_eq!(a.metric_labels["deployment"], "stable-svc-0");
    }

    let summary = running.finish().await;
    assert_eq!(summary.failed_streams, 0);
    assert_eq!(summary.dropped().count(), 0, "{summary}");
    assert_eq!(
        log.problems(),
        Vec::<String>::new(),
        "the controller dropped endpoints"
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn meshed_pods_without_a_proxy_container_are_dropped_and_the_summary_says_so() {
    // What churn did before it wrote the injected pod shape: the label alone.
    let client = kube().await;
    let ns = TempNs::new("dropped");
    let log = DestinationLog::mark();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut n = Namespace::default();
    n.metadata.name = Some(ns.name.clone());
    namespaces.create(&PostParams::default(), &n).await.unwrap();
    let manifest: serde_json::Value = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "label-only", "namespace": ns.name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "label-only"}},
            "template": {
                "metadata": {"labels": {
                    "app.kubernetes.io/name": "label-only",
                    "linkerd.io/control-plane-ns": "linkerd"
                }},
                "spec": {
                    "nodeSelector": {"type": "kwok"},
                    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                        "ports": [{"name": "http", "containerPort": 8080}]}]
                }
            }
        }
    });
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(manifest).unwrap(),
        )
        .await
        .unwrap();
    let svc: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "label-only", "namespace": ns.name},
        "spec": {"selector": {"app.kubernetes.io/name": "label-only"},
                 "ports": [{"name": "http", "port": 8080, "targetPort": "http"}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
    eventually("two ready endpoints", || async {
        let n = slice_addrs(&client, &ns.name, "label-only", 8080)
            .await?
            .len();
        if n == 2 {
            Ok(())
        } else {
            Err(format!("{n} endpoints"))
        }
    })
    .await;

    let authority = format!("label-only.{}.svc.cluster.local:8080", ns.name);
    let running = support::start_client(proxy_client(&[
        "--destination-addr",
        &destination(),
        "--target-services",
        &authority,
        "--streams-per-service",
        "2",
        "--ground-truth",
    ]));
    // Long enough for the controller to have answered a served service many
    // times over; the truth must be known by then.
    let fleet = running.fleet.clone();
    eventually("the ground truth is read", || {
        let known = fleet
            .services()
            .iter()
            .all(|s| s.truth.expected().len() == 2);
        async move {
            if known {
                Ok(())
            } else {
                Err("not yet".to_string())
            }
        }
    })
    .await;
    eventually("the controller logged the dropped endpoints", || {
        let n = log.problems().len();
        async move {
            if n >= 2 {
                Ok(())
            } else {
                Err(format!("{n} lines"))
            }
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let summary = running.finish().await;
    let dropped: Vec<_> = summary.dropped().collect();
    assert_eq!(dropped, [(authority.as_str(), 2)], "{summary}");
    let text = summary.to_string();
    assert!(text.contains("NEVER got an endpoint"), "{text}");
    assert!(
        log.problems()
            .iter()
            .all(|l| l.contains("failed to read pod meta ports")),
        "{:?}",
        log.problems()
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn run_against_the_cluster_times_every_change_from_scale_to_stream() {
    let client = kube().await;
    let ns = TempNs::new("run");
    let log = DestinationLog::mark();
    let dst = destination();
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
        // Exact gates instead of the scenario's latency targets: on a busy
        // machine the apiserver's leg alone can exceed them (benchmarks'
        // business, not a test's).
        "--slo",
        "stale_streams==0",
        "--slo",
        "errors==0",
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
    // A completed fan-out is 5 convergences; a lagging stream found holding
    // the new truth with a set from before the change converged untimed
    // (on a loaded machine: 105 timed of 110 in one run).
    let untimed = n("convergences_untimed");
    assert!(
        conv["count"].as_u64().unwrap() + untimed >= 5 * n("fanouts_completed"),
        "untimed {untimed}: {stdout}"
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
    assert_eq!(count(&deployments).await, 0);
    assert_eq!(r["services_never_served"], 0, "{stdout}");
    assert_eq!(log.problems(), Vec::<String>::new());
    eprintln!("{stdout}");
}

/// The late-pod finding in one cluster (BENCHMARKS.md; e2e_multicluster
/// reproduces it across clusters): Linkerd's destination controller builds
/// each endpoint from the EndpointSlice and the slice's pod; an endpoint
/// whose pod is not in its pod cache yet is left out (`Unable to create new
/// address`), and nothing adds it when the pod arrives: the streams stay
/// without it (the client reports them stale) until the slice changes.
#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn an_endpoint_whose_pod_comes_after_its_slice_is_served_only_when_the_slice_changes() {
    let client = kube().await;
    let ns = TempNs::new("late");
    let log = DestinationLog::mark();
    stable_services(&ns.name, 1, 1).await;
    eventually("pods", || {
        check_service(&client, &ns.name, "stable-svc-0", 1)
    })
    .await;
    let target = format!("stable-svc-0.{}.svc.cluster.local:8080", ns.name);
    let running = support::start_client(proxy_client(&[
        "--destination-addr",
        &destination(),
        "--target-services",
        &target,
        "--streams-per-service",
        "2",
        "--ground-truth",
    ]));
    let fleet = running.fleet.clone();
    converged(
        "every stream holds its EndpointSlice addresses",
        &client,
        &fleet,
        1,
    )
    .await;

    // A second slice of the service naming `late-pod`, before it exists.
    let get_json = |what: &[&str]| -> serde_json::Value {
        let args: Vec<&str> = ["-n", ns.name.as_str(), "get"]
            .into_iter()
            .chain(what.iter().copied())
            .chain(["-o", "json"])
            .collect();
        serde_json::from_str(&kubectl(&args, None)).unwrap()
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
    kubectl(&["apply", "-f", "-"], Some(&late.to_string()));
    eventually("the truth has both slices", || async {
        match slice_addrs(&client, &ns.name, "stable-svc-0", 8080).await {
            Ok(a) if a.len() == 2 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Then the pod: a copy of churn's meshed pod, out of its Deployment.
    let pods = get_json(&["pods", "-l", "app.kubernetes.io/name=stable-svc-0"]);
    let pod = support::late_pod(&pods["items"][0]);
    kubectl(&["apply", "-f", "-"], Some(&pod.to_string()));
    // Past the client's staleness grace (10 s) both streams are reported
    // stale, each still without the late pod's address.
    let stale = || {
        let text = support::scrape(&running.registry);
        support::sample(&text, "destination_client_stale_streams", &[]).unwrap_or(0.0)
    };
    eventually("both streams reported stale", || {
        let v = stale();
        async move {
            if v == 2.0 {
                Ok(())
            } else {
                Err(format!("{v} stale"))
            }
        }
    })
    .await;
    let sets = running.sets(&target);
    assert!(
        sets.len() == 2 && sets.iter().all(|s| s.len() == 1),
        "{sets:?}"
    );
    // The slice changes: the controller builds the address.
    kubectl(
        &[
            "-n",
            &ns.name,
            "label",
            "endpointslice",
            "stable-svc-0-late",
            "touched=yes",
        ],
        None,
    );
    converged(
        "every stream holds both slices' addresses",
        &client,
        &fleet,
        1,
    )
    .await;
    let missed = format!("unable to fetch pod {}/late-pod", ns.name);
    assert!(
        log.lines()
            .iter()
            .any(|l| l.contains("Unable to create new address") && l.contains(&missed)),
        "no '{missed}' in the controller's log"
    );
    let summary = running.finish().await;
    assert_eq!((summary.resets, summary.errors), (0, 0), "{summary:?}");
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn streams_reconnect_and_reconverge_after_the_destination_restarts() {
    let client = kube().await;
    let ns = TempNs::new("dstrestart");
    stable_services(&ns.name, 2, 3).await;
    for name in ["stable-svc-0", "stable-svc-1"] {
        eventually("pods", || check_service(&client, &ns.name, name, 3)).await;
    }
    let targets = format!("stable-svc-{{0..1}}.{}.svc.cluster.local:8080", ns.name);
    let running = support::start_client(proxy_client(&[
        "--destination-addr",
        &destination(),
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
    converged(
        "every stream holds its EndpointSlice addresses",
        &client,
        &fleet,
        2,
    )
    .await;

    // Kill Linkerd's destination controller, change the cluster while it is
    // down, start it again.
    local_cluster(&["stop", "destination"]);
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
    local_cluster(&["start", "destination"]);
    converged(
        "every stream re-converged after the restart",
        &client,
        &fleet,
        2,
    )
    .await;
    let five = fleet
        .services()
        .iter()
        .filter(|s| s.truth.expected().len() == 5)
        .count();
    assert_eq!(five, 1);
    assert!(
        metrics.streams_created.get() > 8,
        "streams should have reconnected"
    );
    let summary = running.finish().await;
    assert_eq!(summary.failed_streams, 0);
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn unknown_services_are_retried_and_malformed_authorities_end_for_good() {
    let _client = kube().await;
    let ns = TempNs::new("errors");
    stable_services(&ns.name, 1, 1).await;
    let dst = destination();

    // An unknown Service in the namespace, and a name outside `*.svc.*`.
    let targets = format!(
        "nope.{0}.svc.cluster.local:8080,stable-svc-0.{0}.example.com:8080",
        ns.name
    );
    let running = support::start_client(proxy_client(&[
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
        class: "healthy",
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

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_service_without_endpoints_gets_silence_and_a_malformed_context_token_is_served() {
    use dst_load_controller::client::endpoints::UpdateKind;
    let client = kube().await;
    let ns = TempNs::new("noeps");
    let log = DestinationLog::mark();
    stable_services(&ns.name, 1, 2).await;
    eventually("pods", || {
        check_service(&client, &ns.name, "stable-svc-0", 2)
    })
    .await;
    // A Service whose selector matches no pod: it exists, with no endpoints.
    let empty: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "empty", "namespace": ns.name},
        "spec": {"selector": {"app.kubernetes.io/name": "nothing"},
                 "ports": [{"name": "http", "port": 8080}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &empty)
        .await
        .unwrap();
    let empty_authority = format!("empty.{}.svc.cluster.local:8080", ns.name);
    let served_authority = format!("stable-svc-0.{}.svc.cluster.local:8080", ns.name);

    // A context token that is not JSON: the controller logs it and serves anyway.
    let running = support::start_client(support::client_args(&[
        "--destination-addr",
        &destination(),
        "--target-services",
        &format!("{empty_authority},{served_authority}"),
        "--streams-per-service",
        "2",
        "--context-token",
        "not-a-token",
    ]));
    let (fleet, metrics) = (running.fleet.clone(), running.metrics.clone());
    eventually("both services' streams started", || {
        let n = fleet.services().len();
        async move { if n == 2 { Ok(()) } else { Err(format!("{n}")) } }
    })
    .await;
    let served = fleet
        .services()
        .into_iter()
        .find(|s| s.service == served_authority)
        .unwrap();
    let whole_log = support::ControllerLog::whole(destination_log());
    let truth = support::SliceTruth {
        client: &client,
        kubeconfig: None,
        log: &whole_log,
    };
    support::converge(
        "the malformed token's streams are served",
        &truth,
        WAIT,
        || {
            Ok(vec![support::Watched {
                ns: ns.name.clone(),
                service: "stable-svc-0".into(),
                port: 8080,
                sets: served.slots().iter().map(|s| s.addrs()).collect(),
            }])
        },
    )
    .await;
    // Linkerd answers a Service without endpoints with silence: no update
    // of any kind (no `no_endpoints`), and no error; the stream stays open.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let registry = running.registry.clone();
    let summary = running.finish().await;
    assert_eq!(
        errors_but_not_found(&registry),
        Vec::<String>::new(),
        "{summary}"
    );
    assert_eq!(summary.failed_streams, 0, "{summary}");
    for kind in UpdateKind::ALL {
        assert_eq!(
            metrics
                .update_counter(&empty_authority, kind, client::faults::Class::Healthy)
                .get(),
            0,
            "{kind:?} for a service without endpoints"
        );
    }
    // No stream was reset but for the `NotFound` of a Service the
    // controller's informer had not seen yet (the `empty` Service is created
    // just before the client; under load the controller answered two
    // streams `NotFound` once, and they were re-opened).
    assert_eq!(summary.resets, not_found_errors(&registry), "{summary}");
    assert!(
        log.lines()
            .iter()
            .any(|l| l.contains("context token not-a-token is invalid")),
        "the controller should log the malformed token"
    );
}

/// Every plan scenario, run against Linkerd's real destination controller,
/// with its proxies scaled down (`--scale`) and its endpoint counts cut to
/// what two cores carry next to the control plane. Counts are exact; the
/// latency gates are benchmarks (BENCHMARKS.md), so the gates asked here are
/// the correctness ones.
#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn every_plan_scenario_runs_against_the_real_destination() {
    let client = kube().await;
    let dst = destination();
    let log = DestinationLog::mark();
    // (scenario, --scale, overrides, services, streams per service, oscillates)
    type Case<'a> = (&'a str, &'a str, &'a [&'a str], u64, u64, bool);
    let cases: [Case; 7] = [
        (
            "baseline",
            "0.05",
            &[
                "--services",
                "3",
                "--min-endpoints",
                "4",
                "--max-endpoints",
                "4",
            ],
            3,
            5,
            false,
        ),
        (
            "small-oscillation",
            "0.05",
            &[
                "--services",
                "3",
                "--min-endpoints",
                "2",
                "--max-endpoints",
                "6",
            ],
            3,
            5,
            true,
        ),
        (
            "large-rollout",
            "0.01",
            &["--min-endpoints", "10", "--max-endpoints", "20"],
            1,
            10,
            true,
        ),
        (
            "many-services",
            "0.03",
            &[
                "--services",
                "8",
                "--min-endpoints",
                "2",
                "--max-endpoints",
                "3",
            ],
            8,
            3,
            true,
        ),
        (
            "red-line",
            "0.01",
            &[
                "--services",
                "3",
                "--min-endpoints",
                "4",
                "--max-endpoints",
                "8",
            ],
            3,
            5,
            true,
        ),
        // Every address replaced every 2s (the min hold is the interval),
        // and one ephemeral service (4s alive, 1s gone): 3 authorities.
        (
            "rolling-restart",
            "0.05",
            &["--services", "2", "--min-endpoints", "3"],
            3,
            5,
            true,
        ),
        // 2 StatefulSets of 2..4 pods: 6 authorities (each service and its
        // first 2 pods by name), 5 streams each.
        (
            "statefulset",
            "0.25",
            &[
                "--services",
                "2",
                "--min-endpoints",
                "2",
                "--max-endpoints",
                "4",
            ],
            6,
            5,
            true,
        ),
    ];
    for (i, (scenario, scale, overrides, services, per_service, oscillates)) in
        cases.into_iter().enumerate()
    {
        let ns = TempNs::new(&format!("scn{i}"));
        let report = std::env::temp_dir().join(format!("{}.json", ns.name));
        let seed = (100 + i).to_string();
        let mut args = vec![
            "run",
            "--scenario",
            scenario,
            "--scale",
            scale,
            "--destination-addr",
            &dst,
            "--namespace",
            &ns.name,
            "--min-hold",
            "2s",
            "--max-hold",
            "2s",
            "--jitter",
            "200ms",
            "--duration",
            "8s",
            "--settle",
            "60s",
            "--seed",
            &seed,
            "--admin-addr",
            "127.0.0.1:0",
            "--slo",
            "stale_streams==0",
            "--slo",
            "errors==0",
            "--slo",
            "unconverged_streams==0",
            "--report",
            report.to_str().unwrap(),
        ];
        args.extend_from_slice(overrides);
        let out = run(&args).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let r: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} in {r}"));
        assert_eq!(n("streams"), services * per_service, "{scenario}: {stdout}");
        assert_eq!(n("errors"), 0, "{scenario}: {stdout}");
        assert_eq!(r["stale_streams"], 0, "{scenario}: {stdout}");
        assert_eq!(n("streams_unconverged"), 0, "{scenario}: {stdout}");
        assert_eq!(n("services_never_served"), 0, "{scenario}: {stdout}");
        assert!(
            r["slos"]
                .as_array()
                .unwrap()
                .iter()
                .all(|v| v["pass"] == true),
            "{scenario}: {stdout}"
        );
        if oscillates {
            assert!(n("changes") >= services, "{scenario}: {stdout}");
            assert!(n("fanouts_completed") >= 1, "{scenario}: {stdout}");
            let conv = &r["convergence_latency"];
            assert!(
                conv["count"].as_u64().unwrap() >= per_service,
                "{scenario}: {stdout}"
            );
        }
        // The run cleaned up after itself.
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
        assert_eq!(count(&deployments).await, 0, "{scenario}");
        let statefulsets: Api<k8s_openapi::api::apps::v1::StatefulSet> =
            Api::namespaced(client.clone(), &ns.name);
        assert_eq!(count(&statefulsets).await, 0, "{scenario}");
        eprintln!("{scenario}:\n{stdout}");
    }
    assert_eq!(log.problems(), Vec::<String>::new());
}

/// `dashboards/external-metrics.txt` names the metrics the dashboards take
/// from Linkerd's destination controller; each must exist in a real scrape of
/// the controller once it has served streams.
#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn dashboard_metrics_from_the_destination_controller_exist_in_its_scrape() {
    let client = kube().await;
    let ns = TempNs::new("scrape");
    stable_services(&ns.name, 1, 1).await;
    eventually("pods", || {
        check_service(&client, &ns.name, "stable-svc-0", 1)
    })
    .await;
    let running = support::start_client(proxy_client(&[
        "--destination-addr",
        &destination(),
        "--target-services",
        &format!("stable-svc-0.{}.svc.cluster.local:8080", ns.name),
    ]));
    let fleet = running.fleet.clone();
    converged("served", &client, &fleet, 1).await;
    // Scraped while the stream is open: per-subscription series
    // (`endpoints_subscribers`) go when their last subscriber does.
    let addr = std::env::var("DESTINATION_METRICS_ADDR").expect("DESTINATION_METRICS_ADDR");
    let scrape = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    running.finish().await;
    let exported = support::names(&scrape);
    let from_controller: BTreeSet<String> = support::external_metrics()
        .into_iter()
        .filter(|(_, source)| source.starts_with("Linkerd destination controller"))
        .map(|(name, _)| name)
        .collect();
    assert!(from_controller.len() >= 5, "{from_controller:?}");
    let mut used = BTreeSet::new();
    for (path, queries) in support::dashboard_queries() {
        for q in queries {
            for name in support::promql_metrics(&q) {
                if from_controller.contains(&name) {
                    used.insert(name.clone());
                    assert!(
                        exported.contains(&name),
                        "{}: `{q}` queries {name}, which Linkerd's destination controller does not export",
                        path.display()
                    );
                }
            }
        }
    }
    assert_eq!(used, from_controller, "documented but unused");
}

/// What users look at in Grafana during a scenario: a real Prometheus (from
/// the build cache, `DST_PROMETHEUS`) scrapes churn, the client, Linkerd's
/// destination controller and the apiserver during a short cluster run, with
/// the labels a PodMonitor would give them. Every panel's query, evaluated
/// through Prometheus's HTTP API, must return data, but for those on
/// metrics that only the kubelet (cAdvisor) exports (named so in
/// dashboards/external-metrics.txt) and `churn_api_errors_total`, which
/// has a series only once an API call has failed.
#[tokio::test]
#[ignore = "needs the local control plane and DST_PROMETHEUS: make e2e"]
async fn every_dashboard_panel_has_data_during_a_cluster_run() {
    let client = kube().await;
    let ns = TempNs::new("grafana");
    let (churn_admin, client_admin) = (free_port(), free_port());
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
        "2s",
        "--duration",
        "120s",
        "--seed",
        "21",
        "--admin-addr",
        &format!("127.0.0.1:{churn_admin}"),
    ])
    .spawn()
    .unwrap();
    wait_ready(&format!("127.0.0.1:{churn_admin}")).await;
    // A Service without endpoints: Linkerd stays silent, the client times out.
    let empty: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "empty", "namespace": ns.name},
        "spec": {"selector": {"app.kubernetes.io/name": "nothing"},
                 "ports": [{"name": "http", "port": 8080}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &empty)
        .await
        .unwrap();
    // Two churned services, plus one unknown (NotFound: errors, resets), one
    // malformed (InvalidArgument: failed streams) and the silent one.
    let targets = format!(
        "oscillate-svc-{{0..1}}.{0}.svc.cluster.local:8080,nope.{0}.svc.cluster.local:8080,x.{0}.example.com:8080,empty.{0}.svc.cluster.local:8080",
        ns.name
    );
    let mut client_proc = cmd(&[
        "client",
        "--destination-addr",
        &destination(),
        "--target-services",
        &targets,
        "--streams-per-service",
        "2",
        "--ground-truth",
        "--initial-timeout",
        "2s",
        "--backoff-max",
        "2s",
        "--duration",
        "120s",
        "--admin-addr",
        &format!("127.0.0.1:{client_admin}"),
    ])
    .spawn()
    .unwrap();

    // Prometheus, with the labels kube-prometheus-stack's PodMonitors give.
    let token_file = std::env::temp_dir().join(format!("{}-token", ns.name));
    std::fs::write(&token_file, "dst-load-local-admin-token").unwrap();
    let apiserver = std::env::var("DST_LOCAL_APISERVER")
        .unwrap()
        .trim_start_matches("https://")
        .to_string();
    let controller = std::env::var("DESTINATION_METRICS_ADDR").unwrap();
    let config = format!(
        r#"global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: churn
    static_configs:
      - targets: ['127.0.0.1:{churn_admin}']
        labels: {{namespace: {ns}, container: churn, pod: dst-load-test-churn}}
  - job_name: client
    static_configs:
      - targets: ['127.0.0.1:{client_admin}']
        labels: {{namespace: {ns}, container: client, pod: dst-load-test-client}}
  - job_name: destination
    static_configs:
      - targets: ['{controller}']
        labels: {{namespace: linkerd, container: destination, pod: linkerd-destination-local}}
  - job_name: apiserver
    scheme: https
    tls_config: {{ca_file: {ca}}}
    authorization: {{credentials_file: {token}}}
    static_configs:
      - targets: ['{apiserver}']
"#,
        ns = ns.name,
        token = token_file.display(),
        ca = std::env::var("DST_LOCAL_APISERVER_CA").expect("DST_LOCAL_APISERVER_CA"),
    );
    let prometheus = support::Prometheus::start(&config).await;
    let url = prometheus.url.clone();
    let http = reqwest::Client::new();
    let query = |q: String| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let v: serde_json::Value = http
                .get(format!("{url}/api/v1/query"))
                .query(&[("query", q)])
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            if v["status"] != "success" {
                return Err(format!("{v}"));
            }
            Ok::<_, String>(v["data"]["result"].as_array().cloned().unwrap_or_default())
        }
    };
    // Every target scraped, and the client measured changes end to end.
    eventually("every target up", || {
        let q = query("sum(up)".to_string());
        async move {
            let r = q.await?;
            let up = r
                .first()
                .and_then(|s| s["value"][1].as_str())
                .unwrap_or("0")
                .to_string();
            if up == "4" {
                Ok(())
            } else {
                Err(format!("up={up}"))
            }
        }
    })
    .await;
    eventually("changes measured through Prometheus", || {
        let q = query(format!(
            "sum(destination_client_destination_leg_seconds_count{{namespace=\"{}\"}}) > 0",
            ns.name
        ));
        async move {
            if q.await?.is_empty() {
                Err("no samples yet".into())
            } else {
                Ok(())
            }
        }
    })
    .await;
    // Two more scrapes, so every rate() over the window has two points.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let external = support::external_metrics();
    let kubelet_only: BTreeSet<String> = external
        .iter()
        .filter(|(_, source)| source.starts_with("kubelet"))
        .map(|(name, _)| name.clone())
        .collect();
    assert!(!kubelet_only.is_empty());
    let event_only = ["churn_api_errors_total"];
    let (mut checked, mut empty) = (0, Vec::new());
    for (path, queries) in support::dashboard_queries() {
        for q in queries {
            let names = support::promql_metrics(&q);
            if names
                .iter()
                .any(|n| kubelet_only.contains(n) || event_only.contains(&n.as_str()))
            {
                continue;
            }
            let concrete = q
                .replace("$namespace", &ns.name)
                .replace("$pod", ".*")
                .replace("$__rate_interval", "1m");
            checked += 1;
            if query(concrete.clone()).await.unwrap().is_empty() {
                empty.push(format!("{}: {concrete}", path.display()));
            }
        }
    }
    assert!(checked >= 30, "only {checked} queries checked");
    assert!(
        empty.is_empty(),
        "panels without data during a cluster run:\n{}",
        empty.join("\n")
    );
    let _ = churn.start_kill();
    let _ = client_proc.start_kill();
    let _ = std::fs::remove_file(&token_file);
}

/// Finding: Linkerd's destination controller serves gRPC with gRPC-Go's
/// default keep-alive enforcement (a client may ping at most every 5
/// minutes). A client that pings every 10 s, reaching the controller with no
/// proxy in front of it, gets GOAWAY `too_many_pings` and loses every stream
/// on the connection. The client's default interval (5 min) keeps them.
#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn frequent_keepalive_pings_get_every_stream_reset_by_the_controller() {
    let client = kube().await;
    let ns = TempNs::new("pings");
    stable_services(&ns.name, 1, 2).await;
    eventually("pods", || {
        check_service(&client, &ns.name, "stable-svc-0", 2)
    })
    .await;
    let target = format!("stable-svc-0.{}.svc.cluster.local:8080", ns.name);
    let dst = destination();
    let flags = |keepalive: &'static str| {
        proxy_client(&[
            "--destination-addr",
            &dst,
            "--target-services",
            &target,
            "--streams-per-service",
            "4",
            "--keepalive-interval",
            keepalive,
            "--backoff-max",
            "1s",
        ])
    };
    let pinging = support::start_client(flags("10s"));
    let quiet = support::start_client(flags("5m"));
    // The GOAWAY ends the streams as transport errors or `Unavailable`,
    // depending on where each stream is when the connection closes.
    let m = pinging.metrics.clone();
    eventually_within(
        "the 10s-pinging connection is closed by the controller",
        Duration::from_secs(180),
        || {
            let resets = m.resets_total.get();
            async move {
                if resets >= 4 {
                    Ok(())
                } else {
                    Err(format!("{resets} resets"))
                }
            }
        },
    )
    .await;
    // Every stream came back and holds its endpoints again.
    let fleet = pinging.fleet.clone();
    converged(
        "the pinging client's streams re-converged",
        &client,
        &fleet,
        1,
    )
    .await;
    let quiet_summary = quiet.finish().await;
    assert_eq!(
        (quiet_summary.resets, quiet_summary.errors),
        (0, 0),
        "{quiet_summary}"
    );
    let pinging_summary = pinging.finish().await;
    assert_eq!(pinging_summary.failed_streams, 0, "{pinging_summary}");
}

/// A hand-made EndpointSlice of Service `service` (selector-less Services
/// keep exactly the slices we write).
fn hand_slice(name: &str, service: &str, ips: &[&str]) -> EndpointSlice {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": ips.iter().map(|ip| serde_json::json!({
            "addresses": [ip], "conditions": {"ready": true},
        })).collect::<Vec<_>>(),
    }))
    .unwrap()
}

fn selectorless_service(name: &str) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]},
    }))
    .unwrap()
}

fn addrs(ips: &[&str]) -> Vec<SocketAddr> {
    let mut v: Vec<SocketAddr> = ips
        .iter()
        .map(|ip| format!("{ip}:8080").parse().unwrap())
        .collect();
    v.sort();
    v
}

/// A watch that comes back after being away re-lists. What changed meanwhile
/// (a slice of a multi-slice Service deleted, a whole Service deleted) must
/// reach the client's ground truth and the mock's destinations exactly, with
/// no latency sample for changes whose time nobody knows, and no partial
/// truth while the list is read.
#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_resumed_watch_relists_exactly_what_changed_while_away() {
    use dst_load_controller::{
        client::{
            kube_truth,
            metrics::ServiceStreams,
            target::Authority,
            truth::{Kind, Latencies},
        },
        mock::{self, MockDestination, server::Behavior},
    };
    use std::sync::Arc;
    use tokio_util::sync::CancellationToken;

    let client = kube().await;
    let ns = TempNs::new("relist");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let n: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": ns.name}})).unwrap();
    namespaces.create(&PostParams::default(), &n).await.unwrap();
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns.name);
    let pp = PostParams::default();
    for svc in ["multi", "gone"] {
        services
            .create(&pp, &selectorless_service(svc))
            .await
            .unwrap();
    }
    slices
        .create(
            &pp,
            &hand_slice("multi-a", "multi", &["10.9.0.1", "10.9.0.2"]),
        )
        .await
        .unwrap();
    slices
        .create(&pp, &hand_slice("multi-b", "multi", &["10.9.0.3"]))
        .await
        .unwrap();
    slices
        .create(&pp, &hand_slice("gone-a", "gone", &["10.9.1.1"]))
        .await
        .unwrap();

    let authority = |svc: &str| format!("{svc}.{}.svc.cluster.local:8080", ns.name);
    let mut registry = prometheus_client::registry::Registry::default();
    let latencies = Latencies::register(&mut registry);
    let fleet = Arc::new(Fleet::default());
    let streams: Vec<Arc<ServiceStreams>> = ["multi", "gone"]
        .iter()
        .map(|svc| {
            Arc::new(ServiceStreams::new(
                authority(svc),
                Vec::new(),
                latencies.clone(),
            ))
        })
        .collect();
    for s in &streams {
        fleet.insert(s.clone());
    }
    let (multi, gone) = (&streams[0], &streams[1]);
    let mock = MockDestination::new(Behavior::default(), &mut registry);
    let handle = mock.handle();
    let mock_set = |svc: &str| {
        handle
            .get(&Authority::new(&format!("{svc}.{}.svc.cluster.local", ns.name), 8080).unwrap())
            .map(|mut v| {
                v.sort();
                v
            })
    };

    // One watch each, as the client and the mock run them.
    let start = |truth: kube_truth::Follower, kube_view: mock::kube::Follower| {
        let stop = CancellationToken::new();
        let (c1, c2, s1, s2) = (client.clone(), client.clone(), stop.clone(), stop.clone());
        let t = tokio::spawn(async move {
            let mut truth = truth;
            truth.follow(c1, s1).await;
            truth
        });
        let m = tokio::spawn(async move {
            let mut kube_view = kube_view;
            kube_view.follow(c2, s2).await;
            kube_view
        });
        (stop, t, m)
    };
    let (stop, t, m) = start(
        kube_truth::Follower::new(ns.name.clone(), "cluster.local".into(), fleet.clone()),
        mock::kube::Follower::new(ns.name.clone(), "cluster.local".into(), handle.clone()),
    );
    let all = ["10.9.0.1", "10.9.0.2", "10.9.0.3", "10.9.0.4"];
    let state = |ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(format!(
                "truth multi {:?} gone {:?}; mock multi {:?} gone {:?}",
                multi.truth.expected(),
                gone.truth.expected(),
                mock_set("multi"),
                mock_set("gone")
            ))
        }
    };
    eventually("the first list", || async {
        state(
            multi.truth.expected() == addrs(&all[..3])
                && gone.truth.expected() == addrs(&["10.9.1.1"])
                && mock_set("multi") == Some(addrs(&all[..3])),
        )
    })
    .await;
    // A change watched as it happens is timed: one Kubernetes-leg sample.
    slices
        .replace("multi-b", &pp, &{
            let mut s = slices.get("multi-b").await.unwrap();
            s.endpoints = hand_slice("x", "multi", &["10.9.0.3", "10.9.0.4"]).endpoints;
            s
        })
        .await
        .unwrap();
    eventually("the watched change", || async {
        state(multi.truth.expected() == addrs(&all) && mock_set("multi") == Some(addrs(&all)))
    })
    .await;
    let timed = latencies.percentiles(Kind::KubernetesLeg).count;
    assert_eq!(timed, 1);

    // Away: one of multi's two slices and the whole of `gone` are deleted.
    stop.cancel();
    let (truth, kube_view) = (t.await.unwrap(), m.await.unwrap());
    let dp = DeleteParams::default();
    slices.delete("multi-b", &dp).await.unwrap();
    slices.delete("gone-a", &dp).await.unwrap();
    services.delete("gone", &dp).await.unwrap();

    // Back, with a new watch on the same state: it re-lists.
    let (stop, t, m) = start(truth, kube_view);
    eventually("the re-list's changes", || async {
        state(
            multi.truth.expected() == addrs(&all[..2])
                && gone.truth.expected().is_empty()
                && mock_set("multi") == Some(addrs(&all[..2]))
                && mock_set("gone").is_none(),
        )
    })
    .await;
    // Give a wrong, partial or repeated publication time to show, then check.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(multi.truth.expected(), addrs(&all[..2]));
    assert!(gone.truth.expected().is_empty());
    assert_eq!(mock_set("multi"), Some(addrs(&all[..2])));
    assert_eq!(mock_set("gone"), None);
    assert_eq!(
        latencies.percentiles(Kind::KubernetesLeg).count,
        timed,
        "the re-list's changes were timed"
    );
    stop.cancel();
    t.await.unwrap();
    m.await.unwrap();
}

/// A run that fails once churn has created objects still removes them: here
/// churn may create Services but not Deployments, so it fails on its first
/// Deployment, with a Service already made.
#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_run_that_fails_midway_still_cleans_up_what_churn_created() {
    let client = kube().await;
    let ns = TempNs::new("guard");
    kubectl(&["create", "namespace", &ns.name], None);
    let rbac = format!(
        r#"
apiVersion: v1
kind: ServiceAccount
metadata: {{name: limited, namespace: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: limited, namespace: {ns}}}
rules:
  - {{apiGroups: [""], resources: [namespaces], verbs: [get]}}
  - {{apiGroups: [""], resources: [services], verbs: [get, list, create, patch, delete]}}
  - {{apiGroups: [apps], resources: [deployments, statefulsets], verbs: [get, list, delete]}}
  - {{apiGroups: [""], resources: [pods], verbs: [list]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: limited, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: limited}}
subjects: [{{kind: ServiceAccount, name: limited, namespace: {ns}}}]
"#,
        ns = ns.name
    );
    kubectl(&["apply", "-f", "-"], Some(&rbac));
    let token = kubectl(&["create", "token", "-n", &ns.name, "limited"], None);
    let apiserver = std::env::var("DST_LOCAL_APISERVER").expect("DST_LOCAL_APISERVER");
    let ca = std::env::var("DST_LOCAL_APISERVER_CA").expect("DST_LOCAL_APISERVER_CA");
    let kubeconfig = std::env::temp_dir().join(format!("{}.kubeconfig", ns.name));
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: l, cluster: {{server: \"{apiserver}\", certificate-authority: \"{ca}\"}}}}]\nusers: [{{name: u, user: {{token: \"{}\"}}}}]\ncontexts: [{{name: c, context: {{cluster: l, user: u, namespace: {}}}}}]\ncurrent-context: c\n",
            token.trim(),
            ns.name
        ),
    )
    .unwrap();
    let dst = destination();
    let out = tokio::time::timeout(
        Duration::from_secs(180),
        cmd(&[
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
            "2",
            "--duration",
            "5s",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .output(),
    )
    .await
    .expect("run ended within 180s")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.to_lowercase().contains("forbidden"), "{stderr}");
    let services: Api<Service> = Api::namespaced(client, &ns.name);
    let left = services
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=dst-load-controller"))
        .await
        .unwrap()
        .items;
    assert!(
        left.is_empty(),
        "churn's Services left behind: {:?}\n{stderr}",
        left.iter()
            .map(|s| s.metadata.name.clone())
            .collect::<Vec<_>>()
    );
    assert!(stderr.contains("cleaned up"), "{stderr}");
    let _ = std::fs::remove_file(kubeconfig);
}

/// A client of the real destination watching `targets` with the
/// Kubernetes ground truth of `ns`, `streams` streams each.
fn truth_client(ns: &str, targets: &str, streams: &str, extra: &[&str]) -> support::RunningClient {
    let dst = destination();
    let mut flags = vec![
        "--destination-addr",
        &dst,
        "--target-services",
        targets,
        "--namespace",
        ns,
        "--ground-truth",
        "--streams-per-service",
        streams,
    ];
    flags.extend_from_slice(extra);
    support::start_client(proxy_client(&flags))
}

/// Churn running in this process, with its metrics.
struct InProcessChurn {
    metrics: dst_load_controller::churn::metrics::Metrics,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), dst_load_controller::churn::Error>>,
}

impl InProcessChurn {
    /// Starts churn with `config` and waits until its objects exist.
    async fn start(config: dst_load_controller::churn::Config) -> Self {
        use dst_load_controller::{admin::Readiness, churn};
        let metrics = churn::metrics::Metrics::register(
            &mut prometheus_client::registry::Registry::default(),
        );
        let churn = churn::Churn::new(config, metrics.clone()).await.unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let ready = Readiness::default();
        let task = tokio::spawn(churn.run(stop.clone(), ready.clone()));
        eventually("churn's initial objects exist", || {
            let ready = ready.get();
            async move {
                if ready {
                    Ok(())
                } else {
                    Err("not ready".into())
                }
            }
        })
        .await;
        Self {
            metrics,
            stop,
            task,
        }
    }

    /// Waits until churn has applied `n` changes of `kind`.
    async fn until(&self, kind: dst_load_controller::churn::objects::ChangeKind, n: u64) {
        eventually(&format!("{n} {} changes", kind.as_str()), || {
            let have = self.metrics.changes(kind);
            async move {
                if have >= n {
                    Ok(())
                } else {
                    Err(format!("{have} so far"))
                }
            }
        })
        .await;
    }

    async fn finish(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// Ready pod IPs of `ns` whose name starts with `prefix`, by pod name.
async fn pod_ips(
    client: &kube::Client,
    ns: &str,
    prefix: &str,
) -> std::collections::BTreeMap<String, String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let name = p.metadata.name?;
            let ip = p.status?.pod_ip?;
            name.starts_with(prefix).then_some((name, ip))
        })
        .collect()
}

/// Every stream of `service` holds exactly `want`, and the truth agrees.
fn streams_hold(
    running: &support::RunningClient,
    service: &str,
    want: &[SocketAddr],
) -> Result<(), String> {
    let sets = running.sets(service);
    if sets.is_empty() {
        return Err(format!("{service}: no streams yet"));
    }
    for (i, set) in sets.iter().enumerate() {
        if set != want {
            return Err(format!("{service} stream {i}: {set:?}, want {want:?}"));
        }
    }
    Ok(())
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn after_every_rolling_restart_every_stream_holds_the_new_addresses_and_no_old_one() {
    use dst_load_controller::churn::{self, objects::ChangeKind};
    let client = kube().await;
    let ns = TempNs::new("restart");
    let log = DestinationLog::mark();
    let mut config = churn::Config::new(&ns.name);
    config.restart.services = 2;
    config.restart.endpoints = 3;
    config.restart.interval = Duration::from_secs(5);
    config.restart.rollout = churn::objects::Rollout {
        max_surge: churn::objects::parse_int_or_percent("1").unwrap(),
        max_unavailable: churn::objects::parse_int_or_percent("0").unwrap(),
    };
    // Both services roll in the same instant.
    config.burst_size = 2;
    config.seed = 12;
    let churn = InProcessChurn::start(config).await;
    let svc = |i| format!("restart-svc-{i}.{}.svc.cluster.local:8080", ns.name);
    let running = truth_client(
        &ns.name,
        &format!("{},{}", svc(0), svc(1)),
        "3",
        &["--staleness-grace", "10s"],
    );
    let fleet = running.fleet.clone();
    converged("streams hold the first pods", &client, &fleet, 2).await;
    let before: BTreeSet<String> = pod_ips(&client, &ns.name, "restart-svc-")
        .await
        .into_values()
        .collect();
    // Sample the ready endpoints of one service through the rolls: the
    // Deployment controller gates the roll on KWOK's readiness, so with
    // maxUnavailable 0 and maxSurge 1 it keeps 3 to 4 pods available. The
    // service's EndpointSlices are written one at a time, so a read between
    // two writes can see one fewer or one more (2 was seen on a loaded
    // machine); what must hold is that the roll never empties the service.
    let sampling = tokio_util::sync::CancellationToken::new();
    let sampler = tokio::spawn({
        let (client, ns, stop) = (client.clone(), ns.name.clone(), sampling.clone());
        async move {
            let mut counts = BTreeSet::new();
            while !stop.is_cancelled() {
                if let Ok(a) = slice_addrs(&client, &ns, "restart-svc-0", 8080).await {
                    counts.insert(a.len());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            counts
        }
    });
    // Two rolls of each service (the pair is one burst: 2 changes per roll).
    churn.until(ChangeKind::Restart, 4).await;
    churn.finish().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    eventually("both rollouts complete", || async {
        for i in 0..2 {
            let name = format!("restart-svc-{i}");
            let d = deployments.get(&name).await.map_err(|e| e.to_string())?;
            let st = d.status.unwrap_or_default();
            let done = st.observed_generation == d.metadata.generation
                && st.replicas == Some(3)
                && st.updated_replicas == Some(3)
                && st.ready_replicas == Some(3);
            let slices = slice_addrs(&client, &ns.name, &name, 8080).await?;
            if !done || slices.len() != 3 {
                return Err(format!("{name}: {st:?}, slices {slices:?}"));
            }
        }
        Ok(())
    })
    .await;
    sampling.cancel();
    let counts = sampler.await.unwrap();
    eprintln!("ready endpoints of restart-svc-0 during the rolls: {counts:?}");
    assert!(
        !counts.is_empty() && !counts.contains(&0),
        "ready endpoints of restart-svc-0 during the rolls: {counts:?}"
    );
    converged(
        "every stream holds its slices' addresses after the last roll",
        &client,
        &fleet,
        2,
    )
    .await;
    for i in 0..2 {
        let name = format!("restart-svc-{i}");
        let want = slice_addrs(&client, &ns.name, &name, 8080).await.unwrap();
        assert_eq!(want.len(), 3, "{name}: the count is kept");
        // The pods now serving are the rolled ones, not the first ones.
        let pods = pod_ips(&client, &ns.name, &name).await;
        let rs: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns.name);
        let sets = rs
            .list(&ListParams::default().labels(&format!("app.kubernetes.io/name={name}")))
            .await
            .unwrap()
            .items;
        assert!(
            sets.len() >= 3,
            "{name}: {} ReplicaSets after two rolls",
            sets.len()
        );
        assert_eq!(pods.len(), 3, "{name}: {pods:?}");
    }
    // No address of the first pods is served by any stream, unless KWOK
    // handed the same IP to a new pod (then the slices list it too).
    let now: BTreeSet<SocketAddr> = [0, 1]
        .iter()
        .flat_map(|i| running.sets(&svc(*i)).into_iter().flatten())
        .collect();
    let truth: BTreeSet<SocketAddr> = [0, 1]
        .iter()
        .flat_map(|i| fleet.get(&svc(*i)).unwrap().truth.expected())
        .collect();
    assert_eq!(now, truth);
    // No stream holds an address of the first pods, unless KWOK handed
    // that IP to a pod that runs now.
    let current: BTreeSet<String> = pod_ips(&client, &ns.name, "restart-svc-")
        .await
        .into_values()
        .collect();
    let lingering: Vec<_> = now
        .iter()
        .filter(|a| {
            let ip = a.ip().to_string();
            before.contains(&ip) && !current.contains(&ip)
        })
        .collect();
    assert!(lingering.is_empty(), "old addresses served: {lingering:?}");
    let (summary, measured) = running.finish_measured().await;
    assert_eq!(measured.stale_streams, 0);
    assert_eq!(measured.streams_unconverged, 0);
    assert_eq!(summary.errors, 0);
    // Every roll was timed from its stamp, under the `restart` pattern.
    let restart = &measured.by_pattern["restart"];
    assert!(
        restart.fanout_completion.count >= 4,
        "{} restart fan-outs",
        restart.fanout_completion.count
    );
    assert!(restart.convergence_latency.count >= 4 * 3);
    assert_eq!(measured.by_pattern.keys().collect::<Vec<_>>(), ["restart"]);
    assert_eq!(log.problems(), Vec::<String>::new());
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn an_ephemeral_services_open_streams_follow_its_deletion_and_return() {
    use dst_load_controller::churn::{self, objects::ChangeKind};
    let client = kube().await;
    let ns = TempNs::new("ephemeral");
    let log = DestinationLog::mark();
    let mut config = churn::Config::new(&ns.name);
    config.ephemeral.services = 1;
    config.ephemeral.endpoints = 2;
    config.ephemeral.lifetime = Duration::from_secs(6);
    // Long enough to see the streams empty on a busy machine.
    config.ephemeral.gap = Duration::from_secs(12);
    config.seed = 3;
    let churn = InProcessChurn::start(config).await;
    let svc = format!("ephemeral-svc-0.{}.svc.cluster.local:8080", ns.name);
    let running = truth_client(&ns.name, &svc, "3", &[]);
    let fleet = running.fleet.clone();
    converged("streams hold the service's pods", &client, &fleet, 1).await;
    churn.until(ChangeKind::Delete, 1).await;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    // While it is gone, the open streams hold nothing.
    eventually("the deleted service's streams are empty", || {
        let r = streams_hold(&running, &svc, &[]);
        async move { r }
    })
    .await;
    let gone = services.get_opt("ephemeral-svc-0").await.unwrap().is_none();
    churn.until(ChangeKind::Create, 1).await;
    converged(
        "the returned service's streams hold its new pods",
        &client,
        &fleet,
        1,
    )
    .await;
    churn.finish().await;
    let m = running.metrics.clone();
    let removes: u64 = m
        .updates_received
        .get_or_create(&client::metrics::UpdateLabels {
            service: svc.clone(),
            kind: "remove",
            class: "healthy",
        })
        .get();
    let (summary, measured) = running.finish_measured().await;
    assert!(gone, "the streams emptied while the Service was deleted");
    // What the real controller does: the stream stays open through the
    // deletion (no reset, no error, no NoEndpoints); it removes the
    // addresses and adds the new ones when the service returns.
    assert_eq!(summary.resets, 0);
    assert_eq!(summary.errors, 0);
    assert_eq!(summary.streams_created, 3);
    assert!(removes >= 3, "{removes} removes on 3 streams");
    assert_eq!(measured.stale_streams, 0);
    let eph = &measured.by_pattern["ephemeral"];
    // The deletion and the return, each fanned out to all 3 streams.
    assert!(eph.fanout_completion.count >= 2, "{eph:?}");
    assert_eq!(log.problems(), Vec::<String>::new());
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn per_pod_authorities_resolve_to_exactly_their_pod_and_follow_its_replacement() {
    use dst_load_controller::churn;
    let client = kube().await;
    let ns = TempNs::new("sts");
    let log = DestinationLog::mark();
    let mut config = churn::Config::new(&ns.name);
    config.statefulset.services = 1;
    config.statefulset.replicas = 3;
    let churn = InProcessChurn::start(config).await;
    let d = format!("{}.svc.cluster.local:8080", ns.name);
    let pod_authority = |k: u32| format!("sts-0-{k}.sts-svc-0.{d}");
    let running = truth_client(
        &ns.name,
        // sts-0-7 names no pod: the controller answers it with silence.
        &format!("sts-0-{{0..2}}.sts-svc-0.{d},sts-svc-0.{d},sts-0-7.sts-svc-0.{d}"),
        "2",
        &[],
    );
    let addr = |ip: &str| SocketAddr::new(ip.parse().unwrap(), 8080);
    let each_pod_resolves = || async {
        let ips = pod_ips(&client, &ns.name, "sts-0-").await;
        if ips.len() != 3 {
            return Err(format!("pods: {ips:?}"));
        }
        for k in 0..3 {
            let ip = &ips[&format!("sts-0-{k}")];
            streams_hold(&running, &pod_authority(k), &[addr(ip)])?;
        }
        let mut all: Vec<SocketAddr> = ips.values().map(|ip| addr(ip)).collect();
        all.sort();
        streams_hold(&running, &format!("sts-svc-0.{d}"), &all)
    };
    eventually(
        "each pod's authority holds exactly that pod",
        each_pod_resolves,
    )
    .await;

    // Replace one pod: same name, new pod (KWOK may or may not reuse the IP).
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let old = pods.get("sts-0-1").await.unwrap();
    pods.delete("sts-0-1", &DeleteParams::default())
        .await
        .unwrap();
    eventually("sts-0-1 is replaced by a new pod", || async {
        match pods.get_opt("sts-0-1").await.map_err(|e| e.to_string())? {
            Some(p)
                if p.metadata.uid != old.metadata.uid
                    && p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some() =>
            {
                Ok(())
            }
            _ => Err("not yet".into()),
        }
    })
    .await;
    eventually("each pod's authority follows its pod", each_pod_resolves).await;
    streams_hold(&running, &pod_authority(7), &[]).unwrap();
    churn.finish().await;
    let (summary, measured) = running.finish_measured().await;
    assert_eq!(measured.stale_streams, 0);
    assert_eq!(summary.errors, 0);
    assert_eq!(summary.resets, 0);
    assert_eq!(log.problems(), Vec::<String>::new());
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_burst_of_services_scales_in_one_instant_and_converges_with_latencies() {
    use dst_load_controller::churn::{self, objects::ChangeKind};
    let client = kube().await;
    let ns = TempNs::new("burst");
    let log = DestinationLog::mark();
    let mut config = churn::Config::new(&ns.name);
    config.oscillate_services = 4;
    config.burst_size = 4;
    config.oscillation.min = 1;
    config.oscillation.max = 3;
    config.oscillation.min_hold = Duration::from_secs(3);
    config.oscillation.max_hold = Duration::from_secs(3);
    config.oscillation.jitter = dst_load_controller::schedule::Jitter::Upto(Duration::from_secs(5));
    config.oscillation.cycles = 1;
    config.seed = 4;
    let churn = InProcessChurn::start(config).await;
    let targets = format!("oscillate-svc-{{0..3}}.{}.svc.cluster.local:8080", ns.name);
    let running = truth_client(&ns.name, &targets, "2", &[]);
    let fleet = running.fleet.clone();
    converged("streams hold the first pods", &client, &fleet, 4).await;
    churn.until(ChangeKind::Scale, 8).await;
    // Every member of the burst was stamped in the same instant: the calls
    // are made together, so the stamps differ by the calls' time only
    // (jitter spreads services up to 5s apart when not in a burst).
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let stamps: Vec<jiff::Timestamp> = deployments
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|d| {
            d.metadata.annotations.as_ref().unwrap()["dst-load.linkerd.io/scaled-at"]
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(stamps.len(), 4);
    let spread = stamps
        .iter()
        .max()
        .unwrap()
        .duration_since(*stamps.iter().min().unwrap());
    assert!(
        spread.as_millis() < 1000,
        "a burst's stamps are {spread:#} apart: {stamps:?}"
    );
    churn.task.await.unwrap().unwrap();
    converged("every stream converged after the burst", &client, &fleet, 4).await;
    let registry = running.registry.clone();
    let (summary, measured) = running.finish_measured().await;
    assert_eq!(
        errors_but_not_found(&registry),
        Vec::<String>::new(),
        "{summary}"
    );
    // The late-pod finding (the controller leaving out an endpoint whose pod
    // its pod cache had not seen yet) was repaired by `converged` touching
    // the slice, and counted there: no stream is stale or unconverged now.
    assert_eq!(measured.stale_streams, 0);
    assert_eq!(measured.streams_unconverged, 0);
    // Two scales of 4 services, each fanned out to both streams and timed.
    let osc = &measured.by_pattern["oscillate"];
    assert!(osc.fanout_completion.count >= 8, "{osc:?}");
    assert!(osc.convergence_latency.count >= 16, "{osc:?}");
    assert_eq!(log.problems(), Vec::<String>::new());
}

/// The sum of the controller's `endpoint_updates_queue_overflow` over
/// `namespace`'s services.
/// The real controller's metrics, as scraped now.
async fn controller_metrics() -> String {
    let addr = std::env::var("DESTINATION_METRICS_ADDR").expect("DESTINATION_METRICS_ADDR");
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn controller_overflows(namespace: &str) -> f64 {
    controller_metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("endpoint_updates_queue_overflow{"))
        .filter(|l| l.contains(&format!(".{namespace}.svc.")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn stuck_streams_and_reset_storms_against_the_real_controller() {
    use dst_load_controller::{
        churn,
        client::{faults::Class, metrics::ReasonLabels},
    };
    let client = kube().await;
    let ns = TempNs::new("faults");
    let log = DestinationLog::mark();
    let mut config = churn::Config::new(&ns.name);
    config.oscillate_services = 2;
    config.oscillation.min = 2;
    config.oscillation.max = 40;
    config.oscillation.min_hold = Duration::from_secs(1);
    config.oscillation.max_hold = Duration::from_secs(1);
    config.seed = 13;
    let churn = InProcessChurn::start(config).await;
    // 2 x 10 streams, one connection each (20 proxies); 2 in 10 stuck, with
    // the protocol's 64 KiB window; a reset storm every 8 s.
    let running = truth_client(
        &ns.name,
        &format!("oscillate-svc-{{0..1}}.{}.svc.cluster.local:8080", ns.name),
        "10",
        &[
            "--connections",
            "20",
            "--stuck-percent",
            "20",
            "--http2-stream-window",
            "65535",
            "--reset-storm-interval",
            "8s",
        ],
    );
    let storm_resets = |class: Class| {
        running
            .metrics
            .streams_reset
            .get_or_create(&ReasonLabels {
                reason: "reset_storm".into(),
                class: class.as_str(),
            })
            .get()
    };
    eventually("two reset storms", || {
        let n = storm_resets(Class::Healthy);
        async move {
            if n >= 32 {
                Ok(())
            } else {
                Err(format!("{n} healthy streams reset by storms"))
            }
        }
    })
    .await;
    churn.finish().await;
    let fleet = running.fleet.clone();
    // Every healthy stream converges to the slices; every stuck one holds
    // what it read first after its last (re-)Get.
    eventually(
        "the healthy streams hold their slices' addresses",
        || async {
            for s in fleet.services() {
                let (_, port) = s.service.rsplit_once(':').unwrap();
                let name = s.service.split('.').next().unwrap();
                let want = slice_addrs(&client, &ns.name, name, port.parse().unwrap()).await?;
                for (i, slot) in s.slots().iter().enumerate() {
                    if s.classes()[i] == Class::Healthy && slot.addrs() != want {
                        return Err(format!(
                            "{name} stream {i}: {:?}, want {want:?}",
                            slot.addrs()
                        ));
                    }
                }
            }
            Ok(())
        },
    )
    .await;
    let overflows = controller_overflows(&ns.name).await;
    let (healthy_storms, stuck_storms) = (storm_resets(Class::Healthy), storm_resets(Class::Stuck));
    let m = running.metrics.clone();
    let (summary, measured) = running.finish_measured().await;
    eprintln!(
        "stuck streams: controller overflows {overflows}; storm resets healthy {healthy_storms} stuck {stuck_storms}; resets by class {:?}\n{summary}{}",
        Class::ALL.map(|c| (c.as_str(), m.resets_of(c))),
        measured.latency_table()
    );
    // Each storm resets all 16 healthy and all 4 stuck streams at once.
    assert_eq!(healthy_storms % 16, 0, "{healthy_storms}");
    assert_eq!(
        stuck_storms,
        healthy_storms / 4,
        "{stuck_storms} vs {healthy_storms}"
    );
    // Nothing but storms reset a healthy stream.
    assert_eq!(m.resets_of(Class::Healthy), healthy_storms);
    assert_eq!(summary.errors, 0);
    assert_eq!(measured.by_class["healthy"].streams, 16);
    assert_eq!(measured.by_class["stuck"].streams, 4);
    // The healthy streams' changes were timed and completed.
    assert!(
        measured.by_class["healthy"]
            .latencies
            .fanout_completion
            .count
            >= 2
    );
    assert_eq!(log.problems(), Vec::<String>::new());
}

/// Get streams the real controller has open now: started minus handled
/// (its grpc-go server metrics), whoever the clients are.
async fn controller_open_gets() -> f64 {
    let text = controller_metrics().await;
    let sum = |name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains("grpc_method=\"Get\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    sum("grpc_server_started_total{") - sum("grpc_server_handled_total{")
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn connection_churn_moves_every_stream_and_the_controller_keeps_none_behind() {
    use dst_load_controller::{
        churn,
        client::{faults::Class, metrics::ReasonLabels},
    };
    let client = kube().await;
    let ns = TempNs::new("connchurn");
    let log = DestinationLog::mark();
    // The tests run one at a time and each ends its clients: nothing else
    // watches the controller now.
    eventually("no Get stream open at the controller", || async {
        match controller_open_gets().await {
            0.0 => Ok(()),
            n => Err(format!("{n} open")),
        }
    })
    .await;
    let mut config = churn::Config::new(&ns.name);
    config.oscillate_services = 2;
    config.oscillation.min = 2;
    config.oscillation.max = 6;
    config.oscillation.min_hold = Duration::from_secs(2);
    config.oscillation.max_hold = Duration::from_secs(2);
    config.seed = 17;
    let churn = InProcessChurn::start(config).await;
    // 2 x 5 streams over 4 connections, each closed and reopened every
    // 3 s (plus up to 1.5 s) with its streams.
    let running = truth_client(
        &ns.name,
        &format!("oscillate-svc-{{0..1}}.{}.svc.cluster.local:8080", ns.name),
        "5",
        &["--connections", "4", "--connection-churn-interval", "3s"],
    );
    let churned = || {
        running
            .metrics
            .streams_reset
            .get_or_create(&ReasonLabels {
                reason: "connection_churn".into(),
                class: Class::Healthy.as_str(),
            })
            .get()
    };
    // Every connection churned at least twice: 2 x 10 stream moves.
    eventually("two rounds of connection churn", || {
        let n = churned();
        async move {
            if n >= 20 {
                Ok(())
            } else {
                Err(format!("{n} streams moved"))
            }
        }
    })
    .await;
    churn.finish().await;
    let fleet = running.fleet.clone();
    eventually("every stream holds its slices' addresses", || async {
        for s in fleet.services() {
            let (_, port) = s.service.rsplit_once(':').unwrap();
            let name = s.service.split('.').next().unwrap();
            let want = slice_addrs(&client, &ns.name, name, port.parse().unwrap()).await?;
            for (i, slot) in s.slots().iter().enumerate() {
                if slot.addrs() != want {
                    return Err(format!(
                        "{name} stream {i}: {:?}, want {want:?}",
                        slot.addrs()
                    ));
                }
            }
        }
        Ok(())
    })
    .await;
    // The controller ended the moved streams: it holds exactly our 10
    // (a connection's old streams close once they have moved).
    eventually(
        "the controller holds exactly the client's 10 streams",
        || async {
            match controller_open_gets().await {
                10.0 => Ok(()),
                n => Err(format!("{n} open")),
            }
        },
    )
    .await;
    let moved = churned();
    let m = running.metrics.clone();
    let (summary, measured) = running.finish_measured().await;
    eprintln!(
        "connection churn: {moved} stream moves\n{summary}{}",
        measured.latency_table()
    );
    // Nothing but connection churn reset a stream, and nothing failed.
    assert_eq!(m.resets_of(Class::Healthy), moved);
    assert_eq!(summary.errors, 0);
    assert_eq!(measured.streams_unconverged, 0);
    assert_eq!(measured.stale_streams, 0);
    eventually(
        "no Get stream open at the controller after the client",
        || async {
            match controller_open_gets().await {
                0.0 => Ok(()),
                n => Err(format!("{n} open")),
            }
        },
    )
    .await;
    assert_eq!(log.problems(), Vec::<String>::new());
}

/// What the mock's `GetProfile` claims to answer as Linkerd's controller
/// does, asked of the real controller: the default profile of a service
/// without a ServiceProfile, an empty profile for a port the service lacks,
/// `Unknown` for an unknown service, `InvalidArgument` for a name that is
/// not a service's, a churned pod's IP answered with its meshed endpoint, and
/// an IP nobody owns with a bare endpoint.
#[tokio::test]
#[ignore = "needs the local control plane (hack/local-cluster.sh up)"]
async fn the_real_controller_answers_get_profile_as_the_mock_claims() {
    use linkerd2_proxy_api::{
        destination::{DestinationProfile, GetDestination, destination_client::DestinationClient},
        meta::metadata,
    };
    let ns = TempNs::new("profile");
    stable_services(&ns.name, 1, 2).await;
    let client = kube().await;
    let addrs = poll_slice_addrs(&client, &ns.name, "stable-svc-0", 2).await;
    let dst = DestinationClient::connect(format!("http://{}", destination()))
        .await
        .unwrap();
    let open = |path: String| {
        let mut dst = dst.clone();
        async move {
            dst.get_profile(GetDestination {
                scheme: "k8s".into(),
                path,
                context_token: String::new(),
            })
            .await
            .map(|r| r.into_inner())
        }
    };
    let first = |mut s: tonic::Streaming<DestinationProfile>| async move {
        tokio::time::timeout(Duration::from_secs(30), s.message())
            .await
            .expect("a profile within 30s")
            .expect("no error")
            .expect("the stream open")
    };

    // By name, no ServiceProfile: the default profile.
    let host = format!("stable-svc-0.{}.svc.cluster.local", ns.name);
    let p = first(open(format!("{host}:8080")).await.unwrap()).await;
    // By its ClusterIP (as a proxy asks for a connection's original
    // destination): the same profile as by its name.
    let cluster_ip = Api::<Service>::namespaced(client.clone(), &ns.name)
        .get("stable-svc-0")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP");
    let by_ip = first(open(format!("{cluster_ip}:8080")).await.unwrap()).await;
    assert_eq!(by_ip, p, "by ClusterIP as by name");
    assert_eq!(p.fully_qualified_name, host);
    assert!(p.routes.is_empty() && p.dst_overrides.is_empty() && p.endpoint.is_none());
    let budget = p.retry_budget.unwrap();
    assert_eq!(
        (
            budget.retry_ratio,
            budget.min_retries_per_second,
            budget.ttl.unwrap().seconds
        ),
        (0.2, 10, 10)
    );
    let Some(metadata::Kind::Resource(parent)) = p.parent_ref.unwrap().kind else {
        panic!("the parent is a resource")
    };
    assert_eq!(
        (parent.kind.as_str(), parent.name.as_str(), parent.port),
        ("Service", "stable-svc-0", 8080)
    );
    let Some(metadata::Kind::Resource(profile)) = p.profile_ref.unwrap().kind else {
        panic!("the profile reference is a resource")
    };
    assert_eq!(
        (
            profile.group.as_str(),
            profile.kind.as_str(),
            profile.name.as_str()
        ),
        ("linkerd.io", "", "")
    );

    // A port the service lacks: an empty profile.
    let other = first(open(format!("{host}:9999")).await.unwrap()).await;
    assert_eq!(other, DestinationProfile::default());

    // Unknown service, and a name that is no service's.
    let unknown = open(format!("nope.{}.svc.cluster.local:8080", ns.name)).await;
    assert_eq!(unknown.err().map(|s| s.code()), Some(tonic::Code::Unknown));
    let bad = open("linkerd.io:443".into()).await;
    assert_eq!(
        bad.err().map(|s| s.code()),
        Some(tonic::Code::InvalidArgument)
    );

    // A churned pod's IP: its meshed endpoint, no name.
    let pod = first(open(addrs[0].to_string()).await.unwrap()).await;
    assert!(pod.fully_qualified_name.is_empty());
    let e = pod.endpoint.expect("the pod's endpoint");
    assert_eq!(SocketAddr::try_from(e.addr.unwrap()).unwrap(), addrs[0]);
    assert_eq!(e.weight, 10_000);
    assert!(e.metric_labels.contains_key("pod"), "{:?}", e.metric_labels);
    assert!(e.tls_identity.is_some() && e.protocol_hint.is_some());

    // An IP nobody owns: a bare endpoint.
    let nobody: SocketAddr = "192.0.2.10:8080".parse().unwrap();
    let bare = first(open(nobody.to_string()).await.unwrap()).await;
    let e = bare.endpoint.expect("a bare endpoint");
    assert_eq!(SocketAddr::try_from(e.addr.unwrap()).unwrap(), nobody);
    assert!(e.metric_labels.is_empty() && e.tls_identity.is_none());
    drop(dst);
}

/// `service`'s ready addresses (port 8080) once its slice lists `n`.
async fn poll_slice_addrs(
    client: &kube::Client,
    ns: &str,
    service: &str,
    n: usize,
) -> Vec<SocketAddr> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(addrs) = slice_addrs(client, ns, service, 8080).await
            && addrs.len() == n
        {
            return addrs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{service}'s {n} endpoints"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `churn --servers` makes Servers that Linkerd's controller reads: with
/// `opaque`, a GetProfile of a selected pod's `IP:port` says opaque, and of
/// an unselected one's does not; `cleanup` deletes them with the rest.
#[tokio::test]
#[ignore = "needs the local control plane (hack/local-cluster.sh up)"]
async fn churns_servers_are_read_by_the_controller_and_cleaned_up() {
    use dst_load_controller::crds::Server;
    use linkerd2_proxy_api::destination::{GetDestination, destination_client::DestinationClient};
    let ns = TempNs::new("servers");
    let opaque = [
        "--servers",
        "3",
        "--server-proxy-protocol",
        "opaque",
        "--duration",
        "1s",
    ];
    churn_stable(&ns.name, 2, 1, &opaque).await;
    let client = kube().await;
    let servers: Api<Server> = Api::namespaced(client.clone(), &ns.name);
    let mut made: Vec<(String, String)> = servers
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=dst-load-controller"))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| {
            let selects =
                s.spec.pod_selector.match_labels.unwrap()["app.kubernetes.io/name"].clone();
            (s.metadata.name.unwrap(), selects)
        })
        .collect();
    made.sort();
    assert_eq!(
        made,
        [
            ("srv-0", "stable-svc-0"),
            ("srv-1", "stable-svc-1"),
            ("srv-2", "stable-svc-0")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );

    // Both services' pods are selected: their addresses are opaque. A port
    // no Server names is not.
    let dst = DestinationClient::connect(format!("http://{}", destination()))
        .await
        .unwrap();
    for service in ["stable-svc-0", "stable-svc-1"] {
        let addr = poll_slice_addrs(&client, &ns.name, service, 1).await[0];
        for (port, opaque) in [(addr.port(), true), (9999, false)] {
            let target = SocketAddr::new(addr.ip(), port);
            eventually(&format!("{target} opaque={opaque}"), || {
                let mut dst = dst.clone();
                async move {
                    let mut s = dst
                        .get_profile(GetDestination {
                            scheme: "k8s".into(),
                            path: target.to_string(),
                            context_token: String::new(),
                        })
                        .await
                        .map_err(|e| e.to_string())?
                        .into_inner();
                    let p = tokio::time::timeout(Duration::from_secs(30), s.message())
                        .await
                        .map_err(|_| "no profile within 30s".to_string())?
                        .map_err(|e| e.to_string())?
                        .ok_or("the stream ended")?;
                    if p.opaque_protocol == opaque {
                        Ok(())
                    } else {
                        Err(format!("opaque_protocol is {}", p.opaque_protocol))
                    }
                }
            })
            .await;
        }
    }

    let out = run(&["cleanup", "--namespace", &ns.name]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("deleted 2 services and 2 deployments and 3 servers"),
        "{stdout}"
    );
    assert_eq!(count(&servers).await, 0);
}

/// The controller's open `GetProfile` streams (started minus handled).
async fn controller_open_profiles() -> f64 {
    let addr = std::env::var("DESTINATION_METRICS_ADDR").expect("DESTINATION_METRICS_ADDR");
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Summed over every series (handled has one per gRPC code).
    let count = |name: &str| -> f64 {
        text.lines()
            .filter(|l| {
                l.starts_with(&format!("{name}{{")) && l.contains("grpc_method=\"GetProfile\"")
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    count("grpc_server_started_total") - count("grpc_server_handled_total")
}

/// Running pods of `ns` with their IPs, by name, once there are `n`.
async fn running_pods(
    client: &kube::Client,
    ns: &str,
    n: usize,
) -> Vec<(String, std::net::IpAddr)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let ips: Vec<_> = pods
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| {
                let status = p.status?;
                (status.phase.as_deref() == Some("Running"))
                    .then_some(())
                    .and(status.pod_ip?.parse().ok())
                    .map(|ip| (p.metadata.name.unwrap_or_default(), ip))
            })
            .collect();
        if ips.len() == n {
            return ips;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} running pods in {ns}, have {ips:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Linkerd #15583's load, small: GetProfile by pod IP for every churned pod
/// (a scraper's proxy) with Servers in the namespace, re-opened at once in
/// storms. Every stream ends answered with its pod's meshed endpoint (opaque,
/// as the Servers say), after every storm too; the controller holds exactly
/// our streams; a deleted pod's IP is answered with a bare endpoint and the
/// client moves to the pod that replaced it.
#[tokio::test]
#[ignore = "needs the local control plane (hack/local-cluster.sh up)"]
async fn a_get_profile_storm_by_pod_ip_with_servers_converges_and_the_controller_holds_our_streams()
{
    use linkerd2_proxy_api::destination::{GetDestination, destination_client::DestinationClient};
    let ns = TempNs::new("storm");
    let opaque = [
        "--servers",
        "20",
        "--server-proxy-protocol",
        "opaque",
        "--duration",
        "1s",
    ];
    churn_stable(&ns.name, 2, 4, &opaque).await;
    let kube_client = kube().await;
    let pods = running_pods(&kube_client, &ns.name, 8).await;
    let before = controller_open_profiles().await;
    const PER_POD: usize = 3;
    let dst = destination();
    let c = support::start_client(support::client_args(&[
        "--destination-addr",
        &dst,
        "--namespace",
        &ns.name,
        "--target-pods",
        "app.kubernetes.io/managed-by=dst-load-controller",
        "--target-pods-port",
        "8080",
        "--profile-streams-per-pod",
        "3",
        "--target-pods-storm-interval",
        "4s",
        "--target-pods-storms",
        "2",
        "--connections",
        "4",
    ]));
    // Every stream of every pod: the pod's endpoint, meshed and opaque, and
    // at least `opened` profiles (one per opening).
    let converged = |opened: u64, pods: &[(String, std::net::IpAddr)]| {
        let fleet = c.pods.clone();
        let want: BTreeSet<String> = pods
            .iter()
            .map(|(_, ip)| SocketAddr::new(*ip, 8080).to_string())
            .collect();
        move || {
            let all = fleet.all();
            let have: BTreeSet<String> = all.iter().map(|p| p.target.clone()).collect();
            if have != want {
                return Err(format!("targets {have:?}, want {want:?}"));
            }
            for p in &all {
                let target: SocketAddr = p.target.parse().unwrap();
                for (k, seen) in p.seen().into_iter().enumerate() {
                    let ok = seen.as_ref().is_some_and(|s| {
                        s.endpoint == Some(target)
                            && s.endpoint_identity
                            && s.opaque_protocol
                            && s.updates >= opened
                    });
                    if !ok {
                        return Err(format!("{target} stream {k}: {seen:?}"));
                    }
                }
            }
            Ok(())
        }
    };
    // A synchronous check, polled as the file's other waits are.
    let wait = |what: &'static str, check: Box<dyn Fn() -> Result<(), String>>| {
        eventually_within(what, Duration::from_secs(120), move || {
            let checked = check();
            async move { checked }
        })
    };
    wait("first answers", Box::new(converged(1, &pods))).await;
    let storms = |c: &support::RunningClient| {
        support::sample(
            &support::scrape(&c.registry),
            "destination_client_profile_streams_reset_total",
            &[("reason", "target_storm")],
        )
        .unwrap_or_default()
    };
    // Two storms, each re-opening all 24 streams at once, then answered again.
    support::eventually_async("two storms", Duration::from_secs(120), || async {
        storms(&c) >= (2 * 8 * PER_POD) as f64
    })
    .await;
    wait("answers after two storms", Box::new(converged(3, &pods))).await;
    support::eventually_async(
        "the controller holds exactly our streams",
        Duration::from_secs(60),
        || async { controller_open_profiles().await - before == (8 * PER_POD) as f64 },
    )
    .await;
    assert_eq!(
        c.metrics.profiles.failed_total.get(),
        0,
        "no stream ended for good"
    );

    // A pod deleted: a stream held on its IP gets a bare endpoint; the
    // client drops it and targets the pod that replaces it.
    let (gone, gone_ip) = pods[0].clone();
    let mut held = DestinationClient::connect(format!("http://{dst}"))
        .await
        .unwrap()
        .get_profile(GetDestination {
            scheme: "k8s".into(),
            path: SocketAddr::new(gone_ip, 8080).to_string(),
            context_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = held.message().await.unwrap().unwrap();
    assert!(first.endpoint.unwrap().tls_identity.is_some());
    kubectl(
        &["delete", "pod", "-n", &ns.name, &gone, "--wait=false"],
        None,
    );
    let bare = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let p = held
                .message()
                .await
                .unwrap()
                .expect("the stream stays open");
            let e = p.endpoint.expect("an endpoint");
            if e.tls_identity.is_none() {
                return e;
            }
        }
    })
    .await
    .expect("a bare endpoint within 60s of the deletion");
    assert!(bare.metric_labels.is_empty(), "{:?}", bare.metric_labels);
    let replaced = running_pods(&kube_client, &ns.name, 8).await;
    assert!(replaced.iter().all(|(name, _)| *name != gone));
    wait(
        "the replacement's answers",
        Box::new(converged(1, &replaced)),
    )
    .await;
    drop(held);

    let summary = c.finish().await;
    assert_eq!(summary.target_pods.map(|(pods, ..)| pods), Some(8));
    support::eventually_async(
        "the controller closed our streams",
        Duration::from_secs(60),
        || async { controller_open_profiles().await == before },
    )
    .await;
}

/// `--target-pods` with `--ground-truth` follows the pods and Servers: a
/// Server turned opaque reaches every stream within the grace (nothing
/// stale); once it is deleted, the controller still answers opaque (it
/// never resets a Server's opaque flag on this path), and the client
/// reports every stream stale, saying what differs.
#[tokio::test]
#[ignore = "needs the local control plane (hack/local-cluster.sh up)"]
async fn pod_profile_streams_are_judged_against_pods_and_servers() {
    let ns = TempNs::new("podtruth");
    churn_stable(&ns.name, 1, 3, &["--servers", "1", "--duration", "1s"]).await;
    let kube_client = kube().await;
    running_pods(&kube_client, &ns.name, 3).await;
    let dst = destination();
    let c = support::start_client(support::client_args(&[
        "--destination-addr",
        &dst,
        "--namespace",
        &ns.name,
        "--target-pods",
        "app.kubernetes.io/name=stable-svc-0",
        "--target-pods-port",
        "8080",
        "--profile-streams-per-pod",
        "2",
        "--ground-truth",
        "--staleness-grace",
        "10s",
    ]));
    let fleet = c.pods.clone();
    // Every stream: answered, what the truth expects, and opaque as given.
    let all_match = |opaque: bool| {
        let fleet = fleet.clone();
        move || {
            let all = fleet.all();
            if all.len() != 3 {
                return false;
            }
            all.iter().all(|p| {
                p.expected()
                    .is_some_and(|e| e.identity && e.opaque == opaque)
                    && (0..p.len()).all(|k| p.differences(k).is_empty())
            })
        }
    };
    support::eventually(
        "every stream as the truth says",
        Duration::from_secs(60),
        all_match(false),
    )
    .await;

    kubectl(
        &[
            "patch",
            "servers.policy.linkerd.io",
            "srv-0",
            "-n",
            &ns.name,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"proxyProtocol":"opaque"}}"#,
        ],
        None,
    );
    support::eventually(
        "every stream opaque",
        Duration::from_secs(60),
        all_match(true),
    )
    .await;
    // Give a late stream its grace to show, then: nothing went stale.
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(c.metrics.profiles.stale_episodes.get(), 0);

    kubectl(
        &[
            "delete",
            "servers.policy.linkerd.io",
            "srv-0",
            "-n",
            &ns.name,
        ],
        None,
    );
    let metrics = c.metrics.clone();
    support::eventually(
        "every stream reported stale",
        Duration::from_secs(60),
        || metrics.profiles.stale_streams.get() == 6,
    )
    .await;
    for p in fleet.all() {
        assert_eq!(p.expected().map(|e| e.opaque), Some(false));
        for k in 0..p.len() {
            assert_eq!(
                p.differences(k),
                ["opaque true (want false)"],
                "{} stream {k}",
                p.target
            );
        }
    }
    let summary = c.finish().await;
    assert_eq!(summary.profile_stale, (6, 6));
}

/// `churn --service-profiles --profile-change-interval`: every ServiceProfile
/// route change reaches every `GetProfile` stream of its service exactly
/// once, in order (a route added, then removed), and cleanup deletes the
/// profiles.
#[tokio::test]
#[ignore = "needs the local control plane (hack/local-cluster.sh up)"]
async fn a_service_profile_route_change_reaches_every_profile_stream_exactly() {
    let ns = TempNs::new("sp");
    let churn = |extra: &[&str]| {
        let profiles = ["--service-profiles", "--profile-routes", "2"];
        let args: Vec<String> = profiles
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect();
        let ns = ns.name.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            churn_stable(&ns, 2, 1, &args).await
        }
    };
    churn(&["--duration", "1s"]).await;
    let services: Vec<String> = (0..2)
        .map(|i| format!("stable-svc-{i}.{}.svc.cluster.local:8080", ns.name))
        .collect();
    let c = support::start_client(support::client_args(&[
        "--destination-addr",
        &destination(),
        "--target-services",
        &services.join(","),
        "--profile-streams-per-service",
        "3",
        "--connections",
        "2",
        "--ground-truth",
    ]));
    let routes = |n: usize| (0..n).map(|k| format!("route-{k}")).collect::<Vec<_>>();
    // Every stream of every service: these routes and retry ratio, after
    // exactly `updates` profiles.
    let all = |want: Vec<String>, ratio: f32, updates: u64| {
        let fleet = c.profiles.clone();
        let services = services.clone();
        move || {
            services.iter().all(|s| {
                fleet.get(s).is_some_and(|p| {
                    p.seen().iter().all(|seen| {
                        seen.as_ref().is_some_and(|x| {
                            x.routes == want && x.retry_ratio == Some(ratio) && x.updates == updates
                        })
                    })
                })
            })
        }
    };
    support::eventually(
        "the first profiles",
        Duration::from_secs(60),
        all(routes(2), 0.2, 1),
    )
    .await;

    // Three changes, 3 s apart: 3 routes and ratio 0.25, 2 and 0.2, 3 and 0.25.
    let out = churn(&["--profile-change-interval", "3s", "--duration", "10s"]).await;
    assert_eq!(
        summary_field(&out, "profile_changes"),
        6,
        "3 changes x 2 services"
    );
    support::eventually(
        "every change, once each",
        Duration::from_secs(60),
        all(routes(3), 0.25, 4),
    )
    .await;
    // Nothing more arrives.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(all(routes(3), 0.25, 4)(), "no update beyond the changes");
    // The truth (the ServiceProfiles) agrees, and timed each change on
    // each of the 6 streams once: 18, never early.
    for s in &services {
        let p = c.profiles.get(s).unwrap();
        assert!(
            (0..3).all(|k| p.differences(k).is_empty()),
            "{s}: {:?}",
            p.want()
        );
    }
    let text = support::scrape(&c.registry);
    let timed = support::sample(
        &text,
        "destination_client_profile_update_latency_seconds_count",
        &[],
    );
    assert_eq!(timed, Some(18.0), "{text}");
    assert_eq!(c.metrics.profiles.stale_episodes.get(), 0);
    let (_, measured) = c.finish_measured().await;
    assert_eq!(measured.profile_update_latency.count, 18);
    let slos = ["profile_update_latency.max<60s", "profile_stale_streams==0"]
        .map(|s| s.parse::<dst_load_controller::slo::Slo>().unwrap());
    let verdicts = dst_load_controller::slo::judge(&slos, &measured, 1);
    assert!(verdicts.iter().all(|v| v.pass), "{verdicts:?}");

    let out = run(&["cleanup", "--namespace", &ns.name]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("and 2 serviceprofiles"), "{stdout}");
}

/// `run` with a scenario's `profiles` against the real controller: churn
/// makes and changes the services' ServiceProfiles, the profile streams are
/// judged against them and each change is timed at most once per stream
/// (never a stream's first answer), and the run deletes the profiles.
#[tokio::test]
#[ignore = "needs the local control plane (hack/local-cluster.sh up)"]
async fn a_run_with_profile_changes_times_them_on_the_profile_streams() {
    let client = kube().await;
    let ns = TempNs::new("runsp");
    let dir = std::env::temp_dir().join(&ns.name);
    std::fs::create_dir_all(&dir).unwrap();
    let (file, report) = (dir.join("scenario.yaml"), dir.join("report.json"));
    std::fs::write(
        &file,
        "duration: 10s\nsettle: 30s\nseed: 3\nservices:\n  stable: {count: 2, endpoints: 1}\n\
         clients:\n  streams-per-service: 1\n  profile-streams-per-service: 3\n\
         profiles: {routes: 2, change-interval: 3s}\n",
    )
    .unwrap();
    let out = run(&[
        "run",
        "--destination-addr",
        &destination(),
        "--namespace",
        &ns.name,
        "--scenario-file",
        file.to_str().unwrap(),
        "--admin-addr",
        "127.0.0.1:0",
        "--report",
        report.to_str().unwrap(),
        "--slo",
        "profile_stale_streams==0",
        "--slo",
        "errors==0",
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} in {r}"));
    // Changes every 3 s over 10 s, both services each time.
    let changes = n("profile_changes");
    assert!(changes >= 4 && changes % 2 == 0, "{changes}: {stdout}");
    assert_eq!(n("profile_streams_created"), 6, "{stdout}");
    // Each stream's first profile, then at most one per change of its
    // service (the controller may coalesce nothing 3 s apart).
    assert_eq!(n("profile_updates_received"), 6 + changes * 3, "{stdout}");
    // Timed once per stream answered before the change: every change after
    // the streams' first answers (the first may precede them on a busy
    // machine), never more.
    let timed = r["profile_update_latency"]["count"].as_u64().unwrap_or(0);
    assert!(
        timed >= (changes - 2) * 3 && timed <= changes * 3,
        "{timed} timed of {changes} changes: {stdout}"
    );
    assert!(r.get("profile_stale_streams").is_none(), "{stdout}");
    assert!(
        r["slos"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["pass"] == true),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("profile changes {changes}")),
        "{stdout}"
    );
    // The run deleted what churn made, the profiles too.
    let profiles: Api<dst_load_controller::crds::ServiceProfile> =
        Api::namespaced(client.clone(), &ns.name);
    assert_eq!(count(&profiles).await, 0, "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
    eprintln!("{stdout}");
}

/// Starts `what` (`command`, its output into `log`, killed when the child
/// is dropped) and returns it with a channel to it once it listens on
/// loopback's `port`; its log in the panic when it exits or never listens
/// within two minutes.
async fn listening(
    what: &str,
    command: &mut tokio::process::Command,
    log: &std::path::Path,
    port: u16,
) -> (tokio::process::Child, tonic::transport::Channel) {
    let file = std::fs::File::create(log).unwrap();
    let mut child = command
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let shown = || std::fs::read_to_string(log).unwrap_or_default();
    loop {
        if let Ok(c) = endpoint.connect().await {
            return (child, c);
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}):\n{}", shown());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not listen:\n{}",
            shown()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Linkerd's identity service (`linkerd-controller identity` of the local
/// control plane's version, with the issuer, trust anchors and flags its
/// chart gives it, its TokenReviews against the local apiserver) and our
/// mock's, given the same issuer, the same service-account token and the
/// same requests: each bad request is refused with the same status code by
/// both, and the good one is signed by both with the same chain's shape.
/// The identity service reads its trust anchors from a fixed path under
/// /var/run/linkerd: it runs in a mount namespace of its own (`unshare
/// --mount`, `--map-root-user` when not root) with a tmpfs there.
#[tokio::test]
#[ignore = "needs a local control plane: make e2e"]
async fn the_mock_identity_refuses_every_bad_request_as_linkerds_identity_service_does() {
    use dst_load_controller::mock::identity::{Identities, IssuerConfig};
    use linkerd2_proxy_api::identity::{CertifyRequest, identity_client::IdentityClient};
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

    let controller = std::env::var("DST_LOCAL_LINKERD_CONTROLLER").expect(
        "DST_LOCAL_LINKERD_CONTROLLER: Linkerd's controller binary (`hack/local-cluster.sh up` writes it to .local-cluster/env)",
    );
    let trust_domain =
        std::env::var("DST_LOCAL_TRUST_DOMAIN").unwrap_or_else(|_| "cluster.local".into());
    let ns = TempNs::new("identity");
    kubectl(&["create", "namespace", &ns.name], None);
    // The service account controller makes `default` in a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !support::kubectl_output(&["get", "serviceaccount", "default", "-n", &ns.name], None)
        .status
        .success()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no default service account"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A proxy's token: bound to the identity audience, as the injector
    // projects it.
    let token = kubectl(
        &[
            "create",
            "token",
            "default",
            "-n",
            &ns.name,
            "--audience",
            "identity.l5d.io",
        ],
        None,
    )
    .trim()
    .as_bytes()
    .to_vec();
    let me = format!(
        "default.{}.serviceaccount.identity.linkerd.{trust_domain}",
        ns.name
    );
    let other = format!(
        "web.{}.serviceaccount.identity.linkerd.{trust_domain}",
        ns.name
    );

    // A trust anchor and the issuer it signs (an intermediate CA named as
    // the chart's), in the files both take.
    let dir = std::env::temp_dir().join(format!("dst-e2e-{}", ns.name));
    std::fs::create_dir_all(dir.join("issuer")).unwrap();
    let anchor_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut anchor_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    anchor_params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("root.linkerd.{trust_domain}"),
    );
    anchor_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let anchor = anchor_params.self_signed(&anchor_key).unwrap();
    let anchor_issuer = rcgen::Issuer::new(anchor_params, anchor_key);
    let issuer_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut issuer_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    issuer_params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("identity.linkerd.{trust_domain}"),
    );
    issuer_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let issuer = issuer_params
        .signed_by(&issuer_key, &anchor_issuer)
        .unwrap();
    std::fs::write(dir.join("anchor.pem"), anchor.pem()).unwrap();
    std::fs::write(dir.join("issuer/crt.pem"), issuer.pem()).unwrap();
    std::fs::write(dir.join("issuer/key.pem"), issuer_key.serialize_pem()).unwrap();

    // Linkerd's identity service, its trust anchors where it reads them.
    let port = free_port();
    let script = format!(
        "mount -t tmpfs tmpfs /run && mkdir -p /run/linkerd/identity/trust-roots && \
         cp {anchor} /run/linkerd/identity/trust-roots/ca-bundle.crt && \
         exec {controller} identity -addr=127.0.0.1:{port} -admin-addr=127.0.0.1:{admin} \
         -kubeconfig={kubeconfig} -controller-namespace=linkerd -identity-scheme=linkerd.io/tls \
         -identity-trust-domain={trust_domain} -identity-issuance-lifetime=24h0m0s \
         -identity-clock-skew-allowance=20s -issuer={issuer} -log-level=debug",
        anchor = dir.join("anchor.pem").display(),
        admin = free_port(),
        kubeconfig = std::env::var("KUBECONFIG").expect("KUBECONFIG"),
        issuer = dir.join("issuer").display(),
    );
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let log_path = dir.join("identity.log");
    let mut unshare = tokio::process::Command::new("unshare");
    if !root {
        unshare.arg("--map-root-user");
    }
    unshare.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
    let (mut linkerd, channel) = listening(
        "Linkerd's identity service (unshare, from util-linux)",
        &mut unshare,
        &log_path,
        port,
    )
    .await;
    let mut real = IdentityClient::new(channel);

    // Our mock, with the same issuer, token and the token's identity.
    let ids = Identities::issuing(IssuerConfig {
        ca: Some((dir.join("issuer/crt.pem"), dir.join("issuer/key.pem"))),
        token: token.clone(),
        identity: me.clone(),
        lifetime: Duration::from_secs(24 * 3600),
    })
    .unwrap();
    let mock = support::Mock::start_with_identities(ids).await;
    let mut ours = IdentityClient::connect(format!("http://{}", mock.addr))
        .await
        .unwrap();

    let csr = support::proxy_csr;
    let request = |identity: &str, token: &[u8], csr: Vec<u8>| CertifyRequest {
        identity: identity.to_string(),
        token: token.to_vec(),
        certificate_signing_request: csr,
    };
    use tonic::Code::{FailedPrecondition, InvalidArgument};
    let cases = [
        (
            "no identity",
            request("", &token, csr(&[&me], None, false)),
            InvalidArgument,
        ),
        (
            "no token",
            request(&me, b"", csr(&[&me], None, false)),
            InvalidArgument,
        ),
        ("no CSR", request(&me, &token, Vec::new()), InvalidArgument),
        (
            "a CSR that is not one",
            request(&me, &token, vec![1, 2, 3]),
            InvalidArgument,
        ),
        (
            "a CSR with two names",
            request(&me, &token, csr(&[&me, &other], None, false)),
            FailedPrecondition,
        ),
        (
            "a CSR for another name",
            request(&me, &token, csr(&[&other], None, false)),
            FailedPrecondition,
        ),
        (
            "another common name",
            request(&me, &token, csr(&[&me], Some(&other), false)),
            FailedPrecondition,
        ),
        (
            "a CSR with an IP address",
            request(&me, &token, csr(&[&me], None, true)),
            FailedPrecondition,
        ),
        (
            "a token the apiserver does not know",
            request(&me, b"not-a-token", csr(&[&me], None, false)),
            InvalidArgument,
        ),
        (
            "a name the token is not",
            request(&other, &token, csr(&[&other], None, false)),
            FailedPrecondition,
        ),
    ];
    let mut table = Vec::new();
    for (what, req, code) in cases {
        // A signed request is code Ok, and a difference like any other.
        let answer = |r: Result<tonic::Response<_>, tonic::Status>| match r {
            Ok(_) => (tonic::Code::Ok, "signed".to_string()),
            Err(e) => (e.code(), e.message().to_string()),
        };
        let by_linkerd = answer(real.certify(req.clone()).await);
        let by_mock = answer(ours.certify(req).await);
        eprintln!(
            "{what}: Linkerd {:?} ({}); mock {:?} ({})",
            by_linkerd.0, by_linkerd.1, by_mock.0, by_mock.1
        );
        table.push((what, by_linkerd.0, by_mock.0, code));
    }
    let differ: Vec<_> = table
        .iter()
        .filter(|(_, linkerd, mock, code)| linkerd != mock || linkerd != code)
        .collect();
    assert!(
        differ.is_empty(),
        "(case, Linkerd, mock, expected) that differ: {differ:?}\nLinkerd's log:\n{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );

    // The good request: both sign it, leaf and the issuer as intermediate.
    let good = request(&me, &token, csr(&[&me], None, false));
    let signed_by_linkerd = real.certify(good.clone()).await.unwrap().into_inner();
    let signed_by_mock = ours.certify(good).await.unwrap().into_inner();
    for (who, rsp) in [("Linkerd", &signed_by_linkerd), ("mock", &signed_by_mock)] {
        let (_, leaf) = x509_parser::parse_x509_certificate(&rsp.leaf_certificate).unwrap();
        let (_, issued_by) = x509_parser::parse_x509_certificate(issuer.der()).unwrap();
        leaf.verify_signature(Some(issued_by.public_key()))
            .unwrap_or_else(|e| panic!("{who}: the leaf is not the issuer's: {e}"));
        assert_eq!(
            rsp.intermediate_certificates,
            vec![issuer.der().to_vec()],
            "{who}"
        );
    }
    linkerd.kill().await.unwrap();
    mock.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Linkerd's policy controller (`linkerd-policy-controller` of the local
/// control plane's version, built from its source, with the chart's
/// flags), asked what mock-dst's Policy claims to answer as it does: a
/// plain Service's outbound policy by its ClusterIP and by its name, an
/// address in the cluster networks that no Service holds, and a churned
/// meshed pod's inbound port with no Server, under each of Linkerd's
/// default inbound policies (the pod's annotation). The mock serves the same
/// Service (its ClusterIP, its authority) and is asked the same; the
/// answers are compared whole.
#[tokio::test]
#[ignore = "needs a local control plane and Linkerd's policy controller: make e2e"]
async fn the_real_policy_controller_answers_as_the_mock_claims() {
    use dst_load_controller::{
        mock::{
            inbound::InboundPolicy,
            policy::{AppProtocol, ServicePolicy},
        },
        target::Authority,
    };
    use linkerd2_proxy_api::{
        inbound::{PortSpec, inbound_server_policies_client::InboundServerPoliciesClient},
        outbound::{TrafficSpec, outbound_policies_client::OutboundPoliciesClient, traffic_spec},
    };

    let controller = std::env::var("DST_LOCAL_LINKERD_POLICY_CONTROLLER")
        .ok()
        .filter(|c| !c.is_empty())
        .expect(
            "DST_LOCAL_LINKERD_POLICY_CONTROLLER: Linkerd's policy controller binary, which `hack/local-cluster.sh up` writes to .local-cluster/env for the Linkerd version build-deps builds it for (LINKERD_VERSION in hack/versions.env)",
        );
    assert!(
        std::path::Path::new(&controller).is_file(),
        "{controller} is not built: run hack/build-deps.sh linkerd_policy_controller (make e2e does)"
    );
    let ns = TempNs::new("policy");
    stable_services(&ns.name, 1, 2).await;
    let client = kube().await;
    let addrs = poll_slice_addrs(&client, &ns.name, "stable-svc-0", 2).await;
    let svc = Api::<Service>::namespaced(client.clone(), &ns.name)
        .get("stable-svc-0")
        .await
        .unwrap();
    let cluster_ip: std::net::IpAddr = svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .expect("a ClusterIP")
        .parse()
        .unwrap();
    let pod = Api::<Pod>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|p| {
            p.status.as_ref().and_then(|s| s.pod_ip.as_deref())
                == Some(addrs[0].ip().to_string().as_str())
        })
        .and_then(|p| p.metadata.name)
        .expect("the pod of the first address");

    // The lease the controller takes belongs to the destination
    // Deployment of the control plane's namespace: one that runs nothing.
    let deployment = format!("policy-{}", ns.name);
    kubectl(
        &[
            "-n",
            "linkerd",
            "create",
            "deployment",
            &deployment,
            "--image=none",
            "--replicas=0",
        ],
        None,
    );
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            support::kubectl_output(
                &[
                    "-n",
                    "linkerd",
                    "delete",
                    "deployment",
                    &self.0,
                    "--wait=false",
                ],
                None,
            );
        }
    }
    let _gone = Gone(deployment.clone());
    let dir = std::env::temp_dir().join(format!("dst-e2e-{}", ns.name));
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join("policy.log");
    let port = free_port();
    let mut command = tokio::process::Command::new(&controller);
    command
        .args([
            "--admission-controller-disabled",
            "--admin-addr",
            &format!("127.0.0.1:{}", free_port()),
            "--grpc-addr",
            &format!("127.0.0.1:{port}"),
            "--control-plane-namespace",
            "linkerd",
            "--policy-deployment-name",
            &deployment,
            // The chart's defaults. (No --probe-networks: with them, a
            // pod's HTTP probes would add a probe route to its inbound
            // answers, which the mock does not serve.)
            "--cluster-networks",
            "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8",
            "--default-opaque-ports",
            "25,587,3306,4444,5432,6379,9300,11211",
            "--default-policy",
            "all-unauthenticated",
        ])
        .env("HOSTNAME", &deployment)
        .env("LINKERD_POLICY_CONTROLLER_LOG", "linkerd=info,warn");
    let (linkerd, real) =
        listening("Linkerd's policy controller", &mut command, &log_path, port).await;

    // The mock, serving the same Service at the same ClusterIP.
    let authority: Authority = format!("stable-svc-0.{}.svc.cluster.local:8080", ns.name)
        .parse()
        .unwrap();
    let target = SocketAddr::new(cluster_ip, 8080);
    let mock = support::Mock::start(Default::default()).await;
    mock.handle.set(&authority, addrs.clone());
    mock.handle
        .set_policy(
            &authority,
            ServicePolicy {
                addresses: [target].into(),
                protocol: AppProtocol::Detect,
            },
        )
        .unwrap();
    let ours = tonic::transport::Endpoint::from_shared(format!("http://{}", mock.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();

    let spec = |target: traffic_spec::Target| TrafficSpec {
        source_workload: format!("{{\"ns\":\"{}\",\"pod\":\"client\"}}", ns.name),
        target: Some(target),
    };
    let outbound = |channel: tonic::transport::Channel, t: traffic_spec::Target| {
        let spec = spec(t);
        async move {
            let mut c = OutboundPoliciesClient::new(channel);
            let mut watch = c.watch(spec).await?.into_inner();
            Ok::<_, tonic::Status>(
                tokio::time::timeout(Duration::from_secs(60), watch.message())
                    .await
                    .expect("a policy within 60s")?
                    .expect("the stream open"),
            )
        }
    };
    // The controller indexes the Service a moment after it starts.
    let by_ip = traffic_spec::Target::Addr(target.into());
    let theirs = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match outbound(real.clone(), by_ip.clone()).await {
                Ok(p) => break p,
                Err(s) if s.code() == tonic::Code::NotFound => {
                    assert!(tokio::time::Instant::now() < deadline, "{s:?}");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(s) => panic!("{s:?}"),
            }
        }
    };
    let mine = outbound(ours.clone(), by_ip.clone()).await.unwrap();
    assert_eq!(mine, theirs, "by ClusterIP");

    let by_name = traffic_spec::Target::Authority(authority.to_string());
    let theirs = outbound(real.clone(), by_name.clone()).await.unwrap();
    let mine = outbound(ours.clone(), by_name).await.unwrap();
    assert_eq!(mine, theirs, "by name");

    // Each appProtocol the mock's protocols stand for, on open watches: the
    // controller's next policy and the mock's, once given that protocol.
    let watch = |channel: tonic::transport::Channel, target: traffic_spec::Target| {
        let spec = spec(target);
        async move {
            OutboundPoliciesClient::new(channel)
                .watch(spec)
                .await
                .unwrap()
                .into_inner()
        }
    };
    async fn next<T>(w: &mut tonic::Streaming<T>) -> T {
        tokio::time::timeout(Duration::from_secs(60), w.message())
            .await
            .expect("a policy within 60s")
            .expect("no error")
            .expect("the stream open")
    }
    let (mut real_watch, mut mock_watch) = (
        watch(real.clone(), by_ip.clone()).await,
        watch(ours.clone(), by_ip.clone()).await,
    );
    assert_eq!(next(&mut mock_watch).await, next(&mut real_watch).await);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    for (app_protocol, protocol) in [
        ("http", AppProtocol::Http1),
        ("kubernetes.io/h2c", AppProtocol::Http2),
        ("linkerd.io/opaque", AppProtocol::Opaque),
    ] {
        let patch =
            serde_json::json!({"spec": {"ports": [{"port": 8080, "appProtocol": app_protocol}]}});
        services
            .patch(
                "stable-svc-0",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Strategic(patch),
            )
            .await
            .unwrap();
        mock.handle
            .set_policy(
                &authority,
                ServicePolicy {
                    addresses: [target].into(),
                    protocol,
                },
            )
            .unwrap();
        let theirs = next(&mut real_watch).await;
        assert_eq!(
            next(&mut mock_watch).await,
            theirs,
            "appProtocol {app_protocol}"
        );
    }

    // Other targets: the same policy, or the same refusal's code, for each.
    let addr = |a: &str| traffic_spec::Target::Addr(a.parse::<SocketAddr>().unwrap().into());
    let name = |n: String| traffic_spec::Target::Authority(n);
    let mut too_high: linkerd2_proxy_api::net::TcpAddress = target.into();
    too_high.port = 70_000;
    let cases = [
        (
            "an address in the cluster networks no Service holds",
            Some(addr("10.97.255.254:8080")),
        ),
        ("port 0", Some(addr(&format!("{cluster_ip}:0")))),
        (
            "a port past 65535",
            Some(traffic_spec::Target::Addr(too_high)),
        ),
        ("no target", None),
        (
            "an unknown service",
            Some(name(format!("nope.{}.svc.cluster.local:8080", ns.name))),
        ),
        (
            "a name that is no service's",
            Some(name("linkerd.io:443".into())),
        ),
        ("a name that does not parse", Some(name("a b:80".into()))),
        (
            "a name without its cluster domain, as linkerd diagnostics policy asks",
            Some(name(format!("stable-svc-0.{}.svc:8080", ns.name))),
        ),
        (
            "a name without a port",
            Some(name(format!("stable-svc-0.{}.svc.cluster.local", ns.name))),
        ),
    ];
    let me = format!("{{\"ns\":\"{}\",\"pod\":\"client\"}}", ns.name);
    let cases = cases
        .into_iter()
        .map(|(what, t)| (what, me.as_str(), t))
        .chain([
            ("no source workload", "", Some(by_ip.clone())),
            (
                "a source workload without its namespace",
                "client",
                Some(by_ip.clone()),
            ),
            (
                "a source workload of JSON without a pod",
                "{\"ns\":\"x\"}",
                Some(by_ip.clone()),
            ),
            (
                "a source workload as ns:pod",
                "x:client",
                Some(by_ip.clone()),
            ),
        ]);
    let ask = |channel: tonic::transport::Channel,
               workload: &str,
               target: Option<traffic_spec::Target>| {
        let spec = TrafficSpec {
            source_workload: workload.to_string(),
            target,
        };
        async move {
            OutboundPoliciesClient::new(channel)
                .get(spec)
                .await
                .map(|r| r.into_inner())
        }
    };
    let mut differ = Vec::new();
    for (what, workload, target) in cases {
        let theirs = ask(real.clone(), workload, target.clone()).await;
        let mine = ask(ours.clone(), workload, target).await;
        let same = match (&theirs, &mine) {
            (Ok(a), Ok(b)) => a == b,
            (Err(a), Err(b)) => a.code() == b.code(),
            _ => false,
        };
        if !same {
            differ.push(format!("{what}: Linkerd {theirs:?}, mock {mine:?}"));
        }
    }
    assert_eq!(differ, Vec::<String>::new());

    // The meshed pod's application port, no Server.
    let port_spec = PortSpec {
        workload: format!("{{\"ns\":\"{}\",\"pod\":\"{pod}\"}}", ns.name),
        port: 8080,
    };
    let inbound = |channel: tonic::transport::Channel, spec: PortSpec| async move {
        InboundServerPoliciesClient::new(channel)
            .get_port(spec)
            .await
            .map(|r| r.into_inner())
    };
    let theirs = inbound(real.clone(), port_spec.clone()).await.unwrap();
    assert_eq!(
        inbound(ours.clone(), port_spec.clone()).await.unwrap(),
        theirs,
        "inbound"
    );
    // Each of Linkerd's default policies, given to the pod by its
    // annotation there and to the port over the mock's handle here: the
    // same server, authorizations and networks (the chart's cluster
    // networks on both).
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    for policy in InboundPolicy::ALL
        .into_iter()
        .filter(|p| *p != InboundPolicy::default())
    {
        let patch = serde_json::json!({"metadata": {"annotations": {
            "config.linkerd.io/default-inbound-policy": policy.as_str()
        }}});
        pods.patch(
            &pod,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
        mock.handle.set_inbound_port(8080, policy).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let theirs = loop {
            let server = inbound(real.clone(), port_spec.clone()).await.unwrap();
            if server.labels.get("name").map(String::as_str) == Some(policy.as_str()) {
                break server;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Linkerd's controller never took {policy}: {server:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert_eq!(
            inbound(ours.clone(), port_spec.clone()).await.unwrap(),
            theirs,
            "inbound {policy}"
        );
    }
    // Refused by both, with the same message. (A pod the controller does
    // not know is NotFound there; the mock, knowing no pods, answers every
    // workload.)
    for bad in [
        PortSpec {
            port: 0,
            ..port_spec.clone()
        },
        PortSpec {
            port: 70_000,
            ..port_spec.clone()
        },
        PortSpec {
            workload: "web-0".into(),
            ..port_spec.clone()
        },
        PortSpec {
            workload: "{\"pod\":\"web-0\"}".into(),
            ..port_spec.clone()
        },
    ] {
        let refused = |r: Result<_, tonic::Status>| {
            let s = r.expect_err("refused");
            (s.code(), s.message().to_string())
        };
        assert_eq!(
            refused(inbound(ours.clone(), bad.clone()).await),
            refused(inbound(real.clone(), bad.clone()).await),
            "{bad:?}"
        );
    }
    // A watch by name when its Service goes (the mock: its policy goes):
    // the next policy is the same on both, and both streams stay open.
    let by_name = |channel| {
        watch(
            channel,
            traffic_spec::Target::Authority(authority.to_string()),
        )
    };
    let (mut real_watch, mut mock_watch) =
        (by_name(real.clone()).await, by_name(ours.clone()).await);
    assert_eq!(
        next(&mut mock_watch).await,
        next(&mut real_watch).await,
        "by name, before"
    );
    services
        .delete("stable-svc-0", &DeleteParams::default())
        .await
        .unwrap();
    assert!(mock.handle.delete_policy(&authority));
    // Both keep the last policy: nothing is sent, the streams stay open
    // (an earlier run of this test waited 60 s for Linkerd's: none came).
    for (who, w) in [("Linkerd", &mut real_watch), ("the mock", &mut mock_watch)] {
        let more = tokio::time::timeout(Duration::from_secs(5), w.message()).await;
        assert!(
            more.is_err(),
            "{who}'s stream stays open and quiet: {more:?}"
        );
    }
    // A new watch of the name: the same from both, the deleted Service's
    // last policy (opaque) from Linkerd's index.
    let (mut real_again, mut mock_again) =
        (by_name(real.clone()).await, by_name(ours.clone()).await);
    assert_eq!(
        next(&mut mock_again).await,
        next(&mut real_again).await,
        "by name, its Service gone"
    );
    mock.stop().await;
    drop(linkerd);
}
