//! Label and annotation keys shared by churn, cleanup and the client.

/// Marks every object churn creates; cleanup deletes only objects carrying it.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY`].
pub const MANAGER: &str = "dst-load-controller";
/// `stable`, `oscillate`, `restart`, `ephemeral` or `statefulset`.
pub const PATTERN: &str = "dst-load.linkerd.io/pattern";
/// Selects a service's pods.
pub const NAME: &str = "app.kubernetes.io/name";
/// When churn last changed a Deployment's replicas (RFC 3339, nanoseconds).
pub const SCALED_AT: &str = "dst-load.linkerd.io/scaled-at";
/// The endpoint count the change stamped in [`SCALED_AT`] leads to (0 for
/// a deleted service).
pub const REPLICAS: &str = "dst-load.linkerd.io/replicas";
/// The kind of the change stamped in [`SCALED_AT`]: `create`, `scale`,
/// `restart` or `delete`.
pub const CHANGE: &str = "dst-load.linkerd.io/change";
/// The Service a workload's pods back, when its name differs from the
/// workload's (a StatefulSet `sts-{i}` behind `sts-svc-{i}`).
pub const SERVICE: &str = "dst-load.linkerd.io/service";
/// When churn last changed a ServiceProfile's routes (RFC 3339, nanoseconds).
pub const PROFILE_CHANGED_AT: &str = "dst-load.linkerd.io/profile-changed-at";
/// The number of routes that change gave the ServiceProfile.
pub const ROUTES: &str = "dst-load.linkerd.io/routes";
/// The pod-template annotation a rolling restart bumps (RFC 3339).
pub const RESTARTED_AT: &str = "dst-load.linkerd.io/restarted-at";
/// The label that makes the destination controller treat a pod as meshed.
pub const CONTROL_PLANE_NS: &str = "linkerd.io/control-plane-ns";
/// The pod-template annotation that asks Linkerd's proxy injector to inject.
pub const INJECT: &str = "linkerd.io/inject";
/// The injector's label naming the pod's Deployment.
pub const PROXY_DEPLOYMENT: &str = "linkerd.io/proxy-deployment";
/// The injector's label naming the pod's StatefulSet.
pub const PROXY_STATEFULSET: &str = "linkerd.io/proxy-statefulset";
/// The injector's label naming the pod's namespace.
pub const WORKLOAD_NS: &str = "linkerd.io/workload-ns";
/// The injector's annotation naming what injected the pod.
pub const CREATED_BY: &str = "linkerd.io/created-by";
/// The injector's annotation with the proxy's version.
pub const PROXY_VERSION: &str = "linkerd.io/proxy-version";
/// The injector's annotation with the identity mode.
pub const IDENTITY_MODE: &str = "linkerd.io/identity-mode";
/// Linkerd multicluster's export label (`true` = gateway mirroring,
/// `remote-discovery` = remote discovery, as `link-gen`'s default selectors).
pub const EXPORTED: &str = "mirror.linkerd.io/exported";
/// Linkerd multicluster's federated-service membership label (`member`).
pub const FEDERATED: &str = "mirror.linkerd.io/federated";
/// The field manager for every server-side apply churn makes.
pub const FIELD_MANAGER: &str = "dst-load-controller";

/// The label selector matching everything churn owns.
pub fn owned_selector() -> String {
    format!("{MANAGED_BY}={MANAGER}")
}

/// Whether an object with these labels is one churn owns (what
/// [`owned_selector`] selects).
pub fn is_owned(labels: Option<&std::collections::BTreeMap<String, String>>) -> bool {
    labels.is_some_and(|l| l.get(MANAGED_BY).map(String::as_str) == Some(MANAGER))
}

/// The churn pattern of a watched authority, from churn's naming
/// (`{prefix}-svc-{i}.ns...`, or `{pod}.sts-svc-{i}.ns...` for a pod of a
/// StatefulSet); `other` for any other service.
pub fn pattern_of_authority(authority: &str) -> &'static str {
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    let mut parts = host.split('.');
    let first = parts.next().unwrap_or_default();
    let service = if first.contains("-svc-") {
        first
    } else {
        parts.next().unwrap_or_default()
    };
    Pattern::of_service(service).map_or("other", Pattern::as_str)
}

/// Which churn pattern a service follows.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pattern {
    /// Fixed size.
    Stable,
    /// Scales between min and max.
    Oscillate,
    /// Rolled every interval: every address replaced, the count kept.
    Restart,
    /// Created, deleted after its lifetime, created again after a gap.
    Ephemeral,
    /// A headless Service in front of a StatefulSet (stable pod hostnames).
    StatefulSet,
}

impl Pattern {
    /// Every pattern, in the order churn creates them.
    pub const ALL: [Pattern; 5] = [
        Pattern::Stable,
        Pattern::Oscillate,
        Pattern::Restart,
        Pattern::Ephemeral,
        Pattern::StatefulSet,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Pattern::Stable => "stable",
            Pattern::Oscillate => "oscillate",
            Pattern::Restart => "restart",
            Pattern::Ephemeral => "ephemeral",
            Pattern::StatefulSet => "statefulset",
        }
    }

    /// The Service name prefix.
    fn prefix(self) -> &'static str {
        match self {
            Pattern::StatefulSet => "sts",
            p => p.as_str(),
        }
    }

    /// The name of service `i`: `stable-svc-3`, `oscillate-svc-0`, `sts-svc-1`.
    pub fn service_name(self, i: u32) -> String {
        format!("{}-svc-{i}", self.prefix())
    }

    /// The name of service `i`'s workload: the service's name, except
    /// StatefulSets (`sts-{i}`).
    pub fn workload_name(self, i: u32) -> String {
        match self {
            Pattern::StatefulSet => format!("sts-{i}"),
            p => p.service_name(i),
        }
    }

    /// The pattern of a Service churn names (`None` for any other name).
    pub fn of_service(name: &str) -> Option<Pattern> {
        let (prefix, index) = name.rsplit_once("-svc-")?;
        index.parse::<u32>().ok()?;
        Pattern::ALL.into_iter().find(|p| p.prefix() == prefix)
    }
}

/// A valid DNS label (a namespace's or a link's name).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Why a label selector is not one the apiserver parses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// Nothing given.
    #[error("the selector is empty; give e.g. app=web")]
    Empty,
    /// A parenthesis left open or closed twice.
    #[error("unbalanced parentheses in '{0}'")]
    Unbalanced(String),
    /// One requirement is wrong.
    #[error("'{term}': {problem}")]
    Requirement {
        /// The requirement as written.
        term: String,
        /// What is wrong with it.
        problem: RequirementError,
    },
}

/// What is wrong with one requirement of a selector.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequirementError {
    /// A key and then no operator.
    #[error("expected =, ==, !=, in or notin after '{0}'")]
    NoOperator(String),
    /// `in` or `notin` without a parenthesized set.
    #[error("a set is written (a,b)")]
    NotASet,
    /// A key's prefix that is no DNS subdomain.
    #[error("'{0}' is not a DNS subdomain key prefix")]
    KeyPrefix(String),
    /// An operator with nothing before it.
    #[error("a requirement has no key")]
    NoKey,
    /// A key's name that is no label name.
    #[error("'{0}' is not a label key")]
    Key(String),
    /// A value that is no label value.
    #[error(
        "'{0}' is not a label value (at most 63 letters, digits, '-', '_' or '.', starting and ending alphanumeric)"
    )]
    Value(String),
}

/// A name a flag takes that Kubernetes would refuse; each names the flag.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not a namespace's name.
    #[error(
        "{flag} '{value}' is not a valid namespace name (lowercase letters, digits and '-', at most 63)"
    )]
    Namespace {
        /// The flag (or key) that gave it.
        flag: String,
        /// As given.
        value: String,
    },
    /// Not a DNS domain.
    #[error("{flag} '{value}' is not a domain (e.g. cluster.local)")]
    Domain {
        /// The flag that gave it.
        flag: String,
        /// As given.
        value: String,
    },
    /// Not a multicluster link's name.
    #[error(
        "{flag} '{value}' is not a link name: give the --cluster-name the link was made with (a DNS label, e.g. target)"
    )]
    Link {
        /// The flag that gave it.
        flag: String,
        /// As given.
        value: String,
    },
}

/// Checks a namespace's name given by `flag`.
pub fn check_namespace(flag: &str, value: &str) -> Result<(), NameError> {
    if is_dns_label(value) {
        return Ok(());
    }
    Err(NameError::Namespace {
        flag: flag.to_string(),
        value: value.to_string(),
    })
}

/// Checks a cluster's DNS domain given by `flag`.
pub fn check_domain(flag: &str, value: &str) -> Result<(), NameError> {
    if value.split('.').all(is_dns_label) {
        return Ok(());
    }
    Err(NameError::Domain {
        flag: flag.to_string(),
        value: value.to_string(),
    })
}

/// Checks a multicluster link's name (its `--cluster-name`) given by
/// `flag`.
pub fn check_link(flag: &str, value: &str) -> Result<(), NameError> {
    if is_dns_label(value) {
        return Ok(());
    }
    Err(NameError::Link {
        flag: flag.to_string(),
        value: value.to_string(),
    })
}

/// Checks a label selector as the apiserver parses one (`k=v`, `k==v`,
/// `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`, comma-separated), so a
/// typo is named before anything is created; the error says what is wrong.
pub fn check_selector(selector: &str) -> Result<(), SelectorError> {
    if selector.trim().is_empty() {
        return Err(SelectorError::Empty);
    }
    for term in top_level_terms(selector)? {
        let term = term.trim();
        check_requirement(term).map_err(|problem| SelectorError::Requirement {
            term: term.to_string(),
            problem,
        })?;
    }
    Ok(())
}

/// The selector's requirements: split at the commas outside parentheses.
fn top_level_terms(s: &str) -> Result<Vec<&str>, SelectorError> {
    let (mut terms, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(SelectorError::Unbalanced(s.to_string()));
        }
    }
    if depth != 0 {
        return Err(SelectorError::Unbalanced(s.to_string()));
    }
    terms.push(&s[start..]);
    Ok(terms)
}

fn check_requirement(term: &str) -> Result<(), RequirementError> {
    if let Some(key) = term.strip_prefix('!') {
        return check_key(key.trim());
    }
    for op in ["!=", "==", "="] {
        if let Some((key, value)) = term.split_once(op) {
            check_key(key.trim())?;
            return check_value(value.trim());
        }
    }
    let words: Vec<&str> = term.splitn(2, char::is_whitespace).collect();
    if let [key, rest] = words[..] {
        let rest = rest.trim_start();
        let set = rest
            .strip_prefix("notin")
            .or_else(|| rest.strip_prefix("in"))
            .ok_or_else(|| RequirementError::NoOperator(key.to_string()))?
            .trim();
        let values = set
            .strip_prefix('(')
            .and_then(|s| s.strip_suffix(')'))
            .ok_or(RequirementError::NotASet)?;
        check_key(key)?;
        return values.split(',').try_for_each(|v| check_value(v.trim()));
    }
    check_key(term)
}

fn check_key(key: &str) -> Result<(), RequirementError> {
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            let ok =
                !prefix.is_empty() && prefix.len() <= 253 && prefix.split('.').all(is_dns_label);
            if !ok {
                return Err(RequirementError::KeyPrefix(prefix.to_string()));
            }
            name
        }
        None => key,
    };
    if name.is_empty() {
        return Err(RequirementError::NoKey);
    }
    check_value(name).map_err(|_| RequirementError::Key(name.to_string()))
}

fn check_value(v: &str) -> Result<(), RequirementError> {
    let ok = v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && v.bytes().next().is_none_or(|b| b.is_ascii_alphanumeric())
        && v.bytes().last().is_none_or(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(RequirementError::Value(v.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_once_for_every_flag_and_the_error_names_it() {
        assert_eq!(check_namespace("--namespace", "dst-load"), Ok(()));
        assert_eq!(
            check_namespace("--namespace", "Bad_NS")
                .unwrap_err()
                .to_string(),
            "--namespace 'Bad_NS' is not a valid namespace name (lowercase letters, digits and '-', at most 63)"
        );
        assert!(check_namespace("--namespace", &"a".repeat(64)).is_err());
        assert_eq!(check_domain("--cluster-domain", "cluster.local"), Ok(()));
        assert_eq!(
            check_domain("--cluster-domain", "bad..domain")
                .unwrap_err()
                .to_string(),
            "--cluster-domain 'bad..domain' is not a domain (e.g. cluster.local)"
        );
        assert_eq!(check_link("--ground-truth-link", "target"), Ok(()));
        assert!(
            check_link("--ground-truth-link", "Target_1")
                .unwrap_err()
                .to_string()
                .starts_with("--ground-truth-link 'Target_1' is not a link name")
        );
    }

    #[test]
    fn selectors_are_checked_as_the_apiserver_parses_them() {
        for good in [
            "app=web",
            "app.kubernetes.io/name==stable-svc-0",
            "tier!=db, app",
            "!canary",
            "env in (prod, staging),app notin (a,b)",
            "app=",
        ] {
            assert_eq!(check_selector(good), Ok(()), "{good}");
        }
        for (bad, says) in [
            ("", "empty"),
            ("app=web app", "not a label value"),
            ("env in prod", "(a,b)"),
            ("env in (prod", "parentheses"),
            ("a/b/c=x", "DNS subdomain"),
            ("=web", "no key"),
            ("app ~ web", "expected =, ==, !=, in or notin"),
        ] {
            let err = check_selector(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
