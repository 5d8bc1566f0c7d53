//! A PostgreSQL database of its own for each test, on the server this machine runs (or that
//! `.ci/postgres.sh` started): `$RESTORECTL_TEST_POSTGRES`, else
//! `postgres://postgres@127.0.0.1:5432/postgres` (trust authentication). Each test creates a
//! database with a random name and drops it when done, so tests run in parallel. No server is
//! a failure under `CI=true`, a skip with a message otherwise.

use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// Environment variable with the URL of a database the tests may create databases from.
pub const URL_ENV: &str = "RESTORECTL_TEST_POSTGRES";
/// The server this machine and `.ci/postgres.sh` provide.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database created for one test, dropped (with its connections) when this is dropped.
pub struct TestDatabase {
    /// `postgres://…/rc_test_…`: the URL restorectl connects to (no password: trust auth).
    pub url: String,
    pub name: String,
    admin: String,
}

/// The admin URL the tests use.
pub fn admin_url() -> String {
    std::env::var(URL_ENV)
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_string())
}

impl TestDatabase {
    /// Creates a fresh database, or `None` (after [`super::tool_missing`], which fails under
    /// CI) when no PostgreSQL server answers.
    pub async fn create(test: &str) -> Option<TestDatabase> {
        let admin = admin_url();
        let mut conn = match PgConnection::connect(&admin).await {
            Ok(conn) => conn,
            Err(e) => {
                super::tool_missing(&format!("a PostgreSQL server at {admin} ({e})"), test);
                return None;
            }
        };
        let name = format!("rc_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE");
        conn.close().await.ok();
        let mut url = url::Url::parse(&admin).expect("admin URL");
        url.set_path(&name);
        Some(TestDatabase {
            url: url.to_string(),
            name,
            admin,
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let drop_sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop runs inside the test's runtime: a thread of its own with its own runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop_sql))
                        .execute(&mut conn)
                        .await;
                    conn.close().await.ok();
                }
            });
        })
        .join();
    }
}

/// A PostgreSQL server of its own for one test (one that restarts the server), started from the
/// system's binaries (`/usr/lib/postgresql/*/bin`, installed by `.ci/postgres.sh` where
/// missing) in a temporary directory on a free port, with trust authentication. Run as the
/// `postgres` user when the tests run as root (initdb refuses root). Stopped when dropped.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    pub port: u16,
}

impl Cluster {
    /// Starts the cluster, or `None` (after [`super::tool_missing`]) without the binaries.
    pub fn start(test: &str) -> Option<Cluster> {
        Cluster::start_with(test, &[])
    }

    /// [`Cluster::start`] with extra `postgresql.conf` lines (e.g. preloading
    /// `pg_stat_statements` for a benchmark that counts statements).
    pub fn start_with(test: &str, settings: &[&str]) -> Option<Cluster> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .max();
        let Some(bin) = bin else {
            super::tool_missing(
                "PostgreSQL's server binaries (/usr/lib/postgresql/*/bin)",
                test,
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Cluster { dir, bin, port };
        if is_root() {
            let status = std::process::Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(cluster.dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown the cluster directory to postgres");
        }
        cluster.run(&[
            "initdb",
            "-D",
            &cluster.data(),
            "-A",
            "trust",
            "-U",
            "postgres",
        ]);
        if !settings.is_empty() {
            use std::io::Write as _;
            let mut conf = std::fs::OpenOptions::new()
                .append(true)
                .open(cluster.dir.path().join("data/postgresql.conf"))
                .unwrap();
            for line in settings {
                writeln!(conf, "{line}").unwrap();
            }
        }
        cluster.pg_ctl("start");
        Some(cluster)
    }

    /// The URL of a new database on this cluster, created now.
    pub async fn database(&self, name: &str) -> String {
        let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        let mut conn = PgConnection::connect(&admin).await.expect("connect");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE");
        conn.close().await.ok();
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Stops the server (fast: open sessions are ended), as a failover or a crash would.
    pub fn stop(&self) {
        self.run(&["pg_ctl", "-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// Starts it again.
    pub fn restart(&self) {
        self.pg_ctl("start");
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn pg_ctl(&self, action: &str) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {}",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        self.run(&[
            "pg_ctl",
            "-D",
            &self.data(),
            "-l",
            &log,
            "-w",
            "-o",
            &options,
            action,
        ]);
    }

    /// A PostgreSQL program run as the cluster's owner.
    fn command(&self, args: &[&str]) -> std::process::Command {
        let program = self.bin.join(args[0]);
        let mut cmd = if is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            std::process::Command::new(&program)
        };
        cmd.args(&args[1..]);
        cmd
    }

    fn run(&self, args: &[&str]) {
        let out = self.command(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command(&["pg_ctl", "-D", &data, "-m", "immediate", "stop"])
            .output();
    }
}

/// True when the tests run as root (`/proc/self` belongs to the process's effective user).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
