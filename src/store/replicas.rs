//! Several daemons on one database (SPEC §10, docs/ha.md): the replicas and the leadership lease.
//!
//! On PostgreSQL any number of daemons share the work. Each registers a row in
//! `daemon_instances` ([`Store::register_replica`]) and heartbeats it
//! ([`Store::heartbeat_replica`]); nobody is refused, and a replica whose heartbeat stalled (a
//! network cut from the database) simply comes back to life with its next heartbeat: what it
//! may still do is bounded by its run leases and its leadership lease, not by the row.
//!
//! One replica at a time leads ([`Store::try_lead`]): the one row of `leadership` names the
//! holder and when its lease ends; the holder renews it, anyone may take it once it has
//! expired, and every change of holder counts a `term` and appends `leader_elected`. Why a
//! lease row and not a PostgreSQL session advisory lock: the lease is the same on SQLite and
//! PostgreSQL (one code path, tested on both), it is visible to `restorectl status` from any
//! host, it survives a connection pool recycling its connections (a session lock dies with the
//! one connection that took it, which the pool may close at any time), and the holder can tell
//! when it must stop acting as leader without asking the database (its own lease ends).
//!
//! On SQLite the single-instance lock stays ([`Store::acquire_instance_lock`]) and the lone
//! daemon forces the lead at start (`force`), so a leader killed with -9 is not waited for.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use tracing::instrument;

use super::events::{self, EventKind, NewEvent};
use super::requests::upsert_instance_in;
use super::{
    DaemonInstance, InstanceInfo, Millis, Result, SqlxResultExt, Store, duration_millis, to_millis,
};

/// The row of `leadership`: who leads and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Leadership {
    /// The leader's instance id (`daemon_instances.id`).
    pub holder: String,
    /// When this holder took the lead.
    #[sqlx(try_from = "Millis")]
    pub since: DateTime<Utc>,
    #[sqlx(try_from = "Millis")]
    pub renewed_at: DateTime<Utc>,
    /// The lease's end: after it anyone may take the lead.
    #[sqlx(try_from = "Millis")]
    pub expires_at: DateTime<Utc>,
    /// Counts the changes of holder.
    pub term: i64,
}

impl Leadership {
    /// Whether the lease is still running at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.expires_at > now
    }
}

impl Store {
    /// Registers replica `me` on a database shared by several daemons (PostgreSQL). Live
    /// replicas are not refused. The instances in `dead` (the caller proved them gone: same
    /// host, process gone) are marked stopped (`instance_taken_over`), their run leases end now
    /// (their runs are claimable at once) and a leadership they held is given up. Appends
    /// `instance_started`.
    #[instrument(level = "trace", skip_all, fields(instance = me.id), err(level = "debug"))]
    pub async fn register_replica(
        &self,
        me: &InstanceInfo<'_>,
        dead: &[String],
        now: DateTime<Utc>,
    ) -> Result<DaemonInstance> {
        const OP: &str = "register_replica";
        let now_ms = to_millis(now);
        let mut tx = self.begin_write(OP).await?;
        for id in dead.iter().filter(|id| id.as_str() != me.id) {
            let stopped = sqlx::query(
                "UPDATE daemon_instances SET stopped_at = $2 WHERE id = $1 AND stopped_at IS NULL",
            )
            .bind(id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await
            .op(OP)?;
            let leases = sqlx::query(
                "UPDATE runs SET lease_expires_at = $2, updated_at = $2
                 WHERE state = 'running' AND lease_owner = $1
                     AND (lease_expires_at IS NULL OR lease_expires_at > $2)",
            )
            .bind(id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await
            .op(OP)?;
            sqlx::query(
                "UPDATE leadership SET expires_at = $2 WHERE holder = $1 AND expires_at > $2",
            )
            .bind(id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await
            .op(OP)?;
            if stopped.rows_affected() > 0 {
                let event = NewEvent::new(
                    EventKind::InstanceTakenOver,
                    format!(
                        "instance {id} is gone (its process no longer exists): {} run lease(s) \
                         ended by {}",
                        leases.rows_affected(),
                        me.id
                    ),
                )
                .data(json!({ "stale": id, "by": me.id, "leases": leases.rows_affected() }));
                events::insert(&mut tx, &event, now).await?;
            }
        }
        let row = upsert_instance_in(&mut tx, me, now_ms).await.op(OP)?;
        let event = NewEvent::new(
            EventKind::InstanceStarted,
            format!(
                "replica {} started (instance {}, pid {} on {})",
                me.name, me.id, me.pid, me.host
            ),
        )
        .data(json!({ "instance": me.id, "pid": me.pid, "host": me.host, "replica": me.name }));
        events::insert(&mut tx, &event, now).await?;
        tx.commit().await.op(OP)?;
        Ok(row)
    }

    /// Refreshes a replica's heartbeat; a row another replica marked stopped comes back to life
    /// (the replica was only cut off). Fails with [`StoreError::InstanceLost`] when the row is
    /// gone.
    #[instrument(level = "trace", skip_all, fields(instance = id), err(level = "debug"))]
    pub async fn heartbeat_replica(&self, id: &str, now: DateTime<Utc>) -> Result<()> {
        self.heartbeat(
            "heartbeat_replica",
            "UPDATE daemon_instances SET heartbeat_at = $2, stopped_at = NULL WHERE id = $1",
            id,
            now,
        )
        .await
    }

    /// Takes or renews the lead for instance `id` with a lease of `lease`: granted when nobody
    /// leads, when `id` already leads, when the leader's lease has expired, or with `force`
    /// (the SQLite daemon, alone by its instance lock). Returns the row as it is afterwards:
    /// `id` leads when it is the holder. A change of holder appends `leader_elected`.
    #[instrument(level = "trace", skip_all, fields(instance = id), err(level = "debug"))]
    pub async fn try_lead(
        &self,
        id: &str,
        lease: Duration,
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<Leadership> {
        const OP: &str = "try_lead";
        let now_ms = to_millis(now);
        let until = now_ms + duration_millis(lease);
        let mut tx = self.begin_write(OP).await?;
        let current = sqlx::query_as::<_, Leadership>(
            "SELECT holder, since, renewed_at, expires_at, term FROM leadership WHERE id = 1",
        )
        .fetch_optional(&mut *tx)
        .await
        .op(OP)?;
        let row = match current {
            Some(l) if l.holder == id => sqlx::query_as::<_, Leadership>(
                "UPDATE leadership SET renewed_at = $1, expires_at = $2 WHERE id = 1
                     RETURNING holder, since, renewed_at, expires_at, term",
            )
            .bind(now_ms)
            .bind(until)
            .fetch_one(&mut *tx)
            .await
            .op(OP)?,
            Some(l) if l.is_live(now) && !force => l,
            previous => {
                let term = previous.as_ref().map_or(1, |l| l.term + 1);
                let row = sqlx::query_as::<_, Leadership>(
                    "INSERT INTO leadership (id, holder, since, renewed_at, expires_at, term)
                     VALUES (1, $1, $2, $2, $3, $4)
                     ON CONFLICT (id) DO UPDATE SET holder = excluded.holder,
                         since = excluded.since, renewed_at = excluded.renewed_at,
                         expires_at = excluded.expires_at, term = excluded.term
                     RETURNING holder, since, renewed_at, expires_at, term",
                )
                .bind(id)
                .bind(now_ms)
                .bind(until)
                .bind(term)
                .fetch_one(&mut *tx)
                .await
                .op(OP)?;
                let name: Option<(Option<String>,)> =
                    sqlx::query_as("SELECT name FROM daemon_instances WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await
                        .op(OP)?;
                let replica = name.and_then(|(n,)| n).unwrap_or_else(|| id.to_string());
                let previous = previous.map(|l| l.holder);
                let event = NewEvent::new(
                    EventKind::LeaderElected,
                    format!("replica {replica} leads (term {term})"),
                )
                .data(json!({
                    "replica": replica,
                    "instance": id,
                    "previous": previous,
                    "term": term,
                }));
                events::insert(&mut tx, &event, now).await?;
                row
            }
        };
        tx.commit().await.op(OP)?;
        Ok(row)
    }

    /// Gives up the lead at a graceful stop, so another replica takes it at its next attempt
    /// instead of after the lease. Returns false when `id` did not lead.
    #[instrument(level = "trace", skip_all, fields(instance = id), err(level = "debug"))]
    pub async fn resign_leadership(&self, id: &str, now: DateTime<Utc>) -> Result<bool> {
        const OP: &str = "resign_leadership";
        let mut tx = self.begin_write(OP).await?;
        let done = sqlx::query(
            "UPDATE leadership SET expires_at = $2 WHERE holder = $1 AND expires_at > $2",
        )
        .bind(id)
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await
        .op(OP)?;
        tx.commit().await.op(OP)?;
        Ok(done.rows_affected() > 0)
    }

    /// The leadership row, if any replica ever led.
    #[instrument(level = "trace", skip_all, err(level = "debug"))]
    pub async fn leadership(&self) -> Result<Option<Leadership>> {
        sqlx::query_as::<_, Leadership>(
            "SELECT holder, since, renewed_at, expires_at, term FROM leadership WHERE id = 1",
        )
        .fetch_optional(self.reader())
        .await
        .op("leadership")
    }

    /// Every instance row, stopped ones included, newest heartbeat first (for naming the
    /// replica behind a lease owner).
    #[instrument(level = "trace", skip_all, err(level = "debug"))]
    pub async fn list_instances(&self) -> Result<Vec<DaemonInstance>> {
        sqlx::query_as::<_, DaemonInstance>(
            "SELECT * FROM daemon_instances ORDER BY heartbeat_at DESC",
        )
        .fetch_all(self.reader())
        .await
        .op("list_instances")
    }
}
