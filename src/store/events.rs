//! The append-only event log: one row per state change that matters to history (a run queued,
//! started or finished, a step changing state, a session opened or lost, a download resumed, an
//! export deleted by retention, an operator request…). Rows are written in the same transaction
//! as the change they describe, so history and state never disagree; triggers in the migration
//! reject any UPDATE or DELETE.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use tracing::instrument;

use super::dialect::{Backend, JsonRows, json_rows};
use super::{Millis, OptJsonText, Result, RunId, SqlxResultExt, Store, json_text, to_millis};

text_enum! {
    /// What an event records. Written as text; read back as text (see [`Event::kind`]) so that a
    /// database written by a newer version still lists.
    pub enum EventKind ("event kind") {
        JobVersionAdded = "job_version_added",
        JobVersionInvalid = "job_version_invalid",
        JobRemoved = "job_removed",
        RunQueued = "run_queued",
        RunMissed = "run_missed",
        RunSkipped = "run_skipped",
        RunStarted = "run_started",
        RunStateChanged = "run_state_changed",
        RunFinished = "run_finished",
        RunCancelRequested = "run_cancel_requested",
        StepStateChanged = "step_state_changed",
        StepDecision = "step_decision",
        SessionOpened = "session_opened",
        SessionStopping = "session_stopping",
        SessionStopped = "session_stopped",
        SessionLost = "session_lost",
        DownloadResumed = "download_resumed",
        DownloadRestarted = "download_restarted",
        DownloadPublished = "download_published",
        DownloadFailed = "download_failed",
        ExportDeleted = "export_deleted",
        RequestRecorded = "request_recorded",
        RequestConsumed = "request_consumed",
        InstanceStarted = "instance_started",
        InstanceTakenOver = "instance_taken_over",
        InstanceStopped = "instance_stopped",
        /// A replica took the lead (applies the job files, enqueues fires, consumes requests;
        /// data: `replica`, `instance`, `previous`, `term`).
        LeaderElected = "leader_elected",
        /// A device code was requested for an operator's sign-in (data: `userCode`,
        /// `verificationUrl`, `expiresAt`, `session`, `number`).
        DeviceCodeRequested = "device_code_requested",
        /// The operator signed in and asked the run to continue (`resolve --continue`).
        DeviceCodeContinued = "device_code_continued",
        /// The server refused a restore with the run's device code (not signed in, expired).
        DeviceCodeRefused = "device_code_refused",
        /// Free-form notes from the engine or daemon (reconciliation results, warnings).
        Note = "note",
    }
}

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: EventKind,
    /// Filled from the run when `None` and `run_id` is set.
    pub job_name: Option<String>,
    pub run_id: Option<RunId>,
    pub step_id: Option<i64>,
    /// One human-readable line.
    pub message: String,
    /// Details as a JSON object.
    pub data: Option<serde_json::Value>,
}

impl NewEvent {
    /// An event with only a kind and a message.
    pub fn new(kind: EventKind, message: impl Into<String>) -> NewEvent {
        NewEvent {
            kind,
            job_name: None,
            run_id: None,
            step_id: None,
            message: message.into(),
            data: None,
        }
    }

    /// Sets the job.
    pub fn job(mut self, name: impl Into<String>) -> NewEvent {
        self.job_name = Some(name.into());
        self
    }

    /// Sets the run.
    pub fn run(mut self, run: RunId) -> NewEvent {
        self.run_id = Some(run);
        self
    }

    /// Sets the step.
    pub fn step(mut self, step: i64) -> NewEvent {
        self.step_id = Some(step);
        self
    }

    /// Sets the details.
    pub fn data(mut self, data: serde_json::Value) -> NewEvent {
        self.data = Some(data);
        self
    }
}

/// A recorded event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Event {
    pub id: i64,
    #[sqlx(try_from = "Millis")]
    pub at: DateTime<Utc>,
    /// The [`EventKind`] text; kept as text so unknown kinds from a newer version still read.
    pub kind: String,
    pub job_name: Option<String>,
    pub run_id: Option<RunId>,
    pub step_id: Option<i64>,
    pub message: String,
    #[sqlx(try_from = "OptJsonText")]
    pub data: Option<serde_json::Value>,
}

/// Appends `event` on `conn` (inside the caller's transaction). Returns the event id.
pub(crate) async fn insert(
    conn: &mut AnyConnection,
    event: &NewEvent,
    now: DateTime<Utc>,
) -> Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO events (at, kind, job_name, run_id, step_id, message, data)
         VALUES ($1, $2, COALESCE($3, (SELECT job_name FROM runs WHERE id = $4)), $4, $5, $6, $7)
         RETURNING id",
    )
    .bind(to_millis(now))
    .bind(event.kind)
    .bind(event.job_name.as_deref())
    .bind(event.run_id)
    .bind(event.step_id)
    .bind(&event.message)
    .bind(event.data.as_ref().map(json_text))
    .fetch_one(conn)
    .await
    .op("append_event")
}

/// The rows of [`insert_many`]: `$1` the time, `$2` a JSON array of `[kind, job, run, step,
/// message, data]`.
const INSERT_MANY: JsonRows = json_rows!(
    "INSERT INTO events (at, kind, job_name, run_id, step_id, message, data)
     SELECT $1, r.value ->> 0,
            COALESCE(r.value ->> 1, (SELECT job_name FROM runs WHERE id = r.value ->> 2)),
            r.value ->> 2, CAST(r.value ->> 3 AS BIGINT), r.value ->> 4, r.value ->> 5",
    "$2",
    "ORDER BY r.key"
);

/// Appends `events` on `conn` in one statement, in order (the first scan of thousands of job
/// files records an event per job; one statement each would dominate it). Same rows as
/// [`insert`] one by one.
pub(crate) async fn insert_many(
    conn: &mut AnyConnection,
    events: &[NewEvent],
    now: DateTime<Utc>,
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let rows: Vec<serde_json::Value> = events
        .iter()
        .map(|e| {
            serde_json::json!([
                e.kind.as_str(),
                e.job_name,
                e.run_id.map(|r| r.to_string()),
                e.step_id,
                e.message,
                e.data.as_ref().map(json_text),
            ])
        })
        .collect();
    sqlx::query(INSERT_MANY.sql(Backend::of(conn)))
        .bind(to_millis(now))
        .bind(json_text(&rows))
        .execute(conn)
        .await
        .op("append_events")?;
    Ok(())
}

impl Store {
    /// Appends one event in its own transaction. Returns the event id.
    #[instrument(level = "trace", skip_all, err(level = "debug"))]
    pub async fn append_event(&self, event: &NewEvent, now: DateTime<Utc>) -> Result<i64> {
        let mut tx = self.begin_write("append_event").await?;
        let id = insert(&mut tx, event, now).await?;
        tx.commit().await.op("append_event")?;
        Ok(id)
    }

    /// The events of a run, oldest first.
    #[instrument(level = "trace", skip_all, err(level = "debug"))]
    pub async fn list_run_events(&self, run: RunId) -> Result<Vec<Event>> {
        sqlx::query_as::<_, Event>("SELECT * FROM events WHERE run_id = $1 ORDER BY id")
            .bind(run)
            .fetch_all(self.reader())
            .await
            .op("list_run_events")
    }

    /// The newest `limit` events of a run, oldest first, and how many the run has in all
    /// (`show` of a 10,000-mailbox run lists the end of its 40,000 events, not all of them).
    #[instrument(level = "trace", skip_all, fields(run = %run), err(level = "debug"))]
    pub async fn list_run_events_newest(
        &self,
        run: RunId,
        limit: u32,
    ) -> Result<(Vec<Event>, u64)> {
        const OP: &str = "list_run_events_newest";
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE run_id = $1")
            .bind(run)
            .fetch_one(self.reader())
            .await
            .op(OP)?;
        let events = sqlx::query_as::<_, Event>(
            "SELECT * FROM (SELECT * FROM events WHERE run_id = $1 ORDER BY id DESC LIMIT $2) AS e
             ORDER BY id",
        )
        .bind(run)
        .bind(i64::from(limit))
        .fetch_all(self.reader())
        .await
        .op(OP)?;
        Ok((events, u64::try_from(total).unwrap_or(0)))
    }

    /// The `limit` most recent events, newest first.
    #[instrument(level = "trace", skip_all, err(level = "debug"))]
    pub async fn list_recent_events(&self, limit: u32) -> Result<Vec<Event>> {
        sqlx::query_as::<_, Event>("SELECT * FROM events ORDER BY id DESC LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(self.reader())
            .await
            .op("list_recent_events")
    }
}
