//! What a mock Destination process serves: made from `mock-dst`'s flags
//! (`TryFrom<mock_dst::Args>`, where they are checked), or built directly by
//! tests and embedders.

use std::net::SocketAddr;

use super::{dsts::DstSpec, generate::GeneratedDst, identity::Identities, server::Behavior};
use crate::{kube_api::KubeSettings, schedule::Oscillation};

/// A mock Destination server's whole configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The gRPC listener's address.
    pub addr: SocketAddr,
    /// The admin server's address.
    pub admin_addr: SocketAddr,
    /// Whether non-loopback peers may shut the process down over HTTP.
    pub admin_allow_remote_shutdown: bool,
    /// Whether non-loopback peers may change destinations and profiles
    /// over the control API.
    pub allow_remote_control: bool,
    /// How updates are shaped and delivered.
    pub behavior: Behavior,
    /// Fixed destinations.
    pub dsts: Vec<DstSpec>,
    /// Generated destinations; those with a range oscillate with `timing`.
    pub generate: Vec<GeneratedDst>,
    /// Every service's profile has this many routes (0: the default profile).
    pub profile_routes: u32,
    /// Hold and jitter of oscillating destinations (`min`/`max` unused).
    pub timing: Oscillation,
    /// The seed of the oscillations.
    pub seed: u64,
    /// Service policies: the addresses that stand for each service and its
    /// protocol.
    pub policies: Vec<(crate::target::Authority, super::policy::ServicePolicy)>,
    /// Serve the Identity service with these identities.
    pub identities: Option<Identities>,
    /// Where to write the issuing CA's certificate (the proxy's trust
    /// anchors) once serving starts.
    pub trust_anchors_out: Option<std::path::PathBuf>,
    /// Serve these namespaces' Services from the Kubernetes API.
    pub kubernetes_namespaces: Vec<String>,
    /// The cluster domain of their authorities.
    pub cluster_domain: String,
    /// The Kubernetes API client for them.
    pub kube: KubeSettings,
    /// The connection cap and the deadline for each connection's preface.
    pub accept: crate::net::AcceptLimits,
}

impl Config {
    /// Checks what the types do not: a destination given twice, sizes
    /// past [`crate::limits`], an oscillation with no hold, a namespace
    /// that is no name.
    pub fn validate(&self) -> Result<(), String> {
        use crate::limits::{
            MAX_ENDPOINTS_PER_DESTINATION, MAX_STREAM_QUEUE, MIN_OSCILLATION_CYCLE,
        };
        if self.accept.max_connections == 0 || self.accept.handshake.is_zero() {
            return Err(
                "--max-connections and --handshake-timeout must be above zero (e.g. 65535 and 10s)"
                    .into(),
            );
        }
        if !(1..=MAX_STREAM_QUEUE).contains(&self.behavior.queue_capacity) {
            return Err(format!(
                "--stream-queue-capacity must be from 1 to {MAX_STREAM_QUEUE} updates, got {}",
                self.behavior.queue_capacity
            ));
        }
        let sizes = self
            .dsts
            .iter()
            .map(|d| (&d.authority, d.endpoints.len() as u64, "DSTS"))
            .chain(
                self.generate
                    .iter()
                    .map(|g| (&g.authority, u64::from(g.max), "--generate")),
            );
        for (authority, size, flag) in sizes {
            if size > u64::from(MAX_ENDPOINTS_PER_DESTINATION) {
                return Err(format!(
                    "{flag}: {authority} has {size} endpoints, more than a destination may have: at most {MAX_ENDPOINTS_PER_DESTINATION} (one update of them stays within gRPC's 4 MiB message limit)"
                ));
            }
        }
        let cycle = self.timing.min_hold + self.timing.max_hold;
        if self.generate.iter().any(GeneratedDst::oscillates) && cycle < MIN_OSCILLATION_CYCLE {
            return Err(format!(
                "the oscillation holds add up to {cycle:?}, below {MIN_OSCILLATION_CYCLE:?}: give --oscillate-hold-duration (e.g. 30s)"
            ));
        }
        if let Some(ns) = self
            .kubernetes_namespaces
            .iter()
            .find(|ns| !crate::labels::is_dns_label(ns))
        {
            return Err(format!(
                "--kubernetes-namespace '{ns}' is not a namespace name (lowercase letters, digits and '-', at most 63)"
            ));
        }
        for g in &self.generate {
            if self.dsts.iter().any(|d| d.authority == g.authority) {
                return Err(format!(
                    "destination {} is both in DSTS and --generate",
                    g.authority
                ));
            }
        }
        Ok(())
    }
}
