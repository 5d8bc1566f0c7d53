//! Crash tests with the real binary: `restorectl run JOB --foreground` runs as a child process
//! against the in-process simulator, is killed with SIGKILL while a step is `submitting`,
//! `submitted` or `downloading`, and the same command is started again. Assertions: no
//! duplicate restore, the download resumed with `Range` from a non-zero offset and the published
//! file's SHA-256 equals the simulator's digest, no session left `Working`, the run ends in the
//! right state.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::exec_support::*;
use restorectl::sim::{CallRange, Endpoint, ExportSpec, FaultAction, FaultRule, SimConfig};
use restorectl::store::{RunFilter, RunState, StepState};

fn command(w: &World, job: &str, log: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_restorectl"));
    cmd.arg("--config")
        .arg(w.config_path())
        .args(["run", job, "--foreground"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(
            std::fs::File::create(w.dir.path().join(format!("{log}.out"))).unwrap(),
        ))
        .stderr(Stdio::from(
            std::fs::File::create(w.dir.path().join(format!("{log}.err"))).unwrap(),
        ));
    cmd
}

fn log(w: &World, name: &str) -> String {
    let out = std::fs::read_to_string(w.dir.path().join(format!("{name}.out"))).unwrap_or_default();
    let err = std::fs::read_to_string(w.dir.path().join(format!("{name}.err"))).unwrap_or_default();
    format!("--- stdout\n{out}\n--- stderr\n{err}")
}

/// Waits until the (only) step of the job's run is in `state`, then kills the child.
async fn kill_when(w: &World, mut child: Child, state: StepState, extra: impl Fn(&World) -> bool) {
    let store = w.store.clone();
    eventually(Duration::from_secs(120), || {
        let store = store.clone();
        async move {
            let runs = store.list_runs(&RunFilter::default()).await.ok()?;
            let steps = store.list_steps(runs.first()?.id).await.ok()?;
            (steps.first()?.state == state).then_some(())
        }
    })
    .await;
    eventually(Duration::from_secs(120), || {
        let ok = extra(w);
        async move { ok.then_some(()) }
    })
    .await;
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
}

/// Restarts the command and waits for it to finish; returns its exit status.
async fn restart(w: &World, job: &str) -> std::process::ExitStatus {
    let mut cmd = command(w, job, "second");
    tokio::task::spawn_blocking(move || cmd.status().expect("restart"))
        .await
        .unwrap()
}

fn restore_job(name: &str, mailbox: &str) -> String {
    job_yaml(
        "Restore",
        name,
        &format!("  mailboxes: [{mailbox}]\n  archives: exclude\n  restore:\n{USER_CREDS}"),
    )
}

async fn assert_single_run(w: &World, state: RunState) -> restorectl::store::Run {
    let runs = w.store.list_runs(&RunFilter::default()).await.unwrap();
    assert_eq!(
        runs.len(),
        1,
        "the restart finished the killed run instead of queueing another"
    );
    assert_eq!(runs[0].state, state, "{:?}\n{}", runs[0], log(w, "second"));
    runs[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_submitting_is_reconciled_without_a_duplicate_restore() {
    let w = World::start(SimConfig {
        restore_delay: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await;
    // Hold the restore POST so the child is killed with the step committed `submitting`.
    w.sim
        .add_fault(
            FaultRule::on(
                Endpoint::MailboxRestore,
                FaultAction::Delay {
                    duration: Duration::from_secs(2),
                },
            )
            .calls(CallRange::only(1)),
        )
        .unwrap();
    w.job("r", &restore_job("r", "alice@contoso.com"));
    let child = command(&w, "r", "first").spawn().unwrap();
    kill_when(&w, child, StepState::Submitting, |_| true).await;
    let status = restart(&w, "r").await;
    assert!(status.success(), "{}", log(&w, "second"));
    let run = assert_single_run(&w, RunState::Succeeded).await;
    let step = &w.steps(run.id).await[0];
    assert_eq!(step.state, StepState::Done);
    assert_eq!(
        w.sim.restore_calls(w.mailbox_id("alice@contoso.com")),
        1,
        "exactly one restore executed\n{}",
        log(&w, "second")
    );
    assert!(log(&w, "second").contains("resuming unfinished run"));
    w.assert_all_sessions_stopped();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_submitted_follows_the_running_restore_after_restart() {
    let w = World::start(SimConfig {
        restore_delay: Duration::from_secs(4),
        ..SimConfig::default()
    })
    .await;
    w.job("r", &restore_job("r", "bob@contoso.com"));
    let child = command(&w, "r", "first").spawn().unwrap();
    kill_when(&w, child, StepState::Submitted, |_| true).await;
    let status = restart(&w, "r").await;
    assert!(status.success(), "{}", log(&w, "second"));
    let run = assert_single_run(&w, RunState::Succeeded).await;
    let step = &w.steps(run.id).await[0];
    assert_eq!(step.state, StepState::Done);
    assert_eq!(step.restore_posts, 1);
    assert_eq!(
        w.calls("POST", &format!("{MAILBOXES}/{{mailboxId}}/restore"))
            .len(),
        1
    );
    assert_eq!(w.sim.restore_calls(w.mailbox_id("bob@contoso.com")), 1);
    // The restarted process followed the restore in the session the first one opened.
    assert_eq!(w.explores().len(), 1, "{}", log(&w, "second"));
    w.assert_all_sessions_stopped();
}

/// Found by the chaos suite: a transient error (500 `ProxyOffline`) on the check of the session
/// left open by the killed process recorded it `lost` without stopping it, so it stayed
/// `Working` on the server for ever, and the run opened a second session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_error_while_checking_the_session_left_open_adopts_it_and_stops_it_at_the_end()
{
    let w = World::start(SimConfig {
        restore_delay: Duration::from_secs(4),
        ..SimConfig::default()
    })
    .await;
    w.job("r", &restore_job("r", "bob@contoso.com"));
    let child = command(&w, "r", "first").spawn().unwrap();
    kill_when(&w, child, StepState::Submitted, |_| true).await;
    w.sim
        .add_fault(
            FaultRule::on(
                Endpoint::RestoreSession,
                FaultAction::Error {
                    status: 500,
                    error_code: Some("ProxyOffline".into()),
                    message: Some("injected".into()),
                },
            )
            .calls(CallRange::only(1)),
        )
        .unwrap();
    let status = restart(&w, "r").await;
    assert!(status.success(), "{}", log(&w, "second"));
    let run = assert_single_run(&w, RunState::Succeeded).await;
    assert_eq!(w.steps(run.id).await[0].state, StepState::Done);
    assert_eq!(w.sim.restore_calls(w.mailbox_id("bob@contoso.com")), 1);
    assert_eq!(
        w.explores().len(),
        1,
        "adopted, not replaced\n{}",
        log(&w, "second")
    );
    w.assert_all_sessions_stopped();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_downloading_resumes_with_range_and_publishes_the_right_bytes() {
    const SIZE: u64 = 320 << 20;
    let mut sizes = std::collections::BTreeMap::new();
    sizes.insert("olivia@contoso.com".to_string(), SIZE);
    let w = World::start(SimConfig {
        export_sizes: sizes,
        export_build_delay: Duration::from_millis(100),
        ..SimConfig::default()
    })
    .await;
    w.job(
        "e",
        &job_yaml(
            "ExportPst",
            "e",
            "  mailboxes: [olivia@contoso.com]\n  archives: exclude\n  export: { path: \"{job}/{mailbox}.pst\" }\n",
        ),
    );
    let child = command(&w, "e", "first").spawn().unwrap();
    let store = w.store.clone();
    // Kill once some progress is durable (the first checkpoint), mid-transfer.
    let durable = move |_: &World| {
        let store = store.clone();
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async move {
                let runs = store.list_runs(&RunFilter::default()).await.ok()?;
                let step = store
                    .list_steps(runs.first()?.id)
                    .await
                    .ok()?
                    .into_iter()
                    .next()?;
                let d = store.get_download(step.id).await.ok()?;
                (d.bytes_durable > 0).then_some(())
            })
        })
        .is_some()
    };
    kill_when(&w, child, StepState::Downloading, durable).await;
    let before = {
        let runs = w.store.list_runs(&RunFilter::default()).await.unwrap();
        let step = w.steps(runs[0].id).await.into_iter().next().unwrap();
        w.store.get_download(step.id).await.unwrap()
    };
    assert!(before.bytes_durable > 0);
    assert!((before.bytes_durable as u64) < SIZE, "killed mid-transfer");
    let status = restart(&w, "e").await;
    assert!(status.success(), "{}", log(&w, "second"));
    let run = assert_single_run(&w, RunState::Succeeded).await;
    let step = &w.steps(run.id).await[0];
    let path = std::path::PathBuf::from(step.file_path.clone().unwrap());
    let (digest, len) = w
        .sim
        .export_digest(&ExportSpec {
            mailbox_id: w.mailbox_id("olivia@contoso.com"),
            keyword: None,
            point_in_time: None,
            pst_size_limit: None,
        })
        .unwrap();
    assert_eq!(len, std::fs::metadata(&path).unwrap().len());
    assert_eq!(sha256_file(&path), digest);
    let download = w.store.get_download(step.id).await.unwrap();
    assert!(
        download.resumed_from.iter().any(|&o| o > 0),
        "{:?}",
        download.resumed_from
    );
    let ranges: Vec<String> = w
        .calls("POST", &format!("{MAILBOXES}/{{mailboxId}}/exportToPst"))
        .into_iter()
        .filter_map(|e| e.range)
        .collect();
    let resumed_at: Vec<u64> = ranges
        .iter()
        .filter_map(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok())
        .collect();
    assert!(resumed_at.iter().any(|&n| n > 0), "ranges sent: {ranges:?}");
    // The export resumed in the session the first process opened (kept for resume).
    assert_eq!(w.explores().len(), 1, "{}", log(&w, "second"));
    w.assert_all_sessions_stopped();
    let _ = std::fs::remove_file(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_instance_lock_holder_is_refused_with_a_clear_error() {
    let w = World::start(SimConfig::default()).await;
    w.job("r", &restore_job("r", "alice@contoso.com"));
    w.store
        .acquire_instance_lock(
            &restorectl::store::InstanceInfo {
                id: "daemon-1",
                pid: std::process::id(),
                host: "elsewhere",
                name: "elsewhere-1",
            },
            Duration::from_secs(30),
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    let out = tokio::task::spawn_blocking({
        let mut cmd = command(&w, "r", "locked");
        move || cmd.status().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.code(), Some(1));
    let text = log(&w, "locked");
    assert!(text.contains("a daemon holds the state database"), "{text}");
    assert!(
        w.store
            .list_runs(&RunFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
}
