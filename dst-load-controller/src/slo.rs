//! Pass/fail gates: `--slo` expressions such as `update_latency.p95<500ms`,
//! `fanout_completion.max<10s`, `stale_streams==0` or `errors==0`, judged
//! against a run's measurements.

use std::{fmt, str::FromStr, time::Duration};

use serde::Serialize;

use crate::latency::Percentiles;

/// Exit status when an SLO failed.
pub const EXIT_SLO_FAILED: u8 = 3;

/// A latency whose percentiles can be gated.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Latency {
    /// Change to first update reflecting it.
    UpdateLatency,
    /// Change to a stream's set equal to the truth.
    ConvergenceLatency,
    /// Change to the last stream converged.
    FanoutCompletion,
    /// Scale to EndpointSlice seen.
    KubernetesLeg,
    /// EndpointSlice seen to stream converged.
    DestinationLeg,
    /// ServiceProfile change to a `GetProfile` stream showing it.
    ProfileUpdateLatency,
}

/// A count that can be gated.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Count {
    /// Streams stale at the end.
    StaleStreams,
    /// Errors the client saw.
    Errors,
    /// Streams re-opened (created beyond one per stream).
    Resets,
    /// Streams not converged to the final truth at the end.
    UnconvergedStreams,
    /// Convergences that could not be timed: a stream lagged behind a
    /// service that changed back before the stream saw the change.
    UntimedConvergences,
    /// `GetProfile` streams stale at the end (`--target-pods` with the
    /// ground truth).
    ProfileStaleStreams,
}

/// What an SLO measures.
#[derive(Copy, Clone, Debug, PartialEq, Serialize)]
pub enum Subject {
    /// A percentile (0.5, 0.95, 0.99, 0.999) or the max (1.0) of a latency.
    Latency(Latency, Stat),
    /// A count.
    Count(Count),
}

/// A percentile or the maximum.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stat {
    /// Median.
    P50,
    /// 95th percentile.
    P95,
    /// 99th percentile.
    P99,
    /// 99.9th percentile.
    P999,
    /// Largest sample.
    Max,
}

/// A comparison.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `>=`
    Ge,
    /// `>`
    Gt,
}

impl Op {
    fn holds(self, measured: f64, bound: f64) -> bool {
        match self {
            Op::Lt => measured < bound,
            Op::Le => measured <= bound,
            Op::Eq => measured == bound,
            Op::Ge => measured >= bound,
            Op::Gt => measured > bound,
        }
    }
}

/// One gate, as written.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Slo {
    /// The expression as given.
    pub expr: String,
    /// What it measures.
    #[serde(skip)]
    pub subject: Subject,
    /// The comparison.
    #[serde(skip)]
    pub op: Op,
    /// The bound: seconds for latencies, a number for counts.
    #[serde(skip)]
    pub bound: f64,
}

const HINT: &str = "expected e.g. update_latency.p95<500ms, fanout_completion.max<10s, stale_streams==0 or errors==0; \
latencies: update_latency, convergence_latency, fanout_completion, kubernetes_leg, destination_leg, profile_update_latency with .p50/.p95/.p99/.p999/.max; \
counts: stale_streams, errors, resets, unconverged_streams, untimed_convergences, profile_stale_streams";

/// Why an SLO expression was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid SLO '{slo}': {problem}; {HINT}")]
pub struct SloError {
    /// The expression as given.
    pub slo: String,
    /// What is wrong with it.
    pub problem: SloProblem,
}

/// What is wrong with an SLO expression.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SloProblem {
    /// No operator.
    #[error("no comparison")]
    NoComparison,
    /// A latency this tool does not measure.
    #[error("unknown latency '{0}'")]
    Latency(String),
    /// A statistic of none of the percentiles.
    #[error("unknown statistic '{0}'")]
    Statistic(String),
    /// A latency bound that is no duration.
    #[error("'{value}' is not a duration ({why})")]
    Duration {
        /// As given.
        value: String,
        /// The duration parser's words.
        why: String,
    },
    /// A count this tool does not measure.
    #[error("unknown measure '{0}'")]
    Measure(String),
    /// A count bound that is no count.
    #[error("'{0}' is not a count")]
    Count(String),
}

impl FromStr for Slo {
    type Err = SloError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let expr: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        let (pos, op, len) = ["<=", ">=", "==", "<", ">"]
            .iter()
            .filter_map(|o| expr.find(o).map(|p| (p, *o, o.len())))
            .min_by_key(|(p, o, _)| (*p, std::cmp::Reverse(o.len())))
            .ok_or_else(|| SloError {
                slo: s.to_string(),
                problem: SloProblem::NoComparison,
            })?;
        let op = match op {
            "<=" => Op::Le,
            ">=" => Op::Ge,
            "==" => Op::Eq,
            "<" => Op::Lt,
            _ => Op::Gt,
        };
        let (lhs, rhs) = (&expr[..pos], &expr[pos + len..]);
        let bad = |problem| SloError {
            slo: s.to_string(),
            problem,
        };
        let (subject, bound) = match lhs.split_once('.') {
            Some((metric, stat)) => {
                let latency = match metric {
                    "update_latency" => Latency::UpdateLatency,
                    "convergence_latency" => Latency::ConvergenceLatency,
                    "fanout_completion" => Latency::FanoutCompletion,
                    "kubernetes_leg" => Latency::KubernetesLeg,
                    "destination_leg" => Latency::DestinationLeg,
                    "profile_update_latency" => Latency::ProfileUpdateLatency,
                    _ => return Err(bad(SloProblem::Latency(metric.to_string()))),
                };
                let stat = match stat {
                    "p50" => Stat::P50,
                    "p95" => Stat::P95,
                    "p99" => Stat::P99,
                    "p999" => Stat::P999,
                    "max" => Stat::Max,
                    _ => return Err(bad(SloProblem::Statistic(stat.to_string()))),
                };
                let d: Duration = humantime::parse_duration(rhs).map_err(|e| {
                    bad(SloProblem::Duration {
                        value: rhs.to_string(),
                        why: e.to_string(),
                    })
                })?;
                (Subject::Latency(latency, stat), d.as_secs_f64())
            }
            None => {
                let count = match lhs {
                    "stale_streams" => Count::StaleStreams,
                    "errors" => Count::Errors,
                    "resets" => Count::Resets,
                    "unconverged_streams" => Count::UnconvergedStreams,
                    "untimed_convergences" => Count::UntimedConvergences,
                    "profile_stale_streams" => Count::ProfileStaleStreams,
                    _ => return Err(bad(SloProblem::Measure(lhs.to_string()))),
                };
                let n: f64 = rhs
                    .parse::<u64>()
                    .map_err(|_| bad(SloProblem::Count(rhs.to_string())))?
                    as f64;
                (Subject::Count(count), n)
            }
        };
        Ok(Self {
            expr,
            subject,
            op,
            bound,
        })
    }
}

impl fmt::Display for Slo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}

/// What a run measured, for judging.
pub trait Measured {
    /// Every sample's percentiles of a latency.
    fn latency(&self, l: Latency) -> &Percentiles;
    /// A count.
    fn count(&self, c: Count) -> u64;
}

/// An SLO's outcome.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    /// The expression.
    pub slo: String,
    /// The measured value (seconds or a count); None without samples.
    pub measured: Option<f64>,
    /// Samples behind a latency (None for counts).
    pub samples: Option<u64>,
    /// Whether it held.
    pub pass: bool,
    /// Why it failed, when it did.
    pub reason: Option<String>,
}

/// Judges `slos` against `m`. A latency with fewer than `min_samples`
/// samples fails: a run that measured nothing must not pass.
pub fn judge(slos: &[Slo], m: &impl Measured, min_samples: u64) -> Vec<Verdict> {
    slos.iter()
        .map(|slo| match slo.subject {
            Subject::Latency(l, stat) => {
                let p = m.latency(l);
                if p.count < min_samples.max(1) {
                    return Verdict {
                        slo: slo.expr.clone(),
                        measured: None,
                        samples: Some(p.count),
                        pass: false,
                        reason: Some(format!(
                            "too few samples to judge: {} (at least {} needed)",
                            p.count,
                            min_samples.max(1)
                        )),
                    };
                }
                let v = match stat {
                    Stat::P50 => p.p50,
                    Stat::P95 => p.p95,
                    Stat::P99 => p.p99,
                    Stat::P999 => p.p999,
                    Stat::Max => p.max,
                };
                let pass = slo.op.holds(v, slo.bound);
                Verdict {
                    slo: slo.expr.clone(),
                    measured: Some(v),
                    samples: Some(p.count),
                    pass,
                    reason: (!pass).then(|| format!("measured {:.1} ms", v * 1e3)),
                }
            }
            Subject::Count(c) => {
                let v = m.count(c) as f64;
                let pass = slo.op.holds(v, slo.bound);
                Verdict {
                    slo: slo.expr.clone(),
                    measured: Some(v),
                    samples: None,
                    pass,
                    reason: (!pass).then(|| format!("measured {v}")),
                }
            }
        })
        .collect()
}

/// JUnit XML: one test case per SLO.
pub fn junit(suite: &str, verdicts: &[Verdict]) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let failures = verdicts.iter().filter(|v| !v.pass).count();
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\">\n",
        esc(suite),
        verdicts.len()
    );
    for v in verdicts {
        x += &format!(
            "  <testcase classname=\"{}\" name=\"{}\"",
            esc(suite),
            esc(&v.slo)
        );
        match &v.reason {
            Some(r) if !v.pass => {
                x += &format!(">\n    <failure message=\"{}\"/>\n  </testcase>\n", esc(r))
            }
            _ => x += "/>\n",
        }
    }
    x + "</testsuite>\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    struct M(Percentiles, u64);

    impl Measured for M {
        fn latency(&self, _: Latency) -> &Percentiles {
            &self.0
        }
        fn count(&self, _: Count) -> u64 {
            self.1
        }
    }

    fn mk_p(count: u64, p95: f64) -> Percentiles {
        Percentiles {
            count,
            p50: p95 / 2.0,
            p95,
            p99: p95,
            p999: p95,
            max: p95,
            histogram: None,
        }
    }

    #[test]
    fn parses_the_documented_forms() {
        let s: Slo = "update_latency.p95 < 500ms".parse().unwrap();
        assert_eq!(
            (s.subject, s.op, s.bound),
            (
                Subject::Latency(Latency::UpdateLatency, Stat::P95),
                Op::Lt,
                0.5
            )
        );
        let s: Slo = "fanout_completion.max<10s".parse().unwrap();
        assert_eq!(s.bound, 10.0);
        let s: Slo = "stale_streams==0".parse().unwrap();
        assert_eq!(
            (s.subject, s.op, s.bound),
            (Subject::Count(Count::StaleStreams), Op::Eq, 0.0)
        );
        let s: Slo = "errors<=3".parse().unwrap();
        assert_eq!(s.op, Op::Le);
        for bad in [
            "update_latency.p95",
            "latency.p95<1s",
            "update_latency.p42<1s",
            "update_latency.p95<fast",
            "errors==x",
            "bogus==0",
        ] {
            let e = bad.parse::<Slo>().unwrap_err().to_string();
            assert!(e.contains("expected e.g."), "{bad}: {e}");
        }
    }

    #[test]
    fn judges_pass_fail_and_too_few_samples() {
        let slos: Vec<Slo> = ["update_latency.p95<500ms", "errors==0"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let v = judge(&slos, &M(mk_p(100, 0.2), 0), 10);
        assert!(v.iter().all(|v| v.pass), "{v:?}");
        let v = judge(&slos, &M(mk_p(100, 0.7), 2), 10);
        assert!(v.iter().all(|v| !v.pass));
        assert_eq!(v[0].reason.as_deref(), Some("measured 700.0 ms"));
        // No samples: fails, whatever the bound.
        let v = judge(&slos[..1], &M(mk_p(0, 0.0), 0), 1);
        assert!(!v[0].pass && v[0].reason.as_ref().unwrap().contains("too few samples"));
    }

    #[test]
    fn junit_lists_every_slo_and_its_failures() {
        let v = vec![
            Verdict {
                slo: "errors==0".into(),
                measured: Some(0.0),
                samples: None,
                pass: true,
                reason: None,
            },
            Verdict {
                slo: "update_latency.p95<500ms".into(),
                measured: Some(0.7),
                samples: Some(9),
                pass: false,
                reason: Some("measured 700.0 ms".into()),
            },
        ];
        let x = junit("small-oscillation", &v);
        assert!(x.contains("tests=\"2\" failures=\"1\""));
        assert!(x.contains("name=\"update_latency.p95&lt;500ms\""));
        assert!(x.contains("<failure message=\"measured 700.0 ms\"/>"));
    }
}
