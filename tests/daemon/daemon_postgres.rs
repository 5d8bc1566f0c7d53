//! The daemon and the operator commands on PostgreSQL (SPEC §10), as an operator runs them: the
//! real binary with a config whose `database` is a `postgres://` URL and whose password comes
//! from `databasePassword`, the simulator on loopback, a database of its own per test. A one-shot
//! export runs to success; `jobs`, `runs`, `show` and `plan` read it from another working
//! directory with the same config; `status` names the daemon as the leader; a password inside
//! the URL or an unreadable `databasePassword` is a configuration error (78) that
//! never repeats the password.

use std::process::Command;
use std::time::Duration;

use crate::common::postgres::TestDatabase;
use crate::daemon_support::*;
use restorectl::sim::{SimConfig, Simulator};
use restorectl::store::{Location, OpenMode, RunFilter, RunState, Store};

/// A site on `db` with the password in `secrets/db-password`.
fn pg_site(server_url: &str, db: &TestDatabase) -> Site {
    let site = Site::new(server_url, "off");
    std::fs::write(site.path("secrets/db-password"), "pg-secret-value\n").unwrap();
    append_config(
        &site,
        &format!(
            "database: {}\ndatabasePassword: {{ secret: db-password }}",
            db.url
        ),
    );
    site
}

fn cli(site: &Site, args: &[&str]) -> std::process::Output {
    // From another directory, as an operator on another host with the same config would.
    Command::new(bin())
        .current_dir(std::env::temp_dir())
        .arg("--config")
        .arg(site.config_path())
        .args(args)
        .output()
        .unwrap()
}

async fn store_of(db: &TestDatabase) -> Option<Store> {
    Store::connect(&Location::parse(&db.url).unwrap(), OpenMode::Existing)
        .await
        .ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_on_postgres_runs_a_job_and_operator_commands_read_it_from_anywhere() {
    let Some(db) =
        TestDatabase::create("a_daemon_on_postgres_runs_a_job_and_operator_commands_read_it").await
    else {
        return;
    };
    let sim = Simulator::start(SimConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let site = pg_site(&sim.base_url(), &db);
    site.write_job("once.yaml", &export_job("once", None, ""));
    let daemon = Daemon::start(&site);

    let (run, took) = eventually("the one-shot export succeeds on PostgreSQL", || async {
        let store = store_of(&db).await?;
        let runs = store
            .list_runs(&RunFilter {
                job: Some("once"),
                ..RunFilter::default()
            })
            .await
            .ok()?;
        let run = runs.into_iter().next()?;
        (run.state == RunState::Succeeded).then_some(run)
    })
    .await;
    println!("one-shot export on PostgreSQL finished within {took:?}");
    assert!(
        site.path("exports/once").exists(),
        "the export was published under exportRoot"
    );
    let log = daemon.log();
    assert!(!log.contains("pg-secret-value"), "no password in the log");
    assert!(log.contains(&db.url), "the log names the database: {log}");

    let out = cli(&site, &["runs", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs["runs"][0]["id"], run.id.to_string());
    assert_eq!(runs["runs"][0]["state"], "succeeded");
    let out = cli(&site, &["show", &run.id.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("succeeded"));
    let out = cli(&site, &["jobs", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"once\""));
    let out = cli(&site, &["plan", "--format", "json"]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["database"], db.url.as_str(), "plan names the database");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("pg-secret-value"), "{text}");

    let out = cli(&site, &["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["database"]["backend"], "postgres");
    assert_eq!(status["database"]["location"], db.url.as_str());
    assert_eq!(status["instances"][0]["pid"], daemon.pid());
    assert_eq!(status["instances"][0]["runs"], serde_json::json!([]));
    let out = cli(&site, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("(postgres, schema"), "{text}");
    assert!(text.contains(&daemon.pid().to_string()), "{text}");

    // The lone replica leads (several replicas: tests/daemon/replicas.rs).
    assert_eq!(status["instances"][0]["leader"], true, "{status}");
    assert_eq!(status["leader"]["live"], true, "{status}");
    assert_eq!(
        status["leader"]["replica"], status["instances"][0]["replica"],
        "{status}"
    );
    assert!(text.contains("leader: "), "{text}");

    daemon.signal("TERM");
    let (status, _, _) = daemon.wait_exit();
    assert!(status.success());
    sim.shutdown().await;
}

#[test]
fn a_password_inside_the_database_url_exits_78_and_is_never_repeated() {
    let site = Site::new("http://127.0.0.1:9", "off");
    append_config(
        &site,
        "database: postgres://restorectl:pg-secret-value@127.0.0.1:5432/restorectl",
    );
    let daemon = Daemon::start(&site);
    let (status, stderr, _) = daemon.wait_exit();
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("database"), "{stderr}");
    assert!(stderr.contains("databasePassword"), "{stderr}");
    assert!(!stderr.contains("pg-secret-value"), "{stderr}");
    let out = cli(&site, &["runs"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!stderr.contains("pg-secret-value"), "{stderr}");
}

#[test]
fn a_database_password_that_cannot_be_read_exits_78() {
    let site = Site::new("http://127.0.0.1:9", "off");
    append_config(
        &site,
        "database: postgres://restorectl@127.0.0.1:5432/restorectl\n\
         databasePassword: { secret: no-such-secret }",
    );
    let daemon = Daemon::start(&site);
    let (status, stderr, _) = daemon.wait_exit();
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("databasePassword") && stderr.contains("{secret: no-such-secret}"),
        "{stderr}"
    );
}

#[test]
fn a_database_server_that_does_not_answer_exits_1_for_a_restart() {
    let site = Site::new("http://127.0.0.1:9", "off");
    // Nothing listens on port 9 (discard): the connection is refused at once.
    append_config(
        &site,
        "database: postgres://restorectl@127.0.0.1:9/restorectl?connect_timeout=2",
    );
    let daemon = Daemon::start(&site);
    let (status, stderr, took) = daemon.wait_exit();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("127.0.0.1:9"), "{stderr}");
    assert!(took < Duration::from_secs(60));
}

/// An installation moves from its SQLite file to PostgreSQL: after a one-shot export ran on
/// SQLite and the daemon stopped, `migrate-state --from sqlite://…` copies everything; the
/// operator commands show the same run (the same `show --json`, byte for byte), and the daemon
/// started on PostgreSQL does not run the one-shot job a second time.
#[tokio::test(flavor = "multi_thread")]
async fn an_installation_moves_from_sqlite_to_postgres_with_migrate_state() {
    let Some(db) = TestDatabase::create("an_installation_moves_from_sqlite_to_postgres").await
    else {
        return;
    };
    let sim = Simulator::start(SimConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let site = Site::new(&sim.base_url(), "off");
    site.write_job("once.yaml", &export_job("once", None, ""));
    let daemon = Daemon::start(&site);
    let (run, _) = eventually("the one-shot export succeeds on SQLite", || async {
        let store = Store::open_existing(site.db_path()).await.ok()?;
        let run = store
            .list_runs(&RunFilter::default())
            .await
            .ok()?
            .into_iter()
            .next()?;
        store.close().await;
        (run.state == RunState::Succeeded).then_some(run)
    })
    .await;
    let before = cli(&site, &["show", &run.id.to_string(), "--json"]);
    assert!(
        before.status.success(),
        "{}",
        String::from_utf8_lossy(&before.stderr)
    );

    // While the daemon runs, the copy refuses (it would miss what changes meanwhile).
    let pg_config = site.path("restorectl-pg.yaml");
    let config = std::fs::read_to_string(site.config_path()).unwrap();
    std::fs::write(&pg_config, format!("{config}database: {}\n", db.url)).unwrap();
    let migrate = |from: String| {
        Command::new(bin())
            .arg("--config")
            .arg(&pg_config)
            .args(["migrate-state", "--from", &from])
            .output()
            .unwrap()
    };
    let from = format!("sqlite://{}", site.db_path().display());
    let refused = migrate(from.clone());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("stop the daemon first"), "{stderr}");

    daemon.signal("TERM");
    assert!(daemon.wait_exit().0.success());
    let copied = migrate(from.clone());
    let stdout = String::from_utf8_lossy(&copied.stdout);
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    for table in ["runs", "steps", "exports", "events", "downloads"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with(table) && !l.contains(" 0 rows")),
            "{table} copied: {stdout}"
        );
    }
    // A second copy into the now-used database refuses instead of mixing two histories.
    let again = migrate(from);
    assert_eq!(again.status.code(), Some(1));

    let pg_cli = |args: &[&str]| {
        Command::new(bin())
            .current_dir(std::env::temp_dir())
            .arg("--config")
            .arg(&pg_config)
            .args(args)
            .output()
            .unwrap()
    };
    let after = pg_cli(&["show", &run.id.to_string(), "--json"]);
    assert!(
        after.status.success(),
        "{}",
        String::from_utf8_lossy(&after.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&before.stdout),
        String::from_utf8_lossy(&after.stdout),
        "the run reads the same from PostgreSQL"
    );

    // The daemon on PostgreSQL knows the one-shot job already ran.
    std::fs::copy(&pg_config, site.config_path()).unwrap();
    // A new job file beside the old one: once the daemon knows it, it has scanned (and
    // applied) the whole directory, the one-shot job included.
    site.write_job(
        "marker.yaml",
        &export_job("marker", Some("\"0 3 * * 0\""), "  suspend: true\n"),
    );
    let daemon = Daemon::start(&site);
    let store = Store::connect(&Location::parse(&db.url).unwrap(), OpenMode::Existing)
        .await
        .unwrap();
    eventually(
        "the daemon on PostgreSQL has scanned the job files",
        || async { store.get_job("marker").await.ok().map(drop) },
    )
    .await;
    let runs = store.list_runs(&RunFilter::default()).await.unwrap();
    assert_eq!(
        runs.len(),
        1,
        "the one-shot job did not run again: {runs:?}"
    );
    daemon.signal("TERM");
    assert!(daemon.wait_exit().0.success());
    store.close().await;
    sim.shutdown().await;
}

/// The database stops in the middle of a restore and an export (a failover, a restart) and
/// comes back 15 s later (longer than the store's 10 s wait for a connection, so store calls
/// fail meanwhile): the daemon keeps its process, says not-ready on `/readyz` while the
/// database is away, reconnects, and both runs finish with the restore POSTed exactly once and
/// the export complete.
#[tokio::test(flavor = "multi_thread")]
async fn the_database_restarting_mid_run_loses_nothing_and_sends_nothing_twice() {
    let Some(cluster) =
        crate::common::postgres::Cluster::start("the_database_restarting_mid_run_loses_nothing")
    else {
        return;
    };
    let url = cluster.database("restorectl").await;
    let sim = Simulator::start(
        SimConfig {
            restore_delay: Duration::from_secs(6),
            export_sizes: [("alice@contoso.com".to_string(), 64 << 20)].into(),
            export_build_delay: Duration::from_secs(2),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let site = Site::new(&sim.base_url(), &format!("127.0.0.1:{port}"));
    std::fs::write(site.path("secrets/m365-restore-password"), "dev\n").unwrap();
    append_config(
        &site,
        &format!(
            "database: {url}\n\
             defaults:\n  retry: {{ maxAttempts: 10, initialBackoff: 1s, maxBackoff: 3s }}"
        ),
    );
    site.write_job(
        "restore.yaml",
        "apiVersion: restorectl/v1\nkind: Restore\nmetadata: { name: restore-bob }\nspec:\n  \
         organization: contoso.onmicrosoft.com\n  mailboxes: [bob@contoso.com]\n  \
         archives: exclude\n  restore:\n    credentials:\n      user:\n        \
         userName: svc-backup@contoso.com\n        password: { secret: m365-restore-password }\n",
    );
    site.write_job("export.yaml", &export_job("export-alice", None, ""));
    let bob = sim.mailbox("bob@contoso.com", false).unwrap();
    let daemon = Daemon::start(&site);
    let location = Location::parse(&url).unwrap();
    let (store, _) = eventually("the restore was posted", || async {
        let store = Store::connect(&location, OpenMode::Existing).await.ok()?;
        let runs = store.list_runs(&RunFilter::default()).await.ok()?;
        for run in runs.iter().filter(|r| r.job_name == "restore-bob") {
            let steps = store.list_steps(run.id).await.ok()?;
            if steps.iter().any(|s| s.restore_posts >= 1) {
                return Some(store);
            }
        }
        store.close().await;
        None
    })
    .await;
    store.close().await;

    cluster.stop();
    let (code, _) = eventually(
        "/readyz says not ready while the database is away",
        || async { readyz(port).await.filter(|c| *c == 503) },
    )
    .await;
    assert_eq!(code, 503);
    // Longer than the pool's 10 s wait for a connection: store calls fail meanwhile.
    tokio::time::sleep(Duration::from_secs(15)).await;
    cluster.restart();

    let store = Store::connect(&location, OpenMode::Existing).await.unwrap();
    let start = std::time::Instant::now();
    let runs = loop {
        let runs = store.list_runs(&RunFilter::default()).await.unwrap();
        if runs.len() == 2 && runs.iter().all(|r| r.state.is_terminal()) {
            break runs;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "runs not finished after the database came back: {runs:#?}\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for run in &runs {
        assert_eq!(
            run.state,
            RunState::Succeeded,
            "{}: {:?}\n{}",
            run.job_name,
            run.reason,
            daemon.log()
        );
    }
    assert_eq!(sim.restore_calls(bob.id), 1, "the restore was POSTed once");
    assert_eq!(readyz(port).await, Some(200), "ready again");
    let pst = published(&site.path("exports"), "export-alice");
    let primary: Vec<_> = pst
        .iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "alice@contoso.com.pst"))
        .collect();
    assert_eq!(primary.len(), 1, "{pst:?}");
    assert_eq!(std::fs::metadata(primary[0]).unwrap().len(), 64 << 20);
    let log = daemon.log();
    assert!(
        log.contains("state database error"),
        "the outage was seen by the daemon (store calls failed and were retried):\n{log}"
    );
    daemon.signal("TERM");
    assert!(daemon.wait_exit().0.success());
    store.close().await;
    sim.shutdown().await;
}
