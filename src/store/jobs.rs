//! Job files, jobs and job versions (SPEC §4.2): what the watcher scanned, which version of each
//! job is current and which is active (the last valid one), and the scheduler's next-fire
//! bookkeeping (the stored next fire instant is the source of truth).
//!
//! An invalid edit records a new invalid version and sets the job `invalid`, but leaves
//! `active_version_id` on the last valid version, which keeps being scheduled. A job whose first
//! version is invalid has no active version and is not scheduled.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::sqlite::SqliteConnection;
use tracing::instrument;

use super::events::{self, EventKind, NewEvent};
use super::runs::Run;
use super::{
    JobState, JsonText, Millis, OptMillis, Result, SqlxResultExt, Store, StoreError, json_text,
    path_text, to_millis,
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

/// A scanned file and the versions of its jobs, for [`Store::apply_job_files`].
#[derive(Debug, Clone)]
pub struct FileApply<'a> {
    pub file: ScannedFile<'a>,
    pub versions: Vec<NewJobVersion<'a>>,
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

/// The next-fire bookkeeping of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextFire<'a> {
    pub schedule_key: Option<&'a str>,
    pub next_fire_at: Option<DateTime<Utc>>,
}

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
        sqlx::query_as::<_, StoredJobFile>("SELECT * FROM job_files ORDER BY path")
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

    /// Applies scanned files with the versions of their jobs, many per transaction: each
    /// file's versions first, then its file row (so the file's hash is only recorded with its
    /// jobs). Files never seen whose jobs are all new (the reconciler's first pass over
    /// thousands of files) are inserted in bulk, a handful of statements for the whole slice;
    /// the others go row by row. Returns each file's change and its versions' outcomes, in
    /// order.
    #[instrument(level = "trace", skip_all, fields(files = files.len()), err(level = "debug"))]
    pub async fn apply_job_files(
        &self,
        files: &[FileApply<'_>],
        now: DateTime<Utc>,
    ) -> Result<Vec<(FileChange, Vec<VersionOutcome>)>> {
        const OP: &str = "apply_job_files";
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write(OP).await?;
        let fresh = fresh_files(&mut tx, files).await?;
        let fresh_files: Vec<&FileApply<'_>> = files
            .iter()
            .zip(&fresh)
            .filter_map(|(f, fresh)| fresh.then_some(f))
            .collect();
        // One outcome per fresh file, in order.
        let mut bulk = insert_fresh_files_in(&mut tx, &fresh_files, now)
            .await?
            .into_iter()
            .peekable();
        let mut out = Vec::with_capacity(files.len());
        for (f, fresh) in files.iter().zip(fresh) {
            if let Some(done) = bulk.next_if(|_| fresh) {
                out.push(done);
                continue;
            }
            let mut outcomes = Vec::with_capacity(f.versions.len());
            for v in &f.versions {
                outcomes.push(upsert_job_version_in(&mut tx, v, now).await?);
            }
            let change = record_job_file_in(&mut tx, &f.file, now).await?;
            out.push((change, outcomes));
        }
        tx.commit().await.op(OP)?;
        Ok(out)
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
        let mut conn = self.reader().begin().await.op(OP)?;
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

    /// Sets (or clears, with `None`) a job's next fire and the schedule it was computed from.
    #[instrument(level = "trace", skip_all, fields(job = name), err(level = "debug"))]
    pub async fn set_next_fire(&self, name: &str, next: NextFire<'_>) -> Result<()> {
        const OP: &str = "set_next_fire";
        let mut tx = self.begin_write(OP).await?;
        update_next_fire(&mut tx, name, next, None).await?;
        tx.commit().await.op(OP)?;
        Ok(())
    }
}

impl Store {
    /// [`Store::set_next_fire`] for many jobs in one transaction (the scheduler's first pass
    /// over thousands of new schedules would otherwise commit once per job).
    #[instrument(level = "trace", skip_all, fields(jobs = updates.len()), err(level = "debug"))]
    pub async fn set_next_fires(&self, updates: &[(&str, NextFire<'_>)]) -> Result<()> {
        const OP: &str = "set_next_fires";
        if updates.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write(OP).await?;
        for (name, next) in updates {
            update_next_fire(&mut tx, name, *next, None).await?;
        }
        tx.commit().await.op(OP)?;
        Ok(())
    }
}

/// [`Store::record_job_file`] inside the caller's transaction.
async fn record_job_file_in(
    conn: &mut SqliteConnection,
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
    .bind(file.valid)
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
async fn upsert_job_version_in(
    conn: &mut SqliteConnection,
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
    .bind(version.valid)
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
fn version_event(
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

/// Which of `files` can be inserted in bulk: the path was never recorded, and every job name
/// in it is unknown to the store and appears once in the whole slice.
async fn fresh_files(conn: &mut SqliteConnection, files: &[FileApply<'_>]) -> Result<Vec<bool>> {
    const OP: &str = "apply_job_files";
    let paths = files
        .iter()
        .map(|f| path_text(f.file.path))
        .collect::<Result<Vec<&str>>>()?;
    let known_paths: HashSet<String> = sqlx::query_scalar(
        "SELECT path FROM job_files WHERE path IN (SELECT value FROM json_each($1))",
    )
    .bind(json_text(&paths))
    .fetch_all(&mut *conn)
    .await
    .op(OP)?
    .into_iter()
    .collect();
    let mut name_count: HashMap<&str, usize> = HashMap::new();
    for v in files.iter().flat_map(|f| &f.versions) {
        *name_count.entry(v.name).or_default() += 1;
    }
    let names: Vec<&str> = name_count.keys().copied().collect();
    let known_names: HashSet<String> =
        sqlx::query_scalar("SELECT name FROM jobs WHERE name IN (SELECT value FROM json_each($1))")
            .bind(json_text(&names))
            .fetch_all(&mut *conn)
            .await
            .op(OP)?
            .into_iter()
            .collect();
    Ok(files
        .iter()
        .zip(paths)
        .map(|(f, path)| {
            !known_paths.contains(path)
                && f.versions
                    .iter()
                    .all(|v| name_count[v.name] == 1 && !known_names.contains(v.name))
        })
        .collect())
}

/// Inserts files that [`fresh_files`] found fresh, with their (new) jobs, versions and events,
/// in five statements; the same rows as [`upsert_job_version_in`] and [`record_job_file_in`]
/// one by one.
async fn insert_fresh_files_in(
    conn: &mut SqliteConnection,
    files: &[&FileApply<'_>],
    now: DateTime<Utc>,
) -> Result<Vec<(FileChange, Vec<VersionOutcome>)>> {
    const OP: &str = "apply_job_files";
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let now_ms = to_millis(now);
    let versions: Vec<(&NewJobVersion<'_>, &str, String)> = files
        .iter()
        .flat_map(|f| &f.versions)
        .map(|v| {
            let errors = if v.valid {
                "[]".to_string()
            } else {
                json_text(v.errors)
            };
            Ok((v, path_text(v.file)?, errors))
        })
        .collect::<Result<_>>()?;
    let state_of = |v: &NewJobVersion<'_>| {
        if v.valid {
            JobState::Active
        } else {
            JobState::Invalid
        }
    };
    let job_rows: Vec<serde_json::Value> = versions
        .iter()
        .map(|(v, file, errors)| json!([v.name, v.kind, file, state_of(v).as_str(), errors]))
        .collect();
    insert_json_rows(
        conn,
        "INSERT INTO jobs (name, kind, file, state, errors, first_seen_at, last_seen_at)
         SELECT r.value ->> 0, r.value ->> 1, r.value ->> 2, r.value ->> 3, r.value ->> 4, $1, $1
         FROM json_each($2) AS r ORDER BY r.key",
        now_ms,
        &job_rows,
    )
    .await?;

    let version_rows: Vec<serde_json::Value> = versions
        .iter()
        .map(|(v, file, errors)| {
            json!([
                v.name,
                file,
                v.spec_hash,
                json_text(v.spec),
                i64::from(v.valid),
                errors
            ])
        })
        .collect();
    // RETURNING comes in no particular order: match by job name (unique in a fresh slice).
    let ids: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "INSERT INTO job_versions
             (job_name, file, spec_hash, spec_json, valid, errors, first_seen_at, last_seen_at)
         SELECT r.value ->> 0, r.value ->> 1, r.value ->> 2, r.value ->> 3, r.value ->> 4,
                r.value ->> 5, $1, $1
         FROM json_each($2) AS r ORDER BY r.key
         RETURNING job_name, id",
    )
    .bind(now_ms)
    .bind(json_text(&version_rows))
    .fetch_all(&mut *conn)
    .await
    .op(OP)?
    .into_iter()
    .collect();
    let id_of = |name: &str| {
        ids.get(name).copied().ok_or_else(|| StoreError::NotFound {
            what: "inserted job version of job",
            id: name.to_string(),
        })
    };

    let mut pointers = Vec::with_capacity(versions.len());
    let mut events = Vec::with_capacity(versions.len());
    for (v, file, _) in &versions {
        let id = id_of(v.name)?;
        let active = v.valid.then_some(id);
        pointers.push(json!([v.name, id, active]));
        events.push(version_event(v, file, VersionChange::New, id, active));
    }
    sqlx::query(
        "UPDATE jobs SET current_version_id = r.value ->> 1, active_version_id = r.value ->> 2
         FROM json_each($1) AS r WHERE jobs.name = r.value ->> 0",
    )
    .bind(json_text(&pointers))
    .execute(&mut *conn)
    .await
    .op(OP)?;
    events::insert_many(&mut *conn, &events, now).await?;

    let file_rows: Vec<serde_json::Value> = files
        .iter()
        .map(|f| {
            Ok(json!([
                path_text(f.file.path)?,
                f.file.content_hash,
                i64::from(f.file.valid),
                json_text(f.file.errors),
                json_text(&f.file.job_names),
            ]))
        })
        .collect::<Result<_>>()?;
    insert_json_rows(
        conn,
        "INSERT INTO job_files
             (path, content_hash, valid, errors, job_names, first_seen_at, last_seen_at)
         SELECT r.value ->> 0, r.value ->> 1, r.value ->> 2, r.value ->> 3, r.value ->> 4, $1, $1
         FROM json_each($2) AS r ORDER BY r.key",
        now_ms,
        &file_rows,
    )
    .await?;

    files
        .iter()
        .map(|f| {
            let outcomes = f
                .versions
                .iter()
                .map(|v| {
                    let id = id_of(v.name)?;
                    Ok(VersionOutcome {
                        change: VersionChange::New,
                        version_id: id,
                        state: state_of(v),
                        active_version_id: v.valid.then_some(id),
                    })
                })
                .collect::<Result<_>>()?;
            Ok((FileChange::New, outcomes))
        })
        .collect()
}

/// Runs a bulk `INSERT … SELECT … FROM json_each($2)` whose `$1` is the time of the change and
/// `$2` the rows as a JSON array of arrays (one bound value, however many rows).
async fn insert_json_rows(
    conn: &mut SqliteConnection,
    sql: &'static str,
    now_ms: i64,
    rows: &[serde_json::Value],
) -> Result<()> {
    sqlx::query(sql)
        .bind(now_ms)
        .bind(json_text(&rows))
        .execute(conn)
        .await
        .op("apply_job_files")?;
    Ok(())
}

/// Writes a job's next-fire bookkeeping; `last_fire_at` is kept when `None`.
pub(crate) async fn update_next_fire(
    conn: &mut SqliteConnection,
    name: &str,
    next: NextFire<'_>,
    last_fire_at: Option<DateTime<Utc>>,
) -> Result<()> {
    let done = sqlx::query(
        "UPDATE jobs SET schedule_key = $2, next_fire_at = $3,
             last_fire_at = COALESCE($4, last_fire_at)
         WHERE name = $1",
    )
    .bind(name)
    .bind(next.schedule_key)
    .bind(next.next_fire_at.map(to_millis))
    .bind(last_fire_at.map(to_millis))
    .execute(conn)
    .await
    .op("update_next_fire")?;
    if done.rows_affected() == 0 {
        return Err(super::StoreError::NotFound {
            what: "job",
            id: name.to_string(),
        });
    }
    Ok(())
}
