//! `restorectl completions SHELL` and `restorectl man`: shell completion scripts and man pages
//! generated from the clap definition, so they always match the binary.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::CommandFactory;

use super::{Cli, Outcome};

/// Arguments of `restorectl completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to generate the completion script for.
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// Arguments of `restorectl man`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write one page per command (restorectl.1, restorectl-jobs.1, …) into this directory
    /// instead of printing restorectl.1 to stdout.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// Prints the completion script for a shell.
pub fn completions(args: CompletionsArgs) -> anyhow::Result<Outcome> {
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut cmd, "restorectl", &mut out);
    out.flush()?;
    Ok(Outcome::Ok)
}

/// Prints the man page, or writes all pages into a directory.
pub fn man(args: ManArgs) -> anyhow::Result<Outcome> {
    let cmd = Cli::command();
    match args.out_dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("writing man pages to {}", dir.display()))?;
        }
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .context("writing the man page")?;
        }
    }
    Ok(Outcome::Ok)
}
