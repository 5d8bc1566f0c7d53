//! Reconciliation: what happened to a restore POST whose outcome is unknown (a step left
//! `submitting`), decided from the restore sessions' history — received, not received, or
//! unknown (`in_doubt`); see the module doc of [`super`].

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::matching::{
    CLOCK_SKEW, Match, Targets, event_match, ours, stats_name_a_target, targets,
};
use super::submit::submit;
use crate::exec::error::{AttemptError, RunError, StepFailure};
use crate::exec::run_ctx::{Next, RunCtx, StepEnd, sleep};
use crate::store::{ErrorClass, Step};
use crate::vb365::{self, ApiError, RestoreSessionEvent, RestoreSessionFilter};

/// What the restore session's history says about a POST whose outcome is unknown.
enum Evidence {
    /// Received: follow this operation (an operation session, or the explore session).
    Received(Uuid),
    /// Read completely and no trace of it.
    NoTrace,
    /// A session that could hold the trace vanished while it was being read: what it held can
    /// no longer be known, so the absence of a trace proves nothing.
    Vanished(Uuid),
    /// This session holds a restore event that may be the step's or another mailbox's (an
    /// empty address, or one an archive shares with its primary) and nothing by id settles it.
    Unsure(Uuid),
}

/// Looks for a trace of the step's restore started at or after `since`: first in operation
/// sessions created since then (reading a), then in the explore session's events (reading b).
/// `others` are the operations other steps of the run are known to follow: not this step's.
async fn find_evidence(
    ctx: &RunCtx,
    explore: Uuid,
    since: DateTime<Utc>,
    targets: &Targets,
    others: &HashSet<Uuid>,
) -> Result<Evidence, ApiError> {
    let since = since - chrono::Duration::from_std(CLOCK_SKEW).unwrap_or_default();
    let filter = RestoreSessionFilter {
        start_time_from: Some(since),
        ..RestoreSessionFilter::default()
    };
    let maybe = |e: &RestoreSessionEvent| {
        e.start_time >= since && targets.0.iter().any(|t| event_match(e, t) == Match::Maybe)
    };
    let mut unsure = None;
    for s in ctx.client.restore_sessions(&filter).await? {
        if s.id == explore || s.creation_time < since || others.contains(&s.id) {
            continue;
        }
        // A session this daemon opened is an explore session of some run, not an operation.
        if ctx.store().get_session(&s.id.to_string()).await.is_ok() {
            continue;
        }
        let events = match ctx.client.restore_session_events(s.id).await {
            Ok(events) => events,
            Err(e) if e.is_gone() => return Ok(Evidence::Vanished(s.id)),
            Err(e) => return Err(e),
        };
        if events
            .iter()
            .any(|e| ours(e, targets) && e.start_time >= since)
        {
            return Ok(Evidence::Received(s.id));
        }
        if events.iter().any(maybe) {
            // An operation session's statistics list every mailbox of its restore by id once
            // it is done: they tell whose restore it is.
            match ctx.client.restore_session_statistics(s.id).await {
                Ok(st) if stats_name_a_target(&st, targets) => {
                    return Ok(Evidence::Received(s.id));
                }
                Ok(st) if !st.items.is_empty() => {}
                Ok(_) => {
                    unsure.get_or_insert(s.id);
                }
                Err(e) if e.is_gone() => return Ok(Evidence::Vanished(s.id)),
                Err(e) => return Err(e),
            }
        }
    }
    let events = ctx.client.restore_session_events(explore).await?;
    if events
        .iter()
        .any(|e| ours(e, targets) && e.start_time >= since)
    {
        return Ok(Evidence::Received(explore));
    }
    if events.iter().any(maybe) {
        // The explore session collects the statistics of this run's restores only, and a
        // mailbox has one step: an entry with its id is this step's restore.
        let st = ctx.client.restore_session_statistics(explore).await?;
        if stats_name_a_target(&st, targets) {
            return Ok(Evidence::Received(explore));
        }
        unsure.get_or_insert(explore);
    }
    Ok(unsure.map_or(Evidence::NoTrace, Evidence::Unsure))
}

/// Decides about a step left `submitting` (see the module doc). A POST proven not received (or
/// never sent) is a failed attempt: it comes back as [`AttemptError::Step`], and the step loop
/// handles it under the retry policy like any other.
pub(crate) async fn reconcile_step(ctx: &RunCtx, step: &Step) -> Result<Next, AttemptError> {
    let run = ctx.run.id;
    let store = ctx.store();
    // The row's last update is the `submitting` commit (nothing else touches it until the
    // answer is recorded).
    let since = step.updated_at;
    let grace = ctx
        .options()
        .reconcile_grace
        .max(ctx.client_request_timeout());
    let decide_after = since + chrono::Duration::from_std(grace).unwrap_or_default();
    let Some(explore) = step
        .restore_session_id
        .as_deref()
        .and_then(|s| Uuid::parse_str(s).ok())
    else {
        // No session was recorded, so no POST can have been sent.
        return submit(ctx, step).await;
    };
    // Which mailboxes to look for, and the operations the run's other steps follow (not ours).
    let (targets, others) = loop {
        let known = async {
            let t = targets(ctx, step).await?;
            let others: HashSet<Uuid> = store
                .list_steps(run)
                .await
                .map_err(|e| StepFailure::new(ErrorClass::Retryable, e.to_string()))?
                .iter()
                .filter(|s| s.id != step.id)
                .filter_map(|s| s.remote_operation_id.as_deref())
                .filter_map(|id| Uuid::parse_str(id).ok())
                .collect();
            Ok::<_, StepFailure>((t, others))
        };
        match known.await {
            Ok(k) => break k,
            Err(f) if ctx.now() >= decide_after => {
                return in_doubt(
                    ctx,
                    step,
                    &format!("cannot tell which mailboxes to look for: {}", f.message),
                )
                .await;
            }
            Err(_) => {
                if !sleep(ctx, ctx.options().poll_interval).await {
                    return Ok(Next::End(StepEnd::Stopped));
                }
            }
        }
    };
    let mut last_error = None;
    loop {
        if ctx.stop.is_stopped() {
            return Ok(Next::End(StepEnd::Stopped));
        }
        match find_evidence(ctx, explore, since, &targets, &others).await {
            Ok(Evidence::Received(op)) => {
                store
                    .mark_submitted(step.id, &op.to_string(), ctx.now())
                    .await
                    .map_err(RunError::store(run))?;
                ctx.note(
                    Some(step.id),
                    format!(
                        "reconciled: the restore POST was received (operation {op}); following it"
                    ),
                    json!({ "reconciled": "received", "operation": op }),
                )
                .await;
                return Ok(Next::Continue);
            }
            // Decided at once: a later look (after a restart, say) could not tell that the
            // session was ever there, and would take the missing trace for proof.
            Ok(Evidence::Vanished(id)) => {
                return in_doubt(
                    ctx,
                    step,
                    &format!("restore session {id}, which could hold the restore's trace, vanished while it was read; cannot prove the restore was not received"),
                )
                .await;
            }
            Ok(Evidence::Unsure(id)) if ctx.now() >= decide_after => {
                let who: Vec<&str> = targets
                    .0
                    .iter()
                    .filter(|t| !t.distinct)
                    .map(|t| {
                        if t.email.is_empty() {
                            "(no address)"
                        } else {
                            t.email.as_str()
                        }
                    })
                    .collect();
                return in_doubt(
                    ctx,
                    step,
                    &format!("restore session {id} holds a restore of an address this step cannot be told apart by ({}: empty, or shared by an archive and its primary mailbox) and its statistics do not name the mailbox id; cannot prove whose restore it is", who.join(", ")),
                )
                .await;
            }
            Ok(Evidence::Unsure(_)) => {}
            Ok(Evidence::NoTrace) if ctx.now() >= decide_after => {
                let alive = match ctx.client.restore_session(explore).await {
                    Ok(s) => s.state == vb365::SessionState::Working,
                    Err(_) => false,
                };
                if !alive {
                    return in_doubt(
                        ctx,
                        step,
                        &format!("restore session {explore} is gone and shows no trace of the restore; cannot prove it was not received"),
                    )
                    .await;
                }
                ctx.note(
                    Some(step.id),
                    format!(
                        "reconciled: restore session {explore} is working and shows no trace of the restore {}s after it was committed; it was not received and will be sent again",
                        grace.as_secs()
                    ),
                    json!({ "reconciled": "not_received" }),
                )
                .await;
                // Proven not executed: an ordinary failed attempt, so the next POST comes under
                // the retry policy (backoff, `retry.maxAttempts`) like any refused one.
                let failure = StepFailure::new(
                    ErrorClass::Retryable,
                    format!(
                        "the restore POST was not received (no trace in restore session {explore} {}s after it was sent)",
                        grace.as_secs()
                    ),
                );
                return Err(AttemptError::Step(failure));
            }
            Ok(Evidence::NoTrace) => {}
            Err(e) => {
                if ctx.now() >= decide_after {
                    return in_doubt(
                        ctx,
                        step,
                        &format!("the restore session's history could not be read: {e}"),
                    )
                    .await;
                }
                last_error = Some(e.to_string());
            }
        }
        let remaining = (decide_after - ctx.now()).to_std().unwrap_or_default();
        let wait = ctx
            .options()
            .poll_interval
            .min(remaining.max(Duration::from_millis(50)));
        if !sleep(ctx, wait).await {
            return Ok(Next::End(StepEnd::Stopped));
        }
        if let Some(e) = &last_error {
            tracing::debug!(run = %run, step = step.id, error = %e, "reconciliation read failed; retrying");
        }
    }
}

async fn in_doubt(ctx: &RunCtx, step: &Step, why: &str) -> Result<Next, AttemptError> {
    let message = format!("restore POST outcome unknown: {why}");
    tracing::warn!(run = %ctx.run.id, step = step.id, mailbox = step.mailbox_email.as_deref().unwrap_or(""), "{message}");
    ctx.store()
        .mark_in_doubt(step.id, &message, ctx.now())
        .await
        .map_err(RunError::store(ctx.run.id))?;
    Ok(Next::End(StepEnd::Blocked))
}
