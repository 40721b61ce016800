//! One `Destination.Get` watch, re-opened as a proxy re-opens it.

use std::{sync::Arc, time::Duration};

use backon::BackoffBuilder;
use linkerd2_proxy_api::destination::GetDestination;
use prometheus_client::metrics::counter::Counter;
use rand::Rng;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status, transport::Channel};

use super::{
    endpoints::UpdateKind,
    faults::Class,
    metrics::{Metrics, ServiceStreams},
    wire,
};

/// Settings shared by every stream.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// The context token sent with every `Get`.
    pub context_token: String,
    /// How long to wait for the first update before counting a timeout.
    pub initial_timeout: Duration,
    /// Random stream lifetime bounds; `None` = forever.
    pub lifetime: Option<(Duration, Duration)>,
    /// Reconnect backoff.
    pub backoff: BackoffConfig,
}

/// Exponential backoff with the proxy's parameters.
#[derive(Copy, Clone, Debug)]
pub struct BackoffConfig {
    /// First delay.
    pub min: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Up to this fraction of each delay is added at random.
    pub jitter: f64,
}

impl BackoffConfig {
    /// The delay after `failures` failed attempts, counting this one.
    pub(super) fn delay(&self, failures: &mut usize) -> Option<Duration> {
        // Past the doublings that reach `max` every delay is `max`'s.
        let doublings = (self.max.as_secs_f64() / self.min.as_secs_f64().max(1e-9))
            .log2()
            .ceil()
            .max(0.0) as usize;
        let delay = self.delays().nth((*failures).min(doublings + 1));
        *failures += 1;
        delay
    }

    fn delays(&self) -> impl Iterator<Item = Duration> + use<> {
        let jitter = self.jitter;
        // backon's own jitter adds up to 100% of the delay; the proxy adds a
        // fraction, so the fraction is applied here.
        backon::ExponentialBuilder::default()
            .with_min_delay(self.min)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .without_max_times()
            .build()
            .map(move |d| d.mul_f64(1.0 + rand::rng().random_range(0.0..=jitter)))
    }
}

/// Whether an error ends a stream for good, as the proxy treats it.
pub fn is_final(code: Code) -> bool {
    matches!(code, Code::InvalidArgument | Code::FailedPrecondition)
}

/// A metric label for an error: the gRPC code name, `transport` when the
/// connection itself failed, `timeout` when it timed out connecting or
/// waiting for the server's handshake.
pub fn error_reason(status: &Status) -> String {
    let chain = std::iter::successors(std::error::Error::source(status), |e| e.source());
    let mut transport = false;
    for e in chain {
        // A connect or handshake timeout (see `connector`), under the
        // transport error that carries it.
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return "timeout".to_string();
        }
        transport |= e.is::<tonic::transport::Error>() || e.is::<std::io::Error>();
    }
    if transport {
        return "transport".to_string();
    }
    format!("{:?}", status.code())
}

/// One stream's identity and where it reports.
pub struct Stream {
    /// The service's shared state.
    pub service: Arc<ServiceStreams>,
    /// This stream's index within the service.
    pub index: usize,
    /// The connection (simulated proxy) it runs on: a new channel arrives
    /// with connection churn, a new storm count with each reset storm.
    pub link: tokio::sync::watch::Receiver<Link>,
    /// How long a slow reader waits before reading each update.
    pub slow_delay: Duration,
}

/// What a connection's streams watch: one watch for both kinds of reset,
/// so a stream waits on one future for them (its size is in every stream).
#[derive(Clone, Debug)]
pub struct Link {
    /// The connection's current channel: replaced by connection churn.
    pub channel: Channel,
    /// Reset storms so far.
    pub storms: u64,
}

/// A stream's deadlines, served by one timer.
struct Timers {
    /// When the stream's random lifetime ends.
    lifetime_end: Option<Instant>,
    /// When the initial timeout is counted, until the first update or the count.
    initial_deadline: Option<Instant>,
    /// When a slow reader reads again.
    read_at: Option<Instant>,
}

impl Timers {
    /// The earliest deadline, if any.
    fn next(&self) -> Option<Instant> {
        [self.lifetime_end, self.initial_deadline, self.read_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Acts on the deadlines that passed: true when the lifetime ended;
    /// an initial timeout is counted once, a slow reader's pause ends.
    fn fire(&mut self, metrics: &Metrics) -> bool {
        let now = Instant::now();
        if self.lifetime_end.is_some_and(|t| t <= now) {
            return true;
        }
        if self.initial_deadline.is_some_and(|t| t <= now) {
            self.initial_deadline = None;
            metrics.initial_timeouts.inc();
        }
        if self.read_at.is_some_and(|t| t <= now) {
            self.read_at = None;
        }
        false
    }
}

/// A `Get` call: opening (boxed, and dropped once answered, so that its
/// state is not part of the stream's memory for the stream's life), then
/// its messages.
enum Call {
    Opening(futures::future::BoxFuture<'static, Result<wire::Updates, Status>>),
    Open(wire::Updates),
}

impl Call {
    /// The next message; answers the call first if it is still opening.
    /// Cancel-safe: the call's state stays in `self`.
    async fn next(&mut self) -> Result<Option<wire::Delta>, Status> {
        loop {
            match self {
                Call::Opening(get) => *self = Call::Open(get.await?),
                Call::Open(updates) => return updates.message().await,
            }
        }
    }
}

/// Why a stream's connection watch changed: a storm (first, if both), or
/// a new connection.
fn reset(link: &tokio::sync::watch::Receiver<Link>, storms_seen: u64) -> End {
    if link.borrow().storms != storms_seen {
        End::Storm
    } else {
        End::Churn
    }
}

enum End {
    Shutdown,
    Lifetime,
    Eos,
    Error(Status),
    /// A reset storm: re-Get at once.
    Storm,
    /// The connection was replaced: re-Get on the new one at once.
    Churn,
}

impl Stream {
    /// Runs the watch until `shutdown` or a final error.
    ///
    /// One task per stream, so this future's size is a stream's memory:
    /// the `Get` call's state is boxed and dropped once it is answered
    /// ([`Call`]), and one timer serves the lifetime, the initial timeout and a slow
    /// reader's pause (a unit test bounds the size).
    pub async fn run(
        self,
        cfg: Arc<StreamConfig>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) {
        let Self {
            service,
            index,
            mut link,
            slow_delay,
        } = self;
        let class = service.classes()[index];
        let counters: Vec<Counter> = UpdateKind::ALL
            .iter()
            .map(|k| metrics.update_counter(&service.service, *k, class))
            .collect();
        let slot = service.slot(index);
        // Failed attempts since the last update: the backoff's position.
        let mut failures = 0;
        loop {
            metrics.streams_created.inc();
            metrics.streams_active.inc();
            let opened = Instant::now();
            let lifetime_end = cfg.lifetime.map(|(lo, hi)| {
                opened
                    + if hi > lo {
                        rand::rng().random_range(lo..=hi)
                    } else {
                        lo
                    }
            });
            let mut timers = Timers {
                lifetime_end,
                initial_deadline: Some(opened + cfg.initial_timeout),
                read_at: None,
            };
            let mut first_seen = false;
            slot.reconnected();

            let end = 'stream: {
                let request = GetDestination {
                    scheme: "k8s".to_string(),
                    path: service.service.clone(),
                    context_token: cfg.context_token.clone(),
                };
                // A storm or a new connection that came while backing off
                // is acted on by this (re-)Get, not by resetting it.
                let (conn, storms_seen) = {
                    let l = link.borrow_and_update();
                    (l.channel.clone(), l.storms)
                };
                // The real controller sends headers lazily with the first
                // update, so the initial timeout covers the `Get` call too.
                let mut call = Call::Opening(Box::pin(wire::get(conn, request)));
                // A stuck stream reads its first update and then never
                // again (the stream stays open); a slow one waits before
                // each read.
                let stuck = class == Class::Stuck;
                let slow = class == Class::Slow;
                loop {
                    let paused = (stuck && first_seen) || timers.read_at.is_some();
                    let wake = timers.next();
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => break 'stream End::Shutdown,
                        _ = link.changed() => break 'stream reset(&link, storms_seen),
                        _ = sleep_until(wake.unwrap_or(opened)), if wake.is_some() => {
                            if timers.fire(&metrics) {
                                break 'stream End::Lifetime;
                            }
                        }
                        msg = call.next(), if !paused => match msg {
                            Ok(Some(update)) => {
                                counters[update.kind as usize].inc();
                                metrics.endpoint_updates_received.inc_by((update.addrs.len() + update.invalid_addrs) as u64);
                                let applied = slot.apply(index, &update, &service.truth);
                                if applied.invalid_addrs > 0 {
                                    metrics.invalid_addresses.inc_by(applied.invalid_addrs as u64);
                                }
                                if slow && !slow_delay.is_zero() {
                                    timers.read_at = Some(Instant::now() + slow_delay);
                                }
                                if !first_seen {
                                    first_seen = true;
                                    timers.initial_deadline = None;
                                    metrics.time_to_first_update.observe(opened.elapsed().as_secs_f64());
                                    failures = 0;
                                }
                            }
                            Ok(None) => break 'stream End::Eos,
                            Err(status) => break 'stream End::Error(status),
                        },
                    }
                }
            };
            metrics.streams_active.dec();
            metrics
                .stream_lifetime
                .observe(opened.elapsed().as_secs_f64());

            let delay = match end {
                End::Shutdown => return,
                End::Lifetime => {
                    metrics.reset("lifetime", class);
                    continue;
                }
                End::Storm => {
                    metrics.reset("reset_storm", class);
                    continue;
                }
                End::Churn => {
                    metrics.reset("connection_churn", class);
                    continue;
                }
                End::Eos => {
                    metrics.reset("end_of_stream", class);
                    cfg.backoff.delay(&mut failures)
                }
                End::Error(status) => {
                    let reason = error_reason(&status);
                    metrics.error(&reason, class);
                    if is_final(status.code()) {
                        metrics.failed(&reason, class);
                        slot.answer_failed();
                        tracing::warn!(
                            service = %service.service,
                            stream = index,
                            code = ?status.code(),
                            message = status.message(),
                            "stream ended for good"
                        );
                        return;
                    }
                    metrics
                        .error_log
                        .note("Get", &service.service, &reason, &status);
                    tracing::debug!(service = %service.service, stream = index, %reason, message = status.message(), source = ?std::error::Error::source(&status), "stream error; backing off");
                    metrics.reset(&reason, class);
                    cfg.backoff.delay(&mut failures)
                }
            };
            let delay = delay.unwrap_or(cfg.backoff.max);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = sleep(delay) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_within_jitter() {
        let cfg = BackoffConfig {
            min: Duration::from_millis(100),
            max: Duration::from_secs(60),
            jitter: 0.1,
        };
        let delays: Vec<Duration> = cfg.delays().take(12).collect();
        let mut base = Duration::from_millis(100);
        for d in &delays {
            assert!(
                *d >= base && *d <= base.mul_f64(1.1) + Duration::from_micros(1),
                "{d:?} vs {base:?}"
            );
            base = (base * 2).min(Duration::from_secs(60));
        }
        assert!(delays.last().unwrap() >= &Duration::from_secs(60));
        // A stream's count of failures walks the same sequence.
        let mut failures = 0;
        let walked: Vec<Duration> = (0..12).filter_map(|_| cfg.delay(&mut failures)).collect();
        assert_eq!(failures, 12);
        for (w, d) in walked.iter().zip(&delays) {
            assert!(
                *w >= d.mul_f64(1.0 / 1.1) && *w <= d.mul_f64(1.1),
                "{w:?} vs {d:?}"
            );
        }
    }

    /// A stream's task is mostly this future: its size is part of every
    /// stream's memory (3,008 bytes before the `Get` call was boxed and
    /// dropped once answered, the metrics shared and the timers merged;
    /// 1,192 after; 1,056 reading our own frames instead of tonic's
    /// `Streaming`; 888 with the backoff a count and the connection taken
    /// at each `Get`; 744 with one watch for storms and churn; 768 with
    /// one select loop over the call's two phases). tokio
    /// allocates a task in steps of 128 bytes, header and future together.
    #[tokio::test]
    async fn a_streams_future_stays_small() {
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Arc::new(Metrics::register(&mut registry, Default::default()));
        let service = Arc::new(ServiceStreams::new(
            "foo.ns.svc.cluster.local:80".into(),
            vec![Class::Healthy],
            metrics.latencies.clone(),
        ));
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        let stream = Stream {
            service,
            index: 0,
            link: tokio::sync::watch::channel(Link { channel, storms: 0 }).1,
            slow_delay: Duration::ZERO,
        };
        let cfg = Arc::new(StreamConfig {
            context_token: String::new(),
            initial_timeout: Duration::from_secs(1),
            lifetime: None,
            backoff: BackoffConfig {
                min: Duration::from_secs(1),
                max: Duration::from_secs(1),
                jitter: 0.0,
            },
        });
        let fut = stream.run(cfg, metrics, CancellationToken::new());
        let size = std::mem::size_of_val(&fut);
        assert!(size <= 800, "{size} bytes");
    }

    #[test]
    fn only_invalid_argument_and_failed_precondition_are_final() {
        assert!(is_final(Code::InvalidArgument));
        assert!(is_final(Code::FailedPrecondition));
        for code in [
            Code::Ok,
            Code::NotFound,
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Internal,
        ] {
            assert!(!is_final(code), "{code:?}");
        }
    }
}
