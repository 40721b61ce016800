//! Flags shared by several front doors, and the clap side of the engines'
//! value types.

use crate::logging::{self, InvalidFilter, LogFormat};

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

impl LogArgs {
    /// Installs the global subscriber (see [`logging::init`]).
    pub fn init(&self) -> Result<(), InvalidFilter> {
        logging::init(&self.log_level, self.log_format)
    }
}

impl clap::ValueEnum for LogFormat {
    fn value_variants<'a>() -> &'a [Self] {
        &[LogFormat::Plain, LogFormat::Json]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        use clap::builder::PossibleValue;
        Some(match self {
            LogFormat::Plain => PossibleValue::new("plain").help("Human-readable lines"),
            LogFormat::Json => PossibleValue::new("json").help("One JSON object per line"),
        })
    }
}
