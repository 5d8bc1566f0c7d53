//! Run-history retention in the real daemon: with `history: { keepFor: 7d, keepRuns: 1 }` the
//! start-up pass deletes the finished runs older than a week beyond the newest executed one,
//! keeps the run whose export file is still on disk and the run waiting for an operator, and
//! says so in one log line.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use restorectl::store::{
    FileFormat, NewExport, NewJobVersion, NewRun, RunFilter, RunId, RunState, Store, Trigger,
};

use crate::daemon_support::{Daemon, PATIENCE, Site, append_config, eventually, export_job};

/// A scheduled run of `job` for `at`, finished as `state` at `at`.
async fn finished(
    store: &Store,
    job: &str,
    version: i64,
    at: DateTime<Utc>,
    state: RunState,
) -> RunId {
    let run = store
        .enqueue_run(
            &NewRun {
                job_name: job,
                job_version_id: version,
                spec_hash: "h",
                trigger: Trigger::Schedule,
                scheduled_for: at,
                state: RunState::Queued,
                reason: None,
                timeout: Some(Duration::from_secs(3600)),
            },
            at,
        )
        .await
        .unwrap()
        .unwrap();
    store
        .set_run_state(run.id, state, Some("test"), at)
        .await
        .unwrap();
    run.id
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_prunes_old_runs_and_keeps_exported_and_open_ones() {
    let site = Site::new("http://127.0.0.1:9", "off");
    append_config(&site, "history: { keepFor: 7d, keepRuns: 1 }");
    site.write_job(
        "hist.yaml",
        &export_job("hist", Some("{ cron: \"0 3 1 1 *\" }"), ""),
    );
    let now = Utc::now();
    let days = |d: i64| now - chrono::Duration::days(d);
    let store = Store::open(site.db_path()).await.unwrap();
    let version = store
        .upsert_job_version(
            &NewJobVersion {
                name: "hist",
                kind: "ExportPst",
                file: &site.path("jobs/hist.yaml"),
                spec_hash: "h",
                spec: &json!({ "kind": "ExportPst" }),
                valid: true,
                errors: &json!([]),
            },
            days(40),
        )
        .await
        .unwrap()
        .version_id;
    let oldest = finished(&store, "hist", version, days(30), RunState::Succeeded).await;
    let exported = finished(&store, "hist", version, days(29), RunState::Succeeded).await;
    let old_failed = finished(&store, "hist", version, days(28), RunState::Failed).await;
    let attention = finished(&store, "hist", version, days(27), RunState::NeedsAttention).await;
    let recent = finished(&store, "hist", version, days(1), RunState::Succeeded).await;
    let file = site.path("exports/hist/old/alice.pst");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, b"pst").unwrap();
    store
        .record_export(
            &NewExport {
                job_name: "hist",
                run_id: exported,
                step_id: None,
                mailbox_id: Some("mb-alice"),
                mailbox_email: Some("alice@contoso.com"),
                path: Path::new(&file),
                manifest_path: None,
                format: FileFormat::Pst,
                bytes: 3,
                sha256: "00",
            },
            days(29),
        )
        .await
        .unwrap();
    store.close().await;

    let daemon = Daemon::start(&site);
    let (line, took) = eventually("the start-up pruning pass", || async {
        daemon
            .log()
            .lines()
            .find(|l| l.contains("run history pruned"))
            .map(str::to_string)
    })
    .await;
    eprintln!("pruned after {took:?}: {line}");
    assert!(line.contains("runs=2"), "{line}");
    assert!(took < PATIENCE);

    let store = Store::open_existing(&site.db_path()).await.unwrap();
    let left: Vec<RunId> = store
        .list_runs(&RunFilter {
            job: Some("hist"),
            ..RunFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    for kept in [exported, attention, recent] {
        assert!(left.contains(&kept), "run {kept} was pruned: {left:?}");
    }
    for gone in [oldest, old_failed] {
        assert!(!left.contains(&gone), "run {gone} was kept: {left:?}");
        assert!(store.list_run_events(gone).await.unwrap().is_empty());
    }
    assert!(file.exists(), "pruning never touches export files");
    daemon.signal("TERM");
    let (status, log, _) = daemon.wait_exit();
    assert!(status.success(), "{log}");
}
