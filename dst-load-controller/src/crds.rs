//! Linkerd's custom resources, as far as this tool writes and reads them.

use k8s_openapi::apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString};
use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// A `policy.linkerd.io/v1beta3` Server: a port of the pods it selects.
/// The destination controller reads its `proxyProtocol` (only `opaque`
/// changes what it answers) whenever a pod's address is resolved, scanning
/// every Server of the pod's namespace.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "policy.linkerd.io",
    version = "v1beta3",
    kind = "Server",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ServerSpec {
    /// The pods it selects (all of the namespace's when empty).
    pub pod_selector: LabelSelector,
    /// A container port's number or name.
    pub port: IntOrString,
    /// How the proxy reads the port's connections (`unknown` when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
}

/// A Server's `proxyProtocol`, spelled as Linkerd's policy controller
/// accepts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProxyProtocol {
    /// Detected per connection.
    #[default]
    #[serde(rename = "unknown")]
    Unknown,
    /// HTTP/1.
    #[serde(rename = "HTTP/1")]
    Http1,
    /// HTTP/2.
    #[serde(rename = "HTTP/2")]
    Http2,
    /// gRPC.
    #[serde(rename = "gRPC")]
    Grpc,
    /// Opaque TCP: the one the destination controller answers differently.
    #[serde(rename = "opaque")]
    Opaque,
    /// TLS.
    #[serde(rename = "TLS")]
    Tls,
}

impl ProxyProtocol {
    /// Every value, as Linkerd spells it.
    pub const ALL: [Self; 6] = [
        Self::Unknown,
        Self::Http1,
        Self::Http2,
        Self::Grpc,
        Self::Opaque,
        Self::Tls,
    ];

    /// As Linkerd spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Http1 => "HTTP/1",
            Self::Http2 => "HTTP/2",
            Self::Grpc => "gRPC",
            Self::Opaque => "opaque",
            Self::Tls => "TLS",
        }
    }
}

impl std::fmt::Display for ProxyProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no [`ProxyProtocol`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("'{0}' is not a Server proxyProtocol; give one of {all}", all = ProxyProtocol::names())]
pub struct UnknownProxyProtocol(pub String);

impl ProxyProtocol {
    /// Every name, comma-separated.
    fn names() -> String {
        let all: Vec<_> = Self::ALL.iter().map(|p| p.as_str()).collect();
        all.join(", ")
    }
}

impl std::str::FromStr for ProxyProtocol {
    type Err = UnknownProxyProtocol;

    fn from_str(s: &str) -> Result<Self, UnknownProxyProtocol> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownProxyProtocol(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_protocols_are_spelled_as_linkerd_reads_them() {
        for p in ProxyProtocol::ALL {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
            assert_eq!(p.as_str().parse::<ProxyProtocol>(), Ok(p));
        }
        let err = "http/1".parse::<ProxyProtocol>().unwrap_err().to_string();
        assert!(err.contains("HTTP/1"), "{err}");
    }
}

/// A `linkerd.io/v1alpha2` ServiceProfile, named after the service's
/// FQDN in its namespace: the routes `GetProfile` by name answers with.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "linkerd.io",
    version = "v1alpha2",
    kind = "ServiceProfile",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceProfileSpec {
    /// The routes, in order (each becomes a route labelled `route=<name>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteSpec>,
    /// How many retries the proxy may add (default: the controller's,
    /// 0.2 / 10 per second / 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
}

/// A ServiceProfile's retry budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryBudget {
    /// Retries as a share of requests (the controller reads it as a
    /// 32-bit float).
    pub retry_ratio: f64,
    /// Retries allowed per second whatever the ratio.
    pub min_retries_per_second: u32,
    /// The window the ratio is computed over (`10s`).
    pub ttl: String,
}

/// A ServiceProfile route.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    /// Its name: the `route` metric label of its proxy route.
    pub name: String,
    /// The requests it matches.
    pub condition: RequestMatch,
    /// Whether failed requests may be retried.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_retryable: bool,
    /// The request timeout (`1s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// A route's request condition (method and path only).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestMatch {
    /// The HTTP method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// A regular expression the path must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
}
