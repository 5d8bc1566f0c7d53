//! Job files, jobs and job versions (SPEC §4.2): what the watcher scanned, which version of each
//! job is current and which is active (the last valid one), recorded one at a time, and the
//! reads of those rows. A whole scan applied in bulk is [`super::scan`]; the next-fire columns
//! of a job are [`super::next_fire`]'s.
//!
//! An invalid edit records a new invalid version and sets the job `invalid`, but leaves
//! `active_version_id` on the last valid version, which keeps being scheduled. A job whose first
//! version is invalid has no active version and is not scheduled.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::AnyConnection;
use tracing::instrument;

use super::events::{self, EventKind, NewEvent};
use super::runs::Run;
use super::{
    JobState, JsonText, Millis, OptMillis, Result, SqlxResultExt, Store, json_text, path_text,
    to_millis,
};

/// A job file as the watcher scanned it.
#[derive(Debug, Clone)]
pub struct ScannedFile<'a> {
    pub path: &'a Path,
    /// Hash of the file's bytes (tells a rescan of the same content from an edit).
    pub content_hash: &'a str,
    pub valid: bool,
    /// JSON array of located errors (`[]` when valid).
    pub errors: &'a serde_json::Value,
    /// `metadata.name` of every document found in the file.
    pub job_names: &'a [String],
}

/// What recording a scanned file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileChange {
    /// Never seen before.
    New,
    /// Same content as last time.
    Unchanged,
    /// Different content, or the file came back after being removed.
    Changed,
}

/// A row of `job_files`.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct StoredJobFile {
    #[sqlx(try_from = "String")]
    pub path: PathBuf,
    pub content_hash: String,
    #[sqlx(try_from = "super::Flag")]
    pub valid: bool,
    #[sqlx(try_from = "JsonText")]
    pub errors: serde_json::Value,
    #[sqlx(try_from = "JsonText")]
    pub job_names: Vec<String>,
    #[sqlx(try_from = "Millis")]
    pub first_seen_at: DateTime<Utc>,
    #[sqlx(try_from = "Millis")]
    pub last_seen_at: DateTime<Utc>,
    #[sqlx(try_from = "OptMillis")]
    pub removed_at: Option<DateTime<Utc>>,
}

/// A row of `jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct StoredJob {
    pub name: String,
    /// `ExportPst`, `Restore`, … (of the last valid version, or of the first version seen).
    pub kind: String,
    #[sqlx(try_from = "String")]
    pub file: PathBuf,
    /// The last valid version: the one scheduled.
    pub active_version_id: Option<i64>,
    /// The version most recently applied, valid or not.
    pub current_version_id: Option<i64>,
    pub state: JobState,
    /// Errors of the current version when it is invalid, else `[]`.
    #[sqlx(try_from = "JsonText")]
    pub errors: serde_json::Value,
    /// The cron expression and time zone `next_fire_at` was computed from.
    pub schedule_key: Option<String>,
    #[sqlx(try_from = "OptMillis")]
    pub next_fire_at: Option<DateTime<Utc>>,
    #[sqlx(try_from = "OptMillis")]
    pub last_fire_at: Option<DateTime<Utc>>,
    #[sqlx(try_from = "Millis")]
    pub first_seen_at: DateTime<Utc>,
    #[sqlx(try_from = "Millis")]
    pub last_seen_at: DateTime<Utc>,
    #[sqlx(try_from = "OptMillis")]
    pub removed_at: Option<DateTime<Utc>>,
}

/// A row of `job_versions`.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct JobVersion {
    pub id: i64,
    pub job_name: String,
    #[sqlx(try_from = "String")]
    pub file: PathBuf,
    /// Normalised spec hash (hex SHA-256).
    pub spec_hash: String,
    /// The normalised spec (secret references only, never values).
    #[sqlx(try_from = "JsonText")]
    pub spec_json: serde_json::Value,
    #[sqlx(try_from = "super::Flag")]
    pub valid: bool,
    #[sqlx(try_from = "JsonText")]
    pub errors: serde_json::Value,
    #[sqlx(try_from = "Millis")]
    pub first_seen_at: DateTime<Utc>,
    #[sqlx(try_from = "Millis")]
    pub last_seen_at: DateTime<Utc>,
}

/// A job version to record.
#[derive(Debug, Clone)]
pub struct NewJobVersion<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub file: &'a Path,
    pub spec_hash: &'a str,
    pub spec: &'a serde_json::Value,
    pub valid: bool,
    /// JSON array of located errors (`[]` when valid).
    pub errors: &'a serde_json::Value,
}

/// Whether a recorded version differs from the job's current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionChange {
    /// The job was never seen before.
    New,
    /// Same version and state as the current one (a rescan).
    Unchanged,
    /// Another version, a validity change, or the job came back after removal.
    Changed,
}

/// The result of [`Store::upsert_job_version`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionOutcome {
    pub change: VersionChange,
    pub version_id: i64,
    /// The job's state afterwards.
    pub state: JobState,
    /// The version scheduled afterwards (unchanged by an invalid version).
    pub active_version_id: Option<i64>,
}

/// A job with what `restorectl jobs` shows about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobSummary {
    pub job: StoredJob,
    pub active_version: Option<JobVersion>,
    /// The latest run that was queued (history-only `missed`/`skipped` rows are not runs).
    pub last_run: Option<Run>,
}

/// Every job file and every job row (the reconcile task's start and rescans): a row each.
pub(super) const JOB_FILES: &str = "SELECT * FROM job_files ORDER BY path";
pub(super) const JOB_ROWS: &str = "SELECT * FROM jobs ORDER BY name";

impl Store {
    /// Records a scanned job file (insert or update) and says whether its content changed.
    /// A file that was marked removed and is scanned again is un-removed.
    #[instrument(level = "trace", skip_all, fields(path = %file.path.display()), err(level = "debug"))]
    pub async fn record_job_file(
        &self,
        file: &ScannedFile<'_>,
        now: DateTime<Utc>,
    ) -> Result<FileChange> {
        const OP: &str = "record_job_file";
        let mut tx = self.begin_write(OP).await?;
        let change = record_job_file_in(&mut tx, file, now).await?;
        tx.commit().await.op(OP)?;
        Ok(change)
    }

    /// Marks a job file removed. Returns false when it was unknown or already removed.
    #[instrument(level = "trace", skip_all, err(level = "debug"))]
    pub async fn mark_job_file_removed(&self, path: &Path, now: DateTime<Utc>) -> Result<bool> {
        const OP: &str = "mark_job_file_removed";
        let mut tx = self.begin_write(OP).await?;
        let done = sqlx::query(
            "UPDATE job_files SET removed_at = $2 WHERE path = $1 AND removed_at IS NULL",
        )
        .bind(path_text(path)?)
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await
        .op(OP)?;
        tx.commit().await.op(OP)?;
        Ok(done.rows_affected() > 0)
    }

    /// Every job file ever seen (removed ones have `removed_at`), by path.
    #[instrument(level = "trace", skip_all, err(level = "debug"))]
    pub async fn list_job_files(&self) -> Result<Vec<StoredJobFile>> {
        sqlx::query_as::<_, StoredJobFile>(JOB_FILES)
            .fetch_all(self.reader())
            .await
            .op("list_job_files")
    }

    /// Records a version of a job (valid or not) and makes it the job's current version.
    ///
    /// - a valid version becomes the active (scheduled) version and the job `active`;
    /// - an invalid version sets the job `invalid` with its errors and leaves the active version
    ///   as it was; the first version of a job being invalid leaves it with no active version;
    /// - a removed job comes back (a job that returns invalid has no active version: removal
    ///   ended the old one);
    /// - the same spec hash twice reuses the version row (its validity and errors refreshed).
    ///
    /// Appends `job_version_added` / `job_version_invalid` unless nothing changed.
    #[instrument(level = "trace", skip_all, fields(job = version.name), err(level = "debug"))]
    pub async fn upsert_job_version(
        &self,
        version: &NewJobVersion<'_>,
        now: DateTime<Utc>,
    ) -> Result<VersionOutcome> {
        const OP: &str = "upsert_job_version";
        let mut tx = self.begin_write(OP).await?;
        let outcome = upsert_job_version_in(&mut tx, version, now).await?;
        tx.commit().await.op(OP)?;
        Ok(outcome)
    }

    /// Marks a job removed (its file or document is gone): no next fire, history kept. Returns
    /// false when it was unknown or already removed. [`Store::upsert_job_version`] brings it back.
    #[instrument(level = "trace", skip_all, fields(job = name), err(level = "debug"))]
    pub async fn mark_job_removed(&self, name: &str, now: DateTime<Utc>) -> Result<bool> {
        const OP: &str = "mark_job_removed";
        let mut tx = self.begin_write(OP).await?;
        let done = sqlx::query(
            "UPDATE jobs SET state = $2, removed_at = $3, schedule_key = NULL, next_fire_at = NULL
             WHERE name = $1 AND state <> $2",
        )
        .bind(name)
        .bind(JobState::Removed)
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await
        .op(OP)?;
        let removed = done.rows_affected() > 0;
        if removed {
            let event =
                NewEvent::new(EventKind::JobRemoved, format!("job {name} removed")).job(name);
            events::insert(&mut tx, &event, now).await?;
        }
        tx.commit().await.op(OP)?;
        Ok(removed)
    }

    /// One job.
    #[instrument(level = "trace", skip_all, fields(job = name), err(level = "debug"))]
    pub async fn get_job(&self, name: &str) -> Result<StoredJob> {
        sqlx::query_as::<_, StoredJob>("SELECT * FROM jobs WHERE name = $1")
            .bind(name)
            .fetch_one(self.reader())
            .await
            .found("get_job", "job", name)
    }

    /// One job version (the run engine reads the spec a run was queued with from here).
    #[instrument(level = "trace", skip_all, err(level = "debug"))]
    pub async fn get_job_version(&self, id: i64) -> Result<JobVersion> {
        sqlx::query_as::<_, JobVersion>("SELECT * FROM job_versions WHERE id = $1")
            .bind(id)
            .fetch_one(self.reader())
            .await
            .found("get_job_version", "job version", id)
    }

    /// Every version of a job, oldest first.
    #[instrument(level = "trace", skip_all, fields(job = name), err(level = "debug"))]
    pub async fn list_job_versions(&self, name: &str) -> Result<Vec<JobVersion>> {
        sqlx::query_as::<_, JobVersion>(
            "SELECT * FROM job_versions WHERE job_name = $1 ORDER BY id",
        )
        .bind(name)
        .fetch_all(self.reader())
        .await
        .op("list_job_versions")
    }

    /// Every job (removed ones included) with its active version and its last run, by name.
    #[instrument(level = "trace", skip_all, err(level = "debug"))]
    pub async fn list_jobs(&self) -> Result<Vec<JobSummary>> {
        const OP: &str = "list_jobs";
        // Three queries on one snapshot rather than one wide join: the row types stay the
        // tables' own, and the last-run lookup uses the (job_name, created_at) index.
        let mut conn = self.begin_read(OP).await?;
        let jobs = sqlx::query_as::<_, StoredJob>("SELECT * FROM jobs ORDER BY name")
            .fetch_all(&mut *conn)
            .await
            .op(OP)?;
        let versions = sqlx::query_as::<_, JobVersion>(
            "SELECT v.* FROM job_versions v JOIN jobs j ON j.active_version_id = v.id",
        )
        .fetch_all(&mut *conn)
        .await
        .op(OP)?;
        let last_runs = sqlx::query_as::<_, Run>(
            "SELECT * FROM runs WHERE id IN (
                 SELECT (SELECT r.id FROM runs r
                         WHERE r.job_name = j.name AND r.state NOT IN ('missed', 'skipped')
                         ORDER BY r.created_at DESC, r.id DESC LIMIT 1)
                 FROM jobs j)",
        )
        .fetch_all(&mut *conn)
        .await
        .op(OP)?;
        conn.commit().await.op(OP)?;
        Ok(jobs
            .into_iter()
            .map(|job| JobSummary {
                active_version: versions
                    .iter()
                    .find(|v| Some(v.id) == job.active_version_id)
                    .cloned(),
                last_run: last_runs.iter().find(|r| r.job_name == job.name).cloned(),
                job,
            })
            .collect())
    }

    /// Every job row, by name, without the versions and last runs [`Store::list_jobs`] adds
    /// (the reconciler compares thousands of them on every rescan).
    #[instrument(level = "trace", skip_all, err(level = "debug"))]
    pub async fn list_job_rows(&self) -> Result<Vec<StoredJob>> {
        sqlx::query_as::<_, StoredJob>(JOB_ROWS)
            .fetch_all(self.reader())
            .await
            .op("list_job_rows")
    }
}

/// [`Store::record_job_file`] inside the caller's transaction.
pub(super) async fn record_job_file_in(
    conn: &mut AnyConnection,
    file: &ScannedFile<'_>,
    now: DateTime<Utc>,
) -> Result<FileChange> {
    const OP: &str = "record_job_file";
    let path = path_text(file.path)?;
    let before: Option<(String, Option<i64>)> =
        sqlx::query_as("SELECT content_hash, removed_at FROM job_files WHERE path = $1")
            .bind(path)
            .fetch_optional(&mut *conn)
            .await
            .op(OP)?;
    sqlx::query(
        "INSERT INTO job_files
                 (path, content_hash, valid, errors, job_names, first_seen_at, last_seen_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6)
             ON CONFLICT (path) DO UPDATE SET
                 content_hash = excluded.content_hash, valid = excluded.valid,
                 errors = excluded.errors, job_names = excluded.job_names,
                 last_seen_at = excluded.last_seen_at, removed_at = NULL",
    )
    .bind(path)
    .bind(file.content_hash)
    .bind(i64::from(file.valid))
    .bind(json_text(file.errors))
    .bind(json_text(&file.job_names))
    .bind(to_millis(now))
    .execute(&mut *conn)
    .await
    .op(OP)?;
    Ok(match before {
        None => FileChange::New,
        Some((hash, None)) if hash == file.content_hash => FileChange::Unchanged,
        Some(_) => FileChange::Changed,
    })
}

/// [`Store::upsert_job_version`] inside the caller's transaction.
pub(super) async fn upsert_job_version_in(
    conn: &mut AnyConnection,
    version: &NewJobVersion<'_>,
    now: DateTime<Utc>,
) -> Result<VersionOutcome> {
    const OP: &str = "upsert_job_version";
    let file = path_text(version.file)?;
    let errors = if version.valid {
        "[]".to_string()
    } else {
        json_text(version.errors)
    };
    let now_ms = to_millis(now);
    let before = sqlx::query_as::<_, StoredJob>("SELECT * FROM jobs WHERE name = $1")
        .bind(version.name)
        .fetch_optional(&mut *conn)
        .await
        .op(OP)?;
    if before.is_none() {
        // The job row first: job_versions.job_name references it.
        sqlx::query(
            "INSERT INTO jobs (name, kind, file, state, errors, first_seen_at, last_seen_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(version.name)
        .bind(version.kind)
        .bind(file)
        .bind(if version.valid {
            JobState::Active
        } else {
            JobState::Invalid
        })
        .bind(&errors)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .op(OP)?;
    }
    let version_id: i64 = sqlx::query_scalar(
        "INSERT INTO job_versions
                 (job_name, file, spec_hash, spec_json, valid, errors, first_seen_at, last_seen_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
             ON CONFLICT (job_name, spec_hash) DO UPDATE SET
                 file = excluded.file, valid = excluded.valid, errors = excluded.errors,
                 last_seen_at = excluded.last_seen_at
             RETURNING id",
    )
    .bind(version.name)
    .bind(file)
    .bind(version.spec_hash)
    .bind(json_text(version.spec))
    .bind(i64::from(version.valid))
    .bind(&errors)
    .bind(now_ms)
    .fetch_one(&mut *conn)
    .await
    .op(OP)?;

    let state = if version.valid {
        JobState::Active
    } else {
        JobState::Invalid
    };
    let active_version_id = match (&before, version.valid) {
        (_, true) => Some(version_id),
        (Some(job), false) if job.state != JobState::Removed => job.active_version_id,
        _ => None,
    };
    let change = match &before {
        None => VersionChange::New,
        Some(job)
            if job.current_version_id == Some(version_id)
                && job.state == state
                && job.active_version_id == active_version_id =>
        {
            VersionChange::Unchanged
        }
        Some(_) => VersionChange::Changed,
    };
    // An invalid version keeps the kind of the last valid one (it may not even parse).
    sqlx::query(
        "UPDATE jobs SET
                 kind = CASE WHEN $2 THEN $3 ELSE kind END, file = $4,
                 current_version_id = $5, active_version_id = $6, state = $7, errors = $8,
                 last_seen_at = $9, removed_at = NULL
             WHERE name = $1",
    )
    .bind(version.name)
    .bind(version.valid)
    .bind(version.kind)
    .bind(file)
    .bind(version_id)
    .bind(active_version_id)
    .bind(state)
    .bind(&errors)
    .bind(now_ms)
    .execute(&mut *conn)
    .await
    .op(OP)?;

    if change != VersionChange::Unchanged {
        let event = version_event(version, file, change, version_id, active_version_id);
        events::insert(&mut *conn, &event, now).await?;
    }
    Ok(VersionOutcome {
        change,
        version_id,
        state,
        active_version_id,
    })
}

/// The `job_version_added` / `job_version_invalid` event of a recorded version.
pub(super) fn version_event(
    version: &NewJobVersion<'_>,
    file: &str,
    change: VersionChange,
    version_id: i64,
    active_version_id: Option<i64>,
) -> NewEvent {
    let (kind, message) = if version.valid {
        let verb = match change {
            VersionChange::New => "added",
            _ => "changed",
        };
        (
            EventKind::JobVersionAdded,
            format!("job {} {verb} (version {version_id})", version.name),
        )
    } else {
        (
            EventKind::JobVersionInvalid,
            format!(
                "job {} is invalid in {file}; {}",
                version.name,
                match active_version_id {
                    Some(v) => format!("version {v} stays active"),
                    None => "not scheduled".to_string(),
                }
            ),
        )
    };
    NewEvent::new(kind, message).job(version.name).data(json!({
        "version_id": version_id,
        "spec_hash": version.spec_hash,
        "file": file,
        "active_version_id": active_version_id,
        "errors": if version.valid { serde_json::Value::Null } else { version.errors.clone() },
    }))
}
