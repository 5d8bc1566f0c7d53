//! Run-history retention (`history:` in the config, docs/daemon.md "Run history"): which
//! finished runs may be deleted, and deleting them with everything that hangs off them, in
//! small write transactions.
//!
//! A run is prunable when all of these hold:
//!
//! - it is terminal (`succeeded`, `succeeded_with_warnings`, `failed`, `cancelled`, or a
//!   `missed`/`skipped` fire); `queued`, `running`, `waiting_retry` and `needs_attention` never
//!   are;
//! - it finished before the cutoff (`now - history.keepFor`);
//! - it is not a one-shot run: its row is what stops a one-shot job from running again for the
//!   same spec (the unique index `runs_one_shot_once`), so deleting it would repeat the restore;
//! - for a run that executed (not a `missed`/`skipped` row), at least `history.keepRuns` newer
//!   executed runs of its job exist, and it is not the job's last success (the
//!   `restorectl_job_last_success_timestamp_seconds` series and its alert read it);
//! - no export of the run is still on disk (an `exports` row without `deleted_at`): the run, its
//!   step, the `exports` row and the manifest stay as long as the file;
//! - no restore session of the run is open or stopping, no explore request of the run waits for
//!   the session sweep, and no notification of the run is still undelivered.
//!
//! Deleting a run removes its delivered notifications, its (deleted) exports rows, its
//! downloads, its restore sessions, its steps, the run row and then its events (migration 0008
//! lets an event be deleted only once its run is gone). The totals behind the Prometheus
//! counters (`run_counts`, `step_failure_counts`, `download_totals`) are not lowered: they count
//! since the database was created.
//!
//! The walk reads candidates on the read pool (no lock), oldest finish first from a cursor, then
//! deletes them in one short write transaction that checks each again.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AnyConnection;
use tracing::instrument;

use super::{Result, SqlxResultExt, Store, to_millis};

/// What pruning keeps (the config's `history:` section, as the store sees it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPolicy {
    /// Runs that finished at or after this instant are kept (`now - history.keepFor`).
    pub cutoff: DateTime<Utc>,
    /// Executed runs of each job kept whatever their age (`history.keepRuns`).
    pub keep_runs: u32,
}

/// Where a pruning pass is in its walk over finished runs: the last run it looked at.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PruneCursor {
    after: Option<(i64, String)>,
}

/// What one batch of [`Store::prune_history_batch`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    pub runs: u64,
    pub steps: u64,
    pub events: u64,
    /// Sessions, downloads, exports and notification rows together.
    pub other_rows: u64,
}

impl PruneReport {
    /// Adds `other` to this report.
    pub fn add(&mut self, other: &PruneReport) {
        self.runs += other.runs;
        self.steps += other.steps;
        self.events += other.events;
        self.other_rows += other.other_rows;
    }
}

/// The prunability of a run `r` (see the module doc); `$1` cutoff, `$2` keepRuns, `$3`
/// keepRuns − 1 (the OFFSET that finds the keepRuns-th newer run).
macro_rules! prunable {
    () => {
        "r.finished_at IS NOT NULL AND r.finished_at < $1
         AND r.state IN ('succeeded', 'succeeded_with_warnings', 'failed', 'cancelled',
                         'missed', 'skipped')
         AND r.trigger <> 'one_shot'
         AND (r.state IN ('missed', 'skipped') OR (
             ($2 = 0 OR EXISTS (
                 SELECT 1 FROM runs AS newer
                 WHERE newer.job_name = r.job_name
                   AND newer.state IN ('succeeded', 'succeeded_with_warnings', 'failed',
                                       'cancelled')
                   AND (newer.finished_at > r.finished_at
                        OR (newer.finished_at = r.finished_at AND newer.id > r.id))
                 LIMIT 1 OFFSET $3))
             AND (r.state NOT IN ('succeeded', 'succeeded_with_warnings') OR EXISTS (
                 SELECT 1 FROM runs AS later
                 WHERE later.job_name = r.job_name
                   AND later.state IN ('succeeded', 'succeeded_with_warnings')
                   AND (later.finished_at > r.finished_at
                        OR (later.finished_at = r.finished_at AND later.id > r.id))))))
         AND NOT EXISTS (SELECT 1 FROM exports AS e
                         WHERE e.run_id = r.id AND e.deleted_at IS NULL)
         AND NOT EXISTS (SELECT 1 FROM restore_sessions AS s
                         WHERE s.run_id = r.id AND s.state IN ('open', 'stopping'))
         AND NOT EXISTS (SELECT 1 FROM session_intents AS i WHERE i.run_id = r.id)
         AND NOT EXISTS (SELECT 1 FROM notifications AS n
                         WHERE n.run_id = r.id AND n.delivered_at IS NULL)"
    };
}

/// The next prunable runs after the cursor (`$4`, `$5`), oldest finish first, at most `$6`.
const CANDIDATES: &str = concat!(
    "SELECT r.id, r.finished_at FROM runs AS r
     WHERE (r.finished_at > $4 OR (r.finished_at = $4 AND r.id > $5)) AND ",
    prunable!(),
    " ORDER BY r.finished_at, r.id LIMIT $6"
);

/// The same test for one run (`$4`), inside the write transaction.
const STILL_PRUNABLE: &str = concat!(
    "SELECT r.id FROM runs AS r WHERE r.id = $4 AND ",
    prunable!()
);

impl Store {
    /// Deletes up to `batch` prunable runs after `cursor` (see the module doc) and advances the
    /// cursor past them. Returns what was deleted and whether the walk is done (fewer than
    /// `batch` candidates were left: the pass ends).
    #[instrument(level = "trace", skip_all, fields(batch), err(level = "debug"))]
    pub async fn prune_history_batch(
        &self,
        policy: &HistoryPolicy,
        cursor: &mut PruneCursor,
        batch: u32,
    ) -> Result<(PruneReport, bool)> {
        const OP: &str = "prune_history";
        let (after_at, after_id) = cursor.after.clone().unwrap_or((i64::MIN, String::new()));
        let candidates: Vec<(String, i64)> = sqlx::query_as(CANDIDATES)
            .bind(to_millis(policy.cutoff))
            .bind(i64::from(policy.keep_runs))
            .bind(i64::from(policy.keep_runs.saturating_sub(1)))
            .bind(after_at)
            .bind(after_id)
            .bind(i64::from(batch))
            .fetch_all(self.reader())
            .await
            .op(OP)?;
        let done = candidates.len() < batch as usize;
        let Some(last) = candidates.last() else {
            return Ok((PruneReport::default(), true));
        };
        cursor.after = Some((last.1, last.0.clone()));
        let mut tx = self.begin_write(OP).await?;
        let mut report = PruneReport::default();
        for (id, _) in &candidates {
            let still: Option<String> = sqlx::query_scalar(STILL_PRUNABLE)
                .bind(to_millis(policy.cutoff))
                .bind(i64::from(policy.keep_runs))
                .bind(i64::from(policy.keep_runs.saturating_sub(1)))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .op(OP)?;
            if still.is_some() {
                report.add(&delete_run_in(&mut tx, id).await?);
            }
        }
        tx.commit().await.op(OP)?;
        Ok((report, done))
    }
}

/// Deletes run `id` and what hangs off it, children first (foreign keys), its events last
/// (migration 0008's trigger allows that only once the run row is gone).
async fn delete_run_in(conn: &mut AnyConnection, id: &str) -> Result<PruneReport> {
    const OP: &str = "prune_history";
    let mut report = PruneReport::default();
    for sql in [
        "DELETE FROM notifications WHERE run_id = $1",
        "DELETE FROM exports WHERE run_id = $1",
        "DELETE FROM downloads WHERE step_id IN (SELECT id FROM steps WHERE run_id = $1)",
        "DELETE FROM restore_sessions WHERE run_id = $1",
    ] {
        let done = sqlx::query(sql).bind(id).execute(&mut *conn).await.op(OP)?;
        report.other_rows += done.rows_affected();
    }
    report.steps = sqlx::query("DELETE FROM steps WHERE run_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await
        .op(OP)?
        .rows_affected();
    report.runs = sqlx::query("DELETE FROM runs WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await
        .op(OP)?
        .rows_affected();
    report.events = sqlx::query("DELETE FROM events WHERE run_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await
        .op(OP)?
        .rows_affected();
    Ok(report)
}
