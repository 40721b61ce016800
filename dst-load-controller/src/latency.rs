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
/// written before a field existed, that field takes its default; figures
/// that cannot be (negative, not finite, out of order, samples counted but
/// none held) make the report damaged.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "Unchecked")]
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

/// [`Percentiles`] as read, before their checks (absent fields: 0, none,
/// as `Percentiles::default()`).
#[derive(Default, serde::Deserialize)]
#[serde(default)]
struct Unchecked {
    count: u64,
    p50: f64,
    p95: f64,
    p99: f64,
    p999: f64,
    max: f64,
    histogram: Option<HdrBlob>,
}

/// The longest latency a report can hold, seconds: samples are clamped to
/// an hour, and a day leaves room for figures computed otherwise.
const MAX_SECONDS: f64 = 86_400.0;

/// Figures of a report that no latency measurement gives: the report was
/// damaged or written by hand.
#[derive(Debug, thiserror::Error)]
pub enum Damaged {
    /// A figure out of range.
    #[error("{name} is {value} s: a latency is from 0 to {MAX_SECONDS} s")]
    OutOfRange {
        /// The figure's name.
        name: &'static str,
        /// Its value as written.
        value: String,
    },
    /// A percentile below a lower one.
    #[error("{lower} ({lower_value} s) is above {higher} ({higher_value} s): percentiles rise")]
    NotRising {
        /// The lower percentile's name.
        lower: &'static str,
        /// Its value.
        lower_value: f64,
        /// The higher percentile's name.
        higher: &'static str,
        /// Its value.
        higher_value: f64,
    },
    /// p999 outside p99 and max.
    #[error("p999 ({p999} s) is not between p99 ({p99} s) and max ({max} s)")]
    P999 {
        /// As written.
        p999: f64,
        /// As written.
        p99: f64,
        /// As written.
        max: f64,
    },
    /// A maximum of no samples.
    #[error("no samples, yet a max of {0} s")]
    MaxOfNothing(f64),
    /// A count that is not the histogram's.
    #[error("a count of {count} with a histogram of {samples} samples")]
    Count {
        /// The count written.
        count: u64,
        /// The histogram's.
        samples: u64,
    },
    /// A histogram in another format.
    #[error("a histogram is not in HDR's V2 format with DEFLATE")]
    NotHdr,
    /// A histogram that does not inflate.
    #[error("a histogram does not inflate: {0}")]
    Inflate(std::io::Error),
    /// A histogram whose inner header is of another format.
    #[error("a histogram's inner header is not HDR's V2")]
    NotHdrInside,
    /// A histogram claiming more than any of this tool's.
    #[error(
        "a histogram claims {payload} bytes of counts, {digits} significant digits and values up to {highest}: at most {MAX_HDR_BYTES} bytes, 5 digits and 2^42"
    )]
    HdrSizes {
        /// Bytes of counts.
        payload: u32,
        /// Significant digits.
        digits: u32,
        /// Highest trackable value.
        highest: u64,
    },
}

impl TryFrom<Unchecked> for Percentiles {
    type Error = Damaged;

    fn try_from(u: Unchecked) -> Result<Self, Damaged> {
        let figures = [
            ("p50", u.p50),
            ("p95", u.p95),
            ("p99", u.p99),
            ("max", u.max),
        ];
        for (name, v) in figures.into_iter().chain([("p999", u.p999)]) {
            if !(0.0..=MAX_SECONDS).contains(&v) {
                // 1e308 as written, not as 309 digits.
                let v = if v.abs() < 1e9 {
                    v.to_string()
                } else {
                    format!("{v:e}")
                };
                return Err(Damaged::OutOfRange { name, value: v });
            }
        }
        if let Some(w) = figures.windows(2).find(|w| w[0].1 > w[1].1) {
            return Err(Damaged::NotRising {
                lower: w[0].0,
                lower_value: w[0].1,
                higher: w[1].0,
                higher_value: w[1].1,
            });
        }
        // Reports from before p999 have none (0).
        if u.p999 != 0.0 && !(u.p99..=u.max).contains(&u.p999) {
            return Err(Damaged::P999 {
                p999: u.p999,
                p99: u.p99,
                max: u.max,
            });
        }
        if u.count == 0 && u.max != 0.0 {
            return Err(Damaged::MaxOfNothing(u.max));
        }
        if let Some(h) = &u.histogram
            && h.0.len() != u.count
        {
            return Err(Damaged::Count {
                count: u.count,
                samples: h.0.len(),
            });
        }
        Ok(Self {
            count: u.count,
            p50: u.p50,
            p95: u.p95,
            p99: u.p99,
            p999: u.p999,
            max: u.max,
            histogram: u.histogram,
        })
    }
}

/// The most bytes a report's histogram may take, base64 or inflated: a
/// histogram of this tool is a few KB whatever its samples.
const MAX_HDR_BYTES: usize = 1 << 20;

/// HDR's cookie of its V2 format with DEFLATE, and of the V2 inside.
const HDR_V2_DEFLATE: u32 = 0x1c84_9314;
const HDR_V2: u32 = 0x1c84_9313;

/// Checks the sizes a serialized histogram claims before it is decoded (the
/// decoder allocates what its header says: a 6 KB report could ask for 4
/// GiB).
fn check_hdr_sizes(bytes: &[u8]) -> Result<(), Damaged> {
    use std::io::Read;
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    if bytes.len() < 8 || be32(bytes) != HDR_V2_DEFLATE {
        return Err(Damaged::NotHdr);
    }
    // Inner cookie, payload length, normalizing offset, significant
    // digits, lowest and highest trackable values.
    let mut header = [0u8; 32];
    flate2::read::ZlibDecoder::new(&bytes[8..])
        .read_exact(&mut header)
        .map_err(Damaged::Inflate)?;
    let (cookie, payload, digits) = (be32(&header), be32(&header[4..]), be32(&header[12..]));
    let highest = u64::from_be_bytes(header[24..32].try_into().expect("8 bytes"));
    if cookie != HDR_V2 {
        return Err(Damaged::NotHdrInside);
    }
    if payload as usize > MAX_HDR_BYTES || digits > 5 || highest > 1 << 42 {
        return Err(Damaged::HdrSizes {
            payload,
            digits,
            highest,
        });
    }
    Ok(())
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
        if text.len() > MAX_HDR_BYTES {
            return Err(D::Error::custom(format!(
                "a histogram of {} bytes: at most {MAX_HDR_BYTES}",
                text.len()
            )));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|e| D::Error::custom(format!("a histogram is not base64: {e}")))?;
        check_hdr_sizes(&bytes).map_err(D::Error::custom)?;
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use base64::Engine;

    use super::*;

    fn sampled() -> Percentiles {
        let mut hdr = mk_hdr();
        for us in [1_000, 2_000, 40_000, 900_000] {
            hdr.record(us).unwrap();
        }
        Percentiles::from_hdr(&hdr)
    }

    fn read(json: serde_json::Value) -> Result<Percentiles, serde_json::Error> {
        serde_json::from_value(json)
    }

    #[test]
    fn figures_read_back_and_damaged_ones_are_refused() {
        let p = sampled();
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(read(json.clone()).unwrap(), p);
        // Older reports: no p999, no histogram.
        assert!(
            read(serde_json::json!({"count": 3, "p50": 0.1, "p95": 0.2, "p99": 0.3, "max": 0.4}))
                .is_ok()
        );
        assert_eq!(read(serde_json::json!({})).unwrap(), Percentiles::default());
        let damaged = |key: &str, v: serde_json::Value| {
            let mut j = json.clone();
            j[key] = v;
            read(j).unwrap_err().to_string()
        };
        assert!(
            damaged("p50", (-1.0).into())
                .starts_with("p50 is -1 s: a latency is from 0 to 86400 s")
        );
        assert!(damaged("p50", 1e308.into()).starts_with("p50 is 1e308 s"));
        let e = damaged("p95", 0.0.into());
        assert!(
            e.starts_with("p50 (") && e.contains("is above p95 (0 s): percentiles rise"),
            "{e}"
        );
        assert!(
            damaged("count", 100.into())
                .starts_with("a count of 100 with a histogram of 4 samples")
        );
        let empty = serde_json::to_value(Percentiles::from_hdr(&mk_hdr())).unwrap();
        assert!(
            read(serde_json::json!({"count": 0, "max": 2.0}))
                .unwrap_err()
                .to_string()
                .starts_with("no samples, yet a max of 2 s")
        );
        assert_eq!(read(empty).unwrap(), Percentiles::default());
    }

    #[test]
    fn a_histogram_claiming_gigabytes_is_refused_before_it_is_decoded() {
        let blob = serde_json::to_value(sampled().histogram.unwrap()).unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(blob.as_str().unwrap())
            .unwrap();
        let mut inner = Vec::new();
        flate2::read::ZlibDecoder::new(&bytes[8..])
            .read_to_end(&mut inner)
            .unwrap();
        // The inner header's payload length: 4 GiB.
        inner[4..8].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&inner).unwrap();
        let z = z.finish().unwrap();
        let mut forged = bytes[..4].to_vec();
        forged.extend((z.len() as u32).to_be_bytes());
        forged.extend(z);
        let text = base64::engine::general_purpose::STANDARD.encode(&forged);
        let e = serde_json::from_value::<HdrBlob>(text.into())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("a histogram claims 4294967280 bytes of counts"),
            "{e}"
        );
        // Not HDR at all, and too long to be one of ours.
        let e = serde_json::from_value::<HdrBlob>("AAAAAAAAAAA=".into())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("a histogram is not in HDR's V2 format"),
            "{e}"
        );
        let e = serde_json::from_value::<HdrBlob>("A".repeat(2 << 20).into())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("a histogram of 2097152 bytes"), "{e}");
    }
}
