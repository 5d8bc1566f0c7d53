//! The notification outbox (SPEC §11, docs/notifications.md): one row per (event, target),
//! inserted in the same transaction as the state change that caused it (a run finished, a fire
//! missed or skipped, a job file became invalid), and the deliverer's reads and bookkeeping.
//!
//! Who is notified is decided by the caller, which knows the config and the job: it passes a
//! [`Routing`] (the job's `spec.notify`, else `notifications.defaults`) with the state change,
//! and this module writes a row for each of its targets when the change is one of its events.
//! The row holds the complete webhook body ([`Payload`], `version: 1`) with its delivery key, so
//! every retry sends the same bytes and the same `X-Restorectl-Delivery`.

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use tracing::instrument;
use uuid::Uuid;

use super::{
    Millis, OptMillis, Result, RunId, RunState, SqlxResultExt, Store, json_text, to_millis,
};

text_enum! {
    /// A notification event (SPEC §11).
    pub enum NotifyEvent ("notification event") {
        /// A run failed.
        Failed = "failed",
        /// A run needs an operator's decision (a step `in_doubt`).
        NeedsAttention = "needs_attention",
        /// A scheduled fire was missed or skipped.
        Missed = "missed",
        /// A job file became invalid.
        Invalid = "invalid",
        /// A run succeeded after the job's previous run failed.
        Recovered = "recovered",
        /// A run succeeded (opt-in).
        Succeeded = "succeeded",
        /// The freshness guard refused a run (the newest restore point is too old).
        Stale = "stale",
    }
}

impl schemars::JsonSchema for NotifyEvent {
    fn schema_name() -> Cow<'static, str> {
        "NotifyEvent".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let values: Vec<&str> = NotifyEvent::ALL.iter().map(|e| e.as_str()).collect();
        schemars::json_schema!({ "type": "string", "enum": values })
    }
}

/// Most mailbox names a message lists; the reason and `restorectl show RUN` give the rest.
pub const MAX_MAILBOXES: i64 = 100;

/// Who gets which events: the job's `spec.notify`, else the config's `notifications.defaults`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routing {
    /// Keys of `notifications.targets`.
    pub targets: Vec<String>,
    pub events: Vec<NotifyEvent>,
}

impl Routing {
    /// Nobody is notified.
    pub fn none() -> Routing {
        Routing::default()
    }

    /// True when `event` goes to at least one target.
    pub fn wants(&self, event: NotifyEvent) -> bool {
        !self.targets.is_empty() && self.events.contains(&event)
    }
}

/// The stored and sent body of a notification (the webhook's JSON, SPEC §11). `version`
/// changes only when a field changes meaning or disappears; new fields may be added within it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    pub version: u32,
    pub event: NotifyEvent,
    /// The idempotency key (`X-Restorectl-Delivery`).
    pub delivery: String,
    pub job: Option<String>,
    pub run: Option<String>,
    /// The run's state (`invalid` for a job file).
    pub state: String,
    pub reason: Option<String>,
    /// The mailboxes affected (at most [`MAX_MAILBOXES`]).
    pub mailboxes: Vec<String>,
    /// RFC 3339.
    pub occurred_at: String,
    /// The command that shows more (`restorectl show RUN`, `restorectl validate FILE`).
    pub command: String,
}

/// A row of `notifications`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Notification {
    pub id: i64,
    /// The idempotency key.
    pub delivery: String,
    pub target: String,
    pub event: NotifyEvent,
    pub job_name: Option<String>,
    pub run_id: Option<RunId>,
    /// The JSON body ([`Payload`]), sent verbatim to webhooks.
    pub payload: String,
    /// Delivery attempts made so far.
    pub attempts: i64,
    #[sqlx(try_from = "Millis")]
    pub next_attempt_at: DateTime<Utc>,
    #[sqlx(try_from = "OptMillis")]
    pub delivered_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    #[sqlx(try_from = "Millis")]
    pub created_at: DateTime<Utc>,
}

impl Notification {
    /// The parsed body.
    pub fn body(&self) -> serde_json::Result<Payload> {
        serde_json::from_str(&self.payload)
    }
}

/// A run's new state, as the state change wrote it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunChange<'a> {
    pub(crate) id: RunId,
    pub(crate) job: &'a str,
    pub(crate) state: RunState,
    pub(crate) reason: Option<&'a str>,
}

/// The facts of one event, before it is fanned out to the targets.
struct Facts<'a> {
    event: NotifyEvent,
    job: Option<&'a str>,
    run: Option<RunId>,
    state: &'a str,
    reason: Option<&'a str>,
    mailboxes: Vec<String>,
    command: String,
}

/// Writes one row per target of `routing` for `facts` (nothing when the routing does not want
/// the event).
async fn insert_in(
    conn: &mut AnyConnection,
    routing: &Routing,
    facts: &Facts<'_>,
    now: DateTime<Utc>,
) -> Result<()> {
    if !routing.wants(facts.event) {
        return Ok(());
    }
    let now_ms = to_millis(now);
    for target in &routing.targets {
        let delivery = Uuid::new_v4().to_string();
        let payload = Payload {
            version: 1,
            event: facts.event,
            delivery: delivery.clone(),
            job: facts.job.map(str::to_string),
            run: facts.run.map(|r| r.to_string()),
            state: facts.state.to_string(),
            reason: facts.reason.map(str::to_string),
            mailboxes: facts.mailboxes.clone(),
            occurred_at: now.to_rfc3339_opts(SecondsFormat::Secs, true),
            command: facts.command.clone(),
        };
        sqlx::query(
            "INSERT INTO notifications (delivery, target, event, job_name, run_id, payload,
                                        attempts, next_attempt_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $7)",
        )
        .bind(&delivery)
        .bind(target)
        .bind(facts.event)
        .bind(facts.job)
        .bind(facts.run)
        .bind(json_text(&payload))
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .op("enqueue_notification")?;
    }
    Ok(())
}

/// The event a run's new state raises, if any: `stale` overrides `failed` (the freshness
/// guard's refusal), a success is `recovered` when the job's previous finished run failed and
/// the routing wants it, else `succeeded`.
async fn run_event(
    conn: &mut AnyConnection,
    routing: &Routing,
    run: RunChange<'_>,
    stale: bool,
) -> Result<Option<NotifyEvent>> {
    Ok(match run.state {
        RunState::Failed if stale => Some(NotifyEvent::Stale),
        RunState::Failed => Some(NotifyEvent::Failed),
        RunState::NeedsAttention => Some(NotifyEvent::NeedsAttention),
        RunState::Missed | RunState::Skipped => Some(NotifyEvent::Missed),
        RunState::Succeeded | RunState::SucceededWithWarnings => {
            let previous: Option<RunState> = sqlx::query_scalar(
                "SELECT state FROM runs
                 WHERE job_name = $1 AND id <> $2 AND finished_at IS NOT NULL
                     AND state IN ('succeeded', 'succeeded_with_warnings', 'failed')
                 ORDER BY finished_at DESC, id DESC LIMIT 1",
            )
            .bind(run.job)
            .bind(run.id)
            .fetch_optional(&mut *conn)
            .await
            .op("enqueue_notification")?;
            if previous == Some(RunState::Failed) && routing.wants(NotifyEvent::Recovered) {
                Some(NotifyEvent::Recovered)
            } else {
                Some(NotifyEvent::Succeeded)
            }
        }
        _ => None,
    })
}

/// Enqueues the notifications of `run`'s new state (inside the state change's transaction).
pub(crate) async fn notify_run_in(
    conn: &mut AnyConnection,
    routing: &Routing,
    run: RunChange<'_>,
    stale: bool,
    now: DateTime<Utc>,
) -> Result<()> {
    if routing.targets.is_empty() {
        return Ok(());
    }
    let Some(event) = run_event(conn, routing, run, stale).await? else {
        return Ok(());
    };
    if !routing.wants(event) {
        return Ok(());
    }
    // The mailboxes affected: the failed (or in doubt) steps', all of them on success.
    macro_rules! affected {
        ($filter:literal) => {
            concat!(
                "SELECT COALESCE(mailbox_email, mailbox_name, 'step ' || CAST(seq AS TEXT))
                 FROM steps WHERE run_id = $1 ",
                $filter,
                " ORDER BY seq LIMIT $2"
            )
        };
    }
    let sql = match event {
        NotifyEvent::NeedsAttention => affected!("AND state = 'in_doubt'"),
        NotifyEvent::Failed | NotifyEvent::Stale => {
            affected!("AND state NOT IN ('done', 'warning', 'skipped')")
        }
        _ => affected!(""),
    };
    let mailboxes: Vec<String> = sqlx::query_scalar(sql)
        .bind(run.id)
        .bind(MAX_MAILBOXES)
        .fetch_all(&mut *conn)
        .await
        .op("enqueue_notification")?;
    let facts = Facts {
        event,
        job: Some(run.job),
        run: Some(run.id),
        state: run.state.as_str(),
        reason: run.reason,
        mailboxes,
        command: format!("restorectl show {}", run.id),
    };
    insert_in(conn, routing, &facts, now).await
}

/// Enqueues the `invalid` notification of a job file (inside the scan's transaction).
pub(crate) async fn notify_invalid_in(
    conn: &mut AnyConnection,
    routing: &Routing,
    job: Option<&str>,
    file: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let facts = Facts {
        event: NotifyEvent::Invalid,
        job,
        run: None,
        state: "invalid",
        reason: Some(reason),
        mailboxes: Vec::new(),
        command: format!("restorectl validate {file}"),
    };
    insert_in(conn, routing, &facts, now).await
}

/// The deliverer's poll (every second): the partial index `notifications_due` holds only the
/// undelivered rows, so delivered history is never read.
pub(super) const DUE_NOTIFICATIONS: &str = "SELECT * FROM notifications
     WHERE delivered_at IS NULL AND next_attempt_at <= $1
     ORDER BY next_attempt_at, id LIMIT $2";
/// The outbox backlog per target (every refresh): the same partial index.
pub(super) const PENDING_NOTIFICATIONS: &str =
    "SELECT target, CAST(COUNT(*) AS BIGINT) FROM notifications
     WHERE delivered_at IS NULL GROUP BY target ORDER BY target";

impl Store {
    /// Undelivered notifications due at `now`, oldest due first, at most `limit`.
    #[instrument(level = "trace", skip_all, err(level = "debug"))]
    pub async fn due_notifications(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Notification>> {
        sqlx::query_as::<_, Notification>(DUE_NOTIFICATIONS)
            .bind(to_millis(now))
            .bind(i64::from(limit))
            .fetch_all(self.reader())
            .await
            .op("due_notifications")
    }

    /// Records a successful delivery (a 2xx, or the SMTP server accepted the message).
    #[instrument(level = "trace", skip_all, fields(id), err(level = "debug"))]
    pub async fn mark_notification_delivered(&self, id: i64, now: DateTime<Utc>) -> Result<()> {
        const OP: &str = "mark_notification_delivered";
        let mut tx = self.begin_write(OP).await?;
        sqlx::query(
            "UPDATE notifications SET attempts = attempts + 1, delivered_at = $2, last_error = NULL
             WHERE id = $1 AND delivered_at IS NULL",
        )
        .bind(id)
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await
        .op(OP)?;
        tx.commit().await.op(OP)
    }

    /// Records a failed attempt and when to try again.
    #[instrument(level = "trace", skip_all, fields(id), err(level = "debug"))]
    pub async fn mark_notification_failed(
        &self,
        id: i64,
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<()> {
        const OP: &str = "mark_notification_failed";
        let mut tx = self.begin_write(OP).await?;
        sqlx::query(
            "UPDATE notifications SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3
             WHERE id = $1 AND delivered_at IS NULL",
        )
        .bind(id)
        .bind(to_millis(next_attempt_at))
        .bind(error)
        .execute(&mut *tx)
        .await
        .op(OP)?;
        tx.commit().await.op(OP)
    }

    /// Undelivered notifications per target.
    #[instrument(level = "trace", skip_all, err(level = "debug"))]
    pub async fn pending_notifications(&self) -> Result<Vec<(String, i64)>> {
        sqlx::query_as(PENDING_NOTIFICATIONS)
            .fetch_all(self.reader())
            .await
            .op("pending_notifications")
    }

    /// Every notification, oldest first; of one run when `run` is given.
    #[instrument(level = "trace", skip_all, err(level = "debug"))]
    pub async fn list_notifications(&self, run: Option<RunId>) -> Result<Vec<Notification>> {
        sqlx::query_as::<_, Notification>(
            "SELECT * FROM notifications
             WHERE (CAST($1 AS TEXT) IS NULL OR run_id = $1) ORDER BY id",
        )
        .bind(run)
        .fetch_all(self.reader())
        .await
        .op("list_notifications")
    }
}
