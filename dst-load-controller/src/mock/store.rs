//! The mock's destinations and their endpoint sets, with a change feed that
//! every open stream follows.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex, RwLock},
    time::SystemTime,
};

use tokio::sync::broadcast;

use crate::target::Authority;

/// Changes buffered per destination before a stream that has not read them
/// counts as overflowed. Larger than any per-stream queue on purpose: the
/// per-stream queue is the limit that matters.
const FEED_CAPACITY: usize = 4096;

/// One change to a destination, as streams deliver it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Addresses that appeared.
    pub added: Vec<SocketAddr>,
    /// Addresses that went away.
    pub removed: Vec<SocketAddr>,
    /// Whether the destination exists after the change.
    pub exists: bool,
    /// How many endpoints it has after the change.
    pub len: usize,
    /// When the change was made.
    pub at: SystemTime,
    /// The messages streams send for it, built once by the first stream
    /// that sends it (not part of equality).
    pub shaped: Shaped,
}

/// A change's messages, built once and shared by every stream.
#[derive(Clone, Debug, Default)]
pub struct Shaped(pub std::sync::OnceLock<Vec<super::codec::Encoded>>);

impl PartialEq for Shaped {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Shaped {}

#[derive(Debug)]
struct Dst {
    state: Mutex<DstState>,
    feed: broadcast::Sender<Arc<Change>>,
}

#[derive(Default)]
struct DstState {
    exists: bool,
    endpoints: BTreeSet<SocketAddr>,
    /// Streams handed each change as it is made.
    sinks: Vec<Box<dyn Sink>>,
    /// How many sinks were left by the last sweep of closed ones.
    swept: usize,
}

/// Sinks below which closed ones are not swept at attach time.
const SWEEP_FLOOR: usize = 32;

impl std::fmt::Debug for DstState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DstState")
            .field("exists", &self.exists)
            .field("endpoints", &self.endpoints)
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

/// A stream that is handed each change of its destination by the call that
/// makes it, in order and under the destination's lock: no task to wake
/// and no feed to read in between.
pub trait Sink: Send {
    /// Takes one change; `false` drops the sink (its stream is gone or
    /// ended).
    fn hand(&mut self, change: &Arc<Change>) -> bool;
    /// Whether its stream is gone (dropped when the next stream subscribes).
    fn is_closed(&self) -> bool;
}

/// All destinations. Cheap to clone; clones share state.
#[derive(Clone, Debug, Default)]
pub struct Store(Arc<RwLock<HashMap<Authority, Arc<Dst>>>>);

/// A subscription: the set when the stream opened and the changes after it.
pub struct Subscription {
    /// Whether the destination existed when subscribing.
    pub exists: bool,
    /// The endpoints at subscription time.
    pub snapshot: Vec<SocketAddr>,
    /// Every change after the snapshot.
    pub changes: broadcast::Receiver<Arc<Change>>,
}

impl Store {
    fn dst(&self, authority: &Authority) -> Arc<Dst> {
        if let Some(d) = self.0.read().expect("store lock").get(authority) {
            return d.clone();
        }
        self.0
            .write()
            .expect("store lock")
            .entry(authority.clone())
            .or_insert_with(|| {
                Arc::new(Dst {
                    state: Mutex::new(DstState::default()),
                    feed: broadcast::channel(FEED_CAPACITY).0,
                })
            })
            .clone()
    }

    /// Replaces a destination's endpoints (creating it if needed). Returns the change made.
    pub fn set(
        &self,
        authority: &Authority,
        endpoints: impl IntoIterator<Item = SocketAddr>,
    ) -> Arc<Change> {
        let new: BTreeSet<SocketAddr> = endpoints.into_iter().collect();
        self.modify(authority, |state| {
            let added = new.difference(&state.endpoints).copied().collect();
            let removed = state.endpoints.difference(&new).copied().collect();
            state.endpoints = new;
            state.exists = true;
            (added, removed)
        })
    }

    /// Adds and removes endpoints (creating the destination if needed).
    pub fn patch(
        &self,
        authority: &Authority,
        add: &[SocketAddr],
        remove: &[SocketAddr],
    ) -> Arc<Change> {
        self.modify(authority, |state| {
            let added = add
                .iter()
                .filter(|a| state.endpoints.insert(**a))
                .copied()
                .collect();
            let removed = remove
                .iter()
                .filter(|a| state.endpoints.remove(a))
                .copied()
                .collect();
            state.exists = true;
            (added, removed)
        })
    }

    /// Deletes a destination: open streams see every endpoint removed; new
    /// streams get `NotFound`.
    pub fn delete(&self, authority: &Authority) -> Option<Arc<Change>> {
        if !self.0.read().expect("store lock").contains_key(authority) {
            return None;
        }
        Some(self.modify(authority, |state| {
            state.exists = false;
            (
                Vec::new(),
                std::mem::take(&mut state.endpoints).into_iter().collect(),
            )
        }))
    }

    fn modify(
        &self,
        authority: &Authority,
        f: impl FnOnce(&mut DstState) -> (Vec<SocketAddr>, Vec<SocketAddr>),
    ) -> Arc<Change> {
        let dst = self.dst(authority);
        let mut state = dst.state.lock().expect("destination lock");
        let (added, removed) = f(&mut state);
        let change = Arc::new(Change {
            added,
            removed,
            exists: state.exists,
            len: state.endpoints.len(),
            at: SystemTime::now(),
            shaped: Shaped::default(),
        });
        // Sent under the lock so that a subscriber's snapshot and feed agree.
        if !change.added.is_empty() || !change.removed.is_empty() {
            state.sinks.retain_mut(|sink| sink.hand(&change));
            let _ = dst.feed.send(change.clone());
        }
        change
    }

    /// Subscribes to a destination, or `None` if it was never created.
    pub fn subscribe(&self, authority: &Authority) -> Option<Subscription> {
        let dst = self.0.read().expect("store lock").get(authority)?.clone();
        let state = dst.state.lock().expect("destination lock");
        Some(Subscription {
            exists: state.exists,
            snapshot: state.endpoints.iter().copied().collect(),
            changes: dst.feed.subscribe(),
        })
    }

    /// Attaches a sink to a destination, atomically with its snapshot:
    /// `attach` gets whether the destination exists and its endpoints, and
    /// returns the sink to hand every later change to (or none). `None` if
    /// the destination was never created.
    pub fn attach<T>(
        &self,
        authority: &Authority,
        attach: impl FnOnce(bool, &[SocketAddr]) -> (Option<Box<dyn Sink>>, T),
    ) -> Option<T> {
        let dst = self.0.read().expect("store lock").get(authority)?.clone();
        let mut state = dst.state.lock().expect("destination lock");
        // A sweep of closed sinks is a pass over all of them, so it is done
        // when the list has doubled since the last: attaching stays O(1)
        // amortized. (A sweep at every attach made opening n streams of one
        // destination O(n²): 100,000 streams took minutes.) Every change
        // drops closed sinks too.
        if state.sinks.len() >= 2 * state.swept.max(SWEEP_FLOOR) {
            state.sinks.retain(|sink| !sink.is_closed());
            state.swept = state.sinks.len();
        }
        let snapshot: Vec<SocketAddr> = state.endpoints.iter().copied().collect();
        let (sink, out) = attach(state.exists, &snapshot);
        state.sinks.extend(sink);
        Some(out)
    }

    /// Whether a destination exists.
    pub fn exists(&self, authority: &Authority) -> bool {
        let Some(dst) = self.0.read().expect("store lock").get(authority).cloned() else {
            return false;
        };
        dst.state.lock().expect("destination lock").exists
    }

    /// The endpoints of a destination, if it exists.
    pub fn get(&self, authority: &Authority) -> Option<Vec<SocketAddr>> {
        let dst = self.0.read().expect("store lock").get(authority)?.clone();
        let state = dst.state.lock().expect("destination lock");
        state
            .exists
            .then(|| state.endpoints.iter().copied().collect())
    }

    /// How many destinations exist.
    pub fn count(&self) -> usize {
        let map = self.0.read().expect("store lock");
        map.values()
            .filter(|d| d.state.lock().expect("destination lock").exists)
            .count()
    }

    /// Every existing destination and its endpoints, sorted by authority.
    pub fn list(&self) -> Vec<(Authority, Vec<SocketAddr>)> {
        let map = self.0.read().expect("store lock");
        let mut out: Vec<_> = map
            .iter()
            .filter_map(|(a, d)| {
                let s = d.state.lock().expect("destination lock");
                s.exists
                    .then(|| (a.clone(), s.endpoints.iter().copied().collect()))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Authority {
        s.parse().unwrap()
    }
    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A sink recording what it is handed; closed (or refusing) on demand.
    struct Recorder {
        seen: Arc<Mutex<Vec<Vec<SocketAddr>>>>,
        closed: Arc<std::sync::atomic::AtomicBool>,
        refuse_after: usize,
    }

    impl Sink for Recorder {
        fn hand(&mut self, change: &Arc<Change>) -> bool {
            let mut seen = self.seen.lock().unwrap();
            seen.push(change.added.clone());
            seen.len() < self.refuse_after
        }
        fn is_closed(&self) -> bool {
            self.closed.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    fn sinks(store: &Store, authority: &Authority) -> usize {
        let dst = store.dst(authority);
        dst.state.lock().unwrap().sinks.len()
    }

    #[test]
    fn an_attached_sink_gets_its_snapshot_then_every_later_change_in_order() {
        let store = Store::default();
        let web = a("web.ns.svc.cluster.local:80");
        store.set(&web, [sa("10.0.0.1:80")]);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let snapshot = store
            .attach(&web, |exists, snapshot| {
                assert!(exists);
                let sink = Recorder {
                    seen: seen.clone(),
                    closed: closed.clone(),
                    refuse_after: 3,
                };
                (Some(Box::new(sink) as Box<dyn Sink>), snapshot.to_vec())
            })
            .unwrap();
        assert_eq!(snapshot, [sa("10.0.0.1:80")]);
        for i in 2..=4 {
            store.patch(&web, &[sa(&format!("10.0.0.{i}:80"))], &[]);
        }
        // A change that changes nothing is not handed.
        store.patch(&web, &[sa("10.0.0.4:80")], &[]);
        let got = seen.lock().unwrap().clone();
        assert_eq!(
            got,
            [
                vec![sa("10.0.0.2:80")],
                vec![sa("10.0.0.3:80")],
                vec![sa("10.0.0.4:80")]
            ]
        );
        // It refused the third: dropped, nothing more handed.
        assert_eq!(sinks(&store, &web), 0);
        store.patch(&web, &[sa("10.0.0.5:80")], &[]);
        assert_eq!(seen.lock().unwrap().len(), 3);
    }

    #[test]
    fn closed_sinks_are_swept_when_the_list_has_doubled() {
        let store = Store::default();
        let web = a("web.ns.svc.cluster.local:80");
        store.set(&web, [sa("10.0.0.1:80")]);
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let attach = |closed: &Arc<std::sync::atomic::AtomicBool>| {
            store.attach(&web, |_, _| {
                let sink = Recorder {
                    seen: Arc::default(),
                    closed: closed.clone(),
                    refuse_after: usize::MAX,
                };
                (Some(Box::new(sink) as Box<dyn Sink>), ())
            })
        };
        let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
        for _ in 0..2 * SWEEP_FLOOR - 1 {
            attach(&closed).unwrap();
        }
        closed.store(true, std::sync::atomic::Ordering::SeqCst);
        // Below the doubling the closed sinks stay (no pass per attach)...
        attach(&open).unwrap();
        assert_eq!(sinks(&store, &web), 2 * SWEEP_FLOOR);
        // ...and at it they go.
        attach(&open).unwrap();
        assert_eq!(sinks(&store, &web), 2);
        // The next sweep waits for the list to double again from there
        // (the floor), so opening n streams costs O(n) sweeping in all.
        for _ in 0..2 * SWEEP_FLOOR - 3 {
            attach(&open).unwrap();
        }
        assert_eq!(sinks(&store, &web), 2 * SWEEP_FLOOR - 1);
        // A destination never created has nothing to attach to.
        assert!(
            store
                .attach(&a("nope.ns.svc.cluster.local:80"), |_, _| (None, ()))
                .is_none()
        );
    }

    #[test]
    fn set_reports_the_difference() {
        let store = Store::default();
        let svc = a("foo.ns.svc.cluster.local:80");
        store.set(&svc, [sa("10.0.0.1:80"), sa("10.0.0.2:80")]);
        let change = store.set(&svc, [sa("10.0.0.2:80"), sa("10.0.0.3:80")]);
        assert_eq!(change.added, [sa("10.0.0.3:80")]);
        assert_eq!(change.removed, [sa("10.0.0.1:80")]);
        assert_eq!(
            store.get(&svc).unwrap(),
            [sa("10.0.0.2:80"), sa("10.0.0.3:80")]
        );
    }

    #[test]
    fn subscribers_see_changes_after_their_snapshot() {
        let store = Store::default();
        let svc = a("foo.ns.svc.cluster.local:80");
        store.set(&svc, [sa("10.0.0.1:80")]);
        let mut sub = store.subscribe(&svc).unwrap();
        assert_eq!(sub.snapshot, [sa("10.0.0.1:80")]);
        store.patch(&svc, &[sa("10.0.0.2:80")], &[sa("10.0.0.1:80")]);
        let change = sub.changes.try_recv().unwrap();
        assert_eq!(
            (change.added.as_slice(), change.removed.as_slice()),
            (&[sa("10.0.0.2:80")][..], &[sa("10.0.0.1:80")][..])
        );
        // A no-op patch sends nothing.
        store.patch(&svc, &[sa("10.0.0.2:80")], &[]);
        assert!(sub.changes.try_recv().is_err());
    }

    #[test]
    fn delete_removes_everything_and_hides_the_destination() {
        let store = Store::default();
        let svc = a("foo.ns.svc.cluster.local:80");
        store.set(&svc, [sa("10.0.0.1:80")]);
        let change = store.delete(&svc).unwrap();
        assert_eq!(change.removed, [sa("10.0.0.1:80")]);
        assert!(!change.exists);
        assert!(store.get(&svc).is_none());
        assert!(store.list().is_empty());
        assert!(store.delete(&a("nope.ns.svc.cluster.local:80")).is_none());
    }
}
