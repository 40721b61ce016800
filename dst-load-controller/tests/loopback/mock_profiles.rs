//! The mock's `Destination.GetProfile`, observed with a raw gRPC client:
//! by service name (the default profile, a set one, each change, its
//! deletion), by address (the endpoint as it comes and goes), the errors
//! the controller answers with, and the profiles' HTTP control API.

use crate::support;

use std::{net::SocketAddr, time::Duration};

use dst_load_controller::mock::{
    profiles::{ProfileSpec, RetryBudgetSpec, RouteSpec},
    server::Behavior,
};
use linkerd2_proxy_api::{
    destination::{
        DestinationProfile, GetDestination, destination_client::DestinationClient, request_match,
        tls_identity,
    },
    meta::metadata,
};
use support::*;
use tonic::{Code, Streaming};

const FOO: &str = "foo.ns.svc.cluster.local:8080";
const FOO_HOST: &str = "foo.ns.svc.cluster.local";

async fn get_profile(
    addr: SocketAddr,
    path: &str,
) -> Result<Streaming<DestinationProfile>, tonic::Status> {
    let mut client = DestinationClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let req = GetDestination {
        scheme: "k8s".into(),
        path: path.into(),
        context_token: String::new(),
    };
    client.get_profile(req).await.map(|r| r.into_inner())
}

async fn next(s: &mut Streaming<DestinationProfile>) -> DestinationProfile {
    tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("a profile within 10s")
        .expect("no error")
        .expect("stream still open")
}

/// Nothing more arrives within `wait` (the stream stays open).
async fn quiet(s: &mut Streaming<DestinationProfile>, wait: Duration) {
    if let Ok(m) = tokio::time::timeout(wait, s.message()).await {
        panic!("expected nothing more, got {m:?}");
    }
}

fn route_names(p: &DestinationProfile) -> Vec<String> {
    p.routes
        .iter()
        .map(|r| r.metrics_labels["route"].clone())
        .collect()
}

fn endpoint(p: &DestinationProfile) -> SocketAddr {
    let e = p.endpoint.as_ref().expect("an endpoint");
    e.addr.unwrap().try_into().unwrap()
}

fn get_users(timeout: Option<Duration>) -> RouteSpec {
    RouteSpec {
        name: "get-users".into(),
        method: Some("GET".into()),
        path_regex: "/users/[^/]*".into(),
        retryable: true,
        timeout,
    }
}

#[tokio::test]
async fn a_service_gets_the_default_profile_then_every_change_of_its_own() {
    let mock = Mock::start(Behavior::default()).await;
    mock.handle
        .set(&FOO.parse().unwrap(), addrs(&["10.0.0.1:8080"]));
    let mut s = get_profile(mock.addr, FOO).await.unwrap();

    // No profile set: the controller's default.
    let first = next(&mut s).await;
    assert_eq!(first.fully_qualified_name, FOO_HOST);
    assert!(first.routes.is_empty() && first.dst_overrides.is_empty());
    assert!(first.endpoint.is_none() && !first.opaque_protocol);
    let budget = first.retry_budget.unwrap();
    assert_eq!(
        (
            budget.retry_ratio,
            budget.min_retries_per_second,
            budget.ttl.unwrap().seconds
        ),
        (0.2, 10, 10)
    );
    let Some(metadata::Kind::Resource(parent)) = first.parent_ref.unwrap().kind else {
        panic!("the parent is a resource")
    };
    assert_eq!(
        (
            parent.kind.as_str(),
            parent.name.as_str(),
            parent.namespace.as_str(),
            parent.port
        ),
        ("Service", "foo", "ns", 8080)
    );

    // A profile set reaches the open stream.
    mock.handle.set_profile(
        FOO_HOST,
        ProfileSpec {
            routes: vec![get_users(Some(Duration::from_millis(250)))],
            retry_budget: Some(RetryBudgetSpec {
                retry_ratio: 0.5,
                min_retries_per_second: 3,
                ttl: Duration::from_secs(30),
            }),
            ..Default::default()
        },
    );
    let set = next(&mut s).await;
    assert_eq!(route_names(&set), ["get-users"]);
    let route = &set.routes[0];
    assert!(route.is_retryable);
    assert_eq!(route.timeout.unwrap().nanos, 250_000_000);
    // Method and path, both required.
    let Some(request_match::Match::All(all)) = &route.condition.as_ref().unwrap().r#match else {
        panic!("method and path under all: {:?}", route.condition)
    };
    assert_eq!(all.matches.len(), 2);
    let budget = set.retry_budget.unwrap();
    assert_eq!((budget.retry_ratio, budget.ttl.unwrap().seconds), (0.5, 30));
    let Some(metadata::Kind::Resource(profile)) = set.profile_ref.unwrap().kind else {
        panic!("the profile is a resource")
    };
    assert_eq!(
        (profile.kind.as_str(), profile.name.as_str()),
        ("ServiceProfile", FOO_HOST)
    );

    // Routes added and removed, then the profile deleted: each one message.
    let mut two = mock.handle.profile(FOO_HOST).unwrap();
    two.routes.push(RouteSpec {
        name: "post-orders".into(),
        method: Some("POST".into()),
        path_regex: "/orders".into(),
        retryable: false,
        timeout: None,
    });
    mock.handle.set_profile(FOO_HOST, two.clone());
    assert_eq!(
        route_names(&next(&mut s).await),
        ["get-users", "post-orders"]
    );
    two.routes.remove(0);
    mock.handle.set_profile(FOO_HOST, two);
    assert_eq!(route_names(&next(&mut s).await), ["post-orders"]);
    mock.handle.delete_profile(FOO_HOST);
    let back = next(&mut s).await;
    assert!(back.routes.is_empty());
    assert_eq!(back.retry_budget.unwrap().retry_ratio, 0.2);
    // A profile set again to what it is sends nothing.
    mock.handle.delete_profile(FOO_HOST);
    quiet(&mut s, Duration::from_millis(300)).await;

    // A second stream opens on the profile as it stands.
    let mut late = get_profile(mock.addr, FOO).await.unwrap();
    assert!(next(&mut late).await.routes.is_empty());
    // Five profiles on the first stream, one on the second; two open.
    let text = scrape(&mock.registry);
    assert_eq!(
        sample(&text, "mock_dst_profile_updates_sent_total", &[]),
        Some(6.0)
    );
    assert_eq!(
        sample(&text, "mock_dst_profile_streams_active", &[]),
        Some(2.0)
    );
    mock.stop().await;
}

#[tokio::test]
async fn an_address_lookup_follows_its_endpoint_as_it_comes_and_goes() {
    let mock = Mock::start(Behavior::default()).await;
    let foo = FOO.parse().unwrap();
    mock.handle
        .set(&foo, addrs(&["10.0.0.1:8080", "10.0.0.2:8080"]));
    let mut s = get_profile(mock.addr, "10.0.0.2:8080").await.unwrap();

    // The endpoint, with its pod's metadata; no name, no routes.
    let first = next(&mut s).await;
    assert_eq!(endpoint(&first), "10.0.0.2:8080".parse().unwrap());
    assert!(first.fully_qualified_name.is_empty() && first.routes.is_empty());
    let e = first.endpoint.as_ref().unwrap();
    assert_eq!(e.weight, 10_000);
    assert_eq!(e.metric_labels["namespace"], "ns");
    assert!(e.metric_labels.contains_key("pod"));
    let Some(tls_identity::Strategy::DnsLikeIdentity(id)) =
        &e.tls_identity.as_ref().unwrap().strategy
    else {
        panic!("a DNS-like identity")
    };
    assert_eq!(
        id.name,
        "default.ns.serviceaccount.identity.linkerd.cluster.local"
    );
    assert!(e.protocol_hint.is_some());

    // Another address changing sends nothing.
    mock.handle.patch(&foo, &addrs(&["10.0.0.3:8080"]), &[]);
    quiet(&mut s, Duration::from_millis(300)).await;

    // The pod goes: a bare endpoint; it comes back: its metadata again.
    mock.handle.patch(&foo, &[], &addrs(&["10.0.0.2:8080"]));
    let gone = next(&mut s).await;
    assert_eq!(endpoint(&gone), "10.0.0.2:8080".parse().unwrap());
    let bare = gone.endpoint.unwrap();
    assert!(bare.metric_labels.is_empty() && bare.tls_identity.is_none());
    mock.handle.patch(&foo, &addrs(&["10.0.0.2:8080"]), &[]);
    let back = next(&mut s).await;
    assert!(back.endpoint.unwrap().tls_identity.is_some());

    // An address nobody holds: a bare endpoint, and the stream stays open.
    let mut unknown = get_profile(mock.addr, "10.9.9.9:80").await.unwrap();
    let p = next(&mut unknown).await;
    assert_eq!(endpoint(&p), "10.9.9.9:80".parse().unwrap());
    assert!(p.endpoint.unwrap().metric_labels.is_empty());
    quiet(&mut unknown, Duration::from_millis(300)).await;
    mock.stop().await;
}

/// A service's address (a ClusterIP, as its policy gives it) is looked up
/// as the service: its profile by name, each change of it, never an
/// endpoint; an address of no service still gets its bare endpoint.
#[tokio::test]
async fn a_services_own_address_gets_the_services_profile() {
    use dst_load_controller::mock::policy::{AppProtocol, ServicePolicy};
    let mock = Mock::start(Behavior::default()).await;
    let foo = FOO.parse().unwrap();
    mock.handle.set(&foo, addrs(&["10.0.0.1:8080"]));
    mock.handle
        .set_policy(
            &foo,
            ServicePolicy {
                addresses: ["10.96.0.10:8080".parse().unwrap()].into(),
                protocol: AppProtocol::Detect,
            },
        )
        .unwrap();
    let mut by_ip = get_profile(mock.addr, "10.96.0.10:8080").await.unwrap();
    let mut by_name = get_profile(mock.addr, FOO).await.unwrap();
    let first = next(&mut by_ip).await;
    assert_eq!(first, next(&mut by_name).await);
    assert_eq!(first.fully_qualified_name, FOO_HOST);
    assert!(first.endpoint.is_none());
    mock.handle.set_profile(
        FOO_HOST,
        ProfileSpec {
            routes: vec![get_users(None)],
            ..Default::default()
        },
    );
    let changed = next(&mut by_ip).await;
    assert_eq!(route_names(&changed), ["get-users"]);
    assert_eq!(changed, next(&mut by_name).await);
    // The same address on another port is no service's.
    let mut other = get_profile(mock.addr, "10.96.0.10:9090").await.unwrap();
    let p = next(&mut other).await;
    assert!(p.fully_qualified_name.is_empty());
    assert_eq!(endpoint(&p), "10.96.0.10:9090".parse().unwrap());
    mock.stop().await;
}

#[tokio::test]
async fn bad_and_unknown_profile_paths_get_the_controllers_answers() {
    let mock = Mock::start(Behavior::default()).await;
    mock.handle
        .set(&FOO.parse().unwrap(), addrs(&["10.0.0.1:8080"]));
    let code = |r: Result<Streaming<DestinationProfile>, tonic::Status>| r.err().map(|s| s.code());
    // Unknown service: the lister's error, which is no gRPC status.
    let unknown = get_profile(mock.addr, "bar.ns.svc.cluster.local:8080").await;
    assert_eq!(code(unknown), Some(Code::Unknown));
    for bad in [
        "foo.ns.svc.cluster.local:0",
        "foo.ns.svc.cluster.local:http",
        "linkerd.io:443",
        "foo.svc.cluster.local:80",
    ] {
        assert_eq!(
            code(get_profile(mock.addr, bad).await),
            Some(Code::InvalidArgument),
            "{bad}"
        );
    }
    // An unknown pod's name: NotFound.
    let pod = get_profile(mock.addr, "web-0.foo.ns.svc.cluster.local:8080").await;
    assert_eq!(code(pod), Some(Code::NotFound));
    // The service without that port: an empty profile, the stream open.
    let mut other = get_profile(mock.addr, "foo.ns.svc.cluster.local:9090")
        .await
        .unwrap();
    assert_eq!(next(&mut other).await, DestinationProfile::default());
    quiet(&mut other, Duration::from_millis(300)).await;
    mock.stop().await;
}

#[tokio::test]
async fn the_control_api_sets_and_deletes_profiles() {
    let mock = Mock::start(Behavior::default()).await;
    mock.handle
        .set(&FOO.parse().unwrap(), addrs(&["10.0.0.1:8080"]));
    let router = dst_load_controller::mock::control::router(mock.handle.clone(), false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(dst_load_controller::admin::serve(
        listener,
        router,
        stop.clone(),
    ));
    let mut s = get_profile(mock.addr, FOO).await.unwrap();
    assert!(next(&mut s).await.routes.is_empty());

    let path = format!("/api/profiles/{FOO_HOST}");
    let body = r#"{"routes":[{"name":"get-users","method":"GET","path-regex":"/users/[^/]*","timeout":"1s"}],"opaque-protocol":false}"#;
    let (code, rsp) = http(api, "PUT", &path, body).await;
    assert_eq!(code, 200, "{rsp}");
    assert_eq!(route_names(&next(&mut s).await), ["get-users"]);
    let (code, rsp) = http(api, "GET", "/api/profiles", "").await;
    assert_eq!(code, 200);
    let list: serde_json::Value = serde_json::from_str(&rsp).unwrap();
    assert_eq!(list[0]["service"], FOO_HOST);
    assert_eq!(list[0]["profile"]["routes"][0]["timeout"], "1s");

    // Bad input: named, nothing changed.
    let (code, rsp) = http(api, "PUT", &format!("/api/profiles/{FOO}"), body).await;
    assert_eq!(code, 400);
    assert!(rsp.contains("without a port"), "{rsp}");
    let bad_method = r#"{"routes":[{"name":"x","method":"G E T","path-regex":"/"}]}"#;
    let (code, rsp) = http(api, "PUT", &path, bad_method).await;
    assert_eq!(code, 400);
    assert!(rsp.contains("not an HTTP method"), "{rsp}");
    let (code, _) = http(api, "PUT", &path, r#"{"rutes":[]}"#).await;
    assert_eq!(code, 422);
    assert_eq!(mock.handle.profile(FOO_HOST).unwrap().routes.len(), 1);
    quiet(&mut s, Duration::from_millis(300)).await;

    let (code, _) = http(api, "DELETE", &path, "").await;
    assert_eq!(code, 204);
    assert!(next(&mut s).await.routes.is_empty());
    let (code, _) = http(api, "DELETE", &path, "").await;
    assert_eq!(code, 404);
    stop.cancel();
    mock.stop().await;
}
