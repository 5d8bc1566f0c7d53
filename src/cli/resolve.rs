//! `restorectl resolve RUN_ID --resend | --mark-done | --mark-failed | --continue` (SPEC §5,
//! §6): an operator's decision about the `in_doubt` steps of a run — restores whose POST may or
//! may not have reached VB365, which restorectl will not send again on its own — or, with
//! `--continue`, the word that the operator signed in with the device code a run waits for
//! (`credentials.deviceCode`, see `exec::sign_in`).
//!
//! The decision is recorded on every `in_doubt` step of the run (a `step_decision` event each, so
//! history shows who decided what) and a `resolve` request is written; the daemon consumes it and
//! continues the run: `--resend` sends the restore again, `--mark-done` counts the step as done,
//! `--mark-failed` gives up on it. Runs without `in_doubt` steps are refused (exit 1).
//! `--continue` writes a `resolve` request without a decision; the daemon queues the run, whose
//! restores then carry the signed-in code. Runs that do not wait for a sign-in are refused.

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
    /// You signed in with the device code the run shows: the run continues with it.
    #[arg(long = "continue")]
    pub continue_: bool,
}

impl DecisionArgs {
    /// The decision, or `None` for `--continue`.
    fn decision(&self) -> Option<Decision> {
        if self.resend {
            Some(Decision::Resend)
        } else if self.mark_done {
            Some(Decision::MarkDone)
        } else if self.mark_failed {
            Some(Decision::MarkFailed)
        } else {
            None
        }
    }
}

/// Runs `resolve`.
pub fn run(args: ResolveArgs, config: &Config) -> anyhow::Result<Outcome> {
    let Some(decision) = args.decision.decision() else {
        return continue_run(&args.run, config);
    };
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

/// `resolve RUN --continue`: the operator signed in with the run's device code.
fn continue_run(run: &str, config: &Config) -> anyhow::Result<Outcome> {
    context::block_on(async {
        let store = context::open_write(config).await?;
        let run = context::find_run(&store, run).await?;
        let events = store.list_run_events(run.id).await?;
        if !crate::exec::sign_in::waits_for_sign_in(run.state, &events) {
            anyhow::bail!(
                "run {} ({}) does not wait for a device-code sign-in; `resolve --continue` only \
                 applies to runs whose reason says \"sign-in needed\"",
                run.id,
                run.state
            );
        }
        let now = context::now()?;
        let request = store
            .insert_request(
                &NewRequest::Continue { run: run.id },
                context::requested_by().as_deref(),
                now,
            )
            .await
            .with_context(|| format!("recording a continue request for run {}", run.id))?;
        writeln!(
            std::io::stdout().lock(),
            "recorded continue for run {} (request {}); the daemon continues the run with the \
             signed-in device code",
            run.id,
            request.id
        )?;
        if context::live_daemons(&store, now).await?.is_empty() {
            eprintln!(
                "note: no running daemon uses {}; the run continues when `restorectl daemon` \
                 starts",
                store.location()
            );
        }
        Ok(Outcome::Ok)
    })
}
