//! Kubernetes API access for churn and cleanup: one client, a client-side
//! rate limit (`--qps`/`--burst`), and retries with capped exponential
//! backoff for conflicts, throttling, server errors and timeouts.

use std::{future::Future, num::NonZeroU32, sync::Arc, time::Duration};

use backon::BackoffBuilder;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter, family::Family, histogram::Histogram, histogram::exponential_buckets,
    },
    registry::{Registry, Unit},
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long any call may go without reading a byte.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The apiserver's timeout of every watch we open: shorter than
/// [`READ_TIMEOUT`], so an idle watch (no events for a while: a quiet
/// namespace, long holds) is ended by the server and resumed from its
/// resourceVersion, not cut by our read timeout and re-listed after a
/// backoff (which would leave the changes made meanwhile untimed).
pub const WATCH_TIMEOUT_SECS: u32 = 20;

/// The configuration of every watch: [`WATCH_TIMEOUT_SECS`].
pub fn watch_config() -> kube::runtime::watcher::Config {
    kube::runtime::watcher::Config::default().timeout(WATCH_TIMEOUT_SECS)
}

/// The Kubernetes client's settings: its context (and kubeconfig file, for
/// a second cluster) and its request rate limit. From the flags
/// (`cmd::flags::KubeSettings`), or built directly by `run` and tests.
#[derive(Clone, Debug)]
pub struct KubeSettings {
    /// The kubeconfig context to use (default: the current context, or the
    /// in-cluster service account).
    pub kube_context: Option<String>,
    /// Sustained Kubernetes API requests per second.
    pub qps: f64,
    /// Requests allowed in a burst above `qps`.
    pub burst: u32,
    /// A kubeconfig file read instead of `KUBECONFIG`'s (set by
    /// [`KubeSettings::of_cluster`] for a second cluster).
    pub kubeconfig: Option<std::path::PathBuf>,
}

impl Default for KubeSettings {
    /// The flags' defaults: the current context, 20 requests/s, bursts of 40.
    fn default() -> Self {
        Self {
            kube_context: None,
            qps: 20.0,
            burst: 40,
            kubeconfig: None,
        }
    }
}

/// A rate limit no client can keep.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RateError {
    /// Not a positive rate.
    #[error("--qps must be a positive number, got {0}")]
    Qps(f64),
    /// No burst.
    #[error("--burst must be at least 1")]
    Burst,
}

/// No client could be made from the settings: every variant names where
/// it looked and what to set.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConnectError {
    /// `--kubeconfig`'s file could not be read.
    #[error("cannot read kubeconfig {}: {why}", file.display())]
    Read {
        /// The file.
        file: std::path::PathBuf,
        /// Why not.
        why: String,
    },
    /// `--kubeconfig`'s file has no usable context.
    #[error("cannot use kubeconfig {} (context {context:?}): {why}", file.display())]
    Use {
        /// The file.
        file: std::path::PathBuf,
        /// The context asked for (none: its current one).
        context: Option<String>,
        /// Why not.
        why: String,
    },
    /// No kubeconfig, and not in a pod.
    #[error(
        "no usable kubeconfig ({kubeconfig}) and not in a cluster ({incluster}); set KUBECONFIG, --kubeconfig or --context"
    )]
    Nowhere {
        /// Why the kubeconfig was not usable.
        kubeconfig: String,
        /// Why the in-cluster configuration was not.
        incluster: String,
    },
    /// `--context` names no usable context.
    #[error("cannot load kube context {context:?}: {why}")]
    Context {
        /// The context.
        context: Option<String>,
        /// Why not.
        why: String,
    },
    /// The configuration was read but no client could be built from it
    /// (its TLS settings, most often).
    #[error("the kubeconfig gives no usable client: {0}")]
    Client(String),
}

impl KubeSettings {
    /// Checks the rate limit flags.
    pub fn validate(&self) -> Result<(), RateError> {
        if !(self.qps.is_finite() && self.qps > 0.0) {
            return Err(RateError::Qps(self.qps));
        }
        if self.burst == 0 {
            return Err(RateError::Burst);
        }
        Ok(())
    }

    /// Builds the client (watches: [`watch_config`]), with request timeouts short enough that a hung
    /// apiserver is retried rather than waited on for minutes.
    pub async fn client(&self) -> Result<kube::Client, ConnectError> {
        let options = kube::config::KubeConfigOptions {
            context: self.kube_context.clone(),
            ..Default::default()
        };
        let config = if let Some(file) = &self.kubeconfig {
            let kubeconfig =
                kube::config::Kubeconfig::read_from(file).map_err(|e| ConnectError::Read {
                    file: file.clone(),
                    why: e.to_string(),
                })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| ConnectError::Use {
                    file: file.clone(),
                    context: self.kube_context.clone(),
                    why: e.to_string(),
                })?
        } else {
            match kube::Config::from_kubeconfig(&options).await {
                Ok(c) => c,
                Err(kubeconfig) if self.kube_context.is_none() => kube::Config::incluster()
                    .map_err(|e| ConnectError::Nowhere {
                        kubeconfig: kubeconfig.to_string(),
                        incluster: e.to_string(),
                    })?,
                Err(e) => {
                    return Err(ConnectError::Context {
                        context: self.kube_context.clone(),
                        why: e.to_string(),
                    });
                }
            }
        };
        kube::Client::try_from(with_timeouts(config))
            .map_err(|e| ConnectError::Client(e.to_string()))
    }

    /// The same settings for another cluster: its kubeconfig file, and its
    /// current context unless `context`.
    pub fn of_cluster(&self, kubeconfig: &std::path::Path, context: Option<String>) -> Self {
        Self {
            kube_context: context,
            kubeconfig: Some(kubeconfig.to_path_buf()),
            ..self.clone()
        }
    }

    /// The rate limiter for `--qps`/`--burst`.
    pub fn limiter(&self) -> Arc<DefaultDirectRateLimiter> {
        let period = Duration::from_secs_f64(1.0 / self.qps);
        let quota = Quota::with_period(period)
            .expect("validated: qps is positive")
            .allow_burst(NonZeroU32::new(self.burst).expect("validated: burst >= 1"));
        Arc::new(RateLimiter::direct(quota))
    }
}

/// Request timeouts short enough that a hung apiserver is retried rather
/// than waited on for minutes.
fn with_timeouts(mut config: kube::Config) -> kube::Config {
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(READ_TIMEOUT);
    config.write_timeout = Some(Duration::from_secs(30));
    config
}

/// One API operation, for errors and metric labels.
#[derive(Clone, Debug)]
pub struct Op {
    /// `apply`, `get`, `list`, `delete`.
    pub verb: &'static str,
    /// `services`, `deployments`, `namespaces`, `pods`.
    pub resource: &'static str,
    /// The namespace.
    pub namespace: String,
    /// The object's name, if one.
    pub name: Option<String>,
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        if let Some(n) = &self.name {
            write!(f, "/{n}")?;
        }
        write!(f, " in namespace {}", self.namespace)
    }
}

/// An API call that retrying cannot fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// RBAC refused the call.
    #[error("forbidden: {op}: {message}. Grant the service account the '{verb}' verb on '{resource}' in namespace '{namespace}'", verb = rbac_verb(op.verb), resource = op.resource, namespace = op.namespace)]
    Forbidden {
        /// The call.
        op: Box<Op>,
        /// The apiserver's message.
        message: String,
    },
    /// The apiserver rejected the request (invalid object, not found...).
    #[error("{op} failed: {code} {reason}: {message}")]
    Rejected {
        /// The call.
        op: Box<Op>,
        /// HTTP status.
        code: u16,
        /// Kubernetes reason.
        reason: String,
        /// The apiserver's message.
        message: String,
    },
    /// Shutdown arrived while waiting to retry.
    #[error("{op} abandoned: shutting down")]
    Cancelled {
        /// The call.
        op: Box<Op>,
    },
}

impl Error {
    /// Whether the apiserver said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Rejected { code: 404, .. })
    }

    /// Whether a create found the object already there.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Error::Rejected { code: 409, reason, .. } if reason == "AlreadyExists")
    }
}

/// The RBAC verb a call needs (server-side apply is `patch`).
fn rbac_verb(verb: &str) -> &str {
    match verb {
        "apply" => "patch",
        v => v,
    }
}

/// `{operation, reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    operation: String,
    reason: &'static str,
}

/// `{operation}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    operation: String,
}

/// API call metrics, registered under the caller's prefix.
#[derive(Clone, Debug)]
pub struct ApiMetrics {
    errors: Family<ErrorLabels, Counter>,
    duration: Family<OpLabels, Histogram>,
    retries: Counter,
    // All errors, for the exit summary (the family has no sum).
    errors_total: Counter,
}

impl ApiMetrics {
    /// Registers `api_errors`, `api_request_duration_seconds` and `api_retries`.
    pub fn register(reg: &mut Registry) -> Self {
        let m = Self {
            errors: Family::default(),
            // 1 ms to ~30 s: a healthy local apiserver answers in milliseconds,
            // an overloaded one hits the 30 s request timeout.
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            }),
            retries: Counter::default(),
            errors_total: Counter::default(),
        };
        reg.register(
            "api_errors",
            "Kubernetes API errors, by operation and reason",
            m.errors.clone(),
        );
        reg.register_with_unit(
            "api_request_duration",
            "Kubernetes API request latency, by operation",
            Unit::Seconds,
            m.duration.clone(),
        );
        reg.register(
            "api_retries",
            "Kubernetes API calls retried after an error",
            m.retries.clone(),
        );
        m
    }

    /// Errors seen, all operations and reasons.
    pub fn errors(&self) -> u64 {
        self.errors_total.get()
    }

    /// Calls retried.
    pub fn retries(&self) -> u64 {
        self.retries.get()
    }
}

/// How an error is handled.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Class {
    /// Retry with backoff, counted under this reason.
    Retry(&'static str),
    /// RBAC: stop and explain.
    Forbidden,
    /// Give up (invalid request, not found).
    Fatal(&'static str),
}

/// Classifies an error from the apiserver or the transport.
pub fn classify(error: &kube::Error) -> Class {
    match error {
        kube::Error::Api(s) => match s.code {
            // Not RBAC: the namespace is being deleted; it will be gone soon.
            403 if s.message.contains("being terminated") => Class::Retry("namespace_terminating"),
            401 | 403 => Class::Forbidden,
            // A create of something that exists will not succeed by retrying.
            409 if s.reason == "AlreadyExists" => Class::Fatal("already_exists"),
            409 => Class::Retry("conflict"),
            429 => Class::Retry("throttled"),
            408 | 504 => Class::Retry("timeout"),
            500..=599 => Class::Retry("server_error"),
            404 => Class::Fatal("not_found"),
            _ => Class::Fatal("rejected"),
        },
        // Connection refused or reset, timeouts, TLS: the apiserver may be restarting.
        _ => Class::Retry("transport"),
    }
}

/// Makes API calls: rate limited, timed, retried, counted.
#[derive(Clone)]
pub struct Caller {
    limiter: Arc<DefaultDirectRateLimiter>,
    metrics: ApiMetrics,
    shutdown: CancellationToken,
    /// Largest backoff between retries.
    max_backoff: Duration,
}

impl Caller {
    /// A caller; `shutdown` abandons calls waiting to be retried (a call in
    /// flight is always finished).
    pub fn new(
        limiter: Arc<DefaultDirectRateLimiter>,
        metrics: ApiMetrics,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            limiter,
            metrics,
            shutdown,
            max_backoff: Duration::from_secs(10),
        }
    }

    /// The same caller, abandoning retries on a different signal (cleanup
    /// runs after the run's own shutdown fired).
    pub fn with_shutdown(&self, shutdown: CancellationToken) -> Self {
        Self {
            shutdown,
            ..self.clone()
        }
    }

    /// Runs `f` until it succeeds or fails for good.
    pub async fn call<T, F, Fut>(&self, op: Op, mut f: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = kube::Result<T>>,
    {
        let operation = format!("{}_{}", op.verb, op.resource);
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(self.max_backoff)
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            self.limiter.until_ready().await;
            let start = Instant::now();
            let result = f().await;
            self.metrics
                .duration
                .get_or_create(&OpLabels {
                    operation: operation.clone(),
                })
                .observe(start.elapsed().as_secs_f64());
            let error = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let class = classify(&error);
            let reason = match class {
                Class::Retry(r) | Class::Fatal(r) => r,
                Class::Forbidden => "forbidden",
            };
            self.metrics
                .errors
                .get_or_create(&ErrorLabels {
                    operation: operation.clone(),
                    reason,
                })
                .inc();
            self.metrics.errors_total.inc();
            let (code, k8s_reason, message) = match &error {
                kube::Error::Api(s) => (s.code, s.reason.clone(), s.message.clone()),
                other => (0, String::new(), other.to_string()),
            };
            match class {
                Class::Forbidden => {
                    return Err(Error::Forbidden {
                        op: Box::new(op),
                        message,
                    });
                }
                Class::Fatal(_) => {
                    return Err(Error::Rejected {
                        op: Box::new(op),
                        code,
                        reason: k8s_reason,
                        message,
                    });
                }
                Class::Retry(reason) => {
                    let delay = backoff.next().unwrap_or(self.max_backoff);
                    tracing::warn!(%op, reason, error = %message, ?delay, "API call failed; retrying");
                    self.metrics.retries.inc();
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return Err(Error::Cancelled { op: Box::new(op) }),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        mk_api_error(code, "Conflict", "m")
    }

    fn mk_api_error(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: message.into(),
            reason: reason.into(),
            ..Default::default()
        }))
    }

    #[test]
    fn classifies_errors() {
        assert_eq!(classify(&api_error(409)), Class::Retry("conflict"));
        assert_eq!(classify(&api_error(429)), Class::Retry("throttled"));
        assert_eq!(classify(&api_error(503)), Class::Retry("server_error"));
        assert_eq!(classify(&api_error(504)), Class::Retry("timeout"));
        assert_eq!(classify(&api_error(403)), Class::Forbidden);
        assert_eq!(classify(&api_error(401)), Class::Forbidden);
        assert_eq!(classify(&api_error(404)), Class::Fatal("not_found"));
        assert_eq!(classify(&api_error(422)), Class::Fatal("rejected"));
        assert_eq!(
            classify(&mk_api_error(409, "AlreadyExists", "x exists")),
            Class::Fatal("already_exists")
        );
        let terminating = mk_api_error(
            403,
            "Forbidden",
            "deployments.apps \"x\" is forbidden: unable to create new content in namespace ns because it is being terminated",
        );
        assert_eq!(
            classify(&terminating),
            Class::Retry("namespace_terminating")
        );
    }

    #[test]
    fn forbidden_names_the_verb_and_resource() {
        let op = Op {
            verb: "apply",
            resource: "deployments",
            namespace: "dst-load-test".into(),
            name: Some("x".into()),
        };
        let msg = Error::Forbidden {
            op: Box::new(op),
            message: "nope".into(),
        }
        .to_string();
        assert!(
            msg.contains("'patch' verb on 'deployments' in namespace 'dst-load-test'"),
            "{msg}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_success_and_counts() {
        let mut reg = Registry::default();
        let metrics = ApiMetrics::register(&mut reg);
        let caller = Caller::new(
            KubeSettings {
                qps: 1000.0,
                burst: 10,
                ..KubeSettings::default()
            }
            .limiter(),
            metrics.clone(),
            CancellationToken::new(),
        );
        let mut codes = vec![429, 409, 500].into_iter();
        let op = Op {
            verb: "get",
            resource: "services",
            namespace: "ns".into(),
            name: None,
        };
        let v = caller
            .call(op, || {
                let next = codes.next();
                async move {
                    match next {
                        Some(code) => Err(api_error(code)),
                        None => Ok(7),
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!(v, 7);
        assert_eq!(metrics.retries.get(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_abandons_retries() {
        let token = CancellationToken::new();
        let caller = Caller::new(
            KubeSettings {
                qps: 1000.0,
                burst: 10,
                ..KubeSettings::default()
            }
            .limiter(),
            ApiMetrics::register(&mut Registry::default()),
            token.clone(),
        );
        token.cancel();
        let op = Op {
            verb: "get",
            resource: "services",
            namespace: "ns".into(),
            name: None,
        };
        let r: Result<(), _> = caller.call(op, || async { Err(api_error(503)) }).await;
        assert!(matches!(r, Err(Error::Cancelled { .. })));
    }

    #[test]
    fn watches_end_on_the_server_before_our_read_timeout() {
        let c = watch_config();
        assert_eq!(c.timeout, Some(WATCH_TIMEOUT_SECS));
        assert!(
            Duration::from_secs(WATCH_TIMEOUT_SECS.into()) + Duration::from_secs(5) < READ_TIMEOUT
        );
    }
}
