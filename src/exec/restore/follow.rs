//! Following a submitted restore (a step `submitted`) until it has an outcome, through either
//! reading of the answer's `sessionId` (an operation session, or the explore session itself),
//! and recording that outcome on the step.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::matching::{CLOCK_SKEW, RestoreOutcome, Targets, evaluate, finished, ours, targets};
use crate::exec::error::RunError;
use crate::exec::run_ctx::{Next, RunCtx, StepEnd, sleep};
use crate::store::{ErrorClass, Step, StepErrorRecord, StepState};
use crate::vb365::{self, ApiError, EventType, RestoreSessionEvent};

/// Consecutive failed polls of a submitted restore before the step fails.
const MAX_POLL_ERRORS: u32 = 30;

/// Follows a `submitted` step until its restore has an outcome, then records it.
pub(crate) async fn follow_step(ctx: &RunCtx, step: &Step) -> Result<Next, RunError> {
    let run = ctx.run.id;
    let store = ctx.store();
    let op = step
        .remote_operation_id
        .as_deref()
        .and_then(|s| Uuid::parse_str(s).ok());
    let explore = step
        .restore_session_id
        .as_deref()
        .and_then(|s| Uuid::parse_str(s).ok());
    let (Some(op), Some(explore)) = (op, explore) else {
        let error = StepErrorRecord {
            class: ErrorClass::Permanent,
            code: None,
            message: "submitted restore without a recorded operation or session id".into(),
        };
        store
            .set_step_state(step.id, StepState::Failed, Some(&error), ctx.now())
            .await
            .map_err(RunError::store(run))?;
        return Ok(Next::Continue);
    };
    let submitted = step.submitted_at.unwrap_or(step.updated_at);
    let since = submitted
        - chrono::Duration::from_std(ctx.client_request_timeout() + CLOCK_SKEW).unwrap_or_default();
    // The mailboxes to look for (a bulk step needs the session's list for their e-mails).
    let mut errors = 0u32;
    let targets = loop {
        match targets(ctx, step).await {
            Ok(t) => break t,
            Err(f) => {
                errors += 1;
                if errors >= MAX_POLL_ERRORS {
                    let error = StepErrorRecord {
                        class: f.class,
                        code: f.code,
                        message: format!("the restore's outcome could not be read: {}", f.message),
                    };
                    store
                        .set_step_state(step.id, StepState::Failed, Some(&error), ctx.now())
                        .await
                        .map_err(RunError::store(run))?;
                    return Ok(Next::Continue);
                }
                if !sleep(ctx, ctx.options().poll_interval).await {
                    return Ok(Next::End(StepEnd::Stopped));
                }
            }
        }
    };
    errors = 0;
    loop {
        if ctx.stop.is_stopped() {
            return Ok(Next::End(StepEnd::Stopped));
        }
        match poll_once(ctx, op, explore, since, &targets).await {
            Ok(Some(outcome)) => {
                record_outcome(ctx, step, outcome).await?;
                return Ok(Next::Continue);
            }
            Ok(None) => errors = 0,
            Err(e) => {
                errors += 1;
                tracing::warn!(run = %run, step = step.id, error = %e, "polling the restore failed");
                if errors >= MAX_POLL_ERRORS || e.class == vb365::ErrorClass::Auth {
                    let error = StepErrorRecord {
                        class: e.class,
                        code: e.error_code.map(|c| c.to_string()),
                        message: format!("the restore's outcome could not be read: {e}"),
                    };
                    store
                        .set_step_state(step.id, StepState::Failed, Some(&error), ctx.now())
                        .await
                        .map_err(RunError::store(run))?;
                    return Ok(Next::Continue);
                }
            }
        }
        if !sleep(ctx, ctx.options().poll_interval).await {
            return Ok(Next::End(StepEnd::Stopped));
        }
    }
}

async fn poll_once(
    ctx: &RunCtx,
    op: Uuid,
    explore: Uuid,
    since: DateTime<Utc>,
    targets: &Targets,
) -> Result<Option<RestoreOutcome>, ApiError> {
    if op != explore {
        match ctx.client.restore_session(op).await {
            Ok(s) if s.state == vb365::SessionState::Stopped => {
                let events = ctx
                    .client
                    .restore_session_events(op)
                    .await
                    .unwrap_or_default();
                let stats = ctx.client.restore_session_statistics(op).await.ok();
                let restore_events: Vec<&RestoreSessionEvent> = events
                    .iter()
                    .filter(|e| e.event_type == Some(EventType::Restore))
                    .collect();
                return Ok(Some(evaluate(
                    &restore_events,
                    stats.as_ref(),
                    Some(s.result),
                    targets,
                )));
            }
            Ok(_) => return Ok(None),
            Err(e) if e.is_gone() => {
                // The operation session is gone: the explore session's events may still tell.
                return match explore_outcome(ctx, explore, since, targets).await? {
                    Some(outcome) => Ok(Some(outcome)),
                    None => Err(e),
                };
            }
            Err(e) => return Err(e),
        }
    }
    explore_outcome(ctx, explore, since, targets).await
}

/// The step's outcome as the explore session tells it (reading b), once every target mailbox
/// is finished there; `None` while one is not.
async fn explore_outcome(
    ctx: &RunCtx,
    explore: Uuid,
    since: DateTime<Utc>,
    targets: &Targets,
) -> Result<Option<RestoreOutcome>, ApiError> {
    let events = ctx.client.restore_session_events(explore).await?;
    let relevant: Vec<&RestoreSessionEvent> = events
        .iter()
        .filter(|e| ours(e, targets) && e.start_time >= since)
        .collect();
    // A mailbox without a distinct address is finished when the statistics name its id.
    let stats = if targets.all_distinct() {
        None
    } else {
        Some(ctx.client.restore_session_statistics(explore).await?)
    };
    if !finished(&relevant, stats.as_ref(), targets) {
        return Ok(None);
    }
    let stats = match stats {
        Some(s) => Some(s),
        None => ctx.client.restore_session_statistics(explore).await.ok(),
    };
    Ok(Some(evaluate(&relevant, stats.as_ref(), None, targets)))
}

async fn record_outcome(
    ctx: &RunCtx,
    step: &Step,
    outcome: RestoreOutcome,
) -> Result<(), RunError> {
    let run = ctx.run.id;
    let store = ctx.store();
    if let Some(c) = outcome.counts {
        store
            .record_restore_counts(step.id, c, ctx.now())
            .await
            .map_err(RunError::store(run))?;
    }
    let error = outcome.message.as_ref().map(|m| StepErrorRecord {
        class: ErrorClass::Permanent,
        code: None,
        message: m.clone(),
    });
    store
        .set_step_state(step.id, outcome.state, error.as_ref(), ctx.now())
        .await
        .map_err(RunError::store(run))?;
    tracing::info!(run = %run, step = step.id, mailbox = step.mailbox_email.as_deref().unwrap_or(""), state = %outcome.state, "restore finished");
    Ok(())
}
