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
use crate::daemon::DaemonError;
use crate::exec::RunError;
use crate::vb365::ClientError;

pub mod cancel;
pub mod completions;
pub mod context;
pub mod daemon;
pub mod foreground;
pub mod jobs;
pub mod migrate_state;
pub mod output;
pub mod plan;
pub mod resolve;
pub mod run;
pub mod runs;
pub mod schema;
pub mod show;
pub mod simulate;
pub mod status;
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
    /// Compare the job directory with the database: added / changed / removed / invalid, next fires.
    Plan(plan::PlanArgs),
    /// List jobs: name, kind, schedule, next fire, last run, state, file, errors.
    Jobs(jobs::JobsArgs),
    /// List runs, newest first.
    Runs(runs::RunsArgs),
    /// Show one run: steps, mailboxes, sessions, files, sizes, SHA-256, errors, attempts, events.
    Show(show::ShowArgs),
    /// Queue a manual run of a job (the daemon picks it up); --wait follows it to its end.
    Run(run::RunArgs),
    /// Cancel a run (the daemon stops it).
    Cancel(cancel::CancelArgs),
    /// Decide about the in_doubt steps of a run (--resend, --mark-done, --mark-failed), or
    /// continue a run that waits for a device-code sign-in (--continue).
    Resolve(resolve::ResolveArgs),
    /// Show the state database, the daemon instances on it and the runs each one holds.
    Status(status::StatusArgs),
    /// Copy a whole state database (e.g. the SQLite file) into the config's `database` (e.g. a
    /// new PostgreSQL database); the daemon must be stopped.
    MigrateState(migrate_state::MigrateStateArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
    /// Print the man page (or write all pages with --out-dir).
    Man(completions::ManArgs),
    /// Print the JSON Schema of a job document (for editors and CI).
    Schema,
    /// Run the daemon: watch the job directory, schedule and execute runs (`--dev`: with the
    /// built-in simulator and the example jobs).
    Daemon(daemon::DaemonArgs),
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
        // A closed pipe (`restorectl runs | head`) is the reader's choice, not a failure.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(exit_code_for(&err))
        }
    }
}

/// True when writing the output failed because the reader closed the pipe.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || e.downcast_ref::<serde_json::Error>()
                .and_then(|j| j.io_error_kind())
                .is_some_and(|k| k == std::io::ErrorKind::BrokenPipe)
    })
}

/// Maps an error to its exit code: configuration errors → 78, usage errors → 2, anything else → 1.
pub fn exit_code_for(err: &anyhow::Error) -> u8 {
    if err.chain().any(is_config_error) {
        EXIT_CONFIG
    } else if err.chain().any(|e| e.is::<UsageError>()) {
        EXIT_USAGE
    } else {
        1
    }
}

/// Whether one error of a chain says the configuration is at fault: the config file itself,
/// a server's client (`caFile`), or what the daemon and the run engine classify as such
/// (`jobsDir`, the database, a server password).
fn is_config_error(e: &(dyn std::error::Error + 'static)) -> bool {
    e.is::<ConfigError>()
        || e.is::<ClientError>()
        || e.downcast_ref::<RunError>()
            .is_some_and(RunError::is_config)
        || e.downcast_ref::<DaemonError>()
            .is_some_and(DaemonError::is_config)
}

fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let config = || context::load_config(cli.config.as_deref());
    match cli.command {
        Command::Validate(args) => validate::run(args, cli.config.as_deref()),
        Command::Schema => schema::run(),
        Command::Plan(args) => plan::run(args, &config()?),
        Command::Jobs(args) => jobs::run(args, &config()?),
        Command::Runs(args) => runs::run(args, &config()?),
        Command::Show(args) => show::run(args, &config()?),
        Command::Run(args) => run::run(args, &config()?),
        Command::Cancel(args) => cancel::run(args, &config()?),
        Command::Resolve(args) => resolve::run(args, &config()?),
        Command::MigrateState(args) => migrate_state::run(args, &config()?),
        Command::Status(args) => status::run(args, &config()?),
        Command::Completions(args) => completions::completions(args),
        Command::Man(args) => completions::man(args),
        Command::Simulate(args) => simulate::run(args, cli.config.as_deref()),
        Command::Daemon(args) => daemon::run(args, cli.config.as_deref()),
    }
}
