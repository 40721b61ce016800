//! What each service's endpoint set should be (the ground truth), and how
//! long every stream takes to reflect a change to it.
//!
//! A change to the truth opens an epoch. Within it, each stream records:
//! - update latency: from the change to the first update that reflects it
//!   (touches a changed address, or leaves the stream's set equal to the truth);
//! - convergence latency: from the change to the moment the stream's set
//!   equals the truth.
//!
//! The epoch records fan-out completion: from the change until the last
//! stream converged.
//!
//! Timestamps are wall-clock (`SystemTime`) because the change is stamped by
//! another component (the mock, or churn through the Kubernetes API).

use super::{
    endpoints::{Addrs, UpdateKind},
    faults::Class,
    label::StreamLabel,
    wire::Delta,
};
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use hdrhistogram::Histogram as Hdr;

pub use crate::latency::{Kind, PatternLatencies, Percentiles, Timings};
use crate::latency::{buckets, micros, mk_hdr};
use crate::measurements::ChangeRecord;
use prometheus_client::{
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::{Registry, Unit},
};

/// Latency recorders: Prometheus histograms for dashboards and HDR
/// histograms (microsecond resolution) for exact report percentiles.
#[derive(Clone, Debug)]
pub struct Latencies {
    update: Family<StreamLabel, Histogram>,
    convergence: Family<StreamLabel, Histogram>,
    fanout: Family<StreamLabel, Histogram>,
    kubernetes_leg: Family<StreamLabel, Histogram>,
    destination_leg: Family<StreamLabel, Histogram>,
    /// Every kind, healthy streams only (all streams are, without faults),
    /// then the update latencies since the last [`Latencies::take_window`].
    hdr: Arc<Mutex<[Hdr<u64>; 6]>>,
    /// Update, convergence and fan-out samples by pattern (healthy streams).
    by_pattern: Arc<Mutex<ByPattern>>,
    /// Update, convergence and fan-out samples by class.
    by_class: Arc<Mutex<ByPattern>>,
    /// Every measured change's fan-out (the first [`MAX_CHANGES`]).
    changes: Arc<Mutex<Vec<ChangeRecord>>>,
    /// Observations that came before the change by the clocks involved.
    pub clock_skew: Counter,
}

impl Latencies {
    /// Registers `update_latency_seconds`, `convergence_latency_seconds`,
    /// `fanout_completion_seconds` and `clock_skew_total` into `reg`.
    pub fn register(reg: &mut Registry) -> Self {
        let l = Self {
            update: Family::new_with_constructor(buckets),
            convergence: Family::new_with_constructor(buckets),
            fanout: Family::new_with_constructor(buckets),
            kubernetes_leg: Family::new_with_constructor(buckets),
            destination_leg: Family::new_with_constructor(buckets),
            hdr: Arc::new(Mutex::new([
                mk_hdr(),
                mk_hdr(),
                mk_hdr(),
                mk_hdr(),
                mk_hdr(),
                mk_hdr(),
            ])),
            by_pattern: Arc::default(),
            by_class: Arc::default(),
            changes: Arc::default(),
            clock_skew: Counter::default(),
        };
        reg.register_with_unit(
            "update_latency",
            "From a change to the first update on a stream that reflects it",
            Unit::Seconds,
            l.update.clone(),
        );
        reg.register_with_unit(
            "convergence_latency",
            "From a change to a stream's set equal to the new ground truth",
            Unit::Seconds,
            l.convergence.clone(),
        );
        reg.register_with_unit(
            "fanout_completion",
            "From a change until the last stream converged",
            Unit::Seconds,
            l.fanout.clone(),
        );
        reg.register_with_unit(
            "kubernetes_leg",
            "From a scale to our watch seeing its EndpointSlice change",
            Unit::Seconds,
            l.kubernetes_leg.clone(),
        );
        reg.register_with_unit(
            "destination_leg",
            "From our watch seeing an EndpointSlice change to a stream converged to it",
            Unit::Seconds,
            l.destination_leg.clone(),
        );
        reg.register(
            "clock_skew",
            "Observations stamped before the change they reflect (counted as zero latency)",
            l.clock_skew.clone(),
        );
        l
    }

    fn record(&self, kind: Kind, label: &StreamLabel, latency: Duration) {
        let family = match kind {
            Kind::Update => &self.update,
            Kind::Convergence => &self.convergence,
            Kind::Fanout => &self.fanout,
            Kind::KubernetesLeg => &self.kubernetes_leg,
            Kind::DestinationLeg => &self.destination_leg,
        };
        family.get_or_create(label).observe(latency.as_secs_f64());
        let healthy = label.class == Class::Healthy.as_str();
        if healthy {
            let mut hdr = self.hdr.lock().expect("hdr lock");
            hdr[kind as usize].saturating_record(micros(latency));
            if kind == Kind::Update {
                hdr[WINDOW].saturating_record(micros(latency));
            }
        }
        let per = match kind {
            Kind::Update => 0,
            Kind::Convergence => 1,
            Kind::Fanout => 2,
            Kind::KubernetesLeg | Kind::DestinationLeg => return,
        };
        let record = |map: &Mutex<ByPattern>, key: &'static str| {
            map.lock()
                .expect("hdr lock")
                .entry(key)
                .or_insert_with(|| [mk_hdr(), mk_hdr(), mk_hdr()])[per]
                .saturating_record(micros(latency));
        };
        if healthy {
            record(&self.by_pattern, label.pattern);
        }
        record(&self.by_class, label.class);
    }

    /// Update, convergence and fan-out percentiles of each pattern with
    /// samples (healthy streams).
    pub fn by_pattern(&self) -> BTreeMap<String, PatternLatencies> {
        Self::percentiles_of(&self.by_pattern)
    }

    /// Update, convergence and fan-out percentiles of each class with samples.
    pub fn by_class(&self) -> BTreeMap<String, PatternLatencies> {
        Self::percentiles_of(&self.by_class)
    }

    fn percentiles_of(map: &Mutex<ByPattern>) -> BTreeMap<String, PatternLatencies> {
        map.lock()
            .expect("hdr lock")
            .iter()
            .map(|(pattern, [u, c, f])| {
                let p = PatternLatencies {
                    update_latency: Percentiles::from_hdr(u),
                    convergence_latency: Percentiles::from_hdr(c),
                    fanout_completion: Percentiles::from_hdr(f),
                };
                (pattern.to_string(), p)
            })
            .collect()
    }

    /// Every measured change's fan-out so far, in the order they ended.
    pub fn changes(&self) -> Vec<ChangeRecord> {
        self.changes.lock().expect("changes lock").clone()
    }

    fn record_change(&self, record: ChangeRecord) {
        let mut changes = self.changes.lock().expect("changes lock");
        if changes.len() < MAX_CHANGES {
            changes.push(record);
        }
    }

    /// The update latencies (healthy streams) recorded since the last call,
    /// then forgotten: none when there were none.
    pub fn take_window(&self) -> Option<crate::measurements::WindowLatency> {
        let mut hdr = self.hdr.lock().expect("hdr lock");
        let window = &mut hdr[WINDOW];
        if window.is_empty() {
            return None;
        }
        let at = |q: f64| window.median_equivalent(window.value_at_quantile(q)) as f64 / 1e6;
        let w = crate::measurements::WindowLatency {
            count: window.len(),
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
        };
        window.reset();
        Some(w)
    }

    /// Percentiles of every sample of `kind` so far.
    pub fn percentiles(&self, kind: Kind) -> Percentiles {
        Percentiles::from_hdr(&self.hdr.lock().expect("hdr lock")[kind as usize])
    }
}

/// Where [`Latencies`] keeps the update latencies of the current window.
const WINDOW: usize = 5;

/// The most change records a client keeps (about 100 bytes each).
pub const MAX_CHANGES: usize = 200_000;

/// Seconds since the Unix epoch.
fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Update, convergence and fan-out histograms per pattern.
type ByPattern = BTreeMap<&'static str, [Hdr<u64>; 3]>;

#[derive(Debug, Default, Clone, Copy)]
struct Mark {
    updated: bool,
    converged: bool,
}

#[derive(Debug)]
struct Epoch {
    version: u64,
    changed_at: SystemTime,
    /// When our Kubernetes watch saw the change, if it came from one.
    seen_at: Option<SystemTime>,
    expected: Addrs,
    changed: Addrs,
    /// Whether latencies are recorded (not for the first truth: nothing changed).
    measured: bool,
    marks: Vec<Mark>,
    pending: usize,
    /// Streams of each class not converged yet.
    pending_by_class: [usize; 3],
    /// When the first stream of the counted class converged, after the change.
    first_converged: Option<Duration>,
}

/// One service's truth and its streams' progress towards it.
#[derive(Debug)]
pub struct ServiceTruth {
    /// Each stream's class.
    classes: Vec<Class>,
    /// The metric labels of the service's streams, by class (built once:
    /// every latency sample uses them).
    labels: [StreamLabel; 3],
    epoch: Mutex<Option<Epoch>>,
    latencies: Latencies,
    /// Epochs whose every (healthy) stream converged.
    pub completed: Counter,
    /// Epochs replaced by a newer change before every (healthy) stream converged.
    pub superseded: Counter,
    /// Streams found holding a new truth with a set from before its change
    /// (lagging behind a service that changed back): converged, not timed.
    pub untimed: Counter,
}

/// Where a stream stands against the truth.
#[derive(Debug, PartialEq, Eq)]
pub enum Standing {
    /// No truth is known.
    Unknown,
    /// The set equals the truth.
    Converged,
    /// The set differs; `since` is when the truth changed.
    Differs {
        /// The change the stream has not caught up with.
        since: SystemTime,
    },
}

impl ServiceTruth {
    /// A service whose streams are of `classes` (one each), no truth yet.
    pub fn new(service: String, classes: Vec<Class>, latencies: Latencies) -> Self {
        Self {
            labels: Class::ALL.map(|c| StreamLabel::new(&service, c)),
            classes,
            epoch: Mutex::new(None),
            latencies,
            completed: Counter::default(),
            superseded: Counter::default(),
            untimed: Counter::default(),
        }
    }

    /// Sets the truth as of `changed_at`, returning the new epoch's version.
    /// Streams that already hold it are found by the caller through
    /// [`ServiceTruth::observed`] (they may have been faster than the truth).
    pub fn set(
        &self,
        expected: impl IntoIterator<Item = SocketAddr>,
        changed_at: SystemTime,
    ) -> u64 {
        self.set_seen(expected, changed_at, None)
    }

    /// Like [`ServiceTruth::set`], for a change our watch saw at `seen_at`:
    /// also records the Kubernetes leg, and the destination leg as streams converge.
    pub fn set_seen(
        &self,
        expected: impl IntoIterator<Item = SocketAddr>,
        changed_at: SystemTime,
        seen_at: Option<SystemTime>,
    ) -> u64 {
        self.set_epoch(expected, changed_at, seen_at, true)
    }

    /// Sets the truth after a change whose time is unknown (found by a
    /// re-list of the Kubernetes API): streams are checked against it, but
    /// no latency is recorded for it.
    pub fn set_unmeasured(&self, expected: impl IntoIterator<Item = SocketAddr>) -> u64 {
        let now = SystemTime::now();
        self.set_epoch(expected, now, Some(now), false)
    }

    fn set_epoch(
        &self,
        expected: impl IntoIterator<Item = SocketAddr>,
        changed_at: SystemTime,
        seen_at: Option<SystemTime>,
        timed: bool,
    ) -> u64 {
        let expected: Addrs = expected.into_iter().collect();
        let mut guard = self.epoch.lock().expect("truth lock");
        let (version, changed, measured) = match guard.as_ref() {
            None => (0, Addrs::default(), false),
            // Not a change: keep measuring the epoch in progress.
            Some(prev) if prev.expected == expected => return prev.version,
            Some(prev) => {
                if prev.measured && self.counted(prev) > 0 {
                    self.superseded.inc();
                    self.latencies.record_change(ChangeRecord {
                        service: self.labels[0].service.to_string(),
                        at: unix(prev.changed_at),
                        first_converged: prev.first_converged.map(|d| d.as_secs_f64()),
                        last_converged: None,
                        endpoints: Some(prev.expected.len() as u64),
                    });
                }
                (
                    prev.version + 1,
                    prev.expected
                        .symmetric_difference(&expected)
                        .copied()
                        .collect(),
                    timed,
                )
            }
        };
        if let (true, Some(seen)) = (measured, seen_at) {
            // A property of the change, not of any stream: recorded once.
            self.latencies.record(
                Kind::KubernetesLeg,
                &self.labels[Class::Healthy as usize],
                self.elapsed(changed_at, seen),
            );
        }
        *guard = Some(Epoch {
            version,
            changed_at,
            seen_at,
            expected,
            changed,
            measured,
            marks: vec![Mark::default(); self.classes.len()],
            pending: self.classes.len(),
            pending_by_class: Class::ALL.map(|c| self.classes.iter().filter(|x| **x == c).count()),
            first_converged: None,
        });
        version
    }

    /// Records what stream `i` holds after `update` (None when called from a
    /// scan rather than an update), observed at `at`.
    pub fn observed(&self, i: usize, set: &Addrs, update: Option<&Delta>, at: SystemTime) {
        let mut guard = self.epoch.lock().expect("truth lock");
        let Some(epoch) = guard.as_mut() else { return };
        let mark = &mut epoch.marks[i];
        if mark.converged {
            // A stream that drifts away after converging shows up as stale,
            // not as a second latency sample for the same change.
            return;
        }
        let converged = *set == epoch.expected;
        let touches = update.is_some_and(|u| reflects(u, &epoch.changed, &epoch.expected));
        if !(touches || converged) {
            return;
        }
        // A stream found holding the truth by a scan, whose set dates from
        // before the change, did not observe it: its set was already right
        // (a lagging stream on a service that changed back). It converged,
        // but there is no time to record.
        if epoch.measured && update.is_none() && converged && at < epoch.changed_at {
            mark.converged = true;
            mark.updated = true;
            epoch.pending -= 1;
            let class = self.classes[i];
            epoch.pending_by_class[class as usize] -= 1;
            self.untimed.inc();
            tracing::debug!(
                service = %self.labels[0].service,
                stream = i,
                version = epoch.version,
                set_since_change = ?epoch.changed_at.duration_since(at).unwrap_or_default(),
                endpoints = epoch.expected.len(),
                "a stream holds the new truth with a set from before its change: converged, untimed"
            );
            if class == self.counted_class() && epoch.pending_by_class[class as usize] == 0 {
                self.completed.inc();
            }
            return;
        }
        let latency = if epoch.measured {
            self.elapsed(epoch.changed_at, at)
        } else {
            Duration::ZERO
        };
        let class = self.classes[i];
        let label = &self.labels[class as usize];
        if epoch.measured && !mark.updated {
            mark.updated = true;
            self.latencies.record(Kind::Update, label, latency);
        }
        if converged {
            mark.converged = true;
            mark.updated = true;
            epoch.pending -= 1;
            epoch.pending_by_class[class as usize] -= 1;
            if epoch.measured {
                self.latencies.record(Kind::Convergence, label, latency);
                if let Some(seen) = epoch.seen_at {
                    let leg = self.elapsed(seen, at);
                    self.latencies.record(Kind::DestinationLeg, label, leg);
                }
                // Each class's fan-out completes when its last stream
                // converged: stuck streams do not hold the healthy ones' back.
                if epoch.pending_by_class[class as usize] == 0 {
                    self.latencies.record(Kind::Fanout, label, latency);
                }
                if class == self.counted_class() {
                    let first = *epoch.first_converged.get_or_insert(latency);
                    if epoch.pending_by_class[class as usize] == 0 {
                        self.completed.inc();
                        self.latencies.record_change(ChangeRecord {
                            service: self.labels[0].service.to_string(),
                            at: unix(epoch.changed_at),
                            first_converged: Some(first.as_secs_f64()),
                            last_converged: Some(latency.as_secs_f64()),
                            endpoints: Some(epoch.expected.len() as u64),
                        });
                    }
                }
            }
        }
    }

    /// `to - from`, or zero (counted as clock skew) when `to` is earlier.
    fn elapsed(&self, from: SystemTime, to: SystemTime) -> Duration {
        to.duration_since(from).unwrap_or_else(|_| {
            self.latencies.clock_skew.inc();
            Duration::ZERO
        })
    }

    /// Whether a truth is known.
    pub fn is_known(&self) -> bool {
        self.epoch.lock().expect("truth lock").is_some()
    }

    /// Where a set stands against the truth.
    pub fn standing(&self, set: &Addrs) -> Standing {
        match self.epoch.lock().expect("truth lock").as_ref() {
            None => Standing::Unknown,
            Some(e) if *set == e.expected => Standing::Converged,
            Some(e) => Standing::Differs {
                since: e.changed_at,
            },
        }
    }

    /// The truth, sorted; empty when unknown.
    pub fn expected(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self
            .epoch
            .lock()
            .expect("truth lock")
            .as_ref()
            .map(|e| e.expected.iter().copied().collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Streams not yet converged to the current truth (0 when unknown),
    /// of the class the run is judged on (see [`ServiceTruth::counted_class`]).
    pub fn pending(&self) -> usize {
        self.epoch
            .lock()
            .expect("truth lock")
            .as_ref()
            .map_or(0, |e| self.counted(e))
    }

    /// Each stream's class, by index.
    pub fn classes(&self) -> &[Class] {
        &self.classes
    }

    /// The class whose streams count for completion, superseding and
    /// unconverged streams: the healthy ones when the service has any (the
    /// faulty ones are reported apart), else the first class it has.
    pub fn counted_class(&self) -> Class {
        Class::ALL
            .into_iter()
            .find(|c| self.classes.contains(c))
            .unwrap_or(Class::Healthy)
    }

    fn counted(&self, epoch: &Epoch) -> usize {
        epoch.pending_by_class[self.counted_class() as usize]
    }
}

/// Whether `u` moves a stream towards the epoch's truth on an address the
/// change touched: it adds an address the change added, or removes one it
/// removed. (A late update of an earlier change that the new one reverted
/// moves the other way and does not count.)
fn reflects(u: &Delta, changed: &Addrs, expected: &Addrs) -> bool {
    match u.kind {
        UpdateKind::Add => u
            .addrs
            .iter()
            .any(|a| changed.contains(a) && expected.contains(a)),
        UpdateKind::Remove => u
            .addrs
            .iter()
            .any(|a| changed.contains(a) && !expected.contains(a)),
        UpdateKind::NoEndpoints => changed.iter().any(|a| !expected.contains(a)),
        UpdateKind::Empty => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn mk_truth(streams: usize) -> (ServiceTruth, Latencies) {
        let l = Latencies::register(&mut Registry::default());
        (
            ServiceTruth::new("svc".into(), vec![Class::Healthy; streams], l.clone()),
            l,
        )
    }

    fn set(addrs: &[&str]) -> Addrs {
        addrs.iter().map(|a| sa(a)).collect()
    }

    fn mk_add(addrs: &[&str]) -> Delta {
        Delta::add(addrs.iter().map(|a| sa(a)))
    }

    #[test]
    fn the_first_truth_is_not_a_measured_change() {
        let (t, l) = mk_truth(1);
        let t0 = SystemTime::now();
        t.set([sa("10.0.0.1:80")], t0);
        t.observed(
            0,
            &set(&["10.0.0.1:80"]),
            Some(&mk_add(&["10.0.0.1:80"])),
            t0 + Duration::from_millis(5),
        );
        assert_eq!(l.percentiles(Kind::Convergence).count, 0);
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn records_update_convergence_and_fanout_latencies() {
        let (t, l) = mk_truth(2);
        let t0 = SystemTime::now();
        t.set([sa("10.0.0.1:80")], t0);
        t.observed(0, &set(&["10.0.0.1:80"]), None, t0);
        t.observed(1, &set(&["10.0.0.1:80"]), None, t0);
        t.set(
            [sa("10.0.0.1:80"), sa("10.0.0.2:80"), sa("10.0.0.3:80")],
            t0,
        );
        let ms = Duration::from_millis;
        // Stream 0 sees a partial add first (an update that reflects the change), then the rest.
        t.observed(
            0,
            &set(&["10.0.0.1:80", "10.0.0.2:80"]),
            Some(&mk_add(&["10.0.0.2:80"])),
            t0 + ms(10),
        );
        t.observed(
            0,
            &set(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]),
            Some(&mk_add(&["10.0.0.3:80"])),
            t0 + ms(30),
        );
        assert_eq!(t.pending(), 1);
        t.observed(
            1,
            &set(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]),
            Some(&mk_add(&["10.0.0.2:80", "10.0.0.3:80"])),
            t0 + ms(50),
        );
        assert_eq!(t.pending(), 0);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-4;
        let u = l.percentiles(Kind::Update);
        assert!(
            u.count == 2 && close(u.p50, 0.010) && close(u.max, 0.050),
            "{u:?}"
        );
        let c = l.percentiles(Kind::Convergence);
        assert!(
            c.count == 2 && close(c.p50, 0.030) && close(c.max, 0.050),
            "{c:?}"
        );
        let f = l.percentiles(Kind::Fanout);
        assert!(f.count == 1 && close(f.max, 0.050), "{f:?}");
        assert_eq!(t.completed.get(), 1);
        // The change's record names the set's size after it.
        let changes = l.changes();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].endpoints, Some(3));
        assert_eq!(
            changes[0].last_converged.map(|s| close(s, 0.050)),
            Some(true)
        );
        // The window holds the two update latencies, once.
        let w = l.take_window().expect("a window with samples");
        assert!(
            w.count == 2 && close(w.p50, 0.010) && close(w.p99, 0.050),
            "{w:?}"
        );
        assert_eq!(l.take_window(), None);
        // The totals are not reset by taking the window.
        assert_eq!(l.percentiles(Kind::Update).count, 2);
    }

    #[test]
    fn an_unrelated_update_does_not_count_and_skew_is_clamped() {
        let (t, l) = mk_truth(1);
        let t0 = SystemTime::now();
        t.set([sa("10.0.0.1:80")], t0);
        t.set([sa("10.0.0.1:80"), sa("10.0.0.2:80")], t0);
        // An add of an unchanged address reflects nothing.
        t.observed(
            0,
            &set(&["10.0.0.1:80"]),
            Some(&mk_add(&["10.0.0.1:80"])),
            t0 + Duration::from_millis(1),
        );
        assert_eq!(l.percentiles(Kind::Update).count, 0);
        // Observed "before" the change: another clock ran behind.
        t.observed(
            0,
            &set(&["10.0.0.1:80", "10.0.0.2:80"]),
            Some(&mk_add(&["10.0.0.2:80"])),
            t0 - Duration::from_millis(3),
        );
        assert!(l.percentiles(Kind::Convergence).max <= 0.000002);
        assert_eq!(l.clock_skew.get(), 1);
    }

    #[test]
    fn records_both_legs_for_a_watched_change() {
        let (t, l) = mk_truth(1);
        let t0 = SystemTime::now();
        let ms = Duration::from_millis;
        t.set([sa("10.0.0.1:80")], t0);
        t.observed(0, &set(&["10.0.0.1:80"]), None, t0);
        // Scaled at t0+100ms; our watch saw the slice at t0+400ms; the stream converged at t0+450ms.
        t.set_seen(
            [sa("10.0.0.1:80"), sa("10.0.0.2:80")],
            t0 + ms(100),
            Some(t0 + ms(400)),
        );
        t.observed(
            0,
            &set(&["10.0.0.1:80", "10.0.0.2:80"]),
            Some(&mk_add(&["10.0.0.2:80"])),
            t0 + ms(450),
        );
        let close = |a: f64, b: f64| (a - b).abs() < 1e-4;
        assert!(close(l.percentiles(Kind::KubernetesLeg).max, 0.300));
        assert!(close(l.percentiles(Kind::DestinationLeg).max, 0.050));
        assert!(close(l.percentiles(Kind::Convergence).max, 0.350));
    }

    #[test]
    fn a_change_before_convergence_supersedes_the_epoch() {
        let (t, _) = mk_truth(1);
        let t0 = SystemTime::now();
        t.set([sa("10.0.0.1:80")], t0);
        t.set([sa("10.0.0.2:80")], t0);
        t.set([sa("10.0.0.3:80")], t0);
        assert_eq!(t.superseded.get(), 1);
        assert_eq!(
            t.standing(&set(&["10.0.0.2:80"])),
            Standing::Differs { since: t0 }
        );
        assert_eq!(t.standing(&set(&["10.0.0.3:80"])), Standing::Converged);
    }

    fn mk_remove(addrs: &[&str]) -> Delta {
        Delta::remove(addrs.iter().map(|a| sa(a)))
    }

    /// A stream lagging by more than a hold on a service that oscillates:
    /// its late updates of earlier changes neither count as reflecting the
    /// newer change nor time its convergence; the service changing back to
    /// the stream's (stale) set is a convergence without a time.
    #[test]
    fn a_lagging_stream_is_neither_credited_with_late_updates_nor_timed_by_coincidence() {
        let (t, l) = mk_truth(1);
        let ms = Duration::from_millis;
        let t0 = SystemTime::now();
        let (small, big) = (
            vec!["10.0.0.1:80"],
            vec!["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"],
        );
        t.set(small.iter().map(|a| sa(a)), t0);
        t.observed(0, &set(&small), None, t0);
        // Up at 0 ms, down at 500 ms; the stream gets the up at 640 ms.
        t.set(big.iter().map(|a| sa(a)), t0 + ms(0));
        t.set(small.iter().map(|a| sa(a)), t0 + ms(500));
        t.observed(
            0,
            &set(&big),
            Some(&mk_add(&["10.0.0.2:80", "10.0.0.3:80"])),
            t0 + ms(640),
        );
        // The add moved away from the current truth: not an update of it.
        assert_eq!(l.percentiles(Kind::Update).count, 0);
        // Up again at 1000 ms: the stream holds that set since 640 ms.
        t.set(big.iter().map(|a| sa(a)), t0 + ms(1000));
        t.observed(0, &set(&big), None, t0 + ms(640));
        assert_eq!(t.untimed.get(), 1);
        assert_eq!(t.pending(), 0);
        assert_eq!(l.percentiles(Kind::Convergence).count, 0);
        assert_eq!(l.clock_skew.get(), 0);
        // The late down (of 500 ms) at 1140 ms moves away from the truth
        // then (up): not an update of it; down again at 1500 ms finds the
        // stream holding that set since 1140 ms: untimed again.
        t.observed(
            0,
            &set(&small),
            Some(&mk_remove(&["10.0.0.2:80", "10.0.0.3:80"])),
            t0 + ms(1140),
        );
        t.set(small.iter().map(|a| sa(a)), t0 + ms(1500));
        t.observed(0, &set(&small), None, t0 + ms(1140));
        assert_eq!(l.percentiles(Kind::Update).count, 0);
        assert_eq!(t.untimed.get(), 2);
        // ...but a stream that keeps up is timed: the down's own update at 1510 ms.
        let (t2, l2) = mk_truth(1);
        t2.set(big.iter().map(|a| sa(a)), t0);
        t2.observed(0, &set(&big), None, t0);
        t2.set(small.iter().map(|a| sa(a)), t0 + ms(1500));
        t2.observed(
            0,
            &set(&small),
            Some(&mk_remove(&["10.0.0.2:80", "10.0.0.3:80"])),
            t0 + ms(1510),
        );
        let c = l2.percentiles(Kind::Convergence);
        assert!(c.count == 1 && (c.p50 - 0.010).abs() < 1e-4, "{c:?}");
        assert_eq!(t2.untimed.get(), 0);
    }
}
