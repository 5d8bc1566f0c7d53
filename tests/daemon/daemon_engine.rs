//! The daemon with the run engine against the in-process simulator: a `kill -9` in the middle of
//! a restore never sends the restore twice, SIGTERM during a 4 GiB export leaves a partial file
//! that the next start resumes from its offset, a SIGHUP's new `exportRoot` reaches the next run
//! (not the running one), `concurrencyPolicy: Replace` starts the new run only once the running
//! one has stopped, and a panic in one run fails that run while the daemon goes on.

use std::time::Duration;

use crate::daemon_support::*;
use restorectl::sim::{Endpoint, FaultAction, FaultRule};
use restorectl::sim::{SimConfig, SimHandle, Simulator};
use restorectl::store::{NewRequest, Run, RunFilter, RunState, SessionState, StepState, Store};

async fn simulator(config: SimConfig) -> SimHandle {
    Simulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn site_for(sim: &SimHandle) -> Site {
    let site = Site::new(&sim.base_url(), "off");
    std::fs::write(site.path("secrets/m365-restore-password"), "dev\n").unwrap();
    site
}

async fn only_run(store: &Store, job: &str) -> Option<restorectl::store::Run> {
    let mut runs = store
        .list_runs(&RunFilter {
            job: Some(job),
            ..RunFilter::default()
        })
        .await
        .ok()?;
    (runs.len() == 1).then(|| runs.remove(0))
}

/// Long enough for a run's slowest phase in a debug build.
const SLOW: Duration = Duration::from_secs(60);

async fn until<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    until_within(what, SLOW, check).await
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_a_restore_then_restart_completes_without_a_second_post() {
    let sim = simulator(SimConfig {
        // The restore runs for a while after its POST: the kill lands while it is followed.
        restore_delay: Duration::from_secs(6),
        ..SimConfig::default()
    })
    .await;
    let site = site_for(&sim);
    site.write_job(
        "restore.yaml",
        "apiVersion: restorectl/v1\nkind: Restore\nmetadata: { name: restore-bob }\nspec:\n  \
         organization: contoso.onmicrosoft.com\n  mailboxes: [bob@contoso.com]\n  \
         archives: exclude\n  restore:\n    credentials:\n      user:\n        \
         userName: svc-backup@contoso.com\n        password: { secret: m365-restore-password }\n",
    );
    let bob = sim.mailbox("bob@contoso.com", false).unwrap();
    let daemon = Daemon::start(&site);
    let store = open_when_ready(&site).await;
    let run = until("the restore was posted", || async {
        let run = only_run(&store, "restore-bob").await?;
        let steps = store.list_steps(run.id).await.ok()?;
        steps.iter().any(|s| s.restore_posts >= 1).then_some(run)
    })
    .await;
    assert_eq!(sim.restore_calls(bob.id), 1);
    daemon.signal("KILL");
    let (status, _, _) = daemon.wait_exit();
    assert!(!status.success());

    let restarted = Daemon::start(&site);
    let finished = until("the run completes after the restart", || async {
        let r = store.get_run(run.id).await.ok()?;
        r.state.is_terminal().then_some(r)
    })
    .await;
    assert_eq!(finished.state, RunState::Succeeded, "{:?}", finished.reason);
    assert_eq!(
        sim.restore_calls(bob.id),
        1,
        "the restore was POSTed exactly once"
    );
    assert!(finished.attempts >= 2, "claimed again after the restart");
    drop(restarted);
    sim.shutdown().await;
}

/// The size of the export in the SIGTERM test: a 4 GiB PST, as in the issue. The simulator
/// generates its bytes on the fly, and the test stops once the resumed download has made durable
/// progress: it never needs the whole file.
const FOUR_GIB: u64 = 4 << 30;

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_4_gib_export_exits_in_time_and_the_next_start_resumes_from_its_offset() {
    let sim = simulator(SimConfig {
        export_sizes: [("alice@contoso.com".to_string(), FOUR_GIB)].into(),
        ..SimConfig::default()
    })
    .await;
    let site = site_for(&sim);
    site.write_job(
        "export.yaml",
        &export_job("export-alice", None, "  archives: exclude\n"),
    );
    let export_calls = || {
        sim.journal()
            .into_iter()
            .filter(|e| e.method == "POST" && e.path.ends_with("/exportToPst"))
            .collect::<Vec<_>>()
    };
    let daemon = Daemon::start(&site);
    let store = open_when_ready(&site).await;
    // SIGTERM lands while the body is streaming: some of it durable, most of it still to come.
    let (run, step) = until("part of the export is durable", || async {
        let run = only_run(&store, "export-alice").await?;
        let steps = store.list_steps(run.id).await.ok()?;
        let step = steps.first()?.id;
        let download = store.get_download(step).await.ok()?;
        (download.bytes_durable > 0).then_some((run, step))
    })
    .await;
    daemon.signal("TERM");
    let (status, stderr, took) = daemon.wait_exit();
    println!("exit after SIGTERM during the 4 GiB export: {took:?} (shutdownTimeout 10 s)");
    assert!(status.success(), "{stderr}");
    assert!(
        took < Duration::from_secs(10),
        "exit within shutdownTimeout: {took:?}"
    );
    let stopped = store.get_download(step).await.unwrap();
    let durable = u64::try_from(stopped.bytes_durable).unwrap();
    assert!(durable > 0 && durable < FOUR_GIB, "{stopped:?}");
    assert_eq!(stopped.expected_bytes, Some(4 << 30));
    assert_ne!(
        store.get_run(run.id).await.unwrap().state,
        RunState::Succeeded
    );
    assert_eq!(export_calls().len(), 1);

    // The next start asks for the rest from the durable offset and appends to the partial file.
    let restarted = Daemon::start(&site);
    let resumed = until("the download resumed and made durable progress", || async {
        let d = store.get_download(step).await.ok()?;
        (u64::try_from(d.bytes_durable).ok()? > durable).then_some(d)
    })
    .await;
    let calls = export_calls();
    assert_eq!(calls.len(), 2, "one resume request: {calls:#?}");
    assert_eq!(
        calls[1].range.as_deref(),
        Some(format!("bytes={durable}-").as_str()),
        "the resume asked for the bytes after the durable offset"
    );
    assert_eq!(resumed.resumed_from, [durable]);
    assert_eq!(resumed.restarts, 0, "resumed, not restarted");
    restarted.signal("TERM");
    let (status, stderr, _) = restarted.wait_exit();
    assert!(status.success(), "{stderr}");
    sim.shutdown().await;
}

/// Asks the daemon (through the store, like `restorectl run`) for a manual run of `job` and
/// returns the run once the request is consumed.
async fn request_run(store: &Store, job: &str) -> Run {
    let request = store
        .insert_request(&NewRequest::Run { job }, None, chrono::Utc::now())
        .await
        .unwrap();
    let run = until("the run request is consumed", || async {
        store.get_request(request.id).await.ok()?.result_run_id
    })
    .await;
    store.get_run(run).await.unwrap()
}

async fn finished(store: &Store, run: &Run) -> Run {
    until("the run finishes", || async {
        let r = store.get_run(run.id).await.ok()?;
        r.state.is_terminal().then_some(r)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_with_a_new_export_root_reaches_the_next_run_but_not_the_running_one() {
    // The first export takes a while to build: it is still running when the config changes.
    let sim = simulator(SimConfig {
        export_build_delay: Duration::from_secs(8),
        ..SimConfig::default()
    })
    .await;
    let site = site_for(&sim);
    site.write_job(
        "e.yaml",
        &export_job(
            "e",
            Some("{ cron: \"0 3 * * *\" }"),
            "  suspend: true\n  archives: exclude\n",
        ),
    );
    let daemon = Daemon::start(&site);
    let store = open_when_ready(&site).await;
    until("job e loaded", || async { store.get_job("e").await.ok() }).await;
    let first = request_run(&store, "e").await;
    until("the first run has its steps", || async {
        let steps = store.list_steps(first.id).await.ok()?;
        (!steps.is_empty()).then_some(())
    })
    .await;

    std::fs::create_dir(site.path("exports-new")).unwrap();
    let config = std::fs::read_to_string(site.config_path()).unwrap();
    std::fs::write(
        site.config_path(),
        config.replace("exportRoot: exports\n", "exportRoot: exports-new\n"),
    )
    .unwrap();
    daemon.signal("HUP");
    until("the reload is logged", || async {
        daemon
            .log()
            .contains("SIGHUP: config reloaded")
            .then_some(())
    })
    .await;
    assert!(
        !store.get_run(first.id).await.unwrap().state.is_terminal(),
        "the first run is still running when the reload is applied"
    );

    let first = finished(&store, &first).await;
    assert_eq!(first.state, RunState::Succeeded, "{:?}", first.reason);
    let second = request_run(&store, "e").await;
    let second = finished(&store, &second).await;
    assert_eq!(second.state, RunState::Succeeded, "{:?}", second.reason);

    let old_root = published(&site.path("exports"), "e");
    let new_root = published(&site.path("exports-new"), "e");
    let run_dir = |files: &[std::path::PathBuf], run: &Run| {
        files
            .iter()
            .any(|f| f.to_string_lossy().contains(&format!("/{}/", run.id)))
    };
    assert!(
        run_dir(&old_root, &first) && !run_dir(&new_root, &first),
        "the running run keeps the exportRoot it started with: {old_root:?} {new_root:?}"
    );
    assert!(
        run_dir(&new_root, &second) && !run_dir(&old_root, &second),
        "the next run publishes under the new exportRoot: {old_root:?} {new_root:?}"
    );
    let step = store.list_steps(second.id).await.unwrap().remove(0);
    assert!(
        step.file_path
            .as_deref()
            .is_some_and(|p| p.starts_with(&site.path("exports-new").display().to_string())),
        "{:?}",
        step.file_path
    );
    drop(daemon);
    sim.shutdown().await;
}

/// The 6-field cron expression (seconds first) of the instant `at` (UTC), once a day.
fn cron_at(at: chrono::DateTime<chrono::Utc>) -> String {
    use chrono::Timelike;
    format!("{} {} {} * * *", at.second(), at.minute(), at.hour())
}

fn restore_job(name: &str, schedule: &str) -> String {
    format!(
        "apiVersion: restorectl/v1\nkind: Restore\nmetadata: {{ name: {name} }}\nspec:\n  \
         organization: contoso.onmicrosoft.com\n  mailboxes: [bob@contoso.com]\n  \
         archives: exclude\n  schedule: {schedule}\n  restore:\n    credentials:\n      \
         user:\n        userName: svc-backup@contoso.com\n        \
         password: {{ secret: m365-restore-password }}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn replace_starts_the_new_run_only_once_the_running_one_has_stopped() {
    let sim = simulator(SimConfig {
        // The first run is following its restore when the Replace fire comes.
        restore_delay: Duration::from_secs(120),
        ..SimConfig::default()
    })
    .await;
    // Stopping takes a while: a new run started without waiting would overlap the old one.
    sim.add_fault(FaultRule::on(
        Endpoint::SessionStop,
        FaultAction::Delay {
            duration: Duration::from_secs(3),
        },
    ))
    .unwrap();
    let site = site_for(&sim);
    let far = "{ cron: \"0 0 3 * * *\", concurrencyPolicy: Replace }";
    site.write_job("r.yaml", &restore_job("r", far));
    let daemon = Daemon::start(&site);
    let store = open_when_ready(&site).await;
    until("job r loaded", || async { store.get_job("r").await.ok() }).await;
    let first = request_run(&store, "r").await;
    until("the first run posted its restore", || async {
        let steps = store.list_steps(first.id).await.ok()?;
        steps.iter().any(|s| s.restore_posts >= 1).then_some(())
    })
    .await;

    // A schedule that fires in a few seconds: the fire replaces the running first run.
    let fire = chrono::Utc::now() + chrono::TimeDelta::seconds(6);
    site.write_job(
        "r.yaml",
        &restore_job(
            "r",
            &format!(
                "{{ cron: \"{}\", concurrencyPolicy: Replace }}",
                cron_at(fire)
            ),
        ),
    );
    let second = until("the Replace fire queued a run", || async {
        let runs = store
            .list_runs(&RunFilter {
                job: Some("r"),
                ..RunFilter::default()
            })
            .await
            .ok()?;
        runs.into_iter().find(|r| r.id != first.id)
    })
    .await;
    let second = until("the new run started", || async {
        let r = store.get_run(second.id).await.ok()?;
        r.started_at.is_some().then_some(r)
    })
    .await;
    let started = second.started_at.unwrap();

    let first = store.get_run(first.id).await.unwrap();
    assert_eq!(first.state, RunState::Cancelled, "{:?}", first.reason);
    assert!(
        first.finished_at.is_some_and(|f| f <= started),
        "the replaced run finished ({:?}) before the new one started ({started})",
        first.finished_at
    );
    assert_eq!(first.lease_owner, None, "its lease was given up");
    let steps = store.list_steps(first.id).await.unwrap();
    assert!(
        steps.iter().all(|s| s.state == StepState::Failed
            && s.error_message
                .as_deref()
                .is_some_and(|m| m.contains("restore stopped"))),
        "its restore was stopped: {steps:#?}"
    );
    let sessions = store.list_run_sessions(first.id).await.unwrap();
    assert!(!sessions.is_empty());
    for s in &sessions {
        assert_eq!(s.state, SessionState::Stopped, "{s:?}");
        assert!(
            s.stopped_at.is_some_and(|t| t <= started),
            "session {} stopped ({:?}) before the new run started ({started})",
            s.id,
            s.stopped_at
        );
    }
    drop(daemon);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panic_in_one_run_fails_that_run_and_the_daemon_goes_on() {
    let sim = simulator(SimConfig::default()).await;
    let site = site_for(&sim);
    site.write_job(
        "boom.yaml",
        &export_job("boom", None, "  archives: exclude\n"),
    );
    site.write_job(
        "fine.yaml",
        &export_job("fine", None, "  archives: exclude\n"),
    );
    // Test fault injection (src/panics.rs): every run of job `boom` panics once its steps exist
    // (its restore session is open by then).
    let daemon = Daemon::start_with_env(&site, &[("RESTORECTL_TEST_PANIC", "run:boom")]);
    let store = open_when_ready(&site).await;
    let boom = until("the boom run finished", || async {
        let r = only_run(&store, "boom").await?;
        r.state.is_terminal().then_some(r)
    })
    .await;
    assert_eq!(boom.state, RunState::Failed);
    let reason = boom.reason.clone().unwrap_or_default();
    assert!(reason.contains("panicked"), "{reason}");
    assert_eq!(boom.lease_owner, None);
    let sessions = store.list_run_sessions(boom.id).await.unwrap();
    assert!(!sessions.is_empty(), "the run had opened its session");
    assert!(
        sessions.iter().all(|s| s.state == SessionState::Stopped),
        "the sessions of the panicked run are stopped: {sessions:#?}"
    );

    let fine = until("the fine run finished", || async {
        let r = only_run(&store, "fine").await?;
        r.state.is_terminal().then_some(r)
    })
    .await;
    assert_eq!(fine.state, RunState::Succeeded, "{:?}", fine.reason);
    // Still serving: a later run is executed too, and SIGTERM stops it cleanly.
    let again = request_run(&store, "fine").await;
    let again = finished(&store, &again).await;
    assert_eq!(again.state, RunState::Succeeded, "{:?}", again.reason);
    daemon.signal("TERM");
    let (status, stderr, _) = daemon.wait_exit();
    assert!(status.success(), "{stderr}");
    sim.shutdown().await;
}

/// Issue 16: the daemon's stop ends its VB365 sign-in (`POST /v8/token/logout`), after the work
/// stopped, so no token of a stopped daemon lingers on the server.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_signs_out_of_the_vb365_server() {
    let sim = simulator(SimConfig::default()).await;
    let site = site_for(&sim);
    site.write_job(
        "search.yaml",
        "apiVersion: restorectl/v1\nkind: Search\nmetadata: { name: find-board-minutes }\nspec:\n  \
         organization: contoso.onmicrosoft.com\n  search:\n    query: 'from:ceo@contoso.com'\n    \
         report: { path: \"{job}/{run}.jsonl\" }\n",
    );
    let daemon = Daemon::start(&site);
    let store = open_when_ready(&site).await;
    let run = until("the search run finished", || async {
        let r = only_run(&store, "find-board-minutes").await?;
        r.state.is_terminal().then_some(r)
    })
    .await;
    assert_eq!(run.state, RunState::Succeeded, "{:?}", run.reason);
    assert!(
        !sim.journal()
            .iter()
            .any(|e| e.is("POST", "/v8/token/logout")),
        "no logout while the daemon runs"
    );
    daemon.signal("TERM");
    let (status, log, _) = daemon.wait_exit();
    assert!(status.success(), "{log}");
    let journal = sim.journal();
    let logouts: Vec<_> = journal
        .iter()
        .filter(|e| e.is("POST", "/v8/token/logout"))
        .collect();
    assert_eq!(logouts.len(), 1, "one server, one sign-out");
    assert_eq!(logouts[0].status, Some(204));
    assert!(
        journal.last().unwrap().is("POST", "/v8/token/logout"),
        "the sign-out is the daemon's last request"
    );
    assert!(log.contains("signed out of the VB365 server"), "{log}");
    sim.shutdown().await;
}
