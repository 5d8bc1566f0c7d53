//! Several replicas on one PostgreSQL database (SPEC §10, docs/ha.md), as an operator runs them:
//! real `restorectl daemon` processes with the same job directory, the same `exportRoot` and
//! the same database (each with its own `replicaName` and health port), the simulator on
//! loopback, and `kill -9`.
//!
//! - two replicas and a schedule firing every 2 s: every fire is exactly one run, one replica
//!   leads the whole time, `status` lists both and the leader;
//! - `kill -9` of the replica that holds a restore in flight and an export whose download broke
//!   half-way: the other replica takes both over once their leases expire, follows the restore
//!   it did not send (one restore POST in the simulator's journal) and resumes the download from
//!   the `.partial` on the shared `exportRoot` (the file is byte-identical to what the simulator
//!   serves);
//! - `kill -9` of the leader: the lead moves to the other replica within the lease, which then
//!   applies a new job file; the killed replica, restarted, follows;
//! - the database away for 15 s: both replicas keep their processes, say not-ready, come back,
//!   and the restore in flight finishes with one POST.

use std::time::{Duration, Instant};

use crate::common::postgres::TestDatabase;
use crate::daemon_support::*;
use restorectl::sim::{
    CallRange, Endpoint, ExportSpec, FaultAction, FaultRule, SimConfig, SimHandle, Simulator,
};
use restorectl::store::{Location, OpenMode, RunFilter, RunState, Store, Trigger};
use sha2::{Digest, Sha256};

/// The run and leadership lease of these tests (`engine.lease`).
const LEASE: Duration = Duration::from_secs(3);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A site on `db` with leases of `lease`; `extra` is appended to the config.
fn site_on(sim: &SimHandle, db: &TestDatabase, lease: Duration, extra: &str) -> Site {
    let site = Site::new(&sim.base_url(), "off");
    std::fs::write(site.path("secrets/m365-restore-password"), "dev\n").unwrap();
    append_config(
        &site,
        &format!(
            "database: {}\nengine: {{ lease: {}s, pollInterval: 1s }}\n{extra}",
            db.url,
            lease.as_secs()
        ),
    );
    site
}

/// A replica of `site` named `name`: its config and the daemon.
fn replica(site: &Site, name: &str) -> Daemon {
    let config = site.replica_config(name, free_port());
    Daemon::start_config(site, &config, &[])
}

/// Polls `check` every 100 ms for up to `limit`.
async fn within<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return (v, start.elapsed());
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn open(db: &TestDatabase) -> Store {
    let location = Location::parse(&db.url).unwrap();
    let (store, _) = within("the database is migrated", Duration::from_secs(30), || {
        let location = location.clone();
        async move { Store::connect(&location, OpenMode::Existing).await.ok() }
    })
    .await;
    store
}

/// The replica name of the live leader, if a lease runs.
async fn leader(store: &Store) -> Option<String> {
    let l = store.leadership().await.ok()??;
    if !l.is_live(chrono::Utc::now()) {
        return None;
    }
    store
        .list_instances()
        .await
        .ok()?
        .into_iter()
        .find(|i| i.id == l.holder)
        .map(|i| i.replica_name())
}

fn status_json(config: &std::path::Path) -> serde_json::Value {
    let out = std::process::Command::new(bin())
        .args(["status", "--json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_turn_every_fire_into_exactly_one_run_under_one_leader() {
    let Some(db) = TestDatabase::create("two_replicas_turn_every_fire_into_one_run").await else {
        return;
    };
    let sim = Simulator::start(
        SimConfig {
            export_default_size: 32 * 1024,
            export_build_delay: Duration::from_millis(50),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    // A lease long enough that a loaded machine never misses a renewal: the lead must not move.
    let site = site_on(&sim, &db, Duration::from_secs(20), "");
    let schedule = "{ cron: \"*/2 * * * * *\", concurrencyPolicy: Allow }";
    site.write_job("tick.yaml", &export_job("tick", Some(schedule), ""));
    let a = replica(&site, "replica-a");
    let b = replica(&site, "replica-b");
    let store = open(&db).await;
    within(
        "both replicas registered",
        Duration::from_secs(30),
        || async { (store.list_live_instances().await.ok()?.len() == 2).then_some(()) },
    )
    .await;
    // Twenty seconds of fires with both replicas up.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let status = status_json(&site.config_path());
    site.write_job(
        "tick.yaml",
        &export_job("tick", Some(schedule), "  suspend: true\n"),
    );
    let (runs, _) = within("every run is finished", Duration::from_secs(60), || async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let runs = store
            .list_runs(&RunFilter {
                job: Some("tick"),
                ..RunFilter::default()
            })
            .await
            .ok()?;
        runs.iter().all(|r| r.state.is_terminal()).then_some(runs)
    })
    .await;

    // Every fire is one run: one row per 2 s slot, none twice, none skipped in between.
    let mut slots: Vec<_> = runs
        .iter()
        .filter(|r| r.trigger == Trigger::Schedule)
        .map(|r| r.scheduled_for)
        .collect();
    slots.sort();
    let fires = slots.len();
    println!("{fires} fires with two replicas");
    assert!(fires >= 8, "fires: {slots:?}");
    for pair in slots.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            chrono::Duration::seconds(2),
            "consecutive fires are one slot apart (no duplicate, no gap): {slots:?}"
        );
    }
    for run in &runs {
        assert_eq!(run.state, RunState::Succeeded, "{run:?}");
    }

    // One leader the whole time; both replicas listed; both took runs.
    let events = store.list_recent_events(10_000).await.unwrap();
    let elected: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "leader_elected")
        .collect();
    assert_eq!(elected.len(), 1, "the lead never moved: {elected:?}");
    let instances = status["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2, "{status}");
    let leaders: Vec<_> = instances
        .iter()
        .filter(|i| i["leader"] == true)
        .map(|i| i["replica"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(leaders.len(), 1, "{status}");
    assert_eq!(status["leader"]["replica"], leaders[0].as_str(), "{status}");
    let owners: std::collections::BTreeSet<String> = events
        .iter()
        .filter(|e| e.kind == "run_started")
        .filter_map(|e| e.data.as_ref()?["owner"].as_str().map(str::to_string))
        .collect();
    println!("runs were started by {} replica(s)", owners.len());
    let leads_logged = [a.log(), b.log()]
        .iter()
        .filter(|l| l.contains("this replica leads now"))
        .count();
    assert_eq!(leads_logged, 0, "the start-up leader leads from the start");
    let followers_logged = [a.log(), b.log()]
        .iter()
        .filter(|l| l.contains("another replica leads"))
        .count();
    assert_eq!(
        followers_logged, 1,
        "exactly one replica started as follower"
    );

    for d in [a, b] {
        d.signal("TERM");
        let (status, log, _) = d.wait_exit();
        assert!(status.success(), "{log}");
    }
    sim.shutdown().await;
}

fn sha256_file(path: &std::path::Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_killed_mid_run_is_taken_over_without_a_second_restore_post() {
    let Some(db) = TestDatabase::create("a_replica_killed_mid_run_is_taken_over").await else {
        return;
    };
    let size: u64 = 8 << 20;
    let sim = Simulator::start(
        SimConfig {
            restore_delay: Duration::from_secs(8),
            export_sizes: [("alice@contoso.com".to_string(), size)].into(),
            export_build_delay: Duration::from_millis(100),
            // The first download breaks after 3 MiB, and the server sits on the resume for a
            // minute: the run stays held, with a `.partial` on the shared exportRoot.
            faults: vec![
                FaultRule {
                    calls: Some(CallRange {
                        from: 1,
                        to: Some(1),
                    }),
                    ..FaultRule::on(
                        Endpoint::ExportPst,
                        FaultAction::DropAfterBytes { bytes: 3 << 20 },
                    )
                },
                FaultRule {
                    calls: Some(CallRange {
                        from: 2,
                        to: Some(2),
                    }),
                    ..FaultRule::on(
                        Endpoint::ExportPst,
                        FaultAction::Delay {
                            duration: Duration::from_secs(60),
                        },
                    )
                },
            ],
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let site = site_on(
        &sim,
        &db,
        LEASE,
        "defaults:\n  retry: { maxAttempts: 5, initialBackoff: 20s, maxBackoff: 20s }",
    );
    site.write_job(
        "restore.yaml",
        "apiVersion: restorectl/v1\nkind: Restore\nmetadata: { name: restore-bob }\nspec:\n  \
         organization: contoso.onmicrosoft.com\n  mailboxes: [bob@contoso.com]\n  \
         archives: exclude\n  restore:\n    credentials:\n      user:\n        \
         userName: svc-backup@contoso.com\n        password: { secret: m365-restore-password }\n",
    );
    site.write_job(
        "export.yaml",
        &export_job("export-alice", None, "  archives: exclude\n"),
    );
    let bob = sim.mailbox("bob@contoso.com", false).unwrap();
    let alice = sim.mailbox("alice@contoso.com", false).unwrap();

    // Replica a alone takes both runs: the restore is sent, the download breaks half-way.
    let a = replica(&site, "replica-a");
    let store = open(&db).await;
    let (holder, _) = within(
        "replica a holds a sent restore and a half-downloaded export",
        Duration::from_secs(60),
        || async {
            let runs = store.list_runs(&RunFilter::default()).await.ok()?;
            if runs.len() != 2 {
                return None;
            }
            let mut owners = Vec::new();
            for run in &runs {
                let steps = store.list_steps(run.id).await.ok()?;
                let step = steps.first()?;
                let ready = match run.job_name.as_str() {
                    "restore-bob" => step.restore_posts == 1,
                    _ => store
                        .get_download(step.id)
                        .await
                        .ok()
                        .is_some_and(|d| d.bytes_durable > 0),
                };
                if !ready || run.state != RunState::Running {
                    return None;
                }
                owners.push(run.lease_owner.clone()?);
            }
            (owners[0] == owners[1]).then(|| owners[0].clone())
        },
    )
    .await;
    let b = replica(&site, "replica-b");
    within("replica b registered", Duration::from_secs(30), || async {
        (store.list_live_instances().await.ok()?.len() == 2).then_some(())
    })
    .await;

    // Operators see who holds what: runs, show, jobs (text and JSON) and status.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(bin())
            .arg("--config")
            .arg(site.config_path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let runs_json: serde_json::Value = serde_json::from_str(&cli(&["runs", "--json"])).unwrap();
    for run in runs_json["runs"].as_array().unwrap() {
        assert_eq!(run["heldBy"]["replica"], "replica-a", "{run}");
        assert_eq!(run["heldBy"]["instance"], holder.as_str(), "{run}");
    }
    let text = cli(&["runs"]);
    assert!(text.contains("running on replica-a"), "{text}");
    let id = runs_json["runs"][0]["id"].as_str().unwrap().to_string();
    let show = cli(&["show", &id]);
    assert!(
        show.contains("held by") && show.contains("replica-a"),
        "{show}"
    );
    let show_json: serde_json::Value =
        serde_json::from_str(&cli(&["show", &id, "--json"])).unwrap();
    assert_eq!(show_json["run"]["heldBy"]["replica"], "replica-a");
    let jobs_json: serde_json::Value = serde_json::from_str(&cli(&["jobs", "--json"])).unwrap();
    for job in jobs_json["jobs"].as_array().unwrap() {
        assert_eq!(job["lastRun"]["heldBy"]["replica"], "replica-a", "{job}");
    }
    let text = cli(&["jobs"]);
    assert!(text.contains("running on replica-a"), "{text}");
    let status = status_json(&site.config_path());
    let a_row = status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["replica"] == "replica-a")
        .unwrap()
        .clone();
    assert_eq!(a_row["leader"], true, "{status}");
    assert_eq!(a_row["runs"].as_array().unwrap().len(), 2, "{status}");
    let text = cli(&["status"]);
    assert!(
        text.contains("replica-b") && text.contains("leader: replica-a"),
        "{text}"
    );

    a.kill9();
    let killed = Instant::now();
    let killed_at = chrono::Utc::now();
    let (runs, _) = within(
        "replica b finishes both runs",
        Duration::from_secs(90),
        || async {
            let runs = store.list_runs(&RunFilter::default()).await.ok()?;
            runs.iter().all(|r| r.state.is_terminal()).then_some(runs)
        },
    )
    .await;
    for run in &runs {
        assert_eq!(run.state, RunState::Succeeded, "{run:?}\n{}", b.log());
    }
    // Failover: from the kill to replica b's claim of each run.
    let events = store.list_recent_events(10_000).await.unwrap();
    let mut failover = Duration::ZERO;
    for run in &runs {
        let takeover = events
            .iter()
            .filter(|e| e.kind == "run_started" && e.run_id == Some(run.id))
            .find(|e| {
                e.data
                    .as_ref()
                    .is_some_and(|d| d["previous_owner"] == holder.as_str())
            })
            .unwrap_or_else(|| panic!("run {} was taken over: {events:#?}", run.id));
        let took = (takeover.at - killed_at).to_std().unwrap_or_default();
        failover = failover.max(took);
        assert!(run.attempts >= 2, "{run:?}");
    }
    println!(
        "failover (kill -9 → other replica claims): {failover:?} with a {LEASE:?} lease; both runs done {:?} after the kill",
        killed.elapsed()
    );
    assert!(
        failover >= LEASE - Duration::from_millis(500),
        "a live lease is not taken early: {failover:?}"
    );

    // One restore POST; the export resumed from the partial and is byte-identical.
    assert_eq!(sim.restore_calls(bob.id), 1, "the restore was POSTed once");
    assert!(
        events.iter().any(|e| e.kind == "download_resumed"),
        "the download resumed from the .partial"
    );
    let files = published(&site.path("exports"), "export-alice");
    assert_eq!(files.len(), 1, "{files:?}");
    let (sha, len) = sim
        .export_digest(&ExportSpec {
            mailbox_id: alice.id,
            keyword: None,
            point_in_time: None,
            pst_size_limit: None,
        })
        .unwrap();
    assert_eq!(len, size);
    assert_eq!(
        sha256_file(&files[0]),
        sha,
        "byte-identical to the simulator's"
    );
    let restarted = b.log();
    assert!(!restarted.contains("panicked"), "replica b: {restarted}");
    b.signal("TERM");
    assert!(b.wait_exit().0.success());
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_lead_moves_when_the_leader_is_killed() {
    let Some(db) = TestDatabase::create("the_lead_moves_when_the_leader_is_killed").await else {
        return;
    };
    let sim = Simulator::start(SimConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let site = site_on(&sim, &db, LEASE, "");
    site.write_job(
        "first.yaml",
        &export_job("first", Some("{ cron: \"0 3 * * *\" }"), ""),
    );
    let mut replicas = [
        ("replica-a", Some(replica(&site, "replica-a"))),
        ("replica-b", None),
    ];
    let store = open(&db).await;
    within("replica a leads", Duration::from_secs(30), || async {
        (leader(&store).await? == "replica-a").then_some(())
    })
    .await;
    replicas[1].1 = Some(replica(&site, "replica-b"));
    within("replica b registered", Duration::from_secs(30), || async {
        (store.list_live_instances().await.ok()?.len() == 2).then_some(())
    })
    .await;
    assert_eq!(leader(&store).await.as_deref(), Some("replica-a"));

    replicas[0].1.take().unwrap().kill9();
    let (_, took) = within("the lead moves to replica b", LEASE * 3, || async {
        (leader(&store).await? == "replica-b").then_some(())
    })
    .await;
    println!("the lead moved {took:?} after kill -9 of the leader (lease {LEASE:?})");
    let b_log = replicas[1].1.as_ref().unwrap().log();
    assert!(b_log.contains("this replica leads now"), "{b_log}");

    // The new leader applies the job files.
    site.write_job(
        "second.yaml",
        &export_job("second", Some("{ cron: \"0 4 * * *\" }"), ""),
    );
    within(
        "the new leader applies a new job file",
        Duration::from_secs(30),
        || async { store.get_job("second").await.ok()?.next_fire_at },
    )
    .await;

    // The killed replica comes back as a follower; the lead stays.
    replicas[0].1 = Some(replica(&site, "replica-a"));
    within("replica a is back", Duration::from_secs(30), || async {
        let live = store.list_live_instances().await.ok()?;
        live.iter()
            .any(|i| i.replica_name() == "replica-a" && i.pid != 0)
            .then_some(())
    })
    .await;
    tokio::time::sleep(LEASE * 2).await;
    assert_eq!(leader(&store).await.as_deref(), Some("replica-b"));
    let terms: Vec<i64> = store
        .list_recent_events(1000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == "leader_elected")
        .map(|e| e.data.as_ref().unwrap()["term"].as_i64().unwrap())
        .collect();
    assert_eq!(terms.len(), 2, "elected twice (a, then b): {terms:?}");
    let status = status_json(&site.config_path());
    assert_eq!(status["leader"]["replica"], "replica-b", "{status}");

    // A graceful stop of the leader hands the lead over at once.
    let b = replicas[1].1.take().unwrap();
    b.signal("TERM");
    assert!(b.wait_exit().0.success());
    let (_, handover) = within("replica a leads after b stopped", LEASE * 3, || async {
        (leader(&store).await? == "replica-a").then_some(())
    })
    .await;
    println!("the lead moved {handover:?} after a graceful stop of the leader");
    let a = replicas[0].1.take().unwrap();
    a.signal("TERM");
    assert!(a.wait_exit().0.success());
    sim.shutdown().await;
}

/// Reads a number from the environment.
fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `bench/replicas.sh` (not part of the suite: `--ignored`): prints the failover time, the claim
/// throughput with 1, 2 and 3 replicas and the database round trips per step. Figures are
/// printed, never asserted.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: bench/replicas.sh runs it"]
async fn bench_replicas() {
    let Some(cluster) = crate::common::postgres::Cluster::start_with(
        "bench_replicas",
        &[
            "shared_preload_libraries = 'pg_stat_statements'",
            "pg_stat_statements.track = all",
            "max_connections = 200",
        ],
    ) else {
        return;
    };
    let lease = Duration::from_secs(env_num("BENCH_LEASE_SECONDS", 10));
    let runs = env_num("BENCH_RUNS", 10_000);

    // 1. Failover: kill -9 of the replica holding a restore in flight, until the other one
    //    claims it.
    let url = cluster.database("failover").await;
    let sim = Simulator::start(
        SimConfig {
            restore_delay: lease * 4,
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let site = Site::new(&sim.base_url(), "off");
    std::fs::write(site.path("secrets/m365-restore-password"), "dev\n").unwrap();
    append_config(
        &site,
        &format!(
            "database: {url}\nengine: {{ lease: {}s, pollInterval: 1s }}",
            lease.as_secs()
        ),
    );
    site.write_job(
        "restore.yaml",
        "apiVersion: restorectl/v1\nkind: Restore\nmetadata: { name: restore-bob }\nspec:\n  \
         organization: contoso.onmicrosoft.com\n  mailboxes: [bob@contoso.com]\n  \
         archives: exclude\n  restore:\n    credentials:\n      user:\n        \
         userName: svc-backup@contoso.com\n        password: { secret: m365-restore-password }\n",
    );
    let a = replica(&site, "replica-a");
    let location = Location::parse(&url).unwrap();
    let store = {
        let (s, _) = within("the database", Duration::from_secs(30), || {
            let location = location.clone();
            async move { Store::connect(&location, OpenMode::Existing).await.ok() }
        })
        .await;
        s
    };
    within(
        "the restore is in flight",
        Duration::from_secs(60),
        || async {
            let run = store.list_runs(&RunFilter::default()).await.ok()?.pop()?;
            let steps = store.list_steps(run.id).await.ok()?;
            (steps.first()?.restore_posts == 1).then_some(())
        },
    )
    .await;
    let b = replica(&site, "replica-b");
    within("replica b registered", Duration::from_secs(30), || async {
        (store.list_live_instances().await.ok()?.len() == 2).then_some(())
    })
    .await;
    a.kill9();
    let killed = Instant::now();
    within("replica b claims the run", lease * 10, || async {
        let run = store.list_runs(&RunFilter::default()).await.ok()?.pop()?;
        (run.attempts >= 2).then_some(())
    })
    .await;
    let failover = killed.elapsed();
    within("the run succeeds", Duration::from_secs(120), || async {
        let run = store.list_runs(&RunFilter::default()).await.ok()?.pop()?;
        (run.state == RunState::Succeeded).then_some(())
    })
    .await;
    let bob = sim.mailbox("bob@contoso.com", false).unwrap();
    println!(
        "failover: {:.1} s from kill -9 of the lease holder to the other replica's claim \
         (engine.lease {} s; target <= lease + 10 s = {} s); restore POSTs: {}",
        failover.as_secs_f64(),
        lease.as_secs(),
        lease.as_secs() + 10,
        sim.restore_calls(bob.id)
    );
    b.signal("TERM");
    b.wait_exit();
    store.close().await;

    // 2. Claim throughput: a queue of short runs (claim, then finish: no VB365 work), claimed
    //    by 1, 2, 3 replicas of 4 workers each, every replica with its own connection pool.
    for replicas in 1..=3_usize {
        let url = cluster.database(&format!("claims{replicas}")).await;
        let location = Location::parse(&url).unwrap();
        let seed = Store::connect(&location, OpenMode::Create).await.unwrap();
        seed_queue(&seed, &url, runs).await;
        let start = Instant::now();
        let mut handles = Vec::new();
        for r in 0..replicas {
            let store = Store::connect(&location, OpenMode::Existing).await.unwrap();
            for w in 0..4 {
                let store = store.clone();
                let owner = format!("replica-{r}-worker-{w}");
                handles.push(tokio::spawn(async move {
                    let mut done = 0_u64;
                    while let Some(run) = store
                        .claim_next_run(&owner, Duration::from_secs(60), chrono::Utc::now())
                        .await
                        .unwrap()
                    {
                        store
                            .set_run_state(run.id, RunState::Succeeded, None, chrono::Utc::now())
                            .await
                            .unwrap();
                        done += 1;
                    }
                    done
                }));
            }
        }
        let mut total = 0;
        for h in handles {
            total += h.await.unwrap();
        }
        let took = start.elapsed();
        assert_eq!(total, runs, "every run claimed exactly once");
        println!(
            "claim throughput, {replicas} replica(s) x 4 workers: {total} runs in {:.1} s = {:.0} runs/s",
            took.as_secs_f64(),
            total as f64 / took.as_secs_f64()
        );
        seed.close().await;
    }

    // 3. Round trips per step: one replica exports 40 mailboxes (40 steps); statements counted
    //    by pg_stat_statements, minus what the idle daemon sends in as long.
    let url = cluster.database("roundtrips").await;
    let sim = Simulator::start(
        SimConfig {
            export_default_size: 16 * 1024,
            export_build_delay: Duration::from_millis(10),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let site = Site::new(&sim.base_url(), "off");
    append_config(&site, &format!("database: {url}"));
    let d = replica(&site, "replica-a");
    let location = Location::parse(&url).unwrap();
    let (store, _) = within("the database", Duration::from_secs(30), || {
        let location = location.clone();
        async move {
            let s = Store::connect(&location, OpenMode::Existing).await.ok()?;
            (!s.list_live_instances().await.ok()?.is_empty()).then_some(s)
        }
    })
    .await;
    let admin = format!("postgres://postgres@127.0.0.1:{}/roundtrips", cluster.port);
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .unwrap();
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = statements(&mut conn).await;
    let started = Instant::now();
    site.write_job(
        "export.yaml",
        "apiVersion: restorectl/v1\nkind: ExportPst\nmetadata: { name: export-many }\nspec:\n  \
         organization: contoso.onmicrosoft.com\n  mailboxes: [{ all: true }]\n  \
         archives: exclude\n  export:\n    path: \"{job}/{run}/{mailbox}.pst\"\n",
    );
    let (run, _) = within(
        "the export run finishes",
        Duration::from_secs(300),
        || async {
            let run = store.list_runs(&RunFilter::default()).await.ok()?.pop()?;
            run.state.is_terminal().then_some(run)
        },
    )
    .await;
    let busy = started.elapsed();
    let during = statements(&mut conn).await - before;
    let steps = store.list_steps(run.id).await.unwrap().len() as i64;
    let idle_from = statements(&mut conn).await;
    tokio::time::sleep(busy).await;
    let idle = statements(&mut conn).await - idle_from;
    let net = during - idle;
    println!(
        "round trips: {during} statements while a {steps}-step export ran ({:.1} s, {}), {idle} \
         while idle as long: {:.1} statements per step (BEGIN, the write lock, COMMIT included)",
        busy.as_secs_f64(),
        run.state,
        net as f64 / steps.max(1) as f64
    );
    d.signal("TERM");
    d.wait_exit();
    store.close().await;
}

/// Statements the `postgres` role ran in database `roundtrips` (pg_stat_statements).
async fn statements(conn: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar::<_, i64>(
        "SELECT CAST(COALESCE(SUM(s.calls), 0) AS BIGINT) FROM pg_stat_statements s
         JOIN pg_database d ON d.oid = s.dbid
         JOIN pg_roles r ON r.oid = s.userid
         WHERE d.datname = 'roundtrips' AND r.rolname = 'postgres'
             AND s.query NOT LIKE '%pg_stat_statements%'",
    )
    .fetch_one(conn)
    .await
    .unwrap()
}

/// `runs` queued runs of one job (for the claim benchmark): the job through the store, the runs
/// in one bulk INSERT (enqueueing 10,000 runs one transaction at a time would take longer than
/// the benchmark; the claims are what is measured).
async fn seed_queue(store: &Store, url: &str, runs: u64) {
    let spec = serde_json::json!({ "kind": "ExportPst", "name": "queue" });
    store
        .upsert_job_version(
            &restorectl::store::NewJobVersion {
                name: "queue",
                kind: "ExportPst",
                file: std::path::Path::new("/jobs/queue.yaml"),
                spec_hash: "h",
                spec: &spec,
                valid: true,
                errors: &serde_json::json!([]),
            },
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    let version = store
        .get_job("queue")
        .await
        .unwrap()
        .current_version_id
        .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let ids: Vec<String> = (0..runs)
        .map(|_| restorectl::store::RunId::new().to_string())
        .collect();
    let at: Vec<i64> = (0..runs as i64).map(|i| now - 3_600_000 + i).collect();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO runs (id, job_name, job_version_id, spec_hash, trigger, scheduled_for,
                           state, created_at, updated_at)
         SELECT id, 'queue', $3, 'h', 'manual', at, 'queued', $4, $4
         FROM UNNEST($1::text[], $2::bigint[]) AS q (id, at)",
    )
    .bind(&ids)
    .bind(&at)
    .bind(version)
    .bind(now)
    .execute(&mut conn)
    .await
    .unwrap();
}

/// The database goes away for 15 s (longer than the store's 10 s wait for a connection) while
/// two replicas work on a restore: both keep their processes, both say not-ready on `/readyz`,
/// both come back, the lead is held again, and the restore finishes with one POST.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_ride_out_the_database_going_away() {
    let Some(cluster) =
        crate::common::postgres::Cluster::start("replicas_ride_out_the_database_going_away")
    else {
        return;
    };
    let url = cluster.database("restorectl").await;
    let sim = Simulator::start(
        SimConfig {
            restore_delay: Duration::from_secs(6),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let site = Site::new(&sim.base_url(), "off");
    std::fs::write(site.path("secrets/m365-restore-password"), "dev\n").unwrap();
    append_config(
        &site,
        &format!(
            "database: {url}\nengine: {{ lease: 30s, pollInterval: 1s }}\n\
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
    let bob = sim.mailbox("bob@contoso.com", false).unwrap();
    let ports = [free_port(), free_port()];
    let mut daemons = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let config = site.replica_config(&format!("replica-{i}"), *port);
        daemons.push(Daemon::start_config(&site, &config, &[]));
    }
    let location = Location::parse(&url).unwrap();
    {
        let (store, _) = within(
            "the restore was posted",
            Duration::from_secs(60),
            || async {
                let store = Store::connect(&location, OpenMode::Existing).await.ok()?;
                let live = store.list_live_instances().await.ok()?.len();
                let run = store.list_runs(&RunFilter::default()).await.ok()?.pop()?;
                let steps = store.list_steps(run.id).await.ok()?;
                (live == 2 && steps.first()?.restore_posts == 1).then_some(store)
            },
        )
        .await;
        store.close().await;
    }

    cluster.stop();
    for port in ports {
        within(
            "/readyz says not ready",
            Duration::from_secs(30),
            || async { readyz(port).await.filter(|c| *c == 503) },
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(15)).await;
    cluster.restart();

    let store = Store::connect(&location, OpenMode::Existing).await.unwrap();
    let (run, _) = within(
        "the restore finishes after the database came back",
        Duration::from_secs(120),
        || async {
            let run = store.list_runs(&RunFilter::default()).await.ok()?.pop()?;
            run.state.is_terminal().then_some(run)
        },
    )
    .await;
    assert_eq!(run.state, RunState::Succeeded, "{run:?}");
    assert_eq!(sim.restore_calls(bob.id), 1, "the restore was POSTed once");
    for port in ports {
        within(
            "/readyz says ready again",
            Duration::from_secs(30),
            || async { readyz(port).await.filter(|c| *c == 200) },
        )
        .await;
    }
    within("a replica leads again", Duration::from_secs(30), || async {
        leader(&store).await
    })
    .await;
    assert_eq!(store.list_live_instances().await.unwrap().len(), 2);
    for d in daemons {
        let log = d.log();
        assert!(
            log.contains("state database error") || log.contains("cannot"),
            "the outage was seen: {log}"
        );
        d.signal("TERM");
        let (status, log, _) = d.wait_exit();
        assert!(
            status.success(),
            "the process stayed up and stops cleanly: {log}"
        );
    }
    store.close().await;
    sim.shutdown().await;
}
