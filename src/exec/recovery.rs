//! What the engine does after a restart and on an operator's decision.
//!
//! [`Engine::recover`] (daemon start, `run --foreground`):
//!
//! 1. alone on the database (the instance lock: SQLite, `run --foreground`), expires the leases
//!    a dead predecessor held (`expire_foreign_leases`), so its `running` runs are claimable at
//!    once; among several replicas ([`super::EngineOptions::shared`]) it expires nothing: the
//!    leases of replicas proven dead were ended when this one registered, the others run out
//!    by themselves (a live replica's run is never taken from it);
//! 2. stops every restore session the store lists as open that no unfinished run needs: a
//!    session stays open when its run is `running` (its owner uses it, or the run adopts it when
//!    it is executed again, to resume a download or follow a restore, see [`super::engine`]),
//!    or when its run waits for a device-code sign-in in it (the code belongs to the session,
//!    [`super::sign_in`]); among several replicas also when its run is `queued` or
//!    `waiting_retry` (another replica may be about to adopt it; the run's next execution stops
//!    it if no step needs it). Each session's run is read after the sessions were listed, so a
//!    run another replica claimed meanwhile is seen as `running`;
//! 3. returns the runs to execute again (running, lease expired or released); executing them
//!    reconciles `submitting` steps, follows `submitted` ones, resumes downloads with `Range`
//!    and continues.
//!
//! [`Engine::apply_continue`] (`resolve --continue`) queues a run that waited for a device-code
//! sign-in ([`super::sign_in`]).
//!
//! [`Engine::apply_resolution`] records an operator's decision on every `in_doubt` step of a
//! `needs_attention` run and queues the run; its next execution acts on the decisions (`resend`
//! → one new POST, `mark_done` → `done`, `mark_failed` → `failed`) and recomputes its state.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use serde_json::json;

use super::engine::Engine;
use super::error::RunError;
use super::session::stop_session;
use super::sign_in::History;
use crate::store::{
    Decision, EventKind, NewEvent, RunFilter, RunId, RunState, StepState, StoreError,
};

/// What [`Engine::recover`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Leases of a dead owner expired.
    pub expired_leases: u64,
    /// Runs left `running` by a dead process, to execute again (oldest first).
    pub runs: Vec<RunId>,
    /// Sessions stopped because no unfinished run needs them.
    pub stopped_sessions: Vec<String>,
    /// Sessions left open for the runs that will resume.
    pub kept_sessions: Vec<String>,
    /// Sessions opened by explore requests whose answer was lost, found and stopped.
    pub orphans_stopped: usize,
}

/// What [`Engine::apply_resolution`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub run: RunId,
    /// The `in_doubt` steps the decision was recorded on.
    pub steps: Vec<i64>,
}

/// What [`Engine::apply_continue`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continued {
    pub run: RunId,
}

impl Engine {
    /// `restorectl resolve RUN --continue`: the operator signed in with the run's device code.
    /// Records `device_code_continued` and queues the run.
    ///
    /// # Errors
    ///
    /// [`RunError::NotClaimable`] when the run does not wait for a sign-in;
    /// [`RunError::Store`] when the database fails.
    pub async fn apply_continue(&self, run: RunId) -> Result<Continued, RunError> {
        let store = self.store();
        let row = store.get_run(run).await.map_err(RunError::store(run))?;
        let events = store
            .list_run_events(run)
            .await
            .map_err(RunError::store(run))?;
        let history = History::from_events(&events);
        if row.state != RunState::NeedsAttention || !history.waiting() {
            return Err(RunError::NotClaimable {
                run,
                why: format!(
                    "it is {} and does not wait for a device-code sign-in",
                    row.state
                ),
            });
        }
        let now = self.now();
        let event = NewEvent::new(
            EventKind::DeviceCodeContinued,
            "the operator signed in with the device code; continuing",
        )
        .run(run)
        .data(json!({}));
        store
            .append_event(&event, now)
            .await
            .map_err(RunError::store(run))?;
        match store
            .set_run_state(
                run,
                RunState::Queued,
                Some("operator signed in with the device code"),
                now,
            )
            .await
        {
            Ok(_) => {}
            Err(StoreError::InvalidTransition { .. }) => {
                return Err(RunError::NotClaimable {
                    run,
                    why: "it changed state meanwhile".into(),
                });
            }
            Err(e) => return Err(RunError::store(run)(e)),
        }
        tracing::info!(run = %run, "operator signed in with the device code; run queued");
        Ok(Continued { run })
    }

    /// Recovery at start (see the module doc). Without [`super::EngineOptions::shared`] sound
    /// only while this process holds the daemon instance lock (no other live owner can hold a
    /// lease).
    ///
    /// # Errors
    ///
    /// [`RunError`] when the state database fails.
    pub async fn recover(&self, now: DateTime<Utc>) -> Result<RecoveryReport, RunError> {
        let store = &self.inner.store;
        let shared = self.inner.options.shared;
        let mut report = RecoveryReport {
            expired_leases: if shared {
                0
            } else {
                store.expire_foreign_leases(self.owner(), now).await?
            },
            ..RecoveryReport::default()
        };
        let secrets = crate::config::SecretContext::from_config(&self.config());
        let running = store
            .list_runs(&RunFilter {
                state: Some(RunState::Running),
                ..RunFilter::default()
            })
            .await?;
        let mut running: Vec<_> = running
            .into_iter()
            .filter(|r| r.lease_owner.as_deref() != Some(self.owner()))
            // A live lease of another replica: its run, not ours to resume.
            .filter(|r| r.lease_expires_at.is_none_or(|e| e <= now) || r.lease_owner.is_none())
            .collect();
        running.sort_by_key(|r| (r.scheduled_for, r.id));
        report.runs = running.iter().map(|r| r.id).collect();
        for session in store.list_open_sessions(None).await? {
            let needed = match session.run_id {
                Some(r) if report.runs.contains(&r) => true,
                Some(r) => {
                    let row = store.get_run(r).await.map_err(RunError::store(r))?;
                    match row.state {
                        RunState::Running => true,
                        RunState::Queued | RunState::WaitingRetry => shared,
                        _ => self.waits_for_sign_in_in(r, &session.id).await?,
                    }
                }
                None => false,
            };
            if needed {
                report.kept_sessions.push(session.id.clone());
                continue;
            }
            let Some(client) = self.client(&session.server, &secrets) else {
                tracing::warn!(session = %session.id, server = %session.server, "open session on a server that is no longer configured");
                continue;
            };
            if let Ok(id) = Uuid::parse_str(&session.id) {
                stop_session(store, &client, id, self.inner.options.clock.as_ref()).await;
                report.stopped_sessions.push(session.id.clone());
            }
        }
        // Explore answers a crash lost: intents old enough are settled now, younger ones at a
        // later sweep (the engine sweeps whenever it is idle).
        report.orphans_stopped = self.sweep_orphan_sessions().await;
        tracing::info!(
            runs = report.runs.len(),
            orphans = report.orphans_stopped,
            stopped = report.stopped_sessions.len(),
            kept = report.kept_sessions.len(),
            "recovery done"
        );
        Ok(report)
    }

    /// Whether run `run` waits for a device-code sign-in in session `session`.
    async fn waits_for_sign_in_in(&self, run: RunId, session: &str) -> Result<bool, RunError> {
        let store = &self.inner.store;
        let row = store.get_run(run).await.map_err(RunError::store(run))?;
        if row.state != RunState::NeedsAttention {
            return Ok(false);
        }
        let events = store
            .list_run_events(run)
            .await
            .map_err(RunError::store(run))?;
        Ok(super::sign_in::waits_for_sign_in(row.state, &events)
            && super::sign_in::code_session(&events)
                .is_some_and(|s| s.to_string().eq_ignore_ascii_case(session)))
    }

    /// Records `decision` on every `in_doubt` step of `run` (a `needs_attention` run) and queues
    /// the run so the next execution acts on it. For the daemon's `resolve` requests.
    ///
    /// # Errors
    ///
    /// [`RunError::NotClaimable`] when the run does not need attention or has no `in_doubt`
    /// step; [`RunError::Store`] when the database fails.
    pub async fn apply_resolution(
        &self,
        run: RunId,
        decision: Decision,
    ) -> Result<Resolution, RunError> {
        let store = &self.inner.store;
        let row = store.get_run(run).await.map_err(RunError::store(run))?;
        if row.state != RunState::NeedsAttention {
            return Err(RunError::NotClaimable {
                run,
                why: format!("it is {}, not needs_attention", row.state),
            });
        }
        let steps = store.list_steps(run).await.map_err(RunError::store(run))?;
        let mut decided = Vec::new();
        for s in steps.iter().filter(|s| s.state == StepState::InDoubt) {
            store
                .record_operator_decision(s.id, decision, self.now())
                .await
                .map_err(RunError::store(run))?;
            decided.push(s.id);
        }
        if decided.is_empty() {
            return Err(RunError::NotClaimable {
                run,
                why: "it has no in_doubt step".into(),
            });
        }
        store
            .set_run_state(
                run,
                RunState::Queued,
                Some(&format!("operator decided {decision}")),
                self.now(),
            )
            .await
            .map_err(RunError::store(run))?;
        tracing::info!(run = %run, decision = %decision, steps = decided.len(), "operator decision recorded; run queued");
        Ok(Resolution {
            run,
            steps: decided,
        })
    }
}
