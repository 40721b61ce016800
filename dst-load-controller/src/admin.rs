//! The admin HTTP server every subcommand runs: `/metrics` (OpenMetrics text),
//! `/live`, `/ready`, and `POST /shutdown` (the same drain as SIGTERM) and
//! `POST /abort` (exit at once), which answer loopback peers only unless
//! `--admin-allow-remote-shutdown` is given.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Router,
    extract::{ConnectInfo, State},
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post},
};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Whether a component is ready; set once its initial work is done.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the component ready (or not).
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// Whether the component is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// What `/shutdown` and `/abort` act on (default: a token nothing else
/// watches, loopback peers only).
#[derive(Clone, Debug, Default)]
pub struct Control {
    /// Cancelled by `POST /shutdown`: the process's root, as SIGTERM cancels it.
    pub shutdown: CancellationToken,
    /// Whether non-loopback peers may call them.
    pub allow_remote: bool,
}

#[derive(Clone)]
struct AdminState {
    registry: Arc<Registry>,
    ready: Readiness,
    control: Control,
}

/// The admin routes. Callers may merge more routes (the mock server's control
/// API) before serving. Serve them with [`serve`], which gives the handlers
/// each peer's address.
pub fn router(registry: Arc<Registry>, ready: Readiness, control: Control) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/live", get(|| async { "live\n" }))
        .route("/ready", get(readiness))
        .route("/shutdown", post(shutdown))
        .route("/abort", post(abort))
        .with_state(AdminState {
            registry,
            ready,
            control,
        })
}

/// Whether `peer` may shut the process down.
fn allowed(peer: std::net::SocketAddr, control: &Control) -> bool {
    control.allow_remote || peer.ip().is_loopback() || peer.ip().to_canonical().is_loopback()
}

const FORBIDDEN: &str = "only loopback peers may shut this process down; start it with --admin-allow-remote-shutdown to allow others\n";

async fn shutdown(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
) -> impl IntoResponse {
    if !allowed(peer, &state.control) {
        return (StatusCode::FORBIDDEN, FORBIDDEN);
    }
    tracing::info!(%peer, "shutdown requested on the admin server; draining");
    state.control.shutdown.cancel();
    (StatusCode::ACCEPTED, "draining\n")
}

async fn abort(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
) -> impl IntoResponse {
    if !allowed(peer, &state.control) {
        return (StatusCode::FORBIDDEN, FORBIDDEN);
    }
    tracing::warn!(%peer, "abort requested on the admin server; exiting");
    // Answer first, then exit as a second signal does.
    tokio::spawn(async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        std::process::exit(crate::shutdown::ABORT_EXIT_CODE);
    });
    (StatusCode::ACCEPTED, "aborting\n")
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to encode metrics: {error}\n"),
        )
            .into_response(),
    }
}

async fn readiness(State(state): State<AdminState>) -> impl IntoResponse {
    if state.ready.get() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// An address a server could not listen on: a usage error (exit 2), since
/// the fix is another value of the flag named.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind {flag} {addr}: {why}; pick a free address with {flag}")]
pub struct BindError {
    /// The flag that gave the address.
    pub flag: &'static str,
    /// The address.
    pub addr: std::net::SocketAddr,
    /// Why (shown in the message, so not also its source).
    pub why: std::io::Error,
}

/// Binds the admin address, naming the flag on failure.
pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|why| BindError {
        flag: "--admin-addr",
        addr,
        why,
    })
}

/// Serves `router` on an already-bound listener until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http::Request;
    use tower::ServiceExt;

    fn app(allow_remote: bool) -> (Router, CancellationToken) {
        let shutdown = CancellationToken::new();
        let control = Control {
            shutdown: shutdown.clone(),
            allow_remote,
        };
        (
            router(Arc::new(Registry::default()), Readiness::default(), control),
            shutdown,
        )
    }

    async fn call(app: &Router, method: &str, path: &str, peer: &str) -> StatusCode {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(peer.parse::<std::net::SocketAddr>().unwrap()));
        app.clone().oneshot(req).await.unwrap().status()
    }

    #[tokio::test]
    async fn shutdown_answers_loopback_peers_only_and_post_only() {
        let (app, shutdown) = app(false);
        assert_eq!(
            call(&app, "GET", "/shutdown", "127.0.0.1:5").await,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            call(&app, "GET", "/abort", "127.0.0.1:5").await,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            call(&app, "POST", "/shutdown", "10.1.2.3:5").await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            call(&app, "POST", "/abort", "10.1.2.3:5").await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            call(&app, "POST", "/shutdown", "[2001:db8::1]:5").await,
            StatusCode::FORBIDDEN
        );
        assert!(!shutdown.is_cancelled(), "refused calls change nothing");
        assert_eq!(
            call(&app, "POST", "/shutdown", "[::1]:5").await,
            StatusCode::ACCEPTED
        );
        assert!(shutdown.is_cancelled());
    }

    #[tokio::test]
    async fn remote_shutdown_when_allowed() {
        let (app, shutdown) = app(true);
        assert_eq!(
            call(&app, "POST", "/shutdown", "10.1.2.3:5").await,
            StatusCode::ACCEPTED
        );
        assert!(shutdown.is_cancelled());
    }

    #[test]
    fn ipv4_mapped_loopback_is_loopback() {
        let c = Control {
            shutdown: CancellationToken::new(),
            allow_remote: false,
        };
        assert!(allowed("[::ffff:127.0.0.1]:1".parse().unwrap(), &c));
        assert!(!allowed("[::ffff:10.0.0.1]:1".parse().unwrap(), &c));
    }
}
