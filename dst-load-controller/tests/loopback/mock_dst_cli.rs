//! `mock-dst` as a user starts it: the documented LINKERD2_MOCK_DSTS example
//! and the control API, against the real binary on loopback.

use crate::support;

use std::{net::SocketAddr, process::Stdio, time::Duration};

use linkerd2_proxy_api::destination::{
    GetDestination, destination_client::DestinationClient, update,
};

const BIN: &str = env!("CARGO_BIN_EXE_dst-load-controller");

async fn first_add(addr: SocketAddr, path: &str) -> Vec<SocketAddr> {
    let mut client = DestinationClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let req = GetDestination {
        path: path.into(),
        ..Default::default()
    };
    let mut s = client.get(req).await.unwrap().into_inner();
    let msg = tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Some(update::Update::Add(set)) = msg.update else {
        panic!("expected add")
    };
    let mut v: Vec<SocketAddr> = set
        .addrs
        .iter()
        .map(|a| a.addr.unwrap().try_into().unwrap())
        .collect();
    v.sort();
    v
}

/// Starts `mock-dst` on free loopback ports with `flags` and `env`; returns
/// it once its gRPC port accepts connections.
async fn mock_dst(flags: &[&str], env: &[(&str, &str)]) -> (tokio::process::Child, SocketAddr) {
    let (child, addr, _) = mock_dst_logging(flags, env, None).await;
    (child, addr)
}

/// As [`mock_dst`], its output (the log) written to `log` when given; with
/// its admin server's address too.
async fn mock_dst_logging(
    flags: &[&str],
    env: &[(&str, &str)],
    log: Option<&std::path::Path>,
) -> (tokio::process::Child, SocketAddr, SocketAddr) {
    let (port, admin) = (support::free_port(), support::free_port());
    let (grpc, admin) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{admin}"));
    let output = || match log {
        Some(path) => Stdio::from(
            std::fs::File::options()
                .create(true)
                .append(true)
                .open(path)
                .unwrap(),
        ),
        None => Stdio::null(),
    };
    let mut child = tokio::process::Command::new(BIN)
        .args(["mock-dst", "-a", &grpc, "--admin-addr", &admin])
        .args(flags)
        .envs(env.iter().copied())
        .stdout(output())
        .stderr(output())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr: SocketAddr = grpc.parse().unwrap();
    // A loaded machine's patience; a mock that exits (its port taken
    // meanwhile, say) fails at once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("mock-dst {flags:?} exited before it listened: {status}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "mock-dst {flags:?} did not listen on {addr} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    (child, addr, admin.parse().unwrap())
}

#[tokio::test]
async fn the_documented_example_serves_both_destinations() {
    let (mut child, addr) = mock_dst(
        &[],
        &[(
            "LINKERD2_MOCK_DSTS",
            "http://foo.ns.svc.cluster.local:8080=127.0.0.1:1234,127.0.0.1:1235;http://bar.ns.svc.cluster.local:8081=127.0.0.1:4321",
        )],
    )
    .await;
    assert_eq!(
        first_add(addr, "foo.ns.svc.cluster.local:8080").await,
        [
            "127.0.0.1:1234".parse::<SocketAddr>().unwrap(),
            "127.0.0.1:1235".parse().unwrap()
        ]
    );
    assert_eq!(
        first_add(addr, "bar.ns.svc.cluster.local:8081").await,
        ["127.0.0.1:4321".parse::<SocketAddr>().unwrap()]
    );
    child.kill().await.unwrap();
}

#[tokio::test]
async fn generated_services_get_profiles_of_the_routes_asked_for() {
    let (mut child, addr) = mock_dst(
        &[
            "--generate",
            "web.shop.svc.cluster.local:8080=10.1.0.0/16:5",
            "--profile-routes",
            "3",
        ],
        &[],
    )
    .await;
    // Served (and the profiles set) once Get answers.
    assert_eq!(
        first_add(addr, "web.shop.svc.cluster.local:8080")
            .await
            .len(),
        5
    );
    let mut client = DestinationClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let req = GetDestination {
        path: "web.shop.svc.cluster.local:8080".into(),
        ..Default::default()
    };
    let mut s = client.get_profile(req).await.unwrap().into_inner();
    let profile = tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let names: Vec<&str> = profile
        .routes
        .iter()
        .map(|r| r.metrics_labels["route"].as_str())
        .collect();
    assert_eq!(names, ["route-0", "route-1", "route-2"]);
    assert!(
        profile
            .routes
            .iter()
            .all(|r| r.is_retryable && r.timeout.is_some())
    );
    child.kill().await.unwrap();
}

#[tokio::test]
async fn an_issuing_mock_writes_its_trust_anchors_and_certifies_with_them() {
    let dir = std::env::temp_dir().join(format!("dst-idcli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (token, anchors) = (dir.join("token"), dir.join("anchors.pem"));
    std::fs::write(&token, "proxy-token").unwrap();
    let name = "default.ns.serviceaccount.identity.linkerd.cluster.local";
    let log = dir.join("mock.log");
    let (mut child, addr, _) = mock_dst_logging(
        &[
            "--identity-name",
            name,
            "--identity-token-file",
            token.to_str().unwrap(),
            "--identity-trust-anchors-out",
            anchors.to_str().unwrap(),
            "--identity-lifetime",
            "1h",
        ],
        &[],
        Some(&log),
    )
    .await;
    // Written before the gRPC server accepts.
    let pem = std::fs::read(&anchors).unwrap();
    let (_, anchor) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let anchor = anchor.parse_x509().unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    // A proxy's CSR names itself in its SAN alone.
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).unwrap();
    let mut client = linkerd2_proxy_api::identity::identity_client::IdentityClient::connect(
        format!("http://{addr}"),
    )
    .await
    .unwrap();
    let rsp = client
        .certify(linkerd2_proxy_api::identity::CertifyRequest {
            identity: name.to_string(),
            token: b"proxy-token".to_vec(),
            certificate_signing_request: csr.der().to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    let (_, leaf) = x509_parser::parse_x509_certificate(&rsp.leaf_certificate).unwrap();
    leaf.verify_signature(Some(anchor.public_key())).unwrap();

    // Refused, each with the identity service's code, and logged with why.
    let other = "other.ns.serviceaccount.identity.linkerd.cluster.local";
    let good = linkerd2_proxy_api::identity::CertifyRequest {
        identity: name.to_string(),
        token: b"proxy-token".to_vec(),
        certificate_signing_request: csr.der().to_vec(),
    };
    let refusals = [
        (
            linkerd2_proxy_api::identity::CertifyRequest {
                token: b"another-token".to_vec(),
                ..good.clone()
            },
            tonic::Code::InvalidArgument,
            "invalid bearer token",
        ),
        (
            linkerd2_proxy_api::identity::CertifyRequest {
                certificate_signing_request: b"not a CSR".to_vec(),
                ..good.clone()
            },
            tonic::Code::InvalidArgument,
            "bad CSR",
        ),
        (
            linkerd2_proxy_api::identity::CertifyRequest {
                identity: other.to_string(),
                ..good.clone()
            },
            tonic::Code::FailedPrecondition,
            other,
        ),
    ];
    for (request, code, why) in &refusals {
        let status = client.certify(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), *code, "{why}: {status:?}");
        assert!(status.message().contains(why), "{why}: {status:?}");
    }
    // Stopped, so that everything it logged is in the file.
    child.kill().await.unwrap();
    let logged = std::fs::read_to_string(&log).unwrap();
    let refused: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("Certify refused"))
        .collect();
    assert_eq!(refused.len(), refusals.len(), "{logged}");
    for ((_, code, why), line) in refusals.iter().zip(&refused) {
        assert!(
            line.contains(why) && line.contains(&format!("{code:?}")),
            "{why} ({code:?}) not in {line:?}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A service's policy set over the control API reaches an open outbound
/// policy watch, its protocol given as a Service's `appProtocol` would be.
#[tokio::test]
async fn a_policy_put_over_the_control_api_reaches_an_open_watch() {
    use linkerd2_proxy_api::outbound::{
        TrafficSpec, outbound_policies_client::OutboundPoliciesClient, proxy_protocol, traffic_spec,
    };
    let (_child, addr, admin) = mock_dst_logging(&[], &[], None).await;
    let mut client = OutboundPoliciesClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let spec = TrafficSpec {
        source_workload: "ns:client".into(),
        target: Some(traffic_spec::Target::Authority(
            "web.ns.svc.cluster.local:80".into(),
        )),
    };
    let mut watch = client.watch(spec).await.unwrap().into_inner();
    let kind = |p: linkerd2_proxy_api::outbound::OutboundPolicy| {
        p.protocol.and_then(|p| p.kind).expect("a protocol")
    };
    let first = tokio::time::timeout(Duration::from_secs(20), watch.message());
    let first = first.await.unwrap().unwrap().unwrap();
    assert!(matches!(kind(first), proxy_protocol::Kind::Detect(_)));
    let put = reqwest::Client::new()
        .put(format!(
            "http://{admin}/api/policies/web.ns.svc.cluster.local:80"
        ))
        .json(&serde_json::json!({"addresses": ["10.96.0.10:80"], "protocol": "linkerd.io/tcp"}))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{put:?}");
    let next = tokio::time::timeout(Duration::from_secs(20), watch.message());
    let next = next.await.unwrap().unwrap().unwrap();
    assert!(matches!(kind(next), proxy_protocol::Kind::Opaque(_)));
}

/// Inbound policy: a mock-dst process started with a default and a port
/// policy of its own answers each port so, and a `PUT` and a `DELETE` over
/// the control API reach an open watch of the port, and another port's do
/// not.
#[tokio::test]
async fn inbound_policies_by_flag_and_over_the_control_api_reach_open_watches() {
    use linkerd2_proxy_api::inbound::{
        PortSpec, Server, authn, inbound_server_policies_client::InboundServerPoliciesClient,
    };
    let (_child, addr, admin) = mock_dst_logging(
        &[
            "--default-inbound-policy",
            "all-authenticated",
            "--inbound-port-policy",
            "4191=all-unauthenticated",
        ],
        &[],
        None,
    )
    .await;
    let client = InboundServerPoliciesClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let spec = |port| PortSpec {
        workload: "{\"ns\":\"ns\",\"pod\":\"web-0\"}".into(),
        port,
    };
    // A server's name, and whether its one authorization asks for mTLS
    // (`None`: no authorization at all).
    let read = |s: Server| {
        let meshed = match s.authorizations.as_slice() {
            [] => None,
            [one] => Some(matches!(
                one.authentication.as_ref().and_then(|a| a.permit.as_ref()),
                Some(authn::Permit::MeshTls(_))
            )),
            more => panic!("one authorization at most: {more:?}"),
        };
        (s.labels["name"].clone(), meshed)
    };
    let get = |port| {
        let mut client = client.clone();
        async move { read(client.get_port(spec(port)).await.unwrap().into_inner()) }
    };
    assert_eq!(get(9090).await, ("all-authenticated".into(), Some(true)));
    assert_eq!(get(4191).await, ("all-unauthenticated".into(), Some(false)));

    let mut watch = client
        .clone()
        .watch_port(spec(9090))
        .await
        .unwrap()
        .into_inner();
    let mut next = async || {
        let next = tokio::time::timeout(Duration::from_secs(20), watch.message());
        read(next.await.unwrap().unwrap().expect("the stream open"))
    };
    assert_eq!(next().await, ("all-authenticated".into(), Some(true)));
    let http = reqwest::Client::new();
    let send = async |method: &str, port: u16, body: Option<&str>| {
        let url = format!("http://{admin}/api/inbound/{port}");
        let mut req = http.request(method.parse().unwrap(), &url);
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let rsp = req.send().await.unwrap();
        assert!(rsp.status().is_success(), "{method} {url}: {rsp:?}");
    };
    // Another port's change is not this watch's: the next message is deny.
    // (A watch sends the port's policy as it is when the stream is next
    // polled: changes in quick succession may arrive as the last one, as
    // Linkerd's controller's watches do. So each is awaited.)
    send("PUT", 8080, Some(r#"{"policy":"audit"}"#)).await;
    send("PUT", 9090, Some(r#"{"policy":"deny"}"#)).await;
    assert_eq!(next().await, ("deny".into(), None));
    send("DELETE", 9090, None).await;
    assert_eq!(next().await, ("all-authenticated".into(), Some(true)));
    assert_eq!(get(8080).await, ("audit".into(), Some(false)));
    // Nothing more: the port's policy has not changed since.
    let quiet = tokio::time::timeout(Duration::from_millis(500), watch.message()).await;
    assert!(quiet.is_err(), "{quiet:?}");
}
