//! VB365 restore sessions the daemon opened (SPEC §5): recorded as soon as the server answers
//! the explore request, so that no session leaks across a crash. After a restart the daemon
//! lists the open ones, keeps those marked `keep_for_resume` that a download still needs, and
//! stops the rest. Open sessions per server are counted against `maxConcurrentSessions`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use tracing::instrument;

use super::events::{self, EventKind, NewEvent};
use super::{
    Millis, OptMillis, Result, RunId, SessionState, SqlxResultExt, Store, StoreError, to_millis,
};
use sqlx::AnyConnection;

/// A row of `restore_sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct RestoreSession {
    /// The VB365 restore session id.
    pub id: String,
    /// The config's server name.
    pub server: String,
    pub organization_id: String,
    /// As sent to the server (RFC 3339), `None` for latest.
    pub point_in_time: Option<String>,
    pub run_id: Option<RunId>,
    pub state: SessionState,
    /// A download needs the session after a restart (the server-side export lives in it).
    #[sqlx(try_from = "super::Flag")]
    pub keep_for_resume: bool,
    #[sqlx(try_from = "Millis")]
    pub opened_at: DateTime<Utc>,
    #[sqlx(try_from = "OptMillis")]
    pub stopped_at: Option<DateTime<Utc>>,
    #[sqlx(try_from = "Millis")]
    pub updated_at: DateTime<Utc>,
}

/// A session that was just opened.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    pub id: &'a str,
    pub server: &'a str,
    pub organization_id: &'a str,
    pub point_in_time: Option<&'a str>,
    pub run_id: Option<RunId>,
}

/// A row of `session_intents`: an explore request whose session is not recorded (yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct SessionIntent {
    pub id: i64,
    /// The config's server name.
    pub server: String,
    pub organization_id: String,
    /// The organisation's name on the server (what a listed session names).
    pub organization_name: String,
    pub run_id: Option<RunId>,
    #[sqlx(try_from = "Millis")]
    pub requested_at: DateTime<Utc>,
}

/// An explore request about to be sent.
#[derive(Debug, Clone)]
pub struct NewSessionIntent<'a> {
    pub server: &'a str,
    pub organization_id: &'a str,
    pub organization_name: &'a str,
    pub run_id: Option<RunId>,
}

impl Store {
    /// Records that an explore request is about to be sent (before it is). Returns the intent's
    /// id, cleared with [`Store::clear_session_intent`] once the session is recorded.
    #[instrument(level = "trace", skip_all, err(level = "debug"))]
    pub async fn record_session_intent(
        &self,
        intent: &NewSessionIntent<'_>,
        now: DateTime<Utc>,
    ) -> Result<i64> {
        const OP: &str = "record_session_intent";
        let mut tx = self.begin_write(OP).await?;
        let id = sqlx::query_scalar::<_, i64>(
            "INSERT INTO session_intents
                 (server, organization_id, organization_name, run_id, requested_at)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(intent.server)
        .bind(intent.organization_id)
        .bind(intent.organization_name)
        .bind(intent.run_id)
        .bind(to_millis(now))
        .fetch_one(&mut *tx)
        .await
        .op(OP)?;
        tx.commit().await.op(OP)?;
        Ok(id)
    }

    /// Deletes an intent (its session is recorded, or the sweep dealt with it).
    #[instrument(level = "trace", skip_all, fields(intent = id), err(level = "debug"))]
    pub async fn clear_session_intent(&self, id: i64) -> Result<()> {
        const OP: &str = "clear_session_intent";
        let mut tx = self.begin_write(OP).await?;
        sqlx::query("DELETE FROM session_intents WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .op(OP)?;
        tx.commit().await.op(OP)?;
        Ok(())
    }

    /// The pending intents, of one server or of all, oldest first.
    #[instrument(level = "trace", skip_all, err(level = "debug"))]
    pub async fn list_session_intents(&self, server: Option<&str>) -> Result<Vec<SessionIntent>> {
        sqlx::query_as::<_, SessionIntent>(
            "SELECT * FROM session_intents WHERE CAST($1 AS TEXT) IS NULL OR server = $1
             ORDER BY requested_at, id",
        )
        .bind(server)
        .fetch_all(self.reader())
        .await
        .op("list_session_intents")
    }

    /// Records a session the server just opened (`open`). Recording the same id again is a
    /// no-op that returns the existing row. Appends `session_opened`.
    #[instrument(level = "trace", skip_all, fields(session = session.id), err(level = "debug"))]
    pub async fn record_session_opened(
        &self,
        session: &NewSession<'_>,
        now: DateTime<Utc>,
    ) -> Result<RestoreSession> {
        const OP: &str = "record_session_opened";
        let mut tx = self.begin_write(OP).await?;
        let inserted = sqlx::query_as::<_, RestoreSession>(
            "INSERT INTO restore_sessions
                 (id, server, organization_id, point_in_time, run_id, state, opened_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, 'open', $6, $6)
             ON CONFLICT (id) DO NOTHING
             RETURNING *",
        )
        .bind(session.id)
        .bind(session.server)
        .bind(session.organization_id)
        .bind(session.point_in_time)
        .bind(session.run_id)
        .bind(to_millis(now))
        .fetch_optional(&mut *tx)
        .await
        .op(OP)?;
        let row = match inserted {
            Some(row) => {
                let mut event = NewEvent::new(
                    EventKind::SessionOpened,
                    format!("restore session {} opened on {}", row.id, row.server),
                )
                .data(json!({
                    "session": row.id,
                    "server": row.server,
                    "organization_id": row.organization_id,
                    "point_in_time": row.point_in_time,
                }));
                event.run_id = row.run_id;
                events::insert(&mut tx, &event, now).await?;
                row
            }
            None => get_in(&mut tx, session.id).await?,
        };
        tx.commit().await.op(OP)?;
        Ok(row)
    }

    /// Marks whether a session must survive a restart for a download to resume in it.
    #[instrument(level = "trace", skip_all, fields(session = id), err(level = "debug"))]
    pub async fn set_session_keep_for_resume(
        &self,
        id: &str,
        keep: bool,
        now: DateTime<Utc>,
    ) -> Result<RestoreSession> {
        const OP: &str = "set_session_keep_for_resume";
        let mut tx = self.begin_write(OP).await?;
        let row = sqlx::query_as::<_, RestoreSession>(
            "UPDATE restore_sessions SET keep_for_resume = $2, updated_at = $3
             WHERE id = $1 RETURNING *",
        )
        .bind(id)
        .bind(i64::from(keep))
        .bind(to_millis(now))
        .fetch_one(&mut *tx)
        .await
        .found(OP, "restore session", id)?;
        tx.commit().await.op(OP)?;
        Ok(row)
    }

    /// A stop was requested (`stopping`); still counts as open until confirmed.
    pub async fn mark_session_stopping(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<RestoreSession> {
        self.session_state(id, SessionState::Stopping, None, now)
            .await
    }

    /// The server confirmed the stop (`stopped`).
    pub async fn mark_session_stopped(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<RestoreSession> {
        self.session_state(id, SessionState::Stopped, None, now)
            .await
    }

    /// The server no longer knows the session (`lost`), with what the daemon saw.
    pub async fn mark_session_lost(
        &self,
        id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<RestoreSession> {
        self.session_state(id, SessionState::Lost, Some(reason), now)
            .await
    }

    #[instrument(level = "trace", skip_all, fields(session = id, state = %state), err(level = "debug"))]
    async fn session_state(
        &self,
        id: &str,
        state: SessionState,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<RestoreSession> {
        const OP: &str = "set_session_state";
        let mut tx = self.begin_write(OP).await?;
        let before = get_in(&mut tx, id).await?;
        if before.state == state {
            tx.commit().await.op(OP)?;
            return Ok(before);
        }
        if !before.state.is_open() {
            return Err(StoreError::InvalidTransition {
                what: "restore session",
                id: id.to_string(),
                from: before.state.to_string(),
                to: state.to_string(),
            });
        }
        let now_ms = to_millis(now);
        let row = sqlx::query_as::<_, RestoreSession>(
            // A session that is no longer open has nothing left to keep for a resume.
            "UPDATE restore_sessions SET state = $2, stopped_at = $3, updated_at = $4,
                 keep_for_resume = CASE WHEN CAST($3 AS BIGINT) IS NULL THEN keep_for_resume ELSE 0 END
             WHERE id = $1 RETURNING *",
        )
        .bind(id)
        .bind(state)
        .bind((!state.is_open()).then_some(now_ms))
        .bind(now_ms)
        .fetch_one(&mut *tx)
        .await
        .op(OP)?;
        let kind = match state {
            SessionState::Stopping => EventKind::SessionStopping,
            SessionState::Stopped => EventKind::SessionStopped,
            SessionState::Lost => EventKind::SessionLost,
            SessionState::Open => EventKind::SessionOpened,
        };
        let message = match reason {
            Some(r) => format!("restore session {id} {state}: {r}"),
            None => format!("restore session {id} {state}"),
        };
        let mut event = NewEvent::new(kind, message).data(json!({
            "session": id,
            "server": row.server,
            "from": before.state,
            "reason": reason,
        }));
        event.run_id = row.run_id;
        events::insert(&mut tx, &event, now).await?;
        tx.commit().await.op(OP)?;
        Ok(row)
    }

    /// One session.
    #[instrument(level = "trace", skip_all, fields(session = id), err(level = "debug"))]
    pub async fn get_session(&self, id: &str) -> Result<RestoreSession> {
        sqlx::query_as::<_, RestoreSession>("SELECT * FROM restore_sessions WHERE id = $1")
            .bind(id)
            .fetch_one(self.reader())
            .await
            .found("get_session", "restore session", id)
    }

    /// Sessions not yet stopped (`open` or `stopping`), of one run or of all, oldest first.
    #[instrument(level = "trace", skip_all, err(level = "debug"))]
    pub async fn list_open_sessions(&self, run: Option<RunId>) -> Result<Vec<RestoreSession>> {
        sqlx::query_as::<_, RestoreSession>(
            "SELECT * FROM restore_sessions
             WHERE state IN ('open', 'stopping') AND (CAST($1 AS TEXT) IS NULL OR run_id = $1)
             ORDER BY opened_at, id",
        )
        .bind(run)
        .fetch_all(self.reader())
        .await
        .op("list_open_sessions")
    }

    /// Every session a run opened (for `show`), oldest first.
    #[instrument(level = "trace", skip_all, fields(run = %run), err(level = "debug"))]
    pub async fn list_run_sessions(&self, run: RunId) -> Result<Vec<RestoreSession>> {
        sqlx::query_as::<_, RestoreSession>(
            "SELECT * FROM restore_sessions WHERE run_id = $1 ORDER BY opened_at, id",
        )
        .bind(run)
        .fetch_all(self.reader())
        .await
        .op("list_run_sessions")
    }

    /// How many sessions are not yet stopped on `server`.
    #[instrument(level = "trace", skip_all, fields(server = server), err(level = "debug"))]
    pub async fn count_open_sessions(&self, server: &str) -> Result<u32> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM restore_sessions
             WHERE server = $1 AND state IN ('open', 'stopping')",
        )
        .bind(server)
        .fetch_one(self.reader())
        .await
        .op("count_open_sessions")?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }
}

pub(super) async fn get_in(conn: &mut AnyConnection, id: &str) -> Result<RestoreSession> {
    sqlx::query_as::<_, RestoreSession>("SELECT * FROM restore_sessions WHERE id = $1")
        .bind(id)
        .fetch_one(conn)
        .await
        .found("get_session", "restore session", id)
}
