//! `restorectl run JOB --foreground` (the `--foreground` path of [`super::run`]): executes a run
//! of one job in this process, without the daemon (for operators trying a job against
//! `restorectl simulate`, and for tests).
//!
//! It loads the config and the job directory, takes the daemon's instance lock (refusing when a
//! live daemon holds it; a holder whose process is gone on this host is taken over at once),
//! records the job's current version, runs recovery, then executes the job's unfinished run if
//! a previous `run --foreground` or daemon left one (so a killed run is finished, not doubled),
//! else queues a manual run and executes it. Logs go to stderr; a summary (steps, files,
//! SHA-256) goes to stdout. At the end it signs out of the VB365 server, as the daemon does at
//! its stop. Exit code 0 when the run succeeded (with or without warnings), 1 otherwise.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::Outcome;
use crate::config::Config;
use crate::exec::{Engine, EngineOptions, RunOutcome};
use crate::jobs::{self, ValidationContext};
use crate::store::{
    InstanceInfo, NewJobVersion, NewRun, OpenMode, RunId, RunState, Store, StoreError, Trigger,
};

/// How long a silent instance-lock holder counts as alive.
const LOCK_STALE_AFTER: Duration = Duration::from_secs(30);
/// Heartbeat period of the instance lock.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// Runs `restorectl run JOB --foreground` with the loaded `config`.
pub fn run(job: &str, config: &Config) -> anyhow::Result<Outcome> {
    init_tracing(&config.log.level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(foreground(job, config.clone()))
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Whether process `pid` exists on this host (Linux `/proc`; elsewhere assume it does).
fn process_alive(pid: i64) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    Path::new(&format!("/proc/{pid}")).exists()
}

async fn take_lock(store: &Store, me: &InstanceInfo<'_>) -> anyhow::Result<()> {
    match store
        .acquire_instance_lock(me, LOCK_STALE_AFTER, Utc::now())
        .await
    {
        Ok(_) => Ok(()),
        Err(StoreError::InstanceLocked { holder }) => {
            let live = store.list_live_instances().await?;
            let all_dead_here = live
                .iter()
                .filter(|h| h.id != me.id)
                .all(|h| h.host == me.host && !process_alive(h.pid));
            if !all_dead_here {
                bail!(
                    "a daemon holds the state database (instance {}, pid {}, host {}): queue the run for it with `restorectl run JOB` (without --foreground), or stop the daemon",
                    holder.id,
                    holder.pid,
                    holder.host,
                );
            }
            // The holder's process is gone: nothing can be holding leases; take over now.
            store
                .acquire_instance_lock(me, Duration::ZERO, Utc::now())
                .await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

async fn foreground(job_name: &str, config: Config) -> anyhow::Result<Outcome> {
    let location = config.store_location()?;
    let store = Store::connect(&location, OpenMode::Create)
        .await
        .with_context(|| format!("opening the state database {location}"))?;
    let instance = format!("foreground-{}", uuid::Uuid::new_v4());
    let host = host_name();
    let name = format!("{host}-{}-foreground", std::process::id());
    let me = InstanceInfo {
        id: &instance,
        pid: std::process::id(),
        host: &host,
        name: &name,
    };
    take_lock(&store, &me).await?;
    let heartbeat = {
        let store = store.clone();
        let id = instance.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                if let Err(e) = store.heartbeat_instance(&id, Utc::now()).await {
                    tracing::warn!(error = %e, "instance heartbeat failed");
                }
            }
        })
    };
    let result = execute(job_name, &config, &store, &instance).await;
    heartbeat.abort();
    let _ = store.release_instance_lock(&instance, Utc::now()).await;
    store.close().await;
    result
}

async fn execute(
    job_name: &str,
    config: &Config,
    store: &Store,
    instance: &str,
) -> anyhow::Result<Outcome> {
    let ctx = ValidationContext::new(config);
    let scan = jobs::scan_paths(std::slice::from_ref(&config.jobs_dir), &ctx);
    let Some(job) = scan.jobs().find(|j| j.name() == job_name).cloned() else {
        let errors: Vec<String> = scan.errors().map(|e| e.to_string()).collect();
        if errors.is_empty() {
            bail!("no job named `{job_name}` in {}", config.jobs_dir.display());
        }
        bail!(
            "no valid job named `{job_name}` in {}:\n{}",
            config.jobs_dir.display(),
            errors.join("\n")
        );
    };
    let spec: serde_json::Value =
        serde_json::from_str(job.spec_json()).context("the job's normalised spec")?;
    let kind = job.kind().to_string();
    let version = store
        .upsert_job_version(
            &NewJobVersion {
                name: job.name(),
                kind: &kind,
                file: job.file(),
                spec_hash: job.spec_hash(),
                spec: &spec,
                valid: true,
                errors: &serde_json::json!([]),
            },
            Utc::now(),
        )
        .await?;
    let engine = Engine::new(
        store.clone(),
        config.clone(),
        EngineOptions::from_config(config, instance),
    )?;
    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                shutdown.cancel();
            }
        });
    }
    let recovery = engine.recover(Utc::now()).await?;
    let mut targets: Vec<RunId> = Vec::new();
    for id in &recovery.runs {
        if store.get_run(*id).await?.job_name == job_name {
            targets.push(*id);
        }
    }
    for r in store.list_active_runs(job_name).await? {
        if !targets.contains(&r.id) {
            targets.push(r.id);
        }
    }
    if targets.is_empty() {
        let run = store
            .enqueue_run(
                &NewRun {
                    job_name: job.name(),
                    job_version_id: version.version_id,
                    spec_hash: job.spec_hash(),
                    trigger: Trigger::Manual,
                    scheduled_for: Utc::now(),
                    state: RunState::Queued,
                    reason: Some("restorectl run --foreground"),
                    timeout: Some(job.run_timeout()),
                },
                Utc::now(),
            )
            .await?
            .context("the manual run was not queued")?;
        eprintln!("queued run {} of job {job_name}", run.id);
        targets.push(run.id);
    } else {
        eprintln!(
            "resuming unfinished run(s) of job {job_name}: {}",
            targets
                .iter()
                .map(RunId::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut all_ok = true;
    for id in targets {
        let outcome = drive_to_end(&engine, id, &shutdown).await?;
        print_summary(store, &outcome).await?;
        all_ok &= matches!(
            outcome.state,
            RunState::Succeeded | RunState::SucceededWithWarnings
        );
    }
    // No daemon delivers here: one delivery round for the run's notifications (what fails
    // waits in the outbox for the daemon), and the heartbeat pings still on their way.
    let config = std::sync::Arc::new(config.clone());
    crate::notify::Deliverer::new(
        store.clone(),
        tokio::sync::watch::channel(config).1,
        std::sync::Arc::new(crate::schedule::SystemClock),
    )
    .round()
    .await;
    engine.wait_heartbeats().await;
    // As the daemon does at its stop: no token of this process lingers on the server.
    engine.logout_all(crate::daemon::LOGOUT_TIMEOUT).await;
    Ok(if all_ok {
        Outcome::Ok
    } else {
        Outcome::Problems
    })
}

/// Executes the run, sleeping through `waiting_retry` until it reaches another state.
async fn drive_to_end(
    engine: &Engine,
    id: RunId,
    shutdown: &CancellationToken,
) -> anyhow::Result<RunOutcome> {
    loop {
        let outcome = engine.execute_run(id, shutdown).await?;
        let Some(next) = outcome.next_attempt_at else {
            return Ok(outcome);
        };
        let wait = (next - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(50);
        eprintln!("run {id} waits for a retry at {}", next.to_rfc3339());
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return Ok(outcome),
        }
    }
}

async fn print_summary(store: &Store, outcome: &RunOutcome) -> anyhow::Result<()> {
    let run = store.get_run(outcome.run).await?;
    println!("run {}  job {}  state {}", run.id, run.job_name, run.state);
    if let Some(reason) = &run.reason {
        println!("reason: {reason}");
    }
    for s in store.list_steps(run.id).await? {
        let subject = s
            .mailbox_email
            .clone()
            .or(s.mailbox_name.clone())
            .unwrap_or_else(|| format!("step {}", s.seq));
        println!(
            "  step {:>3}  {:<32}  {:<10}  attempts {}  restore posts {}",
            s.seq, subject, s.state, s.attempts, s.restore_posts
        );
        if let Some(path) = &s.file_path {
            println!(
                "             file {}  {} bytes  sha256 {}",
                path,
                s.bytes.unwrap_or(0),
                s.sha256.as_deref().unwrap_or("-")
            );
        }
        if let (Some(c), Some(m)) = (s.created_items, s.merged_items) {
            println!(
                "             items created {c}, merged {m}, failed {}, skipped {}",
                s.failed_items.unwrap_or(0),
                s.skipped_items.unwrap_or(0)
            );
        }
        if let Some(n) = s.found_items {
            println!("             items found {n}");
        }
        if let Some(e) = &s.error_message {
            println!(
                "             {}: {e}",
                s.error_class.map_or("note".into(), |c| c.to_string())
            );
        }
    }
    Ok(())
}
