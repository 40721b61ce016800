//! Destination authorities (`name.ns.svc.cluster.local:port`) and the brace
//! patterns (`stable-svc-{0..9}.ns.svc.cluster.local:8080`) that expand to them.

use std::{fmt, str::FromStr};

/// More expanded targets than this is almost certainly a typo in a range.
const MAX_EXPANSION: usize = 1_000_000;

/// A destination authority: a DNS name (or IPv4 literal) and a port.
///
/// Only the syntax is checked here: the destination controller decides whether
/// the name is one it serves (and answers `InvalidArgument` when it is not).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Authority {
    host: String,
    port: u16,
}

/// An authority or pattern that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    /// The authority has no `:port` suffix.
    #[error("'{0}' has no port; expected name.namespace.svc.cluster.local:PORT")]
    MissingPort(String),
    /// The port is not a number from 1 to 65535.
    #[error("'{0}' has an invalid port; expected a number from 1 to 65535")]
    InvalidPort(String),
    /// The host is not a valid DNS name.
    #[error(
        "'{authority}' is not a valid DNS name ({reason}); expected name.namespace.svc.cluster.local:PORT"
    )]
    InvalidHost {
        /// The authority as written.
        authority: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A brace pattern is malformed.
    #[error(
        "invalid brace pattern '{pattern}': {reason}; expected e.g. 'svc-{{0..9}}' or 'svc-{{a,b}}'"
    )]
    InvalidPattern {
        /// The pattern as written.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Nothing was given.
    #[error(
        "no target services given; expected a comma-separated list of name.namespace.svc.cluster.local:PORT"
    )]
    Empty,
}

impl Authority {
    /// Builds an authority from parts, validating them.
    pub fn new(host: &str, port: u16) -> Result<Self, TargetError> {
        format!("{host}:{port}").parse()
    }

    /// The host part.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl FromStr for Authority {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| TargetError::MissingPort(s.to_string()))?;
        let port = match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(TargetError::InvalidPort(s.to_string())),
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let invalid = |reason| TargetError::InvalidHost {
            authority: s.to_string(),
            reason,
        };
        if host.is_empty() {
            return Err(invalid("empty host"));
        }
        if host.len() > 253 {
            return Err(invalid("longer than 253 characters"));
        }
        for label in host.split('.') {
            if label.is_empty() {
                return Err(invalid("empty label"));
            }
            if label.len() > 63 {
                return Err(invalid("label longer than 63 characters"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(invalid("only letters, digits, '-' and '.' are allowed"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(invalid("a label starts or ends with '-'"));
            }
        }
        Ok(Self { host, port })
    }
}

/// A comma-separated list of authorities, each possibly a brace pattern.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Targets(pub Vec<Authority>);

impl FromStr for Targets {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = Vec::new();
        for item in split_top_level(s)? {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            for expanded in expand(item)? {
                out.push(expanded.parse()?);
            }
        }
        if out.is_empty() {
            return Err(TargetError::Empty);
        }
        Ok(Self(out))
    }
}

/// Splits on commas that are not inside braces (`{a,b}` is one item).
fn split_top_level(s: &str) -> Result<Vec<&str>, TargetError> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| pattern_error(s, "unmatched '}'"))?
            }
            ',' if depth == 0 => {
                items.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(pattern_error(s, "unmatched '{'"));
    }
    items.push(&s[start..]);
    Ok(items)
}

fn pattern_error(pattern: &str, reason: impl Into<String>) -> TargetError {
    TargetError::InvalidPattern {
        pattern: pattern.to_string(),
        reason: reason.into(),
    }
}

/// Expands every brace group in `pattern`: `{0..3}` (numeric range, zero
/// padding kept as written, either direction) and `{a,b,c}` (alternatives).
/// Groups multiply: `{0..1}-{a,b}` gives four strings, in order.
pub fn expand(pattern: &str) -> Result<Vec<String>, TargetError> {
    let Some(open) = pattern.find('{') else {
        if pattern.contains('}') {
            return Err(pattern_error(pattern, "unmatched '}'"));
        }
        return Ok(vec![pattern.to_string()]);
    };
    let close = pattern[open..]
        .find('}')
        .map(|i| open + i)
        .ok_or_else(|| pattern_error(pattern, "unmatched '{'"))?;
    let body = &pattern[open + 1..close];
    if body.contains('{') {
        return Err(pattern_error(pattern, "nested braces are not supported"));
    }
    let alternatives = group_alternatives(pattern, body)?;
    let (prefix, rest) = (&pattern[..open], &pattern[close + 1..]);
    let tails = expand(rest)?;
    let total = alternatives.len().saturating_mul(tails.len());
    if total > MAX_EXPANSION {
        return Err(pattern_error(
            pattern,
            format!("expands to {total} names, more than {MAX_EXPANSION}"),
        ));
    }
    let mut out = Vec::with_capacity(total);
    for alt in &alternatives {
        for tail in &tails {
            out.push(format!("{prefix}{alt}{tail}"));
        }
    }
    Ok(out)
}

fn group_alternatives(pattern: &str, body: &str) -> Result<Vec<String>, TargetError> {
    if let Some((from, to)) = body.split_once("..") {
        let parse = |s: &str| {
            s.parse::<u64>().map_err(|_| {
                pattern_error(
                    pattern,
                    format!("'{{{body}}}' is not a range of non-negative integers"),
                )
            })
        };
        let (a, b) = (parse(from)?, parse(to)?);
        if a.abs_diff(b) >= MAX_EXPANSION as u64 {
            return Err(pattern_error(
                pattern,
                format!("range '{{{body}}}' is too large"),
            ));
        }
        // Zero padding as bash does it: `{00..10}` gives 00, 01, ... 10.
        let width =
            if (from.len() > 1 && from.starts_with('0')) || (to.len() > 1 && to.starts_with('0')) {
                from.len().max(to.len())
            } else {
                0
            };
        let nums: Vec<u64> = if a <= b {
            (a..=b).collect()
        } else {
            (b..=a).rev().collect()
        };
        return Ok(nums.into_iter().map(|n| format!("{n:0width$}")).collect());
    }
    let alts: Vec<String> = body.split(',').map(str::to_string).collect();
    if alts.len() < 2 {
        return Err(pattern_error(
            pattern,
            format!("'{{{body}}}' is neither a range 'A..B' nor a list 'a,b'"),
        ));
    }
    Ok(alts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &str) -> Vec<String> {
        s.parse::<Targets>()
            .unwrap()
            .0
            .into_iter()
            .map(|a| a.to_string())
            .collect()
    }

    #[test]
    fn expands_numeric_ranges() {
        assert_eq!(
            names("stable-svc-{0..2}.dst-load-test.svc.cluster.local:8080"),
            [
                "stable-svc-0.dst-load-test.svc.cluster.local:8080",
                "stable-svc-1.dst-load-test.svc.cluster.local:8080",
                "stable-svc-2.dst-load-test.svc.cluster.local:8080",
            ]
        );
        assert_eq!(expand("s{3..1}").unwrap(), ["s3", "s2", "s1"]);
        assert_eq!(expand("s{08..10}").unwrap(), ["s08", "s09", "s10"]);
    }

    #[test]
    fn expands_lists_and_products_in_order() {
        assert_eq!(
            expand("{a,b}-{0..1}").unwrap(),
            ["a-0", "a-1", "b-0", "b-1"]
        );
        assert_eq!(
            names("x-{a,b}.ns.svc.cluster.local:80,y.ns.svc.cluster.local:81"),
            [
                "x-a.ns.svc.cluster.local:80",
                "x-b.ns.svc.cluster.local:80",
                "y.ns.svc.cluster.local:81"
            ]
        );
    }

    #[test]
    fn rejects_malformed_patterns() {
        for bad in [
            "s{0..2",
            "s0..2}",
            "s{a}",
            "s{x..y}",
            "s{{0..1}}",
            "s{0..99999999}",
        ] {
            let err: Result<Vec<String>, _> = split_top_level(bad).and_then(|_| expand(bad));
            assert!(
                matches!(err, Err(TargetError::InvalidPattern { .. })),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn validates_authorities() {
        let a: Authority = "Foo.NS.svc.cluster.local:8080".parse().unwrap();
        assert_eq!(a.host(), "foo.ns.svc.cluster.local");
        assert_eq!(a.port(), 8080);
        assert!(matches!(
            "foo.ns.svc.cluster.local".parse::<Authority>(),
            Err(TargetError::MissingPort(_))
        ));
        for bad in ["foo:0", "foo:70000", "foo:http"] {
            assert!(
                matches!(bad.parse::<Authority>(), Err(TargetError::InvalidPort(_))),
                "{bad}"
            );
        }
        for bad in [":80", "a..b:80", "-a.b:80", "a_b.c:80", "a b:80"] {
            assert!(
                matches!(
                    bad.parse::<Authority>(),
                    Err(TargetError::InvalidHost { .. })
                ),
                "{bad}"
            );
        }
        assert_eq!("".parse::<Targets>(), Err(TargetError::Empty));
    }
}
