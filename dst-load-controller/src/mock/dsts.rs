//! The `DESTINATION=ENDPOINTS;...` list the mock serves, as documented by
//! linkerd2-mock-dst: `[scheme://]dns-name:port=addr,addr;...`.

use std::{net::SocketAddr, str::FromStr};

use crate::target::{Authority, TargetError};

/// One destination and its endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DstSpec {
    /// The destination's authority.
    pub authority: Authority,
    /// Its endpoints.
    pub endpoints: Vec<SocketAddr>,
}

/// Every destination given on the command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dsts(pub Vec<DstSpec>);

/// A malformed destination list.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DstsError {
    /// A pair has no `=`.
    #[error(
        "'{0}' is not a DESTINATION=ENDPOINTS pair; expected e.g. http://foo.ns.svc.cluster.local:8080=127.0.0.1:1234,127.0.0.1:1235"
    )]
    MissingEquals(String),
    /// The destination part is invalid.
    #[error("invalid destination in '{pair}': {why}")]
    Destination {
        /// The pair as written.
        pair: String,
        /// Why (shown in the message, so not its source).
        why: TargetError,
    },
    /// An endpoint is not a socket address.
    #[error("invalid endpoint '{endpoint}' in '{pair}'; expected IP:PORT such as 127.0.0.1:1234")]
    Endpoint {
        /// The pair as written.
        pair: String,
        /// The endpoint as written.
        endpoint: String,
    },
    /// The destination is not a service's name (an IP address, say).
    #[error("'{pair}': {why}; a destination is <svc>.<ns>.svc.<cluster-domain>:<port>")]
    NotAService {
        /// The pair as written.
        pair: String,
        /// Why not.
        why: super::server::NotAService,
    },
    /// The same destination appears twice.
    #[error("destination '{0}' is given twice")]
    Duplicate(String),
}

impl FromStr for Dsts {
    type Err = DstsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out: Vec<DstSpec> = Vec::new();
        for pair in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (dst, eps) = pair
                .split_once('=')
                .ok_or_else(|| DstsError::MissingEquals(pair.to_string()))?;
            let dst = dst.trim();
            // The scheme is accepted for compatibility and ignored, as the
            // destination controller ignores it.
            let dst = dst.split_once("://").map_or(dst, |(_, rest)| rest);
            let authority: Authority = dst.parse().map_err(|why| DstsError::Destination {
                pair: pair.to_string(),
                why,
            })?;
            super::server::service_authority(dst).map_err(|why| DstsError::NotAService {
                pair: pair.to_string(),
                why,
            })?;
            let endpoints = eps
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(|e| {
                    e.parse().map_err(|_| DstsError::Endpoint {
                        pair: pair.to_string(),
                        endpoint: e.to_string(),
                    })
                })
                .collect::<Result<Vec<SocketAddr>, _>>()?;
            if out.iter().any(|d| d.authority == authority) {
                return Err(DstsError::Duplicate(authority.to_string()));
            }
            out.push(DstSpec {
                authority,
                endpoints,
            });
        }
        Ok(Self(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let dsts: Dsts = "http://foo.ns.svc.cluster.local:8080=127.0.0.1:1234,127.0.0.1:1235;http://bar.ns.svc.cluster.local:8081=127.0.0.1:4321"
            .parse()
            .unwrap();
        assert_eq!(dsts.0.len(), 2);
        assert_eq!(
            dsts.0[0].authority.to_string(),
            "foo.ns.svc.cluster.local:8080"
        );
        assert_eq!(
            dsts.0[0].endpoints,
            [
                "127.0.0.1:1234".parse().unwrap(),
                "127.0.0.1:1235".parse::<SocketAddr>().unwrap()
            ]
        );
        assert_eq!(
            dsts.0[1].authority.to_string(),
            "bar.ns.svc.cluster.local:8081"
        );
    }

    #[test]
    fn accepts_no_scheme_and_no_endpoints() {
        let dsts: Dsts = "foo.ns.svc.cluster.local:80=;".parse().unwrap();
        assert!(dsts.0[0].endpoints.is_empty());
        assert_eq!("".parse::<Dsts>().unwrap(), Dsts::default());
    }

    #[test]
    fn rejects_malformed_lists() {
        assert!(matches!(
            "foo:80".parse::<Dsts>(),
            Err(DstsError::MissingEquals(_))
        ));
        assert!(matches!(
            "foo=1.2.3.4:5".parse::<Dsts>(),
            Err(DstsError::Destination { .. })
        ));
        assert!(matches!(
            "foo.ns.svc.cluster.local:80=1.2.3.4".parse::<Dsts>(),
            Err(DstsError::Endpoint { .. })
        ));
        // What Get would refuse is no destination either.
        for not_a_service in ["10.0.0.1:80=10.1.1.1:80", "foo:80="] {
            assert!(
                matches!(
                    not_a_service.parse::<Dsts>(),
                    Err(DstsError::NotAService { .. })
                ),
                "{not_a_service}"
            );
        }
        assert!(matches!(
            "foo.ns.svc.cluster.local:80=;foo.ns.svc.cluster.local:80=".parse::<Dsts>(),
            Err(DstsError::Duplicate(_))
        ));
    }
}
