//! The command line's front doors: the top-level command here, and one
//! module per subcommand that owns its flags (`churn`, `cleanup`, `client`,
//! `compare`, `mock_dst`, `proxy_env`, `report`, `run` so far; the other subcommands' flags still live beside their engines and
//! move here one by one, see `hack/check-layers.py`'s clap check).

pub mod churn;
pub mod cleanup;
pub mod client;
pub mod compare;
pub mod flags;
pub mod kube_burner;
pub mod mock_dst;
pub mod output;
pub mod proxy_env;
pub mod report;
pub mod run;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use flags::LogArgs;

/// Exit status of a run that failed (as opposed to a usage error, which clap
/// and [`usage_error`] report with status 2).
pub const EXIT_FAILURE: u8 = 1;

/// Exit status of a usage error: bad flags, or an address that cannot be
/// bound.
pub const EXIT_USAGE: u8 = 2;

/// Load tests for Linkerd's Destination service.
#[derive(Debug, Parser)]
#[command(name = "dst-load-controller", version = crate::VERSION, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    log: LogArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once per process: boxing a variant would save nothing"
)]
enum Command {
    /// Create stable and oscillating Services/Deployments and scale them with jitter.
    Churn(churn::Args),
    /// Watch the Destination service with many `Get` streams, the way proxies do.
    Client(client::Args),
    /// Delete every object that `churn` created in a namespace, and nothing else.
    Cleanup(cleanup::Args),
    /// Serve a mock Destination service, changeable over HTTP.
    MockDst(mock_dst::Args),
    /// Print the environment (and write the identity directory) of a real
    /// Linkerd proxy whose control plane is `mock-dst`.
    ProxyEnv(proxy_env::Args),
    /// Run a whole scenario locally (mock Destination, churn, client) and summarize it.
    Run(run::Args),
    /// Judge SLO gates from Prometheus, for clients running as many replicas.
    Report(report::Args),
    /// Compare two reports: better, worse or the same (exit 4 when worse).
    Compare(compare::Args),
    /// Print shell completions: `dst-load-controller completions bash >
    /// /etc/bash_completion.d/dst-load-controller` (or zsh, fish, elvish,
    /// powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

impl Cli {
    /// Validates the flags, then runs the subcommand to completion on a
    /// multi-threaded runtime. Usage errors exit with status 2 before any side
    /// effect.
    pub fn run(self) -> ExitCode {
        install_panic_hook();
        let Self { log, command } = self;
        if let Err(msg) = command.validate() {
            usage_error(msg);
        }
        if let Err(error) = log.init() {
            usage_error(error.to_string());
        }
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(error) => {
                eprintln!("error: cannot start the async runtime: {error}");
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        let result = rt.block_on(async move {
            match command {
                Command::Churn(args) => args.run().await,
                Command::Client(args) => args.run().await,
                Command::Cleanup(args) => args.run().await,
                Command::MockDst(args) => args.run().await,
                Command::ProxyEnv(args) => args.run().await,
                Command::Run(args) => args.run().await,
                Command::Report(args) => args.run().await,
                Command::Compare(args) => args.run().await,
                Command::Completions { shell } => {
                    clap_complete::generate(
                        shell,
                        &mut Cli::command(),
                        "dst-load-controller",
                        &mut std::io::stdout(),
                    );
                    Ok(ExitCode::SUCCESS)
                }
            }
        });
        match result {
            Ok(code) => code,
            // An address in use is fixed on the command line: one message
            // naming the flag, and the status of a usage error.
            Err(error) if error.chain().any(|e| e.is::<crate::admin::BindError>()) => {
                eprintln!("error: {error:#}");
                ExitCode::from(EXIT_USAGE)
            }
            Err(error) => {
                tracing::error!("{error:#}");
                eprintln!("error: {error:#}");
                ExitCode::from(EXIT_FAILURE)
            }
        }
    }
}

impl Command {
    fn validate(&self) -> Result<(), String> {
        match self {
            Command::Churn(args) => args.validate(),
            Command::Client(args) => args.validate(),
            Command::Cleanup(args) => args.validate(),
            Command::MockDst(args) => args.validate(),
            Command::ProxyEnv(args) => args.validate(),
            Command::Run(args) => args.validate(),
            Command::Report(args) => args.validate(),
            Command::Compare(args) => args.validate(),
            Command::Completions { .. } => Ok(()),
        }
    }
}

/// Reports a usage error the way clap does (with the usage line) and exits
/// with status 2.
pub fn usage_error(msg: impl std::fmt::Display) -> ! {
    Cli::command()
        .error(clap::error::ErrorKind::ValueValidation, msg)
        .exit()
}

/// Parses the flags of one subcommand (`argv[0]` is the program name), as
/// the command line does: for unit tests of a module's `Args`.
#[cfg(test)]
pub(crate) fn parse_flags<T: clap::Args + clap::FromArgMatches>(
    argv: &[&str],
) -> Result<T, clap::Error> {
    let matches = T::augment_args(clap::Command::new("test")).try_get_matches_from(argv)?;
    T::from_arg_matches(&matches)
}

/// The exit status of a process whose standard output was closed under it
/// (as a tool killed by SIGPIPE: 128 + 13).
const EXIT_BROKEN_PIPE: i32 = 141;

/// Panics (there should be none) print one line, with where and how to get
/// the backtrace, unless `RUST_BACKTRACE` asks for the backtrace. A closed
/// standard output (`... | head`) is no panic: the process ends quietly, as
/// a tool killed by SIGPIPE does.
fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(EXIT_BROKEN_PIPE);
        }
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            return default(info);
        }
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "error: internal error (a bug; please report it): {message}{at}; run with RUST_BACKTRACE=1 for a backtrace"
        );
    }));
}
