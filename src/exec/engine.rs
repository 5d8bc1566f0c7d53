//! [`Engine`]: claims runs and drives each from its job version to a final state.
//!
//! Life cycle of one execution ([`Engine::execute_run`]):
//!
//! 1. claim the run (lease); a background task on the engine's tracker renews the lease every
//!    third of its length, reports an operator's cancel, notices a lost lease and enforces the
//!    run's deadline (read on the engine's clock); it ends before the execution returns,
//!    whichever way the execution ends, and when the execution's future is dropped;
//! 2. rebuild the job from the version the run was queued with (`job_versions.spec_json` is a
//!    complete normalised document, re-validated by [`jobs::parse_str`]);
//! 3. adopt a session a crashed predecessor left open if a step still needs it, else stop it;
//! 4. on the first execution, open the session, resolve the selectors against its mailbox list
//!    and create the steps (idempotently);
//! 5. run the steps with bounded parallelism (`stepParallelism`);
//! 6. Search: write the report; decide the run's state (`needs_attention` if a step is
//!    `in_doubt`, `waiting_retry` if a step waits for a long backoff, else terminal); stop the
//!    session; ExportPst: apply retention after a successful run.
//!
//! Stops: cancellation (the operator's cancel, seen on lease renewal) → `cancelled`; the
//! deadline → `failed` with reason `timeout`; the caller's token (shutdown) → the lease is
//! released and the run stays `running` for the next start, its session kept when a step needs
//! it; a lost lease → the engine walks away without touching the run.
//!
//! A panic while executing a run (a bug, in the engine or in what it calls) is caught at the
//! run: the run fails with a reason naming the panic, the restore sessions it holds are stopped
//! and its lease goes with the state change; the engine, and the daemon, go on with other runs.
//! Steps in flight keep their state (a finished run is never executed again, so nothing is sent
//! twice). Why not let the daemon restart instead: the restart would claim the same run and
//! panic again, taking every other job down with it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::error::{RunError, StepFailure};
use super::freshness::{self, Freshness};
use super::options::EngineOptions;
use super::run_ctx::{MailboxCache, RunCtx, StepEnd, StopReason, Stopper};
use super::session::{ExploreTarget, Limiters, SessionSlot, stop_session};
use super::sign_in::{self, SignIn};
use super::{export, retry, run_ctx, search, select, steps};
use crate::config::{Config, SecretContext};
use crate::jobs::{self, Action, Job, ValidationContext};
use crate::notify::heartbeat::{self, Ping, Pinger};
use crate::store::{ErrorClass, Run, RunId, RunState, Step, StepState, Store, StoreError};
use crate::vb365::{Client, Mailbox};

/// What an execution of a run ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    pub run: RunId,
    /// The run's state afterwards (`running` when the engine stopped for a shutdown or lost
    /// its lease).
    pub state: RunState,
    pub reason: Option<String>,
    /// For `waiting_retry`: when the run is due again.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// The run engine of one process. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Store,
    /// The current config: the daemon publishes the live settings of a reload here; each
    /// execution of a run takes one snapshot at its start ([`RunCtx::config`]).
    config: watch::Receiver<Arc<Config>>,
    /// Built from the config the engine started with: servers, `pageSize` and TLS settings
    /// need a restart. Handed out through [`Engine::client`] with the current `secretsDir`.
    clients: BTreeMap<String, Client>,
    pub(crate) limiters: Limiters,
    pub(crate) options: EngineOptions,
    /// The engine's background tasks (the lease renewer of each run in progress): none is
    /// detached, and each ends before the execution that started it returns.
    tasks: TaskTracker,
    /// The heartbeat pingers (`spec.heartbeat`) of the runs in progress, by run; a pinger's
    /// task sends its pings in order and ends when the pinger is dropped (bounded: at most
    /// three pings of [`heartbeat::TIMEOUT`] each).
    heartbeats: std::sync::Mutex<std::collections::HashMap<RunId, Pinger>>,
    /// Where the pinger tasks run: apart from `tasks`, which must be empty once an execution
    /// returned, while a last ping may still be on its way.
    pings: TaskTracker,
    /// The HTTP client of heartbeats (no redirects, [`heartbeat::TIMEOUT`]).
    http: reqwest::Client,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("owner", &self.inner.options.owner)
            .field("servers", &self.inner.clients.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Opens the run's session and lists its mailboxes, retrying like a step (SPEC §5): a
/// retryable answer (5xx, 429, `ProxyOffline`, a broken connection) waits the job's backoff
/// (raised to the server's `Retry-After`) and tries again up to `retry.maxAttempts` times,
/// counted over the whole list; a failed page is asked for again, the pages before it are
/// kept. A lost session is re-created (within the session's reopen budget) and listed from the
/// start. Only a permanent or auth failure, an exhausted budget or a stop ends it. The steps do
/// not exist yet, so the backoff is slept inside the run.
async fn list_mailboxes_with_retry(ctx: &RunCtx) -> Result<Arc<Vec<Mailbox>>, StepFailure> {
    let policy = ctx.job.retry();
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let failure = match ctx.mailboxes().await {
            Ok(all) => return Ok(all),
            Err(f) => f,
        };
        let retryable = matches!(
            failure.class,
            ErrorClass::Retryable | ErrorClass::Ambiguous | ErrorClass::SessionLost
        );
        if !retryable || ctx.stop.is_stopped() {
            return Err(failure);
        }
        if attempt >= policy.max_attempts {
            let mut f = failure;
            f.message = format!("{} (gave up after {attempt} attempts)", f.message);
            return Err(f);
        }
        let delay = retry::delay(&policy, attempt, failure.retry_after);
        tracing::info!(run = %ctx.run.id, attempt, delay_ms = delay.as_millis() as u64, error = %failure.message, "listing the mailboxes failed; retrying");
        if !run_ctx::sleep(ctx, delay).await {
            return Err(failure);
        }
    }
}

impl Engine {
    /// An engine over `store` for the servers of `config`, which never changes.
    ///
    /// # Errors
    ///
    /// [`RunError::Client`] when a server's client cannot be built (unreadable `caFile`, …).
    pub fn new(store: Store, config: Config, options: EngineOptions) -> Result<Engine, RunError> {
        Self::with_live_config(store, watch::channel(Arc::new(config)).1, options)
    }

    /// An engine that follows `config`: each execution of a run uses the config current at its
    /// start. The servers' clients, the session limiters and `options` come from the config
    /// current now; a publisher must keep those settings as they are (the daemon's reload does,
    /// see `daemon::reload`).
    ///
    /// # Errors
    ///
    /// [`RunError::Client`] when a server's client cannot be built (unreadable `caFile`, …).
    pub fn with_live_config(
        store: Store,
        config: watch::Receiver<Arc<Config>>,
        options: EngineOptions,
    ) -> Result<Engine, RunError> {
        let current = Arc::clone(&config.borrow());
        let secrets = SecretContext::from_config(&current);
        let mut clients = BTreeMap::new();
        for server in current.servers.values() {
            let client = Client::new(server, &secrets)?.with_page_size(current.page_size);
            clients.insert(server.name.clone(), client);
        }
        let limiters = Limiters::from_config(&current);
        Ok(Engine {
            inner: Arc::new(Inner {
                store,
                config,
                clients,
                limiters,
                options,
                tasks: TaskTracker::new(),
                heartbeats: std::sync::Mutex::default(),
                pings: TaskTracker::new(),
                http: crate::notify::http_client(heartbeat::TIMEOUT),
            }),
        })
    }

    /// The config current now (a snapshot).
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.inner.config.borrow())
    }

    /// The client of `server`, reading its password through `secrets`.
    pub(crate) fn client(&self, server: &str, secrets: &SecretContext) -> Option<Client> {
        self.inner
            .clients
            .get(server)
            .map(|c| c.clone().with_secrets(secrets))
    }

    /// The state database.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The lease owner this engine claims runs as.
    pub fn owner(&self) -> &str {
        &self.inner.options.owner
    }

    /// How many background tasks of this engine are alive: a lease renewer per run being
    /// executed, none once every execution returned (or its future was dropped and the renewer
    /// saw it).
    pub fn background_tasks(&self) -> usize {
        self.inner.tasks.len()
    }

    /// The current time, from the engine's clock ([`EngineOptions::clock`]).
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.options.clock.now()
    }

    /// Claims the next due run (queued, due `waiting_retry`, or `running` with an expired lease)
    /// and executes it. `None` when nothing is due.
    ///
    /// # Errors
    ///
    /// [`RunError`] when the state database fails.
    pub async fn execute_next(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<Option<RunOutcome>, RunError> {
        let o = &self.inner.options;
        let Some(run) = self
            .inner
            .store
            .claim_next_run(&o.owner, o.lease, o.clock.now())
            .await?
        else {
            // Idle: a good moment to stop sessions whose explore answer was lost.
            self.sweep_orphan_sessions().await;
            return Ok(None);
        };
        self.drive(run, shutdown).await.map(Some)
    }

    /// Stops, on every configured server, the restore sessions that explore requests may have
    /// opened without the engine learning their ids ([`super::session::sweep_orphans`]). Cheap
    /// when there is nothing to do (one read of the store). Returns how many were stopped.
    pub async fn sweep_orphan_sessions(&self) -> usize {
        let mut stopped = 0;
        let config = self.config();
        let secrets = SecretContext::from_config(&config);
        for server in self.inner.clients.keys() {
            let Some(client) = self.client(server, &secrets) else {
                continue;
            };
            let request_timeout = config
                .server(Some(server))
                .map_or(Duration::from_secs(60), |s| s.request_timeout);
            stopped += super::session::sweep_orphans(
                &self.inner.store,
                &client,
                &self.inner.limiters.gate(server),
                request_timeout,
                self.inner.options.clock.as_ref(),
            )
            .await;
        }
        stopped
    }

    /// Ends the VB365 sessions of every server this engine signed in to (`POST
    /// /v8/token/logout`), so tokens do not linger on the servers; for the daemon's stop. Best
    /// effort: each logout is bounded by `limit` and its failure only logged. A server never
    /// signed in to is not called.
    pub async fn logout_all(&self, limit: Duration) {
        for (name, client) in &self.inner.clients {
            match tokio::time::timeout(limit, client.logout()).await {
                Ok(Ok(())) => tracing::info!(server = %name, "signed out of the VB365 server"),
                Ok(Err(e)) => {
                    tracing::warn!(server = %name, error = %e, "signing out of the VB365 server failed");
                }
                Err(_) => {
                    tracing::warn!(server = %name, timeout = ?limit, "signing out of the VB365 server timed out");
                }
            }
        }
    }

    /// Claims run `id` and executes it until it reaches a final state, `needs_attention`,
    /// `waiting_retry`, or `shutdown` is cancelled.
    ///
    /// # Errors
    ///
    /// [`RunError::NotClaimable`] when another owner holds it or it is not due;
    /// [`RunError::Store`] when the state database fails (the run keeps its lease and is picked
    /// up again once it expires).
    pub async fn execute_run(
        &self,
        id: RunId,
        shutdown: &CancellationToken,
    ) -> Result<RunOutcome, RunError> {
        let o = &self.inner.options;
        let claimed = self
            .inner
            .store
            .claim_run(id, &o.owner, o.lease, o.clock.now())
            .await
            .map_err(RunError::store(id))?;
        let Some(run) = claimed else {
            let run = self
                .inner
                .store
                .get_run(id)
                .await
                .map_err(RunError::store(id))?;
            return Err(RunError::NotClaimable {
                run: id,
                why: format!(
                    "state {}, lease held by {}",
                    run.state,
                    run.lease_owner.as_deref().unwrap_or("nobody")
                ),
            });
        };
        self.drive(run, shutdown).await
    }

    /// Executes a run this engine just claimed.
    async fn drive(&self, run: Run, shutdown: &CancellationToken) -> Result<RunOutcome, RunError> {
        let id = run.id;
        let stop = Stopper::default();
        // The renewer stops on every way out, this future being dropped included (the guard
        // cancels its token): a renewer that outlives the execution would keep the lease of a run
        // nobody drives alive forever. A child of the stop token, so a stop ends it too.
        let renewal = stop.token.child_token();
        let stop_renewal = renewal.clone().drop_guard();
        let renewer = self.spawn_lease_renewal(&run, &stop, shutdown, renewal);
        // Unwind safety: the execution's own state dies with it; what it shares with other
        // runs is the store (transactions roll back), tokio locks and semaphores (no poisoning;
        // permits and guards are released as the future is dropped) and std mutexes that are
        // read through `PoisonError::into_inner`.
        let caught = std::panic::AssertUnwindSafe(self.drive_claimed(run.clone(), &stop))
            .catch_unwind()
            .await;
        drop(stop_renewal);
        // Ended before the run's outcome is recorded or returned: once an execution returns, no
        // task of it is left.
        if let Err(e) = renewer.await {
            tracing::error!(run = %id, error = %e, "the lease renewer of the run failed");
        }
        let result = match caught {
            Ok(result) => result,
            Err(payload) => self.panicked(&run, crate::panics::message(&*payload)).await,
        };
        // A run interrupted (shutdown, lost lease) sends no final ping: it is not over.
        self.take_pinger(id);
        match result {
            Ok(outcome) => Ok(outcome),
            Err(e) => {
                tracing::error!(run = %id, error = %e, "run execution aborted");
                Err(e)
            }
        }
    }

    /// A panic ended the execution of `run` (see the module doc): the run fails, its open
    /// restore sessions are stopped (no step of a failed run needs them).
    async fn panicked(&self, run: &Run, message: String) -> Result<RunOutcome, RunError> {
        tracing::error!(run = %run.id, job = %run.job_name, panic = %message, "the run engine panicked while executing a run; the run fails, other runs go on");
        let store = &self.inner.store;
        // A panic after the run left our hands (a state written, the lease released for a
        // shutdown with the sessions a resume needs) keeps what was recorded.
        let now = store
            .get_run(run.id)
            .await
            .map_err(RunError::store(run.id))?;
        if now.state != RunState::Running || now.lease_owner.as_deref() != Some(self.owner()) {
            return Ok(RunOutcome {
                run: run.id,
                state: now.state,
                reason: now.reason,
                next_attempt_at: now.next_attempt_at,
            });
        }
        let secrets = SecretContext::from_config(&self.config());
        let open = store
            .list_open_sessions(Some(run.id))
            .await
            .map_err(RunError::store(run.id))?;
        for session in open {
            if let (Some(client), Ok(uuid)) = (
                self.client(&session.server, &secrets),
                Uuid::parse_str(&session.id),
            ) {
                stop_session(store, &client, uuid, self.inner.options.clock.as_ref()).await;
            }
        }
        let reason = format!(
            "internal error: the run engine panicked ({message}); the run was stopped, see the daemon log"
        );
        self.finish(run, RunState::Failed, Some(reason)).await
    }

    /// The lease renewal task, on the engine's tracker: renews every third of the lease (at most
    /// every 2 s), turns a cancel request into [`StopReason::Cancelled`], a lost lease into
    /// [`StopReason::LeaseLost`], the deadline into [`StopReason::Timeout`] and the caller's
    /// shutdown into [`StopReason::Shutdown`]. Ends when `renewal` is cancelled, at whatever await
    /// it is.
    fn spawn_lease_renewal(
        &self,
        run: &Run,
        stop: &Stopper,
        shutdown: &CancellationToken,
        renewal: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.inner.store.clone();
        let clock = Arc::clone(&self.inner.options.clock);
        let owner = self.inner.options.owner.clone();
        let lease = self.inner.options.lease;
        // Every 2 s at most: the renewal is also how an operator's cancel is noticed.
        let every = (lease / 3).clamp(Duration::from_millis(100), Duration::from_secs(2));
        let stop = stop.clone();
        let shutdown = shutdown.clone();
        let id = run.id;
        let mut deadline = run.deadline_at;
        let cancel_requested = run.cancel_requested;
        // Until when this process may act on the run without a renewal (its own monotonic
        // clock; the claim was committed just before): past it, another replica may take the
        // run over, so the execution stops first (see `lease_margin`).
        let margin = super::options::lease_margin(lease);
        // From the end the claim recorded (computed from the clock read before the claim
        // waited for the database), not from now: a slow claim shortens the window.
        let remaining = run.lease_expires_at.map_or(lease, |end| {
            (end - clock.now()).to_std().unwrap_or_default()
        });
        let mut valid_until = tokio::time::Instant::now() + remaining.saturating_sub(margin);
        self.inner.tasks.spawn(async move {
            if cancel_requested {
                stop.stop(StopReason::Cancelled);
                return;
            }
            loop {
                let until_deadline = deadline
                    .map(|d| (d - clock.now()).to_std().unwrap_or(Duration::ZERO))
                    .unwrap_or(every);
                tokio::select! {
                    () = tokio::time::sleep(every.min(until_deadline)) => {}
                    () = tokio::time::sleep_until(valid_until) => {}
                    () = shutdown.cancelled() => { stop.stop(StopReason::Shutdown); return; }
                    () = renewal.cancelled() => return,
                }
                if tokio::time::Instant::now() >= valid_until {
                    tracing::warn!(run = %id, "the run's lease could not be renewed before it runs out; stopping so that another replica can take the run over");
                    stop.stop(StopReason::LeaseLost);
                    return;
                }
                if deadline.is_some_and(|d| clock.now() >= d) {
                    stop.stop(StopReason::Timeout);
                    return;
                }
                let started = tokio::time::Instant::now();
                let renewed = tokio::select! {
                    r = store.renew_lease(id, &owner, lease, clock.now()) => r,
                    () = tokio::time::sleep_until(valid_until) => continue,
                    () = renewal.cancelled() => return,
                };
                match renewed {
                    Ok(r) => {
                        valid_until = started + lease - margin;
                        deadline = r.deadline_at.or(deadline);
                        if r.cancel_requested {
                            stop.stop(StopReason::Cancelled);
                            return;
                        }
                    }
                    Err(StoreError::LeaseLost { .. }) => {
                        stop.stop(StopReason::LeaseLost);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(run = %id, error = %e, "lease renewal failed; retrying");
                    }
                }
            }
        })
    }

    async fn drive_claimed(&self, run: Run, stop: &Stopper) -> Result<RunOutcome, RunError> {
        let id = run.id;
        let store = &self.inner.store;
        let config = self.config();
        let secrets = SecretContext::from_config(&config);
        let job = match self.load_job(&run, &config).await {
            Ok(job) => job,
            Err(reason) => return self.finish(&run, RunState::Failed, Some(reason)).await,
        };
        self.start_heartbeat(&run, &job, &secrets);
        let server = job.server().or_else(|| {
            (self.inner.clients.len() == 1)
                .then(|| self.inner.clients.keys().next().map(String::as_str))
                .flatten()
        });
        let Some(client) = server.and_then(|s| self.client(s, &secrets)) else {
            let reason = format!(
                "job {}: server {} is not configured",
                job.name(),
                job.server().unwrap_or("(none)")
            );
            return self.finish(&run, RunState::Failed, Some(reason)).await;
        };
        let request_timeout = config
            .server(Some(client.server()))
            .map_or(Duration::from_secs(60), |s| s.request_timeout);
        let point_in_time = job.point_in_time().resolve(run.scheduled_for);
        // The freshness guard only before the first execution: a resumed run already started
        // from a restore point the guard accepted.
        let existing = store.list_steps(id).await.map_err(RunError::store(id))?;
        let restore_point = match freshness::check(
            &client,
            &job,
            point_in_time,
            existing.is_empty(),
            self.now(),
        )
        .await
        {
            Freshness::Fresh(point) => point,
            Freshness::Stale(reason) => {
                return self
                    .finish_as(&run, RunState::Failed, Some(reason), true)
                    .await;
            }
            Freshness::Failed(reason) => {
                return self.finish(&run, RunState::Failed, Some(reason)).await;
            }
        };
        let session = SessionSlot::new(
            client.clone(),
            store.clone(),
            id,
            ExploreTarget {
                organization: job.organization().clone(),
                point_in_time,
                settings: job.explore(),
            },
            &self.inner.limiters,
            &self.inner.options,
        );
        let ctx = Arc::new(RunCtx {
            store: store.clone(),
            options: self.inner.options.clone(),
            run: run.clone(),
            job,
            client,
            session,
            stop: stop.clone(),
            config,
            secrets,
            mailboxes: tokio::sync::Mutex::new(MailboxCache::Empty),
            request_timeout,
            restore_point,
            user_code: std::sync::Mutex::new(None),
        });
        tracing::info!(job = %ctx.job.name(), run = %id, attempt = run.attempts, "run started");

        self.adopt_or_stop_sessions(&ctx, &existing).await?;

        let steps = if existing.is_empty() {
            match self.create_steps(&ctx).await? {
                Ok(steps) => steps,
                Err(reason) => {
                    // A shutdown or cancel during a retry backoff is not a failure of the run.
                    if let Some(stop_reason) = stop.reason() {
                        return self.stopped(&ctx, stop_reason).await;
                    }
                    ctx.session.close(false).await;
                    return self.finish(&run, RunState::Failed, Some(reason)).await;
                }
            }
        } else {
            existing
        };

        if let Some(outcome) = self.sign_in_gate(&ctx, &steps).await? {
            return Ok(outcome);
        }

        crate::panics::inject("run", ctx.job.name());
        let parallelism = usize::try_from(ctx.config.step_parallelism.max(1)).unwrap_or(1);
        let ids: Vec<i64> = steps.iter().map(|s| s.id).collect();
        let step_ctx = Arc::clone(&ctx);
        let ends: Vec<Result<StepEnd, RunError>> = futures_util::stream::iter(ids)
            .map(move |id| steps::run_step(Arc::clone(&step_ctx), id))
            .buffer_unordered(parallelism)
            .collect()
            .await;
        let mut results = Vec::with_capacity(ends.len());
        let mut first_error = None;
        for e in ends {
            match e {
                Ok(end) => results.push(end),
                Err(e) => {
                    if first_error.is_none() {
                        first_error = Some(e);
                    }
                }
            }
        }
        if let Some(e) = first_error {
            // The database failed: leave the run to its lease; keep the session only if a step
            // still needs it.
            let keep = self.session_needed(id).await;
            ctx.session.close(keep).await;
            return Err(e);
        }

        if let Some(reason) = stop.reason() {
            return self.stopped(&ctx, reason).await;
        }

        let steps = store.list_steps(id).await.map_err(RunError::store(id))?;
        if results.contains(&StepEnd::SignInRefused)
            && let Some(outcome) = self.sign_in_gate(&ctx, &steps).await?
        {
            return Ok(outcome);
        }
        let steps = store.list_steps(id).await.map_err(RunError::store(id))?;
        let mut search_failure = None;
        if let Action::Search(action) = ctx.job.action()
            && steps.iter().all(|s| s.state == StepState::Done)
            && let Err(e) = search::publish_report(&ctx, action, &steps).await
        {
            search_failure = Some(e.to_string());
        }
        if let Some(reason) = stop.reason() {
            return self.stopped(&ctx, reason).await;
        }

        let waiting: Option<DateTime<Utc>> = results
            .iter()
            .filter_map(|r| match r {
                StepEnd::Later(t) => Some(*t),
                _ => None,
            })
            .min();
        let (state, reason) = decide(&steps, search_failure);
        if state == RunState::NeedsAttention || waiting.is_none() {
            ctx.session.close(false).await;
            let outcome = self.finish(&run, state, reason).await?;
            if matches!(state, RunState::Succeeded | RunState::SucceededWithWarnings)
                && let Action::ExportPst(action) = ctx.job.action()
                && let Some(retention) = action.retention
            {
                export::apply_retention(&ctx, retention).await;
            }
            return Ok(outcome);
        }
        let next = waiting.unwrap_or_else(|| ctx.now());
        ctx.session.close(false).await;
        let reason = format!("steps wait for a retry at {}", next.to_rfc3339());
        store
            .schedule_run_retry(id, next, Some(&reason), ctx.now())
            .await
            .map_err(RunError::store(id))?;
        tracing::info!(run = %id, next = %next, "run waits for a retry");
        Ok(RunOutcome {
            run: id,
            state: RunState::WaitingRetry,
            reason: Some(reason),
            next_attempt_at: Some(next),
        })
    }

    /// Rebuilds the job from the version the run was queued with. `Err` is the run's reason.
    async fn load_job(&self, run: &Run, config: &Config) -> Result<Job, String> {
        let version = self
            .inner
            .store
            .get_job_version(run.job_version_id)
            .await
            .map_err(|e| format!("job version {}: {e}", run.job_version_id))?;
        job_from_version(config, &version.file, &version.spec_json)
    }

    /// On first execution: opens the session, lists its mailboxes, resolves the selectors and
    /// creates the steps. `Ok(Err(reason))` fails the run (nothing matched, the server refused).
    async fn create_steps(&self, ctx: &RunCtx) -> Result<Result<Vec<Step>, String>, RunError> {
        let id = ctx.run.id;
        let selection = ctx.job.selection();
        let new_steps = if selection.is_organization_wide() {
            vec![select::organization_step()]
        } else {
            let all = match list_mailboxes_with_retry(ctx).await {
                Ok(all) => all,
                Err(e) => return Ok(Err(format!("cannot list the mailboxes: {}", e.message))),
            };
            let chosen = match select::resolve(selection, &all) {
                Ok(c) => c,
                Err(e) => return Ok(Err(e.to_string())),
            };
            match ctx.job.action() {
                Action::BulkRestore(_) => vec![select::bulk_step(&chosen)],
                _ => select::per_mailbox_steps(&chosen),
            }
        };
        let steps = self
            .inner
            .store
            .create_steps(id, &new_steps, ctx.now())
            .await
            .map_err(RunError::store(id))?;
        tracing::info!(run = %id, steps = steps.len(), "steps created");
        Ok(Ok(steps))
    }

    /// Device-code sign-in before (or after a refusal during) the steps ([`sign_in`]): the
    /// run's outcome when it parks for the operator; `None` to go on. When no code can be had,
    /// the steps still waiting to send a restore fail with the reason.
    async fn sign_in_gate(
        &self,
        ctx: &RunCtx,
        steps: &[Step],
    ) -> Result<Option<RunOutcome>, RunError> {
        let id = ctx.run.id;
        match sign_in::prepare(ctx, steps).await? {
            SignIn::NotNeeded | SignIn::Ready => Ok(None),
            SignIn::Parked(reason) => {
                // The code belongs to this session: kept for the execution after `--continue`.
                ctx.session.close(true).await;
                self.finish(&ctx.run, RunState::NeedsAttention, Some(reason))
                    .await
                    .map(Some)
            }
            SignIn::Failed(reason) => {
                tracing::warn!(run = %id, reason = %reason, "device code sign-in failed");
                let error = crate::store::StepErrorRecord {
                    class: ErrorClass::Auth,
                    code: None,
                    message: reason,
                };
                for step in steps.iter().filter(|s| s.state == StepState::Pending) {
                    self.inner
                        .store
                        .set_step_state(step.id, StepState::Failed, Some(&error), ctx.now())
                        .await
                        .map_err(RunError::store(id))?;
                }
                Ok(None)
            }
        }
    }

    /// Sessions this run left open in an earlier execution: the newest one a non-finished step
    /// works in (or the run's device code belongs to) is adopted (a download resumes in it, a
    /// restore is followed or sent in it); the others are stopped.
    async fn adopt_or_stop_sessions(&self, ctx: &RunCtx, steps: &[Step]) -> Result<(), RunError> {
        let id = ctx.run.id;
        let open = self
            .inner
            .store
            .list_open_sessions(Some(id))
            .await
            .map_err(RunError::store(id))?;
        let code_session = if sign_in::device_code(&ctx.job).is_some() {
            let events = self
                .inner
                .store
                .list_run_events(id)
                .await
                .map_err(RunError::store(id))?;
            sign_in::code_session(&events).map(|u| u.to_string())
        } else {
            None
        };
        let needed = |sid: &str| {
            code_session
                .as_deref()
                .is_some_and(|c| c.eq_ignore_ascii_case(sid))
                || steps
                    .iter()
                    .any(|s| !s.state.is_terminal() && s.restore_session_id.as_deref() == Some(sid))
        };
        let adopt = open
            .iter()
            .rev()
            .find(|s| needed(&s.id))
            .map(|s| s.id.clone());
        for s in &open {
            let Ok(uuid) = Uuid::parse_str(&s.id) else {
                continue;
            };
            if Some(&s.id) == adopt.as_ref() && ctx.session.adopt(uuid, &ctx.stop.token).await {
                continue;
            }
            if Some(&s.id) != adopt.as_ref() {
                stop_session(
                    &self.inner.store,
                    &ctx.client,
                    uuid,
                    self.inner.options.clock.as_ref(),
                )
                .await;
            }
        }
        Ok(())
    }

    /// Whether a non-finished step of the run works in a session (a restore to follow, a
    /// download to resume).
    async fn session_needed(&self, id: RunId) -> bool {
        match self.inner.store.list_steps(id).await {
            Ok(steps) => steps.iter().any(|s| {
                matches!(
                    s.state,
                    StepState::Submitting
                        | StepState::Submitted
                        | StepState::Downloading
                        | StepState::Verifying
                )
            }),
            Err(_) => true,
        }
    }

    /// The run stopped early for `reason`.
    async fn stopped(&self, ctx: &RunCtx, reason: StopReason) -> Result<RunOutcome, RunError> {
        let id = ctx.run.id;
        if matches!(reason, StopReason::Cancelled | StopReason::Timeout) {
            self.stop_operations(ctx, reason).await?;
        }
        match reason {
            StopReason::Cancelled => {
                ctx.session.close(false).await;
                self.finish(
                    &ctx.run,
                    RunState::Cancelled,
                    Some("cancelled by operator".into()),
                )
                .await
            }
            StopReason::Timeout => {
                ctx.session.close(false).await;
                self.finish(&ctx.run, RunState::Failed, Some("timeout".into()))
                    .await
            }
            StopReason::Shutdown => {
                let keep = self.session_needed(id).await;
                ctx.session.close(keep).await;
                let _ = self
                    .inner
                    .store
                    .release_lease(id, &self.inner.options.owner, ctx.now())
                    .await;
                tracing::info!(run = %id, "run interrupted by shutdown; it resumes at the next start");
                Ok(RunOutcome {
                    run: id,
                    state: RunState::Running,
                    reason: Some("interrupted by shutdown".into()),
                    next_attempt_at: None,
                })
            }
            StopReason::LeaseLost => {
                ctx.session.close(true).await;
                tracing::warn!(run = %id, "lease lost: another owner took the run");
                Ok(RunOutcome {
                    run: id,
                    state: RunState::Running,
                    reason: Some("lease lost".into()),
                    next_attempt_at: None,
                })
            }
        }
    }

    /// A cancelled or timed-out run stops the restores it is still following: their operation
    /// sessions (reading a) are stopped on the server (the explore session follows when the
    /// run's session is closed), and the steps fail with the reason.
    async fn stop_operations(&self, ctx: &RunCtx, reason: StopReason) -> Result<(), RunError> {
        let id = ctx.run.id;
        let why = match reason {
            StopReason::Timeout => "restore stopped: the run timed out",
            _ => "restore stopped: the run was cancelled",
        };
        for step in self
            .inner
            .store
            .list_steps(id)
            .await
            .map_err(RunError::store(id))?
        {
            if step.state != StepState::Submitted {
                continue;
            }
            if let Some(op) = step
                .remote_operation_id
                .as_deref()
                .filter(|op| Some(*op) != step.restore_session_id.as_deref())
                .and_then(|op| Uuid::parse_str(op).ok())
                && let Err(e) = ctx.client.stop_restore_session(op).await
            {
                tracing::warn!(run = %id, operation = %op, error = %e, "cannot stop the restore operation");
            }
            let error = crate::store::StepErrorRecord {
                class: crate::store::ErrorClass::Permanent,
                code: None,
                message: why.to_string(),
            };
            self.inner
                .store
                .set_step_state(step.id, StepState::Failed, Some(&error), ctx.now())
                .await
                .map_err(RunError::store(id))?;
        }
        Ok(())
    }

    /// Records the run's final (or `needs_attention`) state, with the notifications it raises
    /// (same transaction), and queues the run's last heartbeat ping.
    async fn finish(
        &self,
        run: &Run,
        state: RunState,
        reason: Option<String>,
    ) -> Result<RunOutcome, RunError> {
        self.finish_as(run, state, reason, false).await
    }

    /// [`Engine::finish`]; `stale`: the freshness guard refused the run (a `stale` event
    /// instead of `failed`).
    async fn finish_as(
        &self,
        run: &Run,
        state: RunState,
        reason: Option<String>,
        stale: bool,
    ) -> Result<RunOutcome, RunError> {
        export::discard_partials(&self.inner.store, run.id, self.inner.options.clock.as_ref())
            .await?;
        // The job's `spec.notify` when its version still loads, else the config's defaults.
        let config = self.config();
        let job = self.load_job(run, &config).await.ok();
        let routing = config
            .notifications
            .routing_for(job.as_ref().and_then(Job::notify));
        self.inner
            .store
            .set_run_state_notifying(
                run.id,
                state,
                reason.as_deref(),
                &routing,
                stale,
                self.now(),
            )
            .await
            .map_err(RunError::store(run.id))?;
        if let Some(pinger) = self.take_pinger(run.id) {
            pinger.send(match state {
                RunState::Succeeded | RunState::SucceededWithWarnings => Ping::Success,
                _ => Ping::Fail(format!(
                    "run {} of job {} is {state}: {}",
                    run.id,
                    run.job_name,
                    reason.as_deref().unwrap_or("no reason recorded")
                )),
            });
        }
        match state {
            RunState::Succeeded | RunState::SucceededWithWarnings => {
                tracing::info!(run = %run.id, job = %run.job_name, state = %state, "run finished");
            }
            _ => {
                tracing::warn!(run = %run.id, job = %run.job_name, state = %state, reason = reason.as_deref().unwrap_or(""), "run finished");
            }
        }
        Ok(RunOutcome {
            run: run.id,
            state,
            reason,
            next_attempt_at: None,
        })
    }

    /// Starts the heartbeat of an execution of `run` when its job has `spec.heartbeat`: the
    /// pinger sends `URL/start` now and the final ping when the run finishes. A URL that cannot
    /// be read is a warning, never a failure of the run.
    fn start_heartbeat(&self, run: &Run, job: &Job, secrets: &SecretContext) {
        let Some(reference) = job.heartbeat() else {
            return;
        };
        let url = match reference.resolve(secrets) {
            Ok(url) => url,
            Err(e) => {
                tracing::warn!(run = %run.id, job = %job.name(), error = %e, "heartbeat URL unreadable; no pings for this run");
                return;
            }
        };
        let pinger = Pinger::start(
            &self.inner.pings,
            self.inner.http.clone(),
            url,
            job.name().to_string(),
        );
        pinger.send(Ping::Start);
        self.inner
            .heartbeats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(run.id, pinger);
    }

    /// Waits until the heartbeat pings queued so far are sent (each is bounded, see
    /// [`heartbeat::TIMEOUT`]), for a process about to exit (`run --foreground`).
    pub async fn wait_heartbeats(&self) {
        self.inner.pings.close();
        self.inner.pings.wait().await;
        self.inner.pings.reopen();
    }

    /// Removes the run's pinger (its task ends once its pings are out).
    fn take_pinger(&self, id: RunId) -> Option<Pinger> {
        self.inner
            .heartbeats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id)
    }
}

/// Rebuilds a [`Job`] from a stored version: the normalised spec is a complete job document
/// (JSON is YAML), validated again against the current config. `Err` says why it cannot be.
pub fn job_from_version(
    config: &Config,
    file: &std::path::Path,
    spec_json: &serde_json::Value,
) -> Result<Job, String> {
    let text = spec_json.to_string();
    let ctx = ValidationContext::new(config);
    let report = jobs::parse_str(&text, file, &ctx);
    let errors: Vec<String> = report.all_errors().map(|e| e.to_string()).collect();
    if !errors.is_empty() {
        return Err(format!(
            "the job version this run was queued with no longer validates: {}",
            errors.join("; ")
        ));
    }
    report
        .jobs()
        .next()
        .cloned()
        .ok_or_else(|| format!("{}: the stored job version holds no job", file.display()))
}

/// The run's state from its steps: any `in_doubt` → `needs_attention`; any `failed` →
/// `failed` (reason: the failed mailboxes and first error); any `warning` →
/// `succeeded_with_warnings`; else `succeeded`.
pub(crate) fn decide(steps: &[Step], extra_failure: Option<String>) -> (RunState, Option<String>) {
    let label = |s: &Step| {
        s.mailbox_email.clone().unwrap_or_else(|| {
            s.mailbox_name
                .clone()
                .unwrap_or_else(|| format!("step {}", s.seq))
        })
    };
    let in_doubt: Vec<String> = steps
        .iter()
        .filter(|s| s.state == StepState::InDoubt)
        .map(label)
        .collect();
    if !in_doubt.is_empty() {
        return (
            RunState::NeedsAttention,
            Some(format!(
                "restore outcome unknown for {}; decide with `restorectl resolve {} --resend | --mark-done | --mark-failed`",
                in_doubt.join(", "),
                steps[0].run_id
            )),
        );
    }
    let failed: Vec<&Step> = steps
        .iter()
        .filter(|s| {
            !matches!(
                s.state,
                StepState::Done | StepState::Warning | StepState::Skipped
            )
        })
        .collect();
    if !failed.is_empty() {
        let first = failed
            .iter()
            .find_map(|s| s.error_message.clone())
            .unwrap_or_else(|| "not finished".into());
        let names: Vec<String> = failed.iter().map(|s| label(s)).collect();
        return (
            RunState::Failed,
            Some(format!(
                "{} of {} steps failed ({}): {first}",
                failed.len(),
                steps.len(),
                names.join(", ")
            )),
        );
    }
    if let Some(e) = extra_failure {
        return (RunState::Failed, Some(e));
    }
    if steps.iter().any(|s| s.state == StepState::Warning) {
        let n = steps
            .iter()
            .filter(|s| s.state == StepState::Warning)
            .count();
        return (
            RunState::SucceededWithWarnings,
            Some(format!("{n} step(s) finished with warnings")),
        );
    }
    (RunState::Succeeded, None)
}
