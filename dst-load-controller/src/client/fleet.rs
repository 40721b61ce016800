//! Every watched service's streams (the fleet), and each stream's state
//! (its slot): written by the stream tasks, read by metrics, the ground
//! truth, staleness checks and tests.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::SystemTime,
};

use super::{
    endpoints::{Applied, EndpointSet},
    faults::Class,
    truth::{Latencies, ServiceTruth},
    wire::Delta,
};

/// Every watched service's streams, shared with the scrape-time gauges.
#[derive(Debug, Default)]
pub struct Fleet(RwLock<BTreeMap<String, Arc<ServiceStreams>>>);

impl Fleet {
    /// One service's streams.
    pub fn get(&self, service: &str) -> Option<Arc<ServiceStreams>> {
        self.0.read().expect("fleet lock").get(service).cloned()
    }

    /// A snapshot of the services watched now.
    pub fn services(&self) -> Vec<Arc<ServiceStreams>> {
        self.0
            .read()
            .expect("fleet lock")
            .values()
            .cloned()
            .collect()
    }

    /// Adds (or replaces) a service's streams.
    pub fn insert(&self, s: Arc<ServiceStreams>) {
        self.0
            .write()
            .expect("fleet lock")
            .insert(s.service.clone(), s);
    }

    /// Forgets a service's streams.
    pub fn remove(&self, service: &str) {
        self.0.write().expect("fleet lock").remove(service);
    }
}

/// One stream's state, shared between its task and readers (metrics, tests,
/// staleness checks). The mutex is uncontended except while being read.
#[derive(Debug)]
pub struct StreamSlot {
    state: Mutex<SlotState>,
    answered: AtomicBool,
    served: AtomicBool,
}

#[derive(Debug)]
struct SlotState {
    set: EndpointSet,
    last_update: Option<SystemTime>,
}

impl StreamSlot {
    /// Applies an update to stream `i`'s set, stamps it, reports it to the
    /// truth, and marks the stream answered.
    pub fn apply(&self, i: usize, update: &Delta, truth: &ServiceTruth) -> Applied {
        let mut state = self.state.lock().expect("stream set lock");
        let applied = state.set.apply(update);
        let now = SystemTime::now();
        state.last_update = Some(now);
        truth.observed(i, state.set.addrs(), Some(update), now);
        let served = !state.set.is_empty();
        drop(state);
        self.answered.store(true, Ordering::Release);
        if served {
            self.served.store(true, Ordering::Release);
        }
        applied
    }

    /// Marks the stream answered without an update (it failed for good).
    pub fn answer_failed(&self) {
        self.answered.store(true, Ordering::Release);
    }

    /// The stream (re)connected: its next update replaces the set.
    pub fn reconnected(&self) {
        self.state
            .lock()
            .expect("stream set lock")
            .set
            .reconnected();
    }

    /// Whether the stream has ever held an endpoint.
    pub fn served(&self) -> bool {
        self.served.load(Ordering::Acquire)
    }

    /// Whether the stream has had a first answer (an update or a final error).
    pub fn answered(&self) -> bool {
        self.answered.load(Ordering::Acquire)
    }

    /// The stream's addresses, sorted.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self
            .state
            .lock()
            .expect("stream set lock")
            .set
            .addrs()
            .iter()
            .copied()
            .collect();
        v.sort();
        v
    }

    fn len(&self) -> usize {
        self.state.lock().expect("stream set lock").set.len()
    }
}

/// The streams of one service.
#[derive(Debug)]
pub struct ServiceStreams {
    /// The destination authority.
    pub service: String,
    slots: Vec<StreamSlot>,
    /// What the streams should hold, and their progress towards it.
    pub truth: ServiceTruth,
}

impl ServiceStreams {
    /// One stream of each of `classes`, none answered yet, no truth known.
    pub fn new(service: String, classes: Vec<Class>, latencies: Latencies) -> Self {
        let slots = (0..classes.len())
            .map(|_| StreamSlot {
                state: Mutex::new(SlotState {
                    set: EndpointSet::new(),
                    last_update: None,
                }),
                answered: AtomicBool::new(false),
                served: AtomicBool::new(false),
            })
            .collect();
        let truth = ServiceTruth::new(service.clone(), classes, latencies);
        Self {
            service,
            slots,
            truth,
        }
    }

    /// Sets the ground truth as of `changed_at`. Streams that already hold it
    /// (they were faster than whoever reports the truth) are credited with
    /// the time of their last update.
    pub fn set_truth(
        &self,
        expected: impl IntoIterator<Item = SocketAddr>,
        changed_at: SystemTime,
    ) {
        self.set_truth_seen(expected, changed_at, None);
    }

    /// [`ServiceStreams::set_truth`] for a change our Kubernetes watch saw at `seen_at`.
    pub fn set_truth_seen(
        &self,
        expected: impl IntoIterator<Item = SocketAddr>,
        changed_at: SystemTime,
        seen_at: Option<SystemTime>,
    ) {
        self.truth.set_seen(expected, changed_at, seen_at);
        self.rescan();
    }

    /// Sets a truth whose change time is unknown (found by a re-list): no
    /// latency is recorded for it. See [`ServiceTruth::set_unmeasured`].
    pub fn set_truth_unmeasured(&self, expected: impl IntoIterator<Item = SocketAddr>) {
        self.truth.set_unmeasured(expected);
        self.rescan();
    }

    /// Credits the streams that already hold the truth.
    fn rescan(&self) {
        for (i, slot) in self.slots.iter().enumerate() {
            let state = slot.state.lock().expect("stream set lock");
            if let Some(at) = state.last_update {
                self.truth.observed(i, state.set.addrs(), None, at);
            }
        }
    }

    /// How each stream reads, by index.
    pub fn classes(&self) -> &[Class] {
        self.truth.classes()
    }

    /// Stream `i`'s state.
    pub fn slot(&self, i: usize) -> &StreamSlot {
        &self.slots[i]
    }

    /// Every stream's state.
    pub fn slots(&self) -> &[StreamSlot] {
        &self.slots
    }

    /// Whether every stream has had its first answer.
    pub fn all_answered(&self) -> bool {
        self.slots.iter().all(StreamSlot::answered)
    }

    /// The smallest and largest set across streams.
    pub fn min_max(&self) -> (u64, u64) {
        let (lo, hi) = self
            .slots
            .iter()
            .map(|s| s.len() as u64)
            .fold((u64::MAX, 0), |(lo, hi), n| (lo.min(n), hi.max(n)));
        (if self.slots.is_empty() { 0 } else { lo }, hi)
    }

    /// The number of streams.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are no streams.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}
