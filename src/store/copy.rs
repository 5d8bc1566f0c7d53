//! Copying a whole state database into another one (`restorectl migrate-state`, docs/ha.md):
//! moving an installation from its SQLite file to PostgreSQL, or between two PostgreSQL
//! servers. Every table is copied row for row (ids, times, states, the event history), in an
//! order that satisfies the foreign keys, into an empty database, in one write transaction of
//! the target: a copy that fails leaves the target empty.
//!
//! Values travel as text (integers cast, BLOBs hex-encoded) and are cast back to the target's
//! column types, so the copy does not depend on how each driver maps types. The trigger-kept
//! totals (`run_counts`, `step_failure_counts`, `download_totals`) are copied last, replacing
//! what the target's triggers counted from the copied rows: after history pruning the source's
//! totals count more than its rows ([`TOTALS`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde::Serialize;
use sqlx::AnyConnection;
use sqlx::Row;

use super::dialect::Backend;
use super::{Result, SqlxResultExt, Store, StoreError, to_millis};

/// How a column's value travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Int,
    Blob,
}

use Kind::{Blob, Int, Text};

/// A table and its columns, in copy order. `tables_cover_the_schema` (tests/store) checks this
/// list against both schemas, so a new column cannot be forgotten.
pub const TABLES: &[(&str, &[(&str, Kind)])] = &[
    (
        "job_files",
        &[
            ("path", Text),
            ("content_hash", Text),
            ("valid", Int),
            ("errors", Text),
            ("job_names", Text),
            ("first_seen_at", Int),
            ("last_seen_at", Int),
            ("removed_at", Int),
        ],
    ),
    // The version pointers are set after job_versions (jobs and versions refer to each other).
    (
        "jobs",
        &[
            ("name", Text),
            ("kind", Text),
            ("file", Text),
            ("state", Text),
            ("errors", Text),
            ("schedule_key", Text),
            ("next_fire_at", Int),
            ("last_fire_at", Int),
            ("first_seen_at", Int),
            ("last_seen_at", Int),
            ("removed_at", Int),
        ],
    ),
    (
        "job_versions",
        &[
            ("id", Int),
            ("job_name", Text),
            ("file", Text),
            ("spec_hash", Text),
            ("spec_json", Text),
            ("valid", Int),
            ("errors", Text),
            ("first_seen_at", Int),
            ("last_seen_at", Int),
        ],
    ),
    (
        "runs",
        &[
            ("id", Text),
            ("job_name", Text),
            ("job_version_id", Int),
            ("spec_hash", Text),
            ("trigger", Text),
            ("scheduled_for", Int),
            ("state", Text),
            ("reason", Text),
            ("timeout_ms", Int),
            ("attempts", Int),
            ("cancel_requested", Int),
            ("deadline_at", Int),
            ("next_attempt_at", Int),
            ("lease_owner", Text),
            ("lease_expires_at", Int),
            ("created_at", Int),
            ("started_at", Int),
            ("finished_at", Int),
            ("updated_at", Int),
        ],
    ),
    (
        "steps",
        &[
            ("id", Int),
            ("run_id", Text),
            ("seq", Int),
            ("mailbox_id", Text),
            ("mailbox_email", Text),
            ("mailbox_name", Text),
            ("is_archive", Int),
            ("mailbox_ids", Text),
            ("state", Text),
            ("attempts", Int),
            ("next_attempt_at", Int),
            ("restore_session_id", Text),
            ("remote_operation_id", Text),
            ("submitted_at", Int),
            ("created_items", Int),
            ("merged_items", Int),
            ("failed_items", Int),
            ("skipped_items", Int),
            ("found_items", Int),
            ("error_class", Text),
            ("error_code", Text),
            ("error_message", Text),
            ("operator_decision", Text),
            ("restore_posts", Int),
            ("file_path", Text),
            ("bytes", Int),
            ("sha256", Text),
            ("format", Text),
            ("started_at", Int),
            ("finished_at", Int),
            ("updated_at", Int),
        ],
    ),
    (
        "restore_sessions",
        &[
            ("id", Text),
            ("server", Text),
            ("organization_id", Text),
            ("point_in_time", Text),
            ("run_id", Text),
            ("state", Text),
            ("keep_for_resume", Int),
            ("opened_at", Int),
            ("stopped_at", Int),
            ("updated_at", Int),
        ],
    ),
    (
        "session_intents",
        &[
            ("id", Int),
            ("server", Text),
            ("organization_id", Text),
            ("organization_name", Text),
            ("run_id", Text),
            ("requested_at", Int),
        ],
    ),
    (
        "downloads",
        &[
            ("step_id", Int),
            ("final_path", Text),
            ("partial_path", Text),
            ("restore_session_id", Text),
            ("state", Text),
            ("bytes_durable", Int),
            ("expected_bytes", Int),
            ("hasher_state", Blob),
            ("resumed_from", Text),
            ("restarts", Int),
            ("sha256", Text),
            ("format", Text),
            ("started_at", Int),
            ("finished_at", Int),
            ("updated_at", Int),
        ],
    ),
    (
        "search_progress",
        &[
            ("step_id", Int),
            ("session_id", Text),
            ("cursor", Text),
            ("pages", Int),
            ("hits", Int),
            ("part_bytes", Int),
            ("updated_at", Int),
        ],
    ),
    (
        "exports",
        &[
            ("id", Int),
            ("job_name", Text),
            ("run_id", Text),
            ("step_id", Int),
            ("mailbox_id", Text),
            ("mailbox_email", Text),
            ("path", Text),
            ("manifest_path", Text),
            ("format", Text),
            ("bytes", Int),
            ("sha256", Text),
            ("created_at", Int),
            ("deleted_at", Int),
        ],
    ),
    (
        "operator_requests",
        &[
            ("id", Int),
            ("kind", Text),
            ("job_name", Text),
            ("run_id", Text),
            ("decision", Text),
            ("requested_by", Text),
            ("created_at", Int),
            ("consumed_at", Int),
            ("result", Text),
            ("result_run_id", Text),
        ],
    ),
    (
        "daemon_instances",
        &[
            ("id", Text),
            ("pid", Int),
            ("host", Text),
            ("started_at", Int),
            ("heartbeat_at", Int),
            ("stopped_at", Int),
            ("name", Text),
        ],
    ),
    (
        "events",
        &[
            ("id", Int),
            ("at", Int),
            ("kind", Text),
            ("job_name", Text),
            ("run_id", Text),
            ("step_id", Int),
            ("message", Text),
            ("data", Text),
        ],
    ),
    (
        "notifications",
        &[
            ("id", Int),
            ("delivery", Text),
            ("target", Text),
            ("event", Text),
            ("job_name", Text),
            ("run_id", Text),
            ("payload", Text),
            ("attempts", Int),
            ("next_attempt_at", Int),
            ("delivered_at", Int),
            ("last_error", Text),
            ("created_at", Int),
        ],
    ),
    // The trigger-kept totals last, see [`TOTALS`].
    (
        "run_counts",
        &[("job_name", Text), ("state", Text), ("n", Int)],
    ),
    ("step_failure_counts", &[("error_class", Text), ("n", Int)]),
    ("download_totals", &[("id", Int), ("bytes", Int)]),
];

/// The totals behind the Prometheus counters, kept by triggers. The target's triggers count the
/// copied rows as they arrive; the copy then replaces those counts with the source's, which also
/// count the runs, failed steps and downloads that history pruning deleted (pruning never lowers
/// a counter, docs/daemon.md "Run history").
pub const TOTALS: &[&str] = &["run_counts", "step_failure_counts", "download_totals"];

/// Columns of `jobs` copied after `job_versions` (the tables refer to each other).
pub const JOB_VERSION_POINTERS: &[&str] = &["active_version_id", "current_version_id"];

/// Tables whose `id` the database generates: their generators continue after the copied ids.
const GENERATED_IDS: &[&str] = &[
    "job_versions",
    "steps",
    "session_intents",
    "exports",
    "operator_requests",
    "events",
    "notifications",
];

/// Tables left out of the copy (checked by the same test as [`TABLES`]): the migrations table,
/// and the leadership lease (the copy's source has no live daemon, so there is no leader to
/// carry over).
pub const NOT_COPIED: &[&str] = &["leadership", "_sqlx_migrations"];

/// Rows per INSERT statement (a few thousand bound values, below both backends' limits).
const BATCH_ROWS: usize = 100;

/// What a copy moved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CopyReport {
    /// Rows copied per table, in copy order.
    pub tables: Vec<(String, u64)>,
}

impl Store {
    /// Copies every row of `self` into `target`, which must be empty (freshly migrated).
    /// Refuses when a daemon heartbeated on `self` within `live_within` of `now` (stop it
    /// first: a copy of a database that changes meanwhile would lose what changes).
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] when `target` already holds jobs or events,
    /// [`StoreError::InstanceLocked`] when a daemon is live on `self`, [`StoreError::Database`]
    /// when a statement fails (the target is then left empty: one transaction).
    pub async fn copy_into(
        &self,
        target: &Store,
        live_within: Duration,
        now: DateTime<Utc>,
    ) -> Result<CopyReport> {
        const OP: &str = "copy_into";
        let bound = to_millis(now) - super::duration_millis(live_within);
        if let Some(live) = self
            .list_live_instances()
            .await?
            .into_iter()
            .find(|i| to_millis(i.heartbeat_at) > bound)
        {
            return Err(StoreError::InstanceLocked {
                holder: Box::new(live),
            });
        }
        let mut tx = target.begin_write(OP).await?;
        let used: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM jobs) + (SELECT COUNT(*) FROM events)
                    + (SELECT COUNT(*) FROM job_files)",
        )
        .fetch_one(&mut *tx)
        .await
        .op(OP)?;
        if used > 0 {
            return Err(StoreError::Conflict {
                what: "target state database",
                id: format!("{} (it already holds jobs or events)", target.location()),
            });
        }
        let source_backend = self.backend();
        let mut report = CopyReport::default();
        for (table, columns) in TABLES {
            if TOTALS.contains(table) {
                sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
                    .execute(&mut *tx)
                    .await
                    .op(OP)?;
            }
            let n = copy_table(self, source_backend, &mut tx, table, columns).await?;
            report.tables.push(((*table).to_string(), n));
        }
        // The jobs' version pointers, now that the versions exist.
        let pointers: Vec<(String, Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT name, active_version_id, current_version_id FROM jobs
             WHERE active_version_id IS NOT NULL OR current_version_id IS NOT NULL",
        )
        .fetch_all(self.reader())
        .await
        .op(OP)?;
        for (name, active, current) in pointers {
            sqlx::query(
                "UPDATE jobs SET active_version_id = $2, current_version_id = $3 WHERE name = $1",
            )
            .bind(name)
            .bind(active)
            .bind(current)
            .execute(&mut *tx)
            .await
            .op(OP)?;
        }
        let target_backend = target.backend();
        for table in GENERATED_IDS {
            if let Some(sql) = target_backend.continue_ids_after_copy(table) {
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut *tx)
                    .await
                    .op(OP)?;
            }
        }
        tx.commit().await.op(OP)?;
        Ok(report)
    }
}

/// Copies one table in batches; returns the number of rows.
async fn copy_table(
    source: &Store,
    source_backend: Backend,
    target: &mut AnyConnection,
    table: &str,
    columns: &[(&str, Kind)],
) -> Result<u64> {
    const OP: &str = "copy_into";
    let target_backend = Backend::of(target);
    let select: Vec<String> = columns
        .iter()
        .map(|(name, kind)| match kind {
            Blob => source_backend.blob_as_hex(name),
            Text | Int => format!("CAST({name} AS TEXT)"),
        })
        .collect();
    let key = columns[0].0;
    let sql = format!("SELECT {} FROM {table} ORDER BY {key}", select.join(", "));
    let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch(source.reader());
    let mut batch: Vec<Vec<Option<String>>> = Vec::with_capacity(BATCH_ROWS);
    let mut copied = 0_u64;
    while let Some(row) = rows.try_next().await.op(OP)? {
        let values = (0..columns.len())
            .map(|i| row.try_get::<Option<String>, _>(i))
            .collect::<std::result::Result<Vec<_>, _>>()
            .op(OP)?;
        batch.push(values);
        if batch.len() == BATCH_ROWS {
            insert_batch(target, target_backend, table, columns, &batch).await?;
            copied += batch.len() as u64;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        insert_batch(target, target_backend, table, columns, &batch).await?;
        copied += batch.len() as u64;
    }
    Ok(copied)
}

/// One multi-row INSERT of text values cast back to the target's column types.
async fn insert_batch(
    target: &mut AnyConnection,
    backend: Backend,
    table: &str,
    columns: &[(&str, Kind)],
    batch: &[Vec<Option<String>>],
) -> Result<()> {
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    let mut placeholders = Vec::with_capacity(batch.len());
    let mut n = 0;
    for _ in batch {
        let row: Vec<String> = columns
            .iter()
            .map(|(_, kind)| {
                n += 1;
                match kind {
                    Text => format!("${n}"),
                    Int => format!("CAST(${n} AS BIGINT)"),
                    Blob => backend.hex_as_blob(&format!("${n}")),
                }
            })
            .collect();
        placeholders.push(format!("({})", row.join(", ")));
    }
    let sql = format!(
        "INSERT INTO {table} ({}) VALUES {}",
        names.join(", "),
        placeholders.join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for row in batch {
        for value in row {
            query = query.bind(value.clone());
        }
    }
    query.execute(target).await.op("copy_into")?;
    Ok(())
}
