//! The history pruner: a daemon task that deletes finished runs beyond `history.keepFor` and
//! `history.keepRuns` (docs/daemon.md "Run history"; which runs qualify is decided by
//! [`crate::store::history`]).
//!
//! A pass runs at start-up and then every [`PRUNE_EVERY`]. It deletes at most [`BATCH`] runs per
//! write transaction and pauses [`PAUSE`] between batches, so a first pass over years of history
//! never holds the write lock for long and lets the scheduler and the runs write in between.
//! Each pass with deletions logs one line and adds to `restorectl_history_pruned_runs_total`. A
//! failing pass is logged and retried at the next period; it never stops the daemon.

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::AppHandle;
use crate::config::HistoryConfig;
use crate::store::{HistoryPolicy, PruneCursor, PruneReport, Store, StoreError};

/// How often a pruning pass runs (the first one at start-up).
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Runs deleted per write transaction.
pub const BATCH: u32 = 100;
/// The pause between two batches of a pass.
pub const PAUSE: Duration = Duration::from_millis(50);

/// Prunes at start-up and every [`PRUNE_EVERY`] until `cancel`.
pub(super) async fn prune_loop(app: AppHandle, cancel: CancellationToken) {
    metrics::counter!("restorectl_history_pruned_runs_total").increment(0);
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let history = app.config.borrow().history;
        let started = std::time::Instant::now();
        match prune_pass(&app.store, &history, app.clock.now(), &cancel).await {
            Ok(report) if report.runs > 0 => {
                metrics::counter!("restorectl_history_pruned_runs_total").increment(report.runs);
                tracing::info!(
                    runs = report.runs,
                    steps = report.steps,
                    events = report.events,
                    other_rows = report.other_rows,
                    keep_for = %humantime::format_duration(history.keep_for),
                    keep_runs = history.keep_runs,
                    took_ms = started.elapsed().as_millis() as u64,
                    "run history pruned"
                );
            }
            Ok(_) => tracing::debug!("run history: nothing to prune"),
            Err(error) => {
                tracing::warn!(%error, "pruning the run history failed; retrying at the next period")
            }
        }
    }
}

/// One pass: deletes every run the policy of `history` at `now` allows, in batches of
/// [`BATCH`], pausing [`PAUSE`] between them; stops early (with what it did) on `cancel`.
///
/// # Errors
///
/// [`StoreError`] when the state database fails; the batches committed before stay deleted.
pub async fn prune_pass(
    store: &Store,
    history: &HistoryConfig,
    now: chrono::DateTime<Utc>,
    cancel: &CancellationToken,
) -> Result<PruneReport, StoreError> {
    let keep_for = chrono::Duration::from_std(history.keep_for).unwrap_or(chrono::Duration::MAX);
    let policy = HistoryPolicy {
        cutoff: now
            .checked_sub_signed(keep_for)
            .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC),
        keep_runs: history.keep_runs,
    };
    let mut cursor = PruneCursor::default();
    let mut total = PruneReport::default();
    loop {
        let (report, done) = store
            .prune_history_batch(&policy, &mut cursor, BATCH)
            .await?;
        total.add(&report);
        if done || cancel.is_cancelled() {
            return Ok(total);
        }
        tokio::select! {
            () = cancel.cancelled() => return Ok(total),
            () = tokio::time::sleep(PAUSE) => {}
        }
    }
}
