//! Helpers shared by the integration tests: a mock server on loopback, a
//! client built from real flags, and metric scraping.
#![allow(dead_code)]

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use clap::Parser;
use dst_load_controller::{
    client::{self, Client, Fleet},
    mock::{Handle, MockDestination, identity::Identities, server::Behavior},
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{Api, api::ListParams};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// `kubectl` (`DST_LOCAL_KUBECTL`, else on PATH) run to completion with
/// `stdin`, whatever its status.
pub fn kubectl_output(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let kubectl = std::env::var("DST_LOCAL_KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let mut child = std::process::Command::new(kubectl)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// [`kubectl_output`] that must succeed: its stdout.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> String {
    let out = kubectl_output(args, stdin);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The ready addresses of `service`'s EndpointSlices in `ns`, at `port`,
/// sorted.
pub async fn slice_addrs(
    client: &kube::Client,
    ns: &str,
    service: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, String> {
    Ok(slice_endpoints(client, ns, service, port)
        .await?
        .into_keys()
        .collect())
}

/// The ready addresses of `service`'s EndpointSlices in `ns`, at `port`,
/// each with the pod its endpoint names (if any).
pub async fn slice_endpoints(
    client: &kube::Client,
    ns: &str,
    service: &str,
    port: u16,
) -> Result<BTreeMap<SocketAddr, Option<String>>, String> {
    Ok(ready_endpoints(
        &service_slices(client, ns, service).await?,
        port,
    ))
}

async fn service_slices(
    client: &kube::Client,
    ns: &str,
    service: &str,
) -> Result<Vec<EndpointSlice>, String> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
    Ok(slices.list(&lp).await.map_err(|e| e.to_string())?.items)
}

fn ready_endpoints<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    port: u16,
) -> BTreeMap<SocketAddr, Option<String>> {
    slices
        .into_iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .flat_map(|e| {
            let pod = e
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| r.name.clone());
            e.addresses.iter().map(move |ip| {
                (
                    SocketAddr::new(ip.parse().expect("an IP"), port),
                    pod.clone(),
                )
            })
        })
        .collect()
}

/// Whether Kubernetes is done with `service`'s last change: of its
/// `slices`, those that Kubernetes' EndpointSlice controller manages list exactly the ready pods
/// the Service selects, none of them terminating, and a Deployment of the
/// same name has its replicas. A slice written by hand is not judged, nor is
/// a Service without a selector. Before that, streams that match the slices
/// prove nothing: the slices may still be about to change.
pub async fn service_settled(
    client: &kube::Client,
    ns: &str,
    service: &str,
    slices: &[EndpointSlice],
) -> Result<(), String> {
    use k8s_openapi::api::{
        apps::v1::Deployment,
        core::v1::{Pod, Service},
    };
    let svc = Api::<Service>::namespaced(client.clone(), ns)
        .get_opt(service)
        .await
        .map_err(|e| e.to_string())?;
    let Some(selector) = svc.and_then(|s| s.spec?.selector).filter(|s| !s.is_empty()) else {
        return Ok(());
    };
    let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&labels.join(",")))
        .await
        .map_err(|e| e.to_string())?
        .items;
    let mut want = BTreeSet::new();
    for p in &pods {
        let name = p.metadata.name.as_deref().unwrap_or_default();
        if p.metadata.deletion_timestamp.is_some() {
            return Err(format!("{service}: pod {name} is terminating"));
        }
        let status = p.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        match status.and_then(|s| s.pod_ip.as_deref()) {
            Some(ip) if ready => {
                want.insert(ip.parse::<std::net::IpAddr>().map_err(|e| e.to_string())?);
            }
            _ => return Err(format!("{service}: pod {name} is not ready")),
        }
    }
    if let Some(d) = Api::<Deployment>::namespaced(client.clone(), ns)
        .get_opt(service)
        .await
        .map_err(|e| e.to_string())?
    {
        let replicas = d.spec.and_then(|s| s.replicas).unwrap_or(1);
        if pods.len() != replicas as usize {
            return Err(format!(
                "{service}: {} pods, its Deployment wants {replicas}",
                pods.len()
            ));
        }
    }
    let managed = slices.iter().filter(|s| {
        s.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("endpointslice.kubernetes.io/managed-by"))
            .is_some_and(|m| m == "endpointslice-controller.k8s.io")
    });
    let listed: BTreeSet<std::net::IpAddr> = ready_endpoints(managed, 0)
        .into_keys()
        .map(|a| a.ip())
        .collect();
    if listed != want {
        return Err(format!(
            "{service}: its slices list {listed:?}, its ready pods are {want:?}"
        ));
    }
    Ok(())
}

/// A controller's log as written from the moment it was marked.
pub struct ControllerLog {
    path: PathBuf,
    from: u64,
}

impl ControllerLog {
    /// The log at `path` from now on.
    pub fn mark(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let from = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("the controller's log {}: {e}", path.display()))
            .len();
        Self { path, from }
    }

    /// The whole log at `path` (namespaces are unique per test, so lines
    /// naming a test's pods are that test's).
    pub fn whole(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            from: 0,
        }
    }

    /// The lines written since the mark.
    pub fn lines(&self) -> Vec<String> {
        let all = std::fs::read(&self.path).unwrap_or_default();
        let new = &all[(self.from as usize).min(all.len())..];
        String::from_utf8_lossy(new)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The pods of `ns` whose endpoints the controller logged leaving out
    /// because its pod cache did not have them yet (`Unable to create new
    /// address: unable to fetch pod NS/NAME: ...`): the late-pod finding.
    pub fn left_out(&self, ns: &str) -> BTreeSet<String> {
        let prefix = format!("unable to fetch pod {ns}/");
        self.lines()
            .iter()
            .filter(|l| l.contains("Unable to create new address"))
            .filter_map(|l| {
                let rest = &l[l.find(&prefix)? + prefix.len()..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
                    .unwrap_or(rest.len());
                Some(rest[..end].to_string())
            })
            .collect()
    }
}

/// One watched service: where its EndpointSlices are and what each of its
/// streams holds now.
#[derive(Debug)]
pub struct Watched {
    pub ns: String,
    pub service: String,
    pub port: u16,
    pub sets: Vec<Vec<SocketAddr>>,
}

/// Where streams are checked against: the cluster whose slices are the
/// truth, its kubeconfig (for touching a slice; `None`: the environment's),
/// and the log of the destination controller serving the streams.
pub struct SliceTruth<'a> {
    pub client: &'a kube::Client,
    pub kubeconfig: Option<&'a str>,
    pub log: &'a ControllerLog,
}

/// Whether each watched service is settled and each of its streams holds
/// exactly its slices' ready addresses.
async fn sets_equal_slices(
    truth: &SliceTruth<'_>,
    watched: Result<Vec<Watched>, String>,
) -> Result<(), String> {
    for w in watched? {
        let slices = service_slices(truth.client, &w.ns, &w.service).await?;
        service_settled(truth.client, &w.ns, &w.service, &slices).await?;
        let want: Vec<SocketAddr> = ready_endpoints(&slices, w.port).into_keys().collect();
        if want.is_empty() {
            return Err(format!(
                "{}: no ready endpoints in its EndpointSlices yet",
                w.service
            ));
        }
        for (i, have) in w.sets.iter().enumerate() {
            if *have != want {
                return Err(format!(
                    "{} stream {i}: {have:?}, slices list {want:?}",
                    w.service
                ));
            }
        }
    }
    Ok(())
}

/// Waits up to `timeout` until every watched service is settled (see
/// [`service_settled`]) and each of its streams holds exactly its slices'
/// ready addresses.
///
/// The one tolerated exception is the late-pod finding (BENCHMARKS.md):
/// Linkerd's controller leaves out an endpoint whose pod reached its pod
/// cache after the slice, logs `Unable to create new address`, and serves
/// it only once the slice changes again. When streams still miss addresses
/// at `timeout`, hold none too many, and the controller logged leaving out
/// exactly the pods of every address they miss, the case is printed and
/// counted (see [`record_late_pod`]), those services' slices are touched,
/// and the streams must then converge within `timeout`. Anything else
/// fails the test.
pub async fn converge<F>(what: &str, truth: &SliceTruth<'_>, timeout: Duration, mut watched: F)
where
    F: FnMut() -> Result<Vec<Watched>, String>,
{
    let Err(last) = poll_ok(timeout, || sets_equal_slices(truth, watched())).await else {
        return;
    };
    let watched_now = watched().unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut late: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for w in &watched_now {
        let endpoints = slice_endpoints(truth.client, &w.ns, &w.service, w.port)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let logged = truth.log.left_out(&w.ns);
        for (i, set) in w.sets.iter().enumerate() {
            let extra: Vec<_> = set.iter().filter(|a| !endpoints.contains_key(a)).collect();
            assert!(
                extra.is_empty(),
                "{what}: {} stream {i} holds {extra:?}, which no slice lists ({last})",
                w.service
            );
            for (addr, pod) in endpoints.iter().filter(|(a, _)| !set.contains(a)) {
                let pod = pod.as_ref().unwrap_or_else(|| {
                    panic!(
                        "{what}: {} stream {i} misses {addr}, whose endpoint names no pod ({last})",
                        w.service
                    )
                });
                assert!(
                    logged.contains(pod),
                    "{what}: {} stream {i} misses {addr} (pod {pod}) and the controller \
                     logged no 'Unable to create new address' for it ({last})",
                    w.service
                );
                late.entry((w.ns.clone(), w.service.clone()))
                    .or_default()
                    .insert(pod.clone());
            }
        }
    }
    assert!(!late.is_empty(), "{what}: {last}");
    for ((ns, service), pods) in &late {
        record_late_pod(ns, service, pods);
        touch_slices(truth.kubeconfig, ns, service);
    }
    if let Err(why) = poll_ok(timeout, || sets_equal_slices(truth, watched())).await {
        panic!(
            "{what}: after touching the slices the controller left pods out of ({late:?}): {why}"
        )
    }
}

/// Polls `f` every 250 ms until it is `Ok` or `timeout` passes: then its
/// last error.
pub async fn poll_ok<F, Fut>(timeout: Duration, mut f: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match f().await {
            Ok(()) => return Ok(()),
            Err(why) if tokio::time::Instant::now() >= deadline => return Err(why),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Prints a tolerated late-pod case with the test's name, and appends it to
/// the file `DST_E2E_FINDINGS` names (`make e2e` prints them all at its end:
/// how often Linkerd left a pod out is a finding, not noise).
pub fn record_late_pod(ns: &str, service: &str, pods: &BTreeSet<String>) {
    use std::io::Write;
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("?");
    let line = format!(
        "late-pod tolerated: {test}: Linkerd's controller left out {ns}/{service} pods {pods:?}; slices touched"
    );
    eprintln!("{line}");
    if let Ok(path) = std::env::var("DST_E2E_FINDINGS") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("DST_E2E_FINDINGS is writable");
        writeln!(f, "{line}").expect("DST_E2E_FINDINGS is writable");
    }
}

/// Labels every EndpointSlice of `service` in `ns` anew: a change Linkerd's
/// controller acts on (it rebuilds the slice's addresses).
pub fn touch_slices(kubeconfig: Option<&str>, ns: &str, service: &str) {
    let selector = format!("kubernetes.io/service-name={service}");
    let value = format!("dst-load.linkerd.io/touched={}", rand::random::<u32>());
    let mut args = vec![];
    if let Some(kc) = kubeconfig {
        args.extend(["--kubeconfig", kc]);
    }
    args.extend([
        "-n",
        ns,
        "label",
        "--overwrite",
        "endpointslice",
        "-l",
        &selector,
        &value,
    ]);
    kubectl(&args, None);
}

/// A mock Destination server on 127.0.0.1.
pub struct Mock {
    pub addr: SocketAddr,
    pub handle: Handle,
    pub registry: Arc<Registry>,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl Mock {
    pub async fn start(behavior: Behavior) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, behavior)
    }

    pub fn start_on(listener: tokio::net::TcpListener, behavior: Behavior) -> Self {
        Self::serve(listener, behavior, None)
    }

    /// A mock that serves the Identity service too, with `identities`.
    pub async fn start_with_identities(identities: Identities) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, Behavior::default(), Some(identities))
    }

    /// A mock on `listener` with `behavior`, serving Identity too when
    /// given `identities`.
    pub fn serve(
        listener: tokio::net::TcpListener,
        behavior: Behavior,
        identities: Option<Identities>,
    ) -> Self {
        let addr = listener.local_addr().unwrap();
        let mut registry = Registry::default();
        let mut mock = MockDestination::new(behavior, &mut registry);
        if let Some(ids) = identities {
            mock = mock.with_identities(ids);
        }
        let handle = mock.handle();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { mock.serve(listener, shutdown).await.unwrap() }
        });
        Self {
            addr,
            handle,
            registry: Arc::new(registry),
            shutdown,
            task,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

#[derive(Parser)]
struct ClientCli {
    #[command(flatten)]
    args: dst_load_controller::cmd::client::Args,
}

/// A client parsed from command-line flags, exactly as a user types them.
pub fn client_args(flags: &[&str]) -> dst_load_controller::cmd::client::Args {
    let args = ClientCli::try_parse_from(std::iter::once("client").chain(flags.iter().copied()))
        .unwrap_or_else(|e| panic!("{e}"))
        .args;
    args.validate().unwrap();
    args
}

/// A running client.
pub struct RunningClient {
    pub fleet: Arc<Fleet>,
    pub profiles: Arc<client::profile::ProfileFleet>,
    pub pods: Arc<client::profile::ProfileFleet>,
    pub registry: Arc<Registry>,
    pub metrics: client::metrics::Metrics,
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<client::Summary, client::Error>>,
}

/// Starts a client from its flags (validated as the subcommand does).
pub fn start_client(args: dst_load_controller::cmd::client::Args) -> RunningClient {
    start_client_with(client::Config::try_from(&args).expect("valid client flags"))
}

/// Starts a client from a config built directly.
pub fn start_client_with(config: client::Config) -> RunningClient {
    let mut registry = Registry::default();
    let c = Client::new(config, &mut registry).unwrap();
    let fleet = c.fleet();
    let profiles = c.profile_fleet();
    let pods = c.pod_fleet();
    let metrics = c.metrics().clone();
    let stop = CancellationToken::new();
    let task = tokio::spawn(c.run(stop.clone()));
    RunningClient {
        fleet,
        profiles,
        pods,
        registry: Arc::new(registry),
        metrics,
        stop,
        task,
    }
}

impl RunningClient {
    pub async fn finish(self) -> client::Summary {
        self.stop.cancel();
        self.task.await.unwrap().unwrap()
    }

    /// Stops the client; its summary and what a report would say of it.
    pub async fn finish_measured(
        self,
    ) -> (
        client::Summary,
        dst_load_controller::measurements::Measurements,
    ) {
        let (fleet, metrics) = (self.fleet.clone(), self.metrics.clone());
        let summary = self.finish().await;
        let measured = client::measure(&fleet, &metrics, &summary);
        (summary, measured)
    }

    /// Every stream's set for `service`, sorted; empty until the service's
    /// streams are started.
    pub fn sets(&self, service: &str) -> Vec<Vec<SocketAddr>> {
        let Some(svc) = self
            .fleet
            .services()
            .into_iter()
            .find(|s| s.service == service)
        else {
            return Vec::new();
        };
        svc.slots().iter().map(|s| s.addrs()).collect()
    }
}

/// A port free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// [`eventually`] for an async check, polled every 250 ms for up to `timeout`.
pub async fn eventually_async<F, Fut>(what: &str, timeout: Duration, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    assert!(
        within_async(timeout, f).await,
        "timed out after {timeout:?} waiting for {what}"
    );
}

/// Whether an async check holds within `timeout` (polled every 250 ms).
pub async fn within_async<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Polls `f` until it is true or `timeout` passes (then panics with `what`).
pub async fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !f() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Renders a registry as OpenMetrics text.
pub fn scrape(registry: &Registry) -> String {
    let mut s = String::new();
    prometheus_client::encoding::text::encode(&mut s, registry).unwrap();
    s
}

/// The value of the sample `name{labels}` in `text`, where every given
/// `k="v"` must appear among the sample's labels. None when absent.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, r)) => (m, r.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            all.then(|| value.parse().ok()).flatten()
        })
}

pub fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    let mut v: Vec<SocketAddr> = list.iter().map(|s| s.parse().unwrap()).collect();
    v.sort();
    v
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Sample names in OpenMetrics text (`name{...} value` and `name value`).
pub fn names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

/// Metric names in a PromQL expression: identifiers outside strings and
/// label matchers that are not functions, keywords or grouping labels.
pub fn promql_metrics(expr: &str) -> BTreeSet<String> {
    const NOT_METRICS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "rate",
        "irate",
        "increase",
        "histogram_quantile",
        "by",
        "without",
        "on",
        "ignoring",
        "and",
        "or",
        "unless",
        "offset",
        "bool",
        "topk",
        "bottomk",
        "le",
        "abs",
        "group_left",
        "group_right",
        "clamp_min",
        "clamp_max",
        "vector",
        "time",
    ];
    let mut out = BTreeSet::new();
    let (mut depth_brace, mut depth_bracket, mut in_str) = (0, 0, false);
    let mut grouping = false; // inside `by (...)`
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if in_str {
            in_str = c != '"';
            i += 1;
            continue;
        }
        match c {
            '"' => in_str = true,
            '{' => depth_brace += 1,
            '}' => depth_brace -= 1,
            '[' => depth_bracket += 1,
            ']' => depth_bracket -= 1,
            ')' if grouping => grouping = false,
            // A number, `1e9` or `0.95` included.
            c if c.is_ascii_digit() => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                continue;
            }
            c if (c.is_ascii_alphabetic() || c == '_' || c == ':')
                && depth_brace == 0
                && depth_bracket == 0 =>
            {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                if word == "by" || word == "without" || word == "on" || word == "ignoring" {
                    grouping = true;
                } else if !grouping && !NOT_METRICS.contains(&word.as_str()) {
                    // A function call is followed by '('.
                    let next = chars[i..].iter().find(|c| !c.is_whitespace());
                    if next != Some(&'(') {
                        out.insert(word);
                    }
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Every `expr` in a dashboard's panels.
pub fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(serde_json::Value::String(e)) = m.get("expr") {
                out.push(e.clone());
            }
            // A variable's `label_values(SELECTOR, label)`: its selector is
            // a query too (the values come from its series).
            if let Some(serde_json::Value::String(d)) = m.get("definition")
                && let Some(args) = d
                    .strip_prefix("label_values(")
                    .and_then(|a| a.strip_suffix(')'))
            {
                let selector = args.rsplit_once(',').map_or(args, |(s, _)| s).trim();
                out.push(selector.to_string());
            }
            m.values().for_each(|v| exprs(v, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// Every dashboard's path and its panels' queries.
pub fn dashboard_queries() -> Vec<(PathBuf, Vec<String>)> {
    let mut dashboards: Vec<_> = std::fs::read_dir(repo().join("dashboards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    dashboards.sort();
    dashboards
        .into_iter()
        .map(|path| {
            let json: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let mut all = Vec::new();
            exprs(&json, &mut all);
            (path, all)
        })
        .collect()
}

/// `dashboards/external-metrics.txt`: name -> where it comes from.
pub fn external_metrics() -> std::collections::BTreeMap<String, String> {
    std::fs::read_to_string(repo().join("dashboards/external-metrics.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, source) = l.split_once(char::is_whitespace).unwrap();
            (name.to_string(), source.trim().to_string())
        })
        .collect()
}

/// A real Prometheus (the binary named by `DST_PROMETHEUS`, built by
/// `hack/build-deps.sh prometheus`) on 127.0.0.1 with `config`, in its own
/// directory (removed on drop), ready when returned.
pub struct Prometheus {
    pub child: tokio::process::Child,
    pub url: String,
    pub dir: PathBuf,
}

impl Prometheus {
    pub async fn start(config: &str) -> Self {
        let bin = std::env::var("DST_PROMETHEUS").expect(
            "DST_PROMETHEUS must name a prometheus binary: run hack/build-deps.sh prometheus (hack/e2e.sh sets it)",
        );
        let dir =
            std::env::temp_dir().join(format!("dst-prom-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let child = tokio::process::Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("start prometheus");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ready = http.get(format!("{url}/-/ready")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "prometheus not ready in 60s; see {}",
                dir.join("prometheus.log").display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Self { child, url, dir }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes what the apiserver sets on an object, and its owners, so that a
/// copy of it can be created.
pub fn strip_server_fields(obj: &mut serde_json::Value) {
    if let Some(o) = obj.as_object_mut() {
        o.remove("status");
    }
    if let Some(meta) = obj["metadata"].as_object_mut() {
        for k in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "managedFields",
            "ownerReferences",
            "generateName",
        ] {
            meta.remove(k);
        }
    }
}

/// The late-pod case: a second EndpointSlice `{service}-late` of `service`
/// in `ns` (its `ports` those of the service's own slice) whose one ready
/// endpoint names the pod `late-pod`, which does not exist yet.
pub fn late_slice(ns: &str, service: &str, ports: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{service}-late"),
            "namespace": ns,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "e2e.dst-load.linkerd.io",
            },
        },
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": [{
            "addresses": ["10.250.0.9"],
            "conditions": {"ready": true},
            "targetRef": {"kind": "Pod", "name": "late-pod", "namespace": ns},
        }],
    })
}

/// `late-pod`: a copy of `pod` (churn's meshed pod), out of its Deployment
/// (no owner, not matching its selector).
pub fn late_pod(pod: &serde_json::Value) -> serde_json::Value {
    let mut pod = pod.clone();
    strip_server_fields(&mut pod);
    let meta = pod["metadata"].as_object_mut().expect("pod metadata");
    meta.insert("name".into(), "late-pod".into());
    if let Some(labels) = meta.get_mut("labels").and_then(|l| l.as_object_mut()) {
        labels.remove("app.kubernetes.io/name");
    }
    pod
}

/// One HTTP request with a JSON body (e.g. to the mock's control API):
/// its status and body.
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .unwrap();
    let rsp = client.request(req).await.unwrap();
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// Runs our binary with `args`, no cluster (`KUBECONFIG` points nowhere)
/// and no `RUST_LOG`: it must exit 2 with `expect` in its standard error.
/// Any side effect would fail differently. Returns what it wrote.
pub fn usage_error(args: &[&str], expect: &str) -> std::process::Output {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dst-load-controller"))
        .args(args)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(
        stderr.contains(expect),
        "{args:?}: expected '{expect}' in:\n{stderr}"
    );
    out
}

/// How many objects `api` lists.
pub async fn count<K>(api: &kube::Api<K>) -> usize
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(&kube::api::ListParams::default())
        .await
        .unwrap()
        .items
        .len()
}

/// A proxy's certificate signing request: a fresh ECDSA P-256 key, the DNS
/// names `dns`, `cn` as common name if given (none otherwise), and an IP
/// address among its names when `ip`.
pub fn proxy_csr(dns: &[&str], cn: Option<&str>, ip: bool) -> Vec<u8> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params =
        rcgen::CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(cn) = cn {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
    }
    if ip {
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress([10, 0, 0, 1].into()));
    }
    params.serialize_request(&key).unwrap().der().to_vec()
}

/// The names of the objects `api` lists, in its order.
pub async fn names_of<K>(api: &kube::Api<K>) -> Vec<String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(&kube::api::ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|o| o.meta().name.clone())
        .collect()
}

/// `run` of a short seeded plan on the in-process mock: 2 services of 3
/// streams each oscillating 2 <-> 6 endpoints on fixed `hold`s for
/// `duration` (settling up to 10 s), gated on errors only. Callers add
/// the rest (`--mock-delay`, `--repeat`, outputs, the admin address).
pub fn short_run(seed: &str, hold: &str, duration: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dst-load-controller"));
    cmd.args(["run", "--scenario", "small-oscillation", "--services", "2"])
        .args(["--streams-per-service", "3", "--connections", "3"])
        .args(["--min-endpoints", "2", "--max-endpoints", "6"])
        .args(["--min-hold", hold, "--max-hold", hold, "--jitter", "0s"])
        .args(["--duration", duration, "--settle", "10s", "--seed", seed])
        .args(["--slo", "errors==0"]);
    cmd
}
