//! The client's `GetProfile` streams against the mock on loopback: every
//! stream's last profile held exactly, every profile counted once, and
//! errors retried or final as the proxy treats them.

use crate::support;

use std::time::Duration;

use dst_load_controller::mock::{
    profiles::{ProfileSpec, RouteSpec},
    server::Behavior,
};
use support::*;

const FOO: &str = "foo.ns.svc.cluster.local:8080";
const FOO_HOST: &str = "foo.ns.svc.cluster.local";
const WAIT: Duration = Duration::from_secs(20);

fn route(name: &str) -> RouteSpec {
    RouteSpec {
        name: name.into(),
        method: Some("GET".into()),
        path_regex: format!("/{name}"),
        retryable: false,
        timeout: None,
    }
}

/// Each profile stream of `target`'s (updates received, route names).
fn profile_streams(c: &RunningClient, target: &str) -> Vec<Option<(u64, Vec<String>)>> {
    c.profiles
        .get(target)
        .map(|s| {
            s.seen()
                .into_iter()
                .map(|seen| seen.map(|s| (s.updates, s.routes)))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `target` has `n` profile streams, each holding `routes` after
/// exactly `updates` profiles.
fn all_hold(c: &RunningClient, target: &str, n: usize, updates: u64, routes: &[&str]) -> bool {
    let want = Some((updates, routes.iter().map(ToString::to_string).collect()));
    let streams = profile_streams(c, target);
    streams.len() == n && streams.iter().all(|s| *s == want)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_streams_hold_every_profile_exactly_and_count_each_once() {
    let mock = Mock::start(Behavior::default()).await;
    mock.handle.set(
        &FOO.parse().unwrap(),
        addrs(&["10.0.0.1:8080", "10.0.0.2:8080"]),
    );
    let dst = mock.addr.to_string();
    let client = start_client(client_args(&[
        "--destination-addr",
        &dst,
        "--target-services",
        FOO,
        "--profile-streams-per-service",
        "3",
        "--connections",
        "2",
    ]));

    // The default profile on every stream, once.
    eventually("the default profile on 3 streams", WAIT, || {
        all_hold(&client, FOO, 3, 1, &[])
    })
    .await;
    let seen = client.profiles.get(FOO).unwrap().seen();
    let first = seen[0].as_ref().unwrap();
    assert_eq!(first.fully_qualified_name, FOO_HOST);
    assert_eq!(first.retry_ratio, Some(0.2));
    assert!(first.endpoint.is_none() && first.dst_overrides.is_empty());

    // Routes set, then changed, then the profile deleted: each one profile
    // on every stream, nothing else.
    mock.handle.set_profile(
        FOO_HOST,
        ProfileSpec {
            routes: vec![route("a"), route("b")],
            ..Default::default()
        },
    );
    eventually("routes a, b on 3 streams", WAIT, || {
        all_hold(&client, FOO, 3, 2, &["a", "b"])
    })
    .await;
    mock.handle.set_profile(
        FOO_HOST,
        ProfileSpec {
            routes: vec![route("b")],
            ..Default::default()
        },
    );
    eventually("route b on 3 streams", WAIT, || {
        all_hold(&client, FOO, 3, 3, &["b"])
    })
    .await;
    mock.handle.delete_profile(FOO_HOST);
    eventually("the default again on 3 streams", WAIT, || {
        all_hold(&client, FOO, 3, 4, &[])
    })
    .await;

    let text = scrape(&client.registry);
    assert_eq!(
        sample(
            &text,
            "destination_client_profile_updates_received_total",
            &[("target", FOO)]
        ),
        Some(12.0)
    );
    assert_eq!(
        sample(&text, "destination_client_profile_streams_active", &[]),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            "destination_client_profile_streams_created_total",
            &[]
        ),
        Some(3.0)
    );
    // One first profile per opening, timed once: later profiles are not.
    assert_eq!(
        sample(
            &text,
            "destination_client_profile_time_to_first_update_seconds_count",
            &[]
        ),
        Some(3.0)
    );
    // The Get streams went on beside them.
    assert!(client.sets(FOO).iter().all(|s| s.len() == 2));
    let summary = client.finish().await;
    assert_eq!(
        (summary.profile_streams_created, summary.profile_updates),
        (3, 12)
    );
    assert_eq!(summary.errors, 0);
    mock.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_service_is_retried_and_a_bad_name_ends_its_profile_stream() {
    let mock = Mock::start(Behavior::default()).await;
    let dst = mock.addr.to_string();
    // bar is unknown (Unknown, retried); `bad.svc...` has one label before
    // `svc` (InvalidArgument: final).
    let client = start_client(client_args(&[
        "--destination-addr",
        &dst,
        "--target-services",
        "bar.ns.svc.cluster.local:8080",
        "--target-services",
        "bad.svc.cluster.local:80",
        "--profile-streams-per-service",
        "1",
        "--backoff-min",
        "10ms",
        "--backoff-max",
        "50ms",
    ]));
    let errors = |reason: &str| {
        sample(
            &scrape(&client.registry),
            "destination_client_profile_errors_total",
            &[("reason", reason)],
        )
        .unwrap_or(0.0)
    };
    eventually("two Unknown answers, the stream retried", WAIT, || {
        errors("Unknown") >= 2.0
    })
    .await;
    eventually("the bad name's stream ended for good", WAIT, || {
        client.metrics.profiles.failed_total.get() == 1
    })
    .await;
    // Ended for good after one answer: never asked again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(errors("InvalidArgument"), 1.0);
    assert_eq!(client.metrics.profiles.failed_total.get(), 1);
    // No stream of either ever had a profile.
    assert!(
        profile_streams(&client, "bar.ns.svc.cluster.local:8080")
            .iter()
            .all(Option::is_none)
    );
    client.finish().await;
    mock.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_pattern_pairs_every_get_with_a_profile_stream_and_a_storm_reopens_both() {
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
        "--connections",
        "2",
        "--proxy-discovery",
        "--reset-storm-interval",
        "4s",
    ]));
    eventually("a profile on each of the 2 profile streams", WAIT, || {
        all_hold(&client, FOO, 2, 1, &[])
    })
    .await;
    // The first storm: both Get streams and both profile streams re-open,
    // and each profile stream gets the profile again (the next storm is
    // 4 s later).
    let storms = |text: &str| {
        (
            sample(
                text,
                "destination_client_profile_streams_reset_total",
                &[("reason", "reset_storm")],
            ),
            sample(
                text,
                "destination_client_streams_reset_total",
                &[("reason", "reset_storm"), ("class", "healthy")],
            ),
        )
    };
    eventually("a storm's re-opened streams and profiles", WAIT, || {
        all_hold(&client, FOO, 2, 2, &[])
            && storms(&scrape(&client.registry)) == (Some(2.0), Some(2.0))
    })
    .await;
    let text = scrape(&client.registry);
    assert_eq!(
        sample(
            &text,
            "destination_client_profile_streams_created_total",
            &[]
        ),
        Some(4.0)
    );
    client.finish().await;
    mock.stop().await;
}

/// `--stuck-percent` and `--slow-reader-percent` reach the profile streams:
/// each takes the class of its connection slot (as `Get` streams do), a
/// stuck one keeps its first profile and reads nothing after, a slow one
/// gets every profile, late; stuck ones are counted apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_profile_streams_read_once_and_slow_ones_read_everything() {
    let mock = Mock::start(Behavior::default()).await;
    mock.handle
        .set(&FOO.parse().unwrap(), addrs(&["10.0.0.1:8080"]));
    let dst = mock.addr.to_string();
    // Slot 0 is the Get stream; the 10 profile streams take slots 1..=10,
    // placed by `n * 11 mod 100`: slots 1 and 10 (11, 10) are under 20,
    // stuck; slot 2 (22) under 20 + 10, slow; the other 7 healthy.
    let client = start_client(client_args(&[
        "--destination-addr",
        &dst,
        "--target-services",
        FOO,
        "--profile-streams-per-service",
        "10",
        "--connections",
        "11",
        "--stuck-percent",
        "20",
        "--slow-reader-percent",
        "10",
        "--slow-reader-delay",
        "300ms",
    ]));
    eventually("the default profile on 10 streams", WAIT, || {
        profile_streams(&client, FOO)
            .iter()
            .filter(|s| s.is_some())
            .count()
            == 10
    })
    .await;
    let streams = client.profiles.get(FOO).unwrap();
    let classes: Vec<&str> = (0..10).map(|k| streams.class(k).as_str()).collect();
    assert_eq!(
        classes,
        [
            "stuck", "slow", "healthy", "healthy", "healthy", "healthy", "healthy", "healthy",
            "healthy", "stuck"
        ]
    );
    assert_eq!(streams.stuck(), 2);
    for (k, routes) in [["a"], ["b"], ["c"]].iter().enumerate() {
        mock.handle.set_profile(
            FOO_HOST,
            ProfileSpec {
                routes: routes.iter().map(|r| route(r)).collect(),
                ..Default::default()
            },
        );
        // Every healthy and slow stream shows each change before the next.
        let updates = k as u64 + 2;
        eventually(
            "the change on every stream but the stuck ones",
            WAIT,
            || {
                let s = profile_streams(&client, FOO);
                (1..9).all(|i| s[i] == Some((updates, vec![routes[0].to_string()])))
            },
        )
        .await;
    }
    // The stuck ones still hold their first profile, and nothing more came.
    let s = profile_streams(&client, FOO);
    assert_eq!(s[0], Some((1, vec![])));
    assert_eq!(s[9], Some((1, vec![])));
    let text = scrape(&client.registry);
    assert_eq!(
        sample(&text, "destination_client_profile_stuck_streams", &[]),
        Some(2.0),
        "{text}"
    );
    // 8 streams x 4 profiles, and the stuck ones' first.
    assert_eq!(
        sample(
            &text,
            "destination_client_profile_updates_received_total",
            &[("target", FOO)]
        ),
        Some(34.0)
    );
    let summary = client.finish().await;
    assert_eq!(summary.profile_stuck, 2);
    assert_eq!(summary.errors, 0);
    mock.stop().await;
}
