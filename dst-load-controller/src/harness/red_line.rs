//! `run --find-red-line`: the harness run at the loads the search asks for,
//! each step judged by the scenario's SLOs (or the given ones), until the
//! search is done. The search itself (steps, bisection, verdict) is pure, in
//! [`crate::red_line`].

use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use super::{
    error::Error,
    plan::{Admin, Plan, Target, finish, run},
};
use crate::{
    red_line::{Dimension, Found, Search, Step, client_bound, cpu_share, process_cpu_seconds},
    runtime::Runtime,
    scenario::{Faults, Overrides, Spec},
    slo::Slo,
};

/// A red-line search, as the command asked for it.
#[derive(Clone, Debug)]
pub struct RedLine {
    /// The scenario before the overrides.
    pub base: Spec,
    /// The command line's overrides; each step sets its load over them.
    pub overrides: Overrides,
    /// The streams' fault modes (the scenario's with the command line's over them).
    pub faults: Faults,
    /// What every step runs against.
    pub target: Target,
    /// What grows.
    pub dimension: Dimension,
    /// The largest load tried (default: 64 times the scenario's).
    pub max: Option<u32>,
    /// How close the last pass and the first fail get.
    pub precision: f64,
    /// The gates of every step (default: the scenario's SLOs).
    pub slos: Vec<Slo>,
    /// A latency SLO judged on fewer samples fails.
    pub min_samples: u64,
    /// Print the steps on standard error instead of standard output (which
    /// then carries a report).
    pub steps_to_stderr: bool,
    /// Runs of every step (`--repeat`): a step holds when more than half of
    /// them held.
    pub repeat: u16,
}

impl RedLine {
    fn say(&self, text: std::fmt::Arguments<'_>) {
        if self.steps_to_stderr {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }

    /// The plan at `load` (and `duration`, when a step is extended).
    fn plan(&self, load: u32, duration: Option<std::time::Duration>) -> Result<Plan, Error> {
        let mut o = self.overrides.clone();
        match self.dimension {
            Dimension::Streams => {
                o.streams_per_service = Some(load);
                o.connections = Some(self.overrides.connections.unwrap_or(load));
                o.scale = 1.0;
            }
            Dimension::Services => o.services = Some(load),
        }
        if duration.is_some() {
            o.duration = duration;
        }
        let mut spec = self.base.clone().with(&o)?;
        spec.clients.faults = self.faults;
        Ok(Plan {
            spec,
            target: self.target.clone(),
        })
    }

    /// One run of the step at `load`, judged by `slos`; a run judged on too
    /// few samples runs again, twice as long (at most twice). Returns it
    /// and the share of the machine's `cores` this process used.
    async fn run_once(
        &self,
        load: u32,
        spec: &Spec,
        slos: &[Slo],
        cores: usize,
        shutdown: &CancellationToken,
    ) -> Result<(super::plan::Outcome, f64), Error> {
        let mut duration = None;
        loop {
            let plan = self.plan(load, duration)?;
            let cpu_before = process_cpu_seconds();
            let began = std::time::Instant::now();
            let mut outcome = run(&plan, shutdown.child_token(), None).await?;
            let wall = began.elapsed().as_secs_f64();
            let cpu = match (cpu_before, process_cpu_seconds()) {
                (Some(a), Some(b)) => cpu_share(b - a, wall, cores),
                _ => 0.0,
            };
            outcome.slos = crate::slo::judge(slos, &outcome.measured, self.min_samples);
            let too_few = outcome.slos.iter().filter(|v| !v.pass).all(|v| {
                v.reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("too few samples"))
            });
            let extended = plan.spec.duration;
            if outcome.passed()
                || !too_few
                || extended >= spec.duration * 4
                || shutdown.is_cancelled()
            {
                return Ok((outcome, cpu));
            }
            duration = Some(extended * 2);
            self.say(format_args!(
                "  {load}: too few samples; again for {:?}",
                extended * 2
            ));
        }
    }

    /// Runs the search under one admin server (`/shutdown` ends it; each
    /// step's metrics live only as long as the step, under its own runtime),
    /// printing each step; stops early on `shutdown`. `done` gets what was
    /// found while that runtime still stands (so the verdict and the
    /// outputs are written even when it then reports a failure, which is
    /// the error returned).
    pub async fn find<T, E: From<Error>>(
        self,
        shutdown: CancellationToken,
        admin: Admin,
        done: impl FnOnce(Found) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut rt = Runtime::with_shutdown(shutdown.clone());
        rt.readiness().set(true);
        if let Err(e) = rt
            .serve_admin(Registry::default(), admin.addr, admin.allow_remote_shutdown)
            .await
        {
            return finish(rt, Err(Error::from(e).into())).await;
        }
        let found = self.steps(&shutdown).await.map_err(E::from).and_then(done);
        finish(rt, found).await
    }

    async fn steps(&self, shutdown: &CancellationToken) -> Result<Found, Error> {
        let spec = self.base.clone().with(&self.overrides)?;
        let start = match self.dimension {
            Dimension::Streams => spec.clients.streams_per_service,
            Dimension::Services => spec.services.groups().next().map_or(1, |g| g.count),
        };
        let max = self.max.unwrap_or_else(|| start.saturating_mul(64));
        let mut search = Search::new(start, max, self.precision);
        let mut slos = self.slos.clone();
        // On the mock, a stream that lags by more than a service's hold can
        // find the service changed back and hold the right set without
        // having seen the change: its lag cannot be timed, so a step with
        // such streams has not kept up. (Against a cluster the count is
        // reported, not gated: there the truth's attribution of slice
        // changes to churn's stamps is a heuristic.)
        if matches!(self.target, Target::Mock(_))
            && !slos
                .iter()
                .any(|s| s.expr.starts_with("untimed_convergences"))
        {
            slos.push("untimed_convergences==0".parse().expect("a valid SLO"));
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.say(format_args!(
            "finding the red line of {} by {}: from {start} up to {max}, to {:.0}%",
            spec.name(),
            match self.dimension {
                Dimension::Streams => "streams per service",
                Dimension::Services => "services",
            },
            self.precision * 100.0
        ));
        let mut steps = Vec::new();
        let mut client_bound_at = None;
        while let Some(load) = search.next() {
            if shutdown.is_cancelled() {
                break;
            }
            // Every run of the step (one without --repeat); a step holds
            // when more than half its runs held.
            let mut runs = Vec::new();
            for _ in 0..self.repeat.max(1) {
                runs.push(self.run_once(load, &spec, &slos, cores, shutdown).await?);
                if shutdown.is_cancelled() {
                    break;
                }
            }
            let held = runs.iter().filter(|(o, _)| o.passed()).count();
            let passed = 2 * held > runs.len();
            let cpu = runs.iter().map(|(_, cpu)| *cpu).fold(0.0, f64::max);
            let figures: Vec<_> = runs
                .iter()
                .enumerate()
                .map(|(i, (o, _))| o.run_figures(i + 1))
                .collect();
            let count = runs.len();
            // The step's run shown: the first that agrees with its verdict.
            let shown = runs
                .iter()
                .position(|(o, _)| o.passed() == passed)
                .unwrap_or(0);
            let (mut outcome, _) = runs.swap_remove(shown);
            if self.repeat > 1 {
                outcome.repeats = figures;
            }
            let bound = client_bound(cpu);
            let m = &outcome.measured;
            self.say(format_args!(
                "  {load:>7}: {} streams  {}  update p50 {:.1} ms p99 {:.1} ms  convergence p99 {:.1} ms  fan-out max {:.1} ms  untimed {}  cpu {:.0}%{}",
                m.streams,
                if passed { "PASS" } else { "FAIL" },
                m.update_latency.p50 * 1e3,
                m.update_latency.p99 * 1e3,
                m.convergence_latency.p99 * 1e3,
                m.fanout_completion.max * 1e3,
                m.convergences_untimed,
                cpu * 100.0,
                if bound {
                    "  CLIENT-BOUND (not counted)"
                } else {
                    ""
                }
            ));
            if self.repeat > 1 {
                self.say(format_args!(
                    "           {held} of {count} runs held (the figures above are run {}'s)",
                    shown + 1
                ));
            }
            for v in outcome.slos.iter().filter(|v| !v.pass) {
                self.say(format_args!(
                    "           failed {}: {}",
                    v.slo,
                    v.reason.as_deref().unwrap_or("")
                ));
            }
            steps.push(Step {
                load,
                streams: m.streams,
                passed,
                client_bound: bound,
                cpu,
                runs: count,
                runs_held: held,
                outcome: serde_json::to_value(&outcome)?,
            });
            if bound {
                // Higher loads would measure this process, not the server.
                client_bound_at = Some(load);
                if passed {
                    search.record(load, true);
                }
                break;
            }
            search.record(load, passed);
        }
        Ok(Found {
            dimension: self.dimension,
            search,
            client_bound_at,
            steps,
        })
    }
}
