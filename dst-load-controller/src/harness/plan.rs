//! A [`Plan`] run from start to [`Outcome`]: the seed chosen, the target's
//! [`Load`] prepared, the client started, the changes made for the
//! scenario's duration, the settle, the summary, the cleanup.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{
    cluster,
    error::Error,
    load::{Chosen, Followed, Load, NAMESPACE, Watched},
    mock,
};
use crate::{
    client::{self, Client, Fleet},
    measurements::Measurements,
    runtime::Runtime,
    scenario::Spec,
};

/// A scenario and what it runs against.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The scenario, with every override applied (its seed may be unset:
    /// one is then chosen at random and recorded in the outcome).
    pub spec: Spec,
    /// Who serves and changes the destinations.
    pub target: Target,
}

/// What a plan runs against.
#[derive(Clone, Debug)]
pub enum Target {
    /// The embedded mock Destination server, with simulated churn.
    Mock(mock::Mock),
    /// A cluster: churn there, its destination controller watched, its
    /// Kubernetes API the ground truth.
    Cluster(cluster::Cluster),
    /// Two linked clusters: churn and the ground truth in `target`, the
    /// streams on `source`'s mirrors.
    Multicluster {
        /// The cluster watched (its destination controller, its namespace
        /// of mirrors).
        source: cluster::Cluster,
        /// The cluster where the endpoints live.
        target: cluster::Multicluster,
    },
}

/// Where a run's admin server listens.
#[derive(Clone, Debug)]
pub struct Admin {
    /// The address.
    pub addr: SocketAddr,
    /// Whether peers other than loopback ones may `POST /shutdown`.
    pub allow_remote_shutdown: bool,
    /// What `POST /shutdown` cancels when not the run's own root: the
    /// command's (`run --repeat` stops repeating as on a signal).
    pub root: Option<CancellationToken>,
}

/// Runs `plan` under a [`Runtime`] whose root is `shutdown`; `admin` serves
/// every component's metrics when given. A failed critical task (the mock,
/// churn, the client, the admin server) ends the measurement as a signal
/// does, and is the error returned. Against a cluster, whatever happens once
/// churn may have created objects, they are cleaned up (unless `keep`)
/// before the outcome, or the error, is returned.
pub async fn run(
    plan: &Plan,
    shutdown: CancellationToken,
    admin: Option<Admin>,
) -> Result<Outcome, Error> {
    let seed = plan.spec.seed.unwrap_or_else(rand::random);
    let mut spec = plan.spec.clone();
    spec.seed = Some(seed);
    let run = Chosen { spec: &spec, seed };
    let mut rt = Runtime::with_shutdown(shutdown);
    let mut registry = Registry::default();
    // Each load is dropped (its mock and churn told to stop) before
    // `finish` waits for the tasks.
    let measured = match &plan.target {
        Target::Mock(m) => match mock::MockLoad::start(m, &mut rt, &mut registry, &spec) {
            Ok(mut load) => drive(&run, &mut load, &mut rt, registry, admin).await,
            Err(e) => Err(e),
        },
        Target::Cluster(c) => {
            let mut load = cluster::ClusterLoad::new(c, None);
            drive(&run, &mut load, &mut rt, registry, admin).await
        }
        Target::Multicluster { source, target } => {
            let mut load = cluster::ClusterLoad::new(source, Some(target));
            drive(&run, &mut load, &mut rt, registry, admin).await
        }
    };
    // Every task has stopped (churn too) before the cleanup.
    let measured = finish(rt, measured).await;
    match &plan.target {
        Target::Mock(_) => measured,
        Target::Cluster(c) => cluster::clean_up(c, None, measured).await,
        Target::Multicluster { source, target } => {
            cluster::clean_up(source, Some(target), measured).await
        }
    }
}

/// The scenario common to every target: the load prepared, the client
/// started and answered, the changes made for the scenario's duration, the
/// settle, the summary.
async fn drive(
    run: &Chosen<'_>,
    load: &mut impl Load,
    rt: &mut Runtime,
    mut registry: Registry,
    admin: Option<Admin>,
) -> Result<Outcome, Error> {
    let (spec, shutdown) = (run.spec, rt.shutdown());
    let started_at = jiff::Timestamp::now();
    let Watched {
        mut config,
        truth,
        profile_truth,
    } = load.prepare(rt, &mut registry, run).await?;
    config.streams_per_service = spec.clients.streams_per_service;
    config.profile_streams_per_service = spec.clients.profile_streams_per_service;
    config.faults = spec.clients.faults;
    config.connections = spec.clients.connections();
    let mut client = Client::new(config, &mut registry)?.with_tracker(rt.tracker());
    if let Some(truth) = truth {
        client = client.with_truth(truth);
    }
    if let Some(truth) = profile_truth {
        client = client.with_profile_truth(truth);
    }
    let running = RunningClient::start(rt, registry, client, admin).await?;
    let (fleet, metrics) = (running.fleet.clone(), running.metrics.clone());
    load.begin(rt, &fleet, run).await?;
    // Ready once every stream has had its first answer.
    rt.spawn(client::track_readiness(
        client::Watched::services(fleet.clone()),
        rt.readiness(),
        shutdown.clone(),
    ));
    let progress = super::progress::Progress::start(
        fleet.clone(),
        metrics.clone(),
        Some(spec.streams(NAMESPACE)),
        Some(spec.duration),
    );
    let interrupted = tokio::select! {
        _ = tokio::time::sleep(spec.duration) => false,
        _ = shutdown.cancelled() => true,
    };
    load.end().await;
    // The last changes fan out before judging (not after a critical
    // failure: its error is the outcome).
    let settle_for = if rt.failed() {
        Duration::ZERO
    } else {
        spec.settle
    };
    let until = tokio::time::Instant::now() + settle_for;
    let followed = Followed {
        services: fleet.clone(),
        profiles: running.profiles.clone(),
    };
    load.caught_up(&followed, until).await;
    settle(&followed, until).await;
    progress.finish();
    let summary = running.summary().await?;
    Ok(Outcome {
        scenario: spec.name().to_string(),
        plan: spec.clone(),
        seed: run.seed,
        started_at: started_at.to_string(),
        ended_at: jiff::Timestamp::now().to_string(),
        updates_sent: load.updates_sent(),
        destination: load.destination(),
        destination_version: None,
        changes: load.changes(),
        profile_changes: load.profile_changes(),
        measured: client::measure(&fleet, &metrics, &summary),
        slos: Vec::new(),
        repeats: Vec::new(),
        interrupted,
    })
}

/// After churn stops, waits until `until` at most for every stream to
/// converge: every `Get` stream, and every profile stream with a truth.
async fn settle(client: &Followed, until: tokio::time::Instant) {
    let profiles_behind = || {
        client
            .profiles
            .all()
            .iter()
            .any(|p| (0..p.len()).any(|i| !p.differences(i).is_empty()))
    };
    while tokio::time::Instant::now() < until
        && (client
            .services
            .services()
            .iter()
            .any(|s| s.truth.pending() > 0)
            || profiles_behind())
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// The scenario's name.
    pub scenario: String,
    /// Its document, with the overrides applied.
    pub plan: Spec,
    /// The churn seed (a string in JSON, see `crate::seed`).
    #[serde(with = "crate::seed")]
    pub seed: u64,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it ended (RFC 3339).
    pub ended_at: String,
    /// Updates the mock sent (unknown against a cluster).
    pub updates_sent: Option<u64>,
    /// Where the run's destinations came from: `mock` or the destination address.
    pub destination: String,
    /// The destination controller's version, when known (`run
    /// --destination-version`; never for the mock).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_version: Option<String>,
    /// Changes made to destinations after the initial sets.
    pub changes: u64,
    /// Changes made to the services' profiles after the initial ones.
    pub profile_changes: u64,
    /// What the client measured.
    #[serde(flatten)]
    pub measured: Measurements,
    /// Every SLO with its measured value and verdict.
    pub slos: Vec<crate::slo::Verdict>,
    /// With `--repeat N`: every complete run's figures.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repeats: Vec<crate::measurements::RunFigures>,
    /// Ended before its duration by a signal or `POST /shutdown`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

impl Outcome {
    /// Whether every SLO held.
    pub fn passed(&self) -> bool {
        self.slos.iter().all(|v| v.pass)
    }

    /// Its figures as run `run` (from 1) of a repeated plan.
    pub fn run_figures(&self, run: usize) -> crate::measurements::RunFigures {
        crate::measurements::RunFigures {
            run,
            started_at: self.started_at.clone(),
            ended_at: self.ended_at.clone(),
            passed: self.passed(),
            figures: crate::verdicts::figures(&self.measured),
        }
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let m = &self.measured;
        let mut t = format!(
            "scenario {} seed {} ({} endpoints; {} streams over {} connections)\n",
            self.scenario,
            self.seed,
            self.plan.services,
            m.streams,
            self.plan.clients.connections()
        );
        let sent = self.updates_sent.map_or("?".to_string(), |n| n.to_string());
        t += &format!(
            "  destination {}  streams created {}  updates {} received / {} sent  errors {}  stale {}\n",
            self.destination,
            m.streams_created,
            m.updates_received,
            sent,
            m.errors,
            m.stale_streams
        );
        t += &format!(
            "  changes {}  fan-outs completed {}  superseded {}  streams unconverged at end {}\n",
            self.changes, m.fanouts_completed, m.fanouts_superseded, m.streams_unconverged
        );
        if m.profile_streams_created > 0 {
            t += &format!(
                "  profile streams created {}  profiles received {}  profile changes {}  stale profile streams {}\n",
                m.profile_streams_created,
                m.profile_updates_received,
                self.profile_changes,
                m.profile_stale_streams
            );
        }
        if m.services_never_served > 0 {
            t += &format!(
                "  !!! {} service(s) NEVER got an endpoint although the ground truth lists endpoints: \
                 the destination server is not serving them (see the client summary above)\n",
                m.services_never_served
            );
        }
        t += &m.latency_table();
        t + &crate::gates::verdict_table(&self.slos)
    }
}

/// Waits for every task of `rt`; its first critical failure is the cause of
/// any error `measured` has, and is returned first.
pub(super) async fn finish<T, E: From<Error>>(rt: Runtime, measured: Result<T, E>) -> Result<T, E> {
    match (rt.finish().await, measured) {
        (Err(cause), _) => Err(Error::from(cause).into()),
        (Ok(()), measured) => measured,
    }
}

/// A scenario's client, running as a critical task of its runtime.
struct RunningClient {
    fleet: Arc<Fleet>,
    profiles: Arc<client::profile::ProfileFleet>,
    metrics: client::metrics::Metrics,
    stop: CancellationToken,
    /// Stops the client on any return.
    _stop: tokio_util::sync::DropGuard,
    summary: tokio::sync::oneshot::Receiver<client::Summary>,
}

impl RunningClient {
    /// Starts `client` under `rt`, then the admin server (at `admin`, with
    /// every metric registered so far), once every component registered.
    /// The admin server, if any, serves `registry`.
    async fn start(
        rt: &mut Runtime,
        registry: Registry,
        client: Client,
        admin: Option<Admin>,
    ) -> Result<Self, Error> {
        let (fleet, metrics) = (client.fleet(), client.metrics().clone());
        let profiles = client.profile_fleet();
        let stop = CancellationToken::new();
        let (tx, summary) = tokio::sync::oneshot::channel();
        let task_stop = stop.clone();
        rt.spawn_critical("client", async move {
            let _ = tx.send(client.run(task_stop).await?);
            Ok::<_, client::Error>(())
        });
        let running = Self {
            fleet,
            profiles,
            metrics,
            _stop: stop.clone().drop_guard(),
            stop,
            summary,
        };
        if let Some(admin) = admin {
            if let Some(root) = admin.root {
                rt.set_admin_root(root);
            }
            rt.serve_admin(registry, admin.addr, admin.allow_remote_shutdown)
                .await?;
        }
        Ok(running)
    }

    /// Stops the client and takes its summary (none when it failed: the
    /// runtime has the cause).
    async fn summary(self) -> Result<client::Summary, Error> {
        self.stop.cancel();
        self.summary.await.map_err(|_| Error::NoSummary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_critical_failure_is_the_error_a_scenario_returns() {
        let rt = Runtime::with_shutdown(CancellationToken::new());
        rt.spawn_critical("client", async { anyhow::bail!("connection refused") });
        // The scenario sees its root cancelled and fails on its own terms.
        rt.shutdown().cancelled().await;
        let r: Result<(), Error> = finish(rt, Err(Error::NoSummary)).await;
        let e = format!("{:#}", anyhow::Error::from(r.unwrap_err()));
        assert!(
            e.contains("client failed") && e.contains("connection refused"),
            "{e}"
        );
        let rt = Runtime::with_shutdown(CancellationToken::new());
        assert_eq!(finish::<_, Error>(rt, Ok(7)).await.unwrap(), 7);
    }
}
