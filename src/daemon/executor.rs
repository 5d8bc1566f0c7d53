//! The executor seam: the daemon claims due runs and hands them to the run engine.
//!
//! [`RunExecutor`] is what the daemon needs from an engine: start-up recovery, "claim the next
//! due run and drive it until it stops", and applying an operator's decision about `in_doubt`
//! steps. The run engine ([`crate::exec::Engine`]) implements it ([`engine_factory`] builds it);
//! the daemon never looks inside a run, and its tests can run without one.
//!
//! [`run_workers`] runs a bounded number of claim loops (one per restore session the configured
//! servers allow at once: a run holds a session, so more workers would only wait). A worker that
//! finds nothing due waits for a wake-up from the scheduler or the request consumer; idle
//! workers also take turns polling after [`IDLE_POLL`] (runs waiting for a retry become due by
//! time alone), so an idle daemon polls once per [`IDLE_POLL`] however many workers it has. On shutdown the
//! same token that stops the loops is handed to the engine, which checkpoints downloads, keeps
//! the sessions a resume needs, releases its leases and returns.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::tasks::Tasks;
use crate::config::Config;
use crate::store::{Decision, RunId, RunState};

/// How long an idle worker waits before it looks for due runs again.
pub const IDLE_POLL: Duration = Duration::from_secs(2);
/// Pause after an engine error (the database failing) before the worker tries again.
const ERROR_PAUSE: Duration = Duration::from_secs(5);
/// Upper bound of claim loops, whatever the servers allow.
const MAX_WORKERS: usize = 16;

/// A boxed future, so [`RunExecutor`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An error of the run engine, as the daemon sees it: at start-up it stops the daemon (a
/// configuration problem exits 78), later it is logged and the daemon keeps going.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecutorError {
    /// The run engine's error (it names its subject: run, step, server).
    #[error(transparent)]
    Engine(#[from] crate::exec::RunError),
}

impl ExecutorError {
    /// Whether the configuration is at fault (a server's `caFile`).
    pub fn is_config(&self) -> bool {
        match self {
            ExecutorError::Engine(e) => e.is_config(),
        }
    }
}

/// How an execution of a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    pub run: RunId,
    /// The run's job (for the log line), when known.
    pub job: Option<String>,
    /// The run's state afterwards (`running` when the engine stopped for a shutdown).
    pub state: RunState,
    pub reason: Option<String>,
}

/// What the daemon needs from a run engine.
pub trait RunExecutor: Send + Sync + 'static {
    /// Start-up recovery (runs, sessions, downloads, `submitting` steps left by a crash). Returns
    /// a one-line summary for the log.
    fn recover(&self) -> BoxFuture<'_, Result<String, ExecutorError>>;

    /// Claims the next due run and drives it until it stops: a final state, `waiting_retry`,
    /// `needs_attention`, or `shutdown` cancelled. `None` when nothing is due.
    fn execute_next<'a>(
        &'a self,
        shutdown: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<Option<Executed>, ExecutorError>>;

    /// Applies an operator's decision about a run's `in_doubt` steps. Returns what was done.
    fn apply_resolution(
        &self,
        run: RunId,
        decision: Decision,
    ) -> BoxFuture<'_, Result<String, ExecutorError>>;

    /// Continues a run that waits for a device-code sign-in (`resolve --continue`). Returns
    /// what was done.
    fn apply_continue(&self, run: RunId) -> BoxFuture<'_, Result<String, ExecutorError>>;

    /// Signs out of every VB365 server (`POST /v8/token/logout`) at the daemon's stop, each
    /// bounded by `limit`; failures are logged only.
    fn logout(&self, limit: std::time::Duration) -> BoxFuture<'_, ()>;
}

/// The run engine behind the seam.
impl RunExecutor for crate::exec::Engine {
    fn recover(&self) -> BoxFuture<'_, Result<String, ExecutorError>> {
        Box::pin(async move {
            let r = crate::exec::Engine::recover(self, self.now()).await?;
            Ok(format!(
                "{} lease(s) expired, {} interrupted run(s) to resume, {} restore session(s) \
                 stopped, {} kept for resuming downloads, {} orphaned by lost explore answers \
                 stopped",
                r.expired_leases,
                r.runs.len(),
                r.stopped_sessions.len(),
                r.kept_sessions.len(),
                r.orphans_stopped
            ))
        })
    }

    fn execute_next<'a>(
        &'a self,
        shutdown: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<Option<Executed>, ExecutorError>> {
        Box::pin(async move {
            let outcome = crate::exec::Engine::execute_next(self, shutdown).await?;
            let Some(o) = outcome else {
                return Ok(None);
            };
            let job = self.store().get_run(o.run).await.ok().map(|r| r.job_name);
            Ok(Some(Executed {
                run: o.run,
                job,
                state: o.state,
                reason: o.reason,
            }))
        })
    }

    fn apply_resolution(
        &self,
        run: RunId,
        decision: Decision,
    ) -> BoxFuture<'_, Result<String, ExecutorError>> {
        Box::pin(async move {
            let r = crate::exec::Engine::apply_resolution(self, run, decision).await?;
            Ok(format!(
                "decision {decision} recorded on {} in_doubt step(s) of run {}",
                r.steps.len(),
                r.run
            ))
        })
    }

    fn logout(&self, limit: std::time::Duration) -> BoxFuture<'_, ()> {
        Box::pin(crate::exec::Engine::logout_all(self, limit))
    }

    fn apply_continue(&self, run: RunId) -> BoxFuture<'_, Result<String, ExecutorError>> {
        Box::pin(async move {
            let r = crate::exec::Engine::apply_continue(self, run).await?;
            Ok(format!(
                "run {} continues with the signed-in device code",
                r.run
            ))
        })
    }
}

/// The factory the binary uses: the run engine for the config's servers, claiming runs as the
/// daemon instance, following the config a reload publishes, on the daemon's clock.
pub fn engine_factory() -> super::ExecutorFactory {
    Box::new(|store, config, owner, clock| {
        // On PostgreSQL other replicas may work on the same database (SPEC §10).
        let shared = store.backend() == crate::store::Backend::Postgres;
        let options = crate::exec::EngineOptions::from_config(&config.borrow(), owner)
            .with_clock(Arc::clone(clock))
            .shared(shared);
        let engine = crate::exec::Engine::with_live_config(store.clone(), config.clone(), options)?;
        Ok(Arc::new(engine) as Arc<dyn RunExecutor>)
    })
}

/// How many claim loops to run: the restore sessions all servers allow at once (1..=16).
pub fn worker_count(config: &Config) -> usize {
    let sessions: usize = config
        .servers
        .values()
        .map(|s| usize::try_from(s.max_concurrent_sessions).unwrap_or(MAX_WORKERS))
        .sum();
    sessions.clamp(1, MAX_WORKERS)
}

/// Starts `workers` claim loops (tasks named `executor`); they stop when `cancel` is cancelled
/// and the run they drive has returned.
pub fn run_workers(
    executor: Arc<dyn RunExecutor>,
    workers: usize,
    wake: Arc<Notify>,
    cancel: CancellationToken,
    tasks: &Tasks,
) {
    let poll_turn = Arc::new(tokio::sync::Mutex::new(()));
    for worker in 0..workers {
        let executor = Arc::clone(&executor);
        let wake = Arc::clone(&wake);
        let poll_turn = Arc::clone(&poll_turn);
        let cancel = cancel.clone();
        tasks.spawn("executor", async move {
            claim_loop(worker, executor.as_ref(), &wake, &poll_turn, &cancel).await;
        });
    }
}

async fn claim_loop(
    worker: usize,
    executor: &dyn RunExecutor,
    wake: &Notify,
    poll_turn: &tokio::sync::Mutex<()>,
    cancel: &CancellationToken,
) {
    while !cancel.is_cancelled() {
        let pause = match executor.execute_next(cancel).await {
            Ok(Some(done)) => {
                tracing::info!(
                    worker,
                    job = done.job.as_deref().unwrap_or(""),
                    run = %done.run,
                    state = %done.state,
                    reason = done.reason.as_deref().unwrap_or(""),
                    "run execution ended"
                );
                continue;
            }
            Ok(None) => None,
            Err(error) => {
                tracing::error!(worker, %error, "claiming or executing a run failed");
                Some(ERROR_PAUSE)
            }
        };
        // Idle: the worker holding the turn polls after IDLE_POLL; the others wait for a
        // wake-up or their turn (a worker busy with a run does not hold it).
        let timer = async {
            match pause {
                Some(pause) => tokio::time::sleep(pause).await,
                None => {
                    let _turn = poll_turn.lock().await;
                    tokio::time::sleep(IDLE_POLL).await;
                }
            }
        };
        tokio::select! {
            () = cancel.cancelled() => break,
            () = wake.notified() => {}
            () = timer => {}
        }
    }
}
