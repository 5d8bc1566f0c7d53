//! What only the PostgreSQL backend has to show: migrations applied once by stores opening a
//! new database together, a database without restorectl's tables is "missing" for operator
//! commands, and write transactions from several stores (replicas in miniature) serialise, so
//! each queued run is claimed by exactly one of them.

use std::collections::BTreeSet;
use std::time::Duration;

use restorectl::store::{Location, OpenMode, Store, StoreError, Trigger, expected_schema_version};

use super::{TestDb, new_run, seed_job, t};

/// The test database, or `None` (a failure under CI) without a server.
async fn database(test: &str) -> Option<(TestDb, String)> {
    let db = TestDb::postgres(test).await?;
    let url = db.url();
    Some((db, url))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_opening_a_new_database_together_apply_each_migration_once() {
    let Some((_db, url)) =
        database("stores_opening_a_new_database_together_apply_each_migration_once").await
    else {
        return;
    };
    let opens: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Store::open_url(&url).await })
        })
        .collect();
    for open in opens {
        let store = open.await.unwrap().expect("every concurrent open succeeds");
        assert_eq!(
            store.schema_version().await.unwrap(),
            Some(expected_schema_version())
        );
        store.close().await;
    }
    let store = Store::open_url(&url).await.unwrap();
    let ro = Store::connect(&Location::parse(&url).unwrap(), OpenMode::ReadOnly)
        .await
        .unwrap();
    assert!(ro.is_read_only());
    assert!(matches!(
        ro.mark_job_removed("x", t(0)).await.unwrap_err(),
        StoreError::ReadOnly { .. }
    ));
    store.close().await;
    ro.close().await;
}

#[tokio::test]
async fn operator_commands_find_no_state_in_a_database_the_daemon_never_used() {
    let Some((_db, url)) =
        database("operator_commands_find_no_state_in_a_database_the_daemon_never_used").await
    else {
        return;
    };
    let location = Location::parse(&url).unwrap();
    for mode in [OpenMode::ReadOnly, OpenMode::Existing] {
        let err = Store::connect(&location, mode).await.unwrap_err();
        assert!(matches!(err, StoreError::Missing { .. }), "{mode:?}: {err}");
        assert!(err.to_string().contains("daemon has not run yet"), "{err}");
    }
    // Nothing was created by those opens: the daemon's open still migrates from scratch.
    let store = Store::connect(&location, OpenMode::Create).await.unwrap();
    assert_eq!(
        store.schema_version().await.unwrap(),
        Some(expected_schema_version())
    );
    store.close().await;
}

/// Three stores (each with its own pool, as three replicas have) claim from one queue of runs
/// at once: every run is claimed exactly once, and none of the read-then-write claims fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_claiming_together_claim_each_run_exactly_once() {
    const RUNS: i64 = 120;
    let Some((_db, url)) = database("stores_claiming_together_claim_each_run_exactly_once").await
    else {
        return;
    };
    let setup = Store::open_url(&url).await.unwrap();
    let version = seed_job(&setup, "queue", "h").await;
    let mut queued = BTreeSet::new();
    for i in 0..RUNS {
        let run = setup
            .enqueue_run(&new_run("queue", version, "h", Trigger::Schedule, i), t(0))
            .await
            .unwrap()
            .unwrap();
        queued.insert(run.id);
    }
    let claimers: Vec<_> = (0..3)
        .map(|n| {
            let url = url.clone();
            tokio::spawn(async move {
                let store = Store::open_url(&url).await.unwrap();
                let owner = format!("replica-{n}");
                let mut mine = Vec::new();
                while let Some(run) = store
                    .claim_next_run(&owner, Duration::from_secs(600), t(RUNS + 1))
                    .await
                    .unwrap()
                {
                    assert_eq!(run.lease_owner.as_deref(), Some(owner.as_str()));
                    mine.push(run.id);
                }
                store.close().await;
                mine
            })
        })
        .collect();
    let mut claimed = BTreeSet::new();
    let mut total = 0;
    for c in claimers {
        let mine = c.await.unwrap();
        total += mine.len();
        claimed.extend(mine);
    }
    assert_eq!(total, queued.len(), "a run was claimed twice");
    assert_eq!(claimed, queued, "every queued run was claimed");
    setup.close().await;
}

/// The server's certificate file and whether it has TLS on: `None` when TLS is off.
async fn server_certificate(url: &str) -> Option<std::path::PathBuf> {
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(url)
        .await
        .unwrap();
    let ssl: String = sqlx::query_scalar("SELECT setting FROM pg_settings WHERE name = 'ssl'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let file: String =
        sqlx::query_scalar("SELECT setting FROM pg_settings WHERE name = 'ssl_cert_file'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    (ssl == "on").then(|| std::path::PathBuf::from(file))
}

/// `databaseCaFile` verifies the server: with the CA that signed the server's certificate
/// (here the self-signed certificate itself) `sslmode=verify-ca` connects over TLS; with another
/// CA the connection is refused, never downgraded.
#[tokio::test]
async fn the_database_ca_file_verifies_the_server_certificate() {
    let Some((_db, url)) = database("the_database_ca_file_verifies_the_server_certificate").await
    else {
        return;
    };
    let Some(cert) = server_certificate(&url).await else {
        assert!(
            !crate::common::under_ci(),
            "the PostgreSQL server of the tests has TLS off (.ci/postgres.sh turns it on)"
        );
        eprintln!("the PostgreSQL server has TLS off: skipping (it would fail under CI=true)");
        return;
    };
    let verify = format!("{url}?sslmode=verify-ca");
    let location = Location::parse(&verify).unwrap().with_ca_file(cert);
    let store = Store::connect(&location, OpenMode::Create).await.unwrap();
    store.ping().await.unwrap();
    store.close().await;

    let dir = tempfile::tempdir().unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["other-ca.test".into()]).unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, other.cert.pem()).unwrap();
    let location = Location::parse(&verify).unwrap().with_ca_file(other_ca);
    let err = Store::connect(&location, OpenMode::Create)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
}
