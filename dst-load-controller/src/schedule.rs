//! The oscillation schedule: when each service scales and to what, derived
//! only from the flags and the seed, so a run can be replayed exactly.

use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};

/// How much random delay precedes each scale.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Jitter {
    /// Up to this percentage (0-100) of the hold that precedes the scale.
    Percent(u8),
    /// Up to this absolute delay.
    Upto(Duration),
}

/// One service's oscillation parameters.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Oscillation {
    /// Replicas at the low end (and at start).
    pub min: u32,
    /// Replicas at the high end.
    pub max: u32,
    /// Time held at min.
    pub min_hold: Duration,
    /// Time held at max.
    pub max_hold: Duration,
    /// Delay before each scale.
    pub jitter: Jitter,
    /// Full min -> max -> min cycles; 0 = forever.
    pub cycles: u64,
}

/// One scheduled scale.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Time since the previous step (or since start for the first).
    pub after: Duration,
    /// The jitter part of `after`.
    pub jitter: Duration,
    /// Replicas to scale to.
    pub replicas: u32,
    /// Whether this step completes a cycle (the scale back down to min).
    pub completes_cycle: bool,
}

/// The steps of one service, in order.
#[derive(Clone, Debug)]
pub struct Schedule {
    osc: Oscillation,
    rng: StdRng,
    at_max: bool,
    started: bool,
    cycles_done: u64,
}

/// Derives service `index`'s seed from the run's seed, so that every service
/// has its own stream of jitter and all of them follow from one number.
pub fn service_seed(seed: u64, index: u32) -> u64 {
    seed ^ (u64::from(index) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl Schedule {
    /// The schedule of service `index` for a run seeded with `seed`.
    pub fn new(osc: Oscillation, seed: u64, index: u32) -> Self {
        Self {
            osc,
            rng: StdRng::seed_from_u64(service_seed(seed, index)),
            at_max: false,
            started: false,
            cycles_done: 0,
        }
    }

    fn jitter(&mut self, hold: Duration) -> Duration {
        let bound = match self.osc.jitter {
            Jitter::Percent(p) => hold.mul_f64(f64::from(p) / 100.0),
            Jitter::Upto(d) => d,
        };
        if bound.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(self.rng.random_range(0..=bound.as_nanos() as u64))
        }
    }
}

impl Iterator for Schedule {
    type Item = Step;

    fn next(&mut self) -> Option<Step> {
        if self.osc.cycles > 0 && self.cycles_done >= self.osc.cycles {
            return None;
        }
        // Going up follows a hold at min, except the first step, which is
        // only the jitter: services start at min and spread out from there.
        let (hold, replicas) = if self.at_max {
            (self.osc.max_hold, self.osc.min)
        } else {
            (
                if self.started {
                    self.osc.min_hold
                } else {
                    Duration::ZERO
                },
                self.osc.max,
            )
        };
        let jitter_base = if self.at_max {
            self.osc.max_hold
        } else {
            self.osc.min_hold
        };
        let jitter = self.jitter(jitter_base);
        let completes_cycle = self.at_max;
        if completes_cycle {
            self.cycles_done += 1;
        }
        self.started = true;
        self.at_max = !self.at_max;
        Some(Step {
            after: hold + jitter,
            jitter,
            replicas,
            completes_cycle,
        })
    }
}

/// Runs `apply` for each step at its absolute deadline (`start` plus the sum
/// of the steps so far), so slow calls do not drift the schedule. `apply` gets
/// the step and how late it was dispatched. Returns early, without error,
/// when `stop` fires between steps.
pub async fn drive<F, Fut, E>(
    steps: impl IntoIterator<Item = Step>,
    start: tokio::time::Instant,
    stop: &tokio_util::sync::CancellationToken,
    mut apply: F,
) -> Result<(), E>
where
    F: FnMut(Step, Duration) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
{
    let mut at = start;
    for step in steps {
        at += step.after;
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep_until(at) => {}
        }
        apply(step, at.elapsed()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_osc() -> Oscillation {
        Oscillation {
            min: 1,
            max: 5,
            min_hold: Duration::from_secs(10),
            max_hold: Duration::from_secs(20),
            jitter: Jitter::Percent(10),
            cycles: 2,
        }
    }

    #[test]
    fn alternates_max_then_min_with_holds_and_bounded_jitter() {
        let steps: Vec<Step> = Schedule::new(mk_osc(), 42, 0).collect();
        assert_eq!(
            steps.iter().map(|s| s.replicas).collect::<Vec<_>>(),
            [5, 1, 5, 1]
        );
        assert_eq!(steps.iter().filter(|s| s.completes_cycle).count(), 2);
        // First: only jitter (up to 10% of the min hold).
        assert_eq!(steps[0].after, steps[0].jitter);
        assert!(steps[0].jitter <= Duration::from_secs(1));
        // Down after holding max (20 s) plus up to 2 s.
        assert_eq!(steps[1].after, Duration::from_secs(20) + steps[1].jitter);
        assert!(steps[1].jitter <= Duration::from_secs(2));
        // Up after holding min (10 s) plus up to 1 s.
        assert_eq!(steps[2].after, Duration::from_secs(10) + steps[2].jitter);
        assert!(steps[2].jitter <= Duration::from_secs(1));
    }

    #[test]
    fn same_seed_same_schedule_and_services_differ() {
        let a: Vec<Step> = Schedule::new(mk_osc(), 7, 3).collect();
        let b: Vec<Step> = Schedule::new(mk_osc(), 7, 3).collect();
        let c: Vec<Step> = Schedule::new(mk_osc(), 7, 4).collect();
        let d: Vec<Step> = Schedule::new(mk_osc(), 8, 3).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }

    #[test]
    fn absolute_jitter_and_no_jitter() {
        let mut osc = mk_osc();
        osc.jitter = Jitter::Upto(Duration::from_millis(5));
        for s in Schedule::new(osc, 1, 0) {
            assert!(s.jitter <= Duration::from_millis(5));
        }
        osc.jitter = Jitter::Percent(0);
        let steps: Vec<Step> = Schedule::new(osc, 1, 0).collect();
        assert!(steps.iter().all(|s| s.jitter.is_zero()));
        assert_eq!(steps[0].after, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn drive_dispatches_at_absolute_deadlines_despite_slow_calls() {
        let start = tokio::time::Instant::now();
        let steps: Vec<Step> = Schedule::new(mk_osc(), 5, 0).collect();
        let stop = tokio_util::sync::CancellationToken::new();
        let mut seen = Vec::new();
        drive(steps.clone(), start, &stop, |step, lag| {
            seen.push((start.elapsed(), step.replicas, lag));
            // Each call takes 3 s; the next deadline must not move.
            async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                Ok::<_, ()>(())
            }
        })
        .await
        .unwrap();
        let mut expected = Duration::ZERO;
        for ((when, replicas, lag), step) in seen.iter().zip(&steps) {
            expected += step.after;
            // tokio's timer wheel has millisecond resolution: never early,
            // at most a millisecond late, whatever the calls cost.
            let ms = Duration::from_millis(1);
            assert!(
                *when >= expected && *when <= expected + ms,
                "{when:?} vs {expected:?}"
            );
            assert_eq!(*replicas, step.replicas);
            assert!(*lag <= ms, "{lag:?}");
        }
        assert_eq!(seen.len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn drive_stops_between_steps() {
        let stop = tokio_util::sync::CancellationToken::new();
        let mut calls = 0;
        let steps = Schedule::new(
            Oscillation {
                cycles: 0,
                ..mk_osc()
            },
            5,
            0,
        );
        let canceller = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(45)).await;
            canceller.cancel();
        });
        drive(steps, tokio::time::Instant::now(), &stop, |_, _| {
            calls += 1;
            async { Ok::<_, ()>(()) }
        })
        .await
        .unwrap();
        // Up at <=1 s, down at ~21-23 s, up at ~31-35 s; the next is past 45 s.
        assert_eq!(calls, 3);
    }

    #[test]
    fn zero_cycles_runs_forever() {
        let mut osc = mk_osc();
        osc.cycles = 0;
        assert_eq!(Schedule::new(osc, 1, 0).take(1000).count(), 1000);
    }

    #[test]
    fn jitter_percent_spreads_across_the_whole_range() {
        let mut osc = mk_osc();
        osc.cycles = 0;
        let jitters: Vec<Duration> = Schedule::new(osc, 99, 0)
            .take(400)
            .skip(1)
            .step_by(2)
            .map(|s| s.jitter)
            .collect();
        let max = jitters.iter().max().unwrap();
        let min = jitters.iter().min().unwrap();
        // Max-hold jitter is up to 2 s: the samples should reach near both ends.
        assert!(
            *max > Duration::from_millis(1800) && *max <= Duration::from_secs(2),
            "{max:?}"
        );
        assert!(*min < Duration::from_millis(200), "{min:?}");
    }
}
