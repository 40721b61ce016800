//! `Destination.GetProfile` on the mock: each stream answered from the
//! destinations and the profiles of a [`Handle`] (see `profiles` for what
//! the controller answers and how the mock follows it).

use std::{collections::HashSet, net::SocketAddr, sync::Arc};

use linkerd2_proxy_api::destination::{DestinationProfile, WeightedAddr};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{broadcast::error::RecvError, watch};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::{
    codec::Encoded,
    handle::Handle,
    profiles::{Lookup, RetryBudgetSpec, Set, parse_profile_path, service_profile},
    queue::{self, Sender},
    server::{Behavior, Shaper, UpdateStream},
};
use crate::target::Authority;

/// The profile of an address: its endpoint, with the metadata of the pod
/// that holds it (`owner`'s), or bare when no destination holds it.
fn endpoint_profile(addr: SocketAddr, owner: Option<&Shaper>) -> DestinationProfile {
    let endpoint = match owner {
        Some(shaper) => {
            let mut e = shaper.weighted(addr);
            e.metric_labels
                .insert("namespace".into(), shaper.namespace().to_string());
            e
        }
        None => WeightedAddr {
            addr: Some(addr.into()),
            weight: 10_000,
            ..Default::default()
        },
    };
    DestinationProfile {
        retry_budget: Some(RetryBudgetSpec::default().message()),
        endpoint: Some(endpoint),
        ..Default::default()
    }
}

/// Answers `GetProfile` over a mock's destinations and profiles.
pub struct ProfileService {
    handle: Handle,
    behavior: Arc<Behavior>,
    shutdown: CancellationToken,
}

impl ProfileService {
    /// The service over `handle`'s destinations and profiles.
    pub fn new(handle: Handle, behavior: Behavior, shutdown: CancellationToken) -> Self {
        Self {
            handle,
            behavior: Arc::new(behavior),
            shutdown,
        }
    }

    /// Opens a `GetProfile` stream for `path`.
    pub fn get_profile(&self, path: &str) -> Result<UpdateStream, Status> {
        let store = &self.handle.store;
        let answer = match parse_profile_path(path)? {
            Lookup::Service(authority) if store.exists(&authority) => Answer::Service(authority),
            Lookup::Service(authority) => {
                let host = authority.host();
                if !store.list().iter().any(|(a, _)| a.host() == host) {
                    let name = host.split('.').next().unwrap_or_default();
                    return Err(Status::unknown(format!("service \"{name}\" not found")));
                }
                Answer::OtherPort
            }
            Lookup::Pod(authority) => Answer::Address(
                store
                    .get(&authority)
                    .and_then(|addrs| addrs.first().copied())
                    .ok_or_else(|| {
                        Status::not_found(format!("pod {} not found", authority.host()))
                    })?,
            ),
            // A service's address (a ClusterIP, as the service's policy
            // gives it): the service's profile, as by its name. A proxy asks
            // so for every connection's original destination.
            Lookup::Ip(addr) => match self.handle.policies.table().by_addr(addr) {
                Some((authority, _)) => Answer::Service(authority.clone()),
                None => Answer::Address(addr),
            },
        };
        let (tx, rx) = queue::queue(self.behavior.queue_capacity, &self.shutdown);
        let metrics = &self.handle.metrics;
        let tx = Queue {
            tx,
            sent: metrics.profile_updates_sent.clone(),
        };
        let stop = self.shutdown.clone();
        // The sender of an answer that never changes, held by the response
        // stream itself so that it stays open until the client leaves.
        let mut held = None;
        match answer {
            Answer::Service(authority) => {
                let profiles = self.handle.profiles.watch(authority.host());
                tokio::spawn(follow_service(authority, profiles, tx, stop));
            }
            // The service exists, not with this port: an empty profile.
            Answer::OtherPort => {
                tx.send(&mut None, DestinationProfile::default());
                held = Some(tx);
            }
            Answer::Address(addr) => {
                let follow = follow_address(addr, self.handle.clone(), self.behavior.clone());
                tokio::spawn(follow.run(tx, stop));
            }
        }
        Ok(rx.holding((metrics.profile_stream_opened(), held)))
    }
}

/// What a `GetProfile` stream answers.
enum Answer {
    /// A service's profile as it changes.
    Service(Authority),
    /// An existing service without the port asked for.
    OtherPort,
    /// An address's endpoint as it comes and goes.
    Address(SocketAddr),
}

/// A `GetProfile` stream's queue; what it queues counts as sent.
struct Queue {
    tx: Sender<Encoded>,
    sent: Counter,
}

impl Queue {
    /// Sends `profile` unless it equals `last`; `false` once the stream is
    /// gone or its queue is full (which ends it, as the controller ends a
    /// slow consumer).
    fn send(&self, last: &mut Option<DestinationProfile>, profile: DestinationProfile) -> bool {
        if last.as_ref() == Some(&profile) {
            return true;
        }
        let sent = self.tx.try_send(Encoded::of(&profile, 0)).is_ok();
        if sent {
            self.sent.inc();
        }
        *last = Some(profile);
        sent
    }

    /// Completes when the stream has ended.
    async fn closed(&self) {
        self.tx.closed().await
    }
}

/// A service's profile, then the profile again each time it is set.
async fn follow_service(
    authority: Authority,
    mut profiles: watch::Receiver<Set>,
    tx: Queue,
    stop: CancellationToken,
) {
    let mut last = None;
    loop {
        let profile = service_profile(&authority, profiles.borrow_and_update().as_deref());
        if !tx.send(&mut last, profile) {
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tx.closed() => return,
            changed = profiles.changed() => if changed.is_err() { return },
        }
    }
}

/// An address lookup as it goes: which destinations hold the address.
struct AddressFollower {
    addr: SocketAddr,
    handle: Handle,
    behavior: Arc<Behavior>,
    /// The destinations holding the address (services before pods' names).
    holders: HashSet<Authority>,
    changes: tokio::sync::broadcast::Receiver<(Authority, Arc<super::store::Change>)>,
}

fn follow_address(addr: SocketAddr, handle: Handle, behavior: Arc<Behavior>) -> AddressFollower {
    // Subscribed before the scan: no change after it is missed.
    let changes = handle.changes();
    let mut f = AddressFollower {
        addr,
        holders: HashSet::new(),
        handle,
        behavior,
        changes,
    };
    f.rescan();
    f
}

impl AddressFollower {
    /// Reads the holders again from the store.
    fn rescan(&mut self) {
        self.holders = self
            .handle
            .store
            .list()
            .into_iter()
            .filter(|(_, addrs)| addrs.contains(&self.addr))
            .map(|(a, _)| a)
            .collect();
    }

    /// The profile now: the endpoint of its pod, seen through a service
    /// holding it (a pod's own name when no service does).
    fn profile(&self) -> DestinationProfile {
        let service = |a: &&Authority| {
            a.host()
                .split_once(".svc.")
                .is_some_and(|(before, _)| before.split('.').count() == 2)
        };
        let owner = self
            .holders
            .iter()
            .filter(service)
            .min()
            .or_else(|| self.holders.iter().min());
        let shaper = owner.map(|a| Shaper::new(a, &self.behavior));
        endpoint_profile(self.addr, shaper.as_ref())
    }

    async fn run(mut self, tx: Queue, stop: CancellationToken) {
        let mut last = None;
        loop {
            if !tx.send(&mut last, self.profile()) {
                return;
            }
            loop {
                let event = tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tx.closed() => return,
                    e = self.changes.recv() => e,
                };
                match event {
                    Ok((authority, change)) => {
                        let added = change.added.contains(&self.addr);
                        let removed = change.removed.contains(&self.addr);
                        if added {
                            self.holders.insert(authority);
                        } else if removed {
                            self.holders.remove(&authority);
                        }
                        if added || removed {
                            break;
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        self.rescan();
                        break;
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        }
    }
}
