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

use cli::output::errln;
use cli::{Cli, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json_logs = cli.global.log_format == LogFormat::Json;
    init_logging(cli.global.log_format, cli.command.default_log_level());
    match cli::run(cli) {
        Ok(code) => code,
        // The reader of our output went away (`vportal audit | head`): nothing to say,
        // unless it was owed a secret (below).
        Err(e) if is_broken_pipe(&e) && !cli::secrets_due() => ExitCode::SUCCESS,
        Err(e) => {
            // Standard output failed (its reader went away, its disk is full) before a
            // generated passcode or token reached it: the change is made, but nobody has the
            // secret. (Once a command starts printing its secrets it does nothing else that
            // could fail.)
            match output_error(&e).filter(|_| cli::secrets_due()) {
                Some(io) => {
                    let why = if io.kind() == std::io::ErrorKind::BrokenPipe {
                        "standard output was closed".to_owned()
                    } else {
                        format!("writing to standard output failed ({io})")
                    };
                    fatal(
                        json_logs,
                        &format!(
                            "{why} before every generated passcode or token was shown; the \
                             change is made but they were not delivered: issue new ones"
                        ),
                    );
                }
                None => fatal(json_logs, &one_line(&e)),
            }
            ExitCode::from(2)
        }
    }
}

/// Says why the command failed, on one line of stderr: a JSON log line at level ERROR
/// under `--log-format json` (what a log shipper reads), else `error: …`.
fn fatal(json_logs: bool, message: &str) {
    if json_logs && tracing::enabled!(tracing::Level::ERROR) {
        tracing::error!("{message}");
    } else {
        errln!("error: {message}");
    }
}

/// The I/O error at the root of `e`, if there is one.
fn output_error(e: &anyhow::Error) -> Option<&std::io::Error> {
    e.chain()
        .find_map(|cause| cause.downcast_ref::<std::io::Error>())
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes on one line ("opening x: no database at …"), leaving out a
/// cause whose text the line already holds (many messages quote their cause).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Logs go to stderr, so stdout stays clean for tables, JSON and generated passcodes.
/// `RUST_LOG` overrides the level.
fn init_logging(format: LogFormat, default_level: &str) {
    // The audio decoders' own complaints are not logged, whatever the level, unless
    // `RUST_LOG` names them: a prompt file they fail on stops the start with an error naming
    // it and what they said.
    let directives = match std::env::var("RUST_LOG") {
        Ok(env) if env.contains("symphonia") => env,
        Ok(env) if !env.trim().is_empty() => format!("{env},symphonia=off"),
        _ => format!("{default_level},symphonia=off"),
    };
    let filter = EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_level},symphonia=off")));
    // A log line that cannot be written (its reader gone, its disk full) is lost, not
    // reported: the report would go to the same broken stderr, through `eprintln!`, which
    // panics, and would take the server and every call down with it.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}
