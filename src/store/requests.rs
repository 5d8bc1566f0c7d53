//! Operator requests and the daemon instance lock.
//!
//! `restorectl run`, `cancel` and `resolve` do not talk to the daemon: they insert a request row
//! that the daemon consumes (within 2 s), recording what it did or why it refused. The CLI can
//! follow a request to its result (`run --wait` finds the queued run in `result_run_id`).
//!
//! The instance lock makes the daemon single-instance per database: a daemon inserts its row in
//! `daemon_instances` and heartbeats it; another daemon finding a live row (heartbeat younger than
//! the staleness bound) refuses to start and names the holder; a stale row (crashed holder) is
//! taken over.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use tracing::instrument;

use sqlx::AnyConnection;

use super::events::{self, EventKind, NewEvent};
use super::runs::{NewRun, Run, insert_run};
use super::{
    Decision, Millis, OptMillis, RequestKind, Result, RunId, SqlxResultExt, Store, StoreError,
    duration_millis, to_millis,
};

/// A row of `operator_requests`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct OperatorRequest {
    pub id: i64,
    pub kind: RequestKind,
    pub job_name: Option<String>,
    pub run_id: Option<RunId>,
    /// The decision of a `resolve` request; `None` on a `resolve` request means "continue
    /// after a device-code sign-in" (`resolve --continue`; no new request kind, so no
    /// migration of the `kind` check).
    pub decision: Option<Decision>,
    /// Who asked (user name), when known.
    pub requested_by: Option<String>,
    #[sqlx(try_from = "Millis")]
    pub created_at: DateTime<Utc>,
    #[sqlx(try_from = "OptMillis")]
    pub consumed_at: Option<DateTime<Utc>>,
    /// What the daemon did, or why it refused.
    pub result: Option<String>,
    /// The run a `run` request queued.
    pub result_run_id: Option<RunId>,
}

/// A request to record; each kind carries exactly what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewRequest<'a> {
    /// Queue a manual run of a job.
    Run { job: &'a str },
    /// Cancel a run.
    Cancel { run: RunId },
    /// Decide about the `in_doubt` steps of a run.
    Resolve { run: RunId, decision: Decision },
    /// Continue a run that waits for a device-code sign-in (a `resolve` request without a
    /// decision).
    Continue { run: RunId },
}

/// A row of `daemon_instances`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct DaemonInstance {
    pub id: String,
    pub pid: i64,
    pub host: String,
    #[sqlx(try_from = "Millis")]
    pub started_at: DateTime<Utc>,
    #[sqlx(try_from = "Millis")]
    pub heartbeat_at: DateTime<Utc>,
    #[sqlx(try_from = "OptMillis")]
    pub stopped_at: Option<DateTime<Utc>>,
    /// The replica name (`replicaName`, default `HOST-PID`; `None` in rows of daemons older
    /// than migration 0007).
    pub name: Option<String>,
}

impl DaemonInstance {
    /// The name operators see: the replica name, else `HOST-PID`.
    pub fn replica_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{}-{}", self.host, self.pid))
    }
}

/// Who is asking for the instance lock.
#[derive(Debug, Clone)]
pub struct InstanceInfo<'a> {
    /// Unique per process start (e.g. a UUID); also used as the run lease owner.
    pub id: &'a str,
    pub pid: u32,
    pub host: &'a str,
    /// The replica name shown by `restorectl status`, `runs` and `show`.
    pub name: &'a str,
}

/// Operator requests not consumed yet (the request consumer polls it): the index
/// `operator_requests_pending`.
pub(super) const PENDING_REQUESTS: &str =
    "SELECT * FROM operator_requests WHERE consumed_at IS NULL ORDER BY id";
/// The instance lock's heartbeat (every 10 s).
pub(super) const HEARTBEAT: &str =
    "UPDATE daemon_instances SET heartbeat_at = $2 WHERE id = $1 AND stopped_at IS NULL";

impl Store {
    /// Records an operator request. Appends `request_recorded`.
    #[instrument(level = "trace", skip_all, err(level = "debug"))]
    pub async fn insert_request(
        &self,
        request: &NewRequest<'_>,
        requested_by: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<OperatorRequest> {
        const OP: &str = "insert_request";
        let (kind, job, run, decision) = match *request {
            NewRequest::Run { job } => (RequestKind::Run, Some(job), None, None),
            NewRequest::Cancel { run } => (RequestKind::Cancel, None, Some(run), None),
            NewRequest::Resolve { run, decision } => {
                (RequestKind::Resolve, None, Some(run), Some(decision))
            }
            NewRequest::Continue { run } => (RequestKind::Resolve, None, Some(run), None),
        };
        let mut tx = self.begin_write(OP).await?;
        let row = sqlx::query_as::<_, OperatorRequest>(
            "INSERT INTO operator_requests (kind, job_name, run_id, decision, requested_by,
                                            created_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             RETURNING *",
        )
        .bind(kind)
        .bind(job)
        .bind(run)
        .bind(decision)
        .bind(requested_by)
        .bind(to_millis(now))
        .fetch_one(&mut *tx)
        .await
        .op(OP)?;
        let subject = match (job, run, decision) {
            (Some(job), _, _) => format!("job {job}"),
            (_, Some(run), Some(d)) => format!("run {run} ({d})"),
            (_, Some(run), None) if kind == RequestKind::Resolve => format!("run {run} (continue)"),
            (_, Some(run), None) => format!("run {run}"),
            _ => String::new(),
        };
        let mut event = NewEvent::new(
            EventKind::RequestRecorded,
            format!("operator request {} {kind} {subject}", row.id),
        )
        .data(json!({
            "request": row.id, "kind": kind, "decision": decision, "requested_by": requested_by,
        }));
        event.job_name = job.map(str::to_string);
        event.run_id = run;
        events::insert(&mut tx, &event, now).await?;
        tx.commit().await.op(OP)?;
        Ok(row)
    }

    /// Requests not consumed yet, oldest first.
    #[instrument(level = "trace", skip_all, err(level = "debug"))]
    pub async fn list_pending_requests(&self) -> Result<Vec<OperatorRequest>> {
        sqlx::query_as::<_, OperatorRequest>(PENDING_REQUESTS)
            .fetch_all(self.reader())
            .await
            .op("list_pending_requests")
    }

    /// One request (the CLI polls it to learn the result).
    #[instrument(level = "trace", skip_all, err(level = "debug"))]
    pub async fn get_request(&self, id: i64) -> Result<OperatorRequest> {
        sqlx::query_as::<_, OperatorRequest>("SELECT * FROM operator_requests WHERE id = $1")
            .bind(id)
            .fetch_one(self.reader())
            .await
            .found("get_request", "operator request", id)
    }

    /// Marks a request consumed with what the daemon did (and the run a `run` request queued).
    /// Fails with [`StoreError::Conflict`] when it was already consumed, so two consumers can
    /// never both act on one request. Appends `request_consumed`.
    #[instrument(level = "trace", skip_all, err(level = "debug"))]
    pub async fn consume_request(
        &self,
        id: i64,
        result: &str,
        result_run_id: Option<RunId>,
        now: DateTime<Utc>,
    ) -> Result<OperatorRequest> {
        const OP: &str = "consume_request";
        let mut tx = self.begin_write(OP).await?;
        let row = consume_request_in(&mut tx, id, result, result_run_id, now).await?;
        tx.commit().await.op(OP)?;
        Ok(row)
    }

    /// Queues the manual run a `run` request asked for and consumes the request, in ONE write
    /// transaction: a crash, or a second consumer (a replica that took the lead meanwhile),
    /// never turns one request into two runs. [`StoreError::Conflict`] (and no run) when the
    /// request was already consumed.
    #[instrument(level = "trace", skip_all, fields(request = id), err(level = "debug"))]
    pub async fn enqueue_requested_run(
        &self,
        id: i64,
        run: &NewRun<'_>,
        now: DateTime<Utc>,
    ) -> Result<(OperatorRequest, Option<Run>)> {
        const OP: &str = "enqueue_requested_run";
        let mut tx = self.begin_write(OP).await?;
        let queued = insert_run(&mut tx, run, now).await?;
        let result = match &queued {
            Some(r) => format!("queued manual run {}", r.id),
            // Manual runs have no unique key; a `None` cannot happen, but say so if it does.
            None => "refused: the run could not be queued".to_string(),
        };
        let row =
            consume_request_in(&mut tx, id, &result, queued.as_ref().map(|r| r.id), now).await?;
        tx.commit().await.op(OP)?;
        Ok((row, queued))
    }

    /// Takes the single-instance lock for `me`. Fails with [`StoreError::InstanceLocked`]
    /// naming the holder when another instance heartbeated within `stale_after`; instances
    /// silent for longer are marked stopped (taken over). Appends `instance_started` (and
    /// `instance_taken_over` per stale holder).
    #[instrument(level = "trace", skip_all, fields(instance = me.id), err(level = "debug"))]
    pub async fn acquire_instance_lock(
        &self,
        me: &InstanceInfo<'_>,
        stale_after: Duration,
        now: DateTime<Utc>,
    ) -> Result<DaemonInstance> {
        const OP: &str = "acquire_instance_lock";
        let now_ms = to_millis(now);
        let mut tx = self.begin_write(OP).await?;
        let holders = sqlx::query_as::<_, DaemonInstance>(
            "SELECT * FROM daemon_instances WHERE stopped_at IS NULL AND id <> $1
             ORDER BY heartbeat_at DESC",
        )
        .bind(me.id)
        .fetch_all(&mut *tx)
        .await
        .op(OP)?;
        let fresh_after = now_ms - duration_millis(stale_after);
        if let Some(live) = holders
            .iter()
            .find(|h| to_millis(h.heartbeat_at) > fresh_after)
        {
            return Err(StoreError::InstanceLocked {
                holder: Box::new(live.clone()),
            });
        }
        for stale in &holders {
            sqlx::query("UPDATE daemon_instances SET stopped_at = $2 WHERE id = $1")
                .bind(&stale.id)
                .bind(now_ms)
                .execute(&mut *tx)
                .await
                .op(OP)?;
            let event = NewEvent::new(
                EventKind::InstanceTakenOver,
                format!(
                    "instance {} (pid {} on {}) silent since {}: lock taken over by {}",
                    stale.id,
                    stale.pid,
                    stale.host,
                    stale.heartbeat_at.to_rfc3339(),
                    me.id
                ),
            )
            .data(json!({ "stale": stale.id, "by": me.id }));
            events::insert(&mut tx, &event, now).await?;
        }
        let row = upsert_instance_in(&mut tx, me, now_ms).await.op(OP)?;
        let event = NewEvent::new(
            EventKind::InstanceStarted,
            format!(
                "daemon instance {} started (pid {} on {})",
                me.id, me.pid, me.host
            ),
        )
        .data(json!({ "instance": me.id, "pid": me.pid, "host": me.host }));
        events::insert(&mut tx, &event, now).await?;
        tx.commit().await.op(OP)?;
        Ok(row)
    }

    /// Refreshes the holder's heartbeat. Fails with [`StoreError::InstanceLost`] when the row
    /// was taken over or released (the daemon must stop claiming work).
    #[instrument(level = "trace", skip_all, fields(instance = id), err(level = "debug"))]
    pub async fn heartbeat_instance(&self, id: &str, now: DateTime<Utc>) -> Result<()> {
        self.heartbeat("heartbeat_instance", HEARTBEAT, id, now)
            .await
    }

    /// Runs a heartbeat `UPDATE` (`$1` the instance id, `$2` now) of `daemon_instances`;
    /// [`StoreError::InstanceLost`] when it touched no row.
    pub(super) async fn heartbeat(
        &self,
        op: &'static str,
        sql: &'static str,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.begin_write(op).await?;
        let done = sqlx::query(sql)
            .bind(id)
            .bind(to_millis(now))
            .execute(&mut *tx)
            .await
            .op(op)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::InstanceLost { id: id.to_string() });
        }
        tx.commit().await.op(op)?;
        Ok(())
    }

    /// Releases the lock on shutdown. Returns false when `id` did not hold it.
    /// Appends `instance_stopped`.
    #[instrument(level = "trace", skip_all, fields(instance = id), err(level = "debug"))]
    pub async fn release_instance_lock(&self, id: &str, now: DateTime<Utc>) -> Result<bool> {
        const OP: &str = "release_instance_lock";
        let mut tx = self.begin_write(OP).await?;
        let done = sqlx::query(
            "UPDATE daemon_instances SET stopped_at = $2 WHERE id = $1 AND stopped_at IS NULL",
        )
        .bind(id)
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await
        .op(OP)?;
        let released = done.rows_affected() > 0;
        if released {
            let event = NewEvent::new(
                EventKind::InstanceStopped,
                format!("daemon instance {id} stopped"),
            )
            .data(json!({ "instance": id }));
            events::insert(&mut tx, &event, now).await?;
        }
        tx.commit().await.op(OP)?;
        Ok(released)
    }

    /// Instances that have not stopped (normally at most one), most recent heartbeat first.
    #[instrument(level = "trace", skip_all, err(level = "debug"))]
    pub async fn list_live_instances(&self) -> Result<Vec<DaemonInstance>> {
        sqlx::query_as::<_, DaemonInstance>(
            "SELECT * FROM daemon_instances WHERE stopped_at IS NULL ORDER BY heartbeat_at DESC",
        )
        .fetch_all(self.reader())
        .await
        .op("list_live_instances")
    }
}

/// Inserts (or revives) `me`'s row of `daemon_instances`, heartbeat at `now_ms`.
pub(super) async fn upsert_instance_in(
    tx: &mut AnyConnection,
    me: &InstanceInfo<'_>,
    now_ms: i64,
) -> std::result::Result<DaemonInstance, sqlx::Error> {
    sqlx::query_as::<_, DaemonInstance>(
        "INSERT INTO daemon_instances (id, pid, host, started_at, heartbeat_at, name)
         VALUES ($1, $2, $3, $4, $4, $5)
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at,
             stopped_at = NULL
         RETURNING *",
    )
    .bind(me.id)
    .bind(i64::from(me.pid))
    .bind(me.host)
    .bind(now_ms)
    .bind(me.name)
    .fetch_one(&mut *tx)
    .await
}

/// Marks request `id` consumed with `result` (see [`Store::consume_request`]).
async fn consume_request_in(
    tx: &mut AnyConnection,
    id: i64,
    result: &str,
    result_run_id: Option<RunId>,
    now: DateTime<Utc>,
) -> Result<OperatorRequest> {
    const OP: &str = "consume_request";
    let row = sqlx::query_as::<_, OperatorRequest>(
        "UPDATE operator_requests SET consumed_at = $2, result = $3, result_run_id = $4
         WHERE id = $1 AND consumed_at IS NULL
         RETURNING *",
    )
    .bind(id)
    .bind(to_millis(now))
    .bind(result)
    .bind(result_run_id)
    .fetch_optional(&mut *tx)
    .await
    .op(OP)?;
    let Some(row) = row else {
        sqlx::query_scalar::<_, i64>("SELECT id FROM operator_requests WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .found(OP, "operator request", id)?;
        return Err(StoreError::Conflict {
            what: "consumption of operator request",
            id: id.to_string(),
        });
    };
    let mut event = NewEvent::new(
        EventKind::RequestConsumed,
        format!("operator request {id} ({}): {result}", row.kind),
    )
    .data(json!({ "request": id, "kind": row.kind, "result": result }));
    event.job_name = row.job_name.clone();
    event.run_id = result_run_id.or(row.run_id);
    events::insert(tx, &event, now).await?;
    Ok(row)
}
