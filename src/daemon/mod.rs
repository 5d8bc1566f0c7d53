//! The daemon (`restorectl daemon`, SPEC §4.2–§4.3, §6.1, §8): this module owns its lifecycle.
//! [`run`] reads like the start-up script (see docs/daemon.md):
//!
//! 1. check what the config needs before anything starts (`jobsDir` exists, every server's
//!    password can be read), open the state database and, on SQLite, take the single-instance
//!    lock (a second daemon on the same database exits naming the holder); on PostgreSQL
//!    register as one replica among any number (docs/ha.md); a configuration problem here or in
//!    step 3 (a server's `caFile`) is a [`DaemonError`] that [`DaemonError::is_config`]
//!    classifies, and the binary exits 78 for it;
//! 2. bind the health/metrics listener (a taken port fails start-up, not later);
//! 3. expire the run leases of a crashed predecessor (alone on SQLite: all foreign leases;
//!    among replicas only those of replicas proven dead) and let the run engine recover;
//! 4. try to take the lead ([`leader`]; forced on SQLite); the leader starts watching the job
//!    directory, scans it and applies it to the store;
//! 5. start the leadership loop and the leader's duties (reconcile loop, scheduler, request
//!    consumer, notification deliverer, history pruner: only while this replica leads), the
//!    executor workers, the HTTP server, the metrics refresher, the heartbeat and the watchdog;
//! 6. tell systemd `READY=1`;
//! 7. on the shutdown future (SIGTERM/SIGINT in the binary): `STOPPING=1`, cancel every task,
//!    wait at most `shutdownTimeout` for them (the engine checkpoints downloads and releases its
//!    leases), sign out of every VB365 server (`POST /v8/token/logout`, at most
//!    [`LOGOUT_TIMEOUT`] each, best effort), release the instance lock, close the database.
//!
//! Every task runs on one [`tasks::Tasks`] tracker with a child of one [`CancellationToken`];
//! none is detached, and a panic in any of them stops the daemon like the shutdown future does
//! (then [`run`] returns [`DaemonError::TaskPanicked`]).
//!
//! - [`leader`]: which replica leads, and the leader's duties;
//! - [`watch`]: the job-directory watcher ("rescan needed" signals);
//! - [`reconcile`]: a scan applied to the store; the table of active job versions;
//! - [`fires`]: the scheduler task, which turns due fires (and new one-shot specs) into queued
//!   runs and `missed`/`skipped` history (the fire arithmetic itself is [`crate::schedule`]);
//! - [`requests`]: operator requests (`run`, `cancel`, `resolve`);
//! - [`history`]: run-history retention (prunes finished runs in small batches);
//! - [`executor`]: the seam to the run engine and the bounded claim loops;
//! - [`http`]: `/healthz`, `/readyz`, `/metrics`; [`metrics`]: the series, from the store;
//! - [`systemd`]: readiness, status, watchdog; [`signals`]: SIGTERM/SIGINT/SIGHUP;
//! - [`reload`]: SIGHUP, and which settings a reload changes; [`tasks`]: task supervision;
//! - [`dev`]: `--dev` (the simulator and the example jobs).

pub mod dev;
pub mod executor;
pub mod fires;
pub mod history;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod reload;
pub mod requests;
pub mod signals;
pub mod systemd;
pub mod tasks;
pub mod watch;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, watch as channel};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::schedule::{Clock, SystemClock};
use crate::store::{Backend, DaemonInstance, InstanceInfo, OpenMode, Store, StoreError};
use executor::{ExecutorError, RunExecutor};
use reconcile::Reconciler;
use reconcile::{JobTable, ReconcileReport};
use tasks::Tasks;
use watch::{JobDirWatcher, WatchOptions};

/// How often the instance lock is heartbeated.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// A holder silent for this long is considered dead and taken over.
pub const INSTANCE_STALE_AFTER: Duration = Duration::from_secs(45);

/// Builds the run engine once the store is open and the instance id (the lease owner) known.
/// The engine reads the current config from the receiver (a reload publishes a new one there)
/// and its time from the daemon's clock.
pub type ExecutorFactory = Box<
    dyn FnOnce(
            &Store,
            &channel::Receiver<Arc<Config>>,
            &str,
            &Arc<dyn Clock>,
        ) -> Result<Arc<dyn RunExecutor>, ExecutorError>
        + Send,
>;

/// Called once the daemon is ready, with what a banner needs.
pub type OnReady = Box<dyn FnOnce(&ReadyInfo) + Send>;

/// What the daemon knows once it is ready.
#[derive(Debug, Clone)]
pub struct ReadyInfo {
    /// Where `/healthz`, `/readyz`, `/metrics` listen (`None`: `listen: off`).
    pub http: Option<SocketAddr>,
    pub instance: String,
    /// The replica name (`replicaName`, default `HOST-PID`).
    pub replica: String,
    /// Whether this replica led at start (always on SQLite); only the leader scanned.
    pub leader: bool,
    pub first_scan: ReconcileReport,
}

/// How the daemon runs beyond its config.
pub struct DaemonOptions {
    /// The wall clock (tests inject a manual one).
    pub clock: Arc<dyn Clock>,
    /// The run engine; `None` runs everything but execution (runs stay queued).
    pub executor: Option<ExecutorFactory>,
    /// Watcher tuning (debounce, poll mode); `None`: from the config.
    pub watch: Option<WatchOptions>,
    /// Called once ready (the `--dev` banner).
    pub on_ready: Option<OnReady>,
    /// The SIGHUP handler, installed early by the binary; `None`: installed at start-up.
    pub hangups: Option<signals::Hangups>,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            clock: Arc::new(SystemClock),
            executor: None,
            watch: None,
            on_ready: None,
            hangups: None,
        }
    }
}

impl std::fmt::Debug for DaemonOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonOptions")
            .field("executor", &self.executor.is_some())
            .field("watch", &self.watch)
            .finish_non_exhaustive()
    }
}

/// Bound of the sign-out from one VB365 server at the daemon's stop.
pub const LOGOUT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Errors that stop the daemon (start-up failures; at run time losing the instance lock or a
/// panicking task).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The config names something the daemon cannot use (`jobsDir`, a server password).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state database the config names cannot be opened, created or migrated.
    #[error("{}: database `{url}`: the state database cannot be used", .file.display())]
    Database {
        /// The config file.
        file: PathBuf,
        url: String,
        #[source]
        source: StoreError,
    },
    /// Another daemon holds the state database.
    #[error(
        "another restorectl daemon is using the state database {db}: pid {} on host {}, running \
         since {}, last heartbeat {}; stop it first (a crashed holder is taken over after {}s \
         without heartbeat)",
        holder.pid, holder.host, holder.started_at.to_rfc3339(), holder.heartbeat_at.to_rfc3339(),
        INSTANCE_STALE_AFTER.as_secs()
    )]
    AlreadyRunning {
        db: String,
        holder: Box<DaemonInstance>,
    },
    /// The state database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The health/metrics address cannot be bound.
    #[error("listen {addr}: cannot bind the health/metrics listener")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The job directory cannot be watched.
    #[error(transparent)]
    Watch(#[from] watch::WatchError),
    /// The run engine could not be built or could not recover.
    #[error(transparent)]
    Executor(#[from] ExecutorError),
    /// Another daemon took the instance lock over while this one ran (its heartbeat stalled).
    #[error("daemon instance {id} lost the state database lock to another daemon; stopping")]
    LockLost { id: String },
    /// A daemon task panicked (a bug); the daemon stopped so that it is restarted whole.
    #[error(
        "daemon task {task} panicked ({message}); stopped so the service manager restarts the daemon"
    )]
    TaskPanicked { task: &'static str, message: String },
}

impl DaemonError {
    /// Whether the configuration is at fault: fixing it, not restarting, helps (the binary
    /// exits 78 for these, which systemd's `RestartPreventExitStatus=78` does not restart).
    pub fn is_config(&self) -> bool {
        match self {
            DaemonError::Config(_) => true,
            // A database server that cannot be reached may come back: a restart may help. A
            // refused password, a missing database or a bad file is the config's problem.
            DaemonError::Database { source, .. } => !source.is_unavailable(),
            DaemonError::Executor(e) => e.is_config(),
            // A busy port or another daemon on the database can go away: a restart may help.
            DaemonError::AlreadyRunning { .. }
            | DaemonError::Store(_)
            | DaemonError::Listen { .. }
            | DaemonError::Watch(_)
            | DaemonError::LockLost { .. }
            | DaemonError::TaskPanicked { .. } => false,
        }
    }
}

/// The handle every component shares. Cheap to clone.
#[derive(Clone)]
pub struct AppHandle {
    pub store: Store,
    /// The current config (SIGHUP replaces it).
    pub config: channel::Receiver<Arc<Config>>,
    /// The instance id (also the run lease owner).
    pub instance: Arc<str>,
    /// The replica name (`replicaName`, default `HOST-PID`).
    pub replica: Arc<str>,
    /// Whether other daemons may share the database (PostgreSQL): replicas register instead
    /// of taking the single-instance lock, and the lead is never forced.
    pub shared: bool,
    /// Whether this replica leads now ([`leader`]).
    pub leading: channel::Receiver<bool>,
    pub clock: Arc<dyn Clock>,
    /// Set once the first scan is applied (`/readyz`).
    pub ready: Arc<AtomicBool>,
    /// Wakes the executor workers (runs were queued).
    pub wake: Arc<Notify>,
    /// Asks the reconcile task for a rescan (after a config reload).
    pub rescan: Arc<Notify>,
}

impl std::fmt::Debug for AppHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppHandle")
            .field("store", &self.store)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// Runs the daemon until `shutdown` completes (or the instance lock is lost).
///
/// # Errors
///
/// [`DaemonError`] for start-up failures (another daemon on the database, a taken port, an
/// unwatchable job directory, the database failing) and for losing the instance lock.
pub async fn run(
    config: Config,
    options: DaemonOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), DaemonError> {
    let clock = options.clock;
    let config = Arc::new(config);
    let instance: Arc<str> = uuid::Uuid::new_v4().to_string().into();
    let replica: Arc<str> = config
        .replica_name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()))
        .into();

    // 1. What the config needs before anything starts, the state database, the lock.
    config.check_jobs_dir()?;
    config.check_server_passwords()?;
    let location = config.store_location()?;
    let store = Store::connect(&location, OpenMode::Create)
        .await
        .map_err(|source| DaemonError::Database {
            file: config.shown_path(),
            url: location.to_string(),
            source,
        })?;
    let shared = store.backend() == Backend::Postgres;
    if shared {
        register_replica(&store, &instance, &replica, clock.now()).await?;
    } else {
        acquire_lock(&store, &instance, &replica, clock.now()).await?;
    }
    tracing::info!(
        instance = %instance,
        replica = %replica,
        shared,
        database = %store.location(),
        jobs_dir = %config.jobs_dir.display(),
        "daemon starting"
    );
    let parts = Parts {
        executor: options.executor,
        watch: options.watch,
        on_ready: options.on_ready,
        hangups: options.hangups.unwrap_or_default(),
    };
    let me = Me {
        instance: instance.clone(),
        replica,
        shared,
    };
    let result = run_locked(store.clone(), config, parts, me, clock.clone(), shutdown).await;
    match store.release_instance_lock(&instance, clock.now()).await {
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot release the instance lock"),
    }
    store.close().await;
    tracing::info!(instance = %instance, "daemon stopped");
    result
}

/// Who this daemon is among the replicas.
struct Me {
    instance: Arc<str>,
    replica: Arc<str>,
    shared: bool,
}

/// The options `run_locked` consumes.
struct Parts {
    executor: Option<ExecutorFactory>,
    watch: Option<WatchOptions>,
    on_ready: Option<OnReady>,
    hangups: signals::Hangups,
}

async fn run_locked(
    store: Store,
    config: Arc<Config>,
    parts: Parts,
    me: Me,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), DaemonError> {
    let Me {
        instance,
        replica,
        shared,
    } = me;
    let Parts {
        executor: executor_factory,
        watch: watch_options,
        on_ready,
        hangups,
    } = parts;
    let cancel = CancellationToken::new();
    let tasks = Tasks::new();
    let (config_tx, config_rx) = channel::channel(Arc::clone(&config));
    let (leading_tx, leading_rx) = channel::channel(false);
    let app = AppHandle {
        store: store.clone(),
        config: config_rx,
        instance: Arc::clone(&instance),
        replica: Arc::clone(&replica),
        shared,
        leading: leading_rx.clone(),
        clock: Arc::clone(&clock),
        ready: Arc::new(AtomicBool::new(false)),
        wake: Arc::new(Notify::new()),
        rescan: Arc::new(Notify::new()),
    };

    // 2. The health/metrics listener, bound early so a taken port fails start-up.
    let listener = match config.listen {
        Some(addr) => Some(
            http::bind(addr)
                .await
                .map_err(|source| DaemonError::Listen { addr, source })?,
        ),
        None => None,
    };
    let http_addr = listener.as_ref().and_then(|l| l.local_addr().ok());

    // 3. Leases of a crashed predecessor (alone on SQLite: every other lease is dead; shared:
    //    only those of replicas proven dead, ended at registration), then the engine's recovery,
    //    which leaves the runs and sessions of live replicas alone.
    if !shared {
        let expired = store.expire_foreign_leases(&instance, clock.now()).await?;
        if expired > 0 {
            tracing::info!(
                runs = expired,
                "expired the run leases of a previous daemon"
            );
        }
    }
    let executor = match executor_factory {
        Some(factory) => {
            let executor = factory(&store, &app.config, &instance, &clock)?;
            let summary = executor.recover().await?;
            tracing::info!(%summary, "recovery done");
            Some(executor)
        }
        None => {
            tracing::warn!("no run engine: runs are queued but not executed");
            None
        }
    };

    // 4. The lead (forced on SQLite, where this daemon is alone). The leader watches first (a
    //    change during the first scan still signals), then scans and applies the job files.
    let watch_options = watch_options.unwrap_or_else(|| WatchOptions::from(&config.watch));
    let lease = config.engine.lease;
    let valid_until = leader::first_attempt(&app, lease, !shared).await;
    let leads = valid_until.is_some();
    let (table_tx, table_rx) = channel::channel(Arc::new(JobTable::default()));
    let duty_token = cancel.child_token();
    let (first, first_parts) = if leads {
        let term = duty_token.child_token();
        let (reconciler, watcher, report) =
            leader::first_scan(&app, &watch_options, &tasks, term.child_token()).await?;
        log_reconcile(&report, true);
        table_tx.send_replace(reconciler.table());
        (report, Some((reconciler, watcher, term)))
    } else {
        tracing::info!(replica = %replica, "another replica leads: this one executes runs and takes the lead if the leader goes");
        (ReconcileReport::default(), None)
    };
    leading_tx.send_replace(leads);
    app.ready.store(true, Ordering::Release);

    // 5. The components.
    tasks.spawn(
        "leadership",
        leader::leadership_loop(
            app.clone(),
            lease,
            !shared,
            valid_until,
            leading_tx,
            cancel.child_token(),
        ),
    );
    tasks.spawn(
        "leader-duties",
        leader::duties(
            app.clone(),
            leader::DutyParts {
                executor: executor.clone(),
                watch: watch_options,
                table: table_tx,
                tasks: tasks.clone(),
                first: first_parts,
            },
            leading_rx,
            duty_token,
        ),
    );
    if let Some(executor) = &executor {
        let workers = executor::worker_count(&config);
        tracing::info!(workers, "executor started");
        executor::run_workers(
            Arc::clone(executor),
            workers,
            Arc::clone(&app.wake),
            cancel.child_token(),
            &tasks,
        );
    }
    metrics::describe();
    let handle = crate::telemetry::metrics_handle();
    if let Some(listener) = listener {
        let state = http::HttpState {
            store: store.clone(),
            ready: Arc::clone(&app.ready),
            tasks: tasks.clone(),
            metrics: handle.clone(),
        };
        tasks.spawn("http", http::serve(listener, state, cancel.child_token()));
        tracing::info!(addr = ?http_addr, "serving /healthz, /readyz, /metrics");
    }
    tasks.spawn(
        "metrics",
        refresh_loop(
            app.clone(),
            handle,
            table_rx,
            tasks.clone(),
            cancel.child_token(),
        ),
    );
    let lock_lost = CancellationToken::new();
    tasks.spawn(
        "heartbeat",
        heartbeat_loop(app.clone(), lock_lost.clone(), cancel.child_token()),
    );
    if let Some(interval) = systemd::watchdog_interval() {
        tasks.spawn(
            "watchdog",
            systemd::watchdog(interval, store.clone(), cancel.child_token()),
        );
    }
    tasks.spawn(
        "reload",
        reload::reload_loop(app.clone(), config_tx, hangups, cancel.child_token()),
    );
    tasks.close();

    // 6. Ready.
    let status = match store.stats().await {
        Ok(stats) => systemd::status_line(&stats),
        Err(_) => "ready".to_string(),
    };
    systemd::ready(&status);
    tracing::info!(%status, "daemon ready");
    if let Some(on_ready) = on_ready {
        on_ready(&ReadyInfo {
            http: http_addr,
            instance: instance.to_string(),
            replica: replica.to_string(),
            leader: leads,
            first_scan: first,
        });
    }

    // 7. Until asked to stop (or another daemon took the lock, or a task panicked).
    let outcome = tokio::select! {
        () = shutdown => Ok(()),
        () = lock_lost.cancelled() => Err(DaemonError::LockLost { id: instance.to_string() }),
        panic = tasks.failed() => Err(DaemonError::TaskPanicked { task: panic.task, message: panic.message }),
    };
    systemd::stopping();
    app.ready.store(false, Ordering::Release);
    let timeout = app.config.borrow().shutdown_timeout;
    tracing::info!(timeout = ?timeout, "stopping: no new claims; running work checkpoints and stops");
    cancel.cancel();
    if tokio::time::timeout(timeout, tasks.wait()).await.is_err() {
        tracing::warn!(timeout = ?timeout, "some tasks did not stop within shutdownTimeout; exiting anyway (their runs are resumed at the next start)");
    }
    // After the work stopped (nothing uses the tokens any more): tokens must not linger.
    if let Some(executor) = &executor {
        executor.logout(LOGOUT_TIMEOUT).await;
    }
    // A panic while draining still means a restart is due.
    match (outcome, tasks.panicked()) {
        (Ok(()), Some(panic)) => Err(DaemonError::TaskPanicked {
            task: panic.task,
            message: panic.message,
        }),
        (outcome, _) => outcome,
    }
}

/// Takes the instance lock; a holder on this host whose process is gone (killed, crashed) is
/// taken over at once instead of after [`INSTANCE_STALE_AFTER`].
async fn acquire_lock(
    store: &Store,
    instance: &str,
    replica: &str,
    now: DateTime<Utc>,
) -> Result<(), DaemonError> {
    let host = hostname();
    let me = InstanceInfo {
        id: instance,
        pid: std::process::id(),
        host: &host,
        name: replica,
    };
    match store
        .acquire_instance_lock(&me, INSTANCE_STALE_AFTER, now)
        .await
    {
        Ok(_) => Ok(()),
        Err(StoreError::InstanceLocked { holder }) => {
            let dead_here = holder.host == host
                && u32::try_from(holder.pid).is_ok_and(|pid| !process_alive(pid));
            if dead_here {
                tracing::warn!(
                    pid = holder.pid,
                    since = %holder.started_at,
                    "the previous daemon on this host is gone (crashed or killed); taking over"
                );
                store
                    .acquire_instance_lock(&me, Duration::ZERO, now)
                    .await?;
                return Ok(());
            }
            Err(DaemonError::AlreadyRunning {
                db: store.location().to_string(),
                holder,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Registers this daemon as one replica on a shared database; earlier daemons on this host
/// whose process is gone (killed, crashed) and that have been silent for two heartbeats are
/// proven dead: their run leases and a lead they held end now instead of after the lease.
async fn register_replica(
    store: &Store,
    instance: &str,
    replica: &str,
    now: DateTime<Utc>,
) -> Result<(), DaemonError> {
    let host = hostname();
    let live = store.list_live_instances().await?;
    // Proven dead: same host, no such process, and silent for two heartbeats. The silence
    // matters: a live replica in another container on this host (its own pid namespace, the
    // same host name with host networking) has a pid this process cannot see.
    let silent_since = now - chrono::Duration::from_std(HEARTBEAT * 2).unwrap_or_default();
    let is_dead = |i: &DaemonInstance| {
        i.host == host
            && i.heartbeat_at < silent_since
            && u32::try_from(i.pid).is_ok_and(|pid| !process_alive(pid))
    };
    // A daemon from before several replicas (no replica name) believes it is alone: its
    // start-up recovery would take every run. Refuse to join it while it heartbeats.
    let fresh_after = now - chrono::Duration::from_std(INSTANCE_STALE_AFTER).unwrap_or_default();
    if let Some(alone) = live
        .iter()
        .find(|i| i.name.is_none() && i.heartbeat_at > fresh_after && !is_dead(i))
    {
        return Err(DaemonError::AlreadyRunning {
            db: store.location().to_string(),
            holder: Box::new(alone.clone()),
        });
    }
    let dead: Vec<String> = live
        .iter()
        .filter(|i| is_dead(i))
        .map(|i| i.id.clone())
        .collect();
    if !dead.is_empty() {
        tracing::warn!(instances = ?dead, "earlier daemons on this host are gone (crashed or killed); their runs are taken over now");
    }
    let me = InstanceInfo {
        id: instance,
        pid: std::process::id(),
        host: &host,
        name: replica,
    };
    store.register_replica(&me, &dead, now).await?;
    Ok(())
}

/// This machine's host name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`, else `unknown`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// Whether a process with this pid exists on this machine (Linux `/proc`; elsewhere assume yes,
/// which only delays a takeover until the heartbeat is stale).
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

pub(crate) fn log_reconcile(r: &ReconcileReport, first: bool) {
    if first || r.changed_anything() || !r.jobs_invalid.is_empty() {
        tracing::info!(
            files_new = r.files_new,
            files_changed = r.files_changed,
            files_unchanged = r.files_unchanged,
            files_invalid = r.files_invalid,
            files_removed = r.files_removed,
            jobs_added = ?r.jobs_added,
            jobs_changed = ?r.jobs_changed,
            jobs_invalid = ?r.jobs_invalid,
            jobs_removed = ?r.jobs_removed,
            jobs_active = r.jobs_active,
            "job directory applied"
        );
    }
    for name in &r.jobs_invalid {
        tracing::warn!(job = %name, "job file is invalid; the last valid version (if any) stays active (see `restorectl jobs`)");
    }
}

/// Rescans on every watcher signal (and on request after a reload) and publishes the table.
pub(crate) async fn reconcile_loop(
    app: AppHandle,
    mut reconciler: Reconciler,
    mut watcher: JobDirWatcher,
    table: channel::Sender<Arc<JobTable>>,
    cancel: CancellationToken,
) {
    loop {
        // After a config reload every job is validated again and may differ (a default time
        // zone, a retry policy) even though no file changed: publish the table regardless.
        let (reason, reloaded) = tokio::select! {
            () = cancel.cancelled() => break,
            signal = watcher.next() => match signal {
                Some(reason) => (format!("{reason:?}"), false),
                None => break,
            },
            () = app.rescan.notified() => {
                reconciler.forget_scans();
                ("ConfigReloaded".to_string(), true)
            }
        };
        let config = Arc::clone(&app.config.borrow());
        match reconciler.rescan(&config, app.clock.now()).await {
            Ok(report) => {
                tracing::debug!(%reason, "job directory rescanned");
                log_reconcile(&report, false);
                if report.changed_anything() || reloaded {
                    table.send_replace(reconciler.table());
                }
            }
            Err(error) => {
                tracing::error!(%error, "applying the job directory failed; retrying at the next change or rescan")
            }
        }
    }
}

/// Refreshes metrics and the systemd status from the store (and the per-job success ages from
/// the job table), and runs the exporter's upkeep.
async fn refresh_loop(
    app: AppHandle,
    handle: metrics_exporter_prometheus::PrometheusHandle,
    table: channel::Receiver<Arc<JobTable>>,
    tasks: tasks::Tasks,
    cancel: CancellationToken,
) {
    let mut since = app.clock.now();
    let mut publisher = metrics::Publisher::default();
    let mut success_ages = metrics::SuccessAges::default();
    let mut last_status = String::new();
    // The run and job counts of the last refresh, and when the per-job series were last read.
    let mut last_shape = None;
    let mut per_job_at: Option<std::time::Instant> = None;
    let mut tick = tokio::time::interval(metrics::REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let read = async {
            let mut stats = app.store.stats_counts().await?;
            let shape = (stats.runs.clone(), stats.jobs.clone());
            let per_job = last_shape.as_ref() != Some(&shape)
                || per_job_at.is_none_or(|t| t.elapsed() >= metrics::PER_JOB_REFRESH);
            if per_job {
                (stats.last_success, stats.next_fires) = app.store.stats_per_job().await?;
                per_job_at = Some(std::time::Instant::now());
            }
            last_shape = Some(shape);
            Ok::<_, StoreError>((stats, per_job))
        };
        let read = read.await;
        metrics::publish_ready(
            read.is_ok() && app.ready.load(Ordering::Acquire) && tasks.panicked().is_none(),
        );
        metrics::publish_replica(&app.replica, &app.instance, *app.leading.borrow());
        match read {
            Ok((stats, per_job)) => {
                let ages = if per_job {
                    let now = app.clock.now();
                    let table = Arc::clone(&table.borrow());
                    success_ages.of(table.values().map(|active| active.job.as_ref()), now)
                } else {
                    Vec::new()
                };
                publisher.publish(&stats, per_job, &ages);
                // Only on change: each notification is a datagram systemd must read.
                let line = systemd::status_line(&stats);
                if line != last_status {
                    systemd::status(&line);
                    last_status = line;
                }
            }
            Err(error) => tracing::warn!(%error, "cannot refresh metrics from the store"),
        }
        // The duration histograms observe every finished run of the database: among several
        // replicas only the leader observes them (else a sum over replicas counts each run
        // once per replica); a follower moves its mark along, so that it starts from now when
        // it takes the lead.
        if *app.leading.borrow() {
            match metrics::record_durations(&app.store, since).await {
                Ok(newest) => since = newest,
                Err(error) => tracing::warn!(%error, "cannot read finished runs for metrics"),
            }
        } else {
            since = app.clock.now();
        }
        handle.run_upkeep();
    }
}

/// Heartbeats the instance lock; losing it (another daemon took over) stops this daemon.
async fn heartbeat_loop(app: AppHandle, lost: CancellationToken, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = app.clock.now();
        let beat = if app.shared {
            app.store.heartbeat_replica(&app.instance, now).await
        } else {
            app.store.heartbeat_instance(&app.instance, now).await
        };
        match beat {
            Ok(()) => {}
            Err(StoreError::InstanceLost { .. }) => {
                tracing::error!(instance = %app.instance, "another daemon took over the state database lock");
                lost.cancel();
                break;
            }
            Err(error) => tracing::warn!(%error, "cannot heartbeat the instance lock"),
        }
    }
}
