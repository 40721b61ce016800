//! The mock's Policy services over gRPC on loopback: an outbound watch by
//! address or by name gets the service's policy (a balancer discovering the
//! service's authority) and every change of it, ends when the service lets
//! the address go; any service name has the detect default, and addresses
//! no service holds and names of no service are `NotFound` (`name.ns.svc`
//! is read in the mock's cluster domain); every inbound
//! port gets the all-unauthenticated default; shutdown ends every stream.

use std::{net::SocketAddr, time::Duration};

use crate::support;
use dst_load_controller::{
    mock::{
        policy::{AppProtocol, ServicePolicy},
        server::Behavior,
    },
    target::Authority,
};
use linkerd2_proxy_api::{
    inbound::{self, PortSpec, inbound_server_policies_client::InboundServerPoliciesClient},
    meta::metadata,
    outbound::{
        self, OutboundPolicy, TrafficSpec, backend,
        outbound_policies_client::OutboundPoliciesClient, proxy_protocol, traffic_spec,
    },
};
use tokio_stream::StreamExt;

const WEB: &str = "web.ns.svc.cluster.local:80";
const CLUSTER_IP: &str = "10.96.0.10:80";
/// Long enough for a loaded machine; only reached when something is wrong.
const PATIENCE: Duration = Duration::from_secs(20);

fn by_addr(addr: &str) -> TrafficSpec {
    TrafficSpec {
        source_workload: "{\"ns\":\"ns\",\"pod\":\"client\"}".into(),
        target: Some(traffic_spec::Target::Addr(
            addr.parse::<SocketAddr>().unwrap().into(),
        )),
    }
}

fn by_name(name: &str) -> TrafficSpec {
    TrafficSpec {
        source_workload: "{\"ns\":\"ns\",\"pod\":\"client\"}".into(),
        target: Some(traffic_spec::Target::Authority(name.into())),
    }
}

fn policy(addrs: &[&str], protocol: AppProtocol) -> ServicePolicy {
    ServicePolicy {
        addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        protocol,
    }
}

/// The `Destination.Get` path of every backend in a policy, and its kind.
fn backends(p: &OutboundPolicy) -> (&'static str, Vec<String>) {
    fn dst(b: &outbound::Backend) -> String {
        let Some(backend::Kind::Balancer(bal)) = &b.kind else {
            panic!("not a balancer: {b:?}")
        };
        let Some(backend::endpoint_discovery::Kind::Dst(get)) =
            bal.discovery.as_ref().unwrap().kind.as_ref()
        else {
            panic!("no discovery: {bal:?}")
        };
        assert_eq!(b.queue.as_ref().unwrap().capacity, 100);
        get.path.clone()
    }
    // The backends of every rule of `routes`, whose distributions are
    // first-available lists (`$kind`: the route type's module).
    macro_rules! first_available {
        ($routes:expr, $kind:ident) => {
            $routes
                .iter()
                .flat_map(|r| &r.rules)
                .flat_map(|rule| match rule.backends.as_ref().unwrap().kind.as_ref() {
                    Some(outbound::$kind::distribution::Kind::FirstAvailable(f)) => f
                        .backends
                        .iter()
                        .map(|b| dst(b.backend.as_ref().unwrap()))
                        .collect::<Vec<_>>(),
                    other => panic!("{other:?}"),
                })
                .collect::<Vec<String>>()
        };
    }
    let http = |routes: &[outbound::HttpRoute]| first_available!(routes, http_route);
    let opaque = |o: &proxy_protocol::Opaque| first_available!(o.routes, opaque_route);
    match p.protocol.as_ref().unwrap().kind.as_ref().unwrap() {
        proxy_protocol::Kind::Detect(d) => {
            assert_eq!(d.timeout, Some(Duration::from_secs(10).try_into().unwrap()));
            let mut all = http(&d.http1.as_ref().unwrap().routes);
            all.extend(http(&d.http2.as_ref().unwrap().routes));
            all.extend(opaque(d.opaque.as_ref().unwrap()));
            ("detect", all)
        }
        proxy_protocol::Kind::Http1(h) => ("http1", http(&h.routes)),
        proxy_protocol::Kind::Http2(h) => ("http2", http(&h.routes)),
        proxy_protocol::Kind::Opaque(o) => ("opaque", opaque(o)),
        other => panic!("{other:?}"),
    }
}

async fn next<T>(stream: &mut tonic::Streaming<T>) -> Option<Result<T, tonic::Status>> {
    tokio::time::timeout(PATIENCE, stream.next())
        .await
        .expect("the stream answered within its patience")
}

#[tokio::test]
async fn an_address_watch_follows_its_services_policy_and_ends_when_it_is_let_go() {
    let mock = support::Mock::start(Behavior::default()).await;
    let web: Authority = WEB.parse().unwrap();
    mock.handle.set(&web, ["127.0.0.2:8080".parse().unwrap()]);
    mock.handle
        .set_policy(&web, policy(&[CLUSTER_IP], AppProtocol::Detect))
        .unwrap();
    let mut client = OutboundPoliciesClient::connect(format!("http://{}", mock.addr))
        .await
        .unwrap();

    let got = client.get(by_addr(CLUSTER_IP)).await.unwrap().into_inner();
    assert_eq!(backends(&got), ("detect", vec![WEB.to_string(); 3]));
    let Some(metadata::Kind::Resource(r)) = got.metadata.unwrap().kind else {
        panic!("no resource")
    };
    assert_eq!(
        (
            r.group.as_str(),
            r.kind.as_str(),
            r.namespace.as_str(),
            r.name.as_str(),
            r.port
        ),
        ("core", "Service", "ns", "web", 80)
    );

    let mut watch = client
        .watch(by_addr(CLUSTER_IP))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut watch).await.unwrap().unwrap();
    assert_eq!(backends(&first).0, "detect");
    // A change that leaves the policy as it is sends nothing; each real
    // one is sent, in order.
    mock.handle
        .set_policy(&web, policy(&[CLUSTER_IP], AppProtocol::Detect))
        .unwrap();
    for (protocol, name) in [
        (AppProtocol::Opaque, "opaque"),
        (AppProtocol::Http2, "http2"),
        (AppProtocol::Http1, "http1"),
    ] {
        mock.handle
            .set_policy(&web, policy(&[CLUSTER_IP], protocol))
            .unwrap();
        let got = next(&mut watch).await.unwrap().unwrap();
        assert_eq!(backends(&got), (name, vec![WEB.to_string()]));
    }
    // The service lets the address go: the stream ends (OK), and a new
    // watch of it is NotFound, while the service stays known by name.
    mock.handle
        .set_policy(&web, policy(&["10.96.0.11:80"], AppProtocol::Http1))
        .unwrap();
    assert!(next(&mut watch).await.is_none(), "the stream ended");
    let status = client.watch(by_addr(CLUSTER_IP)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    let got = client.get(by_name(WEB)).await.unwrap().into_inner();
    assert_eq!(backends(&got), ("http1", vec![WEB.to_string()]));
    mock.stop().await;
}

#[tokio::test]
async fn a_name_watch_follows_its_own_services_policy_only() {
    let mock = support::Mock::start(Behavior::default()).await;
    let web: Authority = WEB.parse().unwrap();
    let api: Authority = "api.ns.svc.cluster.local:80".parse().unwrap();
    mock.handle.set(&web, ["127.0.0.2:8080".parse().unwrap()]);
    let mut client = OutboundPoliciesClient::connect(format!("http://{}", mock.addr))
        .await
        .unwrap();
    let mut watch = client.watch(by_name(WEB)).await.unwrap().into_inner();
    assert_eq!(
        backends(&next(&mut watch).await.unwrap().unwrap()).0,
        "detect"
    );
    // Another service's policy, and the destination's deletion: nothing
    // sent, the stream stays open.
    mock.handle
        .set_policy(&api, policy(&[CLUSTER_IP], AppProtocol::Opaque))
        .unwrap();
    mock.handle.delete(&web).unwrap();
    // Its own policy is sent.
    mock.handle
        .set_policy(&web, policy(&[], AppProtocol::Http2))
        .unwrap();
    let got = next(&mut watch).await.unwrap().unwrap();
    assert_eq!(backends(&got), ("http2", vec![WEB.to_string()]));
    // Its policy deleted: nothing sent, the stream stays open, and a new
    // watch gets the deleted policy too (as Linkerd's controller keeps a
    // deleted Service's policy).
    assert!(mock.handle.delete_policy(&web));
    let idle = tokio::time::timeout(Duration::from_millis(300), watch.next()).await;
    assert!(idle.is_err(), "nothing sent, and still open: {idle:?}");
    let mut again = client.watch(by_name(WEB)).await.unwrap().into_inner();
    let got = next(&mut again).await.unwrap().unwrap();
    assert_eq!(backends(&got), ("http2", vec![WEB.to_string()]));
    // Set again: sent on the open watch.
    mock.handle
        .set_policy(&web, policy(&[], AppProtocol::Http1))
        .unwrap();
    let got = next(&mut watch).await.unwrap().unwrap();
    assert_eq!(backends(&got), ("http1", vec![WEB.to_string()]));
    mock.stop().await;
}

#[tokio::test]
async fn any_service_name_has_the_default_and_bad_targets_are_refused() {
    let mock = support::Mock::start(Behavior::default()).await;
    let mut client = OutboundPoliciesClient::connect(format!("http://{}", mock.addr))
        .await
        .unwrap();
    // Any service name has the default, served or not, as Linkerd's
    // controller answers for a Service that does not exist.
    for (name, want) in [
        (WEB, WEB),
        ("web.ns.svc.cluster.local", WEB),
        ("web.ns.svc.cluster.local.:80", WEB),
        ("web.ns.svc:80", WEB),
        (
            "api.ns.svc.cluster.local:8080",
            "api.ns.svc.cluster.local:8080",
        ),
    ] {
        let got = client.get(by_name(name)).await.unwrap().into_inner();
        assert_eq!(
            backends(&got),
            ("detect", vec![want.to_string(); 3]),
            "{name}"
        );
    }
    let no_workload = |workload: &str| TrafficSpec {
        source_workload: workload.into(),
        ..by_name(WEB)
    };
    for (spec, code) in [
        (by_addr(CLUSTER_IP), tonic::Code::NotFound),
        (by_name("example.com:80"), tonic::Code::NotFound),
        (no_workload(""), tonic::Code::InvalidArgument),
        (no_workload("client"), tonic::Code::InvalidArgument),
        (no_workload("{\"ns\":\"ns\"}"), tonic::Code::InvalidArgument),
        (no_workload("ns:"), tonic::Code::InvalidArgument),
        (by_addr("10.96.0.10:0"), tonic::Code::InvalidArgument),
        (by_name("not a name:80"), tonic::Code::InvalidArgument),
        // A port past 65535 is refused, not read as its low 16 bits (80).
        (
            TrafficSpec {
                source_workload: "ns:client".into(),
                target: Some(traffic_spec::Target::Addr(
                    linkerd2_proxy_api::net::TcpAddress {
                        port: 65536 + 80,
                        ..CLUSTER_IP.parse::<SocketAddr>().unwrap().into()
                    },
                )),
            },
            tonic::Code::InvalidArgument,
        ),
        (
            TrafficSpec {
                source_workload: String::new(),
                target: None,
            },
            tonic::Code::InvalidArgument,
        ),
    ] {
        let shown = format!("{spec:?}");
        let status = client.get(spec.clone()).await.unwrap_err();
        assert_eq!(status.code(), code, "get {shown}: {status:?}");
        let status = client.watch(spec).await.unwrap_err();
        assert_eq!(status.code(), code, "watch {shown}: {status:?}");
    }
    mock.stop().await;
}

#[tokio::test]
async fn a_short_service_name_is_read_in_the_mocks_cluster_domain() {
    let mock = support::Mock::start(Behavior {
        cluster_domain: "example.org".into(),
        ..Default::default()
    })
    .await;
    let mut client = OutboundPoliciesClient::connect(format!("http://{}", mock.addr))
        .await
        .unwrap();
    for name in ["web.ns.svc:80", "web.ns.svc.example.org:80"] {
        let got = client.get(by_name(name)).await.unwrap().into_inner();
        let want = "web.ns.svc.example.org:80".to_string();
        assert_eq!(backends(&got), ("detect", vec![want; 3]), "{name}");
    }
    // A full name in another domain stays as it is.
    let got = client.get(by_name(WEB)).await.unwrap().into_inner();
    assert_eq!(backends(&got), ("detect", vec![WEB.to_string(); 3]));
    mock.stop().await;
}

#[tokio::test]
async fn every_inbound_port_is_all_unauthenticated_and_shutdown_ends_every_stream() {
    let mock = support::Mock::start(Behavior::default()).await;
    let web: Authority = WEB.parse().unwrap();
    mock.handle
        .set_policy(&web, policy(&[CLUSTER_IP], AppProtocol::Detect))
        .unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", mock.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut inbound = InboundServerPoliciesClient::new(channel.clone());
    let mut outbound = OutboundPoliciesClient::new(channel);
    let spec = |port| PortSpec {
        workload: "{\"ns\":\"ns\",\"pod\":\"web-0\"}".into(),
        port,
    };
    let mut watch = inbound.watch_port(spec(8080)).await.unwrap().into_inner();
    let server = next(&mut watch).await.unwrap().unwrap();
    assert_eq!(
        server,
        inbound.get_port(spec(4191)).await.unwrap().into_inner()
    );
    assert_eq!(server.labels["name"], "all-unauthenticated");
    assert_eq!(server.labels["kind"], "default");
    let Some(inbound::proxy_protocol::Kind::Detect(detect)) = server.protocol.unwrap().kind else {
        panic!("not detect")
    };
    assert_eq!(
        detect.timeout,
        Some(Duration::from_secs(10).try_into().unwrap())
    );
    assert_eq!(detect.http_routes.len(), 1);
    let [authz] = server.authorizations.as_slice() else {
        panic!("{:?}", server.authorizations)
    };
    let nets: Vec<ipnet::IpNet> = authz
        .networks
        .iter()
        .map(|n| n.net.unwrap().try_into().unwrap())
        .collect();
    assert_eq!(
        nets,
        ["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()]
    );
    assert!(matches!(
        authz.authentication.as_ref().unwrap().permit,
        Some(inbound::authn::Permit::Unauthenticated(_))
    ));
    let status = inbound.get_port(spec(0)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    for workload in ["", "web-0", "{\"pod\":\"web-0\"}"] {
        let bad = PortSpec {
            workload: workload.into(),
            port: 8080,
        };
        let status = inbound.get_port(bad).await.unwrap_err();
        assert_eq!(
            (status.code(), status.message()),
            (
                tonic::Code::InvalidArgument,
                format!("Invalid workload: {workload}").as_str()
            )
        );
    }

    // Both streams stay open until shutdown, which ends them.
    let mut out = outbound
        .watch(by_addr(CLUSTER_IP))
        .await
        .unwrap()
        .into_inner();
    next(&mut out).await.unwrap().unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), watch.next())
            .await
            .is_err(),
        "the inbound stream sent nothing more and stayed open"
    );
    mock.shutdown.cancel();
    for ended in [
        next(&mut watch).await.map(|r| r.map(drop)),
        next(&mut out).await.map(|r| r.map(drop)),
    ] {
        assert!(
            ended.is_none(),
            "the stream ended cleanly at shutdown: {ended:?}"
        );
    }
    tokio::time::timeout(PATIENCE, mock.task)
        .await
        .expect("the mock stopped")
        .unwrap();
}
