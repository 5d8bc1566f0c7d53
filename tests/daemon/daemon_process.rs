//! The real `restorectl daemon` process against a temp directory: the job directory followed
//! through add / edit / break / fix / remove and a ConfigMap `..data` swap, operator requests,
//! `/healthz` `/readyz` `/metrics`, the single-instance lock, SIGTERM.
//!
//! Latencies are printed (run with `--nocapture` to see them), never asserted: the polls only
//! bound a hang.

use std::process::Command;

use crate::daemon_support::*;
use restorectl::store::{JobState, NewRequest, RunFilter, RunState, Store, Trigger};

/// `restorectl jobs --json` against the site.
fn jobs_json(site: &Site) -> serde_json::Value {
    let out = Command::new(bin())
        .arg("--config")
        .arg(site.config_path())
        .args(["jobs", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success() || out.status.code() == Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn job_state(store: &Store, name: &str) -> Option<(JobState, Option<i64>)> {
    let job = store.get_job(name).await.ok()?;
    Some((job.state, job.active_version_id))
}

#[tokio::test(flavor = "multi_thread")]
async fn job_directory_changes_are_followed() {
    let site = Site::new("http://127.0.0.1:9", "off");
    let schedule = Some("{ cron: \"0 3 * * *\" }");
    site.write_job("a.yaml", &export_job("a", schedule, ""));
    let daemon = Daemon::start(&site);
    let store = open_when_ready(&site).await;
    eventually("job a loaded", || async {
        job_state(&store, "a")
            .await
            .filter(|(s, _)| *s == JobState::Active)
    })
    .await;
    let mut latencies = Vec::new();

    site.write_job("team/b.yaml", &export_job("b", schedule, ""));
    let ((_, v1), t) = eventually("added job b", || async {
        job_state(&store, "b")
            .await
            .filter(|(s, _)| *s == JobState::Active)
    })
    .await;
    latencies.push(("add", t));

    site.write_job(
        "team/b.yaml",
        &export_job("b", schedule, "").replace("alice@", "bob@"),
    );
    let ((_, v2), t) = eventually("edited job b", || async {
        job_state(&store, "b").await.filter(|(_, v)| *v != v1)
    })
    .await;
    latencies.push(("edit", t));

    site.write_job("team/b.yaml", &export_job("b", schedule, "  bogusKey: 1\n"));
    let ((_, v3), t) = eventually("broken job b", || async {
        job_state(&store, "b")
            .await
            .filter(|(s, _)| *s == JobState::Invalid)
    })
    .await;
    latencies.push(("break", t));
    assert_eq!(v3, v2, "an invalid edit keeps the previous version active");
    let b = store.get_job("b").await.unwrap();
    assert!(
        b.next_fire_at.is_some(),
        "the previous version stays scheduled"
    );
    assert!(
        b.errors.to_string().contains("bogusKey"),
        "errors are recorded: {}",
        b.errors
    );
    let files = store.list_job_files().await.unwrap();
    assert!(
        files
            .iter()
            .any(|f| f.path.ends_with("team/b.yaml") && !f.valid)
    );

    site.write_job("team/b.yaml", &export_job("b", schedule, ""));
    let (_, t) = eventually("fixed job b", || async {
        job_state(&store, "b")
            .await
            .filter(|(s, _)| *s == JobState::Active)
    })
    .await;
    latencies.push(("fix", t));

    site.remove_job("team/b.yaml");
    let (_, t) = eventually("removed job b", || async {
        job_state(&store, "b")
            .await
            .filter(|(s, _)| *s == JobState::Removed)
    })
    .await;
    latencies.push(("remove", t));
    assert_eq!(store.get_job("b").await.unwrap().next_fire_at, None);
    assert_eq!(job_state(&store, "a").await.unwrap().0, JobState::Active);
    let listed = jobs_json(&site);
    let states: Vec<(String, String)> = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["name"].as_str().unwrap().into(),
                j["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("a".into(), "active".into()),
            ("b".into(), "removed".into())
        ]
    );
    println!("observed latency from file change to store: {latencies:?}");
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread")]
async fn configmap_data_swap_is_picked_up() {
    let site = Site::new("http://127.0.0.1:9", "off");
    let jobs = site.path("jobs");
    let schedule = Some("{ cron: \"0 3 * * *\" }");
    std::fs::create_dir(jobs.join("..2026_01_01_v1")).unwrap();
    std::fs::write(
        jobs.join("..2026_01_01_v1/cm.yaml"),
        export_job("cm", schedule, ""),
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_01_01_v1", jobs.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/cm.yaml", jobs.join("cm.yaml")).unwrap();
    let daemon = Daemon::start(&site);
    let store = open_when_ready(&site).await;
    let ((_, v1), _) = eventually("configmap job loaded", || async {
        job_state(&store, "cm")
            .await
            .filter(|(s, _)| *s == JobState::Active)
    })
    .await;

    // The kubelet's update: a new timestamped directory, `..data` renamed over, old one removed.
    std::fs::create_dir(jobs.join("..2026_01_02_v2")).unwrap();
    std::fs::write(
        jobs.join("..2026_01_02_v2/cm.yaml"),
        export_job("cm", schedule, "").replace("alice@", "carol@"),
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_01_02_v2", jobs.join("..data_tmp")).unwrap();
    std::fs::rename(jobs.join("..data_tmp"), jobs.join("..data")).unwrap();
    std::fs::remove_dir_all(jobs.join("..2026_01_01_v1")).unwrap();
    let ((state, _), t) = eventually("configmap swap seen", || async {
        job_state(&store, "cm").await.filter(|(_, v)| *v != v1)
    })
    .await;
    assert_eq!(state, JobState::Active);
    println!("observed latency from ..data swap to store: {t:?}");
    // Only the visible name is a job file: the `..` entries are never scanned on their own.
    let files = store.list_job_files().await.unwrap();
    assert!(
        files
            .iter()
            .all(|f| !f.path.to_string_lossy().contains("..2026")),
        "{files:?}"
    );
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread")]
async fn manual_run_requests_are_consumed_even_when_suspended() {
    // The export takes a minute to build: the manual run is still active when it is cancelled.
    let sim = restorectl::sim::Simulator::start(
        restorectl::sim::SimConfig {
            export_build_delay: std::time::Duration::from_secs(60),
            ..restorectl::sim::SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let site = Site::new(&sim.base_url(), "off");
    site.write_job(
        "s.yaml",
        &export_job("s", Some("{ cron: \"0 3 * * *\" }"), "  suspend: true\n"),
    );
    let daemon = Daemon::start(&site);
    let store = open_when_ready(&site).await;
    eventually("job s loaded", || async { job_state(&store, "s").await }).await;
    let request = store
        .insert_request(
            &NewRequest::Run { job: "s" },
            Some("tester"),
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    let unknown = store
        .insert_request(&NewRequest::Run { job: "nope" }, None, chrono::Utc::now())
        .await
        .unwrap();
    let (done, t) = eventually("run request consumed", || async {
        let r = store.get_request(request.id).await.ok()?;
        r.consumed_at.is_some().then_some(r)
    })
    .await;
    println!("observed latency from request to consumption: {t:?}");
    let run_id = done.result_run_id.expect("the queued run");
    let run = store.get_run(run_id).await.unwrap();
    assert_eq!(run.trigger, Trigger::Manual);
    assert!(!run.state.is_terminal(), "{:?}", run.state);
    let (refused, _) = eventually("unknown job request consumed", || async {
        let r = store.get_request(unknown.id).await.ok()?;
        r.consumed_at.is_some().then_some(r)
    })
    .await;
    assert!(refused.result.unwrap().contains("refused"));
    assert_eq!(refused.result_run_id, None);

    // Cancel it (queued: at once; already claimed by the engine, which cannot reach the
    // server: at its next checkpoint).
    let cancel = store
        .insert_request(
            &NewRequest::Cancel { run: run_id },
            None,
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    eventually("cancel consumed", || async {
        let r = store.get_request(cancel.id).await.ok()?;
        r.consumed_at.is_some().then_some(())
    })
    .await;
    let (_, t) = eventually("run cancelled", || async {
        let run = store.get_run(run_id).await.ok()?;
        (run.state == RunState::Cancelled).then_some(())
    })
    .await;
    println!("observed latency from cancel request to a cancelled run: {t:?}");
    drop(daemon);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn second_daemon_on_the_same_database_exits_1_naming_the_holder() {
    let site = Site::new("http://127.0.0.1:9", "off");
    let first = Daemon::start(&site);
    let store = open_when_ready(&site).await;
    let holder = store.list_live_instances().await.unwrap().remove(0);
    let out = Command::new(bin())
        .args(["daemon", "--config"])
        .arg(site.config_path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", first.pid())), "{stderr}");
    assert!(
        stderr.contains(&format!("host {}", holder.host)),
        "{stderr}"
    );
    assert!(stderr.contains("running since"), "{stderr}");
    drop(first);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_and_exits_within_the_timeout() {
    let site = Site::new("http://127.0.0.1:9", "off");
    site.write_job(
        "a.yaml",
        &export_job("a", Some("{ cron: \"0 3 * * *\" }"), ""),
    );
    let daemon = Daemon::start(&site);
    let store = open_when_ready(&site).await;
    eventually("job a loaded", || async { job_state(&store, "a").await }).await;
    daemon.signal("TERM");
    let (status, stderr, took) = daemon.wait_exit();
    println!("observed exit time after SIGTERM: {took:?}");
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
    // The lock was released: the instance row is stopped.
    assert!(store.list_live_instances().await.unwrap().is_empty());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn get(url: String) -> Option<(u16, String)> {
    let resp = reqwest::get(&url).await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_and_metrics_agree_with_the_store() {
    let port = free_port();
    let site = Site::new("http://127.0.0.1:9", &format!("127.0.0.1:{port}"));
    // Every second, Forbid; the server does not exist, so runs fail or retry while later
    // fires are skipped: either way results are counted.
    site.write_job(
        "tick.yaml",
        &export_job(
            "tick",
            Some("{ cron: \"* * * * * *\", concurrencyPolicy: Forbid }"),
            "",
        ),
    );
    site.write_job("broken.yaml", "apiVersion: restorectl/v1\nkind: [\n");
    let daemon = Daemon::start(&site);
    let base = format!("http://127.0.0.1:{port}");
    let ((status, body), _) = eventually("/healthz", || get(format!("{base}/healthz"))).await;
    assert_eq!((status, body.trim()), (200, "ok"));
    let ((status, _), _) = eventually("/readyz ready", || async {
        get(format!("{base}/readyz"))
            .await
            .filter(|(s, _)| *s == 200)
    })
    .await;
    assert_eq!(status, 200);
    // Metrics are refreshed from the store every few seconds.
    let (metrics, t) = eventually("run counters and next fire in /metrics", || async {
        let (_, text) = get(format!("{base}/metrics")).await?;
        (text.contains("restorectl_runs_total{job=\"tick\",result=")
            && text.contains("restorectl_job_next_fire_timestamp_seconds{job=\"tick\"}"))
        .then_some(text)
    })
    .await;
    println!("metrics showed store-derived series after {t:?}");
    assert!(
        metrics.contains("restorectl_invalid_job_files 1"),
        "{metrics}"
    );
    assert!(metrics.contains("restorectl_waiting_runs "), "{metrics}");
    assert!(metrics.contains("restorectl_active_runs "), "{metrics}");
    // Ready (the store answered the refresh); no download under way against a missing server.
    assert!(metrics.contains("restorectl_ready 1"), "{metrics}");
    assert!(
        metrics.contains("restorectl_downloads_receiving 0"),
        "{metrics}"
    );
    let store = Store::open_read_only(site.db_path()).await.unwrap();
    let finished = store
        .list_runs(&RunFilter {
            job: Some("tick"),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert!(finished.iter().any(|r| r.state.is_terminal()));
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_config_and_survives_a_broken_one() {
    let site = Site::new("http://127.0.0.1:9", "off");
    site.write_job(
        "a.yaml",
        &export_job("a", Some("{ cron: \"0 3 * * *\" }"), ""),
    );
    let daemon = Daemon::start(&site);
    let store = open_when_ready(&site).await;
    let key = |store: &Store| {
        let store = store.clone();
        async move { store.get_job("a").await.ok()?.schedule_key }
    };
    let (utc_key, _) = eventually("schedule applied", || key(&store)).await;
    assert!(utc_key.ends_with("|UTC"), "{utc_key}");

    // The default time zone changes: every job file is validated again.
    let config = std::fs::read_to_string(site.config_path()).unwrap();
    std::fs::write(
        site.config_path(),
        config.replace("timezone: UTC", "timezone: Europe/Berlin"),
    )
    .unwrap();
    daemon.signal("HUP");
    let (berlin_key, t) = eventually("reloaded time zone applied", || async {
        key(&store).await.filter(|k| k.ends_with("|Europe/Berlin"))
    })
    .await;
    println!("observed latency from SIGHUP to the new schedule: {t:?} ({berlin_key})");

    // A broken config is refused; the daemon keeps running and keeps following job files.
    std::fs::write(site.config_path(), "jobsDir: [\n").unwrap();
    daemon.signal("HUP");
    site.write_job(
        "b.yaml",
        &export_job("b", Some("{ cron: \"0 4 * * *\" }"), ""),
    );
    eventually("job b added after a broken reload", || async {
        job_state(&store, "b").await
    })
    .await;
    daemon.signal("TERM");
    let (status, stderr, _) = daemon.wait_exit();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("keeping the running config"), "{stderr}");
}

/// Starts the daemon on `site`, expects it to exit 78 (a configuration error) and returns its
/// stderr, which must name `key` and never the server password.
fn expect_config_error(site: &Site, key: &str) -> String {
    let daemon = Daemon::start(site);
    let (status, stderr, _) = daemon.wait_exit();
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(stderr.contains(key), "the error names {key}: {stderr}");
    assert!(
        !stderr.contains("restorectl-dev"),
        "no secret value in the error: {stderr}"
    );
    assert!(
        !site.db_path().exists() || key == "caFile",
        "a config error is found before the state database is touched"
    );
    stderr
}

#[test]
fn a_ca_file_that_cannot_be_read_exits_78() {
    let site = Site::new("https://127.0.0.1:9", "off");
    append_config(&site, "    caFile: missing-ca.pem");
    let stderr = expect_config_error(&site, "caFile");
    assert!(
        stderr.contains("server sim") && stderr.contains("missing-ca.pem"),
        "{stderr}"
    );
}

#[test]
fn a_ca_file_that_is_not_pem_exits_78() {
    let site = Site::new("https://127.0.0.1:9", "off");
    std::fs::write(site.path("ca.pem"), "this is not a certificate\n").unwrap();
    append_config(&site, "    caFile: ca.pem");
    let stderr = expect_config_error(&site, "caFile");
    assert!(
        stderr.contains("server sim") && stderr.contains("ca.pem"),
        "{stderr}"
    );
    assert!(stderr.contains("PEM"), "{stderr}");
}

#[test]
fn a_missing_jobs_dir_exits_78() {
    let site = Site::new("http://127.0.0.1:9", "off");
    std::fs::remove_dir(site.path("jobs")).unwrap();
    let stderr = expect_config_error(&site, "jobsDir");
    assert!(
        stderr.contains(&site.config_path().display().to_string())
            && stderr.contains(&site.path("jobs").display().to_string()),
        "{stderr}"
    );
}

#[test]
fn a_database_that_cannot_be_created_exits_78() {
    let site = Site::new("http://127.0.0.1:9", "off");
    // A regular file where the database's directory should be: nobody can create it, root
    // included.
    std::fs::write(site.path("not-a-dir"), "").unwrap();
    let db = site.path("not-a-dir/state/restorectl.db");
    append_config(&site, &format!("database: sqlite://{}", db.display()));
    let stderr = expect_config_error(&site, "database");
    assert!(
        stderr.contains(&site.config_path().display().to_string())
            && stderr.contains(&db.display().to_string()),
        "{stderr}"
    );
}

#[test]
fn a_server_password_that_cannot_be_read_exits_78() {
    let site = Site::new("http://127.0.0.1:9", "off");
    std::fs::remove_file(site.path("secrets/vb365-password")).unwrap();
    let stderr = expect_config_error(&site, "servers.sim.password");
    assert!(
        stderr.contains(&site.config_path().display().to_string())
            && stderr.contains("{secret: vb365-password}")
            && stderr.contains("not found"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_daemon_task_stops_the_daemon_and_a_restart_recovers() {
    let site = Site::new("http://127.0.0.1:9", "off");
    site.write_job(
        "a.yaml",
        &export_job("a", Some("{ cron: \"0 3 * * *\" }"), ""),
    );
    // Test fault injection (src/panics.rs): the scheduler task panics as it starts.
    let daemon = Daemon::start_with_env(&site, &[("RESTORECTL_TEST_PANIC", "task:scheduler")]);
    let (status, stderr, took) = daemon.wait_exit();
    println!("exit after the scheduler task panicked: {took:?}");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("daemon task scheduler panicked"),
        "the log and the error name the task: {stderr}"
    );
    // It stopped like on SIGTERM: the instance lock is released.
    let store = Store::open_existing(&site.db_path()).await.unwrap();
    assert!(store.list_live_instances().await.unwrap().is_empty());

    // Restarted (by systemd in production), it runs normally.
    let restarted = Daemon::start(&site);
    let store = open_when_ready(&site).await;
    eventually(
        "the scheduler of the restarted daemon sets the next fire",
        || async { store.get_job("a").await.ok()?.next_fire_at },
    )
    .await;
    restarted.signal("TERM");
    let (status, stderr, _) = restarted.wait_exit();
    assert!(status.success(), "{stderr}");
}
