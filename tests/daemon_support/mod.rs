//! Helpers shared by the daemon tests: a temp directory with a config, a job directory and a
//! state database, job file templates, and the real binary.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use restorectl::config::Config;
use restorectl::daemon::reconcile::{ReconcileReport, Reconciler};
use restorectl::jobs::{ValidationContext, scan_paths};
use restorectl::store::Store;

/// Generous bound for anything that should happen "soon": only bounds a hang.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A temp directory laid out like an installation: `restorectl.yaml`, `jobs/`, `state/`,
/// `exports/`, `secrets/vb365-password`.
pub struct Site {
    pub dir: tempfile::TempDir,
}

impl Site {
    /// A site whose only server points at `server_url` (nothing listens there unless a test
    /// starts the simulator), with `listen` for health and metrics (`off` to disable).
    pub fn new(server_url: &str, listen: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        for d in ["jobs", "state", "exports", "secrets"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(
            dir.path().join("secrets/vb365-password"),
            "restorectl-dev\n",
        )
        .unwrap();
        let config = format!(
            "jobsDir: jobs\nstateDir: state\nexportRoot: exports\nsecretsDir: secrets\n\
             listen: \"{listen}\"\ntimezone: UTC\nshutdownTimeout: 10s\n\
             watch: {{ rescanInterval: 60s }}\n\
             servers:\n  sim:\n    url: {server_url}\n    username: CONTOSO\\svc-restore\n\
             \x20   password: {{ secret: vb365-password }}\n"
        );
        std::fs::write(dir.path().join("restorectl.yaml"), config).unwrap();
        Site { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("restorectl.yaml")
    }

    pub fn config(&self) -> Config {
        Config::load(&self.config_path()).unwrap()
    }

    pub fn db_path(&self) -> PathBuf {
        self.path("state/restorectl.db")
    }

    /// Writes `jobs/<rel>` atomically (temp file + rename, like an editor).
    pub fn write_job(&self, rel: &str, text: &str) {
        let path = self.path("jobs").join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let tmp = path.with_file_name(format!(
            ".{}.tmp",
            path.file_name().unwrap().to_string_lossy()
        ));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }

    /// Writes `restorectl-<name>.yaml`: the site's config with `replicaName: <name>` and
    /// `listen` on `port`, for one of several replicas sharing the site (its job directory,
    /// `exportRoot` and database). Returns the file.
    pub fn replica_config(&self, name: &str, port: u16) -> PathBuf {
        let base = std::fs::read_to_string(self.config_path()).unwrap();
        let listen = base
            .lines()
            .find(|l| l.starts_with("listen:"))
            .expect("the site's config has a listen line")
            .to_string();
        let text = base.replace(&listen, &format!("listen: \"127.0.0.1:{port}\""))
            + &format!("replicaName: {name}\n");
        let path = self.path(&format!("restorectl-{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn remove_job(&self, rel: &str) {
        std::fs::remove_file(self.path("jobs").join(rel)).unwrap();
    }
}

/// An ExportPst job document with a per-run path (see [`crate::common::export_job_yaml`]).
pub fn export_job(name: &str, schedule: Option<&str>, extra: &str) -> String {
    crate::common::export_job_yaml(name, schedule, extra, "{job}/{run}/{mailbox}.pst")
}

/// Scans the site's job directory and applies it through `reconciler` at `now`.
pub async fn reconcile(
    site: &Site,
    reconciler: &mut Reconciler,
    now: DateTime<Utc>,
) -> ReconcileReport {
    let config = site.config();
    let ctx = ValidationContext::new(&config);
    let scan = scan_paths(std::slice::from_ref(&config.jobs_dir), &ctx);
    reconciler.apply(&scan, &config, now).await.unwrap()
}

/// Opens the site's store (creating it).
pub async fn store(site: &Site) -> Store {
    Store::open(site.db_path()).await.unwrap()
}

/// Polls `check` every 50 ms until it returns `Some`, up to [`PATIENCE`]. Returns the value and
/// the time it took (reported, never asserted).
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    let v = until_within(what, PATIENCE, check).await;
    (v, start.elapsed())
}

/// Polls `check` every 20 ms until it returns `Some`, failing the test after `limit` (a bound
/// on a hang, never a speed assertion).
pub async fn until_within<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A shared clock handle as the scheduler wants it.
pub fn clock_arc(
    clock: &restorectl::schedule::ManualClock,
) -> Arc<dyn restorectl::schedule::Clock> {
    Arc::new(clock.clone())
}

/// The real binary.
/// The daemon binary under test; `RESTORECTL_TEST_BIN` points long test loops at a frozen copy
/// so that rebuilding the work tree does not swap it mid-run.
pub fn bin() -> PathBuf {
    std::env::var_os("RESTORECTL_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_restorectl")))
}

/// Appends `line` to the site's config file (keys go at the top level unless indented).
pub fn append_config(site: &Site, line: &str) {
    let mut text = std::fs::read_to_string(site.config_path()).unwrap();
    text.push_str(line);
    text.push('\n');
    std::fs::write(site.config_path(), text).unwrap();
}

/// Whether `path` exists (for readability in polls).
pub fn exists(path: &Path) -> bool {
    path.exists()
}

/// A daemon child process, killed on drop if still running.
pub struct Daemon {
    child: Child,
    /// stderr goes to a file, not a pipe: a pipe nobody reads fills up and blocks the daemon.
    log: PathBuf,
}

impl Daemon {
    pub fn start(site: &Site) -> Daemon {
        Daemon::start_with_env(site, &[])
    }

    /// Starts the daemon with extra environment variables (e.g. the test fault injection).
    pub fn start_with_env(site: &Site, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_config(site, &site.config_path(), env)
    }

    /// Starts the daemon with the config file `config` (one of several replicas of `site`,
    /// [`Site::replica_config`]); its log goes into the site.
    pub fn start_config(site: &Site, config: &Path, env: &[(&str, &str)]) -> Daemon {
        let log = site.path(&format!("daemon-{}.log", uuid::Uuid::new_v4()));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin())
            .args(["daemon", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the daemon logged so far (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// `kill -9`, and waits for the process to be gone.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit; returns its status, stderr and how long it took.
    pub fn wait_exit(mut self) -> (std::process::ExitStatus, String, Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let err = std::fs::read_to_string(&self.log).unwrap_or_default();
                return (status, err, start.elapsed());
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "daemon did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens the daemon's database once it exists (read-write: tests also insert requests).
pub async fn open_when_ready(site: &Site) -> Store {
    let db = site.db_path();
    let (store, _) = eventually("the daemon creates its database and takes the lock", || {
        let db = db.clone();
        async move {
            let store = Store::open_existing(&db).await.ok()?;
            let live = store.list_live_instances().await.ok()?;
            (!live.is_empty()).then_some(store)
        }
    })
    .await;
    store
}

/// The published files under `root/<job>/`.
pub fn published(root: &std::path::Path, job: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.join(job)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "pst") {
                out.push(path);
            }
        }
    }
    out
}

/// `GET /readyz` of a daemon listening on `port`: its status code (`None`: no answer).
pub async fn readyz(port: u16) -> Option<u16> {
    let answer = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    Some(answer.status().as_u16())
}
