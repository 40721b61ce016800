//! `report --prometheus` against a real Prometheus scraping a real client:
//! the counts it reads equal the client's own, its latency percentiles are
//! the bucket bounds just above the client's exact (HDR) percentiles, and
//! its gates exit 0, 3 and 1 as documented.
//!
//! Needs the Prometheus built by `hack/build-deps.sh prometheus`, named by
//! `DST_PROMETHEUS` (hack/e2e.sh sets it).

mod support;

use std::time::Duration;

use dst_load_controller::{
    admin, client::ground_truth::GroundTruth, client::truth::Percentiles,
    harness::mock_feed::MockFeed, mock::server::Behavior, mock::server::Delay,
};
use support::*;
use tokio_util::sync::CancellationToken;

const FOO: &str = "foo.ns.svc.cluster.local:8080";
const BAR: &str = "bar.ns.svc.cluster.local:8080";
/// Not served by the mock: every Get is answered NotFound, once (long backoff).
const GONE: &str = "gone.ns.svc.cluster.local:8080";

/// `sum(QUERY)` against a running Prometheus.
trait Sum {
    async fn sum(&self, query: &str) -> Option<f64>;
}

impl Sum for Prometheus {
    /// `sum(QUERY)` now, if any series matched.
    async fn sum(&self, query: &str) -> Option<f64> {
        let v: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", format!("sum({query})"))])
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

async fn report(args: &[&str]) -> (std::process::Output, serde_json::Value) {
    let path = std::env::temp_dir().join(format!(
        "dst-report-{}-{}.json",
        std::process::id(),
        rand_suffix()
    ));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_dst-load-controller"))
        .arg("report")
        .args(args)
        .arg("--report")
        .arg(&path)
        .output()
        .await
        .unwrap();
    let json = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(serde_json::Value::Null);
    let _ = std::fs::remove_file(&path);
    (out, json)
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Prometheus's percentile is the bound of the doubling bucket (1 ms, 2 ms,
/// 4 ms, ...) holding the exact one: at or above it, and less than twice it
/// (or 1 ms for anything under 1 ms).
fn assert_bucket_bound(name: &str, stat: &str, prom: f64, exact: f64) {
    let tolerance = exact * 5e-4; // HDR's midpoint is within 0.05%.
    assert!(
        prom + tolerance >= exact && (prom < 2.0 * exact + tolerance || prom <= 0.001),
        "{name}.{stat}: Prometheus bound {prom} s is not the bucket above the exact {exact} s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Prometheus binary (DST_PROMETHEUS); run by hack/e2e.sh"]
async fn report_reads_the_clients_numbers_from_prometheus_and_gates_them() {
    let mock = Mock::start(Behavior {
        delay: Delay::Uniform(Duration::from_millis(5), Duration::from_millis(60)),
        ..Default::default()
    })
    .await;
    let (foo, bar) = (FOO.parse().unwrap(), BAR.parse().unwrap());
    mock.handle.set(&foo, addrs(&["10.0.0.1:8080"]));
    mock.handle.set(&bar, addrs(&["10.0.1.1:8080"]));
    let dst = mock.addr.to_string();
    let client = start_client(client_args(&[
        "--destination-addr",
        &dst,
        "--target-services",
        &format!("{FOO},{BAR},{GONE}"),
        "--streams-per-service",
        "20",
        "--connections",
        "4",
        "--backoff-min",
        "10m",
        "--backoff-max",
        "10m",
    ]));
    let admin_stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = listener.local_addr().unwrap();
    let router = admin::router(
        client.registry.clone(),
        Default::default(),
        Default::default(),
    );
    tokio::spawn(admin::serve(listener, router, admin_stop.clone()));

    let prom = Prometheus::start(&format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: client\n    static_configs:\n      - targets: ['{admin_addr}']\n        labels:\n          namespace: dst-load-test\n"
    ))
    .await;
    eventually("initial sets", Duration::from_secs(30), || {
        client.sets(FOO).len() == 20 && client.sets(FOO).iter().all(|s| s.len() == 1)
    })
    .await;
    tokio::spawn(Box::new(MockFeed::new(&mock.handle)).follow(
        client.fleet.clone(),
        tokio_util::sync::CancellationToken::new(),
    ));

    // Prometheus sees the client before the changes, so that its buckets
    // grow while it watches (the timeline's latencies come from that).
    eventually_async(
        "Prometheus scraped the client",
        Duration::from_secs(60),
        || async {
            prom.sum("destination_client_streams_active")
                .await
                .is_some()
        },
    )
    .await;
    // Changes spread over a few scrapes, so series appear mid-window.
    for i in 2..=8u8 {
        mock.handle
            .patch(&foo, &addrs(&[&format!("10.0.0.{i}:8080")]), &[]);
        mock.handle
            .patch(&bar, &addrs(&[&format!("10.0.1.{i}:8080")]), &[]);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let converged = |c: &RunningClient| {
        [FOO, BAR]
            .iter()
            .all(|s| c.sets(s).iter().all(|set| set.len() == 8))
    };
    eventually("every stream converged", Duration::from_secs(30), || {
        converged(&client)
    })
    .await;
    let fleet = client.fleet.clone();
    eventually("no stream pending", Duration::from_secs(30), || {
        fleet.services().iter().all(|s| s.truth.pending() == 0)
    })
    .await;

    // The client's own numbers, then wait until Prometheus has scraped them.
    let streams: u64 = fleet.services().iter().map(|s| s.len() as u64).sum();
    assert_eq!(streams, 60, "20 streams for each of 3 services");
    let text = scrape(&client.registry);
    let updates: f64 = ["foo", "bar"]
        .iter()
        .flat_map(|svc| {
            let service = if *svc == "foo" { FOO } else { BAR };
            ["add", "remove", "no_endpoints"].map(|kind| {
                sample(
                    &text,
                    "destination_client_updates_received_total",
                    &[("service", service), ("kind", kind)],
                )
                .unwrap_or(0.0)
            })
        })
        .sum();
    let errors = sample(
        &text,
        "destination_client_connection_errors_total",
        &[("reason", "NotFound")],
    )
    .expect("NotFound errors counted");
    assert_eq!(
        errors, 20.0,
        "one NotFound per stream of the unknown service"
    );
    let exact: Vec<(&str, Percentiles)> = {
        use dst_load_controller::client::truth::Kind;
        let l = &client.metrics.latencies;
        vec![
            ("update_latency", l.percentiles(Kind::Update)),
            ("convergence_latency", l.percentiles(Kind::Convergence)),
            ("fanout_completion", l.percentiles(Kind::Fanout)),
        ]
    };
    eventually_async(
        "Prometheus scraped the final counts",
        Duration::from_secs(60),
        || async {
            prom.sum("destination_client_updates_received_total").await == Some(updates)
                && prom
                    .sum("destination_client_update_latency_seconds_count")
                    .await
                    == Some(exact[0].1.count as f64)
                && prom
                    .sum("destination_client_fanout_completion_seconds_count")
                    .await
                    == Some(exact[2].1.count as f64)
        },
    )
    .await;

    // Gates that hold exit 0, and the report carries the same numbers.
    let html = std::env::temp_dir().join(format!("dst-report-{}.html", std::process::id()));
    let (out, json) = report(&[
        "--prometheus",
        &prom.url,
        "--since",
        "10m",
        "--selector",
        "namespace=\"dst-load-test\"",
        "--html",
        html.to_str().unwrap(),
        "--slo",
        "errors==20",
        "--slo",
        "stale_streams==0",
        "--slo",
        "unconverged_streams==0",
        "--slo",
        "convergence_latency.p99<1s",
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json["errors"], 20, "{json:#}");
    assert_eq!(json["updates_received"].as_f64(), Some(updates), "{json:#}");
    // Open at the end: the unknown service's streams wait out their backoff.
    assert_eq!(json["streams"], 40, "{json:#}");
    assert_eq!(json["streams_created"], 60, "{json:#}");
    assert_eq!(json["streams_reset"], 20, "{json:#}");
    assert_eq!(json["stale_streams"], 0);
    assert_eq!(json["streams_unconverged"], 0);
    // With --html, the timeline comes from Prometheus's range queries,
    // one point a second, ending with the counts above.
    let timeline = json["timeline"].as_array().expect("a timeline");
    let last = timeline.last().expect("at least one point");
    assert_eq!(last["streams_active"], 40, "{timeline:?}");
    assert_eq!(last["errors"], 20, "{timeline:?}");
    assert_eq!(last["updates"].as_f64(), Some(updates), "{timeline:?}");
    assert!(
        timeline.windows(2).all(|w| (w[1]["at"].as_f64().unwrap()
            - w[0]["at"].as_f64().unwrap()
            - 1.0)
            .abs()
            < 1e-3),
        "{timeline:?}"
    );
    // Each point carries the update latency over the trailing window, from
    // the buckets: upper bounds, never below the mock's least delay (5 ms)
    // nor above the whole window's max.
    let windows: Vec<&serde_json::Value> = timeline
        .iter()
        .filter_map(|p| p.get("update_latency"))
        .collect();
    assert!(!windows.is_empty(), "{timeline:?}");
    let max = json["update_latency"]["max"].as_f64().unwrap();
    for w in &windows {
        let (p50, p95, p99) = (
            w["p50"].as_f64().unwrap(),
            w["p95"].as_f64().unwrap(),
            w["p99"].as_f64().unwrap(),
        );
        assert!(
            0.005 <= p50 && p50 <= p95 && p95 <= p99 && p99 <= max,
            "{w} against max {max}"
        );
    }
    let page = std::fs::read_to_string(&html).unwrap();
    // Latency over time, three latency distributions (from percentiles),
    // streams, errors and resets; stale streams stayed at zero.
    assert_eq!(page.matches("<svg").count(), 1 + 3 + 3, "{page}");
    assert!(page.contains("clients: update latency each second"));
    assert!(page.contains("stale streams: 0 throughout"));
    assert!(page.contains("errors==20"));
    std::fs::remove_file(&html).unwrap();
    for (name, p) in &exact {
        assert!(p.count > 0, "{name}: no samples in the client");
        let r = &json[name];
        assert_eq!(r["count"].as_u64(), Some(p.count), "{name}: {json:#}");
        for (stat, v) in [
            ("p50", p.p50),
            ("p95", p.p95),
            ("p99", p.p99),
            ("max", p.max),
        ] {
            assert_bucket_bound(name, stat, r[stat].as_f64().unwrap(), v);
        }
    }
    assert!(
        json["slos"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["pass"] == true),
        "{json:#}"
    );

    // A gate that fails exits 3 and says why.
    let (out, json) = report(&[
        "--prometheus",
        &prom.url,
        "--since",
        "10m",
        "--slo",
        "errors==0",
        "--slo",
        "update_latency.max<1ms",
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("SLO FAIL errors==0 (measured 20)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("SLO FAIL update_latency.max<1ms"),
        "{stdout}"
    );
    assert_eq!(json["slos"][0]["pass"], false);

    // A selector that matches no client fails the run instead of passing it.
    let (out, _) = report(&[
        "--prometheus",
        &prom.url,
        "--selector",
        "namespace=\"elsewhere\"",
        "--slo",
        "errors==0",
    ])
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no destination_client_* series match {namespace=\"elsewhere\"}"),
        "{stderr}"
    );

    drop(prom);
    admin_stop.cancel();
    client.finish().await;
    mock.stop().await;
}
