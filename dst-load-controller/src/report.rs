//! `report`: judges the same gates as `client` and `run` from Prometheus,
//! for clients running as many replicas in a cluster.
//!
//! Counters are read as their exact change over the window (the value at the
//! end minus the value at the start, a series born inside the window counting
//! from zero), falling back to `increase()` only for series that reset. A
//! latency percentile is the upper bound of the histogram bucket holding it:
//! never interpolated, so a gate that passes on it holds for the real value.
//! Its flags are `cmd::report`'s.

use std::{collections::BTreeMap, time::Duration};

use serde::Deserialize;

use crate::{latency::Percentiles, measurements::Measurements};

/// Errors talking to Prometheus.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTTP request failed.
    #[error("cannot query Prometheus at {url}")]
    Http {
        /// The query URL.
        url: String,
        /// Why (and its causes, down to the connection's).
        #[source]
        why: reqwest::Error,
    },
    /// `--bearer-token-file`'s token cannot be sent as a header.
    #[error("--bearer-token-file: the token is no HTTP header value (a control character in it?)")]
    Token,
    /// `--ca-file`'s certificates cannot be used.
    #[error("--ca-file: its certificates cannot be used")]
    Certificate(#[source] reqwest::Error),
    /// No HTTP client could be built (the TLS backend refused its settings).
    #[error("cannot build an HTTP client for Prometheus")]
    Client(#[source] reqwest::Error),
    /// Prometheus (or a proxy in front of it) answered an HTTP error.
    #[error("Prometheus at {url} answered HTTP {status}{hint}")]
    Status {
        /// The query URL.
        url: String,
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// What to do about it.
        hint: &'static str,
    },
    /// Prometheus answered with an error.
    #[error("Prometheus rejected query `{query}`: {error}")]
    Query {
        /// The PromQL.
        query: String,
        /// Prometheus's message.
        error: String,
    },
    /// A sample that no count or latency can be: NaN or an infinity.
    #[error(
        "Prometheus answered {value} for `{query}`: not a number any measurement can be; check that --prometheus is the Prometheus that scrapes the clients"
    )]
    NotFinite {
        /// The PromQL.
        query: String,
        /// The value as Prometheus wrote it.
        value: String,
    },
    /// Nothing matched: the clients are not scraped, or the selector is wrong.
    #[error(
        "no destination_client_* series match {{{selector}}} in Prometheus between {start} and {end}: check --selector and that Prometheus scrapes the clients"
    )]
    NoClients {
        /// The selector.
        selector: String,
        /// Window start.
        start: jiff::Timestamp,
        /// Window end.
        end: jiff::Timestamp,
    },
}

/// A Prometheus HTTP API client for instant queries.
pub struct Prometheus {
    http: reqwest::Client,
    url: String,
    /// `url` with its credentials hidden, for messages.
    shown: String,
}

/// `url` as it may be printed: a user name and password in it become `***`.
pub fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("***");
            let _ = u.set_password(None);
            u.to_string()
        }
        Ok(_) => url.to_string(),
        // Not a URL: whatever precedes an `@` is hidden all the same.
        Err(_) => match url.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => url.to_string(),
        },
    }
}

/// A sample's value, which must be a number (`NaN`, `+Inf` and `-Inf` are
/// errors: no count or latency is one).
fn finite(query: &str, value: &str) -> Result<f64, Error> {
    value
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| Error::NotFinite {
            query: query.to_string(),
            value: value.to_string(),
        })
}

/// An answer of Prometheus's HTTP API, of instant (`Data<Sample>`) or
/// range (`Data<RangeSeries>`) queries.
#[derive(Deserialize)]
struct Answer<R> {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default = "Option::default")]
    data: Option<Data<R>>,
}

#[derive(Deserialize)]
struct Data<R> {
    result: Vec<R>,
}

#[derive(Deserialize)]
struct Sample {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

#[derive(Deserialize)]
struct RangeSeries {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    values: Vec<(f64, String)>,
}

/// How to reach a Prometheus that asks for more than a URL.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// Sent as `Authorization: Bearer ...` with every query.
    pub bearer_token: Option<String>,
    /// PEM certificates of the authorities that sign its TLS certificate
    /// (trusted beside the system's).
    pub ca_pem: Option<Vec<u8>>,
}

/// A token or CA file that gives no access.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// It cannot be read.
    #[error("{flag} {}: {why}", path.display())]
    Read {
        /// The flag that named it.
        flag: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why (shown in the message, so not its source).
        why: std::io::Error,
    },
    /// No token in it.
    #[error(
        "--bearer-token-file {}: no token on its first line (one word, as a ServiceAccount token file holds)",
        .0.display()
    )]
    NoToken(std::path::PathBuf),
    /// No certificate in it.
    #[error("--ca-file {}: no PEM certificate in it (-----BEGIN CERTIFICATE-----)", .0.display())]
    NoCertificate(std::path::PathBuf),
}

impl Access {
    /// The access `token_file` and `ca_file` give: the token is the file's
    /// first line, the CA file one or more PEM certificates. The error
    /// names the file and what is wrong with it.
    pub fn from_files(
        token_file: Option<&std::path::Path>,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, AccessError> {
        let read = |flag: &'static str, p: &std::path::Path| {
            std::fs::read(p).map_err(|why| AccessError::Read {
                flag,
                path: p.to_path_buf(),
                why,
            })
        };
        let bearer_token = match token_file {
            Some(p) => {
                let text = read("--bearer-token-file", p)?;
                let token = String::from_utf8_lossy(&text)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string();
                if token.is_empty() || token.contains(char::is_whitespace) {
                    return Err(AccessError::NoToken(p.to_path_buf()));
                }
                Some(token)
            }
            None => None,
        };
        let ca_pem = match ca_file {
            Some(p) => {
                let pem = read("--ca-file", p)?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem).unwrap_or_default();
                if certs.is_empty() {
                    return Err(AccessError::NoCertificate(p.to_path_buf()));
                }
                Some(pem)
            }
            None => None,
        };
        Ok(Self {
            bearer_token,
            ca_pem,
        })
    }
}

impl Prometheus {
    /// A client for the Prometheus at `base`.
    pub fn new(base: &str, timeout: Duration, access: &Access) -> Result<Self, Error> {
        let mut http = reqwest::Client::builder().timeout(timeout);
        if let Some(token) = &access.bearer_token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| Error::Token)?;
            // Kept out of debug output.
            value.set_sensitive(true);
            http = http.default_headers(
                [(reqwest::header::AUTHORIZATION, value)]
                    .into_iter()
                    .collect(),
            );
        }
        if let Some(pem) = &access.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(Error::Certificate)?;
            for cert in certs {
                http = http.add_root_certificate(cert);
            }
        }
        Ok(Self {
            http: http.build().map_err(Error::Client)?,
            url: format!("{}/api/v1/query", base.trim_end_matches('/')),
            shown: format!("{}/api/v1/query", redact(base).trim_end_matches('/')),
        })
    }

    /// Evaluates `query` at `at`: each series' labels and value.
    pub async fn query(
        &self,
        query: &str,
        at: jiff::Timestamp,
    ) -> Result<Vec<(BTreeMap<String, String>, f64)>, Error> {
        let time = format!("{:.3}", at.as_millisecond() as f64 / 1e3);
        let result: Vec<Sample> = self.call(&self.url, query, &[("time", &time)]).await?;
        result
            .into_iter()
            .map(|s| Ok((s.metric, finite(query, &s.value.1)?)))
            .collect()
    }
}

impl Prometheus {
    /// POSTs `query` with `params` to `url` and returns the answer's result.
    async fn call<R: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        query: &str,
        params: &[(&str, &str)],
    ) -> Result<Vec<R>, Error> {
        let http = |why: reqwest::Error| Error::Http {
            url: url.replace(&self.url, &self.shown),
            // Its own copy of the URL would show the credentials.
            why: why.without_url(),
        };
        let mut form = vec![("query", query)];
        form.extend_from_slice(params);
        let response = self.http.post(url).form(&form).send().await.map_err(http)?;
        let status = response.status();
        // Prometheus answers a bad query 400 or 422 with its JSON error;
        // anything else that is not a success is no Prometheus answer.
        if !(status.is_success() || status.as_u16() == 400 || status.as_u16() == 422) {
            return Err(Error::Status {
                url: url.replace(&self.url, &self.shown),
                status,
                hint: match status.as_u16() {
                    401 | 403 => ": give --bearer-token-file with a token it takes",
                    _ => "",
                },
            });
        }
        let answer: Answer<R> = response.json().await.map_err(http)?;
        if answer.status != "success" {
            return Err(Error::Query {
                query: query.to_string(),
                error: answer.error.unwrap_or(answer.status),
            });
        }
        Ok(answer.data.map(|d| d.result).unwrap_or_default())
    }

    /// Evaluates `query` every `step` over `[start, end]`: the first
    /// series' (time, value) points.
    pub async fn query_range(
        &self,
        query: &str,
        start: jiff::Timestamp,
        end: jiff::Timestamp,
        step: Duration,
    ) -> Result<Vec<(f64, f64)>, Error> {
        let series = self.query_range_all(query, start, end, step).await?;
        Ok(series
            .into_iter()
            .next()
            .map_or(Vec::new(), |(_, points)| points))
    }

    /// Evaluates `query` every `step` over `[start, end]`: every series'
    /// labels and (time, value) points.
    pub async fn query_range_all(
        &self,
        query: &str,
        start: jiff::Timestamp,
        end: jiff::Timestamp,
        step: Duration,
    ) -> Result<Vec<(BTreeMap<String, String>, Vec<(f64, f64)>)>, Error> {
        let url = self.url.replace("/api/v1/query", "/api/v1/query_range");
        let secs = |t: jiff::Timestamp| format!("{:.3}", t.as_millisecond() as f64 / 1e3);
        let result: Vec<RangeSeries> = self
            .call(
                &url,
                query,
                &[
                    ("start", &secs(start)),
                    ("end", &secs(end)),
                    ("step", &format!("{:.3}", step.as_secs_f64())),
                ],
            )
            .await?;
        result
            .into_iter()
            .map(|s| {
                let points = s
                    .values
                    .into_iter()
                    .map(|(t, v)| Ok((t, finite(query, &v)?)))
                    .collect::<Result<_, Error>>()?;
                Ok((s.metric, points))
            })
            .collect()
    }
}

/// The clients' streams, updates, errors, resets and stale streams over
/// `[start, end]`, for the pictures: one sample a second (at most 1,000).
pub async fn timeline(
    prom: &Prometheus,
    selector: &str,
    start: jiff::Timestamp,
    end: jiff::Timestamp,
    latency_window: Duration,
) -> Result<Vec<crate::measurements::TimelineSample>, Error> {
    let span = (end - start)
        .total(jiff::Unit::Second)
        .unwrap_or(0.0)
        .max(1.0);
    let step = Duration::from_secs_f64((span / 1000.0).max(1.0));
    let series = |name: &str| {
        let q = format!("sum(destination_client_{name}{{{selector}}})");
        async move { prom.query_range(&q, start, end, step).await }
    };
    let streams = series("streams_active").await?;
    let updates = series("updates_received_total").await?;
    let errors = series("connection_errors_total").await?;
    let resets = series("streams_reset_total").await?;
    let stale = series("stale_streams").await?;
    let latency = window_latencies(prom, selector, start, end, step, latency_window).await?;
    let at = |points: &[(f64, f64)], t: f64| {
        points
            .iter()
            .find(|(x, _)| (*x - t).abs() < 1e-3)
            .map_or(0.0, |(_, v)| *v)
    };
    Ok(streams
        .iter()
        .map(|(t, n)| crate::measurements::TimelineSample {
            at: *t,
            streams_active: *n as i64,
            updates: at(&updates, *t).max(0.0) as u64,
            errors: at(&errors, *t).max(0.0) as u64,
            resets: at(&resets, *t).max(0.0) as u64,
            stale: at(&stale, *t) as i64,
            update_latency: latency
                .iter()
                .find(|(x, _)| (*x - *t).abs() < 1e-3)
                .map(|(_, w)| *w),
        })
        .collect())
}

/// The update latency's p50, p95 and p99 (bucket upper bounds) over the
/// `window` ending at each step with samples; none where a percentile lies
/// past the last bucket.
async fn window_latencies(
    prom: &Prometheus,
    selector: &str,
    start: jiff::Timestamp,
    end: jiff::Timestamp,
    step: Duration,
    window: Duration,
) -> Result<Vec<(f64, crate::measurements::WindowLatency)>, Error> {
    let window = window.max(step).as_secs().max(1);
    let q = format!(
        "sum by (le) (increase(destination_client_update_latency_seconds_bucket{{{selector}}}[{window}s]))"
    );
    let mut by_time: BTreeMap<i64, Vec<(f64, f64)>> = BTreeMap::new();
    for (labels, points) in prom.query_range_all(&q, start, end, step).await? {
        let le = match labels.get("le").map(String::as_str) {
            Some("+Inf") => f64::INFINITY,
            Some(le) => match le.parse() {
                Ok(le) => le,
                Err(_) => continue,
            },
            None => continue,
        };
        for (t, v) in points {
            by_time
                .entry((t * 1e3).round() as i64)
                .or_default()
                .push((le, v));
        }
    }
    Ok(by_time
        .into_iter()
        .filter_map(|(ms, buckets)| {
            let p = bucket_percentiles(buckets);
            let w = crate::measurements::WindowLatency {
                count: p.count,
                p50: p.p50,
                p95: p.p95,
                p99: p.p99,
            };
            let drawn = p.count > 0 && [w.p50, w.p95, w.p99].iter().all(|v| v.is_finite());
            drawn.then_some((ms as f64 / 1e3, w))
        })
        .collect())
}

/// PromQL for a counter's exact change over `[window]` ending at the query
/// time, per series: end value minus start value (zero for a series born in
/// the window), or `increase()` for a series that reset.
fn counter_delta(series: &str, window: &str) -> String {
    let last = format!("last_over_time({series}[{window}])");
    format!(
        "(({last} - ({series} offset {window} or {last} * 0)) unless (resets({series}[{window}]) > 0)) or increase({series}[{window}])"
    )
}

/// Reads every measurement for the clients matching `selector` over
/// `[start, end]`.
pub async fn read(
    prom: &Prometheus,
    selector: &str,
    start: jiff::Timestamp,
    end: jiff::Timestamp,
) -> Result<Measurements, Error> {
    let window = format!(
        "{}ms",
        (end - start)
            .total(jiff::Unit::Millisecond)
            .unwrap_or(0.0)
            .max(1.0) as u64
    );
    let sel = |name: &str| format!("destination_client_{name}{{{selector}}}");
    let sum = |q: String| async move {
        let v = prom.query(&format!("sum({q})"), end).await?;
        Ok::<_, Error>(v.first().map(|(_, v)| *v))
    };
    let delta = |name: &str| sum(counter_delta(&sel(name), &window));

    let Some(created) = delta("streams_created_total").await? else {
        return Err(Error::NoClients {
            selector: selector.to_string(),
            start,
            end,
        });
    };
    let count = |v: Option<f64>| v.map_or(0, |v| v.max(0.0).round() as u64);
    let mut m = Measurements {
        streams_created: count(Some(created)),
        streams: count(sum(sel("streams_active")).await?),
        updates_received: count(delta("updates_received_total").await?),
        errors: count(delta("connection_errors_total").await?),
        streams_unconverged: count(sum(sel("unconverged_streams")).await?),
        stale_streams: count(sum(sel("stale_streams")).await?) as i64,
        ..Measurements::default()
    };
    m.streams_reset = count(delta("streams_reset_total").await?);
    for (name, slot) in [
        ("update_latency_seconds", &mut m.update_latency),
        ("convergence_latency_seconds", &mut m.convergence_latency),
        ("fanout_completion_seconds", &mut m.fanout_completion),
        ("kubernetes_leg_seconds", &mut m.kubernetes_leg),
        ("destination_leg_seconds", &mut m.destination_leg),
    ] {
        let q = format!(
            "sum by (le) ({})",
            counter_delta(&sel(&format!("{name}_bucket")), &window)
        );
        let buckets = prom
            .query(&q, end)
            .await?
            .into_iter()
            .filter_map(|(labels, v)| {
                let le = match labels.get("le")?.as_str() {
                    "+Inf" => f64::INFINITY,
                    le => le.parse().ok()?,
                };
                Some((le, v))
            })
            .collect();
        *slot = bucket_percentiles(buckets);
    }
    Ok(m)
}

/// Percentiles from cumulative histogram buckets `(le, count)`: each one the
/// upper bound of the bucket holding that rank (infinite past the last bound).
pub fn bucket_percentiles(mut buckets: Vec<(f64, f64)>) -> Percentiles {
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let cum: Vec<(f64, u64)> = buckets
        .iter()
        .map(|(le, c)| (*le, c.max(0.0).round() as u64))
        .collect();
    let total = cum.iter().map(|(_, c)| *c).max().unwrap_or(0);
    if total == 0 {
        return Percentiles::default();
    }
    let at = |q: f64| {
        let rank = ((q * total as f64).ceil() as u64).max(1);
        cum.iter()
            .find(|(_, c)| *c >= rank)
            .map_or(f64::INFINITY, |(le, _)| *le)
    };
    Percentiles {
        count: total,
        p50: at(0.5),
        p95: at(0.95),
        p99: at(0.99),
        p999: at(0.999),
        max: at(1.0),
        // Prometheus buckets are not samples: no histogram to compare.
        histogram: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_bucket_upper_bounds() {
        // 100 samples: 90 under 10 ms, 9 in (10 ms, 20 ms], 1 in (20 ms, 40 ms].
        let b = vec![
            (0.04, 100.0),
            (0.01, 90.0),
            (0.02, 99.0),
            (f64::INFINITY, 100.0),
        ];
        let p = bucket_percentiles(b);
        assert_eq!(p.count, 100);
        assert_eq!(p.p50, 0.01);
        assert_eq!(p.p95, 0.02);
        assert_eq!(p.p99, 0.02);
        assert_eq!(p.p999, 0.04);
        assert_eq!(p.max, 0.04);
    }

    #[test]
    fn samples_past_the_last_bound_are_infinite_and_empty_is_zero() {
        let p = bucket_percentiles(vec![(0.01, 1.0), (f64::INFINITY, 2.0)]);
        assert_eq!((p.count, p.p50, p.max), (2, 0.01, f64::INFINITY));
        assert_eq!(bucket_percentiles(vec![]).count, 0);
    }
}
