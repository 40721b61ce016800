//! The verdicts of `compare`, without I/O: bootstrap confidence intervals of
//! the relative change of each latency percentile, resampled from the two
//! reports' HDR histograms, and thresholds for the counts. (A module of its
//! own: `compare`, the pictures and the red-line search all use it.)

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
pub fn parse_fraction(s: &str) -> Result<f64, String> {
    let (n, scale) = match s.trim().strip_suffix('%') {
        Some(p) => (p.trim(), 100.0),
        None => (s.trim(), 1.0),
    };
    let v = n
        .parse::<f64>()
        .map_err(|_| format!("'{s}' is not a fraction: give e.g. 10% or 0.1"))?
        / scale;
    if !(0.0..=10.0).contains(&v) {
        return Err(format!("'{s}' is out of range: give 0% to 1000%"));
    }
    Ok(v)
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
}

impl Verdict {
    /// As printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Better => "better",
            Verdict::Worse => "worse",
            Verdict::Same => "same",
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
    let counts = [
        ("errors", base.errors, new.errors),
        ("resets", base.streams_reset, new.streams_reset),
        (
            "stale_streams",
            base.stale_streams.max(0) as u64,
            new.stale_streams.max(0) as u64,
        ),
        (
            "unconverged_streams",
            base.streams_unconverged,
            new.streams_unconverged,
        ),
        (
            "profile_stale_streams",
            base.profile_stale_streams,
            new.profile_stale_streams,
        ),
    ];
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
}
