//! The log subscriber every subcommand installs (its flags, `--log-level`
//! and `--log-format`, are `cmd::flags::LogArgs`).

use std::{
    collections::HashMap,
    ffi::OsString,
    io::{IsTerminal, Write},
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// How log lines are written.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// The log filter could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid --log-level '{filter}': {why}; expected RUST_LOG syntax such as 'info' or 'dst_load_controller=debug'"
)]
pub struct InvalidFilter {
    filter: String,
    why: tracing_subscriber::filter::ParseError,
}

/// Says when a repeated line is due: at most one per key every `every`,
/// with how many were held back since the last. For failures that repeat
/// by the thousand (every stream's error, every failed accept), so that
/// they are told without flooding the log.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    seen: Mutex<HashMap<String, Seen>>,
}

#[derive(Debug)]
struct Seen {
    logged: Instant,
    since: u64,
}

impl Throttle {
    /// At most one line per key every `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            seen: Mutex::default(),
        }
    }

    /// Notes one occurrence of `key` at `now`: `Some(n)` when a line is
    /// due, `n` the occurrences held back since the last line.
    pub fn due(&self, key: &str, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock().expect("throttle lock");
        match seen.get_mut(key) {
            Some(s) if now.duration_since(s.logged) < self.every => {
                s.since += 1;
                None
            }
            Some(s) => {
                s.logged = now;
                Some(std::mem::take(&mut s.since))
            }
            None => {
                seen.insert(
                    key.to_string(),
                    Seen {
                        logged: now,
                        since: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

/// Installs the global subscriber with `filter` (RUST_LOG syntax) and
/// `format`. Logs go to stderr so that summaries on stdout stay
/// machine-readable.
pub fn init(filter: &str, format: LogFormat) -> Result<(), InvalidFilter> {
    let env_filter = EnvFilter::try_new(filter).map_err(|why| InvalidFilter {
        filter: filter.to_string(),
        why,
    })?;
    let registry = tracing_subscriber::registry().with(env_filter);
    // A second init (several runs in one test process) is harmless.
    let _ = match format {
        LogFormat::Plain => registry
            .with(fmt::layer().with_writer(|| AroundBars).with_ansi(colour(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR"),
            )))
            .try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(|| AroundBars))
            .try_init(),
    };
    Ok(())
}

/// The process's progress bars, drawn on standard error (hidden when it is
/// not a terminal). Log lines go through [`AroundBars`], which clears them
/// around each line, so that a line does not tear a bar.
pub fn progress() -> &'static indicatif::MultiProgress {
    static BARS: OnceLock<indicatif::MultiProgress> = OnceLock::new();
    BARS.get_or_init(indicatif::MultiProgress::new)
}

/// Standard error, with the progress bars cleared while a line is written.
struct AroundBars;

impl Write for AroundBars {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        progress().suspend(|| std::io::stderr().write(buf))
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        progress().suspend(|| std::io::stderr().write_all(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Whether plain log lines are coloured: only on a terminal, and not when
/// `NO_COLOR` is set to anything but the empty string (no-color.org).
fn colour(stderr_is_terminal: bool, no_color: Option<OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())));
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None));
        assert!(!colour(false, Some("".into())));
    }
}
