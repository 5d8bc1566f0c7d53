//! Shared helpers of the CLI tests: a temporary installation (config, job directory, state
//! database) whose history was produced by real runs of the run engine against the in-process
//! simulator, and the `plan` scenario.
//!
//! The history is made once per test binary ([`History::get`]): the simulator is started on
//! loopback, the job files below are written, each job's version is recorded and a run queued
//! as the daemon will do it, and the runs are executed by [`restorectl::exec::Engine`]. Then the
//! installation (config, secrets, jobs, database, exports) is kept in memory and the simulator
//! stopped; every [`Fixture`] writes its own copy into its own temporary directory, so tests
//! that write requests or decisions never see each other. Paths recorded in the database name
//! the directory the runs wrote to ([`History::root`], gone by then): `show` prints them as
//! recorded.
//!
//! The runs, one per interesting outcome:
//!
//! - `legal-hold` (ExportPst of alice and bob, scheduled): `succeeded`; bob's download breaks
//!   after 8 KiB and is resumed with `Range`;
//! - `undelete` (Restore of dave): `succeeded`, with item counts and a remote operation id;
//! - `discovery` (Search of ceo's mailbox, JSONL report): `succeeded`;
//! - `locked` (Restore of erin): `failed`, the server refuses the restore POST with
//!   `ParameterValidationFailure` (permanent);
//! - `offboarding` (RestoreTo of frank): `needs_attention`, the restore answer is lost and the
//!   session history cannot be read, so the step is `in_doubt`.
//!
//! Hand-built, because no real run can produce it (each place says why): the invalid job
//! `broken` and its file record (the daemon's directory scan records those, not a run), the
//! scheduler's fire bookkeeping of `legal-hold` (next and last fire), and a manual run of
//! `legal-hold` that stays `queued` (a run the engine executes never stays queued).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use assert_cmd::Command;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use restorectl::config::Config;
use restorectl::exec::{Engine, EngineOptions};
use restorectl::jobs::{ValidationContext, scan_paths};
use restorectl::sim::{
    CallRange, Endpoint, ExportSpec, FaultAction, FaultRule, SearchScope, SimConfig, Simulator,
};
use restorectl::store::{
    NewJobVersion, NewRun, NextFire, RunId, RunState, ScannedFile, Store, Trigger,
};

/// The scheduled fire of the `legal-hold` run: Sunday 2026-03-01 02:00 Europe/Berlin.
pub fn fire_instant() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 1, 0, 0).unwrap()
}

/// The next fire the scheduler would have recorded for `legal-hold`.
pub fn next_fire_instant() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 8, 1, 0, 0).unwrap()
}

/// The search query of `discovery`.
pub const SEARCH_QUERY: &str = "from:ceo@contoso.com";

/// Simulator timings: short, so the whole history takes a few seconds.
fn sim_config() -> SimConfig {
    SimConfig {
        restore_delay: Duration::from_millis(300),
        export_build_delay: Duration::from_millis(50),
        export_default_size: 24 * 1024,
        ..SimConfig::default()
    }
}

const ORG: &str = "contoso.onmicrosoft.com";

const USER_CREDS: &str = "    credentials:\n      user: { userName: svc-backup@contoso.com, password: { secret: m365-pass } }\n";

const APP_CREDS: &str = "    credentials:\n      application:\n        applicationId: 3f8e5a2c-41d7-4c2b-9e1f-0a6b7c8d9e10\n        certificate: { secret: app-cert }\n        certificatePassword: { secret: app-cert-pass }\n        impersonationAccountName: svc-backup@contoso.com\n";

fn job_yaml(kind: &str, name: &str, body: &str) -> String {
    format!(
        "apiVersion: restorectl/v1\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n  organization: {ORG}\n{body}"
    )
}

/// The job files of the installation, by file name.
fn job_files() -> Vec<(&'static str, String)> {
    vec![
        (
            "legal-hold.yaml",
            job_yaml(
                "ExportPst",
                "legal-hold",
                "  mailboxes: [alice@contoso.com, bob@contoso.com]\n  archives: exclude\n  \
                 schedule: { cron: \"0 2 * * SUN\", timezone: Europe/Berlin }\n  \
                 export:\n    path: \"{job}/{date}/{mailbox}.pst\"\n",
            ),
        ),
        (
            "undelete.yaml",
            job_yaml(
                "Restore",
                "undelete",
                &format!("  mailboxes: [dave@contoso.com]\n  archives: exclude\n  restore:\n{USER_CREDS}"),
            ),
        ),
        (
            "discovery.yaml",
            job_yaml(
                "Search",
                "discovery",
                &format!(
                    "  mailboxes: [ceo@contoso.com]\n  archives: exclude\n  search:\n    query: '{SEARCH_QUERY}'\n    \
                     report: {{ path: \"{{job}}/{{run}}/report.jsonl\", format: jsonl }}\n"
                ),
            ),
        ),
        (
            "locked.yaml",
            job_yaml(
                "Restore",
                "locked",
                &format!("  mailboxes: [erin@contoso.com]\n  archives: exclude\n  restore:\n{USER_CREDS}"),
            ),
        ),
        (
            "offboarding.yaml",
            job_yaml(
                "RestoreTo",
                "offboarding",
                &format!(
                    "  mailboxes: [frank@contoso.com]\n  archives: exclude\n  restoreTo:\n    \
                     mailbox: legal-review@contoso.com\n    folder: \"Offboarding/{{mailbox}}\"\n{APP_CREDS}"
                ),
            ),
        ),
        // Line 7, column 11 is the bad cron expression.
        (
            "broken.yaml",
            "apiVersion: restorectl/v1\nkind: ExportPst\nmetadata:\n  name: broken\nspec:\n  schedule:\n    cron: \"0 25 * * SUN\"\n  organization: contoso.onmicrosoft.com\n  mailboxes: [alice@contoso.com]\n  export: { path: \"{job}/{mailbox}.pst\" }\n".to_string(),
        ),
    ]
}

/// The installation the runs wrote, kept in memory, and what the tests compare it with.
pub struct History {
    /// The directory the runs wrote to: every path recorded in the database starts with it.
    /// Removed once the history was taken.
    pub root: PathBuf,
    /// Every file of the installation: path relative to the root, bytes.
    files: Vec<(PathBuf, Vec<u8>)>,
    /// The scheduled ExportPst run (`succeeded`).
    pub export: RunId,
    /// The Restore run (`succeeded`).
    pub restore: RunId,
    /// The Search run (`succeeded`).
    pub search: RunId,
    /// The Restore run the server refused (`failed`).
    pub failed: RunId,
    /// The RestoreTo run with an `in_doubt` step (`needs_attention`).
    pub in_doubt: RunId,
    /// A manual run of `legal-hold` nothing claimed (`queued`).
    pub queued: RunId,
    /// The simulator's `export_digest` (SHA-256, bytes) per exported mailbox e-mail.
    pub digests: BTreeMap<String, (String, u64)>,
    /// The simulator's id per mailbox e-mail of the runs.
    pub mailbox_ids: BTreeMap<String, String>,
    /// How many items the simulator says `discovery` must find.
    pub search_found: usize,
    /// SHA-256 of the search report as written on disk.
    pub report_sha256: String,
    /// Bytes of the search report as written on disk.
    pub report_bytes: u64,
}

impl History {
    /// The history of this test binary, made on first use.
    pub fn get() -> &'static History {
        static HISTORY: OnceLock<History> = OnceLock::new();
        HISTORY.get_or_init(|| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(make_history())
        })
    }
}

/// A temporary installation: `restorectl.yaml`, `jobs/`, `secrets/`, `state/restorectl.db`,
/// `exports/`.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub history: &'static History,
    /// See [`History`].
    pub export: RunId,
    pub restore: RunId,
    pub search: RunId,
    pub failed: RunId,
    pub in_doubt: RunId,
    pub queued: RunId,
}

impl Fixture {
    /// A config and an empty job directory, no database.
    pub fn empty() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("restorectl.yaml"),
            "jobsDir: jobs\nstateDir: state\nexportRoot: exports\ntimezone: UTC\nlisten: \"off\"\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
        dir
    }

    /// An installation whose database holds the real-run history of [`History`], in a
    /// directory of its own.
    pub fn with_history() -> Fixture {
        let history = History::get();
        let dir = tempfile::tempdir().unwrap();
        for (rel, bytes) in &history.files {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
        Fixture {
            dir,
            history,
            export: history.export,
            restore: history.restore,
            search: history.search,
            failed: history.failed,
            in_doubt: history.in_doubt,
            queued: history.queued,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("restorectl.yaml")
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("state/restorectl.db")
    }

    /// `restorectl --config <fixture config> ARGS…` with a clean environment for output checks.
    pub fn cmd(&self, args: &[&str]) -> Command {
        cmd_in(self.dir.path(), args)
    }

    /// Opens the fixture's database (read-write) for assertions.
    pub fn store(&self) -> (tokio::runtime::Runtime, Store) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = rt.block_on(Store::open_existing(self.db())).unwrap();
        (rt, store)
    }
}

/// `restorectl --config DIR/restorectl.yaml ARGS…`, run in DIR, with `NO_COLOR` unset and a fixed
/// `COLUMNS` removed, so each test sets what it checks.
pub fn cmd_in(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::cargo_bin("restorectl").unwrap();
    cmd.current_dir(dir)
        .env_remove("NO_COLOR")
        .env_remove("COLUMNS")
        .env_remove("RESTORECTL_CONFIG")
        .env_remove("RESTORECTL_NOW")
        .arg("--config")
        .arg(dir.join("restorectl.yaml"))
        .args(args);
    cmd
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A fault rule on the POSTs to one path (a glob).
fn fault_on(endpoint: Endpoint, path: String, action: FaultAction) -> FaultRule {
    FaultRule {
        method: Some("POST".into()),
        path: Some(path),
        ..FaultRule::on(endpoint, action)
    }
}

fn error(status: u16, code: &str) -> FaultAction {
    FaultAction::Error {
        status,
        error_code: Some(code.into()),
        message: Some(format!("injected {code}")),
    }
}

/// Records the current version of `name` from the scan, as the daemon's directory scan does,
/// and returns (version id, spec hash, run timeout).
async fn record_version(store: &Store, config: &Config, name: &str) -> (i64, String, Duration) {
    let scan = scan_paths(
        std::slice::from_ref(&config.jobs_dir),
        &ValidationContext::new(config),
    );
    let job = scan
        .jobs()
        .find(|j| j.name() == name)
        .unwrap_or_else(|| panic!("job {name}: {:?}", scan.errors().collect::<Vec<_>>()))
        .clone();
    let spec: Value = serde_json::from_str(job.spec_json()).unwrap();
    let kind = job.kind().to_string();
    let version = store
        .upsert_job_version(
            &NewJobVersion {
                name,
                kind: &kind,
                file: job.file(),
                spec_hash: job.spec_hash(),
                spec: &spec,
                valid: true,
                errors: &json!([]),
            },
            Utc::now(),
        )
        .await
        .unwrap();
    (
        version.version_id,
        job.spec_hash().to_string(),
        job.run_timeout(),
    )
}

/// Records the job's version and queues a run of it the way the daemon does for `trigger`.
async fn queue(store: &Store, config: &Config, name: &str, trigger: Trigger) -> RunId {
    let (version, hash, timeout) = record_version(store, config, name).await;
    let run = NewRun {
        job_name: name,
        job_version_id: version,
        spec_hash: &hash,
        trigger,
        scheduled_for: if trigger == Trigger::Schedule {
            fire_instant()
        } else {
            Utc::now()
        },
        state: RunState::Queued,
        reason: None,
        timeout: Some(timeout),
    };
    if trigger == Trigger::Schedule {
        // The scheduler's tick (the scheduler itself is the daemon's): the fire and the job's
        // next fire in one transaction.
        store
            .record_fires(
                name,
                std::slice::from_ref(&run),
                NextFire {
                    schedule_key: Some("v1|0 2 * * SUN|Europe/Berlin"),
                    next_fire_at: Some(next_fire_instant()),
                },
                Some(fire_instant()),
                &restorectl::store::Routing::none(),
                Utc::now(),
            )
            .await
            .unwrap()
            .remove(0)
            .expect("fire recorded")
            .id
    } else {
        store
            .enqueue_run(&run, Utc::now())
            .await
            .unwrap()
            .unwrap()
            .id
    }
}

/// Executes the queued runs concurrently; returns their final states in the same order.
async fn execute(engine: &Engine, runs: &[RunId]) -> Vec<RunState> {
    let tasks: Vec<_> = runs
        .iter()
        .map(|&run| {
            let engine = engine.clone();
            tokio::spawn(async move { engine.execute_run(run, &CancellationToken::new()).await })
        })
        .collect();
    let mut states = Vec::new();
    for t in tasks {
        states.push(t.await.unwrap().expect("execute").state);
    }
    states
}

async fn make_history() -> History {
    let sim = Simulator::start(sim_config(), "127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    for d in ["jobs", "secrets", "state", "exports"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let secrets = root.join("secrets");
    std::fs::write(secrets.join("vb365-password"), "restorectl-dev\n").unwrap();
    std::fs::write(secrets.join("m365-pass"), "m365-dev-password\n").unwrap();
    std::fs::write(secrets.join("app-cert"), b"not-really-a-pfx-but-bytes").unwrap();
    std::fs::write(secrets.join("app-cert-pass"), "pfx-pass\n").unwrap();
    // The reconciliation grace of the lost restore answer is never less than requestTimeout
    // (docs/engine.md), so the in_doubt run takes that long; 5 s (as in the engine's tests)
    // rather than less, so that a busy machine does not turn a slow answer into a retry.
    let text = format!(
        "jobsDir: jobs\nstateDir: state\nexportRoot: exports\nsecretsDir: secrets\nlisten: 'off'\ntimezone: UTC\n\
         servers:\n  primary:\n    url: {url}\n    username: CONTOSO\\svc-restore\n    password: {{ secret: vb365-password }}\n    requestTimeout: 5s\n\
         defaults:\n  retry: {{ maxAttempts: 3, initialBackoff: 200ms, maxBackoff: 2s }}\n  runTimeout: 10m\n\
         engine: {{ pollInterval: 100ms, reconcileGrace: 1s }}\n",
        url = sim.base_url(),
    );
    std::fs::write(root.join("restorectl.yaml"), text).unwrap();
    for (file, yaml) in job_files() {
        std::fs::write(root.join("jobs").join(file), yaml).unwrap();
    }
    let config = Config::load(&root.join("restorectl.yaml")).expect("config");
    let store = Store::open(config.database_path()).await.expect("store");
    let engine = Engine::new(
        store.clone(),
        config.clone(),
        EngineOptions::from_config(&config, "cli-fixture"),
    )
    .expect("engine");
    let id = |email: &str| sim.mailbox(email, false).expect("mailbox").id;

    // Bob's export breaks after 8 KiB once (resumed with Range); erin's restore is refused.
    sim.add_fault(
        fault_on(
            Endpoint::ExportPst,
            format!("*/mailboxes/{}/exportToPst", id("bob@contoso.com")),
            FaultAction::DropAfterBytes { bytes: 8192 },
        )
        .calls(CallRange::only(1)),
    )
    .unwrap();
    sim.add_fault(fault_on(
        Endpoint::MailboxRestore,
        format!("*/mailboxes/{}/restore", id("erin@contoso.com")),
        error(400, "ParameterValidationFailure"),
    ))
    .unwrap();
    let export = queue(&store, &config, "legal-hold", Trigger::Schedule).await;
    let restore = queue(&store, &config, "undelete", Trigger::Manual).await;
    let search = queue(&store, &config, "discovery", Trigger::Manual).await;
    let failed = queue(&store, &config, "locked", Trigger::Manual).await;
    let states = execute(&engine, &[export, restore, search, failed]).await;
    assert_eq!(
        states,
        [
            RunState::Succeeded,
            RunState::Succeeded,
            RunState::Succeeded,
            RunState::Failed
        ]
    );
    sim.clear_faults();

    // The lost restore answer whose trace cannot be read (as in tests/engine/exec_faults.rs). Alone:
    // the history faults would hit every run's session.
    sim.add_fault(
        fault_on(
            Endpoint::MailboxRestoreTo,
            format!("*/mailboxes/{}/restoreTo", id("frank@contoso.com")),
            FaultAction::LoseResponse,
        )
        .calls(CallRange::only(1)),
    )
    .unwrap();
    sim.add_fault(FaultRule::on(
        Endpoint::SessionEvents,
        error(500, "Timeout"),
    ))
    .unwrap();
    sim.add_fault(FaultRule::on(
        Endpoint::RestoreSessions,
        error(500, "Timeout"),
    ))
    .unwrap();
    let in_doubt = queue(&store, &config, "offboarding", Trigger::OneShot).await;
    let states = execute(&engine, &[in_doubt]).await;
    assert_eq!(states, [RunState::NeedsAttention]);
    sim.clear_faults();

    // Hand-built: a run that stays queued (the daemon's request consumer queues manual runs;
    // the engine, once it claims a run, never leaves it queued).
    let queued = queue(&store, &config, "legal-hold", Trigger::Manual).await;

    // Hand-built: the invalid job and its file, as the daemon's directory scan records them (no
    // run is ever made of an invalid job).
    let scan = scan_paths(
        std::slice::from_ref(&config.jobs_dir),
        &ValidationContext::new(&config),
    );
    let broken = scan
        .files
        .iter()
        .find(|f| f.path.ends_with("broken.yaml"))
        .expect("broken.yaml scanned");
    let errors = serde_json::to_value(broken.all_errors().collect::<Vec<_>>()).unwrap();
    assert!(!broken.is_valid());
    store
        .upsert_job_version(
            &NewJobVersion {
                name: "broken",
                kind: "ExportPst",
                file: &broken.path,
                spec_hash: "never-valid",
                spec: &json!({}),
                valid: false,
                errors: &errors,
            },
            Utc::now(),
        )
        .await
        .unwrap();
    store
        .record_job_file(
            &ScannedFile {
                path: &broken.path,
                content_hash: &sha256_hex(&std::fs::read(&broken.path).unwrap()),
                valid: false,
                errors: &errors,
                job_names: &["broken".to_string()],
            },
            Utc::now(),
        )
        .await
        .unwrap();

    // What the tests compare the output with, from the simulator and the disk.
    let mut digests = BTreeMap::new();
    let mut mailbox_ids = BTreeMap::new();
    for email in [
        "alice@contoso.com",
        "bob@contoso.com",
        "ceo@contoso.com",
        "dave@contoso.com",
        "erin@contoso.com",
        "frank@contoso.com",
    ] {
        mailbox_ids.insert(email.to_string(), id(email).to_string());
    }
    for email in ["alice@contoso.com", "bob@contoso.com"] {
        let digest = sim
            .export_digest(&ExportSpec {
                mailbox_id: id(email),
                keyword: None,
                point_in_time: None,
                pst_size_limit: None,
            })
            .unwrap();
        digests.insert(email.to_string(), digest);
    }
    let search_found = sim
        .search_ground_truth(
            SEARCH_QUERY,
            SearchScope::Mailbox(id("ceo@contoso.com")),
            None,
        )
        .unwrap();
    let report = store.list_run_exports(search).await.unwrap();
    let report = std::fs::read(&report[0].path).unwrap();
    for s in sim.sessions() {
        assert_eq!(s.state, "Stopped", "session {} left {}", s.id, s.state);
    }
    store.close().await;
    sim.shutdown().await;

    let mut files = Vec::new();
    collect(&root, &root, &mut files);
    History {
        root,
        files,
        export,
        restore,
        search,
        failed,
        in_doubt,
        queued,
        digests,
        mailbox_ids,
        search_found,
        report_sha256: sha256_hex(&report),
        report_bytes: report.len() as u64,
    }
}

/// Every regular file under `dir`, relative to `root`.
fn collect(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(root, &path, out);
        } else {
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            out.push((rel, std::fs::read(&path).unwrap()));
        }
    }
}

// ===== plan scenario =====

pub const PLAN_CONFIG: &str = "jobsDir: jobs\nstateDir: state\nexportRoot: exports\ntimezone: UTC\n\
servers:\n  primary:\n    url: https://vb365.example.test:4443\n    username: CONTOSO\\svc-restore\n    password: { secret: vb365-password }\n";

/// An ExportPst job of the plan scenario: a Berlin cron schedule and a per-day path (see
/// [`super::export_job_yaml`]).
pub fn berlin_export_job(name: &str, cron: Option<&str>) -> String {
    let schedule = cron.map(|c| format!("{{ cron: \"{c}\", timezone: Europe/Berlin }}"));
    super::export_job_yaml(name, schedule.as_deref(), "", "{job}/{date}/{mailbox}.pst")
}

pub fn write(dir: &Path, file: &str, text: &str) {
    std::fs::write(dir.join("jobs").join(file), text).unwrap();
}

/// Records every valid job of the directory as the daemon would, then returns.
pub fn apply(dir: &Path) {
    let config = Config::load(&dir.join("restorectl.yaml")).unwrap();
    let scan = scan_paths(
        std::slice::from_ref(&config.jobs_dir),
        &ValidationContext::new(&config),
    );
    assert!(scan.is_valid(), "{:?}", scan.errors().collect::<Vec<_>>());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::open(dir.join("state/restorectl.db")).await.unwrap();
        let now = chrono::Utc::now();
        for job in scan.jobs() {
            let spec: Value = serde_json::from_str(job.spec_json()).unwrap();
            store
                .upsert_job_version(
                    &NewJobVersion {
                        name: job.name(),
                        kind: job.kind().as_str(),
                        file: job.file(),
                        spec_hash: job.spec_hash(),
                        spec: &spec,
                        valid: true,
                        errors: &serde_json::json!([]),
                    },
                    now,
                )
                .await
                .unwrap();
        }
        store.close().await;
    });
}

pub fn plan(dir: &Path, format: &str) -> Command {
    let mut cmd = Command::cargo_bin("restorectl").unwrap();
    cmd.current_dir(dir)
        .env_remove("NO_COLOR")
        .env_remove("COLUMNS")
        .env_remove("RESTORECTL_CONFIG")
        .env("RESTORECTL_NOW", "2026-03-27T12:00:00Z")
        .args(["--config", "restorectl.yaml", "plan", "--format", format]);
    cmd
}

/// A job directory after an edit, for `plan`: `new-export` added, `nightly` changed (02:00 →
/// 02:30 Berlin, crossing the March 2026 DST change), `gone` removed, `legal` broken (bad cron),
/// `steady` and `autumn` (inside the October repeated hour) unchanged.
pub fn scenario() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("restorectl.yaml"), PLAN_CONFIG).unwrap();
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    write(
        dir.path(),
        "nightly.yaml",
        &berlin_export_job("nightly", Some("0 2 * * *")),
    );
    write(dir.path(), "gone.yaml", &berlin_export_job("gone", None));
    write(
        dir.path(),
        "legal.yaml",
        &berlin_export_job("legal", Some("0 4 * * SUN")),
    );
    write(
        dir.path(),
        "steady.yaml",
        &berlin_export_job("steady", None),
    );
    // Fires once a year, on the day the clocks go back, inside the repeated hour.
    write(
        dir.path(),
        "autumn.yaml",
        &berlin_export_job("autumn", Some("30 2 25 10 *")),
    );
    apply(dir.path());

    write(
        dir.path(),
        "new.yaml",
        &berlin_export_job("new-export", None),
    );
    write(
        dir.path(),
        "nightly.yaml",
        &berlin_export_job("nightly", Some("30 2 * * *")),
    );
    std::fs::remove_file(dir.path().join("jobs/gone.yaml")).unwrap();
    write(
        dir.path(),
        "legal.yaml",
        &berlin_export_job("legal", Some("0 25 * * SUN")),
    );
    dir
}
