//! The scheduler's next-fire bookkeeping on `jobs` rows (SPEC §4.3): the stored next fire
//! instant is the source of truth, with the schedule (cron expression and time zone) it was
//! computed from and the last fire. Written here and by [`Store::record_fires`] (with the runs
//! of a tick, in one transaction), read back as [`ScheduleState`].

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AnyConnection;
use tracing::instrument;

use super::{JobState, OptMillis, Result, SqlxResultExt, Store, StoreError, to_millis};

/// The next-fire bookkeeping of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextFire<'a> {
    pub schedule_key: Option<&'a str>,
    pub next_fire_at: Option<DateTime<Utc>>,
}

/// The scheduling bookkeeping of one job (a narrow row of `jobs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ScheduleState {
    pub name: String,
    pub state: JobState,
    pub active_version_id: Option<i64>,
    /// The cron expression and time zone `next_fire_at` was computed from.
    pub schedule_key: Option<String>,
    #[sqlx(try_from = "OptMillis")]
    pub next_fire_at: Option<DateTime<Utc>>,
}

/// Every job's scheduling bookkeeping (the scheduler's tick): a row per job.
pub(super) const SCHEDULE_STATES: &str =
    "SELECT name, state, active_version_id, schedule_key, next_fire_at FROM jobs ORDER BY name";

impl Store {
    /// Every job's scheduling bookkeeping, by name (one light query for the scheduler's tick).
    #[instrument(level = "trace", skip_all, err(level = "debug"))]
    pub async fn list_schedule_states(&self) -> Result<Vec<ScheduleState>> {
        sqlx::query_as::<_, ScheduleState>(SCHEDULE_STATES)
            .fetch_all(self.reader())
            .await
            .op("list_schedule_states")
    }

    /// Sets (or clears, with `None`) a job's next fire and the schedule it was computed from.
    #[instrument(level = "trace", skip_all, fields(job = name), err(level = "debug"))]
    pub async fn set_next_fire(&self, name: &str, next: NextFire<'_>) -> Result<()> {
        const OP: &str = "set_next_fire";
        let mut tx = self.begin_write(OP).await?;
        update_next_fire_in(&mut tx, name, next, None).await?;
        tx.commit().await.op(OP)?;
        Ok(())
    }

    /// [`Store::set_next_fire`] for many jobs in one transaction (the scheduler's first pass
    /// over thousands of new schedules would otherwise commit once per job).
    #[instrument(level = "trace", skip_all, fields(jobs = updates.len()), err(level = "debug"))]
    pub async fn set_next_fires(&self, updates: &[(&str, NextFire<'_>)]) -> Result<()> {
        const OP: &str = "set_next_fires";
        if updates.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write(OP).await?;
        for (name, next) in updates {
            update_next_fire_in(&mut tx, name, *next, None).await?;
        }
        tx.commit().await.op(OP)?;
        Ok(())
    }
}

/// Writes a job's next-fire bookkeeping inside the caller's transaction; `last_fire_at` is kept
/// when `None`.
pub(super) async fn update_next_fire_in(
    conn: &mut AnyConnection,
    name: &str,
    next: NextFire<'_>,
    last_fire_at: Option<DateTime<Utc>>,
) -> Result<()> {
    let done = sqlx::query(
        "UPDATE jobs SET schedule_key = $2, next_fire_at = $3,
             last_fire_at = COALESCE($4, last_fire_at)
         WHERE name = $1",
    )
    .bind(name)
    .bind(next.schedule_key)
    .bind(next.next_fire_at.map(to_millis))
    .bind(last_fire_at.map(to_millis))
    .execute(conn)
    .await
    .op("update_next_fire")?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound {
            what: "job",
            id: name.to_string(),
        });
    }
    Ok(())
}
