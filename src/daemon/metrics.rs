//! The series of `/metrics` (SPEC §8), refreshed from the store every [`REFRESH`] so that they
//! agree with the store (which any process may have changed, and which survives restarts).
//!
//! | series | type | labels |
//! |---|---|---|
//! | `restorectl_runs_total` | counter | `job`, `result` (final state, `missed`, `skipped`) |
//! | `restorectl_run_duration_seconds` | histogram | `job`, `result` (runs finished since start) |
//! | `restorectl_step_failures_total` | counter | `class` (retryable, permanent, auth, …) |
//! | `restorectl_download_bytes_total` | counter | — |
//! | `restorectl_active_runs` | gauge | — (runs `running`) |
//! | `restorectl_waiting_runs` | gauge | — (`queued` + `waiting_retry`) |
//! | `restorectl_runs_needing_attention` | gauge | — |
//! | `restorectl_open_restore_sessions` | gauge | — |
//! | `restorectl_invalid_job_files` | gauge | — |
//! | `restorectl_jobs` | gauge | `state` |
//! | `restorectl_job_last_success_timestamp_seconds` | gauge | `job` |
//! | `restorectl_job_next_fire_timestamp_seconds` | gauge | `job` |
//! | `restorectl_notifications_delivered_total` | counter | `target`, `event` (set by `notify::deliverer`) |
//! | `restorectl_notifications_failed_total` | counter | `target`, `event` (failed attempts) |
//! | `restorectl_notifications_pending` | gauge | `target` (undelivered rows) |

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::store::{JobState, RunState, Store, StoreError, StoreStats};

/// How often the series are refreshed from the store.
pub const REFRESH: Duration = Duration::from_secs(5);

/// The per-job series (a row per job) are read again when the run or job counts changed since
/// the last refresh, and at least this often (a schedule edit changes a next fire without
/// changing any count).
pub const PER_JOB_REFRESH: Duration = Duration::from_secs(60);

/// Registers descriptions (once per process is enough; repeating is harmless).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "restorectl_runs_total",
        "Runs that reached a result, by job and result"
    );
    describe_histogram!(
        "restorectl_run_duration_seconds",
        Unit::Seconds,
        "Duration of finished runs, from first start to finish"
    );
    describe_counter!(
        "restorectl_step_failures_total",
        "Failed steps by error class"
    );
    describe_counter!(
        "restorectl_download_bytes_total",
        Unit::Bytes,
        "Bytes written durably by PST downloads"
    );
    describe_gauge!("restorectl_active_runs", "Runs executing now");
    describe_gauge!(
        "restorectl_waiting_runs",
        "Runs queued or waiting for a retry"
    );
    describe_gauge!(
        "restorectl_runs_needing_attention",
        "Runs waiting for an operator (in_doubt)"
    );
    describe_gauge!(
        "restorectl_open_restore_sessions",
        "VB365 restore sessions open"
    );
    describe_gauge!(
        "restorectl_invalid_job_files",
        "Job files present and invalid"
    );
    describe_gauge!("restorectl_jobs", "Jobs by state");
    describe_counter!(
        "restorectl_notifications_delivered_total",
        "Notifications delivered, by target and event"
    );
    describe_counter!(
        "restorectl_notifications_failed_total",
        "Failed notification delivery attempts, by target and event"
    );
    describe_gauge!(
        "restorectl_notifications_pending",
        "Notifications not delivered yet, by target"
    );
    describe_gauge!(
        "restorectl_job_last_success_timestamp_seconds",
        Unit::Seconds,
        "Unix time of the job's last successful run"
    );
    describe_gauge!(
        "restorectl_job_next_fire_timestamp_seconds",
        Unit::Seconds,
        "Unix time of the job's next scheduled fire"
    );
}

fn seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// Publishes [`StoreStats`] as metrics. Per-job gauges (thousands with a large job directory)
/// are set only when their value changed, plus a full republish every [`FULL_REPUBLISH`] so they
/// stay inside the exporter's idle timeout ([`crate::telemetry::GAUGE_IDLE_TIMEOUT`]); a removed
/// job is no longer set and its series disappears after that timeout.
#[derive(Debug, Default)]
pub struct Publisher {
    last_success: HashMap<String, i64>,
    next_fire: HashMap<String, i64>,
    last_full: Option<Instant>,
}

/// How often every per-job gauge is set again even when unchanged.
pub const FULL_REPUBLISH: Duration = Duration::from_secs(60);

impl Publisher {
    /// Sets every series from `stats`; the per-job gauges only when `per_job` (the stats were
    /// read with their per-job series).
    pub fn publish(&mut self, stats: &StoreStats, per_job: bool) {
        for (job, state, n) in &stats.runs {
            if state.is_terminal() {
                metrics::counter!("restorectl_runs_total", "job" => job.clone(), "result" => state.as_str())
                    .absolute(*n);
            }
        }
        for (class, n) in &stats.step_failures {
            metrics::counter!("restorectl_step_failures_total", "class" => class.clone())
                .absolute(*n);
        }
        metrics::counter!("restorectl_download_bytes_total").absolute(stats.download_bytes);
        metrics::gauge!("restorectl_active_runs").set(stats.running_runs as f64);
        metrics::gauge!("restorectl_waiting_runs").set(stats.waiting_runs as f64);
        metrics::gauge!("restorectl_runs_needing_attention").set(stats.attention_runs as f64);
        metrics::gauge!("restorectl_open_restore_sessions").set(stats.open_sessions as f64);
        metrics::gauge!("restorectl_invalid_job_files").set(stats.invalid_job_files as f64);
        for state in JobState::ALL {
            metrics::gauge!("restorectl_jobs", "state" => state.as_str())
                .set(stats.jobs_in(*state) as f64);
        }
        if !per_job {
            return;
        }
        let full = self.last_full.is_none_or(|t| t.elapsed() >= FULL_REPUBLISH);
        if full {
            self.last_full = Some(Instant::now());
        }
        publish_times(
            "restorectl_job_last_success_timestamp_seconds",
            &stats.last_success,
            &mut self.last_success,
            full,
        );
        publish_times(
            "restorectl_job_next_fire_timestamp_seconds",
            &stats.next_fires,
            &mut self.next_fire,
            full,
        );
    }
}

fn publish_times(
    name: &'static str,
    values: &[(String, DateTime<Utc>)],
    last: &mut HashMap<String, i64>,
    full: bool,
) {
    let mut seen = HashMap::with_capacity(values.len());
    for (job, at) in values {
        let ms = at.timestamp_millis();
        if full || last.get(job) != Some(&ms) {
            metrics::gauge!(name, "job" => job.clone()).set(seconds(*at));
        }
        seen.insert(job.clone(), ms);
    }
    *last = seen;
}

/// Records the durations of runs finished after `since` and returns the newest finish seen
/// (the next call's `since`).
///
/// # Errors
///
/// [`StoreError`] when the state database fails.
pub async fn record_durations(
    store: &Store,
    since: DateTime<Utc>,
) -> Result<DateTime<Utc>, StoreError> {
    let mut newest = since;
    for run in store.list_finished_runs_since(since).await? {
        newest = newest.max(run.finished_at);
        let Some(started) = run.started_at else {
            continue;
        };
        if run.state == RunState::Missed || run.state == RunState::Skipped {
            continue;
        }
        let secs = (run.finished_at - started).num_milliseconds().max(0) as f64 / 1000.0;
        metrics::histogram!(
            "restorectl_run_duration_seconds",
            "job" => run.job_name,
            "result" => run.state.as_str()
        )
        .record(secs);
    }
    Ok(newest)
}
