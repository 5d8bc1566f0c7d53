//! Leadership among several replicas (SPEC §10, docs/ha.md): which daemon applies the job files,
//! enqueues the scheduled fires and consumes the operator requests.
//!
//! Every replica executes runs; exactly one at a time leads. [`leadership_loop`] takes or renews
//! the leadership lease in the store ([`Store::try_lead`]) every third of the lease (at most
//! every 2 s) and publishes on a watch channel whether this replica leads. The leader stops
//! acting as one on its own clock: once [`margin`] before its lease ends without a renewal
//! (the database is away, the replica is cut off), it steps down, so it has stopped before any
//! other replica can take the lease. [`duties`] runs the leader's work (the job-directory
//! watcher and reconcile loop, the scheduler, the request consumer, the notification outbox's
//! deliverer, the history pruner) while the channel says so, and stops it when leadership goes.
//! At a graceful stop the leader resigns, and another replica takes over at its next attempt
//! instead of after the lease.
//!
//! On SQLite the lone daemon (single-instance lock) forces the lead at start and keeps it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch as channel;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::reconcile::{JobTable, ReconcileReport, Reconciler};
use super::watch::{JobDirWatcher, WatchOptions};
use super::{AppHandle, DaemonError, executor::RunExecutor, fires, requests, tasks::Tasks};

/// How long before its lease ends a leader that could not renew steps down (the same margin as
/// a run's lease, [`crate::exec::options::lease_margin`]).
pub fn margin(lease: Duration) -> Duration {
    crate::exec::options::lease_margin(lease)
}

/// How often the lease is taken or renewed: a third of the lease, at most every 2 s.
pub fn interval(lease: Duration) -> Duration {
    (lease / 3).clamp(Duration::from_millis(100), Duration::from_secs(2))
}

/// What one attempt at the lead found.
enum Attempt {
    /// This replica leads and may act as leader until then (its own clock).
    Leads(Instant),
    /// Another replica leads.
    Other,
    /// The store did not answer.
    Failed,
}

async fn attempt(app: &AppHandle, lease: Duration, force: bool) -> Attempt {
    let started = Instant::now();
    match app
        .store
        .try_lead(&app.instance, lease, force, app.clock.now())
        .await
    {
        Ok(row) if row.holder == *app.instance => Attempt::Leads(started + lease - margin(lease)),
        Ok(_) => Attempt::Other,
        Err(error) => {
            tracing::warn!(%error, "cannot take or renew the leadership lease");
            Attempt::Failed
        }
    }
}

/// Takes the lead once at start (see [`leadership_loop`] for the rest). Returns until when this
/// replica may act as leader, `None` when it does not lead.
pub async fn first_attempt(app: &AppHandle, lease: Duration, force: bool) -> Option<Instant> {
    match attempt(app, lease, force).await {
        Attempt::Leads(until) => Some(until),
        Attempt::Other | Attempt::Failed => None,
    }
}

/// Keeps taking or renewing the lead until `cancel`, publishing on `leading` whether this
/// replica leads; resigns at the end. `valid_until` is the result of [`first_attempt`].
pub async fn leadership_loop(
    app: AppHandle,
    lease: Duration,
    force: bool,
    mut valid_until: Option<Instant>,
    leading: channel::Sender<bool>,
    cancel: CancellationToken,
) {
    let every = interval(lease);
    loop {
        // Wait for the next attempt; a leader whose validity ends meanwhile steps down first.
        let next = Instant::now() + every;
        if let Some(until) = valid_until.filter(|u| *u < next) {
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep_until(until) => {}
            }
            step_down(
                &leading,
                &mut valid_until,
                "its lease could not be renewed in time",
            );
        }
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep_until(next) => {}
        }
        // The attempt may hang while the database is away: bound it by what is left of the
        // lease, so a leader that cannot renew still steps down in time.
        let result = match valid_until {
            Some(until) => tokio::select! {
                () = cancel.cancelled() => break,
                r = attempt(&app, lease, force) => Some(r),
                () = tokio::time::sleep_until(until) => None,
            },
            None => tokio::select! {
                () = cancel.cancelled() => break,
                r = attempt(&app, lease, force) => Some(r),
            },
        };
        match result {
            Some(Attempt::Leads(until)) => {
                valid_until = Some(until);
                if !*leading.borrow() {
                    tracing::info!(instance = %app.instance, "this replica leads now: it applies the job files, enqueues scheduled fires and consumes operator requests");
                    leading.send_replace(true);
                }
            }
            Some(Attempt::Other) => step_down(&leading, &mut valid_until, "another replica leads"),
            // Keep acting as leader only while the last renewal lasts.
            Some(Attempt::Failed) => {
                if valid_until.is_some_and(|u| Instant::now() >= u) {
                    step_down(
                        &leading,
                        &mut valid_until,
                        "its lease could not be renewed in time",
                    );
                }
            }
            None => step_down(
                &leading,
                &mut valid_until,
                "its lease could not be renewed in time",
            ),
        }
    }
    if *leading.borrow() {
        leading.send_replace(false);
    }
    match app
        .store
        .resign_leadership(&app.instance, app.clock.now())
        .await
    {
        Ok(true) => tracing::info!("gave up the lead for another replica"),
        Ok(false) => {}
        Err(error) => {
            tracing::warn!(%error, "cannot give up the lead; another replica takes it when the lease ends")
        }
    }
}

fn step_down(leading: &channel::Sender<bool>, valid_until: &mut Option<Instant>, why: &str) {
    *valid_until = None;
    if *leading.borrow() {
        tracing::warn!(
            why,
            "this replica no longer leads: it stops applying job files, enqueueing fires and consuming requests"
        );
        leading.send_replace(false);
    }
}

/// What the leader's work needs, built once.
pub struct DutyParts {
    pub executor: Option<Arc<dyn RunExecutor>>,
    pub watch: WatchOptions,
    pub table: channel::Sender<Arc<JobTable>>,
    pub tasks: Tasks,
    /// A watcher and reconciler whose first scan start-up already applied (the replica led
    /// from the start), used for the first term, and the token of that term (the watcher's
    /// parent: cancelled when the term ends).
    pub first: Option<(Reconciler, JobDirWatcher, CancellationToken)>,
}

/// Starts the watcher and applies the job directory (the first scan of a term).
///
/// # Errors
///
/// [`DaemonError`] when the directory cannot be watched or the scan cannot be applied.
pub async fn first_scan(
    app: &AppHandle,
    watch: &WatchOptions,
    tasks: &Tasks,
    cancel: CancellationToken,
) -> Result<(Reconciler, JobDirWatcher, ReconcileReport), DaemonError> {
    let config = Arc::clone(&app.config.borrow());
    let watcher = JobDirWatcher::start(&config.jobs_dir, watch, cancel, tasks)?;
    let mut reconciler = Reconciler::new(app.store.clone());
    let report = reconciler.rescan(&config, app.clock.now()).await?;
    Ok((reconciler, watcher, report))
}

/// Runs the leader's work whenever `leading` says this replica leads, until `cancel`.
pub async fn duties(
    app: AppHandle,
    mut parts: DutyParts,
    mut leading: channel::Receiver<bool>,
    cancel: CancellationToken,
) {
    loop {
        // Wait to lead.
        while !*leading.borrow_and_update() {
            tokio::select! {
                () = cancel.cancelled() => return,
                changed = leading.changed() => if changed.is_err() { return },
            }
        }
        let (reconciler, watcher, term) = match parts.first.take() {
            Some(first) => first,
            None => {
                let term = cancel.child_token();
                match first_scan(&app, &parts.watch, &parts.tasks, term.child_token()).await {
                    Ok((reconciler, watcher, report)) => {
                        super::log_reconcile(&report, true);
                        (reconciler, watcher, term)
                    }
                    Err(error) => {
                        tracing::error!(%error, "cannot apply the job directory as the new leader; retrying");
                        term.cancel();
                        tokio::select! {
                            () = cancel.cancelled() => return,
                            () = tokio::time::sleep(Duration::from_secs(2)) => {}
                        }
                        continue;
                    }
                }
            }
        };
        parts.table.send_replace(reconciler.table());
        let table_rx = parts.table.subscribe();
        // The term's components are daemon tasks like any other (named, supervised: a panic
        // stops the daemon); `term_tasks` only tells when those of this term have ended.
        let term_tasks = tokio_util::task::TaskTracker::new();
        parts.tasks.spawn(
            "reconcile",
            term_tasks.track_future(super::reconcile_loop(
                app.clone(),
                reconciler,
                watcher,
                parts.table.clone(),
                term.child_token(),
            )),
        );
        parts.tasks.spawn(
            "scheduler",
            term_tasks.track_future(
                fires::Scheduler::new(app.store.clone(), Arc::clone(&app.clock))
                    .with_notifications(app.config.clone())
                    .run(table_rx.clone(), Arc::clone(&app.wake), term.child_token()),
            ),
        );
        parts.tasks.spawn(
            "requests",
            term_tasks.track_future(
                requests::RequestConsumer::new(
                    app.store.clone(),
                    Arc::clone(&app.clock),
                    parts.executor.clone(),
                )
                .run(table_rx, Arc::clone(&app.wake), term.child_token()),
            ),
        );
        // The outbox is read without claiming its rows: one deliverer among the replicas, or
        // every notification would go out once per replica.
        parts.tasks.spawn(
            "notifications",
            term_tasks.track_future(
                crate::notify::Deliverer::new(
                    app.store.clone(),
                    app.config.clone(),
                    Arc::clone(&app.clock),
                )
                .run(term.child_token()),
            ),
        );
        // One pruner among the replicas: they would only contend for the same batches.
        parts.tasks.spawn(
            "history",
            term_tasks.track_future(super::history::prune_loop(app.clone(), term.child_token())),
        );
        term_tasks.close();
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                changed = leading.changed() => {
                    if changed.is_err() || !*leading.borrow_and_update() {
                        break;
                    }
                }
            }
        }
        term.cancel();
        term_tasks.wait().await;
        if cancel.is_cancelled() {
            return;
        }
    }
}
