//! The restore POST under the at-most-once protocol (see the module doc of [`super`]): the
//! request body is built (secrets read) first, the step is committed `submitting`, then the POST
//! is sent and its answer recorded.

use serde_json::json;
use uuid::Uuid;

use super::credentials::{resolve_bulk_credentials, resolve_credentials};
use crate::exec::convert::office_region;
use crate::exec::error::{AttemptError, RunError, StepFailure};
use crate::exec::run_ctx::{Next, RunCtx, StepEnd, StopReason, template_values};
use crate::exec::sign_in;
use crate::jobs::Action;
use crate::store::{ErrorClass, Step, StepErrorRecord, StoreError};
use crate::vb365::{
    self, BulkRestoreOptions, MailboxRef, MailboxRestoreCredentials, RestoreFlags,
    RestoreToDifferentLocation, RestoreToOriginalLocation,
};

fn parse_id(text: Option<&str>, what: &str, step: &Step) -> Result<Uuid, StepFailure> {
    text.and_then(|t| Uuid::parse_str(t).ok()).ok_or_else(|| {
        StepFailure::permanent(format!("step {}: no valid {what} recorded", step.seq))
    })
}

/// Sends the step's restore POST under the at-most-once protocol: `submitting` committed first,
/// `submitted` with the answer. An ambiguous failure leaves the step `submitting` for
/// reconciliation; any other failure means the request was not executed.
pub(crate) async fn submit(ctx: &RunCtx, step: &Step) -> Result<Next, AttemptError> {
    let run = ctx.run.id;
    let store = ctx.store();
    let open = ctx.session.get(&ctx.stop.token).await?;
    // Bodies are built (and secrets read) before anything is recorded: a missing secret fails
    // the step without a POST.
    enum Body {
        Original(Uuid, RestoreToOriginalLocation),
        To(Uuid, RestoreToDifferentLocation),
        Bulk(BulkRestoreOptions),
    }
    let with_code;
    let body = match ctx.job.action() {
        Action::Restore(a) => {
            let creds = resolve_credentials(ctx, &a.credentials)?;
            with_code = matches!(creds, vb365::RestoreCredentials::UserCode(_));
            let mailbox = parse_id(step.mailbox_id.as_deref(), "mailbox id", step)?;
            let body = RestoreToOriginalLocation::new(&creds)
                .map_err(|e| StepFailure::permanent(e.to_string()))?;
            Body::Original(mailbox, body)
        }
        Action::RestoreTo(a) => {
            let creds = resolve_credentials(ctx, &a.credentials)?;
            with_code = matches!(creds, vb365::RestoreCredentials::UserCode(_));
            let mailbox = parse_id(step.mailbox_id.as_deref(), "mailbox id", step)?;
            let values = template_values(
                ctx,
                step.mailbox_email.as_deref().unwrap_or(""),
                step.mailbox_id.as_deref().unwrap_or(""),
                step.is_archive,
            )
            .await;
            let o = a.options;
            Body::To(
                mailbox,
                RestoreToDifferentLocation {
                    mailbox: a.mailbox.clone(),
                    folder: a.folder.as_ref().map(|f| f.render(&values)),
                    cas_server: a.cas_server.clone(),
                    office_region: a.office_region.map(office_region),
                    office_organization_name: a.office_organization_name.clone(),
                    flags: RestoreFlags {
                        changed_items: o.changed_items,
                        deleted_items: o.deleted_items,
                        mark_restored_as_unread: o.mark_restored_as_unread,
                        exclude_drafts: o.exclude_drafts,
                        exclude_deleted_items: o.exclude_deleted_items,
                        exclude_in_place_hold_items: o.exclude_in_place_hold_items,
                        exclude_litigation_hold_items: o.exclude_litigation_hold_items,
                    },
                    credentials: MailboxRestoreCredentials::try_from(&creds)
                        .map_err(|e| StepFailure::permanent(e.to_string()))?,
                },
            )
        }
        Action::BulkRestore(a) => {
            let creds = resolve_bulk_credentials(ctx, &a.credentials)?;
            with_code = matches!(creds, vb365::RestoreCredentials::UserCode(_));
            let ids = step.mailbox_ids.clone().unwrap_or_default();
            let mailboxes = ids
                .iter()
                .map(|id| {
                    Uuid::parse_str(id)
                        .map(|id| MailboxRef { id })
                        .map_err(|_| StepFailure::permanent(format!("bad mailbox id {id}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let o = a.options;
            Body::Bulk(
                BulkRestoreOptions {
                    mailboxes,
                    cas_server: a.cas_server.clone(),
                    flags: RestoreFlags {
                        changed_items: o.changed_items,
                        deleted_items: o.deleted_items,
                        mark_restored_as_unread: o.mark_restored_as_unread,
                        exclude_drafts: o.exclude_drafts,
                        exclude_deleted_items: o.exclude_deleted_items,
                        exclude_in_place_hold_items: o.exclude_in_place_hold_items,
                        exclude_litigation_hold_items: o.exclude_litigation_hold_items,
                    },
                    skip_unresolved: o.skip_unresolved,
                    recent_item_restore_period: a
                        .recent_item_restore_period
                        .map(|d| i32::try_from(d).unwrap_or(i32::MAX)),
                    ..BulkRestoreOptions::default()
                }
                .with_credentials(&creds),
            )
        }
        Action::ExportPst(_) | Action::Search(_) => {
            return Err(StepFailure::permanent("not a restore job").into());
        }
    };
    store
        .set_step_session(step.id, Some(&open.id.to_string()), ctx.now())
        .await
        .map_err(RunError::store(run))?;
    // The commit BEFORE the POST: from here on a crash leaves `submitting` for reconciliation.
    match store
        .mark_submitting(step.id, &ctx.options.owner, ctx.now())
        .await
    {
        Ok(_) => {}
        Err(StoreError::LeaseLost { holder, .. }) => {
            tracing::warn!(run = %run, step = step.id, holder = holder.as_deref().unwrap_or("nobody"), "the run's lease is gone: the restore is not sent");
            ctx.stop.stop(StopReason::LeaseLost);
            return Ok(Next::End(StepEnd::Stopped));
        }
        Err(e) => return Err(RunError::store(run)(e).into()),
    }
    // The lease held in the database a moment ago; a stop since (the lease could not be renewed
    // in time, shutdown, cancel) leaves the step `submitting` for reconciliation, unsent.
    if ctx.stop.is_stopped() {
        return Ok(Next::End(StepEnd::Stopped));
    }
    let answer = match &body {
        Body::Original(mailbox, b) => ctx.client.restore_mailbox(open.id, *mailbox, b).await,
        Body::To(mailbox, b) => ctx.client.restore_mailbox_to(open.id, *mailbox, b).await,
        Body::Bulk(b) => ctx.client.restore_mailboxes(open.id, b).await,
    };
    match answer {
        Ok(a) => {
            store
                .mark_submitted(step.id, &a.session_id.to_string(), ctx.now())
                .await
                .map_err(RunError::store(run))?;
            tracing::info!(run = %run, step = step.id, mailbox = step.mailbox_email.as_deref().unwrap_or(""), operation = %a.session_id, "restore submitted");
            Ok(Next::Continue)
        }
        Err(e) if e.class == vb365::ErrorClass::Ambiguous => {
            tracing::warn!(run = %run, step = step.id, error = %e, "restore POST outcome unknown; reconciling");
            ctx.note(
                Some(step.id),
                format!(
                    "restore POST outcome unknown: {e}; reconciling through the restore session"
                ),
                json!({ "error": e.to_string() }),
            )
            .await;
            Ok(Next::Continue)
        }
        // Refused before execution with the device code (not signed in, expired): not a
        // failure of the step; it waits for a new sign-in (see `sign_in`).
        Err(e)
            if with_code
                && matches!(
                    e.class,
                    vb365::ErrorClass::Permanent | vb365::ErrorClass::Auth
                ) =>
        {
            let failure = StepFailure::from(&e);
            let record = StepErrorRecord {
                class: ErrorClass::Retryable,
                code: failure.to_step_error().code,
                message: format!("the server refused the device code: {}", failure.message),
            };
            store
                .schedule_step_retry(step.id, ctx.now(), &record, ctx.now())
                .await
                .map_err(RunError::store(run))?;
            sign_in::refused(ctx, step.id, &failure.message).await;
            tracing::warn!(run = %run, step = step.id, error = %e, "the server refused the device code; a new sign-in is needed");
            Ok(Next::End(StepEnd::SignInRefused))
        }
        Err(e) => {
            if e.class == vb365::ErrorClass::SessionLost {
                ctx.session.lost(open.generation, &e.to_string()).await?;
            }
            Err(AttemptError::Step(StepFailure::from(&e)))
        }
    }
}
