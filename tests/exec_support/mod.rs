//! Helpers shared by the run engine tests: the in-process simulator over loopback HTTP, a temp
//! directory with a daemon config pointing at it, job files, a real SQLite state database, and
//! journal queries.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use restorectl::config::Config;
use restorectl::exec::{Engine, EngineOptions, RunOutcome};
use restorectl::jobs::{self, ValidationContext};
use restorectl::sim::{JournalEntry, SimConfig, SimHandle, Simulator};
use restorectl::store::{NewJobVersion, NewRun, RunId, RunState, Step, Store, Trigger};
use tokio_util::sync::CancellationToken;

pub const ORG: &str = "contoso.onmicrosoft.com";
pub const MAILBOXES: &str = "/v8/RestoreSessions/{restoreSessionId}/organization/mailboxes";

/// A simulator, a config in a temp dir, and the store.
pub struct World {
    pub sim: SimHandle,
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub store: Store,
}

/// Extra lines of the daemon config (YAML, top level) and of the server entry.
#[derive(Default, Clone)]
pub struct Setup {
    pub max_sessions: u32,
    pub extra: String,
}

impl World {
    pub async fn start(sim: SimConfig) -> World {
        Self::start_with(sim, Setup::default()).await
    }

    pub async fn start_with(sim: SimConfig, setup: Setup) -> World {
        let sim = Simulator::start(sim, "127.0.0.1:0".parse().unwrap())
            .await
            .expect("simulator");
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        for d in ["jobs", "secrets", "state", "exports"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let secrets = root.join("secrets");
        std::fs::write(secrets.join("vb365-password"), "restorectl-dev\n").unwrap();
        std::fs::write(secrets.join("m365-pass"), "m365-dev-password\n").unwrap();
        std::fs::write(secrets.join("app-cert"), b"not-really-a-pfx-but-bytes").unwrap();
        std::fs::write(secrets.join("app-cert-pass"), "pfx-pass\n").unwrap();
        let max = if setup.max_sessions == 0 {
            4
        } else {
            setup.max_sessions
        };
        let text = format!(
            "jobsDir: jobs\nstateDir: state\nexportRoot: exports\nsecretsDir: secrets\nlisten: 'off'\ntimezone: UTC\n\
             servers:\n  primary:\n    url: {url}\n    username: CONTOSO\\svc-restore\n    password: {{ secret: vb365-password }}\n    maxConcurrentSessions: {max}\n    requestTimeout: 5s\n\
             defaults:\n  retry: {{ maxAttempts: 3, initialBackoff: 200ms, maxBackoff: 2s }}\n  runTimeout: 10m\n\
             engine: {{ pollInterval: 100ms, reconcileGrace: 1s }}\n{extra}",
            url = sim.base_url(),
            extra = setup.extra,
        );
        let path = root.join("restorectl.yaml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load(&path).expect("config");
        let store = Store::open(config.database_path()).await.expect("store");
        World {
            sim,
            dir,
            config,
            store,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("restorectl.yaml")
    }

    pub fn export_root(&self) -> PathBuf {
        self.config.export_root.clone()
    }

    /// Writes `jobs/<name>.yaml`.
    pub fn job(&self, name: &str, yaml: &str) {
        std::fs::write(
            self.dir.path().join("jobs").join(format!("{name}.yaml")),
            yaml,
        )
        .unwrap();
    }

    pub fn engine(&self) -> Engine {
        Engine::new(
            self.store.clone(),
            self.config.clone(),
            EngineOptions::from_config(&self.config, "test-engine"),
        )
        .expect("engine")
    }

    /// Records the job's version and queues a manual run.
    pub async fn queue(&self, name: &str) -> RunId {
        let ctx = ValidationContext::new(&self.config);
        let scan = jobs::scan_paths(std::slice::from_ref(&self.config.jobs_dir), &ctx);
        let errors: Vec<String> = scan.errors().map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
        let job = scan.jobs().find(|j| j.name() == name).expect("job").clone();
        let spec: serde_json::Value = serde_json::from_str(job.spec_json()).unwrap();
        let kind = job.kind().to_string();
        let version = self
            .store
            .upsert_job_version(
                &NewJobVersion {
                    name,
                    kind: &kind,
                    file: job.file(),
                    spec_hash: job.spec_hash(),
                    spec: &spec,
                    valid: true,
                    errors: &serde_json::json!([]),
                },
                Utc::now(),
            )
            .await
            .unwrap();
        self.store
            .enqueue_run(
                &NewRun {
                    job_name: name,
                    job_version_id: version.version_id,
                    spec_hash: job.spec_hash(),
                    trigger: Trigger::Manual,
                    scheduled_for: Utc::now(),
                    state: RunState::Queued,
                    reason: None,
                    timeout: Some(job.run_timeout()),
                },
                Utc::now(),
            )
            .await
            .unwrap()
            .expect("queued")
            .id
    }

    /// Queues and executes a run of `name` to its end.
    pub async fn run(&self, name: &str) -> RunOutcome {
        let id = self.queue(name).await;
        self.engine()
            .execute_run(id, &CancellationToken::new())
            .await
            .expect("execute")
    }

    pub async fn steps(&self, run: RunId) -> Vec<Step> {
        self.store.list_steps(run).await.unwrap()
    }

    /// Journal entries of `method` on `template` (a vendor path template).
    pub fn calls(&self, method: &str, template: &str) -> Vec<JournalEntry> {
        self.sim
            .journal()
            .into_iter()
            .filter(|e| e.is(method, template))
            .collect()
    }

    /// Explore POSTs sent.
    pub fn explores(&self) -> Vec<JournalEntry> {
        self.calls("POST", "/v8/Organizations/{organizationId}/explore")
    }

    /// Every restore session the simulator knows is `Stopped`.
    pub fn assert_all_sessions_stopped(&self) {
        for s in self.sim.sessions() {
            assert_eq!(s.state, "Stopped", "session {} left {}", s.id, s.state);
        }
    }

    /// The simulator's id of a demo mailbox.
    pub fn mailbox_id(&self, email: &str) -> uuid::Uuid {
        self.sim.mailbox(email, false).expect("mailbox").id
    }
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `limit` (generous; never a timed
/// assertion on how fast something happens).
pub async fn eventually<T, F, Fut>(limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "condition not reached within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SHA-256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// A job document with the demo organisation.
pub fn job_yaml(kind: &str, name: &str, body: &str) -> String {
    format!(
        "apiVersion: restorectl/v1\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n  organization: {ORG}\n{body}"
    )
}

/// Restore credentials (user form) for job specs.
pub const USER_CREDS: &str = "    credentials:\n      user: { userName: svc-backup@contoso.com, password: { secret: m365-pass } }\n";

/// Application credentials for job specs.
pub const APP_CREDS: &str = "    credentials:\n      application:\n        applicationId: 3f8e5a2c-41d7-4c2b-9e1f-0a6b7c8d9e10\n        certificate: { secret: app-cert }\n        certificatePassword: { secret: app-cert-pass }\n        impersonationAccountName: svc-backup@contoso.com\n";
