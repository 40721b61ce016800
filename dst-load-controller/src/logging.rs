//! Logging flags shared by every subcommand.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// `--log-level` and `--log-format`.
#[derive(Clone, Debug, clap::Args)]
pub struct LogArgs {
    /// Log filter in RUST_LOG syntax, e.g. `info` or `dst_load_controller=debug,warn`.
    #[arg(long, env = "RUST_LOG", default_value = "info", global = true)]
    log_level: String,

    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Plain, global = true)]
    log_format: LogFormat,
}

/// How log lines are written.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// The log filter could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid --log-level '{filter}': {source}; expected RUST_LOG syntax such as 'info' or 'dst_load_controller=debug'"
)]
pub struct InvalidFilter {
    filter: String,
    #[source]
    source: tracing_subscriber::filter::ParseError,
}

impl LogArgs {
    /// Installs the global subscriber. Logs go to stderr so that summaries on
    /// stdout stay machine-readable.
    pub fn init(&self) -> Result<(), InvalidFilter> {
        let filter = EnvFilter::try_new(&self.log_level).map_err(|source| InvalidFilter {
            filter: self.log_level.clone(),
            source,
        })?;
        let registry = tracing_subscriber::registry().with(filter);
        // A second init (several runs in one test process) is harmless.
        let _ = match self.log_format {
            LogFormat::Plain => registry
                .with(fmt::layer().with_writer(std::io::stderr))
                .try_init(),
            LogFormat::Json => registry
                .with(fmt::layer().json().with_writer(std::io::stderr))
                .try_init(),
        };
        Ok(())
    }
}
