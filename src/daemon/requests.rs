//! Operator requests (SPEC §6): `restorectl run`, `cancel` and `resolve` write a request row;
//! the daemon consumes it within [`REQUEST_POLL`] (SPEC: within 2 s) and records what it did or
//! why it refused, which the CLI shows (`run --wait` follows the queued run).
//!
//! - `run` queues a manual run of the job's active version now, whatever its schedule or
//!   `suspend` (a job that is unknown, removed or has never been valid is refused);
//! - `cancel` cancels a queued run at once, or asks the run's owner to stop a running one;
//! - `resolve` hands the operator's decision about `in_doubt` steps to the run engine; a
//!   `resolve` without a decision (`resolve --continue`) continues a run that waits for a
//!   device-code sign-in.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::executor::RunExecutor;
use super::reconcile::JobTable;
use crate::schedule::Clock;
use crate::store::{
    CancelOutcome, NewRun, OperatorRequest, RequestKind, RunState, Store, StoreError, Trigger,
};

/// How often pending requests are looked for.
pub const REQUEST_POLL: Duration = Duration::from_secs(1);

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestsReport {
    pub consumed: usize,
    /// A manual run was queued (the executor should look now).
    pub queued: bool,
}

/// Consumes operator requests.
pub struct RequestConsumer {
    store: Store,
    clock: Arc<dyn Clock>,
    executor: Option<Arc<dyn RunExecutor>>,
}

impl std::fmt::Debug for RequestConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestConsumer")
            .field("executor", &self.executor.is_some())
            .finish_non_exhaustive()
    }
}

impl RequestConsumer {
    /// A consumer over `store`; `resolve` requests go to `executor`.
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        executor: Option<Arc<dyn RunExecutor>>,
    ) -> Self {
        RequestConsumer {
            store,
            clock,
            executor,
        }
    }

    /// Polls every [`REQUEST_POLL`] until `cancel`.
    pub async fn run(
        self,
        table: watch::Receiver<Arc<JobTable>>,
        wake: Arc<Notify>,
        cancel: CancellationToken,
    ) {
        loop {
            let current = Arc::clone(&table.borrow());
            match self.consume_pending(&current).await {
                Ok(report) if report.queued => wake.notify_waiters(),
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "reading operator requests failed"),
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(REQUEST_POLL) => {}
            }
        }
    }

    /// Consumes every pending request once (library entry for tests).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the state database fails; unconsumed requests stay pending.
    pub async fn consume_pending(&self, table: &JobTable) -> Result<RequestsReport, StoreError> {
        let mut report = RequestsReport::default();
        for request in self.store.list_pending_requests().await? {
            let now = self.clock.now();
            let consumed = match request.kind {
                // The run is queued in the transaction that consumes the request.
                RequestKind::Run => self.manual_run(&request, table, now).await,
                RequestKind::Cancel => {
                    let result = self.cancel(&request, now).await?;
                    self.store
                        .consume_request(request.id, &result, None, now)
                        .await
                        .map(|row| (row, None))
                }
                RequestKind::Resolve => {
                    let result = self.resolve(&request).await;
                    self.store
                        .consume_request(request.id, &result, None, now)
                        .await
                        .map(|row| (row, None))
                }
            };
            let (result, run) = match consumed {
                Ok((row, run)) => (row.result.unwrap_or_default(), run),
                // Consumed meanwhile (another consumer): nothing to record twice.
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            };
            tracing::info!(
                request = request.id,
                kind = %request.kind,
                job = request.job_name.as_deref().unwrap_or(""),
                run = %run.or(request.run_id).map(|r| r.to_string()).unwrap_or_default(),
                result = %result,
                "operator request consumed"
            );
            report.consumed += 1;
            report.queued |= run.is_some();
        }
        Ok(report)
    }

    async fn manual_run(
        &self,
        request: &OperatorRequest,
        table: &JobTable,
        now: DateTime<Utc>,
    ) -> Result<(OperatorRequest, Option<crate::store::RunId>), StoreError> {
        let refuse = |result: String| async move {
            self.store
                .consume_request(request.id, &result, None, now)
                .await
                .map(|row| (row, None))
        };
        let Some(name) = request.job_name.as_deref() else {
            return refuse("refused: the request names no job".into()).await;
        };
        let Some(active) = table.get(name) else {
            return refuse(format!(
                "refused: job {name} is unknown, removed, or has no valid version to run"
            ))
            .await;
        };
        let (row, queued) = self
            .store
            .enqueue_requested_run(
                request.id,
                &NewRun {
                    job_name: name,
                    job_version_id: active.version_id,
                    spec_hash: active.job.spec_hash(),
                    trigger: Trigger::Manual,
                    scheduled_for: now,
                    state: RunState::Queued,
                    reason: request
                        .requested_by
                        .as_deref()
                        .map(|_| "requested by an operator"),
                    timeout: Some(active.job.run_timeout()),
                },
                now,
            )
            .await?;
        Ok((row, queued.map(|r| r.id)))
    }

    async fn cancel(
        &self,
        request: &OperatorRequest,
        now: DateTime<Utc>,
    ) -> Result<String, StoreError> {
        let Some(run) = request.run_id else {
            return Ok("refused: the request names no run".into());
        };
        let who = request.requested_by.as_deref().unwrap_or("an operator");
        match self
            .store
            .request_cancel(run, &format!("cancelled by {who}"), now)
            .await
        {
            Ok(CancelOutcome::Cancelled) => Ok(format!("run {run} cancelled")),
            Ok(CancelOutcome::Requested) => Ok(format!(
                "run {run}: cancellation requested; the run stops at its next checkpoint"
            )),
            Ok(CancelOutcome::AlreadyFinished(state)) => {
                Ok(format!("refused: run {run} already finished ({state})"))
            }
            Err(e) if e.is_not_found() => Ok(format!("refused: no run {run}")),
            Err(e) => Err(e),
        }
    }

    async fn resolve(&self, request: &OperatorRequest) -> String {
        let Some(run) = request.run_id else {
            return "refused: the request names no run".into();
        };
        let Some(executor) = &self.executor else {
            return "refused: this daemon runs without a run engine".into();
        };
        let Some(decision) = request.decision else {
            return match executor.apply_continue(run).await {
                Ok(done) => done,
                Err(e) => format!("refused: {e}"),
            };
        };
        match executor.apply_resolution(run, decision).await {
            Ok(done) => done,
            Err(e) => format!("refused: {e}"),
        }
    }
}
