//! `churn`: stable and oscillating Services/Deployments whose fake pods land
//! on KWOK nodes, scaled with seeded jitter the way an autoscaler would.
//! Its flags, and the run that prints its summary, are `cmd::churn`'s.

pub mod metrics;
pub mod objects;
pub use crate::schedule;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        core::v1::{Namespace, PodTemplateSpec, Service},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::{
    metrics::{Metrics, ServiceLabels},
    objects::{ChangeKind, Pattern, ProfileShape, Rollout, ServiceTemplate, Stamp},
    schedule::{Oscillation, Schedule},
};
use crate::{
    admin::Readiness,
    crds::ServiceProfile,
    kube_api::{Caller, KubeSettings, Op},
    labels,
};

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
    /// Rolling restarts.
    pub restart: Restart,
    /// Service lifecycles.
    pub ephemeral: Ephemeral,
    /// StatefulSets.
    pub statefulset: StatefulSets,
    /// Services that change in the same instant (1 = no bursts).
    pub burst_size: u32,
    /// Servers (`policy.linkerd.io`) in the namespace, each selecting the
    /// pods of one service (round-robin over the services).
    pub servers: u32,
    /// Every Server's `proxyProtocol`.
    pub server_protocol: objects::ProxyProtocol,
    /// A ServiceProfile per service, changed on a schedule.
    pub profiles: Option<Profiles>,
    /// The seed of the jitter schedule.
    pub seed: u64,
    /// Stop after this long; `None` = until signalled or the cycles are done.
    pub duration: Option<Duration>,
    /// The shape of every Service and Deployment, the namespace included.
    pub template: ServiceTemplate,
    /// Delete everything on exit, waiting this long for it to be gone.
    pub cleanup_on_exit: Option<Duration>,
    /// The Kubernetes client.
    pub kube: KubeSettings,
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
            restart: Restart {
                services: 0,
                endpoints: 1,
                interval: Duration::from_secs(60),
                rollout: Rollout::default(),
            },
            ephemeral: Ephemeral {
                services: 0,
                endpoints: 1,
                lifetime: Duration::from_secs(60),
                gap: Duration::from_secs(10),
            },
            statefulset: StatefulSets {
                services: 0,
                replicas: 1,
                oscillate: None,
            },
            burst_size: 1,
            servers: 0,
            server_protocol: objects::ProxyProtocol::Unknown,
            profiles: None,
            seed: rand::random(),
            duration: None,
            template: ServiceTemplate::kwok(namespace),
            cleanup_on_exit: None,
            kube: KubeSettings::default(),
        }
    }

    /// The namespace of every object.
    pub fn namespace(&self) -> &str {
        &self.template.namespace
    }
}

impl Config {
    /// Takes a scenario's services, schedule and seed (when it has one);
    /// the rollout's surge and unavailability are kept.
    pub fn apply(&mut self, spec: &crate::scenario::Spec) {
        let s = &spec.services;
        let timing = &spec.schedule;
        let (min, max) = s
            .oscillate
            .map_or((self.oscillation.min, self.oscillation.max), |r| {
                (r.min_endpoints, r.max_endpoints)
            });
        self.oscillation = Oscillation {
            min,
            max,
            min_hold: timing.min_hold,
            max_hold: timing.max_hold,
            jitter: crate::schedule::Jitter::Upto(timing.jitter),
            cycles: 0,
        };
        self.stable_services = s.stable.map_or(0, |g| g.count);
        self.stable_endpoints = s.stable.map_or(1, |g| g.endpoints);
        self.oscillate_services = s.oscillate.map_or(0, |g| g.count);
        self.restart.services = s.restart.map_or(0, |g| g.count);
        self.restart.endpoints = s.restart.map_or(1, |g| g.endpoints);
        self.restart.interval = spec.restart_interval();
        let (lifetime, gap) = spec.ephemeral_lifetime_and_gap();
        self.ephemeral = Ephemeral {
            services: s.ephemeral.map_or(0, |g| g.count),
            endpoints: s.ephemeral.map_or(1, |g| g.endpoints),
            lifetime,
            gap,
        };
        self.statefulset = StatefulSets {
            services: s.statefulset.map_or(0, |g| g.count),
            replicas: s.statefulset.map_or(1, |g| g.min_endpoints),
            oscillate: s
                .statefulset
                .filter(|g| g.min_endpoints < g.max_endpoints)
                .map(|g| (g.min_endpoints, g.max_endpoints)),
        };
        // A scenario's profiles replace churn's own; without them, churn's
        // flags (--service-profiles ...) stand.
        if let Some(p) = spec.profiles {
            let cluster_domain = self
                .profiles
                .as_ref()
                .map_or_else(|| "cluster.local".to_string(), |p| p.cluster_domain.clone());
            self.profiles = Some(Profiles {
                routes: p.routes,
                change_interval: p.change_interval,
                cluster_domain,
            });
        }
        if let Some(seed) = spec.seed {
            self.seed = seed;
        }
    }
}

/// Every service's ServiceProfile.
#[derive(Clone, Debug)]
pub struct Profiles {
    /// Routes each has (one more after every odd change).
    pub routes: u32,
    /// Every this long, every profile changes: a route added and the retry
    /// ratio raised to 0.25, then both back ([`ProfileShape`]).
    pub change_interval: Option<Duration>,
    /// The cluster domain of the profiles' names.
    pub cluster_domain: String,
}

/// Rolling restarts of `restart-svc-{i}`.
#[derive(Clone, Debug)]
pub struct Restart {
    /// Services.
    pub services: u32,
    /// Endpoints of each.
    pub endpoints: u32,
    /// How often each rolls.
    pub interval: Duration,
    /// The rolling update's surge and unavailability.
    pub rollout: Rollout,
}

/// Lifecycles of `ephemeral-svc-{i}`.
#[derive(Clone, Debug)]
pub struct Ephemeral {
    /// Services.
    pub services: u32,
    /// Endpoints of each while it lives.
    pub endpoints: u32,
    /// How long each lives.
    pub lifetime: Duration,
    /// How long each stays deleted.
    pub gap: Duration,
}

/// StatefulSets `sts-{i}` behind headless Services `sts-svc-{i}`.
#[derive(Clone, Debug)]
pub struct StatefulSets {
    /// Services.
    pub services: u32,
    /// Replicas of each (when not oscillating).
    pub replicas: u32,
    /// Oscillate between these replica counts, on the oscillation's timing.
    pub oscillate: Option<(u32, u32)>,
}

impl Config {
    /// How many services follow `pattern`.
    pub fn count(&self, pattern: Pattern) -> u32 {
        match pattern {
            Pattern::Stable => self.stable_services,
            Pattern::Oscillate => self.oscillate_services,
            Pattern::Restart => self.restart.services,
            Pattern::Ephemeral => self.ephemeral.services,
            Pattern::StatefulSet => self.statefulset.services,
        }
    }

    /// Every service, with its replicas at start.
    pub fn services(&self) -> Vec<(Pattern, u32, u32)> {
        Pattern::ALL
            .into_iter()
            .flat_map(|p| {
                let replicas = match p {
                    Pattern::Stable => self.stable_endpoints,
                    Pattern::Oscillate => self.oscillation.min,
                    Pattern::Restart => self.restart.endpoints,
                    Pattern::Ephemeral => self.ephemeral.endpoints,
                    Pattern::StatefulSet => self
                        .statefulset
                        .oscillate
                        .map_or(self.statefulset.replicas, |(min, _)| min),
                };
                (0..self.count(p)).map(move |i| (p, i, replicas))
            })
            .collect()
    }

    /// How a changing pattern's services change, as an oscillation between
    /// two step values (replicas; 0 = deleted), and the delay before the
    /// schedule starts. `None` for a pattern with nothing to change.
    ///
    /// A restart is a step to the same count; a lifecycle alternates the
    /// endpoint count (alive, held for the lifetime) and 0 (deleted, held
    /// for the gap). Both start one hold in, after which the jitter applies
    /// as it does to oscillation.
    pub fn timing(&self, pattern: Pattern) -> Option<(Oscillation, Duration)> {
        let osc = self.oscillation;
        let every = |min, max, min_hold, max_hold| Oscillation {
            min,
            max,
            min_hold,
            max_hold,
            ..osc
        };
        if self.count(pattern) == 0 {
            return None;
        }
        match pattern {
            Pattern::Stable => None,
            Pattern::Oscillate => Some((osc, Duration::ZERO)),
            Pattern::Restart => {
                let (e, d) = (self.restart.endpoints, self.restart.interval);
                Some((every(e, e, d, d), d))
            }
            Pattern::Ephemeral => {
                let e = &self.ephemeral;
                Some((every(e.endpoints, 0, e.lifetime, e.gap), e.lifetime))
            }
            Pattern::StatefulSet => self
                .statefulset
                .oscillate
                .map(|(min, max)| (every(min, max, osc.min_hold, osc.max_hold), Duration::ZERO)),
        }
    }
}

/// What a churn run did: its exit summary line, and `--report`.
#[derive(Debug, serde::Serialize)]
pub struct Summary {
    /// The seed (replay with --seed; a string in JSON, see `crate::seed`).
    #[serde(with = "crate::seed")]
    pub seed: u64,
    /// Services created (not adopted).
    pub services_created: u64,
    /// Scale events applied.
    pub scale_events: u64,
    /// Rolling restarts started.
    pub restart_events: u64,
    /// Ephemeral services created again after their gap (the first
    /// creation is in `services_created`).
    pub create_events: u64,
    /// Ephemeral services deleted.
    pub delete_events: u64,
    /// Oscillation cycles completed.
    pub cycles_completed: u64,
    /// ServiceProfile changes applied (routes and retry ratio), all services.
    pub profile_changes: u64,
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
            "churn summary: seed={} services_created={} scale_events={} restart_events={} create_events={} delete_events={} cycles_completed={} profile_changes={} api_errors={} api_retries={} dispatch_lag_p50_ms={:.3} dispatch_lag_p99_ms={:.3} dispatch_lag_max_ms={:.3}",
            self.seed,
            self.services_created,
            self.scale_events,
            self.restart_events,
            self.create_events,
            self.delete_events,
            self.cycles_completed,
            self.profile_changes,
            self.api_errors,
            self.api_retries,
            self.dispatch_lag.p50 * 1e3,
            self.dispatch_lag.p99 * 1e3,
            self.dispatch_lag.max * 1e3,
        )
    }
}

/// Why churn stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No Kubernetes client.
    #[error(transparent)]
    Connect(#[from] crate::kube_api::ConnectError),
    /// A call that retrying could not fix.
    #[error(transparent)]
    Api(#[from] crate::kube_api::Error),
    /// Stopped while the namespace of the same name was still being deleted.
    #[error("interrupted while namespace {namespace} was terminating")]
    Terminating {
        /// The namespace.
        namespace: String,
    },
    /// `--cleanup-on-exit` failed.
    #[error(transparent)]
    Cleanup(#[from] crate::cleanup::CleanupError),
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
    /// The seed of this run's schedules (the flags' or a random one).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Connects to the cluster (no calls are made yet).
    pub async fn new(config: Config, metrics: Metrics) -> Result<Self, Error> {
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
    pub async fn run(self, shutdown: CancellationToken, ready: Readiness) -> Result<(), Error> {
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

    async fn churn(&self, stop: &CancellationToken, ready: &Readiness) -> Result<(), Error> {
        self.ensure_namespace().await?;
        let template = self.template();
        let services = self.config.services();
        futures::stream::iter(services.iter().copied())
            .map(|(pattern, i, replicas)| self.ensure_service(&template, pattern, i, replicas))
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
            .await?;
        let servers = server_targets(self.config.servers, &services);
        futures::stream::iter(servers.clone())
            .map(|(name, service)| {
                let server = template.server(&name, &service, self.config.server_protocol);
                async move { self.apply("servers", &name, server).await }
            })
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
            .await?;
        if let Some(p) = &self.config.profiles {
            self.apply_profiles(
                &template,
                &services,
                p,
                ProfileShape::after(p.routes, 0),
                true,
            )
            .await?;
        }
        ready.set(true);
        tracing::info!(
            services = services.len(),
            servers = servers.len(),
            "initial objects exist"
        );
        // Profiles change until the scaling ends (its --cycles, too).
        let profiles_stop = stop.child_token();
        let scaling = async {
            let scaled = self.scale(&template, stop).await;
            profiles_stop.cancel();
            scaled
        };
        let profiles = self.change_profiles(&template, &services, &profiles_stop);
        tokio::try_join!(scaling, profiles)?;
        Ok(())
    }

    /// Applies every service's ServiceProfile shaped `shape`, stamped now.
    /// At the start (`adopt`), a profile that already has this shape keeps
    /// its stamp: re-stamping it would be a change (the controller
    /// sends a profile for every update) that never happened.
    async fn apply_profiles(
        &self,
        template: &ServiceTemplate,
        services: &[(Pattern, u32, u32)],
        p: &Profiles,
        shape: ProfileShape,
        adopt: bool,
    ) -> Result<(), Error> {
        let routes = shape.routes;
        let now = objects::timestamp(jiff::Timestamp::now());
        futures::stream::iter(services.iter().copied())
            .map(|(pattern, i, _)| {
                let service = pattern.service_name(i);
                let name = template.profile_name(&service, &p.cluster_domain);

                let now = now.clone();
                async move {
                    let mut at = now;
                    if adopt
                        && let Some(current) =
                            self.get::<ServiceProfile>("serviceprofiles", &name).await?
                    {
                        // Its stamp stands only if it already has this
                        // shape: routes and retry ratio.
                        let same = current.spec.routes.len() == routes as usize
                            && current
                                .spec
                                .retry_budget
                                .as_ref()
                                .is_some_and(|b| b.retry_ratio == shape.retry_ratio);
                        let notes = current.metadata.annotations.unwrap_or_default();
                        if same && let Some(stamp) = notes.get(labels::PROFILE_CHANGED_AT) {
                            at.clone_from(stamp);
                        }
                    }
                    let sp = template.service_profile(&service, shape, &p.cluster_domain, &at);
                    self.apply("serviceprofiles", &name, sp).await
                }
            })
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Every `--profile-change-interval` until `stop`, every service's
    /// ServiceProfile gains a route (odd changes) or loses it (even ones).
    async fn change_profiles(
        &self,
        template: &ServiceTemplate,
        services: &[(Pattern, u32, u32)],
        stop: &CancellationToken,
    ) -> Result<(), Error> {
        let Some(p) = &self.config.profiles else {
            return Ok(());
        };
        let Some(every) = p.change_interval else {
            return Ok(());
        };
        let mut tick = tokio::time::interval_at(Instant::now() + every, every);
        for step in 1u64.. {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            let shape = ProfileShape::after(p.routes, step);
            self.apply_profiles(template, services, p, shape, false)
                .await?;
            self.metrics.profile_changes.inc_by(services.len() as u64);
            tracing::debug!(?shape, "service profiles changed");
        }
        Ok(())
    }

    /// Scales the changing services on their schedules until `stop`.
    async fn scale(
        &self,
        template: &ServiceTemplate,
        stop: &CancellationToken,
    ) -> Result<(), Error> {
        let start = Instant::now();
        let burst = self.config.burst_size.max(1) as usize;
        let mut drivers = Vec::new();
        for pattern in Pattern::ALL {
            let Some((timing, first)) = self.config.timing(pattern) else {
                continue;
            };
            let members: Vec<u32> = (0..self.config.count(pattern)).collect();
            for (group, members) in members.chunks(burst).enumerate() {
                let schedule = Schedule::new(timing, self.seed, schedule_index(pattern, group));
                drivers.push(self.drive(
                    template,
                    pattern,
                    members.to_vec(),
                    schedule,
                    start + first,
                    stop,
                ));
            }
        }
        if drivers.is_empty() {
            stop.cancelled().await;
            return Ok(());
        }
        let done = futures::future::try_join_all(drivers);
        tokio::select! {
            r = done => {
                r?;
                if !stop.is_cancelled() {
                    tracing::info!("every changing service finished its cycles");
                }
            }
            _ = stop.cancelled() => {}
        }
        Ok(())
    }

    /// Applies `schedule` to every member of a group at once.
    async fn drive(
        &self,
        t: &ServiceTemplate,
        pattern: Pattern,
        members: Vec<u32>,
        schedule: Schedule,
        start: Instant,
        stop: &CancellationToken,
    ) -> Result<(), Error> {
        schedule::drive(schedule, start, stop, |step, lag| {
            let members = &members;
            async move {
                self.metrics.dispatched(lag);
                // The calls in flight are finished even if a signal arrives meanwhile.
                futures::future::try_join_all(
                    members.iter().map(|&i| self.change(t, pattern, i, step)),
                )
                .await?;
                Ok(())
            }
        })
        .await
    }

    /// One scheduled change of service `i`.
    async fn change(
        &self,
        t: &ServiceTemplate,
        pattern: Pattern,
        i: u32,
        step: schedule::Step,
    ) -> Result<(), Error> {
        let name = pattern.service_name(i);
        let labels = ServiceLabels::new(pattern, &name);
        let at = objects::timestamp(jiff::Timestamp::now());
        let kind = match pattern {
            Pattern::Stable => return Ok(()),
            Pattern::Oscillate => {
                let deploy = t.deployment(&name, pattern, &Stamp::scale(step.replicas, &at));
                self.apply("deployments", &name, deploy).await?;
                ChangeKind::Scale
            }
            Pattern::StatefulSet => {
                let sts = t.statefulset(i, &Stamp::scale(step.replicas, &at));
                self.apply("statefulsets", &pattern.workload_name(i), sts)
                    .await?;
                ChangeKind::Scale
            }
            Pattern::Restart => {
                let stamp = Stamp {
                    kind: ChangeKind::Restart,
                    restarted_at: Some(at.clone()),
                    ..Stamp::scale(step.replicas, &at)
                };
                let rollout = Some(&self.config.restart.rollout);
                let deploy = t.deployment_rolling(&name, pattern, &stamp, rollout);
                self.apply("deployments", &name, deploy).await?;
                ChangeKind::Restart
            }
            Pattern::Ephemeral if step.replicas == 0 => {
                self.delete_service(&name, &at).await?;
                ChangeKind::Delete
            }
            Pattern::Ephemeral => {
                let stamp = Stamp {
                    kind: ChangeKind::Create,
                    ..Stamp::scale(step.replicas, &at)
                };
                // Counted in create_events, not services_created.
                self.apply("services", &name, t.service(&name, pattern))
                    .await?;
                let deploy = t.deployment(&name, pattern, &stamp);
                self.apply("deployments", &name, deploy).await?;
                ChangeKind::Create
            }
        };
        self.metrics.changed(pattern, kind);
        if kind == ChangeKind::Scale {
            self.metrics.scale_events.get_or_create(&labels).inc();
            self.metrics.scale_events_total.inc();
        }
        self.metrics
            .current_replicas
            .get_or_create(&labels)
            .set(step.replicas.into());
        if step.completes_cycle {
            self.metrics.cycles_completed.inc();
        }
        tracing::debug!(service = %name, kind = kind.as_str(), replicas = step.replicas, %at, "changed");
        Ok(())
    }

    /// Deletes an ephemeral service: stamps the deletion on its Deployment
    /// (0 endpoints, `change=delete`), deletes the Service (the change the
    /// destination controller sees), then the Deployment and its pods.
    async fn delete_service(&self, name: &str, at: &str) -> Result<(), Error> {
        let ns = self.config.namespace();
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        let stamp = Patch::Merge(serde_json::json!({"metadata": {"annotations": {
            labels::SCALED_AT: at,
            labels::REPLICAS: "0",
            labels::CHANGE: ChangeKind::Delete.as_str(),
        }}}));
        let pp = PatchParams::default();
        /// A call whose object is already gone did what it was for.
        fn gone<T>(r: Result<T, crate::kube_api::Error>) -> Result<(), Error> {
            match r {
                Ok(_) => Ok(()),
                Err(e) if e.is_not_found() => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        gone(
            self.caller
                .call(self.op("patch", "deployments", Some(name)), || {
                    deployments.patch(name, &pp, &stamp)
                })
                .await,
        )?;
        let services: Api<Service> = Api::namespaced(self.client.clone(), ns);
        let dp = DeleteParams::background();
        gone(
            self.caller
                .call(self.op("delete", "services", Some(name)), || {
                    services.delete(name, &dp)
                })
                .await,
        )?;
        gone(
            self.caller
                .call(self.op("delete", "deployments", Some(name)), || {
                    deployments.delete(name, &dp)
                })
                .await,
        )?;
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

    async fn ensure_namespace(&self) -> Result<(), Error> {
        ensure_namespace(
            &self.client,
            &self.caller,
            self.config.namespace(),
            &self.caller_stop,
        )
        .await
    }

    /// Server-side applies `obj` (named `name`) in the namespace.
    async fn apply<K>(&self, resource: &'static str, name: &str, obj: K) -> Result<(), Error>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::Serialize
            + serde::de::DeserializeOwned,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), self.config.namespace());
        let params = PatchParams::apply(labels::FIELD_MANAGER).force();
        let patch = Patch::Apply(obj);
        self.caller
            .call(self.op("apply", resource, Some(name)), || {
                api.patch(name, &params, &patch)
            })
            .await?;
        Ok(())
    }

    /// The object `name` in the namespace, if it exists.
    async fn get<K>(&self, resource: &'static str, name: &str) -> Result<Option<K>, Error>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), self.config.namespace());
        Ok(self
            .caller
            .call(self.op("get", resource, Some(name)), || api.get_opt(name))
            .await?)
    }

    /// Applies the Service `name`, counting it when it did not exist.
    async fn apply_service(
        &self,
        t: &ServiceTemplate,
        pattern: Pattern,
        name: &str,
    ) -> Result<(), Error> {
        let existed = self.get::<Service>("services", name).await?.is_some();
        self.apply("services", name, t.service(name, pattern))
            .await?;
        if !existed {
            self.metrics.services_created.inc();
        }
        Ok(())
    }

    /// Creates (or adopts) service `i` of `pattern` at `replicas`.
    async fn ensure_service(
        &self,
        t: &ServiceTemplate,
        pattern: Pattern,
        i: u32,
        replicas: u32,
    ) -> Result<(), Error> {
        let name = pattern.service_name(i);
        self.apply_service(t, pattern, &name).await?;
        let workload = pattern.workload_name(i);
        let now = objects::timestamp(jiff::Timestamp::now());
        if pattern == Pattern::StatefulSet {
            let current: Option<StatefulSet> = self.get("statefulsets", &workload).await?;
            let spec = current.as_ref().and_then(|s| s.spec.as_ref());
            let stamp = current_stamp(
                current.as_ref().map(|s| &s.metadata),
                spec.map(|s| (s.replicas, &s.template)),
                replicas,
                &now,
            );
            self.apply("statefulsets", &workload, t.statefulset(i, &stamp))
                .await?;
        } else {
            let current: Option<Deployment> = self.get("deployments", &workload).await?;
            let spec = current.as_ref().and_then(|d| d.spec.as_ref());
            let stamp = current_stamp(
                current.as_ref().map(|d| &d.metadata),
                spec.map(|s| (s.replicas, &s.template)),
                replicas,
                &now,
            );
            let rollout = (pattern == Pattern::Restart).then_some(&self.config.restart.rollout);
            let deploy = t.deployment_rolling(&workload, pattern, &stamp, rollout);
            self.apply("deployments", &workload, deploy).await?;
        }
        self.metrics
            .current_replicas
            .get_or_create(&ServiceLabels::new(pattern, &name))
            .set(replicas.into());
        Ok(())
    }
}

/// Server `srv-{k}` for k < `servers`, each with the service whose pods it
/// selects, round-robin over `services` (none without services).
fn server_targets(servers: u32, services: &[(Pattern, u32, u32)]) -> Vec<(String, String)> {
    if services.is_empty() {
        return Vec::new();
    }
    (0..servers as usize)
        .map(|k| {
            let (pattern, i, _) = services[k % services.len()];
            (format!("srv-{k}"), pattern.service_name(i))
        })
        .collect()
}

/// The stamp of a first apply at `replicas`. A restarted churn keeps the
/// stamp of a size that did not change, so a client does not see a change
/// that never happened, and the pod template's restart time, so the apply
/// does not roll the pods.
fn current_stamp(
    meta: Option<&ObjectMeta>,
    spec: Option<(Option<i32>, &PodTemplateSpec)>,
    replicas: u32,
    now: &str,
) -> Stamp {
    let same_size = spec.is_some_and(|(r, _)| r == Some(replicas as i32));
    let at = meta
        .filter(|_| same_size)
        .and_then(|m| m.annotations.as_ref()?.get(labels::SCALED_AT).cloned())
        .unwrap_or_else(|| now.to_string());
    let restarted_at = spec.and_then(|(_, t)| {
        t.metadata
            .as_ref()?
            .annotations
            .as_ref()?
            .get(labels::RESTARTED_AT)
            .cloned()
    });
    Stamp {
        restarted_at,
        ..Stamp::scale(replicas, &at)
    }
}

/// The seed index of a group's schedule: oscillating groups keep their
/// index (a run replays as before bursts existed); other patterns draw from
/// their own ranges.
pub(crate) fn schedule_index(pattern: Pattern, group: usize) -> u32 {
    let group = group as u32;
    match pattern {
        Pattern::Oscillate => group,
        p => ((p as u32) << 24) | group,
    }
}

/// Creates `ns`, labelled as churn's, unless it exists; waits while a
/// namespace of that name is still terminating.
pub async fn ensure_namespace(
    client: &kube::Client,
    caller: &Caller,
    ns: &str,
    stop: &CancellationToken,
) -> Result<(), Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    let op = |verb| Op {
        verb,
        resource: "namespaces",
        namespace: ns.to_string(),
        name: Some(ns.to_string()),
    };
    let mut logged = false;
    loop {
        let existing = caller.call(op("get"), || api.get_opt(ns)).await?;
        match existing {
            // A namespace being deleted (say, by a cleanup just before)
            // accepts no new objects: wait until it is gone.
            Some(n) if n.metadata.deletion_timestamp.is_some() => {
                if !std::mem::replace(&mut logged, true) {
                    tracing::info!(namespace = %ns, "namespace is terminating; waiting for it to go");
                }
                tokio::select! {
                    _ = stop.cancelled() => return Err(Error::Terminating { namespace: ns.to_string() }),
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                }
            }
            Some(_) => return Ok(()),
            None => {}
        }
        let obj = objects::namespace(ns);
        let pp = PostParams::default();
        let created = caller.call(op("create"), || api.create(&pp, &obj)).await;
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

/// [`ensure_namespace`] through a client of its own (`run` makes the
/// namespace of a multicluster scenario's mirrors in the source this way).
pub async fn connect_and_ensure_namespace(
    kube: &KubeSettings,
    ns: &str,
    stop: &CancellationToken,
) -> Result<(), Error> {
    let client = kube.client().await?;
    let caller = Caller::new(
        kube.limiter(),
        crate::kube_api::ApiMetrics::register(&mut prometheus_client::registry::Registry::default()),
        stop.clone(),
    );
    ensure_namespace(&client, &caller, ns, stop).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenarios_profiles_replace_churns_and_their_absence_keeps_them() {
        let spec = |extra: &str| {
            crate::scenario::parse(
                "t.yaml",
                &format!("duration: 10s\nservices:\n  stable: {{count: 1, endpoints: 1}}\n{extra}"),
            )
            .unwrap()
        };
        let mut c = Config::new("ns");
        c.profiles = Some(Profiles {
            routes: 3,
            change_interval: None,
            cluster_domain: "example.org".into(),
        });
        c.apply(&spec(""));
        assert_eq!(
            c.profiles.as_ref().map(|p| p.routes),
            Some(3),
            "the flags stand"
        );
        c.apply(&spec("profiles: {routes: 5, change-interval: 2s}\n"));
        let p = c.profiles.unwrap();
        assert_eq!(
            (p.routes, p.change_interval),
            (5, Some(Duration::from_secs(2)))
        );
        assert_eq!(p.cluster_domain, "example.org");
    }

    #[test]
    fn servers_go_round_robin_over_the_services_pods() {
        let services = [
            (Pattern::Stable, 0, 1),
            (Pattern::Oscillate, 0, 1),
            (Pattern::StatefulSet, 2, 1),
        ];
        let names = |n| server_targets(n, &services);
        assert_eq!(
            names(4),
            [
                ("srv-0", "stable-svc-0"),
                ("srv-1", "oscillate-svc-0"),
                ("srv-2", "sts-svc-2"),
                ("srv-3", "stable-svc-0"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert!(names(0).is_empty());
        assert!(server_targets(3, &[]).is_empty());
    }
}
