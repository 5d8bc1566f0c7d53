//! The command line (SPEC §6): argument parsing with clap, one handler per subcommand, and the
//! single place that turns an outcome into a process exit code.
//!
//! Handlers return [`Outcome`] or an error; [`main`] prints errors once (with their context
//! chain) and maps them to exit codes: 0 success, 1 the operation failed or found problems,
//! 2 usage error, 78 configuration error (so systemd's `RestartPreventExitStatus=78` stops a
//! crash loop on a broken config).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::ConfigError;

pub mod run;
pub mod schema;
pub mod simulate;
pub mod validate;

/// Exit code for a configuration error (sysexits `EX_CONFIG`).
pub const EXIT_CONFIG: u8 = 78;
/// Exit code for a usage error.
pub const EXIT_USAGE: u8 = 2;

/// What a successful handler reports: everything went fine, or the command ran but found
/// problems (invalid jobs, a failed run) that make the exit code 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Problems,
}

/// A usage error detected after clap parsing (e.g. conflicting arguments).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[derive(Debug, Parser)]
#[command(
    name = "restorectl",
    version,
    about = "Declarative, crash-safe VB365 mailbox restores and PST exports"
)]
pub struct Cli {
    /// Daemon config file (default: $RESTORECTL_CONFIG, else /etc/restorectl/restorectl.yaml).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate job files (and a directory's restorectl.yaml); exit 0 valid, 1 invalid.
    Validate(validate::ValidateArgs),
    /// Print the JSON Schema of a job document (for editors and CI).
    Schema,
    /// Execute a run of a job in this process (`--foreground`), without the daemon.
    Run(run::RunArgs),
    /// Run the built-in VB365 REST API v8 simulator standalone (`--config` names its YAML/JSON file).
    Simulate(simulate::SimulateArgs),
}

/// Parses the process arguments, runs the command and returns its exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    match run(cli) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Problems) => ExitCode::from(1),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(exit_code_for(&err))
        }
    }
}

/// Maps an error to its exit code: configuration errors → 78, usage errors → 2, anything else → 1.
pub fn exit_code_for(err: &anyhow::Error) -> u8 {
    if err.chain().any(|e| e.is::<ConfigError>()) {
        EXIT_CONFIG
    } else if err.chain().any(|e| e.is::<UsageError>()) {
        EXIT_USAGE
    } else {
        1
    }
}

fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Validate(args) => validate::run(args, cli.config.as_deref()),
        Command::Schema => schema::run(),
        Command::Run(args) => run::run(args, cli.config.as_deref()),
        Command::Simulate(args) => simulate::run(args, cli.config.as_deref()),
    }
}
