//! `mock-dst`: a standalone mock Destination server.

use std::{net::SocketAddr, process::ExitCode};

use crate::{
    churn::schedule::OscillationArgs,
    mock::{
        MockDestination, control,
        dsts::Dsts,
        generate::{self, GeneratedDst},
        identity::Identities,
        server::{Behavior, Delay},
    },
    runtime::Runtime,
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

    /// Admin server: metrics, /live, /ready, POST /shutdown and /abort, and
    /// the control API.
    #[arg(long, default_value = "0.0.0.0:9992")]
    pub admin_addr: SocketAddr,

    #[command(flatten)]
    pub admin_control: crate::admin::ControlArgs,

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

    /// Added to --delay: this much per stream open on the server, so that
    /// latency grows with the load (a red line known in advance).
    #[arg(long, default_value = "0s")]
    pub delay_per_stream: humantime::Duration,

    /// Fault injection: every Nth stream opened never receives removals (a
    /// stale-endpoints bug), to check that clients detect it.
    #[arg(long)]
    pub withhold_removals_every: Option<usize>,

    /// A generated destination: `DESTINATION=CIDR:COUNT` (fixed size) or
    /// `DESTINATION=CIDR:MIN..MAX` (oscillates with the --oscillate-* timing).
    /// Repeatable.
    #[arg(long)]
    pub generate: Vec<GeneratedDst>,

    #[command(flatten)]
    pub oscillation: OscillationArgs,

    /// Serve the Identity service too: one subdirectory per identity name,
    /// each holding `crt.pem` (and optionally `key.p8`, `csr.der`).
    /// The directory is read and checked before anything starts.
    #[arg(long = "identities-dir", value_name = "DIR", env = "LINKERD2_MOCK_DST_IDENTITIES_DIR", value_parser = load_identities)]
    pub identities: Option<Identities>,

    /// Serve the Services of this namespace from the Kubernetes API (each
    /// Service's first port, with its EndpointSlices' ready addresses),
    /// following them as they change. Repeatable.
    #[arg(long)]
    pub kubernetes_namespace: Vec<String>,

    /// The cluster domain of --kubernetes-namespace authorities.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,

    /// The Kubernetes API client of --kubernetes-namespace.
    #[command(flatten)]
    pub kube: crate::kube_api::KubeArgs,
}

impl Args {
    /// Cross-flag checks.
    pub fn validate(&self) -> Result<(), String> {
        if self.stream_queue_capacity == 0 {
            return Err("--stream-queue-capacity must be at least 1".into());
        }
        self.oscillation.validate()?;
        self.kube.validate()?;
        for g in &self.generate {
            if self.dsts.0.iter().any(|d| d.authority == g.authority) {
                return Err(format!(
                    "destination {} is both in DSTS and --generate",
                    g.authority
                ));
            }
        }
        Ok(())
    }

    /// Serves until signalled.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let Self {
            dsts,
            addr,
            admin_addr,
            admin_control,
            legacy_no_endpoints,
            stream_queue_capacity,
            delay,
            delay_per_stream,
            withhold_removals_every,
            generate,
            oscillation,
            identities,
            kubernetes_namespace,
            cluster_domain,
            kube,
        } = self;
        let mut rt = Runtime::new();
        let shutdown = rt.shutdown();
        let behavior = Behavior {
            legacy_no_endpoints,
            queue_capacity: stream_queue_capacity,
            delay,
            delay_per_stream: delay_per_stream.into(),
            withhold_removals_every,
            ..Default::default()
        };
        let mut mock = MockDestination::new(behavior, rt.registry());
        if let Some(ids) = identities {
            tracing::info!(identities = ?ids.names(), "serving the Identity service");
            mock = mock.with_identities(ids);
        }
        let handle = mock.handle();
        for d in dsts.0 {
            handle.set(&d.authority, d.endpoints);
        }
        let listener = crate::mock::bind(addr).map_err(|e| {
            anyhow::anyhow!("cannot bind --addr {addr}: {e}; pick a free address with -a/--addr")
        })?;
        rt.serve_admin_with(admin_addr, admin_control, control::router(handle.clone()))
            .await?;
        tracing::info!(addr = %listener.local_addr()?, "mock Destination server listening");
        let seed = oscillation.seed();
        let timing = oscillation.oscillation(0, 0);
        for (index, g) in generate.into_iter().enumerate() {
            handle.set(&g.authority, g.endpoints(g.min));
            if g.oscillates() {
                tracing::info!(destination = %g.authority, min = g.min, max = g.max, seed, "oscillating");
                let stop = shutdown.clone();
                rt.spawn(generate::oscillate(
                    handle.clone(),
                    g,
                    timing,
                    seed,
                    index as u32,
                    stop,
                ));
            }
        }
        if !kubernetes_namespace.is_empty() {
            let kube = kube.client().await.map_err(|e| {
                anyhow::anyhow!("cannot build a Kubernetes client for --kubernetes-namespace: {e}")
            })?;
            for ns in kubernetes_namespace {
                tracing::info!(namespace = %ns, "serving the namespace's Services");
                rt.spawn(crate::mock::kube::follow(
                    kube.clone(),
                    ns,
                    cluster_domain.clone(),
                    handle.clone(),
                    shutdown.clone(),
                ));
            }
        }
        rt.readiness().set(true);
        let served = mock.serve(listener, shutdown).await;
        rt.finish().await?;
        served?;
        Ok(ExitCode::SUCCESS)
    }
}

fn load_identities(dir: &str) -> Result<Identities, String> {
    Identities::load(std::path::Path::new(dir)).map_err(|e| e.to_string())
}
