//! Steps of a run (SPEC §5): one per mailbox (one for BulkRestore and organisation-wide Search),
//! created idempotently, and the transitions of the at-most-once restore protocol:
//!
//! 1. [`Store::mark_submitting`] commits `submitting` (and counts the POST in `restore_posts`)
//!    BEFORE the restore POST is sent;
//! 2. [`Store::mark_submitted`] records the returned operation id after the answer;
//! 3. when the outcome is unknown, [`Store::mark_in_doubt`]; from `in_doubt` nothing moves
//!    until an operator's decision is recorded ([`Store::record_operator_decision`]): `resend`
//!    allows `mark_submitting` again, `mark_done` allows `done`, `mark_failed` allows `failed`.
//!
//! The store enforces these rules, so a bug in the engine cannot re-send an `in_doubt` restore.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::AnyConnection;
use tracing::instrument;

use super::events::{self, EventKind, NewEvent};
use super::{
    Decision, ErrorClass, FileFormat, Millis, OptJsonText, OptMillis, Result, RunId, SqlxResultExt,
    StepState, Store, StoreError, int, json_text, path_text, to_millis,
};

/// A row of `steps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Step {
    pub id: i64,
    pub run_id: RunId,
    /// Position in the run (0-based, stable across re-creation).
    pub seq: i64,
    /// `None` for BulkRestore and organisation-wide Search.
    pub mailbox_id: Option<String>,
    pub mailbox_email: Option<String>,
    pub mailbox_name: Option<String>,
    #[sqlx(try_from = "super::Flag")]
    pub is_archive: bool,
    /// The mailboxes of a BulkRestore step.
    #[sqlx(try_from = "OptJsonText")]
    pub mailbox_ids: Option<Vec<String>>,
    pub state: StepState,
    /// Attempts started ([`Store::begin_step_attempt`]).
    pub attempts: i64,
    #[sqlx(try_from = "OptMillis")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The explore (restore) session the step works in.
    pub restore_session_id: Option<String>,
    /// The `sessionId` a restore POST answered.
    pub remote_operation_id: Option<String>,
    #[sqlx(try_from = "OptMillis")]
    pub submitted_at: Option<DateTime<Utc>>,
    pub created_items: Option<i64>,
    pub merged_items: Option<i64>,
    pub failed_items: Option<i64>,
    pub skipped_items: Option<i64>,
    /// Search: items written to the report.
    pub found_items: Option<i64>,
    pub error_class: Option<ErrorClass>,
    /// VB365 `errorCode` when known.
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub operator_decision: Option<Decision>,
    /// Restore POSTs sent (or possibly sent) for this step.
    pub restore_posts: i64,
    /// The published export or report.
    pub file_path: Option<String>,
    pub bytes: Option<i64>,
    pub sha256: Option<String>,
    pub format: Option<FileFormat>,
    #[sqlx(try_from = "OptMillis")]
    pub started_at: Option<DateTime<Utc>>,
    #[sqlx(try_from = "OptMillis")]
    pub finished_at: Option<DateTime<Utc>>,
    #[sqlx(try_from = "Millis")]
    pub updated_at: DateTime<Utc>,
}

/// A step to create.
#[derive(Debug, Clone, Default)]
pub struct NewStep {
    pub seq: i64,
    pub mailbox_id: Option<String>,
    pub mailbox_email: Option<String>,
    pub mailbox_name: Option<String>,
    pub is_archive: bool,
    pub mailbox_ids: Option<Vec<String>>,
}

/// The error recorded on a step (its `error_class`, `error_code` and `error_message` columns):
/// a record of a failure, not an error type (the engine's failure is `exec::StepFailure`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepErrorRecord {
    pub class: ErrorClass,
    /// VB365 `errorCode` when known.
    pub code: Option<String>,
    pub message: String,
}

/// Per-mailbox counts of a finished restore.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreCounts {
    pub created: u64,
    pub merged: u64,
    pub failed: u64,
    pub skipped: u64,
}

/// The file a step published.
#[derive(Debug, Clone)]
pub struct StepFile<'a> {
    pub path: &'a Path,
    pub bytes: u64,
    pub sha256: &'a str,
    pub format: FileFormat,
}

impl Store {
    /// Creates a run's steps, idempotently: a step whose `seq` exists is kept as it is, so
    /// re-creating after a crash returns the existing rows. Returns all steps of the run by
    /// `seq`.
    #[instrument(level = "trace", skip_all, fields(run = %run), err(level = "debug"))]
    pub async fn create_steps(
        &self,
        run: RunId,
        steps: &[NewStep],
        now: DateTime<Utc>,
    ) -> Result<Vec<Step>> {
        const OP: &str = "create_steps";
        let mut tx = self.begin_write(OP).await?;
        for step in steps {
            sqlx::query(
                "INSERT INTO steps (run_id, seq, mailbox_id, mailbox_email, mailbox_name,
                                    is_archive, mailbox_ids, state, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8)
                 ON CONFLICT (run_id, seq) DO NOTHING",
            )
            .bind(run)
            .bind(step.seq)
            .bind(step.mailbox_id.as_deref())
            .bind(step.mailbox_email.as_deref())
            .bind(step.mailbox_name.as_deref())
            .bind(i64::from(step.is_archive))
            .bind(step.mailbox_ids.as_ref().map(json_text))
            .bind(to_millis(now))
            .execute(&mut *tx)
            .await
            .op(OP)?;
        }
        let all = sqlx::query_as::<_, Step>("SELECT * FROM steps WHERE run_id = $1 ORDER BY seq")
            .bind(run)
            .fetch_all(&mut *tx)
            .await
            .op(OP)?;
        tx.commit().await.op(OP)?;
        Ok(all)
    }

    /// One step.
    #[instrument(level = "trace", skip_all, fields(step = id), err(level = "debug"))]
    pub async fn get_step(&self, id: i64) -> Result<Step> {
        sqlx::query_as::<_, Step>("SELECT * FROM steps WHERE id = $1")
            .bind(id)
            .fetch_one(self.reader())
            .await
            .found("get_step", "step", id)
    }

    /// The steps of a run, by `seq`.
    #[instrument(level = "trace", skip_all, fields(run = %run), err(level = "debug"))]
    pub async fn list_steps(&self, run: RunId) -> Result<Vec<Step>> {
        sqlx::query_as::<_, Step>("SELECT * FROM steps WHERE run_id = $1 ORDER BY seq")
            .bind(run)
            .fetch_all(self.reader())
            .await
            .op("list_steps")
    }

    /// Counts a new attempt of a step (compare `attempts` with `retry.maxAttempts`): sets
    /// `started_at` on the first, clears `next_attempt_at`. Not allowed on a finished or
    /// `in_doubt` step.
    #[instrument(level = "trace", skip_all, fields(step = id), err(level = "debug"))]
    pub async fn begin_step_attempt(&self, id: i64, now: DateTime<Utc>) -> Result<Step> {
        const OP: &str = "begin_step_attempt";
        let mut tx = self.begin_write(OP).await?;
        let step = begin_step_attempt_in(&mut tx, id, now).await?;
        tx.commit().await.op(OP)?;
        Ok(step)
    }

    /// [`Store::begin_step_attempt`] that also appends the run engine's `note` "MAILBOX:
    /// attempt N started" (data `{step_attempt, step}`) in the same commit.
    #[instrument(level = "trace", skip_all, fields(step = id), err(level = "debug"))]
    pub async fn begin_step_attempt_noted(&self, id: i64, now: DateTime<Utc>) -> Result<Step> {
        const OP: &str = "begin_step_attempt";
        let mut tx = self.begin_write(OP).await?;
        let step = begin_step_attempt_in(&mut tx, id, now).await?;
        let subject = step
            .mailbox_email
            .as_deref()
            .unwrap_or(step.mailbox_name.as_deref().unwrap_or("step"));
        let mut note = NewEvent::new(
            EventKind::Note,
            format!("{subject}: attempt {} started", step.attempts),
        )
        .run(step.run_id)
        .data(serde_json::json!({ "step_attempt": step.attempts, "step": id }));
        note.step_id = Some(id);
        super::events::insert(&mut tx, &note, now).await?;
        tx.commit().await.op(OP)?;
        Ok(step)
    }

    /// Records the explore session a step works in.
    #[instrument(level = "trace", skip_all, fields(step = id), err(level = "debug"))]
    pub async fn set_step_session(
        &self,
        id: i64,
        session_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Step> {
        self.update_step(
            "set_step_session",
            id,
            "UPDATE steps SET restore_session_id = $2, updated_at = $3 WHERE id = $1 RETURNING *",
            |q| q.bind(session_id).bind(to_millis(now)),
        )
        .await
    }

    /// Commits `submitting` BEFORE a restore POST and counts it in `restore_posts`. Allowed from
    /// `pending`, from `submitting` (reconciliation proved the previous POST was not received)
    /// and from `in_doubt` only after an operator chose `resend`.
    ///
    /// The fence of the at-most-once protocol among replicas: only `owner` holding the run's
    /// lease, unexpired at `now`, may commit it. A process that lost its lease while it waited
    /// (a database stall, a paused VM) gets [`StoreError::LeaseLost`] here instead of sending a
    /// restore that the replica now holding the run may send too.
    #[instrument(level = "trace", skip_all, fields(step = id), err(level = "debug"))]
    pub async fn mark_submitting(&self, id: i64, owner: &str, now: DateTime<Utc>) -> Result<Step> {
        const OP: &str = "mark_submitting";
        let mut tx = self.begin_write(OP).await?;
        let before = get_step_in(&mut tx, id).await?;
        let run = super::runs::get_run_in(&mut tx, before.run_id).await?;
        let holds = run.state == super::RunState::Running
            && run.lease_owner.as_deref() == Some(owner)
            && run.lease_expires_at.is_some_and(|e| e > now);
        if !holds {
            return Err(StoreError::LeaseLost {
                run: run.id,
                owner: owner.to_string(),
                holder: run.lease_owner,
            });
        }
        let allowed = match before.state {
            StepState::Pending | StepState::Submitting => true,
            StepState::InDoubt => before.operator_decision == Some(Decision::Resend),
            _ => false,
        };
        if !allowed {
            return Err(transition(&before, before.state, StepState::Submitting));
        }
        let step = sqlx::query_as::<_, Step>(
            "UPDATE steps SET state = 'submitting', restore_posts = restore_posts + 1,
                 remote_operation_id = NULL, submitted_at = NULL, error_class = NULL,
                 error_code = NULL, error_message = NULL, started_at = COALESCE(started_at, $2),
                 finished_at = NULL, updated_at = $2
             WHERE id = $1 RETURNING *",
        )
        .bind(id)
        .bind(to_millis(now))
        .fetch_one(&mut *tx)
        .await
        .op(OP)?;
        step_event(&mut tx, &before, &step, None, now).await?;
        tx.commit().await.op(OP)?;
        Ok(step)
    }

    /// Records the answer of a restore POST: `submitted` with the returned operation id.
    /// Allowed from `submitting` and from `in_doubt` (reconciliation later proved receipt).
    #[instrument(level = "trace", skip_all, fields(step = id), err(level = "debug"))]
    pub async fn mark_submitted(
        &self,
        id: i64,
        remote_operation_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Step> {
        const OP: &str = "mark_submitted";
        let mut tx = self.begin_write(OP).await?;
        let before = get_step_in(&mut tx, id).await?;
        if !matches!(before.state, StepState::Submitting | StepState::InDoubt) {
            return Err(transition(&before, before.state, StepState::Submitted));
        }
        let step = sqlx::query_as::<_, Step>(
            "UPDATE steps SET state = 'submitted', remote_operation_id = $2, submitted_at = $3,
                 error_class = NULL, error_code = NULL, error_message = NULL, updated_at = $3
             WHERE id = $1 RETURNING *",
        )
        .bind(id)
        .bind(remote_operation_id)
        .bind(to_millis(now))
        .fetch_one(&mut *tx)
        .await
        .op(OP)?;
        step_event(&mut tx, &before, &step, None, now).await?;
        tx.commit().await.op(OP)?;
        Ok(step)
    }

    /// The outcome of a restore POST is unknown and could not be reconciled: `in_doubt` (error
    /// class `ambiguous`), any earlier operator decision cleared. Only from `submitting`.
    #[instrument(level = "trace", skip_all, fields(step = id), err(level = "debug"))]
    pub async fn mark_in_doubt(&self, id: i64, message: &str, now: DateTime<Utc>) -> Result<Step> {
        const OP: &str = "mark_in_doubt";
        let mut tx = self.begin_write(OP).await?;
        let before = get_step_in(&mut tx, id).await?;
        if before.state != StepState::Submitting {
            return Err(transition(&before, before.state, StepState::InDoubt));
        }
        let step = sqlx::query_as::<_, Step>(
            "UPDATE steps SET state = 'in_doubt', error_class = $2, error_code = NULL,
                 error_message = $3, operator_decision = NULL, updated_at = $4
             WHERE id = $1 RETURNING *",
        )
        .bind(id)
        .bind(ErrorClass::Ambiguous)
        .bind(message)
        .bind(to_millis(now))
        .fetch_one(&mut *tx)
        .await
        .op(OP)?;
        step_event(&mut tx, &before, &step, Some(message), now).await?;
        tx.commit().await.op(OP)?;
        Ok(step)
    }

    /// Moves a step to `state` (`pending`, `downloading`, `verifying`, `done`, `warning`,
    /// `failed`, `skipped`) and sets its error (`None` clears it). Finished states set
    /// `finished_at`. A finished step never changes again; an `in_doubt` step only moves to
    /// `done` / `failed` after the matching operator decision. `submitting`, `submitted` and
    /// `in_doubt` have their own functions.
    #[instrument(level = "trace", skip_all, fields(step = id, state = %state), err(level = "debug"))]
    pub async fn set_step_state(
        &self,
        id: i64,
        state: StepState,
        error: Option<&StepErrorRecord>,
        now: DateTime<Utc>,
    ) -> Result<Step> {
        const OP: &str = "set_step_state";
        let mut tx = self.begin_write(OP).await?;
        let step = set_step_state_in(&mut tx, id, state, error, now).await?;
        tx.commit().await.op(OP)?;
        Ok(step)
    }

    /// A failed attempt will be retried at `next_attempt_at`: back to `pending` with the error
    /// kept for `show`. Not allowed on `done` / `warning` / `skipped` / `in_doubt` steps.
    #[instrument(level = "trace", skip_all, fields(step = id), err(level = "debug"))]
    pub async fn schedule_step_retry(
        &self,
        id: i64,
        next_attempt_at: DateTime<Utc>,
        error: &StepErrorRecord,
        now: DateTime<Utc>,
    ) -> Result<Step> {
        const OP: &str = "schedule_step_retry";
        let mut tx = self.begin_write(OP).await?;
        let before = get_step_in(&mut tx, id).await?;
        if matches!(
            before.state,
            StepState::Done | StepState::Warning | StepState::Skipped | StepState::InDoubt
        ) {
            return Err(transition(&before, before.state, "a retry"));
        }
        let step = sqlx::query_as::<_, Step>(
            "UPDATE steps SET state = 'pending', next_attempt_at = $2, error_class = $3,
                 error_code = $4, error_message = $5, finished_at = NULL, updated_at = $6
             WHERE id = $1 RETURNING *",
        )
        .bind(id)
        .bind(to_millis(next_attempt_at))
        .bind(error.class)
        .bind(error.code.as_deref())
        .bind(&error.message)
        .bind(to_millis(now))
        .fetch_one(&mut *tx)
        .await
        .op(OP)?;
        step_event(&mut tx, &before, &step, Some(&error.message), now).await?;
        tx.commit().await.op(OP)?;
        Ok(step)
    }

    /// Stores the per-mailbox counts of a finished restore.
    #[instrument(level = "trace", skip_all, fields(step = id), err(level = "debug"))]
    pub async fn record_restore_counts(
        &self,
        id: i64,
        counts: RestoreCounts,
        now: DateTime<Utc>,
    ) -> Result<Step> {
        self.update_step(
            "record_restore_counts",
            id,
            "UPDATE steps SET created_items = $2, merged_items = $3, failed_items = $4,
                 skipped_items = $5, updated_at = $6
             WHERE id = $1 RETURNING *",
            |q| {
                q.bind(int(counts.created))
                    .bind(int(counts.merged))
                    .bind(int(counts.failed))
                    .bind(int(counts.skipped))
                    .bind(to_millis(now))
            },
        )
        .await
    }

    /// Stores how many items a search wrote to its report.
    #[instrument(level = "trace", skip_all, fields(step = id), err(level = "debug"))]
    pub async fn record_search_count(
        &self,
        id: i64,
        found: u64,
        now: DateTime<Utc>,
    ) -> Result<Step> {
        self.update_step(
            "record_search_count",
            id,
            "UPDATE steps SET found_items = $2, updated_at = $3 WHERE id = $1 RETURNING *",
            |q| q.bind(int(found)).bind(to_millis(now)),
        )
        .await
    }

    /// Stores the file a step published (export or report).
    #[instrument(level = "trace", skip_all, fields(step = id), err(level = "debug"))]
    pub async fn record_step_file(
        &self,
        id: i64,
        file: &StepFile<'_>,
        now: DateTime<Utc>,
    ) -> Result<Step> {
        const OP: &str = "record_step_file";
        let mut tx = self.begin_write(OP).await?;
        let step = record_step_file_in(&mut tx, id, file, now).await?;
        tx.commit().await.op(OP)?;
        Ok(step)
    }

    /// Records an operator's decision about an `in_doubt` step (the engine then acts on it).
    /// Appends `step_decision`.
    #[instrument(level = "trace", skip_all, fields(step = id, decision = %decision), err(level = "debug"))]
    pub async fn record_operator_decision(
        &self,
        id: i64,
        decision: Decision,
        now: DateTime<Utc>,
    ) -> Result<Step> {
        const OP: &str = "record_operator_decision";
        let mut tx = self.begin_write(OP).await?;
        let before = get_step_in(&mut tx, id).await?;
        if before.state != StepState::InDoubt {
            return Err(StoreError::InvalidTransition {
                what: "step",
                id: id.to_string(),
                from: before.state.to_string(),
                to: format!("decision {decision}"),
            });
        }
        let step = sqlx::query_as::<_, Step>(
            "UPDATE steps SET operator_decision = $2, updated_at = $3 WHERE id = $1 RETURNING *",
        )
        .bind(id)
        .bind(decision)
        .bind(to_millis(now))
        .fetch_one(&mut *tx)
        .await
        .op(OP)?;
        let event = NewEvent::new(
            EventKind::StepDecision,
            format!("operator decided {decision} for in_doubt step {}", step.seq),
        )
        .run(step.run_id)
        .step(id)
        .data(json!({ "decision": decision, "mailbox": step.mailbox_email }));
        events::insert(&mut tx, &event, now).await?;
        tx.commit().await.op(OP)?;
        Ok(step)
    }

    /// One `UPDATE … RETURNING *` on a step that does not change its state (no event).
    async fn update_step<'q, F>(
        &self,
        op: &'static str,
        id: i64,
        sql: &'static str,
        bind: F,
    ) -> Result<Step>
    where
        F: FnOnce(StepQuery<'q>) -> StepQuery<'q>,
    {
        let mut tx = self.begin_write(op).await?;
        let step = bind(sqlx::query_as::<_, Step>(sql).bind(id))
            .fetch_one(&mut *tx)
            .await
            .found(op, "step", id)?;
        tx.commit().await.op(op)?;
        Ok(step)
    }
}

type StepQuery<'q> = sqlx::query::QueryAs<'q, sqlx::Any, Step, sqlx::any::AnyArguments>;

async fn get_step_in(conn: &mut AnyConnection, id: i64) -> Result<Step> {
    sqlx::query_as::<_, Step>("SELECT * FROM steps WHERE id = $1")
        .bind(id)
        .fetch_one(conn)
        .await
        .found("get_step", "step", id)
}

/// [`Store::begin_step_attempt`] inside the caller's write transaction.
async fn begin_step_attempt_in(
    conn: &mut AnyConnection,
    id: i64,
    now: DateTime<Utc>,
) -> Result<Step> {
    let before = get_step_in(conn, id).await?;
    if before.state.is_terminal() || before.state == StepState::InDoubt {
        return Err(transition(&before, before.state, "a new attempt"));
    }
    sqlx::query_as::<_, Step>(
        "UPDATE steps SET attempts = attempts + 1, next_attempt_at = NULL,
             started_at = COALESCE(started_at, $2), updated_at = $2
         WHERE id = $1 RETURNING *",
    )
    .bind(id)
    .bind(to_millis(now))
    .fetch_one(conn)
    .await
    .op("begin_step_attempt")
}

/// [`Store::record_step_file`] inside the caller's write transaction.
pub(super) async fn record_step_file_in(
    conn: &mut AnyConnection,
    id: i64,
    file: &StepFile<'_>,
    now: DateTime<Utc>,
) -> Result<Step> {
    sqlx::query_as::<_, Step>(
        "UPDATE steps SET file_path = $2, bytes = $3, sha256 = $4, format = $5, updated_at = $6
         WHERE id = $1 RETURNING *",
    )
    .bind(id)
    .bind(path_text(file.path)?)
    .bind(int(file.bytes))
    .bind(file.sha256)
    .bind(file.format)
    .bind(to_millis(now))
    .fetch_one(conn)
    .await
    .found("record_step_file", "step", id)
}

/// [`Store::set_step_state`] inside the caller's write transaction.
pub(super) async fn set_step_state_in(
    tx: &mut AnyConnection,
    id: i64,
    state: StepState,
    error: Option<&StepErrorRecord>,
    now: DateTime<Utc>,
) -> Result<Step> {
    const OP: &str = "set_step_state";
    let before = get_step_in(tx, id).await?;
    let allowed = !matches!(
        state,
        StepState::Submitting | StepState::Submitted | StepState::InDoubt
    ) && !before.state.is_terminal()
        && match before.state {
            StepState::InDoubt => matches!(
                (state, before.operator_decision),
                (StepState::Done, Some(Decision::MarkDone))
                    | (StepState::Failed, Some(Decision::MarkFailed))
            ),
            _ => true,
        };
    if !allowed {
        return Err(transition(&before, before.state, state));
    }
    let now_ms = to_millis(now);
    let step = sqlx::query_as::<_, Step>(
        "UPDATE steps SET state = $2, error_class = $3, error_code = $4, error_message = $5,
             finished_at = $6, started_at = COALESCE(started_at, $7), updated_at = $7
         WHERE id = $1 RETURNING *",
    )
    .bind(id)
    .bind(state)
    .bind(error.map(|e| e.class))
    .bind(error.and_then(|e| e.code.as_deref()))
    .bind(error.map(|e| e.message.as_str()))
    .bind(state.is_terminal().then_some(now_ms))
    .bind(now_ms)
    .fetch_one(&mut *tx)
    .await
    .op(OP)?;
    step_event(tx, &before, &step, error.map(|e| e.message.as_str()), now).await?;
    Ok(step)
}

fn transition(step: &Step, from: StepState, to: impl ToString) -> StoreError {
    StoreError::InvalidTransition {
        what: "step",
        id: step.id.to_string(),
        from: from.to_string(),
        to: to.to_string(),
    }
}

/// Appends `step_state_changed` for a transition.
async fn step_event(
    conn: &mut AnyConnection,
    before: &Step,
    after: &Step,
    detail: Option<&str>,
    now: DateTime<Utc>,
) -> Result<()> {
    let subject = after
        .mailbox_email
        .clone()
        .unwrap_or_else(|| format!("step {}", after.seq));
    let message = match detail {
        Some(d) => format!("{subject}: {} → {}: {d}", before.state, after.state),
        None => format!("{subject}: {} → {}", before.state, after.state),
    };
    let event = NewEvent::new(EventKind::StepStateChanged, message)
        .run(after.run_id)
        .step(after.id)
        .data(json!({
            "from": before.state,
            "state": after.state,
            "error_class": after.error_class,
            "error_code": after.error_code,
            "restore_posts": after.restore_posts,
            "remote_operation_id": after.remote_operation_id,
        }));
    events::insert(conn, &event, now).await?;
    Ok(())
}
