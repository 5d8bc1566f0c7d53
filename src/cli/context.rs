//! What every operator command needs before it does its work: the daemon config (to find the
//! state database), the database opened read-only or for request writes, the current time (with
//! a testing override) and who is asking.
//!
//! Operator commands talk to the database directly (SPEC §6): the daemon does not have to run to
//! read history, and `run`/`cancel`/`resolve` only insert request rows that the daemon consumes.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};

use crate::config::{self, Config, ConfigError};
use crate::store::{DaemonInstance, Location, OpenMode, Run, RunFilter, RunId, Store};

/// Environment variable that fixes "now" for `plan`, `jobs` and the request timestamps: a testing
/// aid (documented in docs/cli-json.md), never needed in production.
pub const NOW_ENV: &str = "RESTORECTL_NOW";

/// A daemon instance whose heartbeat is older than this is not counted as running when `run`
/// decides whether to print the "no daemon consumes requests" hint. Generous on purpose: a
/// busy daemon heartbeats far more often, and a false "no daemon" hint is only a hint.
pub const LIVE_DAEMON_HEARTBEAT: Duration = Duration::from_secs(120);

/// Loads the daemon config named by `--config` / `$RESTORECTL_CONFIG`, or the built-in defaults
/// when neither is given and the default file does not exist. A config that is named but
/// missing or broken is a [`ConfigError`] (exit 78).
pub fn load_config(flag: Option<&Path>) -> Result<Config, ConfigError> {
    let (path, explicit) = config::config_path(flag);
    if !explicit && !path.exists() {
        return Ok(Config::builtin_defaults());
    }
    Config::load(&path)
}

/// Where the state database of a config is, its password read (a config problem is a
/// config error naming the key).
pub fn store_location(config: &Config) -> anyhow::Result<Location> {
    Ok(config.store_location()?)
}

/// Opens the state database read-only (history commands). A missing database is an error that
/// says the daemon has not run yet and where it looked.
pub async fn open_read(config: &Config) -> anyhow::Result<Store> {
    let location = store_location(config)?;
    Store::connect(&location, OpenMode::ReadOnly)
        .await
        .with_context(|| describe_config(config))
}

/// Opens an existing state database for writing operator requests. Never creates one: a request
/// written to a database no daemon uses would wait forever.
pub async fn open_write(config: &Config) -> anyhow::Result<Store> {
    let location = store_location(config)?;
    Store::connect(&location, OpenMode::Existing)
        .await
        .with_context(|| describe_config(config))
}

fn describe_config(config: &Config) -> String {
    match &config.file {
        Some(f) => format!("state database of config {}", f.display()),
        None => format!(
            "state database of the built-in defaults (no config at {}; pass --config or set {})",
            config::DEFAULT_CONFIG_PATH,
            config::CONFIG_ENV
        ),
    }
}

/// The current time: `$RESTORECTL_NOW` (RFC 3339) when set, else the system clock. An unparsable
/// value is a usage error rather than silently ignored.
pub fn now() -> anyhow::Result<DateTime<Utc>> {
    match std::env::var(NOW_ENV) {
        Ok(text) if !text.is_empty() => parse_now(&text),
        _ => Ok(Utc::now()),
    }
}

/// Parses an RFC 3339 instant given as `--now` or `$RESTORECTL_NOW`.
pub fn parse_now(text: &str) -> anyhow::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            anyhow::Error::new(super::UsageError(format!(
                "`{text}` is not an RFC 3339 instant (e.g. 2026-03-28T12:00:00Z): {e}"
            )))
        })
}

/// Who is asking, recorded with a request: `$SUDO_USER`, else `$USER`, else `$LOGNAME`.
pub fn requested_by() -> Option<String> {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|v| !v.is_empty())
}

/// Daemon instances that heartbeated within [`LIVE_DAEMON_HEARTBEAT`] of `now`.
pub async fn live_daemons(
    store: &Store,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<DaemonInstance>> {
    let bound =
        chrono::TimeDelta::from_std(LIVE_DAEMON_HEARTBEAT).unwrap_or(chrono::TimeDelta::MAX);
    Ok(store
        .list_live_instances()
        .await?
        .into_iter()
        .filter(|i| i.heartbeat_at + bound >= now)
        .collect())
}

/// Runs an async command body on a small current-thread runtime: operator commands do a few
/// queries and must not pay for a multi-threaded runtime.
pub fn block_on<T>(fut: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(fut)
}

/// Finds the run an operator named: a full run id, or a unique prefix of at least 8 characters
/// (ids are UUIDs; tables print them in full so they can be copied).
pub async fn find_run(store: &Store, text: &str) -> anyhow::Result<Run> {
    let text = text.trim();
    if let Ok(id) = text.parse::<RunId>() {
        return match store.get_run(id).await {
            Ok(run) => Ok(run),
            Err(e) if e.is_not_found() => Err(anyhow::anyhow!(
                "no run {id} in {} (list runs with `restorectl runs`)",
                store.location()
            )),
            Err(e) => Err(e.into()),
        };
    }
    if text.len() < 8 || !text.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(anyhow::Error::new(super::UsageError(format!(
            "`{text}` is not a run id (a UUID, or a unique prefix of at least 8 characters)"
        ))));
    }
    let prefix = text.to_ascii_lowercase();
    let mut matches: Vec<Run> = store
        .list_runs(&RunFilter::default())
        .await?
        .into_iter()
        .filter(|r| r.id.to_string().starts_with(&prefix))
        .collect();
    match matches.len() {
        1 => Ok(matches.swap_remove(0)),
        0 => Err(anyhow::anyhow!(
            "no run id starts with {text} (list runs with `restorectl runs`)"
        )),
        n => Err(anyhow::anyhow!(
            "{n} runs start with {text}: {}; give more of the id",
            matches
                .iter()
                .take(5)
                .map(|r| r.id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}
