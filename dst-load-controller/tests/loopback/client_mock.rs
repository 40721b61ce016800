//! The client against the mock Destination server on loopback: scripted
//! adds, removes, deletions, errors, stream ends and reconnects, checked
//! through every stream's set and the exported metrics.

use crate::support;

use std::time::Duration;

use dst_load_controller::mock::server::Behavior;
use support::*;

const FOO: &str = "foo.ns.svc.cluster.local:8080";
const BAR: &str = "bar.ns.svc.cluster.local:8081";
const WAIT: Duration = Duration::from_secs(20);

/// Whether the service has streams and every one of them holds exactly `want`.
fn all_equal(c: &RunningClient, svc: &str, want: &[std::net::SocketAddr]) -> bool {
    let sets = c.sets(svc);
    !sets.is_empty() && sets.iter().all(|s| s == want)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_track_adds_removes_and_deletion() {
    let mock = Mock::start(Behavior::default()).await;
    mock.handle.set(
        &FOO.parse().unwrap(),
        addrs(&["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]),
    );
    mock.handle
        .set(&BAR.parse().unwrap(), addrs(&["10.0.1.1:8081"]));

    let dst = mock.addr.to_string();
    let client = start_client(client_args(&[
        "--destination-addr",
        &dst,
        "--target-services",
        "{foo,bar}.ns.svc.cluster.local:808{0,1}",
        "--streams-per-service",
        "5",
        "--connections",
        "3",
    ]));
    // The brace pattern also names foo:8081 and bar:8080, which do not exist.
    let want_foo = addrs(&["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]);
    eventually("foo's initial set on every stream", WAIT, || {
        all_equal(&client, FOO, &want_foo)
    })
    .await;
    eventually("bar's initial set", WAIT, || {
        all_equal(&client, BAR, &addrs(&["10.0.1.1:8081"]))
    })
    .await;

    // An incremental change: the client must not confuse the add's size with the set's.
    mock.handle.patch(
        &FOO.parse().unwrap(),
        &addrs(&["10.0.0.4:8080"]),
        &addrs(&["10.0.0.1:8080"]),
    );
    let want_foo = addrs(&["10.0.0.2:8080", "10.0.0.3:8080", "10.0.0.4:8080"]);
    eventually("foo after the patch", WAIT, || {
        all_equal(&client, FOO, &want_foo)
    })
    .await;

    // Deleting bar is a remove of every address.
    mock.handle.delete(&BAR.parse().unwrap()).unwrap();
    eventually("bar emptied", WAIT, || all_equal(&client, BAR, &[])).await;

    let text = scrape(&client.registry);
    assert_eq!(
        sample(
            &text,
            "destination_client_endpoints",
            &[("service", FOO), ("stat", "min")]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            "destination_client_endpoints",
            &[("service", FOO), ("stat", "max")]
        ),
        Some(3.0)
    );
    // 5 streams: one snapshot add and one incremental add each, one remove each.
    assert_eq!(
        sample(
            &text,
            "destination_client_updates_received_total",
            &[("service", FOO), ("kind", "add")]
        ),
        Some(10.0)
    );
    assert_eq!(
        sample(
            &text,
            "destination_client_updates_received_total",
            &[("service", FOO), ("kind", "remove")]
        ),
        Some(5.0)
    );
    assert_eq!(
        sample(
            &text,
            "destination_client_updates_received_total",
            &[("service", BAR), ("kind", "remove")]
        ),
        Some(5.0)
    );
    // Addresses carried, counted where they arrive: foo 5 x (3 + 1 added,
    // 1 removed), bar 5 x (1 added, 1 removed).
    assert_eq!(
        sample(
            &text,
            "destination_client_endpoint_updates_received_total",
            &[]
        ),
        Some(35.0)
    );
    // The unknown services are retried with backoff: NotFound, counted.
    eventually("NotFound retried", WAIT, || {
        sample(
            &scrape(&client.registry),
            "destination_client_connection_errors_total",
            &[("reason", "NotFound")],
        )
        .unwrap_or(0.0)
            >= 20.0
    })
    .await;
    let text = scrape(&client.registry);
    assert!(
        sample(
            &text,
            "destination_client_streams_reset_total",
            &[("reason", "NotFound")]
        )
        .unwrap()
            >= 10.0
    );
    assert_eq!(
        sample(
            &text,
            "destination_client_streams_failed_total",
            &[("reason", "NotFound")]
        ),
        None
    );
    // 4 services x 5 streams, each opened at least once.
    assert!(sample(&text, "destination_client_streams_created_total", &[]).unwrap() >= 20.0);

    let summary = client.finish().await;
    assert_eq!(summary.services.len(), 4);
    assert_eq!(summary.failed_streams, 0);
    mock.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_authorities_end_streams_for_good() {
    let mock = Mock::start(Behavior::default()).await;
    let dst = mock.addr.to_string();
    // Syntactically fine for the client, but not a service name the server accepts.
    let client = start_client(client_args(&[
        "--destination-addr",
        &dst,
        "--target-services",
        "foo.example.com:80",
        "--streams-per-service",
        "3",
    ]));
    eventually("3 final failures", WAIT, || {
        sample(
            &scrape(&client.registry),
            "destination_client_streams_failed_total",
            &[("reason", "InvalidArgument")],
        ) == Some(3.0)
    })
    .await;
    // Final errors are not retried: the count stays put.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = scrape(&client.registry);
    assert_eq!(
        sample(
            &text,
            "destination_client_connection_errors_total",
            &[("reason", "InvalidArgument")]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, "destination_client_streams_created_total", &[]),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, "destination_client_streams_active", &[]),
        Some(0.0)
    );
    let summary = client.finish().await;
    assert_eq!(summary.failed_streams, 3);
    mock.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_replace_the_set() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mock = Mock::start_on(listener, Behavior::default());
    mock.handle.set(
        &FOO.parse().unwrap(),
        addrs(&["10.0.0.1:8080", "10.0.0.2:8080"]),
    );
    let dst = addr.to_string();
    let client = start_client(client_args(&[
        "--destination-addr",
        &dst,
        "--target-services",
        FOO,
        "--streams-per-service",
        "4",
        "--connections",
        "2",
        "--backoff-min",
        "10ms",
        "--backoff-max",
        "200ms",
    ]));
    eventually("initial set", WAIT, || {
        all_equal(&client, FOO, &addrs(&["10.0.0.1:8080", "10.0.0.2:8080"]))
    })
    .await;

    // The server restarts with a different set: no remove for .1 ever comes,
    // so only treating the first message after reconnect as a reset is right.
    mock.stop().await;
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let mock = Mock::start_on(listener, Behavior::default());
    mock.handle.set(
        &FOO.parse().unwrap(),
        addrs(&["10.0.0.2:8080", "10.0.0.9:8080"]),
    );
    eventually("the new server's set on every stream", WAIT, || {
        all_equal(&client, FOO, &addrs(&["10.0.0.2:8080", "10.0.0.9:8080"]))
    })
    .await;
    let text = scrape(&client.registry);
    assert!(sample(&text, "destination_client_streams_created_total", &[]).unwrap() >= 8.0);
    client.finish().await;
    mock.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_lifetimes_reset_and_reconverge() {
    let mock = Mock::start(Behavior::default()).await;
    mock.handle
        .set(&FOO.parse().unwrap(), addrs(&["10.0.0.1:8080"]));
    let dst = mock.addr.to_string();
    let client = start_client(client_args(&[
        "--destination-addr",
        &dst,
        "--target-services",
        FOO,
        "--streams-per-service",
        "2",
        "--min-stream-lifetime",
        "50ms",
        "--max-stream-lifetime",
        "100ms",
    ]));
    eventually("lifetime resets", WAIT, || {
        sample(
            &scrape(&client.registry),
            "destination_client_streams_reset_total",
            &[("reason", "lifetime")],
        )
        .unwrap_or(0.0)
            >= 6.0
    })
    .await;
    mock.handle
        .set(&FOO.parse().unwrap(), addrs(&["10.0.0.5:8080"]));
    eventually("sets follow across resets", WAIT, || {
        all_equal(&client, FOO, &addrs(&["10.0.0.5:8080"]))
    })
    .await;
    let text = scrape(&client.registry);
    assert!(
        sample(
            &text,
            "destination_client_stream_lifetime_seconds_count",
            &[]
        )
        .unwrap()
            >= 6.0
    );
    client.finish().await;
    mock.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_services_wait_and_count_initial_timeouts() {
    let mock = Mock::start(Behavior::default()).await;
    // Exists, but empty: the real controller sends nothing at all.
    mock.handle.set(&FOO.parse().unwrap(), Vec::new());
    let dst = mock.addr.to_string();
    let client = start_client(client_args(&[
        "--destination-addr",
        &dst,
        "--target-services",
        FOO,
        "--initial-timeout",
        "100ms",
    ]));
    eventually("an initial timeout", WAIT, || {
        sample(
            &scrape(&client.registry),
            "destination_client_initial_timeouts_total",
            &[],
        ) == Some(1.0)
    })
    .await;
    // The stream kept waiting, and sees the first endpoint when it appears.
    mock.handle
        .set(&FOO.parse().unwrap(), addrs(&["10.0.0.1:8080"]));
    eventually("the first endpoint", WAIT, || {
        all_equal(&client, FOO, &addrs(&["10.0.0.1:8080"]))
    })
    .await;
    let text = scrape(&client.registry);
    assert_eq!(
        sample(&text, "destination_client_streams_created_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "destination_client_time_to_first_update_seconds_count",
            &[]
        ),
        Some(1.0)
    );
    client.finish().await;
    mock.stop().await;
}

/// `client --duration` ends with the gates judged: what holds exits 0 and is
/// written to the report and JUnit files; a latency gate with no samples (no
/// ground truth followed) fails loudly with exit 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_judges_its_gates_and_writes_reports() {
    let mock = Mock::start(Behavior::default()).await;
    mock.handle.set(
        &FOO.parse().unwrap(),
        addrs(&["10.0.0.1:8080", "10.0.0.2:8080"]),
    );
    let dir = std::env::temp_dir().join(format!("dst-client-gates-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (report, junit) = (dir.join("report.json"), dir.join("junit.xml"));
    let dst = mock.addr.to_string();
    let client = |slos: &[&str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_dst-load-controller"));
        cmd.args([
            "client",
            "--destination-addr",
            &dst,
            "--target-services",
            FOO,
            "--streams-per-service",
            "3",
            "--duration",
            "1500ms",
            "--admin-addr",
            "127.0.0.1:0",
            "--report",
            report.to_str().unwrap(),
            "--junit",
            junit.to_str().unwrap(),
        ]);
        for s in slos {
            cmd.args(["--slo", s]);
        }
        // As a local control plane's env file sets it.
        cmd.env("DST_LOCAL_LINKERD_VERSION", "stable-2.14.2");
        cmd.output()
    };

    let out = client(&["errors==0", "stale_streams==0", "resets==0"])
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("SLO PASS errors==0"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["command"], "client");
    assert_eq!(json["streams"], 3);
    assert_eq!(json["errors"], 0);
    assert_eq!(json["config"]["streams_per_service"], 3);
    assert_eq!(json["config"]["destination_version"], "stable-2.14.2");
    assert_eq!(json["services"][0]["max_endpoints"], 2);
    assert_eq!(json["slos"].as_array().unwrap().len(), 3);
    assert!(json["started_at"].as_str().unwrap() < json["ended_at"].as_str().unwrap());
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("tests=\"3\" failures=\"0\""), "{xml}");

    let out = client(&["errors==0", "update_latency.p95<500ms"])
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("SLO FAIL update_latency.p95<500ms (too few samples to judge: 0"),
        "{stdout}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("failures=\"1\""), "{xml}");
    std::fs::remove_dir_all(&dir).unwrap();
    mock.stop().await;
}
