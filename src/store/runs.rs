//! Runs (SPEC §4.3, §5): enqueueing with the database's uniqueness as the guard against
//! duplicates (a one-shot spec runs once per spec hash; a schedule slot is enqueued once), the
//! scheduler's one-transaction "enqueue and advance", claiming with a lease so a crashed owner's
//! run is picked up again, state changes and cancellation.
//!
//! Lease protocol: [`Store::claim_next_run`] sets `lease_owner` and `lease_expires_at`; the owner
//! calls [`Store::renew_lease`] well before expiry (which also reports a cancel request); a run
//! whose lease expired (or was released on shutdown) is claimable again, and each claim counts in
//! `attempts`. State changes do not check the owner: only the lease holder makes them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::AnyConnection;
use tracing::instrument;

use super::events::{self, EventKind, NewEvent};
use super::next_fire::{NextFire, update_next_fire_in};
use super::notifications::{self, Routing, RunChange};
use super::{
    Millis, OptMillis, Result, RunId, RunState, SqlxResultExt, Store, StoreError, Trigger,
    duration_millis, to_millis,
};

/// A row of `runs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Run {
    pub id: RunId,
    pub job_name: String,
    /// The job version (and so the spec) the run executes, fixed at enqueue.
    pub job_version_id: i64,
    pub spec_hash: String,
    pub trigger: Trigger,
    /// The fire instant (schedule), or the enqueue time (manual, one-shot).
    #[sqlx(try_from = "Millis")]
    pub scheduled_for: DateTime<Utc>,
    pub state: RunState,
    /// Why the run is in its state (`timeout`, `cancelled by operator`, an error summary…).
    pub reason: Option<String>,
    /// The version's `runTimeout` in milliseconds; the deadline is set from it on first start.
    pub timeout_ms: Option<i64>,
    /// How many times the run was claimed.
    pub attempts: i64,
    #[sqlx(try_from = "super::Flag")]
    pub cancel_requested: bool,
    #[sqlx(try_from = "OptMillis")]
    pub deadline_at: Option<DateTime<Utc>>,
    #[sqlx(try_from = "OptMillis")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub lease_owner: Option<String>,
    #[sqlx(try_from = "OptMillis")]
    pub lease_expires_at: Option<DateTime<Utc>>,
    #[sqlx(try_from = "Millis")]
    pub created_at: DateTime<Utc>,
    #[sqlx(try_from = "OptMillis")]
    pub started_at: Option<DateTime<Utc>>,
    #[sqlx(try_from = "OptMillis")]
    pub finished_at: Option<DateTime<Utc>>,
    #[sqlx(try_from = "Millis")]
    pub updated_at: DateTime<Utc>,
}

impl Run {
    /// The run's state as a notification sees it.
    fn change(&self) -> RunChange<'_> {
        RunChange {
            id: self.id,
            job: &self.job_name,
            state: self.state,
            reason: self.reason.as_deref(),
        }
    }
}

/// A run to enqueue (or a fire time to record as `missed` / `skipped`).
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    pub job_name: &'a str,
    pub job_version_id: i64,
    pub spec_hash: &'a str,
    pub trigger: Trigger,
    pub scheduled_for: DateTime<Utc>,
    /// `Queued`, or history-only `Missed` / `Skipped`.
    pub state: RunState,
    pub reason: Option<&'a str>,
    /// The version's `runTimeout`.
    pub timeout: Option<Duration>,
}

/// Filters of [`Store::list_runs`].
#[derive(Debug, Clone, Default)]
pub struct RunFilter<'a> {
    pub job: Option<&'a str>,
    pub state: Option<RunState>,
    /// At most this many rows (newest first); `None` for all.
    pub limit: Option<u32>,
}

/// What [`Store::renew_lease`] reports back to the lease holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRenewal {
    /// An operator asked to cancel: stop cleanly and finish as `cancelled`.
    pub cancel_requested: bool,
    pub deadline_at: Option<DateTime<Utc>>,
}

/// The result of [`Store::request_cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Nothing was in progress (queued / needs_attention): the run is now `cancelled`.
    Cancelled,
    /// The run is running or waiting for a retry: its owner will stop it.
    Requested,
    /// The run had already finished in this state.
    AlreadyFinished(RunState),
}

/// The condition of a claimable run (`$1` = now), as a macro so queries stay `&'static str`.
///
/// A queued run does not start while another run of its job is being cancelled (a cancel was
/// requested and it has not stopped yet): `concurrencyPolicy: Replace` queues the new run as it
/// requests the cancel, and the new run must not overlap the restores, session and lease of
/// the one it replaces. The cancelled run stops at its owner's next lease renewal, or, when its
/// owner is gone, at the claim after its lease expired.
///
/// The leading `state IN (…)` repeats what the branches say so that both backends use the
/// partial index `runs_claim_order` (migration 0007): SQLite only uses a partial index whose
/// condition appears as a term of the query.
macro_rules! claimable {
    () => {
        "(state IN ('queued', 'waiting_retry', 'running') AND ((state = 'queued' AND NOT EXISTS (
              SELECT 1 FROM runs AS stopping
              WHERE stopping.job_name = runs.job_name AND stopping.id <> runs.id
                AND stopping.state IN ('running', 'waiting_retry')
                AND stopping.cancel_requested = 1))
          OR (state = 'waiting_retry' AND (next_attempt_at <= $1 OR cancel_requested = 1))
          OR (state = 'running' AND (lease_expires_at IS NULL OR lease_expires_at <= $1))))"
    };
}

/// The next claimable run (the executor's claim loops poll it): a seek per state in
/// `runs_by_state`, whatever the history.
pub(super) const CLAIM_NEXT: &str = concat!(
    "SELECT * FROM runs WHERE ",
    claimable!(),
    " ORDER BY scheduled_for, id LIMIT 1"
);

/// The queued, running and waiting runs of job `$1` (the scheduler, at each fire): seeks in
/// `runs_job_state_finished`. Unordered: an `ORDER BY created_at` made SQLite read every run
/// of the job through `runs_by_job` instead; the caller sorts the few rows.
pub(super) const ACTIVE_RUNS_OF_JOB: &str =
    "SELECT * FROM runs WHERE job_name = $1 AND state IN ('queued', 'running', 'waiting_retry')";

impl Store {
    /// Enqueues a run, or records a `missed` / `skipped` fire. Returns `None` when the unique
    /// indexes say it already exists: a one-shot run for the same spec hash, or a schedule row
    /// for the same fire instant. Appends `run_queued` / `run_missed` / `run_skipped`.
    #[instrument(level = "trace", skip_all, fields(job = run.job_name), err(level = "debug"))]
    pub async fn enqueue_run(&self, run: &NewRun<'_>, now: DateTime<Utc>) -> Result<Option<Run>> {
        const OP: &str = "enqueue_run";
        let mut tx = self.begin_write(OP).await?;
        let inserted = insert_run(&mut tx, run, now).await?;
        tx.commit().await.op(OP)?;
        Ok(inserted)
    }

    /// The scheduler's tick for one job, in ONE write transaction: records every fire in `runs`
    /// (queued, missed, skipped; duplicates ignored, `None` in the result) and advances the job's
    /// next fire (`last_fire_at` set when given). A crash leaves either all of it or none.
    /// A missed or skipped fire enqueues the `missed` notifications of `routing` in the same
    /// transaction.
    #[instrument(level = "trace", skip_all, fields(job = job_name), err(level = "debug"))]
    pub async fn record_fires(
        &self,
        job_name: &str,
        runs: &[NewRun<'_>],
        next: NextFire<'_>,
        last_fire_at: Option<DateTime<Utc>>,
        routing: &Routing,
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<Run>>> {
        const OP: &str = "record_fires";
        let mut tx = self.begin_write(OP).await?;
        let mut out = Vec::with_capacity(runs.len());
        for run in runs {
            let inserted = insert_run(&mut tx, run, now).await?;
            if let Some(r) = inserted.as_ref().filter(|r| r.state != RunState::Queued) {
                notifications::notify_run_in(&mut tx, routing, r.change(), false, now).await?;
            }
            out.push(inserted);
        }
        update_next_fire_in(&mut tx, job_name, next, last_fire_at).await?;
        tx.commit().await.op(OP)?;
        Ok(out)
    }

    /// Claims the next due run for `owner` with a lease of `lease`: a queued run (unless another
    /// run of its job is being cancelled), a
    /// `waiting_retry` run whose `next_attempt_at` has come (or that an operator cancelled), or
    /// a `running` run whose lease expired or was released. Oldest `scheduled_for` first.
    /// Increments `attempts`; the first claim sets `started_at` and `deadline_at`.
    #[instrument(level = "trace", skip_all, fields(owner = owner), err(level = "debug"))]
    pub async fn claim_next_run(
        &self,
        owner: &str,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<Run>> {
        const OP: &str = "claim_next_run";
        let mut tx = self.begin_write(OP).await?;
        let candidate = sqlx::query_as::<_, Run>(CLAIM_NEXT)
            .bind(to_millis(now))
            .fetch_optional(&mut *tx)
            .await
            .op(OP)?;
        let claimed = match candidate {
            Some(run) => Some(claim(&mut tx, &run, owner, lease, now).await?),
            None => None,
        };
        tx.commit().await.op(OP)?;
        Ok(claimed)
    }

    /// Claims one given run if it is claimable (see [`Store::claim_next_run`]) or already
    /// leased by `owner`. `None` when another owner holds a live lease or the run is not due.
    #[instrument(level = "trace", skip_all, fields(run = %id, owner = owner), err(level = "debug"))]
    pub async fn claim_run(
        &self,
        id: RunId,
        owner: &str,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<Run>> {
        const OP: &str = "claim_run";
        let mut tx = self.begin_write(OP).await?;
        let candidate = sqlx::query_as::<_, Run>(concat!(
            "SELECT * FROM runs WHERE id = $2 AND (",
            claimable!(),
            " OR (state = 'running' AND lease_owner = $3))"
        ))
        .bind(to_millis(now))
        .bind(id)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await
        .op(OP)?;
        let claimed = match candidate {
            Some(run) => Some(claim(&mut tx, &run, owner, lease, now).await?),
            None => {
                // Distinguish "not claimable" from "no such run".
                get_run_in(&mut tx, id).await?;
                None
            }
        };
        tx.commit().await.op(OP)?;
        Ok(claimed)
    }

    /// Extends the lease of a run `owner` holds. Fails with [`StoreError::LeaseLost`] when the
    /// run is no longer running under `owner` (the lease expired and someone else took it).
    #[instrument(level = "trace", skip_all, fields(run = %id, owner = owner), err(level = "debug"))]
    pub async fn renew_lease(
        &self,
        id: RunId,
        owner: &str,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<LeaseRenewal> {
        const OP: &str = "renew_lease";
        let mut tx = self.begin_write(OP).await?;
        let renewed: Option<(super::Flag, Option<i64>)> = sqlx::query_as(
            "UPDATE runs SET lease_expires_at = $3, updated_at = $4
             WHERE id = $1 AND lease_owner = $2 AND state = 'running'
             RETURNING cancel_requested, deadline_at",
        )
        .bind(id)
        .bind(owner)
        .bind(to_millis(now) + duration_millis(lease))
        .bind(to_millis(now))
        .fetch_optional(&mut *tx)
        .await
        .op(OP)?;
        let result = match renewed {
            Some((cancel_requested, deadline)) => Ok(LeaseRenewal {
                cancel_requested: cancel_requested.into(),
                deadline_at: deadline.and_then(super::from_millis),
            }),
            None => {
                let run = get_run_in(&mut tx, id).await?;
                Err(StoreError::LeaseLost {
                    run: id,
                    owner: owner.to_string(),
                    holder: run.lease_owner,
                })
            }
        };
        tx.commit().await.op(OP)?;
        result
    }

    /// Gives up the lease without changing the state (graceful shutdown): the run is claimable
    /// at once by the next daemon. Returns false when `owner` did not hold it.
    #[instrument(level = "trace", skip_all, fields(run = %id, owner = owner), err(level = "debug"))]
    pub async fn release_lease(&self, id: RunId, owner: &str, now: DateTime<Utc>) -> Result<bool> {
        const OP: &str = "release_lease";
        let mut tx = self.begin_write(OP).await?;
        let done = sqlx::query(
            "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL, updated_at = $3
             WHERE id = $1 AND lease_owner = $2",
        )
        .bind(id)
        .bind(owner)
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await
        .op(OP)?;
        tx.commit().await.op(OP)?;
        Ok(done.rows_affected() > 0)
    }

    /// Expires every live lease not held by `owner`, so that start-up recovery can claim the
    /// runs a crashed predecessor held without waiting for their leases to run out. Only sound
    /// while `owner` holds the daemon instance lock. Returns how many leases were expired.
    #[instrument(level = "trace", skip_all, fields(owner = owner), err(level = "debug"))]
    pub async fn expire_foreign_leases(&self, owner: &str, now: DateTime<Utc>) -> Result<u64> {
        const OP: &str = "expire_foreign_leases";
        let mut tx = self.begin_write(OP).await?;
        let done = sqlx::query(
            "UPDATE runs SET lease_expires_at = $2, updated_at = $2
             WHERE state = 'running' AND lease_owner IS NOT NULL AND lease_owner <> $1
                 AND (lease_expires_at IS NULL OR lease_expires_at > $2)",
        )
        .bind(owner)
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await
        .op(OP)?;
        tx.commit().await.op(OP)?;
        Ok(done.rows_affected())
    }

    /// Moves a run to `state` with a reason: a terminal state or `needs_attention` (sets
    /// `finished_at`, clears the lease), or back to `queued` (after an operator's decision).
    /// Use [`Store::schedule_run_retry`] for `waiting_retry` and a claim for `running`.
    /// A terminal run never changes again ([`StoreError::InvalidTransition`]).
    /// Appends `run_finished` (terminal) or `run_state_changed`.
    #[instrument(level = "trace", skip_all, fields(run = %id, state = %state), err(level = "debug"))]
    pub async fn set_run_state(
        &self,
        id: RunId,
        state: RunState,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Run> {
        self.set_run_state_notifying(id, state, reason, &Routing::none(), false, now)
            .await
    }

    /// [`Store::set_run_state`], and in the same transaction the notifications the new state
    /// raises for `routing` (`failed`, `needs_attention`, `recovered`, `succeeded`; `stale`
    /// instead of `failed` when `stale` is set: the freshness guard refused the run).
    #[instrument(level = "trace", skip_all, fields(run = %id, state = %state), err(level = "debug"))]
    pub async fn set_run_state_notifying(
        &self,
        id: RunId,
        state: RunState,
        reason: Option<&str>,
        routing: &Routing,
        stale: bool,
        now: DateTime<Utc>,
    ) -> Result<Run> {
        const OP: &str = "set_run_state";
        let mut tx = self.begin_write(OP).await?;
        let before = get_run_in(&mut tx, id).await?;
        let allowed = !before.state.is_terminal()
            && !matches!(
                state,
                RunState::Running | RunState::WaitingRetry | RunState::Missed | RunState::Skipped
            );
        if !allowed {
            return Err(transition(id, before.state, state));
        }
        let run = update_state(&mut tx, &before, state, reason, None, now).await?;
        notifications::notify_run_in(&mut tx, routing, run.change(), stale, now).await?;
        tx.commit().await.op(OP)?;
        Ok(run)
    }

    /// Parks a run as `waiting_retry` until `next_attempt_at` (failed steps back off), clearing
    /// the lease. Appends `run_state_changed`.
    #[instrument(level = "trace", skip_all, fields(run = %id), err(level = "debug"))]
    pub async fn schedule_run_retry(
        &self,
        id: RunId,
        next_attempt_at: DateTime<Utc>,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Run> {
        const OP: &str = "schedule_run_retry";
        let mut tx = self.begin_write(OP).await?;
        let before = get_run_in(&mut tx, id).await?;
        if before.state.is_terminal() {
            return Err(transition(id, before.state, RunState::WaitingRetry));
        }
        let run = update_state(
            &mut tx,
            &before,
            RunState::WaitingRetry,
            reason,
            Some(next_attempt_at),
            now,
        )
        .await?;
        tx.commit().await.op(OP)?;
        Ok(run)
    }

    /// An operator's cancel: a queued or `needs_attention` run is cancelled at once (nothing is
    /// in progress); a running or waiting run gets `cancel_requested` for its owner to act on
    /// (it is claimable at once when waiting). Appends `run_finished` or `run_cancel_requested`.
    #[instrument(level = "trace", skip_all, fields(run = %id), err(level = "debug"))]
    pub async fn request_cancel(
        &self,
        id: RunId,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<CancelOutcome> {
        const OP: &str = "request_cancel";
        let mut tx = self.begin_write(OP).await?;
        let before = get_run_in(&mut tx, id).await?;
        let outcome = match before.state {
            s if s.is_terminal() => CancelOutcome::AlreadyFinished(s),
            RunState::Queued | RunState::NeedsAttention => {
                update_state(
                    &mut tx,
                    &before,
                    RunState::Cancelled,
                    Some(reason),
                    None,
                    now,
                )
                .await?;
                CancelOutcome::Cancelled
            }
            _ => {
                sqlx::query("UPDATE runs SET cancel_requested = 1, updated_at = $2 WHERE id = $1")
                    .bind(id)
                    .bind(to_millis(now))
                    .execute(&mut *tx)
                    .await
                    .op(OP)?;
                let event = NewEvent::new(
                    EventKind::RunCancelRequested,
                    format!("cancel requested: {reason}"),
                )
                .run(id)
                .data(json!({ "reason": reason, "state": before.state }));
                events::insert(&mut tx, &event, now).await?;
                CancelOutcome::Requested
            }
        };
        tx.commit().await.op(OP)?;
        Ok(outcome)
    }

    /// One run.
    #[instrument(level = "trace", skip_all, fields(run = %id), err(level = "debug"))]
    pub async fn get_run(&self, id: RunId) -> Result<Run> {
        sqlx::query_as::<_, Run>("SELECT * FROM runs WHERE id = $1")
            .bind(id)
            .fetch_one(self.reader())
            .await
            .found("get_run", "run", id)
    }

    /// Runs of a job that are queued, running or waiting for a retry, oldest first
    /// (`concurrencyPolicy` looks at these).
    #[instrument(level = "trace", skip_all, fields(job = job), err(level = "debug"))]
    pub async fn list_active_runs(&self, job: &str) -> Result<Vec<Run>> {
        let mut runs = sqlx::query_as::<_, Run>(ACTIVE_RUNS_OF_JOB)
            .bind(job)
            .fetch_all(self.reader())
            .await
            .op("list_active_runs")?;
        runs.sort_by_key(|r| (r.created_at, r.id));
        Ok(runs)
    }

    /// Runs matching `filter`, newest first.
    #[instrument(level = "trace", skip_all, err(level = "debug"))]
    pub async fn list_runs(&self, filter: &RunFilter<'_>) -> Result<Vec<Run>> {
        // `$N IS NULL OR …` keeps one static statement for every filter combination.
        sqlx::query_as::<_, Run>(
            "SELECT * FROM runs
             WHERE (CAST($1 AS TEXT) IS NULL OR job_name = $1)
               AND (CAST($2 AS TEXT) IS NULL OR state = $2)
             ORDER BY created_at DESC, id DESC
             LIMIT $3",
        )
        .bind(filter.job)
        .bind(filter.state)
        .bind(filter.limit.map_or(i64::MAX, i64::from))
        .fetch_all(self.reader())
        .await
        .op("list_runs")
    }
}

fn transition(id: RunId, from: RunState, to: RunState) -> StoreError {
    StoreError::InvalidTransition {
        what: "run",
        id: id.to_string(),
        from: from.to_string(),
        to: to.to_string(),
    }
}

pub(crate) async fn get_run_in(conn: &mut AnyConnection, id: RunId) -> Result<Run> {
    sqlx::query_as::<_, Run>("SELECT * FROM runs WHERE id = $1")
        .bind(id)
        .fetch_one(conn)
        .await
        .found("get_run", "run", id)
}

pub(super) async fn insert_run(
    conn: &mut AnyConnection,
    run: &NewRun<'_>,
    now: DateTime<Utc>,
) -> Result<Option<Run>> {
    let event_kind = match run.state {
        RunState::Queued => EventKind::RunQueued,
        RunState::Missed => EventKind::RunMissed,
        RunState::Skipped => EventKind::RunSkipped,
        other => {
            return Err(StoreError::InvalidTransition {
                what: "new run of job",
                id: run.job_name.to_string(),
                from: "nothing".to_string(),
                to: other.to_string(),
            });
        }
    };
    let id = RunId::new();
    let now_ms = to_millis(now);
    let finished = (run.state != RunState::Queued).then_some(now_ms);
    // ON CONFLICT without a target covers both partial unique indexes (one-shot, schedule slot).
    let inserted = sqlx::query_as::<_, Run>(
        "INSERT INTO runs (id, job_name, job_version_id, spec_hash, trigger, scheduled_for, state,
                           reason, timeout_ms, created_at, finished_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $10)
         ON CONFLICT DO NOTHING
         RETURNING *",
    )
    .bind(id)
    .bind(run.job_name)
    .bind(run.job_version_id)
    .bind(run.spec_hash)
    .bind(run.trigger)
    .bind(to_millis(run.scheduled_for))
    .bind(run.state)
    .bind(run.reason)
    .bind(run.timeout.map(duration_millis))
    .bind(now_ms)
    .bind(finished)
    .fetch_optional(&mut *conn)
    .await
    .op("enqueue_run")?;
    if let Some(r) = &inserted {
        let message = match run.reason {
            Some(reason) => format!("{} run {}: {reason}", r.trigger, r.state),
            None => format!("{} run {}", r.trigger, r.state),
        };
        let event = NewEvent::new(event_kind, message)
            .job(run.job_name)
            .run(r.id)
            .data(json!({
                "trigger": r.trigger,
                "scheduled_for": r.scheduled_for,
                "job_version_id": r.job_version_id,
                "spec_hash": r.spec_hash,
            }));
        events::insert(conn, &event, now).await?;
    }
    Ok(inserted)
}

async fn claim(
    conn: &mut AnyConnection,
    run: &Run,
    owner: &str,
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<Run> {
    let now_ms = to_millis(now);
    let claimed = sqlx::query_as::<_, Run>(
        "UPDATE runs SET state = 'running', attempts = attempts + 1, lease_owner = $2,
             lease_expires_at = $3, started_at = COALESCE(started_at, $4),
             deadline_at = COALESCE(deadline_at, $4 + timeout_ms), next_attempt_at = NULL,
             finished_at = NULL, updated_at = $4
         WHERE id = $1
         RETURNING *",
    )
    .bind(run.id)
    .bind(owner)
    .bind(now_ms + duration_millis(lease))
    .bind(now_ms)
    .fetch_one(&mut *conn)
    .await
    .op("claim_run")?;
    let message = if run.state == RunState::Running {
        format!(
            "run reclaimed by {owner} (attempt {}; lease of {} expired)",
            claimed.attempts,
            run.lease_owner.as_deref().unwrap_or("nobody")
        )
    } else {
        format!("run started by {owner} (attempt {})", claimed.attempts)
    };
    let event = NewEvent::new(EventKind::RunStarted, message)
        .run(run.id)
        .data(json!({
            "owner": owner,
            "attempt": claimed.attempts,
            "previous_state": run.state,
            "previous_owner": run.lease_owner,
        }));
    events::insert(conn, &event, now).await?;
    Ok(claimed)
}

async fn update_state(
    conn: &mut AnyConnection,
    before: &Run,
    state: RunState,
    reason: Option<&str>,
    next_attempt_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Run> {
    let now_ms = to_millis(now);
    let finished = (state.is_terminal() || state == RunState::NeedsAttention).then_some(now_ms);
    let run = sqlx::query_as::<_, Run>(
        "UPDATE runs SET state = $2, reason = $3, next_attempt_at = $4, finished_at = $5,
             lease_owner = NULL, lease_expires_at = NULL, updated_at = $6
         WHERE id = $1
         RETURNING *",
    )
    .bind(before.id)
    .bind(state)
    .bind(reason)
    .bind(next_attempt_at.map(to_millis))
    .bind(finished)
    .bind(now_ms)
    .fetch_one(&mut *conn)
    .await
    .op("set_run_state")?;
    let kind = if state.is_terminal() {
        EventKind::RunFinished
    } else {
        EventKind::RunStateChanged
    };
    let message = match reason {
        Some(reason) => format!("run {} → {state}: {reason}", before.state),
        None => format!("run {} → {state}", before.state),
    };
    let event = NewEvent::new(kind, message).run(before.id).data(json!({
        "from": before.state,
        "state": state,
        "reason": reason,
        "next_attempt_at": next_attempt_at,
    }));
    events::insert(conn, &event, now).await?;
    Ok(run)
}
