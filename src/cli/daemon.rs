//! `restorectl daemon [--config PATH] [--dev]`: the long-running service (SPEC §1, §6.1, §8).
//!
//! Loads the config (a broken config exits 78), installs logging, and hands over to
//! [`crate::daemon::run`] until SIGTERM or SIGINT. `--dev` first starts the built-in simulator
//! and points the example config (`jobs.example/restorectl.yaml`, or `--config`) at it.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::Outcome;
use crate::config::{Config, config_path};
use crate::daemon::dev::{self, DevSetup};
use crate::daemon::{self as daemon_mod, DaemonOptions, executor, signals};

/// Arguments of `restorectl daemon`.
#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// Development mode: built-in VB365 simulator, the example jobs in ./jobs.example/, state
    /// in ./.restorectl-dev/.
    #[arg(long)]
    pub dev: bool,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(args: DaemonArgs, config_flag: Option<&Path>) -> anyhow::Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        if args.dev {
            let file = config_flag
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(dev::DEV_CONFIG));
            let setup = DevSetup::start(&file).await?;
            let DevSetup {
                mut config,
                simulator,
            } = setup;
            if let Some(addr) = config.listen
                && !dev::port_free(addr)
            {
                // Another dev daemon (or anything) has the port: take a free one, the banner
                // says which.
                config.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
            }
            crate::telemetry::init_logging(&config.log);
            let banner_config = config.clone();
            let sim_url = simulator.base_url();
            let options = DaemonOptions {
                executor: Some(executor::engine_factory()),
                on_ready: Some(Box::new(move |ready| {
                    let text = dev::banner(&banner_config, &sim_url, ready.http);
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(text.as_bytes());
                    let _ = out.flush();
                })),
                ..DaemonOptions::default()
            };
            let result = daemon_mod::run(config, options, stop()).await;
            simulator.shutdown().await;
            result?;
        } else {
            let (path, _) = config_path(config_flag);
            let config = Config::load(&path)?;
            crate::telemetry::init_logging(&config.log);
            let options = DaemonOptions {
                executor: Some(executor::engine_factory()),
                ..DaemonOptions::default()
            };
            daemon_mod::run(config, options, stop()).await?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(Outcome::Ok)
}

/// Completes at SIGTERM or SIGINT (or at once if the handlers cannot be installed, which is
/// logged: a daemon that cannot be stopped cleanly should not start).
async fn stop() {
    if let Err(error) = signals::terminate().await {
        tracing::error!(%error, "cannot install the SIGTERM/SIGINT handlers; stopping");
    }
}
