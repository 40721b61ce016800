//! `mock-dst`: a standalone mock Destination server.

use std::{net::SocketAddr, process::ExitCode, sync::Arc};

use prometheus_client::registry::Registry;

use crate::{
    admin::{self, Readiness},
    mock::{
        MockDestination, control,
        dsts::Dsts,
        server::{Behavior, Delay},
    },
};

/// Flags of `mock-dst`.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// A list of mock destinations to serve: `DESTINATION=ENDPOINTS` pairs
    /// separated by `;`, where DESTINATION is `[scheme://]dns-name:port` and
    /// ENDPOINTS is a comma-separated list of socket addresses.
    #[arg(env = "LINKERD2_MOCK_DSTS", default_value = "")]
    pub dsts: Dsts,

    /// The address the gRPC server listens on.
    #[arg(short = 'a', long = "addr", default_value = "0.0.0.0:8086")]
    pub addr: SocketAddr,

    /// Admin server: metrics, /live, /ready and the control API.
    #[arg(long, default_value = "0.0.0.0:9992")]
    pub admin_addr: SocketAddr,

    /// Send `no_endpoints` when a set empties, as older controllers did.
    #[arg(long)]
    pub legacy_no_endpoints: bool,

    /// Updates queued per stream; a stream whose queue fills is ended (status
    /// OK), as the controller ends slow consumers.
    #[arg(long, default_value_t = 100)]
    pub stream_queue_capacity: usize,

    /// Delay before each update on each stream: `50ms`, or a uniform range `10ms..200ms`.
    #[arg(long, default_value = "none")]
    pub delay: Delay,
}

impl Args {
    /// Cross-flag checks.
    pub fn validate(&self) -> Result<(), String> {
        if self.stream_queue_capacity == 0 {
            return Err("--stream-queue-capacity must be at least 1".into());
        }
        Ok(())
    }

    /// Serves until signalled.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let Self {
            dsts,
            addr,
            admin_addr,
            legacy_no_endpoints,
            stream_queue_capacity,
            delay,
        } = self;
        let shutdown = crate::shutdown::on_signal();
        let mut registry = Registry::default();
        let behavior = Behavior {
            legacy_no_endpoints,
            queue_capacity: stream_queue_capacity,
            delay,
            ..Default::default()
        };
        let mock = MockDestination::new(behavior, &mut registry);
        let handle = mock.handle();
        for d in dsts.0 {
            handle.set(&d.authority, d.endpoints);
        }
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            anyhow::anyhow!("cannot bind --addr {addr}: {e}; pick a free address with -a/--addr")
        })?;
        let ready = Readiness::default();
        let router =
            admin::router(Arc::new(registry), ready.clone()).merge(control::router(handle));
        admin::spawn(admin_addr, router, shutdown.clone()).await?;
        tracing::info!(addr = %listener.local_addr()?, "mock Destination server listening");
        ready.set(true);
        mock.serve(listener, shutdown).await?;
        Ok(ExitCode::SUCCESS)
    }
}
