//! The series of `/metrics` (SPEC §8), refreshed from the store every [`REFRESH`] so that they
//! agree with the store (which any process may have changed, and which survives restarts).
//! [`SERIES`] is the one list of them (the alerting rules and the dashboard in `deploy/` may only
//! use these names; a test checks it against a real daemon's `/metrics`).
//!
//! | series | type | labels |
//! |---|---|---|
//! | `restorectl_runs_total` | counter | `job`, `result` (final state, `missed`, `skipped`) |
//! | `restorectl_run_duration_seconds` | histogram | `job`, `result` (runs finished since start) |
//! | `restorectl_step_failures_total` | counter | `class` (retryable, permanent, auth, …) |
//! | `restorectl_download_bytes_total` | counter | — |
//! | `restorectl_downloads_receiving` | gauge | — (downloads whose bytes are flowing) |
//! | `restorectl_active_runs` | gauge | — (runs `running`) |
//! | `restorectl_waiting_runs` | gauge | — (`queued` + `waiting_retry`) |
//! | `restorectl_runs_needing_attention` | gauge | — |
//! | `restorectl_open_restore_sessions` | gauge | — |
//! | `restorectl_invalid_job_files` | gauge | — |
//! | `restorectl_ready` | gauge | — (1 ready, 0 not: the same test as `/readyz`, less the ping) |
//! | `restorectl_jobs` | gauge | `state` |
//! | `restorectl_job_last_success_timestamp_seconds` | gauge | `job` |
//! | `restorectl_job_next_fire_timestamp_seconds` | gauge | `job` |
//! | `restorectl_job_max_success_age_seconds` | gauge | `job` (scheduled jobs, see [`max_success_age`]) |
//! | `restorectl_history_pruned_runs_total` | counter | — (runs deleted by history retention) |
//! | `restorectl_notifications_delivered_total` | counter | `target`, `event` |
//! | `restorectl_notifications_failed_total` | counter | `target`, `event` (failed attempts) |
//! | `restorectl_notifications_pending` | gauge | `target` (outbox backlog) |
//! | `restorectl_replica_info` | gauge | `replica`, `instance_id` (always 1: which replica serves this `/metrics`) |
//! | `restorectl_leader` | gauge | — (1 while this replica leads) |
//!
//! Durations are histograms with [`crate::telemetry::DURATION_BUCKETS`]. The notification series
//! are written by the notification outbox; this module only describes them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use metrics::Unit;

use crate::jobs::Job;
use crate::schedule::next_fire;
use crate::store::{JobState, RunState, Store, StoreError, StoreStats};

/// How often the series are refreshed from the store.
pub const REFRESH: Duration = Duration::from_secs(5);

/// The per-job series (a row per job) are read again when the run or job counts changed since
/// the last refresh, and at least this often (a schedule edit changes a next fire without
/// changing any count).
pub const PER_JOB_REFRESH: Duration = Duration::from_secs(60);

/// The Prometheus type of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One series of `/metrics`.
#[derive(Debug, Clone, Copy)]
pub struct Series {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Option<Unit>,
    pub help: &'static str,
}

const fn series(name: &'static str, kind: Kind, unit: Option<Unit>, help: &'static str) -> Series {
    Series {
        name,
        kind,
        unit,
        help,
    }
}

/// Every series the daemon exports.
pub const SERIES: &[Series] = &[
    series(
        "restorectl_runs_total",
        Kind::Counter,
        None,
        "Runs that reached a result, by job and result",
    ),
    series(
        "restorectl_run_duration_seconds",
        Kind::Histogram,
        Some(Unit::Seconds),
        "Duration of finished runs, from first start to finish",
    ),
    series(
        "restorectl_step_failures_total",
        Kind::Counter,
        None,
        "Failed steps by error class",
    ),
    series(
        "restorectl_download_bytes_total",
        Kind::Counter,
        Some(Unit::Bytes),
        "Bytes written durably by PST downloads",
    ),
    series(
        "restorectl_downloads_receiving",
        Kind::Gauge,
        None,
        "Downloads whose first bytes are on disk and that are not finished",
    ),
    series(
        "restorectl_active_runs",
        Kind::Gauge,
        None,
        "Runs executing now",
    ),
    series(
        "restorectl_waiting_runs",
        Kind::Gauge,
        None,
        "Runs queued or waiting for a retry",
    ),
    series(
        "restorectl_runs_needing_attention",
        Kind::Gauge,
        None,
        "Runs waiting for an operator (in_doubt)",
    ),
    series(
        "restorectl_open_restore_sessions",
        Kind::Gauge,
        None,
        "VB365 restore sessions open",
    ),
    series(
        "restorectl_invalid_job_files",
        Kind::Gauge,
        None,
        "Job files present and invalid",
    ),
    series(
        "restorectl_ready",
        Kind::Gauge,
        None,
        "1 when the daemon is ready (jobs loaded, state database answering, no task failed)",
    ),
    series("restorectl_jobs", Kind::Gauge, None, "Jobs by state"),
    series(
        "restorectl_job_last_success_timestamp_seconds",
        Kind::Gauge,
        Some(Unit::Seconds),
        "Unix time of the job's last successful run",
    ),
    series(
        "restorectl_job_next_fire_timestamp_seconds",
        Kind::Gauge,
        Some(Unit::Seconds),
        "Unix time of the job's next scheduled fire",
    ),
    series(
        "restorectl_job_max_success_age_seconds",
        Kind::Gauge,
        Some(Unit::Seconds),
        "Oldest the job's last success may be while its schedule is kept: longest gap between fires plus runTimeout",
    ),
    series(
        "restorectl_history_pruned_runs_total",
        Kind::Counter,
        None,
        "Finished runs deleted by history retention (history.keepFor, history.keepRuns), with their steps and events",
    ),
    series(
        "restorectl_notifications_delivered_total",
        Kind::Counter,
        None,
        "Notifications delivered, by target and event",
    ),
    series(
        "restorectl_notifications_failed_total",
        Kind::Counter,
        None,
        "Failed notification delivery attempts, by target and event",
    ),
    series(
        "restorectl_notifications_pending",
        Kind::Gauge,
        None,
        "Notifications in the outbox not delivered yet, by target",
    ),
    series(
        "restorectl_replica_info",
        Kind::Gauge,
        None,
        "Always 1; the replica name and instance id of the daemon serving these metrics",
    ),
    series(
        "restorectl_leader",
        Kind::Gauge,
        None,
        "1 while this replica leads (applies job files, enqueues fires, consumes requests)",
    ),
];

/// Registers descriptions (once per process is enough; repeating is harmless).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    for s in SERIES {
        match (s.kind, s.unit) {
            (Kind::Counter, Some(unit)) => describe_counter!(s.name, unit, s.help),
            (Kind::Counter, None) => describe_counter!(s.name, s.help),
            (Kind::Gauge, Some(unit)) => describe_gauge!(s.name, unit, s.help),
            (Kind::Gauge, None) => describe_gauge!(s.name, s.help),
            (Kind::Histogram, Some(unit)) => describe_histogram!(s.name, unit, s.help),
            (Kind::Histogram, None) => describe_histogram!(s.name, s.help),
        }
    }
}

/// How many fires ahead [`max_success_age`] looks for the longest gap: a month of a daily
/// schedule, so weekday-only and monthly schedules show their long gaps.
const GAP_FIRES: usize = 32;

/// How old the last success of a scheduled job may be while its schedule is kept: the longest
/// gap between two of its next [`GAP_FIRES`] fires (a weekday schedule: 3 days, Friday to
/// Monday) plus its `runTimeout` (the run of a fire may take that long). Older means at least
/// one fire whose run should have finished brought no success. `None` for one-shot and
/// suspended jobs (no schedule to keep).
pub fn max_success_age(job: &Job, now: DateTime<Utc>) -> Option<Duration> {
    let schedule = job.schedule().filter(|_| !job.suspend())?;
    let (cron, tz) = (schedule.parsed(), schedule.timezone());
    let mut at = next_fire(cron, tz, now)?;
    let mut longest = Duration::ZERO;
    for _ in 1..GAP_FIRES {
        let Some(next) = next_fire(cron, tz, at) else {
            break;
        };
        longest = longest.max((next - at).to_std().unwrap_or_default());
        at = next;
    }
    // A schedule with a single fire left has no gap to keep.
    (!longest.is_zero()).then(|| longest + job.run_timeout())
}

/// How long a computed [`max_success_age`] is reused. Computing it walks a job's next
/// [`GAP_FIRES`] fires (32 years of a yearly schedule): for 10,000 jobs every minute that was a
/// third of the idle daemon's CPU. Gaps only move with daylight saving, so an hour is plenty.
pub const SUCCESS_AGE_REUSE: Duration = Duration::from_secs(3600);

/// What a job's [`max_success_age`] depends on: its spec (schedule, suspend), its `runTimeout`
/// and time zone (both may come from the config, which a SIGHUP changes).
type AgeKey = (String, Duration, Option<chrono_tz::Tz>, bool);

/// [`max_success_age`] of every job, each reused for [`SUCCESS_AGE_REUSE`] while the job's
/// schedule, `runTimeout` and time zone stay the same.
#[derive(Debug, Default)]
pub struct SuccessAges {
    known: HashMap<String, (AgeKey, DateTime<Utc>, Option<Duration>)>,
    computed: u64,
}

impl SuccessAges {
    /// `(job name, age)` of every job of `jobs` that has one; forgets the jobs not listed.
    pub fn of<'a>(
        &mut self,
        jobs: impl Iterator<Item = &'a Job>,
        now: DateTime<Utc>,
    ) -> Vec<(String, Duration)> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for job in jobs {
            let key: AgeKey = (
                job.spec_hash().to_string(),
                job.run_timeout(),
                job.schedule().map(|s| s.timezone()),
                job.suspend(),
            );
            let fresh = |(k, at, _): &(AgeKey, DateTime<Utc>, Option<Duration>)| {
                *k == key
                    && (now - *at)
                        .to_std()
                        .is_ok_and(|elapsed| elapsed < SUCCESS_AGE_REUSE)
            };
            let age = match self.known.get(job.name()) {
                Some(entry) if fresh(entry) => entry.2,
                _ => {
                    let age = max_success_age(job, now);
                    self.computed += 1;
                    self.known.insert(job.name().to_string(), (key, now, age));
                    age
                }
            };
            seen.insert(job.name());
            if let Some(age) = age {
                out.push((job.name().to_string(), age));
            }
        }
        self.known.retain(|name, _| seen.contains(name.as_str()));
        out
    }

    /// How many ages were computed rather than reused.
    pub fn computed(&self) -> u64 {
        self.computed
    }

    /// Jobs remembered.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// Whether no job is remembered.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

/// Sets `restorectl_ready`.
pub fn publish_ready(ready: bool) {
    metrics::gauge!("restorectl_ready").set(if ready { 1.0 } else { 0.0 });
}

/// Publishes which replica serves the metrics and whether it leads.
pub fn publish_replica(replica: &str, instance: &str, leader: bool) {
    metrics::gauge!(
        "restorectl_replica_info",
        "replica" => replica.to_string(),
        "instance_id" => instance.to_string()
    )
    .set(1.0);
    metrics::gauge!("restorectl_leader").set(if leader { 1.0 } else { 0.0 });
}

/// Publishes [`StoreStats`] as metrics. Per-job gauges (thousands with a large job directory)
/// are set only when their value changed, plus a full republish every [`FULL_REPUBLISH`] so they
/// stay inside the exporter's idle timeout ([`crate::telemetry::GAUGE_IDLE_TIMEOUT`]); a removed
/// job is no longer set and its series disappears after that timeout.
#[derive(Debug, Default)]
pub struct Publisher {
    last_success: HashMap<String, i64>,
    next_fire: HashMap<String, i64>,
    max_success_age: HashMap<String, i64>,
    last_full: Option<Instant>,
}

/// How often every per-job gauge is set again even when unchanged.
pub const FULL_REPUBLISH: Duration = Duration::from_secs(60);

impl Publisher {
    /// Sets every series from `stats`; the per-job gauges only when `per_job` (the stats were
    /// read with their per-job series), with `max_success_ages` (from [`max_success_age`]).
    pub fn publish(
        &mut self,
        stats: &StoreStats,
        per_job: bool,
        max_success_ages: &[(String, Duration)],
    ) {
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
        metrics::gauge!("restorectl_downloads_receiving").set(stats.receiving_downloads as f64);
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
        let millis = |times: &[(String, DateTime<Utc>)]| -> Vec<(String, i64)> {
            times
                .iter()
                .map(|(job, at)| (job.clone(), at.timestamp_millis()))
                .collect()
        };
        publish_millis(
            "restorectl_job_last_success_timestamp_seconds",
            millis(&stats.last_success),
            &mut self.last_success,
            full,
        );
        publish_millis(
            "restorectl_job_next_fire_timestamp_seconds",
            millis(&stats.next_fires),
            &mut self.next_fire,
            full,
        );
        publish_millis(
            "restorectl_job_max_success_age_seconds",
            max_success_ages
                .iter()
                .map(|(job, age)| {
                    let ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
                    (job.clone(), ms)
                })
                .collect(),
            &mut self.max_success_age,
            full,
        );
    }
}

/// Sets a per-job gauge in seconds from milliseconds, for the jobs whose value changed (all on a
/// `full` republish).
fn publish_millis(
    name: &'static str,
    values: Vec<(String, i64)>,
    last: &mut HashMap<String, i64>,
    full: bool,
) {
    let mut seen = HashMap::with_capacity(values.len());
    for (job, ms) in values {
        if full || last.get(&job) != Some(&ms) {
            metrics::gauge!(name, "job" => job.clone()).set(ms as f64 / 1000.0);
        }
        seen.insert(job, ms);
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use chrono::TimeZone;

    use super::*;
    use crate::config::Config;
    use crate::jobs::{ValidationContext, parse_str};

    /// A job with `spec_lines` (schedule, runTimeout, suspend).
    fn job(spec_lines: &str) -> Job {
        let config = Config::from_yaml(
            "exportRoot: /srv/exports\ntimezone: UTC\nservers:\n  primary:\n    \
             url: https://vb365.example.test:4443\n    username: CONTOSO\\svc-restore\n    \
             password: { secret: vb365-password }\n",
            Path::new("/etc/rc/restorectl.yaml"),
        )
        .unwrap();
        let text = format!(
            "apiVersion: restorectl/v1\nkind: ExportPst\nmetadata:\n  name: j\nspec:\n  \
             organization: contoso.onmicrosoft.com\n  mailboxes: [alice@contoso.com]\n\
             {spec_lines}  export:\n    path: \"{{job}}/{{mailbox}}.pst\"\n"
        );
        let report = parse_str(
            &text,
            Path::new("/etc/rc/jobs/j.yaml"),
            &ValidationContext::new(&config),
        );
        let errors: Vec<String> = report.all_errors().map(ToString::to_string).collect();
        assert!(errors.is_empty(), "{errors:?}");
        report.jobs().next().unwrap().clone()
    }

    /// A Wednesday noon, so a weekday schedule's next fires span a weekend.
    fn wednesday() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).unwrap()
    }

    fn age(spec_lines: &str) -> Option<Duration> {
        max_success_age(&job(spec_lines), wednesday())
    }

    /// The ages are reused for an hour while a job's schedule and timeout stay, recomputed when
    /// either changes or the hour is over, and removed jobs are forgotten.
    #[test]
    fn success_ages_are_reused_until_the_job_changes_or_an_hour_passes() {
        const HOUR: u64 = 3600;
        let daily = job("  schedule: { cron: \"0 2 * * *\" }\n  runTimeout: 2h\n");
        let weekdays = job("  schedule: { cron: \"0 2 * * 1-5\" }\n  runTimeout: 2h\n");
        let mut ages = SuccessAges::default();
        let now = wednesday();
        assert_eq!(
            ages.of([&daily].into_iter(), now),
            [("j".to_string(), Duration::from_secs(26 * HOUR))]
        );
        assert_eq!(ages.computed(), 1);
        // Same job, 59 minutes later: the remembered entry, not computed again.
        let later = now + chrono::Duration::minutes(59);
        assert_eq!(
            ages.of([&daily].into_iter(), later)[0].1,
            Duration::from_secs(26 * HOUR)
        );
        assert_eq!(ages.computed(), 1);
        // Another schedule under the same name: recomputed at once.
        assert_eq!(
            ages.of([&weekdays].into_iter(), later)[0].1,
            Duration::from_secs(74 * HOUR)
        );
        // After the hour the value is computed again from the job.
        let next_day = now + chrono::Duration::hours(25);
        assert_eq!(
            ages.of([&weekdays].into_iter(), next_day)[0].1,
            max_success_age(&weekdays, next_day).unwrap()
        );
        assert_eq!(ages.computed(), 3);
        assert_eq!(ages.len(), 1);
        assert!(ages.of(std::iter::empty(), next_day).is_empty());
        assert!(ages.is_empty());
    }

    #[test]
    fn max_success_age_is_the_longest_gap_plus_the_run_timeout() {
        const HOUR: u64 = 3600;
        for (spec, want) in [
            (
                "  schedule: { cron: \"0 2 * * *\" }\n  runTimeout: 2h\n",
                Some(26 * HOUR),
            ),
            // Friday to Monday is the longest gap of a weekday schedule.
            (
                "  schedule: { cron: \"0 2 * * 1-5\" }\n  runTimeout: 2h\n",
                Some(74 * HOUR),
            ),
            (
                "  schedule: { cron: \"0 * * * *\" }\n  runTimeout: 30m\n",
                Some(HOUR + HOUR / 2),
            ),
            ("  runTimeout: 2h\n", None),
            (
                "  schedule: { cron: \"0 2 * * *\" }\n  suspend: true\n",
                None,
            ),
        ] {
            assert_eq!(age(spec), want.map(Duration::from_secs), "{spec}");
        }
    }
}
