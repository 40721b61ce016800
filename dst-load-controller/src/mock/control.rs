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
//!
//! Every change answers with what changed and when (RFC 3339, nanoseconds).

use std::net::SocketAddr;

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::{Deserialize, Serialize};

use super::{handle::Handle, profiles::ProfileSpec, store::Change};
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
pub struct SetBody {
    /// The new endpoint set.
    pub endpoints: Vec<SocketAddr>,
}

/// `PATCH` body.
#[derive(Debug, Default, Serialize, Deserialize)]
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

/// The control routes over `handle`.
pub fn router(handle: Handle) -> Router {
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
        .with_state(handle)
}

/// The mock's own record of every delivery: from a change to the update
/// handed to a stream's queue (percentiles in seconds, with the histogram).
async fn delivery(State(h): State<Handle>) -> Json<crate::latency::Percentiles> {
    Json(h.metrics().delivery_percentiles())
}

fn parse(authority: &str) -> Result<Authority, (StatusCode, String)> {
    authority
        .parse()
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("{e}\n")))
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
    match parse(&authority) {
        Ok(a) => Json(ChangeView::from(&*h.set(&a, body.endpoints))).into_response(),
        Err(r) => r.into_response(),
    }
}

async fn patch(
    State(h): State<Handle>,
    Path(authority): Path<String>,
    Json(body): Json<PatchBody>,
) -> Response {
    match parse(&authority) {
        Ok(a) => Json(ChangeView::from(&*h.patch(&a, &body.add, &body.remove))).into_response(),
        Err(r) => r.into_response(),
    }
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
