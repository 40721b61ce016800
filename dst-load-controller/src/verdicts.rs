//! The verdicts of `compare`, without I/O: bootstrap confidence intervals of
//! the relative change of each latency percentile, resampled from the two
//! reports' HDR histograms, and thresholds for the counts. (A module of its
//! own: `compare`, the pictures and the red-line search all use it.)

use std::collections::BTreeMap;

use hdrhistogram::Histogram as Hdr;
use rand::{SeedableRng, rngs::StdRng};
use rand_distr::{Binomial, Distribution};
use serde::Serialize;

use crate::{latency::Percentiles, measurements::Measurements};

/// The percentiles compared, by name and quantile (`max` is the largest sample).
pub const STATS: [(&str, f64); 5] = [
    ("p50", 0.50),
    ("p95", 0.95),
    ("p99", 0.99),
    ("p999", 0.999),
    ("max", 1.0),
];

/// `10%` or `0.1`, as a fraction from 0 to 10.
pub fn parse_fraction(s: &str) -> Result<f64, FractionError> {
    let (n, scale) = match s.trim().strip_suffix('%') {
        Some(p) => (p.trim(), 100.0),
        None => (s.trim(), 1.0),
    };
    let v = n
        .parse::<f64>()
        .map_err(|_| FractionError::NotANumber(s.to_string()))?
        / scale;
    if !(0.0..=10.0).contains(&v) {
        return Err(FractionError::OutOfRange(s.to_string()));
    }
    Ok(v)
}

/// Not a fraction [`parse_fraction`] takes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FractionError {
    /// Not a number.
    #[error("'{0}' is not a fraction: give e.g. 10% or 0.1")]
    NotANumber(String),
    /// Below 0 or past 1000 %.
    #[error("'{0}' is out of range: give 0% to 1000%")]
    OutOfRange(String),
}

/// Bootstrap resamples per latency.
const RESAMPLES: usize = 1000;

/// What `compare` decides about one figure.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Lower beyond the threshold, at the confidence asked.
    Better,
    /// Higher beyond the threshold, at the confidence asked.
    Worse,
    /// Neither.
    Same,
    /// Repeated runs, too few of them for the rank test to find anything
    /// at the confidence asked.
    #[serde(rename = "too few runs")]
    TooFewRuns,
}

impl Verdict {
    /// As printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Better => "better",
            Verdict::Worse => "worse",
            Verdict::Same => "same",
            Verdict::TooFewRuns => "too few runs",
        }
    }
}

/// One compared figure.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    /// `update_latency.p95`, `errors`, ...
    pub metric: String,
    /// The base report's value (seconds for latencies).
    pub base: f64,
    /// The new report's value.
    pub new: f64,
    /// The confidence interval of the relative change `new / base - 1`,
    /// when a statistical test was made.
    pub interval: Option<(f64, f64)>,
    /// The verdict.
    pub verdict: Verdict,
    /// Whether the verdict counts towards the exit status: a test was made
    /// (latencies with histograms), or it is a count.
    pub counted: bool,
    /// Why there was no test, when there was none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
    /// Over repeated runs: the rank test's two-sided p-value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// Over repeated runs: the median shift of new from base, relative to
    /// base's median (none when base's median is 0 and new moved).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<f64>,
    /// Over repeated runs: how many runs each side had (`base` and `new`
    /// are then their medians).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runs: Option<[usize; 2]>,
}

impl Row {
    /// Whether the row is a latency (seconds) rather than a count.
    pub fn is_latency(&self) -> bool {
        self.metric.contains('.')
    }

    /// One of the row's values as shown: milliseconds for a latency.
    pub fn show(&self, x: f64) -> String {
        if self.is_latency() {
            format!("{:.1} ms", x * 1e3)
        } else {
            format!("{x}")
        }
    }

    /// What the verdict rests on: the bootstrap interval of the change, or
    /// the rank test's p-value and the median shift over runs.
    pub fn evidence(&self) -> String {
        match (self.interval, self.p_value) {
            (Some((lo, hi)), _) => format!("{:+.0}%..{:+.0}%", lo * 100.0, hi * 100.0),
            (None, Some(p)) => match self.change {
                Some(c) => format!("p={p:.3} {:+.0}%", c * 100.0),
                None => format!("p={p:.3}"),
            },
            (None, None) => String::new(),
        }
    }

    /// Whether this row fails the comparison.
    pub fn fails(&self) -> bool {
        self.counted && self.verdict == Verdict::Worse
    }
}

/// How `compare` decides.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Test {
    /// A relative change within this (0.1 = 10%) is `same`.
    pub threshold: f64,
    /// The confidence of the intervals (0.95).
    pub confidence: f64,
    /// The bootstrap's seed (fixed: a comparison replays).
    pub seed: u64,
}

impl Default for Test {
    fn default() -> Self {
        Self {
            threshold: 0.1,
            confidence: 0.95,
            seed: 0,
        }
    }
}

/// The latencies of a report, by name.
pub fn latencies(m: &Measurements) -> [(&'static str, &Percentiles); 6] {
    [
        ("update_latency", &m.update_latency),
        ("convergence_latency", &m.convergence_latency),
        ("fanout_completion", &m.fanout_completion),
        ("kubernetes_leg", &m.kubernetes_leg),
        ("destination_leg", &m.destination_leg),
        ("profile_update_latency", &m.profile_update_latency),
    ]
}

/// Every row: each latency both reports have samples of, at every
/// percentile, then the counts.
pub fn compare(base: &Measurements, new: &Measurements, test: &Test) -> Vec<Row> {
    let mut rows = Vec::new();
    for ((name, b), (_, n)) in latencies(base).into_iter().zip(latencies(new)) {
        if b.count == 0 || n.count == 0 {
            continue;
        }
        rows.extend(compare_latency(name, b, n, test));
    }
    let counts = counts(base)
        .into_iter()
        .zip(counts(new))
        .map(|((name, b), (_, n))| (name, b, n));
    for (name, b, n) in counts {
        let (b, n) = (b as f64, n as f64);
        let verdict = if n > b * (1.0 + test.threshold) {
            Verdict::Worse
        } else if n < b * (1.0 - test.threshold) {
            Verdict::Better
        } else {
            Verdict::Same
        };
        rows.push(Row {
            metric: name.to_string(),
            base: b,
            new: n,
            interval: None,
            verdict,
            counted: true,
            note: None,
            p_value: None,
            change: None,
            runs: None,
        });
    }
    rows
}

fn point(p: &Percentiles, stat: &str) -> f64 {
    match stat {
        "p50" => p.p50,
        "p95" => p.p95,
        "p99" => p.p99,
        "p999" => p.p999,
        _ => p.max,
    }
}

/// The rows of one latency: bootstrap intervals when both reports carry
/// the histogram, the threshold on the two numbers otherwise.
fn compare_latency(name: &str, b: &Percentiles, n: &Percentiles, test: &Test) -> Vec<Row> {
    let intervals = match (&b.histogram, &n.histogram) {
        (Some(hb), Some(hn)) => Some(bootstrap(&hb.0, &hn.0, test)),
        _ => None,
    };
    STATS
        .iter()
        .enumerate()
        .map(|(i, (stat, _))| {
            let (bv, nv) = (point(b, stat), point(n, stat));
            let tested = *stat != "max" && intervals.is_some();
            let interval = intervals.as_ref().filter(|_| tested).map(|iv| iv[i]);
            let verdict = match interval {
                Some((lo, _)) if lo > test.threshold => Verdict::Worse,
                Some((_, hi)) if hi < -test.threshold => Verdict::Better,
                Some(_) => Verdict::Same,
                None => by_threshold(bv, nv, test.threshold),
            };
            let note = match (*stat, intervals.is_some()) {
                (_, true) if tested => None,
                ("max", _) => Some("a single sample: not tested"),
                _ => Some("no histogram in a report: numbers compared, not tested"),
            };
            Row {
                metric: format!("{name}.{stat}"),
                base: bv,
                new: nv,
                interval,
                verdict,
                counted: tested,
                note,
                p_value: None,
                change: None,
                runs: None,
            }
        })
        .collect()
}

fn by_threshold(base: f64, new: f64, threshold: f64) -> Verdict {
    if base <= 0.0 {
        return if new > 0.0 {
            Verdict::Worse
        } else {
            Verdict::Same
        };
    }
    let change = new / base - 1.0;
    if change > threshold {
        Verdict::Worse
    } else if change < -threshold {
        Verdict::Better
    } else {
        Verdict::Same
    }
}

/// The recorded values of a histogram (seconds, each bucket's midpoint)
/// and their counts.
fn buckets(h: &Hdr<u64>) -> Vec<(f64, u64)> {
    h.iter_recorded()
        .map(|v| {
            let us = h.median_equivalent(v.value_iterated_to());
            (us as f64 / 1e6, v.count_at_value())
        })
        .collect()
}

/// One resample of `buckets` (a multinomial draw of the same total), and
/// its value at each of [`STATS`]' quantiles except max.
fn resample(buckets: &[(f64, u64)], total: u64, rng: &mut StdRng) -> [f64; 4] {
    let mut left = total;
    let mut mass = total;
    let mut counts = Vec::with_capacity(buckets.len());
    for (_, c) in buckets {
        let drawn = if left == 0 || mass == 0 {
            0
        } else if *c >= mass {
            left
        } else {
            let p = *c as f64 / mass as f64;
            Binomial::new(left, p.clamp(0.0, 1.0))
                .expect("a probability")
                .sample(rng)
        };
        counts.push(drawn);
        left -= drawn;
        mass -= c;
    }
    let mut out = [0.0; 4];
    for (k, (_, q)) in STATS[..4].iter().enumerate() {
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for ((v, _), c) in buckets.iter().zip(&counts) {
            seen += c;
            if seen >= rank {
                out[k] = *v;
                break;
            }
        }
    }
    out
}

/// For each of [`STATS`]' quantiles but max, the `confidence` interval of
/// `new / base - 1` over [`RESAMPLES`] paired resamples (max: a zero-width
/// placeholder, not used).
fn bootstrap(base: &Hdr<u64>, new: &Hdr<u64>, test: &Test) -> [(f64, f64); 5] {
    let (bb, nb) = (buckets(base), buckets(new));
    let mut rng = StdRng::seed_from_u64(test.seed);
    let mut changes: [Vec<f64>; 4] = Default::default();
    for _ in 0..RESAMPLES {
        let b = resample(&bb, base.len(), &mut rng);
        let n = resample(&nb, new.len(), &mut rng);
        for k in 0..4 {
            if b[k] > 0.0 {
                changes[k].push(n[k] / b[k] - 1.0);
            }
        }
    }
    let tail = (1.0 - test.confidence) / 2.0;
    let mut out = [(0.0, 0.0); 5];
    for (k, c) in changes.iter_mut().enumerate() {
        if c.is_empty() {
            continue;
        }
        c.sort_by(f64::total_cmp);
        let at = |q: f64| c[((q * (c.len() - 1) as f64).round() as usize).min(c.len() - 1)];
        out[k] = (at(tail), at(1.0 - tail));
    }
    out
}

/// Every figure of a run as `compare` names them: each percentile of every
/// latency with samples, then the counts.
pub fn figures(m: &Measurements) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (name, p) in latencies(m) {
        if p.count == 0 {
            continue;
        }
        for (stat, _) in STATS {
            out.insert(format!("{name}.{stat}"), point(p, stat));
        }
    }
    for (name, n) in counts(m) {
        out.insert(name.to_string(), n as f64);
    }
    out
}

/// The counts compared, by name.
fn counts(m: &Measurements) -> [(&'static str, u64); 5] {
    [
        ("errors", m.errors),
        ("resets", m.streams_reset),
        ("stale_streams", m.stale_streams.max(0) as u64),
        ("unconverged_streams", m.streams_unconverged),
        ("profile_stale_streams", m.profile_stale_streams),
    ]
}

/// The order rows are shown in: latencies (as [`latencies`] lists them, each
/// at every one of [`STATS`]), then the counts.
fn figure_order() -> Vec<String> {
    let m = Measurements::default();
    let mut names: Vec<String> = latencies(&m)
        .into_iter()
        .flat_map(|(name, _)| STATS.iter().map(move |(stat, _)| format!("{name}.{stat}")))
        .collect();
    names.extend(counts(&m).into_iter().map(|(name, _)| name.to_string()));
    names
}

/// The fewest runs per side with which the rank test can find a change at
/// `confidence`: the least `n` whose most extreme split of `2n` runs (every
/// new run above every base run) has a two-sided p-value below `1 - confidence`.
pub fn min_runs(confidence: f64) -> usize {
    let alpha = 1.0 - confidence;
    (2..MAX_RUNS_NEEDED)
        .find(|&n| {
            // C(2n, n) arrangements, two of them as extreme as the split.
            let arrangements: f64 = (1..=n).map(|i| (n + i) as f64 / i as f64).product();
            2.0 / arrangements < alpha
        })
        .unwrap_or(MAX_RUNS_NEEDED)
}

/// Past this, [`min_runs`] stops looking (a confidence of 1 - 1e-10).
const MAX_RUNS_NEEDED: usize = 20;

/// The two-sided p-value of the Wilcoxon rank-sum (Mann-Whitney U) test
/// of `a` against `b`, exact, ties included: the share of all ways to pick
/// `a.len()` of the pooled values whose rank sum (tied values share their
/// mean rank) is at least as far from its mean as `a`'s. (statrs 0.19.1's
/// exact test answers 1.0 for two samples of 5 that do not overlap, so the
/// distribution is counted here.) At most [`MAX_RUNS`] a side.
pub fn rank_sum_p(a: &[f64], b: &[f64]) -> f64 {
    let mut pooled: Vec<(f64, bool)> = a
        .iter()
        .map(|v| (*v, true))
        .chain(b.iter().map(|v| (*v, false)))
        .collect();
    pooled.sort_by(|x, y| x.0.total_cmp(&y.0));
    // Twice each value's mean rank: an integer even with ties.
    let n = pooled.len();
    let mut doubled = vec![0usize; n];
    let mut i = 0;
    while i < n {
        let j = (i..n).find(|&j| pooled[j].0 != pooled[i].0).unwrap_or(n);
        // Ranks i+1..=j share (i + 1 + j) / 2.
        doubled[i..j].fill(i + 1 + j);
        i = j;
    }
    let k = a.len();
    let observed: usize = (0..n).filter(|&i| pooled[i].1).map(|i| doubled[i]).sum();
    let most: usize = doubled.iter().sum();
    // ways[j][s]: subsets of j values whose doubled ranks sum to s.
    let mut ways = vec![vec![0f64; most + 1]; k + 1];
    ways[0][0] = 1.0;
    for (seen, r) in doubled.iter().enumerate() {
        for j in (1..=k.min(seen + 1)).rev() {
            let (below, at) = ways.split_at_mut(j);
            for s in (*r..=most).rev() {
                at[0][s] += below[j - 1][s - r];
            }
        }
    }
    let total: f64 = ways[k].iter().sum();
    let mean = (k * (n + 1)) as f64;
    let distance = (observed as f64 - mean).abs();
    let extreme: f64 = ways[k]
        .iter()
        .enumerate()
        .filter(|(s, _)| (*s as f64 - mean).abs() >= distance - 1e-9)
        .map(|(_, w)| w)
        .sum();
    (extreme / total).min(1.0)
}

/// The most runs a side the rank test takes (`run --repeat` allows no more).
pub const MAX_RUNS: usize = 30;

/// The median of `xs` (not empty): the mean of the middle two when even.
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The Hodges-Lehmann shift of `new` from `base`: the median of every
/// difference between a new run's value and a base run's.
fn shift(base: &[f64], new: &[f64]) -> f64 {
    let diffs: Vec<f64> = new
        .iter()
        .flat_map(|n| base.iter().map(move |b| n - b))
        .collect();
    median(&diffs)
}

/// Rows over repeated runs (`run --repeat`): for every figure all runs of
/// both sides have, the medians, and a Mann-Whitney U test over the runs'
/// values. A figure is worse (better) when the test finds the two sets
/// differ at `test.confidence` and the median shift of new from base is
/// above (below) `test.threshold` of base's median; with fewer runs than
/// [`min_runs`] on a side, it is `too few runs`.
pub fn compare_runs(
    base: &[BTreeMap<String, f64>],
    new: &[BTreeMap<String, f64>],
    test: &Test,
) -> Vec<Row> {
    let needed = min_runs(test.confidence);
    let enough = base.len() >= needed && new.len() >= needed;
    let alpha = 1.0 - test.confidence;
    let values = |runs: &[BTreeMap<String, f64>], name: &str| -> Option<Vec<f64>> {
        runs.iter().map(|r| r.get(name).copied()).collect()
    };
    let mut rows = Vec::new();
    for name in figure_order() {
        let (Some(b), Some(n)) = (values(base, &name), values(new, &name)) else {
            continue;
        };
        if b.is_empty() || n.is_empty() || b.len() > MAX_RUNS || n.len() > MAX_RUNS {
            continue;
        }
        let (bm, nm) = (median(&b), median(&n));
        let runs = Some([b.len(), n.len()]);
        if !enough {
            rows.push(Row {
                metric: name,
                base: bm,
                new: nm,
                interval: None,
                verdict: Verdict::TooFewRuns,
                counted: false,
                note: None,
                p_value: None,
                change: None,
                runs,
            });
            continue;
        }
        let all_equal = b.iter().chain(&n).all(|v| *v == b[0]);
        let p = if all_equal { 1.0 } else { rank_sum_p(&b, &n) };
        let moved = shift(&b, &n);
        let change = if bm > 0.0 {
            moved / bm
        } else if moved > 0.0 {
            f64::INFINITY
        } else if moved < 0.0 {
            f64::NEG_INFINITY
        } else {
            0.0
        };
        let verdict = if p >= alpha {
            Verdict::Same
        } else if change > test.threshold {
            Verdict::Worse
        } else if change < -test.threshold {
            Verdict::Better
        } else {
            Verdict::Same
        };
        rows.push(Row {
            metric: name,
            base: bm,
            new: nm,
            interval: None,
            verdict,
            counted: true,
            note: None,
            p_value: Some(p),
            change: change.is_finite().then_some(change),
            runs,
        });
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::HdrBlob;

    /// Percentiles of `n` samples spread evenly over `lo..hi` milliseconds.
    fn spread(n: u64, lo: f64, hi: f64) -> Percentiles {
        let mut h = crate::latency::mk_hdr();
        for i in 0..n {
            let ms = lo + (hi - lo) * i as f64 / n as f64;
            h.record((ms * 1e3) as u64).unwrap();
        }
        let mut p = Percentiles::from_hdr(&h);
        p.histogram = Some(HdrBlob(h));
        p
    }

    fn report(update: Percentiles) -> Measurements {
        Measurements {
            update_latency: update,
            ..Default::default()
        }
    }

    #[test]
    fn the_same_distribution_compares_same() {
        let rows = compare(
            &report(spread(2000, 10.0, 20.0)),
            &report(spread(1900, 10.0, 20.0)),
            &Test::default(),
        );
        let latency: Vec<_> = rows
            .iter()
            .filter(|r| r.metric.starts_with("update"))
            .collect();
        assert_eq!(latency.len(), 5);
        assert!(
            latency.iter().all(|r| r.verdict == Verdict::Same),
            "{latency:?}"
        );
        assert!(
            latency[..4]
                .iter()
                .all(|r| r.counted && r.interval.is_some())
        );
        assert!(!latency[4].counted, "max is not tested");
        assert!(rows.iter().all(|r| !r.fails()));
        // The interval of a median of 2,000 samples is a few percent wide.
        let (lo, hi) = latency[0].interval.unwrap();
        assert!(lo < 0.0 && hi > 0.0 && hi - lo < 0.05, "{lo} {hi}");
    }

    #[test]
    fn a_doubled_latency_is_worse_by_about_100_percent() {
        let rows = compare(
            &report(spread(500, 10.0, 20.0)),
            &report(spread(500, 20.0, 40.0)),
            &Test::default(),
        );
        let p50 = &rows[0];
        assert_eq!(p50.metric, "update_latency.p50");
        assert_eq!(p50.verdict, Verdict::Worse);
        assert!(p50.fails());
        let (lo, hi) = p50.interval.unwrap();
        assert!(lo > 0.8 && hi < 1.2, "{lo} {hi}");
        // And the other way round, better.
        let rows = compare(
            &report(spread(500, 20.0, 40.0)),
            &report(spread(500, 10.0, 20.0)),
            &Test::default(),
        );
        assert_eq!(rows[0].verdict, Verdict::Better);
    }

    #[test]
    fn a_small_shift_within_the_threshold_is_same_and_few_samples_are_not_confident() {
        let rows = compare(
            &report(spread(5000, 10.0, 20.0)),
            &report(spread(5000, 10.5, 21.0)),
            &Test::default(),
        );
        assert_eq!(rows[0].verdict, Verdict::Same, "{:?}", rows[0]);
        // 15% slower, but from 8 samples: not confident enough to say worse
        // at 99%... while 5,000 samples are.
        let strict = Test {
            confidence: 0.99,
            ..Test::default()
        };
        let few = compare(
            &report(spread(8, 10.0, 20.0)),
            &report(spread(8, 11.5, 23.0)),
            &strict,
        );
        assert_eq!(few[0].verdict, Verdict::Same, "{:?}", few[0]);
        let many = compare(
            &report(spread(5000, 10.0, 20.0)),
            &report(spread(5000, 11.5, 23.0)),
            &strict,
        );
        assert_eq!(many[0].verdict, Verdict::Worse, "{:?}", many[0]);
    }

    #[test]
    fn without_histograms_numbers_are_compared_but_not_counted() {
        let mut b = spread(100, 10.0, 20.0);
        let mut n = spread(100, 20.0, 40.0);
        b.histogram = None;
        n.histogram = None;
        let rows = compare(&report(b), &report(n), &Test::default());
        assert_eq!(rows[0].verdict, Verdict::Worse);
        assert!(!rows[0].counted && rows[0].note.is_some());
        assert!(!rows.iter().any(Row::fails));
    }

    #[test]
    fn profile_update_latency_is_compared_like_the_others() {
        let base = Measurements {
            profile_update_latency: spread(100, 10.0, 20.0),
            ..Default::default()
        };
        let new = Measurements {
            profile_update_latency: spread(100, 20.0, 40.0),
            profile_stale_streams: 3,
            ..Default::default()
        };
        let rows = compare(&base, &new, &Test::default());
        let worse: Vec<_> = rows
            .iter()
            .filter(|r| r.fails())
            .map(|r| r.metric.as_str())
            .collect();
        assert!(worse.contains(&"profile_stale_streams"), "{worse:?}");
        assert!(
            worse
                .iter()
                .any(|m| m.starts_with("profile_update_latency")),
            "{worse:?}"
        );
    }

    #[test]
    fn counts_are_worse_when_they_grow() {
        let base = Measurements {
            errors: 0,
            streams_reset: 10,
            ..Default::default()
        };
        let new = Measurements {
            errors: 1,
            streams_reset: 10,
            ..Default::default()
        };
        let rows = compare(&base, &new, &Test::default());
        let get = |m: &str| rows.iter().find(|r| r.metric == m).unwrap().verdict;
        assert_eq!(get("errors"), Verdict::Worse);
        assert_eq!(get("resets"), Verdict::Same);
        assert_eq!(get("stale_streams"), Verdict::Same);
        assert_eq!(get("profile_stale_streams"), Verdict::Same);
        // No latency rows without samples.
        assert_eq!(rows.len(), 5);
    }

    /// `n` runs whose update latency p50 is `ms` milliseconds times 1,
    /// 1.01, 1.02...: spread a little, as runs are.
    fn runs(n: usize, ms: f64) -> Vec<BTreeMap<String, f64>> {
        (0..n)
            .map(|i| {
                let v = ms / 1e3 * (1.0 + 0.01 * i as f64);
                BTreeMap::from([
                    ("update_latency.p50".to_string(), v),
                    ("errors".to_string(), 0.0),
                ])
            })
            .collect()
    }

    #[test]
    fn rank_sum_p_values_are_exact_with_and_without_ties() {
        let v = |xs: &[i32]| xs.iter().map(|x| f64::from(*x)).collect::<Vec<_>>();
        // No overlap: 2 of C(10,5) = 252 arrangements are as extreme.
        let p = rank_sum_p(&v(&[1, 2, 3, 4, 5]), &v(&[6, 7, 8, 9, 10]));
        assert!((p - 2.0 / 252.0).abs() < 1e-12, "{p}");
        assert_eq!(p, rank_sum_p(&v(&[6, 7, 8, 9, 10]), &v(&[1, 2, 3, 4, 5])));
        // Interleaved: nothing to see.
        assert!((rank_sum_p(&v(&[1, 3, 5, 7]), &v(&[2, 4, 6, 8])) - 1.0).abs() < 0.35);
        // 3 a side, apart: 2 of 20.
        let p = rank_sum_p(&v(&[1, 2, 3]), &v(&[4, 5, 6]));
        assert!((p - 0.1).abs() < 1e-12, "{p}");
        // Ties: {1,1} against {1,2}: midranks 2,2,2,4; a's doubled sum 8 of
        // the 6 ways (8,8,8,12,12,12 for pairs with the 2 or not): mean 10,
        // every pair is 2 away, so p = 1.
        assert!((rank_sum_p(&v(&[1, 1]), &v(&[1, 2])) - 1.0).abs() < 1e-12);
        // Unequal sizes: 4 against 6 apart, 2 of C(10,4) = 210.
        let p = rank_sum_p(&v(&[1, 2, 3, 4]), &v(&[5, 6, 7, 8, 9, 10]));
        assert!((p - 2.0 / 210.0).abs() < 1e-12, "{p}");
        // The largest case runs at once: 30 a side.
        let a: Vec<f64> = (0..30).map(f64::from).collect();
        let b: Vec<f64> = (15..45).map(f64::from).collect();
        let p = rank_sum_p(&a, &b);
        assert!(p > 0.0 && p < 1e-3, "{p}");
    }

    #[test]
    fn the_rank_test_needs_four_runs_a_side_at_95_percent() {
        // 2 / C(6,3) = 0.1, 2 / C(8,4) = 0.029, 2 / C(10,5) = 0.008.
        assert_eq!(min_runs(0.95), 4);
        assert_eq!(min_runs(0.90), 4);
        assert_eq!(min_runs(0.99), 5);
        let rows = compare_runs(&runs(3, 10.0), &runs(3, 20.0), &Test::default());
        assert_eq!(rows.len(), 2, "{rows:?}");
        for r in &rows {
            assert_eq!(r.verdict, Verdict::TooFewRuns, "{r:?}");
            assert!(!r.fails() && !r.counted && r.p_value.is_none());
            assert_eq!(r.runs, Some([3, 3]));
        }
        assert_eq!(Verdict::TooFewRuns.as_str(), "too few runs");
    }

    #[test]
    fn runs_that_moved_past_the_threshold_are_worse_or_better() {
        let t = Test::default();
        // Every new run 30% slower: the most extreme split, p = 2/C(10,5).
        let rows = compare_runs(&runs(5, 10.0), &runs(5, 13.0), &t);
        let p50 = &rows[0];
        assert_eq!(p50.metric, "update_latency.p50");
        assert_eq!(p50.verdict, Verdict::Worse, "{p50:?}");
        assert!(p50.fails());
        assert!((p50.p_value.unwrap() - 2.0 / 252.0).abs() < 1e-9, "{p50:?}");
        let change = p50.change.unwrap();
        assert!((change - 0.30).abs() < 0.02, "{change}");
        assert!((p50.base - 0.0102).abs() < 1e-9 && (p50.new - 0.01326).abs() < 1e-9);
        // Zero errors on both sides: the same, with nothing to test.
        assert_eq!(rows[1].metric, "errors");
        assert_eq!(rows[1].verdict, Verdict::Same);
        assert_eq!(rows[1].p_value, Some(1.0));
        // Swapped: better.
        let rows = compare_runs(&runs(5, 13.0), &runs(5, 10.0), &t);
        assert_eq!(rows[0].verdict, Verdict::Better, "{:?}", rows[0]);
        // Significant but within the threshold (+5%): the same.
        let rows = compare_runs(&runs(5, 10.0), &runs(5, 10.5), &t);
        assert!(rows[0].p_value.unwrap() < 0.05, "{:?}", rows[0]);
        assert_eq!(rows[0].verdict, Verdict::Same, "{:?}", rows[0]);
        // Past the threshold but the runs overlap (not significant): the same.
        let mut noisy = runs(5, 10.0);
        noisy[0].insert("update_latency.p50".into(), 0.030);
        let mut slow = runs(5, 12.0);
        slow[0].insert("update_latency.p50".into(), 0.005);
        slow[1].insert("update_latency.p50".into(), 0.006);
        let rows = compare_runs(&noisy, &slow, &t);
        assert!(rows[0].p_value.unwrap() >= 0.05, "{:?}", rows[0]);
        assert_eq!(rows[0].verdict, Verdict::Same, "{:?}", rows[0]);
    }

    #[test]
    fn a_runs_figures_are_named_as_compare_names_its_rows() {
        let m = report(spread(100, 10.0, 20.0));
        let names: std::collections::BTreeSet<String> = figures(&m).into_keys().collect();
        let rows: std::collections::BTreeSet<String> = compare(&m, &m, &Test::default())
            .into_iter()
            .map(|r| r.metric)
            .collect();
        assert_eq!(names, rows);
        assert!(names.contains("update_latency.max") && names.contains("errors"));
        // Rows over runs keep compare's order: latencies, then counts.
        let one = vec![figures(&m); 4];
        let order: Vec<String> = compare_runs(&one, &one, &Test::default())
            .into_iter()
            .map(|r| r.metric)
            .collect();
        let single: Vec<String> = compare(&m, &m, &Test::default())
            .into_iter()
            .map(|r| r.metric)
            .collect();
        assert_eq!(order, single);
    }
}
