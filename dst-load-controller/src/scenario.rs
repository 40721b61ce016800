//! Scenario files: one YAML document describing a whole load test (the
//! services as churn patterns, the clients with their fault modes, the
//! schedule, duration, seed and SLOs). Parsing refuses unknown keys and bad
//! values with the file's line and column; the JSON Schema is generated from
//! these types. The load-test plan's scenarios are files of this format,
//! embedded in the binary. Pure: no I/O beyond reading the named file.

use std::{fmt, path::Path, str::FromStr, time::Duration};

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::labels::Pattern;

/// The most endpoints one service may have (the mock draws each service's
/// addresses from its own /20).
pub const MAX_ENDPOINTS: u32 = 4094;
/// The most services of one pattern.
pub const MAX_SERVICES: u32 = 4096;

/// The built-in scenarios: the load-test plan's five, and the churn
/// patterns that find stale endpoints.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// 10 services x 100 endpoints, 100 proxies each, no churn.
    Baseline,
    /// 10 services oscillating 10 <-> 200, 100 proxies each.
    SmallOscillation,
    /// 1 service oscillating 500 <-> 1000, 1000 proxies.
    LargeRollout,
    /// 100 services oscillating 50 <-> 100, 100 proxies each.
    ManyServices,
    /// 50 services oscillating 100 <-> 200, 500 proxies each.
    RedLine,
    /// 10 services of 20 endpoints, each rolled (every address replaced)
    /// every 10 s, and 2 services of 20 deleted and re-created (20 s alive,
    /// 5 s gone); 100 proxies each.
    RollingRestart,
    /// 5 StatefulSets oscillating 3 <-> 6 pods behind headless Services;
    /// 20 proxies watch each service and each of its first 3 pods by name.
    Statefulset,
}

impl Scenario {
    /// Every built-in scenario.
    pub const ALL: [Scenario; 7] = [
        Scenario::Baseline,
        Scenario::SmallOscillation,
        Scenario::LargeRollout,
        Scenario::ManyServices,
        Scenario::RedLine,
        Scenario::RollingRestart,
        Scenario::Statefulset,
    ];

    /// Its name, as `--scenario` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Baseline => "baseline",
            Scenario::SmallOscillation => "small-oscillation",
            Scenario::LargeRollout => "large-rollout",
            Scenario::ManyServices => "many-services",
            Scenario::RedLine => "red-line",
            Scenario::RollingRestart => "rolling-restart",
            Scenario::Statefulset => "statefulset",
        }
    }

    /// Its file, as embedded (what `run --print-scenario` prints).
    pub fn text(self) -> &'static str {
        match self {
            Scenario::Baseline => include_str!("../scenarios/baseline.yaml"),
            Scenario::SmallOscillation => include_str!("../scenarios/small-oscillation.yaml"),
            Scenario::LargeRollout => include_str!("../scenarios/large-rollout.yaml"),
            Scenario::ManyServices => include_str!("../scenarios/many-services.yaml"),
            Scenario::RedLine => include_str!("../scenarios/red-line.yaml"),
            Scenario::RollingRestart => include_str!("../scenarios/rolling-restart.yaml"),
            Scenario::Statefulset => include_str!("../scenarios/statefulset.yaml"),
        }
    }

    /// Its document.
    pub fn spec(self) -> Spec {
        let name = format!("{}.yaml", self.name());
        match parse(&name, self.text()) {
            Ok(spec) => spec,
            Err(e) => panic!("built-in scenario {name} does not parse: {e}"),
        }
    }

    /// The plan's success criteria, as SLOs.
    pub fn default_slos(self) -> Vec<crate::slo::Slo> {
        self.spec().slos
    }
}

/// A scenario file, read and checked (as `--scenario-file` takes it).
#[derive(Clone, Debug, PartialEq)]
pub struct ScenarioFile {
    /// The path given.
    pub path: String,
    /// Its document.
    pub spec: Spec,
}

/// Why a scenario file was refused.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// It cannot be read.
    #[error("cannot read the scenario file {path}: {why}")]
    Read {
        /// The path given.
        path: String,
        /// Why (shown in the message, so not its source).
        why: std::io::Error,
    },
    /// It is no scenario document.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// Its document asks for what cannot run.
    #[error("{path}: {why}")]
    Invalid {
        /// The path given.
        path: String,
        /// What is wrong (shown in the message, so not its source).
        why: Invalid,
    },
}

impl FromStr for ScenarioFile {
    type Err = FileError;

    /// Reads and parses the file at `path`.
    fn from_str(path: &str) -> Result<Self, FileError> {
        let text = std::fs::read_to_string(path).map_err(|why| FileError::Read {
            path: path.to_string(),
            why,
        })?;
        let mut spec = parse(path, &text)?;
        spec.validate().map_err(|why| FileError::Invalid {
            path: path.to_string(),
            why,
        })?;
        if spec.name.is_none() {
            spec.name = Path::new(path)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned());
        }
        Ok(Self {
            path: path.to_string(),
            spec,
        })
    }
}

/// Why a scenario document was refused.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}\n{hint}")]
pub struct ParseError {
    /// The file (or built-in name).
    pub file: String,
    /// 1-based line of the offending key or value (0 when unknown).
    pub line: u64,
    /// 1-based column.
    pub column: u64,
    /// What is wrong.
    pub message: String,
    hint: &'static str,
}

const HINT: &str = "(the format: `dst-load-controller run --print-scenario small-oscillation`; \
its JSON Schema: dst-load-controller/scenarios/scenario.schema.json)";

/// Parses a scenario document; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Spec, ParseError> {
    serde_saphyr::from_str::<Spec>(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        let message = e.without_snippet().to_string();
        // The message ends with the location, which the error puts first.
        let message = message
            .rsplit_once(" at line ")
            .filter(|(_, tail)| tail.contains("column"))
            .map_or(message.as_str(), |(head, _)| head)
            .trim()
            .to_string();
        // The YAML library's words for a list or a map where one value
        // belongs.
        let message = if message == "expected string scalar" {
            "expected one value (a number, a word or a duration such as 10s), not a list or a map"
                .to_string()
        } else {
            message
        };
        ParseError {
            file: file.to_string(),
            line,
            column,
            message,
            hint: HINT,
        }
    })
}

/// The JSON Schema of scenario files, pretty-printed (as published in
/// `dst-load-controller/scenarios/scenario.schema.json`).
pub fn schema() -> String {
    let schema = schemars::schema_for!(Spec);
    serde_json::to_string_pretty(&schema).expect("a schema serializes") + "\n"
}

/// A whole load test. Keys are kebab-case, as the command-line flags.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(title = "dst-load-controller scenario")]
pub struct Spec {
    /// The scenario's name in summaries and reports (default: the file's
    /// name without its extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the scenario is for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// How long churn changes the services, e.g. `60s` or `10m`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "DurationText")]
    pub duration: Duration,
    /// After churn stops, how long `run` waits for every stream to converge.
    #[serde(default = "default_settle", with = "humantime_serde")]
    #[schemars(with = "DurationText")]
    pub settle: Duration,
    /// The seed of the churn schedule (random when absent; every summary
    /// prints the seed used).
    /// Written as a string (exact for every seed; see `crate::seed`), read
    /// as a string or a number.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::seed::option"
    )]
    #[schemars(with = "Option<crate::seed::SeedText>")]
    pub seed: Option<u64>,
    /// Holds and jitter of oscillating services and StatefulSets, and the
    /// default timing of restarts and lifecycles.
    #[serde(default)]
    pub schedule: Schedule,
    /// The services, one group per churn pattern.
    #[serde(deserialize_with = "checked")]
    pub services: Services,
    /// The simulated proxies.
    #[serde(default, deserialize_with = "checked")]
    pub clients: Clients,
    /// The services' profiles (ServiceProfiles in a cluster, set on the
    /// mock), changed on a schedule. Absent: none, so profile streams get
    /// the default profile.
    #[serde(
        default,
        deserialize_with = "checked",
        skip_serializing_if = "Option::is_none"
    )]
    pub profiles: Option<Profiles>,
    /// How the in-process mock delivers updates (`run` without
    /// `--destination-addr`; `--mock-delay` and `--mock-delay-per-stream`
    /// override it). Absent: at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mock: Option<MockDelivery>,
    /// Gates judged at the end (e.g. `update_latency.p95<500ms`,
    /// `stale_streams==0`), unless `--slo` is given.
    #[serde(default, deserialize_with = "slos", serialize_with = "slo_texts")]
    #[schemars(with = "Vec<String>")]
    pub slos: Vec<crate::slo::Slo>,
}

/// How the in-process mock delivers updates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MockDelivery {
    /// Before each update on each stream: `50ms`, a uniform range
    /// `10ms..200ms`, or `none`.
    #[serde(default, with = "delay_text")]
    #[schemars(with = "String")]
    pub delay: crate::mock::server::Delay,
    /// Added to `delay`: this much per stream open on the mock, so that
    /// latency grows with the load.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "DurationText")]
    pub delay_per_stream: Duration,
}

/// A mock delay as its text (`none`, `50ms`, `10ms..200ms`).
mod delay_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::mock::server::Delay;

    pub fn serialize<S: Serializer>(d: &Delay, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(d)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Delay, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

fn default_settle() -> Duration {
    Duration::from_secs(10)
}

/// A duration as text: `500ms`, `10s`, `2m`, `1h 30m`.
#[derive(JsonSchema)]
#[schemars(transparent)]
#[allow(dead_code)]
struct DurationText(
    #[schemars(regex(
        pattern = r"^\s*[0-9]+(\.[0-9]+)?\s*[a-zµ]+(\s*[0-9]+(\.[0-9]+)?\s*[a-zµ]+)*\s*$"
    ))]
    String,
);

/// A duration a scenario may leave out, as text (`30s`): every such field
/// takes `#[serde(default, with = "OptionalDuration", skip_serializing_if =
/// "Option::is_none")]`, which serde reads as the functions below and
/// schemars as the type's schema.
pub struct OptionalDuration;

impl OptionalDuration {
    /// Writes it as text.
    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        humantime_serde::option::serialize(d, s)
    }

    /// Reads it from text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        humantime_serde::option::deserialize(d)
    }
}

impl JsonSchema for OptionalDuration {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        <Option<DurationText>>::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <Option<DurationText>>::json_schema(generator)
    }
}

/// When churn changes oscillating services and StatefulSets.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Schedule {
    /// How long a service stays at its minimum.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "DurationText")]
    pub min_hold: Duration,
    /// How long a service stays at its maximum.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "DurationText")]
    pub max_hold: Duration,
    /// A random delay up to this before each change (every pattern).
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "DurationText")]
    pub jitter: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            min_hold: Duration::from_secs(30),
            max_hold: Duration::from_secs(30),
            jitter: Duration::ZERO,
        }
    }
}

/// The services, one optional group per churn pattern (at least one).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Services {
    /// Services of a fixed size: `stable-svc-{i}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<Stable>,
    /// Services scaled between two sizes on the schedule: `oscillate-svc-{i}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oscillate: Option<Range>,
    /// Services rolled every interval, every address replaced and the count
    /// kept: `restart-svc-{i}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<Restart>,
    /// Services deleted after their lifetime and created again after a gap:
    /// `ephemeral-svc-{i}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<Ephemeral>,
    /// StatefulSets `sts-{i}` behind headless Services `sts-svc-{i}`, scaled
    /// between two sizes on the schedule. Clients also watch each pod below
    /// the minimum by its own name (`sts-{i}-{k}.sts-svc-{i}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statefulset: Option<Range>,
}

/// A group of services of a fixed size.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Stable {
    /// Services.
    pub count: u32,
    /// Endpoints of each.
    pub endpoints: u32,
}

/// A group of services scaled between two sizes (equal sizes: no scaling).
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Range {
    /// Services.
    pub count: u32,
    /// Endpoints at start, and at the low end.
    pub min_endpoints: u32,
    /// Endpoints at the high end.
    pub max_endpoints: u32,
}

/// A group of services rolled every interval.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Restart {
    /// Services.
    pub count: u32,
    /// Endpoints of each.
    pub endpoints: u32,
    /// How often each service rolls (default: the schedule's min-hold).
    #[serde(
        default,
        with = "OptionalDuration",
        skip_serializing_if = "Option::is_none"
    )]
    pub interval: Option<Duration>,
}

/// A group of services deleted and created again.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Ephemeral {
    /// Services.
    pub count: u32,
    /// Endpoints of each while it lives.
    pub endpoints: u32,
    /// How long each lives (default: twice the schedule's min-hold).
    #[serde(
        default,
        with = "OptionalDuration",
        skip_serializing_if = "Option::is_none"
    )]
    pub lifetime: Option<Duration>,
    /// How long each stays deleted (default: half the schedule's min-hold).
    #[serde(
        default,
        with = "OptionalDuration",
        skip_serializing_if = "Option::is_none"
    )]
    pub gap: Option<Duration>,
}

/// The simulated proxies: every watched authority gets the same streams.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Clients {
    /// Streams per watched authority: one per simulated proxy.
    #[serde(default = "one")]
    pub streams_per_service: u32,
    /// HTTP/2 connections the streams share (default: one per simulated
    /// proxy, i.e. streams-per-service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
    /// `GetProfile` streams per watched authority, beside its `Get` streams
    /// (a proxy holds one of each per target); scaled with them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub profile_streams_per_service: u32,
    /// Misbehaving proxies, reset storms and connection churn.
    #[serde(default, deserialize_with = "checked")]
    pub faults: Faults,
}

fn one() -> u32 {
    1
}

fn two() -> u32 {
    2
}

/// Every service's profile: generated routes (`route-K`, GET
/// `/api/route-K/[^/]*`, retryable, 1s timeout), changed on a schedule.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Profiles {
    /// Routes each profile has (one more after every odd change).
    #[serde(default = "two")]
    #[schemars(range(max = 1000))]
    pub routes: u32,
    /// Every this long, every profile changes: a route added and the retry
    /// ratio raised from 0.2 to 0.25, then both back (stamped, so the
    /// client times each change to each profile stream). Absent: never.
    #[serde(
        default,
        with = "OptionalDuration",
        skip_serializing_if = "Option::is_none"
    )]
    pub change_interval: Option<Duration>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Default for Clients {
    fn default() -> Self {
        Self {
            streams_per_service: 1,
            connections: None,
            profile_streams_per_service: 0,
            faults: Faults::default(),
        }
    }
}

impl Clients {
    /// The connections: as given, or one per simulated proxy.
    pub fn connections(&self) -> u32 {
        self.connections.unwrap_or(self.streams_per_service)
    }

    /// The load these clients put on `services` services.
    fn load(&self, services: Option<u64>) -> crate::limits::Load {
        crate::limits::Load {
            streams_per_service: u64::from(self.streams_per_service)
                + u64::from(self.profile_streams_per_service),
            services,
            connections: self.connections(),
        }
    }
}

/// Fault modes of the clients' streams (the client's flags of the same names).
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Faults {
    /// Percentage (0-100) of streams that take slow-reader-delay to handle
    /// each update (HTTP/2 flow control then pushes back on the server).
    #[serde(default)]
    #[schemars(range(max = 100))]
    pub slow_reader_percent: u8,
    /// How long a slow reader takes per update.
    #[serde(default = "one_second", with = "humantime_serde")]
    #[schemars(with = "DurationText")]
    pub slow_reader_delay: Duration,
    /// Percentage (0-100) of streams that read their first update and then
    /// never read again, keeping the stream open.
    #[serde(default)]
    #[schemars(range(max = 100))]
    pub stuck_percent: u8,
    /// Every this long, every stream is reset at once and re-Gets, as all
    /// proxies do after a controller restart.
    #[serde(
        default,
        with = "OptionalDuration",
        skip_serializing_if = "Option::is_none"
    )]
    pub reset_storm_interval: Option<Duration>,
    /// A random delay up to this added to each reset storm's interval.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "DurationText")]
    pub reset_storm_jitter: Duration,
    /// Every this long (plus up to half of it, per connection) each
    /// connection is closed and reopened, with its streams.
    #[serde(
        default,
        with = "OptionalDuration",
        skip_serializing_if = "Option::is_none"
    )]
    pub connection_churn_interval: Option<Duration>,
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            slow_reader_percent: 0,
            slow_reader_delay: one_second(),
            stuck_percent: 0,
            reset_storm_interval: None,
            reset_storm_jitter: Duration::ZERO,
            connection_churn_interval: None,
        }
    }
}

/// What a scenario asks for that cannot run; each says what to give
/// instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// A fault's share is no percentage.
    #[error("slow-reader-percent and stuck-percent are percentages (0-100)")]
    FaultPercent,
    /// The fault shares add up past every stream.
    #[error("slow-reader-percent ({slow}) and stuck-percent ({stuck}) add up to more than 100")]
    FaultPercents {
        /// Slow readers' share.
        slow: u8,
        /// Stuck streams' share.
        stuck: u8,
    },
    /// Slow readers that are not slow.
    #[error("slow-reader-delay must be above zero for slow readers (e.g. 1s)")]
    SlowReaderDelay,
    /// Reset storms with no time between them.
    #[error("reset-storm-interval must be above zero (e.g. 60s)")]
    ResetStormInterval,
    /// Connection churn with no time between reconnections.
    #[error("connection-churn-interval must be above zero (e.g. 30s)")]
    ConnectionChurnInterval,
    /// More profile routes than a profile is given.
    #[error("profiles: {0} routes is too many: at most 1000")]
    ProfileRoutes(u32),
    /// Profile changes faster than every 100 ms.
    #[error(
        "profiles: change-interval must be at least 100ms (e.g. 10s), or absent for no changes"
    )]
    ProfileChangeInterval,
    /// No streams, or no connection to carry them.
    #[error("streams-per-service and connections must be at least 1")]
    NoStreams,
    /// More load than one client holds.
    #[error(transparent)]
    Load(#[from] crate::limits::LoadError),
    /// No service group.
    #[error("no services: give at least one of stable, oscillate, restart, ephemeral, statefulset")]
    NoServices,
    /// More services than the address plan has room for.
    #[error(
        "at most {MAX_SERVICES} services in all (each draws its endpoints from its own /20), got {0}"
    )]
    TooManyServices(u32),
    /// A group's count out of range.
    #[error("{group}: count must be from 1 to {MAX_SERVICES}, got {count}")]
    GroupCount {
        /// The group's pattern.
        group: &'static str,
        /// As given.
        count: u32,
    },
    /// A range upside down.
    #[error("{group}: min-endpoints ({min}) is greater than max-endpoints ({max})")]
    MinAboveMax {
        /// The group's pattern.
        group: &'static str,
        /// As given.
        min: u32,
        /// As given.
        max: u32,
    },
    /// More endpoints than a service's /20 holds.
    #[error("{0}: at most {MAX_ENDPOINTS} endpoints per service (each service draws from a /20)")]
    TooManyEndpoints(&'static str),
    /// An oscillation between equal sizes.
    #[error(
        "oscillate: min-endpoints and max-endpoints are both {0}: nothing would oscillate (give a fixed size as stable)"
    )]
    NothingOscillates(u32),
    /// A pattern that replaces endpoints with none to replace.
    #[error("{0}: endpoints must be at least 1 (a {0} replaces endpoints)")]
    NoEndpoints(&'static str),
    /// A run of no time.
    #[error("duration must be above zero (e.g. 60s)")]
    Duration,
    /// Scaling with no time between changes.
    #[error("schedule: min-hold and max-hold are both zero")]
    Holds,
    /// Restarts with no time between them.
    #[error("restart: the interval (or the schedule's min-hold) must be above zero")]
    RestartInterval,
    /// Ephemeral services that live or stay gone no time.
    #[error("ephemeral: lifetime and gap (or the schedule's min-hold) must be above zero")]
    EphemeralTimes,
    /// `--max-endpoints` for a scenario whose services do not scale.
    #[error(
        "the {0} scenario has no services that scale (oscillate or statefulset): give --min-endpoints only"
    )]
    NoScaling(String),
    /// The scenario with the command line's overrides is invalid.
    #[error("{why} (the {scenario} scenario with the flags given)")]
    Overridden {
        /// The scenario's name.
        scenario: String,
        /// What is wrong.
        why: Box<Invalid>,
    },
}

/// A part of the document with checks beyond its types.
trait Check {
    fn check(&self) -> Result<(), Invalid>;
}

/// Deserializes `T` and checks it, so that the error carries the location
/// of `T` in the file.
fn checked<'de, D: Deserializer<'de>, T: Deserialize<'de> + Check>(d: D) -> Result<T, D::Error> {
    let t = T::deserialize(d)?;
    t.check().map_err(serde::de::Error::custom)?;
    Ok(t)
}

/// A scenario's SLOs are parsed as the file is read, so that a bad one is
/// an error that names the file, and nothing parses them again.
fn slos<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<crate::slo::Slo>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .collect()
}

/// ...and written back as the expressions they were given as.
fn slo_texts<S: serde::Serializer>(slos: &[crate::slo::Slo], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(slos.iter().map(|slo| slo.expr.as_str()))
}

impl Check for Faults {
    fn check(&self) -> Result<(), Invalid> {
        if self.slow_reader_percent > 100 || self.stuck_percent > 100 {
            return Err(Invalid::FaultPercent);
        }
        if u16::from(self.slow_reader_percent) + u16::from(self.stuck_percent) > 100 {
            return Err(Invalid::FaultPercents {
                slow: self.slow_reader_percent,
                stuck: self.stuck_percent,
            });
        }
        if self.slow_reader_percent > 0 && self.slow_reader_delay.is_zero() {
            return Err(Invalid::SlowReaderDelay);
        }
        if self.reset_storm_interval.is_some_and(|d| d.is_zero()) {
            return Err(Invalid::ResetStormInterval);
        }
        if self.connection_churn_interval.is_some_and(|d| d.is_zero()) {
            return Err(Invalid::ConnectionChurnInterval);
        }
        Ok(())
    }
}

impl Faults {
    /// Checks the fault modes (the client's flags share these checks).
    pub fn validate(&self) -> Result<(), Invalid> {
        self.check()
    }
}

impl Check for Option<Profiles> {
    fn check(&self) -> Result<(), Invalid> {
        let Some(p) = self else { return Ok(()) };
        if p.routes > 1000 {
            return Err(Invalid::ProfileRoutes(p.routes));
        }
        if p.change_interval
            .is_some_and(|d| d < Duration::from_millis(100))
        {
            return Err(Invalid::ProfileChangeInterval);
        }
        Ok(())
    }
}

impl Check for Clients {
    fn check(&self) -> Result<(), Invalid> {
        if self.streams_per_service == 0 || self.connections == Some(0) {
            return Err(Invalid::NoStreams);
        }
        Ok(crate::limits::check_load(
            self.load(None),
            "streams-per-service",
            "connections",
        )?)
    }
}

impl Check for Services {
    fn check(&self) -> Result<(), Invalid> {
        if self.groups().next().is_none() {
            return Err(Invalid::NoServices);
        }
        if self.count() > MAX_SERVICES {
            return Err(Invalid::TooManyServices(self.count()));
        }
        for g in self.groups() {
            let group = g.pattern.as_str();
            if g.count == 0 || g.count > MAX_SERVICES {
                return Err(Invalid::GroupCount {
                    group,
                    count: g.count,
                });
            }
            if g.min > g.max {
                return Err(Invalid::MinAboveMax {
                    group,
                    min: g.min,
                    max: g.max,
                });
            }
            if g.max > MAX_ENDPOINTS {
                return Err(Invalid::TooManyEndpoints(group));
            }
            if g.pattern == Pattern::Oscillate && !g.oscillates() {
                return Err(Invalid::NothingOscillates(g.min));
            }
            let needs_endpoints = matches!(g.pattern, Pattern::Restart | Pattern::Ephemeral);
            if needs_endpoints && g.min == 0 {
                return Err(Invalid::NoEndpoints(group));
            }
        }
        Ok(())
    }
}

/// One group of services, whatever its pattern.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// The churn pattern.
    pub pattern: Pattern,
    /// Services.
    pub count: u32,
    /// Endpoints at start and at the low end.
    pub min: u32,
    /// Endpoints at the high end (equal to min when the count is fixed).
    pub max: u32,
}

impl Group {
    /// Whether its services change size.
    pub fn oscillates(&self) -> bool {
        self.min != self.max
    }
}

impl Services {
    /// The groups present, in churn's order ([`Pattern::ALL`]).
    pub fn groups(&self) -> impl Iterator<Item = Group> + '_ {
        Pattern::ALL.into_iter().filter_map(|pattern| {
            let (count, min, max) = match pattern {
                Pattern::Stable => self.stable.map(|s| (s.count, s.endpoints, s.endpoints))?,
                Pattern::Oscillate => self
                    .oscillate
                    .map(|r| (r.count, r.min_endpoints, r.max_endpoints))?,
                Pattern::Restart => self.restart.map(|r| (r.count, r.endpoints, r.endpoints))?,
                Pattern::Ephemeral => self
                    .ephemeral
                    .map(|e| (e.count, e.endpoints, e.endpoints))?,
                Pattern::StatefulSet => self
                    .statefulset
                    .map(|r| (r.count, r.min_endpoints, r.max_endpoints))?,
            };
            Some(Group {
                pattern,
                count,
                min,
                max,
            })
        })
    }

    /// Services in every group.
    pub fn count(&self) -> u32 {
        self.groups().map(|g| g.count).fold(0, u32::saturating_add)
    }
}

impl Spec {
    /// How often restarted services roll.
    pub fn restart_interval(&self) -> Duration {
        self.services
            .restart
            .and_then(|r| r.interval)
            .unwrap_or(self.schedule.min_hold)
    }

    /// How long an ephemeral service lives, and stays gone.
    pub fn ephemeral_lifetime_and_gap(&self) -> (Duration, Duration) {
        let e = self.services.ephemeral;
        (
            e.and_then(|e| e.lifetime)
                .unwrap_or(self.schedule.min_hold * 2),
            e.and_then(|e| e.gap).unwrap_or(self.schedule.min_hold / 2),
        )
    }

    /// Checks what spans sections (the sections check themselves as they
    /// are read).
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.duration.is_zero() {
            return Err(Invalid::Duration);
        }
        let scales = self.services.groups().any(|g| {
            g.oscillates() && matches!(g.pattern, Pattern::Oscillate | Pattern::StatefulSet)
        });
        if scales && self.schedule.min_hold.is_zero() && self.schedule.max_hold.is_zero() {
            return Err(Invalid::Holds);
        }
        if self.services.restart.is_some() && self.restart_interval().is_zero() {
            return Err(Invalid::RestartInterval);
        }
        if self.services.ephemeral.is_some() {
            let (lifetime, gap) = self.ephemeral_lifetime_and_gap();
            if lifetime.is_zero() || gap.is_zero() {
                return Err(Invalid::EphemeralTimes);
            }
        }
        self.clients.faults.check()?;
        self.services.check()?;
        let services = self.authorities("").len() as u64;
        Ok(crate::limits::check_load(
            self.clients.load(Some(services)),
            "streams-per-service",
            "connections",
        )?)
    }

    /// Every authority the clients watch in `namespace`: each group's
    /// services in churn's order (and each StatefulSet pod below the
    /// minimum by its own name, after its service).
    pub fn authorities(&self, namespace: &str) -> Vec<String> {
        self.authorities_in(namespace, "cluster.local")
    }

    /// [`Spec::authorities`] in a cluster of domain `domain`.
    pub fn authorities_in(&self, namespace: &str, domain: &str) -> Vec<String> {
        self.services
            .groups()
            .flat_map(|g| (0..g.count).flat_map(move |i| g.authorities(namespace, domain, i)))
            .collect()
    }

    /// Streams in all: every authority's.
    pub fn streams(&self, namespace: &str) -> u64 {
        self.authorities(namespace).len() as u64 * u64::from(self.clients.streams_per_service)
    }

    /// The scenario's name (`custom` when it has none).
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("custom")
    }

    /// Applies command-line overrides (see [`Overrides`]).
    pub fn with(mut self, o: &Overrides) -> Result<Self, Invalid> {
        if let Some(n) = o.services {
            let first = self.services.groups().next().map_or(0, |g| g.count);
            self.services.set_counts(n, first);
        }
        if let Some(min) = o.min_endpoints {
            self.services.set_min(min);
        }
        if let Some(max) = o.max_endpoints {
            let ranges = [
                self.services.oscillate.as_mut(),
                self.services.statefulset.as_mut(),
            ];
            let mut any = false;
            for r in ranges.into_iter().flatten() {
                r.max_endpoints = max;
                any = true;
            }
            let fixed = self.services.groups().map(|g| g.min).all(|m| m == max);
            if !any && !fixed {
                return Err(Invalid::NoScaling(self.name().to_string()));
            }
        }
        if let Some(d) = o.min_hold {
            self.schedule.min_hold = d;
        }
        if let Some(d) = o.max_hold {
            self.schedule.max_hold = d;
        }
        if let Some(d) = o.jitter {
            self.schedule.jitter = d;
        }
        if let Some(d) = o.duration {
            self.duration = d;
        }
        if let Some(d) = o.settle {
            self.settle = d;
        }
        if o.seed.is_some() {
            self.seed = o.seed;
        }
        // One connection per simulated proxy unless told otherwise.
        let connections = o
            .connections
            .or(o.streams_per_service)
            .unwrap_or(self.clients.connections());
        let base = self.clients.streams_per_service;
        let streams = o.streams_per_service.unwrap_or(base);
        let scaled = |n: u32| ((f64::from(n) * o.scale).ceil() as u32).max(1);
        self.clients.streams_per_service = scaled(streams);
        self.clients.connections = Some(scaled(connections));
        if self.clients.profile_streams_per_service > 0 {
            // Profile streams keep their share of the Get streams (a
            // proxy's one of each per target stays one of each).
            let profiles = (u64::from(self.clients.profile_streams_per_service)
                * u64::from(streams))
            .div_ceil(u64::from(base.max(1)))
            .min(u64::from(u32::MAX)) as u32;
            self.clients.profile_streams_per_service = scaled(profiles);
        }
        self.validate()
            .and_then(|()| self.clients.check())
            .map_err(|e| Invalid::Overridden {
                scenario: self.name().to_string(),
                why: Box::new(e),
            })?;
        Ok(self)
    }
}

impl Services {
    /// The first group gets `n` services; every other keeps its share of
    /// the first's `first` (rounded up, at least 1).
    fn set_counts(&mut self, n: u32, first: u32) {
        let share = |c: u32| {
            if first == 0 {
                n
            } else {
                (u64::from(c) * u64::from(n))
                    .div_ceil(u64::from(first))
                    .max(1)
                    .min(u64::from(u32::MAX)) as u32
            }
        };
        let mut is_first = true;
        let mut set = |count: &mut u32| {
            *count = if std::mem::take(&mut is_first) {
                n
            } else {
                share(*count)
            };
        };
        // In churn's order, as groups() lists them.
        for pattern in Pattern::ALL {
            match pattern {
                Pattern::Stable => self.stable.as_mut().map(|s| set(&mut s.count)),
                Pattern::Oscillate => self.oscillate.as_mut().map(|r| set(&mut r.count)),
                Pattern::Restart => self.restart.as_mut().map(|r| set(&mut r.count)),
                Pattern::Ephemeral => self.ephemeral.as_mut().map(|e| set(&mut e.count)),
                Pattern::StatefulSet => self.statefulset.as_mut().map(|r| set(&mut r.count)),
            };
        }
    }

    /// Every group starts at (and fixed groups stay at) `min` endpoints.
    fn set_min(&mut self, min: u32) {
        if let Some(s) = &mut self.stable {
            s.endpoints = min;
        }
        if let Some(r) = &mut self.restart {
            r.endpoints = min;
        }
        if let Some(e) = &mut self.ephemeral {
            e.endpoints = min;
        }
        for r in [&mut self.oscillate, &mut self.statefulset]
            .into_iter()
            .flatten()
        {
            r.min_endpoints = min;
        }
    }
}

impl Group {
    /// The authorities of service `i` of this group in `namespace`: the
    /// service's and, for StatefulSets, each pod's below the minimum by
    /// name (`sts-{i}-{k}.sts-svc-{i}...`: pods that exist all along).
    pub fn authorities(&self, namespace: &str, domain: &str, i: u32) -> Vec<String> {
        let fqdn = |name: &str| format!("{name}.{namespace}.svc.{domain}:8080");
        let service = self.pattern.service_name(i);
        let pods = match self.pattern {
            Pattern::StatefulSet => self.min,
            _ => 0,
        };
        std::iter::once(fqdn(&service))
            .chain(
                (0..pods)
                    .map(|k| fqdn(&format!("{}-{k}.{service}", self.pattern.workload_name(i)))),
            )
            .collect()
    }
}

/// Command-line numbers laid over a scenario (`run`'s flags).
#[derive(Clone, Debug, PartialEq)]
pub struct Overrides {
    /// The first group's services; the others keep their share.
    pub services: Option<u32>,
    /// Every group's endpoints at start (and of fixed groups).
    pub min_endpoints: Option<u32>,
    /// The high end of scaling groups.
    pub max_endpoints: Option<u32>,
    /// Streams per service, before `scale`.
    pub streams_per_service: Option<u32>,
    /// Connections, before `scale`.
    pub connections: Option<u32>,
    /// Multiplies streams per service and connections.
    pub scale: f64,
    /// The schedule's min-hold.
    pub min_hold: Option<Duration>,
    /// The schedule's max-hold.
    pub max_hold: Option<Duration>,
    /// The schedule's jitter.
    pub jitter: Option<Duration>,
    /// The duration.
    pub duration: Option<Duration>,
    /// The settle time.
    pub settle: Option<Duration>,
    /// The seed.
    pub seed: Option<u64>,
}

impl Default for Overrides {
    fn default() -> Self {
        Self {
            services: None,
            min_endpoints: None,
            max_endpoints: None,
            streams_per_service: None,
            connections: None,
            scale: 1.0,
            min_hold: None,
            max_hold: None,
            jitter: None,
            duration: None,
            settle: None,
            seed: None,
        }
    }
}

impl fmt::Display for Services {
    /// `10 oscillate 10..200, 2 ephemeral 20`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, g) in self.groups().enumerate() {
            if n > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} {} {}", g.count, g.pattern.as_str(), g.min)?;
            if g.oscillates() {
                write!(f, "..{}", g.max)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(doc: &str) -> ParseError {
        parse("t.yaml", doc).expect_err("refused")
    }

    const MIN: &str = "duration: 10s\nservices:\n  stable: {count: 1, endpoints: 2}\n";

    #[test]
    fn a_minimal_document_takes_the_defaults() {
        let s = parse("t.yaml", MIN).unwrap();
        assert_eq!(s.settle, Duration::from_secs(10));
        assert_eq!(s.clients, Clients::default());
        assert_eq!(s.clients.connections(), 1);
        assert_eq!(s.schedule, Schedule::default());
        assert_eq!(
            s.authorities("ns"),
            ["stable-svc-0.ns.svc.cluster.local:8080"]
        );
        s.validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_name_line_and_column() {
        let e = err(
            "duration: 10s\nservices:\n  stable: {count: 1, endpoints: 2}\n  oscilate: {count: 1}\n",
        );
        assert_eq!((e.line, e.column), (4, 3), "{e}");
        assert!(e.message.contains("unknown field `oscilate`"), "{e}");
        assert!(e.to_string().starts_with("t.yaml:4:3: "), "{e}");

        let e = err(&format!(
            "{MIN}clients:\n  faults:\n    stuck-percent: 150\n"
        ));
        assert_eq!(e.line, 6, "{e}");
        assert!(e.message.contains("percentages"), "{e}");

        // A group's checks point at the group.
        let e = err(
            "duration: 10s\nservices:\n  oscillate:\n    count: 2\n    min-endpoints: 9\n    max-endpoints: 3\n",
        );
        assert_eq!(e.line, 3, "{e}");
        assert!(
            e.message
                .contains("min-endpoints (9) is greater than max-endpoints (3)"),
            "{e}"
        );

        // Parsed once, as the file is read; written back (in reports) as given.
        let spec = parse(
            "t.yaml",
            &format!("{MIN}slos: [\"errors == 0\", \"update_latency.p99<1s\"]\n"),
        )
        .unwrap();
        assert_eq!(spec.slos[1].bound, 1.0);
        let written = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            written["slos"],
            serde_json::json!(["errors==0", "update_latency.p99<1s"])
        );

        let e = err(&format!("{MIN}slos: [\"stale_streams==0\", \"p99<1s\"]\n"));
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("invalid SLO 'p99<1s'"), "{e}");

        let e = err("duration: ten seconds\nservices: {stable: {count: 1, endpoints: 1}}\n");
        assert_eq!(e.line, 1, "{e}");
        let e = err("duration: 10s\nservices: {}\n");
        assert!(e.message.contains("no services"), "{e}");
        let e = err("services: {stable: {count: 1, endpoints: 1}}\n");
        assert!(e.message.contains("duration"), "{e}");
    }

    #[test]
    fn profiles_take_defaults_and_refuse_what_cannot_run() {
        let s = parse("t.yaml", &format!("{MIN}profiles: {{}}\n")).unwrap();
        assert_eq!(
            s.profiles,
            Some(Profiles {
                routes: 2,
                change_interval: None
            })
        );
        assert_eq!(parse("t.yaml", MIN).unwrap().profiles, None);
        let e = err(&format!("{MIN}profiles: {{routes: 1001}}\n"));
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("at most 1000"), "{e}");
        let e = err(&format!("{MIN}profiles: {{change-interval: 0s}}\n"));
        assert!(
            e.message.contains("change-interval must be at least 100ms"),
            "{e}"
        );
        let e = err(&format!("{MIN}profiles: {{route: 3}}\n"));
        assert!(e.message.contains("unknown field `route`"), "{e}");
    }

    #[test]
    fn profile_streams_keep_their_share_of_the_get_streams() {
        let s = parse(
            "t.yaml",
            &format!(
                "{MIN}clients: {{streams-per-service: 50, profile-streams-per-service: 25}}\n"
            ),
        )
        .unwrap();
        let grown = s
            .clone()
            .with(&Overrides {
                streams_per_service: Some(300),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(grown.clients.streams_per_service, 300);
        assert_eq!(grown.clients.profile_streams_per_service, 150);
        let scaled = s
            .with(&Overrides {
                scale: 0.1,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(scaled.clients.streams_per_service, 5);
        assert_eq!(scaled.clients.profile_streams_per_service, 3);
    }

    #[test]
    fn the_benchmarks_scenario_files_parse_and_validate() {
        for (name, text) in [
            (
                "redline-scenario.yaml",
                include_str!("../../hack/redline-scenario.yaml"),
            ),
            (
                "redline-discovery-scenario.yaml",
                include_str!("../../hack/redline-discovery-scenario.yaml"),
            ),
        ] {
            let spec = parse(name, text).unwrap_or_else(|e| panic!("{e}"));
            spec.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn every_built_in_scenario_parses_and_validates() {
        for s in Scenario::ALL {
            let spec = s.spec();
            assert_eq!(spec.name(), s.name());
            spec.validate().unwrap();
            assert!(!spec.slos.is_empty(), "{s:?}");
        }
        let p = Scenario::RedLine.spec();
        assert_eq!(
            p.services.oscillate,
            Some(Range {
                count: 50,
                min_endpoints: 100,
                max_endpoints: 200
            })
        );
        assert_eq!(p.clients.streams_per_service, 500);
        let p = Scenario::LargeRollout.spec();
        assert_eq!(p.schedule.jitter, Duration::ZERO);
        let r = Scenario::RollingRestart.spec();
        assert_eq!(r.restart_interval(), Duration::from_secs(10));
        assert_eq!(
            r.ephemeral_lifetime_and_gap(),
            (Duration::from_secs(20), Duration::from_secs(5))
        );
    }

    #[test]
    fn overrides_set_the_first_group_and_keep_the_others_share() {
        let o = Overrides {
            services: Some(2),
            min_endpoints: Some(3),
            scale: 0.05,
            ..Overrides::default()
        };
        let r = Scenario::RollingRestart.spec().with(&o).unwrap();
        assert_eq!(r.services.restart.unwrap().count, 2);
        assert_eq!(r.services.ephemeral.unwrap().count, 1);
        assert_eq!(r.services.ephemeral.unwrap().endpoints, 3);
        assert_eq!(r.clients.streams_per_service, 5);
        assert_eq!(r.clients.connections, Some(5));
        let e = Scenario::RollingRestart
            .spec()
            .with(&Overrides {
                max_endpoints: Some(30),
                ..Overrides::default()
            })
            .unwrap_err()
            .to_string();
        assert!(e.contains("--min-endpoints only"), "{e}");
        // Equal bounds on fixed services are fine.
        let b = Scenario::Baseline
            .spec()
            .with(&Overrides {
                min_endpoints: Some(4),
                max_endpoints: Some(4),
                ..Overrides::default()
            })
            .unwrap();
        assert_eq!(b.services.stable.unwrap().endpoints, 4);
        let e = Scenario::SmallOscillation
            .spec()
            .with(&Overrides {
                min_endpoints: Some(9),
                max_endpoints: Some(3),
                ..Overrides::default()
            })
            .unwrap_err();
        // Shown once, also as an anyhow chain (`{:#}`, as main prints it).
        assert_eq!(
            format!("{:#}", anyhow::Error::from(e.clone())),
            e.to_string()
        );
        let e = e.to_string();
        assert!(e.contains("greater than"), "{e}");
    }

    #[test]
    fn statefulsets_are_watched_by_service_and_by_pod() {
        let s = Scenario::Statefulset
            .spec()
            .with(&Overrides {
                services: Some(2),
                min_endpoints: Some(2),
                ..Overrides::default()
            })
            .unwrap();
        assert_eq!(
            s.authorities("ns"),
            [
                "sts-svc-0.ns.svc.cluster.local:8080",
                "sts-0-0.sts-svc-0.ns.svc.cluster.local:8080",
                "sts-0-1.sts-svc-0.ns.svc.cluster.local:8080",
                "sts-svc-1.ns.svc.cluster.local:8080",
                "sts-1-0.sts-svc-1.ns.svc.cluster.local:8080",
                "sts-1-1.sts-svc-1.ns.svc.cluster.local:8080",
            ]
        );
    }

    #[test]
    fn the_published_schema_is_the_generated_one() {
        let published = include_str!("../scenarios/scenario.schema.json");
        assert!(
            published == schema(),
            "dst-load-controller/scenarios/scenario.schema.json is out of date: \
             regenerate it with `cargo run -- run --print-scenario-schema > dst-load-controller/scenarios/scenario.schema.json`"
        );
    }
}
