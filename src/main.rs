//! The `vportal` command: the server and the admin CLI in one binary.
//!
//! Errors print as one line on stderr and exit with status 2; checks that find problems
//! (`policy check`, an import with bad rows) exit with status 1.

#![forbid(unsafe_code)]

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use cli::{Cli, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.global.log_format, cli.command.default_log_level());
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            // `{:#}` puts the whole context chain on one line: "opening x: no database at …".
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Logs go to stderr, so stdout stays clean for tables, JSON and generated passcodes.
/// `RUST_LOG` overrides the level.
fn init_logging(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}
