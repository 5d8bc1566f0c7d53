//! The daemon with the run engine against the in-process simulator: a `kill -9` in the middle of
//! a restore never sends the restore twice, and SIGTERM during a 4 GiB export leaves a partial
//! file that the next start resumes from its offset.

mod daemon_support;

use std::time::Duration;

use daemon_support::*;
use restorectl::sim::{SimConfig, SimHandle, Simulator};
use restorectl::store::{RunFilter, RunState, Store};

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

async fn until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < SLOW, "{what}: not within {SLOW:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
