//! Chaos suite (issue 8): the real `restorectl daemon` process against the in-process simulator
//! with random fault injection, a mixed workload (every job kind, 30+ mailboxes, scheduled and
//! one-shot jobs, job files edited while running) and `kill -9` of the daemon at random instants
//! followed by a restart. At the end the faults stop, the daemon finishes everything (an
//! operator resolves `needs_attention` runs only where the end state needs it, and the test
//! records that choice), and the invariants are checked:
//!
//! - no restore POST was executed twice for the same step unless an operator chose `--resend`;
//! - every run is terminal, or `needs_attention` with an `in_doubt` step explained by a fault;
//! - every published export has the simulator's SHA-256; no `.partial` left; nothing written
//!   outside `exportRoot`;
//! - no restore session is still `Working` on the simulator;
//! - the event log agrees with the run table, and `/metrics` agrees with the store.
//!
//! Everything random comes from one seed: `CHAOS_SEED` (or a random one), printed at the start
//! and in every failure message. `CHAOS_KILLS` sets the number of kills (default 20, the CI
//! variant); `bench/chaos.sh` runs the long variant and prints the invariant table. The suite runs
//! three times: with the state on SQLite, on PostgreSQL, and with three replicas on one
//! PostgreSQL server that is also restarted once half-way (each kill takes one replica).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::postgres::TestDatabase;
use crate::daemon_support::{Site, append_config, bin};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use restorectl::sim::{
    CallRange, Endpoint, ExportSpec, FaultAction, FaultRule, JournalEntry, SimConfig, SimHandle,
    Simulator,
};
use restorectl::store::{
    Decision, FileFormat, Location, OpenMode, Run, RunFilter, RunState, Step, StepState, Store,
};
use sha2::{Digest, Sha256};

/// Bounds the final drain (only a hang guard; the figure is printed, never asserted).
const DRAIN_PATIENCE: Duration = Duration::from_secs(240);

/// The restore POST templates (their execution is what must never be duplicated).
const RESTORE_ROUTES: [&str; 3] = [
    "/v8/RestoreSessions/{restoreSessionId}/organization/mailboxes/restore",
    "/v8/RestoreSessions/{restoreSessionId}/organization/mailboxes/{mailboxId}/restore",
    "/v8/RestoreSessions/{restoreSessionId}/organization/mailboxes/{mailboxId}/restoreTo",
];

/// Job kinds by name, so the checks know which runs send restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Export,
    Restore,
    Search,
}

/// The workload: (file, job name, kind, scheduled, YAML).
fn workload() -> Vec<(&'static str, &'static str, Kind, bool, String)> {
    let user_creds = "    credentials:\n      user:\n        userName: svc-backup@contoso.com\n        \
                      password: { secret: m365-restore-password }\n";
    vec![
        (
            "export-all.yaml",
            "export-all",
            Kind::Export,
            false,
            "apiVersion: restorectl/v1\nkind: ExportPst\nmetadata: { name: export-all }\nspec:\n  \
             organization: contoso.onmicrosoft.com\n  mailboxes:\n    - { match: \"*@contoso.com\" }\n  \
             archives: include\n  export:\n    path: \"{job}/{run}/{mailbox}.pst\"\n"
                .to_string(),
        ),
        (
            "export-legal.yaml",
            "export-legal",
            Kind::Export,
            true,
            legal_export("*/20 * * * * *", ""),
        ),
        (
            "restore-some.yaml",
            "restore-some",
            Kind::Restore,
            false,
            format!(
                "apiVersion: restorectl/v1\nkind: Restore\nmetadata: {{ name: restore-some }}\nspec:\n  \
                 organization: contoso.onmicrosoft.com\n  mailboxes: [bob@contoso.com, carol@contoso.com, \
                 dave@contoso.com, erin@contoso.com]\n  archives: exclude\n  restore:\n{user_creds}"
            ),
        ),
        (
            "restore-tick.yaml",
            "restore-tick",
            Kind::Restore,
            true,
            restore_tick(""),
        ),
        (
            "restoreto-review.yaml",
            "restoreto-review",
            Kind::Restore,
            false,
            format!(
                "apiVersion: restorectl/v1\nkind: RestoreTo\nmetadata: {{ name: restoreto-review }}\nspec:\n  \
                 organization: contoso.onmicrosoft.com\n  mailboxes: [frank@contoso.com, ivan@contoso.com]\n  \
                 archives: exclude\n  restoreTo:\n    mailbox: legal-review@contoso.com\n    \
                 folder: \"Chaos/{{mailbox}}\"\n{user_creds}"
            ),
        ),
        (
            "bulk-legal.yaml",
            "bulk-legal",
            Kind::Restore,
            false,
            "apiVersion: restorectl/v1\nkind: BulkRestore\nmetadata: { name: bulk-legal }\nspec:\n  \
             organization: contoso.onmicrosoft.com\n  mailboxes:\n    - { match: \"*@legal.contoso.com\" }\n  \
             archives: exclude\n  bulkRestore:\n    credentials:\n      office365:\n        \
             userName: svc-backup@contoso.com\n        password: { secret: m365-restore-password }\n"
                .to_string(),
        ),
        (
            "search-tick.yaml",
            "search-tick",
            Kind::Search,
            true,
            search_tick(""),
        ),
        (
            "search-org.yaml",
            "search-org",
            Kind::Search,
            false,
            search_org("project falcon"),
        ),
    ]
}

fn legal_export(cron: &str, extra: &str) -> String {
    format!(
        "apiVersion: restorectl/v1\nkind: ExportPst\nmetadata: {{ name: export-legal }}\nspec:\n  \
         organization: contoso.onmicrosoft.com\n  mailboxes:\n    - {{ match: \"*@legal.contoso.com\" }}\n  \
         archives: include\n  schedule: {{ cron: \"{cron}\", concurrencyPolicy: Forbid }}\n{extra}  \
         export:\n    path: \"{{job}}/{{run}}/{{mailbox}}.pst\"\n"
    )
}

fn restore_tick(extra: &str) -> String {
    format!(
        "apiVersion: restorectl/v1\nkind: Restore\nmetadata: {{ name: restore-tick }}\nspec:\n  \
         organization: contoso.onmicrosoft.com\n  mailboxes: [grace@contoso.com, heidi@contoso.com]\n  \
         archives: exclude\n  schedule: {{ cron: \"*/10 * * * * *\", concurrencyPolicy: Forbid }}\n{extra}  \
         restore:\n    credentials:\n      user:\n        userName: svc-backup@contoso.com\n        \
         password: {{ secret: m365-restore-password }}\n"
    )
}

fn search_tick(extra: &str) -> String {
    format!(
        "apiVersion: restorectl/v1\nkind: Search\nmetadata: {{ name: search-tick }}\nspec:\n  \
         organization: contoso.onmicrosoft.com\n  mailboxes:\n    - ceo@contoso.com\n    \
         - {{ match: \"*@legal.contoso.com\" }}\n  archives: exclude\n  \
         schedule: {{ cron: \"* * * * *\", concurrencyPolicy: Forbid }}\n{extra}  search:\n    \
         query: 'subject:\"board minutes\"'\n    report: {{ path: \"{{job}}/{{run}}/search.jsonl\", format: jsonl }}\n"
    )
}

fn search_org(query: &str) -> String {
    format!(
        "apiVersion: restorectl/v1\nkind: Search\nmetadata: {{ name: search-org }}\nspec:\n  \
         organization: contoso.onmicrosoft.com\n  search:\n    query: '\"{query}\"'\n    \
         report: {{ path: \"{{job}}/{{run}}/org.csv\", format: csv }}\n"
    )
}

/// Edits applied to job files while the daemon runs (each makes a new job version).
fn edit(site: &Site, n: usize) -> &'static str {
    match n % 4 {
        0 => {
            site.write_job("search-org.yaml", &search_org("board minutes"));
            "search-org: new query (a new one-shot run)"
        }
        1 => {
            site.write_job("export-legal.yaml", &legal_export("*/30 * * * * *", ""));
            "export-legal: schedule every 30 s"
        }
        2 => {
            site.write_job(
                "restore-some.yaml",
                &workload()[2]
                    .4
                    .replace("erin@contoso.com]", "erin@contoso.com, judy@contoso.com]"),
            );
            "restore-some: one more mailbox (a new one-shot run)"
        }
        _ => {
            site.write_job("search-tick.yaml", &search_tick("  runTimeout: 10m\n"));
            "search-tick: runTimeout added"
        }
    }
}

/// A random fault rule, labelled by kind for the table.
fn random_fault(rng: &mut ChaCha8Rng) -> (&'static str, FaultRule) {
    let calls = CallRange::between(1, rng.random_range(1..=3));
    let any_endpoint = [
        Endpoint::Token,
        Endpoint::RestoreSessions,
        Endpoint::OrganizationExplore,
        Endpoint::Mailboxes,
        Endpoint::SessionEvents,
        Endpoint::RestoreSession,
        Endpoint::ExportPst,
        Endpoint::MailboxSearch,
        Endpoint::OrganizationSearch,
        Endpoint::SessionStop,
        Endpoint::MailboxRestore,
        Endpoint::MailboxRestoreTo,
        Endpoint::BulkRestore,
    ];
    let restores = [
        Endpoint::MailboxRestore,
        Endpoint::MailboxRestoreTo,
        Endpoint::BulkRestore,
    ];
    let session_paths = [
        Endpoint::SessionEvents,
        Endpoint::ExportPst,
        Endpoint::Mailboxes,
        Endpoint::MailboxRestore,
        Endpoint::MailboxSearch,
    ];
    let pick = |rng: &mut ChaCha8Rng, from: &[Endpoint]| from[rng.random_range(0..from.len())];
    let (label, endpoint, action) = match rng.random_range(0..10) {
        0 => {
            let status = [500, 502, 503][rng.random_range(0..3)];
            (
                "5xx",
                pick(rng, &any_endpoint),
                FaultAction::Status { status },
            )
        }
        1 => (
            "ProxyOffline",
            pick(rng, &any_endpoint),
            FaultAction::Error {
                status: 500,
                error_code: Some("ProxyOffline".into()),
                message: Some("The proxy is offline".into()),
            },
        ),
        2 => (
            "Timeout",
            pick(rng, &any_endpoint),
            FaultAction::Error {
                status: 504,
                error_code: Some("Timeout".into()),
                message: Some("The operation timed out".into()),
            },
        ),
        3 => (
            "429",
            pick(rng, &any_endpoint),
            FaultAction::TooManyRequests {
                retry_after_seconds: 1,
            },
        ),
        4 => (
            "dropAfterBytes",
            Endpoint::ExportPst,
            FaultAction::DropAfterBytes {
                bytes: rng.random_range(1..2_000_000),
            },
        ),
        5 => (
            "loseResponse",
            pick(rng, &restores),
            FaultAction::LoseResponse,
        ),
        6 => (
            "expireTokens",
            pick(rng, &any_endpoint),
            FaultAction::ExpireTokens,
        ),
        7 => (
            "removeSession",
            pick(rng, &session_paths),
            FaultAction::RemoveSession,
        ),
        8 => (
            // The restore runs, then the server answers a 5xx (API.md §5).
            "executeThenAnswer",
            pick(rng, &restores),
            FaultAction::ExecuteThenAnswer {
                status: [500, 502, 503, 504][rng.random_range(0..4)],
                error_code: [None, Some("Timeout".into()), Some("HttpError".into())]
                    [rng.random_range(0..3)]
                .clone(),
                message: None,
                body: None,
            },
        ),
        _ => (
            "delay",
            pick(rng, &any_endpoint),
            FaultAction::Delay {
                // One in four outlasts the client's requestTimeout (5 s): a transport timeout.
                duration: if rng.random_range(0..4) == 0 {
                    Duration::from_secs(6)
                } else {
                    Duration::from_millis(rng.random_range(100..1500))
                },
            },
        ),
    };
    (label, FaultRule::on(endpoint, action).calls(calls))
}

/// The daemon process with its log in a directory outside the site (so the "no file outside
/// exportRoot" check sees only what the daemon wrote).
struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(config: &Path, log: &Path) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(bin())
            .args(["daemon", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Daemon { child }
    }

    fn kill9(mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything the checks report.
#[derive(Debug, Default)]
struct Table {
    seed: u64,
    kills: usize,
    faults_by_kind: BTreeMap<String, usize>,
    runs_by_state: BTreeMap<String, usize>,
    steps: usize,
    restore_posts_executed: usize,
    operator_decisions: Vec<String>,
    /// Why runs failed (not a violation: faults can exhaust a step's retries).
    failures: Vec<String>,
    duplicates: Vec<String>,
    corrupt: Vec<String>,
    leaked_sessions: Vec<String>,
    other: Vec<String>,
}

impl Table {
    fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "| invariant | value |\n|---|---|");
        let _ = writeln!(s, "| seed | {} |", self.seed);
        let _ = writeln!(s, "| kills (kill -9) | {} |", self.kills);
        let faults: Vec<String> = self
            .faults_by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let total: usize = self.faults_by_kind.values().sum();
        let _ = writeln!(s, "| faults injected | {total} ({}) |", faults.join(", "));
        let runs: Vec<String> = self
            .runs_by_state
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let total: usize = self.runs_by_state.values().sum();
        let _ = writeln!(s, "| runs | {total} ({}) |", runs.join(", "));
        let _ = writeln!(s, "| steps | {} |", self.steps);
        let _ = writeln!(
            s,
            "| restore POSTs executed | {} |",
            self.restore_posts_executed
        );
        let _ = writeln!(
            s,
            "| operator decisions | {} |",
            self.operator_decisions.len()
        );
        let _ = writeln!(s, "| duplicates found | {} |", self.duplicates.len());
        let _ = writeln!(s, "| corrupt files | {} |", self.corrupt.len());
        let _ = writeln!(s, "| leaked sessions | {} |", self.leaked_sessions.len());
        let _ = writeln!(s, "| other violations | {} |", self.other.len());
        for (what, list) in [
            ("operator", &self.operator_decisions),
            ("failed run", &self.failures),
            ("DUPLICATE", &self.duplicates),
            ("CORRUPT", &self.corrupt),
            ("LEAKED", &self.leaked_sessions),
            ("VIOLATION", &self.other),
        ] {
            for line in list {
                let _ = writeln!(s, "{what}: {line}");
            }
        }
        s
    }

    fn violations(&self) -> usize {
        self.duplicates.len() + self.corrupt.len() + self.leaked_sessions.len() + self.other.len()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The reconcile grace must outlast the longest delay the faults put in front of a request
/// the server then executes (6 s, past the 5 s `requestTimeout`), with room for a loaded CI
/// machine: the protocol's one assumption (docs/engine.md) is that a server acts on a request
/// within the grace. A 5 s grace let a delayed restore run after its "not received" resend.
fn write_config(site: &Site, sim: &SimHandle, port: u16) {
    let config = format!(
        "jobsDir: jobs\nstateDir: state\nexportRoot: exports\nsecretsDir: secrets\n\
         listen: \"127.0.0.1:{port}\"\ntimezone: UTC\nshutdownTimeout: 10s\n\
         watch: {{ rescanInterval: 2s }}\n\
         defaults:\n  retry: {{ maxAttempts: 10, initialBackoff: 1s, maxBackoff: 3s }}\n\
         engine: {{ pollInterval: 1s, reconcileGrace: 15s, inlineBackoff: 5s }}\n\
         downloads: {{ firstByteTimeout: 10s, idleReadTimeout: 5s }}\n\
         servers:\n  sim:\n    url: {}\n    username: CONTOSO\\svc-restore\n\
         \x20   password: {{ secret: vb365-password }}\n    requestTimeout: 5s\n",
        sim.base_url()
    );
    std::fs::write(site.config_path(), config).unwrap();
    std::fs::write(site.path("secrets/m365-restore-password"), "dev\n").unwrap();
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

async fn all_runs(store: &Store) -> Vec<Run> {
    store.list_runs(&RunFilter::default()).await.unwrap()
}

/// Waits until no run is queued, running or waiting for a retry, and no explore request is
/// left unsettled (the daemon's idle sweep stops the sessions of lost explore answers once
/// `requestTimeout` + grace has passed). A hang guard, not a timing assertion: the elapsed
/// time is printed.
async fn drain(store: &Store, seed: u64, log: &Path) -> Duration {
    let start = Instant::now();
    loop {
        let runs = all_runs(store).await;
        let mut active: Vec<String> = runs
            .iter()
            .filter(|r| r.state.is_active())
            .map(|r| format!("{} {} {} {:?}", r.job_name, r.id, r.state, r.reason))
            .collect();
        active.extend(
            store
                .list_session_intents(None)
                .await
                .unwrap()
                .iter()
                .map(|i| format!("explore intent {} of {}", i.id, i.requested_at)),
        );
        if active.is_empty() {
            return start.elapsed();
        }
        if start.elapsed() > DRAIN_PATIENCE {
            panic!(
                "CHAOS_SEED={seed}: runs still active after {DRAIN_PATIENCE:?}: {active:#?}\n\
                 daemon log tail:\n{}",
                log_tail(log)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn sha256_file(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    Some(hex(&Sha256::digest(&bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// A journal entry for a restore POST that the simulator executed (decided a 2xx, whether or
/// not a `loseResponse` fault then dropped the answer; a fault that answered first, such as a
/// 504, means the restore never ran).
fn executed_restore(e: &JournalEntry) -> bool {
    e.method == "POST"
        && RESTORE_ROUTES.iter().any(|r| e.is("POST", r))
        && e.decided_status.is_some_and(|s| (200..300).contains(&s))
}

/// Mailbox ids a restore POST names (path parameter or bulk body).
fn restore_mailboxes(e: &JournalEntry) -> Vec<String> {
    if let Some(id) = e.param("mailboxId") {
        return vec![id.to_ascii_lowercase()];
    }
    let mut ids = Vec::new();
    if let Some(list) = e
        .body
        .as_ref()
        .and_then(|b| b.get("mailboxes").or_else(|| b.get("Mailboxes")))
        .and_then(|m| m.as_array())
    {
        for m in list {
            let id = m
                .as_str()
                .map(str::to_string)
                .or_else(|| m.get("id").and_then(|i| i.as_str()).map(str::to_string));
            if let Some(id) = id {
                ids.push(id.to_ascii_lowercase());
            }
        }
    }
    ids
}

fn metrics_runs(text: &str) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("restorectl_runs_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let mut job = None;
        let mut result = None;
        for pair in labels.split(',') {
            if let Some((k, v)) = pair.split_once('=') {
                let v = v.trim_matches('"').to_string();
                match k {
                    "job" => job = Some(v),
                    "result" => result = Some(v),
                    _ => {}
                }
            }
        }
        if let (Some(job), Some(result), Ok(n)) = (job, result, value.trim().parse::<f64>()) {
            out.insert((job, result), n as u64);
        }
    }
    out
}

async fn get_text(url: &str) -> Option<String> {
    reqwest::get(url).await.ok()?.text().await.ok()
}

/// One chaos round on `postgres` (a database of its own) or, when `None`, on the site's SQLite
/// file.
/// Where the chaos keeps its state, and how many daemons share it.
struct Setup<'a> {
    /// The PostgreSQL database (`None`: SQLite).
    postgres: Option<&'a str>,
    /// Daemons on the database (more than one only on PostgreSQL); each kill takes one at
    /// random.
    replicas: usize,
    /// The PostgreSQL server of the test's own, stopped and started again once half-way.
    restart: Option<&'a crate::common::postgres::Cluster>,
}

async fn chaos(kills: usize, setup: Setup<'_>) {
    let seed = env_u64("CHAOS_SEED").unwrap_or_else(rand::random);
    println!("CHAOS_SEED={seed} CHAOS_KILLS={kills}");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let sim = Simulator::start(
        SimConfig {
            restore_delay: Duration::from_millis(800),
            // Two large exports, so that kills and dropped connections land mid-body.
            export_sizes: [
                ("ceo@contoso.com".to_string(), 6 << 20),
                ("anna@legal.contoso.com".to_string(), 3 << 20),
            ]
            .into(),
            export_build_delay: Duration::from_millis(100),
            export_default_size: 64 * 1024,
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let port = free_port();
    let site = Site::new(&sim.base_url(), "off");
    write_config(&site, &sim, port);
    let location = match setup.postgres {
        Some(url) => {
            append_config(&site, &format!("database: {url}"));
            Location::parse(url).unwrap()
        }
        None => Location::sqlite(site.db_path()),
    };
    if setup.replicas > 1 {
        // Short leases, so that a killed replica's runs move on within the run.
        let text = std::fs::read_to_string(site.config_path()).unwrap();
        let text = text.replace("inlineBackoff: 5s }", "inlineBackoff: 5s, lease: 5s }");
        assert!(text.contains("lease: 5s"));
        std::fs::write(site.config_path(), text).unwrap();
    }
    // Replica 0 is the site's config (its /metrics is checked); the others share everything
    // but their name and health port.
    let mut configs = vec![site.config_path()];
    for i in 1..setup.replicas {
        configs.push(site.replica_config(&format!("replica-{i}"), free_port()));
    }
    println!("CHAOS_SEED={seed}: state database {location}");
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("daemon.log");
    let kinds: HashMap<&'static str, Kind> =
        workload().iter().map(|(_, n, k, _, _)| (*n, *k)).collect();
    for (file, _, _, _, text) in workload() {
        site.write_job(file, &text);
    }
    let v = assert_cmd::Command::new(bin())
        .args(["validate", "--config"])
        .arg(site.config_path())
        .output()
        .unwrap();
    assert!(
        v.status.success(),
        "CHAOS_SEED={seed}: the workload validates: {}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );

    let mut table = Table {
        seed,
        ..Table::default()
    };
    let mut edits = 0;
    let mut kill_times = Vec::new();
    let mut daemons: Vec<Option<Daemon>> = configs
        .iter()
        .map(|c| Some(Daemon::start(c, &log)))
        .collect();
    let mut db_restarts = 0;
    let start = Instant::now();
    let store = loop {
        if let Ok(s) = Store::connect(&location, OpenMode::Existing).await
            && s.list_live_instances().await.is_ok_and(|l| !l.is_empty())
        {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "CHAOS_SEED={seed}: the daemon never became live\n{}",
            log_tail(&log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for i in 0..kills {
        // Faults for the next stretch: each rule hits its next 1–3 matching calls.
        for _ in 0..rng.random_range(1..=3) {
            let (_, rule) = random_fault(&mut rng);
            sim.add_fault(rule).unwrap();
        }
        if rng.random_range(0..5) == 0 {
            let what = edit(&site, edits);
            edits += 1;
            println!("edit {edits} before kill {}: {what}", i + 1);
        }
        let wait = Duration::from_millis(rng.random_range(150..2500));
        tokio::time::sleep(wait).await;
        let victim = rng.random_range(0..daemons.len());
        if let Some(d) = daemons[victim].take() {
            d.kill9();
        }
        kill_times.push(chrono::Utc::now());
        table.kills += 1;
        daemons[victim] = Some(Daemon::start(&configs[victim], &log));
        if let Some(cluster) = setup.restart.filter(|_| i == kills / 2) {
            // The database goes away for a while (a restart, a failover): every replica keeps
            // its process and continues once it is back.
            println!(
                "CHAOS_SEED={seed}: stopping PostgreSQL for 5 s after kill {}",
                i + 1
            );
            cluster.stop();
            tokio::time::sleep(Duration::from_secs(5)).await;
            cluster.restart();
            db_restarts += 1;
        }
    }
    println!(
        "CHAOS_SEED={seed}: {} kills done, {edits} edits; stopping faults and draining",
        table.kills
    );
    sim.clear_faults();
    // Suspend the scheduled jobs so that the workload has an end.
    site.write_job(
        "export-legal.yaml",
        &legal_export("*/20 * * * * *", "  suspend: true\n"),
    );
    site.write_job("restore-tick.yaml", &restore_tick("  suspend: true\n"));
    site.write_job("search-tick.yaml", &search_tick("  suspend: true\n"));
    // Give the watcher time to see the suspension before waiting for the queue to empty.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let took = drain(&store, seed, &log).await;
    println!("drained in {took:?}");

    // Operator decisions, only for runs that need one, each explained by an injected fault.
    let journal = sim.journal();
    // Restore POSTs whose outcome the daemon could not know: the answer was lost or delayed
    // past the request timeout by a fault, it was a 5xx (executed or not: API.md §5), or a
    // kill -9 came before the answer was recorded.
    let ambiguous: Vec<&JournalEntry> = journal
        .iter()
        .filter(|e| RESTORE_ROUTES.iter().any(|r| e.is("POST", r)))
        .filter(|e| {
            e.fault
                .as_deref()
                .is_some_and(|f| f.contains("loseResponse") || f.contains("delay"))
                || e.status.is_some_and(|s| s >= 500)
                || kill_times
                    .iter()
                    .any(|k| *k >= e.time && *k - e.time < chrono::Duration::seconds(10))
        })
        .collect();
    let removed: BTreeSet<String> = journal
        .iter()
        .filter(|e| {
            e.fault
                .as_deref()
                .is_some_and(|f| f.contains("removeSession"))
        })
        .filter_map(|e| e.param("restoreSessionId").map(str::to_ascii_lowercase))
        .collect();
    let mut resolved = false;
    for run in all_runs(&store).await {
        if run.state != RunState::NeedsAttention {
            continue;
        }
        let mut executed_any = false;
        for step in store.list_steps(run.id).await.unwrap() {
            if step.state != StepState::InDoubt {
                continue;
            }
            let mailboxes = step_mailboxes(&step);
            let sessions: BTreeSet<String> = store
                .list_run_sessions(run.id)
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.id.to_ascii_lowercase())
                .chain(
                    step.restore_session_id
                        .as_deref()
                        .map(str::to_ascii_lowercase),
                )
                .collect();
            let in_run = |e: &&&JournalEntry| {
                restore_mailboxes(e).iter().any(|m| mailboxes.contains(m))
                    && e.param("restoreSessionId")
                        .is_some_and(|s| sessions.contains(&s.to_ascii_lowercase()))
            };
            let lost_here = ambiguous.iter().any(|e| in_run(&e));
            executed_any |= journal
                .iter()
                .filter(|e| executed_restore(e))
                .any(|e| in_run(&&e));
            let removed_here = sessions.iter().any(|s| removed.contains(s));
            // Reconciliation met a candidate session (another run's, an operation session) that
            // a fault removed while it was read: no proof either way, so in_doubt is right.
            let vanished_here = step.error_message.as_deref().is_some_and(|m| {
                let m = m.to_ascii_lowercase();
                m.contains("vanished") && removed.iter().any(|s| m.contains(s.as_str()))
            });
            if !lost_here && !removed_here && !vanished_here {
                table.other.push(format!(
                    "run {} ({}) step {} in_doubt without a lost/late answer, a kill, a removed session or a vanished candidate: {:?}",
                    run.id, run.job_name, step.seq, step.error_message
                ));
            }
        }
        // The operator checks the server (here: the simulator's journal): a restore that was
        // executed is marked done (no POST); one that never arrived is re-sent.
        let decision = if executed_any {
            "--mark-done"
        } else {
            "--resend"
        };
        let out = assert_cmd::Command::new(bin())
            .args(["resolve", &run.id.to_string(), decision, "--config"])
            .arg(site.config_path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "CHAOS_SEED={seed}: resolve {}: {}",
            run.id,
            String::from_utf8_lossy(&out.stderr)
        );
        table
            .operator_decisions
            .push(format!("run {} ({}) {decision}", run.id, run.job_name));
        resolved = true;
    }
    if resolved {
        let until = Instant::now();
        loop {
            let open = all_runs(&store)
                .await
                .iter()
                .any(|r| r.state == RunState::NeedsAttention || r.state.is_active());
            if !open {
                break;
            }
            assert!(
                until.elapsed() < DRAIN_PATIENCE,
                "CHAOS_SEED={seed}: resolved runs did not finish\n{}",
                log_tail(&log)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    check(&sim, &site, &store, &kinds, &mut table).await;
    check_metrics(port, &store, &mut table).await;
    for (label, n) in fault_counts(&sim.journal()) {
        table.faults_by_kind.insert(label, n);
    }
    for d in daemons.iter_mut().filter_map(Option::take) {
        d.kill9();
    }
    if setup.restart.is_some() {
        assert_eq!(
            db_restarts, 1,
            "CHAOS_SEED={seed}: the database restarted once"
        );
    }
    let rendered = table.render();
    println!("{rendered}");
    assert!(
        table.kills >= kills,
        "CHAOS_SEED={seed}: only {} kills",
        table.kills
    );
    assert_eq!(
        table.violations(),
        0,
        "CHAOS_SEED={seed}: invariants violated\n{rendered}\nkills at: {}\ndaemon log tail:\n{}",
        kill_times
            .iter()
            .map(|k| k.format("%H:%M:%S%.3f").to_string())
            .collect::<Vec<_>>()
            .join(" "),
        log_tail(&log)
    );
    sim.shutdown().await;
}

/// The run and step a file under `exportRoot/<job>/<run>/<mailbox>.pst…` belongs to, for
/// failure messages.
/// What happened to a mailbox restored more often than allowed: its restore POSTs in the
/// simulator's journal and the history of its steps in the store (printed with the violation).
async fn duplicate_trail(m: &str, journal: &[JournalEntry], runs: &[Run], store: &Store) -> String {
    let mut lines = Vec::new();
    for e in journal
        .iter()
        .filter(|e| RESTORE_ROUTES.iter().any(|r| e.is("POST", r)))
        .filter(|e| restore_mailboxes(e).iter().any(|x| x == m))
    {
        lines.push(format!(
            "  journal #{} {} {} {} status {:?} fault {:?}",
            e.seq,
            e.time.format("%H:%M:%S%.3f"),
            e.method,
            e.path,
            e.status,
            e.fault
        ));
    }
    for run in runs {
        let Ok(steps) = store.list_steps(run.id).await else {
            continue;
        };
        let ids: Vec<i64> = steps
            .iter()
            .filter(|s| {
                s.mailbox_id
                    .as_deref()
                    .map(str::to_ascii_lowercase)
                    .as_deref()
                    == Some(m)
                    || s.mailbox_ids
                        .as_ref()
                        .is_some_and(|l| l.iter().any(|x| x.eq_ignore_ascii_case(m)))
            })
            .map(|s| s.id)
            .collect();
        if ids.is_empty() {
            continue;
        }
        for ev in store.list_run_events(run.id).await.unwrap_or_default() {
            if ev.step_id.is_none_or(|id| ids.contains(&id)) {
                lines.push(format!(
                    "  store {} {} run {} step {:?} {}: {}",
                    ev.at.format("%H:%M:%S%.3f"),
                    run.job_name,
                    run.id,
                    ev.step_id,
                    ev.kind,
                    ev.message
                ));
            }
        }
    }
    lines.join("\n")
}

async fn owner_of(path: &Path, runs: &[Run], store: &Store) -> String {
    let run_dir = path
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some(run) = runs.iter().find(|r| r.id.to_string() == run_dir) else {
        return "no run".into();
    };
    let steps = store.list_steps(run.id).await.unwrap_or_default();
    let step = steps.iter().find(|s| {
        s.mailbox_email
            .as_deref()
            .is_some_and(|m| file.starts_with(&format!("{m}.")))
    });
    format!(
        "run {} {} ({:?}); step {:?}",
        run.job_name,
        run.state,
        run.reason,
        step.map(|s| (s.seq, s.state, s.is_archive, s.error_message.clone()))
    )
}

fn step_mailboxes(step: &Step) -> BTreeSet<String> {
    let mut set: BTreeSet<String> = step
        .mailbox_ids
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.to_ascii_lowercase())
        .collect();
    if let Some(m) = &step.mailbox_id {
        set.insert(m.to_ascii_lowercase());
    }
    set
}

fn fault_counts(journal: &[JournalEntry]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in journal {
        let Some(faults) = &e.fault else { continue };
        // Several rules can shape one exchange ("expireTokens, status 502").
        for f in faults.split(", ") {
            let label = if f.starts_with("status") {
                "5xx".to_string()
            } else if f.starts_with("error 500 ProxyOffline") {
                "ProxyOffline".to_string()
            } else if f.starts_with("error 504 Timeout") {
                "Timeout".to_string()
            } else if f.starts_with("delay") {
                "delay".to_string()
            } else if f.starts_with("dropAfterBytes") {
                "dropAfterBytes".to_string()
            } else {
                f.to_string()
            };
            *out.entry(label).or_insert(0) += 1;
        }
    }
    out
}

async fn check(
    sim: &SimHandle,
    site: &Site,
    store: &Store,
    kinds: &HashMap<&'static str, Kind>,
    table: &mut Table,
) {
    let runs = all_runs(store).await;
    let journal = sim.journal();
    // The simulator ignores read-only properties as the real server does; restorectl's own
    // requests must never carry one.
    for e in journal.iter().filter(|e| !e.ignored_read_only.is_empty()) {
        table.other.push(format!(
            "{} {} carried read-only properties {:?}",
            e.method, e.path, e.ignored_read_only
        ));
    }
    let export_root = site.path("exports").canonicalize().unwrap();
    // Per mailbox: restore steps (with their resend decisions) and their POST counters.
    let mut allowed: HashMap<String, i64> = HashMap::new();
    let mut counted: HashMap<String, i64> = HashMap::new();
    for run in &runs {
        *table
            .runs_by_state
            .entry(run.state.as_str().to_string())
            .or_insert(0) += 1;
        if run.state == RunState::Failed {
            table.failures.push(format!(
                "{} {}: {}",
                run.job_name,
                run.id,
                run.reason.as_deref().unwrap_or("-")
            ));
        }
        if !run.state.is_terminal() {
            table.other.push(format!(
                "run {} ({}) ends {} ({:?})",
                run.id, run.job_name, run.state, run.reason
            ));
        }
        // The event log agrees with the run table.
        let events = store.list_run_events(run.id).await.unwrap();
        match run.state {
            RunState::Missed | RunState::Skipped => {
                let want = if run.state == RunState::Missed {
                    "run_missed"
                } else {
                    "run_skipped"
                };
                if !events.iter().any(|e| e.kind == want) {
                    table
                        .other
                        .push(format!("run {} {}: no {want} event", run.id, run.state));
                }
            }
            s if s.is_terminal() => {
                let finished: Vec<_> = events.iter().filter(|e| e.kind == "run_finished").collect();
                let state = finished
                    .last()
                    .and_then(|e| e.data.as_ref())
                    .and_then(|d| d.get("state"))
                    .and_then(|s| s.as_str())
                    .map(str::to_string);
                if finished.len() != 1 || state.as_deref() != Some(s.as_str()) {
                    table.other.push(format!(
                        "run {} {}: {} run_finished event(s), last says {state:?}",
                        run.id,
                        s,
                        finished.len()
                    ));
                }
            }
            _ => {}
        }
        let kind = kinds.get(run.job_name.as_str()).copied();
        for step in store.list_steps(run.id).await.unwrap() {
            table.steps += 1;
            if run.state.is_terminal() && !step.state.is_terminal() {
                table.other.push(format!(
                    "run {} ({}) {} but step {} is {}",
                    run.id, run.job_name, run.state, step.seq, step.state
                ));
            }
            if kind == Some(Kind::Restore) {
                let resend = i64::from(step.operator_decision == Some(Decision::Resend));
                for m in step_mailboxes(&step) {
                    *allowed.entry(m.clone()).or_insert(0) += 1 + resend;
                    *counted.entry(m).or_insert(0) += step.restore_posts;
                }
            }
        }
        // Published exports: the bytes on disk are the simulator's.
        for export in store.list_run_exports(run.id).await.unwrap() {
            if export.deleted_at.is_some() {
                continue;
            }
            let path = if export.path.is_absolute() {
                export.path.clone()
            } else {
                export_root.join(&export.path)
            };
            match path.canonicalize() {
                Ok(p) if p.starts_with(&export_root) => {}
                other => {
                    table.other.push(format!(
                        "export {} is not a file under exportRoot: {other:?}",
                        path.display()
                    ));
                    continue;
                }
            }
            let on_disk = sha256_file(&path);
            if on_disk.as_deref() != Some(export.sha256.as_str()) {
                table.corrupt.push(format!(
                    "{}: file {on_disk:?} ≠ recorded {}",
                    path.display(),
                    export.sha256
                ));
                continue;
            }
            if !matches!(export.format, FileFormat::Pst | FileFormat::Zip) {
                continue;
            }
            let manifest_path = export
                .manifest_path
                .as_deref()
                .map(PathBuf::from)
                .map(|p| {
                    if p.is_absolute() {
                        p
                    } else {
                        export_root.join(p)
                    }
                })
                .unwrap_or_else(|| PathBuf::from(format!("{}.manifest.json", path.display())));
            let manifest: serde_json::Value = match std::fs::read(&manifest_path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
            {
                Some(m) => m,
                None => {
                    table.corrupt.push(format!(
                        "{}: manifest missing or unreadable",
                        manifest_path.display()
                    ));
                    continue;
                }
            };
            let mailbox_id = manifest["mailboxId"]
                .as_str()
                .and_then(|s| s.parse::<uuid::Uuid>().ok());
            let point = manifest["pointInTime"].as_str().and_then(|p| {
                (p != "latest")
                    .then(|| chrono::DateTime::parse_from_rfc3339(p).ok())
                    .flatten()
                    .map(|t| t.with_timezone(&chrono::Utc))
            });
            let Some(mailbox_id) = mailbox_id else {
                table
                    .corrupt
                    .push(format!("{}: no mailboxId", manifest_path.display()));
                continue;
            };
            let spec = ExportSpec {
                mailbox_id,
                keyword: manifest["keyword"].as_str().map(str::to_string),
                point_in_time: point,
                pst_size_limit: manifest["pstSizeLimitBytes"].as_u64(),
            };
            match sim.export_digest(&spec) {
                Ok((sha, len)) => {
                    if sha != export.sha256 || i64::try_from(len).ok() != Some(export.bytes) {
                        table.corrupt.push(format!(
                            "{}: {} bytes sha {} but the simulator serves {len} bytes sha {sha}",
                            path.display(),
                            export.bytes,
                            export.sha256
                        ));
                    }
                }
                Err(e) => table
                    .corrupt
                    .push(format!("{}: no simulator digest: {e}", path.display())),
            }
        }
    }
    // No .partial left, nothing outside exportRoot.
    let mut files = Vec::new();
    walk(site.dir.path(), &mut files);
    let state_dir = site.path("state");
    for f in files {
        let f = f.canonicalize().unwrap_or(f);
        if f.starts_with(&export_root) {
            let name = f.to_string_lossy();
            if name.ends_with(".partial") {
                // Every run is finished at this point: a partial belongs to no live download.
                table.corrupt.push(format!(
                    "leftover {name}: {}",
                    owner_of(&f, &runs, store).await
                ));
            }
            continue;
        }
        let rel = f
            .strip_prefix(site.dir.path().canonicalize().unwrap())
            .map(Path::to_path_buf)
            .unwrap_or(f.clone());
        let expected = f.starts_with(state_dir.canonicalize().unwrap())
            || rel.starts_with("jobs")
            || rel.starts_with("secrets")
            || rel == Path::new("restorectl.yaml")
            // The other replicas' configs (Site::replica_config).
            || rel.to_str().is_some_and(|r| {
                r.starts_with("restorectl-replica-") && r.ends_with(".yaml")
            });
        if !expected {
            table
                .other
                .push(format!("file outside exportRoot: {}", f.display()));
        }
    }
    // Restore POSTs: at most one executed per step (plus resends), counters honest.
    let mut per_session: HashMap<(String, String), usize> = HashMap::new();
    let mut per_mailbox: HashMap<String, usize> = HashMap::new();
    for e in journal.iter().filter(|e| executed_restore(e)) {
        table.restore_posts_executed += 1;
        let session = e
            .param("restoreSessionId")
            .unwrap_or_default()
            .to_ascii_lowercase();
        for m in restore_mailboxes(e) {
            *per_session.entry((session.clone(), m.clone())).or_insert(0) += 1;
            *per_mailbox.entry(m).or_insert(0) += 1;
        }
    }
    for ((session, m), n) in &per_session {
        if *n > 1 && allowed.get(m).copied().unwrap_or(0) < i64::try_from(*n).unwrap() {
            table.duplicates.push(format!(
                "mailbox {m}: {n} restore POSTs executed in session {session}"
            ));
        }
    }
    let mut mailboxes: BTreeSet<&String> = allowed.keys().collect();
    mailboxes.extend(per_mailbox.keys());
    for m in mailboxes {
        let id: uuid::Uuid = m.parse().unwrap();
        let executed = sim.restore_calls(id);
        let journal_n = per_mailbox.get(m).copied().unwrap_or(0);
        let allowed_n = allowed.get(m).copied().unwrap_or(0);
        let counted_n = counted.get(m).copied().unwrap_or(0);
        // The journal can miss an execution whose connection the client dropped (a timeout
        // during a delay): the simulator's own counter is the ground truth.
        let executed = executed.max(journal_n);
        if i64::try_from(executed).unwrap() > allowed_n {
            table.duplicates.push(format!(
                "mailbox {m}: {executed} restores executed for {allowed_n} step(s) (+resends)\n{}",
                duplicate_trail(m, &journal, &runs, store).await
            ));
        }
        if i64::try_from(executed).unwrap() > counted_n {
            table.other.push(format!(
                "mailbox {m}: {executed} restores executed but the steps counted {counted_n} POSTs"
            ));
        }
    }
    // Sessions: nothing left Working.
    for s in sim.sessions() {
        if s.state == "Working" {
            let id = s.id.to_string();
            let recorded = store
                .get_session(&id)
                .await
                .map(|r| format!("store: {} run {:?}", r.state, r.run_id))
                .unwrap_or_else(|_| "unknown to the store".into());
            let trail: Vec<String> = journal
                .iter()
                .filter(|e| {
                    e.param("restoreSessionId") == Some(id.as_str())
                        || e.status.is_some_and(|_| {
                            e.body.as_ref().is_some_and(|b| b.to_string().contains(&id))
                        })
                })
                .map(|e| {
                    format!(
                        "#{} {} {} {:?} {:?}",
                        e.seq, e.method, e.path, e.status, e.fault
                    )
                })
                .collect();
            table.leaked_sessions.push(format!(
                "session {id} (operation of {:?}) still Working; {recorded}; trail {trail:?}",
                s.operation_of
            ));
        }
    }
}

async fn check_metrics(port: u16, store: &Store, table: &mut Table) {
    let mut want: BTreeMap<(String, String), u64> = BTreeMap::new();
    for run in all_runs(store).await {
        if run.state.is_terminal() {
            *want
                .entry((run.job_name.clone(), run.state.as_str().to_string()))
                .or_insert(0) += 1;
        }
    }
    // The series are refreshed from the store every few seconds: poll for agreement.
    let start = Instant::now();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let mut last = BTreeMap::new();
    while start.elapsed() < Duration::from_secs(60) {
        if let Some(text) = get_text(&url).await {
            last = metrics_runs(&text);
            if last == want {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    table.other.push(format!(
        "/metrics restorectl_runs_total {last:?} ≠ store {want:?}"
    ));
}

/// The CI variant (≥ 20 kills); `CHAOS_KILLS` raises the number for the long variant.
#[tokio::test(flavor = "multi_thread")]
async fn chaos_kills_and_faults_keep_every_invariant() {
    let kills = env_u64("CHAOS_KILLS").map_or(20, |k| k.max(20) as usize);
    chaos(
        kills,
        Setup {
            postgres: None,
            replicas: 1,
            restart: None,
        },
    )
    .await;
}

/// The same chaos with the state on PostgreSQL (one daemon): every invariant holds on the
/// second backend too.
#[tokio::test(flavor = "multi_thread")]
async fn chaos_on_postgres_keeps_every_invariant() {
    let Some(db) = TestDatabase::create("chaos_on_postgres_keeps_every_invariant").await else {
        return;
    };
    let kills = env_u64("CHAOS_KILLS").map_or(20, |k| k.max(20) as usize);
    chaos(
        kills,
        Setup {
            postgres: Some(&db.url),
            replicas: 1,
            restart: None,
        },
    )
    .await;
}

/// Three replicas on one PostgreSQL database (a server of the test's own) and one shared
/// `exportRoot`; each kill -9 takes one replica at random (restarted at once), and half-way the
/// database is stopped for 5 s: 0 duplicate restore POSTs, every fire exactly one run, every
/// run terminal, every export byte-identical, no step left running.
#[tokio::test(flavor = "multi_thread")]
async fn chaos_three_replicas_on_postgres_keep_every_invariant() {
    let Some(cluster) = crate::common::postgres::Cluster::start("chaos_three_replicas_on_postgres")
    else {
        return;
    };
    let url = cluster.database("chaos").await;
    let kills = env_u64("CHAOS_KILLS").map_or(20, |k| k.max(20) as usize);
    chaos(
        kills,
        Setup {
            postgres: Some(&url),
            replicas: 3,
            restart: Some(&cluster),
        },
    )
    .await;
}
