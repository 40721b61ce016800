//! Seeds in JSON and YAML: written as strings, read as strings or numbers.
//!
//! A seed is any u64, and JSON numbers above 2^53 are rounded by `jq`,
//! JavaScript and many other readers: a seed read back rounded replays
//! another schedule. Reports therefore write seeds as decimal strings;
//! reports and scenario files written with numbers still read.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserializer, Serializer, de};

/// A seed as a scenario file may give it (for the schema only).
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum SeedText {
    /// A number (at most 2^53 if the file passes through JavaScript or jq).
    Number(u64),
    /// A decimal string, exact for every u64.
    Text(#[schemars(regex(pattern = r"^[0-9]{1,20}$"))] String),
}

struct Visitor;

impl de::Visitor<'_> for Visitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a seed: a whole number from 0 to 18446744073709551615, as a number or a string",
        )
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        v.trim()
            .parse()
            .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
    }
}

/// `#[serde(with = "crate::seed")]` on a `u64`.
pub fn serialize<S: Serializer>(seed: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(seed)
}

/// See [`serialize`].
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(Visitor)
}

/// `#[serde(with = "crate::seed::option")]` on an `Option<u64>`.
pub mod option {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(transparent)]
    struct Seed(#[serde(with = "super")] u64);

    /// Writes a present seed as a string.
    pub fn serialize<S: Serializer>(seed: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match seed {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }

    /// Reads a seed as a number or a string, or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Ok(Option::<Seed>::deserialize(d)?.map(|s| s.0))
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Report {
        #[serde(with = "super")]
        seed: u64,
        #[serde(default, with = "super::option")]
        other: Option<u64>,
    }

    #[test]
    fn seeds_are_written_as_strings_and_read_either_way() {
        let big = u64::MAX - 1;
        let r = Report {
            seed: big,
            other: Some(7),
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"seed":"18446744073709551614","other":"7"}"#);
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), r);
        // Older reports and hand-written files: numbers.
        let old: Report = serde_json::from_str(r#"{"seed": 18446744073709551614}"#).unwrap();
        assert_eq!(
            old,
            Report {
                seed: big,
                other: None
            }
        );
        let yaml: Report = serde_saphyr::from_str("seed: '42'\nother: 9\n").unwrap();
        assert_eq!(
            yaml,
            Report {
                seed: 42,
                other: Some(9)
            }
        );
        for bad in [r#"{"seed": -1}"#, r#"{"seed": "x1"}"#, r#"{"seed": 1.5}"#] {
            let e = serde_json::from_str::<Report>(bad).unwrap_err().to_string();
            assert!(e.contains("a seed: a whole number"), "{bad}: {e}");
        }
    }
}
