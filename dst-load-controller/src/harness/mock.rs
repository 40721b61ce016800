//! A plan against the embedded mock Destination server: the scenario's
//! services generated in the mock, their churn simulated by generators with
//! the scenario's schedule and seed, the truth read from the mock's feed.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use ipnet::IpNet;
use prometheus_client::registry::Registry;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    error::Error,
    load::{Chosen, Followed, Load, NAMESPACE, Watched, wait_for_truth},
    mock_feed::{MockFeed, MockProfiles, routes},
};
use crate::{
    churn::{
        objects::ProfileShape,
        schedule::{Jitter, Oscillation},
    },
    client::{self, Fleet},
    labels::Pattern,
    mock::{
        Handle, MockDestination,
        generate::{self, GeneratedDst},
        profiles::{ProfileSpec, RetryBudgetSpec},
        server::{Behavior, Delay},
    },
    runtime::Runtime,
    scenario::Spec,
};

/// The mock's settings.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mock {
    /// The delay it injects before each update on each stream.
    pub delay: Delay,
    /// Added to `delay`: this much per stream open on the mock.
    pub delay_per_stream: Duration,
}

/// A mock run as it goes: the mock serving its initial sets, its churn
/// generators, and the stop of its server (on drop: after the client, on any
/// return).
pub(super) struct MockLoad {
    handle: Handle,
    addr: std::net::SocketAddr,
    services: Vec<MockService>,
    initial_changes: u64,
    /// The services' hosts, whose profiles the scenario sets and changes.
    hosts: Vec<String>,
    profile_changes: Arc<AtomicU64>,
    /// The client's profile streams have the mock's profiles as truth.
    profiles_followed: bool,
    churn_stop: CancellationToken,
    generators: TaskTracker,
    _mock_stop: tokio_util::sync::DropGuard,
}

impl MockLoad {
    /// Starts the mock under `rt`, on loopback, serving the initial sets of
    /// `spec`'s services.
    pub(super) fn start(
        mock: &Mock,
        rt: &mut Runtime,
        registry: &mut Registry,
        spec: &Spec,
    ) -> Result<Self, Error> {
        let server = MockDestination::new(
            Behavior {
                delay: mock.delay,
                delay_per_stream: mock.delay_per_stream,
                ..Default::default()
            },
            registry,
        );
        let handle = server.handle();
        let listener = crate::mock::bind(([127, 0, 0, 1], 0).into()).map_err(Error::MockListen)?;
        let addr = listener.local_addr().map_err(Error::MockListen)?;
        let stop = CancellationToken::new();
        let _mock_stop = stop.clone().drop_guard();
        rt.spawn_critical("mock destination", async move {
            server.serve(listener, stop).await
        });
        let services = mock_services(spec, NAMESPACE);
        for s in &services {
            handle.set(&s.dst.authority, s.dst.endpoints(s.dst.min));
            // A StatefulSet pod's own name resolves to its address alone: pod
            // k holds the service's k-th address.
            for (k, pod) in s.pods.iter().enumerate() {
                let addr = generate::nth_endpoint(&s.dst.cidr, k as u64, s.dst.authority.port());
                handle.set(pod, addr.into_iter().collect::<Vec<_>>());
            }
        }
        let hosts: Vec<String> = services
            .iter()
            .map(|s| s.dst.authority.host().to_string())
            .collect();
        if let Some(p) = &spec.profiles {
            for host in &hosts {
                handle.set_profile(host, ProfileSpec::generated(p.routes));
            }
        }
        Ok(Self {
            initial_changes: handle.metrics().changes.get(),
            hosts,
            profile_changes: Arc::default(),
            profiles_followed: false,
            handle,
            addr,
            services,
            churn_stop: rt.shutdown().child_token(),
            generators: TaskTracker::new(),
            _mock_stop,
        })
    }
}

impl Load for MockLoad {
    async fn prepare(
        &mut self,
        _: &mut Runtime,
        _: &mut Registry,
        run: &Chosen<'_>,
    ) -> Result<Watched, Error> {
        let targets = run
            .spec
            .authorities(NAMESPACE)
            .iter()
            .map(|a| a.parse().expect("valid authority"))
            .collect();
        let config = client::Config::new(&self.addr.to_string(), client::Watch::Targets(targets))?;
        // The truth: the initial sets, then the changes from the mock's
        // feeds (the profiles' too, when there are profile streams).
        self.profiles_followed = run.spec.clients.profile_streams_per_service > 0;
        Ok(Watched {
            config,
            truth: Some(MockFeed::new(&self.handle)),
            profile_truth: self
                .profiles_followed
                .then(|| MockProfiles::new(&self.handle)),
        })
    }

    async fn begin(&mut self, rt: &Runtime, fleet: &Fleet, run: &Chosen<'_>) -> Result<(), Error> {
        let (spec, seed) = (run.spec, run.seed);
        // Every service watched (and given its first truth) before churn starts.
        let watched = spec.authorities(NAMESPACE).len();
        let shutdown = rt.shutdown();
        tokio::select! {
            _ = wait_for_truth(fleet, watched) => {}
            _ = shutdown.cancelled() => return Err(Error::Stopped("every service had its first truth")),
        }
        let schedule = Oscillation {
            min: 0,
            max: 0,
            min_hold: spec.schedule.min_hold,
            max_hold: spec.schedule.max_hold,
            jitter: Jitter::Upto(spec.schedule.jitter),
            cycles: 0,
        };
        let interval = spec.restart_interval();
        let restarts = Oscillation {
            min_hold: interval,
            max_hold: interval,
            ..schedule
        };
        let (lifetime, gap) = spec.ephemeral_lifetime_and_gap();
        let lifecycles = Oscillation {
            min_hold: lifetime,
            max_hold: gap,
            ..schedule
        };
        let handle = self.handle.clone();
        for s in std::mem::take(&mut self.services) {
            let (handle, stop, index) = (handle.clone(), self.churn_stop.clone(), s.index);
            match s.pattern {
                Pattern::Stable => {}
                Pattern::Oscillate | Pattern::StatefulSet if !s.dst.oscillates() => {}
                Pattern::Oscillate | Pattern::StatefulSet => {
                    self.generators.spawn(generate::oscillate(
                        handle, s.dst, schedule, seed, index, stop,
                    ));
                }
                Pattern::Restart => {
                    self.generators.spawn(generate::restart(
                        handle, s.dst, restarts, seed, index, stop,
                    ));
                }
                Pattern::Ephemeral => {
                    self.generators.spawn(generate::lifecycle(
                        handle, s.dst, lifecycles, seed, index, stop,
                    ));
                }
            }
        }
        if let Some(every) = spec.profiles.and_then(|p| p.change_interval) {
            let routes = spec.profiles.map_or(0, |p| p.routes);
            self.generators.spawn(change_profiles(
                handle,
                self.hosts.clone(),
                routes,
                every,
                self.profile_changes.clone(),
                self.churn_stop.clone(),
            ));
        }
        self.generators.close();
        Ok(())
    }

    async fn end(&mut self) {
        self.churn_stop.cancel();
        self.generators.close();
        self.generators.wait().await;
    }

    /// The truth has every change the mock made, to destinations and to
    /// profiles (its feeds are read by other tasks).
    async fn caught_up(&self, client: &Followed, until: tokio::time::Instant) {
        let endpoints_behind = || {
            self.handle
                .list()
                .into_iter()
                .any(|(authority, mut endpoints)| {
                    endpoints.sort();
                    client
                        .services
                        .get(&authority.to_string())
                        .is_some_and(|s| s.truth.expected() != endpoints)
                })
        };
        let profiles_behind = || {
            client.profiles.all().iter().any(|streams| {
                let host = client::profile_truth::host_of(&streams.target);
                let made = routes(&self.handle.profile(host).unwrap_or_default(), None);
                !streams.expects(&made.names, made.retry_ratio)
            })
        };
        while tokio::time::Instant::now() < until
            && (endpoints_behind() || (self.profiles_followed && profiles_behind()))
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn destination(&self) -> String {
        "mock".to_string()
    }

    fn updates_sent(&self) -> Option<u64> {
        Some(self.handle.metrics().updates_sent.get())
    }

    fn changes(&self) -> u64 {
        self.handle.metrics().changes.get() - self.initial_changes
    }

    fn profile_changes(&self) -> u64 {
        self.profile_changes.load(Ordering::Relaxed)
    }
}

/// Every `every` until `stop`, every host's profile changes as churn
/// changes ServiceProfiles ([`ProfileShape`]: routes and retry ratio).
async fn change_profiles(
    handle: Handle,
    hosts: Vec<String>,
    routes: u32,
    every: Duration,
    changed: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    for step in 1u64.. {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let shape = ProfileShape::after(routes, step);
        let spec = ProfileSpec {
            retry_budget: Some(RetryBudgetSpec {
                retry_ratio: shape.retry_ratio as f32,
                ..RetryBudgetSpec::default()
            }),
            ..ProfileSpec::generated(shape.routes)
        };
        for host in &hosts {
            handle.set_profile(host, spec.clone());
        }
        changed.fetch_add(hosts.len() as u64, Ordering::Relaxed);
    }
}

/// Each service draws its endpoints from its own /20 of 10.0.0.0/8.
fn service_cidr(i: u32) -> IpNet {
    let base = u32::from(std::net::Ipv4Addr::new(10, 0, 0, 0)) + i * 4096;
    IpNet::new(std::net::Ipv4Addr::from(base).into(), 20).expect("valid prefix")
}

/// One service of a mock run: its destination and the StatefulSet pods
/// watched by name.
struct MockService {
    pattern: Pattern,
    /// Its schedule's seed index (and /20): services are numbered across groups.
    index: u32,
    dst: GeneratedDst,
    pods: Vec<crate::target::Authority>,
}

/// Every service of `plan` in `ns`, in the order of [`Spec::authorities`].
fn mock_services(plan: &Spec, ns: &str) -> Vec<MockService> {
    let mut index = 0;
    let mut out = Vec::new();
    for g in plan.services.groups() {
        for i in 0..g.count {
            let mut names = g
                .authorities(ns, "cluster.local", i)
                .into_iter()
                .map(|a| a.parse().expect("valid authority"));
            let authority = names.next().expect("a service's own authority");
            out.push(MockService {
                pattern: g.pattern,
                index,
                dst: GeneratedDst {
                    authority,
                    cidr: service_cidr(index),
                    min: g.min,
                    max: g.max,
                },
                pods: names.collect(),
            });
            index += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_get_disjoint_cidrs() {
        assert_eq!(service_cidr(0).to_string(), "10.0.0.0/20");
        assert_eq!(service_cidr(1).to_string(), "10.0.16.0/20");
        assert_eq!(service_cidr(4095).to_string(), "10.255.240.0/20");
    }

    #[test]
    fn mock_services_are_numbered_across_groups_in_watch_order() {
        let p = crate::scenario::parse(
            "t.yaml",
            "duration: 1s\nservices:\n  restart: {count: 2, endpoints: 3}\n  \
             ephemeral: {count: 1, endpoints: 3}\n  statefulset: {count: 1, min-endpoints: 2, max-endpoints: 4}\n",
        )
        .unwrap();
        let services = mock_services(&p, "ns");
        let names: Vec<String> = services
            .iter()
            .flat_map(|s| {
                std::iter::once(s.dst.authority.to_string())
                    .chain(s.pods.iter().map(ToString::to_string))
            })
            .collect();
        assert_eq!(names, p.authorities("ns"));
        let indices: Vec<_> = services.iter().map(|s| (s.pattern, s.index)).collect();
        assert_eq!(
            indices,
            [
                (Pattern::Restart, 0),
                (Pattern::Restart, 1),
                (Pattern::Ephemeral, 2),
                (Pattern::StatefulSet, 3)
            ]
        );
        assert_eq!(services[3].dst.cidr, service_cidr(3));
        assert_eq!((services[3].dst.min, services[3].dst.max), (2, 4));
    }
}
