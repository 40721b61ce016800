//! Outbound policy lookups of many service names, each once, against an
//! `OutboundPolicies` server such as Linkerd's policy controller:
//! `hack/bench.py policy-names` runs it between readings of the server's
//! memory and CPU.
//!
//! ```text
//! cargo run --release --example policy_names -- --addr 127.0.0.1:8090 \
//!     --namespace bench --from 0 --count 10000
//! ```
//!
//! Lookup `i` asks for `gone-{i}.{namespace}.svc.{cluster-domain}:80`, a
//! Service that does not exist (Linkerd's controller answers it the
//! default policy), as a workload of the namespace would. With `--watch`
//! each lookup is a `Watch` stream, closed once its first policy has come.
//! Prints one line of JSON: the lookups made and the seconds they took.

use std::time::Instant;

use clap::Parser;
use linkerd2_proxy_api::outbound::{
    TrafficSpec, outbound_policies_client::OutboundPoliciesClient, traffic_spec,
};

#[derive(Parser)]
struct Args {
    /// The `OutboundPolicies` server (plain gRPC).
    #[arg(long)]
    addr: std::net::SocketAddr,
    /// The namespace of the names and of the asking workload.
    #[arg(long)]
    namespace: String,
    /// The cluster domain of the names.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// The first name's index.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Names looked up.
    #[arg(long)]
    count: u64,
    /// Open a `Watch` per name (closed after its first policy) instead of
    /// a `Get`.
    #[arg(long)]
    watch: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut client = OutboundPoliciesClient::connect(format!("http://{}", args.addr)).await?;
    let started = Instant::now();
    for i in args.from..args.from + args.count {
        let spec = TrafficSpec {
            source_workload: format!("{}:policy-names", args.namespace),
            target: Some(traffic_spec::Target::Authority(format!(
                "gone-{i}.{}.svc.{}:80",
                args.namespace, args.cluster_domain
            ))),
        };
        if args.watch {
            let mut stream = client.watch(spec).await?.into_inner();
            stream
                .message()
                .await?
                .ok_or_else(|| anyhow::anyhow!("the watch of name {i} ended with no policy"))?;
        } else {
            client.get(spec).await?;
        }
    }
    println!(
        "{{\"lookups\": {}, \"seconds\": {:.3}}}",
        args.count,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
