//! Property tests of every parser of outside input: scenario files, reports,
//! the mock's DSTS list and the brace patterns of `--target-services`. Each
//! takes arbitrary (and near-valid) text without panicking, hanging or
//! allocating without bound, and what it accepts round-trips. (The client's
//! gRPC framing has its own in `client::wire`.) Cases per property:
//! `PROPTEST_CASES` (default 256 here, bounded for CI; raise it to search
//! longer).

use std::str::FromStr;

use dst_load_controller::{cmd::compare::Report, mock::dsts::Dsts, scenario, target::Targets};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256),
        // No files of failures in the tree: a failure prints its input.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text that is often almost a scenario file: its keys and values, in
/// YAML's shapes, with stray characters.
fn scenario_like() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "duration",
        "settle",
        "seed",
        "services",
        "stable",
        "oscillate",
        "restart",
        "ephemeral",
        "statefulset",
        "count",
        "endpoints",
        "min-endpoints",
        "max-endpoints",
        "clients",
        "streams-per-service",
        "connections",
        "faults",
        "stuck-percent",
        "schedule",
        "min-hold",
        "max-hold",
        "jitter",
        "slos",
        "profiles",
        "routes",
        "change-interval",
        "name",
    ]);
    let value = prop_oneof![
        Just("10s".to_string()),
        Just("0s".to_string()),
        Just("-1".to_string()),
        Just("18446744073709551616".to_string()),
        Just("[1, 2]".to_string()),
        Just("{count: 1, endpoints: 2}".to_string()),
        Just("\"stale_streams==0\"".to_string()),
        any::<u32>().prop_map(|n| n.to_string()),
        "[ -~]{0,12}",
    ];
    prop::collection::vec((0usize..3, key, value), 0..16).prop_map(|lines| {
        lines
            .into_iter()
            .map(|(indent, k, v)| format!("{}{k}: {v}\n", "  ".repeat(indent)))
            .collect()
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn scenario_files_never_panic(text in prop_oneof!["\\PC{0,200}", scenario_like()]) {
        if let Ok(spec) = scenario::parse("fuzz.yaml", &text) {
            let _ = spec.validate();
            let _ = spec.streams("ns");
        }
    }

    #[test]
    fn reports_never_panic(text in prop_oneof![
        "\\PC{0,200}",
        // A report's keys with values of every JSON type.
        (prop::sample::select(vec!["update_latency", "convergence_latency", "staleness", "by_class", "timeline", "seed"]),
         prop_oneof![Just("null".to_string()), Just("-1".to_string()), Just("1e308".to_string()),
                     Just("\"x\"".to_string()), Just("[]".to_string()),
                     Just("{\"count\": 3, \"p50\": 0.5, \"histogram\": \"HISTfQ==\"}".to_string()),
                     any::<f64>().prop_map(|f| f.to_string())])
            .prop_map(|(k, v)| format!("{{\"streams\": 1, \"errors\": 0, \"update_latency\": {{}}, \"{k}\": {v}}}")),
    ]) {
        let _ = Report::parse("fuzz.json", &text);
    }

    #[test]
    fn dsts_lists_never_panic(text in "[a-z0-9.:=,;/\\[\\] -]{0,80}") {
        let _ = Dsts::from_str(&text);
    }

    #[test]
    fn dsts_lists_round_trip(
        services in prop::collection::btree_set("[a-z][a-z0-9]{0,8}", 1..5),
        port in 1u16..,
        last_octets in prop::collection::vec(1u8..255, 0..4),
    ) {
        let endpoints: Vec<String> = last_octets.iter().map(|o| format!("10.0.0.{o}:{port}")).collect();
        let text: Vec<String> = services
            .iter()
            .map(|s| format!("{s}.ns.svc.cluster.local:{port}={}", endpoints.join(",")))
            .collect();
        let dsts = Dsts::from_str(&text.join(";")).unwrap();
        prop_assert_eq!(dsts.0.len(), services.len());
        for (d, s) in dsts.0.iter().zip(&services) {
            prop_assert_eq!(d.authority.to_string(), format!("{s}.ns.svc.cluster.local:{port}"));
            prop_assert_eq!(d.endpoints.len(), endpoints.len());
        }
    }

    #[test]
    fn brace_patterns_never_panic(text in "[a-z0-9.:{},-]{0,60}") {
        let _ = Targets::from_str(&text);
    }

    #[test]
    fn brace_ranges_expand_to_every_name(lo in 0u32..50, len in 0u32..50, port in 1u16..) {
        let hi = lo + len;
        let t = Targets::from_str(&format!("web{{{lo}..{hi}}}.ns.svc.cluster.local:{port}")).unwrap();
        let names: Vec<String> = t.0.iter().map(ToString::to_string).collect();
        let expected: Vec<String> = (lo..=hi).map(|i| format!("web{i}.ns.svc.cluster.local:{port}")).collect();
        prop_assert_eq!(names, expected);
    }
}
