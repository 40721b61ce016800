//! EndpointSlices aggregated per Service: the set of ready addresses a
//! destination controller should serve for it. Pure; fed by a watcher.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::watch::Change;

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One slice's contribution.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Slice {
    service: String,
    /// Ready addresses, with the endpoint's hostname (set for the pods of
    /// a StatefulSet behind a headless Service).
    addrs: BTreeMap<SocketAddr, Option<String>>,
}

/// Ready addresses per Service, from every slice seen.
#[derive(Clone, Debug, Default)]
pub struct SliceSets {
    slices: BTreeMap<String, Slice>,
    port_name: Option<String>,
}

impl SliceSets {
    /// Aggregates the port named `port_name` (the Service's port name, e.g.
    /// `http`), or each slice's first port when `None`.
    pub fn new(port_name: Option<String>) -> Self {
        Self {
            slices: BTreeMap::new(),
            port_name,
        }
    }

    /// Applies a slice (added or changed). Returns the Service whose set may have changed.
    pub fn apply(&mut self, slice: &EndpointSlice) -> Option<String> {
        let name = slice.metadata.name.clone()?;
        let service = slice
            .metadata
            .labels
            .as_ref()?
            .get(SERVICE_NAME_LABEL)?
            .clone();
        let port = slice.ports.as_ref().and_then(|ports| {
            let p = match &self.port_name {
                Some(n) => ports.iter().find(|p| p.name.as_deref() == Some(n.as_str())),
                None => ports.first(),
            };
            p.and_then(|p| p.port).and_then(|p| u16::try_from(p).ok())
        });
        let addrs = match port {
            Some(port) => slice
                .endpoints
                .iter()
                // Ready, or unknown readiness (the API's default is ready).
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
                .flat_map(|e| e.addresses.iter().map(|a| (a, e.hostname.clone())))
                .filter_map(|(a, host)| Some((a.parse::<IpAddr>().ok()?, host)))
                .map(|(ip, host)| (SocketAddr::new(ip, port), host))
                .collect(),
            None => BTreeMap::new(),
        };
        self.slices.insert(
            name,
            Slice {
                service: service.clone(),
                addrs,
            },
        );
        Some(service)
    }

    /// Forgets a deleted slice. Returns its Service.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        self.slices.remove(name).map(|s| s.service)
    }

    /// Applies one change from a [`crate::watch::Driver`]. Returns the
    /// Service whose set may have changed.
    pub fn change(&mut self, change: &Change<EndpointSlice>) -> Option<String> {
        match change {
            Change::Apply(slice) => self.apply(slice),
            Change::Delete(key) => self.remove(&key.name),
        }
    }

    /// The ready addresses of `service`, across its slices.
    pub fn addrs(&self, service: &str) -> BTreeSet<SocketAddr> {
        self.slices
            .values()
            .filter(|s| s.service == service)
            .flat_map(|s| s.addrs.keys().copied())
            .collect()
    }

    /// The ready addresses of `service` with their endpoints' hostnames.
    pub fn hosts(&self, service: &str) -> BTreeMap<SocketAddr, Option<String>> {
        self.slices
            .values()
            .filter(|s| s.service == service)
            .flat_map(|s| s.addrs.iter().map(|(a, h)| (*a, h.clone())))
            .collect()
    }

    /// Every Service with at least one slice.
    pub fn services(&self) -> BTreeSet<String> {
        self.slices.values().map(|s| s.service.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_slice(
        name: &str,
        service: &str,
        port: i32,
        eps: &[(&str, Option<bool>)],
    ) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {SERVICE_NAME_LABEL: service}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port}],
            "endpoints": eps.iter().enumerate().map(|(k, (ip, ready))| match ready {
                Some(r) => serde_json::json!({"addresses": [ip], "conditions": {"ready": r}, "hostname": format!("h-{k}")}),
                None => serde_json::json!({"addresses": [ip]}),
            }).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    #[test]
    fn unions_ready_addresses_across_slices() {
        let mut s = SliceSets::new(Some("http".into()));
        s.apply(&mk_slice(
            "a-1",
            "a",
            8080,
            &[("10.0.0.1", Some(true)), ("10.0.0.2", Some(false))],
        ));
        s.apply(&mk_slice("a-2", "a", 8080, &[("10.0.0.3", None)]));
        s.apply(&mk_slice("b-1", "b", 9090, &[("10.0.1.1", Some(true))]));
        let want: BTreeSet<SocketAddr> = [
            "10.0.0.1:8080".parse().unwrap(),
            "10.0.0.3:8080".parse().unwrap(),
        ]
        .into();
        assert_eq!(s.addrs("a"), want);
        // Hostnames come with their addresses; an endpoint without one has none.
        let hosts: Vec<_> = s.hosts("a").into_values().collect();
        assert_eq!(hosts, [Some("h-0".to_string()), None]);
        assert_eq!(s.services().len(), 2);
        assert_eq!(s.remove("a-2"), Some("a".into()));
        assert_eq!(s.addrs("a").len(), 1);
        // A changed slice replaces its previous contribution.
        s.apply(&mk_slice("a-1", "a", 8080, &[("10.0.0.9", Some(true))]));
        assert_eq!(s.addrs("a"), ["10.0.0.9:8080".parse().unwrap()].into());
    }

    #[test]
    fn other_port_names_and_unlabelled_slices_are_ignored() {
        let mut s = SliceSets::new(Some("grpc".into()));
        assert_eq!(
            s.apply(&mk_slice("a-1", "a", 8080, &[("10.0.0.1", Some(true))])),
            Some("a".into())
        );
        assert!(s.addrs("a").is_empty());
        let unlabelled: EndpointSlice = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "x"}, "addressType": "IPv4", "endpoints": []}),
        )
        .unwrap();
        assert_eq!(s.apply(&unlabelled), None);
    }
}
