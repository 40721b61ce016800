//! One stream's endpoint set, tracked as the proxy tracks it.
//!
//! `add` upserts, `remove` deletes, `no_endpoints` clears, and the first
//! message after every (re)connect replaces the whole set. Counting the size
//! of the last `add` is wrong after the first incremental update.

use std::{collections::HashSet, net::SocketAddr};

use linkerd2_proxy_api::{
    destination::{Update, update},
    net::TcpAddress,
};

/// The kind of an update, as a metric label.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum UpdateKind {
    /// `add`.
    Add,
    /// `remove`.
    Remove,
    /// `no_endpoints`.
    NoEndpoints,
    /// An `Update` with no variant set.
    Empty,
}

impl UpdateKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Remove => "remove",
            Self::NoEndpoints => "no_endpoints",
            Self::Empty => "empty",
        }
    }

    /// Every kind, in label order.
    pub const ALL: [UpdateKind; 4] = [Self::Add, Self::Remove, Self::NoEndpoints, Self::Empty];
}

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
    addrs: HashSet<SocketAddr>,
    awaiting_first: bool,
}

impl EndpointSet {
    /// A new stream's set: empty, and the first message will replace it.
    pub fn new() -> Self {
        Self {
            addrs: HashSet::new(),
            awaiting_first: true,
        }
    }

    /// The stream reconnected: the next message replaces the set.
    pub fn reconnected(&mut self) {
        self.awaiting_first = true;
    }

    /// Applies one update.
    pub fn apply(&mut self, update: &Update) -> Applied {
        let reset = std::mem::replace(&mut self.awaiting_first, false);
        if reset {
            // What the server has not re-announced since the reconnect is unknown.
            self.addrs.clear();
        }
        let mut invalid_addrs = 0;
        match &update.update {
            Some(update::Update::Add(set)) => {
                for wa in &set.addrs {
                    match wa.addr.as_ref().and_then(decode) {
                        Some(addr) => {
                            self.addrs.insert(addr);
                        }
                        None => invalid_addrs += 1,
                    }
                }
            }
            Some(update::Update::Remove(set)) => {
                for a in &set.addrs {
                    match decode(a) {
                        Some(addr) => {
                            self.addrs.remove(&addr);
                        }
                        None => invalid_addrs += 1,
                    }
                }
            }
            Some(update::Update::NoEndpoints(_)) => self.addrs.clear(),
            None => {}
        }
        Applied {
            reset,
            invalid_addrs,
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
    pub fn addrs(&self) -> &HashSet<SocketAddr> {
        &self.addrs
    }
}

/// The kind of an update.
pub fn kind(update: &Update) -> UpdateKind {
    match &update.update {
        Some(update::Update::Add(_)) => UpdateKind::Add,
        Some(update::Update::Remove(_)) => UpdateKind::Remove,
        Some(update::Update::NoEndpoints(_)) => UpdateKind::NoEndpoints,
        None => UpdateKind::Empty,
    }
}

fn decode(addr: &TcpAddress) -> Option<SocketAddr> {
    SocketAddr::try_from(*addr).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use linkerd2_proxy_api::destination::{AddrSet, NoEndpoints, WeightedAddr, WeightedAddrSet};

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn mk_add(addrs: &[&str]) -> Update {
        Update {
            update: Some(update::Update::Add(WeightedAddrSet {
                addrs: addrs
                    .iter()
                    .map(|a| WeightedAddr {
                        addr: Some(sa(a).into()),
                        weight: 10_000,
                        ..Default::default()
                    })
                    .collect(),
                metric_labels: Default::default(),
            })),
        }
    }

    fn mk_remove(addrs: &[&str]) -> Update {
        Update {
            update: Some(update::Update::Remove(AddrSet {
                addrs: addrs.iter().map(|a| sa(a).into()).collect(),
            })),
        }
    }

    fn mk_no_endpoints() -> Update {
        Update {
            update: Some(update::Update::NoEndpoints(NoEndpoints { exists: true })),
        }
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
        let update = Update {
            update: Some(update::Update::Add(WeightedAddrSet {
                addrs: vec![WeightedAddr::default()],
                metric_labels: Default::default(),
            })),
        };
        assert_eq!(set.apply(&update).invalid_addrs, 1);
        assert!(set.is_empty());
        assert_eq!(kind(&update), UpdateKind::Add);
    }
}
