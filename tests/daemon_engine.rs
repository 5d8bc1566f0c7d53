//! The daemon with the run engine against the in-process simulator: a `kill -9` in the middle of
//! a restore never sends the restore twice, and SIGTERM during an export leaves a partial file
//! that the next start resumes from its offset.

mod daemon_support;

use std::time::Duration;

use daemon_support::*;
use restorectl::sim::{
    CallRange, Endpoint, FaultAction, FaultRule, SimConfig, SimHandle, Simulator,
};
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

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_an_export_exits_in_time_and_the_next_start_resumes_the_download() {
    let sim = simulator(SimConfig {
        export_sizes: [("alice@contoso.com".to_string(), 48 << 20)].into(),
        ..SimConfig::default()
    })
    .await;
    // The first export response breaks after 8 MiB; the engine backs off (30 s, slept inside
    // the run) before resuming: SIGTERM lands in the middle of the export.
    sim.add_fault(FaultRule {
        calls: Some(CallRange::only(1)),
        ..FaultRule::on(
            Endpoint::ExportPst,
            FaultAction::DropAfterBytes { bytes: 8 << 20 },
        )
    })
    .unwrap();
    let site = site_for(&sim);
    site.write_job(
        "export.yaml",
        &export_job(
            "export-alice",
            None,
            "  archives: exclude\n  retry: { initialBackoff: 30s }\n",
        ),
    );
    let daemon = Daemon::start(&site);
    let store = open_when_ready(&site).await;
    let (run, step) = until("part of the export is on disk", || async {
        let run = only_run(&store, "export-alice").await?;
        let steps = store.list_steps(run.id).await.ok()?;
        let step = steps.first()?.id;
        let download = store.get_download(step).await.ok()?;
        (download.bytes_durable > 0).then_some((run, step))
    })
    .await;
    daemon.signal("TERM");
    let (status, stderr, took) = daemon.wait_exit();
    println!("observed exit time after SIGTERM during the export: {took:?} (shutdownTimeout 10 s)");
    assert!(status.success(), "{stderr}");
    assert!(
        took < Duration::from_secs(10),
        "exit within shutdownTimeout: {took:?}"
    );
    let partial = store.get_download(step).await.unwrap();
    assert!(partial.bytes_durable > 0);
    assert_ne!(
        store.get_run(run.id).await.unwrap().state,
        RunState::Succeeded
    );

    let restarted = Daemon::start(&site);
    let finished = until("the export completes after the restart", || async {
        let r = store.get_run(run.id).await.ok()?;
        r.state.is_terminal().then_some(r)
    })
    .await;
    assert_eq!(finished.state, RunState::Succeeded, "{:?}", finished.reason);
    let download = store.get_download(step).await.unwrap();
    println!("resumed from offsets {:?}", download.resumed_from);
    let durable = u64::try_from(partial.bytes_durable).unwrap();
    assert!(
        download.resumed_from.iter().any(|o| *o >= durable),
        "resumed from the durable offset {}: {:?}",
        partial.bytes_durable,
        download.resumed_from
    );
    assert_eq!(download.restarts, 0, "resumed, not restarted");
    drop(restarted);
    sim.shutdown().await;
}
