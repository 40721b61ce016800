//! The mock Destination server, observed with a raw gRPC client: every
//! message sequence a proxy can see, and the HTTP control API.

use crate::support;

use std::{net::SocketAddr, time::Duration};

use dst_load_controller::mock::server::{Behavior, Delay};
use linkerd2_proxy_api::destination::{
    GetDestination, Update, destination_client::DestinationClient, protocol_hint, tls_identity,
    update,
};
use support::*;
use tonic::{Code, Streaming};

const FOO: &str = "foo.ns.svc.cluster.local:8080";

async fn get(addr: SocketAddr, path: &str) -> Result<Streaming<Update>, tonic::Status> {
    let mut client = DestinationClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let req = GetDestination {
        scheme: "k8s".into(),
        path: path.into(),
        context_token: String::new(),
    };
    client.get(req).await.map(|r| r.into_inner())
}

async fn next(s: &mut Streaming<Update>) -> update::Update {
    tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("an update within 10s")
        .expect("no error")
        .expect("stream still open")
        .update
        .expect("an update variant")
}

fn added(u: &update::Update) -> Vec<SocketAddr> {
    let update::Update::Add(set) = u else {
        panic!("expected add, got {u:?}")
    };
    let mut v: Vec<SocketAddr> = set
        .addrs
        .iter()
        .map(|a| a.addr.unwrap().try_into().unwrap())
        .collect();
    v.sort();
    v
}

fn removed(u: &update::Update) -> Vec<SocketAddr> {
    let update::Update::Remove(set) = u else {
        panic!("expected remove, got {u:?}")
    };
    let mut v: Vec<SocketAddr> = set.addrs.iter().map(|a| (*a).try_into().unwrap()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn open_change_and_delete_follow_the_controller() {
    let mock = Mock::start(Behavior::default()).await;
    let foo = FOO.parse().unwrap();
    mock.handle
        .set(&foo, addrs(&["10.0.0.1:8080", "10.0.0.2:8080"]));
    let mut s = get(mock.addr, FOO).await.unwrap();

    // Open: one full snapshot with realistic metadata.
    let first = next(&mut s).await;
    assert_eq!(added(&first), addrs(&["10.0.0.1:8080", "10.0.0.2:8080"]));
    let update::Update::Add(set) = &first else {
        unreachable!()
    };
    assert_eq!(set.metric_labels["service"], "foo");
    assert_eq!(set.metric_labels["namespace"], "ns");
    let wa = &set.addrs[0];
    assert_eq!(wa.weight, 10_000);
    assert!(wa.metric_labels.contains_key("pod"));
    let Some(tls_identity::Strategy::DnsLikeIdentity(id)) =
        wa.tls_identity.as_ref().unwrap().strategy.clone()
    else {
        panic!("dns-like identity expected")
    };
    assert_eq!(
        id.name,
        "default.ns.serviceaccount.identity.linkerd.cluster.local"
    );
    assert!(matches!(
        wa.protocol_hint.as_ref().unwrap().protocol,
        Some(protocol_hint::Protocol::H2(_))
    ));

    // A change: one batched add, then one batched remove.
    mock.handle.set(
        &foo,
        addrs(&["10.0.0.2:8080", "10.0.0.3:8080", "10.0.0.4:8080"]),
    );
    assert_eq!(
        added(&next(&mut s).await),
        addrs(&["10.0.0.3:8080", "10.0.0.4:8080"])
    );
    assert_eq!(removed(&next(&mut s).await), addrs(&["10.0.0.1:8080"]));

    // Deleted: a remove of every address; new Gets are NotFound.
    mock.handle.delete(&foo).unwrap();
    assert_eq!(
        removed(&next(&mut s).await),
        addrs(&["10.0.0.2:8080", "10.0.0.3:8080", "10.0.0.4:8080"])
    );
    assert_eq!(
        get(mock.addr, FOO).await.unwrap_err().code(),
        Code::NotFound
    );

    let text = scrape(&mock.registry);
    assert_eq!(sample(&text, "mock_dst_updates_sent_total", &[]), Some(4.0));
    assert_eq!(
        sample(&text, "mock_dst_endpoints_sent_total", &[]),
        Some(8.0)
    );
    assert_eq!(sample(&text, "mock_dst_streams_active", &[]), Some(1.0));
    mock.stop().await;
}

#[tokio::test]
async fn unknown_and_malformed_destinations() {
    let mock = Mock::start(Behavior::default()).await;
    assert_eq!(
        get(mock.addr, "nope.ns.svc.cluster.local:80")
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    for bad in [
        "10.0.0.1:80",
        "foo.example.com:80",
        "foo..ns:80",
        "foo.ns.svc.cluster.local:http",
    ] {
        assert_eq!(
            get(mock.addr, bad).await.unwrap_err().code(),
            Code::InvalidArgument,
            "{bad}"
        );
    }
    mock.stop().await;
}

/// A huge path is answered with a short message (it was echoed twice into
/// a 5 MB trailer), and a request past gRPC's 4 MiB limit with
/// RESOURCE_EXHAUSTED as gRPC servers answer it (it was INTERNAL).
#[tokio::test]
async fn huge_paths_get_short_answers_and_huge_requests_resource_exhausted() {
    let mock = Mock::start(Behavior::default()).await;
    let huge = format!("{}.ns.svc.cluster.local:80", "x".repeat(4_000_000));
    let e = get(mock.addr, &huge).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().len() < 1024, "{} bytes", e.message().len());
    assert!(
        e.message()
            .contains("(4000024 bytes): longer than any name and port"),
        "{}",
        &e.message()[..200.min(e.message().len())]
    );
    // And as a GetProfile.
    let mut client =
        linkerd2_proxy_api::destination::destination_client::DestinationClient::connect(format!(
            "http://{}",
            mock.addr
        ))
        .await
        .unwrap();
    let e = client
        .get_profile(GetDestination {
            path: huge.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().len() < 1024);
    let past = "x".repeat(5 * 1024 * 1024);
    let e = get(mock.addr, &past).await.unwrap_err();
    assert_eq!(
        e.code(),
        Code::ResourceExhausted,
        "{}",
        &e.message()[..200.min(e.message().len())]
    );
    assert_eq!(e.message(), "a request larger than 4194304 bytes");
    mock.stop().await;
}

/// `--withhold-removals-every N` counts the streams opened on existing
/// services: a `Get` answered NotFound is not a stream, so a client that
/// also asks for a missing service still has exactly every Nth of its
/// streams withheld (a NotFound in between made both streams of two
/// withhold, a flake of the dashboards test).
#[tokio::test]
async fn withheld_removals_count_only_streams_that_opened() {
    let mock = Mock::start(Behavior {
        withhold_removals_every: Some(2),
        ..Default::default()
    })
    .await;
    let foo = FOO.parse().unwrap();
    mock.handle
        .set(&foo, addrs(&["10.0.0.1:8080", "10.0.0.2:8080"]));
    let mut first = get(mock.addr, FOO).await.unwrap();
    let refused = get(mock.addr, "gone.ns.svc.cluster.local:80").await;
    assert_eq!(refused.err().map(|e| e.code()), Some(Code::NotFound));
    let mut second = get(mock.addr, FOO).await.unwrap();
    for s in [&mut first, &mut second] {
        assert_eq!(
            added(&next(s).await),
            addrs(&["10.0.0.1:8080", "10.0.0.2:8080"])
        );
    }
    mock.handle.patch(&foo, &[], &addrs(&["10.0.0.2:8080"]));
    mock.handle.patch(&foo, &addrs(&["10.0.0.3:8080"]), &[]);
    // The first stream opened withholds (0 is every 2nd), the second does not.
    assert_eq!(added(&next(&mut first).await), addrs(&["10.0.0.3:8080"]));
    assert_eq!(removed(&next(&mut second).await), addrs(&["10.0.0.2:8080"]));
    assert_eq!(added(&next(&mut second).await), addrs(&["10.0.0.3:8080"]));
    mock.stop().await;
}

#[tokio::test]
async fn missing_port_defaults_to_80() {
    let mock = Mock::start(Behavior::default()).await;
    mock.handle.set(
        &"foo.ns.svc.cluster.local:80".parse().unwrap(),
        addrs(&["10.0.0.1:80"]),
    );
    let mut s = get(mock.addr, "foo.ns.svc.cluster.local").await.unwrap();
    assert_eq!(added(&next(&mut s).await), addrs(&["10.0.0.1:80"]));
    mock.stop().await;
}

#[tokio::test]
async fn legacy_mode_sends_no_endpoints() {
    let mock = Mock::start(Behavior {
        legacy_no_endpoints: true,
        ..Default::default()
    })
    .await;
    let foo = FOO.parse().unwrap();
    mock.handle.set(&foo, Vec::new());
    let mut s = get(mock.addr, FOO).await.unwrap();
    assert!(matches!(next(&mut s).await, update::Update::NoEndpoints(n) if n.exists));
    mock.handle.set(&foo, addrs(&["10.0.0.1:8080"]));
    assert_eq!(added(&next(&mut s).await), addrs(&["10.0.0.1:8080"]));
    mock.handle.set(&foo, Vec::new());
    assert!(matches!(next(&mut s).await, update::Update::NoEndpoints(n) if n.exists));
    mock.handle.set(&foo, addrs(&["10.0.0.2:8080"]));
    added(&next(&mut s).await);
    mock.handle.delete(&foo);
    assert!(matches!(next(&mut s).await, update::Update::NoEndpoints(n) if !n.exists));
    mock.stop().await;
}

#[tokio::test]
async fn delays_are_applied_before_delivery() {
    let mock = Mock::start(Behavior {
        delay: Delay::Fixed(Duration::from_millis(300)),
        ..Default::default()
    })
    .await;
    let foo = FOO.parse().unwrap();
    mock.handle.set(&foo, addrs(&["10.0.0.1:8080"]));
    let mut s = get(mock.addr, FOO).await.unwrap();
    next(&mut s).await;
    let change = mock
        .handle
        .set(&foo, addrs(&["10.0.0.1:8080", "10.0.0.2:8080"]));
    next(&mut s).await;
    let seen = std::time::SystemTime::now();
    // A lower bound only: how much later it arrives depends on the machine.
    assert!(seen.duration_since(change.at).unwrap() >= Duration::from_millis(300));
    mock.stop().await;
}

#[tokio::test]
async fn a_slow_stream_overflows_and_ends_with_ok() {
    let mock = Mock::start(Behavior {
        queue_capacity: 2,
        ..Default::default()
    })
    .await;
    let foo = FOO.parse().unwrap();
    mock.handle.set(&foo, addrs(&["10.0.0.1:8080"]));
    let mut s = get(mock.addr, FOO).await.unwrap();
    next(&mut s).await;
    // Stop reading; push large changes until HTTP/2 flow control backs up
    // into the stream's queue.
    for round in 0..200u32 {
        let eps: Vec<SocketAddr> = (0..500u32)
            .map(|i| {
                SocketAddr::from((
                    [
                        10,
                        (round % 200) as u8 + 1,
                        (i / 250) as u8,
                        (i % 250) as u8,
                    ],
                    8080,
                ))
            })
            .collect();
        mock.handle.set(&foo, eps);
        if sample(
            &scrape(&mock.registry),
            "mock_dst_queue_overflows_total",
            &[],
        )
        .unwrap_or(0.0)
            >= 1.0
        {
            break;
        }
        tokio::task::yield_now().await;
    }
    eventually("a queue overflow", Duration::from_secs(10), || {
        sample(
            &scrape(&mock.registry),
            "mock_dst_queue_overflows_total",
            &[],
        ) == Some(1.0)
    })
    .await;
    // Reading again drains what was queued, then the stream ends with OK.
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .unwrap();
    assert!(matches!(end, Ok(None)), "{end:?}");
    mock.stop().await;
}

#[tokio::test]
async fn the_control_api_changes_what_streams_see() {
    let mock = Mock::start(Behavior::default()).await;
    let router = dst_load_controller::mock::control::router(mock.handle.clone(), false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(dst_load_controller::admin::serve(
        listener,
        router,
        stop.clone(),
    ));

    let (code, body) = http(
        api,
        "PUT",
        &format!("/api/destinations/{FOO}"),
        r#"{"endpoints":["10.0.0.1:8080","10.0.0.2:8080"]}"#,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let change: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(change["added"].as_array().unwrap().len(), 2);
    // RFC 3339 with nanoseconds.
    assert!(change["at"].as_str().unwrap().ends_with('Z'));

    let mut s = get(mock.addr, FOO).await.unwrap();
    assert_eq!(
        added(&next(&mut s).await),
        addrs(&["10.0.0.1:8080", "10.0.0.2:8080"])
    );

    let (code, _) = http(
        api,
        "PATCH",
        &format!("/api/destinations/{FOO}"),
        r#"{"add":["10.0.0.3:8080"],"remove":["10.0.0.1:8080"]}"#,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(added(&next(&mut s).await), addrs(&["10.0.0.3:8080"]));
    assert_eq!(removed(&next(&mut s).await), addrs(&["10.0.0.1:8080"]));

    let (code, body) = http(api, "GET", "/api/destinations", "").await;
    assert_eq!(code, 200);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list[0]["authority"], FOO);
    assert_eq!(
        list[0]["endpoints"],
        serde_json::json!(["10.0.0.2:8080", "10.0.0.3:8080"])
    );

    let (code, _) = http(api, "DELETE", &format!("/api/destinations/{FOO}"), "").await;
    assert_eq!(code, 200);
    assert_eq!(
        removed(&next(&mut s).await),
        addrs(&["10.0.0.2:8080", "10.0.0.3:8080"])
    );
    let (code, _) = http(api, "GET", &format!("/api/destinations/{FOO}"), "").await;
    assert_eq!(code, 404);
    let (code, body) = http(
        api,
        "PUT",
        "/api/destinations/not-an-authority",
        r#"{"endpoints":[]}"#,
    )
    .await;
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("is not a destination"), "{body}");
    // The mock's own delivery record: the PATCH and the DELETE, each handed
    // to the one stream (the PUT came before it subscribed).
    let (code, body) = http(api, "GET", "/api/delivery", "").await;
    assert_eq!(code, 200, "{body}");
    let record: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(record["count"], 2, "{record}");
    assert!(record["max"].as_f64().unwrap() < 5.0, "{record}");
    stop.cancel();
    mock.stop().await;
}
