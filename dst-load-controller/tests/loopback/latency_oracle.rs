//! Latency oracle: the mock delays every delivery by a known amount (fixed,
//! then uniformly distributed) and records when it actually handed each
//! update to each stream's transport. Across 1,000 streams, the client must
//! count exactly every delivery, never report a percentile earlier than the
//! mock's record (a stream receives an update after the mock hands it over),
//! and the record must honour the injected delay: never early. The upper
//! bounds are wide, for a loaded machine; how closely the two agree on a
//! quiet one (within 1 ms) is a benchmark figure (BENCHMARKS.md), printed
//! by `cargo test --release --test loopback latency_oracle -- --nocapture`.
//!
//! Changes are staggered over 100 services of 10 streams each, so that what
//! is measured is the measurement, not a 1,000-stream burst queueing on two
//! cores (that is the fan-out benchmark's subject, see BENCHMARKS.md).

use crate::support;

use std::time::Duration;

use dst_load_controller::{
    client::ground_truth::GroundTruth,
    client::truth::{Kind, Percentiles},
    harness::mock_feed::MockFeed,
    mock::server::{Behavior, Delay},
};
use support::*;

const SERVICES: usize = 100;
const STREAMS_PER_SERVICE: usize = 10;
const STREAMS: usize = SERVICES * STREAMS_PER_SERVICE;
const CHANGES: u8 = 5;

fn service(i: usize) -> String {
    format!("oracle-{i}.ns.svc.cluster.local:8080")
}

/// Runs CHANGES single-address additions through STREAMS streams with
/// `delay` injected; returns (client's update latency, mock's record).
async fn measure(delay: Delay) -> (Percentiles, Percentiles) {
    let mock = Mock::start(Behavior {
        delay,
        ..Default::default()
    })
    .await;
    let services: Vec<_> = (0..SERVICES).map(service).collect();
    for (i, svc) in services.iter().enumerate() {
        mock.handle
            .set(&svc.parse().unwrap(), addrs(&[&format!("10.0.{i}.1:8080")]));
    }
    let dst = mock.addr.to_string();
    let client = start_client(client_args(&[
        "--destination-addr",
        &dst,
        "--target-services",
        &format!("oracle-{{0..{}}}.ns.svc.cluster.local:8080", SERVICES - 1),
        "--streams-per-service",
        &STREAMS_PER_SERVICE.to_string(),
        "--connections",
        "50",
    ]));
    let sizes = |c: &RunningClient, want: usize| {
        services.iter().all(|svc| {
            let sets = c.sets(svc);
            sets.len() == STREAMS_PER_SERVICE && sets.iter().all(|s| s.len() == want)
        })
    };
    eventually("initial sets", Duration::from_secs(60), || {
        sizes(&client, 1)
    })
    .await;
    tokio::spawn(Box::new(MockFeed::new(&mock.handle)).follow(
        client.fleet.clone(),
        tokio_util::sync::CancellationToken::new(),
    ));
    // Nothing recorded yet: the initial sets are not changes.
    assert_eq!(mock.handle.metrics().delivery_percentiles().count, 0);

    // One service changes every 2 ms: ten deliveries at a time.
    for n in 2..CHANGES + 2 {
        for (i, svc) in services.iter().enumerate() {
            mock.handle.patch(
                &svc.parse().unwrap(),
                &addrs(&[&format!("10.0.{i}.{n}:8080")]),
                &[],
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    eventually(
        "every stream has every change",
        Duration::from_secs(60),
        || sizes(&client, usize::from(CHANGES) + 1),
    )
    .await;
    let fleet = client.fleet.clone();
    eventually("every fan-out complete", Duration::from_secs(60), || {
        fleet.services().iter().all(|s| s.truth.pending() == 0)
    })
    .await;
    let measured = client.metrics.latencies.percentiles(Kind::Update);
    let record = mock.handle.metrics().delivery_percentiles();
    client.finish().await;
    mock.stop().await;
    (measured, record)
}

/// How much later than the mock's record the client may report a
/// percentile on a loaded machine: scheduling delays, not the measurement.
const LOADED_SLACK: f64 = 0.250;
/// How much later than its delay the mock may hand an update to a stream on
/// a loaded machine. A run of the whole suite beside a Go build on both
/// cores saw the uniform delay's p95 534 ms for a 199 ms bound; the tight
/// figures live in BENCHMARKS.md, not here.
const LATE_UNDER_LOAD: f64 = 1.0;
/// The client and the mock stamp the change at slightly different moments.
const STAMP_SKEW: f64 = 0.001;

fn assert_agrees(measured: &Percentiles, record: &Percentiles) {
    let expected = STREAMS as u64 * u64::from(CHANGES);
    assert_eq!(record.count, expected, "mock deliveries: {record:?}");
    assert_eq!(measured.count, expected, "client samples: {measured:?}");
    for (stat, m, r) in [
        ("p50", measured.p50, record.p50),
        ("p95", measured.p95, record.p95),
        ("p99", measured.p99, record.p99),
    ] {
        eprintln!(
            "{stat}: client {:.3} ms, mock {:.3} ms, difference {:.3} ms",
            m * 1e3,
            r * 1e3,
            (m - r) * 1e3
        );
        assert!(
            m >= r - STAMP_SKEW && m - r <= LOADED_SLACK,
            "{stat}: client {:.3} ms vs mock {:.3} ms\nclient {measured:?}\nmock {record:?}",
            m * 1e3,
            r * 1e3
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_delay_is_reported_never_early_and_counted_exactly() {
    let (measured, record) = measure(Delay::Fixed(Duration::from_millis(50))).await;
    eprintln!("fixed 50ms: client {measured:?}\nmock {record:?}");
    assert_agrees(&measured, &record);
    // Never early; late by at most what a loaded machine adds.
    for p in [&measured, &record] {
        assert!(p.p50 >= 0.050 && p.p50 < 0.050 + LATE_UNDER_LOAD, "{p:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uniform_delay_is_reported_never_early_and_counted_exactly() {
    let (measured, record) = measure(Delay::Uniform(
        Duration::from_millis(10),
        Duration::from_millis(200),
    ))
    .await;
    eprintln!("uniform 10..200ms: client {measured:?}\nmock {record:?}");
    assert_agrees(&measured, &record);
    // 5,000 draws from U(10 ms, 200 ms): the median's standard error is
    // about 1.3 ms, the 95th percentile's about 0.6 ms. Never earlier than
    // the draws allow; later only by what a loaded machine adds.
    assert!(
        record.p50 > 0.095 && record.p50 < 0.115 + LATE_UNDER_LOAD,
        "{record:?}"
    );
    assert!(
        record.p95 > 0.182 && record.p95 < 0.199 + LATE_UNDER_LOAD,
        "{record:?}"
    );
    assert!(
        record.max >= 0.190 && record.max < 0.200 + LATE_UNDER_LOAD,
        "{record:?}"
    );
}
