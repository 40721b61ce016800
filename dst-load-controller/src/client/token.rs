//! The context token a proxy sends with every `Get`: JSON
//! `{"ns":..,"nodeName":..,"pod":..}`, as the proxy injector builds it from the
//! downward API.

use serde::Serialize;

/// Where the pod that a simulated proxy pretends to be runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ContextToken {
    /// The pod's namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ns: Option<String>,
    /// The node the pod runs on (drives topology filtering in the controller).
    #[serde(rename = "nodeName", skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// The pod's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

impl ContextToken {
    /// Builds a token from optional parts; empty strings count as absent.
    pub fn new(ns: Option<String>, node_name: Option<String>, pod: Option<String>) -> Self {
        let keep = |v: Option<String>| v.filter(|s| !s.is_empty());
        Self {
            ns: keep(ns),
            node_name: keep(node_name),
            pod: keep(pod),
        }
    }

    /// The JSON text sent on the wire; empty when nothing is known, as a proxy
    /// without a token would send.
    pub fn to_wire(&self) -> String {
        if *self == Self::default() {
            return String::new();
        }
        serde_json::to_string(self).expect("a struct of strings always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_injector_json() {
        let t = ContextToken::new(
            Some("dst-load-test".into()),
            Some("kwok-node-0".into()),
            Some("client-7d9f".into()),
        );
        assert_eq!(
            t.to_wire(),
            r#"{"ns":"dst-load-test","nodeName":"kwok-node-0","pod":"client-7d9f"}"#
        );
    }

    #[test]
    fn omits_what_is_unknown() {
        let t = ContextToken::new(Some("ns".into()), Some(String::new()), None);
        assert_eq!(t.to_wire(), r#"{"ns":"ns"}"#);
        assert_eq!(ContextToken::default().to_wire(), "");
    }
}
