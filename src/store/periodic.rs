//! The statements the daemon runs again and again while it is up — `/metrics` and the systemd
//! status (every 5 s), the per-job series (every 60 s), the scheduler's tick, the reconcile
//! task's rescans, the executor's claim polls, the request consumer, the notification
//! deliverer, the heartbeat — listed in one place so that a test can read their query plans on
//! a database with a long history (tests/store `periodic_reads_stay_o_jobs_with_a_long_history`).
//!
//! Each must cost O(jobs) or O(work in progress), never O(history): a read of `runs`,
//! `steps`, `events`, `notifications`, `downloads`, `exports` or `restore_sessions` is a seek
//! (or a range of an index of unfinished work), never a scan. [`PeriodicRead::sqlite_plan`] is
//! the index the SQLite plan must name.

use super::{jobs, next_fire, notifications, requests, runs, stats};

/// One periodic statement.
#[derive(Debug, Clone, Copy)]
pub struct PeriodicRead {
    /// Who runs it, and how often.
    pub what: &'static str,
    /// The statement, as the store sends it.
    pub sql: &'static str,
    /// A fragment of the SQLite `EXPLAIN QUERY PLAN` that shows the index it must use.
    pub sqlite_plan: &'static str,
}

const fn read(what: &'static str, sql: &'static str, sqlite_plan: &'static str) -> PeriodicRead {
    PeriodicRead {
        what,
        sql,
        sqlite_plan,
    }
}

/// Tables whose rows grow with the history: a periodic read never scans them.
pub const HISTORY_TABLES: &[&str] = &[
    "runs",
    "steps",
    "events",
    "notifications",
    "downloads",
    "exports",
    "restore_sessions",
    "session_intents",
    "operator_requests",
];

/// Partial indexes that hold only unfinished work: scanning one is O(work in progress).
pub const WORK_IN_PROGRESS_INDEXES: &[&str] = &["notifications_due"];

/// Every periodic statement of the daemon.
pub const PERIODIC_READS: &[PeriodicRead] = &[
    read(
        "metrics (5 s): runs per job and state",
        stats::RUNS_PER_JOB_STATE,
        "SCAN run_counts",
    ),
    read(
        "metrics (5 s): failed steps per class",
        stats::STEP_FAILURES,
        "SCAN step_failure_counts",
    ),
    read(
        "metrics (5 s): downloaded bytes",
        stats::DOWNLOAD_BYTES,
        "SEARCH download_totals USING INTEGER PRIMARY KEY",
    ),
    read(
        "metrics (5 s): downloads receiving",
        stats::RECEIVING_DOWNLOADS,
        "INDEX steps_by_state",
    ),
    read(
        "metrics (5 s): running, waiting, needing attention",
        stats::ACTIVE_RUN_COUNTS,
        "INDEX runs_by_state",
    ),
    read(
        "metrics (5 s): open restore sessions",
        stats::OPEN_SESSIONS,
        "INDEX restore_sessions_by_state",
    ),
    read(
        "metrics (5 s): invalid job files",
        stats::INVALID_JOB_FILES,
        "INDEX job_files_invalid",
    ),
    read(
        "metrics (5 s): jobs per state",
        stats::JOBS_PER_STATE,
        "COVERING INDEX jobs_by_state",
    ),
    read(
        "metrics (5 s): runs finished since the last refresh",
        stats::FINISHED_SINCE,
        "INDEX runs_by_finish",
    ),
    read(
        "metrics (60 s): last success per job",
        stats::LAST_SUCCESSES,
        "SEARCH runs USING COVERING INDEX runs_job_state_finished",
    ),
    read(
        "metrics (60 s): next fire per job",
        stats::NEXT_FIRES,
        "COVERING INDEX jobs_next_fire",
    ),
    read(
        "notification deliverer (1 s): due rows",
        notifications::DUE_NOTIFICATIONS,
        "INDEX notifications_due",
    ),
    read(
        "metrics (5 s): outbox backlog",
        notifications::PENDING_NOTIFICATIONS,
        "INDEX notifications_due",
    ),
    read(
        "executor (2 s): the next claimable run",
        runs::CLAIM_NEXT,
        "INDEX runs_by_state",
    ),
    read(
        "scheduler (each fire): active runs of the job",
        runs::ACTIVE_RUNS_OF_JOB,
        "INDEX runs_job_state_finished",
    ),
    read(
        "scheduler (each tick): scheduling bookkeeping",
        next_fire::SCHEDULE_STATES,
        "jobs",
    ),
    read(
        "reconcile (each rescan): job files",
        jobs::JOB_FILES,
        "job_files",
    ),
    read("reconcile (each rescan): jobs", jobs::JOB_ROWS, "jobs"),
    read(
        "request consumer (1 s): pending requests",
        requests::PENDING_REQUESTS,
        "INDEX operator_requests_pending",
    ),
    read(
        "heartbeat (10 s)",
        requests::HEARTBEAT,
        "daemon_instances USING INDEX sqlite_autoindex_daemon_instances_1",
    ),
];
