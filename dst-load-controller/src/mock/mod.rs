//! An embeddable mock Destination server: serve fixed or changing endpoint
//! sets on a bound listener, change them from a test or over HTTP. The same
//! listener serves Policy (outbound, [`policy`], and inbound, [`inbound`],
//! as Linkerd's policy controller answers for plain Services and pods with
//! no Server) and, when given
//! identities, Identity: enough for a real Linkerd proxy.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use dst_load_controller::mock::{MockDestination, server::Behavior};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let mock = MockDestination::new(Behavior::default(), &mut Default::default());
//! let handle = mock.handle();
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! tokio::spawn(mock.serve(listener, shutdown.clone()));
//! handle.set(&"foo.ns.svc.cluster.local:8080".parse()?, ["10.0.0.1:8080".parse()?]);
//! # Ok(()) }
//! ```

pub mod codec;
pub mod config;
pub mod control;
pub mod dsts;
pub mod generate;
pub mod grpc;
pub mod handle;
pub mod identity;
pub mod inbound;
pub mod kube;
pub mod metrics;
pub mod policy;
pub mod profile_server;
pub mod profiles;
pub mod proxy_env;
pub mod queue;
pub mod server;
pub mod store;

pub use config::Config;
pub use handle::Handle;

use std::net::SocketAddr;

use linkerd2_proxy_api::{
    identity::identity_server::IdentityServer,
    inbound::inbound_server_policies_server::InboundServerPoliciesServer,
    outbound::outbound_policies_server::OutboundPoliciesServer,
};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use self::{
    metrics::Metrics,
    server::{Behavior, Service},
};

/// A mock Destination server, not yet serving.
pub struct MockDestination {
    handle: Handle,
    behavior: Behavior,
    identities: Option<identity::Identities>,
    accept: crate::net::AcceptLimits,
}

/// The connections a mock holds by default: one per local port a client
/// has towards it.
pub const DEFAULT_MAX_CONNECTIONS: usize = 65_535;

/// How long a new connection has for its HTTP/2 preface by default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Binds a listener with a backlog deep enough for thousands of simulated
/// proxies connecting at once (the default drops some with resets).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(8192)
}

impl MockDestination {
    /// A mock with no destinations; its metrics go into `registry`.
    pub fn new(behavior: Behavior, registry: &mut Registry) -> Self {
        let metrics = Metrics::register(registry);
        Self {
            handle: Handle::new(metrics),
            behavior,
            identities: None,
            accept: crate::net::AcceptLimits {
                max_connections: DEFAULT_MAX_CONNECTIONS,
                handshake: DEFAULT_HANDSHAKE_TIMEOUT,
            },
        }
    }

    /// Accepts connections within `limits` (a cap, and a deadline for each
    /// connection's preface).
    pub fn with_accept_limits(mut self, limits: crate::net::AcceptLimits) -> Self {
        self.accept = limits;
        self
    }

    /// Also serves the Identity service, certifying these identities.
    pub fn with_identities(mut self, identities: identity::Identities) -> Self {
        self.identities = Some(identities);
        self
    }

    /// The handle that changes destinations.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Serves gRPC on `listener` until `shutdown`; open streams end when it fires.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        let Self {
            handle,
            behavior,
            identities,
            accept,
        } = self;
        let profiles =
            profile_server::ProfileService::new(handle.clone(), behavior.clone(), shutdown.clone());
        let policy = policy::PolicyService::new(
            handle.policies.clone(),
            &behavior.cluster_domain,
            shutdown.clone(),
        );
        let inbound = inbound::InboundService::new(
            handle.inbound.clone(),
            &behavior.cluster_networks,
            shutdown.clone(),
        );
        let svc = Service::new(
            handle.store.clone(),
            behavior,
            handle.metrics.clone(),
            shutdown.clone(),
        );
        tonic::transport::Server::builder()
            .add_service(grpc::DestinationGrpc(
                std::sync::Arc::new(svc),
                std::sync::Arc::new(profiles),
            ))
            .add_service(OutboundPoliciesServer::new(policy.clone()))
            .add_service(InboundServerPoliciesServer::new(inbound))
            .add_optional_service(identities.map(IdentityServer::new))
            .serve_with_incoming_shutdown(
                crate::net::incoming(listener, accept, shutdown.clone()),
                shutdown.cancelled_owned(),
            )
            .await
    }
}
