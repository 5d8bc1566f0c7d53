//! The state database on both backends: real SQLite files in temporary directories and a real
//! PostgreSQL server (a database of its own per test, `common::postgres`). Migrations, one
//! round-trip test per table group (with the life-cycle rules each group enforces), the
//! append-only event log, the trigger-kept counts and the one-snapshot statistics run on both
//! (`on_both_backends!`); SQLite's file modes, WAL and "database is locked" checks on SQLite.

#[path = "../common/mod.rs"]
mod common;
mod postgres;

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use sqlx::AnyConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Row};

use common::postgres::TestDatabase;

use restorectl::store::{
    CancelOutcome, Decision, DownloadState, ErrorClass, EventKind, FileApply, FileChange,
    FileFormat, InstanceInfo, JobState, NewDownload, NewExport, NewJobVersion, NewRequest, NewRun,
    NewSession, NewStep, NextFire, RequestKind, RestoreCounts, RunFilter, RunId, RunState,
    ScannedFile, SearchPage, SessionState, Step, StepErrorRecord, StepFile, StepState, Store,
    StoreError, Trigger, VersionChange, expected_schema_version,
};

/// A fixed clock: every test passes explicit instants, as the scheduler will.
fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap() + chrono::Duration::seconds(secs)
}

/// A database for one test on one backend.
enum TestDb {
    Sqlite(tempfile::TempDir),
    Postgres(TestDatabase),
}

impl TestDb {
    async fn sqlite() -> TestDb {
        TestDb::Sqlite(tempfile::tempdir().unwrap())
    }

    /// `None` (after a message; a failure under CI) when no PostgreSQL server answers.
    async fn postgres(test: &str) -> Option<TestDb> {
        TestDatabase::create(test).await.map(TestDb::Postgres)
    }

    /// Another empty database on the same backend.
    async fn another(&self, test: &str) -> TestDb {
        match self {
            TestDb::Sqlite(_) => TestDb::sqlite().await,
            TestDb::Postgres(_) => TestDb::postgres(test).await.expect("the server answered"),
        }
    }

    fn url(&self) -> String {
        match self {
            TestDb::Sqlite(dir) => {
                format!(
                    "sqlite://{}",
                    dir.path().join("state/restorectl.db").display()
                )
            }
            TestDb::Postgres(db) => db.url.clone(),
        }
    }

    async fn open(&self) -> Store {
        Store::open_url(&self.url()).await.unwrap()
    }

    /// A connection outside the store, for what the store does not offer.
    async fn raw(&self) -> AnyConnection {
        sqlx::any::install_default_drivers();
        AnyConnection::connect(&self.url()).await.unwrap()
    }
}

/// Runs each named `async fn NAME(db: &TestDb)` once on SQLite and once on PostgreSQL (as
/// `sqlite::NAME` and `postgres::NAME`).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::TestDb::sqlite().await).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = super::TestDb::postgres(stringify!($name)).await else {
                        return;
                    };
                    super::$name(&db).await;
                }
            )*
        }
    };
}

on_both_backends!(
    jobs_and_versions_round_trip,
    an_export_step_starts_and_finishes_in_one_commit_each,
    bulk_apply_of_new_files_records_what_one_by_one_would,
    runs_enqueue_claim_lease_and_finish,
    steps_follow_the_at_most_once_protocol,
    submitting_needs_the_runs_unexpired_lease,
    a_run_request_queues_one_run_whoever_consumes_it,
    restore_sessions_bookkeeping,
    downloads_progress_and_exports_retention,
    search_progress_is_a_resume_point_per_step,
    receiving_downloads_are_steps_downloading_with_bytes_on_disk,
    requests_and_instance_lock,
    events_are_append_only,
    run_counts_follow_every_insert_and_state_change,
    stats_reads_one_snapshot_while_runs_finish,
    a_database_migrated_by_a_newer_restorectl_is_refused,
    the_copy_covers_every_table_and_column,
    notifications_are_written_with_the_state_change_that_raises_them,
    a_job_file_that_becomes_invalid_is_notified_once,
    failure_counts_and_download_bytes_follow_every_change,
    continue_requests_and_device_code_events,
    replicas_register_lead_and_hand_over,
    history_pruning_keeps_what_must_stay,
    periodic_reads_stay_o_jobs_with_a_long_history,
);

/// Several replicas on one database (docs/ha.md): registration never refuses a live replica,
/// a replica proven dead has its leases and its lead ended at once, one replica leads at a time,
/// the lead moves only once the lease has expired (or is forced, or given up), a replica marked
/// stopped comes back with its next heartbeat, and the history names every leader.
async fn replicas_register_lead_and_hand_over(db: &TestDb) {
    let store = db.open().await;
    let lease = Duration::from_secs(10);
    let a = InstanceInfo {
        id: "inst-a",
        pid: 111,
        host: "node1",
        name: "replica-a",
    };
    let b = InstanceInfo {
        id: "inst-b",
        pid: 222,
        host: "node2",
        name: "replica-b",
    };
    store.register_replica(&a, &[], t(0)).await.unwrap();
    store.register_replica(&b, &[], t(1)).await.unwrap();
    let live = store.list_live_instances().await.unwrap();
    assert_eq!(live.len(), 2, "a live replica is not refused: {live:?}");
    assert_eq!(
        live.iter().map(|i| i.replica_name()).collect::<Vec<_>>(),
        ["replica-b", "replica-a"]
    );

    // One leader at a time: a takes the lead, b cannot while a's lease runs.
    assert!(store.leadership().await.unwrap().is_none());
    let l = store.try_lead("inst-a", lease, false, t(2)).await.unwrap();
    assert_eq!((l.holder.as_str(), l.term), ("inst-a", 1));
    let l = store.try_lead("inst-b", lease, false, t(5)).await.unwrap();
    assert_eq!(l.holder, "inst-a", "b does not lead while a's lease runs");
    // a renews: same term, later expiry.
    let l = store.try_lead("inst-a", lease, false, t(8)).await.unwrap();
    assert_eq!(
        (l.holder.as_str(), l.term, l.expires_at),
        ("inst-a", 1, t(18))
    );
    let l = store.try_lead("inst-b", lease, false, t(17)).await.unwrap();
    assert_eq!(l.holder, "inst-a", "still a's until t(18)");
    // a stops renewing: the lead moves once its lease has expired.
    let l = store.try_lead("inst-b", lease, false, t(18)).await.unwrap();
    assert_eq!((l.holder.as_str(), l.term, l.since), ("inst-b", 2, t(18)));
    let l = store.try_lead("inst-a", lease, false, t(19)).await.unwrap();
    assert_eq!(l.holder, "inst-b", "the old leader does not take it back");
    // A graceful stop gives the lead up at once.
    assert!(store.resign_leadership("inst-b", t(20)).await.unwrap());
    assert!(!store.resign_leadership("inst-b", t(20)).await.unwrap());
    let l = store.try_lead("inst-a", lease, false, t(20)).await.unwrap();
    assert_eq!((l.holder.as_str(), l.term), ("inst-a", 3));
    // The SQLite daemon, alone by its lock, forces it.
    let l = store.try_lead("inst-b", lease, true, t(21)).await.unwrap();
    assert_eq!((l.holder.as_str(), l.term), ("inst-b", 4));

    // Runs: b holds one; a replica restarting on b's host proves b dead (its process is gone):
    // b's lease and lead end at once, a's leases are untouched.
    let version = seed_job(&store, "replicated", "h1").await;
    for at in [30, 31] {
        store
            .enqueue_run(
                &new_run("replicated", version, "h1", Trigger::Manual, at),
                t(at),
            )
            .await
            .unwrap()
            .unwrap();
    }
    let run_b = store
        .claim_next_run("inst-b", Duration::from_secs(60), t(40))
        .await
        .unwrap()
        .unwrap();
    let run_a = store
        .claim_next_run("inst-a", Duration::from_secs(60), t(40))
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .claim_next_run("inst-c", Duration::from_secs(60), t(41))
            .await
            .unwrap()
            .is_none(),
        "both runs are leased"
    );
    let c = InstanceInfo {
        id: "inst-c",
        pid: 333,
        host: "node2",
        name: "replica-c",
    };
    store
        .register_replica(&c, &["inst-b".to_string()], t(42))
        .await
        .unwrap();
    let taken = store
        .claim_next_run("inst-c", Duration::from_secs(60), t(42))
        .await
        .unwrap()
        .expect("the dead replica's run is claimable at once");
    assert_eq!(taken.id, run_b.id);
    assert_eq!(taken.attempts, 2);
    assert_eq!(
        store
            .get_run(run_a.id)
            .await
            .unwrap()
            .lease_owner
            .as_deref(),
        Some("inst-a"),
        "a live replica's run is not taken"
    );
    let l = store.try_lead("inst-c", lease, false, t(42)).await.unwrap();
    assert_eq!(
        (l.holder.as_str(), l.term),
        ("inst-c", 5),
        "the dead replica's lead ended at registration"
    );
    let live: Vec<String> = store
        .list_live_instances()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert!(!live.contains(&"inst-b".to_string()), "{live:?}");
    // A replica only cut off comes back with its heartbeat.
    store.heartbeat_replica("inst-b", t(43)).await.unwrap();
    assert!(
        store
            .list_live_instances()
            .await
            .unwrap()
            .iter()
            .any(|i| i.id == "inst-b")
    );
    assert!(matches!(
        store.heartbeat_replica("inst-zz", t(43)).await,
        Err(StoreError::InstanceLost { .. })
    ));
    let elected: Vec<serde_json::Value> = store
        .list_recent_events(100)
        .await
        .unwrap()
        .into_iter()
        .rev()
        .filter(|e| e.kind == "leader_elected")
        .map(|e| e.data.unwrap()["replica"].clone())
        .collect();
    assert_eq!(
        elected,
        [
            json!("replica-a"),
            json!("replica-b"),
            json!("replica-a"),
            json!("replica-b"),
            json!("replica-c")
        ]
    );
    assert_eq!(store.list_instances().await.unwrap().len(), 3);
}

/// The trigger-kept failure counts and download bytes as `stats_counts` reads them, checked
/// against a count and a sum over every row.
async fn totals_both_ways(store: &Store, conn: &mut AnyConnection) -> (Vec<(String, i64)>, i64) {
    let stats = store.stats_counts().await.unwrap();
    let counted: Vec<(String, i64)> = sqlx::query_as(
        "SELECT COALESCE(error_class, 'unknown'), COUNT(*) FROM steps
         WHERE state = 'failed' GROUP BY COALESCE(error_class, 'unknown') ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let summed: i64 =
        sqlx::query_scalar("SELECT CAST(COALESCE(SUM(bytes_durable), 0) AS BIGINT) FROM downloads")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    let kept: Vec<(String, i64)> = stats
        .step_failures
        .iter()
        .map(|(c, n)| (c.clone(), i64::try_from(*n).unwrap()))
        .collect();
    assert_eq!(kept, counted);
    assert_eq!(i64::try_from(stats.download_bytes).unwrap(), summed);
    (kept, summed)
}

/// `/metrics` reads the failed steps per class and the downloaded bytes from trigger-kept
/// totals (migration 0006): after inserts, failures, a retry that leaves `failed`, a class that
/// changes, progress, a restart from zero and more progress, they equal a count and a sum over
/// every row.
async fn failure_counts_and_download_bytes_follow_every_change(db: &TestDb) {
    let store = db.open().await;
    let mut conn = db.raw().await;
    let version = seed_job(&store, "totals", "h").await;
    let run = store
        .enqueue_run(&new_run("totals", version, "h", Trigger::Manual, 0), t(1))
        .await
        .unwrap()
        .unwrap();
    let steps = store
        .create_steps(
            run.id,
            &(0..4)
                .map(|i| NewStep {
                    seq: i,
                    mailbox_id: Some(format!("m{i}")),
                    ..NewStep::default()
                })
                .collect::<Vec<_>>(),
            t(2),
        )
        .await
        .unwrap();
    let error = |class: ErrorClass| StepErrorRecord {
        class,
        code: None,
        message: "boom".into(),
    };
    for step in &steps[..3] {
        store.begin_step_attempt(step.id, t(3)).await.unwrap();
    }
    store
        .set_step_state(
            steps[0].id,
            StepState::Failed,
            Some(&error(ErrorClass::Permanent)),
            t(4),
        )
        .await
        .unwrap();
    store
        .set_step_state(
            steps[1].id,
            StepState::Failed,
            Some(&error(ErrorClass::Auth)),
            t(4),
        )
        .await
        .unwrap();
    store
        .set_step_state(steps[2].id, StepState::Failed, None, t(4))
        .await
        .unwrap();
    let (kept, _) = totals_both_ways(&store, &mut conn).await;
    assert_eq!(kept.iter().map(|(_, n)| n).sum::<i64>(), 3, "{kept:?}");

    let download = |step: i64| NewDownload {
        step_id: step,
        final_path: Path::new("/exports/a.pst"),
        partial_path: Path::new("/exports/.a.pst.partial"),
        restore_session_id: Some("s1"),
    };
    store
        .create_download(&download(steps[3].id), t(5))
        .await
        .unwrap();
    store
        .record_download_progress(steps[3].id, 64 << 20, None, Some(1 << 30), t(6))
        .await
        .unwrap();
    let (_, bytes) = totals_both_ways(&store, &mut conn).await;
    assert_eq!(bytes, 64 << 20);
    store
        .record_download_restart(steps[3].id, "server ignored Range", Some("s2"), t(7))
        .await
        .unwrap();
    store
        .record_download_progress(steps[3].id, 1 << 20, None, Some(1 << 30), t(8))
        .await
        .unwrap();
    let (_, bytes) = totals_both_ways(&store, &mut conn).await;
    assert_eq!(bytes, 1 << 20);
    // A class that changes on a failed row (raw: the store never does it, a future one may).
    sqlx::query("UPDATE steps SET error_class = 'retryable' WHERE id = $1")
        .bind(steps[0].id)
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("UPDATE steps SET state = 'pending' WHERE id = $1")
        .bind(steps[1].id)
        .execute(&mut conn)
        .await
        .unwrap();
    let (kept, _) = totals_both_ways(&store, &mut conn).await;
    assert_eq!(kept.iter().map(|(_, n)| n).sum::<i64>(), 2, "{kept:?}");
}

/// `migrate-state` copies the tables and columns `store::copy::TABLES` lists: that list must be
/// the schema (less the migrations table), so a column added
/// by a later migration cannot be left behind.
async fn the_copy_covers_every_table_and_column(db: &TestDb) {
    use restorectl::store::copy::{JOB_VERSION_POINTERS, NOT_COPIED, TABLES};
    db.open().await.close().await;
    let mut conn = db.raw().await;
    let postgres = matches!(db, TestDb::Postgres(_));
    let tables: Vec<String> = sqlx::query_scalar(if postgres {
        "SELECT CAST(table_name AS TEXT) FROM information_schema.tables
         WHERE table_schema = current_schema() ORDER BY 1"
    } else {
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
         ORDER BY 1"
    })
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut listed: Vec<String> = TABLES
        .iter()
        .map(|(t, _)| t.to_string())
        .chain(NOT_COPIED.iter().map(|t| t.to_string()))
        .collect();
    listed.sort();
    assert_eq!(tables, listed);
    for (table, columns) in TABLES {
        let mut schema: Vec<String> = sqlx::query_scalar(if postgres {
            "SELECT CAST(column_name AS TEXT) FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY 1"
        } else {
            "SELECT name FROM pragma_table_info($1) ORDER BY 1"
        })
        .bind(*table)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        if *table == "jobs" {
            schema.retain(|c| !JOB_VERSION_POINTERS.contains(&c.as_str()));
        }
        let mut copied: Vec<String> = columns.iter().map(|(c, _)| c.to_string()).collect();
        copied.sort();
        assert_eq!(schema, copied, "columns of {table}");
    }
}

/// A replica whose binary is older than the schema refuses to start, saying to upgrade it,
/// instead of running queries against tables it does not know; read-only opens say the same
/// in their own words.
async fn a_database_migrated_by_a_newer_restorectl_is_refused(db: &TestDb) {
    db.open().await.close().await;
    let mut conn = db.raw().await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES ($1, 'from the future', $2, $3, 0)",
    )
    .bind(expected_schema_version() + 1)
    .bind(true)
    .bind(vec![0_u8; 48])
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    let err = Store::open_url(&db.url()).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{message}");
    assert!(
        message.contains(&format!(
            "(version {}) is newer than this restorectl knows (up to {})",
            expected_schema_version() + 1,
            expected_schema_version()
        )),
        "{message}"
    );
    assert!(message.contains("upgrade"), "{message}");
    let location = restorectl::store::Location::parse(&db.url()).unwrap();
    let err = Store::connect(&location, restorectl::store::OpenMode::ReadOnly)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::SchemaMismatch { .. }), "{err}");
}

async fn seed_job(store: &Store, name: &str, spec_hash: &str) -> i64 {
    let spec = json!({ "kind": "ExportPst", "name": name });
    store
        .upsert_job_version(
            &NewJobVersion {
                name,
                kind: "ExportPst",
                file: Path::new("/jobs/a.yaml"),
                spec_hash,
                spec: &spec,
                valid: true,
                errors: &json!([]),
            },
            t(0),
        )
        .await
        .unwrap()
        .version_id
}

fn new_run<'a>(job: &'a str, version: i64, hash: &'a str, trigger: Trigger, at: i64) -> NewRun<'a> {
    NewRun {
        job_name: job,
        job_version_id: version,
        spec_hash: hash,
        trigger,
        scheduled_for: t(at),
        state: RunState::Queued,
        reason: None,
        timeout: Some(Duration::from_secs(3600)),
    }
}

/// A job `job`, a manual run of it and its one step (mailbox `mb-1`), all at `t(0)`.
async fn seed_step(store: &Store, job: &str) -> Step {
    let v = seed_job(store, job, "h1").await;
    let run = store
        .enqueue_run(&new_run(job, v, "h1", Trigger::Manual, 0), t(0))
        .await
        .unwrap()
        .unwrap();
    store
        .create_steps(
            run.id,
            &[NewStep {
                seq: 0,
                mailbox_id: Some("mb-1".into()),
                ..Default::default()
            }],
            t(0),
        )
        .await
        .unwrap()
        .remove(0)
}

async fn event_kinds(store: &Store, run: RunId) -> Vec<String> {
    store
        .list_run_events(run)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

// Migrations create every table on a fresh file with private permissions, re-opening is a
// no-op, and read-only opens work on an existing database and fail clearly on a missing one.
/// Several processes opening a new database at once (the daemon's first start and an operator
/// command) each run the migrations; they are serialised, so none fails with "table already
/// exists". Separate connections race the same way within one process.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_opens_migrate_once() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("state{round}/restorectl.db"));
        let opens: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                tokio::spawn(async move { Store::open(&path).await })
            })
            .collect();
        for o in opens {
            let store = o.await.unwrap().expect("every concurrent open succeeds");
            assert_eq!(
                store.schema_version().await.unwrap(),
                Some(restorectl::store::expected_schema_version())
            );
        }
    }
}

#[tokio::test]
async fn migrations_apply_once_and_reopen_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/state/restorectl.db");
    let store = Store::open(&path).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), Some(9));
    assert_eq!(expected_schema_version(), 9);
    seed_job(&store, "kept", "h1").await;
    store.close().await;

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600, "database file mode");
        assert_eq!(mode(path.parent().unwrap()), 0o700, "state directory mode");
        assert_eq!(
            mode(&dir.path().join("nested")),
            0o700,
            "created parent mode"
        );
    }

    // Re-open twice (once through the URL form): the migration is not re-applied and data stays.
    let again = Store::open_url(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert_eq!(again.schema_version().await.unwrap(), Some(9));
    assert_eq!(again.get_job("kept").await.unwrap().name, "kept");
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut raw_connection(&path).await)
        .await
        .unwrap();
    assert_eq!(journal, "wal");
    again.close().await;
    let third = Store::open(&path).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&mut raw_connection(&path).await)
        .await
        .unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
        .unwrap()
        .count();
    assert_eq!(applied as usize, files, "every migration, each once");
    third.close().await;

    // Read-only after every writer closed (no -wal/-shm left behind).
    let ro = Store::open_read_only(&path).await.unwrap();
    assert!(ro.is_read_only());
    assert_eq!(ro.get_job("kept").await.unwrap().state, JobState::Active);
    let err = ro.mark_job_removed("kept", t(1)).await.unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err}");
    ro.close().await;

    let missing = dir.path().join("nowhere/restorectl.db");
    let err = Store::open_read_only(&missing).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::Missing { .. }));
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
    assert!(message.contains("daemon has not run yet"), "{message}");
    assert!(
        !missing.exists(),
        "a read-only open must not create the file"
    );
    assert!(matches!(
        Store::open_existing(&missing).await.unwrap_err(),
        StoreError::Missing { .. }
    ));
    assert!(matches!(
        Store::open_url("mysql://db/restorectl").await.unwrap_err(),
        StoreError::Url(_)
    ));
}

async fn raw_connection(path: &Path) -> SqliteConnection {
    SqliteConnection::connect_with(
        &SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(Duration::from_secs(10)),
    )
    .await
    .unwrap()
}

// Job files and job versions: new / unchanged / changed, an invalid edit keeps the active
// version, a first invalid version is not scheduled, removal and return, next-fire bookkeeping.
async fn jobs_and_versions_round_trip(db: &TestDb) {
    let store = db.open().await;
    let file = Path::new("/jobs/legal.yaml");
    let names = vec!["legal-hold".to_string()];
    let scanned = |hash: &'static str, valid: bool| ScannedFile {
        path: file,
        content_hash: hash,
        valid,
        errors: if valid { &EMPTY } else { &ERRORS },
        job_names: &names,
    };
    assert_eq!(
        store
            .record_job_file(&scanned("c1", true), t(0))
            .await
            .unwrap(),
        FileChange::New
    );
    assert_eq!(
        store
            .record_job_file(&scanned("c1", true), t(1))
            .await
            .unwrap(),
        FileChange::Unchanged
    );
    assert_eq!(
        store
            .record_job_file(&scanned("c2", false), t(2))
            .await
            .unwrap(),
        FileChange::Changed
    );
    let files = store.list_job_files().await.unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].path, file);
    assert!(!files[0].valid);
    assert_eq!(files[0].errors, *ERRORS);
    assert_eq!(files[0].job_names, names);
    assert_eq!(files[0].first_seen_at, t(0));
    assert_eq!(files[0].last_seen_at, t(2));
    assert!(store.mark_job_file_removed(file, t(3)).await.unwrap());
    assert!(!store.mark_job_file_removed(file, t(3)).await.unwrap());
    assert_eq!(
        store.list_job_files().await.unwrap()[0].removed_at,
        Some(t(3))
    );
    assert_eq!(
        store
            .record_job_file(&scanned("c2", false), t(4))
            .await
            .unwrap(),
        FileChange::Changed,
        "a removed file that comes back counts as changed"
    );
    assert_eq!(store.list_job_files().await.unwrap()[0].removed_at, None);

    let version =
        |hash: &'static str, valid: bool, spec: &'static serde_json::Value| NewJobVersion {
            name: "legal-hold",
            kind: "ExportPst",
            file,
            spec_hash: hash,
            spec,
            valid,
            errors: if valid { &EMPTY } else { &ERRORS },
        };
    let v1 = store
        .upsert_job_version(&version("h1", true, &SPEC1), t(10))
        .await
        .unwrap();
    assert_eq!(v1.change, VersionChange::New);
    assert_eq!(v1.state, JobState::Active);
    assert_eq!(v1.active_version_id, Some(v1.version_id));
    let same = store
        .upsert_job_version(&version("h1", true, &SPEC1), t(11))
        .await
        .unwrap();
    assert_eq!(same.change, VersionChange::Unchanged);
    assert_eq!(same.version_id, v1.version_id);

    // An invalid edit: recorded, job invalid with errors, active version unchanged.
    let bad = store
        .upsert_job_version(&version("h2", false, &SPEC2), t(12))
        .await
        .unwrap();
    assert_eq!(bad.change, VersionChange::Changed);
    assert_eq!(bad.state, JobState::Invalid);
    assert_eq!(bad.active_version_id, Some(v1.version_id));
    let job = store.get_job("legal-hold").await.unwrap();
    assert_eq!(job.state, JobState::Invalid);
    assert_eq!(job.errors, *ERRORS);
    assert_eq!(job.active_version_id, Some(v1.version_id));
    assert_eq!(job.current_version_id, Some(bad.version_id));
    let rescan = store
        .upsert_job_version(&version("h2", false, &SPEC2), t(13))
        .await
        .unwrap();
    assert_eq!(
        rescan.change,
        VersionChange::Unchanged,
        "same invalid content rescanned"
    );
    let stored_bad = store.get_job_version(bad.version_id).await.unwrap();
    assert!(!stored_bad.valid);
    assert_eq!(stored_bad.spec_json, *SPEC2);
    assert_eq!(stored_bad.errors, *ERRORS);

    // Fixed by reverting to the first content: the same version row is active again.
    let fixed = store
        .upsert_job_version(&version("h1", true, &SPEC1), t(14))
        .await
        .unwrap();
    assert_eq!(fixed.change, VersionChange::Changed);
    assert_eq!(fixed.version_id, v1.version_id);
    let job = store.get_job("legal-hold").await.unwrap();
    assert_eq!(job.state, JobState::Active);
    assert_eq!(job.errors, json!([]));
    assert_eq!(
        store.list_job_versions("legal-hold").await.unwrap().len(),
        2
    );

    // A job whose first version is invalid exists but has no active version.
    let first_bad = store
        .upsert_job_version(
            &NewJobVersion {
                name: "broken",
                kind: "Restore",
                file: Path::new("/jobs/broken.yaml"),
                spec_hash: "b1",
                spec: &json!({}),
                valid: false,
                errors: &ERRORS,
            },
            t(15),
        )
        .await
        .unwrap();
    assert_eq!(first_bad.change, VersionChange::New);
    assert_eq!(first_bad.active_version_id, None);
    let broken = store.get_job("broken").await.unwrap();
    assert_eq!(
        (broken.state, broken.active_version_id),
        (JobState::Invalid, None)
    );

    // Next fire bookkeeping, then removal clears it, and the job comes back.
    store
        .set_next_fire(
            "legal-hold",
            NextFire {
                schedule_key: Some("0 2 * * SUN Europe/Berlin"),
                next_fire_at: Some(t(3600)),
            },
        )
        .await
        .unwrap();
    let job = store.get_job("legal-hold").await.unwrap();
    assert_eq!(job.next_fire_at, Some(t(3600)));
    assert_eq!(
        job.schedule_key.as_deref(),
        Some("0 2 * * SUN Europe/Berlin")
    );
    assert!(
        store
            .set_next_fire(
                "nope",
                NextFire {
                    schedule_key: None,
                    next_fire_at: None
                }
            )
            .await
            .unwrap_err()
            .is_not_found()
    );

    let run = store
        .enqueue_run(
            &new_run("legal-hold", v1.version_id, "h1", Trigger::Manual, 20),
            t(20),
        )
        .await
        .unwrap()
        .unwrap();
    let missed = NewRun {
        state: RunState::Missed,
        ..new_run("legal-hold", v1.version_id, "h1", Trigger::Schedule, 30)
    };
    store.enqueue_run(&missed, t(30)).await.unwrap().unwrap();
    let jobs = store.list_jobs().await.unwrap();
    assert_eq!(
        jobs.iter().map(|j| j.job.name.as_str()).collect::<Vec<_>>(),
        ["broken", "legal-hold"]
    );
    let summary = &jobs[1];
    assert_eq!(summary.active_version.as_ref().unwrap().id, v1.version_id);
    assert_eq!(summary.active_version.as_ref().unwrap().spec_json, *SPEC1);
    assert_eq!(
        summary.last_run.as_ref().unwrap().id,
        run.id,
        "missed rows are not the last run"
    );
    assert_eq!(summary.job.next_fire_at, Some(t(3600)));
    assert!(jobs[0].active_version.is_none() && jobs[0].last_run.is_none());

    assert!(store.mark_job_removed("legal-hold", t(40)).await.unwrap());
    assert!(!store.mark_job_removed("legal-hold", t(41)).await.unwrap());
    let job = store.get_job("legal-hold").await.unwrap();
    assert_eq!(job.state, JobState::Removed);
    assert_eq!((job.next_fire_at, job.schedule_key.clone()), (None, None));
    assert_eq!(job.removed_at, Some(t(40)));
    let back = store
        .upsert_job_version(&version("h1", true, &SPEC1), t(50))
        .await
        .unwrap();
    assert_eq!(back.change, VersionChange::Changed);
    let job = store.get_job("legal-hold").await.unwrap();
    assert_eq!((job.state, job.removed_at), (JobState::Active, None));

    let kinds: Vec<String> = store
        .list_recent_events(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.job_name.as_deref() == Some("legal-hold") && e.run_id.is_none())
        .map(|e| e.kind)
        .rev()
        .collect();
    assert_eq!(
        kinds,
        [
            "job_version_added",   // v1
            "job_version_invalid", // h2
            "job_version_added",   // fixed
            "job_removed",
            "job_version_added", // back
        ]
    );
}

/// A job file for the apply tests: `(name, spec hash, valid)` per job.
struct TestFile {
    path: std::path::PathBuf,
    hash: String,
    names: Vec<String>,
    jobs: Vec<(String, String, bool, serde_json::Value)>,
}

impl TestFile {
    fn new(path: &str, hash: &str, jobs: &[(&str, &str, bool)]) -> TestFile {
        TestFile {
            path: Path::new("/jobs").join(path),
            hash: hash.into(),
            names: jobs.iter().map(|j| j.0.to_string()).collect(),
            jobs: jobs
                .iter()
                .map(|&(n, h, v)| {
                    let spec = if v {
                        json!({"name": n, "h": h, "x": 1.5})
                    } else {
                        json!(null)
                    };
                    (n.to_string(), h.to_string(), v, spec)
                })
                .collect(),
        }
    }

    fn valid(&self) -> bool {
        self.jobs.iter().all(|j| j.2)
    }

    fn apply(&self) -> FileApply<'_> {
        FileApply {
            file: ScannedFile {
                path: &self.path,
                content_hash: &self.hash,
                valid: self.valid(),
                errors: if self.valid() { &EMPTY } else { &ERRORS },
                job_names: &self.names,
            },
            versions: self
                .jobs
                .iter()
                .map(|(n, h, v, spec)| NewJobVersion {
                    name: n,
                    kind: "ExportPst",
                    file: &self.path,
                    spec_hash: h,
                    spec,
                    valid: *v,
                    errors: if *v { &EMPTY } else { &ERRORS },
                })
                .collect(),
        }
    }
}

/// Applies `files` one store call per version and per file (the reference behaviour).
async fn apply_one_by_one(
    store: &Store,
    files: &[TestFile],
    now: DateTime<Utc>,
) -> Vec<(FileChange, Vec<(VersionChange, JobState, bool)>)> {
    let mut out = Vec::new();
    for f in files {
        let a = f.apply();
        let mut outcomes = Vec::new();
        for v in &a.versions {
            let o = store.upsert_job_version(v, now).await.unwrap();
            outcomes.push((o.change, o.state, o.active_version_id.is_some()));
        }
        out.push((store.record_job_file(&a.file, now).await.unwrap(), outcomes));
    }
    out
}

async fn apply_in_bulk(
    store: &Store,
    files: &[TestFile],
    now: DateTime<Utc>,
) -> Vec<(FileChange, Vec<(VersionChange, JobState, bool)>)> {
    let applies: Vec<FileApply<'_>> = files.iter().map(TestFile::apply).collect();
    let out = store
        .apply_job_files(&applies, &restorectl::store::Routing::none(), now)
        .await
        .unwrap();
    // The outcome last returned for each job is what its row now says.
    let mut last = std::collections::HashMap::new();
    for ((_, outcomes), f) in out.iter().zip(files) {
        for (o, (name, ..)) in outcomes.iter().zip(&f.jobs) {
            last.insert(name.clone(), *o);
        }
    }
    for job in store.list_job_rows().await.unwrap() {
        if let Some(o) = last.get(&job.name) {
            assert_eq!(job.current_version_id, Some(o.version_id), "{}", job.name);
            assert_eq!(job.active_version_id, o.active_version_id, "{}", job.name);
        }
    }
    out.into_iter()
        .map(|(change, outcomes)| {
            let outcomes = outcomes
                .iter()
                .map(|o| (o.change, o.state, o.active_version_id.is_some()))
                .collect();
            (change, outcomes)
        })
        .collect()
}

/// The job tables as text: `exact` keeps row ids; otherwise ids are replaced by the spec hash
/// they point at and events are compared as a sorted list without ids. Every column is read as
/// text, so the same statements run on both backends.
async fn dump(db: &TestDb, exact: bool) -> Vec<String> {
    let mut conn = db.raw().await;
    let version = |col: &str| {
        if exact {
            format!("j.{col}")
        } else {
            format!("(SELECT spec_hash FROM job_versions WHERE id = j.{col})")
        }
    };
    let tables = [
        (
            vec![
                "j.name".to_string(),
                "j.kind".into(),
                "j.file".into(),
                version("active_version_id"),
                version("current_version_id"),
                "j.state".into(),
                "j.errors".into(),
                "j.schedule_key".into(),
                "j.next_fire_at".into(),
                "j.first_seen_at".into(),
                "j.last_seen_at".into(),
                "j.removed_at".into(),
            ],
            "jobs AS j ORDER BY j.name",
        ),
        (
            [
                if exact { "id" } else { "0" },
                "job_name",
                "file",
                "spec_hash",
                "spec_json",
                "valid",
                "errors",
                "first_seen_at",
                "last_seen_at",
            ]
            .map(String::from)
            .to_vec(),
            "job_versions ORDER BY job_name, spec_hash",
        ),
        (
            [
                "path",
                "content_hash",
                "valid",
                "errors",
                "job_names",
                "first_seen_at",
                "last_seen_at",
                "removed_at",
            ]
            .map(String::from)
            .to_vec(),
            "job_files ORDER BY path",
        ),
    ];
    let mut out = Vec::new();
    for (columns, from) in tables {
        let select: Vec<String> = columns
            .iter()
            .map(|c| format!("CAST({c} AS TEXT)"))
            .collect();
        let sql = format!("SELECT {} FROM {from}", select.join(", "));
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        for row in rows {
            let values: Vec<Option<String>> = (0..columns.len()).map(|i| row.get(i)).collect();
            out.push(format!("{values:?}"));
        }
    }
    type EventRow = (i64, i64, String, Option<String>, String, Option<String>);
    let events: Vec<EventRow> =
        sqlx::query_as("SELECT id, at, kind, job_name, message, data FROM events ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let mut events: Vec<String> = events
        .into_iter()
        .map(|(id, at, kind, job, message, data)| {
            let mut data: serde_json::Value =
                serde_json::from_str(data.as_deref().unwrap_or("null")).unwrap();
            let mut message = message;
            if !exact {
                for key in ["version_id", "active_version_id"] {
                    if let Some(v) = data.get_mut(key).filter(|v| !v.is_null()) {
                        *v = json!("id");
                    }
                }
                // Ids are opaque: PostgreSQL's identity sequences are not gapless, so the two
                // paths may number versions differently (`exact` compares fresh databases).
                let mut masked = String::with_capacity(message.len());
                for c in message.chars() {
                    if !c.is_ascii_digit() {
                        masked.push(c);
                    } else if !masked.ends_with('#') {
                        masked.push('#');
                    }
                }
                message = masked;
            }
            let id = if exact { id } else { 0 };
            format!("{id} {at} {kind} {job:?} {message} {data}")
        })
        .collect();
    if !exact {
        events.sort();
    }
    out.extend(events);
    out
}

// The reconciler's bulk path (new files with new jobs, a few statements per slice) records
// exactly the rows, events and outcomes that one store call per version and file would; files
// that are not new, or whose job names repeat, fall back to the row path in the same call.
async fn bulk_apply_of_new_files_records_what_one_by_one_would(db_a: &TestDb) {
    let db_b = db_a
        .another("bulk_apply_of_new_files_records_what_one_by_one_would")
        .await;
    let bulk = db_a.open().await;
    let rows = db_b.open().await;
    let first = vec![
        TestFile::new("a.yaml", "fa", &[("a", "ha1", true)]),
        TestFile::new("b.yaml", "fb", &[("b", "hb1", false)]),
        TestFile::new(
            "team/c.yaml",
            "fc",
            &[("c", "hc1", true), ("d", "hd1", false)],
        ),
        TestFile::new("empty.yaml", "fe", &[]),
    ];
    let out_bulk = apply_in_bulk(&bulk, &first, t(0)).await;
    let out_rows = apply_one_by_one(&rows, &first, t(0)).await;
    assert_eq!(out_bulk, out_rows);
    assert!(out_bulk.iter().all(|(c, _)| *c == FileChange::New));
    assert_eq!(dump(db_a, true).await, dump(&db_b, true).await);

    // Mixed: unchanged, changed (a valid edit and an invalid one), new, and a job declared in
    // two new files (not fresh: the second file takes it over, as row by row).
    let second = vec![
        TestFile::new("a.yaml", "fa", &[("a", "ha1", true)]),
        TestFile::new(
            "team/c.yaml",
            "fc2",
            &[("c", "hc2", true), ("d", "hd2", false)],
        ),
        TestFile::new("b.yaml", "fb2", &[("b", "hb2", true)]),
        TestFile::new(
            "new.yaml",
            "fn",
            &[("n1", "hn1", true), ("n2", "hn2", false)],
        ),
        TestFile::new("g1.yaml", "fg1", &[("g", "hg1", true)]),
        TestFile::new("g2.yaml", "fg2", &[("g", "hg2", true)]),
    ];
    let out_bulk = apply_in_bulk(&bulk, &second, t(5)).await;
    let out_rows = apply_one_by_one(&rows, &second, t(5)).await;
    assert_eq!(out_bulk, out_rows);
    assert_eq!(
        out_bulk.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
        [
            FileChange::Unchanged,
            FileChange::Changed,
            FileChange::Changed,
            FileChange::New,
            FileChange::New,
            FileChange::New
        ]
    );
    assert_eq!(dump(db_a, false).await, dump(&db_b, false).await);
}

static EMPTY: std::sync::LazyLock<serde_json::Value> = std::sync::LazyLock::new(|| json!([]));
static ERRORS: std::sync::LazyLock<serde_json::Value> = std::sync::LazyLock::new(
    || json!([{ "line": 4, "column": 3, "code": "E_CRON", "message": "invalid cron" }]),
);
static SPEC1: std::sync::LazyLock<serde_json::Value> =
    std::sync::LazyLock::new(|| json!({ "kind": "ExportPst", "v": 1 }));
static SPEC2: std::sync::LazyLock<serde_json::Value> =
    std::sync::LazyLock::new(|| json!({ "kind": "ExportPst", "v": 2 }));

// Runs: uniqueness by the database, the scheduler's one-transaction tick, claim / lease expiry
// / reclaim, state changes, retries and cancellation.
async fn runs_enqueue_claim_lease_and_finish(db: &TestDb) {
    let store = db.open().await;
    let v = seed_job(&store, "weekly", "h1").await;
    let one = seed_job(&store, "once", "o1").await;

    // One-shot: once per spec hash, even if asked again later.
    let first = store
        .enqueue_run(&new_run("once", one, "o1", Trigger::OneShot, 0), t(0))
        .await
        .unwrap();
    assert!(first.is_some());
    assert!(
        store
            .enqueue_run(&new_run("once", one, "o1", Trigger::OneShot, 99), t(99))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .enqueue_run(&new_run("once", one, "o2", Trigger::OneShot, 100), t(100))
            .await
            .unwrap()
            .is_some()
    );
    // Manual runs are never deduplicated.
    for _ in 0..2 {
        assert!(
            store
                .enqueue_run(&new_run("weekly", v, "h1", Trigger::Manual, 5), t(5))
                .await
                .unwrap()
                .is_some()
        );
    }

    // The scheduler's tick: a slot once, missed/skipped recorded, next fire advanced atomically.
    let missed = NewRun {
        state: RunState::Missed,
        reason: Some("past startingDeadline"),
        ..new_run("weekly", v, "h1", Trigger::Schedule, -7200)
    };
    let due = new_run("weekly", v, "h1", Trigger::Schedule, -3600);
    let out = store
        .record_fires(
            "weekly",
            &[missed.clone(), due.clone()],
            NextFire {
                schedule_key: Some("0 * * * * UTC"),
                next_fire_at: Some(t(0)),
            },
            Some(t(-3600)),
            &restorectl::store::Routing::none(),
            t(1),
        )
        .await
        .unwrap();
    assert_eq!(out.len(), 2);
    let missed_row = out[0].clone().unwrap();
    assert_eq!(missed_row.state, RunState::Missed);
    assert_eq!(missed_row.finished_at, Some(t(1)));
    assert_eq!(missed_row.reason.as_deref(), Some("past startingDeadline"));
    let again = store
        .record_fires(
            "weekly",
            &[
                due.clone(),
                NewRun {
                    state: RunState::Skipped,
                    ..due.clone()
                },
            ],
            NextFire {
                schedule_key: Some("0 * * * * UTC"),
                next_fire_at: Some(t(3600)),
            },
            Some(t(0)),
            &restorectl::store::Routing::none(),
            t(2),
        )
        .await
        .unwrap();
    assert_eq!(
        again,
        vec![None, None],
        "one row per schedule slot, whatever its state"
    );
    let job = store.get_job("weekly").await.unwrap();
    assert_eq!(
        (job.next_fire_at, job.last_fire_at),
        (Some(t(3600)), Some(t(0)))
    );
    assert!(
        store
            .record_fires(
                "ghost",
                &[],
                NextFire {
                    schedule_key: None,
                    next_fire_at: None
                },
                None,
                &restorectl::store::Routing::none(),
                t(2)
            )
            .await
            .unwrap_err()
            .is_not_found()
    );
    let err = store
        .enqueue_run(
            &NewRun {
                state: RunState::Running,
                ..due.clone()
            },
            t(3),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidTransition { .. }), "{err}");

    // Claim order: oldest scheduled_for first (the scheduled run at -3600).
    let a = store
        .claim_next_run("daemon-a", Duration::from_secs(60), t(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.trigger, Trigger::Schedule);
    assert_eq!(a.state, RunState::Running);
    assert_eq!(a.attempts, 1);
    assert_eq!(a.lease_owner.as_deref(), Some("daemon-a"));
    assert_eq!(a.lease_expires_at, Some(t(70)));
    assert_eq!(a.started_at, Some(t(10)));
    assert_eq!(a.deadline_at, Some(t(10 + 3600)));

    // Renew by the holder; another owner cannot renew.
    let renewal = store
        .renew_lease(a.id, "daemon-a", Duration::from_secs(60), t(50))
        .await
        .unwrap();
    assert!(!renewal.cancel_requested);
    assert_eq!(renewal.deadline_at, Some(t(3610)));
    let err = store
        .renew_lease(a.id, "daemon-b", Duration::from_secs(60), t(50))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::LeaseLost { ref holder, .. } if holder.as_deref() == Some("daemon-a")),
        "{err}"
    );

    // Not reclaimable while the lease is live; reclaimed by b once it expired.
    assert!(
        store
            .claim_run(a.id, "daemon-b", Duration::from_secs(60), t(100))
            .await
            .unwrap()
            .is_none()
    );
    let claimed: Vec<_> = {
        let mut ids = Vec::new();
        while let Some(r) = store
            .claim_next_run("daemon-b", Duration::from_secs(60), t(100))
            .await
            .unwrap()
        {
            ids.push(r.id);
        }
        ids
    };
    assert_eq!(
        claimed.len(),
        4,
        "2 one-shot + 2 manual runs; the leased one is not claimable"
    );
    assert!(!claimed.contains(&a.id));
    let reclaimed = store
        .claim_next_run("daemon-b", Duration::from_secs(60), t(111))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reclaimed.id, a.id);
    assert_eq!(reclaimed.attempts, 2);
    assert_eq!(reclaimed.lease_owner.as_deref(), Some("daemon-b"));
    assert_eq!(
        reclaimed.started_at,
        Some(t(10)),
        "started_at kept from the first start"
    );
    assert_eq!(
        reclaimed.deadline_at,
        Some(t(3610)),
        "deadline kept from the first start"
    );
    assert!(matches!(
        store
            .renew_lease(a.id, "daemon-a", Duration::from_secs(60), t(112))
            .await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert_eq!(
        event_kinds(&store, a.id).await,
        ["run_queued", "run_started", "run_started"]
    );

    // Start-up recovery: foreign leases expire at once; a released lease is claimable at once.
    assert_eq!(
        store
            .expire_foreign_leases("daemon-c", t(120))
            .await
            .unwrap(),
        5
    );
    let c = store
        .claim_run(a.id, "daemon-c", Duration::from_secs(60), t(120))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.attempts, 3);
    assert!(store.release_lease(a.id, "daemon-c", t(121)).await.unwrap());
    assert!(!store.release_lease(a.id, "daemon-c", t(121)).await.unwrap());
    let c = store
        .claim_run(a.id, "daemon-c", Duration::from_secs(60), t(122))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.attempts, 4);

    // Retry: waiting until next_attempt_at, lease cleared.
    let waiting = store
        .schedule_run_retry(a.id, t(500), Some("ProxyOffline"), t(130))
        .await
        .unwrap();
    assert_eq!(waiting.state, RunState::WaitingRetry);
    assert_eq!(
        (waiting.lease_owner, waiting.next_attempt_at),
        (None, Some(t(500)))
    );
    assert!(
        store
            .claim_run(a.id, "daemon-c", Duration::from_secs(60), t(499))
            .await
            .unwrap()
            .is_none()
    );
    let retried = store
        .claim_run(a.id, "daemon-c", Duration::from_secs(60), t(500))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((retried.attempts, retried.next_attempt_at), (5, None));

    // Finish: terminal state sets finished_at, clears the lease, and is final.
    let done = store
        .set_run_state(a.id, RunState::Succeeded, None, t(600))
        .await
        .unwrap();
    assert_eq!(done.finished_at, Some(t(600)));
    assert_eq!((done.lease_owner, done.lease_expires_at), (None, None));
    assert!(done.state.is_terminal() && !done.state.is_active());
    let err = store
        .set_run_state(a.id, RunState::Failed, Some("late"), t(601))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidTransition { .. }), "{err}");
    assert!(matches!(
        store
            .set_run_state(claimed[0], RunState::Running, None, t(601))
            .await,
        Err(StoreError::InvalidTransition { .. })
    ));
    let finished = store.list_run_events(a.id).await.unwrap();
    let last = finished.last().unwrap();
    assert_eq!(last.kind, EventKind::RunFinished.as_str());
    assert_eq!(
        last.job_name.as_deref(),
        Some("weekly"),
        "job filled in from the run"
    );
    assert_eq!(last.data.as_ref().unwrap()["state"], "succeeded");

    // Cancellation: queued → cancelled at once; running → requested, seen by the lease holder.
    let queued = store
        .enqueue_run(&new_run("weekly", v, "h1", Trigger::Manual, 700), t(700))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .request_cancel(queued.id, "cancelled by operator", t(701))
            .await
            .unwrap(),
        CancelOutcome::Cancelled
    );
    let cancelled = store.get_run(queued.id).await.unwrap();
    assert_eq!(
        (cancelled.state, cancelled.finished_at),
        (RunState::Cancelled, Some(t(701)))
    );
    let running = claimed[0];
    assert_eq!(
        store
            .request_cancel(running, "cancelled by operator", t(702))
            .await
            .unwrap(),
        CancelOutcome::Requested
    );
    let holder = store.get_run(running).await.unwrap().lease_owner.unwrap();
    assert!(
        store
            .renew_lease(running, &holder, Duration::from_secs(60), t(703))
            .await
            .unwrap()
            .cancel_requested
    );
    assert_eq!(
        store
            .request_cancel(a.id, "too late", t(704))
            .await
            .unwrap(),
        CancelOutcome::AlreadyFinished(RunState::Succeeded)
    );
    // A waiting run with a cancel request is claimable at once so its owner can clean up.
    let other = claimed[1];
    let holder = store.get_run(other).await.unwrap().lease_owner.unwrap();
    store.release_lease(other, &holder, t(705)).await.unwrap();
    let owned = store
        .claim_run(other, "d", Duration::from_secs(60), t(705))
        .await
        .unwrap()
        .unwrap();
    store
        .schedule_run_retry(owned.id, t(99_999), None, t(706))
        .await
        .unwrap();
    store.request_cancel(other, "stop", t(707)).await.unwrap();
    assert_eq!(
        store
            .claim_next_run("d", Duration::from_secs(60), t(708))
            .await
            .unwrap()
            .map(|r| r.id),
        Some(other)
    );

    // Listing: newest first, filters, limit, active runs.
    let all = store.list_runs(&RunFilter::default()).await.unwrap();
    assert_eq!(
        all.len(),
        7,
        "2 one-shot, 2 manual, 1 missed, 1 scheduled, 1 cancelled"
    );
    assert!(all.windows(2).all(|w| w[0].created_at >= w[1].created_at));
    assert_eq!(all[0].id, queued.id);
    let weekly_missed = store
        .list_runs(&RunFilter {
            job: Some("weekly"),
            state: Some(RunState::Missed),
            limit: None,
        })
        .await
        .unwrap();
    assert_eq!(weekly_missed.len(), 1);
    assert_eq!(
        store
            .list_runs(&RunFilter {
                limit: Some(3),
                ..Default::default()
            })
            .await
            .unwrap()
            .len(),
        3
    );
    let active = store.list_active_runs("weekly").await.unwrap();
    assert!(active.iter().all(|r| r.state.is_active()));
    assert_eq!(active.len(), 2);
    assert!(
        store
            .get_run(RunId::new())
            .await
            .unwrap_err()
            .is_not_found()
    );
}

// Steps: idempotent creation and the at-most-once protocol, which the store enforces.
async fn steps_follow_the_at_most_once_protocol(db: &TestDb) {
    let store = db.open().await;
    let v = seed_job(&store, "restore-alice", "h1").await;
    let run = store
        .enqueue_run(&new_run("restore-alice", v, "h1", Trigger::Manual, 0), t(0))
        .await
        .unwrap()
        .unwrap();
    // The run is executing under a lease (mark_submitting is fenced by it).
    store
        .claim_next_run("me", Duration::from_secs(3600), t(0))
        .await
        .unwrap()
        .expect("claimed");
    let new_steps = vec![
        NewStep {
            seq: 0,
            mailbox_id: Some("id-alice".into()),
            mailbox_email: Some("alice@contoso.com".into()),
            mailbox_name: Some("Alice Adams".into()),
            ..Default::default()
        },
        NewStep {
            seq: 1,
            mailbox_id: Some("id-alice-archive".into()),
            mailbox_email: Some("alice@contoso.com".into()),
            mailbox_name: Some("Alice Adams (Archive)".into()),
            is_archive: true,
            ..Default::default()
        },
        NewStep {
            seq: 2,
            mailbox_ids: Some(vec!["id-bob".into(), "id-carol".into()]),
            ..Default::default()
        },
    ];
    let steps = store.create_steps(run.id, &new_steps, t(1)).await.unwrap();
    assert_eq!(steps.len(), 3);
    assert!(
        steps
            .iter()
            .all(|s| s.state == StepState::Pending && s.restore_posts == 0)
    );
    assert!(steps[1].is_archive);
    assert_eq!(
        steps[2].mailbox_ids.as_deref(),
        Some(&["id-bob".to_string(), "id-carol".to_string()][..])
    );
    // Re-creating after a crash returns the same rows, untouched.
    let again = store.create_steps(run.id, &new_steps, t(2)).await.unwrap();
    assert_eq!(again, steps);
    let id = steps[0].id;

    let attempt = store.begin_step_attempt(id, t(3)).await.unwrap();
    assert_eq!((attempt.attempts, attempt.started_at), (1, Some(t(3))));
    store
        .set_step_session(id, Some("sess-1"), t(3))
        .await
        .unwrap();
    let submitting = store.mark_submitting(id, "me", t(4)).await.unwrap();
    assert_eq!(
        (submitting.state, submitting.restore_posts),
        (StepState::Submitting, 1)
    );
    assert_eq!(submitting.restore_session_id.as_deref(), Some("sess-1"));
    // Unknown outcome → in_doubt; from there nothing moves without an operator.
    let doubt = store
        .mark_in_doubt(id, "timeout after sending", t(5))
        .await
        .unwrap();
    assert_eq!(doubt.state, StepState::InDoubt);
    assert_eq!(doubt.error_class, Some(ErrorClass::Ambiguous));
    for refused in [
        store.mark_submitting(id, "me", t(6)).await,
        store.set_step_state(id, StepState::Done, None, t(6)).await,
        store
            .set_step_state(id, StepState::Pending, None, t(6))
            .await,
        store.begin_step_attempt(id, t(6)).await,
        store
            .schedule_step_retry(
                id,
                t(60),
                &StepErrorRecord {
                    class: ErrorClass::Retryable,
                    code: None,
                    message: "x".into(),
                },
                t(6),
            )
            .await,
    ] {
        assert!(
            matches!(refused, Err(StoreError::InvalidTransition { .. })),
            "{refused:?}"
        );
    }
    assert_eq!(store.get_step(id).await.unwrap().restore_posts, 1);
    // mark_done does not allow a resend, and only allows done.
    store
        .record_operator_decision(id, Decision::MarkDone, t(7))
        .await
        .unwrap();
    assert!(store.mark_submitting(id, "me", t(8)).await.is_err());
    assert!(
        store
            .set_step_state(id, StepState::Failed, None, t(8))
            .await
            .is_err()
    );
    // resend allows exactly one more POST, counted.
    store
        .record_operator_decision(id, Decision::Resend, t(9))
        .await
        .unwrap();
    let resent = store.mark_submitting(id, "me", t(10)).await.unwrap();
    assert_eq!(resent.restore_posts, 2);
    let submitted = store.mark_submitted(id, "op-42", t(11)).await.unwrap();
    assert_eq!(submitted.state, StepState::Submitted);
    assert_eq!(submitted.remote_operation_id.as_deref(), Some("op-42"));
    assert_eq!(submitted.submitted_at, Some(t(11)));
    assert!(store.mark_submitted(id, "op-43", t(12)).await.is_err());
    assert!(store.mark_in_doubt(id, "late", t(12)).await.is_err());
    store
        .record_restore_counts(
            id,
            RestoreCounts {
                created: 10,
                merged: 2,
                failed: 0,
                skipped: 1,
            },
            t(13),
        )
        .await
        .unwrap();
    let done = store
        .set_step_state(id, StepState::Done, None, t(14))
        .await
        .unwrap();
    assert_eq!(done.finished_at, Some(t(14)));
    assert_eq!(
        (
            done.created_items,
            done.merged_items,
            done.failed_items,
            done.skipped_items
        ),
        (Some(10), Some(2), Some(0), Some(1))
    );
    assert!(
        store
            .set_step_state(id, StepState::Failed, None, t(15))
            .await
            .is_err(),
        "done is final"
    );
    assert!(
        store
            .record_operator_decision(id, Decision::Resend, t(15))
            .await
            .is_err()
    );

    // Second step: in_doubt resolved as mark_failed; a retry after a retryable failure.
    let s1 = steps[1].id;
    store.mark_submitting(s1, "me", t(20)).await.unwrap();
    store
        .mark_in_doubt(s1, "lost response", t(21))
        .await
        .unwrap();
    store
        .record_operator_decision(s1, Decision::MarkFailed, t(22))
        .await
        .unwrap();
    let failed = store
        .set_step_state(
            s1,
            StepState::Failed,
            Some(&StepErrorRecord {
                class: ErrorClass::Permanent,
                code: None,
                message: "operator marked failed".into(),
            }),
            t(23),
        )
        .await
        .unwrap();
    assert_eq!(failed.operator_decision, Some(Decision::MarkFailed));
    assert_eq!(failed.error_class, Some(ErrorClass::Permanent));

    let s2 = steps[2].id;
    store.begin_step_attempt(s2, t(30)).await.unwrap();
    let error = StepErrorRecord {
        class: ErrorClass::Retryable,
        code: Some("ProxyOffline".into()),
        message: "proxy offline".into(),
    };
    let retry = store
        .schedule_step_retry(s2, t(90), &error, t(31))
        .await
        .unwrap();
    assert_eq!(retry.state, StepState::Pending);
    assert_eq!(retry.next_attempt_at, Some(t(90)));
    assert_eq!(retry.error_code.as_deref(), Some("ProxyOffline"));
    let second = store.begin_step_attempt(s2, t(90)).await.unwrap();
    assert_eq!((second.attempts, second.next_attempt_at), (2, None));
    store
        .set_step_state(s2, StepState::Downloading, None, t(91))
        .await
        .unwrap();
    store
        .record_step_file(
            s2,
            &StepFile {
                path: Path::new("/exports/a.pst"),
                bytes: 4096,
                sha256: "ab".repeat(32).as_str(),
                format: FileFormat::Pst,
            },
            t(92),
        )
        .await
        .unwrap();
    store.record_search_count(s2, 17, t(93)).await.unwrap();
    let s2row = store.get_step(s2).await.unwrap();
    assert_eq!(s2row.file_path.as_deref(), Some("/exports/a.pst"));
    assert_eq!(
        (s2row.bytes, s2row.format, s2row.found_items),
        (Some(4096), Some(FileFormat::Pst), Some(17))
    );

    let listed = store.list_steps(run.id).await.unwrap();
    assert_eq!(listed.iter().map(|s| s.seq).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(store.get_step(9999).await.unwrap_err().is_not_found());

    // Every transition of the first step is in the history, in order.
    let history: Vec<(String, serde_json::Value)> = store
        .list_run_events(run.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.step_id == Some(id))
        .map(|e| (e.kind, e.data.unwrap_or_default()["state"].clone()))
        .collect();
    let expected = [
        ("step_state_changed", json!("submitting")),
        ("step_state_changed", json!("in_doubt")),
        ("step_decision", json!(null)),
        ("step_decision", json!(null)),
        ("step_state_changed", json!("submitting")),
        ("step_state_changed", json!("submitted")),
        ("step_state_changed", json!("done")),
    ];
    assert_eq!(
        history,
        expected
            .iter()
            .map(|(k, s)| (k.to_string(), s.clone()))
            .collect::<Vec<_>>()
    );
}

/// The fence of the at-most-once protocol among replicas: only the holder of an unexpired lease
/// commits `submitting`; a replica whose lease ran out (or was taken over) is refused.
async fn submitting_needs_the_runs_unexpired_lease(db: &TestDb) {
    let store = db.open().await;
    let step = seed_step(&store, "fenced").await;
    let lease = Duration::from_secs(60);
    let refused = |r: restorectl::store::Result<Step>| {
        assert!(matches!(r, Err(StoreError::LeaseLost { .. })), "{r:?}");
    };
    // Queued, nobody holds it.
    refused(store.mark_submitting(step.id, "a", t(1)).await);
    store
        .claim_next_run("a", lease, t(1))
        .await
        .unwrap()
        .unwrap();
    // Another owner, and the holder itself once the lease has run out.
    refused(store.mark_submitting(step.id, "b", t(2)).await);
    refused(store.mark_submitting(step.id, "a", t(61)).await);
    let b = store
        .claim_next_run("b", lease, t(61))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.lease_owner.as_deref(), Some("b"));
    refused(store.mark_submitting(step.id, "a", t(62)).await);
    let step = store.get_step(step.id).await.unwrap();
    assert_eq!((step.state, step.restore_posts), (StepState::Pending, 0));
    let sent = store.mark_submitting(step.id, "b", t(62)).await.unwrap();
    assert_eq!((sent.state, sent.restore_posts), (StepState::Submitting, 1));
}

// Restore sessions: recorded idempotently, counted per server while open or stopping.
async fn restore_sessions_bookkeeping(db: &TestDb) {
    let store = db.open().await;
    let v = seed_job(&store, "export", "h1").await;
    let run = store
        .enqueue_run(&new_run("export", v, "h1", Trigger::Manual, 0), t(0))
        .await
        .unwrap()
        .unwrap();
    let open = |id: &'static str, server: &'static str, run: Option<RunId>| NewSession {
        id,
        server,
        organization_id: "6f1c8e0a-6a4b-4d1e-9a51-3c2f0b7d9e01",
        point_in_time: Some("2026-03-01T00:00:00Z"),
        run_id: run,
    };
    let s1 = store
        .record_session_opened(&open("s1", "primary", Some(run.id)), t(1))
        .await
        .unwrap();
    assert_eq!(
        (s1.state, s1.opened_at, s1.keep_for_resume),
        (SessionState::Open, t(1), false)
    );
    let dup = store
        .record_session_opened(&open("s1", "primary", Some(run.id)), t(5))
        .await
        .unwrap();
    assert_eq!(
        dup, s1,
        "recording the same session twice keeps the first row"
    );
    store
        .record_session_opened(&open("s2", "primary", Some(run.id)), t(2))
        .await
        .unwrap();
    store
        .record_session_opened(&open("s3", "secondary", None), t(3))
        .await
        .unwrap();
    assert_eq!(store.count_open_sessions("primary").await.unwrap(), 2);
    assert_eq!(store.count_open_sessions("secondary").await.unwrap(), 1);

    let kept = store
        .set_session_keep_for_resume("s1", true, t(4))
        .await
        .unwrap();
    assert!(kept.keep_for_resume);
    let stopping = store.mark_session_stopping("s2", t(5)).await.unwrap();
    assert_eq!(
        (stopping.state, stopping.stopped_at),
        (SessionState::Stopping, None)
    );
    assert_eq!(
        store.count_open_sessions("primary").await.unwrap(),
        2,
        "stopping still counts"
    );
    let stopped = store.mark_session_stopped("s2", t(6)).await.unwrap();
    assert_eq!(
        (stopped.state, stopped.stopped_at),
        (SessionState::Stopped, Some(t(6)))
    );
    assert_eq!(store.count_open_sessions("primary").await.unwrap(), 1);
    // Stopping twice is harmless; a stopped session cannot be lost afterwards.
    assert_eq!(
        store
            .mark_session_stopped("s2", t(7))
            .await
            .unwrap()
            .stopped_at,
        Some(t(6))
    );
    assert!(matches!(
        store.mark_session_lost("s2", "404", t(7)).await,
        Err(StoreError::InvalidTransition { .. })
    ));
    let lost = store
        .mark_session_lost("s3", "server restarted", t(8))
        .await
        .unwrap();
    assert_eq!(lost.state, SessionState::Lost);

    let all_open = store.list_open_sessions(None).await.unwrap();
    assert_eq!(
        all_open.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["s1"]
    );
    assert_eq!(
        store.list_open_sessions(Some(run.id)).await.unwrap().len(),
        1
    );
    assert!(
        store
            .list_open_sessions(Some(RunId::new()))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.list_run_sessions(run.id).await.unwrap().len(), 2);
    assert!(store.get_session("nope").await.unwrap_err().is_not_found());
    assert_eq!(
        event_kinds(&store, run.id).await,
        [
            "run_queued",
            "session_opened",
            "session_opened",
            "session_stopping",
            "session_stopped"
        ]
    );
    // Once a kept session is stopped there is nothing left to resume in it.
    let s1 = store.mark_session_stopped("s1", t(9)).await.unwrap();
    assert!(
        !s1.keep_for_resume,
        "a stopped session is not kept for resume"
    );
}

// Downloads and published files: durable progress, resume offsets, restarts, publishing, and
// the retention listing.
/// The resume point of a Search step (migration 0009): absent until a page is recorded, then
/// the last recorded page replaces the previous one (cursor, pages, hits, part-file length and
/// session), per step; cleared when the step starts over or is done, and removed with its step.
async fn search_progress_is_a_resume_point_per_step(db: &TestDb) {
    let store = db.open().await;
    let step = seed_step(&store, "search-all").await;
    let other = seed_step(&store, "search-other").await;
    assert_eq!(store.get_search_progress(step.id).await.unwrap(), None);
    let page = |cursor: &'static str, pages, hits, part_bytes, session| SearchPage {
        session_id: session,
        cursor,
        pages,
        hits,
        part_bytes,
    };
    store
        .record_search_page(
            step.id,
            &page(r#"{"offset":1000}"#, 1, 1000, 250_000, Some("s1")),
            t(1),
        )
        .await
        .unwrap();
    store
        .record_search_page(
            step.id,
            &page(r#"{"offset":2000}"#, 2, 2000, 500_123, Some("s1")),
            t(2),
        )
        .await
        .unwrap();
    store
        .record_search_page(other.id, &page(r#"{"offset":7}"#, 1, 7, 900, None), t(3))
        .await
        .unwrap();
    let p = store.get_search_progress(step.id).await.unwrap().unwrap();
    assert_eq!(
        (
            p.cursor.as_str(),
            p.pages,
            p.hits,
            p.part_bytes,
            p.session_id.as_deref(),
            p.updated_at
        ),
        (r#"{"offset":2000}"#, 2, 2000, 500_123, Some("s1"), t(2))
    );
    // A page beyond 4 GiB of report and a new session.
    store
        .record_search_page(
            step.id,
            &page("{}", 20_000, 10_000_000, 5 << 30, Some("s2")),
            t(4),
        )
        .await
        .unwrap();
    let p = store.get_search_progress(step.id).await.unwrap().unwrap();
    assert_eq!(
        (p.part_bytes, p.session_id.as_deref()),
        (5 << 30, Some("s2"))
    );
    let o = store.get_search_progress(other.id).await.unwrap().unwrap();
    assert_eq!((o.pages, o.hits, o.session_id), (1, 7, None));

    store.clear_search_progress(step.id).await.unwrap();
    assert_eq!(store.get_search_progress(step.id).await.unwrap(), None);
    store.clear_search_progress(step.id).await.unwrap();
    assert!(store.get_search_progress(other.id).await.unwrap().is_some());

    // Pruning a step takes its resume point with it.
    let mut raw = db.raw().await;
    sqlx::query("DELETE FROM events WHERE step_id = $1")
        .bind(other.id)
        .execute(&mut raw)
        .await
        .unwrap();
    sqlx::query("DELETE FROM steps WHERE id = $1")
        .bind(other.id)
        .execute(&mut raw)
        .await
        .unwrap();
    assert_eq!(store.get_search_progress(other.id).await.unwrap(), None);
}

async fn downloads_progress_and_exports_retention(db: &TestDb) {
    let store = db.open().await;
    let step = seed_step(&store, "legal-hold").await;
    let new = NewDownload {
        step_id: step.id,
        final_path: Path::new("/exports/legal-hold/2026-03-01/alice.pst"),
        partial_path: Path::new("/exports/legal-hold/2026-03-01/alice.pst.partial"),
        restore_session_id: Some("s1"),
    };
    let d = store.create_download(&new, t(1)).await.unwrap();
    assert_eq!(
        (d.state, d.bytes_durable, d.resumed_from.clone()),
        (DownloadState::Pending, 0, vec![])
    );
    assert_eq!(
        store.create_download(&new, t(2)).await.unwrap(),
        d,
        "idempotent"
    );

    let state = vec![7u8; 104];
    store
        .record_download_progress(step.id, 64 << 20, Some(&state), Some(1 << 30), t(3))
        .await
        .unwrap();
    store
        .record_download_progress(step.id, 128 << 20, Some(&state), None, t(4))
        .await
        .unwrap();
    let d = store.get_download(step.id).await.unwrap();
    assert_eq!(d.state, DownloadState::Downloading);
    assert_eq!(
        (d.bytes_durable, d.expected_bytes),
        (128 << 20, Some(1 << 30))
    );
    assert_eq!(d.hasher_state.as_deref(), Some(&state[..]));
    assert_eq!(d.started_at, Some(t(3)));

    store
        .record_download_resume(step.id, 128 << 20, t(5))
        .await
        .unwrap();
    let d = store
        .record_download_resume(step.id, 300 << 20, t(6))
        .await
        .unwrap();
    assert_eq!(d.resumed_from, vec![128 << 20, 300 << 20]);
    let d = store
        .record_download_restart(step.id, "server ignored Range", Some("s2"), t(7))
        .await
        .unwrap();
    assert_eq!(
        (d.restarts, d.bytes_durable, d.hasher_state.clone()),
        (1, 0, None)
    );
    assert_eq!(
        d.expected_bytes, None,
        "the old total is not held against the download that starts over"
    );
    assert_eq!(d.restore_session_id.as_deref(), Some("s2"));
    assert_eq!(
        d.resumed_from.len(),
        2,
        "resume history kept across a restart"
    );
    assert_eq!(
        store
            .mark_download_verifying(step.id, t(8))
            .await
            .unwrap()
            .state,
        DownloadState::Verifying
    );
    let zip = Path::new("/exports/legal-hold/2026-03-01/alice.zip");
    let sha = "0f".repeat(32);
    let d = store
        .mark_download_published(step.id, zip, 5000, &sha, FileFormat::Zip, t(9))
        .await
        .unwrap();
    assert_eq!(d.state, DownloadState::Published);
    assert_eq!(
        (d.final_path.as_path(), d.format, d.sha256.as_deref()),
        (zip, Some(FileFormat::Zip), Some(sha.as_str()))
    );
    assert_eq!(d.finished_at, Some(t(9)));
    assert!(store.get_download(999).await.unwrap_err().is_not_found());
    assert!(
        store
            .record_download_progress(999, 1, None, None, t(9))
            .await
            .unwrap_err()
            .is_not_found()
    );

    // A second download fails for good.
    let step2 = store
        .create_steps(
            step.run_id,
            &[NewStep {
                seq: 1,
                ..Default::default()
            }],
            t(10),
        )
        .await
        .unwrap()
        .remove(1);
    store
        .create_download(
            &NewDownload {
                step_id: step2.id,
                final_path: Path::new("/e/b.pst"),
                partial_path: Path::new("/e/b.pst.partial"),
                restore_session_id: None,
            },
            t(10),
        )
        .await
        .unwrap();
    let failed = store
        .mark_download_failed(step2.id, "disk full: need 5 GiB", t(11))
        .await
        .unwrap();
    assert_eq!(failed.state, DownloadState::Failed);

    assert_eq!(
        event_kinds(&store, step.run_id).await,
        [
            "run_queued",
            "download_resumed",
            "download_resumed",
            "download_restarted",
            "download_published",
            "download_failed"
        ]
    );

    // Published files: three exports of the job over time, retention listing oldest first.
    let mut ids = Vec::new();
    for (i, bytes) in [(0u64, 100u64), (1, 300), (2, 200)] {
        let path = format!("/exports/legal-hold/run{i}/alice.pst");
        let manifest = format!("{path}.manifest.json");
        let e = store
            .record_export(
                &NewExport {
                    job_name: "legal-hold",
                    run_id: step.run_id,
                    step_id: Some(step.id),
                    mailbox_id: Some("mb-1"),
                    mailbox_email: Some("alice@contoso.com"),
                    path: Path::new(&path),
                    manifest_path: Some(Path::new(&manifest)),
                    format: FileFormat::Pst,
                    bytes,
                    sha256: &sha,
                },
                t(100 + i as i64),
            )
            .await
            .unwrap();
        ids.push(e.id);
    }
    let dup = store
        .record_export(
            &NewExport {
                job_name: "legal-hold",
                run_id: step.run_id,
                step_id: None,
                mailbox_id: None,
                mailbox_email: None,
                path: Path::new("/exports/legal-hold/run0/alice.pst"),
                manifest_path: None,
                format: FileFormat::Pst,
                bytes: 1,
                sha256: &sha,
            },
            t(200),
        )
        .await
        .unwrap_err();
    assert!(matches!(dup, StoreError::Conflict { .. }), "{dup}");
    let live = store.list_live_exports("legal-hold").await.unwrap();
    assert_eq!(live.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    assert_eq!(
        live[0].manifest_path.as_deref(),
        Some("/exports/legal-hold/run0/alice.pst.manifest.json")
    );
    assert!(
        store
            .mark_export_deleted(ids[0], "keepLast: 2", t(300))
            .await
            .unwrap()
    );
    assert!(
        !store
            .mark_export_deleted(ids[0], "keepLast: 2", t(301))
            .await
            .unwrap()
    );
    assert!(
        store
            .mark_export_deleted(4242, "x", t(301))
            .await
            .unwrap_err()
            .is_not_found()
    );
    let live = store.list_live_exports("legal-hold").await.unwrap();
    assert_eq!(live.iter().map(|e| e.id).collect::<Vec<_>>(), ids[1..]);
    assert_eq!(store.list_run_exports(step.run_id).await.unwrap().len(), 3);
    assert_eq!(store.largest_export_bytes("mb-1").await.unwrap(), Some(300));
    assert_eq!(
        store.largest_export_bytes("mb-unknown").await.unwrap(),
        None
    );
    let deleted = store.list_recent_events(1).await.unwrap().remove(0);
    assert_eq!(deleted.kind, "export_deleted");
    assert_eq!(deleted.job_name.as_deref(), Some("legal-hold"));
    assert_eq!(deleted.step_id, Some(step.id));
}

// Operator requests (run / cancel / resolve) and the daemon instance lock.
async fn requests_and_instance_lock(db: &TestDb) {
    let store = db.open().await;
    let v = seed_job(&store, "weekly", "h1").await;
    let run = store
        .enqueue_run(&new_run("weekly", v, "h1", Trigger::Manual, 0), t(0))
        .await
        .unwrap()
        .unwrap();
    let r1 = store
        .insert_request(&NewRequest::Run { job: "weekly" }, Some("alice"), t(1))
        .await
        .unwrap();
    let r2 = store
        .insert_request(&NewRequest::Cancel { run: run.id }, None, t(2))
        .await
        .unwrap();
    let r3 = store
        .insert_request(
            &NewRequest::Resolve {
                run: run.id,
                decision: Decision::Resend,
            },
            Some("bob"),
            t(3),
        )
        .await
        .unwrap();
    assert_eq!(
        (r1.kind, r1.job_name.as_deref(), r1.requested_by.as_deref()),
        (RequestKind::Run, Some("weekly"), Some("alice"))
    );
    assert_eq!((r2.kind, r2.run_id), (RequestKind::Cancel, Some(run.id)));
    assert_eq!(
        (r3.kind, r3.decision),
        (RequestKind::Resolve, Some(Decision::Resend))
    );
    let pending = store.list_pending_requests().await.unwrap();
    assert_eq!(
        pending.iter().map(|r| r.id).collect::<Vec<_>>(),
        [r1.id, r2.id, r3.id]
    );

    let queued = RunId::new();
    let consumed = store
        .consume_request(r1.id, "queued", Some(queued), t(4))
        .await
        .unwrap();
    assert_eq!(
        (consumed.consumed_at, consumed.result_run_id),
        (Some(t(4)), Some(queued))
    );
    let err = store
        .consume_request(r1.id, "again", None, t(5))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert!(
        store
            .consume_request(999, "x", None, t(5))
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert_eq!(
        store.get_request(r1.id).await.unwrap().result.as_deref(),
        Some("queued")
    );
    assert_eq!(store.list_pending_requests().await.unwrap().len(), 2);
    store
        .consume_request(r2.id, "refused: run already finished", None, t(6))
        .await
        .unwrap();
    assert_eq!(
        event_kinds(&store, run.id).await,
        [
            "run_queued",
            "request_recorded",
            "request_recorded",
            "request_consumed"
        ]
    );

    // The instance lock: held, refused with the holder's details, stale takeover, lost.
    let stale_after = Duration::from_secs(30);
    let a = InstanceInfo {
        id: "inst-a",
        pid: 111,
        host: "node1",
        name: "node1-111",
    };
    let b = InstanceInfo {
        id: "inst-b",
        pid: 222,
        host: "node2",
        name: "node2-222",
    };
    store
        .acquire_instance_lock(&a, stale_after, t(100))
        .await
        .unwrap();
    store.heartbeat_instance("inst-a", t(110)).await.unwrap();
    let err = store
        .acquire_instance_lock(&b, stale_after, t(139))
        .await
        .unwrap_err();
    let message = err.to_string();
    match &err {
        StoreError::InstanceLocked { holder } => {
            assert_eq!(
                (holder.id.as_str(), holder.pid, holder.host.as_str()),
                ("inst-a", 111, "node1")
            );
            assert_eq!(holder.heartbeat_at, t(110));
        }
        other => panic!("expected InstanceLocked, got {other}"),
    }
    assert!(
        message.contains("inst-a") && message.contains("111") && message.contains("node1"),
        "{message}"
    );
    // A silent holder is taken over once its heartbeat is older than the bound.
    let held = store
        .acquire_instance_lock(&b, stale_after, t(141))
        .await
        .unwrap();
    assert_eq!((held.id.as_str(), held.pid), ("inst-b", 222));
    assert!(matches!(
        store.heartbeat_instance("inst-a", t(142)).await,
        Err(StoreError::InstanceLost { .. })
    ));
    let live = store.list_live_instances().await.unwrap();
    assert_eq!(
        live.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        ["inst-b"]
    );
    assert!(store.release_instance_lock("inst-b", t(150)).await.unwrap());
    assert!(!store.release_instance_lock("inst-b", t(151)).await.unwrap());
    // After a clean release the next daemon starts at once.
    store
        .acquire_instance_lock(&a, stale_after, t(152))
        .await
        .unwrap();
    let kinds: Vec<String> = store
        .list_recent_events(4)
        .await
        .unwrap()
        .into_iter()
        .rev()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "instance_taken_over",
            "instance_started",
            "instance_stopped",
            "instance_started"
        ]
    );
}

// The event log is append-only: the triggers reject UPDATE and DELETE, even from a raw
// connection that bypasses the store.
async fn events_are_append_only(db: &TestDb) {
    let store = db.open().await;
    let id = store
        .append_event(
            &restorectl::store::NewEvent::new(EventKind::Note, "hello")
                .job("j")
                .data(json!({"a": 1})),
            t(0),
        )
        .await
        .unwrap();
    let recent = store.list_recent_events(10).await.unwrap();
    assert_eq!(recent.len(), 1);
    assert_eq!(
        (recent[0].id, recent[0].kind.as_str(), recent[0].at),
        (id, "note", t(0))
    );
    assert_eq!(recent[0].data, Some(json!({"a": 1})));

    let mut conn = db.raw().await;
    let update = sqlx::query("UPDATE events SET message = 'rewritten' WHERE id = $1")
        .bind(id)
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(
        update.to_string().contains("events are append-only"),
        "{update}"
    );
    let delete = sqlx::query("DELETE FROM events")
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(
        delete.to_string().contains("events are append-only"),
        "{delete}"
    );
    assert_eq!(
        store.list_recent_events(10).await.unwrap()[0].message,
        "hello"
    );
}

// Two independent `Store` handles on one file plus a raw sqlx connection write concurrently
// (300 transactions each, many of them read-then-write) and none fails with "database is
// locked": every writer starts with BEGIN IMMEDIATE and waits on the busy timeout.
#[test]
fn concurrent_writers_never_see_database_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/restorectl.db");
    const N: usize = 300;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let setup = Store::open(&path).await.unwrap();
        seed_job(&setup, "busy", "h1").await;
        setup.close().await;
    });

    // Each Store lives on its own thread with its own runtime: two processes in miniature.
    let store_writer = |name: &'static str| {
        let path = path.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let store = Store::open(&path).await.unwrap();
                let version = store
                    .get_job("busy")
                    .await
                    .unwrap()
                    .active_version_id
                    .unwrap();
                let mut errors = Vec::new();
                for i in 0..N {
                    let now = t(i as i64);
                    let result = match i % 3 {
                        // read-then-write in one transaction: the claim
                        0 => store
                            .enqueue_run(
                                &new_run("busy", version, "h1", Trigger::Manual, i as i64),
                                now,
                            )
                            .await
                            .map(|_| ()),
                        1 => match store
                            .claim_next_run(name, Duration::from_secs(600), now)
                            .await
                        {
                            Ok(Some(run)) => store
                                .set_run_state(run.id, RunState::Succeeded, None, now)
                                .await
                                .map(|_| ()),
                            Ok(None) => Ok(()),
                            Err(e) => Err(e),
                        },
                        _ => store
                            .append_event(
                                &restorectl::store::NewEvent::new(EventKind::Note, name),
                                now,
                            )
                            .await
                            .map(|_| ()),
                    };
                    if let Err(e) = result {
                        errors.push(format!("{e:?}"));
                    }
                }
                store.close().await;
                errors
            })
        })
    };
    let raw_writer = {
        let path = path.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut conn = raw_connection(&path).await;
                let mut errors = Vec::new();
                for i in 0..N {
                    let result: Result<(), sqlx::Error> = async {
                        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
                        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
                            .fetch_one(&mut *tx)
                            .await?;
                        sqlx::query(
                            "INSERT INTO events (at, kind, message) VALUES ($1, 'note', $2)",
                        )
                        .bind(i as i64)
                        .bind(format!("raw {count}"))
                        .execute(&mut *tx)
                        .await?;
                        tx.commit().await
                    }
                    .await;
                    if let Err(e) = result {
                        errors.push(e.to_string());
                    }
                }
                errors
            })
        })
    };
    let a = store_writer("writer-a");
    let b = store_writer("writer-b");
    let mut errors = a.join().unwrap();
    errors.extend(b.join().unwrap());
    errors.extend(raw_writer.join().unwrap());
    assert!(
        errors.is_empty(),
        "{} failed writes, first: {:?}",
        errors.len(),
        errors.first()
    );

    rt.block_on(async {
        let store = Store::open_read_only(&path).await.unwrap();
        let runs = store.list_runs(&RunFilter::default()).await.unwrap();
        assert_eq!(runs.len(), 2 * N / 3, "every enqueue committed");
        let notes = store
            .list_recent_events(100_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "note")
            .count();
        assert_eq!(notes, 2 * N / 3 + N, "every event committed");
        // No run was claimed twice concurrently: each claimed run finished exactly once.
        for run in runs.iter().filter(|r| r.state == RunState::Succeeded) {
            assert_eq!(run.attempts, 1, "run {} claimed more than once", run.id);
        }
    });
}

/// Runs per job and state as `/metrics` reads them (migration 0004's trigger-kept table) and
/// as a count over every run says they are.
async fn run_counts_both_ways(
    store: &Store,
    conn: &mut AnyConnection,
) -> (Vec<String>, Vec<String>) {
    let kept: Vec<String> = store
        .stats_counts()
        .await
        .unwrap()
        .runs
        .iter()
        .map(|(job, state, n)| format!("{job} {state} {n}"))
        .collect();
    let counted: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT job_name, state, COUNT(*) FROM runs GROUP BY job_name, state
         ORDER BY job_name, state",
    )
    .fetch_all(conn)
    .await
    .unwrap();
    let counted = counted
        .into_iter()
        .map(|(job, state, n)| format!("{job} {state} {n}"))
        .collect();
    (kept, counted)
}

// The run counts behind `/metrics` are kept by triggers (migration 0004): they must equal a
// count over every run after inserts in any state, duplicate enqueues that insert nothing,
// state changes (to the same state too) and updates of other columns.
async fn run_counts_follow_every_insert_and_state_change(db: &TestDb) {
    let store = db.open().await;
    let mut conn = db.raw().await;
    let jobs = ["alpha", "beta", "gamma"];
    let mut versions = Vec::new();
    for job in jobs {
        versions.push(seed_job(&store, job, "h").await);
    }
    let states = [
        "queued",
        "running",
        "waiting_retry",
        "succeeded",
        "succeeded_with_warnings",
        "failed",
        "cancelled",
        "needs_attention",
        "missed",
        "skipped",
    ];
    let mut seed: u64 = 0x5eed;
    let mut next = |n: usize| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 33) as usize % n
    };
    let mut ids: Vec<RunId> = Vec::new();
    for step in 0..300 {
        match next(4) {
            0 => {
                let j = next(jobs.len());
                let run = store
                    .enqueue_run(
                        &new_run(jobs[j], versions[j], "h", Trigger::Manual, step),
                        t(step),
                    )
                    .await
                    .unwrap()
                    .unwrap();
                ids.push(run.id);
            }
            1 => {
                // A fire slot: the first insert wins, a second one for the same slot is
                // ignored (ON CONFLICT DO NOTHING) and must not count.
                let j = next(jobs.len());
                let state = [RunState::Missed, RunState::Skipped, RunState::Queued][next(3)];
                let run = NewRun {
                    state,
                    ..new_run(jobs[j], versions[j], "h", Trigger::Schedule, step / 2)
                };
                if let Some(Some(row)) = store
                    .record_fires(
                        jobs[j],
                        &[run],
                        NextFire {
                            schedule_key: None,
                            next_fire_at: None,
                        },
                        None,
                        &restorectl::store::Routing::none(),
                        t(step),
                    )
                    .await
                    .unwrap()
                    .pop()
                {
                    ids.push(row.id);
                }
            }
            2 if !ids.is_empty() => {
                let id = ids[next(ids.len())];
                sqlx::query("UPDATE runs SET state = $1 WHERE id = $2")
                    .bind(states[next(states.len())])
                    .bind(id)
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
            _ if !ids.is_empty() => {
                let id = ids[next(ids.len())];
                sqlx::query("UPDATE runs SET reason = 'touched', state = state WHERE id = $1")
                    .bind(id)
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
            _ => {}
        }
        if step % 20 == 19 {
            let (kept, counted) = run_counts_both_ways(&store, &mut conn).await;
            assert_eq!(kept, counted, "after step {step}");
        }
    }
    let (kept, counted) = run_counts_both_ways(&store, &mut conn).await;
    assert_eq!(kept, counted);
    assert!(
        counted.len() > 2 * jobs.len(),
        "the sequence reached many states: {counted:?}"
    );
}

// `stats()` promises one read snapshot: while another task finishes runs one transaction at a
// time, no read may count a job's succeeded run without its last success, or the reverse (the
// counts and the per-job series once came from two read transactions, with commits between).
async fn stats_reads_one_snapshot_while_runs_finish(db: &TestDb) {
    const JOBS: usize = 300;
    let store = db.open().await;
    let mut runs = Vec::with_capacity(JOBS);
    for i in 0..JOBS {
        let name = format!("job-{i:03}");
        let version = seed_job(&store, &name, "h").await;
        let run = store
            .enqueue_run(&new_run(&name, version, "h", Trigger::Manual, 0), t(1))
            .await
            .unwrap()
            .unwrap();
        runs.push(run.id);
    }
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for id in runs {
                store
                    .set_run_state(id, RunState::Succeeded, None, t(2))
                    .await
                    .unwrap();
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() || reads == 0 {
        let stats = store.stats().await.unwrap();
        let counted: std::collections::BTreeSet<&str> = stats
            .runs
            .iter()
            .filter(|(_, state, n)| *state == RunState::Succeeded && *n > 0)
            .map(|(job, _, _)| job.as_str())
            .collect();
        let last: std::collections::BTreeSet<&str> = stats
            .last_success
            .iter()
            .map(|(job, _)| job.as_str())
            .collect();
        assert_eq!(
            counted, last,
            "read {reads}: counts and per-job series disagree"
        );
        reads += 1;
    }
    writer.await.unwrap();
    let done = store.stats().await.unwrap();
    assert_eq!(done.last_success.len(), JOBS);
}

// ===== notifications: the outbox is written with the state change that raises it =====

fn routing(events: &[restorectl::store::NotifyEvent]) -> restorectl::store::Routing {
    restorectl::store::Routing {
        targets: vec!["ops".into(), "mail".into()],
        events: events.to_vec(),
    }
}

/// Queues and claims a run of `job`, with one step per e-mail in `mailboxes`.
async fn claimed_run(store: &Store, job: &str, v: i64, at: i64, mailboxes: &[&str]) -> RunId {
    let run = store
        .enqueue_run(
            &new_run(job, v, &format!("h{at}"), Trigger::Manual, at),
            t(at),
        )
        .await
        .unwrap()
        .unwrap();
    store
        .claim_run(run.id, "daemon-a", Duration::from_secs(60), t(at))
        .await
        .unwrap()
        .unwrap();
    let steps: Vec<NewStep> = mailboxes
        .iter()
        .enumerate()
        .map(|(i, m)| NewStep {
            seq: i64::try_from(i).unwrap(),
            mailbox_email: Some((*m).to_string()),
            ..Default::default()
        })
        .collect();
    store.create_steps(run.id, &steps, t(at)).await.unwrap();
    run.id
}

async fn notifications_are_written_with_the_state_change_that_raises_them(db: &TestDb) {
    use restorectl::store::NotifyEvent as E;
    let store = db.open().await;
    let v = seed_job(&store, "weekly", "h").await;
    let all = routing(&[
        E::Failed,
        E::NeedsAttention,
        E::Missed,
        E::Recovered,
        E::Stale,
    ]);

    // A failed run: one row per target, each with its own delivery key, naming the failed
    // mailboxes and the command.
    let r1 = claimed_run(
        &store,
        "weekly",
        v,
        1,
        &["alice@contoso.com", "bob@contoso.com"],
    )
    .await;
    let steps = store.list_steps(r1).await.unwrap();
    store
        .set_step_state(steps[0].id, StepState::Done, None, t(2))
        .await
        .unwrap();
    let error = StepErrorRecord {
        class: ErrorClass::Permanent,
        code: None,
        message: "mailbox not found".into(),
    };
    store
        .set_step_state(steps[1].id, StepState::Failed, Some(&error), t(2))
        .await
        .unwrap();
    store
        .set_run_state_notifying(
            r1,
            RunState::Failed,
            Some("1 of 2 steps failed"),
            &all,
            false,
            t(3),
        )
        .await
        .unwrap();
    let rows = store.list_notifications(Some(r1)).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows.iter().map(|r| r.target.as_str()).collect::<Vec<_>>(),
        ["ops", "mail"]
    );
    assert_ne!(rows[0].delivery, rows[1].delivery);
    for row in &rows {
        let body = row.body().unwrap();
        assert_eq!(body.version, 1);
        assert_eq!(body.event, E::Failed);
        assert_eq!(body.delivery, row.delivery);
        assert_eq!(body.job.as_deref(), Some("weekly"));
        assert_eq!(body.run, Some(r1.to_string()));
        assert_eq!(body.state, "failed");
        assert_eq!(body.reason.as_deref(), Some("1 of 2 steps failed"));
        assert_eq!(body.mailboxes, ["bob@contoso.com"]);
        assert_eq!(body.command, format!("restorectl show {r1}"));
        assert_eq!((row.attempts, row.delivered_at), (0, None));
        assert_eq!(row.next_attempt_at, t(3));
    }

    // The next success is a recovery; the one after it a plain success nobody asked for.
    let r2 = claimed_run(&store, "weekly", v, 10, &["alice@contoso.com"]).await;
    store
        .set_run_state_notifying(r2, RunState::Succeeded, None, &all, false, t(11))
        .await
        .unwrap();
    let rows = store.list_notifications(Some(r2)).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.event == E::Recovered));
    assert_eq!(rows[0].body().unwrap().mailboxes, ["alice@contoso.com"]);
    let r3 = claimed_run(&store, "weekly", v, 20, &["alice@contoso.com"]).await;
    store
        .set_run_state_notifying(r3, RunState::Succeeded, None, &all, false, t(21))
        .await
        .unwrap();
    assert!(store.list_notifications(Some(r3)).await.unwrap().is_empty());

    // The freshness guard's refusal is `stale`; a state change without a routing writes none.
    let r4 = claimed_run(&store, "weekly", v, 30, &[]).await;
    store
        .set_run_state_notifying(r4, RunState::Failed, Some("too old"), &all, true, t(31))
        .await
        .unwrap();
    let rows = store.list_notifications(Some(r4)).await.unwrap();
    assert!(rows.iter().all(|r| r.event == E::Stale) && rows.len() == 2);
    let r5 = claimed_run(&store, "weekly", v, 40, &[]).await;
    store
        .set_run_state(r5, RunState::Failed, Some("x"), t(41))
        .await
        .unwrap();
    assert!(store.list_notifications(Some(r5)).await.unwrap().is_empty());

    // A missed fire, in the scheduler's transaction.
    let missed = NewRun {
        state: RunState::Missed,
        reason: Some("past startingDeadline"),
        ..new_run("weekly", v, "h", Trigger::Schedule, 50)
    };
    let written = store
        .record_fires(
            "weekly",
            &[missed],
            NextFire {
                schedule_key: None,
                next_fire_at: None,
            },
            None,
            &all,
            t(51),
        )
        .await
        .unwrap();
    let missed_id = written[0].as_ref().unwrap().id;
    let rows = store.list_notifications(Some(missed_id)).await.unwrap();
    assert!(rows.iter().all(|r| r.event == E::Missed) && rows.len() == 2);

    // Delivery bookkeeping: due rows oldest first, a failure postpones, a success ends it.
    let due = store.due_notifications(t(100), 100).await.unwrap();
    assert_eq!(due.len(), 8);
    assert_eq!(due[0].run_id, Some(r1));
    store
        .mark_notification_failed(due[0].id, "target ops: answered HTTP 500", t(200))
        .await
        .unwrap();
    store
        .mark_notification_delivered(due[1].id, t(100))
        .await
        .unwrap();
    let due_again = store.due_notifications(t(100), 100).await.unwrap();
    assert_eq!(due_again.len(), 6);
    assert!(
        due_again
            .iter()
            .all(|r| r.id != due[0].id && r.id != due[1].id)
    );
    assert_eq!(store.due_notifications(t(200), 100).await.unwrap().len(), 7);
    let failed = &store.list_notifications(Some(r1)).await.unwrap()[0];
    assert_eq!(failed.attempts, 1);
    assert_eq!(
        failed.last_error.as_deref(),
        Some("target ops: answered HTTP 500")
    );
    assert_eq!(
        store.pending_notifications().await.unwrap(),
        [("mail".to_string(), 3), ("ops".to_string(), 4)]
    );
}

async fn a_job_file_that_becomes_invalid_is_notified_once(db: &TestDb) {
    use restorectl::store::NotifyEvent as E;
    let store = db.open().await;
    let defaults = routing(&[E::Invalid]);
    let spec = json!({ "kind": "ExportPst" });
    let errors = json!([{ "line": 7, "column": 3, "message": "unknown key `bogusKey`" }]);
    let names = vec!["weekly".to_string()];
    let apply = |valid: bool, hash: &'static str| FileApply {
        file: ScannedFile {
            path: Path::new("/jobs/weekly.yaml"),
            content_hash: hash,
            valid,
            errors: if valid { &EMPTY_ERRORS } else { &errors },
            job_names: &names,
        },
        versions: vec![NewJobVersion {
            name: "weekly",
            kind: "ExportPst",
            file: Path::new("/jobs/weekly.yaml"),
            spec_hash: hash,
            spec: &spec,
            valid,
            errors: if valid { &EMPTY_ERRORS } else { &errors },
        }],
    };
    store
        .apply_job_files(&[apply(true, "h1")], &defaults, t(0))
        .await
        .unwrap();
    assert!(store.list_notifications(None).await.unwrap().is_empty());
    for at in [1, 2] {
        // The second scan of the same invalid file changes nothing and notifies nobody.
        store
            .apply_job_files(&[apply(false, "h2")], &defaults, t(at))
            .await
            .unwrap();
    }
    let rows = store.list_notifications(None).await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let body = rows[0].body().unwrap();
    assert_eq!(body.event, E::Invalid);
    assert_eq!(
        (body.job.as_deref(), body.run.as_deref()),
        (Some("weekly"), None)
    );
    assert_eq!(body.state, "invalid");
    assert_eq!(
        body.reason.as_deref(),
        Some("line 7, column 3: unknown key `bogusKey`")
    );
    assert_eq!(body.command, "restorectl validate /jobs/weekly.yaml");
}

static EMPTY_ERRORS: std::sync::LazyLock<serde_json::Value> =
    std::sync::LazyLock::new(|| json!([]));
// `resolve --continue` (issue 16): a `resolve` request without a decision, and the device-code
// events the engine keeps the sign-in in (free-text kinds, no migration).
async fn continue_requests_and_device_code_events(db: &TestDb) {
    let store = db.open().await;
    let v = seed_job(&store, "mfa", "h1").await;
    let run = store
        .enqueue_run(&new_run("mfa", v, "h1", Trigger::Manual, 0), t(0))
        .await
        .unwrap()
        .unwrap();
    for (kind, data) in [
        (
            EventKind::DeviceCodeRequested,
            serde_json::json!({"userCode": "QWERTY01", "session": "s1", "number": 1}),
        ),
        (
            EventKind::DeviceCodeRefused,
            serde_json::json!({"error": "expired"}),
        ),
        (EventKind::DeviceCodeContinued, serde_json::json!({})),
    ] {
        store
            .append_event(
                &restorectl::store::NewEvent::new(kind, kind.as_str())
                    .run(run.id)
                    .data(data),
                t(1),
            )
            .await
            .unwrap();
    }
    let kinds: Vec<String> = store
        .list_run_events(run.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind.starts_with("device_code"))
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "device_code_requested",
            "device_code_refused",
            "device_code_continued"
        ]
    );
    let r = store
        .insert_request(&NewRequest::Continue { run: run.id }, Some("carol"), t(2))
        .await
        .unwrap();
    assert_eq!(
        (r.kind, r.run_id, r.decision, r.requested_by.as_deref()),
        (RequestKind::Resolve, Some(run.id), None, Some("carol"))
    );
    let pending = store.list_pending_requests().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].decision, None);
    let recorded = store
        .list_run_events(run.id)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.kind == "request_recorded")
        .unwrap();
    assert!(
        recorded.message.contains("(continue)"),
        "{}",
        recorded.message
    );
}

// `/metrics` counts a download as receiving (`restorectl_downloads_receiving`, the stalled-download
// alert) once its step is `downloading` and bytes are on disk: not while the step is pending, not
// while it waits for the first byte, not after it started over.
async fn receiving_downloads_are_steps_downloading_with_bytes_on_disk(db: &TestDb) {
    let store = db.open().await;
    let step = seed_step(&store, "legal-hold").await;
    let new = NewDownload {
        step_id: step.id,
        final_path: Path::new("/exports/legal-hold/alice.pst"),
        partial_path: Path::new("/exports/legal-hold/alice.pst.partial"),
        restore_session_id: Some("s1"),
    };
    store.create_download(&new, t(1)).await.unwrap();
    let receiving = || async { store.stats_counts().await.unwrap().receiving_downloads };
    store
        .set_step_state(step.id, StepState::Downloading, None, t(2))
        .await
        .unwrap();
    assert_eq!(receiving().await, 0, "waiting for the first byte");
    store
        .record_download_progress(step.id, 64 << 20, None, Some(1 << 30), t(3))
        .await
        .unwrap();
    assert_eq!(receiving().await, 1);
    store
        .record_download_restart(step.id, "server ignored Range", None, t(4))
        .await
        .unwrap();
    assert_eq!(receiving().await, 0, "started over: no byte on disk yet");
    store
        .record_download_progress(step.id, 1 << 20, None, None, t(5))
        .await
        .unwrap();
    store
        .set_step_state(step.id, StepState::Verifying, None, t(6))
        .await
        .unwrap();
    assert_eq!(receiving().await, 0, "verifying");
}

/// A run of `job` (schedule slot `at`) that finished as `state` at `t(at)`, with `steps` failed
/// steps (class `permanent`).
async fn finished_run(
    store: &Store,
    job: &str,
    version: i64,
    at: i64,
    state: RunState,
    failed_steps: i64,
) -> RunId {
    let run = store
        .enqueue_run(&new_run(job, version, "h", Trigger::Schedule, at), t(at))
        .await
        .unwrap()
        .unwrap();
    if failed_steps > 0 {
        let steps: Vec<NewStep> = (0..failed_steps)
            .map(|i| NewStep {
                seq: i,
                mailbox_id: Some(format!("mb-{i}")),
                ..NewStep::default()
            })
            .collect();
        for step in store.create_steps(run.id, &steps, t(at)).await.unwrap() {
            store.begin_step_attempt(step.id, t(at)).await.unwrap();
            let error = StepErrorRecord {
                class: ErrorClass::Permanent,
                code: None,
                message: "gone".into(),
            };
            store
                .set_step_state(step.id, StepState::Failed, Some(&error), t(at))
                .await
                .unwrap();
        }
    }
    store
        .set_run_state(run.id, state, Some("done"), t(at))
        .await
        .unwrap();
    run.id
}

/// Every pass of `history.keepFor`/`keepRuns` over the store until it is done, in batches of
/// `batch` runs.
async fn prune_all(
    store: &Store,
    cutoff: i64,
    keep_runs: u32,
    batch: u32,
) -> restorectl::store::PruneReport {
    let policy = restorectl::store::HistoryPolicy {
        cutoff: t(cutoff),
        keep_runs,
    };
    let mut cursor = restorectl::store::PruneCursor::default();
    let mut total = restorectl::store::PruneReport::default();
    loop {
        let (report, done) = store
            .prune_history_batch(&policy, &mut cursor, batch)
            .await
            .unwrap();
        total.add(&report);
        if done {
            return total;
        }
    }
}

/// History retention deletes the finished runs older than the cutoff beyond the newest
/// `keepRuns` executed runs of their job, with their steps, downloads, sessions, deleted
/// exports, delivered notifications and events, in batches; it never deletes a run that is not
/// terminal, a run whose export file still exists, a run with an undelivered notification, a
/// one-shot run or a job's last success, and it lowers none of the `/metrics` totals.
async fn history_pruning_keeps_what_must_stay(db: &TestDb) {
    let store = db.open().await;
    let mut conn = db.raw().await;
    let v = seed_job(&store, "daily", "h").await;
    // Old executed runs (finished before the cutoff t(1000)), oldest first.
    let pruned_ok = finished_run(&store, "daily", v, 10, RunState::Succeeded, 0).await;
    let pruned_failed = finished_run(&store, "daily", v, 20, RunState::Failed, 2).await;
    let exported = finished_run(&store, "daily", v, 30, RunState::Succeeded, 0).await;
    let unnotified = finished_run(&store, "daily", v, 40, RunState::Failed, 0).await;
    let missed = store
        .enqueue_run(
            &NewRun {
                state: RunState::Missed,
                reason: Some("not run"),
                ..new_run("daily", v, "h", Trigger::Schedule, 50)
            },
            t(50),
        )
        .await
        .unwrap()
        .unwrap()
        .id;
    let attention = finished_run(&store, "daily", v, 60, RunState::NeedsAttention, 0).await;
    let queued = store
        .enqueue_run(&new_run("daily", v, "h", Trigger::Schedule, 70), t(70))
        .await
        .unwrap()
        .unwrap()
        .id;
    // Newer runs (after the cutoff).
    let recent_ok = finished_run(&store, "daily", v, 2000, RunState::Succeeded, 0).await;
    let recent_failed = finished_run(&store, "daily", v, 2100, RunState::Failed, 1).await;

    // What hangs off the first run: a step with a download, a stopped session, an export whose
    // file retention deleted, a delivered notification, an event.
    let step = store
        .create_steps(
            pruned_ok,
            &[NewStep {
                seq: 0,
                mailbox_id: Some("mb-1".into()),
                ..NewStep::default()
            }],
            t(10),
        )
        .await
        .unwrap()
        .remove(0);
    store
        .create_download(
            &NewDownload {
                step_id: step.id,
                final_path: Path::new("/exports/daily/a.pst"),
                partial_path: Path::new("/exports/daily/.a.pst.partial"),
                restore_session_id: Some("s-old"),
            },
            t(10),
        )
        .await
        .unwrap();
    store
        .record_download_progress(step.id, 4096, None, Some(4096), t(10))
        .await
        .unwrap();
    store
        .record_session_opened(
            &NewSession {
                id: "s-old",
                server: "primary",
                organization_id: "org",
                point_in_time: None,
                run_id: Some(pruned_ok),
            },
            t(10),
        )
        .await
        .unwrap();
    store.mark_session_stopped("s-old", t(10)).await.unwrap();
    let export = |run: RunId, name: &'static str| NewExport {
        job_name: "daily",
        run_id: run,
        step_id: None,
        mailbox_id: Some("mb-1"),
        mailbox_email: None,
        path: Path::new(name),
        manifest_path: None,
        format: FileFormat::Pst,
        bytes: 1,
        sha256: "00",
    };
    let gone = store
        .record_export(&export(pruned_ok, "/exports/daily/a.pst"), t(10))
        .await
        .unwrap();
    store
        .mark_export_deleted(gone.id, "keepLast: 1", t(11))
        .await
        .unwrap();
    store
        .record_export(&export(exported, "/exports/daily/c.pst"), t(30))
        .await
        .unwrap();
    for (run, delivered) in [(pruned_ok, Some(10_000_i64)), (unnotified, None)] {
        sqlx::query(
            "INSERT INTO notifications (delivery, target, event, job_name, run_id, payload,
                                        next_attempt_at, delivered_at, created_at)
             VALUES ($1, 'ops', 'failed', 'daily', $2, '{}', 0, $3, 0)",
        )
        .bind(format!("d-{run}"))
        .bind(run.to_string())
        .bind(delivered)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    store
        .append_event(
            &restorectl::store::NewEvent::new(EventKind::Note, "job-level").job("daily"),
            t(12),
        )
        .await
        .unwrap();

    // A job with a single old success (keepRuns and "last success" keep it), a one-shot run.
    let v_rare = seed_job(&store, "rare", "h").await;
    let rare = finished_run(&store, "rare", v_rare, 10, RunState::Failed, 0).await;
    let rare_ok = finished_run(&store, "rare", v_rare, 5, RunState::Succeeded, 0).await;
    let v_once = seed_job(&store, "once", "h").await;
    let once = store
        .enqueue_run(&new_run("once", v_once, "h", Trigger::OneShot, 10), t(10))
        .await
        .unwrap()
        .unwrap()
        .id;
    store
        .set_run_state(once, RunState::Succeeded, None, t(10))
        .await
        .unwrap();

    let before = store.stats_counts().await.unwrap();
    let report = prune_all(&store, 1000, 2, 1).await;
    assert_eq!(report.runs, 3, "{report:?}");
    assert_eq!(report.steps, 3, "{report:?}");
    assert!(report.events >= 3, "{report:?}");
    // The download, the session, the deleted export, the delivered notification.
    assert_eq!(report.other_rows, 4, "{report:?}");

    let left: std::collections::BTreeSet<RunId> = store
        .list_runs(&RunFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    for kept in [
        exported,
        unnotified,
        attention,
        queued,
        recent_ok,
        recent_failed,
        rare,
        rare_ok,
        once,
    ] {
        assert!(left.contains(&kept), "run {kept} was pruned");
    }
    for gone in [pruned_ok, pruned_failed, missed] {
        assert!(!left.contains(&gone), "run {gone} was kept");
        assert!(store.list_steps(gone).await.unwrap().is_empty());
        assert!(store.list_run_events(gone).await.unwrap().is_empty());
    }
    assert!(!store.list_run_events(exported).await.unwrap().is_empty());
    let live_exports: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM exports")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(live_exports, 1);
    let notifications: Vec<String> = sqlx::query_scalar("SELECT run_id FROM notifications")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(notifications, vec![unnotified.to_string()]);
    let sessions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM restore_sessions")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(sessions, 0);
    // The job-level event stays; the events of a run that exists still cannot be deleted.
    let job_events: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM events WHERE run_id IS NULL AND job_name = 'daily'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(job_events >= 1);
    let refused = sqlx::query("DELETE FROM events WHERE run_id = $1")
        .bind(exported.to_string())
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("append-only"), "{refused}");

    // The counters behind /metrics count the pruned history too.
    let after = store.stats_counts().await.unwrap();
    assert_eq!(after.runs, before.runs);
    assert_eq!(after.step_failures, before.step_failures);
    assert_eq!(after.download_bytes, before.download_bytes);

    // A second pass finds nothing; keepRuns 0 frees the failed run of `rare` (not its last
    // success, not the one-shot run) and the older runs of `daily` that keepRuns held back.
    assert_eq!(prune_all(&store, 1000, 2, 10).await.runs, 0);
    let report = prune_all(&store, 1000, 0, 10).await;
    assert_eq!(report.runs, 1, "{report:?}");
    let left: Vec<RunId> = store
        .list_runs(&RunFilter {
            job: Some("rare"),
            ..RunFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, vec![rare_ok]);
    // Everything newer than the cutoff stays whatever keepRuns says.
    assert_eq!(prune_all(&store, 0, 0, 10).await.runs, 0);
}

/// Fills a fresh database with a long history, in a few statements: 10,000 jobs with 150
/// weekly runs each (1,500,000 runs, almost three years), a step, a download, an event, an
/// export, a stopped restore session, a delivered notification and a consumed operator request
/// for every tenth run, and a little work in progress (queued and running runs, an undelivered
/// notification, a pending request).
async fn fill_with_history(db: &TestDb, conn: &mut AnyConnection, runs: i64) {
    const WEEK_MS: i64 = 7 * 24 * 3600 * 1000;
    let postgres = matches!(db, TestDb::Postgres(_));
    let numbers = |n: i64| {
        if postgres {
            format!(
                "WITH n(i) AS (SELECT CAST(generate_series(0, {}) AS BIGINT))",
                n - 1
            )
        } else {
            format!(
                "WITH RECURSIVE n(i) AS (SELECT CAST(0 AS BIGINT) UNION ALL
                                         SELECT i + 1 FROM n WHERE i < {})",
                n - 1
            )
        }
    };
    if postgres {
        // PL/pgSQL's per-row trigger (`run_counts`) made writing the history take a quarter of
        // an hour on a busy machine; the plans do not depend on the counts.
        sqlx::raw_sql("ALTER TABLE runs DISABLE TRIGGER USER; SET synchronous_commit = off")
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    let statements = [
        format!(
            "{} INSERT INTO jobs (name, kind, file, state, next_fire_at, first_seen_at, last_seen_at)
             SELECT 'job-' || CAST(10000 + i AS TEXT), 'ExportPst', '/jobs/j.yaml', 'active',
                    i, 0, 0 FROM n",
            numbers(10_000)
        ),
        format!(
            "{} INSERT INTO job_versions (id, job_name, file, spec_hash, spec_json, valid,
                                          first_seen_at, last_seen_at)
             SELECT i + 1, 'job-' || CAST(10000 + i AS TEXT), '/jobs/j.yaml', 'h', '{{}}', 1, 0, 0
             FROM n",
            numbers(10_000)
        ),
        format!(
            "{} INSERT INTO runs (id, job_name, job_version_id, spec_hash, trigger, scheduled_for,
                                  state, created_at, started_at, finished_at, updated_at)
             SELECT 'run-' || CAST(10000000 + i AS TEXT), 'job-' || CAST(10000 + i / 150 AS TEXT),
                    i / 150 + 1, 'h', 'schedule', (i % 150) * {WEEK_MS},
                    CASE WHEN i % 500000 = 149 THEN 'queued'
                         WHEN i % 500000 = 299 THEN 'running'
                         WHEN i % 50 = 7 THEN 'failed'
                         WHEN i % 97 = 3 THEN 'missed'
                         ELSE 'succeeded' END,
                    (i % 150) * {WEEK_MS}, (i % 150) * {WEEK_MS},
                    CASE WHEN i % 500000 IN (149, 299) THEN NULL
                         ELSE (i % 150) * {WEEK_MS} + 60000 END,
                    (i % 150) * {WEEK_MS}
             FROM n",
            numbers(runs)
        ),
        format!(
            "{} INSERT INTO steps (id, run_id, seq, mailbox_id, state, updated_at)
             SELECT i + 1, 'run-' || CAST(10000000 + i * 10 AS TEXT), 0, 'mb', 'done', 0 FROM n",
            numbers(runs / 10)
        ),
        format!(
            "{} INSERT INTO downloads (step_id, final_path, partial_path, state, bytes_durable,
                                       updated_at)
             SELECT i + 1, '/e/' || CAST(i AS TEXT), '/e/.p' || CAST(i AS TEXT), 'published',
                    1048576, 0
             FROM n",
            numbers(runs / 10)
        ),
        format!(
            "{} INSERT INTO exports (id, job_name, run_id, step_id, path, format, bytes, sha256,
                                     created_at, deleted_at)
             SELECT i + 1, 'job-' || CAST(10000 + i / 15 AS TEXT),
                    'run-' || CAST(10000000 + i * 10 AS TEXT), i + 1,
                    '/e/' || CAST(i AS TEXT), 'pst', 1048576, '00', 0, 1 FROM n",
            numbers(runs / 10)
        ),
        format!(
            "{} INSERT INTO restore_sessions (id, server, organization_id, run_id, state, opened_at,
                                              stopped_at, updated_at)
             SELECT 's-' || CAST(i AS TEXT), 'primary', 'org',
                    'run-' || CAST(10000000 + i * 10 AS TEXT), 'stopped', 0, 0, 0 FROM n",
            numbers(runs / 10)
        ),
        format!(
            "{} INSERT INTO events (at, kind, job_name, run_id, message)
             SELECT i, 'run_finished', 'job-' || CAST(10000 + i / 15 AS TEXT),
                    'run-' || CAST(10000000 + i * 10 AS TEXT), 'finished' FROM n",
            numbers(runs / 10)
        ),
        format!(
            "{} INSERT INTO notifications (delivery, target, event, job_name, run_id, payload,
                                           next_attempt_at, delivered_at, created_at)
             SELECT 'd-' || CAST(i AS TEXT), 'ops', 'failed', 'job-' || CAST(10000 + i / 15 AS TEXT),
                    'run-' || CAST(10000000 + i * 10 AS TEXT), '{{}}', i,
                    CASE WHEN i % 75000 = 1 THEN NULL ELSE i END, i FROM n",
            numbers(runs / 10)
        ),
        format!(
            "{} INSERT INTO operator_requests (kind, job_name, created_at, consumed_at, result)
             SELECT 'run', 'job-' || CAST(10000 + i / 15 AS TEXT), i,
                    CASE WHEN i % 75000 = 1 THEN NULL ELSE i END, 'queued' FROM n",
            numbers(runs / 10)
        ),
    ];
    for sql in statements {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    if postgres {
        sqlx::raw_sql("ALTER TABLE runs ENABLE TRIGGER USER")
            .execute(&mut *conn)
            .await
            .unwrap();
    }
}

/// The plan of `sql` as lines: SQLite's `EXPLAIN QUERY PLAN` details, or PostgreSQL's generic
/// plan (the one a prepared statement gets whatever its parameters).
async fn plan_of(db: &TestDb, conn: &mut AnyConnection, sql: &str) -> Vec<String> {
    let params = (1..=9).filter(|n| sql.contains(&format!("${n}"))).count();
    match db {
        TestDb::Sqlite(_) => {
            let rows: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .fetch_all(&mut *conn)
                    .await
                    .unwrap();
            rows.into_iter().map(|r| r.3).collect()
        }
        TestDb::Postgres(_) => {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DEALLOCATE ALL; SET plan_cache_mode = force_generic_plan; PREPARE periodic AS {sql}"
            )))
            .execute(&mut *conn)
            .await
            .unwrap();
            let nulls = vec!["NULL"; params].join(", ");
            let execute = if params == 0 {
                "EXPLAIN EXECUTE periodic".to_string()
            } else {
                format!("EXPLAIN EXECUTE periodic({nulls})")
            };
            let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(execute))
                .fetch_all(&mut *conn)
                .await
                .unwrap();
            rows.iter()
                .map(|r| r.try_get::<String, _>(0).unwrap())
                .collect()
        }
    }
}

/// Every periodic read of the daemon (`store::periodic::PERIODIC_READS`: metrics, the status
/// line, the scheduler, the reconcile task, the claim polls, the request consumer, the
/// notification deliverer, the heartbeat) stays O(jobs) on a database with 1,500,000 runs
/// (300,000 on PostgreSQL, see below): no plan scans a table that grows with the history (on SQLite each names its index; on
/// PostgreSQL, after ANALYZE, no sequential scan of such a table).
async fn periodic_reads_stay_o_jobs_with_a_long_history(db: &TestDb) {
    use restorectl::store::periodic::{HISTORY_TABLES, PERIODIC_READS, WORK_IN_PROGRESS_INDEXES};
    db.open().await.close().await;
    let mut conn = db.raw().await;
    if matches!(db, TestDb::Sqlite(_)) {
        // Only speeds up writing the history (index pages stay in memory).
        sqlx::query("PRAGMA cache_size = -400000")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    // SQLite, the embedded default, gets the issue's 1,500,000 runs. PostgreSQL gets 300,000:
    // writing 1.5 M rows through its foreign-key checks took six minutes here even on a quiet
    // machine, and its planner already prefers a sequential scan of a table this size whenever
    // no index fits, so the check catches the same mistakes (PERIODIC_HISTORY_RUNS overrides).
    let wanted: i64 = match db {
        TestDb::Sqlite(_) => 1_500_000,
        TestDb::Postgres(_) => std::env::var("PERIODIC_HISTORY_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300_000),
    };
    let started = std::time::Instant::now();
    fill_with_history(db, &mut conn, wanted).await;
    let runs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(runs, wanted);
    eprintln!("history of {runs} runs written in {:?}", started.elapsed());
    if matches!(db, TestDb::Postgres(_)) {
        // What autovacuum does on a real server after such a history.
        sqlx::raw_sql("ANALYZE").execute(&mut conn).await.unwrap();
    }
    let mut failures = Vec::new();
    for read in PERIODIC_READS {
        let plan = plan_of(db, &mut conn, read.sql).await;
        let scans: Vec<&String> = plan
            .iter()
            .filter(|line| {
                HISTORY_TABLES.iter().any(|table| match db {
                    TestDb::Sqlite(_) => {
                        line.starts_with(&format!("SCAN {table}"))
                            && !WORK_IN_PROGRESS_INDEXES
                                .iter()
                                .any(|i| line.contains(&format!("INDEX {i}")))
                    }
                    TestDb::Postgres(_) => {
                        line.contains(&format!("Seq Scan on {table} "))
                            || line.ends_with(&format!("Seq Scan on {table}"))
                    }
                })
            })
            .collect();
        let names_index =
            matches!(db, TestDb::Postgres(_)) || plan.iter().any(|l| l.contains(read.sqlite_plan));
        if !scans.is_empty() || !names_index {
            failures.push(format!(
                "{}: {}\n  {}",
                read.what,
                read.sql,
                plan.join("\n  ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "periodic reads that grow with the history:\n{}",
        failures.join("\n")
    );
}

/// A `run` request becomes exactly one run: the run is queued in the transaction that consumes
/// the request, so a second consumer (a replica that took the lead meanwhile) gets a conflict
/// and queues nothing.
async fn a_run_request_queues_one_run_whoever_consumes_it(db: &TestDb) {
    let store = db.open().await;
    let v = seed_job(&store, "asked", "h1").await;
    let request = store
        .insert_request(&NewRequest::Run { job: "asked" }, Some("alice"), t(1))
        .await
        .unwrap();
    let run = new_run("asked", v, "h1", Trigger::Manual, 2);
    let (row, queued) = store
        .enqueue_requested_run(request.id, &run, t(2))
        .await
        .unwrap();
    let queued = queued.expect("queued");
    assert_eq!(row.result_run_id, Some(queued.id));
    assert_eq!(
        row.result.as_deref(),
        Some(format!("queued manual run {}", queued.id).as_str())
    );
    let again = store.enqueue_requested_run(request.id, &run, t(3)).await;
    assert!(
        matches!(again, Err(StoreError::Conflict { .. })),
        "{again:?}"
    );
    let runs = store
        .list_runs(&RunFilter {
            job: Some("asked"),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(store.list_pending_requests().await.unwrap().is_empty());
}

// The run engine's two commits of an ExportPst step (bench/mass-export.sh): the start records
// the session, the download row, the session kept for the resume and `downloading` at once
// (idempotent on a resumed attempt, all or nothing); the finish records the export, the
// published download, the step's file and `done` at once, also when an earlier attempt's
// export row is already there.
async fn an_export_step_starts_and_finishes_in_one_commit_each(db: &TestDb) {
    let store = db.open().await;
    let step = seed_step(&store, "tenant").await;
    store
        .record_session_opened(
            &NewSession {
                id: "s1",
                server: "primary",
                organization_id: "6f1c8e0a-6a4b-4d1e-9a51-3c2f0b7d9e01",
                point_in_time: None,
                run_id: Some(step.run_id),
            },
            t(1),
        )
        .await
        .unwrap();
    let new = NewDownload {
        step_id: step.id,
        final_path: Path::new("/exports/tenant/2026-03-01/alice.pst"),
        partial_path: Path::new("/exports/tenant/2026-03-01/alice.pst.partial"),
        restore_session_id: Some("s1"),
    };
    let d = store.start_step_download(&new, t(2)).await.unwrap();
    assert_eq!((d.state, d.bytes_durable), (DownloadState::Pending, 0));
    let s = store.get_step(step.id).await.unwrap();
    assert_eq!(s.state, StepState::Downloading);
    assert_eq!(s.restore_session_id.as_deref(), Some("s1"));
    assert!(store.get_session("s1").await.unwrap().keep_for_resume);
    // A resumed attempt finds the same row and changes nothing else.
    store
        .record_download_progress(step.id, 4096, Some(b"state"), Some(8192), t(3))
        .await
        .unwrap();
    let again = store.start_step_download(&new, t(4)).await.unwrap();
    assert_eq!(again.bytes_durable, 4096);
    assert_eq!(
        event_kinds(&store, step.run_id).await,
        ["run_queued", "session_opened", "step_state_changed"]
    );

    // An unknown session rolls the whole start back.
    let other = store
        .create_steps(
            step.run_id,
            &[NewStep {
                seq: 1,
                mailbox_id: Some("mb-2".into()),
                ..Default::default()
            }],
            t(5),
        )
        .await
        .unwrap()
        .remove(1);
    let lost = NewDownload {
        step_id: other.id,
        final_path: Path::new("/exports/tenant/2026-03-01/bob.pst"),
        partial_path: Path::new("/exports/tenant/2026-03-01/bob.pst.partial"),
        restore_session_id: Some("gone"),
    };
    assert!(
        store
            .start_step_download(&lost, t(6))
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        store
            .get_download(other.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    let untouched = store.get_step(other.id).await.unwrap();
    assert_eq!(
        (untouched.state, untouched.restore_session_id),
        (StepState::Pending, None)
    );

    let export = |step_id, path: &'static str| NewExport {
        job_name: "tenant",
        run_id: step.run_id,
        step_id: Some(step_id),
        mailbox_id: Some("mb-1"),
        mailbox_email: Some("alice@contoso.com"),
        path: Path::new(path),
        manifest_path: None,
        format: FileFormat::Pst,
        bytes: 8192,
        sha256: "ab12",
    };
    let done = store
        .finish_export_step(
            step.id,
            &export(step.id, "/exports/tenant/2026-03-01/alice.pst"),
            t(7),
        )
        .await
        .unwrap();
    assert_eq!(done.state, StepState::Done);
    assert_eq!(
        (
            done.file_path.as_deref(),
            done.bytes,
            done.sha256.as_deref()
        ),
        (
            Some("/exports/tenant/2026-03-01/alice.pst"),
            Some(8192),
            Some("ab12")
        )
    );
    let published = store.get_download(step.id).await.unwrap();
    assert_eq!(
        (published.state, published.bytes_durable),
        (DownloadState::Published, 8192)
    );
    assert_eq!(store.list_run_exports(step.run_id).await.unwrap().len(), 1);
    assert_eq!(
        event_kinds(&store, step.run_id).await,
        [
            "run_queued",
            "session_opened",
            "step_state_changed",
            "download_published",
            "step_state_changed"
        ]
    );
    // A finished step cannot be finished again; nothing of the second try stays.
    assert!(matches!(
        store
            .finish_export_step(step.id, &export(step.id, "/exports/tenant/other.pst"), t(8))
            .await,
        Err(StoreError::InvalidTransition { .. })
    ));
    assert_eq!(store.list_run_exports(step.run_id).await.unwrap().len(), 1);

    // The export row of an earlier attempt whose finish was lost is kept as it is.
    store
        .create_download(
            &NewDownload {
                restore_session_id: None,
                ..lost
            },
            t(9),
        )
        .await
        .unwrap();
    let bob = "/exports/tenant/2026-03-01/bob.pst";
    store
        .record_export(&export(other.id, bob), t(9))
        .await
        .unwrap();
    let done = store
        .finish_export_step(other.id, &export(other.id, bob), t(10))
        .await
        .unwrap();
    assert_eq!(done.state, StepState::Done);
    assert_eq!(store.list_run_exports(step.run_id).await.unwrap().len(), 2);
}
