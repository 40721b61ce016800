//! Every metric the Grafana dashboards query is one our binaries export (in
//! a real scrape of their registries, each family given a sample through the
//! code paths that produce it) or one on the documented list of Linkerd and
//! Kubernetes metrics in dashboards/external-metrics.txt.

use crate::support;

use std::{
    collections::BTreeSet,
    time::{Duration, SystemTime},
};

use dst_load_controller::{
    churn::{metrics::Metrics as ChurnMetrics, objects::Pattern},
    client::ground_truth::GroundTruth,
    harness::mock_feed::MockFeed,
    kube_api::{Caller, Op},
    mock::server::Behavior,
};
use prometheus_client::registry::Registry;
use support::*;
use tokio_util::sync::CancellationToken;

const FOO: &str = "foo.ns.svc.cluster.local:8080";

/// The client's and the mock's registries after a run that exercises every
/// family: changes (latencies), a scale seen through a watch (both legs),
/// withheld removals (staleness), an unknown service (errors, resets), a
/// malformed one (final failures). Only FOO's streams reach the mock, so
/// "every 2nd stream opened" withholds removals from exactly one of them.
async fn client_and_mock_scrape() -> String {
    let mock = Mock::start(Behavior {
        withhold_removals_every: Some(2),
        ..Default::default()
    })
    .await;
    let svc_foo = FOO.parse().unwrap();
    mock.handle
        .set(&svc_foo, addrs(&["10.0.0.1:8080", "10.0.0.2:8080"]));
    let dst = mock.addr.to_string();
    let client = start_client(client_args(&[
        "--destination-addr",
        &dst,
        "--target-services",
        &format!("{FOO},gone.ns.svc.cluster.local:80,foo.example.com:80"),
        "--streams-per-service",
        "2",
        "--initial-timeout",
        "100ms",
        "--staleness-grace",
        "100ms",
    ]));
    eventually("initial sets", Duration::from_secs(20), || {
        client.sets(FOO).iter().filter(|s| s.len() == 2).count() == 2
    })
    .await;
    let feed = tokio_util::sync::CancellationToken::new();
    let following = tokio::spawn(
        Box::new(MockFeed::new(&mock.handle)).follow(client.fleet.clone(), feed.clone()),
    );
    mock.handle.patch(&svc_foo, &addrs(&["10.0.0.3:8080"]), &[]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    eventually("the addition everywhere", Duration::from_secs(20), || {
        client.sets(FOO).iter().all(|s| s.len() == 3)
    })
    .await;
    // A change as the Kubernetes watch reports it (scaled a moment ago, its
    // slice seen now), before the destination serves it: this epoch is the
    // one the streams converge to, so both legs are recorded.
    // The feed stops meanwhile: its own epoch for the removal could replace
    // this one before the streams converge (a race the mock's immediate
    // hand-off made visible under load), leaving no leg recorded.
    feed.cancel();
    following.await.unwrap();
    let scaled = SystemTime::now() - Duration::from_millis(30);
    let svc = client.fleet.get(FOO).unwrap();
    svc.set_truth_seen(
        addrs(&["10.0.0.2:8080", "10.0.0.3:8080"]),
        scaled,
        Some(SystemTime::now()),
    );
    mock.handle.patch(&svc_foo, &[], &addrs(&["10.0.0.1:8080"]));
    eventually(
        "the destination leg recorded",
        Duration::from_secs(30),
        || {
            names(&scrape(&client.registry))
                .contains("destination_client_destination_leg_seconds_count")
        },
    )
    .await;
    // The feed again, from the mock's sets now.
    tokio::spawn(Box::new(MockFeed::new(&mock.handle)).follow(
        client.fleet.clone(),
        tokio_util::sync::CancellationToken::new(),
    ));
    // The streams denied the removal turn stale; giving the address back
    // makes them agree again, which records how long they were stale.
    eventually("stale streams", Duration::from_secs(30), || {
        sample(
            &scrape(&client.registry),
            "destination_client_stale_streams",
            &[("service", FOO)],
        )
        .is_some_and(|n| n > 0.0)
    })
    .await;
    mock.handle.patch(&svc_foo, &addrs(&["10.0.0.1:8080"]), &[]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = scrape(&client.registry);
        let want = [
            "destination_client_kubernetes_leg_seconds_count",
            "destination_client_destination_leg_seconds_count",
            "destination_client_stale_streams",
            "destination_client_streams_failed_total",
            "destination_client_connection_errors_total",
            "destination_client_streams_reset_total",
            "destination_client_staleness_seconds_count",
        ];
        let have = names(&text);
        if want.iter().all(|w| have.contains(*w)) {
            break text;
        }
        let missing: Vec<_> = want.iter().filter(|w| !have.contains(**w)).collect();
        assert!(
            tokio::time::Instant::now() < deadline,
            "families never sampled: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mock_text = scrape(&mock.registry);
    client.finish().await;
    mock.stop().await;
    text + &mock_text
}

/// churn's registry with every family sampled: a scale, and an API call
/// that conflicts once and then succeeds (errors, retries, durations).
async fn churn_scrape() -> String {
    let mut registry = Registry::default();
    let m = ChurnMetrics::register(&mut registry);
    let labels = dst_load_controller::churn::metrics::ServiceLabels::new(Pattern::Oscillate, "svc");
    m.scale_events.get_or_create(&labels).inc();
    m.changed(
        Pattern::Oscillate,
        dst_load_controller::churn::objects::ChangeKind::Scale,
    );
    m.current_replicas.get_or_create(&labels).set(3);
    let caller = Caller::new(
        dst_load_controller::kube_api::KubeSettings {
            qps: 100.0,
            burst: 10,
            ..Default::default()
        }
        .limiter(),
        m.api.clone(),
        CancellationToken::new(),
    );
    let mut first = true;
    caller
        .call(
            Op {
                verb: "patch",
                resource: "deployments",
                namespace: "ns".into(),
                name: Some("svc".into()),
            },
            || {
                let conflict = std::mem::replace(&mut first, false);
                async move {
                    if conflict {
                        Err(kube::Error::Api(Box::new(kube::core::Status {
                            code: 409,
                            reason: "Conflict".into(),
                            message: "the object has been modified".into(),
                            ..Default::default()
                        })))
                    } else {
                        Ok(())
                    }
                }
            },
        )
        .await
        .unwrap();
    scrape(&registry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_metric_is_exported_or_documented() {
    let ours = names(&(client_and_mock_scrape().await + &churn_scrape().await));
    let external: BTreeSet<String> = external_metrics().into_keys().collect();
    let mut checked = 0;
    let dashboards = dashboard_queries();
    assert!(dashboards.len() >= 3, "dashboards: {dashboards:?}");
    let mut unknown = Vec::new();
    let mut used_external = BTreeSet::new();
    for (path, all) in &dashboards {
        assert!(!all.is_empty(), "{}: no queries", path.display());
        for expr in all {
            let metrics = promql_metrics(expr);
            assert!(
                !metrics.is_empty(),
                "{}: no metric in `{expr}`",
                path.display()
            );
            for name in metrics {
                checked += 1;
                let ours_prefix = ["destination_client_", "churn_", "mock_dst_"]
                    .iter()
                    .any(|p| name.starts_with(p));
                if ours.contains(&name) {
                    continue;
                }
                if !ours_prefix && external.contains(&name) {
                    used_external.insert(name);
                    continue;
                }
                unknown.push(format!("{}: {name} in `{expr}`", path.display()));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics neither exported nor documented:\n{}",
        unknown.join("\n")
    );
    // The documented list holds nothing the dashboards do not use.
    let unused: Vec<_> = external.difference(&used_external).collect();
    assert!(
        unused.is_empty(),
        "external-metrics.txt lists unused metrics: {unused:?}"
    );
    assert!(checked > 40, "only {checked} metric references checked");
}

#[test]
fn promql_names_are_found_and_functions_and_labels_are_not() {
    let m = promql_metrics(
        r#"histogram_quantile(0.95, sum by (le, operation) (rate(churn_api_request_duration_seconds_bucket{namespace="$namespace",x=~"a|b"}[$__rate_interval]))) / on(pod) group_left go_goroutines * 1e9"#,
    );
    assert_eq!(
        m.into_iter().collect::<Vec<_>>(),
        ["churn_api_request_duration_seconds_bucket", "go_goroutines"]
    );
}

/// No panel mixes units: a panel's queries are all latencies
/// (`histogram_quantile`, unit `s`), all per-second rates (unit `ops` or
/// cores), or all levels (counts, bytes); heatmaps draw bucket counts.
#[test]
fn no_panel_mixes_units() {
    let mut mixed = Vec::new();
    for path in [
        "dst-load-client.json",
        "dst-load-churn.json",
        "dst-load-control-plane.json",
    ] {
        let file = support::repo().join("dashboards").join(path);
        let d: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        for p in d["panels"].as_array().unwrap() {
            if p["type"] == "heatmap" {
                continue;
            }
            let kinds: BTreeSet<&str> = p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    let e = t["expr"].as_str().unwrap();
                    if e.contains("histogram_quantile") {
                        "latency"
                    } else if e.contains("rate(") || e.contains("increase(") {
                        "per-second"
                    } else {
                        "level"
                    }
                })
                .collect();
            let unit = p["fieldConfig"]["defaults"]["unit"].as_str().unwrap_or("");
            let fits = match unit {
                "s" => kinds == BTreeSet::from(["latency"]),
                "ops" => kinds == BTreeSet::from(["per-second"]),
                _ => kinds.len() == 1,
            };
            if !fits {
                mixed.push(format!("{path}: {} ({unit}: {kinds:?})", p["title"]));
            }
        }
    }
    assert!(
        mixed.is_empty(),
        "panels mixing units:\n{}",
        mixed.join("\n")
    );
}
