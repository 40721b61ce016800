//! Load tests for Linkerd's Destination service: endpoint churn in a
//! Kubernetes cluster, many watching clients, and a mock Destination server.
#![forbid(unsafe_code)]

pub mod admin;
pub mod churn;
pub mod cleanup;
pub mod client;
pub mod cmd;
pub mod crds;
pub mod gates;
pub mod harness;
pub mod html;
pub mod kube_api;
pub mod kube_burner;
pub mod labels;
pub mod latency;
pub mod lean;
pub mod limits;
pub mod logging;
pub mod measurements;
pub mod mock;
pub mod net;
pub mod red_line;
pub mod report;
pub mod runtime;
pub mod scenario;
pub mod schedule;
pub mod seed;
pub mod shutdown;
pub mod slices;
pub mod slo;
pub mod target;
pub mod verdicts;
pub mod watch;

/// This build's version: the crate's, and its git commit when built from a
/// checkout (`0.1.0 (1a2b3c4d5e6f)`), as `--version` prints it and every
/// report records it.
pub const VERSION: &str = env!("DST_VERSION");
