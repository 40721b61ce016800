//! Staleness oracle: the mock withholds removals from known streams; the
//! client must report exactly those streams stale, with the right addresses,
//! and count how long they stayed stale once they agree again.

use crate::support;

use std::time::Duration;

use dst_load_controller::{
    client::ground_truth::GroundTruth, harness::mock_feed::MockFeed, mock::server::Behavior,
};
use support::*;

const FOO: &str = "foo.ns.svc.cluster.local:8080";

/// A mock that withholds removals from every 4th stream it opens (2 of 8)
/// serving FOO's three addresses, and a client of 8 streams with a 300 ms
/// grace following the mock's truth; once every stream holds the three,
/// the third is removed, and the 2 streams that never hear of it are stale.
async fn two_streams_stale_on_a_withheld_removal()
-> (Mock, RunningClient, Vec<std::net::SocketAddr>) {
    let mock = Mock::start(Behavior {
        withhold_removals_every: Some(4),
        ..Default::default()
    })
    .await;
    let all3 = addrs(&["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]);
    mock.handle.set(&FOO.parse().unwrap(), all3.clone());
    let dst = mock.addr.to_string();
    let client = start_client(client_args(&[
        "--destination-addr",
        &dst,
        "--target-services",
        FOO,
        "--streams-per-service",
        "8",
        "--staleness-grace",
        "300ms",
    ]));
    eventually("initial sets", Duration::from_secs(20), || {
        let sets = client.sets(FOO);
        sets.len() == 8 && sets.iter().all(|s| *s == all3)
    })
    .await;
    tokio::spawn(Box::new(MockFeed::new(&mock.handle)).follow(
        client.fleet.clone(),
        tokio_util::sync::CancellationToken::new(),
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    mock.handle
        .patch(&FOO.parse().unwrap(), &[], &addrs(&["10.0.0.3:8080"]));
    eventually("two stale streams", Duration::from_secs(20), || {
        stale(&client) == Some(2.0)
    })
    .await;
    (mock, client, all3)
}

/// FOO's healthy stale streams, as the client's metrics say.
fn stale(c: &RunningClient) -> Option<f64> {
    sample(
        &scrape(&c.registry),
        "destination_client_stale_streams",
        &[("service", FOO)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withheld_removals_are_reported_stale() {
    let (mock, client, all3) = two_streams_stale_on_a_withheld_removal().await;
    let foo = FOO.parse().unwrap();
    // Exactly the streams still holding the removed address, and nothing else differs.
    let sets = client.sets(FOO);
    let holding: Vec<_> = sets
        .iter()
        .filter(|s| s.contains(&"10.0.0.3:8080".parse().unwrap()))
        .collect();
    assert_eq!(holding.len(), 2);
    assert!(holding.iter().all(|s| **s == all3));
    assert_eq!(
        sets.iter()
            .filter(|s| **s == addrs(&["10.0.0.1:8080", "10.0.0.2:8080"]))
            .count(),
        6
    );
    let diff = dst_load_controller::client::staleness::diff(
        holding[0],
        &addrs(&["10.0.0.1:8080", "10.0.0.2:8080"]),
    )
    .unwrap();
    assert_eq!(
        (diff.missing, diff.extra),
        (vec![], addrs(&["10.0.0.3:8080"]))
    );
    assert_eq!(
        sample(
            &scrape(&client.registry),
            "destination_client_staleness_seconds_count",
            &[]
        ),
        Some(0.0)
    );

    // The address comes back: the stale streams agree again and their
    // staleness is recorded; the healthy ones were never stale.
    mock.handle.patch(&foo, &addrs(&["10.0.0.3:8080"]), &[]);
    eventually("no stale streams", Duration::from_secs(20), || {
        stale(&client) == Some(0.0)
    })
    .await;
    let text = scrape(&client.registry);
    assert_eq!(
        sample(&text, "destination_client_staleness_seconds_count", &[]),
        Some(2.0)
    );
    client.finish().await;
    mock.stop().await;
}

/// The stale count a run reports is the end's: streams that were stale and
/// agree again by the time the client stops are not stale in its summary,
/// however soon after their last update it stops (the checks run once a
/// second, and once more at the stop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_that_agree_again_just_before_the_stop_are_not_stale_at_the_end() {
    let (mock, client, all3) = two_streams_stale_on_a_withheld_removal().await;
    let foo = FOO.parse().unwrap();
    // The address comes back; the client stops as soon as every stream
    // holds it again, before the next once-a-second check.
    mock.handle.patch(&foo, &addrs(&["10.0.0.3:8080"]), &[]);
    eventually("every stream agrees", Duration::from_secs(20), || {
        client.sets(FOO).iter().all(|s| *s == all3)
    })
    .await;
    let (_, measured) = client.finish_measured().await;
    assert_eq!(measured.stale_streams, 0, "stale at the end");
    assert_eq!(measured.streams_unconverged, 0);
    // The two episodes ended and were timed.
    assert_eq!(measured.staleness.count, 2);
    mock.stop().await;
}
