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
    /// Serve the Identity service with these identities.
    pub identities: Option<Identities>,
    /// Serve these namespaces' Services from the Kubernetes API.
    pub kubernetes_namespaces: Vec<String>,
    /// The cluster domain of their authorities.
    pub cluster_domain: String,
    /// The Kubernetes API client for them.
    pub kube: KubeSettings,
}

impl Config {
    /// Checks what the types do not: a destination given twice, an empty
    /// queue.
    pub fn validate(&self) -> Result<(), String> {
        if self.behavior.queue_capacity == 0 {
            return Err("--stream-queue-capacity must be at least 1".into());
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
