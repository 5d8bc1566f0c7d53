//! Daemon configuration (`restorectl.yaml`, SPEC §3): where it is read from, what it holds, and
//! how secret references are resolved.
//!
//! Loading is two-step like job files: YAML is deserialised into `Raw*` types with
//! `deny_unknown_fields` (so a misspelt key fails with FILE:LINE:COLUMN), then turned into
//! [`Config`], in which every relative path is already resolved against the config file's
//! directory and every default is filled in. Nothing downstream reads the raw types.
//!
//! Secrets are never stored in [`Config`]: it holds [`SecretRef`]s, resolved lazily (at the moment
//! a password or certificate is needed) into `secrecy` types whose `Debug` prints `[REDACTED]`.
//!
//! - this file: the validated [`Config`] and its sections, finding and loading the file;
//! - `raw`: the serde shapes of the file and reading YAML into them;
//! - `validate`: raw → [`Config`] (defaults, paths, bounds);
//! - [`secrets`]: [`SecretRef`], [`SecretContext`] and resolving a reference;
//! - [`notifications`]: the notification targets and the default routing of events;
//! - [`retry`]: [`RetryPolicy`] and the partial [`RetrySpec`] of YAML;
//! - [`error`]: [`ConfigError`], what loading a config or resolving a secret can fail with.

pub mod error;
pub mod notifications;
mod raw;
pub mod retry;
pub mod secrets;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;
use schemars::JsonSchema;
use serde::Deserialize;

pub use error::ConfigError;
pub use notifications::{EmailTarget, NotificationConfig, NotifyTarget, SmtpConfig, SmtpTls};
pub(crate) use raw::shorten_unknown_field;
pub use retry::{RetryPolicy, RetrySpec};
pub use secrets::{PLAIN_SECRET_MESSAGE, SecretContext, SecretRef};

use raw::RawConfig;

use crate::store::Location;

/// Where the config is read from when neither `--config` nor `RESTORECTL_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/restorectl/restorectl.yaml";
/// Environment variable naming the config file.
pub const CONFIG_ENV: &str = "RESTORECTL_CONFIG";
/// File names that are daemon configs, never job files, even inside a job directory.
pub const CONFIG_FILE_NAMES: [&str; 2] = ["restorectl.yaml", "restorectl.yml"];

/// Log output settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    /// An `EnvFilter` directive (`info`, `restorectl=debug,sqlx=warn`); `RUST_LOG` overrides it.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// One VB365 server (`servers.<name>`).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The key under `servers:`; jobs refer to it with `server:`.
    pub name: String,
    /// Base URL without the `/v8` suffix, e.g. `https://vb365.contoso.local:4443`.
    pub url: url::Url,
    pub username: String,
    pub password: SecretRef,
    /// Extra trusted CA certificate (PEM), already resolved against the config directory.
    pub ca_file: Option<PathBuf>,
    pub insecure_skip_tls_verify: bool,
    pub max_concurrent_sessions: u32,
    /// Per API call; never applied to PST downloads.
    pub request_timeout: Duration,
}

/// Settings of the download engine (SPEC §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadConfig {
    /// How long the server may take to build a PST before the first byte (default 2h).
    pub first_byte_timeout: Duration,
    /// Longest silence between two reads once bytes flow (default 10m).
    pub idle_read_timeout: Duration,
}

/// Settings of the run engine (`engine:`; see docs/engine.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// How often a submitted restore is polled for its outcome (default 10s).
    pub poll_interval: Duration,
    /// How long after a restore POST whose outcome is unknown the engine waits before it may
    /// conclude from the restore session's history that the POST was not received (default
    /// 2m; never less than the server's `requestTimeout`).
    pub reconcile_grace: Duration,
    /// Step retry backoffs up to this long are slept inside the run; longer ones park the run
    /// in `waiting_retry` (default 5m).
    pub inline_backoff: Duration,
    /// Length of a run lease and of the leadership lease (default 60s): the time after which
    /// another replica takes over the runs, or the lead, of a replica that died.
    pub lease: Duration,
}

/// Settings of the job directory watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchConfig {
    /// Full rescan period on top of file events (default 60s).
    pub rescan_interval: Duration,
    /// Use polling instead of inotify (network file systems).
    pub poll: bool,
}

/// Run-history retention (`history:`; see docs/daemon.md "Run history"): the daemon prunes
/// finished runs older than `keep_for`, beyond the newest `keep_runs` finished runs of each job,
/// never a run that is not terminal nor one whose exported files still exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryConfig {
    /// How long a finished run is kept at least (default 400 days).
    pub keep_for: Duration,
    /// Finished runs of each job kept whatever their age (default 20).
    pub keep_runs: u32,
}

impl HistoryConfig {
    /// `history.keepFor` when not set.
    pub const DEFAULT_KEEP_FOR: Duration = Duration::from_secs(400 * 24 * 3600);
    /// `history.keepRuns` when not set.
    pub const DEFAULT_KEEP_RUNS: u32 = 20;
    /// The largest `history.keepRuns` accepted.
    pub const MAX_KEEP_RUNS: u32 = 1_000_000;
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            keep_for: Self::DEFAULT_KEEP_FOR,
            keep_runs: Self::DEFAULT_KEEP_RUNS,
        }
    }
}

/// The loaded, fully resolved daemon configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this config was read from (`None` for built-in defaults).
    pub file: Option<PathBuf>,
    /// Directory relative paths were resolved against.
    pub base_dir: PathBuf,
    pub jobs_dir: PathBuf,
    pub state_dir: PathBuf,
    /// URL of the state database: `sqlite://PATH`, or `postgres://…` without a password.
    pub database: String,
    /// The PostgreSQL password (`databasePassword`), a secret reference.
    pub database_password: Option<SecretRef>,
    /// CA certificate(s) that verify the PostgreSQL server (`databaseCaFile`).
    pub database_ca_file: Option<PathBuf>,
    pub export_root: PathBuf,
    pub secrets_dir: PathBuf,
    /// Health and metrics listener; `None` when `listen: off`.
    pub listen: Option<SocketAddr>,
    /// Default time zone of schedules.
    pub timezone: Tz,
    pub log: LogConfig,
    pub servers: BTreeMap<String, ServerConfig>,
    pub default_retry: RetryPolicy,
    pub default_run_timeout: Duration,
    /// Steps of one run executed at once (default 4).
    pub step_parallelism: u32,
    /// Page size of paged VB365 calls (default 1000).
    pub page_size: u32,
    /// How long SIGTERM may take to drain (default 30s).
    pub shutdown_timeout: Duration,
    pub downloads: DownloadConfig,
    pub watch: WatchConfig,
    pub engine: EngineConfig,
    /// This daemon's name among several replicas (`replicaName`; `None`: `HOST-PID`).
    pub replica_name: Option<String>,
    /// `notifications:` (SPEC §11).
    pub notifications: NotificationConfig,
    /// `history:` (run-history retention).
    pub history: HistoryConfig,
}

/// Resolves `p` against `base` unless it is absolute.
pub fn resolve_path(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Which config file to read: `--config`, else `$RESTORECTL_CONFIG`, else the default path.
/// The boolean tells whether the choice was explicit (an explicit file that is missing is an
/// error; a missing default may be tolerated by commands that can work without one).
pub fn config_path(flag: Option<&Path>) -> (PathBuf, bool) {
    if let Some(p) = flag {
        return (p.to_path_buf(), true);
    }
    match std::env::var_os(CONFIG_ENV) {
        Some(p) if !p.is_empty() => (PathBuf::from(p), true),
        _ => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    }
}

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        Self::from_yaml(&text, path)
    }

    /// Parses config text as if it had been read from `path` (relative paths resolve against
    /// `path`'s directory).
    pub fn from_yaml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw = raw::parse(text, path)?;
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map(|d| d.join(path))
                .unwrap_or_else(|_| path.to_path_buf())
        };
        let base = abs
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        validate::from_raw(raw, Some(abs), base)
    }

    /// The configuration used when no file exists: SPEC §2 defaults, no servers.
    pub fn builtin_defaults() -> Config {
        validate::from_raw(RawConfig::default(), None, PathBuf::from("/etc/restorectl"))
            .expect("built-in defaults are valid")
    }

    /// The file messages about this config name (the default path for the built-in defaults).
    pub fn shown_path(&self) -> PathBuf {
        self.file
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
    }

    /// `jobsDir` is a directory that can be listed. The daemon checks it at start, so a missing
    /// or mistyped directory is a configuration error (exit 78) naming the key.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] for `jobsDir`.
    pub fn check_jobs_dir(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: self.shown_path(),
            key: "jobsDir".into(),
            message,
        };
        let dir = self.jobs_dir.display();
        match std::fs::metadata(&self.jobs_dir) {
            Ok(m) if m.is_dir() => std::fs::read_dir(&self.jobs_dir)
                .map(drop)
                .map_err(|e| invalid(format!("cannot list {dir}: {e}"))),
            Ok(_) => Err(invalid(format!("{dir} is not a directory"))),
            Err(e) => Err(invalid(format!(
                "{dir}: {e}; create the directory or correct jobsDir"
            ))),
        }
    }

    /// Where the state database is, with its password read from `databasePassword` and its CA
    /// file: what the daemon and operator commands open.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] for `database` (a URL that validation would have refused) or
    /// `databasePassword` (a secret that cannot be read; the message names the reference, never
    /// a value).
    pub fn store_location(&self) -> Result<Location, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: self.shown_path(),
            key: key.into(),
            message,
        };
        let mut location =
            Location::parse(&self.database).map_err(|e| invalid("database", e.to_string()))?;
        if let Some(secret) = &self.database_password {
            let password = secret
                .resolve(&SecretContext::from_config(self))
                .map_err(|e| invalid("databasePassword", e.to_string()))?;
            location = location.with_password(password);
        }
        if let Some(ca) = &self.database_ca_file {
            location = location.with_ca_file(ca.clone());
        }
        Ok(location)
    }

    /// Reads every server's password once and drops it: a secret the daemon will need to log
    /// in is a configuration error when missing (at start, and for the new config of a
    /// reload), not a failed login at the first run. The message names the key and the secret
    /// reference, never a value.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] for `servers.<name>.password`.
    pub fn check_server_passwords(&self) -> Result<(), ConfigError> {
        let ctx = SecretContext::from_config(self);
        for server in self.servers.values() {
            if let Err(e) = server.password.resolve(&ctx) {
                return Err(ConfigError::Invalid {
                    path: self.shown_path(),
                    key: format!("servers.{}.password", server.name),
                    message: e.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The SQLite file behind `database`.
    pub fn database_path(&self) -> PathBuf {
        PathBuf::from(
            self.database
                .strip_prefix("sqlite://")
                .unwrap_or(&self.database),
        )
    }

    /// The server a job names, or the only one when the job names none.
    pub fn server(&self, name: Option<&str>) -> Option<&ServerConfig> {
        match name {
            Some(n) => self.servers.get(n),
            None if self.servers.len() == 1 => self.servers.values().next(),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(text, Path::new("/etc/rc/restorectl.yaml"))
    }

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        let c = load("jobsDir: jobs\nstateDir: state\nexportRoot: /srv/exports\n").unwrap();
        assert_eq!(c.jobs_dir, Path::new("/etc/rc/jobs"));
        assert_eq!(c.database_path(), Path::new("/etc/rc/state/restorectl.db"));
        assert_eq!(c.export_root, Path::new("/srv/exports"));
    }

    #[test]
    fn history_has_defaults_and_located_errors() {
        let c = load("").unwrap();
        assert_eq!(c.history, HistoryConfig::default());
        assert_eq!(c.history.keep_for, Duration::from_secs(400 * 86_400));
        let c = load("history: { keepFor: 30d, keepRuns: 0 }\n").unwrap();
        assert_eq!(c.history.keep_for, Duration::from_secs(30 * 86_400));
        assert_eq!(c.history.keep_runs, 0);
        for (text, key) in [
            ("history: { keepFor: 10s }\n", "history.keepFor"),
            ("history: { keepRuns: 2000000 }\n", "history.keepRuns"),
        ] {
            let err = load(text).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
        for text in [
            "history: { keepFor: forever }\n",
            "history: { keepRuns: -1 }\n",
            "history: { keepfor: 1d }\n",
        ] {
            let err = load(text).unwrap_err().to_string();
            assert!(err.starts_with("/etc/rc/restorectl.yaml:1:"), "{err}");
        }
    }

    #[test]
    fn replica_name_and_lease_default_and_are_checked() {
        let c = load("jobsDir: jobs\n").unwrap();
        assert_eq!(c.replica_name, None);
        assert_eq!(c.engine.lease, Duration::from_secs(60));
        let c = load("replicaName: node-a.1\nengine: { lease: 5s }\n").unwrap();
        assert_eq!(c.replica_name.as_deref(), Some("node-a.1"));
        assert_eq!(c.engine.lease, Duration::from_secs(5));
        for (text, key) in [
            ("replicaName: \"a b\"\n", "replicaName"),
            ("replicaName: \"\"\n", "replicaName"),
            ("engine: { lease: 500ms }\n", "engine.lease"),
            ("engine: { lease: 2h }\n", "engine.lease"),
        ] {
            let err = load(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn unknown_key_is_located() {
        let err = load("jobsDir: jobs\nservers:\n  a:\n    url: https://x\n    usrname: u\n")
            .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("/etc/rc/restorectl.yaml:5:"), "{text}");
        assert!(text.contains("usrname"), "{text}");
    }

    #[test]
    fn plain_string_password_is_rejected() {
        let err =
            load("servers:\n  a:\n    url: https://x\n    username: u\n    password: hunter2\n")
                .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("plain string"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    /// Regression (hostile-input fuzzing): a `password:` line indented one level too little
    /// becomes a server named `password` whose body is the secret, and serde's "invalid type"
    /// message quoted it.
    #[test]
    fn a_misplaced_password_value_is_not_quoted_in_the_error() {
        for text in [
            "servers:\n    password: hunter2-\"quoted\\\"-x\n",
            "servers:\n  password: hunter2\n",
            "timezone: [hunter2]\nservers: { a: hunter2 }\n",
        ] {
            let err = load(text).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(
                matches!(err, ConfigError::Syntax { line, .. } if line >= 1),
                "{err:?}"
            );
        }
    }
}
