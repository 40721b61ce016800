//! Latency figures shared by every component: which latency ([`Kind`]), a
//! recorder feeding both Prometheus and exact HDR percentiles ([`Timings`]),
//! and the percentiles reports print ([`Percentiles`]).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use hdrhistogram::Histogram as Hdr;
use prometheus_client::metrics::histogram::Histogram;

/// Which latency.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Change to first update reflecting it.
    Update,
    /// Change to a stream's set equal to the truth.
    Convergence,
    /// Change to the last stream converged.
    Fanout,
    /// Change to our watch seeing the EndpointSlice (the Kubernetes leg).
    KubernetesLeg,
    /// EndpointSlice seen by our watch to a stream converged (the
    /// destination leg: one clock, immune to skew between machines).
    DestinationLeg,
}

/// Percentiles of one latency, from every sample. Read back from reports
/// written before a field existed, that field takes its default.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median, seconds.
    pub p50: f64,
    /// 95th percentile, seconds.
    pub p95: f64,
    /// 99th percentile, seconds.
    pub p99: f64,
    /// 99.9th percentile, seconds.
    pub p999: f64,
    /// Largest sample, seconds.
    pub max: f64,
    /// Every sample: the HDR histogram of microseconds, serialized (V2 with
    /// DEFLATE, base64), for `compare` and the pictures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub histogram: Option<HdrBlob>,
}

/// An HDR histogram of microseconds as reports carry it: HDR's V2 format
/// with DEFLATE, in base64.
#[derive(Clone, PartialEq)]
pub struct HdrBlob(pub Hdr<u64>);

impl std::fmt::Debug for HdrBlob {
    /// The sample count, not the histogram's thousands of buckets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HdrBlob({} samples)", self.0.len())
    }
}

impl serde::Serialize for HdrBlob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        let mut bytes = Vec::new();
        hdrhistogram::serialization::Serializer::serialize(
            &mut hdrhistogram::serialization::V2DeflateSerializer::new(),
            &self.0,
            &mut bytes,
        )
        .map_err(serde::ser::Error::custom)?;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }
}

impl<'de> serde::Deserialize<'de> for HdrBlob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine;
        use serde::de::Error;
        let text = String::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|e| D::Error::custom(format!("a histogram is not base64: {e}")))?;
        let hdr = hdrhistogram::serialization::Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| D::Error::custom(format!("a histogram does not decode: {e:?}")))?;
        Ok(HdrBlob(hdr))
    }
}

impl Percentiles {
    /// From an HDR histogram of microseconds: each value the midpoint of its
    /// HDR bucket, within 0.05% of the true sample.
    pub fn from_hdr(hdr: &Hdr<u64>) -> Self {
        if hdr.is_empty() {
            return Percentiles::default();
        }
        let s = |us: u64| hdr.median_equivalent(us) as f64 / 1e6;
        Percentiles {
            count: hdr.len(),
            p50: s(hdr.value_at_quantile(0.50)),
            p95: s(hdr.value_at_quantile(0.95)),
            p99: s(hdr.value_at_quantile(0.99)),
            p999: s(hdr.value_at_quantile(0.999)),
            max: s(hdr.max()),
            histogram: Some(HdrBlob(hdr.clone())),
        }
    }
}

/// A duration as an HDR sample: microseconds, within the histogram's bounds.
pub(crate) fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, 3_600_000_000)
}

/// One latency, recorded twice: into a Prometheus histogram for dashboards
/// and into an HDR histogram for the exact percentiles of reports.
#[derive(Clone, Debug)]
pub struct Timings {
    histogram: Histogram,
    hdr: Arc<Mutex<Hdr<u64>>>,
}

impl Timings {
    /// Timings exported through `histogram` (register [`Timings::histogram`]).
    pub fn new(histogram: Histogram) -> Self {
        Self {
            histogram,
            hdr: Arc::new(Mutex::new(mk_hdr())),
        }
    }

    /// The Prometheus histogram, to register.
    pub fn histogram(&self) -> Histogram {
        self.histogram.clone()
    }

    /// Records one sample.
    pub fn record(&self, d: Duration) {
        self.histogram.observe(d.as_secs_f64());
        self.hdr
            .lock()
            .expect("hdr lock")
            .saturating_record(micros(d));
    }

    /// Percentiles of every sample so far.
    pub fn percentiles(&self) -> Percentiles {
        Percentiles::from_hdr(&self.hdr.lock().expect("hdr lock"))
    }
}

/// An HDR histogram for latencies in microseconds.
pub(crate) fn mk_hdr() -> Hdr<u64> {
    // 1 µs to 1 h at 3 significant digits: below the 1 ms report precision.
    Hdr::new_with_bounds(1, 3_600_000_000, 3).expect("valid HDR bounds")
}

pub(crate) fn buckets() -> Histogram {
    // 1 ms to ~65 s, doubling: covers a local round trip to the plan's
    // slowest success criterion (10 s) and beyond.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 17,
    ))
}

/// One pattern's latencies (a run's figures broken down by churn pattern).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PatternLatencies {
    /// Change to first update reflecting it, per stream.
    pub update_latency: Percentiles,
    /// Change to a stream's set equal to the truth, per stream.
    pub convergence_latency: Percentiles,
    /// Change to the last stream converged, per change.
    pub fanout_completion: Percentiles,
}
