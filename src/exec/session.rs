//! A run's restore session and the per-server limit on open sessions.
//!
//! Every run works in one explore session of its organisation at its point in time. The session
//! is opened lazily (a run whose remaining steps only need an operator's decision applied opens
//! none), recorded in the store as soon as the server answers, shared by the run's parallel
//! steps, re-opened when the server lost it (the old one recorded `lost`), and stopped at the
//! end. While it is open the run holds a permit of its server's [`Limiters`] semaphore, so no more
//! than `maxConcurrentSessions` sessions are open per server across all runs of the process.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::error::{StepFailure, StepResult};
use super::options::EngineOptions;
use crate::config::Config;
use crate::jobs::{ExploreSettings, OrganizationRef};
use crate::schedule::Clock;
use crate::store::{ErrorClass, NewSession, NewSessionIntent, RunId, SessionIntent, Store};
use crate::vb365::{self, Client, ExploreOptions, Organization, OrganizationExploreOptions};

/// One semaphore per configured server, `maxConcurrentSessions` permits each, and one explore
/// gate per server: explore requests of a server are sent one at a time, and the orphan sweep
/// ([`sweep_orphans`]) holds the gate, so it never mistakes a session whose explore is still
/// in flight for an orphan.
#[derive(Debug, Clone, Default)]
pub struct Limiters {
    by_server: BTreeMap<String, Arc<Semaphore>>,
    gates: BTreeMap<String, Arc<Mutex<()>>>,
}

impl Limiters {
    /// Limiters for every server of `config`.
    pub fn from_config(config: &Config) -> Self {
        Limiters {
            by_server: config
                .servers
                .values()
                .map(|s| {
                    let permits = usize::try_from(s.max_concurrent_sessions.max(1)).unwrap_or(1);
                    (s.name.clone(), Arc::new(Semaphore::new(permits)))
                })
                .collect(),
            gates: config
                .servers
                .values()
                .map(|s| (s.name.clone(), Arc::new(Mutex::new(()))))
                .collect(),
        }
    }

    /// The explore gate of `server` (a server missing from the config gets a private one).
    pub fn gate(&self, server: &str) -> Arc<Mutex<()>> {
        self.gates.get(server).cloned().unwrap_or_default()
    }

    /// The semaphore of `server` (a server missing from the config gets a private one permit).
    pub fn get(&self, server: &str) -> Arc<Semaphore> {
        self.by_server
            .get(server)
            .cloned()
            .unwrap_or_else(|| Arc::new(Semaphore::new(1)))
    }
}

/// The open session: its id and which generation it is (bumped by each re-open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenSession {
    pub id: Uuid,
    pub generation: u64,
}

struct SlotState {
    current: Option<OpenSession>,
    permit: Option<OwnedSemaphorePermit>,
    generation: u64,
    reopens: u32,
    /// Sessions this slot recorded `lost` (so a late report about one of them is recognised).
    lost: std::collections::HashSet<Uuid>,
    organization: Option<Organization>,
}

/// What a run explores: its organisation, its point in time (`None` = latest) and
/// `spec.explore`.
#[derive(Debug, Clone)]
pub struct ExploreTarget {
    pub organization: OrganizationRef,
    pub point_in_time: Option<DateTime<Utc>>,
    pub settings: ExploreSettings,
}

/// The restore session of one run (see the module doc).
pub struct SessionSlot {
    client: Client,
    store: Store,
    run: RunId,
    organization: OrganizationRef,
    point_in_time: Option<DateTime<Utc>>,
    /// `spec.explore`: deleted items, versions, repository or backup job.
    explore: ExploreSettings,
    limiter: Arc<Semaphore>,
    gate: Arc<Mutex<()>>,
    max_reopens: u32,
    /// The engine's clock: every timestamp the slot records.
    clock: Arc<dyn Clock>,
    state: Mutex<SlotState>,
}

impl SessionSlot {
    /// A slot with no session yet; `options` give the reopen budget
    /// ([`EngineOptions::max_session_reopens`]) and the clock.
    pub fn new(
        client: Client,
        store: Store,
        run: RunId,
        target: ExploreTarget,
        limiters: &Limiters,
        options: &EngineOptions,
    ) -> Self {
        let ExploreTarget {
            organization,
            point_in_time,
            settings: explore,
        } = target;
        SessionSlot {
            limiter: limiters.get(client.server()),
            gate: limiters.gate(client.server()),
            client,
            store,
            run,
            organization,
            point_in_time,
            explore,
            max_reopens: options.max_session_reopens,
            clock: Arc::clone(&options.clock),
            state: Mutex::new(SlotState {
                current: None,
                permit: None,
                generation: 0,
                reopens: 0,
                lost: std::collections::HashSet::new(),
                organization: None,
            }),
        }
    }

    /// The point in time sent with explore (`None` = latest).
    pub fn point_in_time(&self) -> Option<DateTime<Utc>> {
        self.point_in_time
    }

    /// The organisation, once a session was opened.
    pub async fn organization(&self) -> Option<Organization> {
        self.state.lock().await.organization.clone()
    }

    /// The session, opened now if needed: waits for a permit of the server's limiter (or for
    /// `stop`), resolves the organisation, explores it at the point in time and records the
    /// session in the store.
    pub async fn get(&self, stop: &CancellationToken) -> StepResult<OpenSession> {
        let mut st = self.state.lock().await;
        if let Some(open) = st.current {
            return Ok(open);
        }
        if st.permit.is_none() {
            let permit = tokio::select! {
                p = Arc::clone(&self.limiter).acquire_owned() => p.map_err(|_| {
                    StepFailure::permanent("the restore session limiter was closed")
                })?,
                () = stop.cancelled() => {
                    return Err(StepFailure::new(
                        ErrorClass::Retryable,
                        "run stopped while waiting for a restore session slot",
                    ));
                }
            };
            st.permit = Some(permit);
        }
        let org = match &st.organization {
            Some(o) => o.clone(),
            None => {
                let o = self
                    .client
                    .resolve_organization(&self.organization.to_string())
                    .await?;
                st.organization = Some(o.clone());
                o
            }
        };
        let org_id = org.id.ok_or_else(|| {
            StepFailure::permanent(format!("organization {} has no id on the server", org.name))
        })?;
        let options = OrganizationExploreOptions {
            show_deleted: Some(self.explore.show_deleted),
            show_all_versions: Some(self.explore.show_all_versions),
            repository_id: self.explore.repository_id,
            ..OrganizationExploreOptions::exchange(self.point_in_time)
        };
        let store_failure =
            |e: crate::store::StoreError| StepFailure::new(ErrorClass::Retryable, e.to_string());
        // The intent is written before the request and cleared only once the session is
        // recorded: whatever happens in between (a lost answer, a crash), the sweep finds the
        // session the server may have opened and stops it.
        let gate = self.gate.lock().await;
        let org_id_text = org_id.to_string();
        let intent = self
            .store
            .record_session_intent(
                &NewSessionIntent {
                    server: self.client.server(),
                    organization_id: &org_id_text,
                    organization_name: &org.name,
                    run_id: Some(self.run),
                },
                self.clock.now(),
            )
            .await
            .map_err(store_failure)?;
        let session = match self.explore.backup_job {
            Some(job) => {
                self.client
                    .explore_job(job, &ExploreOptions::from(&options))
                    .await?
            }
            None => self.client.explore_organization(org_id, &options).await?,
        };
        let id = session.id.to_string();
        let pit = self.point_in_time.map(|t| t.to_rfc3339());
        self.store
            .record_session_opened(
                &NewSession {
                    id: &id,
                    server: self.client.server(),
                    organization_id: &org_id_text,
                    point_in_time: pit.as_deref(),
                    run_id: Some(self.run),
                },
                self.clock.now(),
            )
            .await
            .map_err(store_failure)?;
        // A failure here leaves an intent whose session is known: the sweep just deletes it.
        if let Err(e) = self.store.clear_session_intent(intent).await {
            tracing::warn!(run = %self.run, session = %id, error = %e, "cannot clear the explore intent; the sweep will");
        }
        drop(gate);
        st.generation += 1;
        let open = OpenSession {
            id: session.id,
            generation: st.generation,
        };
        st.current = Some(open);
        tracing::info!(run = %self.run, session = %session.id, "restore session opened");
        Ok(open)
    }

    /// Takes over a session a previous process of this run left open (after checking on the
    /// server that it is still `Working`). Returns false when it is gone (recorded `lost`).
    ///
    /// A check that fails without an answer about the session (5xx, 429, a broken connection)
    /// adopts it anyway: recording it `lost` would leave it `Working` on the server for ever
    /// (nothing stops a `lost` session), while an adopted session that turns out to be gone is
    /// noticed at its first use and re-opened like any lost session.
    pub async fn adopt(&self, id: Uuid, stop: &CancellationToken) -> bool {
        match self.client.restore_session(id).await {
            Ok(s) if s.state == vb365::SessionState::Working => {}
            Err(e) if !e.is_gone() => {
                tracing::warn!(run = %self.run, session = %id, error = %e, "cannot check the session left open; adopting it anyway");
            }
            Ok(_) | Err(_) => {
                let _ = self
                    .store
                    .mark_session_lost(
                        &id.to_string(),
                        "not working any more when the run resumed",
                        self.clock.now(),
                    )
                    .await;
                return false;
            }
        }
        let mut st = self.state.lock().await;
        if st.permit.is_none() {
            tokio::select! {
                p = Arc::clone(&self.limiter).acquire_owned() => st.permit = p.ok(),
                () = stop.cancelled() => return false,
            }
        }
        st.generation += 1;
        st.current = Some(OpenSession {
            id,
            generation: st.generation,
        });
        if let Ok(org) = self
            .client
            .resolve_organization(&self.organization.to_string())
            .await
        {
            st.organization = Some(org);
        }
        tracing::info!(run = %self.run, session = %id, "restore session adopted after a restart");
        true
    }

    /// The server lost session generation `generation`: records it `lost` and forgets it so the
    /// next [`SessionSlot::get`] opens a new one (keeping the limiter permit). Several steps
    /// reporting the same loss re-open once. Fails when the run re-opened too often.
    pub async fn lost(&self, generation: u64, reason: &str) -> StepResult<()> {
        let mut st = self.state.lock().await;
        match st.current {
            Some(open) if open.generation == generation => self.forget(&mut st, reason).await,
            _ => Ok(()),
        }
    }

    /// A call under session `id` found it gone. When `id` is the run's current session it is
    /// recorded `lost` and forgotten like [`SessionSlot::lost`] (→ true). When this slot already
    /// replaced it, nothing more is done (→ true). Any other session (an operation session a
    /// restore is followed through) is not the slot's to forget (→ false): the caller retries
    /// under its retry policy instead.
    pub async fn lost_session(&self, id: Uuid, reason: &str) -> StepResult<bool> {
        let mut st = self.state.lock().await;
        match st.current {
            Some(open) if open.id == id => self.forget(&mut st, reason).await.map(|()| true),
            _ => Ok(st.lost.contains(&id)),
        }
    }

    async fn forget(&self, st: &mut SlotState, reason: &str) -> StepResult<()> {
        let Some(open) = st.current.take() else {
            return Ok(());
        };
        let _ = self
            .store
            .mark_session_lost(&open.id.to_string(), reason, self.clock.now())
            .await;
        st.lost.insert(open.id);
        st.reopens += 1;
        tracing::warn!(run = %self.run, session = %open.id, reason, "restore session lost; a new one will be opened");
        if st.reopens > self.max_reopens {
            return Err(StepFailure::permanent(format!(
                "restore session lost {} times in this run; giving up: {reason}",
                st.reopens
            )));
        }
        Ok(())
    }

    /// Ends the run's use of the session: stops it on the server, or with `keep` records it as
    /// needed after a restart (`keep_for_resume`) and leaves it open. Releases the permit.
    pub async fn close(&self, keep: bool) {
        let mut st = self.state.lock().await;
        if let Some(open) = st.current.take() {
            let id = open.id.to_string();
            if keep {
                if let Err(e) = self
                    .store
                    .set_session_keep_for_resume(&id, true, self.clock.now())
                    .await
                {
                    tracing::warn!(session = %id, error = %e, "cannot mark the session for resume");
                }
                tracing::info!(run = %self.run, session = %id, "restore session kept open for resume");
            } else {
                stop_session(&self.store, &self.client, open.id, self.clock.as_ref()).await;
            }
        }
        st.permit = None;
    }
}

/// Stops a restore session on the server and records it: `stopping` first (so a crash in
/// between is retried at the next start), then `stopped`; a session the server no longer knows
/// is recorded `lost`. Failures are logged; the row stays `stopping` for the next recovery.
pub async fn stop_session(store: &Store, client: &Client, id: Uuid, clock: &dyn Clock) {
    let text = id.to_string();
    if let Err(e) = store.mark_session_stopping(&text, clock.now()).await {
        tracing::warn!(session = %text, error = %e, "cannot record the session as stopping");
    }
    match client.stop_restore_session(id).await {
        Ok(()) => {
            if let Err(e) = store.mark_session_stopped(&text, clock.now()).await {
                tracing::warn!(session = %text, error = %e, "cannot record the session as stopped");
            }
        }
        Err(e) if e.is_gone() => {
            let _ = store
                .mark_session_lost(&text, "the server no longer knows it", clock.now())
                .await;
        }
        Err(e) => {
            tracing::warn!(session = %text, error = %e, "cannot stop the restore session; the next start retries");
        }
    }
}

/// Time on top of the server's `requestTimeout` before an unanswered explore request is taken
/// to be over: the server may still act on a request the client has given up on.
pub const ORPHAN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Allowance for the server's clock when matching a session's `creationTime` to an intent.
const ORPHAN_SKEW: chrono::Duration = chrono::Duration::minutes(1);

/// Stops the restore sessions that explore requests to `client`'s server may have opened
/// without restorectl learning their id (a lost answer, a crash before the session was
/// recorded). Looks at intents older than `request_timeout` + [`ORPHAN_GRACE`] only (younger
/// ones may still be answered), lists the server's sessions created since the oldest of them,
/// and stops every `Working` Exchange session of the intent's organisation, created around its
/// time, that the store does not know and that shows no operation (a restore's operation
/// session looks the same otherwise); each is recorded (with the intent's run) before it is
/// stopped, so a failed stop is retried at the next start like any other session. Then the
/// intents are deleted. Holds the server's explore gate, so no explore of this process is in
/// flight meanwhile; another replica's explore in flight is recognised by its intent (a session
/// created after an intent that is not due yet is left alone). Failures are logged and leave
/// the intents for the next sweep. Returns how many sessions were stopped.
///
/// The one assumption: the account restorectl uses is its own. A session another client opened
/// with the same account, for the same organisation, within a minute of a lost explore answer
/// and still open, would be stopped too (the operations runbook says so).
pub async fn sweep_orphans(
    store: &Store,
    client: &Client,
    gate: &Mutex<()>,
    request_timeout: std::time::Duration,
    clock: &dyn Clock,
) -> usize {
    let server = client.server();
    let _gate = gate.lock().await;
    let intents = match store.list_session_intents(Some(server)).await {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(server, error = %e, "cannot read the pending explore intents");
            return 0;
        }
    };
    let now = clock.now();
    let settled = chrono::Duration::from_std(request_timeout + ORPHAN_GRACE).unwrap_or_default();
    let due: Vec<&SessionIntent> = intents
        .iter()
        .filter(|i| now - i.requested_at >= settled)
        .collect();
    let Some(oldest) = due.iter().map(|i| i.requested_at).min() else {
        return 0;
    };
    let filter = vb365::RestoreSessionFilter {
        start_time_from: Some(oldest - ORPHAN_SKEW),
        ..vb365::RestoreSessionFilter::default()
    };
    let listed = match client.restore_sessions(&filter).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(server, error = %e, "cannot list the restore sessions to find orphans; retrying at the next sweep");
            return 0;
        }
    };
    // Another replica's explore may be in flight (the gate is per process): its intent is
    // recorded before its request is sent and cleared only after its session is recorded. Read
    // the intents again now that the sessions are listed: a listed session an in-flight explore
    // may have opened is either covered by an intent that is not due yet (left for a later
    // sweep) or already recorded (found by `get_session` below).
    let young: Vec<DateTime<Utc>> = match store.list_session_intents(Some(server)).await {
        Ok(now_pending) => now_pending
            .iter()
            .filter(|i| now - i.requested_at < settled)
            .map(|i| i.requested_at)
            .collect(),
        Err(e) => {
            tracing::warn!(server, error = %e, "cannot read the pending explore intents");
            return 0;
        }
    };
    let mut stopped = 0;
    for s in listed.iter().filter(|s| {
        s.state == vb365::SessionState::Working && s.session_type == vb365::SessionType::Vex
    }) {
        if young.iter().any(|t| s.creation_time >= *t - ORPHAN_SKEW) {
            continue;
        }
        let Some(intent) = due.iter().find(|i| {
            s.creation_time >= i.requested_at - ORPHAN_SKEW
                && s.creation_time <= i.requested_at + settled + ORPHAN_SKEW
                && s.organization
                    .as_deref()
                    .is_none_or(|o| o.eq_ignore_ascii_case(&i.organization_name))
        }) else {
            continue;
        };
        let id = s.id.to_string();
        match store.get_session(&id).await {
            Ok(_) => continue,
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                tracing::warn!(server, session = %id, error = %e, "cannot check a listed restore session; retrying at the next sweep");
                return stopped;
            }
        }
        // A restore run as an operation session looks the same in the list (same account,
        // organisation and time): stopping it would cut a restore short and hide its trace
        // from reconciliation. An explore session nobody learnt about has had no operation.
        match client.restore_session_events(s.id).await {
            Ok(events)
                if events.iter().any(|e| {
                    matches!(
                        e.event_type,
                        Some(
                            vb365::EventType::Restore
                                | vb365::EventType::Export
                                | vb365::EventType::Save
                                | vb365::EventType::Send
                        )
                    )
                }) =>
            {
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(server, session = %id, error = %e, "cannot read a listed restore session's events; retrying at the next sweep");
                return stopped;
            }
        }
        let recorded = store
            .record_session_opened(
                &NewSession {
                    id: &id,
                    server,
                    organization_id: &intent.organization_id,
                    point_in_time: None,
                    run_id: intent.run_id,
                },
                now,
            )
            .await;
        if let Err(e) = recorded {
            tracing::warn!(server, session = %id, error = %e, "cannot record an orphaned restore session; retrying at the next sweep");
            return stopped;
        }
        tracing::warn!(server, session = %id, organization = %intent.organization_name, "stopping a restore session whose explore answer was lost");
        stop_session(store, client, s.id, clock).await;
        stopped += 1;
    }
    for i in due {
        if let Err(e) = store.clear_session_intent(i.id).await {
            tracing::warn!(server, intent = i.id, error = %e, "cannot clear an explore intent");
        }
    }
    stopped
}
