//! The mock's HTTP control API, served on its admin port:
//!
//! - `GET /api/destinations`: every destination and its endpoints;
//! - `GET /api/destinations/{authority}`;
//! - `PUT /api/destinations/{authority}` `{"endpoints": ["ip:port", ...]}`: replace;
//! - `PATCH /api/destinations/{authority}` `{"add": [...], "remove": [...]}`;
//! - `DELETE /api/destinations/{authority}`;
//! - `GET /api/profiles`: every service's profile set;
//! - `GET`, `PUT`, `DELETE /api/profiles/{service}` (`svc.ns.svc.domain`, no
//!   port; the body a [`ProfileSpec`]: `{"routes": [{"name": "get-users",
//!   "method": "GET", "path-regex": "/users/[^/]*"}], "retry-budget": ...}`):
//!   its `GetProfile` streams get each change at once.
//! - `GET /api/policies`: every service's policy;
//! - `GET`, `PUT`, `DELETE /api/policies/{authority}` (the body a
//!   [`ServicePolicy`]: `{"addresses": ["10.96.0.10:80"], "protocol":
//!   "detect"}`, protocol one of `detect`, `http1`, `http2`, `opaque`): the
//!   addresses that stand for the service, as its ClusterIP does, and how
//!   its traffic is read; its outbound policy watches get each change at
//!   once. An address another service holds is refused (409).
//! - `GET`, `PUT /api/inbound` (the body an [`InboundPolicies`]:
//!   `{"default": "all-unauthenticated", "ports": {"9090": "deny"}}`): who
//!   may connect to the proxies' own ports, by Linkerd's default policy
//!   names; `PUT` replaces both;
//! - `GET`, `PUT`, `DELETE /api/inbound/{port}` (the body `{"policy":
//!   "deny"}`): one port's own policy; `DELETE` returns it to the default.
//!   Open inbound watches of a port get its every change at once.
//!
//! Every change of a destination answers with what changed and when (RFC
//! 3339, nanoseconds); a `PUT` of a profile or a policy answers with what
//! is set now.
//!
//! Changes (`PUT`, `PATCH`, `DELETE`, `POST`) are taken from loopback peers
//! only, unless the mock runs with `--allow-remote-control`: a peer that
//! can change destinations can point every proxy that uses the mock at its
//! own address. A body with an unknown key, an authority `Get` would refuse
//! (an IP address, no `.svc.`), a `PATCH` of a destination that does not
//! exist and sizes past [`crate::limits`] are refused (422, 404).

use std::net::SocketAddr;

use axum::{
    Json, Router,
    extract::{ConnectInfo, Path, Request, State},
    http::{Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::{Deserialize, Serialize};

use super::{
    handle::Handle,
    inbound::{InboundPolicies, InboundPolicy, parse_port},
    policy::{PolicyError, ServicePolicy},
    profiles::ProfileSpec,
    store::Change,
};
use crate::target::Authority;

/// A destination as the API shows it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DestinationView {
    /// `name.ns.svc.cluster.local:port`.
    pub authority: String,
    /// Its endpoints, sorted.
    pub endpoints: Vec<SocketAddr>,
}

/// `PUT` body.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetBody {
    /// The new endpoint set.
    pub endpoints: Vec<SocketAddr>,
}

/// `PATCH` body.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchBody {
    /// Endpoints to add.
    #[serde(default)]
    pub add: Vec<SocketAddr>,
    /// Endpoints to remove.
    #[serde(default)]
    pub remove: Vec<SocketAddr>,
}

/// What a change did.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChangeView {
    /// Addresses added.
    pub added: Vec<SocketAddr>,
    /// Addresses removed.
    pub removed: Vec<SocketAddr>,
    /// When (RFC 3339 with nanoseconds).
    pub at: String,
}

impl From<&Change> for ChangeView {
    fn from(c: &Change) -> Self {
        let at = jiff::Timestamp::try_from(c.at)
            .map(|t| t.to_string())
            .unwrap_or_default();
        Self {
            added: c.added.clone(),
            removed: c.removed.clone(),
            at,
        }
    }
}

/// The control routes over `handle`; changes from peers other than loopback
/// ones only when `allow_remote`.
pub fn router(handle: Handle, allow_remote: bool) -> Router {
    Router::new()
        .route("/api/destinations", get(list))
        .route("/api/delivery", get(delivery))
        .route(
            "/api/destinations/{authority}",
            get(show).put(set).patch(patch).delete(delete),
        )
        .route("/api/profiles", get(list_profiles))
        .route(
            "/api/profiles/{service}",
            get(show_profile).put(set_profile).delete(delete_profile),
        )
        .route("/api/policies", get(list_policies))
        .route(
            "/api/policies/{authority}",
            get(show_policy).put(set_policy).delete(delete_policy),
        )
        .route("/api/inbound", get(show_inbound).put(set_inbound))
        .route(
            "/api/inbound/{port}",
            get(show_port).put(set_port).delete(clear_port),
        )
        .with_state(handle)
        .layer(axum::middleware::from_fn(
            move |peer: ConnectInfo<SocketAddr>, req: Request, next: Next| async move {
                let reads = matches!(*req.method(), Method::GET | Method::HEAD);
                let ip = peer.0.ip().to_canonical();
                if reads || allow_remote || ip.is_loopback() {
                    next.run(req).await
                } else {
                    (StatusCode::FORBIDDEN, REMOTE_CHANGE).into_response()
                }
            },
        ))
}

const REMOTE_CHANGE: &str = "only loopback peers may change the mock's destinations, profiles and policies (outbound and inbound); start mock-dst with --allow-remote-control to allow others\n";

/// 422 with `why`.
fn unprocessable(why: impl std::fmt::Display) -> Response {
    (StatusCode::UNPROCESSABLE_ENTITY, format!("{why}\n")).into_response()
}

/// Refuses an endpoint set past [`crate::limits::MAX_ENDPOINTS_PER_DESTINATION`].
fn check_size(a: &Authority, len: usize) -> Option<Response> {
    let max = crate::limits::MAX_ENDPOINTS_PER_DESTINATION as usize;
    (len > max).then(|| {
        unprocessable(format_args!(
            "{a} would have {len} endpoints: at most {max} (one update of them stays within gRPC's 4 MiB)"
        ))
    })
}

/// The mock's own record of every delivery: from a change to the update
/// handed to a stream's queue (percentiles in seconds, with the histogram).
async fn delivery(State(h): State<Handle>) -> Json<crate::latency::Percentiles> {
    Json(h.metrics().delivery_percentiles())
}

/// A destination's authority as `Get` would take it, or 422.
fn parse(authority: &str) -> Result<Authority, (StatusCode, String)> {
    super::server::service_authority(authority).map_err(|why| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "'{}' is not a destination: {why}; give <svc>.<ns>.svc.<cluster-domain>:<port>\n",
                super::codec::echoed(authority)
            ),
        )
    })
}

async fn list(State(h): State<Handle>) -> Json<Vec<DestinationView>> {
    Json(
        h.store
            .list()
            .into_iter()
            .map(|(a, endpoints)| DestinationView {
                authority: a.to_string(),
                endpoints,
            })
            .collect(),
    )
}

async fn show(State(h): State<Handle>, Path(authority): Path<String>) -> Response {
    let a = match parse(&authority) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    match h.store.get(&a) {
        Some(endpoints) => Json(DestinationView {
            authority: a.to_string(),
            endpoints,
        })
        .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!("destination {a} not found\n"),
        )
            .into_response(),
    }
}

async fn set(
    State(h): State<Handle>,
    Path(authority): Path<String>,
    Json(body): Json<SetBody>,
) -> Response {
    let a = match parse(&authority) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    if let Some(r) = check_size(&a, body.endpoints.len()) {
        return r;
    }
    let max = crate::limits::MAX_DESTINATIONS;
    if !h.store.exists(&a) && h.store.count() >= max {
        return unprocessable(format_args!(
            "the mock serves {max} destinations, its most: delete one first"
        ));
    }
    Json(ChangeView::from(&*h.set(&a, body.endpoints))).into_response()
}

async fn patch(
    State(h): State<Handle>,
    Path(authority): Path<String>,
    Json(body): Json<PatchBody>,
) -> Response {
    let a = match parse(&authority) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    // A patch changes a set; it does not make one (PUT does).
    let Some(now) = h.store.get(&a) else {
        return (
            StatusCode::NOT_FOUND,
            format!("destination {a} not found; PUT creates one\n"),
        )
            .into_response();
    };
    // The size the set would have: what it has, with the new additions,
    // without what the patch removes.
    let mut after: std::collections::HashSet<SocketAddr> = now.into_iter().collect();
    after.extend(&body.add);
    for r in &body.remove {
        after.remove(r);
    }
    if let Some(r) = check_size(&a, after.len()) {
        return r;
    }
    Json(ChangeView::from(&*h.patch(&a, &body.add, &body.remove))).into_response()
}

async fn delete(State(h): State<Handle>, Path(authority): Path<String>) -> Response {
    let a = match parse(&authority) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    match h.delete(&a) {
        Some(change) => Json(ChangeView::from(&*change)).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!("destination {a} not found\n"),
        )
            .into_response(),
    }
}

/// A service's profile as the API shows it.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ProfileView {
    /// `svc.ns.svc.domain`.
    pub service: String,
    /// Its profile.
    pub profile: ProfileSpec,
}

/// A profile is set by service name, every port at once (as a
/// ServiceProfile is named).
fn service_name(service: &str) -> Result<&str, (StatusCode, String)> {
    if !service.contains(':') && super::profiles::is_service_name(service) {
        Ok(service)
    } else {
        Err((
            StatusCode::BAD_REQUEST,
            format!(
                "'{service}' is not a service name: give <svc>.<ns>.svc.<cluster-domain>, without a port\n"
            ),
        ))
    }
}

async fn list_profiles(State(h): State<Handle>) -> Json<Vec<ProfileView>> {
    Json(
        h.profiles()
            .into_iter()
            .map(|(service, profile)| ProfileView { service, profile })
            .collect(),
    )
}

async fn show_profile(State(h): State<Handle>, Path(service): Path<String>) -> Response {
    let service = match service_name(&service) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    match h.profile(service) {
        Some(profile) => Json(ProfileView {
            service: service.to_string(),
            profile,
        })
        .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!("no profile set for {service}\n"),
        )
            .into_response(),
    }
}

async fn set_profile(
    State(h): State<Handle>,
    Path(service): Path<String>,
    Json(profile): Json<ProfileSpec>,
) -> Response {
    let service = match service_name(&service) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    if let Err(e) = profile.validate() {
        return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
    }
    h.set_profile(service, profile.clone());
    Json(ProfileView {
        service: service.to_string(),
        profile,
    })
    .into_response()
}

async fn delete_profile(State(h): State<Handle>, Path(service): Path<String>) -> Response {
    let service = match service_name(&service) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    if h.profile(service).is_none() {
        return (
            StatusCode::NOT_FOUND,
            format!("no profile set for {service}\n"),
        )
            .into_response();
    }
    h.delete_profile(service);
    StatusCode::NO_CONTENT.into_response()
}

/// A service's policy as the API shows it.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct PolicyView {
    /// `name.ns.svc.cluster.local:port`.
    pub authority: String,
    /// The addresses that stand for it.
    pub addresses: Vec<SocketAddr>,
    /// How its traffic is read.
    pub protocol: super::policy::AppProtocol,
}

impl PolicyView {
    fn new(authority: &Authority, policy: ServicePolicy) -> Self {
        Self {
            authority: authority.to_string(),
            addresses: policy.addresses.into_iter().collect(),
            protocol: policy.protocol,
        }
    }
}

async fn list_policies(State(h): State<Handle>) -> Json<Vec<PolicyView>> {
    Json(
        h.policies()
            .into_iter()
            .map(|(a, policy)| PolicyView::new(&a, policy))
            .collect(),
    )
}

fn no_policy(a: &Authority) -> Response {
    (StatusCode::NOT_FOUND, format!("no policy set for {a}\n")).into_response()
}

async fn show_policy(State(h): State<Handle>, Path(authority): Path<String>) -> Response {
    let a = match parse(&authority) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    match h.policy(&a) {
        Some(policy) => Json(PolicyView::new(&a, policy)).into_response(),
        None => no_policy(&a),
    }
}

async fn set_policy(
    State(h): State<Handle>,
    Path(authority): Path<String>,
    Json(policy): Json<ServicePolicy>,
) -> Response {
    let a = match parse(&authority) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    match h.set_policy(&a, policy.clone()) {
        Ok(()) => Json(PolicyView::new(&a, policy)).into_response(),
        Err(e @ PolicyError::AddressTaken { .. }) => {
            (StatusCode::CONFLICT, format!("{e}\n")).into_response()
        }
        Err(e) => unprocessable(e),
    }
}

async fn delete_policy(State(h): State<Handle>, Path(authority): Path<String>) -> Response {
    let a = match parse(&authority) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    if h.delete_policy(&a) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        no_policy(&a)
    }
}

/// One port's inbound policy as the API shows it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct InboundPortView {
    /// The port.
    pub port: u16,
    /// Its policy: its own, or else the default.
    pub policy: InboundPolicy,
    /// Whether the policy is the port's own.
    pub own: bool,
}

/// `PUT /api/inbound/{port}` body.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundPortBody {
    /// The port's own policy.
    pub policy: InboundPolicy,
}

/// A port of the path, or 422.
fn port(port: &str) -> Result<u16, (StatusCode, String)> {
    parse_port(port).map_err(|e| (StatusCode::UNPROCESSABLE_ENTITY, format!("{e}\n")))
}

fn port_view(h: &Handle, port: u16) -> InboundPortView {
    let now = h.inbound();
    InboundPortView {
        port,
        policy: now.at(port),
        own: now.ports.contains_key(&port),
    }
}

async fn show_inbound(State(h): State<Handle>) -> Json<InboundPolicies> {
    Json(h.inbound())
}

async fn set_inbound(State(h): State<Handle>, Json(policies): Json<InboundPolicies>) -> Response {
    match h.set_inbound(policies) {
        Ok(()) => Json(h.inbound()).into_response(),
        Err(e) => unprocessable(e),
    }
}

async fn show_port(State(h): State<Handle>, Path(p): Path<String>) -> Response {
    match port(&p) {
        Ok(p) => Json(port_view(&h, p)).into_response(),
        Err(r) => r.into_response(),
    }
}

async fn set_port(
    State(h): State<Handle>,
    Path(p): Path<String>,
    Json(body): Json<InboundPortBody>,
) -> Response {
    let p = match port(&p) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    match h.set_inbound_port(p, body.policy) {
        Ok(()) => Json(port_view(&h, p)).into_response(),
        Err(e) => unprocessable(e),
    }
}

async fn clear_port(State(h): State<Handle>, Path(p): Path<String>) -> Response {
    let p = match port(&p) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    if h.clear_inbound_port(p) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            format!("port {p} has no inbound policy of its own\n"),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use prometheus_client::registry::Registry;
    use tower::ServiceExt;

    use super::*;

    fn api(allow_remote: bool) -> (Router, Handle) {
        let handle = Handle::new(super::super::metrics::Metrics::register(
            &mut Registry::default(),
        ));
        (router(handle.clone(), allow_remote), handle)
    }

    async fn call(
        app: &Router,
        method: &str,
        path: &str,
        body: &str,
        peer: &str,
    ) -> (StatusCode, String) {
        let mut req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        let rsp = app.clone().oneshot(req).await.unwrap();
        let status = rsp.status();
        let bytes = axum::body::to_bytes(rsp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    const WEB: &str = "/api/destinations/web.ns.svc.cluster.local:80";

    #[tokio::test]
    async fn policies_are_set_shown_listed_and_deleted_and_an_address_has_one_holder() {
        let (app, handle) = api(false);
        let web = "/api/policies/web.ns.svc.cluster.local:80";
        let api_ = "/api/policies/api.ns.svc.cluster.local:80";
        let (status, text) = call(
            &app,
            "PUT",
            web,
            r#"{"addresses": ["10.96.0.10:80"], "protocol": "opaque"}"#,
            LOCAL,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let shown: PolicyView =
            serde_json::from_str(&call(&app, "GET", web, "", REMOTE).await.1).unwrap();
        assert_eq!(
            shown,
            PolicyView {
                authority: "web.ns.svc.cluster.local:80".into(),
                addresses: vec!["10.96.0.10:80".parse().unwrap()],
                protocol: super::super::policy::AppProtocol::Opaque,
            }
        );
        // Another service may not take the address; nothing changes.
        let take = r#"{"addresses": ["10.96.0.10:80"]}"#;
        let (status, text) = call(&app, "PUT", api_, take, LOCAL).await;
        assert_eq!(status, StatusCode::CONFLICT, "{text}");
        assert!(
            text.contains("10.96.0.10:80 already stands for web.ns.svc.cluster.local:80"),
            "{text}"
        );
        assert_eq!(handle.policies().len(), 1);
        // A protocol that is none, an unknown key, an authority that is no service.
        for (path, body) in [
            (api_, r#"{"protocol": "grpc"}"#),
            (api_, r#"{"adresses": []}"#),
            ("/api/policies/10.96.0.10:80", "{}"),
        ] {
            let (status, text) = call(&app, "PUT", path, body, LOCAL).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {text}");
        }
        // Remote peers read but do not change.
        let (status, _) = call(&app, "DELETE", web, "", REMOTE).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, text) = call(&app, "GET", "/api/policies", "", REMOTE).await;
        assert_eq!(status, StatusCode::OK);
        let listed: Vec<PolicyView> = serde_json::from_str(&text).unwrap();
        assert_eq!(listed, [shown]);
        for (method, expect) in [
            ("DELETE", StatusCode::NO_CONTENT),
            ("DELETE", StatusCode::NOT_FOUND),
            ("GET", StatusCode::NOT_FOUND),
        ] {
            assert_eq!(
                call(&app, method, web, "", LOCAL).await.0,
                expect,
                "{method}"
            );
        }
        // Freed, the address may go to another service.
        let (status, text) = call(&app, "PUT", api_, take, LOCAL).await;
        assert_eq!(status, StatusCode::OK, "{text}");
    }

    #[tokio::test]
    async fn inbound_policies_are_set_by_port_and_whole_and_bad_ones_change_nothing() {
        let (app, handle) = api(false);
        let view = |text: &str| serde_json::from_str::<InboundPortView>(text).unwrap();
        let (status, text) = call(&app, "GET", "/api/inbound/9090", "", REMOTE).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            view(&text),
            InboundPortView {
                port: 9090,
                policy: InboundPolicy::AllUnauthenticated,
                own: false
            }
        );
        let (status, text) = call(
            &app,
            "PUT",
            "/api/inbound/9090",
            r#"{"policy": "deny"}"#,
            LOCAL,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(
            view(&text),
            InboundPortView {
                port: 9090,
                policy: InboundPolicy::Deny,
                own: true
            }
        );
        // Refused, and nothing changes: a policy Linkerd has not, an
        // unknown key, ports that are none, a remote peer.
        for (method, path, body, peer, want) in [
            (
                "PUT",
                "/api/inbound/9090",
                r#"{"policy": "allow"}"#,
                LOCAL,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "PUT",
                "/api/inbound/9090",
                r#"{"policy": "deny", "x": 1}"#,
                LOCAL,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "PUT",
                "/api/inbound/0",
                r#"{"policy": "deny"}"#,
                LOCAL,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "PUT",
                "/api/inbound/65536",
                r#"{"policy": "deny"}"#,
                LOCAL,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "PUT",
                "/api/inbound",
                r#"{"ports": {"0": "deny"}}"#,
                LOCAL,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "PUT",
                "/api/inbound",
                r#"{"default": "audit"}"#,
                REMOTE,
                StatusCode::FORBIDDEN,
            ),
            (
                "DELETE",
                "/api/inbound/9090",
                "",
                REMOTE,
                StatusCode::FORBIDDEN,
            ),
        ] {
            let (status, text) = call(&app, method, path, body, peer).await;
            assert_eq!(status, want, "{method} {path} {body}: {text}");
        }
        let (_, text) = call(
            &app,
            "PUT",
            "/api/inbound/0",
            r#"{"policy": "deny"}"#,
            LOCAL,
        )
        .await;
        assert!(
            text.contains("'0' is not a port: give 1 to 65535"),
            "{text}"
        );
        let only_9090 = InboundPolicies {
            ports: [(9090, InboundPolicy::Deny)].into(),
            ..Default::default()
        };
        assert_eq!(handle.inbound(), only_9090);
        // The whole, replaced and shown.
        let (status, text) = call(
            &app,
            "PUT",
            "/api/inbound",
            r#"{"default": "all-authenticated", "ports": {"4191": "all-unauthenticated"}}"#,
            LOCAL,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let whole = InboundPolicies {
            default: InboundPolicy::AllAuthenticated,
            ports: [(4191, InboundPolicy::AllUnauthenticated)].into(),
        };
        let shown = call(&app, "GET", "/api/inbound", "", REMOTE).await.1;
        assert_eq!(
            serde_json::from_str::<InboundPolicies>(&shown).unwrap(),
            whole
        );
        assert_eq!(
            view(&call(&app, "GET", "/api/inbound/9090", "", REMOTE).await.1).policy,
            InboundPolicy::AllAuthenticated
        );
        for want in [StatusCode::NO_CONTENT, StatusCode::NOT_FOUND] {
            let (status, _) = call(&app, "DELETE", "/api/inbound/4191", "", LOCAL).await;
            assert_eq!(status, want);
        }
        assert_eq!(handle.inbound().at(4191), InboundPolicy::AllAuthenticated);
    }

    const LOCAL: &str = "127.0.0.1:5";
    const REMOTE: &str = "10.1.2.3:5";

    #[tokio::test]
    async fn remote_peers_read_but_change_nothing_unless_allowed() {
        let (app, handle) = api(false);
        let set = r#"{"endpoints": ["10.0.0.1:80"]}"#;
        for (method, path, body) in [
            ("PUT", WEB, set),
            ("PATCH", WEB, r#"{"add": ["10.0.0.2:80"]}"#),
            ("DELETE", WEB, ""),
            ("PUT", "/api/profiles/web.ns.svc.cluster.local", "{}"),
        ] {
            let (status, text) = call(&app, method, path, body, REMOTE).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}");
            assert!(text.contains("--allow-remote-control"), "{text}");
        }
        assert_eq!(handle.store.count(), 0);
        assert_eq!(call(&app, "PUT", WEB, set, LOCAL).await.0, StatusCode::OK);
        assert_eq!(call(&app, "GET", WEB, "", REMOTE).await.0, StatusCode::OK);
        assert_eq!(
            call(&app, "PUT", WEB, set, "[2001:db8::1]:5").await.0,
            StatusCode::FORBIDDEN
        );
        let (app, _) = api(true);
        assert_eq!(call(&app, "PUT", WEB, set, REMOTE).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn bad_bodies_authorities_and_sizes_are_refused() {
        let (app, handle) = api(false);
        // An unknown key was a 200 that did nothing.
        let (status, text) = call(
            &app,
            "PUT",
            WEB,
            r#"{"endpoints": [], "ad": ["10.0.0.1:80"]}"#,
            LOCAL,
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
        assert!(text.contains("unknown field `ad`"), "{text}");
        // A PATCH of a destination that does not exist created it.
        let (status, text) = call(&app, "PATCH", WEB, r#"{"add": ["10.0.0.1:80"]}"#, LOCAL).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
        assert_eq!(handle.store.count(), 0);
        // Authorities Get refuses.
        for bad in [
            "10.0.0.1:80",
            "web.ns.svc.cluster.local:0",
            "web.example.com:80",
        ] {
            let path = format!("/api/destinations/{bad}");
            let (status, text) = call(&app, "PUT", &path, r#"{"endpoints": []}"#, LOCAL).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {text}");
            assert!(text.contains("is not a destination"), "{text}");
        }
        // Past the endpoints of one destination, by PUT or by PATCH.
        let max = crate::limits::MAX_ENDPOINTS_PER_DESTINATION as usize;
        let addrs = |n: usize, from: usize| {
            let list: Vec<String> = (from..from + n)
                .map(|i| format!("\"10.{}.{}.{}:80\"", i >> 16, (i >> 8) & 255, i & 255))
                .collect();
            list.join(",")
        };
        let (status, text) = call(
            &app,
            "PUT",
            WEB,
            &format!(r#"{{"endpoints": [{}]}}"#, addrs(max + 1, 0)),
            LOCAL,
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
        assert!(
            text.contains("would have 10001 endpoints: at most 10000"),
            "{text}"
        );
        let (status, _) = call(
            &app,
            "PUT",
            WEB,
            &format!(r#"{{"endpoints": [{}]}}"#, addrs(max, 0)),
            LOCAL,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = call(
            &app,
            "PATCH",
            WEB,
            &format!(r#"{{"add": [{}]}}"#, addrs(1, max)),
            LOCAL,
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        // A full set still takes a patch that swaps one address for another.
        let (status, text) = call(
            &app,
            "PATCH",
            WEB,
            &format!(
                r#"{{"add": [{}], "remove": ["10.0.0.0:80"]}}"#,
                addrs(1, max)
            ),
            LOCAL,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(
            handle
                .store
                .get(&"web.ns.svc.cluster.local:80".parse().unwrap())
                .unwrap()
                .len(),
            max
        );
    }

    #[tokio::test]
    async fn past_the_most_destinations_a_new_one_is_refused() {
        let (app, handle) = api(false);
        for i in 0..crate::limits::MAX_DESTINATIONS {
            handle.set(
                &format!("s{i}.ns.svc.cluster.local:80").parse().unwrap(),
                [],
            );
        }
        let (status, text) = call(&app, "PUT", WEB, r#"{"endpoints": []}"#, LOCAL).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
        assert!(
            text.contains("serves 10000 destinations, its most"),
            "{text}"
        );
        // One that exists is still changed.
        let path = "/api/destinations/s0.ns.svc.cluster.local:80";
        assert_eq!(
            call(
                &app,
                "PUT",
                path,
                r#"{"endpoints": ["10.0.0.1:80"]}"#,
                LOCAL
            )
            .await
            .0,
            StatusCode::OK
        );
    }
}
