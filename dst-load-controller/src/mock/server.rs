//! The gRPC `Destination` service over the store, with the real controller's
//! semantics (or the older `no_endpoints` ones) and injected delays.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration, time::SystemTime};

use linkerd2_proxy_api::destination::{
    self as pb, AddrSet, GetDestination, NoEndpoints, ProtocolHint, TlsIdentity, Update,
    WeightedAddr, WeightedAddrSet, protocol_hint, tls_identity, update,
};
use rand::Rng;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{
    codec::Encoded,
    metrics::Metrics,
    queue::{self, Receiver, Sender},
    store::{Change, Sink, Store, Subscription},
};
use crate::target::Authority;

/// How updates are shaped and delivered.
#[derive(Clone, Debug)]
pub struct Behavior {
    /// Send `no_endpoints` (as older controllers did) instead of nothing or remove-all.
    pub legacy_no_endpoints: bool,
    /// Updates queued per stream before the stream is ended as too slow.
    pub queue_capacity: usize,
    /// Delay before each change is delivered to each stream.
    pub delay: Delay,
    /// Added to `delay`: this much per stream open on the server, so that
    /// latency grows with the load (a red line known in advance, for tests).
    pub delay_per_stream: Duration,
    /// The trust domain in TLS identities.
    pub trust_domain: String,
    /// The cluster domain a policy lookup of `name.ns.svc` completes with.
    pub cluster_domain: String,
    /// The networks the `cluster-*` inbound policies admit (Linkerd's
    /// `clusterNetworks`).
    pub cluster_networks: Vec<ipnet::IpNet>,
    /// The control-plane namespace in TLS identities and labels.
    pub control_plane_ns: String,
    /// A fault for testing clients: every Nth stream opened never receives
    /// removals, as a controller with a stale-endpoints bug would behave.
    pub withhold_removals_every: Option<usize>,
    /// Endpoints carry no TLS identity and no protocol hint, as pods
    /// without a proxy: a real proxy then speaks to them in plain text and
    /// in the protocol it was given (meshed endpoints, the default, get mTLS
    /// and HTTP/2 from it).
    pub unmeshed: bool,
    /// Endpoints carry their address and weight only: no labels either
    /// (with `unmeshed`, what linkerd2-mock-dst sends). Fewest bytes per
    /// update.
    pub bare: bool,
}

impl Default for Behavior {
    fn default() -> Self {
        Self {
            legacy_no_endpoints: false,
            queue_capacity: 100,
            delay: Delay::None,
            delay_per_stream: Duration::ZERO,
            trust_domain: "cluster.local".into(),
            cluster_domain: "cluster.local".into(),
            cluster_networks: super::inbound::default_cluster_networks(),
            control_plane_ns: "linkerd".into(),
            withhold_removals_every: None,
            unmeshed: false,
            bare: false,
        }
    }
}

/// Delivery delay injected before each update on each stream.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub enum Delay {
    /// Deliver at once.
    #[default]
    None,
    /// Always this long.
    Fixed(Duration),
    /// Uniformly random between the bounds.
    Uniform(Duration, Duration),
}

impl Delay {
    fn sample(&self) -> Option<Duration> {
        match *self {
            Delay::None => None,
            Delay::Fixed(d) => Some(d),
            Delay::Uniform(lo, hi) if hi > lo => Some(rand::rng().random_range(lo..=hi)),
            Delay::Uniform(lo, _) => Some(lo),
        }
    }
}

impl std::fmt::Display for Delay {
    /// As parsed: `none`, `50ms`, `10ms..200ms`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let h = humantime::format_duration;
        match *self {
            Delay::None => f.write_str("none"),
            Delay::Fixed(d) => write!(f, "{}", h(d)),
            Delay::Uniform(lo, hi) => write!(f, "{}..{}", h(lo), h(hi)),
        }
    }
}

/// Not a [`Delay`].
#[derive(Debug, thiserror::Error)]
pub enum DelayError {
    /// Not a duration.
    #[error("invalid delay '{value}': {why}; expected e.g. 50ms or 10ms..200ms")]
    Duration {
        /// As given.
        value: String,
        /// Why.
        why: humantime::DurationError,
    },
    /// A range upside down.
    #[error("delay range '{0}' has its minimum above its maximum")]
    Range(String),
}

impl std::str::FromStr for Delay {
    type Err = DelayError;

    /// `none`, `50ms`, or `10ms..200ms`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parse = |v: &str| {
            humantime::parse_duration(v.trim()).map_err(|why| DelayError::Duration {
                value: v.to_string(),
                why,
            })
        };
        if s == "none" || s.is_empty() {
            return Ok(Delay::None);
        }
        match s.split_once("..") {
            Some((lo, hi)) => {
                let (lo, hi) = (parse(lo)?, parse(hi)?);
                if lo > hi {
                    return Err(DelayError::Range(s.to_string()));
                }
                Ok(Delay::Uniform(lo, hi))
            }
            None => Ok(Delay::Fixed(parse(s)?)),
        }
    }
}

/// The Destination service.
#[derive(Clone)]
pub struct Service {
    opened: Arc<std::sync::atomic::AtomicUsize>,
    store: Store,
    behavior: Arc<Behavior>,
    metrics: Metrics,
    shutdown: CancellationToken,
}

impl Service {
    /// A service over `store`.
    pub fn new(
        store: Store,
        behavior: Behavior,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            opened: Default::default(),
            store,
            behavior: Arc::new(behavior),
            metrics,
            shutdown,
        }
    }
}

/// Parses a `Get` path as the controller does: `name.ns.svc.domain[:port]`,
/// port 80 when absent; IP literals are refused.
pub fn parse_path(path: &str) -> Result<Authority, Status> {
    service_authority(path).map_err(|why| {
        Status::invalid_argument(format!(
            "Invalid authority: {}: {why}",
            super::codec::echoed(path)
        ))
    })
}

/// Why a `Get` path or a control API name is no service's authority.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotAService {
    /// Longer than any name and port.
    #[error("longer than any name and port")]
    TooLong,
    /// An IP address.
    #[error("IP addresses are not service names")]
    Address,
    /// No authority at all.
    #[error(transparent)]
    Unparsable(#[from] crate::target::TargetError),
    /// A host that is not a service's name.
    #[error("not a name of the form <svc>.<ns>.svc.<cluster-domain>")]
    NotAName,
}

/// A service's authority as `Get` takes it (`name.ns.svc.domain[:port]`,
/// port 80 when absent), or why it is not one. Every destination the mock
/// serves is one: those given at start-up and over the control API too.
pub fn service_authority(path: &str) -> Result<Authority, NotAService> {
    if super::codec::echoed(path).len() != path.len() {
        return Err(NotAService::TooLong);
    }
    let host = path.rsplit_once(':').map_or(path, |(h, _)| h);
    if host
        .trim_matches(['[', ']'])
        .parse::<std::net::IpAddr>()
        .is_ok()
    {
        return Err(NotAService::Address);
    }
    let with_port = if path.contains(':') {
        path.to_string()
    } else {
        format!("{path}:80")
    };
    let authority: Authority = with_port.parse()?;
    if !authority.host().contains(".svc.") {
        return Err(NotAService::NotAName);
    }
    Ok(authority)
}

/// A `Get` stream's messages, encoded.
pub type UpdateStream = Receiver<Encoded>;

impl Service {
    /// Answers a `Get`: the destination's set, then every change, each
    /// change's messages encoded once for every stream.
    ///
    /// A stream with nothing of its own to do (no delay, every removal) is
    /// handed each change by the call that makes it, straight into its
    /// queue; a stream with a delay or a withheld-removals fault follows the
    /// change feed in a task of its own.
    pub async fn get(
        &self,
        req: Request<GetDestination>,
    ) -> Result<Response<UpdateStream>, Status> {
        let path = req.into_inner().path;
        let authority = parse_path(&path)?;
        let not_found = || Status::not_found(format!("Service {} not found", authority.host()));
        // Only streams count toward every Nth: a NotFound answer is none.
        if !self.store.exists(&authority) {
            return Err(not_found());
        }
        let (tx, rx) = queue::queue(self.behavior.queue_capacity, &self.shutdown);
        let mut shaper = Shaper::new(&authority, &self.behavior);
        let n = self
            .opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        shaper.withhold_removals = self
            .behavior
            .withhold_removals_every
            .is_some_and(|every| every > 0 && n.is_multiple_of(every));
        let queue = Queue {
            tx,
            shaper,
            metrics: self.metrics.clone(),
        };
        let direct = !queue.shaper.withhold_removals
            && self.behavior.delay == Delay::None
            && self.behavior.delay_per_stream.is_zero();
        if direct {
            let found = self.store.attach(&authority, |exists, snapshot| {
                if !exists {
                    return (None, false);
                }
                queue.initial(snapshot);
                (Some(Box::new(queue) as Box<dyn Sink>), true)
            });
            if found != Some(true) {
                return Err(not_found());
            }
        } else {
            let Some(sub) = self.store.subscribe(&authority).filter(|s| s.exists) else {
                return Err(not_found());
            };
            let span = tracing::debug_span!("get", %authority);
            let task = follow(queue, sub, self.behavior.clone(), self.shutdown.clone());
            tokio::spawn(tracing::Instrument::instrument(task, span));
        }
        // Counted open for as long as the response stream lives.
        Ok(Response::new(rx.holding(self.metrics.stream_opened())))
    }
}

/// A stream's queue of encoded messages, and the shape of its messages.
struct Queue {
    tx: Sender<Encoded>,
    shaper: Shaper,
    metrics: Metrics,
}

impl Queue {
    fn send(&self, u: Encoded) -> Result<(), queue::Refused> {
        let n = u.endpoints;
        self.tx.try_send(u)?;
        self.metrics.sent(n);
        Ok(())
    }

    /// The first message: the set when the stream opened; in legacy mode
    /// `no_endpoints` for an empty one, else nothing (as the controller).
    fn initial(&self, snapshot: &[SocketAddr]) -> bool {
        let first = if !snapshot.is_empty() {
            Some(Encoded::new(&self.shaper.add(snapshot)))
        } else if self.shaper.legacy {
            Some(Encoded::new(&no_endpoints(true)))
        } else {
            None
        };
        first.is_none_or(|u| self.send(u).is_ok())
    }

    /// Queues one change's messages (built once for every stream of the
    /// destination; a stream withholding removals builds its own). A full
    /// queue ends the stream with OK, as the controller ends a slow
    /// consumer: `false`, as for a stream that has ended.
    fn change(&self, change: &Change) -> bool {
        let own;
        let updates = if self.shaper.withhold_removals {
            own = self.shaper.encoded(change);
            &own
        } else {
            change.shaped.0.get_or_init(|| self.shaper.encoded(change))
        };
        for u in updates {
            match self.send(u.clone()) {
                Ok(()) => {}
                Err(queue::Refused::Full) => {
                    self.metrics.overflow();
                    tracing::debug!("stream queue full; ending it");
                    return false;
                }
                Err(queue::Refused::Closed) => return false,
            }
        }
        if !updates.is_empty() {
            self.metrics.delivered(change.at);
        }
        true
    }
}

impl Sink for Queue {
    fn hand(&mut self, change: &Arc<Change>) -> bool {
        // An ended stream refuses the first message: one lock, not two.
        self.change(change)
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// A delayed (or faulty) stream: follows the change feed and queues each
/// change when its delay is due.
async fn follow(
    queue: Queue,
    sub: Subscription,
    behavior: Arc<Behavior>,
    shutdown: CancellationToken,
) {
    let metrics = &queue.metrics;
    if !queue.initial(&sub.snapshot) {
        return;
    }
    let mut changes = sub.changes;
    loop {
        let change = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = queue.tx.closed() => return,
            c = changes.recv() => c,
        };
        let change = match change {
            Ok(c) => c,
            Err(RecvError::Lagged(_)) => {
                metrics.overflow();
                tracing::debug!("stream fell behind the change feed; ending it");
                return;
            }
            Err(RecvError::Closed) => return,
        };
        let per_stream = behavior
            .delay_per_stream
            .saturating_mul(metrics.streams_active.get().max(0) as u32);
        let delay = match behavior.delay.sample() {
            Some(d) => Some(d + per_stream),
            None => (!per_stream.is_zero()).then_some(per_stream),
        };
        if let Some(d) = delay {
            // Counted from the change, not from when this task heard of
            // it: the delivery is due at change + delay.
            let late = SystemTime::now()
                .duration_since(change.at)
                .unwrap_or_default();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(d.saturating_sub(late)) => {}
            }
        }
        if !queue.change(&change) {
            return;
        }
    }
}

fn no_endpoints(exists: bool) -> Update {
    Update {
        update: Some(update::Update::NoEndpoints(NoEndpoints { exists })),
    }
}

/// Builds the messages a stream sends, with realistic per-address metadata.
pub(super) struct Shaper {
    withhold_removals: bool,
    service: String,
    namespace: String,
    identity: String,
    legacy: bool,
    unmeshed: bool,
    bare: bool,
}

impl Shaper {
    pub(super) fn new(authority: &Authority, b: &Behavior) -> Self {
        let mut parts = authority.host().split('.');
        let service = parts.next().unwrap_or_default().to_string();
        let namespace = parts.next().unwrap_or("default").to_string();
        let identity = format!(
            "default.{namespace}.serviceaccount.identity.{}.{}",
            b.control_plane_ns, b.trust_domain
        );
        Self {
            withhold_removals: false,
            service,
            namespace,
            identity,
            legacy: b.legacy_no_endpoints,
            unmeshed: b.unmeshed || b.bare,
            bare: b.bare,
        }
    }

    fn add(&self, addrs: &[SocketAddr]) -> Update {
        let addrs = addrs.iter().map(|a| self.weighted(*a)).collect();
        let metric_labels = HashMap::from([
            ("service".to_string(), self.service.clone()),
            ("namespace".to_string(), self.namespace.clone()),
        ]);
        Update {
            update: Some(update::Update::Add(WeightedAddrSet {
                addrs,
                metric_labels,
            })),
        }
    }

    /// The namespace of the destination's pods.
    pub(super) fn namespace(&self) -> &str {
        &self.namespace
    }

    /// An address as its pod's endpoint: labels, identity, protocol hint
    /// (the last two for meshed pods only).
    pub(super) fn weighted(&self, addr: SocketAddr) -> WeightedAddr {
        let metric_labels = if self.bare {
            HashMap::new()
        } else {
            let pod = format!(
                "{}-{}",
                self.service,
                addr.ip().to_string().replace(['.', ':'], "-")
            );
            HashMap::from([
                ("pod".to_string(), pod),
                ("deployment".to_string(), self.service.clone()),
                ("serviceaccount".to_string(), "default".to_string()),
            ])
        };
        WeightedAddr {
            addr: Some(addr.into()),
            weight: 10_000,
            metric_labels,
            tls_identity: (!self.unmeshed).then(|| TlsIdentity {
                server_name: None,
                strategy: Some(tls_identity::Strategy::DnsLikeIdentity(
                    tls_identity::DnsLikeIdentity {
                        name: self.identity.clone(),
                    },
                )),
            }),
            protocol_hint: (!self.unmeshed).then_some(ProtocolHint {
                opaque_transport: None,
                protocol: Some(protocol_hint::Protocol::H2(protocol_hint::H2 {})),
            }),
            ..Default::default()
        }
    }

    /// A change's messages, encoded.
    fn encoded(&self, change: &Change) -> Vec<Encoded> {
        self.updates(change).iter().map(Encoded::new).collect()
    }

    /// One batched add, then one batched remove. In legacy mode a set that
    /// empties is announced as `no_endpoints` instead of a remove.
    fn updates(&self, change: &Change) -> Vec<Update> {
        let mut out = Vec::with_capacity(2);
        if !change.added.is_empty() {
            out.push(self.add(&change.added));
        }
        if self.legacy && change.len == 0 {
            out.push(no_endpoints(change.exists));
        } else if !change.removed.is_empty() && !self.withhold_removals {
            let addrs = change.removed.iter().map(|a| (*a).into()).collect();
            out.push(Update {
                update: Some(update::Update::Remove(AddrSet { addrs })),
            });
        }
        out
    }
}

/// Re-exported for tests that decode what the mock sent.
pub use pb::update::Update as UpdateKind;

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn the_largest_destination_fits_in_one_grpc_message() {
        // The longest names: 63-character service and namespace labels,
        // IPv6 addresses that print at full length, the highest port.
        let authority: Authority = format!(
            "{}.{}.svc.cluster.local:65535",
            "s".repeat(63),
            "n".repeat(63)
        )
        .parse()
        .unwrap();
        let net = "ffff:ffff:ffff:ffff::/64".parse().unwrap();
        let max = crate::limits::MAX_ENDPOINTS_PER_DESTINATION;
        let addrs = crate::mock::generate::endpoints(&net, max, 65535);
        assert_eq!(addrs.len(), max as usize);
        let add = Shaper::new(&authority, &Behavior::default()).add(&addrs);
        let len = add.encoded_len();
        // With its 5-byte gRPC frame header, under tonic's default limit.
        assert!(len + 5 <= 4 * 1024 * 1024, "{len} bytes");
        // And the bound is not far below what fits (it is the limit, not a guess).
        assert!(len * 2 > 4 * 1024 * 1024, "{len} bytes");
    }

    #[test]
    fn bare_endpoints_carry_their_address_and_weight_only() {
        let authority: Authority = "web.ns.svc.cluster.local:80".parse().unwrap();
        let addr: SocketAddr = "10.1.0.7:8080".parse().unwrap();
        let bare = Behavior {
            bare: true,
            ..Default::default()
        };
        let w = Shaper::new(&authority, &bare).weighted(addr);
        assert_eq!(
            w,
            WeightedAddr {
                addr: Some(addr.into()),
                weight: 10_000,
                ..Default::default()
            }
        );
        let full = Shaper::new(&authority, &Behavior::default()).weighted(addr);
        assert_eq!(full.metric_labels["pod"], "web-10-1-0-7");
        assert!(w.encoded_len() < full.encoded_len() / 3, "{w:?}");
    }

    #[test]
    fn unmeshed_endpoints_carry_no_identity_and_no_protocol_hint() {
        let authority: Authority = "web.ns.svc.cluster.local:80".parse().unwrap();
        let addr = "10.0.0.1:80".parse().unwrap();
        let meshed = Shaper::new(&authority, &Behavior::default()).weighted(addr);
        assert!(meshed.tls_identity.is_some() && meshed.protocol_hint.is_some());
        let unmeshed = Behavior {
            unmeshed: true,
            ..Default::default()
        };
        let plain = Shaper::new(&authority, &unmeshed).weighted(addr);
        assert_eq!((plain.tls_identity, plain.protocol_hint), (None, None));
        // Everything else is as a meshed pod's.
        assert_eq!(plain.metric_labels, meshed.metric_labels);
        assert_eq!((plain.addr, plain.weight), (meshed.addr, meshed.weight));
    }
}
