//! Helpers shared by the integration tests: a mock server on loopback, a
//! client built from real flags, and metric scraping.
#![allow(dead_code)]

use std::{net::SocketAddr, sync::Arc, time::Duration};

use clap::Parser;
use dst_load_controller::{
    client::{self, Client, Fleet},
    mock::{Handle, MockDestination, server::Behavior},
};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// A mock Destination server on 127.0.0.1.
pub struct Mock {
    pub addr: SocketAddr,
    pub handle: Handle,
    pub registry: Arc<Registry>,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl Mock {
    pub async fn start(behavior: Behavior) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, behavior)
    }

    pub fn start_on(listener: tokio::net::TcpListener, behavior: Behavior) -> Self {
        let addr = listener.local_addr().unwrap();
        let mut registry = Registry::default();
        let mock = MockDestination::new(behavior, &mut registry);
        let handle = mock.handle();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { mock.serve(listener, shutdown).await.unwrap() }
        });
        Self {
            addr,
            handle,
            registry: Arc::new(registry),
            shutdown,
            task,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

#[derive(Parser)]
struct ClientCli {
    #[command(flatten)]
    args: client::Args,
}

/// A client parsed from command-line flags, exactly as a user types them.
pub fn client_args(flags: &[&str]) -> client::Args {
    let args = ClientCli::try_parse_from(std::iter::once("client").chain(flags.iter().copied()))
        .unwrap_or_else(|e| panic!("{e}"))
        .args;
    args.validate().unwrap();
    args
}

/// A running client.
pub struct RunningClient {
    pub fleet: Arc<Fleet>,
    pub registry: Arc<Registry>,
    pub metrics: client::metrics::Metrics,
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<client::Summary>>,
}

pub fn start_client(args: client::Args) -> RunningClient {
    let mut registry = Registry::default();
    let c = Client::new(args, &mut registry).unwrap();
    let fleet = c.fleet();
    let metrics = c.metrics().clone();
    let stop = CancellationToken::new();
    let task = tokio::spawn(c.run(stop.clone()));
    RunningClient {
        fleet,
        registry: Arc::new(registry),
        metrics,
        stop,
        task,
    }
}

impl RunningClient {
    pub async fn finish(self) -> client::Summary {
        self.stop.cancel();
        self.task.await.unwrap().unwrap()
    }

    /// Every stream's set for `service`, sorted; empty until the service's
    /// streams are started.
    pub fn sets(&self, service: &str) -> Vec<Vec<SocketAddr>> {
        let Some(svc) = self
            .fleet
            .services()
            .into_iter()
            .find(|s| s.service == service)
        else {
            return Vec::new();
        };
        svc.slots().iter().map(|s| s.addrs()).collect()
    }
}

/// A port free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// [`eventually`] for an async check, polled every 250 ms for up to `timeout`.
pub async fn eventually_async<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Polls `f` until it is true or `timeout` passes (then panics with `what`).
pub async fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !f() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Renders a registry as OpenMetrics text.
pub fn scrape(registry: &Registry) -> String {
    let mut s = String::new();
    prometheus_client::encoding::text::encode(&mut s, registry).unwrap();
    s
}

/// The value of the sample `name{labels}` in `text`, where every given
/// `k="v"` must appear among the sample's labels. None when absent.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, r)) => (m, r.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            all.then(|| value.parse().ok()).flatten()
        })
}

pub fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    let mut v: Vec<SocketAddr> = list.iter().map(|s| s.parse().unwrap()).collect();
    v.sort();
    v
}
