//! The integration tests that need no cluster, in one binary: our binary,
//! our mock and real Prometheus-format scrapes, all on loopback. (The tests
//! against the local control plane are `e2e_cluster.rs` and
//! `report_prometheus.rs`, run by `make e2e`.)

#[path = "../support/mod.rs"]
mod support;

mod admin_control;
mod cli;
mod client_mock;
mod client_profiles;
mod compare;
mod dashboards;
mod faults;
mod kube_burner;
mod latency_oracle;
mod limits;
mod linkerd_versions;
mod mock_connections;
mod mock_dst;
mod mock_dst_cli;
mod mock_identity;
mod mock_policy;
mod mock_profiles;
mod prometheus_answers;
mod run_scenario;
mod scenario_file;
mod silent_servers;
mod staleness;
