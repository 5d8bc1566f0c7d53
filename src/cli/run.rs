//! `restorectl run JOB [--wait] [--timeout D]` (SPEC §4.3, §6): queues a manual run by writing an
//! operator request; the daemon consumes it within seconds and queues the run whatever the
//! schedule or `suspend` say.
//!
//! With `--foreground` the run is executed in this process instead, without the daemon (see
//! [`super::foreground`] and docs/engine.md).
//!
//! With `--wait` the command follows the request to its run and the run to its end: exit 0 when
//! the run `succeeded` or `succeeded_with_warnings`, 1 when it failed, was cancelled, needs
//! attention, the daemon refused the request, or the wait timed out (the run goes on).

use std::io::Write;
use std::time::Duration;

use anyhow::Context;

use super::Outcome;
use super::context;
use crate::config::Config;
use crate::store::{JobState, NewRequest, RunState, Store};

/// How often `--wait` polls the database. Reads are cheap (WAL readers never block the daemon).
const POLL: Duration = Duration::from_millis(500);
/// After this long without the request being consumed, `--wait` explains why when no daemon is
/// alive (SPEC: requests are consumed within 2 s).
const CONSUME_HINT_AFTER: Duration = Duration::from_secs(5);

/// Arguments of `restorectl run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The job (`metadata.name`).
    #[arg(value_name = "JOB")]
    pub job: String,
    /// Follow the run to its end; exit 0 if it succeeded (with or without warnings), 1 otherwise.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up waiting after this long (the run goes on), e.g. `30m`, `2h`.
    #[arg(long, value_name = "DURATION", default_value = "12h", value_parser = humantime::parse_duration, requires = "wait")]
    pub timeout: Duration,
    /// Execute the run in this process without the daemon (takes the instance lock, logs to
    /// stderr, prints a summary; exit 0 if it succeeded, with or without warnings).
    #[arg(long, conflicts_with = "wait")]
    pub foreground: bool,
}

/// Runs `run`.
pub fn run(args: RunArgs, config: &Config) -> anyhow::Result<Outcome> {
    if args.foreground {
        return super::foreground::run(&args.job, config);
    }
    context::block_on(async {
        let store = context::open_write(config).await?;
        check_job(&store, &args.job).await?;
        let now = context::now()?;
        let request = store
            .insert_request(
                &NewRequest::Run { job: &args.job },
                context::requested_by().as_deref(),
                now,
            )
            .await
            .with_context(|| format!("recording a run request for job {}", args.job))?;
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "requested a manual run of job {} (request {})",
            args.job, request.id
        )?;
        let daemons = context::live_daemons(&store, now).await?;
        if daemons.is_empty() {
            eprintln!("{}", no_daemon_hint(&store));
        }
        if !args.wait {
            return Ok(Outcome::Ok);
        }
        out.flush()?;
        wait(&store, request.id, args.timeout, &mut out).await
    })
}

/// Refuses unknown, removed and never-valid jobs with a message saying why.
async fn check_job(store: &Store, name: &str) -> anyhow::Result<()> {
    let job = match store.get_job(name).await {
        Ok(job) => job,
        Err(e) if e.is_not_found() => {
            let known: Vec<String> = store
                .list_jobs()
                .await?
                .into_iter()
                .filter(|j| j.job.state != JobState::Removed)
                .map(|j| j.job.name)
                .collect();
            let known = if known.is_empty() {
                "the daemon has applied no job yet".to_string()
            } else {
                format!("known jobs: {}", known.join(", "))
            };
            anyhow::bail!("unknown job `{name}` ({known}; see `restorectl jobs`)");
        }
        Err(e) => return Err(e.into()),
    };
    if job.state == JobState::Removed {
        anyhow::bail!(
            "job `{name}` was removed (its file {} is gone); restore the file to run it",
            job.file.display()
        );
    }
    if job.active_version_id.is_none() {
        anyhow::bail!(
            "job `{name}` has no valid version to run (fix {}; see `restorectl jobs`)",
            job.file.display()
        );
    }
    Ok(())
}

fn no_daemon_hint(store: &Store) -> String {
    format!(
        "note: no running daemon uses {} (no daemon heartbeat in the last {} s); the request \
         waits until `restorectl daemon` starts (systemd: `systemctl status restorectl`)",
        store.location(),
        context::LIVE_DAEMON_HEARTBEAT.as_secs()
    )
}

async fn wait(
    store: &Store,
    request_id: i64,
    timeout: Duration,
    out: &mut impl Write,
) -> anyhow::Result<Outcome> {
    let started = tokio::time::Instant::now();
    let deadline = started + timeout;
    let timed_out = |what: &str| {
        anyhow::anyhow!(
            "gave up waiting after {} for {what} (--timeout); the daemon goes on, follow it with \
             `restorectl runs` / `restorectl show`",
            humantime::format_duration(timeout)
        )
    };
    let mut hinted = false;
    // 1. The daemon consumes the request and names the run it queued.
    let run_id = loop {
        let request = store.get_request(request_id).await?;
        if request.consumed_at.is_some() {
            let result = request.result.unwrap_or_default();
            match request.result_run_id {
                Some(run) => {
                    writeln!(out, "run {run} queued: {result}")?;
                    break run;
                }
                None => anyhow::bail!("the daemon refused request {request_id}: {result}"),
            }
        }
        if !hinted && started.elapsed() >= CONSUME_HINT_AFTER {
            hinted = true;
            if context::live_daemons(store, context::now()?)
                .await?
                .is_empty()
            {
                eprintln!("{}", no_daemon_hint(store));
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(timed_out(&format!(
                "the daemon to pick up request {request_id}"
            )));
        }
        tokio::time::sleep(POLL).await;
    };
    out.flush()?;
    // 2. The run reaches an end: a terminal state, or needs_attention (an operator must decide).
    let mut last: Option<RunState> = None;
    loop {
        let run = store.get_run(run_id).await?;
        if last != Some(run.state) {
            last = Some(run.state);
            writeln!(out, "run {run_id}: {}", run.state)?;
            out.flush()?;
        }
        if run.state.is_terminal() || run.state == RunState::NeedsAttention {
            let reason = run.reason.map(|r| format!(" ({r})")).unwrap_or_default();
            writeln!(
                out,
                "run {run_id} finished: {}{reason}; details: restorectl show {run_id}",
                run.state
            )?;
            return Ok(match run.state {
                RunState::Succeeded | RunState::SucceededWithWarnings => Outcome::Ok,
                _ => Outcome::Problems,
            });
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(timed_out(&format!("run {run_id} to finish")));
        }
        tokio::time::sleep(POLL).await;
    }
}
