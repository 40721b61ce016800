//! `mock-dst`: a standalone mock Destination server.

use std::{net::SocketAddr, process::ExitCode};

use prometheus_client::registry::Registry;

use crate::{
    mock::{
        self, MockDestination, control,
        dsts::Dsts,
        generate::{self, GeneratedDst},
        identity::Identities,
        inbound::{InboundPolicies, InboundPolicy, UnknownInboundPolicy},
        policy::{AppProtocol, Policies, ServicePolicy},
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
    #[arg(short = 'a', long = "addr", default_value = "127.0.0.1:8086")]
    pub addr: SocketAddr,

    /// Admin server: metrics, /live, /ready, POST /shutdown and /abort, and
    /// the control API.
    #[arg(long, default_value = "127.0.0.1:9992")]
    pub admin_addr: SocketAddr,

    #[command(flatten)]
    pub admin_control: super::flags::ControlArgs,

    /// Let any peer, not only loopback ones, change destinations and
    /// profiles over the control API (PUT, PATCH, DELETE). Without it a
    /// remote change is refused with 403: whoever can change them can point
    /// every proxy that uses the mock at an address of theirs.
    #[arg(long)]
    pub allow_remote_control: bool,

    /// Serve endpoints with no TLS identity and no protocol hint, as pods
    /// without a proxy: a real proxy using the mock then talks to them in
    /// plain text, in the protocol the application used (meshed endpoints
    /// get mTLS and HTTP/2 from it).
    #[arg(long)]
    pub unmeshed_endpoints: bool,

    /// Serve endpoints as their address and weight only: no labels, no TLS
    /// identity, no protocol hint (what linkerd2-mock-dst sends), the
    /// fewest bytes per update. Implies --unmeshed-endpoints.
    #[arg(long)]
    pub bare_endpoints: bool,

    /// Send `no_endpoints` when a set empties, as older controllers did.
    #[arg(long)]
    pub legacy_no_endpoints: bool,

    /// Connections open at once; past it new ones wait in the listen
    /// backlog until one closes (logged at warn).
    #[arg(long, default_value_t = mock::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// How long a new connection may take to send its HTTP/2 preface
    /// before it is closed (a half-open connection holds a descriptor).
    #[arg(long, default_value = "10s")]
    pub handshake_timeout: humantime::Duration,

    /// Updates queued per stream; a stream whose queue fills is ended (status
    /// OK), as the controller ends slow consumers. From 1 to 1,000,000.
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
    /// stale-endpoints bug), to check that clients detect it. Counted over
    /// streams on existing services, the first one included; a NotFound
    /// answer does not count.
    #[arg(long)]
    pub withhold_removals_every: Option<usize>,

    /// A generated destination: `DESTINATION=CIDR:COUNT` (fixed size) or
    /// `DESTINATION=CIDR:MIN..MAX` (oscillates with the --oscillate-* timing).
    /// At most 10,000 endpoints, which fit in one 4 MiB gRPC message.
    /// Repeatable.
    #[arg(long)]
    pub generate: Vec<GeneratedDst>,

    /// Give every service served (DSTS and --generate) a profile of this
    /// many routes (`route-K`: GET `/api/route-K/[^/]*`, retryable, 1s
    /// timeout), as a ServiceProfile would; its `GetProfile` streams get
    /// them. 0: the controller's default profile. Profiles can be changed
    /// over the control API either way.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub profile_routes: u32,

    /// An address that stands for a service in outbound policy lookups, as
    /// its ClusterIP does: `AUTHORITY=IP:PORT`, e.g.
    /// `web.ns.svc.cluster.local:80=10.96.0.10:80`. A proxy's connection
    /// to the address is then balanced over the service's endpoints; an
    /// address no service holds gets `NotFound` (the proxy forwards to it).
    /// Repeatable; changeable over the control API (`/api/policies`).
    #[arg(long, value_name = "AUTHORITY=IP:PORT", value_parser = service_address)]
    pub service_address: Vec<(crate::target::Authority, SocketAddr)>,

    /// How a service's traffic is read: `AUTHORITY=PROTOCOL`, PROTOCOL one
    /// of detect (the default), http1, http2, opaque (or tcp), as a Service
    /// port's appProtocol sets it; its values (http, kubernetes.io/h2c,
    /// linkerd.io/opaque, linkerd.io/tcp) are read as Linkerd reads them.
    /// Repeatable.
    #[arg(long, value_name = "AUTHORITY=PROTOCOL", value_parser = service_protocol)]
    pub service_protocol: Vec<(crate::target::Authority, AppProtocol)>,

    /// Who may connect to the proxies' own ports (inbound), by the name of
    /// one of Linkerd's default policies: all-unauthenticated,
    /// all-authenticated, cluster-unauthenticated, cluster-authenticated,
    /// deny or audit. Ports without a policy of their own
    /// (--inbound-port-policy) get it. Changeable over the control API
    /// (`/api/inbound`).
    #[arg(long, value_name = "POLICY", default_value = "all-unauthenticated")]
    pub default_inbound_policy: InboundPolicy,

    /// A port's own inbound policy: `PORT=POLICY`, e.g. `9090=deny`.
    /// Repeatable, each port once; changeable over the control API (`/api/inbound/{port}`).
    #[arg(long, value_name = "PORT=POLICY", value_parser = inbound_port_policy)]
    pub inbound_port_policy: Vec<(u16, InboundPolicy)>,

    /// The networks the cluster-* inbound policies admit, comma-separated,
    /// as Linkerd's `clusterNetworks` (the default is its chart's).
    #[arg(
        long,
        value_name = "CIDRS",
        value_delimiter = ',',
        default_value = mock::inbound::CLUSTER_NETWORKS,
        value_parser = network
    )]
    pub cluster_networks: Vec<ipnet::IpNet>,

    #[command(flatten)]
    pub oscillation: super::flags::OscillationArgs,

    /// Serve the Identity service too: one subdirectory per identity name,
    /// each holding `crt.pem` (and optionally `key.p8`, `csr.der`).
    /// The directory is read and checked before anything starts.
    #[arg(long = "identities-dir", value_name = "DIR", env = "LINKERD2_MOCK_DST_IDENTITIES_DIR", value_parser = load_identities)]
    pub identities: Option<Identities>,

    /// Serve the Identity service too, signing the CSR of a proxy that asks
    /// for this identity name with the token of --identity-token-file, as
    /// Linkerd's identity service does (and refusing with its status codes
    /// otherwise), e.g. `default.ns.serviceaccount.identity.linkerd.cluster.local`.
    #[arg(
        long,
        value_name = "NAME",
        conflicts_with = "identities",
        requires = "identity_token_file"
    )]
    pub identity_name: Option<String>,

    /// The token a proxy must present to be certified: the contents of this
    /// file (give the proxy the same file, LINKERD2_PROXY_IDENTITY_TOKEN_FILE).
    #[arg(long, value_name = "FILE", requires = "identity_name")]
    pub identity_token_file: Option<std::path::PathBuf>,

    /// The issuing CA's certificate (PEM); without it and --identity-ca-key,
    /// a CA is generated at start.
    #[arg(long, value_name = "PEM", requires_all = ["identity_ca_key", "identity_name"])]
    pub identity_ca_cert: Option<std::path::PathBuf>,

    /// The issuing CA's private key (PKCS#8 PEM).
    #[arg(long, value_name = "PEM", requires = "identity_ca_cert")]
    pub identity_ca_key: Option<std::path::PathBuf>,

    /// Write the issuing CA's certificate here once serving starts: the
    /// proxy's trust anchors (LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS).
    #[arg(long, value_name = "FILE", requires = "identity_name")]
    pub identity_trust_anchors_out: Option<std::path::PathBuf>,

    /// How long an issued certificate is valid (short ones make the proxy
    /// renew while it runs).
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub identity_lifetime: humantime::Duration,

    /// Serve the Services of this namespace from the Kubernetes API (each
    /// Service's first port, with its EndpointSlices' ready addresses),
    /// following them as they change. Repeatable.
    #[arg(short = 'n', long, visible_alias = "namespace")]
    pub kubernetes_namespace: Vec<String>,

    /// The cluster domain of --kubernetes-namespace authorities, and the one
    /// an outbound policy lookup of `name.ns.svc` completes with.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,

    /// The Kubernetes API client of --kubernetes-namespace.
    #[command(flatten)]
    pub kube: super::flags::KubeArgs,
}

impl Args {
    /// Cross-flag checks (the same as making its [`mock::Config`]).
    pub fn validate(&self) -> Result<(), String> {
        mock::Config::try_from(self.clone()).map(drop)
    }

    /// Serves until signalled.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        serve(mock::Config::try_from(self).map_err(anyhow::Error::msg)?).await
    }
}

impl TryFrom<Args> for mock::Config {
    type Error = String;

    fn try_from(args: Args) -> Result<Self, String> {
        args.oscillation.validate()?;
        args.kube.validate()?;
        let policies = policies(&args)?;
        let mut inbound = InboundPolicies {
            default: args.default_inbound_policy,
            ..Default::default()
        };
        for (port, policy) in &args.inbound_port_policy {
            if let Some(was) = inbound.ports.insert(*port, *policy) {
                return Err(format!(
                    "--inbound-port-policy gives port {port} twice ({was}, then {policy}): give each port once"
                ));
            }
        }
        let identities = match &args.identity_name {
            Some(name) => Some(issuing(&args, name)?),
            None => args.identities,
        };
        let config = mock::Config {
            addr: args.addr,
            admin_addr: args.admin_addr,
            admin_allow_remote_shutdown: args.admin_control.admin_allow_remote_shutdown,
            allow_remote_control: args.allow_remote_control,
            behavior: Behavior {
                legacy_no_endpoints: args.legacy_no_endpoints,
                queue_capacity: args.stream_queue_capacity,
                delay: args.delay,
                delay_per_stream: args.delay_per_stream.into(),
                withhold_removals_every: args.withhold_removals_every,
                unmeshed: args.unmeshed_endpoints,
                bare: args.bare_endpoints,
                cluster_domain: args.cluster_domain.clone(),
                cluster_networks: args.cluster_networks,
                ..Default::default()
            },
            dsts: args.dsts.0,
            generate: args.generate,
            profile_routes: args.profile_routes,
            timing: args.oscillation.oscillation(0, 0),
            seed: args.oscillation.seed(),
            policies,
            inbound,
            identities,
            trust_anchors_out: args.identity_trust_anchors_out,
            kubernetes_namespaces: args.kubernetes_namespace,
            cluster_domain: args.cluster_domain,
            kube: args.kube.settings(),
            accept: crate::net::AcceptLimits {
                max_connections: args.max_connections,
                handshake: args.handshake_timeout.into(),
            },
        };
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }
}

/// Serves `config` until signalled.
pub async fn serve(config: mock::Config) -> anyhow::Result<ExitCode> {
    let mock::Config {
        addr,
        admin_addr,
        admin_allow_remote_shutdown,
        allow_remote_control,
        behavior,
        dsts,
        generate,
        profile_routes,
        timing,
        seed,
        policies,
        inbound,
        identities,
        trust_anchors_out,
        kubernetes_namespaces,
        cluster_domain,
        kube,
        accept,
    } = config;
    let mut rt = Runtime::new();
    let shutdown = rt.shutdown();
    let mut registry = Registry::default();
    let mut mock = MockDestination::new(behavior, &mut registry).with_accept_limits(accept);
    if let Some(ids) = identities {
        tracing::info!(identities = ?ids.names(), "serving the Identity service");
        if let (Some(path), Some(pem)) = (&trust_anchors_out, ids.trust_anchor_pem()) {
            std::fs::write(path, pem).map_err(|e| {
                anyhow::anyhow!(
                    "cannot write --identity-trust-anchors-out {}: {e}",
                    path.display()
                )
            })?;
            tracing::info!(path = %path.display(), "wrote the identity trust anchors");
        }
        mock = mock.with_identities(ids);
    }
    let handle = mock.handle();
    for d in dsts {
        handle.set(&d.authority, d.endpoints);
    }
    for (authority, policy) in policies {
        handle
            .set_policy(&authority, policy)
            .map_err(|e| anyhow::anyhow!("--service-address: {e}"))?;
    }
    handle
        .set_inbound(inbound)
        .map_err(|e| anyhow::anyhow!("--inbound-port-policy: {e}"))?;
    let listener = crate::mock::bind(addr).map_err(|why| crate::admin::BindError {
        flag: "-a/--addr",
        addr,
        why,
    })?;
    rt.serve_admin_with(
        registry,
        admin_addr,
        admin_allow_remote_shutdown,
        control::router(handle.clone(), allow_remote_control),
    )
    .await?;
    tracing::info!(addr = %listener.local_addr()?, "mock Destination server listening");
    for (index, g) in generate.into_iter().enumerate() {
        handle.set(&g.authority, g.endpoints(g.min));
        if g.oscillates() {
            tracing::info!(destination = %g.authority, min = g.min, max = g.max, seed, "oscillating");
            rt.spawn(generate::oscillate(
                handle.clone(),
                g,
                timing,
                seed,
                index as u32,
                shutdown.clone(),
            ));
        }
    }
    if profile_routes > 0 {
        let profile = crate::mock::profiles::ProfileSpec::generated(profile_routes);
        let services: std::collections::BTreeSet<String> = handle
            .list()
            .into_iter()
            .map(|(a, _)| a.host().to_string())
            .filter(|h| crate::mock::profiles::is_service_name(h))
            .collect();
        for host in services {
            handle.set_profile(&host, profile.clone());
        }
    }
    if !kubernetes_namespaces.is_empty() {
        let kube = kube.client().await.map_err(|e| {
            anyhow::anyhow!("cannot build a Kubernetes client for --kubernetes-namespace: {e}")
        })?;
        for ns in kubernetes_namespaces {
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

/// The issuing Identity service of `--identity-name` and its flags.
fn issuing(args: &Args, name: &str) -> Result<Identities, String> {
    let dns_name = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if !dns_name {
        return Err(format!(
            "--identity-name '{name}' is not a DNS name; give the proxy's identity name, e.g. default.ns.serviceaccount.identity.linkerd.cluster.local"
        ));
    }
    let path = args
        .identity_token_file
        .as_ref()
        .ok_or("--identity-name needs --identity-token-file")?;
    let token = std::fs::read(path).map_err(|e| {
        format!(
            "cannot read --identity-token-file {}: {e}; give the file the proxy reads its token from",
            path.display()
        )
    })?;
    if token.is_empty() {
        return Err(format!(
            "--identity-token-file {} is empty; a proxy with an empty token is refused, so put a token in it",
            path.display()
        ));
    }
    let lifetime: std::time::Duration = args.identity_lifetime.into();
    if lifetime < std::time::Duration::from_secs(1) {
        return Err("--identity-lifetime must be at least 1s".to_string());
    }
    Identities::issuing(mock::identity::IssuerConfig {
        ca: args
            .identity_ca_cert
            .clone()
            .zip(args.identity_ca_key.clone()),
        token,
        identity: name.to_string(),
        lifetime,
    })
    .map_err(|e| format!("--identity-ca-cert/--identity-ca-key: {e}"))
}

/// `AUTHORITY=IP:PORT` of `--service-address`.
fn service_address(arg: &str) -> Result<(crate::target::Authority, SocketAddr), String> {
    let (authority, addr) = arg
        .split_once('=')
        .ok_or_else(|| format!("expected AUTHORITY=IP:PORT, e.g. web.ns.svc.cluster.local:80=10.96.0.10:80, got '{arg}'"))?;
    Ok((
        policy_authority(authority)?,
        addr.parse()
            .map_err(|_| format!("'{addr}' is not an IP:PORT address, e.g. 10.96.0.10:80"))?,
    ))
}

/// `AUTHORITY=PROTOCOL` of `--service-protocol`.
fn service_protocol(arg: &str) -> Result<(crate::target::Authority, AppProtocol), String> {
    let (authority, protocol) = arg.split_once('=').ok_or_else(|| {
        format!("expected AUTHORITY=PROTOCOL, e.g. web.ns.svc.cluster.local:80=opaque, got '{arg}'")
    })?;
    Ok((
        policy_authority(authority)?,
        protocol.parse::<AppProtocol>().map_err(|e| e.to_string())?,
    ))
}

/// `PORT=POLICY` of `--inbound-port-policy`.
fn inbound_port_policy(arg: &str) -> Result<(u16, InboundPolicy), String> {
    let (port, policy) = arg
        .split_once('=')
        .ok_or_else(|| format!("expected PORT=POLICY, e.g. 9090=deny, got '{arg}'"))?;
    let port = mock::inbound::parse_port(port).map_err(|e| e.to_string())?;
    Ok((
        port,
        policy
            .parse()
            .map_err(|e: UnknownInboundPolicy| e.to_string())?,
    ))
}

/// A network of `--cluster-networks`.
fn network(arg: &str) -> Result<ipnet::IpNet, String> {
    arg.trim()
        .parse()
        .map_err(|_| format!("'{arg}' is not a network: give CIDRs, e.g. 10.0.0.0/8,fd00::/8"))
}

fn policy_authority(authority: &str) -> Result<crate::target::Authority, String> {
    mock::server::service_authority(authority).map_err(|why| {
        format!("'{authority}' is not a service authority: {why}; give <svc>.<ns>.svc.<cluster-domain>:<port>")
    })
}

/// The service policies of `--service-address` and `--service-protocol`,
/// checked as the control API checks them.
fn policies(args: &Args) -> Result<Vec<(crate::target::Authority, ServicePolicy)>, String> {
    let mut by_service = std::collections::BTreeMap::<_, ServicePolicy>::new();
    for (authority, addr) in &args.service_address {
        by_service
            .entry(authority.clone())
            .or_default()
            .addresses
            .insert(*addr);
    }
    for (authority, protocol) in &args.service_protocol {
        by_service.entry(authority.clone()).or_default().protocol = *protocol;
    }
    let check = Policies::default();
    for (authority, policy) in &by_service {
        check
            .set(authority, policy.clone())
            .map_err(|e| format!("--service-address: {e}"))?;
    }
    Ok(by_service.into_iter().collect())
}

fn load_identities(dir: &str) -> Result<Identities, String> {
    Identities::load(std::path::Path::new(dir)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(argv: &[&str]) -> Result<mock::Config, String> {
        let args: Args = crate::cmd::parse_flags(argv).map_err(|e| e.to_string())?;
        mock::Config::try_from(args)
    }

    #[test]
    fn flags_make_the_config() {
        let c = config(&[
            "mock-dst",
            "web.ns.svc.cluster.local:80=10.0.0.1:80",
            "--addr",
            "127.0.0.1:8086",
            "--stream-queue-capacity",
            "7",
            "--delay",
            "10ms..20ms",
            "--withhold-removals-every",
            "3",
            "--generate",
            "api.ns.svc.cluster.local:8080=10.1.0.0/24:2..5",
            "--oscillate-hold-duration",
            "2s",
            "--seed",
            "42",
            "--bare-endpoints",
            "--default-inbound-policy",
            "all-authenticated",
            "--inbound-port-policy",
            "9090=deny",
            "--inbound-port-policy",
            "4191=audit",
            "--cluster-networks",
            "10.0.0.0/8,fd00::/8",
        ])
        .unwrap();
        assert_eq!(c.inbound.default, InboundPolicy::AllAuthenticated);
        assert_eq!(
            c.inbound.ports,
            [(9090, InboundPolicy::Deny), (4191, InboundPolicy::Audit)].into()
        );
        assert_eq!(
            c.behavior.cluster_networks,
            [
                "10.0.0.0/8".parse::<ipnet::IpNet>().unwrap(),
                "fd00::/8".parse().unwrap()
            ]
        );
        // Linkerd's chart's, unless given.
        let plain = config(&["mock-dst"]).unwrap();
        assert_eq!(plain.inbound, InboundPolicies::default());
        assert_eq!(
            plain.behavior.cluster_networks,
            mock::inbound::default_cluster_networks()
        );
        assert_eq!(c.addr, "127.0.0.1:8086".parse().unwrap());
        assert!(c.behavior.bare && !c.behavior.unmeshed);
        assert_eq!(c.behavior.queue_capacity, 7);
        assert_eq!(
            c.behavior.delay,
            Delay::Uniform(Duration::from_millis(10), Duration::from_millis(20))
        );
        assert_eq!(c.behavior.withhold_removals_every, Some(3));
        assert_eq!(c.dsts.len(), 1);
        assert_eq!(c.dsts[0].endpoints, ["10.0.0.1:80".parse().unwrap()]);
        assert_eq!((c.generate[0].min, c.generate[0].max), (2, 5));
        assert_eq!(c.timing.min_hold, Duration::from_secs(2));
        assert_eq!(c.seed, 42);
    }

    #[test]
    fn bad_flags_are_refused_with_the_fix() {
        let err = config(&["mock-dst", "--stream-queue-capacity", "0"]).unwrap_err();
        assert!(
            err.contains("--stream-queue-capacity must be from 1 to 1000000"),
            "{err}"
        );
        let err = config(&[
            "mock-dst",
            "web.ns.svc.cluster.local:80=10.0.0.1:80",
            "--generate",
            "web.ns.svc.cluster.local:80=10.1.0.0/24:2",
        ])
        .unwrap_err();
        assert!(err.contains("both in DSTS and --generate"), "{err}");
        let err = config(&["mock-dst", "--oscillate-jitter-percent", "101"]).unwrap_err();
        assert!(err.contains("between 0 and 100"), "{err}");
        for (flag, value, fix) in [
            (
                "--default-inbound-policy",
                "allow",
                "give all-unauthenticated, all-authenticated",
            ),
            (
                "--inbound-port-policy",
                "9090",
                "expected PORT=POLICY, e.g. 9090=deny",
            ),
            (
                "--inbound-port-policy",
                "0=deny",
                "'0' is not a port: give 1 to 65535",
            ),
            (
                "--inbound-port-policy",
                "80=open",
                "'open' is not an inbound policy",
            ),
            (
                "--cluster-networks",
                "10.0.0.0/8,10.1",
                "'10.1' is not a network: give CIDRs",
            ),
        ] {
            let err = config(&["mock-dst", flag, value]).unwrap_err();
            assert!(err.contains(fix), "{flag} {value}: {err}");
        }
    }
}
