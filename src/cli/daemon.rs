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
        // Before anything else: a SIGTERM or SIGHUP during start-up must not kill the process.
        let terminate = signals::Terminate::install().context("installing the SIGTERM handler")?;
        let hangups = signals::Hangups::new();
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
                hangups: Some(hangups),
                on_ready: Some(Box::new(move |ready| {
                    let text = dev::banner(&banner_config, &sim_url, ready.http);
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(text.as_bytes());
                    let _ = out.flush();
                })),
                ..DaemonOptions::default()
            };
            let result = daemon_mod::run(config, options, terminate.recv()).await;
            simulator.shutdown().await;
            result?;
        } else {
            let (path, _) = config_path(config_flag);
            let config = Config::load(&path)?;
            crate::telemetry::init_logging(&config.log);
            let options = DaemonOptions {
                executor: Some(executor::engine_factory()),
                hangups: Some(hangups),
                ..DaemonOptions::default()
            };
            daemon_mod::run(config, options, terminate.recv()).await?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(Outcome::Ok)
}
