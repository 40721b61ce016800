//! One stream's endpoint set, tracked as the proxy tracks it.
//!
//! `add` upserts, `remove` deletes, `no_endpoints` clears, and the first
//! message after every (re)connect replaces the whole set. Counting the size
//! of the last `add` is wrong after the first incremental update.

use std::{collections::HashSet, net::SocketAddr};

use super::wire::Delta;
pub use super::wire::UpdateKind;

/// A set of addresses, hashed with foldhash: sets are hashed on every
/// update, and SipHash was a good share of the client's CPU.
pub type Addrs = HashSet<SocketAddr, foldhash::fast::RandomState>;

/// What applying one update did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Whether this was the first message since the stream (re)connected.
    pub reset: bool,
    /// Addresses in the message that could not be decoded (skipped).
    pub invalid_addrs: usize,
}

/// The endpoint set of one stream.
#[derive(Clone, Debug, Default)]
pub struct EndpointSet {
    addrs: Addrs,
    awaiting_first: bool,
}

impl EndpointSet {
    /// A new stream's set: empty, and the first message will replace it.
    pub fn new() -> Self {
        Self {
            addrs: Addrs::default(),
            awaiting_first: true,
        }
    }

    /// The stream reconnected: the next message replaces the set.
    pub fn reconnected(&mut self) {
        self.awaiting_first = true;
    }

    /// Applies one update.
    pub fn apply(&mut self, delta: &Delta) -> Applied {
        let reset = std::mem::replace(&mut self.awaiting_first, false);
        if reset {
            // What the server has not re-announced since the reconnect is unknown.
            self.addrs.clear();
        }
        match delta.kind {
            UpdateKind::Add => self.addrs.extend(delta.addrs.iter().copied()),
            UpdateKind::Remove => {
                for a in &delta.addrs {
                    self.addrs.remove(a);
                }
            }
            UpdateKind::NoEndpoints => self.addrs.clear(),
            UpdateKind::Empty => {}
        }
        Applied {
            reset,
            invalid_addrs: delta.invalid_addrs,
        }
    }

    /// The number of endpoints.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// Whether `addr` is in the set.
    pub fn contains(&self, addr: &SocketAddr) -> bool {
        self.addrs.contains(addr)
    }

    /// The addresses, unordered.
    pub fn addrs(&self) -> &Addrs {
        &self.addrs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn mk_add(addrs: &[&str]) -> Delta {
        Delta::add(addrs.iter().map(|a| sa(a)))
    }

    fn mk_remove(addrs: &[&str]) -> Delta {
        Delta::remove(addrs.iter().map(|a| sa(a)))
    }

    fn mk_no_endpoints() -> Delta {
        Delta::no_endpoints(true)
    }

    fn sorted(set: &EndpointSet) -> Vec<SocketAddr> {
        let mut v: Vec<_> = set.addrs().iter().copied().collect();
        v.sort();
        v
    }

    #[test]
    fn adds_are_incremental_after_the_first() {
        let mut set = EndpointSet::new();
        assert!(set.apply(&mk_add(&["10.0.0.1:80", "10.0.0.2:80"])).reset);
        assert!(!set.apply(&mk_add(&["10.0.0.3:80"])).reset);
        // An add repeating a known address is an upsert, not a duplicate.
        set.apply(&mk_add(&["10.0.0.1:80"]));
        assert_eq!(set.len(), 3);
    }

    #[test]
    fn removes_delete_and_ignore_unknown_addresses() {
        let mut set = EndpointSet::new();
        set.apply(&mk_add(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]));
        set.apply(&mk_remove(&["10.0.0.2:80", "10.0.0.9:80"]));
        assert_eq!(sorted(&set), [sa("10.0.0.1:80"), sa("10.0.0.3:80")]);
    }

    #[test]
    fn no_endpoints_clears() {
        let mut set = EndpointSet::new();
        set.apply(&mk_add(&["10.0.0.1:80"]));
        set.apply(&mk_no_endpoints());
        assert!(set.is_empty());
        set.apply(&mk_add(&["10.0.0.5:80"]));
        assert_eq!(sorted(&set), [sa("10.0.0.5:80")]);
    }

    #[test]
    fn the_first_message_after_a_reconnect_replaces_the_set() {
        let mut set = EndpointSet::new();
        set.apply(&mk_add(&["10.0.0.1:80", "10.0.0.2:80"]));
        set.apply(&mk_add(&["10.0.0.3:80"]));
        set.reconnected();
        // The server now has only .2 and .4: .1 and .3 went away while we were
        // disconnected and no remove for them will ever come.
        let applied = set.apply(&mk_add(&["10.0.0.2:80", "10.0.0.4:80"]));
        assert!(applied.reset);
        assert_eq!(sorted(&set), [sa("10.0.0.2:80"), sa("10.0.0.4:80")]);
        // Later adds are incremental again.
        set.apply(&mk_add(&["10.0.0.5:80"]));
        assert_eq!(set.len(), 3);
    }

    #[test]
    fn a_scripted_oscillation_ends_with_the_right_set() {
        let mut set = EndpointSet::new();
        set.apply(&mk_add(&["10.0.0.1:80"]));
        set.apply(&mk_add(&["10.0.0.2:80", "10.0.0.3:80"]));
        set.apply(&mk_remove(&["10.0.0.1:80"]));
        set.reconnected();
        set.apply(&mk_add(&["10.0.0.2:80", "10.0.0.3:80", "10.0.0.7:80"]));
        set.apply(&mk_remove(&["10.0.0.2:80", "10.0.0.3:80"]));
        set.apply(&mk_remove(&["10.0.0.3:80"])); // redundant
        assert_eq!(sorted(&set), [sa("10.0.0.7:80")]);
    }

    #[test]
    fn counts_undecodable_addresses() {
        let mut set = EndpointSet::new();
        let delta = Delta {
            invalid_addrs: 1,
            ..mk_add(&[])
        };
        assert_eq!(set.apply(&delta).invalid_addrs, 1);
        assert!(set.is_empty());
    }
}
