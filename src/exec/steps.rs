//! One step's loop: read the step's state from the store and do what it calls for, until the
//! step is finished, waits for a long backoff, waits for an operator, or the run stops.
//!
//! | state | action |
//! |---|---|
//! | `pending` (due), `downloading`, `verifying` | a new attempt of the kind's action |
//! | `pending` with a future `next_attempt_at` | sleep if short, else end with `StepEnd::Later` |
//! | `submitting` | reconcile the unknown POST (see [`super::restore`]) |
//! | `submitted` | follow the restore to its outcome |
//! | `in_doubt` | act on the operator's decision, or end with `StepEnd::Blocked` |
//!
//! A failed attempt is handled by its class: retryable → backoff with jitter up to
//! `retry.maxAttempts` attempts; permanent / auth → `failed`; session lost → the run's session
//! is re-opened and the step continues; ambiguous (a restore POST) → reconciliation, never a
//! blind retry.

use std::sync::Arc;

use super::error::{AttemptError, RunError, StepFailure};
use super::run_ctx::{MailboxCache, Next, RunCtx, StepEnd, sleep};
use super::{export, restore, retry, search};
use crate::jobs::Action;
use crate::store::{Decision, ErrorClass, StepErrorRecord, StepState};

/// Runs step `id` of the run until it ends (see the module doc).
///
/// # Errors
///
/// [`RunError`] when the state database fails.
pub(crate) async fn run_step(ctx: Arc<RunCtx>, id: i64) -> Result<StepEnd, RunError> {
    let run = ctx.run.id;
    let store = ctx.store().clone();
    loop {
        if ctx.stop.is_stopped() {
            return Ok(StepEnd::Stopped);
        }
        let step = store.get_step(id).await.map_err(RunError::store(run))?;
        if step.state.is_terminal() {
            return Ok(StepEnd::Finished);
        }
        let next = match step.state {
            StepState::InDoubt => match step.operator_decision {
                None => return Ok(StepEnd::Blocked),
                Some(Decision::MarkDone) => {
                    store
                        .set_step_state(id, StepState::Done, None, ctx.now())
                        .await
                        .map_err(RunError::store(run))?;
                    Next::Continue
                }
                Some(Decision::MarkFailed) => {
                    let error = StepErrorRecord {
                        class: ErrorClass::Ambiguous,
                        code: None,
                        message: "marked failed by the operator after an unknown restore outcome"
                            .into(),
                    };
                    store
                        .set_step_state(id, StepState::Failed, Some(&error), ctx.now())
                        .await
                        .map_err(RunError::store(run))?;
                    Next::Continue
                }
                Some(Decision::Resend) => {
                    let result = restore::submit(&ctx, &step).await;
                    after_attempt(&ctx, id, result).await?
                }
            },
            StepState::Submitting => {
                let result = restore::reconcile_step(&ctx, &step).await;
                after_attempt(&ctx, id, result).await?
            }
            StepState::Submitted => restore::follow_step(&ctx, &step).await?,
            StepState::Pending | StepState::Downloading | StepState::Verifying => {
                if let Some(at) = step.next_attempt_at {
                    let wait = (at - ctx.now()).to_std().unwrap_or_default();
                    if wait > ctx.options().inline_backoff {
                        return Ok(StepEnd::Later(at));
                    }
                    if !wait.is_zero() && !sleep(&ctx, wait).await {
                        return Ok(StepEnd::Stopped);
                    }
                }
                // The attempt and its `note` in the history, in one commit.
                let step = store
                    .begin_step_attempt_noted(id, ctx.now())
                    .await
                    .map_err(RunError::store(run))?;
                let result = match ctx.job.action() {
                    Action::ExportPst(a) => export::attempt(&ctx, &step, a).await,
                    Action::Search(a) => search::attempt(&ctx, &step, a).await,
                    Action::Restore(_) | Action::RestoreTo(_) | Action::BulkRestore(_) => {
                        restore::submit(&ctx, &step).await
                    }
                };
                after_attempt(&ctx, id, result).await?
            }
            // Terminal states returned above.
            StepState::Done | StepState::Warning | StepState::Failed | StepState::Skipped => {
                Next::End(StepEnd::Finished)
            }
        };
        if let Next::End(end) = next {
            return Ok(end);
        }
    }
}

/// Turns an attempt's result into what the loop does next.
async fn after_attempt(
    ctx: &RunCtx,
    id: i64,
    result: Result<Next, AttemptError>,
) -> Result<Next, RunError> {
    match result {
        Ok(next) => Ok(next),
        Err(AttemptError::Step(f)) => handle_failure(ctx, id, f).await,
        Err(AttemptError::Run(e)) => Err(e),
    }
}

/// Records a failed attempt and decides what comes next (see the module doc).
async fn handle_failure(ctx: &RunCtx, id: i64, failure: StepFailure) -> Result<Next, RunError> {
    let run = ctx.run.id;
    let store = ctx.store();
    if ctx.stop.is_stopped() {
        // The failure may be the stop itself (an aborted download); the step keeps its state
        // and the next execution continues it.
        return Ok(Next::End(StepEnd::Stopped));
    }
    let step = store.get_step(id).await.map_err(RunError::store(run))?;
    let policy = ctx.job.retry();
    let attempts = u32::try_from(step.attempts).unwrap_or(u32::MAX);
    tracing::warn!(run = %run, step = id, mailbox = step.mailbox_email.as_deref().unwrap_or(""), class = %failure.class, error = %failure.message, "step attempt failed");
    let fail = |f: StepFailure| async move {
        store
            .set_step_state(id, StepState::Failed, Some(&f.to_step_error()), ctx.now())
            .await
            .map_err(RunError::store(run))?;
        Ok::<_, RunError>(Next::End(StepEnd::Finished))
    };
    // Only the session the failed call used is forgotten: by now another step may have replaced
    // it, and that replacement must stay. A gone session that is not the run's (an operation
    // session a restore was followed through) is retried like any transient failure, bounded by
    // the retry policy. Without a session id the caller already recorded the loss by generation.
    let class = match (failure.class, failure.session) {
        (ErrorClass::SessionLost, Some(session)) => {
            match ctx.session.lost_session(session, &failure.message).await {
                Ok(true) => ErrorClass::SessionLost,
                Ok(false) => ErrorClass::Retryable,
                Err(give_up) => return fail(give_up).await,
            }
        }
        (class, _) => class,
    };
    match class {
        ErrorClass::Permanent | ErrorClass::Auth => fail(failure).await,
        ErrorClass::SessionLost => {
            *ctx.mailboxes.lock().await = MailboxCache::Empty;
            store
                .schedule_step_retry(id, ctx.now(), &failure.to_step_error(), ctx.now())
                .await
                .map_err(RunError::store(run))?;
            Ok(Next::Continue)
        }
        ErrorClass::Retryable | ErrorClass::Ambiguous => {
            if attempts >= policy.max_attempts {
                let mut f = failure;
                f.message = format!("{} (gave up after {attempts} attempts)", f.message);
                return fail(f).await;
            }
            let delay = retry::delay(&policy, attempts, failure.retry_after);
            let at = ctx.now() + chrono::Duration::from_std(delay).unwrap_or_default();
            store
                .schedule_step_retry(id, at, &failure.to_step_error(), ctx.now())
                .await
                .map_err(RunError::store(run))?;
            tracing::info!(run = %run, step = id, attempt = attempts, delay_ms = delay.as_millis() as u64, "step retry scheduled");
            Ok(Next::Continue)
        }
    }
}
