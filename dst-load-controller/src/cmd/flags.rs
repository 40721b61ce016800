//! Flags shared by several front doors, and the clap side of the engines'
//! value types.

use crate::{
    logging::{self, InvalidFilter, LogFormat},
    red_line::Dimension,
};

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

/// Flags of `run --find-red-line`.
#[derive(Clone, Debug, clap::Args)]
pub struct RedLineArgs {
    /// Find the red line (see `run`).
    #[arg(long)]
    pub find_red_line: bool,

    /// What grows: `streams` (streams per service, one connection each) or
    /// `services` (the scenario's first group; the others keep their share).
    #[arg(long, value_enum, default_value_t = Dimension::Streams, requires = "find_red_line")]
    pub red_line_dimension: Dimension,

    /// The largest load tried (default: 64 times the scenario's).
    #[arg(long, requires = "find_red_line")]
    pub red_line_max: Option<u32>,

    /// Stop bisecting when the last pass and the first fail are this close:
    /// `10%` or `0.1`.
    #[arg(long, default_value = "10%", value_parser = crate::verdicts::parse_fraction, requires = "find_red_line")]
    pub red_line_precision: f64,
}

impl RedLineArgs {
    /// Checks the flags.
    pub fn validate(&self) -> Result<(), String> {
        if self.red_line_max == Some(0) {
            return Err("--red-line-max must be at least 1".into());
        }
        if !(self.red_line_precision > 0.0 && self.red_line_precision < 1.0) {
            return Err(format!(
                "--red-line-precision must be above 0% and below 100%, got {}",
                self.red_line_precision
            ));
        }
        Ok(())
    }
}

impl clap::ValueEnum for Dimension {
    fn value_variants<'a>() -> &'a [Self] {
        &[Dimension::Streams, Dimension::Services]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        use clap::builder::PossibleValue;
        Some(match self {
            Dimension::Streams => PossibleValue::new("streams")
                .help("Streams per service (and connections with them)"),
            Dimension::Services => {
                PossibleValue::new("services").help("Services of the scenario's first group")
            }
        })
    }
}
