//! Misbehaving proxies against our mock: stuck and slow readers overflow
//! their queue (the mock ends them as Linkerd's controller does), healthy
//! streams keep converging, and a reset storm re-converges every stream.

use crate::support;

use std::{net::SocketAddr, time::Duration};

use dst_load_controller::{
    client::faults::Class, client::ground_truth::GroundTruth, harness::mock_feed::MockFeed,
    mock::generate::endpoints, mock::server::Behavior,
};
use support::*;

const FOO: &str = "foo.ns.svc.cluster.local:8080";

/// 400 addresses of the `k`-th /20 of 10.0.0.0/8: a change between two of
/// these is 2 messages of ~12 KB for every stream.
fn generation(k: u32) -> Vec<SocketAddr> {
    let net = format!("10.{}.0.0/16", k % 200).parse().unwrap();
    endpoints(&net, 400, 8080)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_and_slow_streams_overflow_and_healthy_ones_keep_converging() {
    // A queue deep enough that a healthy stream on a busy machine does not
    // fall 32 updates behind, and 64 KiB stream windows that a stuck one
    // fills in a few updates.
    let mock = Mock::start(Behavior {
        queue_capacity: 32,
        ..Default::default()
    })
    .await;
    let foo = FOO.parse().unwrap();
    mock.handle.set(&foo, generation(0));
    let dst = mock.addr.to_string();
    // 10 streams, one connection each (10 proxies): 2 stuck, 2 slow.
    let client = start_client(client_args(&[
        "--destination-addr",
        &dst,
        "--target-services",
        FOO,
        "--streams-per-service",
        "10",
        "--connections",
        "10",
        "--stuck-percent",
        "20",
        "--slow-reader-percent",
        "20",
        "--slow-reader-delay",
        "300ms",
        "--http2-stream-window",
        "65535",
    ]));
    eventually("every stream answered", Duration::from_secs(30), || {
        let sets = client.sets(FOO);
        sets.len() == 10 && sets.iter().all(|s| s.len() == 400)
    })
    .await;
    let streams = client.fleet.get(FOO).unwrap();
    let classes = streams.classes().to_vec();
    let count = |c| classes.iter().filter(|x| **x == c).count();
    assert_eq!(
        (
            count(Class::Healthy),
            count(Class::Slow),
            count(Class::Stuck)
        ),
        (6, 2, 2)
    );
    tokio::spawn(Box::new(MockFeed::new(&mock.handle)).follow(
        client.fleet.clone(),
        tokio_util::sync::CancellationToken::new(),
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Replace every address, again and again, until both stuck streams
    // overflowed (their HTTP/2 windows full, then their queues).
    let mut k = 0;
    while mock.handle.metrics().queue_overflows.get() < 2 && k < 400 {
        k += 1;
        mock.handle.set(&foo, generation(k));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        mock.handle.metrics().queue_overflows.get() >= 2,
        "no overflow after {k} changes"
    );
    // The healthy streams hold the last set; the stuck ones still hold
    // their first (they never read what followed).
    let last = generation(k);
    let mut want = last.clone();
    want.sort();
    eventually(
        "the healthy streams converged",
        Duration::from_secs(30),
        || {
            let sets = client.sets(FOO);
            classes
                .iter()
                .zip(&sets)
                .filter(|(c, _)| **c == Class::Healthy)
                .all(|(_, s)| *s == want)
        },
    )
    .await;
    let sets = client.sets(FOO);
    let mut first = generation(0);
    first.sort();
    for (c, s) in classes.iter().zip(&sets) {
        if *c == Class::Stuck {
            assert_eq!(
                *s, first,
                "a stuck stream reads nothing after its first update"
            );
        }
    }
    let m = client.metrics.clone();
    let (summary, measured) = client.finish_measured().await;
    // Only faulty streams were ended: no healthy stream was reset.
    assert_eq!(m.resets_of(Class::Healthy), 0, "{summary}");
    let healthy = &measured.by_class["healthy"];
    assert_eq!(healthy.streams, 6);
    assert_eq!(measured.by_class["stuck"].streams, 2);
    // Every healthy stream converged to changes, timed.
    assert!(
        healthy.latencies.convergence_latency.count >= 6,
        "{healthy:?}"
    );
    assert!(measured.update_latency.count >= 6);
    mock.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_storm_re_gets_every_stream_and_they_reconverge() {
    let mock = Mock::start(Behavior::default()).await;
    let foo = FOO.parse().unwrap();
    mock.handle
        .set(&foo, addrs(&["10.0.0.1:8080", "10.0.0.2:8080"]));
    let dst = mock.addr.to_string();
    let client = start_client(client_args(&[
        "--destination-addr",
        &dst,
        "--target-services",
        FOO,
        "--streams-per-service",
        "8",
        "--connections",
        "2",
        "--reset-storm-interval",
        "1s",
    ]));
    // Three storms: each ends and re-Gets all 8 streams at once.
    eventually("three reset storms", Duration::from_secs(60), || {
        sample(
            &scrape(&client.registry),
            "destination_client_streams_reset_total",
            &[("reason", "reset_storm"), ("class", "healthy")],
        )
        .is_some_and(|n| n >= 24.0)
    })
    .await;
    // A change after the storms reaches every stream.
    mock.handle.set(&foo, addrs(&["10.0.0.3:8080"]));
    eventually(
        "every stream holds the new set",
        Duration::from_secs(30),
        || {
            client
                .sets(FOO)
                .iter()
                .all(|s| *s == addrs(&["10.0.0.3:8080"]))
        },
    )
    .await;
    let storms = sample(
        &scrape(&client.registry),
        "destination_client_streams_reset_total",
        &[("reason", "reset_storm"), ("class", "healthy")],
    )
    .unwrap() as u64;
    let summary = client.finish().await;
    // Every storm resets all 8 streams, and nothing else resets them.
    assert_eq!(storms % 8, 0, "{storms} resets by storms");
    assert_eq!(summary.resets, storms, "{summary}");
    assert_eq!(summary.streams_created, 8 + storms);
    assert_eq!(summary.errors, 0);
    mock.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_churn_moves_every_stream_to_a_new_connection() {
    let mock = Mock::start(Behavior::default()).await;
    let foo = FOO.parse().unwrap();
    mock.handle.set(&foo, addrs(&["10.0.0.1:8080"]));
    let dst = mock.addr.to_string();
    let client = start_client(client_args(&[
        "--destination-addr",
        &dst,
        "--target-services",
        FOO,
        "--streams-per-service",
        "4",
        "--connections",
        "2",
        "--connection-churn-interval",
        "1s",
    ]));
    let churned = |c: &RunningClient| {
        sample(
            &scrape(&c.registry),
            "destination_client_streams_reset_total",
            &[("reason", "connection_churn"), ("class", "healthy")],
        )
        .unwrap_or(0.0)
    };
    // Each connection is replaced every 1-1.5 s, its 2 streams with it.
    eventually("connections replaced", Duration::from_secs(60), || {
        churned(&client) >= 8.0
    })
    .await;
    mock.handle.set(&foo, addrs(&["10.0.0.2:8080"]));
    eventually(
        "every stream holds the new set",
        Duration::from_secs(30),
        || {
            let sets = client.sets(FOO);
            sets.len() == 4 && sets.iter().all(|s| *s == addrs(&["10.0.0.2:8080"]))
        },
    )
    .await;
    // The streams left behind were closed: the mock serves exactly 4.
    eventually(
        "4 streams open at the mock",
        Duration::from_secs(30),
        || sample(&scrape(&mock.registry), "mock_dst_streams_active", &[]) == Some(4.0),
    )
    .await;
    let summary = client.finish().await;
    assert_eq!(summary.errors, 0, "{summary}");
    assert_eq!(summary.streams_created, 4 + summary.resets, "{summary}");
    mock.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_every_task_the_client_spawned_through_the_runtime() {
    use dst_load_controller::{
        client::{Client, Config},
        runtime::Runtime,
    };
    let mock = Mock::start(Behavior::default()).await;
    let foo = FOO.parse().unwrap();
    mock.handle.set(&foo, generation(0));
    let dst = mock.addr.to_string();
    // Every kind of task the client spawns: Get streams, the timeline's
    // sampler, readiness, staleness, a ground truth, a reset storm and
    // connection churn on each of two connections.
    let args = client_args(&[
        "--destination-addr",
        &dst,
        "--target-services",
        FOO,
        "--streams-per-service",
        "4",
        "--connections",
        "2",
        "--reset-storm-interval",
        "200ms",
        "--connection-churn-interval",
        "300ms",
    ]);
    let rt = Runtime::with_shutdown(tokio_util::sync::CancellationToken::new());
    let tracker = rt.tracker();
    let mut registry = prometheus_client::registry::Registry::default();
    let client = Client::new(Config::try_from(&args).unwrap(), &mut registry)
        .unwrap()
        .with_tracker(rt.tracker())
        .with_truth(MockFeed::new(&mock.handle));
    let fleet = client.fleet();
    let stop = rt.shutdown();
    rt.spawn_critical("client", async move { client.run(stop).await.map(drop) });
    eventually("every stream answered", Duration::from_secs(30), || {
        let service = fleet.services().into_iter().find(|s| s.service == FOO);
        service.is_some_and(|s| {
            let slots = s.slots();
            slots.len() == 4 && slots.iter().all(|slot| slot.addrs().len() == 400)
        })
    })
    .await;
    // Storms and churn have fired (their tasks are past their first wait).
    tokio::time::sleep(Duration::from_millis(700)).await;
    // The client's own task, 4 streams, the sampler, readiness, staleness,
    // the truth, one storm task and one churn task per connection.
    assert_eq!(tracker.len(), 1 + 4 + 1 + 1 + 1 + 1 + 1 + 2);
    tokio::time::timeout(Duration::from_secs(60), rt.finish())
        .await
        .expect("every task ended after the root was cancelled")
        .expect("no task failed");
    assert_eq!(tracker.len(), 0);
}
