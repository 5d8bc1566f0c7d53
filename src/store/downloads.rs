//! Downloads (SPEC §7) and published files. A download row holds the durable progress of one
//! ExportPst step: bytes fsynced in the partial file and the SHA-256 state at that offset, so a
//! resume after a crash continues with `Range` from there; every resume offset and restart is
//! kept for the manifest and the history. The `exports` table lists every file restorectl
//! published; retention deletes only files listed there.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::AnyConnection;
use tracing::instrument;

use super::events::{self, EventKind, NewEvent};
use super::{
    DownloadState, FileFormat, JsonText, Millis, OptMillis, Result, RunId, SqlxResultExt,
    StepState, Store, StoreError, int, json_text, path_text, to_millis,
};

/// A row of `downloads`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Download {
    pub step_id: i64,
    #[sqlx(try_from = "String")]
    pub final_path: PathBuf,
    /// `<final>.partial`.
    #[sqlx(try_from = "String")]
    pub partial_path: PathBuf,
    /// The restore session that produced the export (kept open to resume).
    pub restore_session_id: Option<String>,
    pub state: DownloadState,
    /// Bytes fsynced in the partial file.
    pub bytes_durable: i64,
    /// From `Content-Length` / `Content-Range` when the server said.
    pub expected_bytes: Option<i64>,
    /// The serialised SHA-256 state at `bytes_durable`.
    #[serde(skip)]
    pub hasher_state: Option<Vec<u8>>,
    /// Offsets the download resumed from, in order.
    #[sqlx(try_from = "JsonText")]
    pub resumed_from: Vec<u64>,
    /// Times the download started over (server ignored `Range`, session lost).
    pub restarts: i64,
    pub sha256: Option<String>,
    pub format: Option<FileFormat>,
    #[sqlx(try_from = "OptMillis")]
    pub started_at: Option<DateTime<Utc>>,
    #[sqlx(try_from = "OptMillis")]
    pub finished_at: Option<DateTime<Utc>>,
    #[sqlx(try_from = "Millis")]
    pub updated_at: DateTime<Utc>,
}

/// A download to create for a step.
#[derive(Debug, Clone)]
pub struct NewDownload<'a> {
    pub step_id: i64,
    pub final_path: &'a Path,
    pub partial_path: &'a Path,
    pub restore_session_id: Option<&'a str>,
}

/// A row of `exports`: a file restorectl published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Export {
    pub id: i64,
    pub job_name: String,
    pub run_id: RunId,
    pub step_id: Option<i64>,
    pub mailbox_id: Option<String>,
    pub mailbox_email: Option<String>,
    #[sqlx(try_from = "String")]
    pub path: PathBuf,
    pub manifest_path: Option<String>,
    pub format: FileFormat,
    pub bytes: i64,
    pub sha256: String,
    #[sqlx(try_from = "Millis")]
    pub created_at: DateTime<Utc>,
    /// Set when retention deleted the file.
    #[sqlx(try_from = "OptMillis")]
    pub deleted_at: Option<DateTime<Utc>>,
}

/// A published file to record.
#[derive(Debug, Clone)]
pub struct NewExport<'a> {
    pub job_name: &'a str,
    pub run_id: RunId,
    pub step_id: Option<i64>,
    pub mailbox_id: Option<&'a str>,
    pub mailbox_email: Option<&'a str>,
    pub path: &'a Path,
    pub manifest_path: Option<&'a Path>,
    pub format: FileFormat,
    pub bytes: u64,
    pub sha256: &'a str,
}

impl Store {
    /// Creates the download of a step, or returns the existing one unchanged (a resumed step
    /// finds its progress here).
    #[instrument(level = "trace", skip_all, fields(step = download.step_id), err(level = "debug"))]
    pub async fn create_download(
        &self,
        download: &NewDownload<'_>,
        now: DateTime<Utc>,
    ) -> Result<Download> {
        const OP: &str = "create_download";
        let mut tx = self.begin_write(OP).await?;
        let row = create_download_in(&mut tx, download, now).await?;
        tx.commit().await.op(OP)?;
        Ok(row)
    }

    /// Starts (or resumes) the download of an ExportPst step, in one transaction: records the
    /// restore session the step works in, creates the step's `downloads` row (an existing one
    /// is returned unchanged: a resumed step finds its progress there), marks the session as
    /// one a restart must keep open for the resume, and moves the step to `downloading`.
    /// What [`Store::set_step_session`], [`Store::create_download`],
    /// [`Store::set_session_keep_for_resume`] and [`Store::set_step_state`] do one by one, in
    /// one commit per step instead of four (`bench/mass-export.sh`).
    #[instrument(level = "trace", skip_all, fields(step = download.step_id), err(level = "debug"))]
    pub async fn start_step_download(
        &self,
        download: &NewDownload<'_>,
        now: DateTime<Utc>,
    ) -> Result<Download> {
        const OP: &str = "start_step_download";
        let mut tx = self.begin_write(OP).await?;
        let step = sqlx::query_as::<_, super::Step>(
            "UPDATE steps SET restore_session_id = $2, updated_at = $3 WHERE id = $1 RETURNING *",
        )
        .bind(download.step_id)
        .bind(download.restore_session_id)
        .bind(to_millis(now))
        .fetch_one(&mut *tx)
        .await
        .found(OP, "step", download.step_id)?;
        let row = create_download_in(&mut tx, download, now).await?;
        if let Some(session) = download.restore_session_id {
            let kept = sqlx::query(
                "UPDATE restore_sessions SET keep_for_resume = 1, updated_at = $2
                 WHERE id = $1 AND keep_for_resume = 0",
            )
            .bind(session)
            .bind(to_millis(now))
            .execute(&mut *tx)
            .await
            .op(OP)?;
            if kept.rows_affected() == 0 {
                super::sessions::get_in(&mut tx, session).await?;
            }
        }
        if step.state != StepState::Downloading {
            super::steps::set_step_state_in(&mut tx, step.id, StepState::Downloading, None, now)
                .await?;
        }
        tx.commit().await.op(OP)?;
        Ok(row)
    }

    /// Finishes an ExportPst step whose file is published, in one transaction: records the
    /// file in `exports` (where it already is, from an earlier attempt whose commit was lost,
    /// it stays as recorded), marks the download `published` (appends `download_published`),
    /// stores the file on the step and moves the step to `done`. What
    /// [`Store::record_export`], [`Store::mark_download_published`],
    /// [`Store::record_step_file`] and [`Store::set_step_state`] do one by one.
    /// `export.step_id` is ignored: the file is recorded as `step_id`'s.
    #[instrument(level = "trace", skip_all, fields(step = step_id), err(level = "debug"))]
    pub async fn finish_export_step(
        &self,
        step_id: i64,
        export: &NewExport<'_>,
        now: DateTime<Utc>,
    ) -> Result<super::Step> {
        const OP: &str = "finish_export_step";
        let mut tx = self.begin_write(OP).await?;
        let export = NewExport {
            step_id: Some(step_id),
            ..*export
        };
        insert_export_in(&mut tx, &export, now).await?;
        let file = super::StepFile {
            path: export.path,
            bytes: export.bytes,
            sha256: export.sha256,
            format: export.format,
        };
        mark_download_published_in(&mut tx, step_id, &file, now).await?;
        super::steps::record_step_file_in(&mut tx, step_id, &file, now).await?;
        let step =
            super::steps::set_step_state_in(&mut tx, step_id, StepState::Done, None, now).await?;
        tx.commit().await.op(OP)?;
        Ok(step)
    }

    /// The download of a step.
    #[instrument(level = "trace", skip_all, fields(step = step_id), err(level = "debug"))]
    pub async fn get_download(&self, step_id: i64) -> Result<Download> {
        sqlx::query_as::<_, Download>("SELECT * FROM downloads WHERE step_id = $1")
            .bind(step_id)
            .fetch_one(self.reader())
            .await
            .found("get_download", "download of step", step_id)
    }

    /// The downloads of a run's steps, in step order (one query for `show`, however many
    /// steps the run has).
    #[instrument(level = "trace", skip_all, fields(run = %run), err(level = "debug"))]
    pub async fn list_run_downloads(&self, run: RunId) -> Result<Vec<Download>> {
        sqlx::query_as::<_, Download>(
            "SELECT d.* FROM downloads d JOIN steps s ON s.id = d.step_id
             WHERE s.run_id = $1 ORDER BY d.step_id",
        )
        .bind(run)
        .fetch_all(self.reader())
        .await
        .op("list_run_downloads")
    }

    /// The downloads of a run's steps that are neither published nor failed, in step order.
    #[instrument(level = "trace", skip_all, fields(run = %run), err(level = "debug"))]
    pub async fn list_unfinished_downloads(&self, run: RunId) -> Result<Vec<Download>> {
        sqlx::query_as::<_, Download>(
            "SELECT d.* FROM downloads d JOIN steps s ON s.id = d.step_id
             WHERE s.run_id = $1 AND d.state NOT IN ('published', 'failed')
             ORDER BY d.step_id",
        )
        .bind(run)
        .fetch_all(self.reader())
        .await
        .op("list_unfinished_downloads")
    }

    /// Records durable progress: `bytes_durable` bytes are fsynced and `hasher_state` is the
    /// SHA-256 state after them; `expected_bytes` when the server announced a length (kept
    /// otherwise). Moves the download to `downloading`.
    #[instrument(level = "trace", skip_all, fields(step = step_id), err(level = "debug"))]
    pub async fn record_download_progress(
        &self,
        step_id: i64,
        bytes_durable: u64,
        hasher_state: Option<&[u8]>,
        expected_bytes: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        const OP: &str = "record_download_progress";
        let mut tx = self.begin_write(OP).await?;
        let done = sqlx::query(
            "UPDATE downloads SET state = 'downloading', bytes_durable = $2, hasher_state = $3,
                 expected_bytes = COALESCE($4, expected_bytes),
                 started_at = COALESCE(started_at, $5), updated_at = $5
             WHERE step_id = $1",
        )
        .bind(step_id)
        .bind(int(bytes_durable))
        .bind(hasher_state)
        .bind(expected_bytes.map(int))
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await
        .op(OP)?;
        if done.rows_affected() == 0 {
            return Err(not_found(step_id));
        }
        tx.commit().await.op(OP)?;
        Ok(())
    }

    /// Records that the download resumed from `offset` (appended to `resumed_from`). Appends
    /// `download_resumed`.
    #[instrument(level = "trace", skip_all, fields(step = step_id), err(level = "debug"))]
    pub async fn record_download_resume(
        &self,
        step_id: i64,
        offset: u64,
        now: DateTime<Utc>,
    ) -> Result<Download> {
        const OP: &str = "record_download_resume";
        let mut tx = self.begin_write(OP).await?;
        let before = get_in(&mut tx, step_id).await?;
        // JSON stays opaque to SQL (portability): read, append in Rust, write back, all inside
        // the write transaction.
        let mut offsets = before.resumed_from.clone();
        offsets.push(offset);
        let row = sqlx::query_as::<_, Download>(
            "UPDATE downloads SET resumed_from = $2, updated_at = $3 WHERE step_id = $1
             RETURNING *",
        )
        .bind(step_id)
        .bind(json_text(&offsets))
        .bind(to_millis(now))
        .fetch_one(&mut *tx)
        .await
        .op(OP)?;
        let event = download_event(
            &mut tx,
            step_id,
            EventKind::DownloadResumed,
            format!("download resumed from byte {offset}"),
            json!({ "offset": offset, "resumed_from": offsets }),
        )
        .await?;
        events::insert(&mut tx, &event, now).await?;
        tx.commit().await.op(OP)?;
        Ok(row)
    }

    /// Records that the download starts over from byte 0 (server ignored `Range`, the export
    /// changed, session lost): progress, hasher state and expected total reset (the total of the
    /// old download must not be held against the new one), `restarts` incremented, the new session recorded when
    /// given. Appends `download_restarted`.
    #[instrument(level = "trace", skip_all, fields(step = step_id), err(level = "debug"))]
    pub async fn record_download_restart(
        &self,
        step_id: i64,
        reason: &str,
        new_session_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Download> {
        const OP: &str = "record_download_restart";
        let mut tx = self.begin_write(OP).await?;
        let row = sqlx::query_as::<_, Download>(
            "UPDATE downloads SET restarts = restarts + 1, bytes_durable = 0, hasher_state = NULL,
                 expected_bytes = NULL, restore_session_id = COALESCE($2, restore_session_id), state = 'downloading',
                 updated_at = $3
             WHERE step_id = $1 RETURNING *",
        )
        .bind(step_id)
        .bind(new_session_id)
        .bind(to_millis(now))
        .fetch_one(&mut *tx)
        .await
        .found(OP, "download of step", step_id)?;
        let event = download_event(
            &mut tx,
            step_id,
            EventKind::DownloadRestarted,
            format!("download restarted from byte 0: {reason}"),
            json!({ "reason": reason, "restarts": row.restarts, "session": row.restore_session_id }),
        )
        .await?;
        events::insert(&mut tx, &event, now).await?;
        tx.commit().await.op(OP)?;
        Ok(row)
    }

    /// All bytes are on disk; the file is being checked and hashed.
    #[instrument(level = "trace", skip_all, fields(step = step_id), err(level = "debug"))]
    pub async fn mark_download_verifying(
        &self,
        step_id: i64,
        now: DateTime<Utc>,
    ) -> Result<Download> {
        const OP: &str = "mark_download_verifying";
        let mut tx = self.begin_write(OP).await?;
        let row = sqlx::query_as::<_, Download>(
            "UPDATE downloads SET state = 'verifying', updated_at = $2 WHERE step_id = $1
             RETURNING *",
        )
        .bind(step_id)
        .bind(to_millis(now))
        .fetch_one(&mut *tx)
        .await
        .found(OP, "download of step", step_id)?;
        tx.commit().await.op(OP)?;
        Ok(row)
    }

    /// The file was verified and renamed to `final_path` (its extension may have changed to
    /// `.zip`). Appends `download_published`.
    #[instrument(level = "trace", skip_all, fields(step = step_id), err(level = "debug"))]
    pub async fn mark_download_published(
        &self,
        step_id: i64,
        final_path: &Path,
        bytes: u64,
        sha256: &str,
        format: FileFormat,
        now: DateTime<Utc>,
    ) -> Result<Download> {
        const OP: &str = "mark_download_published";
        let mut tx = self.begin_write(OP).await?;
        let file = super::StepFile {
            path: final_path,
            bytes,
            sha256,
            format,
        };
        let row = mark_download_published_in(&mut tx, step_id, &file, now).await?;
        tx.commit().await.op(OP)?;
        Ok(row)
    }

    /// The download failed for good. Appends `download_failed` with `message` (which says what
    /// became of the partial file).
    #[instrument(level = "trace", skip_all, fields(step = step_id), err(level = "debug"))]
    pub async fn mark_download_failed(
        &self,
        step_id: i64,
        message: &str,
        now: DateTime<Utc>,
    ) -> Result<Download> {
        const OP: &str = "mark_download_failed";
        let now_ms = to_millis(now);
        let mut tx = self.begin_write(OP).await?;
        let row = sqlx::query_as::<_, Download>(
            "UPDATE downloads SET state = 'failed', finished_at = $2, updated_at = $2
             WHERE step_id = $1 RETURNING *",
        )
        .bind(step_id)
        .bind(now_ms)
        .fetch_one(&mut *tx)
        .await
        .found(OP, "download of step", step_id)?;
        let event = download_event(
            &mut tx,
            step_id,
            EventKind::DownloadFailed,
            format!("download failed: {message}"),
            json!({ "message": message, "bytes_durable": row.bytes_durable }),
        )
        .await?;
        events::insert(&mut tx, &event, now).await?;
        tx.commit().await.op(OP)?;
        Ok(row)
    }

    /// Records a published file (export, manifest-bearing report). Fails with
    /// [`StoreError::Conflict`] when the path is already recorded.
    #[instrument(level = "trace", skip_all, fields(job = export.job_name), err(level = "debug"))]
    pub async fn record_export(
        &self,
        export: &NewExport<'_>,
        now: DateTime<Utc>,
    ) -> Result<Export> {
        const OP: &str = "record_export";
        let mut tx = self.begin_write(OP).await?;
        let row = insert_export_in(&mut tx, export, now)
            .await?
            .ok_or_else(|| StoreError::Conflict {
                what: "export",
                id: export.path.display().to_string(),
            })?;
        tx.commit().await.op(OP)?;
        Ok(row)
    }

    /// A job's exports that retention has not deleted, oldest first (retention keeps the
    /// newest `keepLast` and those younger than `keepFor`).
    #[instrument(level = "trace", skip_all, fields(job = job), err(level = "debug"))]
    pub async fn list_live_exports(&self, job: &str) -> Result<Vec<Export>> {
        sqlx::query_as::<_, Export>(
            "SELECT * FROM exports WHERE job_name = $1 AND deleted_at IS NULL
             ORDER BY created_at, id",
        )
        .bind(job)
        .fetch_all(self.reader())
        .await
        .op("list_live_exports")
    }

    /// The files a run published, in order.
    #[instrument(level = "trace", skip_all, fields(run = %run), err(level = "debug"))]
    pub async fn list_run_exports(&self, run: RunId) -> Result<Vec<Export>> {
        sqlx::query_as::<_, Export>("SELECT * FROM exports WHERE run_id = $1 ORDER BY id")
            .bind(run)
            .fetch_all(self.reader())
            .await
            .op("list_run_exports")
    }

    /// Retention deleted an export's file (and manifest). Returns false when it was already
    /// marked. Appends `export_deleted`.
    #[instrument(level = "trace", skip_all, err(level = "debug"))]
    pub async fn mark_export_deleted(
        &self,
        id: i64,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        const OP: &str = "mark_export_deleted";
        let mut tx = self.begin_write(OP).await?;
        let row = sqlx::query_as::<_, Export>(
            "UPDATE exports SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL RETURNING *",
        )
        .bind(id)
        .bind(to_millis(now))
        .fetch_optional(&mut *tx)
        .await
        .op(OP)?;
        let Some(row) = row else {
            // Tell "already deleted" (false) from "never recorded" (NotFound).
            sqlx::query_scalar::<_, i64>("SELECT id FROM exports WHERE id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await
                .found(OP, "export", id)?;
            return Ok(false);
        };
        let mut event = NewEvent::new(
            EventKind::ExportDeleted,
            format!(
                "export {} deleted by retention: {reason}",
                row.path.display()
            ),
        )
        .job(&row.job_name)
        .run(row.run_id)
        .data(json!({
            "export_id": row.id, "path": row.path, "manifest_path": row.manifest_path,
            "bytes": row.bytes, "sha256": row.sha256, "reason": reason,
        }));
        event.step_id = row.step_id;
        events::insert(&mut tx, &event, now).await?;
        tx.commit().await.op(OP)?;
        Ok(true)
    }

    /// The size of the largest export ever published for a mailbox (deleted ones included),
    /// for the free-space check before a download.
    #[instrument(level = "trace", skip_all, err(level = "debug"))]
    pub async fn largest_export_bytes(&self, mailbox_id: &str) -> Result<Option<u64>> {
        let max: Option<i64> =
            sqlx::query_scalar("SELECT MAX(bytes) FROM exports WHERE mailbox_id = $1")
                .bind(mailbox_id)
                .fetch_one(self.reader())
                .await
                .op("largest_export_bytes")?;
        Ok(max.and_then(|b| u64::try_from(b).ok()))
    }
}

/// Records a published file in `exports`; `None` when its path is recorded already (the row
/// stays as it is).
async fn insert_export_in(
    conn: &mut AnyConnection,
    export: &NewExport<'_>,
    now: DateTime<Utc>,
) -> Result<Option<Export>> {
    sqlx::query_as::<_, Export>(
        "INSERT INTO exports (job_name, run_id, step_id, mailbox_id, mailbox_email, path,
                              manifest_path, format, bytes, sha256, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (path) DO NOTHING
         RETURNING *",
    )
    .bind(export.job_name)
    .bind(export.run_id)
    .bind(export.step_id)
    .bind(export.mailbox_id)
    .bind(export.mailbox_email)
    .bind(path_text(export.path)?)
    .bind(export.manifest_path.map(path_text).transpose()?)
    .bind(export.format)
    .bind(int(export.bytes))
    .bind(export.sha256)
    .bind(to_millis(now))
    .fetch_optional(conn)
    .await
    .op("record_export")
}

async fn create_download_in(
    conn: &mut AnyConnection,
    download: &NewDownload<'_>,
    now: DateTime<Utc>,
) -> Result<Download> {
    sqlx::query(
        "INSERT INTO downloads (step_id, final_path, partial_path, restore_session_id, state,
                                updated_at)
         VALUES ($1, $2, $3, $4, 'pending', $5)
         ON CONFLICT (step_id) DO NOTHING",
    )
    .bind(download.step_id)
    .bind(path_text(download.final_path)?)
    .bind(path_text(download.partial_path)?)
    .bind(download.restore_session_id)
    .bind(to_millis(now))
    .execute(&mut *conn)
    .await
    .op("create_download")?;
    get_in(conn, download.step_id).await
}

/// [`Store::mark_download_published`] inside the caller's write transaction.
async fn mark_download_published_in(
    conn: &mut AnyConnection,
    step_id: i64,
    file: &super::StepFile<'_>,
    now: DateTime<Utc>,
) -> Result<Download> {
    const OP: &str = "mark_download_published";
    let final_text = path_text(file.path)?;
    let (bytes, sha256, format) = (file.bytes, file.sha256, file.format);
    let now_ms = to_millis(now);
    let row = sqlx::query_as::<_, Download>(
        "UPDATE downloads SET state = 'published', final_path = $2, bytes_durable = $3,
             sha256 = $4, format = $5, finished_at = $6, updated_at = $6
         WHERE step_id = $1 RETURNING *",
    )
    .bind(step_id)
    .bind(final_text)
    .bind(int(bytes))
    .bind(sha256)
    .bind(format)
    .bind(now_ms)
    .fetch_one(&mut *conn)
    .await
    .found(OP, "download of step", step_id)?;
    let event = download_event(
        conn,
        step_id,
        EventKind::DownloadPublished,
        format!("published {final_text} ({bytes} bytes, {format})"),
        json!({
            "path": final_text, "bytes": bytes, "sha256": sha256, "format": format,
            "resumed_from": row.resumed_from, "restarts": row.restarts,
        }),
    )
    .await?;
    events::insert(conn, &event, now).await?;
    Ok(row)
}

fn not_found(step_id: i64) -> StoreError {
    StoreError::NotFound {
        what: "download of step",
        id: step_id.to_string(),
    }
}

async fn get_in(conn: &mut AnyConnection, step_id: i64) -> Result<Download> {
    sqlx::query_as::<_, Download>("SELECT * FROM downloads WHERE step_id = $1")
        .bind(step_id)
        .fetch_one(conn)
        .await
        .found("get_download", "download of step", step_id)
}

/// An event about a step's download, with the step's run attached.
async fn download_event(
    conn: &mut AnyConnection,
    step_id: i64,
    kind: EventKind,
    message: String,
    data: serde_json::Value,
) -> Result<NewEvent> {
    let run: RunId = sqlx::query_scalar("SELECT run_id FROM steps WHERE id = $1")
        .bind(step_id)
        .fetch_one(conn)
        .await
        .found("download_event", "step", step_id)?;
    Ok(NewEvent::new(kind, message)
        .run(run)
        .step(step_id)
        .data(data))
}
