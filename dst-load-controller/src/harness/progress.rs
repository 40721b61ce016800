//! Live progress on standard error, for `run` and `client` (hidden when
//! standard error is not a terminal): time elapsed of the time asked for,
//! streams answered, updates with their rate over the last
//! [`RATE_WINDOW`] (churn comes in bursts: a rate over the last half
//! second read 0/s almost always), and convergence so far. The bar lives
//! in [`crate::logging::progress`], whose log writer clears it around
//! each line, so log lines do not tear it.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use tokio::time::Instant;

use crate::{
    client::{self, fleet::Fleet},
    latency::Kind,
};

/// The window of the update rate shown.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

/// The rate of a growing count over a sliding window.
#[derive(Debug)]
pub struct RateWindow {
    window: Duration,
    samples: VecDeque<(Instant, u64)>,
}

impl RateWindow {
    /// A rate over the last `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            samples: VecDeque::new(),
        }
    }

    /// Takes the count `total` at `now`; the rate per second since the
    /// oldest sample within the window (0 until there are two).
    pub fn push(&mut self, now: Instant, total: u64) -> f64 {
        self.samples.push_back((now, total));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > self.window)
        {
            self.samples.pop_front();
        }
        let (t0, n0) = self.samples.front().copied().expect("just pushed");
        let secs = now.duration_since(t0).as_secs_f64();
        if secs > 0.0 {
            total.saturating_sub(n0) as f64 / secs
        } else {
            0.0
        }
    }
}

/// `m:ss` (or `h:mm:ss`) of `d`.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// The progress line: `0:12 of 1:00 | streams up 980/1000 | updates 4210
/// (350/s over 10s) | convergence p50 .. p99 ..`.
pub fn line(
    elapsed: Duration,
    total: Option<Duration>,
    up: u64,
    streams: Option<u64>,
    updates: u64,
    rate: f64,
    convergence: &crate::latency::Percentiles,
) -> String {
    let time = match total {
        Some(t) => format!("{} of {}", clock(elapsed), clock(t)),
        None => clock(elapsed),
    };
    let streams = match streams {
        Some(n) => format!("{up}/{n}"),
        None => up.to_string(),
    };
    format!(
        "{time} | streams up {streams} | updates {updates} ({rate:.0}/s over {}s) | convergence p50 {:.1} ms p99 {:.1} ms ({} samples)",
        RATE_WINDOW.as_secs(),
        convergence.p50 * 1e3,
        convergence.p99 * 1e3,
        convergence.count
    )
}

/// A progress line kept up to date until [`Progress::finish`].
pub struct Progress {
    bar: indicatif::ProgressBar,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Shows the progress of `fleet`'s streams (of `streams` in all, when
    /// known) over `total` (when known).
    pub fn start(
        fleet: Arc<Fleet>,
        metrics: client::metrics::Metrics,
        streams: Option<u64>,
        total: Option<Duration>,
    ) -> Self {
        let bar = crate::logging::progress().add(indicatif::ProgressBar::new_spinner());
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg}").expect("valid template"),
        );
        let b = bar.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut rate = RateWindow::new(RATE_WINDOW);
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let services = fleet.services();
                let up: u64 = services
                    .iter()
                    .map(|s| s.slots().iter().filter(|x| x.answered()).count() as u64)
                    .sum();
                let updates: u64 = services
                    .iter()
                    .map(|s| metrics.updates_of(&s.service))
                    .sum();
                let now = Instant::now();
                let per_second = rate.push(now, updates);
                let c = metrics.latencies.percentiles(Kind::Convergence);
                b.set_message(line(
                    now - started,
                    total,
                    up,
                    streams,
                    updates,
                    per_second,
                    &c,
                ));
                b.tick();
            }
        });
        Self { bar, task }
    }

    /// Stops and clears the line.
    pub fn finish(self) {
        self.task.abort();
        self.bar.finish_and_clear();
        crate::logging::progress().remove(&self.bar);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_shows_in_the_windowed_rate_until_it_leaves_the_window() {
        let t0 = Instant::now();
        let mut r = RateWindow::new(RATE_WINDOW);
        let at = |s: u64| t0 + Duration::from_millis(s * 500);
        assert_eq!(r.push(at(0), 0), 0.0);
        // 100 updates in one half second, then quiet: the last half
        // second's rate would read 0/s; over the window it reads 100/2.5s.
        r.push(at(1), 100);
        for s in 2..=5 {
            r.push(at(s), 100);
        }
        assert_eq!(r.push(at(5), 100), 100.0 / 2.5);
        // 10 s later the burst has left the window.
        let mut last = 0.0;
        for s in 6..=30 {
            last = r.push(at(s), 100);
        }
        assert_eq!(last, 0.0);
    }

    #[test]
    fn the_line_says_elapsed_of_total_and_the_windowed_rate() {
        let c = crate::latency::Percentiles {
            count: 3,
            p50: 0.0125,
            p99: 0.2,
            ..Default::default()
        };
        assert_eq!(
            line(
                Duration::from_secs(72),
                Some(Duration::from_secs(600)),
                980,
                Some(1000),
                4210,
                349.6,
                &c
            ),
            "1:12 of 10:00 | streams up 980/1000 | updates 4210 (350/s over 10s) | convergence p50 12.5 ms p99 200.0 ms (3 samples)"
        );
        assert!(
            line(Duration::from_secs(3725), None, 5, None, 0, 0.0, &c)
                .starts_with("1:02:05 | streams up 5 |")
        );
    }
}
