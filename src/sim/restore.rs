//! The three mailbox restore endpoints (bulk, to the original location, `restoreTo`): request
//! checks the schema cannot express, the immediate `{sessionId}` answer, and the delayed
//! completion that shows in session state, `Restore` events and statistics.

use std::sync::Arc;

use axum::Json;
use axum::response::IntoResponse;
use base64::Engine;
use chrono::Utc;
use serde_json::{Value, json};
use uuid::Uuid;

use super::api::{ApiError, Ctx, Endpoint, HandlerResult};
use super::config::{RestoreOutcome, SessionIdMode};
use super::device_code;
use super::handlers::{Use, session_mailbox, session_mut};
use super::sessions::{Event, MailboxStat, Session, SessionKind};
use super::state::SimState;
use super::world::Mailbox;

fn text<'a>(body: &'a Value, name: &str) -> Option<&'a str> {
    body.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

/// Whether the body carries at least one complete credential set. The spec marks nothing
/// required, but a restore needs to authenticate against Microsoft 365 somehow (API.md §3.5),
/// so the simulator rejects bodies without one.
fn check_credentials(body: &Value, bulk: bool) -> Result<(), ApiError> {
    let has = |n: &str| text(body, n).is_some();
    let app = has("applicationId") && has("applicationCertificate");
    let user = if bulk {
        has("office365UserName") && has("office365UserPassword")
    } else {
        has("userName") && has("userPassword")
    };
    let on_prem = bulk && has("onPremisesUserName") && has("onPremisesUserPassword");
    if !(app || user || on_prem || has("userCode")) {
        let sets = if bulk {
            "applicationId + applicationCertificate, office365UserName + office365UserPassword, onPremisesUserName + onPremisesUserPassword, or userCode"
        } else {
            "applicationId + applicationCertificate, userName + userPassword, or userCode"
        };
        return Err(ApiError::invalid(format!(
            "No usable restore credentials: provide {sets}."
        )));
    }
    if let Some(cert) = text(body, "applicationCertificate")
        && base64::engine::general_purpose::STANDARD
            .decode(cert)
            .is_err()
    {
        return Err(ApiError::invalid(
            "applicationCertificate: not a Base64-encoded certificate",
        ));
    }
    Ok(())
}

pub(crate) fn restore(state: &Arc<SimState>, ctx: &Ctx) -> HandlerResult {
    let endpoint = ctx.route.endpoint;
    let bulk = endpoint == Endpoint::BulkRestore;
    check_credentials(&ctx.body, bulk)?;
    // `mailbox` is optional in the vendor schema: without it, each mailbox is restored into
    // its namesake (in `officeOrganizationName` when given).
    let to = endpoint == Endpoint::MailboxRestoreTo;
    let target = text(&ctx.body, "mailbox")
        .filter(|_| to)
        .map(str::to_string);
    let mode = state.config.session_id_mode;
    let mirror = state.config.mirror_restore_events;
    if let Some(code) = text(&ctx.body, "userCode") {
        let session = state.with_data(|d| session_mut(state, d, ctx, Use::Data).map(|s| s.id))?;
        device_code::check(state, session, code)?;
    }
    let (answer_id, op_id, explore_id, mailboxes) = state.with_data(|d| {
        let session = session_mut(state, d, ctx, Use::Data)?;
        let mailboxes: Vec<Mailbox> = if bulk {
            let list = ctx
                .body
                .get("mailboxes")
                .and_then(Value::as_array)
                .filter(|l| !l.is_empty())
                .ok_or_else(|| ApiError::invalid("mailboxes: at least one mailbox is required"))?;
            list.iter()
                .map(|m| {
                    session_mailbox(
                        state,
                        session,
                        m.get("id").and_then(Value::as_str).unwrap_or(""),
                    )
                    .cloned()
                })
                .collect::<Result<_, _>>()?
        } else {
            vec![session_mailbox(state, session, ctx.param("mailboxId"))?.clone()]
        };
        let explore_id = session.id;
        let now = Utc::now();
        let op_id = Uuid::new_v4();
        let target_of = |m: &Mailbox| {
            if to {
                Some(target.clone().unwrap_or_else(|| m.email.clone()))
            } else {
                None
            }
        };
        let event = |m: &Mailbox| Event {
            id: Uuid::new_v4(),
            order: 0,
            kind: "Restore",
            status: "Running",
            title: "Restoring mailbox".to_string(),
            message: format!("Restoring {}", m.email),
            mailbox: Some(m.clone()),
            operation: Some(op_id),
            target: target_of(m),
            start: now,
            end: None,
        };
        let log_on_explore = mode == SessionIdMode::ExploreSession || mirror;
        if log_on_explore {
            for m in &mailboxes {
                session.push_event(event(m));
            }
        }
        let answer_id = match mode {
            SessionIdMode::ExploreSession => explore_id,
            SessionIdMode::NewSession => {
                let name = format!(
                    "Restore {} mailbox(es) of {}",
                    mailboxes.len(),
                    session.org_name
                );
                let mut op = Session::new(
                    SessionKind::Operation { explore_id },
                    name,
                    (session.org_id, &session.org_name.clone()),
                    &ctx.user,
                );
                op.restore_point = session.restore_point;
                op.id = op_id;
                for m in &mailboxes {
                    op.push_event(event(m));
                }
                d.insert(op)
            }
        };
        for m in &mailboxes {
            *d.restore_calls.entry(m.id).or_default() += 1;
        }
        Ok::<_, ApiError>((answer_id, op_id, explore_id, mailboxes))
    })?;
    let task_state = Arc::clone(state);
    state.tasks.spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(task_state.config.restore_delay) => complete(&task_state, op_id, explore_id, &mailboxes),
            () = task_state.shutdown.cancelled() => {}
        }
    });
    Ok(Json(json!({"sessionId": answer_id})).into_response())
}

fn event_status(outcome: &RestoreOutcome) -> &'static str {
    match outcome {
        RestoreOutcome::Success => "Success",
        RestoreOutcome::Warning { .. } => "Warning",
        RestoreOutcome::Failed { .. } | RestoreOutcome::CannotContinue { .. } => "Failed",
    }
}

/// Finishes a restore operation: event statuses, statistics and (mode a) the operation
/// session's final state.
fn complete(state: &SimState, op_id: Uuid, explore_id: Uuid, mailboxes: &[Mailbox]) {
    let stats: Vec<MailboxStat> = mailboxes
        .iter()
        .map(|m| {
            let key = m.email.to_ascii_lowercase();
            let outcome = state
                .with_data(|d| d.outcomes.get(&key).cloned())
                .or_else(|| state.config.restore_outcomes.get(&key).cloned())
                .unwrap_or(RestoreOutcome::Success);
            let items = state.world.items(m, state.world.latest_backup()).len() as i64;
            let (created, merged) = (items * 3 / 4, items / 10);
            let skipped = items - created - merged;
            let (created, failed) = match &outcome {
                RestoreOutcome::Success => (created, 0),
                RestoreOutcome::Warning { failed_items } => {
                    let f = i64::try_from(*failed_items).unwrap_or(i64::MAX);
                    ((created - f).max(0), f)
                }
                RestoreOutcome::Failed { .. } | RestoreOutcome::CannotContinue { .. } => (0, items),
            };
            let (merged, skipped) = if failed == items && items > 0 {
                (0, 0)
            } else {
                (merged, skipped)
            };
            MailboxStat {
                mailbox: m.clone(),
                outcome,
                created,
                merged,
                failed,
                skipped,
            }
        })
        .collect();
    let now = Utc::now();
    let finish = |session: &mut Session| {
        let mut changed = false;
        for e in session
            .events
            .iter_mut()
            .filter(|e| e.operation == Some(op_id) && e.status == "Running")
        {
            let Some(stat) = stats
                .iter()
                .find(|s| Some(&s.mailbox) == e.mailbox.as_ref())
            else {
                continue;
            };
            e.status = event_status(&stat.outcome);
            e.end = Some(now);
            e.message = match &stat.outcome {
                RestoreOutcome::Success => format!(
                    "Restored {} ({} items created, {} merged)",
                    stat.mailbox.email, stat.created, stat.merged
                ),
                RestoreOutcome::Warning { failed_items } => format!(
                    "Restored {} with warnings: {failed_items} items failed",
                    stat.mailbox.email
                ),
                RestoreOutcome::Failed { error } | RestoreOutcome::CannotContinue { error } => {
                    format!("Failed to restore {}: {error}", stat.mailbox.email)
                }
            };
            changed = true;
        }
        if changed {
            session.etag += 1;
        }
        changed
    };
    state.with_data(|d| {
        if let Some(op) = d.sessions.get_mut(&op_id) {
            // Mode (a): the operation session carries the statistics and stops when done.
            finish(op);
            op.stats.extend(stats.iter().cloned());
            op.result = worst(&stats);
            op.log(
                "None",
                op.result,
                "Restore finished",
                "Restore operation has finished",
                now,
            );
            op.ended = Some(now);
        }
        if let Some(explore) = d.sessions.get_mut(&explore_id)
            && finish(explore)
            && state.config.session_id_mode == SessionIdMode::ExploreSession
        {
            explore.stats.extend(stats.iter().cloned());
        }
    });
}

fn worst(stats: &[MailboxStat]) -> &'static str {
    if stats.iter().any(|s| s.status() == "Failed") {
        "Failed"
    } else if stats.iter().any(|s| s.status() == "Warning") {
        "Warning"
    } else {
        "Success"
    }
}
