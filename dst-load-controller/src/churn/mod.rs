//! `churn`: stable and oscillating Services/Deployments whose fake pods land
//! on KWOK nodes, scaled with seeded jitter the way an autoscaler would.

pub mod metrics;
pub mod objects;
pub use crate::schedule;

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Namespace, Service},
};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::{
    metrics::{Metrics, ServiceLabels},
    objects::{Export, NodeSelector, Pattern, ProxyInjection, ServiceTemplate, TolerationSpec},
    schedule::{Oscillation, OscillationArgs, Schedule},
};
use crate::{
    admin::Readiness,
    kube_api::{Caller, KubeArgs, Op},
    labels,
    runtime::Runtime,
};

/// Flags of `churn`.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The namespace for every object (created if missing).
    #[arg(long, default_value = "dst-load-test")]
    pub namespace: String,

    /// Services with a fixed number of endpoints (`stable-svc-{i}`).
    #[arg(long, default_value_t = 0)]
    pub stable_services: u32,

    /// Endpoints (replicas) of each stable service.
    #[arg(long, default_value_t = 1)]
    pub stable_endpoints: u32,

    /// Services that oscillate between min and max (`oscillate-svc-{i}`).
    #[arg(long, default_value_t = 0)]
    pub oscillate_services: u32,

    /// Endpoints at the low end (and at start).
    #[arg(long, default_value_t = 1)]
    pub oscillate_min_endpoints: u32,

    /// Endpoints at the high end.
    #[arg(long, default_value_t = 10)]
    pub oscillate_max_endpoints: u32,

    #[command(flatten)]
    pub oscillation: OscillationArgs,

    /// Stop after this long. Unset = until signalled or --cycles are done.
    #[arg(long)]
    pub duration: Option<humantime::Duration>,

    /// Node selector for the fake pods.
    #[arg(long, default_value = "type=kwok")]
    pub node_selector: NodeSelector,

    /// Toleration for the fake pods (`key[=value]:Effect`). Repeatable.
    #[arg(long, default_value = "kwok.x-k8s.io/node=fake:NoSchedule")]
    pub toleration: Vec<TolerationSpec>,

    /// The Service port (named `http`).
    #[arg(long, default_value_t = 8080)]
    pub service_port: u16,

    /// The Linkerd control plane namespace the pods are meshed into
    /// (`linkerd.io/control-plane-ns`). Empty = unmeshed pods.
    #[arg(long, default_value = "linkerd")]
    pub control_plane_ns: String,

    /// How pods look meshed: `synthetic` writes the injected pod shape (the
    /// `linkerd-proxy` container with its env and ports, the injector's labels
    /// and annotations), which Linkerd's destination controller requires and
    /// KWOK never runs; `webhook` only sets `linkerd.io/inject: enabled`, for
    /// clusters that run Linkerd's proxy injector.
    #[arg(long, value_enum, default_value_t = ProxyInjection::Synthetic)]
    pub proxy_injection: ProxyInjection,

    /// Label churn's Services for Linkerd multicluster: `remote-discovery`
    /// (`mirror.linkerd.io/exported=remote-discovery`) or `federated`
    /// (`mirror.linkerd.io/federated=member`), matching `linkerd multicluster
    /// link-gen`'s default selectors; `none` leaves them unexported.
    #[arg(long, value_enum, default_value_t = Export::None)]
    pub export: Export,

    /// `linkerd.io/proxy-version` (and the proxy image tag) of synthetic pods.
    #[arg(long, default_value = "edge-26.8.3")]
    pub proxy_version: String,

    /// Container image of the fake pods (KWOK never pulls it).
    #[arg(long, default_value = "registry.k8s.io/pause:3.10")]
    pub image: String,

    /// On exit, delete everything churn created and wait until it is gone.
    #[arg(long)]
    pub cleanup_on_exit: bool,

    /// How long --cleanup-on-exit waits for objects to disappear.
    #[arg(long, default_value = "2m")]
    pub cleanup_timeout: humantime::Duration,

    /// Admin server (metrics, /live, /ready).
    #[arg(long, default_value = "0.0.0.0:9990")]
    pub admin_addr: SocketAddr,

    /// Also write the exit summary as JSON to this file (for scripts and
    /// benchmarks; the same figures as the summary line).
    #[arg(long, value_name = "FILE")]
    pub report: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub kube: KubeArgs,
}

impl Args {
    /// Cross-flag checks that clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        self.kube.validate()?;
        if self.stable_services == 0 && self.oscillate_services == 0 {
            return Err("nothing to do: give --stable-services and/or --oscillate-services".into());
        }
        if self.oscillate_min_endpoints > self.oscillate_max_endpoints {
            return Err(format!(
                "--oscillate-min-endpoints ({}) is greater than --oscillate-max-endpoints ({})",
                self.oscillate_min_endpoints, self.oscillate_max_endpoints
            ));
        }
        if self.oscillate_services > 0
            && self.oscillate_min_endpoints == self.oscillate_max_endpoints
        {
            return Err(format!(
                "--oscillate-min-endpoints and --oscillate-max-endpoints are both {}: nothing would oscillate",
                self.oscillate_min_endpoints
            ));
        }
        self.oscillation.validate()?;
        let osc = self.oscillation();
        if self.oscillate_services > 0 && osc.min_hold.is_zero() && osc.max_hold.is_zero() {
            return Err(
                "the oscillation holds are both zero; give --oscillate-hold-duration (e.g. 30s)"
                    .into(),
            );
        }
        if i32::try_from(self.oscillate_max_endpoints.max(self.stable_endpoints)).is_err() {
            return Err(
                "endpoint counts must fit in a Deployment's replicas (at most 2147483647)".into(),
            );
        }
        if !self.control_plane_ns.is_empty() && !is_dns_label(&self.control_plane_ns) {
            return Err(format!(
                "--control-plane-ns '{}' is not a valid namespace name",
                self.control_plane_ns
            ));
        }
        if !is_dns_label(&self.namespace) {
            return Err(format!(
                "--namespace '{}' is not a valid namespace name (lowercase letters, digits and '-', at most 63)",
                self.namespace
            ));
        }
        if self.service_port == 0 {
            return Err("--service-port must be from 1 to 65535".into());
        }
        Ok(())
    }

    /// The oscillation parameters from the flags.
    pub fn oscillation(&self) -> Oscillation {
        self.oscillation
            .oscillation(self.oscillate_min_endpoints, self.oscillate_max_endpoints)
    }

    fn template(&self) -> ServiceTemplate {
        ServiceTemplate {
            namespace: self.namespace.clone(),
            port: self.service_port,
            image: self.image.clone(),
            control_plane_ns: (!self.control_plane_ns.is_empty())
                .then(|| self.control_plane_ns.clone()),
            injection: self.proxy_injection,
            export: self.export,
            proxy_version: self.proxy_version.clone(),
            node_selector: self.node_selector.clone(),
            tolerations: self.toleration.iter().map(|t| t.0.clone()).collect(),
        }
    }

    /// Runs churn until signalled, `--duration`, or `--cycles` are done.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let mut rt = Runtime::new();
        let metrics = Metrics::register(rt.registry());
        rt.serve_admin(self.admin_addr).await?;
        let report = self.report.clone();
        let config = Config::try_from(self).map_err(anyhow::Error::msg)?;
        let churn = Churn::new(config, metrics.clone()).await?;
        let seed = churn.seed;
        let result = churn.run(rt.shutdown(), rt.readiness()).await;
        let finished = rt.finish().await;
        let summary = Summary {
            seed,
            services_created: metrics.services_created.get(),
            scale_events: metrics.scale_events_total.get(),
            cycles_completed: metrics.cycles_completed.get(),
            api_errors: metrics.api.errors(),
            api_retries: metrics.api.retries(),
            dispatch_lag: metrics.dispatch_lag_percentiles(),
        };
        println!("{summary}");
        if let Some(path) = &report {
            let json = serde_json::to_vec_pretty(&summary)?;
            std::fs::write(path, json)
                .map_err(|e| anyhow::anyhow!("cannot write --report {}: {e}", path.display()))?;
        }
        result?;
        finished.map(|()| ExitCode::SUCCESS)
    }
}

/// What a churn run does, validated. Made from the flags with
/// [`TryFrom<Args>`] (where validation lives), or built directly by `run`
/// and tests from [`Config::new`].
#[derive(Clone, Debug)]
pub struct Config {
    /// Services with a fixed number of endpoints.
    pub stable_services: u32,
    /// Endpoints of each stable service.
    pub stable_endpoints: u32,
    /// Services that oscillate.
    pub oscillate_services: u32,
    /// How they oscillate (endpoints between min and max, holds, jitter, cycles).
    pub oscillation: Oscillation,
    /// The seed of the jitter schedule.
    pub seed: u64,
    /// Stop after this long; `None` = until signalled or the cycles are done.
    pub duration: Option<Duration>,
    /// The shape of every Service and Deployment, the namespace included.
    pub template: ServiceTemplate,
    /// Delete everything on exit, waiting this long for it to be gone.
    pub cleanup_on_exit: Option<Duration>,
    /// The Kubernetes client.
    pub kube: KubeArgs,
}

impl Config {
    /// No services yet, in `namespace`, with the flags' defaults otherwise
    /// (KWOK placement, synthetic injection into `linkerd`, a random seed).
    pub fn new(namespace: &str) -> Self {
        Self {
            stable_services: 0,
            stable_endpoints: 1,
            oscillate_services: 0,
            oscillation: Oscillation {
                min: 1,
                max: 10,
                min_hold: Duration::from_secs(30),
                max_hold: Duration::from_secs(30),
                jitter: crate::schedule::Jitter::Percent(0),
                cycles: 0,
            },
            seed: rand::random(),
            duration: None,
            template: ServiceTemplate::kwok(namespace),
            cleanup_on_exit: None,
            kube: KubeArgs::default(),
        }
    }

    /// The namespace of every object.
    pub fn namespace(&self) -> &str {
        &self.template.namespace
    }
}

impl TryFrom<Args> for Config {
    type Error = String;

    fn try_from(args: Args) -> Result<Self, String> {
        args.validate()?;
        Ok(Self {
            stable_services: args.stable_services,
            stable_endpoints: args.stable_endpoints,
            oscillate_services: args.oscillate_services,
            oscillation: args.oscillation(),
            seed: args.oscillation.seed(),
            duration: args.duration.map(Into::into),
            template: args.template(),
            cleanup_on_exit: args.cleanup_on_exit.then(|| args.cleanup_timeout.into()),
            kube: args.kube,
        })
    }
}

/// What a churn run did: its exit summary line, and `--report`.
#[derive(Debug, serde::Serialize)]
pub struct Summary {
    /// The seed (replay with --seed).
    pub seed: u64,
    /// Services created (not adopted).
    pub services_created: u64,
    /// Scale events applied.
    pub scale_events: u64,
    /// Oscillation cycles completed.
    pub cycles_completed: u64,
    /// API calls that failed for good.
    pub api_errors: u64,
    /// API calls retried.
    pub api_retries: u64,
    /// How late scale events were dispatched after their schedule (seconds).
    pub dispatch_lag: crate::latency::Percentiles,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "churn summary: seed={} services_created={} scale_events={} cycles_completed={} api_errors={} api_retries={} dispatch_lag_p50_ms={:.3} dispatch_lag_p99_ms={:.3} dispatch_lag_max_ms={:.3}",
            self.seed,
            self.services_created,
            self.scale_events,
            self.cycles_completed,
            self.api_errors,
            self.api_retries,
            self.dispatch_lag.p50 * 1e3,
            self.dispatch_lag.p99 * 1e3,
            self.dispatch_lag.max * 1e3,
        )
    }
}

/// A valid namespace (DNS label) name.
pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A churn run: its client, flags and metrics.
pub struct Churn {
    config: Config,
    client: kube::Client,
    caller: Caller,
    caller_stop: CancellationToken,
    metrics: Metrics,
    seed: u64,
}

impl Churn {
    /// Connects to the cluster (no calls are made yet).
    pub async fn new(config: Config, metrics: Metrics) -> anyhow::Result<Self> {
        let client = config.kube.client().await?;
        let caller_stop = CancellationToken::new();
        let caller = Caller::new(
            config.kube.limiter(),
            metrics.api.clone(),
            caller_stop.clone(),
        );
        let seed = config.seed;
        Ok(Self {
            config,
            client,
            caller,
            caller_stop,
            metrics,
            seed,
        })
    }

    /// Creates the objects, then scales until `shutdown`, `--duration` or
    /// `--cycles`; cleans up with `--cleanup-on-exit`.
    pub async fn run(self, shutdown: CancellationToken, ready: Readiness) -> anyhow::Result<()> {
        let stop = crate::shutdown::with_deadline(&shutdown, self.config.duration);
        // Retries are abandoned on the signal, not on --duration: the objects
        // must exist before the run can end normally.
        let forward = {
            let (shutdown, caller_stop) = (shutdown.clone(), self.caller_stop.clone());
            tokio::spawn(async move {
                shutdown.cancelled().await;
                caller_stop.cancel();
            })
        };
        tracing::info!(seed = self.seed, namespace = %self.config.namespace(), "churn starting (replay with --seed {})", self.seed);
        let result = self.churn(&stop, &ready).await;
        forward.abort();
        if let Some(timeout) = self.config.cleanup_on_exit {
            let caller = self.caller.with_shutdown(CancellationToken::new());
            let report =
                crate::cleanup::cleanup(&self.client, &caller, self.config.namespace(), timeout)
                    .await?;
            tracing::info!(%report, "cleaned up");
        }
        result
    }

    async fn churn(&self, stop: &CancellationToken, ready: &Readiness) -> anyhow::Result<()> {
        self.ensure_namespace().await?;
        let template = self.template();
        let services: Vec<(Pattern, u32)> = (0..self.config.stable_services)
            .map(|i| (Pattern::Stable, i))
            .chain((0..self.config.oscillate_services).map(|i| (Pattern::Oscillate, i)))
            .collect();
        let osc = self.config.oscillation;
        futures::stream::iter(services.iter().copied())
            .map(|(pattern, i)| {
                let replicas = match pattern {
                    Pattern::Stable => self.config.stable_endpoints,
                    Pattern::Oscillate => osc.min,
                };
                self.ensure_service(&template, pattern, i, replicas)
            })
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
            .await?;
        ready.set(true);
        tracing::info!(services = services.len(), "initial objects exist");

        if self.config.oscillate_services == 0 {
            stop.cancelled().await;
            return Ok(());
        }
        let start = Instant::now();
        let oscillators = (0..self.config.oscillate_services).map(|i| {
            let schedule = Schedule::new(osc, self.seed, i);
            self.oscillate(&template, i, schedule, start, stop)
        });
        let done = futures::future::try_join_all(oscillators);
        tokio::select! {
            r = done => {
                r?;
                tracing::info!("every oscillating service finished its cycles");
            }
            _ = stop.cancelled() => {}
        }
        Ok(())
    }

    fn template(&self) -> ServiceTemplate {
        self.config.template.clone()
    }

    fn op(&self, verb: &'static str, resource: &'static str, name: Option<&str>) -> Op {
        Op {
            verb,
            resource,
            namespace: self.config.namespace().to_string(),
            name: name.map(str::to_string),
        }
    }

    async fn ensure_namespace(&self) -> anyhow::Result<()> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns = self.config.namespace();
        let mut logged = false;
        loop {
            let existing = self
                .caller
                .call(self.op("get", "namespaces", Some(ns)), || api.get_opt(ns))
                .await?;
            match existing {
                // A namespace being deleted (say, by a cleanup just before)
                // accepts no new objects: wait until it is gone.
                Some(n) if n.metadata.deletion_timestamp.is_some() => {
                    if !std::mem::replace(&mut logged, true) {
                        tracing::info!(namespace = %ns, "namespace is terminating; waiting for it to go");
                    }
                    tokio::select! {
                        _ = self.caller_stop.cancelled() => anyhow::bail!("interrupted while namespace {ns} was terminating"),
                        _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
                }
                Some(_) => return Ok(()),
                None => {}
            }
            let obj = objects::namespace(ns);
            let pp = PostParams::default();
            let created = self
                .caller
                .call(self.op("create", "namespaces", Some(ns)), || {
                    api.create(&pp, &obj)
                })
                .await;
            match created {
                Ok(_) => {
                    tracing::info!(namespace = %ns, "namespace created");
                    return Ok(());
                }
                // Someone else created it between our get and create: look again.
                Err(e) if e.is_already_exists() => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn ensure_service(
        &self,
        t: &ServiceTemplate,
        pattern: Pattern,
        i: u32,
        replicas: u32,
    ) -> anyhow::Result<()> {
        let name = pattern.service_name(i);
        let params = PatchParams::apply(labels::FIELD_MANAGER).force();
        let services: Api<Service> = Api::namespaced(self.client.clone(), self.config.namespace());
        let existed = self
            .caller
            .call(self.op("get", "services", Some(&name)), || {
                services.get_opt(&name)
            })
            .await?
            .is_some();
        let svc = Patch::Apply(t.service(&name, pattern));
        self.caller
            .call(self.op("apply", "services", Some(&name)), || {
                services.patch(&name, &params, &svc)
            })
            .await?;
        if !existed {
            self.metrics.services_created.inc();
        }

        let deployments: Api<Deployment> =
            Api::namespaced(self.client.clone(), self.config.namespace());
        let current = self
            .caller
            .call(self.op("get", "deployments", Some(&name)), || {
                deployments.get_opt(&name)
            })
            .await?;
        // A restarted churn keeps the timestamp of a size that did not change,
        // so a client does not see a change that never happened.
        let scaled_at = current
            .as_ref()
            .filter(|d| d.spec.as_ref().and_then(|s| s.replicas) == Some(replicas as i32))
            .and_then(|d| {
                d.metadata
                    .annotations
                    .as_ref()?
                    .get(labels::SCALED_AT)
                    .cloned()
            })
            .unwrap_or_else(|| objects::timestamp(jiff::Timestamp::now()));
        let deploy = Patch::Apply(t.deployment(&name, pattern, replicas, &scaled_at));
        self.caller
            .call(self.op("apply", "deployments", Some(&name)), || {
                deployments.patch(&name, &params, &deploy)
            })
            .await?;
        self.metrics
            .current_replicas
            .get_or_create(&ServiceLabels::new(pattern, &name))
            .set(replicas.into());
        Ok(())
    }

    async fn oscillate(
        &self,
        t: &ServiceTemplate,
        i: u32,
        schedule: Schedule,
        start: Instant,
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
        let name = Pattern::Oscillate.service_name(i);
        let labels = ServiceLabels::new(Pattern::Oscillate, &name);
        let deployments: Api<Deployment> =
            Api::namespaced(self.client.clone(), self.config.namespace());
        let params = PatchParams::apply(labels::FIELD_MANAGER).force();
        schedule::drive(schedule, start, stop, |step, lag| {
            let (name, labels, deployments, params) = (&name, &labels, &deployments, &params);
            async move {
                self.metrics.dispatched(lag);
                let scaled_at = objects::timestamp(jiff::Timestamp::now());
                let deploy =
                    Patch::Apply(t.deployment(name, Pattern::Oscillate, step.replicas, &scaled_at));
                // The call in flight is finished even if a signal arrives meanwhile.
                self.caller
                    .call(self.op("apply", "deployments", Some(name)), || {
                        deployments.patch(name, params, &deploy)
                    })
                    .await?;
                self.metrics.scale_events.get_or_create(labels).inc();
                self.metrics.scale_events_total.inc();
                self.metrics
                    .current_replicas
                    .get_or_create(labels)
                    .set(step.replicas.into());
                if step.completes_cycle {
                    self.metrics.cycles_completed.inc();
                }
                tracing::debug!(service = %name, replicas = step.replicas, %scaled_at, ?lag, "scaled");
                Ok(())
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::parse_flags;

    #[test]
    fn config_new_has_the_flags_defaults() {
        let from_flags = Config::try_from(
            parse_flags::<Args>(&[
                "churn",
                "--namespace",
                "ns",
                "--stable-services",
                "1",
                "--seed",
                "5",
            ])
            .unwrap(),
        )
        .unwrap();
        let mut direct = Config::new("ns");
        direct.stable_services = 1;
        direct.seed = 5;
        assert_eq!(format!("{direct:?}"), format!("{from_flags:?}"));
    }

    #[test]
    fn config_from_flags_validates() {
        let bad: Args = parse_flags(&[
            "churn",
            "--namespace",
            "Not_A_Label",
            "--stable-services",
            "1",
        ])
        .unwrap();
        assert!(
            Config::try_from(bad)
                .unwrap_err()
                .contains("not a valid namespace name")
        );
    }
}
