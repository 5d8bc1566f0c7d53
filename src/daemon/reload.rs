//! SIGHUP: re-reading the config file while the daemon runs, and which settings a reload can
//! change (docs/daemon.md "Signals").
//!
//! [`reload`] is the one place that decides it. Live settings (`timezone`, `defaults`,
//! `exportRoot`, `secretsDir`, `shutdownTimeout`, `history`) are taken from the new file; every other
//! setting keeps its running value and is logged as needing a restart. The result is published
//! on the daemon's config channel, which job validation (the reconcile task re-validates every
//! job file) and the run engine (each execution of a run takes one snapshot at its start) both
//! read: they never disagree, and a run in progress finishes with the config it started with.
//!
//! A new file that does not load, or with which a server's password cannot be read, is refused
//! whole: the running config stays.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{AppHandle, signals};
use crate::config::Config;

/// The outcome of comparing the running config with a newly read one.
#[derive(Debug, Clone)]
pub struct Reload {
    /// The config to run with: the running one with the live settings of the new one.
    pub config: Config,
    /// Live settings that changed (applied).
    pub live: Vec<&'static str>,
    /// Restart-only settings that changed (not applied: they keep their running values).
    pub restart: Vec<&'static str>,
}

/// What a reload of `new` over `running` applies (see the module doc).
pub fn reload(running: &Config, new: Config) -> Reload {
    let mut live = Vec::new();
    let mut restart = Vec::new();
    let mut changed = |differs: bool, name: &'static str, applies_live: bool| {
        if differs {
            if applies_live {
                live.push(name);
            } else {
                restart.push(name);
            }
        }
    };
    let (old, new_ref) = (running, &new);
    changed(old.timezone != new_ref.timezone, "timezone", true);
    changed(
        old.default_retry != new_ref.default_retry,
        "defaults.retry",
        true,
    );
    changed(
        old.default_run_timeout != new_ref.default_run_timeout,
        "defaults.runTimeout",
        true,
    );
    changed(old.export_root != new_ref.export_root, "exportRoot", true);
    changed(old.secrets_dir != new_ref.secrets_dir, "secretsDir", true);
    changed(
        old.shutdown_timeout != new_ref.shutdown_timeout,
        "shutdownTimeout",
        true,
    );
    changed(old.history != new_ref.history, "history", true);
    changed(old.jobs_dir != new_ref.jobs_dir, "jobsDir", false);
    changed(old.state_dir != new_ref.state_dir, "stateDir", false);
    changed(old.database != new_ref.database, "database", false);
    changed(old.listen != new_ref.listen, "listen", false);
    changed(old.log != new_ref.log, "log", false);
    changed(old.watch != new_ref.watch, "watch", false);
    // `ServerConfig` holds secret references, not secrets: comparing their Debug form is safe.
    changed(
        format!("{:?}", old.servers) != format!("{:?}", new_ref.servers),
        "servers",
        false,
    );
    changed(
        old.step_parallelism != new_ref.step_parallelism,
        "stepParallelism",
        false,
    );
    changed(old.page_size != new_ref.page_size, "pageSize", false);
    changed(old.downloads != new_ref.downloads, "downloads", false);
    changed(old.engine != new_ref.engine, "engine", false);
    // Field by field, so a setting added later is restart-only until it is listed above.
    let config = Config {
        timezone: new.timezone,
        default_retry: new.default_retry,
        default_run_timeout: new.default_run_timeout,
        export_root: new.export_root,
        secrets_dir: new.secrets_dir,
        shutdown_timeout: new.shutdown_timeout,
        history: new.history,
        ..running.clone()
    };
    Reload {
        config,
        live,
        restart,
    }
}

/// Reloads the config file at every SIGHUP until `cancel`.
pub(super) async fn reload_loop(
    app: AppHandle,
    config: watch::Sender<Arc<Config>>,
    mut hangups: signals::Hangups,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            () = hangups.next() => {}
        }
        let running = Arc::clone(&app.config.borrow());
        let Some(path) = running.file.clone() else {
            tracing::warn!("SIGHUP: the daemon runs without a config file; nothing to reload");
            continue;
        };
        let file = path.display();
        let new = match Config::load(&path) {
            Ok(new) => new,
            Err(error) => {
                tracing::error!(file = %file, %error, "SIGHUP: the config is invalid; keeping the running config");
                continue;
            }
        };
        let Reload {
            config: next,
            live,
            restart,
        } = reload(&running, new);
        if !restart.is_empty() {
            tracing::warn!(file = %file, changed = ?restart, "SIGHUP: these settings take effect only after a restart; their running values stay in force");
        }
        if live.is_empty() {
            tracing::info!(file = %file, "SIGHUP: config reloaded; no setting that applies live changed");
            continue;
        }
        if let Err(error) = next.check_server_passwords() {
            tracing::error!(file = %file, %error, "SIGHUP: a server password cannot be read with the new config; keeping the running config");
            continue;
        }
        tracing::info!(file = %file, changed = ?live, "SIGHUP: config reloaded; job files are validated against it now, runs started from now on use it");
        config.send_replace(Arc::new(next));
        app.rescan.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_yaml(text, std::path::Path::new("/etc/rc/restorectl.yaml")).unwrap()
    }

    #[test]
    fn live_settings_apply_and_restart_only_ones_keep_their_running_value() {
        let old = config("timezone: UTC\nlisten: 127.0.0.1:9464\nexportRoot: /srv/a\n");
        let same = reload(&old, old.clone());
        assert_eq!((same.live.len(), same.restart.len()), (0, 0));
        let new = config(
            "timezone: Europe/Berlin\nlisten: 127.0.0.1:9999\njobsDir: other\n\
             exportRoot: /srv/b\nstepParallelism: 2\n",
        );
        let r = reload(&old, new);
        assert_eq!(r.live, ["timezone", "exportRoot"]);
        assert_eq!(r.restart, ["jobsDir", "listen", "stepParallelism"]);
        assert_eq!(r.config.timezone, chrono_tz::Europe::Berlin);
        assert_eq!(r.config.export_root, std::path::Path::new("/srv/b"));
        assert_eq!(r.config.listen, old.listen);
        assert_eq!(r.config.jobs_dir, old.jobs_dir);
        assert_eq!(r.config.step_parallelism, old.step_parallelism);
    }
}
