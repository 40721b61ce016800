#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    dst_load_controller::cmd::Cli::parse().run()
}
