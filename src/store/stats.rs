//! Aggregates for the daemon: the counts behind `/metrics` and the systemd `STATUS=` line, and
//! the finished runs behind the run-duration histogram. Metrics are refreshed from these
//! queries (rather than counted in memory) so that they always agree with the store, across
//! restarts and whichever process changed the rows.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AnyConnection;
use tracing::instrument;

use super::{
    JobState, Millis, OptMillis, Result, RunState, SqlxResultExt, Store, from_millis, to_millis,
};

/// A run that reached a final state (for the run-duration histogram).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FinishedRun {
    pub job_name: String,
    pub state: RunState,
    #[sqlx(try_from = "OptMillis")]
    pub started_at: Option<DateTime<Utc>>,
    #[sqlx(try_from = "Millis")]
    pub finished_at: DateTime<Utc>,
}

/// A time per job (last success, next fire).
pub type JobTimes = Vec<(String, DateTime<Utc>)>;

/// Counts over the whole store, read on one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StoreStats {
    /// Runs per job and state (history rows `missed`/`skipped` included).
    pub runs: Vec<(String, RunState, u64)>,
    /// Failed steps per error class (`unknown` when unclassified).
    pub step_failures: Vec<(String, u64)>,
    /// Bytes written to disk by downloads (durable progress of every download).
    pub download_bytes: u64,
    /// Downloads receiving bytes: the step is `downloading` and the first bytes are on disk (the
    /// wait for the first byte, while the server builds the PST, is not counted).
    pub receiving_downloads: u64,
    /// Runs in state `running`.
    pub running_runs: u64,
    /// Runs waiting to be claimed (`queued`) or for a retry (`waiting_retry`).
    pub waiting_runs: u64,
    /// Runs in `needs_attention`.
    pub attention_runs: u64,
    /// Restore sessions open (or being stopped) on a server.
    pub open_sessions: u64,
    /// Job files present and invalid.
    pub invalid_job_files: u64,
    /// Jobs per state (removed included).
    pub jobs: Vec<(JobState, u64)>,
    /// The last successful run's finish time, per job.
    pub last_success: JobTimes,
    /// The stored next fire, per job that has one.
    pub next_fires: JobTimes,
}

impl StoreStats {
    /// Jobs in `state`.
    pub fn jobs_in(&self, state: JobState) -> u64 {
        self.jobs
            .iter()
            .filter(|(s, _)| *s == state)
            .map(|(_, n)| n)
            .sum()
    }
}

// The periodic reads over every job and job file; migration 0003 gives each an index so that
// with thousands of jobs they do not read every row (checked by a test on the query plans).
pub(super) const JOBS_PER_STATE: &str =
    "SELECT state, COUNT(*) FROM jobs GROUP BY state ORDER BY state";
pub(super) const INVALID_JOB_FILES: &str =
    "SELECT COUNT(*) FROM job_files WHERE valid = 0 AND removed_at IS NULL";
// Seeks the steps `downloading` (index `steps_by_state`), then their download rows by key.
pub(super) const RECEIVING_DOWNLOADS: &str = "SELECT COUNT(*) FROM steps
     JOIN downloads ON downloads.step_id = steps.id
     WHERE steps.state = 'downloading' AND downloads.bytes_durable > 0";
pub(super) const NEXT_FIRES: &str = "SELECT name, next_fire_at FROM jobs
     WHERE next_fire_at IS NOT NULL AND state <> 'removed' ORDER BY name";
// The reads over every run: migration 0004 keeps the counts per job and state in a table of
// their own (triggers on `runs`) and indexes runs by job, state and finish time, so that they
// cost a row or a seek per job rather than a read of the whole history.
pub(super) const RUNS_PER_JOB_STATE: &str = "SELECT job_name, state, n FROM run_counts
     WHERE n > 0 ORDER BY job_name, state";
/// Failed steps per error class (`unknown` without a class), kept by triggers (migration 0006).
pub(super) const STEP_FAILURES: &str = "SELECT error_class, n FROM step_failure_counts
     WHERE n > 0 ORDER BY error_class";
/// The sum of every download's durable bytes, kept by triggers (migration 0006).
pub(super) const DOWNLOAD_BYTES: &str = "SELECT bytes FROM download_totals WHERE id = 1";
/// Every job's newest finish per success state (the caller takes the later of the two). One
/// `MAX` per state, so that each is a single seek to the end of the job's range in
/// `runs_job_state_finished` on both backends; a `MAX` over `state IN (…)` read every success
/// of the job, and a derived table made PostgreSQL evaluate each subquery three times.
pub(super) const LAST_SUCCESSES: &str = "SELECT name,
         (SELECT MAX(finished_at) FROM runs WHERE job_name = jobs.name AND state = 'succeeded'),
         (SELECT MAX(finished_at) FROM runs
          WHERE job_name = jobs.name AND state = 'succeeded_with_warnings')
     FROM jobs ORDER BY name";
/// Runs running, waiting and needing attention: a seek per state in `runs_by_state`.
pub(super) const ACTIVE_RUN_COUNTS: &str =
    "SELECT COALESCE(SUM(CASE WHEN state = 'running' THEN 1 ELSE 0 END), 0),
            COALESCE(SUM(CASE WHEN state IN ('queued', 'waiting_retry') THEN 1 ELSE 0 END), 0),
            COALESCE(SUM(CASE WHEN state = 'needs_attention' THEN 1 ELSE 0 END), 0)
     FROM runs WHERE state IN ('running', 'queued', 'waiting_retry', 'needs_attention')";
pub(super) const OPEN_SESSIONS: &str =
    "SELECT COUNT(*) FROM restore_sessions WHERE state IN ('open', 'stopping')";
/// The runs finished since the last refresh (run-duration histogram): a range of the index
/// `runs_by_finish` (migration 0008; it used to read every run every 5 s). At most
/// [`FINISHED_BATCH`] rows: without a bound PostgreSQL's generic plan (the one a prepared
/// statement settles on) guesses a third of the table and reads all of it.
pub(super) const FINISHED_SINCE: &str = "SELECT job_name, state, started_at, finished_at FROM runs
     WHERE finished_at > $1 AND state NOT IN ('missed', 'skipped')
     ORDER BY finished_at LIMIT 10000";
/// The bound of [`FINISHED_SINCE`]; the caller continues from the newest row it got.
pub const FINISHED_BATCH: usize = 10_000;

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Store {
    /// Runs that finished after `after` (exclusive), oldest first, at most [`FINISHED_BATCH`]
    /// (read again from the newest one returned for more).
    #[instrument(level = "trace", skip_all, err(level = "debug"))]
    pub async fn list_finished_runs_since(&self, after: DateTime<Utc>) -> Result<Vec<FinishedRun>> {
        sqlx::query_as::<_, FinishedRun>(FINISHED_SINCE)
            .bind(to_millis(after))
            .fetch_all(self.reader())
            .await
            .op("list_finished_runs_since")
    }

    /// The counts behind `/metrics` and the status line, with the per-job series, on one read
    /// snapshot (one read transaction for both halves, so a count and a series never disagree).
    #[instrument(level = "trace", skip_all, err(level = "debug"))]
    pub async fn stats(&self) -> Result<StoreStats> {
        const OP: &str = "stats";
        let mut conn = self.begin_read(OP).await?;
        let mut stats = stats_counts_in(&mut conn).await?;
        (stats.last_success, stats.next_fires) = stats_per_job_in(&mut conn).await?;
        conn.commit().await.op(OP)?;
        Ok(stats)
    }

    /// Every count of [`StoreStats`], without the per-job series (left empty).
    #[instrument(level = "trace", skip_all, err(level = "debug"))]
    pub async fn stats_counts(&self) -> Result<StoreStats> {
        const OP: &str = "stats_counts";
        let mut conn = self.begin_read(OP).await?;
        let stats = stats_counts_in(&mut conn).await?;
        conn.commit().await.op(OP)?;
        Ok(stats)
    }

    /// The per-job series (`last_success`, `next_fires`): a row per job, so with thousands of
    /// jobs they are worth reading only when something may have changed.
    #[instrument(level = "trace", skip_all, err(level = "debug"))]
    pub async fn stats_per_job(&self) -> Result<(JobTimes, JobTimes)> {
        const OP: &str = "stats_per_job";
        let mut conn = self.begin_read(OP).await?;
        let series = stats_per_job_in(&mut conn).await?;
        conn.commit().await.op(OP)?;
        Ok(series)
    }
}

/// [`Store::stats_counts`] inside the caller's read transaction.
async fn stats_counts_in(conn: &mut AnyConnection) -> Result<StoreStats> {
    const OP: &str = "stats_counts";
    let runs: Vec<(String, RunState, i64)> = sqlx::query_as(RUNS_PER_JOB_STATE)
        .fetch_all(&mut *conn)
        .await
        .op(OP)?;
    let step_failures: Vec<(String, i64)> = sqlx::query_as(STEP_FAILURES)
        .fetch_all(&mut *conn)
        .await
        .op(OP)?;
    let download_bytes: Option<i64> = sqlx::query_scalar(DOWNLOAD_BYTES)
        .fetch_optional(&mut *conn)
        .await
        .op(OP)?;
    let receiving: i64 = sqlx::query_scalar(RECEIVING_DOWNLOADS)
        .fetch_one(&mut *conn)
        .await
        .op(OP)?;
    let (running, waiting, attention): (i64, i64, i64) = sqlx::query_as(ACTIVE_RUN_COUNTS)
        .fetch_one(&mut *conn)
        .await
        .op(OP)?;
    let open_sessions: i64 = sqlx::query_scalar(OPEN_SESSIONS)
        .fetch_one(&mut *conn)
        .await
        .op(OP)?;
    let invalid_job_files: i64 = sqlx::query_scalar(INVALID_JOB_FILES)
        .fetch_one(&mut *conn)
        .await
        .op(OP)?;
    let jobs: Vec<(JobState, i64)> = sqlx::query_as(JOBS_PER_STATE)
        .fetch_all(&mut *conn)
        .await
        .op(OP)?;
    Ok(StoreStats {
        runs: runs
            .into_iter()
            .map(|(job, state, n)| (job, state, count(n)))
            .collect(),
        step_failures: step_failures
            .into_iter()
            .map(|(class, n)| (class, count(n)))
            .collect(),
        download_bytes: count(download_bytes.unwrap_or(0)),
        receiving_downloads: count(receiving),
        running_runs: count(running),
        waiting_runs: count(waiting),
        attention_runs: count(attention),
        open_sessions: count(open_sessions),
        invalid_job_files: count(invalid_job_files),
        jobs: jobs.into_iter().map(|(s, n)| (s, count(n))).collect(),
        last_success: Vec::new(),
        next_fires: Vec::new(),
    })
}

/// [`Store::stats_per_job`] inside the caller's read transaction.
async fn stats_per_job_in(conn: &mut AnyConnection) -> Result<(JobTimes, JobTimes)> {
    const OP: &str = "stats_per_job";
    let last_success: Vec<(String, Option<i64>, Option<i64>)> = sqlx::query_as(LAST_SUCCESSES)
        .fetch_all(&mut *conn)
        .await
        .op(OP)?;
    let last_success: Vec<(String, i64)> = last_success
        .into_iter()
        .filter_map(|(name, ok, warned)| ok.max(warned).map(|last| (name, last)))
        .collect();
    let next_fires: Vec<(String, i64)> = sqlx::query_as(NEXT_FIRES)
        .fetch_all(&mut *conn)
        .await
        .op(OP)?;
    let timed = |rows: Vec<(String, i64)>| {
        rows.into_iter()
            .filter_map(|(name, ms)| from_millis(ms).map(|t| (name, t)))
            .collect()
    };
    Ok((timed(last_success), timed(next_fires)))
}
