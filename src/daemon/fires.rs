//! The scheduler task (SPEC §4.3; named `scheduler` in logs and task supervision): one task that
//! turns the job table and the stored next fires into queued runs, `missed` and `skipped`
//! history rows. It decides nothing about time itself: fire instants and the catch-up plan come
//! from [`crate::schedule`], a job's validated `schedule:` section from [`crate::jobs::Schedule`].
//!
//! The stored next fire of each job is the source of truth (CRATES.md §3, approach B). The task
//! sleeps until the earliest next fire but never longer than [`MAX_SLEEP`] (tokio timers ignore
//! wall-clock steps and suspend), re-reads the clock, and calls [`Scheduler::tick`] when the
//! earliest next fire of the last pass is reached (or the job table changed, or the last pass
//! failed); a wake-up before it, with the same table, has nothing due and skips the pass. A tick
//! plans every job with [`plan()`] and, per job with something due, writes the due run, the
//! missed and skipped fires and the new next fire in ONE transaction ([`Store::record_fires`]),
//! so a crash leaves all or nothing. The store's unique indexes make a second write of the same
//! fire (or the same one-shot spec) a no-op, so a tick repeated after a crash never duplicates.
//!
//! Rules, from SPEC §4.3:
//!
//! - a job whose schedule is new or changed (its [`schedule_key`] differs from the stored one)
//!   only learns its next fire from now on: applying a schedule never fires;
//! - `suspend: true` clears the next fire (no scheduled runs); resuming is a new schedule;
//! - after downtime at most the latest due fire runs, and only within `startingDeadline`;
//!   every other due fire is recorded `missed`;
//! - `concurrencyPolicy`: `Forbid` records the fire `skipped` while a run is active, `Replace`
//!   cancels the active runs then queues (the new run is claimed only once the runs it replaces
//!   have stopped: their restores stopped, their session released, their lease given up; the
//!   store's claim enforces it, [`Store::claim_next_run`]), `Allow` queues;
//! - a one-shot job (no schedule) is queued once per distinct spec hash, whatever happens to its
//!   file in between (the store's `runs_one_shot_once` index).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::reconcile::{ActiveJob, JobTable};
use crate::schedule::{Clock, FireAction, MAX_SLEEP, Plan, plan, schedule_key, time_to_sleep};
use crate::store::{
    EventKind, JobState, NewEvent, NewRun, NextFire, Routing, Run, RunState, ScheduleState, Store,
    StoreError, Trigger,
};

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Runs queued (scheduled fires and one-shot specs).
    pub queued: Vec<Run>,
    /// Fires recorded as `missed`.
    pub missed: usize,
    /// Fires recorded as `skipped` (`Forbid` while a run was active).
    pub skipped: usize,
    /// Active runs asked to cancel for a `Replace` fire.
    pub replaced: usize,
    /// The earliest next fire of any scheduled job after this tick.
    pub earliest_next_fire: Option<DateTime<Utc>>,
}

/// The scheduler's state between ticks.
pub struct Scheduler {
    store: Store,
    clock: Arc<dyn Clock>,
    /// (job, spec hash) of one-shot versions already queued or found queued: saves a write
    /// transaction per one-shot job per tick (the store's unique index is the real guard).
    one_shot_done: HashSet<(String, String)>,
    /// The live config, for the routing of `missed` notifications (none without it).
    config: Option<watch::Receiver<Arc<crate::config::Config>>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("one_shot_done", &self.one_shot_done.len())
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// A scheduler over `store` reading time from `clock`.
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Self {
        Scheduler {
            store,
            clock,
            one_shot_done: HashSet::new(),
            config: None,
        }
    }

    /// Notifies missed and skipped fires with the routing of `config` (the job's `spec.notify`,
    /// else `notifications.defaults`).
    pub fn with_notifications(
        mut self,
        config: watch::Receiver<Arc<crate::config::Config>>,
    ) -> Self {
        self.config = Some(config);
        self
    }

    /// Runs until `cancel`: tick, sleep until the earliest next fire (at most [`MAX_SLEEP`]) or
    /// until the job table changes, tick again. `wake` is notified when runs were queued (the
    /// executor claims them at once instead of at its next poll).
    pub async fn run(
        mut self,
        mut table: watch::Receiver<Arc<JobTable>>,
        wake: Arc<Notify>,
        cancel: CancellationToken,
    ) {
        // The earliest next fire of the last complete pass; `None` when a pass is needed
        // (at start, after a failed pass, after the table changed). Waking up before it with
        // the same table, nothing can be due: the clock is re-read and the pass skipped, so an
        // idle daemon with thousands of jobs does not read them all every 30 s.
        let mut settled: Option<Option<DateTime<Utc>>> = None;
        loop {
            let current = Arc::clone(&table.borrow_and_update());
            let now = self.clock.now();
            let pass = match settled {
                None => true,
                Some(earliest) => earliest.is_some_and(|e| e <= now),
            };
            if pass {
                settled = match self.tick(&current).await {
                    Ok(report) => {
                        if !report.queued.is_empty() {
                            wake.notify_waiters();
                        }
                        Some(report.earliest_next_fire)
                    }
                    Err(error) => {
                        // The database is unreachable or locked for too long: try again later,
                        // the stored next fires keep every due fire due.
                        tracing::error!(%error, "scheduler tick failed; retrying");
                        None
                    }
                };
            }
            let wait = time_to_sleep(settled.flatten(), self.clock.now(), MAX_SLEEP);
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
                changed = table.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    settled = None;
                }
            }
        }
    }

    /// One pass over every job at the clock's current time. Library entry for tests: drive the
    /// clock (a [`crate::schedule::ManualClock`]) and call this against a real store.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the state database fails; fires not yet written stay due.
    pub async fn tick(&mut self, table: &JobTable) -> Result<TickReport, StoreError> {
        let now = self.clock.now();
        let states: HashMap<String, ScheduleState> = self
            .store
            .list_schedule_states()
            .await?
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        let mut report = TickReport::default();
        // Bookkeeping-only changes (a new schedule, suspend), written together at the end.
        let mut bookkeeping: Vec<(String, Option<String>, Option<DateTime<Utc>>)> = Vec::new();
        let mut earliest: Option<DateTime<Utc>> = None;
        for (name, active) in table {
            let Some(state) = states.get(name) else {
                continue;
            };
            if state.state == JobState::Removed {
                continue;
            }
            let job = &active.job;
            let Some(schedule) = job.schedule() else {
                if state.schedule_key.is_some() || state.next_fire_at.is_some() {
                    bookkeeping.push((name.clone(), None, None));
                }
                if !job.suspend() {
                    self.one_shot(name, active, now, &mut report).await?;
                }
                continue;
            };
            let key = schedule_key(schedule.cron(), schedule.timezone());
            if job.suspend() {
                if state.schedule_key.is_some() || state.next_fire_at.is_some() {
                    bookkeeping.push((name.clone(), None, None));
                }
                continue;
            }
            let same_schedule = state.schedule_key.as_deref() == Some(key.as_str());
            let stored = if same_schedule {
                state.next_fire_at
            } else {
                None
            };
            let p = plan(
                schedule.parsed(),
                schedule.timezone(),
                stored,
                now,
                schedule.starting_deadline(),
            );
            if let Some(next) = p.next_fire {
                earliest = Some(earliest.map_or(next, |e| e.min(next)));
            }
            if p.run.is_none() && p.missed_total() == 0 {
                if !same_schedule || state.next_fire_at != p.next_fire {
                    if !same_schedule {
                        tracing::info!(
                            job = %name,
                            schedule = %key,
                            next_fire = ?p.next_fire,
                            "schedule applied; it fires from the next fire time on"
                        );
                    }
                    bookkeeping.push((name.clone(), Some(key), p.next_fire));
                }
                continue;
            }
            self.fire(name, active, &key, &p, schedule, now, &mut report)
                .await?;
        }
        let updates: Vec<(&str, NextFire<'_>)> = bookkeeping
            .iter()
            .map(|(name, key, next)| {
                (
                    name.as_str(),
                    NextFire {
                        schedule_key: key.as_deref(),
                        next_fire_at: *next,
                    },
                )
            })
            .collect();
        self.store.set_next_fires(&updates).await?;
        report.earliest_next_fire = earliest;
        Ok(report)
    }

    /// Queues a one-shot job's current spec unless it already ran.
    async fn one_shot(
        &mut self,
        name: &str,
        active: &ActiveJob,
        now: DateTime<Utc>,
        report: &mut TickReport,
    ) -> Result<(), StoreError> {
        let key = (name.to_string(), active.job.spec_hash().to_string());
        if self.one_shot_done.contains(&key) {
            return Ok(());
        }
        let queued = self
            .store
            .enqueue_run(
                &NewRun {
                    job_name: name,
                    job_version_id: active.version_id,
                    spec_hash: active.job.spec_hash(),
                    trigger: Trigger::OneShot,
                    scheduled_for: now,
                    state: RunState::Queued,
                    reason: None,
                    timeout: Some(active.job.run_timeout()),
                },
                now,
            )
            .await?;
        if let Some(run) = queued {
            tracing::info!(job = %name, run = %run.id, "one-shot run queued");
            report.queued.push(run);
        }
        self.one_shot_done.insert(key);
        Ok(())
    }

    /// Writes a plan with due fires: missed rows, the run (or its skip), the new next fire.
    #[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
    async fn fire(
        &mut self,
        name: &str,
        active: &ActiveJob,
        key: &str,
        p: &Plan,
        schedule: &crate::jobs::Schedule,
        now: DateTime<Utc>,
        report: &mut TickReport,
    ) -> Result<(), StoreError> {
        let late_reason = schedule.starting_deadline().map(|d| {
            format!(
                "not run: more than startingDeadline ({}) late",
                humantime::format_duration(d)
            )
        });
        let missed_reason = |fire: DateTime<Utc>| -> String {
            let beyond = schedule
                .starting_deadline()
                .and_then(|d| chrono::TimeDelta::from_std(d).ok())
                .is_some_and(|d| now - fire > d);
            match (&late_reason, beyond) {
                (Some(r), true) if p.run.is_none() => r.clone(),
                _ => "not run: a later fire was due (at most one catch-up run after downtime)"
                    .to_string(),
            }
        };
        let reasons: Vec<String> = p.missed.iter().map(|f| missed_reason(*f)).collect();
        let new_run = |fire, state, reason| scheduled_row(name, active, fire, state, reason);
        let mut rows: Vec<NewRun<'_>> = p
            .missed
            .iter()
            .zip(&reasons)
            .map(|(f, r)| new_run(*f, RunState::Missed, Some(r.as_str())))
            .collect();
        let mut skip_reason = String::new();
        if let Some(fire) = p.run {
            // Not the run of this very fire: that can only be one another replica's scheduler
            // queued meanwhile (a leadership change), and cancelling or counting it would lose
            // the fire (this tick's own insert then meets the slot's unique key).
            let active_runs: Vec<_> = self
                .store
                .list_active_runs(name)
                .await?
                .into_iter()
                .filter(|r| !(r.trigger == Trigger::Schedule && r.scheduled_for == fire))
                .collect();
            match schedule
                .concurrency_policy()
                .decide(!active_runs.is_empty())
            {
                FireAction::Enqueue => rows.push(new_run(fire, RunState::Queued, None)),
                FireAction::Skip => {
                    let ids: Vec<String> = active_runs.iter().map(|r| r.id.to_string()).collect();
                    skip_reason = format!(
                        "skipped: run {} still active (concurrencyPolicy Forbid)",
                        ids.join(", ")
                    );
                    rows.push(new_run(fire, RunState::Skipped, None));
                }
                FireAction::ReplaceActive => {
                    for run in &active_runs {
                        let reason = format!(
                            "replaced by the fire of {} (concurrencyPolicy Replace)",
                            fire.to_rfc3339()
                        );
                        self.store.request_cancel(run.id, &reason, now).await?;
                        report.replaced += 1;
                        tracing::info!(job = %name, run = %run.id, "active run cancelled: replaced by a new fire, which starts once it has stopped");
                    }
                    rows.push(new_run(fire, RunState::Queued, None));
                }
            }
        }
        if let Some(last) = rows.last_mut()
            && last.state == RunState::Skipped
        {
            last.reason = Some(skip_reason.as_str());
        }
        let last_fire = p.run.or_else(|| p.missed.last().copied());
        let routing = match &self.config {
            Some(config) => config
                .borrow()
                .notifications
                .routing_for(active.job.notify()),
            None => Routing::none(),
        };
        let written = self
            .store
            .record_fires(
                name,
                &rows,
                NextFire {
                    schedule_key: Some(key),
                    next_fire_at: p.next_fire,
                },
                last_fire,
                &routing,
                now,
            )
            .await?;
        for run in written.into_iter().flatten() {
            match run.state {
                RunState::Queued => {
                    tracing::info!(job = %name, run = %run.id, scheduled_for = %run.scheduled_for, "scheduled run queued");
                    report.queued.push(run);
                }
                RunState::Skipped => {
                    tracing::info!(job = %name, run = %run.id, scheduled_for = %run.scheduled_for, "fire skipped: a run is still active");
                    report.skipped += 1;
                }
                _ => {
                    tracing::warn!(job = %name, run = %run.id, scheduled_for = %run.scheduled_for, reason = run.reason.as_deref().unwrap_or(""), "fire missed");
                    report.missed += 1;
                }
            }
        }
        if p.missed_unrecorded > 0 {
            let bound = if p.missed_count_exact {
                ""
            } else {
                "at least "
            };
            let message = format!(
                "{bound}{} more missed fires not recorded one by one (down for a long time)",
                p.missed_unrecorded
            );
            tracing::warn!(job = %name, "{message}");
            self.store
                .append_event(&NewEvent::new(EventKind::Note, message).job(name), now)
                .await?;
        }
        Ok(())
    }
}

/// A `runs` row for a fire of a scheduled job.
fn scheduled_row<'a>(
    name: &'a str,
    active: &'a ActiveJob,
    fire: DateTime<Utc>,
    state: RunState,
    reason: Option<&'a str>,
) -> NewRun<'a> {
    NewRun {
        job_name: name,
        job_version_id: active.version_id,
        spec_hash: active.job.spec_hash(),
        trigger: Trigger::Schedule,
        scheduled_for: fire,
        state,
        reason,
        timeout: Some(active.job.run_timeout()),
    }
}
