//! ExportPst: one PST (or ZIP of PSTs) per mailbox through the download engine (SPEC §7), and
//! retention of the job's older exports after a successful run.
//!
//! The step records its session and its `downloads` row before the first byte, so a crash or a
//! shutdown resumes the download with `Range` from the durable offset, in the same restore
//! session when it is still open (the server-side export lives in it). A stopped run (cancel,
//! timeout, shutdown) drops the transfer and keeps the partial file for a later attempt.

use serde_json::json;

use super::error::{AttemptError, RunError, StepFailure};
use super::run_ctx::{Next, RunCtx, StepEnd, template_values};
use crate::download::{
    self, DownloadOptions, ExportSource, ManifestInfo, StoreProgress, resolve_inside,
};
use crate::jobs::{ExportAction, Retention};
use crate::schedule::Clock;
use crate::store::{ErrorClass, NewDownload, RunId, Step, Store};
use crate::vb365::ExportToPstOptions;

/// One attempt of an ExportPst step: download (or resume), verify, publish, record.
pub(crate) async fn attempt(
    ctx: &RunCtx,
    step: &Step,
    action: &ExportAction,
) -> Result<Next, AttemptError> {
    let run = ctx.run.id;
    let store = ctx.store();
    let config = ctx.config();
    let (Some(mailbox_id), Some(email)) =
        (step.mailbox_id.as_deref(), step.mailbox_email.as_deref())
    else {
        return Err(
            StepFailure::permanent(format!("step {}: no mailbox recorded", step.seq)).into(),
        );
    };
    let mailbox = uuid::Uuid::parse_str(mailbox_id)
        .map_err(|_| StepFailure::permanent(format!("{email}: bad mailbox id {mailbox_id}")))?;
    let open = ctx.session.get(&ctx.stop.token).await?;
    let values = template_values(ctx, email, mailbox_id, step.is_archive).await;
    let relative = action.path.render(&values);
    create_private_dir(&config.export_root)?;
    let target = resolve_inside(&config.export_root, &relative)
        .map_err(|e| StepFailure::permanent(format!("{email}: {e}")))?;
    // One commit: the step's session, its download row, the session kept open (a crash from
    // here on must not stop it: the server-side export lives in it) and `downloading`.
    store
        .start_step_download(
            &NewDownload {
                step_id: step.id,
                final_path: target.absolute(),
                partial_path: &target.partial_path(),
                restore_session_id: Some(&open.id.to_string()),
            },
            ctx.now(),
        )
        .await
        .map_err(RunError::store(run))?;

    let source = ExportSource::new(
        ctx.client.clone(),
        open.id,
        mailbox,
        email,
        if action.pst_size_limit_disabled {
            ExportToPstOptions::without_limit(action.keyword.clone())
        } else {
            ExportToPstOptions::new(action.keyword.clone(), action.pst_size_limit)
        },
        config.downloads.first_byte_timeout,
    );
    // The publication's commit also stores the file on the step and makes it `done`.
    let progress = StoreProgress::finishing_the_step(store.clone(), step.id);
    // Without this figure the free-space check cannot run; downloading anyway could fill the
    // disk the other exports live on, so a database error fails the attempt (retryable) instead.
    let required = store
        .largest_export_bytes(mailbox_id)
        .await
        .map_err(|e| {
            StepFailure::new(
                ErrorClass::Retryable,
                format!(
                    "{email}: cannot check the free space before the download: reading the size of the largest previous export of this mailbox failed: {e}"
                ),
            )
        })?;
    let organization = match ctx.session.organization().await {
        Some(o) => o.name,
        None => ctx.job.organization().to_string(),
    };
    let info = ManifestInfo {
        job: ctx.job.name().to_string(),
        run: run.to_string(),
        step: step.id,
        kind: ctx.job.kind().to_string(),
        server: ctx.client.server().to_string(),
        organization,
        mailbox: email.to_string(),
        mailbox_id: mailbox_id.to_string(),
        point_in_time: ctx
            .session
            .point_in_time()
            .map_or_else(|| "latest".to_string(), |t| t.to_rfc3339()),
        restore_session_id: open.id.to_string(),
        keyword: action.keyword.clone(),
        pst_size_limit_bytes: action.pst_size_limit,
        started_at: step.started_at.unwrap_or_else(|| ctx.now()),
        restore_point_id: ctx.restore_point.as_ref().map(|p| p.id.clone()),
        backup_time: ctx.restore_point.as_ref().map(|p| p.backup_time),
        attempts: u32::try_from(step.attempts).unwrap_or(u32::MAX),
        job_file: ctx.job.file().display().to_string(),
        job_spec_hash: ctx.job.spec_hash().to_string(),
    };
    let options = DownloadOptions {
        first_byte_timeout: config.downloads.first_byte_timeout,
        idle_timeout: config.downloads.idle_read_timeout,
        ..DownloadOptions::default()
    };
    tracing::info!(run = %run, mailbox = email, path = %target.absolute().display(), "export download started");
    let published = tokio::select! {
        r = download::download(&source, &progress, &target, required, info, &options) => {
            if let Err(e) = &r && e.class() == crate::vb365::ErrorClass::SessionLost {
                ctx.session.lost(open.generation, &e.to_string()).await?;
            }
            r?
        }
        // Dropping the transfer keeps the partial file and its durable progress.
        () = ctx.stop.token.cancelled() => return Ok(Next::End(StepEnd::Stopped)),
    };
    tracing::info!(run = %run, mailbox = email, path = %published.path.display(), bytes = published.manifest.bytes, sha256 = %published.manifest.sha256, "export published");
    Ok(Next::End(StepEnd::Finished))
}

/// Creates `dir` (and parents) with mode 0700 where missing; a failure fails the step for good.
pub(crate) fn create_private_dir(dir: &std::path::Path) -> Result<(), StepFailure> {
    crate::private_dir::create_private_dir(dir).map_err(|e| {
        StepFailure::permanent(format!("{}: cannot create directory: {e}", dir.display()))
    })
}

/// Applies the job's retention after a successful run and records what it did.
pub(crate) async fn apply_retention(ctx: &RunCtx, retention: Retention) {
    match download::apply_retention(
        ctx.store(),
        &ctx.config().export_root,
        ctx.job.name(),
        &retention,
        ctx.now(),
    )
    .await
    {
        Ok(outcome) => {
            if !outcome.deleted.is_empty() || !outcome.failed.is_empty() {
                ctx.note(
                    None,
                    format!(
                        "retention ({}): {} export(s) deleted, {} could not be deleted",
                        retention.describe(),
                        outcome.deleted.len(),
                        outcome.failed.len()
                    ),
                    json!({ "deleted": outcome.deleted.len(), "failed": outcome.failed.len() }),
                )
                .await;
            }
        }
        Err(e) => tracing::warn!(job = %ctx.job.name(), error = %e, "retention failed"),
    }
}

/// A run that finishes has no live download left: the partial file of an export it did not
/// publish can never be resumed (a new run writes a new path), so it is removed and the
/// download recorded `failed` with what was discarded. Runs before the run's terminal state
/// is written, so a crash in between repeats it at the next execution.
pub(crate) async fn discard_partials(
    store: &Store,
    run: RunId,
    clock: &dyn Clock,
) -> Result<(), RunError> {
    for d in store
        .list_unfinished_downloads(run)
        .await
        .map_err(RunError::store(run))?
    {
        let path = d.partial_path.display();
        let message = match tokio::fs::remove_file(&d.partial_path).await {
            Ok(()) => format!(
                "the run finished without publishing this export; partial file {path} removed ({} bytes were durable)",
                d.bytes_durable
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                "the run finished without publishing this export; no partial file was left"
                    .to_string()
            }
            Err(e) => {
                tracing::warn!(run = %run, step = d.step_id, path = %path, error = %e, "cannot remove the partial file of an unpublished export");
                format!(
                    "the run finished without publishing this export; partial file {path} could not be removed: {e}"
                )
            }
        };
        store
            .mark_download_failed(d.step_id, &message, clock.now())
            .await
            .map_err(RunError::store(run))?;
        tracing::info!(run = %run, step = d.step_id, "{message}");
    }
    Ok(())
}
