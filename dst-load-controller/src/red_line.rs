//! The red line, found: the largest load at which a scenario's SLOs still
//! hold. The search (geometric steps up, then bisection) and the judging of
//! each step, without I/O; `run --find-red-line` runs the steps (its flags
//! are `cmd::flags::RedLineArgs`).

use serde::Serialize;

/// What the red-line search grows.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dimension {
    /// Streams per service (and connections with them).
    Streams,
    /// Services of the scenario's first group.
    Services,
}

/// The search's state: steps up by doubling from the start until a fail or
/// the maximum, then halves between the last pass and the first fail.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Search {
    /// The first load tried.
    pub start: u32,
    /// The largest load tried.
    pub max: u32,
    /// When to stop bisecting (relative gap).
    pub precision: f64,
    /// The largest load that passed.
    pub pass: Option<u32>,
    /// The smallest load that failed.
    pub fail: Option<u32>,
}

impl Search {
    /// A search from `start` (at least 1) up to `max`.
    pub fn new(start: u32, max: u32, precision: f64) -> Self {
        let start = start.max(1);
        Self {
            start,
            max: max.max(start),
            precision,
            pass: None,
            fail: None,
        }
    }

    /// The next load to try, or None when the search is done.
    pub fn next(&self) -> Option<u32> {
        match (self.pass, self.fail) {
            (None, None) => Some(self.start),
            (Some(p), None) => (p < self.max).then(|| p.saturating_mul(2).min(self.max)),
            // Even the start failed: step down.
            (None, Some(f)) => (f > 1).then_some(f / 2),
            (Some(p), Some(f)) => {
                let close = f64::from(f - p) <= self.precision * f64::from(p);
                (f - p > 1 && !close).then_some(p + (f - p) / 2)
            }
        }
    }

    /// Records a step's outcome.
    pub fn record(&mut self, load: u32, passed: bool) {
        if passed {
            self.pass = Some(self.pass.map_or(load, |p| p.max(load)));
        } else {
            self.fail = Some(self.fail.map_or(load, |f| f.min(load)));
        }
    }
}

/// A step whose process used at least this share of the machine's CPUs
/// measured the load generator, not the destination server.
pub const CLIENT_BOUND_CPU: f64 = 0.9;

/// The share of the machine's `cores` a process used: `cpu_seconds` over
/// `wall_seconds` (0 for no time).
pub fn cpu_share(cpu_seconds: f64, wall_seconds: f64, cores: usize) -> f64 {
    if wall_seconds > 0.0 {
        cpu_seconds / (wall_seconds * cores.max(1) as f64)
    } else {
        0.0
    }
}

/// Whether a step whose process used `share` of the machine saturated it.
pub fn client_bound(share: f64) -> bool {
    share >= CLIENT_BOUND_CPU
}

/// This process's CPU time so far (user and system), in seconds, from
/// `/proc/self/stat` (clock ticks of 1/100 s); None where there is no procfs.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces), from field 3.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    // utime and stime are fields 14 and 15: 12 and 13 after the name.
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

/// One step of the search, as printed and reported.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    /// The load: streams per service or services.
    pub load: u32,
    /// Streams in all.
    pub streams: u64,
    /// Whether every SLO held.
    pub passed: bool,
    /// Whether the process itself was saturated (not counted).
    pub client_bound: bool,
    /// The process's CPU use, as a share of the machine (the most of its
    /// runs).
    pub cpu: f64,
    /// Runs made at this load (`--repeat`; 1 without).
    pub runs: usize,
    /// Runs whose every SLO held: the step holds when more than half did.
    pub runs_held: usize,
    /// The step's run (plan, measurements, SLO verdicts): with `--repeat`,
    /// the first whose verdict is the step's, with every run's figures in
    /// `repeats`.
    pub outcome: serde_json::Value,
}

/// What the search found.
#[derive(Clone, Debug, Serialize)]
pub struct Found {
    /// What grew.
    pub dimension: Dimension,
    /// The search's final state (`pass` is the red line).
    pub search: Search,
    /// The load at which the process saturated, if it did.
    pub client_bound_at: Option<u32>,
    /// Every step in the order run.
    pub steps: Vec<Step>,
}

impl Found {
    /// The summary line.
    pub fn verdict(&self) -> String {
        let unit = match self.dimension {
            Dimension::Streams => "streams per service",
            Dimension::Services => "services",
        };
        let mut s = match (self.search.pass, self.search.fail) {
            (Some(p), Some(f)) => {
                format!("red line: {p} {unit} held, {f} failed")
            }
            (Some(p), None) => {
                format!("no red line up to {p} {unit}: every step held (raise --red-line-max)")
            }
            (None, Some(f)) => format!("no load held: {f} {unit} failed already"),
            (None, None) => "no step ran".to_string(),
        };
        if let Some(c) = self.client_bound_at {
            s += &format!(
                "; at {c} {unit} this process saturated its CPUs (client-bound, not counted): the red line may lie higher"
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the search against a known red line; returns (found, steps).
    fn search(start: u32, max: u32, red_line: u32) -> (Option<u32>, Vec<u32>) {
        let mut s = Search::new(start, max, 0.1);
        let mut steps = Vec::new();
        while let Some(load) = s.next() {
            assert!(!steps.contains(&load), "{load} tried twice: {steps:?}");
            steps.push(load);
            s.record(load, load <= red_line);
            assert!(steps.len() < 40);
        }
        (s.pass, steps)
    }

    #[test]
    fn doubles_then_bisects_to_the_precision() {
        let (found, steps) = search(4, 1000, 49);
        assert_eq!(&steps[..5], [4, 8, 16, 32, 64]);
        let found = found.unwrap();
        assert!(
            found <= 49 && f64::from(49 - found) <= 0.1 * 49.0,
            "{found} {steps:?}"
        );
        for red in [1, 2, 3, 7, 100, 513, 999] {
            let (found, _) = search(5, 1000, red);
            match found {
                Some(f) => assert!(
                    f <= red && f64::from(red - f) <= 0.1 * f64::from(red) + 1.0,
                    "{red}: {f}"
                ),
                None => assert!(red < 1, "{red}"),
            }
        }
    }

    #[test]
    fn stops_at_the_maximum_and_steps_down_when_the_start_fails() {
        let (found, steps) = search(10, 50, 1000);
        assert_eq!(steps, [10, 20, 40, 50]);
        assert_eq!(found, Some(50));
        let (found, steps) = search(64, 1000, 5);
        assert_eq!(&steps[..5], [64, 32, 16, 8, 4]);
        assert!(found.unwrap() <= 5 && found.unwrap() >= 4, "{found:?}");
        let (found, _) = search(8, 100, 0);
        assert_eq!(found, None);
    }

    #[test]
    fn a_saturated_process_is_client_bound() {
        assert!(client_bound(cpu_share(9.5, 5.0, 2)));
        assert!(!client_bound(cpu_share(3.0, 5.0, 2)));
        assert!(!client_bound(cpu_share(1.0, 0.0, 2)));
        assert!(process_cpu_seconds().is_some_and(|s| s >= 0.0));
    }
}
