//! `restorectl resolve RUN_ID --resend | --mark-done | --mark-failed` (SPEC §5, §6): an
//! operator's decision about the `in_doubt` steps of a run — restores whose POST may or may not
//! have reached VB365, which restorectl will not send again on its own.
//!
//! The decision is recorded on every `in_doubt` step of the run (a `step_decision` event each, so
//! history shows who decided what) and a `resolve` request is written; the daemon consumes it and
//! continues the run: `--resend` sends the restore again, `--mark-done` counts the step as done,
//! `--mark-failed` gives up on it. Runs without `in_doubt` steps are refused (exit 1).

use std::io::Write;

use anyhow::Context;

use super::Outcome;
use super::context;
use crate::config::Config;
use crate::store::{Decision, NewRequest, StepState};

/// Arguments of `restorectl resolve`.
#[derive(Debug, clap::Args)]
pub struct ResolveArgs {
    /// The run id (or a unique prefix of at least 8 characters).
    #[arg(value_name = "RUN_ID")]
    pub run: String,
    #[command(flatten)]
    pub decision: DecisionArgs,
}

/// Exactly one decision.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct DecisionArgs {
    /// Send the restore again: you checked in VB365 that it did NOT run.
    #[arg(long)]
    pub resend: bool,
    /// Count the step as done: you checked in VB365 that the restore DID run.
    #[arg(long)]
    pub mark_done: bool,
    /// Give up on the step: it is recorded as failed and not sent again.
    #[arg(long)]
    pub mark_failed: bool,
}

impl DecisionArgs {
    fn decision(&self) -> Decision {
        if self.resend {
            Decision::Resend
        } else if self.mark_done {
            Decision::MarkDone
        } else {
            Decision::MarkFailed
        }
    }
}

/// Runs `resolve`.
pub fn run(args: ResolveArgs, config: &Config) -> anyhow::Result<Outcome> {
    let decision = args.decision.decision();
    context::block_on(async {
        let store = context::open_write(config).await?;
        let run = context::find_run(&store, &args.run).await?;
        let steps = store.list_steps(run.id).await?;
        let in_doubt: Vec<_> = steps
            .iter()
            .filter(|s| s.state == StepState::InDoubt)
            .collect();
        if in_doubt.is_empty() {
            anyhow::bail!(
                "run {} ({}) has no in_doubt steps; `resolve` only applies to runs that need \
                 attention because a restore request's outcome is unknown",
                run.id,
                run.state
            );
        }
        let now = context::now()?;
        let mut out = std::io::stdout().lock();
        for step in &in_doubt {
            store
                .record_operator_decision(step.id, decision, now)
                .await
                .with_context(|| format!("recording {decision} for step {}", step.seq))?;
            writeln!(
                out,
                "step {} ({}): {decision}",
                step.seq,
                step.mailbox_email.as_deref().unwrap_or("all mailboxes")
            )?;
        }
        let request = store
            .insert_request(
                &NewRequest::Resolve {
                    run: run.id,
                    decision,
                },
                context::requested_by().as_deref(),
                now,
            )
            .await
            .with_context(|| format!("recording a resolve request for run {}", run.id))?;
        writeln!(
            out,
            "recorded {decision} for {} in_doubt step(s) of run {} (request {}); the daemon \
             continues the run",
            in_doubt.len(),
            run.id,
            request.id
        )?;
        if context::live_daemons(&store, now).await?.is_empty() {
            eprintln!(
                "note: no running daemon uses {}; the decision is applied when `restorectl \
                 daemon` starts",
                store.location()
            );
        }
        Ok(Outcome::Ok)
    })
}
