//! Applying a scan of the job directory in bulk ([`Store::apply_job_files`]): many files and
//! their job versions in one transaction, with the files never seen before (the reconciler's
//! first pass over thousands of files) inserted in a handful of statements. The rows written
//! are the same as [`Store::upsert_job_version`] and [`Store::record_job_file`] one by one.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::AnyConnection;
use tracing::instrument;

use super::dialect::{Backend, JsonRows, json_rows};
use super::events;
use super::jobs::{
    FileChange, NewJobVersion, ScannedFile, VersionChange, VersionOutcome, record_job_file_in,
    upsert_job_version_in, version_event,
};
use super::{JobState, Result, SqlxResultExt, Store, StoreError, json_text, path_text, to_millis};

/// A scanned file and the versions of its jobs, for [`Store::apply_job_files`].
#[derive(Debug, Clone)]
pub struct FileApply<'a> {
    pub file: ScannedFile<'a>,
    pub versions: Vec<NewJobVersion<'a>>,
}

impl Store {
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
}

/// The paths of a JSON list (`[[path], …]`) that `job_files` knows.
const KNOWN_PATHS: JsonRows = json_rows!(
    "SELECT path FROM job_files WHERE path IN (SELECT r.value ->> 0",
    "$1",
    ")"
);
/// The names of a JSON list (`[[name], …]`) that `jobs` knows.
const KNOWN_NAMES: JsonRows = json_rows!(
    "SELECT name FROM jobs WHERE name IN (SELECT r.value ->> 0",
    "$1",
    ")"
);
const INSERT_JOBS: JsonRows = json_rows!(
    "INSERT INTO jobs (name, kind, file, state, errors, first_seen_at, last_seen_at)
     SELECT r.value ->> 0, r.value ->> 1, r.value ->> 2, r.value ->> 3, r.value ->> 4, $1, $1",
    "$2",
    "ORDER BY r.key"
);
const INSERT_VERSIONS: JsonRows = json_rows!(
    "INSERT INTO job_versions
         (job_name, file, spec_hash, spec_json, valid, errors, first_seen_at, last_seen_at)
     SELECT r.value ->> 0, r.value ->> 1, r.value ->> 2, r.value ->> 3,
            CAST(r.value ->> 4 AS BIGINT), r.value ->> 5, $1, $1",
    "$2",
    "ORDER BY r.key RETURNING job_name, id"
);
const SET_VERSION_POINTERS: JsonRows = json_rows!(
    "UPDATE jobs SET current_version_id = CAST(r.value ->> 1 AS BIGINT),
                     active_version_id = CAST(r.value ->> 2 AS BIGINT)",
    "$1",
    "WHERE jobs.name = r.value ->> 0"
);
const INSERT_FILES: JsonRows = json_rows!(
    "INSERT INTO job_files
         (path, content_hash, valid, errors, job_names, first_seen_at, last_seen_at)
     SELECT r.value ->> 0, r.value ->> 1, CAST(r.value ->> 2 AS BIGINT), r.value ->> 3,
            r.value ->> 4, $1, $1",
    "$2",
    "ORDER BY r.key"
);

/// Which of `files` can be inserted in bulk: the path was never recorded, and every job name
/// in it is unknown to the store and appears once in the whole slice.
async fn fresh_files(conn: &mut AnyConnection, files: &[FileApply<'_>]) -> Result<Vec<bool>> {
    const OP: &str = "apply_job_files";
    let paths = files
        .iter()
        .map(|f| path_text(f.file.path))
        .collect::<Result<Vec<&str>>>()?;
    let backend = Backend::of(conn);
    // One-element arrays, so both backends read each value as `r.value ->> 0`.
    let path_rows: Vec<[&str; 1]> = paths.iter().map(|p| [*p]).collect();
    let known_paths: HashSet<String> = sqlx::query_scalar(KNOWN_PATHS.sql(backend))
        .bind(json_text(&path_rows))
        .fetch_all(&mut *conn)
        .await
        .op(OP)?
        .into_iter()
        .collect();
    let mut name_count: HashMap<&str, usize> = HashMap::new();
    for v in files.iter().flat_map(|f| &f.versions) {
        *name_count.entry(v.name).or_default() += 1;
    }
    let name_rows: Vec<[&str; 1]> = name_count.keys().map(|n| [*n]).collect();
    let known_names: HashSet<String> = sqlx::query_scalar(KNOWN_NAMES.sql(backend))
        .bind(json_text(&name_rows))
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
    conn: &mut AnyConnection,
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
    insert_json_rows(conn, INSERT_JOBS, now_ms, &job_rows).await?;

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
    let ids: HashMap<String, i64> =
        sqlx::query_as::<_, (String, i64)>(INSERT_VERSIONS.sql(Backend::of(conn)))
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
    sqlx::query(SET_VERSION_POINTERS.sql(Backend::of(conn)))
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
    insert_json_rows(conn, INSERT_FILES, now_ms, &file_rows).await?;

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

/// Runs a bulk `INSERT … SELECT …` from JSON rows whose `$1` is the time of the change and `$2`
/// the rows as a JSON array of arrays (one bound value, however many rows).
async fn insert_json_rows(
    conn: &mut AnyConnection,
    sql: JsonRows,
    now_ms: i64,
    rows: &[serde_json::Value],
) -> Result<()> {
    sqlx::query(sql.sql(Backend::of(conn)))
        .bind(now_ms)
        .bind(json_text(&rows))
        .execute(conn)
        .await
        .op("apply_job_files")?;
    Ok(())
}
