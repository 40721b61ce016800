//! What a mock Destination process serves: made from `mock-dst`'s flags
//! (`TryFrom<mock_dst::Args>`, where they are checked), or built directly by
//! tests and embedders.

use std::net::SocketAddr;

use super::{dsts::DstSpec, generate::GeneratedDst, identity::Identities, server::Behavior};
use crate::{kube_api::KubeSettings, schedule::Oscillation, target::Authority};

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
    /// Who may connect to the proxies' own ports.
    pub inbound: super::inbound::InboundPolicies,
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

/// A mock configuration that cannot serve; each names the flag.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No connections, or no time for a preface.
    #[error("--max-connections and --handshake-timeout must be above zero (e.g. 65535 and 10s)")]
    Accept,
    /// A queue of none, or past [`crate::limits::MAX_STREAM_QUEUE`].
    #[error(
        "--stream-queue-capacity must be from 1 to {max} updates, got {0}",
        max = crate::limits::MAX_STREAM_QUEUE
    )]
    QueueCapacity(usize),
    /// A destination past [`crate::limits::MAX_ENDPOINTS_PER_DESTINATION`].
    #[error(
        "{flag}: {authority} has {size} endpoints, more than a destination may have: at most {max} (one update of them stays within gRPC's 4 MiB message limit)",
        max = crate::limits::MAX_ENDPOINTS_PER_DESTINATION
    )]
    Endpoints {
        /// Where it was given.
        flag: &'static str,
        /// The destination.
        authority: Authority,
        /// Its endpoints.
        size: u64,
    },
    /// Oscillations that would spin.
    #[error(
        "the oscillation holds add up to {0:?}, below {min:?}: give --oscillate-hold-duration (e.g. 30s)",
        min = crate::limits::MIN_OSCILLATION_CYCLE
    )]
    Cycle(std::time::Duration),
    /// A namespace that is no name.
    #[error(transparent)]
    Namespace(#[from] crate::labels::NameError),
    /// One destination given both ways.
    #[error("destination {0} is both in DSTS and --generate")]
    Twice(Authority),
}

impl Config {
    /// Checks what the types do not: a destination given twice, sizes
    /// past [`crate::limits`], an oscillation with no hold, a namespace
    /// that is no name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        use crate::limits::{
            MAX_ENDPOINTS_PER_DESTINATION, MAX_STREAM_QUEUE, MIN_OSCILLATION_CYCLE,
        };
        if self.accept.max_connections == 0 || self.accept.handshake.is_zero() {
            return Err(ConfigError::Accept);
        }
        if !(1..=MAX_STREAM_QUEUE).contains(&self.behavior.queue_capacity) {
            return Err(ConfigError::QueueCapacity(self.behavior.queue_capacity));
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
                return Err(ConfigError::Endpoints {
                    flag,
                    authority: authority.clone(),
                    size,
                });
            }
        }
        let cycle = self.timing.min_hold + self.timing.max_hold;
        if self.generate.iter().any(GeneratedDst::oscillates) && cycle < MIN_OSCILLATION_CYCLE {
            return Err(ConfigError::Cycle(cycle));
        }
        for ns in &self.kubernetes_namespaces {
            crate::labels::check_namespace("--kubernetes-namespace", ns)?;
        }
        for g in &self.generate {
            if self.dsts.iter().any(|d| d.authority == g.authority) {
                return Err(ConfigError::Twice(g.authority.clone()));
            }
        }
        Ok(())
    }
}
