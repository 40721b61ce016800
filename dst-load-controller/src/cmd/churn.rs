//! `churn`'s front door: its flags, their checks, the [`Config`] they make,
//! and the run that prints (and writes) churn's summary.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use prometheus_client::registry::Registry;

use crate::{
    churn::{
        Churn, Config, Ephemeral, Restart, StatefulSets, Summary,
        metrics::Metrics,
        objects::{
            ChangeKind, Export, NodeSelector, ProxyInjection, Rollout, ServiceTemplate,
            TolerationSpec,
        },
        schedule::Oscillation,
    },
    cmd::flags::KubeArgs,
    labels::check_namespace,
    runtime::Runtime,
};

use super::output::{self, Console};

/// The flags that shape the services, which a scenario file replaces.
const SHAPE_FLAGS: [&str; 20] = [
    "stable_services",
    "stable_endpoints",
    "oscillate_services",
    "oscillate_min_endpoints",
    "oscillate_max_endpoints",
    "oscillate_hold_duration",
    "oscillate_min_hold",
    "oscillate_max_hold",
    "oscillate_jitter_percent",
    "oscillate_jitter",
    "restart_services",
    "restart_endpoints",
    "restart_interval",
    "ephemeral_services",
    "ephemeral_endpoints",
    "ephemeral_lifetime",
    "ephemeral_gap",
    "statefulset_services",
    "statefulset_replicas",
    "statefulset_min_replicas",
];

/// Flags of `churn`.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The namespace for every object (created if missing).
    #[arg(short = 'n', long, default_value = "dst-load-test")]
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
    pub oscillation: super::flags::OscillationArgs,

    /// Services rolled every --restart-interval (`restart-svc-{i}`): every
    /// pod replaced, the count kept.
    #[arg(long, default_value_t = 0)]
    pub restart_services: u32,

    /// Endpoints (replicas) of each restarted service.
    #[arg(long, default_value_t = 1)]
    pub restart_endpoints: u32,

    /// How often each restarted service rolls (jittered like oscillation).
    #[arg(long, default_value = "60s")]
    pub restart_interval: humantime::Duration,

    /// The rolling update's maxSurge: a count or a percentage.
    #[arg(long, default_value = "25%", value_parser = crate::churn::objects::parse_int_or_percent)]
    pub restart_max_surge: IntOrString,

    /// The rolling update's maxUnavailable: a count or a percentage.
    #[arg(long, default_value = "25%", value_parser = crate::churn::objects::parse_int_or_percent)]
    pub restart_max_unavailable: IntOrString,

    /// Services that live --ephemeral-lifetime, are deleted with their
    /// Deployment, and come back with the same name after --ephemeral-gap
    /// (`ephemeral-svc-{i}`).
    #[arg(long, default_value_t = 0)]
    pub ephemeral_services: u32,

    /// Endpoints (replicas) of each ephemeral service while it lives.
    #[arg(long, default_value_t = 1)]
    pub ephemeral_endpoints: u32,

    /// How long an ephemeral service lives (jittered like oscillation).
    #[arg(long, default_value = "60s")]
    pub ephemeral_lifetime: humantime::Duration,

    /// How long an ephemeral service stays deleted (jittered like oscillation).
    #[arg(long, default_value = "10s")]
    pub ephemeral_gap: humantime::Duration,

    /// Headless Services `sts-svc-{i}` with StatefulSets `sts-{i}`, whose
    /// pods `sts-{i}-{k}` have stable hostnames.
    #[arg(long, default_value_t = 0)]
    pub statefulset_services: u32,

    /// Replicas of each StatefulSet (when not oscillating).
    #[arg(long, default_value_t = 1)]
    pub statefulset_replicas: u32,

    /// Oscillate the StatefulSets from this many replicas (with
    /// --statefulset-max-replicas; timing from the --oscillate-* flags).
    #[arg(long, requires = "statefulset_max_replicas")]
    pub statefulset_min_replicas: Option<u32>,

    /// Oscillate the StatefulSets up to this many replicas.
    #[arg(long, requires = "statefulset_min_replicas")]
    pub statefulset_max_replicas: Option<u32>,

    /// Services that change in the same instant, every time: oscillating,
    /// restarted, ephemeral and StatefulSet services are taken in groups of
    /// this many, and each group shares one schedule with no jitter between
    /// its members (a node drain or a deploy wave). 1 = every service on its
    /// own schedule.
    #[arg(long, default_value_t = 1)]
    pub burst_size: u32,

    /// Linkerd Servers (`policy.linkerd.io/v1beta3`) to create in the
    /// namespace, `srv-0`..: each selects one service's pods on their `http`
    /// port, round-robin over the services. The destination controller
    /// scans every Server of a pod's namespace when it resolves the pod's
    /// address (GetProfile by IP), so this is the load's Server count.
    /// Needs Linkerd's CRDs.
    #[arg(long, default_value_t = 0)]
    pub servers: u32,

    /// A ServiceProfile (`linkerd.io/v1alpha2`) for every service, named
    /// `{service}.{namespace}.svc.{--cluster-domain}`, with --profile-routes
    /// routes: what GetProfile by name answers with. Needs Linkerd's CRDs.
    #[arg(long)]
    pub service_profiles: bool,

    /// Routes of each ServiceProfile: `route-K`, GET `/api/route-K/[^/]*`,
    /// retryable, 1s timeout (as `mock-dst --profile-routes` serves them).
    #[arg(long, default_value_t = 2, requires = "service_profiles")]
    pub profile_routes: u32,

    /// Every this long, every ServiceProfile changes at once: a route
    /// `route-N` added and the retry ratio raised from 0.2 to 0.25, then
    /// both back the next time; each change is stamped on the profile
    /// (`dst-load.linkerd.io/profile-changed-at`).
    #[arg(long, requires = "service_profiles")]
    pub profile_change_interval: Option<humantime::Duration>,

    /// The cluster domain of the ServiceProfiles' names.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,

    /// The `proxyProtocol` of every Server from --servers (`opaque` is the
    /// one that changes the destination controller's answers).
    #[arg(
        long,
        default_value_t = crate::crds::ProxyProtocol::Unknown,
        value_parser = clap::builder::TypedValueParser::try_map(
            clap::builder::PossibleValuesParser::new(crate::crds::ProxyProtocol::ALL.map(|p| p.as_str())),
            |s| s.parse::<crate::crds::ProxyProtocol>(),
        ),
        requires = "servers"
    )]
    pub server_proxy_protocol: crate::crds::ProxyProtocol,

    /// Create and change the services of this scenario file (its services,
    /// schedule and seed) instead of the service flags above; `run
    /// --print-scenario NAME` prints one to start from. The file's duration
    /// is `run`'s: churn runs until --duration or a signal. --seed, when
    /// given, overrides the file's.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = SHAPE_FLAGS
    )]
    pub scenario_file: Option<crate::scenario::ScenarioFile>,

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
    /// (`mirror.linkerd.io/exported=remote-discovery`), `federated`
    /// (`mirror.linkerd.io/federated=member`) or `gateway`
    /// (`mirror.linkerd.io/exported=true`, a gateway-mode link), matching
    /// `linkerd multicluster link-gen`'s default selectors; `none` leaves
    /// them unexported.
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

    /// Admin server (metrics, /live, /ready, POST /shutdown and /abort).
    #[arg(long, default_value = "127.0.0.1:9990")]
    pub admin_addr: SocketAddr,

    #[command(flatten)]
    pub admin_control: super::flags::ControlArgs,

    /// Also write the exit summary as JSON to this file (for scripts and
    /// benchmarks; the same figures as the summary line); `-` for standard
    /// output (the summary line then goes to standard error).
    #[arg(long, value_name = "FILE")]
    pub report: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub kube: KubeArgs,
}

impl Args {
    /// Cross-flag checks that clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        super::output::check_files(&[("--report", self.report.as_ref())])?;
        self.kube.validate()?;
        self.validate_shape()?;
        super::flags::at_least_one("--burst-size", self.burst_size, " (1 = no bursts)")?;
        if self.restart_max_surge == IntOrString::Int(0)
            && self.restart_max_unavailable == IntOrString::Int(0)
        {
            return Err("--restart-max-surge and --restart-max-unavailable are both 0: Kubernetes refuses a rollout that can make no progress; give one of them above 0".into());
        }
        if !self.control_plane_ns.is_empty() {
            check_namespace("--control-plane-ns", &self.control_plane_ns)
                .map_err(|e| e.to_string())?;
        }
        check_namespace("--namespace", &self.namespace).map_err(|e| e.to_string())?;
        if self.service_port == 0 {
            return Err("--service-port must be from 1 to 65535".into());
        }
        if self.profile_routes > 1000 {
            return Err(format!(
                "--profile-routes {} is too many: at most 1000",
                self.profile_routes
            ));
        }
        if let Some(d) = self.profile_change_interval {
            super::flags::above_zero("--profile-change-interval", d, "30s", "")?;
        }
        crate::labels::check_domain("--cluster-domain", &self.cluster_domain)
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// The service flags' checks (a scenario file checks itself as it is read).
    fn validate_shape(&self) -> Result<(), String> {
        if self.scenario_file.is_some() {
            return Ok(());
        }
        if self.stable_services == 0
            && self.oscillate_services == 0
            && self.restart_services == 0
            && self.ephemeral_services == 0
            && self.statefulset_services == 0
        {
            return Err("nothing to do: give --stable-services, --oscillate-services, --restart-services, --ephemeral-services and/or --statefulset-services".into());
        }
        let counts = [
            ("--stable-services", self.stable_services),
            ("--oscillate-services", self.oscillate_services),
            ("--restart-services", self.restart_services),
            ("--ephemeral-services", self.ephemeral_services),
            ("--statefulset-services", self.statefulset_services),
        ];
        let max = crate::scenario::MAX_SERVICES;
        if let Some((flag, n)) = counts.iter().find(|(_, n)| *n > max) {
            return Err(format!(
                "{flag} {n} is more than churn makes: at most {max} services in all (each draws its endpoints from its own /20)"
            ));
        }
        let total: u64 = counts.iter().map(|(_, n)| u64::from(*n)).sum();
        if total > u64::from(max) {
            return Err(format!(
                "{total} services in all is more than churn makes: at most {max}"
            ));
        }
        if self.restart_services > 0 {
            super::flags::above_zero("--restart-interval", self.restart_interval, "60s", "")?;
        }
        if self.restart_services > 0 {
            super::flags::at_least_one(
                "--restart-endpoints",
                self.restart_endpoints,
                ": a restart replaces endpoints",
            )?;
        }
        if self.ephemeral_services > 0
            && (Duration::from(self.ephemeral_lifetime).is_zero()
                || Duration::from(self.ephemeral_gap).is_zero())
        {
            return Err(
                "--ephemeral-lifetime and --ephemeral-gap must be above zero (e.g. 60s and 10s)"
                    .into(),
            );
        }
        if let (Some(min), Some(max)) =
            (self.statefulset_min_replicas, self.statefulset_max_replicas)
            && min >= max
        {
            return Err(format!(
                "--statefulset-min-replicas ({min}) must be below --statefulset-max-replicas ({max})"
            ));
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
        let oscillates = self.oscillate_services > 0
            || (self.statefulset_services > 0 && self.statefulset_min_replicas.is_some());
        let cycle = osc.min_hold + osc.max_hold;
        if oscillates && cycle < crate::limits::MIN_OSCILLATION_CYCLE {
            return Err(format!(
                "the oscillation holds add up to {cycle:?}, below {:?}: give --oscillate-hold-duration (e.g. 30s)",
                crate::limits::MIN_OSCILLATION_CYCLE
            ));
        }
        let largest = [
            self.oscillate_max_endpoints,
            self.stable_endpoints,
            self.restart_endpoints,
            self.ephemeral_endpoints,
            self.statefulset_replicas,
            self.statefulset_max_replicas.unwrap_or(0),
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        if i32::try_from(largest).is_err() {
            return Err(
                "endpoint counts must fit in a Deployment's replicas (at most 2147483647)".into(),
            );
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
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        rt.serve_admin(
            registry,
            self.admin_addr,
            self.admin_control.admin_allow_remote_shutdown,
        )
        .await?;
        let report = self.report.clone();
        let config = Config::try_from(self).map_err(anyhow::Error::msg)?;
        let churn = Churn::new(config, metrics.clone()).await?;
        let seed = churn.seed();
        let result = churn.run(rt.shutdown(), rt.readiness()).await;
        let finished = rt.finish().await;
        let summary = Summary {
            seed,
            services_created: metrics.services_created.get(),
            scale_events: metrics.scale_events_total.get(),
            restart_events: metrics.changes(ChangeKind::Restart),
            create_events: metrics.changes(ChangeKind::Create),
            delete_events: metrics.changes(ChangeKind::Delete),
            cycles_completed: metrics.cycles_completed.get(),
            profile_changes: metrics.profile_changes.get(),
            api_errors: metrics.api.errors(),
            api_retries: metrics.api.retries(),
            dispatch_lag: metrics.dispatch_lag_percentiles(),
        };
        Console::beside(&[("--report", report.as_ref())]).println(&summary);
        if let Some(path) = &report {
            output::write(
                "--report",
                path,
                serde_json::to_vec_pretty(&output::Stamped::new(&summary))?,
            )?;
        }
        result?;
        finished?;
        Ok(ExitCode::SUCCESS)
    }
}

impl TryFrom<Args> for Config {
    type Error = String;

    fn try_from(args: Args) -> Result<Self, String> {
        args.validate()?;
        let file = args.scenario_file.clone();
        let mut config = Self {
            stable_services: args.stable_services,
            stable_endpoints: args.stable_endpoints,
            oscillate_services: args.oscillate_services,
            oscillation: args.oscillation(),
            restart: Restart {
                services: args.restart_services,
                endpoints: args.restart_endpoints,
                interval: args.restart_interval.into(),
                rollout: Rollout {
                    max_surge: args.restart_max_surge.clone(),
                    max_unavailable: args.restart_max_unavailable.clone(),
                },
            },
            ephemeral: Ephemeral {
                services: args.ephemeral_services,
                endpoints: args.ephemeral_endpoints,
                lifetime: args.ephemeral_lifetime.into(),
                gap: args.ephemeral_gap.into(),
            },
            statefulset: StatefulSets {
                services: args.statefulset_services,
                replicas: args.statefulset_replicas,
                oscillate: args
                    .statefulset_min_replicas
                    .zip(args.statefulset_max_replicas),
            },
            burst_size: args.burst_size,
            servers: args.servers,
            server_protocol: args.server_proxy_protocol,
            profiles: args.service_profiles.then(|| crate::churn::Profiles {
                routes: args.profile_routes,
                change_interval: args.profile_change_interval.map(Into::into),
                cluster_domain: args.cluster_domain.clone(),
            }),
            seed: args.oscillation.seed(),
            duration: args.duration.map(Into::into),
            template: args.template(),
            cleanup_on_exit: args.cleanup_on_exit.then(|| args.cleanup_timeout.into()),
            kube: args.kube.settings(),
        };
        if let Some(file) = file {
            config.apply(&file.spec);
            if let Some(seed) = args.oscillation.seed {
                config.seed = seed;
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        churn::{objects::Pattern, schedule::Schedule, schedule_index},
        cmd::parse_flags,
    };

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

    fn config(flags: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["churn"];
        argv.extend_from_slice(flags);
        Config::try_from(parse_flags::<Args>(&argv).map_err(|e| e.to_string())?)
    }

    #[test]
    fn restarts_and_lifecycles_follow_their_own_seeded_schedules() {
        let c = config(&[
            "--restart-services",
            "2",
            "--restart-endpoints",
            "3",
            "--restart-interval",
            "20s",
            "--ephemeral-services",
            "1",
            "--ephemeral-endpoints",
            "2",
            "--ephemeral-lifetime",
            "30s",
            "--ephemeral-gap",
            "5s",
            "--statefulset-services",
            "1",
            "--statefulset-replicas",
            "4",
            "--seed",
            "7",
        ])
        .unwrap();
        assert_eq!(
            c.services(),
            [
                (Pattern::Restart, 0, 3),
                (Pattern::Restart, 1, 3),
                (Pattern::Ephemeral, 0, 2),
                (Pattern::StatefulSet, 0, 4),
            ]
        );
        // A restart is a step to the same count every interval, starting one interval in.
        let (restart, first) = c.timing(Pattern::Restart).unwrap();
        assert_eq!(first, Duration::from_secs(20));
        let steps: Vec<_> = Schedule::new(restart, 7, 0).take(3).collect();
        assert!(steps.iter().all(|s| s.replicas == 3));
        assert_eq!(
            steps[0].after,
            Duration::ZERO,
            "no jitter: right at the first interval"
        );
        assert_eq!(steps[1].after, Duration::from_secs(20));
        // A lifecycle: deleted after the lifetime, back after the gap, and so on.
        let (life, first) = c.timing(Pattern::Ephemeral).unwrap();
        assert_eq!(first, Duration::from_secs(30));
        let steps: Vec<_> = Schedule::new(life, 7, 0).take(4).collect();
        let shape: Vec<_> = steps
            .iter()
            .map(|s| (s.after.as_secs(), s.replicas))
            .collect();
        assert_eq!(shape, [(0, 0), (5, 2), (30, 0), (5, 2)]);
        // StatefulSets without min/max do not change; stable services never do.
        assert!(c.timing(Pattern::StatefulSet).is_none());
        assert!(c.timing(Pattern::Stable).is_none());
    }

    #[test]
    fn a_burst_shares_one_schedule_and_groups_differ() {
        let c = config(&[
            "--oscillate-services",
            "4",
            "--oscillate-jitter",
            "10s",
            "--burst-size",
            "2",
            "--seed",
            "3",
        ])
        .unwrap();
        let (osc, _) = c.timing(Pattern::Oscillate).unwrap();
        let group = |g| -> Vec<_> {
            Schedule::new(osc, 3, schedule_index(Pattern::Oscillate, g))
                .take(6)
                .collect()
        };
        // Groups of 2: services 0-1 follow group 0's steps, 2-3 group 1's.
        assert_ne!(group(0), group(1), "groups are jittered apart");
        // Burst size 1 replays the schedules of a run without bursts.
        assert_eq!(schedule_index(Pattern::Oscillate, 5), 5);
        assert_ne!(
            schedule_index(Pattern::Restart, 0),
            schedule_index(Pattern::Oscillate, 0)
        );
    }

    #[test]
    fn new_pattern_flags_are_validated() {
        for (flags, needle) in [
            (
                &["--burst-size", "0", "--stable-services", "1"][..],
                "--burst-size",
            ),
            (
                &["--restart-services", "1", "--restart-interval", "0s"][..],
                "--restart-interval",
            ),
            (
                &[
                    "--restart-services",
                    "1",
                    "--restart-max-surge",
                    "0",
                    "--restart-max-unavailable",
                    "0",
                ][..],
                "both 0",
            ),
            (
                &["--ephemeral-services", "1", "--ephemeral-gap", "0s"][..],
                "--ephemeral-gap",
            ),
            (
                &[
                    "--statefulset-services",
                    "1",
                    "--statefulset-min-replicas",
                    "3",
                    "--statefulset-max-replicas",
                    "3",
                ][..],
                "must be below",
            ),
            (&[][..], "nothing to do"),
        ] {
            let err = config(flags).unwrap_err();
            assert!(err.contains(needle), "{flags:?}: {err}");
        }
        let err = config(&[
            "--statefulset-services",
            "1",
            "--statefulset-min-replicas",
            "1",
        ])
        .unwrap_err();
        assert!(err.contains("--statefulset-max-replicas"), "{err}");
    }
}
