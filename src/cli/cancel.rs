//! `restorectl cancel RUN_ID` (SPEC §6): asks the daemon to cancel a run by writing an operator
//! request. The daemon cancels a queued or `needs_attention` run at once and asks the owner of a
//! running (or retry-waiting) run to stop it cleanly; the run ends as `cancelled`.
//!
//! A run that already finished cannot be cancelled: the command says so and exits 1.

use std::io::Write;

use anyhow::Context;

use super::Outcome;
use super::context;
use crate::config::Config;
use crate::store::NewRequest;

/// Arguments of `restorectl cancel`.
#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    /// The run id (or a unique prefix of at least 8 characters).
    #[arg(value_name = "RUN_ID")]
    pub run: String,
}

/// Runs `cancel`.
pub fn run(args: CancelArgs, config: &Config) -> anyhow::Result<Outcome> {
    context::block_on(async {
        let store = context::open_write(config).await?;
        let run = context::find_run(&store, &args.run).await?;
        if run.state.is_terminal() {
            anyhow::bail!(
                "run {} already finished ({}); there is nothing to cancel",
                run.id,
                run.state
            );
        }
        let now = context::now()?;
        let request = store
            .insert_request(
                &NewRequest::Cancel { run: run.id },
                context::requested_by().as_deref(),
                now,
            )
            .await
            .with_context(|| format!("recording a cancel request for run {}", run.id))?;
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "requested cancellation of run {} of job {} (state {}, request {})",
            run.id, run.job_name, run.state, request.id
        )?;
        if context::live_daemons(&store, now).await?.is_empty() {
            eprintln!(
                "note: no running daemon uses {}; the run is cancelled when `restorectl daemon` \
                 starts",
                store.location()
            );
        }
        Ok(Outcome::Ok)
    })
}
