//! From the raw config to the validated [`Config`]: every default filled in, every relative path
//! resolved against the config file's directory, every bound checked. An error names the file
//! and the key ([`ConfigError::Invalid`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::store::{Backend, Location};
use chrono_tz::Tz;

use super::error::ConfigError;
use super::raw::RawConfig;
use super::retry::RetryPolicy;
use super::{
    Config, DEFAULT_CONFIG_PATH, DownloadConfig, EngineConfig, HistoryConfig, LogConfig, LogFormat,
    ServerConfig, WatchConfig, resolve_path,
};

/// Builds the [`Config`] of `raw`, read from `file` (`None`: the built-in defaults), with
/// relative paths resolved against `base`.
pub(super) fn from_raw(
    raw: RawConfig,
    file: Option<PathBuf>,
    base: PathBuf,
) -> Result<Config, ConfigError> {
    let cfg_path = file
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        path: cfg_path.clone(),
        key: key.to_string(),
        message,
    };
    let r = |p: Option<PathBuf>, default: &str| {
        resolve_path(&base, &p.unwrap_or_else(|| PathBuf::from(default)))
    };
    let jobs_dir = r(raw.jobs_dir, "/etc/restorectl/jobs");
    let state_dir = r(raw.state_dir, "/var/lib/restorectl");
    let export_root = r(raw.export_root, "/var/lib/restorectl/exports");
    let secrets_dir = r(raw.secrets_dir, "/etc/restorectl/secrets");
    let database = match raw.database {
        None => format!("sqlite://{}", state_dir.join("restorectl.db").display()),
        Some(url) => match url.strip_prefix("sqlite://") {
            Some(rest) if !rest.is_empty() => format!(
                "sqlite://{}",
                resolve_path(&base, Path::new(rest)).display()
            ),
            _ => url,
        },
    };
    let location = Location::parse(&database).map_err(|e| invalid("database", e.to_string()))?;
    let postgres_only = |key: &str| {
        invalid(
            key,
            "applies to a postgres:// `database` only; remove it, or set `database` to the \
             PostgreSQL URL"
                .into(),
        )
    };
    let is_postgres = location.backend() == Backend::Postgres;
    if raw.database_password.is_some() && !is_postgres {
        return Err(postgres_only("databasePassword"));
    }
    let database_ca_file = match raw.database_ca_file {
        Some(_) if !is_postgres => return Err(postgres_only("databaseCaFile")),
        Some(path) => Some(resolve_path(&base, &path)),
        None => None,
    };
    let listen = match raw.listen.as_deref() {
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
        Some("off") => None,
        Some(s) => Some(s.parse().map_err(|_| {
            invalid(
                "listen",
                format!("`{s}` is not an address like 127.0.0.1:9464 (or `off`)"),
            )
        })?),
    };
    let timezone = match raw.timezone.as_deref() {
        None => Tz::UTC,
        Some(s) => s.parse().map_err(|_| {
            invalid(
                "timezone",
                format!("`{s}` is not an IANA time zone name (e.g. Europe/Berlin)"),
            )
        })?,
    };
    let raw_log = raw.log.unwrap_or_default();
    let log = LogConfig {
        format: raw_log.format.unwrap_or(LogFormat::Text),
        level: raw_log.level.unwrap_or_else(|| "info".into()),
    };
    if tracing_subscriber::EnvFilter::try_new(&log.level).is_err() {
        return Err(invalid(
            "log.level",
            format!("`{}` is not a valid log filter", log.level),
        ));
    }
    let mut servers = BTreeMap::new();
    for (name, s) in raw.servers {
        let key = |k: &str| format!("servers.{name}.{k}");
        let url = url::Url::parse(&s.url)
            .map_err(|e| invalid(&key("url"), format!("`{}` is not a URL: {e}", s.url)))?;
        if url.scheme() != "https" && url.scheme() != "http" {
            return Err(invalid(
                &key("url"),
                "must be an https:// (or http://) URL".into(),
            ));
        }
        if s.username.trim().is_empty() {
            return Err(invalid(&key("username"), "must not be empty".into()));
        }
        let max_concurrent_sessions = s.max_concurrent_sessions.unwrap_or(2);
        if max_concurrent_sessions == 0 {
            return Err(invalid(
                &key("maxConcurrentSessions"),
                "must be at least 1".into(),
            ));
        }
        let request_timeout = s.request_timeout.unwrap_or(Duration::from_secs(60));
        if request_timeout.is_zero() {
            return Err(invalid(
                &key("requestTimeout"),
                "must be greater than zero".into(),
            ));
        }
        servers.insert(
            name.clone(),
            ServerConfig {
                name,
                url,
                username: s.username,
                password: s.password,
                ca_file: s.ca_file.map(|p| resolve_path(&base, &p)),
                insecure_skip_tls_verify: s.insecure_skip_tls_verify,
                max_concurrent_sessions,
                request_timeout,
            },
        );
    }
    let defaults = raw.defaults.unwrap_or_default();
    let default_retry = defaults
        .retry
        .unwrap_or_default()
        .apply(RetryPolicy::default())
        .map_err(|(k, m)| invalid(&format!("defaults.retry.{k}"), m))?;
    let default_run_timeout = defaults
        .run_timeout
        .unwrap_or(Duration::from_secs(12 * 3600));
    if default_run_timeout.is_zero() {
        return Err(invalid(
            "defaults.runTimeout",
            "must be greater than zero".into(),
        ));
    }
    let engine = raw.engine.unwrap_or_default();
    let lease = engine.lease.unwrap_or(Duration::from_secs(60));
    if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&lease) {
        return Err(invalid("engine.lease", "must be between 1s and 1h".into()));
    }
    let replica_name = match raw.replica_name {
        Some(name) => {
            let ok = !name.is_empty()
                && name.len() <= 63
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !ok {
                return Err(invalid(
                    "replicaName",
                    "must be 1 to 63 characters of letters, digits, `-`, `_` and `.`".into(),
                ));
            }
            Some(name)
        }
        None => None,
    };
    let step_parallelism = raw.step_parallelism.unwrap_or(4);
    if !(1..=64).contains(&step_parallelism) {
        return Err(invalid(
            "stepParallelism",
            "must be between 1 and 64".into(),
        ));
    }
    let page_size = raw.page_size.unwrap_or(1000);
    if !(1..=10_000).contains(&page_size) {
        return Err(invalid(
            "pageSize",
            "must be between 1 and 10000 (the server's maximum)".into(),
        ));
    }
    let notifications = super::notifications::from_raw(raw.notifications.unwrap_or_default())
        .map_err(|(key, message)| invalid(&key, message))?;
    let dl = raw.downloads.unwrap_or_default();
    let watch = raw.watch.unwrap_or_default();
    let history = raw.history.unwrap_or_default();
    let history = HistoryConfig {
        keep_for: history.keep_for.unwrap_or(HistoryConfig::DEFAULT_KEEP_FOR),
        keep_runs: history
            .keep_runs
            .unwrap_or(HistoryConfig::DEFAULT_KEEP_RUNS),
    };
    if history.keep_for < Duration::from_secs(60) {
        return Err(invalid(
            "history.keepFor",
            "must be at least 1m (e.g. `400d`)".into(),
        ));
    }
    if history.keep_runs > HistoryConfig::MAX_KEEP_RUNS {
        return Err(invalid(
            "history.keepRuns",
            format!("must be at most {}", HistoryConfig::MAX_KEEP_RUNS),
        ));
    }
    Ok(Config {
        file,
        base_dir: base,
        jobs_dir,
        state_dir,
        database,
        database_password: raw.database_password,
        database_ca_file,
        export_root,
        secrets_dir,
        listen,
        timezone,
        log,
        servers,
        default_retry,
        default_run_timeout,
        step_parallelism,
        page_size,
        shutdown_timeout: raw.shutdown_timeout.unwrap_or(Duration::from_secs(30)),
        downloads: DownloadConfig {
            first_byte_timeout: dl
                .first_byte_timeout
                .unwrap_or(Duration::from_secs(2 * 3600)),
            idle_read_timeout: dl.idle_read_timeout.unwrap_or(Duration::from_secs(600)),
        },
        watch: WatchConfig {
            rescan_interval: watch.rescan_interval.unwrap_or(Duration::from_secs(60)),
            poll: watch.poll,
        },
        engine: EngineConfig {
            poll_interval: engine.poll_interval.unwrap_or(Duration::from_secs(10)),
            reconcile_grace: engine.reconcile_grace.unwrap_or(Duration::from_secs(120)),
            inline_backoff: engine.inline_backoff.unwrap_or(Duration::from_secs(300)),
            lease,
        },
        replica_name,
        notifications,
        history,
    })
}
